//! The node's capacity and what pods may use of it (allocatable), and the
//! kubelet's admission check of a pod's requests against it.

use crate::pod::PodError;
use crate::pod::error::Resource;

/// CPU in millicores, memory in bytes, and a count of pods.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Resources {
    pub cpu_milli: i64,
    pub memory: i64,
    pub pods: i64,
}

impl std::ops::Add for Resources {
    type Output = Resources;
    fn add(self, o: Resources) -> Resources {
        // Saturating: requests are capped at i64::MAX each, and a sum of
        // them must stay "too much", never wrap to a small number.
        Resources {
            cpu_milli: self.cpu_milli.saturating_add(o.cpu_milli),
            memory: self.memory.saturating_add(o.memory),
            pods: self.pods.saturating_add(o.pods),
        }
    }
}

impl std::iter::Sum for Resources {
    fn sum<I: Iterator<Item = Resources>>(iter: I) -> Resources {
        iter.fold(Resources::default(), |a, b| a + b)
    }
}

/// Online CPUs and MemTotal, as cAdvisor reports the machine (no pod
/// count).
pub fn machine() -> Resources {
    // SAFETY: sysconf only reads a system value.
    let cpus = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) }.max(1);
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    Resources {
        cpu_milli: cpus.saturating_mul(1000),
        memory: mem_total(&meminfo),
        pods: 0,
    }
}

/// The machine, and room for `max_pods` pods (the kubelet's `maxPods`).
pub fn capacity(max_pods: u32) -> Resources {
    Resources {
        pods: i64::from(max_pods),
        ..machine()
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

/// A CPU amount as a Kubernetes quantity: whole cores plain (`2`), else
/// millicores (`1500m`).
pub fn cpu_quantity(milli: i64) -> String {
    if milli % 1000 == 0 {
        (milli / 1000).to_string()
    } else {
        format!("{milli}m")
    }
}

/// Capacity minus what is reserved for the system, never negative.
pub fn allocatable(capacity: Resources, reserved: Resources) -> Resources {
    Resources {
        cpu_milli: capacity.cpu_milli.saturating_sub(reserved.cpu_milli).max(0),
        memory: capacity.memory.saturating_sub(reserved.memory).max(0),
        pods: capacity.pods,
    }
}

/// Whether a pod requesting `requested` fits next to pods using `used`.
/// On refusal, the kubelet's reason (`OutOfcpu`, `OutOfmemory`,
/// `OutOfpods`) and message.
pub fn admit(
    requested: Resources,
    used: Resources,
    allocatable: Resources,
) -> Result<(), PodError> {
    for (resource, req, use_, cap) in [
        (
            Resource::Cpu,
            requested.cpu_milli,
            used.cpu_milli,
            allocatable.cpu_milli,
        ),
        (
            Resource::Memory,
            requested.memory,
            used.memory,
            allocatable.memory,
        ),
        (Resource::Pods, requested.pods, used.pods, allocatable.pods),
    ] {
        let name = resource.as_str();
        // In i128: a request of i64::MAX (a capped 8Ei or 8E) plus what is
        // in use must compare as larger than the node, not wrap below it.
        if req > 0 && i128::from(req) + i128::from(use_) > i128::from(cap) {
            return Err(PodError::OutOf {
                resource,
                message: format!(
                    "Node didn't have enough resource: {name}, requested: {req}, used: {use_}, capacity: {cap}"
                ),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(cpu_milli: i64, memory: i64) -> Resources {
        Resources {
            cpu_milli,
            memory,
            pods: 0,
        }
    }

    #[test]
    fn cpu_quantities() {
        assert_eq!(cpu_quantity(2000), "2");
        assert_eq!(cpu_quantity(1500), "1500m");
        assert_eq!(cpu_quantity(0), "0");
    }

    #[test]
    fn pods_beyond_max_pods_wait() {
        let alloc = Resources {
            pods: 2,
            ..r(1000, 1 << 30)
        };
        let one = Resources { pods: 1, ..r(0, 0) };
        assert!(admit(one, one, alloc).is_ok());
        let e = admit(one, one + one, alloc).unwrap_err();
        assert_eq!(e.reason(), "OutOfpods");
        assert_eq!(
            e.to_string(),
            "Node didn't have enough resource: pods, requested: 1, used: 2, capacity: 2"
        );
    }

    #[test]
    fn admission() {
        let alloc = r(2000, 1 << 30);
        let used = r(1500, 0);
        assert!(admit(r(500, 1 << 30), used, alloc).is_ok());
        let (reason, msg) = admit(r(600, 0), used, alloc)
            .map_err(|e| (e.reason(), e.to_string()))
            .unwrap_err();
        assert_eq!(reason, "OutOfcpu");
        assert_eq!(
            msg,
            "Node didn't have enough resource: cpu, requested: 600, used: 1500, capacity: 2000"
        );
        let (reason, _) = admit(r(0, (1 << 30) + 1), used, alloc)
            .map_err(|e| (e.reason(), e.to_string()))
            .unwrap_err();
        assert_eq!(reason, "OutOfmemory");
        // A pod that asks for nothing always fits (BestEffort).
        let full = r(5000, 5 << 30);
        assert!(admit(Resources::default(), full, alloc).is_ok());
        // Capped huge requests are refused, with and without pods running.
        let huge = r(i64::MAX, i64::MAX);
        assert_eq!(admit(huge, used, alloc).unwrap_err().reason(), "OutOfcpu");
        let (reason, msg) = admit(r(1, i64::MAX), huge, alloc)
            .map_err(|e| (e.reason(), e.to_string()))
            .unwrap_err();
        assert_eq!(reason, "OutOfcpu", "{msg}");
        assert_eq!(
            admit(r(0, i64::MAX), Resources::default(), alloc)
                .unwrap_err()
                .reason(),
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
        let a = allocatable(r(2000, 100), r(500, 200));
        assert_eq!(a, r(1500, 0));
    }
}
