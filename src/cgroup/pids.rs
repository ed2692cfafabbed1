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

/// What the caller knows of the cgroups below the one read. A cgroup with
/// at most one task of its own has as many processes: its process list
/// (the costliest file of a scrape on cgroup v1, made afresh at each open)
/// is then not read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Below {
    /// Nothing known: the process list is read.
    Unknown,
    /// No cgroup below: a container's, whose cgroup filesystem is mounted
    /// read-only (see [`crate::oci`]).
    Nothing,
    /// The cgroups below hold this many tasks in all: a pod's containers,
    /// read just before. A task that came or went in between makes the
    /// counts differ, and the list is read.
    Tasks(u64),
}

/// `pids` has the thread counts, `procs` the process list (the same
/// directory but on a hybrid host, see [`super::mode::UNIFIED`]).
pub fn tasks(version: Version, pids: &impl Source, procs: &impl Source, below: Below) -> Tasks {
    let (threads, own) = match pids.counter_num("pids.current") {
        Some(all) => {
            let own = match below {
                Below::Unknown => None,
                Below::Nothing => Some(all),
                Below::Tasks(n) => all.checked_sub(n),
            };
            (all, own)
        }
        None => {
            let list = match version {
                Version::V2 => "cgroup.threads",
                Version::V1 => "tasks",
            };
            let own = pids.read(list).map_or(0, |t| count_lines(&t));
            (own, Some(own))
        }
    };
    let processes = match own {
        Some(n @ 0..=1) => n,
        _ => procs.counter("cgroup.procs", count_lines).unwrap_or(0),
    };
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
            tasks(Version::V2, &v2, &v2, Below::Unknown),
            Tasks {
                processes: 2,
                threads: 3
            }
        );
        let v1 = BTreeMap::from([("cgroup.procs", "1\n"), ("tasks", "1\n2\n")]);
        assert_eq!(
            tasks(Version::V1, &v1, &v1, Below::Unknown),
            Tasks {
                processes: 1,
                threads: 2
            }
        );
        assert_eq!(
            tasks(
                Version::V1,
                &BTreeMap::new(),
                &BTreeMap::new(),
                Below::Unknown
            ),
            Tasks::default()
        );
        // The pids controller's count when there is one: threads of the
        // children included.
        let pod = BTreeMap::from([("cgroup.procs", ""), ("tasks", ""), ("pids.current", "5\n")]);
        let pod_tasks = |below| tasks(Version::V1, &pod, &pod, below);
        assert_eq!(
            pod_tasks(Below::Unknown),
            Tasks {
                processes: 0,
                threads: 5
            }
        );
        // The list is what is read whenever the cgroup may have more than
        // one task of its own ...
        let procs_of =
            |files: &BTreeMap<&str, &str>, below| tasks(Version::V2, files, files, below).processes;
        let listed = BTreeMap::from([("cgroup.procs", "7\n"), ("pids.current", "2\n")]);
        for below in [
            Below::Unknown,
            Below::Nothing,
            Below::Tasks(0),
            Below::Tasks(3),
        ] {
            assert_eq!(procs_of(&listed, below), 1, "{below:?}");
        }
        // ... and not when it has at most one (the file here would say
        // otherwise).
        let one = BTreeMap::from([("cgroup.procs", "7\n8\n"), ("pids.current", "1\n")]);
        assert_eq!(procs_of(&one, Below::Nothing), 1);
        assert_eq!(procs_of(&one, Below::Tasks(1)), 0);
        assert_eq!(procs_of(&one, Below::Unknown), 2);
        let pod_of_two = BTreeMap::from([("cgroup.procs", "9\n"), ("pids.current", "3\n")]);
        assert_eq!(procs_of(&pod_of_two, Below::Tasks(3)), 0);
        assert_eq!(procs_of(&pod_of_two, Below::Tasks(2)), 1);
        // The list is read where it is given (a hybrid host's v2 tree).
        let unified = BTreeMap::from([("cgroup.procs", "4\n5\n")]);
        assert_eq!(
            tasks(Version::V1, &listed, &unified, Below::Unknown),
            Tasks {
                processes: 2,
                threads: 2
            }
        );
        // Without the pids controller the own thread list decides.
        let no_pids = BTreeMap::from([("cgroup.procs", "1\n2\n"), ("tasks", "4\n")]);
        assert_eq!(
            tasks(Version::V1, &no_pids, &no_pids, Below::Unknown),
            Tasks {
                processes: 1,
                threads: 1
            }
        );
    }
}
