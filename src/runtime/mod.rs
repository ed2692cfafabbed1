//! The container runtime, as the rest of the agent sees it. The only
//! implementation that talks to anything is [`containerd::Containerd`]; the
//! types here carry no gRPC.

mod client;
pub mod containerd;
mod content;
mod exec;
pub use exec::{ExecStreams, OutputStream};
pub mod health;
pub mod image_gc;
pub mod image_ref;
pub mod images;
mod import;
pub mod pull;
pub mod registry;

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;

/// Labels put on every container, with the kubelet's names, so that the
/// agent finds its containers again after a restart (and so that `ctr
/// containers ls` is readable).
pub mod labels {
    pub const POD_NAME: &str = "io.kubernetes.pod.name";
    pub const POD_NAMESPACE: &str = "io.kubernetes.pod.namespace";
    pub const POD_UID: &str = "io.kubernetes.pod.uid";
    pub const CONTAINER_NAME: &str = "io.kubernetes.container.name";
    pub const RESTART_COUNT: &str = "io.kubernetes.container.restartCount";
    pub const GRACE_PERIOD: &str = "io.kubernetes.pod.terminationGracePeriod";
    /// `init` or `app`.
    pub const CONTAINER_TYPE: &str = "kubelet-lite.container.type";
    /// Set once the container's task has exited and been reaped.
    pub const EXIT_CODE: &str = "kubelet-lite.container.exitCode";
    pub const FINISHED_AT: &str = "kubelet-lite.container.finishedAt";
}

#[derive(Debug, thiserror::Error, Clone)]
pub enum RuntimeError {
    /// containerd cannot be reached or is overloaded: try again later.
    #[error("containerd unavailable: {0}")]
    Unavailable(String),
    #[error("{0}")]
    NotFound(String),
    /// The image is neither in containerd nor in an archive of the images
    /// directory.
    #[error("{0}")]
    ImageNotFound(String),
    /// A registry pull failed; the message has the registry's words.
    #[error("{0}")]
    Pull(String),
    #[error("{op}: {message}")]
    Failed { op: &'static str, message: String },
}

impl RuntimeError {
    pub fn is_transient(&self) -> bool {
        matches!(self, RuntimeError::Unavailable(_))
    }
}

/// What the image says about how to run it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ImageConfig {
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub env: Vec<String>,
    pub working_dir: String,
    pub user: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Image {
    /// Normalized reference (`docker.io/library/busybox:latest`).
    pub name: String,
    /// Snapshot of the unpacked top layer, parent of container snapshots.
    pub chain_id: String,
    pub config: ImageConfig,
}

/// An image a pull made available.
#[derive(Debug, Clone, PartialEq)]
pub struct PulledImage {
    pub image: Image,
    /// Bytes of manifest, config and layers (as the kubelet's event says).
    pub size: u64,
    /// Time of the transfer itself (without waiting for another pull of
    /// the same image).
    pub took: std::time::Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PullPolicy {
    Always,
    IfNotPresent,
    Never,
}

/// Everything needed to create a container and its task.
#[derive(Debug, Clone)]
pub struct NewContainer {
    pub id: String,
    pub labels: HashMap<String, String>,
    pub image: Image,
    pub spec: oci_spec::runtime::Spec,
    /// CRI-format log file written for the task's stdout and stderr.
    pub log_path: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exit {
    pub code: u32,
    pub at: SystemTime,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskState {
    /// Container without a task (never started, or task already deleted).
    None,
    Created,
    Running {
        pid: u32,
    },
    Exited(Exit),
}

#[derive(Debug, Clone)]
pub struct ContainerRecord {
    pub id: String,
    pub labels: HashMap<String, String>,
    pub created_at: Option<SystemTime>,
    pub task: TaskState,
}

/// A process to run in a running container with its output collected
/// (exec probes); `kubelet-lite exec` streams instead, through
/// [`containerd::Containerd::exec_streaming`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecRequest {
    pub argv: Vec<String>,
    /// `NAME=value`, added to the container's environment (a name already
    /// there is overridden).
    pub env: Vec<String>,
    /// The process is killed (SIGKILL) once this has passed.
    pub timeout: Option<Duration>,
    /// Bytes kept of stdout and of stderr each; the rest is read and
    /// dropped, so that a chatty process never blocks on its pipe.
    pub output_limit: usize,
}

/// How an exec ended.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecOutput {
    /// `None` when the process was killed at the timeout.
    pub exit_code: Option<u32>,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl ExecOutput {
    pub fn timed_out(&self) -> bool {
        self.exit_code.is_none()
    }
}

/// The operations the pod workers need. Implemented by containerd; tests of
/// pure logic may implement it with a recording fake.
#[async_trait]
pub trait Runtime: Send + Sync + 'static {
    /// The image of that (normalized) name if the node has it, unpacked.
    async fn image_status(&self, name: &str) -> Result<Option<Image>, RuntimeError>;
    /// Pulls the (normalized) image: from an archive of the images
    /// directory if one provides it, else from its registry. Concurrent
    /// pulls of one name share one transfer. The policy is decided by
    /// [`images::ensure`].
    async fn pull_image(&self, name: &str) -> Result<PulledImage, RuntimeError>;
    /// Creates the snapshot, the container and its task (not started).
    async fn create(&self, c: &NewContainer) -> Result<(), RuntimeError>;
    /// Starts a created task; returns its PID.
    async fn start(&self, id: &str) -> Result<u32, RuntimeError>;
    /// Waits for the task to exit.
    async fn wait(&self, id: &str) -> Result<Exit, RuntimeError>;
    /// Signals the task; a task that is already gone is not an error.
    async fn kill(&self, id: &str, signal: i32, all: bool) -> Result<(), RuntimeError>;
    /// Deletes task, container and snapshot; what is already gone is skipped.
    async fn remove(&self, id: &str) -> Result<(), RuntimeError>;
    /// Deletes the task of an exited container, keeping the container.
    async fn delete_task(&self, id: &str) -> Result<(), RuntimeError>;
    /// Every container of our namespace with its task state.
    async fn list(&self) -> Result<Vec<ContainerRecord>, RuntimeError>;
    /// The containers of one pod (by the pod UID label) with their tasks.
    async fn list_pod(&self, uid: &str) -> Result<Vec<ContainerRecord>, RuntimeError>;
    /// Merges `labels` into the container's labels.
    async fn set_labels(
        &self,
        id: &str,
        labels: HashMap<String, String>,
    ) -> Result<(), RuntimeError>;
    /// Runs a process in the running container `id` with the container's
    /// user, working directory, capabilities and environment, and waits
    /// for it (or for its timeout, after which it is killed and reaped).
    async fn exec(&self, id: &str, req: &ExecRequest) -> Result<ExecOutput, RuntimeError>;
}
