//! What the agent reports about a pod, in the kubelet's vocabulary, and its
//! conversion to the Kubernetes `PodStatus` type for the HTTP endpoints.

use std::collections::VecDeque;
use std::time::SystemTime;

use k8s_openapi::api::core::v1 as api;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Phase {
    Pending,
    Running,
    Succeeded,
    Failed,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Pending => "Pending",
            Phase::Running => "Running",
            Phase::Succeeded => "Succeeded",
            Phase::Failed => "Failed",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContainerState {
    Waiting {
        reason: String,
        message: String,
    },
    Running {
        started_at: SystemTime,
    },
    Terminated {
        exit_code: i32,
        reason: String,
        message: String,
        started_at: Option<SystemTime>,
        finished_at: SystemTime,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerStatus {
    pub name: String,
    pub image: String,
    pub container_id: Option<String>,
    pub state: ContainerState,
    pub last_state: Option<ContainerState>,
    pub restart_count: u32,
    /// PID of the running container's first process (not in the API).
    pub pid: Option<u32>,
    /// Running and passing its readiness probe (running and started when
    /// it has none).
    pub ready: bool,
    /// Running and past its startup probe (running when it has none).
    pub started: bool,
}

/// A pod condition the agent keeps, with when it last changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Condition {
    pub kind: &'static str,
    pub status: bool,
    pub reason: Option<String>,
    pub message: Option<String>,
    pub last_transition: SystemTime,
}

/// The conditions the agent reports, in the kubelet's order.
pub const CONDITIONS: [&str; 4] = ["Initialized", "Ready", "ContainersReady", "PodScheduled"];

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    #[serde(serialize_with = "ser_time")]
    pub time: SystemTime,
    /// `Normal` or `Warning`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub reason: String,
    pub message: String,
}

fn ser_time<S: serde::Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&to_time(*t).0.to_string())
}

pub const MAX_EVENTS: usize = 30;

#[derive(Debug, Clone, PartialEq)]
pub struct PodStatus {
    pub phase: Phase,
    /// Why the pod is not running, when that is known (`FailedCreatePodSandBox`).
    pub reason: Option<String>,
    pub message: Option<String>,
    pub start_time: Option<SystemTime>,
    pub init_containers: Vec<ContainerStatus>,
    pub containers: Vec<ContainerStatus>,
    pub events: VecDeque<Event>,
    /// When the pod's deletion began (shown as metadata.deletionTimestamp,
    /// which is what makes kubectl print "Terminating").
    pub terminating_since: Option<SystemTime>,
    pub qos_class: Option<crate::cgroup::QosClass>,
    /// The pod's addresses once its sandbox is made (`status.podIPs`; the
    /// first is `status.podIP`).
    pub pod_ips: Vec<std::net::IpAddr>,
    /// The node's address (`status.hostIP`).
    pub host_ip: Option<std::net::IpAddr>,
    /// Kept by [`PodStatus::update_conditions`]; computed afresh by
    /// [`PodStatus::to_api`] when empty.
    pub conditions: Vec<Condition>,
}

impl PodStatus {
    pub fn new() -> PodStatus {
        PodStatus {
            phase: Phase::Pending,
            reason: None,
            message: None,
            start_time: None,
            init_containers: vec![],
            containers: vec![],
            events: VecDeque::new(),
            terminating_since: None,
            qos_class: None,
            pod_ips: vec![],
            host_ip: None,
            conditions: vec![],
        }
    }

    /// The conditions as the containers make them now, as the kubelet's
    /// status manager computes them (GeneratePodReadyCondition and
    /// friends): `lastTransitionTime` moves only when a status flips.
    pub fn update_conditions(&mut self, now: SystemTime) {
        let computed = self.compute_conditions();
        let old = std::mem::take(&mut self.conditions);
        self.conditions = computed
            .into_iter()
            .map(|(kind, status, reason, message)| {
                let last_transition = old
                    .iter()
                    .find(|c| c.kind == kind && c.status == status)
                    .map_or(now, |c| c.last_transition);
                Condition {
                    kind,
                    status,
                    reason,
                    message,
                    last_transition,
                }
            })
            .collect();
    }

    /// (type, status, reason, message) of each condition.
    fn compute_conditions(&self) -> Vec<(&'static str, bool, Option<String>, Option<String>)> {
        let init_done = self
            .init_containers
            .iter()
            .all(|c| c.ready || matches!(c.state, ContainerState::Terminated { exit_code: 0, .. }));
        let unready: Vec<&str> = self
            .containers
            .iter()
            .filter(|c| !c.ready)
            .map(|c| c.name.as_str())
            .collect();
        let (ready, reason, message) = if matches!(self.phase, Phase::Succeeded | Phase::Failed) {
            (false, Some("PodCompleted".to_string()), None)
        } else if unready.is_empty() {
            (true, None, None)
        } else {
            (
                false,
                Some("ContainersNotReady".to_string()),
                Some(format!(
                    "containers with unready status: [{}]",
                    unready.join(" ")
                )),
            )
        };
        let pending_init: Vec<&str> = self
            .init_containers
            .iter()
            .filter(|c| {
                !matches!(c.state, ContainerState::Terminated { exit_code: 0, .. }) && !c.ready
            })
            .map(|c| c.name.as_str())
            .collect();
        vec![
            (
                "Initialized",
                init_done,
                (!init_done).then(|| "ContainersNotInitialized".to_string()),
                (!init_done).then(|| {
                    format!(
                        "containers with incomplete status: [{}]",
                        pending_init.join(" ")
                    )
                }),
            ),
            ("Ready", ready, reason.clone(), message.clone()),
            ("ContainersReady", ready, reason, message),
            ("PodScheduled", true, None, None),
        ]
    }

    /// `status.podIP`: the first of the pod's addresses.
    pub fn pod_ip(&self) -> Option<std::net::IpAddr> {
        self.pod_ips.first().copied()
    }

    pub fn push_event(&mut self, kind: &'static str, reason: &str, message: String) {
        if self.events.len() == MAX_EVENTS {
            self.events.pop_front();
        }
        self.events.push_back(Event {
            time: SystemTime::now(),
            kind,
            reason: reason.to_string(),
            message,
        });
    }
}

impl Default for PodStatus {
    fn default() -> Self {
        PodStatus::new()
    }
}

pub fn to_time(t: SystemTime) -> Time {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    Time(
        k8s_openapi::jiff::Timestamp::new(
            i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
            d.subsec_nanos().cast_signed(),
        )
        .unwrap_or(k8s_openapi::jiff::Timestamp::UNIX_EPOCH),
    )
}

fn state_to_api(s: &ContainerState) -> api::ContainerState {
    match s {
        ContainerState::Waiting { reason, message } => api::ContainerState {
            waiting: Some(api::ContainerStateWaiting {
                reason: Some(reason.clone()),
                message: (!message.is_empty()).then(|| message.clone()),
            }),
            ..Default::default()
        },
        ContainerState::Running { started_at } => api::ContainerState {
            running: Some(api::ContainerStateRunning {
                started_at: Some(to_time(*started_at)),
            }),
            ..Default::default()
        },
        ContainerState::Terminated {
            exit_code,
            reason,
            message,
            started_at,
            finished_at,
        } => api::ContainerState {
            terminated: Some(api::ContainerStateTerminated {
                exit_code: *exit_code,
                reason: Some(reason.clone()),
                message: (!message.is_empty()).then(|| message.clone()),
                started_at: started_at.map(to_time),
                finished_at: Some(to_time(*finished_at)),
                ..Default::default()
            }),
            ..Default::default()
        },
    }
}

fn container_to_api(c: &ContainerStatus) -> api::ContainerStatus {
    let running = matches!(c.state, ContainerState::Running { .. });
    api::ContainerStatus {
        name: c.name.clone(),
        image: c.image.clone(),
        image_id: String::new(),
        container_id: c
            .container_id
            .as_ref()
            .map(|id| format!("containerd://{id}")),
        state: Some(state_to_api(&c.state)),
        last_state: c.last_state.as_ref().map(state_to_api),
        restart_count: i32::try_from(c.restart_count).unwrap_or(i32::MAX),
        ready: c.ready && running,
        started: Some(c.started && running),
        ..Default::default()
    }
}

impl PodStatus {
    /// The status as the Kubernetes API type.
    pub fn to_api(&self) -> api::PodStatus {
        let conditions = if self.conditions.is_empty() {
            let mut fresh = self.clone();
            fresh.update_conditions(SystemTime::now());
            fresh.conditions
        } else {
            self.conditions.clone()
        };
        api::PodStatus {
            phase: Some(self.phase.as_str().to_string()),
            reason: self.reason.clone(),
            message: self.message.clone(),
            start_time: self.start_time.map(to_time),
            host_ip: self.host_ip.map(|ip| ip.to_string()),
            host_ips: self
                .host_ip
                .map(|ip| vec![api::HostIP { ip: ip.to_string() }]),
            pod_ip: self.pod_ip().map(|ip| ip.to_string()),
            pod_ips: (!self.pod_ips.is_empty()).then(|| {
                self.pod_ips
                    .iter()
                    .map(|ip| api::PodIP { ip: ip.to_string() })
                    .collect()
            }),
            conditions: Some(
                conditions
                    .iter()
                    .map(|c| api::PodCondition {
                        type_: c.kind.to_string(),
                        status: if c.status { "True" } else { "False" }.to_string(),
                        reason: c.reason.clone(),
                        message: c.message.clone(),
                        last_transition_time: Some(to_time(c.last_transition)),
                        ..Default::default()
                    })
                    .collect(),
            ),
            init_container_statuses: (!self.init_containers.is_empty())
                .then(|| self.init_containers.iter().map(container_to_api).collect()),
            container_statuses: Some(self.containers.iter().map(container_to_api).collect()),
            qos_class: self.qos_class.map(|q| q.as_str().to_string()),
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container(name: &str, running: bool, ready: bool) -> ContainerStatus {
        ContainerStatus {
            name: name.into(),
            image: "busybox".into(),
            container_id: None,
            state: if running {
                ContainerState::Running {
                    started_at: SystemTime::UNIX_EPOCH,
                }
            } else {
                ContainerState::Waiting {
                    reason: "ContainerCreating".into(),
                    message: String::new(),
                }
            },
            last_state: None,
            restart_count: 0,
            pid: None,
            ready,
            started: running,
        }
    }

    #[test]
    fn ready_conditions_follow_containers_and_keep_their_transition_time() {
        let t = |s| SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(s);
        let mut s = PodStatus::new();
        s.phase = Phase::Running;
        s.containers = vec![container("web", true, false), container("log", true, true)];
        s.update_conditions(t(10));
        let v = serde_json::to_value(s.to_api()).unwrap();
        let cond = |v: &serde_json::Value, kind: &str| {
            v["conditions"]
                .as_array()
                .unwrap()
                .iter()
                .find(|c| c["type"] == kind)
                .cloned()
                .unwrap()
        };
        let ready = cond(&v, "Ready");
        assert_eq!(ready["status"], "False");
        assert_eq!(ready["reason"], "ContainersNotReady");
        assert_eq!(ready["message"], "containers with unready status: [web]");
        assert_eq!(ready["lastTransitionTime"], "1970-01-01T00:00:10Z");
        assert_eq!(v["containerStatuses"][0]["ready"], false);
        assert_eq!(v["containerStatuses"][1]["ready"], true);
        // No change: the time stays.
        s.update_conditions(t(20));
        let v = serde_json::to_value(s.to_api()).unwrap();
        assert_eq!(
            cond(&v, "Ready")["lastTransitionTime"],
            "1970-01-01T00:00:10Z"
        );
        s.containers[0].ready = true;
        s.update_conditions(t(30));
        let v = serde_json::to_value(s.to_api()).unwrap();
        for kind in ["Ready", "ContainersReady"] {
            let c = cond(&v, kind);
            assert_eq!(
                (c["status"].as_str(), c["lastTransitionTime"].as_str()),
                (Some("True"), Some("1970-01-01T00:00:30Z")),
                "{kind}"
            );
        }
        assert_eq!(cond(&v, "Initialized")["status"], "True");
        s.containers[0].ready = false;
        s.update_conditions(t(40));
        let v = serde_json::to_value(s.to_api()).unwrap();
        assert_eq!(
            cond(&v, "ContainersReady")["lastTransitionTime"],
            "1970-01-01T00:00:40Z"
        );
    }

    #[test]
    fn addresses_in_the_api_status() {
        let mut s = PodStatus::new();
        let api = s.to_api();
        assert_eq!((api.pod_ip, api.pod_ips, api.host_ip), (None, None, None));
        s.pod_ips = vec!["10.1.0.2".parse().unwrap(), "fd00::2".parse().unwrap()];
        s.host_ip = Some("192.168.0.5".parse().unwrap());
        let v = serde_json::to_value(s.to_api()).unwrap();
        assert_eq!(v["podIP"], "10.1.0.2");
        assert_eq!(
            v["podIPs"],
            serde_json::json!([{"ip": "10.1.0.2"}, {"ip": "fd00::2"}])
        );
        assert_eq!(v["hostIP"], "192.168.0.5");
        assert_eq!(v["hostIPs"], serde_json::json!([{"ip": "192.168.0.5"}]));
    }
}
