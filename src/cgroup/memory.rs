//! The memory controller: limit, protection and OOM grouping written; usage,
//! working set, RSS, page cache, swap, limit hits and OOM kills read.
//!
//! Limits: v1 `memory.limit_in_bytes` (-1 for none) is v2 `memory.max`
//! ("max"); v2 adds `memory.min` (protection from reclaim, the kubelet's
//! MemoryQoS) and `memory.oom.group` (an OOM kill takes the whole cgroup),
//! which v1 has no file for.
//!
//! Usage: v1 `memory.usage_in_bytes`, `memory.stat` (the `total_*` keys
//! include children), `memory.failcnt`, `memory.oom_control` (`oom_kill`,
//! Linux 4.13 and later); v2 `memory.current`, `memory.stat` (`anon`,
//! `file`, `inactive_file`), `memory.swap.current`, `memory.events` (`max`:
//! times the limit was hit, `oom_kill`).

use super::fs::{Source, keyed_values, parse_keyed};
use super::qos::{CgroupLimits, WeightFormula};
use super::version::Version;

pub const CONTROLLER: &str = "memory";

/// v1 reports "no limit" as a huge page-aligned number (LONG_MAX rounded
/// down to a page); anything from here on is no limit.
const V1_UNLIMITED: u64 = 1 << 62;

/// The files and values for `limits`. The limit is always written (none as
/// such); the v2-only files only when asked for.
pub fn writes(
    limits: &CgroupLimits,
    version: Version,
    _: WeightFormula,
) -> Vec<(&'static str, String)> {
    match version {
        Version::V2 => {
            let max = limits
                .memory_max
                .map_or("max".to_string(), |m| m.to_string());
            let mut out = vec![("memory.max", max)];
            if let Some(min) = limits.memory_min {
                out.push(("memory.min", min.to_string()));
            }
            if limits.oom_group {
                out.push(("memory.oom.group", "1".to_string()));
            }
            out
        }
        Version::V1 => vec![(
            "memory.limit_in_bytes",
            limits.memory_max.unwrap_or(-1).to_string(),
        )],
    }
}

/// Memory figures in bytes, and event counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub usage: u64,
    /// Usage minus inactive file pages: what the kubelet evicts on.
    pub working_set: u64,
    pub rss: u64,
    pub cache: u64,
    pub swap: u64,
    /// Times usage hit the limit.
    pub failcnt: u64,
    pub oom_kills: u64,
}

/// Reads the usage; unreadable files count as zero. `None` on v1 when
/// `memory.usage_in_bytes` cannot be read: the cgroup is gone (v1 needs the
/// memory hierarchy, as [`super::Mode::open`] does; on v2 `cpu.stat`
/// decides, and the root has no `memory.current`).
///
/// v1 reads `memory.failcnt` only for a cgroup `limited` by a limit of its
/// own: the kernel counts a failed charge on the counter whose limit was
/// hit, so the count of any other cgroup stays 0. v1 takes `known_oom_kills`
/// instead of reading `memory.oom_control` when the caller knows the count
/// has not moved (see [`host_oom_kills`]); v2 has it in `memory.events`
/// beside the limit hits, which it reads anyway.
pub fn usage(
    version: Version,
    memory: &impl Source,
    limited: bool,
    known_oom_kills: Option<u64>,
) -> Option<Usage> {
    match version {
        Version::V2 => {
            let [anon, file, inactive_file] = memory
                .counter("memory.stat", |t| {
                    keyed_values(t, ["anon", "file", "inactive_file"])
                })
                .unwrap_or_default();
            let usage = memory.counter_num("memory.current").unwrap_or(0);
            let [max, oom_kills] = memory
                .counter("memory.events", |t| keyed_values(t, ["max", "oom_kill"]))
                .unwrap_or_default();
            Some(Usage {
                usage,
                working_set: working_set(usage, inactive_file),
                rss: anon,
                cache: file,
                swap: memory.counter_num("memory.swap.current").unwrap_or(0),
                failcnt: max,
                oom_kills,
            })
        }
        Version::V1 => {
            let usage = memory.counter_num("memory.usage_in_bytes")?;
            let [rss, cache, swap, inactive_file] = memory
                .counter("memory.stat", |t| {
                    keyed_values(
                        t,
                        [
                            "total_rss",
                            "total_cache",
                            "total_swap",
                            "total_inactive_file",
                        ],
                    )
                })
                .unwrap_or_default();
            Some(Usage {
                usage,
                working_set: working_set(usage, inactive_file),
                rss,
                cache,
                swap,
                failcnt: if limited {
                    memory.counter_num("memory.failcnt").unwrap_or(0)
                } else {
                    0
                },
                oom_kills: known_oom_kills.unwrap_or_else(|| {
                    memory
                        .counter("memory.oom_control", |t| parse_keyed(t, "oom_kill"))
                        .flatten()
                        .unwrap_or(0)
                }),
            })
        }
    }
}

/// Working set as cAdvisor computes it: usage minus inactive file, not
/// below zero.
pub fn working_set(usage: u64, inactive_file: u64) -> u64 {
    usage.saturating_sub(inactive_file)
}

/// The configured limit in bytes, 0 for none.
pub fn limit(version: Version, memory: &impl Source) -> u64 {
    match version {
        Version::V2 => memory.num("memory.max").unwrap_or(0),
        Version::V1 => memory
            .num("memory.limit_in_bytes")
            .filter(|l| *l < V1_UNLIMITED)
            .unwrap_or(0),
    }
}

/// How many processes of the cgroup the OOM killer killed: v2
/// `memory.events` and v1 `memory.oom_control` both have an `oom_kill`
/// line. `None` when the file or the line is missing (a cgroup that is
/// gone, a v1 kernel before 4.13).
pub fn oom_kills(version: Version, memory: &impl Source) -> Option<u64> {
    let file = match version {
        Version::V2 => "memory.events",
        Version::V1 => "memory.oom_control",
    };
    parse_keyed(&memory.read(file)?, "oom_kill")
}

/// OOM kills on the whole host so far: `oom_kill` of `/proc/vmstat`. The
/// kernel counts a kill there and in the victim's memory cgroup one
/// statement apart (`__oom_kill_process`: `count_vm_event(OOM_KILL)`, then
/// `memcg_memory_event_mm(mm, MEMCG_OOM_KILL)`), and nowhere else: while
/// this count stands still, no cgroup's `oom_kill` moves. `None` when
/// unreadable (the caller then reads every cgroup's count).
pub fn host_oom_kills() -> Option<u64> {
    static VMSTAT: std::sync::OnceLock<Option<std::fs::File>> = std::sync::OnceLock::new();
    let file = VMSTAT
        .get_or_init(|| std::fs::File::open("/proc/vmstat").ok())
        .as_ref()?;
    // Room for the whole file (some 4 KiB) and more: one read.
    let mut buf = vec![0; 16 * 1024];
    parse_keyed(super::fs::read_text(file, true, &mut buf)?, "oom_kill")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cgroup::fs::tests::files;

    #[test]
    fn writes_for_each_version() {
        let all = CgroupLimits {
            memory_max: Some(64 << 20),
            memory_min: Some(1 << 20),
            oom_group: true,
            ..Default::default()
        };
        let none = CgroupLimits::default();
        for (limits, version, want) in [
            (
                all,
                Version::V2,
                vec![
                    ("memory.max", "67108864"),
                    ("memory.min", "1048576"),
                    ("memory.oom.group", "1"),
                ],
            ),
            (none, Version::V2, vec![("memory.max", "max")]),
            // v1 has no protection and no group kill: only the limit.
            (
                all,
                Version::V1,
                vec![("memory.limit_in_bytes", "67108864")],
            ),
            (none, Version::V1, vec![("memory.limit_in_bytes", "-1")]),
        ] {
            let got = writes(&limits, version, WeightFormula::Linear);
            let got: Vec<(&str, &str)> = got.iter().map(|(f, v)| (*f, v.as_str())).collect();
            assert_eq!(got, want, "{limits:?} {version:?}");
        }
    }

    #[test]
    fn usage_v2() {
        let mem = files(&[
            ("memory.current", "104857600\n"),
            (
                "memory.stat",
                "anon 52428800\nfile 41943040\ninactive_file 20971520\n",
            ),
            ("memory.swap.current", "4096\n"),
            ("memory.events", "low 0\nhigh 0\nmax 7\noom 1\noom_kill 1\n"),
        ]);
        assert_eq!(
            usage(Version::V2, &mem, true, None),
            Some(Usage {
                usage: 104_857_600,
                working_set: 104_857_600 - 20_971_520,
                rss: 52_428_800,
                cache: 41_943_040,
                swap: 4096,
                failcnt: 7,
                oom_kills: 1,
            })
        );
        assert_eq!(
            usage(Version::V2, &files(&[]), true, None),
            Some(Usage::default())
        );
    }

    #[test]
    fn usage_v1() {
        let mem = files(&[
            ("memory.usage_in_bytes", "1000\n"),
            (
                "memory.stat",
                "cache 5\nrss 1\ntotal_cache 600\ntotal_rss 300\ntotal_inactive_file 1200\ntotal_swap 8\n",
            ),
            ("memory.failcnt", "2\n"),
            (
                "memory.oom_control",
                "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n",
            ),
        ]);
        let limited = Usage {
            usage: 1000,
            // Never below zero.
            working_set: 0,
            rss: 300,
            cache: 600,
            swap: 8,
            failcnt: 2,
            oom_kills: 3,
        };
        assert_eq!(usage(Version::V1, &mem, true, None), Some(limited));
        // Without a limit of its own, its failcnt is not read.
        assert_eq!(
            usage(Version::V1, &mem, false, None),
            Some(Usage {
                failcnt: 0,
                ..limited
            })
        );
        // A count known not to have moved is taken, not read; v2 reads its
        // count beside the limit hits anyway.
        assert_eq!(
            usage(Version::V1, &mem, true, Some(1)),
            Some(Usage {
                oom_kills: 1,
                ..limited
            })
        );
        let v2 = files(&[("memory.events", "max 7\noom_kill 2\n")]);
        assert_eq!(
            usage(Version::V2, &v2, true, Some(1)).map(|u| u.oom_kills),
            Some(2)
        );
        // Without its usage the cgroup is gone.
        assert_eq!(usage(Version::V1, &files(&[]), true, None), None);
    }

    #[test]
    fn host_oom_kills_is_the_kernel_count() {
        let vmstat = std::fs::read_to_string("/proc/vmstat").unwrap();
        let want = parse_keyed(&vmstat, "oom_kill");
        assert!(want.is_some(), "/proc/vmstat has oom_kill since Linux 4.13");
        // Read twice: the kept file is read again from its start.
        assert_eq!(host_oom_kills(), want);
        assert_eq!(host_oom_kills(), want);
    }

    #[test]
    fn limits_read_back() {
        for (version, pairs, want) in [
            (Version::V2, vec![("memory.max", "max\n")], 0),
            (Version::V2, vec![("memory.max", "67108864\n")], 64 << 20),
            (Version::V2, vec![], 0),
            (
                Version::V1,
                vec![("memory.limit_in_bytes", "9223372036854771712\n")],
                0,
            ),
            (
                Version::V1,
                vec![("memory.limit_in_bytes", "67108864\n")],
                64 << 20,
            ),
        ] {
            assert_eq!(limit(version, &files(&pairs)), want, "{pairs:?}");
        }
    }

    #[test]
    fn oom_kill_counts() {
        let v2 = files(&[("memory.events", "max 3\noom 2\noom_kill 1\n")]);
        assert_eq!(oom_kills(Version::V2, &v2), Some(1));
        let v1 = files(&[("memory.oom_control", "oom_kill_disable 0\nunder_oom 0\n")]);
        // A kernel before 4.13: no count, not zero.
        assert_eq!(oom_kills(Version::V1, &v1), None);
        assert_eq!(oom_kills(Version::V1, &files(&[])), None);
    }
}
