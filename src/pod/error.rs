//! Why a pod or one of its containers cannot go on, and every other reason
//! string the agent reports, named as the kubelet names them
//! (pkg/kubelet/container/sync_result.go, pkg/kubelet/images/types.go,
//! pkg/kubelet/events/event.go). The strings live here and nowhere else.

use serde::Serialize;

/// A failure that keeps a pod waiting or a container from starting. The
/// message keeps the object or path it concerns; [`PodError::reason`] is
/// what the kubelet would put in the status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
pub enum PodError {
    /// The pod's cgroup, namespaces or managed files could not be made, or
    /// its network could not be attached (a plugin failed, no address
    /// left, a host port taken).
    #[error("{0}")]
    CreatePodSandbox(String),
    /// The node's network is not set up: no CNI configuration, a broken
    /// one, a plugin binary missing.
    #[error("{0}")]
    NetworkNotReady(String),
    /// A volume cannot be set up: an object it names is missing, a claim
    /// is unbound, a mount failed, a hostPath is not what its type says.
    #[error("{0}")]
    Mount(String),
    /// containerd could not tell what exists.
    #[error("{0}")]
    Sync(String),
    #[error("{0}")]
    ImagePull(String),
    /// `imagePullPolicy: Never` and the image is not there.
    #[error("{0}")]
    ImageNeverPull(String),
    /// The image reference cannot be parsed.
    #[error("{0}")]
    InvalidImageName(String),
    /// The container's configuration cannot be made: a missing configMap
    /// key for its env, a subPath that escapes, an invalid spec.
    #[error("{0}")]
    CreateContainerConfig(String),
    /// containerd refused to create the container.
    #[error("{0}")]
    CreateContainer(String),
    /// The container was created but its task did not start.
    #[error("{0}")]
    RunContainer(String),
    /// Admission refused the pod: the node lacks `resource` for it.
    #[error("{message}")]
    OutOf { resource: Resource, message: String },
}

/// What admission counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Resource {
    Cpu,
    Memory,
    Pods,
}

impl Resource {
    pub fn as_str(self) -> &'static str {
        match self {
            Resource::Cpu => "cpu",
            Resource::Memory => "memory",
            Resource::Pods => "pods",
        }
    }
}

impl PodError {
    /// The kubelet's reason string.
    pub fn reason(&self) -> &'static str {
        match self {
            PodError::CreatePodSandbox(_) => reason::FAILED_CREATE_POD_SANDBOX,
            PodError::NetworkNotReady(_) => reason::NETWORK_NOT_READY,
            PodError::Mount(_) => reason::FAILED_MOUNT,
            PodError::Sync(_) => reason::FAILED_SYNC,
            PodError::ImagePull(_) => "ErrImagePull",
            PodError::ImageNeverPull(_) => reason::ERR_IMAGE_NEVER_PULL,
            PodError::InvalidImageName(_) => "InvalidImageName",
            PodError::CreateContainerConfig(_) => "CreateContainerConfigError",
            PodError::CreateContainer(_) => "CreateContainerError",
            PodError::RunContainer(_) => "RunContainerError",
            PodError::OutOf { resource, .. } => match resource {
                Resource::Cpu => "OutOfcpu",
                Resource::Memory => "OutOfmemory",
                Resource::Pods => "OutOfpods",
            },
        }
    }
}

/// Reasons of states and events that are not failures.
pub mod reason {
    pub const FAILED_CREATE_POD_SANDBOX: &str = "FailedCreatePodSandBox";
    pub const NETWORK_NOT_READY: &str = "NetworkNotReady";
    pub const FAILED_MOUNT: &str = "FailedMount";
    /// Event: `ClusterFirst` DNS without a cluster DNS server falls back
    /// to the node's resolv.conf.
    pub const MISSING_CLUSTER_DNS: &str = "MissingClusterDNS";
    /// Event: the pod's DNS settings were cut to the resolver's limits.
    pub const DNS_CONFIG_FORMING: &str = "DNSConfigForming";
    pub const FAILED_SYNC: &str = "FailedSync";
    /// An init container waits for its turn.
    pub const POD_INITIALIZING: &str = "PodInitializing";
    /// An app container waits to be created.
    pub const CONTAINER_CREATING: &str = "ContainerCreating";
    pub const CRASH_LOOP_BACK_OFF: &str = "CrashLoopBackOff";
    /// A container waits for the back-off after a failed pull.
    pub const IMAGE_PULL_BACK_OFF: &str = "ImagePullBackOff";
    /// Events of the image manager.
    pub const PULLING: &str = "Pulling";
    pub const PULLED: &str = "Pulled";
    pub const ERR_IMAGE_NEVER_PULL: &str = "ErrImageNeverPull";
    pub const INSPECT_FAILED: &str = "InspectFailed";
    /// Event: a container is restarted after a back-off.
    pub const BACK_OFF: &str = "BackOff";
    /// Event: a container start failed.
    pub const FAILED: &str = "Failed";
    pub const STARTED: &str = "Started";
    /// Event: a container is being stopped.
    pub const KILLING: &str = "Killing";
    /// Event: a probe failed (or could not run).
    pub const UNHEALTHY: &str = "Unhealthy";
    /// Event: a probe succeeded with a warning (a redirect not followed).
    pub const PROBE_WARNING: &str = "ProbeWarning";
    pub const OOM_KILLED: &str = "OOMKilled";
    pub const COMPLETED: &str = "Completed";
    pub const ERROR: &str = "Error";
    /// A disk emptyDir over its sizeLimit (the eviction manager's reason).
    pub const EVICTED: &str = "Evicted";
    /// Teardown left something behind (it is retried).
    pub const FAILED_KILL_POD: &str = "FailedKillPod";
    /// A Delete-policy volume could not be emptied.
    pub const VOLUME_FAILED_DELETE: &str = "VolumeFailedDelete";
}

/// Event types.
pub mod event {
    pub const NORMAL: &str = "Normal";
    pub const WARNING: &str = "Warning";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_are_the_kubelets() {
        let cases = [
            (
                PodError::CreatePodSandbox("x".into()),
                "FailedCreatePodSandBox",
            ),
            (PodError::NetworkNotReady("x".into()), "NetworkNotReady"),
            (PodError::Mount("x".into()), "FailedMount"),
            (PodError::Sync("x".into()), "FailedSync"),
            (PodError::ImagePull("x".into()), "ErrImagePull"),
            (PodError::ImageNeverPull("x".into()), "ErrImageNeverPull"),
            (
                PodError::CreateContainerConfig("x".into()),
                "CreateContainerConfigError",
            ),
            (
                PodError::CreateContainer("x".into()),
                "CreateContainerError",
            ),
            (PodError::RunContainer("x".into()), "RunContainerError"),
            (
                PodError::OutOf {
                    resource: Resource::Cpu,
                    message: "x".into(),
                },
                "OutOfcpu",
            ),
            (
                PodError::OutOf {
                    resource: Resource::Memory,
                    message: "x".into(),
                },
                "OutOfmemory",
            ),
        ];
        for (e, reason) in cases {
            assert_eq!(e.reason(), reason, "{e:?}");
        }
        // The message is the subsystem's, with what it concerns.
        assert_eq!(
            PodError::Mount("volume \"v\": /x".into()).to_string(),
            "volume \"v\": /x"
        );
    }
}
