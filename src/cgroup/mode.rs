//! cgroup v1 or v2: the one place that decides. v2 is one unified tree where
//! every controller's files sit in the same directory; v1 has a tree per
//! controller (cpu and cpuacct often co-mounted), so one cgroup is a
//! directory in each. The controllers ([`cpu`], [`memory`], [`pids`]) know
//! their files for both versions; this module finds their directories,
//! creates the cgroup and hands each controller its directory.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::fs::{self, Dir};
use super::qos::{CgroupLimits, WeightFormula};
use super::{Error, cpu, memory, pids};
use crate::hostfs::MountEntry;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// Unified hierarchy mounted at the path.
    V2(PathBuf),
    /// Controller name -> mount point of its hierarchy. On a hybrid host
    /// also [`UNIFIED`] -> the cgroup v2 tree without controllers.
    V1(BTreeMap<String, PathBuf>),
}

/// The key of a hybrid host's cgroup v2 tree in [`Mode::V1`]'s map. runc
/// places each container in it too, at the same path: its process list is
/// read there, since v2 lists a cgroup's processes afresh at every read of
/// a file kept open, where v1 builds the list at each open.
pub const UNIFIED: &str = "unified";

pub use super::version::Version;

/// A controller's files and values for some limits: `(file, value)` in the
/// order they are written.
type Writes = fn(&CgroupLimits, Version, WeightFormula) -> Vec<(&'static str, String)>;

/// The controllers this agent writes to, in the order it writes them.
const WRITTEN: [(&str, Writes); 3] = [
    (cpu::CONTROLLER, cpu::writes),
    (memory::CONTROLLER, memory::writes),
    (pids::CONTROLLER, pids::writes),
];

/// Names of the controllers written to: enabled for children on v2, looked
/// for in the mount table on v1.
const NAMES: [&str; 3] = [WRITTEN[0].0, WRITTEN[1].0, WRITTEN[2].0];

impl Mode {
    /// Reads the mode from the mount table: v2 when /sys/fs/cgroup itself
    /// is cgroup2 (a hybrid host's /sys/fs/cgroup/unified has no
    /// controllers and does not count).
    pub fn detect(mounts: &[MountEntry]) -> Option<Mode> {
        let mut v1 = BTreeMap::new();
        for m in mounts {
            if m.fs_type == "cgroup2" {
                if m.mount_point == Path::new("/sys/fs/cgroup") {
                    return Some(Mode::V2(m.mount_point.clone()));
                }
                v1.insert(UNIFIED.to_string(), m.mount_point.clone());
            }
            if m.fs_type == "cgroup" {
                for opt in m.super_options.split(',') {
                    if NAMES.contains(&opt) || opt == cpu::ACCOUNTING {
                        v1.insert(opt.to_string(), m.mount_point.clone());
                    }
                }
            }
        }
        v1.keys().any(|k| k != UNIFIED).then_some(Mode::V1(v1))
    }

    pub fn version(&self) -> Version {
        match self {
            Mode::V2(_) => Version::V2,
            Mode::V1(_) => Version::V1,
        }
    }

    pub fn is_v2(&self) -> bool {
        self.version() == Version::V2
    }

    pub fn describe(&self) -> String {
        match self {
            Mode::V2(p) => format!("cgroup v2 (unified) at {}", p.display()),
            Mode::V1(m) => {
                let controllers: Vec<&str> = m
                    .keys()
                    .map(String::as_str)
                    .filter(|k| *k != UNIFIED)
                    .collect();
                let unified = m
                    .get(UNIFIED)
                    .map(|u| format!(", v2 tree at {}", u.display()))
                    .unwrap_or_default();
                format!(
                    "cgroup v1/hybrid, controllers {}{unified}",
                    controllers.join(",")
                )
            }
        }
    }

    /// Directory of cgroup `rel` for `controller`; `None` on v1 when that
    /// controller's hierarchy is not mounted.
    pub fn dir(&self, controller: &str, rel: &str) -> Option<PathBuf> {
        let rel = rel.trim_start_matches('/');
        match self {
            Mode::V2(root) => Some(root.join(rel)),
            Mode::V1(m) => m.get(controller).map(|mp| mp.join(rel)),
        }
    }

    /// Creates cgroup `rel` (and its parents) and writes `limits` into it,
    /// each controller its own files. A v1 controller that is not mounted
    /// is skipped.
    pub fn apply(
        &self,
        rel: &str,
        limits: &CgroupLimits,
        formula: WeightFormula,
    ) -> Result<(), Error> {
        let version = self.version();
        let mut created: Vec<PathBuf> = vec![];
        for (controller, writes) in WRITTEN {
            let Some(dir) = self.dir(controller, rel) else {
                continue;
            };
            if !created.contains(&dir) {
                match self {
                    Mode::V2(root) => fs::create_v2(root, &dir, &NAMES)?,
                    Mode::V1(_) => fs::create_v1(&dir)?,
                }
                created.push(dir.clone());
            }
            for (file, value) in writes(limits, version, formula) {
                fs::write(&dir, file, &value)?;
            }
        }
        Ok(())
    }

    /// Opens cgroup `rel` for reading; `None` when it does not exist (on v1:
    /// in the cpu or the memory hierarchy).
    pub fn open(&self, rel: &str) -> Option<Opened> {
        match self {
            Mode::V2(_) => Some(Opened {
                version: Version::V2,
                cpu: Dir::open(&self.dir(cpu::CONTROLLER, rel)?)?.keeping_listings(),
                cpuacct: None,
                memory: None,
                pids: None,
                unified: None,
            }),
            Mode::V1(_) => {
                let cpu_dir = self.dir(cpu::CONTROLLER, rel)?;
                let cpu = Dir::open(&cpu_dir);
                let memory = Dir::open(&self.dir(memory::CONTROLLER, rel)?);
                let (Some(cpu), Some(memory)) = (cpu, memory) else {
                    return None;
                };
                // cpuacct co-mounted with cpu: the same directory, opened once.
                let cpuacct = self
                    .dir(cpu::ACCOUNTING, rel)
                    .filter(|a| *a != cpu_dir)
                    .and_then(|a| Dir::open(&a));
                Some(Opened {
                    version: Version::V1,
                    cpu,
                    cpuacct,
                    memory: Some(memory),
                    pids: self.dir(pids::CONTROLLER, rel).and_then(|p| Dir::open(&p)),
                    unified: self
                        .dir(UNIFIED, rel)
                        .and_then(|u| Dir::open(&u))
                        .map(Dir::keeping_listings),
                })
            }
        }
    }

    /// How many processes of cgroup `rel` the OOM killer killed.
    pub fn oom_kills(&self, rel: &str) -> Option<u64> {
        let dir = Dir::open(&self.dir(memory::CONTROLLER, rel)?)?;
        memory::oom_kills(self.version(), &dir)
    }
}

/// One cgroup, opened in each hierarchy a reader needs: one directory on
/// v2, up to four on v1.
#[derive(Debug)]
pub struct Opened {
    pub version: Version,
    cpu: Dir,
    cpuacct: Option<Dir>,
    memory: Option<Dir>,
    pids: Option<Dir>,
    /// A hybrid host's v2 directory of the cgroup, for its process list
    /// and CPU usage.
    unified: Option<Dir>,
}

impl Opened {
    pub fn cpu(&self) -> &Dir {
        &self.cpu
    }

    /// v1 `cpuacct`: the cpu directory when the two are co-mounted.
    pub fn cpuacct(&self) -> &Dir {
        self.cpuacct.as_ref().unwrap_or(&self.cpu)
    }

    pub fn memory(&self) -> &Dir {
        self.memory.as_ref().unwrap_or(&self.cpu)
    }

    /// v1 `pids` when mounted, else the memory directory (its `cgroup.procs`
    /// and `tasks` list the same processes).
    pub fn pids(&self) -> &Dir {
        self.pids.as_ref().unwrap_or_else(|| self.memory())
    }

    /// A hybrid host's v2 directory (see [`UNIFIED`]).
    pub fn unified(&self) -> Option<&Dir> {
        self.unified.as_ref()
    }

    /// Where the process list is read: on a hybrid host the v2 directory
    /// (see [`UNIFIED`]), else [`Opened::pids`].
    pub fn processes(&self) -> &Dir {
        self.unified.as_ref().unwrap_or_else(|| self.pids())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cgroup::fs::tests::temp;
    use crate::hostfs::parse_mountinfo;

    const HYBRID: &str = "\
25 1 0:23 / /sys/fs/cgroup rw - tmpfs tmpfs rw
26 25 0:24 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw
27 25 0:25 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu
28 25 0:26 / /sys/fs/cgroup/cpuacct rw - cgroup cgroup rw,cpuacct
29 25 0:27 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory
30 25 0:28 / /sys/fs/cgroup/pids rw - cgroup cgroup rw,pids
";

    #[test]
    fn detects_hybrid_as_v1_and_unified_as_v2() {
        let m = Mode::detect(&parse_mountinfo(HYBRID)).unwrap();
        assert!(!m.is_v2());
        assert_eq!(m.version(), Version::V1);
        assert_eq!(
            m.dir("memory", "/kubepods/pod1"),
            Some(PathBuf::from("/sys/fs/cgroup/memory/kubepods/pod1"))
        );
        assert_eq!(
            m.dir(UNIFIED, "/kubepods/pod1"),
            Some(PathBuf::from("/sys/fs/cgroup/unified/kubepods/pod1"))
        );
        assert_eq!(
            m.describe(),
            "cgroup v1/hybrid, controllers cpu,cpuacct,memory,pids, v2 tree at /sys/fs/cgroup/unified"
        );
        // A v2 tree without v1 controllers beside it is no cgroup mode.
        let unified_only = "26 25 0:24 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n";
        assert_eq!(Mode::detect(&parse_mountinfo(unified_only)), None);
        let v2 = "30 1 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate\n";
        assert_eq!(
            Mode::detect(&parse_mountinfo(v2)),
            Some(Mode::V2(PathBuf::from("/sys/fs/cgroup")))
        );
        let comounted =
            "27 25 0:25 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n";
        let m = Mode::detect(&parse_mountinfo(comounted)).unwrap();
        assert_eq!(m.dir("cpu", "x"), m.dir("cpuacct", "x"));
        assert_eq!(Mode::detect(&parse_mountinfo("")), None);
    }

    #[test]
    fn v2_files_and_subtree_control() {
        let root = temp("v2");
        std::fs::write(root.join("cgroup.controllers"), "cpuset cpu io memory pids").unwrap();
        std::fs::write(root.join("cgroup.subtree_control"), "").unwrap();
        let m = Mode::V2(root.clone());
        let limits = CgroupLimits {
            cpu_shares: Some(1024),
            cpu_quota_us: Some(20_000),
            memory_max: Some(33_554_432),
            memory_min: Some(1 << 20),
            pids_max: None,
            oom_group: false,
        };
        m.apply(
            "/kubepods/burstable/podu",
            &limits,
            WeightFormula::Quadratic,
        )
        .unwrap();
        let dir = root.join("kubepods/burstable/podu");
        let read = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap();
        assert_eq!(read("cpu.weight"), "100");
        assert_eq!(read("cpu.max"), "20000 100000");
        assert_eq!(read("memory.max"), "33554432");
        assert_eq!(read("memory.min"), "1048576");
        assert_eq!(read("pids.max"), "max");
        assert!(!dir.join("memory.oom.group").exists());
        // The root enabled controllers for its children (a fake file keeps
        // only the last write: "+pids").
        assert!(
            std::fs::read_to_string(root.join("cgroup.subtree_control"))
                .unwrap()
                .starts_with('+')
        );
        std::fs::write(
            dir.join("memory.events"),
            "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n",
        )
        .unwrap();
        assert_eq!(m.oom_kills("/kubepods/burstable/podu"), Some(1));
        assert_eq!(m.oom_kills("/kubepods/burstable/gone"), None);
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn v1_files() {
        let root = temp("v1");
        let m = Mode::V1(BTreeMap::from([
            ("cpu".to_string(), root.join("cpu")),
            ("memory".to_string(), root.join("memory")),
            ("pids".to_string(), root.join("pids")),
        ]));
        let limits = CgroupLimits {
            cpu_shares: Some(256),
            cpu_quota_us: None,
            memory_max: Some(64 << 20),
            memory_min: Some(1 << 20),
            pids_max: Some(100),
            oom_group: true,
        };
        m.apply("/kubepods/podu", &limits, WeightFormula::Linear)
            .unwrap();
        let path = |c: &str, f: &str| root.join(c).join("kubepods/podu").join(f);
        let read = |c: &str, f: &str| std::fs::read_to_string(path(c, f)).unwrap();
        assert_eq!(read("cpu", "cpu.shares"), "256");
        assert_eq!(read("cpu", "cpu.cfs_period_us"), "100000");
        assert_eq!(read("cpu", "cpu.cfs_quota_us"), "-1");
        assert_eq!(read("memory", "memory.limit_in_bytes"), "67108864");
        assert_eq!(read("pids", "pids.max"), "100");
        // v1 has neither memory.min nor memory.oom.group.
        assert!(!path("memory", "memory.min").exists());
        assert!(!path("memory", "memory.oom.group").exists());
        std::fs::write(
            path("memory", "memory.oom_control"),
            "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
        )
        .unwrap();
        assert_eq!(m.oom_kills("kubepods/podu"), Some(2));
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn v1_without_a_controller_skips_it() {
        let root = temp("v1-nopids");
        let m = Mode::V1(BTreeMap::from([
            ("cpu".to_string(), root.join("cpu")),
            ("memory".to_string(), root.join("memory")),
        ]));
        m.apply("/k/p", &CgroupLimits::default(), WeightFormula::Linear)
            .unwrap();
        assert!(root.join("memory/k/p/memory.limit_in_bytes").exists());
        assert!(!root.join("pids").exists());
        let opened = m.open("/k/p").unwrap();
        assert_eq!(opened.version, Version::V1);
        assert!(m.open("/k/gone").is_none());
        std::fs::remove_dir_all(&root).unwrap();
    }
}
