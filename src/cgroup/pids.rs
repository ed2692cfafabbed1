//! The pids controller: `pids.max` written (the kubelet's `podPidsLimit`),
//! processes and threads counted. `pids.max` is the same file on v1 and v2;
//! the thread list is v1 `tasks`, v2 `cgroup.threads`.

use super::fs::{Source, count_lines};
use super::qos::{CgroupLimits, WeightFormula};
use super::version::Version;

pub const CONTROLLER: &str = "pids";

/// The files and values for `limits`: the limit, "max" for none (0 or less
/// is no limit, as the kubelet reads `podPidsLimit`).
pub fn writes(limits: &CgroupLimits, _: Version, _: WeightFormula) -> Vec<(&'static str, String)> {
    let max = limits
        .pids_max
        .filter(|p| *p > 0)
        .map_or("max".to_string(), |p| p.to_string());
    vec![("pids.max", max)]
}

/// Processes and threads, as cAdvisor counts them: the processes in the
/// cgroup itself (`cgroup.procs`), the threads in it and below it
/// (`pids.current`, the pids controller's count; without that controller,
/// the cgroup's own thread list). 0 when unreadable.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tasks {
    pub processes: u64,
    pub threads: u64,
}

pub fn tasks(version: Version, pids: &impl Source) -> Tasks {
    let count = |file| pids.read(file).map_or(0, |t| count_lines(&t));
    let threads = pids.counter_num("pids.current").unwrap_or_else(|| {
        count(match version {
            Version::V2 => "cgroup.threads",
            Version::V1 => "tasks",
        })
    });
    let processes = pids.counter("cgroup.procs").map_or(0, |t| count_lines(&t));
    Tasks { processes, threads }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn limit_values() {
        for (pids_max, want) in [
            (None, "max"),
            (Some(0), "max"),
            (Some(-1), "max"),
            (Some(100), "100"),
        ] {
            let limits = CgroupLimits {
                pids_max,
                ..Default::default()
            };
            for version in [Version::V1, Version::V2] {
                assert_eq!(
                    writes(&limits, version, WeightFormula::Linear),
                    [("pids.max", want.to_string())],
                    "{pids_max:?}"
                );
            }
        }
    }

    #[test]
    fn counts() {
        let v2 = BTreeMap::from([
            ("cgroup.procs", "12\n13\n"),
            ("cgroup.threads", "12\n13\n14\n"),
        ]);
        assert_eq!(
            tasks(Version::V2, &v2),
            Tasks {
                processes: 2,
                threads: 3
            }
        );
        let v1 = BTreeMap::from([("cgroup.procs", "1\n"), ("tasks", "1\n2\n")]);
        assert_eq!(
            tasks(Version::V1, &v1),
            Tasks {
                processes: 1,
                threads: 2
            }
        );
        assert_eq!(tasks(Version::V1, &BTreeMap::new()), Tasks::default());
        // The pids controller's count when there is one: threads of the
        // children included.
        let pod = BTreeMap::from([("cgroup.procs", ""), ("tasks", ""), ("pids.current", "5\n")]);
        assert_eq!(
            tasks(Version::V1, &pod),
            Tasks {
                processes: 0,
                threads: 5
            }
        );
    }
}
