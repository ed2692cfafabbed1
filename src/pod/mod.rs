//! Pod state and the pure rules that drive it: the planner ([`plan`]), the
//! back-off rules ([`backoff`]), the kubelet's reasons ([`error`]), the
//! status ([`status`]) and the store every reader copies it from
//! ([`store`]). Nothing here performs I/O but the store's lock; the worker
//! executes what the planner says.

pub mod backoff;
pub mod error;
pub mod plan;
pub mod status;
pub mod store;

pub use backoff::{Backoff, Retry};
pub use error::PodError;
pub use plan::{Action, NetworkView, Plan, PodView, SetupView, SlotView, StopView};
pub use status::{ContainerState, ContainerStatus, Event, Phase, PodStatus};
pub use store::{PodEntry, Store};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartPolicy {
    Always,
    OnFailure,
    Never,
}

impl RestartPolicy {
    pub fn parse(s: Option<&str>) -> RestartPolicy {
        match s {
            Some("OnFailure") => RestartPolicy::OnFailure,
            Some("Never") => RestartPolicy::Never,
            _ => RestartPolicy::Always,
        }
    }

    /// Whether a container that exited with `code` is started again.
    pub fn restarts(self, code: i32) -> bool {
        match self {
            RestartPolicy::Always => true,
            RestartPolicy::OnFailure => code != 0,
            RestartPolicy::Never => false,
        }
    }
}
