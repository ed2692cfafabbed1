//! The kubepods cgroup hierarchy: where pods and containers live, the pod
//! cgroups' values, and their removal.
//!
//! cgroupfs driver: `<root>/kubepods/pod<uid>` (Guaranteed),
//! `<root>/kubepods/burstable/pod<uid>`, `<root>/kubepods/besteffort/pod<uid>`,
//! each container below its pod. systemd driver: `kubepods.slice`,
//! `kubepods-burstable.slice`, `kubepods-burstable-pod<uid>.slice`, containers
//! as `kubelet-lite-<id>.scope` units made by runc.
//!
//! runc creates each container's cgroup and removes it with the container;
//! the pod and QoS cgroups are the agent's, as on a kubelet.

pub mod fs;
pub mod qos;

use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use fs::Mode;
pub use qos::{CgroupLimits, QosClass, WeightFormula};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub enum Driver {
    #[default]
    Cgroupfs,
    Systemd,
}

/// Names of the cgroups, for one driver and root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    pub driver: Driver,
    /// Parent of `kubepods` (cgroupfs driver); `/` puts it at the top, as the
    /// kubelet's default `cgroupRoot` does.
    pub root: String,
}

fn qos_dir(qos: QosClass) -> Option<&'static str> {
    match qos {
        QosClass::Guaranteed => None,
        QosClass::Burstable => Some("burstable"),
        QosClass::BestEffort => Some("besteffort"),
    }
}

impl Layout {
    fn base(&self) -> String {
        self.root.trim_end_matches('/').to_string()
    }

    /// `kubepods`, relative to each hierarchy's mount point.
    pub fn kubepods(&self) -> String {
        match self.driver {
            Driver::Cgroupfs => format!("{}/kubepods", self.base()),
            Driver::Systemd => "/kubepods.slice".to_string(),
        }
    }

    /// The QoS cgroup a pod of class `qos` lives in.
    pub fn qos_parent(&self, qos: QosClass) -> String {
        match (self.driver, qos_dir(qos)) {
            (_, None) => self.kubepods(),
            (Driver::Cgroupfs, Some(q)) => format!("{}/{q}", self.kubepods()),
            (Driver::Systemd, Some(q)) => format!("/kubepods.slice/kubepods-{q}.slice"),
        }
    }

    /// The pod cgroup, relative to each hierarchy's mount point.
    pub fn pod(&self, qos: QosClass, uid: &str) -> String {
        match (self.driver, qos_dir(qos)) {
            (Driver::Cgroupfs, _) => format!("{}/pod{uid}", self.qos_parent(qos)),
            (Driver::Systemd, None) => format!("/kubepods.slice/kubepods-pod{uid}.slice"),
            (Driver::Systemd, Some(q)) => {
                format!("{}/kubepods-{q}-pod{uid}.slice", self.qos_parent(qos))
            }
        }
    }

    /// The container's `linux.cgroupsPath` for runc: a path with cgroupfs,
    /// `slice:prefix:name` with systemd.
    pub fn container_path(&self, qos: QosClass, uid: &str, id: &str) -> String {
        match self.driver {
            Driver::Cgroupfs => format!("{}/{id}", self.pod(qos, uid)),
            Driver::Systemd => {
                let pod = self.pod(qos, uid);
                let slice = pod.rsplit('/').next().unwrap_or_default();
                format!("{slice}:kubelet-lite:{id}")
            }
        }
    }

    /// The container's cgroup directory, relative to the mount points.
    pub fn container_dir(&self, qos: QosClass, uid: &str, id: &str) -> String {
        match self.driver {
            Driver::Cgroupfs => self.container_path(qos, uid, id),
            Driver::Systemd => format!("{}/kubelet-lite-{id}.scope", self.pod(qos, uid)),
        }
    }
}

/// systemd unit properties for a pod slice's values (the systemd driver).
pub fn systemd_properties(limits: &CgroupLimits, formula: WeightFormula) -> Vec<String> {
    let mut p = vec![];
    if let Some(s) = limits.cpu_shares {
        p.push(format!("CPUWeight={}", qos::cpu_weight(s, formula)));
    }
    // systemd takes the quota as a share of one CPU per 100 ms period.
    p.push(match limits.cpu_quota_us {
        Some(q) => format!(
            "CPUQuota={}%",
            (u64::try_from(q).unwrap_or(0) * 100).div_ceil(qos::CPU_PERIOD_US)
        ),
        None => "CPUQuota=".to_string(),
    });
    p.push(format!(
        "MemoryMax={}",
        limits
            .memory_max
            .map_or("infinity".to_string(), |m| m.to_string())
    ));
    if let Some(min) = limits.memory_min {
        p.push(format!("MemoryMin={min}"));
    }
    p.push(format!(
        "TasksMax={}",
        limits
            .pids_max
            .map_or("infinity".to_string(), |t| t.to_string())
    ));
    p
}

fn systemctl(args: &[&str]) -> io::Result<()> {
    let out = std::process::Command::new("systemctl")
        .args(args)
        .output()?;
    if out.status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "systemctl {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

/// Mount points of the cgroup hierarchies (v1 controllers and/or the v2
/// unified tree), from the mount table.
pub fn hierarchies(mounts: &[crate::hostfs::MountEntry]) -> Vec<PathBuf> {
    mounts
        .iter()
        .filter(|m| m.fs_type == "cgroup" || m.fs_type == "cgroup2")
        .map(|m| m.mount_point.clone())
        .collect()
}

/// Removes the cgroup directory `rel` (and empty children) in every
/// hierarchy of `mounts`. Only rmdir is used: a cgroup that still holds a
/// process is left alone and reported.
pub fn remove_everywhere(mounts: &[PathBuf], rel: &str) -> Vec<String> {
    let mut problems = Vec::new();
    for m in mounts {
        let dir = m.join(rel.trim_start_matches('/'));
        if let Err(e) = remove_tree(&dir) {
            problems.push(format!("{}: {e}", dir.display()));
        }
    }
    problems
}

/// rmdir of a cgroup tree, children first. Cgroup directories cannot be
/// removed with remove_dir_all: their control files cannot be unlinked.
fn remove_tree(dir: &Path) -> io::Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for entry in entries.flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            remove_tree(&entry.path())?;
        }
    }
    match std::fs::remove_dir(dir) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Everything the agent does with cgroups, for one host.
#[derive(Debug, Clone)]
pub struct Cgroups {
    pub mode: Mode,
    pub layout: Layout,
    pub formula: WeightFormula,
    pub options: qos::Options,
    /// Every mounted hierarchy (v1 controllers we do not write to included:
    /// runc creates the pod's directory in all of them).
    pub mounts: Vec<PathBuf>,
}

impl Cgroups {
    /// Creates `kubepods` and its QoS children with the kubelet's values:
    /// `kubepods` limited to the node's allocatable resources, BestEffort at
    /// the minimum CPU shares.
    pub fn setup(&self, allocatable_cpu_milli: i64, allocatable_memory: i64) -> io::Result<()> {
        if self.layout.driver == Driver::Systemd {
            // systemd owns slices; runc creates them on first use.
            return Ok(());
        }
        let top = CgroupLimits {
            cpu_shares: Some(qos::cpu_shares(allocatable_cpu_milli)),
            memory_max: Some(allocatable_memory).filter(|m| *m > 0),
            ..Default::default()
        };
        self.mode
            .apply(&self.layout.kubepods(), &top, self.formula)?;
        let burstable = CgroupLimits::default();
        self.mode.apply(
            &self.layout.qos_parent(QosClass::Burstable),
            &burstable,
            self.formula,
        )?;
        let besteffort = CgroupLimits {
            cpu_shares: Some(qos::MIN_SHARES),
            ..Default::default()
        };
        self.mode.apply(
            &self.layout.qos_parent(QosClass::BestEffort),
            &besteffort,
            self.formula,
        )
    }

    /// Creates the pod cgroup with its values, before any container. With
    /// the systemd driver the pod is a slice unit that systemd owns (it
    /// rewrites the slice's files when it realizes it): the values are given
    /// to systemd as unit properties instead.
    pub fn apply_pod(&self, qos: QosClass, uid: &str, limits: &CgroupLimits) -> io::Result<()> {
        let rel = self.layout.pod(qos, uid);
        if self.layout.driver == Driver::Cgroupfs {
            return self.mode.apply(&rel, limits, self.formula);
        }
        let unit = rel.rsplit('/').next().unwrap_or_default();
        systemctl(&["start", unit])?;
        let mut args = vec![
            "set-property".to_string(),
            "--runtime".to_string(),
            unit.to_string(),
        ];
        args.extend(systemd_properties(limits, self.formula));
        systemctl(&args.iter().map(String::as_str).collect::<Vec<_>>())
    }

    /// Removes the pod's cgroups, whatever QoS class it had.
    pub fn remove_pod(&self, uid: &str) -> Vec<String> {
        let mut problems = vec![];
        for q in [
            QosClass::Guaranteed,
            QosClass::Burstable,
            QosClass::BestEffort,
        ] {
            let rel = self.layout.pod(q, uid);
            if self.layout.driver == Driver::Systemd
                && self
                    .mounts
                    .iter()
                    .any(|m| m.join(rel.trim_start_matches('/')).exists())
            {
                let unit = rel.rsplit('/').next().unwrap_or_default();
                let _ = systemctl(&["stop", unit]);
            }
            problems.extend(remove_everywhere(&self.mounts, &rel));
        }
        problems
    }

    /// OOM kills inside one container's cgroup so far.
    pub fn container_oom_kills(&self, qos: QosClass, uid: &str, id: &str) -> Option<u64> {
        self.mode
            .oom_kills(&self.layout.container_dir(qos, uid, id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_v1_and_v2_mounts() {
        let info = "30 25 0:26 / /sys/fs/cgroup/memory rw,nosuid - cgroup cgroup rw,memory\n\
                    31 25 0:27 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n\
                    32 1 8:1 / / rw - ext4 /dev/vda rw\n";
        assert_eq!(
            hierarchies(&crate::hostfs::parse_mountinfo(info)),
            [
                PathBuf::from("/sys/fs/cgroup/memory"),
                PathBuf::from("/sys/fs/cgroup/unified")
            ]
        );
    }

    #[test]
    fn cgroupfs_names() {
        let l = Layout {
            driver: Driver::Cgroupfs,
            root: "/".into(),
        };
        assert_eq!(l.pod(QosClass::Guaranteed, "u1"), "/kubepods/podu1");
        assert_eq!(
            l.pod(QosClass::Burstable, "u1"),
            "/kubepods/burstable/podu1"
        );
        assert_eq!(
            l.container_path(QosClass::BestEffort, "u1", "c1"),
            "/kubepods/besteffort/podu1/c1"
        );
        let l = Layout {
            driver: Driver::Cgroupfs,
            root: "/test/".into(),
        };
        assert_eq!(l.pod(QosClass::Guaranteed, "u1"), "/test/kubepods/podu1");
    }

    #[test]
    fn systemd_names() {
        let l = Layout {
            driver: Driver::Systemd,
            root: "/".into(),
        };
        assert_eq!(
            l.pod(QosClass::Burstable, "u1"),
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-podu1.slice"
        );
        assert_eq!(
            l.pod(QosClass::Guaranteed, "u1"),
            "/kubepods.slice/kubepods-podu1.slice"
        );
        assert_eq!(
            l.container_path(QosClass::Burstable, "u1", "c1"),
            "kubepods-burstable-podu1.slice:kubelet-lite:c1"
        );
        assert_eq!(
            l.container_dir(QosClass::BestEffort, "u1", "c1"),
            "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-podu1.slice/kubelet-lite-c1.scope"
        );
    }

    #[test]
    fn systemd_unit_properties() {
        let l = CgroupLimits {
            cpu_shares: Some(204),
            cpu_quota_us: Some(20_000),
            memory_max: Some(64 << 20),
            memory_min: None,
            pids_max: None,
            oom_group: false,
        };
        assert_eq!(
            systemd_properties(&l, WeightFormula::Linear),
            [
                "CPUWeight=8",
                "CPUQuota=20%",
                "MemoryMax=67108864",
                "TasksMax=infinity"
            ]
        );
        let none = CgroupLimits::default();
        assert_eq!(
            systemd_properties(&none, WeightFormula::Linear),
            ["CPUQuota=", "MemoryMax=infinity", "TasksMax=infinity"]
        );
    }

    #[test]
    fn removes_nested_empty_dirs_only() {
        let m = std::env::temp_dir().join(format!("kl-cg-{}", std::process::id()));
        let pod = m.join("kl/kubepods/burstable/podu1");
        std::fs::create_dir_all(pod.join("c1")).unwrap();
        let cg = Cgroups {
            mode: Mode::V2(m.clone()),
            layout: Layout {
                driver: Driver::Cgroupfs,
                root: "/kl".into(),
            },
            formula: WeightFormula::Linear,
            options: Default::default(),
            mounts: vec![m.clone()],
        };
        assert!(cg.remove_pod("u1").is_empty());
        assert!(!pod.exists());
        assert!(m.join("kl/kubepods/burstable").exists());
        std::fs::remove_dir_all(&m).unwrap();
    }
}
