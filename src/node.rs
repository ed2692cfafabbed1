//! The node's capacity and what pods may use of it (allocatable), and the
//! kubelet's admission check of a pod's requests against it.

/// CPU in millicores and memory in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Resources {
    pub cpu_milli: i64,
    pub memory: i64,
}

impl std::ops::Add for Resources {
    type Output = Resources;
    fn add(self, o: Resources) -> Resources {
        // Saturating: requests are capped at i64::MAX each, and a sum of
        // them must stay "too much", never wrap to a small number.
        Resources {
            cpu_milli: self.cpu_milli.saturating_add(o.cpu_milli),
            memory: self.memory.saturating_add(o.memory),
        }
    }
}

impl std::iter::Sum for Resources {
    fn sum<I: Iterator<Item = Resources>>(iter: I) -> Resources {
        iter.fold(Resources::default(), |a, b| a + b)
    }
}

/// Online CPUs and MemTotal, as cAdvisor reports the machine.
pub fn capacity() -> Resources {
    // SAFETY: sysconf only reads a system value.
    let cpus = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) }.max(1);
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    Resources {
        cpu_milli: cpus.saturating_mul(1000),
        memory: mem_total(&meminfo),
    }
}

/// `MemTotal` of a /proc/meminfo text, in bytes.
pub fn mem_total(meminfo: &str) -> i64 {
    meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<i64>().ok())
        .map_or(0, |kb| kb.saturating_mul(1024))
}

/// Lowest OOM score adjustment this host lets us give a process. The agent
/// protects itself as the kubelet does (-999); where lowering a score is not
/// permitted (no CAP_SYS_RESOURCE, or a sandbox that forbids it), containers
/// cannot be given negative scores either and are kept at the agent's own.
pub fn oom_score_floor() -> i32 {
    const SELF: &str = "/proc/self/oom_score_adj";
    if std::fs::write(SELF, "-999").is_ok() {
        return -1000;
    }
    std::fs::read_to_string(SELF)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// Capacity minus what is reserved for the system, never negative.
pub fn allocatable(capacity: Resources, reserved: Resources) -> Resources {
    Resources {
        cpu_milli: capacity.cpu_milli.saturating_sub(reserved.cpu_milli).max(0),
        memory: capacity.memory.saturating_sub(reserved.memory).max(0),
    }
}

/// Whether a pod requesting `requested` fits next to pods using `used`.
/// On refusal, the kubelet's reason (`OutOfcpu`, `OutOfmemory`) and message.
pub fn admit(
    requested: Resources,
    used: Resources,
    allocatable: Resources,
) -> Result<(), (String, String)> {
    for (name, req, use_, cap) in [
        (
            "cpu",
            requested.cpu_milli,
            used.cpu_milli,
            allocatable.cpu_milli,
        ),
        ("memory", requested.memory, used.memory, allocatable.memory),
    ] {
        // In i128: a request of i64::MAX (a capped 8Ei or 8E) plus what is
        // in use must compare as larger than the node, not wrap below it.
        if req > 0 && i128::from(req) + i128::from(use_) > i128::from(cap) {
            return Err((
                format!("OutOf{name}"),
                format!(
                    "Node didn't have enough resource: {name}, requested: {req}, used: {use_}, capacity: {cap}"
                ),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admission() {
        let alloc = Resources {
            cpu_milli: 2000,
            memory: 1 << 30,
        };
        let used = Resources {
            cpu_milli: 1500,
            memory: 0,
        };
        assert!(
            admit(
                Resources {
                    cpu_milli: 500,
                    memory: 1 << 30
                },
                used,
                alloc
            )
            .is_ok()
        );
        let (reason, msg) = admit(
            Resources {
                cpu_milli: 600,
                memory: 0,
            },
            used,
            alloc,
        )
        .unwrap_err();
        assert_eq!(reason, "OutOfcpu");
        assert_eq!(
            msg,
            "Node didn't have enough resource: cpu, requested: 600, used: 1500, capacity: 2000"
        );
        let (reason, _) = admit(
            Resources {
                cpu_milli: 0,
                memory: (1 << 30) + 1,
            },
            used,
            alloc,
        )
        .unwrap_err();
        assert_eq!(reason, "OutOfmemory");
        // A pod that asks for nothing always fits (BestEffort).
        let full = Resources {
            cpu_milli: 5000,
            memory: 5 << 30,
        };
        assert!(admit(Resources::default(), full, alloc).is_ok());
        // Capped huge requests are refused, with and without pods running.
        let huge = Resources {
            cpu_milli: i64::MAX,
            memory: i64::MAX,
        };
        assert_eq!(admit(huge, used, alloc).unwrap_err().0, "OutOfcpu");
        let (reason, msg) = admit(
            Resources {
                cpu_milli: 1,
                memory: i64::MAX,
            },
            huge,
            alloc,
        )
        .unwrap_err();
        assert_eq!(reason, "OutOfcpu", "{msg}");
        assert_eq!(
            admit(
                Resources {
                    cpu_milli: 0,
                    memory: i64::MAX
                },
                Resources::default(),
                alloc
            )
            .unwrap_err()
            .0,
            "OutOfmemory"
        );
        assert_eq!([huge, huge].into_iter().sum::<Resources>(), huge);
    }

    #[test]
    fn meminfo_and_allocatable() {
        assert_eq!(
            mem_total("MemTotal:       24576000 kB\nMemFree: 1 kB\n"),
            24_576_000 * 1024
        );
        let a = allocatable(
            Resources {
                cpu_milli: 2000,
                memory: 100,
            },
            Resources {
                cpu_milli: 500,
                memory: 200,
            },
        );
        assert_eq!(
            a,
            Resources {
                cpu_milli: 1500,
                memory: 0
            }
        );
    }
}
