//! Writing and reading cgroup files. The same code serves cgroup v2 (one
//! unified tree) and v1 (a tree per controller); every path is below a root
//! given to the constructor, so tests run it against a temporary directory.
//!
//! v1 and v2 differ in file names and units: v1 `cpu.shares` (2..262144) is
//! v2 `cpu.weight` (1..10000); v1 `cpu.cfs_quota_us` + `cpu.cfs_period_us`
//! are v2 `cpu.max` ("quota period" or "max period"); v1
//! `memory.limit_in_bytes` (-1 for none) is v2 `memory.max` ("max"); v2
//! needs each parent to enable controllers in `cgroup.subtree_control`.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

use super::qos::{CPU_PERIOD_US, CgroupLimits, WeightFormula, cpu_weight};
use crate::hostfs::MountEntry;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// Unified hierarchy mounted at the path.
    V2(PathBuf),
    /// Controller name -> mount point of its hierarchy.
    V1(BTreeMap<String, PathBuf>),
}

/// The controllers this agent writes to.
const CONTROLLERS: [&str; 3] = ["cpu", "memory", "pids"];

impl Mode {
    /// Reads the mode from the mount table: v2 when /sys/fs/cgroup itself
    /// is cgroup2 (a hybrid host's /sys/fs/cgroup/unified has no
    /// controllers and does not count).
    pub fn detect(mounts: &[MountEntry]) -> Option<Mode> {
        let mut v1 = BTreeMap::new();
        for m in mounts {
            if m.fs_type == "cgroup2" && m.mount_point == Path::new("/sys/fs/cgroup") {
                return Some(Mode::V2(m.mount_point.clone()));
            }
            if m.fs_type == "cgroup" {
                for opt in m.super_options.split(',') {
                    if CONTROLLERS.contains(&opt) || opt == "cpuacct" {
                        v1.insert(opt.to_string(), m.mount_point.clone());
                    }
                }
            }
        }
        (!v1.is_empty()).then_some(Mode::V1(v1))
    }

    pub fn is_v2(&self) -> bool {
        matches!(self, Mode::V2(_))
    }

    pub fn describe(&self) -> String {
        match self {
            Mode::V2(p) => format!("cgroup v2 (unified) at {}", p.display()),
            Mode::V1(m) => format!(
                "cgroup v1/hybrid, controllers {}",
                m.keys().cloned().collect::<Vec<_>>().join(",")
            ),
        }
    }

    /// Directory of cgroup `rel` for `controller`.
    pub fn dir(&self, controller: &str, rel: &str) -> Option<PathBuf> {
        let rel = rel.trim_start_matches('/');
        match self {
            Mode::V2(root) => Some(root.join(rel)),
            Mode::V1(m) => m.get(controller).map(|mp| mp.join(rel)),
        }
    }

    fn write(dir: &Path, file: &str, value: &str) -> io::Result<()> {
        let p = dir.join(file);
        std::fs::write(&p, value).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("writing {value:?} to {}: {e}", p.display()),
            )
        })
    }

    /// Creates cgroup `rel` (and its parents) and writes `limits` into it.
    pub fn apply(
        &self,
        rel: &str,
        limits: &CgroupLimits,
        formula: WeightFormula,
    ) -> io::Result<()> {
        match self {
            Mode::V2(root) => {
                let dir = root.join(rel.trim_start_matches('/'));
                create_v2(root, &dir)?;
                if let Some(s) = limits.cpu_shares {
                    Self::write(&dir, "cpu.weight", &cpu_weight(s, formula).to_string())?;
                }
                let quota = limits
                    .cpu_quota_us
                    .map_or("max".to_string(), |q| q.to_string());
                Self::write(&dir, "cpu.max", &format!("{quota} {CPU_PERIOD_US}"))?;
                let max = limits
                    .memory_max
                    .map_or("max".to_string(), |m| m.to_string());
                Self::write(&dir, "memory.max", &max)?;
                if let Some(min) = limits.memory_min {
                    Self::write(&dir, "memory.min", &min.to_string())?;
                }
                let pids = limits
                    .pids_max
                    .filter(|p| *p > 0)
                    .map_or("max".to_string(), |p| p.to_string());
                Self::write(&dir, "pids.max", &pids)?;
            }
            Mode::V1(_) => {
                if let Some(dir) = self.dir("cpu", rel) {
                    std::fs::create_dir_all(&dir)?;
                    if let Some(s) = limits.cpu_shares {
                        Self::write(&dir, "cpu.shares", &s.to_string())?;
                    }
                    Self::write(&dir, "cpu.cfs_period_us", &CPU_PERIOD_US.to_string())?;
                    Self::write(
                        &dir,
                        "cpu.cfs_quota_us",
                        &limits.cpu_quota_us.unwrap_or(-1).to_string(),
                    )?;
                }
                if let Some(dir) = self.dir("memory", rel) {
                    std::fs::create_dir_all(&dir)?;
                    Self::write(
                        &dir,
                        "memory.limit_in_bytes",
                        &limits.memory_max.unwrap_or(-1).to_string(),
                    )?;
                }
                if let Some(dir) = self.dir("pids", rel) {
                    std::fs::create_dir_all(&dir)?;
                    let pids = limits
                        .pids_max
                        .filter(|p| *p > 0)
                        .map_or("max".to_string(), |p| p.to_string());
                    Self::write(&dir, "pids.max", &pids)?;
                }
            }
        }
        Ok(())
    }

    /// How many processes of cgroup `rel` the OOM killer killed: v2
    /// `memory.events` and v1 `memory.oom_control` both have an `oom_kill`
    /// line (v1 since Linux 4.13).
    pub fn oom_kills(&self, rel: &str) -> Option<u64> {
        let (dir, file) = match self {
            Mode::V2(_) => (self.dir("memory", rel)?, "memory.events"),
            Mode::V1(_) => (self.dir("memory", rel)?, "memory.oom_control"),
        };
        let text = std::fs::read_to_string(dir.join(file)).ok()?;
        parse_keyed(&text, "oom_kill")
    }
}

/// Value of `key` in a flat-keyed cgroup file (`key value` per line).
pub fn parse_keyed(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

/// Creates `dir` below the v2 root, enabling the cpu, memory and pids
/// controllers for the children of every level on the way.
fn create_v2(root: &Path, dir: &Path) -> io::Result<()> {
    let rel = dir.strip_prefix(root).unwrap_or(dir);
    let mut cur = root.to_path_buf();
    for comp in rel.components() {
        enable_controllers(&cur)?;
        cur.push(comp);
        if !cur.exists() {
            std::fs::create_dir(&cur)?;
        }
    }
    Ok(())
}

fn enable_controllers(dir: &Path) -> io::Result<()> {
    let available = std::fs::read_to_string(dir.join("cgroup.controllers")).unwrap_or_default();
    let enabled = std::fs::read_to_string(dir.join("cgroup.subtree_control")).unwrap_or_default();
    for c in CONTROLLERS {
        let has = |s: &str| s.split_whitespace().any(|x| x == c);
        if has(&available) && !has(&enabled) {
            Mode::write(dir, "cgroup.subtree_control", &format!("+{c}"))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
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
        assert_eq!(
            m.dir("memory", "/kubepods/pod1"),
            Some(PathBuf::from("/sys/fs/cgroup/memory/kubepods/pod1"))
        );
        let v2 = "30 1 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate\n";
        assert_eq!(
            Mode::detect(&parse_mountinfo(v2)),
            Some(Mode::V2(PathBuf::from("/sys/fs/cgroup")))
        );
        let comounted =
            "27 25 0:25 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n";
        let m = Mode::detect(&parse_mountinfo(comounted)).unwrap();
        assert_eq!(m.dir("cpu", "x"), m.dir("cpuacct", "x"));
    }

    fn temp(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("kl-cgfs-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
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
            memory_min: None,
            pids_max: Some(100),
            oom_group: false,
        };
        m.apply("/kubepods/podu", &limits, WeightFormula::Linear)
            .unwrap();
        let read = |c: &str, f: &str| {
            std::fs::read_to_string(root.join(c).join("kubepods/podu").join(f)).unwrap()
        };
        assert_eq!(read("cpu", "cpu.shares"), "256");
        assert_eq!(read("cpu", "cpu.cfs_quota_us"), "-1");
        assert_eq!(read("memory", "memory.limit_in_bytes"), "67108864");
        assert_eq!(read("pids", "pids.max"), "100");
        std::fs::write(
            root.join("memory/kubepods/podu/memory.oom_control"),
            "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
        )
        .unwrap();
        assert_eq!(m.oom_kills("kubepods/podu"), Some(2));
        std::fs::remove_dir_all(&root).unwrap();
    }
}
