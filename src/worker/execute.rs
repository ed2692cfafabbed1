//! The executor: each planner action performed against the host, and what
//! the worker learns from containers (starts, exits, OOM kills). Blocking
//! host calls run off the async executor.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tracing::{debug, info, warn};

use super::adopt::{self, FoundState};
use super::{Msg, Worker, container_id, now, waiting};
use crate::pod::error::{event, reason};
use crate::pod::{Action, ContainerState, PodError, Retry, StopView};
use crate::runtime::images::{self, ImageEvent};
use crate::runtime::{Exit, NewContainer, RuntimeError, labels};
use crate::{cgroup, logs, oci, sandbox};

/// Bytes of a termination message kept, as the kubelet keeps them.
const MAX_TERMINATION_MESSAGE: u64 = 4096;

/// Runs a blocking host call off the async executor.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, PodError> + Send + 'static,
    failed: fn(String) -> PodError,
) -> Result<T, PodError> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(failed(e.to_string())))
}

impl Worker {
    /// Runs the planner's actions in order; the signals among them go out
    /// together at the end, as the kubelet kills a pod's containers in
    /// parallel.
    pub(super) async fn execute_all(&mut self, actions: Vec<Action>) {
        let mut signals = vec![];
        let mut attach = false;
        let mut create = vec![];
        for action in actions {
            match action {
                Action::Stop { slot, grace } => signals.extend(self.stop(slot, grace)),
                Action::Kill(slot) => signals.extend(self.kill(slot)),
                // Together, below: the ADD and the creations overlap.
                Action::AttachNetwork => attach = true,
                Action::Create(slots) => create = slots,
                other => self.execute(other).await,
            }
        }
        if attach {
            self.attach_and_create(&create).await;
        }
        let rt = &self.env.rt;
        let sent = futures::future::join_all(signals.into_iter().map(|(id, signal)| async move {
            let result = rt.kill(&id, signal, signal == libc::SIGKILL).await;
            (id, signal, result)
        }))
        .await;
        for (id, signal, result) in sent {
            if let Err(e) = result {
                warn!(pod = %self.pod.key(), id, signal, "signalling the container: {e}");
            }
        }
    }

    async fn execute(&mut self, action: Action) {
        let t = Instant::now();
        let what = format!("{action:?}");
        let result = match action {
            Action::EnsureCgroup => self.ensure_cgroup().await,
            Action::EnsureSandbox => self.ensure_sandbox().await,
            Action::Mount(volumes) => self.mount(&volumes).await,
            Action::Adopt => self.adopt().await,
            Action::Start(slots) => {
                self.start_all(&slots).await;
                Ok(())
            }
            // Signals and the network are done by execute_all; the run
            // loop ends with Teardown.
            Action::AttachNetwork
            | Action::Create(_)
            | Action::Stop { .. }
            | Action::Kill(_)
            | Action::Teardown => Ok(()),
        };
        debug!(pod = %self.pod.key(), action = what, took = ?t.elapsed(), "pod action done");
        self.setup_step(result);
    }

    /// Records how a setup step went: a failure is retried after the
    /// setup's back-off, with its reason in the status and an event; the
    /// reason is cleared once the whole setup is through.
    fn setup_step(&mut self, result: Result<(), PodError>) {
        match result {
            Ok(())
                if self.setup.retry_at.is_some() && self.setup.adopted && self.setup.attached =>
            {
                self.setup.retry_at = None;
                self.setup.retry.succeeded();
                self.status.reason = None;
                self.status.message = None;
            }
            Ok(()) => {}
            Err(e) => {
                self.env.metrics.sync_errors.inc();
                let wait = self.setup.retry.failed();
                self.setup.retry_at = Some(now() + wait);
                self.status.reason = Some(e.reason().to_string());
                self.status.message = Some(e.to_string());
                self.event(event::WARNING, e.reason(), e.to_string());
            }
        }
    }

    async fn ensure_cgroup(&mut self) -> Result<(), PodError> {
        let cgroups = Arc::clone(&self.env.cgroups);
        let limits = cgroup::qos::pod_limits(self.pod.spec(), self.qos, cgroups.options());
        let (qos, uid) = (self.qos, self.pod.uid.clone());
        blocking(
            move || cgroups.apply_pod(qos, &uid, &limits),
            PodError::CreatePodSandbox,
        )
        .await?;
        self.setup.cgroup = true;
        Ok(())
    }

    async fn ensure_sandbox(&mut self) -> Result<(), PodError> {
        let sb = sandbox::SandboxSpec::of(&self.pod, self.env.pod_dir(&self.pod.uid));
        let sandboxes = Arc::clone(&self.env.sandboxes);
        let made = blocking(move || sandboxes.setup(&sb), PodError::CreatePodSandbox).await?;
        let ctx = made.ctx;
        if !made.attach {
            self.status.pod_ips.clone_from(&ctx.pod_ips);
            self.setup.attached = true;
        }
        self.status.host_ip = Some(ctx.host_ip);
        for w in &ctx.warnings {
            self.event(event::WARNING, w.reason, w.message.clone());
        }
        self.setup.sandbox = Some(ctx);
        Ok(())
    }

    /// Attaches the pod network (CNI ADD) while the given containers are
    /// created, then records both. The containers are only created: none
    /// starts before the pod has its address. A failed attach removes what
    /// was created, so that nothing of the pod stays half set up; it is
    /// retried with the setup's back-off, alone.
    async fn attach_and_create(&mut self, which: &[usize]) {
        let Some(ctx) = self.setup.sandbox.clone() else {
            return;
        };
        let t = Instant::now();
        let requests: Vec<(usize, u32)> = which
            .iter()
            .map(|&i| (i, self.slots[i].next_attempt))
            .collect();
        let (attached, created) = {
            let this = &*self;
            let sb = sandbox::SandboxSpec::of(&this.pod, this.env.pod_dir(&this.pod.uid));
            let sandboxes = Arc::clone(&this.env.sandboxes);
            let attach = blocking(move || sandboxes.attach(&sb), PodError::CreatePodSandbox);
            let create = futures::future::join_all(
                requests
                    .iter()
                    .map(|&(i, attempt)| this.create(i, attempt, &ctx)),
            );
            futures::future::join(attach, create).await
        };
        let now = now();
        for ((i, attempt), (result, image_events)) in requests.into_iter().zip(created) {
            let name = self.slots[i].spec.name.clone();
            for e in image_events {
                self.container_event(&name, e.kind, e.reason, e.message);
            }
            match result {
                Ok(c) => self.slots[i].created = Some(c),
                Err(e) => self.start_failed(i, attempt, &e, now),
            }
        }
        let result = match attached {
            Ok(ips) => {
                if let Some(ctx) = self.setup.sandbox.as_mut() {
                    ctx.pod_ips.clone_from(&ips);
                }
                self.status.pod_ips = ips;
                self.setup.attached = true;
                self.setup.attach_failed = false;
                Ok(())
            }
            Err(e) => {
                self.remove_created().await;
                self.setup.attach_failed = true;
                Err(e)
            }
        };
        debug!(pod = %self.pod.key(), created = which.len(), took = ?t.elapsed(), "attach and create done");
        self.setup_step(result);
    }

    /// Removes the containers created but not started (the network they
    /// were waiting for could not be attached); they will be created again.
    async fn remove_created(&mut self) {
        let created: Vec<Created> = self
            .slots
            .iter_mut()
            .filter_map(|s| s.created.take())
            .collect();
        let rt = &self.env.rt;
        let removed = futures::future::join_all(created.iter().map(|c| rt.remove(&c.id))).await;
        let mut made = vec![];
        for (c, result) in created.into_iter().zip(removed) {
            if let Err(e) = result {
                // Found again and replaced by the next creation, or by
                // the teardown.
                warn!(pod = %self.pod.key(), id = c.id, "removing a container whose network failed: {e}");
            }
            made.push(c.made);
        }
        let volumes = Arc::clone(&self.env.volumes);
        let _ = tokio::task::spawn_blocking(move || {
            for m in made {
                m.undo(volumes.as_ref());
            }
        })
        .await;
    }

    /// Volumes one after the other, each off the executor: an NFS mount can
    /// take its whole deadline.
    async fn mount(&mut self, which: &[usize]) -> Result<(), PodError> {
        let pod_dir = self.env.pod_dir(&self.pod.uid);
        let memory = cgroup::qos::pod_limits(self.pod.spec(), self.qos, self.env.cgroups.options())
            .memory_max;
        for &i in which {
            let v = self.pod.resolved.volumes[i].clone();
            let (dir, volumes) = (pod_dir.clone(), Arc::clone(&self.env.volumes));
            let name = v.name.clone();
            let path = blocking(move || volumes.setup(&dir, &v, memory), PodError::Mount).await?;
            self.setup.volumes.insert(name, path);
        }
        Ok(())
    }

    /// Takes over the containers an earlier run of the agent left.
    async fn adopt(&mut self) -> Result<(), PodError> {
        let mine = self
            .env
            .rt
            .list_pod(&self.pod.uid)
            .await
            .map_err(|e| PodError::Sync(format!("listing containers: {e}")))?;
        let names: Vec<(&str, bool)> = self
            .slots
            .iter()
            .map(|s| (s.spec.name.as_str(), s.init))
            .collect();
        let decided = adopt::decide(&names, mine);
        for id in &decided.stale {
            self.env
                .rt
                .remove(id)
                .await
                .map_err(|e| PodError::Sync(format!("removing stale container {id}: {e}")))?;
        }
        for (i, found) in decided.found.into_iter().enumerate() {
            self.slots[i].next_attempt = decided.next_attempt[i];
            let Some(found) = found else { continue };
            let slot = &mut self.slots[i];
            slot.current = Some(found.id.clone());
            slot.status.restart_count = found.attempt;
            slot.status.container_id = Some(found.id.clone());
            slot.started_at = found.created_at;
            match found.state {
                FoundState::Running { pid } => {
                    slot.running = true;
                    slot.status.pid = Some(pid);
                    slot.status.state = ContainerState::Running {
                        started_at: found.created_at.unwrap_or_else(SystemTime::now),
                    };
                    info!(pod = %self.pod.key(), container = %slot.spec.name, id = %found.id, "adopted running container");
                    self.start_probes(i, &found.id);
                    self.watch(i, found.id);
                }
                FoundState::Exited { code, at, reaped } => {
                    slot.exit_code = Some(code);
                    slot.status.state = terminated(code, String::new(), slot.started_at, at);
                    if !reaped {
                        self.record_exit(&found.id, code, at).await;
                    }
                }
            }
        }
        if decided.init_done {
            for s in self
                .slots
                .iter_mut()
                .filter(|s| s.init && s.exit_code.is_none() && !s.running)
            {
                s.exit_code = Some(0);
                s.status.state = terminated(0, String::new(), None, SystemTime::now());
            }
        }
        self.setup.adopted = true;
        Ok(())
    }

    /// Follows a task until it exits, surviving containerd restarts: a
    /// wait cut by containerd going away (whatever the error says) is
    /// waited again; only a task containerd no longer knows ends the watch
    /// without an exit status.
    fn watch(&self, slot: usize, id: String) {
        let rt = Arc::clone(&self.env.rt);
        let tx = self.tx.clone();
        tokio::spawn(async move {
            let mut retry = Retry::runtime();
            let result = loop {
                match rt.wait(&id).await {
                    Err(RuntimeError::NotFound(m)) => break Err(RuntimeError::NotFound(m)),
                    Err(e) => {
                        let wait = retry.failed();
                        tracing::debug!(id, "waiting for the task: {e}; again in {wait:?}");
                        tokio::time::sleep(wait).await;
                    }
                    r => break r,
                }
            };
            let _ = tx.send(Msg::Exited { slot, id, result });
        });
    }

    /// Starts the given containers concurrently (their creation is
    /// independent; the planner never asks for two init containers at
    /// once), each created first unless a `Create` did.
    async fn start_all(&mut self, which: &[usize]) {
        let Some(ctx) = self.setup.sandbox.clone() else {
            return;
        };
        let now = now();
        let requests: Vec<(usize, u32, Option<Created>)> = which
            .iter()
            .map(|&i| {
                let created = self.slots[i].created.take();
                let attempt = created
                    .as_ref()
                    .map_or(self.slots[i].next_attempt, |c| c.attempt);
                (i, attempt, created)
            })
            .collect();
        let attempts: Vec<(usize, u32)> = requests.iter().map(|(i, a, _)| (*i, *a)).collect();
        let results = {
            let this = &*self;
            futures::future::join_all(
                requests
                    .into_iter()
                    .map(|(i, attempt, created)| this.launch(i, attempt, &ctx, created)),
            )
            .await
        };
        for ((i, attempt), (result, image_events)) in attempts.into_iter().zip(results) {
            let name = self.slots[i].spec.name.clone();
            for e in image_events {
                self.container_event(&name, e.kind, e.reason, e.message);
            }
            match result {
                Ok((id, pid)) => self.started(i, attempt, id, pid).await,
                Err(e) => self.start_failed(i, attempt, &e, now),
            }
        }
    }

    /// A start (or creation) that failed counts as a restart and backs off.
    fn start_failed(&mut self, i: usize, attempt: u32, e: &PodError, now: Instant) {
        self.env.metrics.sync_errors.inc();
        let slot = &mut self.slots[i];
        slot.backoff.record_start(now);
        slot.not_before = Some(slot.backoff.restart_at(now));
        // A failed restart still counts as one, and the run before it (its
        // exit code, OOMKilled) stays visible.
        if let ContainerState::Terminated { .. } = slot.status.state {
            slot.status.last_state = Some(slot.status.state.clone());
        }
        slot.status.restart_count = attempt;
        slot.status.state = waiting(e.reason(), e.to_string());
        slot.pull_failed = matches!(e, PodError::ImagePull(_));
        let name = slot.spec.name.clone();
        self.container_event(
            &name,
            event::WARNING,
            reason::FAILED,
            format!("container {name}: {}: {e}", e.reason()),
        );
    }

    /// Attempt `attempt` of slot `i`, created (unless `created` is) and
    /// started; returns the started container's ID and PID. Touches no
    /// worker state.
    async fn launch(
        &self,
        i: usize,
        attempt: u32,
        ctx: &oci::PodContext,
        created: Option<Created>,
    ) -> (Result<(String, u32), PodError>, Vec<ImageEvent>) {
        let (created, events) = match created {
            Some(c) => (Ok(c), vec![]),
            None => self.create(i, attempt, ctx).await,
        };
        let result = match created {
            Ok(c) => self.start(c).await,
            Err(e) => Err(e),
        };
        (result, events)
    }

    /// Image, spec, container and task (`runc create`) for attempt
    /// `attempt` of slot `i`, not started. Touches no worker state.
    async fn create(
        &self,
        i: usize,
        attempt: u32,
        ctx: &oci::PodContext,
    ) -> (Result<Created, PodError>, Vec<ImageEvent>) {
        let mut made = Made::default();
        let mut events = Vec::new();
        match self
            .try_create(i, attempt, ctx, &mut made, &mut events)
            .await
        {
            Ok(id) => (Ok(Created { id, attempt, made }), events),
            Err(e) => {
                // Nothing of a failed attempt stays: its files and its
                // subPath binds (no container of this slot runs, so none
                // is in use).
                let volumes = Arc::clone(&self.env.volumes);
                tokio::task::spawn_blocking(move || made.undo(volumes.as_ref()));
                (Err(e), events)
            }
        }
    }

    /// Starts a created container; one that fails to start is removed.
    async fn start(&self, c: Created) -> Result<(String, u32), PodError> {
        let rt = &self.env.rt;
        let t = Instant::now();
        match rt.start(&c.id).await {
            Ok(pid) => {
                let took = t.elapsed();
                self.env
                    .metrics
                    .observe_containerd("start", took.as_secs_f64());
                debug!(pod = %self.pod.key(), id = c.id, ?took, "container started");
                Ok((c.id, pid))
            }
            Err(e) => {
                let _ = rt.remove(&c.id).await;
                let volumes = Arc::clone(&self.env.volumes);
                tokio::task::spawn_blocking(move || c.made.undo(volumes.as_ref()));
                Err(PodError::RunContainer(e.to_string()))
            }
        }
    }

    async fn try_create(
        &self,
        i: usize,
        attempt: u32,
        ctx: &oci::PodContext,
        made: &mut Made,
        image_events: &mut Vec<ImageEvent>,
    ) -> Result<String, PodError> {
        let rt = &self.env.rt;
        let c = &self.slots[i].spec;
        let image_name = c.image.clone().unwrap_or_default();
        let policy = images::policy_of(&image_name, c.image_pull_policy.as_deref());
        let image = images::ensure(rt.as_ref(), &image_name, policy, image_events).await?;
        let id = container_id(&self.pod.uid, &c.name, attempt);
        let log_path = logs::container_log_path(
            &self.env.pod_logs_dir,
            &self.pod.namespace,
            &self.pod.name,
            &self.pod.uid,
            &c.name,
            attempt,
        );
        let term_dir = self.container_dir(&c.name);
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
            let Some(host) = self.setup.volumes.get(&m.name) else {
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
                    self.env
                        .volumes
                        .bind_subpath(host, Path::new(sub), &target)
                        .map_err(|e| {
                            PodError::CreateContainerConfig(format!(
                                "failed to prepare subPath {sub:?} of volume {:?}: {e}",
                                m.name
                            ))
                        })?
                }
            };
            mounts.push(oci::VolumeMount {
                destination: m.mount_path.clone(),
                source,
                read_only: m.read_only == Some(true)
                    || volume.is_some_and(|v| v.mounted_read_only()),
            });
        }
        let cgroups = &self.env.cgroups;
        let spec = oci::build(&oci::ContainerInput {
            mounts,
            env: self.pod.resolved.env.get(&c.name),
            pod: &self.pod,
            container: c,
            image: &image.config,
            ctx,
            cgroups_path: cgroups.container_path(self.qos, &self.pod.uid, &id),
            limits: cgroup::qos::container_limits(c, cgroups.options()),
            cgroup_v2: cgroups.v2(),
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
        let took = t.elapsed();
        self.env
            .metrics
            .observe_containerd("create", took.as_secs_f64());
        debug!(pod = %self.pod.key(), container = %c.name, id, ?took, "container created");
        Ok(id)
    }

    /// Where a container's termination messages are kept.
    fn container_dir(&self, name: &str) -> PathBuf {
        self.env
            .pod_dir(&self.pod.uid)
            .join("containers")
            .join(name)
    }

    /// Records a started container, follows it, and drops the previous
    /// attempt's container (one dead container is kept, as the kubelet does).
    async fn started(&mut self, i: usize, attempt: u32, id: String, pid: u32) {
        let now = now();
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
        slot.unhealthy = None;
        slot.stopping = None;
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
        self.container_event(
            &name,
            event::NORMAL,
            reason::STARTED,
            format!("Started container {name}"),
        );
        self.start_probes(i, &id);
        self.watch(i, id);
        if let Some(prev) = previous
            && let Err(e) = self.env.rt.remove(&prev).await
        {
            warn!(pod = %self.pod.key(), id = prev, "removing previous container: {e}");
        }
        // The files of the attempts before the previous one go as their
        // containers went.
        if attempt >= 2 {
            let log = logs::container_log_path(
                &self.env.pod_logs_dir,
                &self.pod.namespace,
                &self.pod.name,
                &self.pod.uid,
                &name,
                attempt,
            );
            let dirs = [
                log.parent().map(Path::to_path_buf),
                Some(self.container_dir(&name)),
            ];
            let key = self.pod.key();
            tokio::task::spawn_blocking(move || {
                for dir in dirs.into_iter().flatten() {
                    if let Err(e) = logs::remove_attempts_before(&dir, attempt - 1) {
                        warn!(pod = %key, dir = %dir.display(), "removing files of old attempts: {e}");
                    }
                }
            });
        }
    }

    /// Keeps a container's exit in its labels and deletes its task, so that
    /// an agent restart still knows how it ended.
    async fn record_exit(&self, id: &str, code: i32, at: SystemTime) {
        let rt = &self.env.rt;
        if let Err(e) = rt.set_labels(id, adopt::exit_labels(code, at)).await {
            warn!(pod = %self.pod.key(), id, "recording exit: {e}");
        }
        if let Err(e) = rt.delete_task(id).await {
            warn!(pod = %self.pod.key(), id, "deleting exited task: {e}");
        }
    }

    pub(super) async fn exited(&mut self, i: usize, id: &str, result: Result<Exit, RuntimeError>) {
        if self.slots[i].current.as_deref() != Some(id) || !self.slots[i].running {
            return;
        }
        self.stop_probes(i);
        let (code, at) = match result {
            Ok(e) => (e.code.cast_signed(), e.at),
            Err(e) => {
                warn!(pod = %self.pod.key(), id, "lost track of container: {e}");
                (137, SystemTime::now())
            }
        };
        if self.deleting.is_some() {
            // The teardown removes it: no need to keep its exit.
            let slot = &mut self.slots[i];
            slot.running = false;
            slot.exit_code = Some(code);
            slot.status.state = terminated(code, String::new(), slot.started_at, at);
            return;
        }
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
            .container_dir(&self.slots[i].spec.name)
            .join(format!("{attempt}.termination-log"));
        let message = tokio::task::spawn_blocking(move || {
            crate::hostfs::read_tail(&path, MAX_TERMINATION_MESSAGE)
        })
        .await
        .ok()
        .and_then(Result::ok)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
        let now = now();
        let policy = self.policy;
        let slot = &mut self.slots[i];
        slot.running = false;
        slot.stopping = None;
        slot.unhealthy = None;
        slot.exit_code = Some(code);
        let mut state = terminated(code, message, slot.started_at, at);
        if oom_killed && let ContainerState::Terminated { reason, .. } = &mut state {
            // Also when PID 1 survived the kill of a child and exited later.
            *reason = reason::OOM_KILLED.to_string();
        }
        let name = slot.spec.name.clone();
        // Init containers are only ever re-run after a failure.
        let restarts = if slot.init {
            code != 0 && policy != crate::pod::RestartPolicy::Never
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
            self.container_event(
                &name,
                event::WARNING,
                reason::BACK_OFF,
                format!("Back-off restarting failed container {name}"),
            );
        } else {
            slot.status.state = state;
        }
        info!(pod = %self.pod.key(), container = %name, exit_code = code, "container exited");
    }

    /// Records a stop: SIGTERM now (returned, to send), SIGKILL when the
    /// planner says the grace period is over.
    fn stop(&mut self, i: usize, grace: Duration) -> Option<(String, i32)> {
        let kill_at = now() + grace;
        self.slots[i].stopping = Some(StopView {
            kill_at,
            killed: false,
        });
        let name = self.slots[i].spec.name.clone();
        let message = self.slots[i]
            .probes
            .kill_message
            .take()
            .unwrap_or_else(|| format!("Stopping container {name}"));
        self.container_event(&name, event::NORMAL, reason::KILLING, message);
        Some((self.slots[i].current.clone()?, libc::SIGTERM))
    }

    fn kill(&mut self, i: usize) -> Option<(String, i32)> {
        if let Some(st) = self.slots[i].stopping.as_mut() {
            st.killed = true;
        }
        Some((self.slots[i].current.clone()?, libc::SIGKILL))
    }

    /// Removes the pod's containers, sandbox, cgroups and logs; the last
    /// thing the worker does.
    pub(super) async fn teardown(&mut self) {
        // Its containers have stopped: the pod leaves the status store now
        // (as the kubelet deletes a terminated pod's mirror); what is left
        // to remove goes next, and a successor of the same name waits for it.
        self.forget_probes();
        self.forget();
        super::teardown::cleanup(
            &self.env,
            &self.pod.uid,
            Some((&self.pod.namespace, &self.pod.name)),
        )
        .await;
        info!(pod = %self.pod.key(), "pod removed");
    }
}

/// A container created (its task made) and not started yet.
pub(super) struct Created {
    pub id: String,
    pub attempt: u32,
    /// Its files, removed if it never starts.
    made: Made,
}

/// What one launch attempt put on the host.
#[derive(Default)]
struct Made {
    files: Vec<PathBuf>,
    binds: Vec<PathBuf>,
}

impl Made {
    /// Removes it all; blocking.
    fn undo(self, volumes: &dyn super::host::Volumes) {
        for b in &self.binds {
            if let Err(e) = volumes.unbind(b) {
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

pub(super) fn terminated(
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
