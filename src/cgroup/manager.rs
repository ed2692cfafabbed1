//! The cgroup manager: everything the agent does to cgroups, behind one
//! trait with an implementation per `cgroupDriver` ([`Cgroupfs`],
//! [`Systemd`]), chosen in one place (`cgroup::for_driver`).
//!
//! The levels: the node's `kubepods` and QoS cgroups ([`Manager::setup`]),
//! the pod cgroup ([`Manager::apply_pod`], [`Manager::remove_pod`]), and the
//! container cgroups, which runc creates, limits and removes from the OCI
//! spec ([`Manager::container_path`]); the agent only reads them
//! ([`Manager::stats`], [`Manager::container_oom_kills`]). The drivers
//! differ in names (the [`Layout`]) and in who writes a pod cgroup: the
//! agent with cgroupfs, systemd (told by systemctl) with systemd. Reading
//! is the same for both: the files are the kernel's.

use std::path::PathBuf;

use super::layout::Layout;
use super::mode::Mode;
use super::pids::Below;
use super::qos::{CgroupLimits, QosClass, WeightFormula};
use super::stats::{self, CgroupStats, SpecCache};
use super::{Error, fs};
use crate::hostfs::MountEntry;

/// The host's cgroup hierarchies, as both drivers use them.
#[derive(Debug, Clone)]
pub struct Hierarchy {
    pub mode: Mode,
    /// Every mounted hierarchy (v1 controllers we do not write to included:
    /// runc creates the pod's directory in all of them).
    pub mounts: Vec<PathBuf>,
    /// How v1 shares become a v2 weight.
    pub formula: WeightFormula,
}

impl Hierarchy {
    /// From the mount table; `None` when no cgroup hierarchy is mounted.
    pub fn detect(mounts: &[MountEntry], formula: WeightFormula) -> Option<Hierarchy> {
        Some(Hierarchy {
            mode: Mode::detect(mounts)?,
            mounts: hierarchies(mounts),
            formula,
        })
    }

    /// Removes cgroup `rel` and its empty children in every hierarchy.
    pub fn remove(&self, rel: &str) -> Vec<String> {
        fs::remove_everywhere(&self.mounts, rel)
    }

    /// Whether cgroup `rel` exists in any hierarchy.
    pub fn exists(&self, rel: &str) -> bool {
        self.mounts
            .iter()
            .any(|m| m.join(rel.trim_start_matches('/')).exists())
    }
}

/// Mount points of the cgroup hierarchies (v1 controllers and/or the v2
/// unified tree), from the mount table.
pub fn hierarchies(mounts: &[MountEntry]) -> Vec<PathBuf> {
    mounts
        .iter()
        .filter(|m| m.fs_type == "cgroup" || m.fs_type == "cgroup2")
        .map(|m| m.mount_point.clone())
        .collect()
}

/// What a cgroup driver does, for the node, pod and container levels.
pub trait Manager: std::fmt::Debug + Send + Sync {
    /// The names of the cgroups.
    fn layout(&self) -> &Layout;
    /// v1 or v2, the mount points, the weight formula.
    fn hierarchy(&self) -> &Hierarchy;

    /// Creates `kubepods` and its QoS children with the kubelet's values:
    /// `kubepods` limited to the node's allocatable resources, BestEffort at
    /// the minimum CPU shares.
    fn setup(&self, allocatable_cpu_milli: i64, allocatable_memory: i64) -> Result<(), Error>;

    /// Creates the pod cgroup with its values, before any container
    /// (blocking: the systemd driver runs systemctl).
    fn apply_pod(&self, qos: QosClass, uid: &str, limits: &CgroupLimits) -> Result<(), Error>;

    /// Removes the pod's cgroups, whatever QoS class it had; returns what
    /// could not be removed.
    fn remove_pod(&self, uid: &str) -> Vec<String>;

    /// The pod cgroup, relative to the mount points.
    fn pod_cgroup(&self, qos: QosClass, uid: &str) -> String {
        self.layout().pod(qos, uid)
    }

    /// A container's cgroup, relative to the mount points.
    fn container_cgroup(&self, qos: QosClass, uid: &str, id: &str) -> String {
        self.layout().container_dir(qos, uid, id)
    }

    /// A container's OCI `linux.cgroupsPath`, from which runc creates its
    /// cgroup (and removes it with the container).
    fn container_path(&self, qos: QosClass, uid: &str, id: &str) -> String {
        self.layout().container_path(qos, uid, id)
    }

    /// Statistics of cgroup `rel` (a pod's, a container's, `/` for the
    /// node); `None` when it does not exist. With a cache, the configured
    /// values are read once per cgroup; `below` may spare reading its
    /// process list.
    fn stats(&self, rel: &str, cache: Option<&SpecCache>, below: Below) -> Option<CgroupStats> {
        stats::read(&self.hierarchy().mode, rel, cache, below)
    }

    /// OOM kills inside one container's cgroup so far.
    fn container_oom_kills(&self, qos: QosClass, uid: &str, id: &str) -> Option<u64> {
        self.hierarchy()
            .mode
            .oom_kills(&self.container_cgroup(qos, uid, id))
    }
    /// UIDs of the pods that have a cgroup, whatever their QoS class (an
    /// agent killed between making a pod's cgroup and anything else of the
    /// pod leaves only that).
    fn pod_uids(&self) -> Vec<String> {
        const MARK: &str = "\u{0}";
        let mut out = std::collections::BTreeSet::new();
        for qos in [
            QosClass::Guaranteed,
            QosClass::Burstable,
            QosClass::BestEffort,
        ] {
            // The pod cgroup's name around its UID, for this driver.
            let rel = self.layout().pod(qos, MARK);
            let Some((parent, name)) = rel.rsplit_once('/') else {
                continue;
            };
            let Some((prefix, suffix)) = name.split_once(MARK) else {
                continue;
            };
            for m in &self.hierarchy().mounts {
                let dir = m.join(parent.trim_start_matches('/'));
                for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                    let n = entry.file_name().to_string_lossy().into_owned();
                    if let Some(uid) = n.strip_prefix(prefix).and_then(|r| r.strip_suffix(suffix))
                        && !uid.is_empty()
                        && entry.path().is_dir()
                    {
                        out.insert(uid.to_string());
                    }
                }
            }
        }
        out.into_iter().collect()
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
        let h = Hierarchy::detect(&crate::hostfs::parse_mountinfo(info), WeightFormula::Linear)
            .unwrap();
        assert_eq!(
            h.mounts,
            [
                PathBuf::from("/sys/fs/cgroup/memory"),
                PathBuf::from("/sys/fs/cgroup/unified")
            ]
        );
        assert!(!h.mode.is_v2());
        let none = "32 1 8:1 / / rw - ext4 /dev/vda rw\n";
        assert!(
            Hierarchy::detect(&crate::hostfs::parse_mountinfo(none), WeightFormula::Linear)
                .is_none()
        );
    }
}
