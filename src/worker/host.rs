//! What the executor does to the host, as traits: the pod's cgroups, its
//! sandbox (namespaces and managed files) and its volumes, beside the
//! container runtime ([`crate::runtime::Runtime`]). The implementations
//! here are thin: they call the modules that do the work. Lifecycle tests
//! give the worker recording fakes instead (`worker::fake`), so they run
//! without root and without containerd.
//!
//! The blocking methods (mounts, namespace creation, file walks) are called
//! off the async executor.

use std::collections::HashSet;
use std::io;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use crate::cgroup::{self, CgroupLimits, QosClass, WeightFormula};
use crate::pod::PodError;
use crate::sandbox::{self, SandboxSpec};
use crate::volume::{self, Volume};

/// The pod's and its containers' cgroups.
pub trait PodCgroups: Send + Sync + 'static {
    /// Creates the pod's cgroup with its limits (blocking: the systemd
    /// driver runs systemctl).
    fn apply_pod(&self, qos: QosClass, uid: &str, limits: &CgroupLimits) -> Result<(), PodError>;
    /// Removes the pod's cgroups; returns what could not be removed.
    fn remove_pod(&self, uid: &str) -> Vec<String>;
    /// UIDs of the pods that have a cgroup (an agent killed between making a
    /// pod's cgroup and anything else leaves only that).
    fn pod_uids(&self) -> Vec<String>;
    /// OOM kills inside one container's cgroup so far.
    fn container_oom_kills(&self, qos: QosClass, uid: &str, id: &str) -> Option<u64>;
    /// The OCI `cgroupsPath` of a container.
    fn container_path(&self, qos: QosClass, uid: &str, id: &str) -> String;
    /// `Some(formula)` on cgroup v2.
    fn v2(&self) -> Option<WeightFormula>;
    fn options(&self) -> cgroup::qos::Options;
}

impl PodCgroups for cgroup::Cgroups {
    fn apply_pod(&self, qos: QosClass, uid: &str, limits: &CgroupLimits) -> Result<(), PodError> {
        cgroup::Cgroups::apply_pod(self, qos, uid, limits)
            .map_err(|e| PodError::CreatePodSandbox(format!("pod cgroup: {e}")))
    }

    fn remove_pod(&self, uid: &str) -> Vec<String> {
        cgroup::Cgroups::remove_pod(self, uid)
    }

    fn container_oom_kills(&self, qos: QosClass, uid: &str, id: &str) -> Option<u64> {
        cgroup::Cgroups::container_oom_kills(self, qos, uid, id)
    }

    fn pod_uids(&self) -> Vec<String> {
        self.manager().pod_uids()
    }

    fn container_path(&self, qos: QosClass, uid: &str, id: &str) -> String {
        self.layout.container_path(qos, uid, id)
    }

    fn v2(&self) -> Option<WeightFormula> {
        self.mode.is_v2().then_some(self.formula)
    }

    fn options(&self) -> cgroup::qos::Options {
        self.options
    }
}

/// The pod's namespaces, its network, managed files and /dev/shm.
pub trait Sandboxes: Send + Sync + 'static {
    /// Creates (or finds again) the sandbox, and checks that its network
    /// can be attached; blocking. The context carries the pod's addresses
    /// unless the network is still to be attached.
    fn setup(&self, spec: &SandboxSpec) -> Result<sandbox::Prepared, PodError>;
    /// Attaches the sandbox's network; returns the pod's addresses.
    /// Blocking; runs while the pod's containers are being created.
    fn attach(&self, spec: &SandboxSpec) -> Result<Vec<IpAddr>, PodError>;
    /// Detaches the pod's network, then removes the pod directory with
    /// everything below it; blocking.
    fn teardown(&self, dir: &Path) -> Result<(), String>;
    /// Releases the network addresses and namespaces held for pods whose
    /// UID is not in `known` (called once at start); returns what failed.
    /// Blocking.
    fn release_orphans(&self, known: &HashSet<String>) -> Vec<String>;
}

/// Sandboxes of this host: namespaces pinned in the pin namespace
/// ([`sandbox::pins`]), networks through CNI.
pub struct HostSandboxes(pub sandbox::Host);

impl Sandboxes for HostSandboxes {
    fn setup(&self, spec: &SandboxSpec) -> Result<sandbox::Prepared, PodError> {
        Ok(sandbox::setup(spec, &self.0)?)
    }

    fn attach(&self, spec: &SandboxSpec) -> Result<Vec<IpAddr>, PodError> {
        Ok(sandbox::attach(spec, &self.0)?)
    }

    fn teardown(&self, dir: &Path) -> Result<(), String> {
        sandbox::teardown(dir, &self.0).map_err(|e| e.to_string())
    }

    fn release_orphans(&self, known: &HashSet<String>) -> Vec<String> {
        let mut errors: Vec<String> = self.0.network.as_ref().map_or_else(Vec::new, |n| {
            n.release_orphans(known, |dir| self.0.netns_of(dir))
                .into_iter()
                .map(|e| e.to_string())
                .collect()
        });
        // Pins of pods the agent knows nothing else of (their directory
        // removed by hand): the other orphans' teardown unpins theirs.
        for uid in self.0.pins.pods() {
            if !known.contains(&uid)
                && let Err(e) = self.0.pins.unpin(&uid)
            {
                errors.push(format!("releasing the namespaces of pod {uid}: {e}"));
            }
        }
        errors
    }
}

/// Volumes and the subPath binds made for containers. All blocking.
pub trait Volumes: Send + Sync + 'static {
    /// Sets up one volume of the pod; returns the host path containers
    /// bind-mount.
    fn setup(
        &self,
        pod_dir: &Path,
        v: &Volume,
        pod_memory_limit: Option<i64>,
    ) -> Result<PathBuf, PodError>;
    /// Binds `sub` of the volume at `volume` on `target`, safely.
    fn bind_subpath(&self, volume: &Path, sub: &Path, target: &Path) -> io::Result<PathBuf>;
    /// Removes a subPath bind.
    fn unbind(&self, target: &Path) -> Result<(), String>;
    /// Bytes used below `dir` (disk emptyDir size limits).
    fn usage(&self, dir: &Path) -> u64;
    /// Empties a volume whose reclaim policy is Delete.
    fn reclaim(&self, path: &Path, protected: &[PathBuf]) -> Result<(), String>;
}

/// Volumes of this host, mounted with `mount(2)` and the NFS helper.
pub struct HostVolumes(pub volume::mount::MountConfig);

impl Volumes for HostVolumes {
    fn setup(
        &self,
        pod_dir: &Path,
        v: &Volume,
        pod_memory_limit: Option<i64>,
    ) -> Result<PathBuf, PodError> {
        volume::mount::setup(pod_dir, v, pod_memory_limit, &self.0)
    }

    fn bind_subpath(&self, volume: &Path, sub: &Path, target: &Path) -> io::Result<PathBuf> {
        volume::mount::bind_subpath(volume, sub, target)
    }

    fn unbind(&self, target: &Path) -> Result<(), String> {
        volume::mount::unmount_below(target).and_then(|()| volume::mount::unmount(target))
    }

    fn usage(&self, dir: &Path) -> u64 {
        volume::mount::usage(dir)
    }

    fn reclaim(&self, path: &Path, protected: &[PathBuf]) -> Result<(), String> {
        volume::mount::reclaim(path, &self.0.allowed_host_paths, protected)
            .map_err(|e| e.to_string())
    }
}
