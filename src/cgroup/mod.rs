//! Everything the agent does with cgroups.
//!
//! - [`qos`]: requests and limits -> QoS class and cgroup values (pure).
//! - [`cpu`], [`memory`], [`pids`]: one file per controller, each knowing its
//!   files on cgroup v1 and v2, in both directions: pure functions from
//!   limits to `(file, value)` writes and from file texts to figures.
//! - [`mode`]: v1 or v2 (the one place that decides), the directories of a
//!   cgroup, creating one and handing each controller its directory.
//! - [`stats`]: one cgroup's statistics, put together from the controllers.
//! - [`layout`]: the names of the kubepods hierarchy for each driver (pure).
//! - [`manager`]: the [`Manager`] trait, implemented by the [`cgroupfs`] and
//!   [`systemd`] drivers.
//! - [`fs`]: the file operations under all of these (reads through a
//!   directory descriptor, writes, creation, removal), below a root the
//!   caller gives, so unit tests run against a temporary directory.
//!
//! runc creates each container's cgroup and removes it with the container;
//! the pod and QoS cgroups are the agent's, as on a kubelet.

pub mod cgroupfs;
pub mod cpu;
pub mod fs;
pub mod layout;
pub mod manager;
pub mod memory;
pub mod mode;
pub mod pids;
pub mod qos;
pub mod stats;
pub mod systemd;
pub mod version;

use std::io;
use std::path::PathBuf;
use std::sync::Arc;

pub use layout::{Driver, Layout};
pub use manager::{Hierarchy, Manager};
pub use mode::{Mode, Version};
pub use pids::Below;
pub use qos::{CgroupLimits, QosClass, WeightFormula};
pub use stats::{CgroupStats, SpecCache};

use crate::hostfs::MountEntry;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no cgroup hierarchy is mounted")]
    NoHierarchy,
    #[error("creating cgroup {}: {source}", path.display())]
    Create { path: PathBuf, source: io::Error },
    #[error("writing {value:?} to {}: {source}", path.display())]
    Write {
        path: PathBuf,
        value: String,
        source: io::Error,
    },
    #[error("running systemctl: {0}")]
    SystemctlSpawn(io::Error),
    #[error("systemctl {args}: {stderr}")]
    Systemctl { args: String, stderr: String },
}

/// What the configuration says about cgroups.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `cgroupDriver`.
    pub driver: Driver,
    /// `cgroupRoot`.
    pub root: String,
    /// `cpuWeightFormula`.
    pub formula: WeightFormula,
    pub options: qos::Options,
}

/// The agent's cgroups on this host: the chosen [`Manager`] and the
/// settings the rest of the agent reads. `mode`, `layout` and `formula` are
/// copies of the manager's, fixed at construction (this type can only be
/// made by [`Cgroups::new`] or [`Cgroups::with`]).
#[derive(Debug, Clone)]
pub struct Cgroups {
    pub mode: Mode,
    pub layout: Layout,
    pub formula: WeightFormula,
    pub options: qos::Options,
    manager: Arc<dyn Manager>,
    /// What the statistics endpoints keep of each cgroup between scrapes.
    specs: Arc<SpecCache>,
}

impl Cgroups {
    /// Finds the hierarchies in the mount table and makes the manager of
    /// the configured driver.
    pub fn new(settings: Settings, mounts: &[MountEntry]) -> Result<Cgroups, Error> {
        let hierarchy = Hierarchy::detect(mounts, settings.formula).ok_or(Error::NoHierarchy)?;
        let layout = Layout {
            driver: settings.driver,
            root: settings.root,
        };
        Ok(Cgroups::with(hierarchy, layout, settings.options))
    }

    /// The same with given hierarchies (a temporary directory in tests).
    pub fn with(hierarchy: Hierarchy, layout: Layout, options: qos::Options) -> Cgroups {
        Cgroups {
            mode: hierarchy.mode.clone(),
            formula: hierarchy.formula,
            layout: layout.clone(),
            options,
            manager: for_driver(hierarchy, layout),
            specs: Arc::default(),
        }
    }

    pub fn manager(&self) -> &dyn Manager {
        &*self.manager
    }

    /// The cgroups the statistics endpoints keep open, with their
    /// configured values.
    pub fn specs(&self) -> &SpecCache {
        &self.specs
    }

    /// A scrape begins ([`SpecCache::scrape`]); on cgroup v1 with the
    /// host's OOM kill count, which spares reading each cgroup's while it
    /// stands still.
    pub fn begin_scrape(&self) -> u64 {
        let host_oom_kills = match self.mode.version() {
            Version::V1 => memory::host_oom_kills(),
            Version::V2 => None,
        };
        self.specs.scrape(host_oom_kills)
    }

    /// [`Manager::setup`].
    pub fn setup(&self, allocatable_cpu_milli: i64, allocatable_memory: i64) -> Result<(), Error> {
        self.manager
            .setup(allocatable_cpu_milli, allocatable_memory)
    }

    /// [`Manager::apply_pod`]; a scrape reads the values written afresh.
    pub fn apply_pod(&self, qos: QosClass, uid: &str, limits: &CgroupLimits) -> Result<(), Error> {
        let applied = self.manager.apply_pod(qos, uid, limits);
        self.specs.configured(&self.manager.pod_cgroup(qos, uid));
        applied
    }

    /// [`Manager::remove_pod`].
    pub fn remove_pod(&self, uid: &str) -> Vec<String> {
        self.manager.remove_pod(uid)
    }

    /// [`Manager::container_oom_kills`].
    pub fn container_oom_kills(&self, qos: QosClass, uid: &str, id: &str) -> Option<u64> {
        self.manager.container_oom_kills(qos, uid, id)
    }
}

/// The manager for the configured driver: the one place that chooses.
pub fn for_driver(hierarchy: Hierarchy, layout: Layout) -> Arc<dyn Manager> {
    match layout.driver {
        Driver::Cgroupfs => Arc::new(cgroupfs::Cgroupfs { hierarchy, layout }),
        Driver::Systemd => Arc::new(systemd::Systemd { hierarchy, layout }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cgroup::fs::tests::temp;

    #[test]
    fn the_driver_is_chosen_once() {
        let root = temp("choice");
        for (driver, pod) in [
            (Driver::Cgroupfs, "/kl/kubepods/podu1"),
            (Driver::Systemd, "/kubepods.slice/kubepods-podu1.slice"),
        ] {
            let cg = Cgroups::with(
                Hierarchy {
                    mode: Mode::V2(root.clone()),
                    mounts: vec![root.clone()],
                    formula: WeightFormula::Quadratic,
                },
                Layout {
                    driver,
                    root: "/kl".into(),
                },
                qos::Options::default(),
            );
            assert_eq!(cg.manager().layout().driver, driver);
            assert_eq!(cg.manager().pod_cgroup(QosClass::Guaranteed, "u1"), pod);
            assert_eq!(cg.layout, *cg.manager().layout());
            assert!(cg.mode.is_v2());
            // Nothing of a pod that never was: nothing to report.
            assert!(cg.remove_pod("u1").is_empty());
        }
        let none = crate::hostfs::parse_mountinfo("32 1 8:1 / / rw - ext4 /dev/vda rw\n");
        let settings = Settings {
            driver: Driver::Cgroupfs,
            root: "/".into(),
            formula: WeightFormula::Linear,
            options: qos::Options::default(),
        };
        assert!(matches!(
            Cgroups::new(settings, &none),
            Err(Error::NoHierarchy)
        ));
        std::fs::remove_dir_all(&root).unwrap();
    }
}
