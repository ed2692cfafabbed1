//! Whether the container runtime answers, as the kubelet tracks it: it asks
//! the runtime every 5 seconds and, while the runtime does not answer, the
//! node is not ready ("container runtime is down"). Pods keep the status they
//! had; their workers wait for the runtime with their own retries.

use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use serde_json::{Value, json};

use crate::pod::status::to_time;

/// How often the runtime is asked (the kubelet's runtime-up check).
pub const CHECK_PERIOD: Duration = Duration::from_secs(5);

/// The kubelet's reasons on the node's `Ready` condition.
pub const READY_REASON: &str = "KubeletReady";
pub const NOT_READY_REASON: &str = "KubeletNotReady";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct State {
    /// `None` while the runtime is down.
    pub version: Option<String>,
    /// Why it is down.
    pub error: String,
    /// When it last went up or down.
    pub since: SystemTime,
    /// When it was last asked.
    pub checked: SystemTime,
}

/// The runtime's last known state; starts down (not connected yet).
#[derive(Debug)]
pub struct RuntimeHealth(Mutex<State>);

impl Default for RuntimeHealth {
    fn default() -> Self {
        let now = SystemTime::now();
        RuntimeHealth(Mutex::new(State {
            version: None,
            error: "not connected yet".into(),
            since: now,
            checked: now,
        }))
    }
}

impl RuntimeHealth {
    fn update(&self, version: Option<String>, error: String) -> bool {
        let mut s = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let now = SystemTime::now();
        let changed = s.version.is_some() != version.is_some();
        if changed {
            s.since = now;
        }
        s.checked = now;
        s.version = version;
        s.error = error;
        changed
    }

    /// The runtime answered with its version ("containerd://1.6.20").
    /// Returns whether it was down before.
    pub fn up(&self, version: String) -> bool {
        self.update(Some(version), String::new())
    }

    /// The runtime did not answer. Returns whether it was up before.
    pub fn down(&self, error: impl std::fmt::Display) -> bool {
        self.update(None, error.to_string())
    }

    pub fn state(&self) -> State {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn is_up(&self) -> bool {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .version
            .is_some()
    }

    /// The node's `Ready` condition, as the kubelet reports it.
    pub fn ready_condition(&self) -> Value {
        let s = self.state();
        let (status, reason, message) = match &s.version {
            Some(_) => (
                "True",
                READY_REASON,
                "kubelet is posting ready status".into(),
            ),
            None => (
                "False",
                NOT_READY_REASON,
                format!("container runtime is down: {}", s.error),
            ),
        };
        json!({
            "type": "Ready",
            "status": status,
            "reason": reason,
            "message": message,
            "lastHeartbeatTime": to_time(s.checked),
            "lastTransitionTime": to_time(s.since),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transitions_move_the_time_and_flip_the_condition() {
        let h = RuntimeHealth::default();
        assert!(!h.is_up());
        let c = h.ready_condition();
        assert_eq!(c["status"], "False");
        assert_eq!(c["reason"], "KubeletNotReady");
        assert_eq!(c["message"], "container runtime is down: not connected yet");

        assert!(h.up("containerd://1.6.20".into()));
        let since = h.state().since;
        assert!(!h.up("containerd://1.6.20".into()), "no change");
        assert_eq!(h.state().since, since);
        let c = h.ready_condition();
        assert_eq!(
            (c["status"].as_str(), c["reason"].as_str()),
            (Some("True"), Some("KubeletReady"))
        );

        assert!(h.down("connection refused"));
        assert!(!h.down("connection refused"));
        assert_eq!(
            h.ready_condition()["message"],
            "container runtime is down: connection refused"
        );
    }
}
