//! One task per pod. Each turn it observes the pod (setup progress, each
//! container slot, stops in progress), asks the pure planner
//! ([`crate::pod::plan`]) what to do next, executes those actions against
//! the host ([`host`] traits and the container runtime) in [`execute`], and
//! sleeps until a container exits, the pod is removed, or the planner's
//! wake-up time. Adoption of what an earlier run left is decided in
//! [`adopt`]; teardown without a worker lives in [`teardown`].

pub mod adopt;
mod execute;
#[cfg(test)]
pub(crate) mod fake;
pub mod host;
pub mod manager;
mod probes;
pub mod teardown;
#[cfg(test)]
mod tests;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use futures::future::{BoxFuture, FutureExt, Shared};
use k8s_openapi::api::core::v1::Container;
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, oneshot};
use tracing::{info, warn};

use crate::manifest::StaticPod;
use crate::oci::PodContext;
use crate::pod::error::{event, reason};
use crate::pod::{
    self, Action, Backoff, ContainerState, ContainerStatus, NetworkView, Phase, PodEntry,
    PodStatus, RestartPolicy, Retry, SetupView, SlotView, StopView,
};
use crate::runtime::{Exit, Runtime, RuntimeError};
use crate::{cgroup, volume};

/// What every worker shares.
pub struct WorkerEnv {
    pub rt: Arc<dyn Runtime>,
    pub cgroups: Arc<dyn host::PodCgroups>,
    pub sandboxes: Arc<dyn host::Sandboxes>,
    pub volumes: Arc<dyn host::Volumes>,
    pub root_dir: PathBuf,
    pub pod_logs_dir: PathBuf,
    /// Node memory, for Burstable containers' OOM score adjustment.
    pub memory_capacity: i64,
    /// Lowest OOM score adjustment the host allows (see node::oom_score_floor).
    pub oom_score_floor: i32,
    pub metrics: Arc<crate::metrics::AgentMetrics>,
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    pub store: pod::Store,
    /// The node's event ring (what `events` and `describe` show).
    pub events: crate::events::Recorder,
    /// The agent's own directories (root, logs, manifests): never inside a
    /// volume the agent empties.
    pub protected_dirs: Vec<PathBuf>,
    /// Makes the sockets of probes that connect inside a pod's network.
    pub probe_sockets: Arc<crate::probe::netns::NetnsSockets>,
}

impl WorkerEnv {
    pub fn pod_dir(&self, uid: &str) -> PathBuf {
        self.root_dir.join("pods").join(uid)
    }
}

/// The time the planner works with. Taken from tokio's clock, so that tests
/// with a paused clock control it.
fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

/// Resolves once a pod's containers and sandbox are gone.
pub type Terminated = Shared<BoxFuture<'static, ()>>;

enum Msg {
    Exited {
        slot: usize,
        id: String,
        result: Result<Exit, RuntimeError>,
    },
    Stop {
        done: oneshot::Sender<()>,
    },
    Probe {
        slot: usize,
        id: String,
        report: crate::probe::lane::Report,
    },
}

/// The manager's handle on a running worker.
pub struct PodHandle {
    tx: mpsc::UnboundedSender<Msg>,
}

impl PodHandle {
    /// Asks the worker to kill and remove the pod.
    pub fn stop(self) -> Terminated {
        let (done, rx) = oneshot::channel();
        let _ = self.tx.send(Msg::Stop { done });
        rx.map(|_| ()).boxed().shared()
    }
}

/// Starts the worker of `pod`, once `after` (the previous pod of the same
/// name being torn down) resolves.
/// A worker that panics sends its pod's UID to `crashed`.
pub fn spawn(
    pod: Arc<StaticPod>,
    env: Arc<WorkerEnv>,
    after: Option<Terminated>,
    crashed: mpsc::UnboundedSender<String>,
) -> PodHandle {
    let (tx, rx) = mpsc::unbounded_channel();
    let uid = pod.uid.clone();
    let worker = Worker::new(pod, env, tx.clone());
    tokio::spawn(async move {
        if std::panic::AssertUnwindSafe(worker.run(rx, after))
            .catch_unwind()
            .await
            .is_err()
        {
            let _ = crashed.send(uid);
        }
    });
    PodHandle { tx }
}

/// containerd ID of one attempt of one container: stable, so that a retry
/// after a crash finds what an earlier attempt left.
pub fn container_id(uid: &str, name: &str, attempt: u32) -> String {
    let h = Sha256::digest(format!("{uid}/{name}/{attempt}"));
    hex::encode(&h[..16])
}

/// A container of the pod's spec, read from the pod itself (shared with
/// the desired set and the pod store) rather than copied: a copy is about
/// 2.5 KiB per container.
struct ContainerRef {
    pod: Arc<StaticPod>,
    init: bool,
    index: usize,
}

impl std::ops::Deref for ContainerRef {
    type Target = Container;

    fn deref(&self) -> &Container {
        let spec = self.pod.spec();
        if self.init {
            &spec.init_containers.as_deref().unwrap_or_default()[self.index]
        } else {
            &spec.containers[self.index]
        }
    }
}

/// One container of the pod, across its attempts.
struct Slot {
    spec: ContainerRef,
    init: bool,
    /// Attempt number of the next start; the restart count is one less.
    next_attempt: u32,
    /// The latest container (running or dead).
    current: Option<String>,
    running: bool,
    /// Created while the pod network was attached, not started yet.
    created: Option<execute::Created>,
    /// Its environment holds the pod's address.
    needs_pod_ip: bool,
    started_at: Option<SystemTime>,
    exit_code: Option<i32>,
    not_before: Option<Instant>,
    backoff: Backoff,
    /// A probe asked for a restart, with this grace period.
    unhealthy: Option<Duration>,
    /// The last start failed to pull the image (shown as `ErrImagePull`
    /// until the back-off shows).
    pull_failed: bool,
    stopping: Option<StopView>,
    status: ContainerStatus,
    probes: probes::SlotProbes,
}

impl Slot {
    fn view(&self) -> SlotView {
        SlotView {
            init: self.init,
            running: self.running,
            created: self.created.is_some(),
            needs_pod_ip: self.needs_pod_ip,
            exit_code: self.exit_code,
            not_before: self.not_before,
            unhealthy: self.unhealthy,
            stopping: self.stopping,
        }
    }
}

/// Pod-level setup done so far.
struct Setup {
    cgroup: bool,
    sandbox: Option<PodContext>,
    /// Host path of each volume set up, by name.
    volumes: HashMap<String, PathBuf>,
    adopted: bool,
    /// The pod network is attached (or there is none to attach).
    attached: bool,
    /// The last attach failed.
    attach_failed: bool,
    retry: Retry,
    retry_at: Option<Instant>,
}

struct Worker {
    pod: Arc<StaticPod>,
    env: Arc<WorkerEnv>,
    tx: mpsc::UnboundedSender<Msg>,
    slots: Vec<Slot>,
    policy: RestartPolicy,
    qos: cgroup::QosClass,
    status: PodStatus,
    setup: Setup,
    /// The pod is being removed with this grace period; who waits for it.
    deleting: Option<Duration>,
    waiting_for_stop: Vec<oneshot::Sender<()>>,
    /// Disk emptyDirs with a size limit already reported over it, and when
    /// they are measured next.
    over_limit: HashSet<String>,
    next_usage_check: Option<Instant>,
    /// When the worker started, and whether its start latency was recorded.
    created: Instant,
    reported_start: bool,
}

fn waiting(reason: &str, message: impl Into<String>) -> ContainerState {
    ContainerState::Waiting {
        reason: reason.to_string(),
        message: message.into(),
    }
}

/// How often disk emptyDirs with a size limit are measured.
const USAGE_PERIOD: Duration = Duration::from_secs(10);

impl Worker {
    fn new(pod: Arc<StaticPod>, env: Arc<WorkerEnv>, tx: mpsc::UnboundedSender<Msg>) -> Worker {
        let spec = pod.spec();
        let inits = spec.init_containers.as_deref().unwrap_or_default();
        let mut slots = Vec::with_capacity(inits.len() + spec.containers.len());
        let mut probe_problems = vec![];
        let groups = [(true, inits), (false, spec.containers.as_slice())];
        for (init, containers) in groups {
            for (index, c) in containers.iter().enumerate() {
                let (specs, problems) = probes::resolve(c);
                probe_problems.extend(problems);
                slots.push(Slot {
                    probes: probes::SlotProbes::new(specs),
                    status: ContainerStatus {
                        name: c.name.clone(),
                        image: c.image.clone().unwrap_or_default(),
                        container_id: None,
                        state: waiting(
                            if init {
                                reason::POD_INITIALIZING
                            } else {
                                reason::CONTAINER_CREATING
                            },
                            "",
                        ),
                        last_state: None,
                        restart_count: 0,
                        pid: None,
                        ready: false,
                        started: false,
                    },
                    needs_pod_ip: crate::oci::needs_pod_ip(c),
                    spec: ContainerRef {
                        pod: Arc::clone(&pod),
                        init,
                        index,
                    },
                    init,
                    next_attempt: 0,
                    current: None,
                    running: false,
                    created: None,
                    started_at: None,
                    exit_code: None,
                    not_before: None,
                    backoff: Backoff::new(env.backoff_initial, env.backoff_max),
                    unhealthy: None,
                    pull_failed: false,
                    stopping: None,
                });
            }
        }
        let policy = RestartPolicy::parse(spec.restart_policy.as_deref());
        let qos = cgroup::qos::qos_class(spec);
        let mut status = PodStatus::new();
        status.qos_class = Some(qos);
        for p in probe_problems {
            status.push_event(event::WARNING, reason::UNHEALTHY, p);
        }
        let retry = Retry::new(Duration::from_secs(1), env.backoff_max);
        Worker {
            pod,
            env,
            tx,
            slots,
            policy,
            qos,
            status,
            setup: Setup {
                cgroup: false,
                sandbox: None,
                volumes: HashMap::new(),
                adopted: false,
                attached: false,
                attach_failed: false,
                retry,
                retry_at: None,
            },
            deleting: None,
            waiting_for_stop: vec![],
            over_limit: HashSet::new(),
            next_usage_check: None,
            created: Instant::now(),
            reported_start: false,
        }
    }

    /// Pod-level setup as the planner sees it.
    fn setup_view(&self) -> SetupView {
        SetupView {
            blocked: self.pod.resolved.problem.is_some(),
            cgroup: self.setup.cgroup,
            sandbox: self.setup.sandbox.is_some(),
            unmounted: self
                .pod
                .resolved
                .volumes
                .iter()
                .enumerate()
                .filter(|(_, v)| !self.setup.volumes.contains_key(&v.name))
                .map(|(i, _)| i)
                .collect(),
            adopted: self.setup.adopted,
            network: match (self.setup.attached, self.setup.attach_failed) {
                (true, _) => NetworkView::Ready,
                (false, false) => NetworkView::Pending,
                (false, true) => NetworkView::Failed,
            },
            retry_at: self.setup.retry_at,
        }
    }

    fn publish(&mut self) {
        for s in &mut self.slots {
            s.status.started = s.running && s.probes.started;
            s.status.ready = s.running && s.probes.ready();
        }
        self.status.init_containers = self
            .slots
            .iter()
            .filter(|s| s.init)
            .map(|s| s.status.clone())
            .collect();
        self.status.containers = self
            .slots
            .iter()
            .filter(|s| !s.init)
            .map(|s| s.status.clone())
            .collect();
        self.status.update_conditions(SystemTime::now());
        self.env.store.publish(PodEntry {
            pod: self.pod.clone(),
            status: self.status.clone(),
        });
    }

    fn event(&mut self, kind: &'static str, reason: &str, message: String) {
        if kind == event::WARNING {
            warn!(pod = %self.pod.key(), reason, "{message}");
        } else {
            info!(pod = %self.pod.key(), reason, "{message}");
        }
        self.record_event(None, kind, reason, &message);
        self.status.push_event(kind, reason, message);
    }

    /// An event about one container: the same as [`Self::event`], with the
    /// container's field path in the node's event ring.
    fn container_event(
        &mut self,
        container: &str,
        kind: &'static str,
        reason: &str,
        message: String,
    ) {
        let init = self
            .slots
            .iter()
            .any(|s| s.init && s.spec.name == container);
        let path = crate::events::container_field_path(container, init);
        self.record_event(Some(path), kind, reason, &message);
        if kind == event::WARNING {
            warn!(pod = %self.pod.key(), container, reason, "{message}");
        } else {
            info!(pod = %self.pod.key(), container, reason, "{message}");
        }
        self.status.push_event(kind, reason, message);
    }

    fn record_event(&self, field_path: Option<String>, kind: &str, reason: &str, message: &str) {
        let object = crate::events::Involved {
            namespace: self.pod.namespace.clone(),
            name: self.pod.name.clone(),
            uid: self.pod.uid.clone(),
            field_path,
        };
        self.env.events.record(&object, kind, reason, message);
    }

    fn set_phase(&mut self, phase: Phase) {
        if phase != self.status.phase {
            info!(pod = %self.pod.key(), phase = phase.as_str(), "pod phase");
            if phase == Phase::Running && !self.reported_start {
                self.reported_start = true;
                self.env
                    .metrics
                    .pod_start
                    .observe(self.created.elapsed().as_secs_f64());
            }
        }
        self.status.phase = phase;
    }

    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Msg>, after: Option<Terminated>) {
        self.publish();
        if let Some(after) = after {
            tokio::select! {
                _ = after => {}
                msg = rx.recv() => {
                    if let Some(Msg::Stop { done }) = msg {
                        self.forget();
                        let _ = done.send(());
                    }
                    return;
                }
            }
        }
        self.status.start_time = Some(SystemTime::now());
        if let Some(problem) = self.pod.resolved.problem.clone() {
            // The pod's UID covers what its references resolved to: only a
            // new pod (a changed manifest or object) can do better.
            self.status.reason = Some(problem.reason().to_string());
            self.status.message = Some(problem.to_string());
            self.event(event::WARNING, problem.reason(), problem.to_string());
        }
        loop {
            let slots: Vec<SlotView> = self.slots.iter().map(Slot::view).collect();
            let now = now();
            let plan = pod::plan::plan(
                &pod::PodView {
                    setup: self.setup_view(),
                    slots: &slots,
                    policy: self.policy,
                    deleting: self.deleting,
                },
                now,
            );
            self.set_phase(plan.phase);
            // The steps' futures are boxed: held inline, the largest of
            // them (a container start: image pull, OCI spec, containerd
            // calls) would size every idle worker's task (12 KiB each).
            if plan.actions.contains(&Action::Teardown) {
                Box::pin(self.teardown()).await;
                for done in self.waiting_for_stop.drain(..) {
                    let _ = done.send(());
                }
                return;
            }
            if !plan.actions.is_empty() {
                Box::pin(self.execute_all(plan.actions)).await;
                self.publish();
                // What happened meanwhile counts before the next plan.
                while let Ok(msg) = rx.try_recv() {
                    Box::pin(self.handle(msg)).await;
                }
                continue;
            }
            self.back_off_pulls(now);
            let mut wake_at = plan.wake_at;
            if self.deleting.is_none() && self.setup.adopted {
                wake_at = self.check_usage(now).map_or(wake_at, |next| {
                    Some(wake_at.map_or(next, |w: Instant| w.min(next)))
                });
            }
            self.publish();
            let sleep = async {
                match wake_at {
                    Some(at) => tokio::time::sleep_until(at.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                msg = rx.recv() => match msg {
                    Some(msg) => Box::pin(self.handle(msg)).await,
                    // The agent is shutting down: leave the containers running.
                    None => return,
                },
                _ = sleep => {}
            }
        }
    }

    /// The pod's `terminationGracePeriodSeconds` (the API's default: 30 s).
    fn grace_period(&self) -> Duration {
        let secs = self
            .pod
            .spec()
            .termination_grace_period_seconds
            .unwrap_or(30)
            .max(0)
            .cast_unsigned();
        Duration::from_secs(secs)
    }

    async fn handle(&mut self, msg: Msg) {
        match msg {
            Msg::Exited { slot, id, result } => self.exited(slot, &id, result).await,
            Msg::Probe { slot, id, report } => self.probed(slot, &id, report),
            Msg::Stop { done } => {
                self.waiting_for_stop.push(done);
                if self.deleting.is_none() {
                    self.deleting = Some(self.grace_period());
                    self.status.terminating_since = Some(SystemTime::now());
                    self.publish();
                }
            }
        }
    }

    /// A container whose pull failed shows `ErrImagePull` once, then
    /// `ImagePullBackOff` until its next try, as the kubelet shows them.
    fn back_off_pulls(&mut self, now: Instant) {
        let mut backing_off = vec![];
        for s in &mut self.slots {
            if s.pull_failed && s.not_before.is_some_and(|at| at > now) {
                s.pull_failed = false;
                let message = format!("Back-off pulling image {:?}", s.status.image);
                s.status.state = waiting(reason::IMAGE_PULL_BACK_OFF, message.clone());
                backing_off.push((s.spec.name.clone(), message));
            }
        }
        for (name, message) in backing_off {
            self.container_event(&name, event::NORMAL, reason::BACK_OFF, message);
        }
    }

    /// Reports disk emptyDirs above their `sizeLimit`, as the kubelet's
    /// eviction manager would (reason `Evicted`; the pod is not killed).
    /// Returns when to measure again, if the pod has such volumes.
    fn check_usage(&mut self, now: Instant) -> Option<Instant> {
        let limited: Vec<(String, PathBuf, i64)> = self
            .pod
            .resolved
            .volumes
            .iter()
            .filter_map(|v| match v.source {
                volume::Source::EmptyDir {
                    memory: false,
                    size_limit: Some(limit),
                } => Some((v.name.clone(), v.plugin_dir()?, limit)),
                _ => None,
            })
            .collect();
        if limited.is_empty() {
            return None;
        }
        if self.next_usage_check.is_some_and(|at| at > now) {
            return self.next_usage_check;
        }
        let pod_dir = self.env.pod_dir(&self.pod.uid);
        for (name, dir, limit) in limited {
            let used = self.env.volumes.usage(&pod_dir.join(dir));
            if used > limit.cast_unsigned() && self.over_limit.insert(name.clone()) {
                let message = format!(
                    "Usage of EmptyDir volume {name:?} exceeds the limit {limit} bytes ({used} bytes used)."
                );
                self.status.reason = Some(reason::EVICTED.into());
                self.status.message = Some(message.clone());
                self.event(event::WARNING, reason::EVICTED, message);
            }
        }
        self.next_usage_check = Some(now + USAGE_PERIOD);
        self.next_usage_check
    }

    fn forget(&self) {
        self.env.store.remove(&self.pod.uid);
    }
}

#[cfg(test)]
mod id_tests {
    use super::*;

    #[test]
    fn container_ids_are_stable_and_distinct() {
        assert_eq!(container_id("u", "a", 0), container_id("u", "a", 0));
        assert_ne!(container_id("u", "a", 0), container_id("u", "a", 1));
        assert_ne!(container_id("u", "a", 0), container_id("u", "b", 0));
        assert_eq!(container_id("u", "a", 0).len(), 32);
    }
}
