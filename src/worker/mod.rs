//! One task per pod: sets up the sandbox, adopts or creates its containers,
//! follows their exits, restarts them with backoff, and tears everything
//! down when the pod is removed. The decisions come from [`crate::pod::plan`].

pub mod manager;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime};

use futures::future::{BoxFuture, FutureExt, Shared};
use k8s_openapi::api::core::v1::Container;
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, oneshot};
use tracing::{info, warn};

use crate::manifest::StaticPod;
use crate::pod::error::{event, reason};
use crate::pod::{
    self, Backoff, ContainerState, ContainerStatus, Phase, PodError, PodStatus, RestartPolicy,
    SlotView,
};
use crate::runtime::{
    ContainerRecord, Exit, NewContainer, PullPolicy, Runtime, RuntimeError, TaskState, labels,
};
use crate::{cgroup, logs, oci, sandbox, volume};

/// A pod and what is known of it, as the HTTP endpoints show it.
#[derive(Debug, Clone)]
pub struct PodEntry {
    pub pod: StaticPod,
    pub status: PodStatus,
}

/// Status of every pod, by UID; workers write, readers copy.
pub type StatusStore = Arc<RwLock<BTreeMap<String, PodEntry>>>;

/// What every worker shares.
pub struct WorkerEnv {
    pub rt: Arc<dyn Runtime>,
    pub root_dir: PathBuf,
    pub pod_logs_dir: PathBuf,
    pub cgroups: cgroup::Cgroups,
    /// Node memory, for Burstable containers' OOM score adjustment.
    pub memory_capacity: i64,
    /// Lowest OOM score adjustment the host allows (see node::oom_score_floor).
    pub oom_score_floor: i32,
    pub mounts: volume::mount::MountConfig,
    pub metrics: Arc<crate::metrics::AgentMetrics>,
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    pub store: StatusStore,
    /// The agent's own directories (root, logs, manifests): never inside a
    /// volume the agent empties.
    pub protected_dirs: Vec<PathBuf>,
}

impl WorkerEnv {
    pub fn pod_dir(&self, uid: &str) -> PathBuf {
        self.root_dir.join("pods").join(uid)
    }
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
    pod: StaticPod,
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

/// Bytes of a termination message kept, as the kubelet keeps them.
const MAX_TERMINATION_MESSAGE: u64 = 4096;

/// containerd ID of one attempt of one container: stable, so that a retry
/// after a crash finds what an earlier attempt left.
pub fn container_id(uid: &str, name: &str, attempt: u32) -> String {
    let h = Sha256::digest(format!("{uid}/{name}/{attempt}"));
    hex::encode(&h[..16])
}

struct Slot {
    spec: Container,
    init: bool,
    /// Attempt number of the next start; the restart count is one less.
    next_attempt: u32,
    /// The latest container (running or dead).
    current: Option<String>,
    running: bool,
    started_at: Option<SystemTime>,
    exit_code: Option<i32>,
    not_before: Option<Instant>,
    backoff: Backoff,
    status: ContainerStatus,
}

impl Slot {
    fn view(&self) -> SlotView {
        SlotView {
            init: self.init,
            running: self.running,
            exit_code: self.exit_code,
            not_before: self.not_before,
        }
    }
}

struct Worker {
    pod: StaticPod,
    env: Arc<WorkerEnv>,
    tx: mpsc::UnboundedSender<Msg>,
    slots: Vec<Slot>,
    policy: RestartPolicy,
    qos: cgroup::QosClass,
    status: PodStatus,
    /// Host path of each volume, once set up.
    volumes: HashMap<String, PathBuf>,
    /// Disk emptyDirs with a size limit already reported over it.
    over_limit: std::collections::HashSet<String>,
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

impl Worker {
    fn new(pod: StaticPod, env: Arc<WorkerEnv>, tx: mpsc::UnboundedSender<Msg>) -> Worker {
        let spec = pod.spec();
        let mut slots = Vec::new();
        let groups = [
            (true, spec.init_containers.clone().unwrap_or_default()),
            (false, spec.containers.clone()),
        ];
        for (init, containers) in groups {
            for c in containers {
                slots.push(Slot {
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
                    },
                    spec: c,
                    init,
                    next_attempt: 0,
                    current: None,
                    running: false,
                    started_at: None,
                    exit_code: None,
                    not_before: None,
                    backoff: Backoff::new(env.backoff_initial, env.backoff_max),
                });
            }
        }
        let policy = RestartPolicy::parse(spec.restart_policy.as_deref());
        let qos = cgroup::qos::qos_class(spec);
        let mut status = PodStatus::new();
        status.qos_class = Some(qos);
        Worker {
            pod,
            env,
            tx,
            slots,
            policy,
            qos,
            status,
            volumes: HashMap::new(),
            over_limit: Default::default(),
            created: Instant::now(),
            reported_start: false,
        }
    }

    fn publish(&self) {
        let mut status = self.status.clone();
        status.init_containers = self
            .slots
            .iter()
            .filter(|s| s.init)
            .map(|s| s.status.clone())
            .collect();
        status.containers = self
            .slots
            .iter()
            .filter(|s| !s.init)
            .map(|s| s.status.clone())
            .collect();
        let entry = PodEntry {
            pod: self.pod.clone(),
            status,
        };
        self.env
            .store
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(self.pod.uid.clone(), entry);
    }

    fn event(&mut self, kind: &'static str, reason: &str, message: String) {
        if kind == event::WARNING {
            warn!(pod = %self.pod.key(), reason, "{message}");
        } else {
            info!(pod = %self.pod.key(), reason, "{message}");
        }
        self.status.push_event(kind, reason, message);
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
        let ctx = match self.setup(&mut rx).await {
            Some(ctx) => ctx,
            None => return,
        };
        loop {
            let views: Vec<SlotView> = self.slots.iter().map(Slot::view).collect();
            let plan = pod::plan(&views, self.policy, Instant::now());
            if plan.phase != self.status.phase {
                info!(pod = %self.pod.key(), phase = plan.phase.as_str(), "pod phase");
                if plan.phase == Phase::Running && !self.reported_start {
                    self.reported_start = true;
                    self.env
                        .metrics
                        .pod_start
                        .observe(self.created.elapsed().as_secs_f64());
                }
            }
            self.status.phase = plan.phase;
            self.publish();
            if !plan.start.is_empty() {
                self.start_all(&plan.start, &ctx).await;
                continue;
            }
            // Disk emptyDirs with a size limit are measured every 10 s.
            let limited = self.pod.resolved.volumes.iter().any(|v| {
                matches!(
                    v.source,
                    volume::Source::EmptyDir {
                        memory: false,
                        size_limit: Some(_)
                    }
                )
            });
            let wake_at = match (plan.wake_at, limited) {
                (w, true) => {
                    self.check_empty_dirs();
                    let next = Instant::now() + Duration::from_secs(10);
                    Some(w.map_or(next, |w| w.min(next)))
                }
                (w, false) => w,
            };
            let sleep = async {
                match wake_at {
                    Some(at) => tokio::time::sleep_until(at.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                msg = rx.recv() => match msg {
                    Some(Msg::Exited { slot, id, result }) => self.exited(slot, &id, result).await,
                    Some(Msg::Stop { done }) => {
                        self.terminate(&mut rx).await;
                        let _ = done.send(());
                        return;
                    }
                    // The agent is shutting down: leave the containers running.
                    None => return,
                },
                _ = sleep => {}
            }
        }
    }

    /// Reports disk emptyDirs above their `sizeLimit`, as the kubelet's
    /// eviction manager would (reason `Evicted`; the pod is not killed).
    fn check_empty_dirs(&mut self) {
        let pod_dir = self.env.pod_dir(&self.pod.uid);
        let mut over = vec![];
        for v in &self.pod.resolved.volumes {
            if let volume::Source::EmptyDir {
                memory: false,
                size_limit: Some(limit),
            } = v.source
                && let Some(dir) = v.plugin_dir()
            {
                let used = volume::mount::usage(&pod_dir.join(dir));
                if used > limit.cast_unsigned() && !self.over_limit.contains(&v.name) {
                    over.push((v.name.clone(), used, limit));
                }
            }
        }
        for (name, used, limit) in over {
            let message = format!(
                "Usage of EmptyDir volume {name:?} exceeds the limit {limit} bytes ({used} bytes used)."
            );
            self.status.reason = Some(reason::EVICTED.into());
            self.status.message = Some(message.clone());
            self.event(event::WARNING, reason::EVICTED, message);
            self.over_limit.insert(name);
            self.publish();
        }
    }

    /// Sandbox and adoption, retried until they work or the pod is removed.
    async fn setup(&mut self, rx: &mut mpsc::UnboundedReceiver<Msg>) -> Option<oci::PodContext> {
        let mut delay = Duration::from_secs(1);
        loop {
            let err = match self.try_setup().await {
                Ok(ctx) => {
                    self.status.reason = None;
                    self.status.message = None;
                    return Some(ctx);
                }
                Err(e) => e,
            };
            self.status.reason = Some(err.reason().to_string());
            self.status.message = Some(err.to_string());
            self.event(event::WARNING, err.reason(), err.to_string());
            self.publish();
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                msg = rx.recv() => {
                    if let Some(Msg::Stop { done }) = msg {
                        self.terminate(rx).await;
                        let _ = done.send(());
                    }
                    return None;
                }
            }
            delay = (delay * 2).min(self.env.backoff_max);
        }
    }

    async fn try_setup(&mut self) -> Result<oci::PodContext, PodError> {
        if let Some(problem) = &self.pod.resolved.problem {
            return Err(problem.clone());
        }
        let spec = self.pod.spec();
        let sb = sandbox::SandboxSpec {
            dir: self.env.pod_dir(&self.pod.uid),
            hostname: spec.hostname.clone().unwrap_or_else(|| {
                self.pod
                    .name
                    .chars()
                    .take(63)
                    .collect::<String>()
                    .trim_end_matches(['-', '.'])
                    .to_string()
            }),
            host_network: spec.host_network == Some(true),
            host_ipc: spec.host_ipc == Some(true),
            shm_bytes: 64 << 20,
        };
        let limits = cgroup::qos::pod_limits(spec, self.qos, self.env.cgroups.options);
        self.env
            .cgroups
            .apply_pod(self.qos, &self.pod.uid, &limits)
            .map_err(|e| PodError::CreatePodSandbox(format!("pod cgroup: {e}")))?;
        let ctx = tokio::task::spawn_blocking(move || sandbox::setup(&sb))
            .await
            .map_err(|e| PodError::CreatePodSandbox(e.to_string()))??;
        // Volumes, each off the executor: an NFS mount can take its deadline.
        let pod_dir = self.env.pod_dir(&self.pod.uid);
        for v in &self.pod.resolved.volumes {
            if self.volumes.contains_key(&v.name) {
                continue;
            }
            let (dir, vol, cfg) = (pod_dir.clone(), v.clone(), self.env.mounts.clone());
            let memory = limits.memory_max;
            let path =
                tokio::task::spawn_blocking(move || volume::mount::setup(&dir, &vol, memory, &cfg))
                    .await
                    .map_err(|e| PodError::Mount(e.to_string()))??;
            self.volumes.insert(v.name.clone(), path);
        }
        let records = self
            .env
            .rt
            .list()
            .await
            .map_err(|e| PodError::Sync(format!("listing containers: {e}")))?;
        self.adopt(records).await;
        Ok(ctx)
    }

    /// Takes over the containers an earlier run of the agent left.
    async fn adopt(&mut self, records: Vec<ContainerRecord>) {
        let mut mine: Vec<ContainerRecord> = records
            .into_iter()
            .filter(|r| r.labels.get(labels::POD_UID) == Some(&self.pod.uid))
            .collect();
        let attempt = |r: &ContainerRecord| {
            r.labels
                .get(labels::RESTART_COUNT)
                .and_then(|v| v.parse::<u32>().ok())
                .unwrap_or(0)
        };
        mine.sort_by_key(|r| std::cmp::Reverse(attempt(r)));
        let mut found_app = false;
        let mut stale = Vec::new();
        for r in mine {
            let name = r
                .labels
                .get(labels::CONTAINER_NAME)
                .cloned()
                .unwrap_or_default();
            let Some(i) = self.slots.iter().position(|s| s.spec.name == name) else {
                stale.push(r.id);
                continue;
            };
            if self.slots[i].current.is_some() || self.slots[i].next_attempt > 0 {
                stale.push(r.id); // an older attempt
                continue;
            }
            let n = attempt(&r);
            let slot = &mut self.slots[i];
            let exit = match r.task {
                TaskState::Running { .. } => None,
                TaskState::Exited(e) => Some((e.code.cast_signed(), e.at)),
                TaskState::None => r
                    .labels
                    .get(labels::EXIT_CODE)
                    .and_then(|c| c.parse().ok())
                    .map(|c| {
                        let at = r
                            .labels
                            .get(labels::FINISHED_AT)
                            .and_then(|t| t.parse::<k8s_openapi::jiff::Timestamp>().ok())
                            .map(|t| {
                                SystemTime::UNIX_EPOCH
                                    + Duration::from_nanos(
                                        u64::try_from(t.as_nanosecond()).unwrap_or(0),
                                    )
                            })
                            .unwrap_or_else(SystemTime::now);
                        (c, at)
                    }),
                TaskState::Created => {
                    // Created but never started: start it afresh.
                    slot.next_attempt = n;
                    stale.push(r.id);
                    continue;
                }
            };
            if !slot.init {
                found_app = true;
            }
            slot.current = Some(r.id.clone());
            slot.next_attempt = n + 1;
            slot.status.restart_count = n;
            slot.status.container_id = Some(r.id.clone());
            slot.started_at = r.created_at;
            slot.status.pid = match r.task {
                TaskState::Running { pid } => Some(pid),
                _ => None,
            };
            match exit {
                None => {
                    slot.running = true;
                    slot.status.state = ContainerState::Running {
                        started_at: r.created_at.unwrap_or_else(SystemTime::now),
                    };
                    info!(pod = %self.pod.key(), container = %name, id = %r.id, "adopted running container");
                    self.watch(i, r.id);
                }
                Some((code, at)) => {
                    slot.exit_code = Some(code);
                    slot.status.state = terminated(code, String::new(), slot.started_at, at);
                    if matches!(r.task, TaskState::Exited(_)) {
                        self.record_exit(&r.id, code, at).await;
                    }
                }
            }
        }
        if found_app {
            // App containers exist, so the init containers had all succeeded.
            for s in self
                .slots
                .iter_mut()
                .filter(|s| s.init && s.exit_code.is_none() && !s.running)
            {
                s.exit_code = Some(0);
                s.status.state = terminated(0, String::new(), None, SystemTime::now());
            }
        }
        for id in stale {
            if let Err(e) = self.env.rt.remove(&id).await {
                warn!(pod = %self.pod.key(), id, "removing stale container: {e}");
            }
        }
    }

    /// Follows a task until it exits, surviving containerd restarts.
    fn watch(&self, slot: usize, id: String) {
        let rt = Arc::clone(&self.env.rt);
        let tx = self.tx.clone();
        tokio::spawn(async move {
            let mut delay = Duration::from_millis(500);
            let result = loop {
                match rt.wait(&id).await {
                    Err(e) if e.is_transient() => {
                        tokio::time::sleep(delay).await;
                        delay = (delay * 2).min(Duration::from_secs(30));
                    }
                    r => break r,
                }
            };
            let _ = tx.send(Msg::Exited { slot, id, result });
        });
    }

    /// Starts the given containers concurrently (their creation is
    /// independent; only their order of init containers matters, and the
    /// planner never asks for two of those at once).
    async fn start_all(&mut self, which: &[usize], ctx: &oci::PodContext) {
        let now = Instant::now();
        let requests: Vec<(usize, u32)> = which
            .iter()
            .map(|&i| (i, self.slots[i].next_attempt))
            .collect();
        let results = {
            let this = &*self;
            futures::future::join_all(
                requests
                    .iter()
                    .map(|&(i, attempt)| this.launch(i, attempt, ctx)),
            )
            .await
        };
        for ((i, attempt), result) in requests.into_iter().zip(results) {
            match result {
                Ok((id, pid)) => self.started(i, attempt, id, pid).await,
                Err(e) => {
                    self.env.metrics.sync_errors.inc();
                    let slot = &mut self.slots[i];
                    slot.backoff.record_start(now);
                    slot.not_before = Some(slot.backoff.restart_at(now));
                    // A failed restart still counts as one, and the run
                    // before it (its exit code, OOMKilled) stays visible.
                    if let ContainerState::Terminated { .. } = slot.status.state {
                        slot.status.last_state = Some(slot.status.state.clone());
                    }
                    slot.status.restart_count = attempt;
                    slot.status.state = waiting(e.reason(), e.to_string());
                    let name = slot.spec.name.clone();
                    self.event(
                        event::WARNING,
                        reason::FAILED,
                        format!("container {name}: {}: {e}", e.reason()),
                    );
                }
            }
        }
        self.publish();
    }

    /// Image, spec, container and task for attempt `attempt` of slot `i`;
    /// returns the started container's ID. Touches no worker state.
    async fn launch(
        &self,
        i: usize,
        attempt: u32,
        ctx: &oci::PodContext,
    ) -> Result<(String, u32), PodError> {
        let mut made = Made::default();
        let result = self.try_launch(i, attempt, ctx, &mut made).await;
        if result.is_err() {
            // Nothing of a failed attempt stays: its files and its subPath
            // binds (no container of this slot runs, so none is in use).
            tokio::task::spawn_blocking(move || made.undo());
        }
        result
    }

    async fn try_launch(
        &self,
        i: usize,
        attempt: u32,
        ctx: &oci::PodContext,
        made: &mut Made,
    ) -> Result<(String, u32), PodError> {
        let rt = &self.env.rt;
        let c = &self.slots[i].spec;
        let image_name = c.image.clone().unwrap_or_default();
        let policy = match c
            .image_pull_policy
            .as_deref()
            .unwrap_or_else(|| crate::runtime::image_ref::default_pull_policy(&image_name))
        {
            "Never" => PullPolicy::Never,
            "IfNotPresent" => PullPolicy::IfNotPresent,
            _ => PullPolicy::Always,
        };
        let image = rt
            .ensure_image(&image_name, policy)
            .await
            .map_err(|e| e.into_image_error(policy == PullPolicy::Never))?;
        let id = container_id(&self.pod.uid, &c.name, attempt);
        let log_path = logs::container_log_path(
            &self.env.pod_logs_dir,
            &self.pod.namespace,
            &self.pod.name,
            &self.pod.uid,
            &c.name,
            attempt,
        );
        let term_dir = self
            .env
            .pod_dir(&self.pod.uid)
            .join("containers")
            .join(&c.name);
        let termination_log = term_dir.join(format!("{attempt}.termination-log"));
        made.files.push(termination_log.clone());
        made.files.push(log_path.clone());
        let prepared = std::fs::create_dir_all(&term_dir)
            .and_then(|_| std::fs::write(&termination_log, b""))
            .and_then(|_| {
                std::fs::create_dir_all(log_path.parent().expect("log paths have a parent"))
            });
        if let Err(e) = prepared {
            return Err(PodError::CreateContainer(format!(
                "preparing {}: {e}",
                term_dir.display()
            )));
        }
        let mut mounts = vec![];
        for (index, m) in c.volume_mounts.iter().flatten().enumerate() {
            let volume = self.pod.resolved.volumes.iter().find(|v| v.name == m.name);
            let Some(host) = self.volumes.get(&m.name) else {
                return Err(PodError::CreateContainerConfig(format!(
                    "volume {:?} is not set up",
                    m.name
                )));
            };
            let source = match m.sub_path.as_deref().filter(|s| !s.is_empty()) {
                None => host.clone(),
                Some(sub) => {
                    let target = self
                        .env
                        .pod_dir(&self.pod.uid)
                        .join("volume-subpaths")
                        .join(&m.name)
                        .join(&c.name)
                        .join(index.to_string());
                    made.binds.push(target.clone());
                    volume::mount::bind_subpath(host, std::path::Path::new(sub), &target).map_err(
                        |e| {
                            PodError::CreateContainerConfig(format!(
                                "failed to prepare subPath {sub:?} of volume {:?}: {e}",
                                m.name
                            ))
                        },
                    )?
                }
            };
            mounts.push(oci::VolumeMount {
                destination: m.mount_path.clone(),
                source,
                read_only: m.read_only == Some(true)
                    || volume.is_some_and(|v| v.mounted_read_only()),
            });
        }
        let spec = oci::build(&oci::ContainerInput {
            mounts,
            env: self.pod.resolved.env.get(&c.name),
            pod: &self.pod,
            container: c,
            image: &image.config,
            ctx,
            cgroups_path: self
                .env
                .cgroups
                .layout
                .container_path(self.qos, &self.pod.uid, &id),
            limits: cgroup::qos::container_limits(c, self.env.cgroups.options),
            cgroup_v2: self
                .env
                .cgroups
                .mode
                .is_v2()
                .then_some(self.env.cgroups.formula),
            oom_score_adj: cgroup::qos::oom_score_adj(self.qos, c, self.env.memory_capacity)
                .max(self.env.oom_score_floor),
            termination_log: Some(termination_log),
        })
        .map_err(|e| PodError::CreateContainerConfig(e.to_string()))?;
        let grace = self
            .pod
            .spec()
            .termination_grace_period_seconds
            .unwrap_or(30);
        let container_labels = HashMap::from([
            (labels::POD_NAME.to_string(), self.pod.name.clone()),
            (
                labels::POD_NAMESPACE.to_string(),
                self.pod.namespace.clone(),
            ),
            (labels::POD_UID.to_string(), self.pod.uid.clone()),
            (labels::CONTAINER_NAME.to_string(), c.name.clone()),
            (labels::RESTART_COUNT.to_string(), attempt.to_string()),
            (
                labels::CONTAINER_TYPE.to_string(),
                if self.slots[i].init { "init" } else { "app" }.to_string(),
            ),
            (labels::GRACE_PERIOD.to_string(), grace.to_string()),
        ]);
        let t = Instant::now();
        rt.create(&NewContainer {
            id: id.clone(),
            labels: container_labels,
            image,
            spec,
            log_path,
        })
        .await
        .map_err(|e| PodError::CreateContainer(e.to_string()))?;
        self.env
            .metrics
            .observe_containerd("create", t.elapsed().as_secs_f64());
        let t = Instant::now();
        match rt.start(&id).await {
            Ok(pid) => {
                self.env
                    .metrics
                    .observe_containerd("start", t.elapsed().as_secs_f64());
                Ok((id, pid))
            }
            Err(e) => {
                let _ = rt.remove(&id).await;
                Err(PodError::RunContainer(e.to_string()))
            }
        }
    }

    /// Records a started container, follows it, and drops the previous
    /// attempt's container (one dead container is kept, as the kubelet does).
    async fn started(&mut self, i: usize, attempt: u32, id: String, pid: u32) {
        let now = Instant::now();
        let previous = self.slots[i].current.replace(id.clone());
        let slot = &mut self.slots[i];
        // The kubelet's backoff starts counting at the first restart: the
        // first start, and the first restart after it, are immediate.
        if slot.exit_code.is_some() {
            slot.backoff.record_start(now);
        }
        slot.next_attempt = attempt + 1;
        slot.running = true;
        slot.not_before = None;
        slot.started_at = Some(SystemTime::now());
        slot.status.restart_count = attempt;
        slot.status.container_id = Some(id.clone());
        slot.status.pid = Some(pid);
        // After CrashLoopBackOff, last_state already holds the exit.
        if let ContainerState::Terminated { .. } = slot.status.state {
            slot.status.last_state = Some(slot.status.state.clone());
        }
        slot.exit_code = None;
        slot.status.state = ContainerState::Running {
            started_at: slot.started_at.unwrap_or_else(SystemTime::now),
        };
        let name = slot.spec.name.clone();
        self.event(
            event::NORMAL,
            reason::STARTED,
            format!("Started container {name}"),
        );
        self.watch(i, id);
        if let Some(prev) = previous
            && let Err(e) = self.env.rt.remove(&prev).await
        {
            warn!(pod = %self.pod.key(), id = prev, "removing previous container: {e}");
        }
    }

    async fn record_exit(&self, id: &str, code: i32, at: SystemTime) {
        let d = at
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        let finished = k8s_openapi::jiff::Timestamp::new(
            i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
            d.subsec_nanos().cast_signed(),
        )
        .unwrap_or_default();
        let rt = &self.env.rt;
        let labels = HashMap::from([
            (labels::EXIT_CODE.to_string(), code.to_string()),
            (labels::FINISHED_AT.to_string(), finished.to_string()),
        ]);
        if let Err(e) = rt.set_labels(id, labels).await {
            warn!(pod = %self.pod.key(), id, "recording exit: {e}");
        }
        if let Err(e) = rt.delete_task(id).await {
            warn!(pod = %self.pod.key(), id, "deleting exited task: {e}");
        }
    }

    async fn exited(&mut self, i: usize, id: &str, result: Result<Exit, RuntimeError>) {
        if self.slots[i].current.as_deref() != Some(id) || !self.slots[i].running {
            return;
        }
        let (code, at) = match result {
            Ok(e) => (e.code.cast_signed(), e.at),
            Err(e) => {
                warn!(pod = %self.pod.key(), id, "lost track of container: {e}");
                (137, SystemTime::now())
            }
        };
        // Read before the task is deleted: runc removes the cgroup with it.
        let oom_killed = self
            .env
            .cgroups
            .container_oom_kills(self.qos, &self.pod.uid, id)
            .is_some_and(|n| n > 0);
        self.record_exit(id, code, at).await;
        let attempt = self.slots[i].next_attempt.saturating_sub(1);
        // The container wrote this file: at most its last 4 KiB are read
        // (the kubelet's MaxContainerTerminationMessageLength), off the
        // executor.
        let path = self
            .env
            .pod_dir(&self.pod.uid)
            .join("containers")
            .join(&self.slots[i].spec.name)
            .join(format!("{attempt}.termination-log"));
        let message = tokio::task::spawn_blocking(move || {
            crate::hostfs::read_tail(&path, MAX_TERMINATION_MESSAGE)
        })
        .await
        .ok()
        .and_then(Result::ok)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
        let now = Instant::now();
        let policy = self.policy;
        let slot = &mut self.slots[i];
        slot.running = false;
        slot.exit_code = Some(code);
        let mut state = terminated(code, message, slot.started_at, at);
        if oom_killed && let ContainerState::Terminated { reason, .. } = &mut state {
            // Also when PID 1 survived the kill of a child and exited later.
            *reason = reason::OOM_KILLED.to_string();
        }
        let name = slot.spec.name.clone();
        // Init containers are only ever re-run after a failure.
        let restarts = if slot.init {
            code != 0 && policy != RestartPolicy::Never
        } else {
            policy.restarts(code)
        };
        let restart_at = slot.backoff.restart_at(now);
        slot.not_before = Some(restart_at);
        if restarts && restart_at > now {
            let delay = restart_at - now;
            slot.status.last_state = Some(state);
            slot.status.state = waiting(
                reason::CRASH_LOOP_BACK_OFF,
                format!(
                    "back-off {}s restarting failed container={} pod={}",
                    delay.as_secs(),
                    name,
                    self.pod.name
                ),
            );
            self.event(
                event::WARNING,
                reason::BACK_OFF,
                format!("Back-off restarting failed container {name}"),
            );
        } else {
            slot.status.state = state;
        }
        info!(pod = %self.pod.key(), container = %name, exit_code = code, "container exited");
    }

    /// Kills the pod's containers (SIGTERM, then SIGKILL after the grace
    /// period) and removes them with the sandbox, cgroups and logs.
    async fn terminate(&mut self, rx: &mut mpsc::UnboundedReceiver<Msg>) {
        let grace = Duration::from_secs(
            self.pod
                .spec()
                .termination_grace_period_seconds
                .unwrap_or(30)
                .max(0)
                .cast_unsigned(),
        );
        let running: Vec<String> = self
            .slots
            .iter()
            .filter(|s| s.running)
            .filter_map(|s| s.current.clone())
            .collect();
        for s in self.slots.iter().filter(|s| s.running) {
            info!(pod = %self.pod.key(), container = %s.spec.name, "Killing: stopping container");
        }
        self.status.terminating_since = Some(SystemTime::now());
        self.publish();
        stop_containers(&self.env, &running, grace, rx).await;
        cleanup(
            &self.env,
            &self.pod.uid,
            Some((&self.pod.namespace, &self.pod.name)),
        )
        .await;
        self.forget();
        info!(pod = %self.pod.key(), "pod removed");
    }

    fn forget(&self) {
        self.env
            .store
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.pod.uid);
    }
}

/// What one launch attempt put on the host.
#[derive(Default)]
struct Made {
    files: Vec<PathBuf>,
    binds: Vec<PathBuf>,
}

impl Made {
    /// Removes it all; blocking.
    fn undo(self) {
        for b in &self.binds {
            if let Err(e) = volume::mount::unmount_below(b).and_then(|()| volume::mount::unmount(b))
            {
                warn!(path = %b.display(), "removing the subPath bind of a failed start: {e}");
            }
        }
        for f in &self.files {
            if let Err(e) = std::fs::remove_file(f)
                && e.kind() != std::io::ErrorKind::NotFound
            {
                warn!(path = %f.display(), "removing a file of a failed start: {e}");
            }
        }
    }
}

fn terminated(
    code: i32,
    message: String,
    started_at: Option<SystemTime>,
    finished_at: SystemTime,
) -> ContainerState {
    ContainerState::Terminated {
        exit_code: code,
        reason: if code == 0 {
            reason::COMPLETED
        } else {
            reason::ERROR
        }
        .to_string(),
        message,
        started_at,
        finished_at,
    }
}

/// SIGTERM to each task, SIGKILL to whatever still runs after `grace`.
/// Exits are learned from the worker's channel (its watchers) when given,
/// else by waiting on containerd directly.
async fn stop_containers(
    env: &WorkerEnv,
    ids: &[String],
    grace: Duration,
    rx: &mut mpsc::UnboundedReceiver<Msg>,
) {
    let mut alive: std::collections::HashSet<String> = ids.iter().cloned().collect();
    for id in ids {
        if let Err(e) = env.rt.kill(id, libc::SIGTERM, false).await {
            warn!(id, "SIGTERM: {e}");
        }
    }
    for (signal, wait) in [
        (None, grace),
        (Some(libc::SIGKILL), Duration::from_secs(10)),
    ] {
        if let Some(sig) = signal {
            for id in &alive {
                if let Err(e) = env.rt.kill(id, sig, true).await {
                    warn!(id, "SIGKILL: {e}");
                }
            }
        }
        let deadline = tokio::time::Instant::now() + wait;
        while !alive.is_empty() {
            tokio::select! {
                msg = rx.recv() => match msg {
                    Some(Msg::Exited { id, .. }) => { alive.remove(&id); }
                    Some(Msg::Stop { done }) => { let _ = done.send(()); }
                    None => return,
                },
                _ = tokio::time::sleep_until(deadline) => break,
            }
        }
        if alive.is_empty() {
            return;
        }
    }
}

/// Removes every container of pod `uid`, its sandbox, cgroups and (given
/// namespace and name) its logs. Retries while containerd is unavailable.
async fn cleanup(env: &Arc<WorkerEnv>, uid: &str, names: Option<(&str, &str)>) {
    let mut delay = Duration::from_secs(1);
    loop {
        let result: Result<(), RuntimeError> = async {
            for r in env.rt.list().await? {
                if r.labels.get(labels::POD_UID).map(String::as_str) == Some(uid) {
                    env.rt.remove(&r.id).await?;
                }
            }
            Ok(())
        }
        .await;
        match result {
            Ok(()) => break,
            Err(e) => {
                warn!(uid, "removing containers: {e}; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(30));
            }
        }
    }
    let errors = remove_host_state(env, uid, names).await;
    if errors.is_empty() {
        return;
    }
    for e in &errors {
        warn!(
            uid,
            reason = reason::FAILED_KILL_POD,
            "tearing the pod down: {e}; retrying in the background"
        );
    }
    // The containers are gone, so the pod no longer holds anything a new
    // pod needs; what is left (a busy mount, a cgroup that still has a
    // process) is retried until it goes, without an agent restart.
    let env = Arc::clone(env);
    let uid = uid.to_string();
    let names = names.map(|(ns, n)| (ns.to_string(), n.to_string()));
    tokio::spawn(async move {
        let mut delay = Duration::from_secs(2);
        loop {
            tokio::time::sleep(delay).await;
            let named = names.as_ref().map(|(ns, n)| (ns.as_str(), n.as_str()));
            let errors = remove_host_state(&env, &uid, named).await;
            if errors.is_empty() {
                info!(uid, "pod torn down after retries");
                return;
            }
            delay = (delay * 2).min(Duration::from_secs(300));
            for e in &errors {
                warn!(
                    uid,
                    reason = reason::FAILED_KILL_POD,
                    "tearing the pod down: {e}; retrying in {delay:?}"
                );
            }
        }
    });
}

/// The sandbox, cgroups and (given namespace and name) logs of pod `uid`:
/// every step is tried, whatever the others did; returns what failed.
async fn remove_host_state(env: &WorkerEnv, uid: &str, names: Option<(&str, &str)>) -> Vec<String> {
    let mut errors = vec![];
    let dir = env.pod_dir(uid);
    match tokio::task::spawn_blocking(move || sandbox::teardown(&dir)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => errors.push(format!("removing sandbox: {e}")),
        Err(e) => errors.push(format!("removing sandbox: {e}")),
    }
    for p in env.cgroups.remove_pod(uid) {
        errors.push(format!("removing cgroup {p}"));
    }
    if let Some((ns, name)) = names {
        let dir = logs::pod_log_dir(&env.pod_logs_dir, ns, name, uid);
        let removed = tokio::task::spawn_blocking(move || {
            crate::hostfs::remove_all_one_filesystem(&dir).map_err(|e| e.to_string())
        })
        .await
        .map_err(|e| e.to_string())
        .and_then(|r| r);
        if let Err(e) = removed {
            errors.push(format!("removing logs: {e}"));
        }
    }
    errors
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_ids_are_stable_and_distinct() {
        assert_eq!(container_id("u", "a", 0), container_id("u", "a", 0));
        assert_ne!(container_id("u", "a", 0), container_id("u", "a", 1));
        assert_ne!(container_id("u", "a", 0), container_id("u", "b", 0));
        assert_eq!(container_id("u", "a", 0).len(), 32);
    }
}
