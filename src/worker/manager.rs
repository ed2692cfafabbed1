//! Keeps one worker per desired pod: starts workers for new pods, stops the
//! workers of removed ones, and makes a replacement wait for its
//! predecessor (an edited manifest) to be gone.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::future::FutureExt;
use tokio::sync::{mpsc, watch};
use tracing::{error, info, warn};

use super::teardown::{cleanup, stop_containers};
use super::{PodHandle, Terminated, WorkerEnv, spawn};
use crate::node::{self, Resources};
use crate::pod::PodStatus;
use crate::pod::error::reason;
use crate::runtime::labels;
use crate::source::{Desired, Pings, Reclaim};

struct Running {
    handle: PodHandle,
    key: (String, String),
    requests: Resources,
}

/// Runs until the source goes away. Pods are admitted in file order while
/// their requests fit in `allocatable`; the others wait (reason `OutOfcpu`
/// or `OutOfmemory`) until pods are removed.
pub async fn run(
    mut desired: watch::Receiver<Arc<Desired>>,
    env: Arc<WorkerEnv>,
    allocatable: Resources,
    mut reclaims: mpsc::UnboundedReceiver<Reclaim>,
    mut pings: Pings,
) {
    let mut workers: HashMap<String, Running> = HashMap::new();
    // Pods being torn down, by (namespace, name), and what they still hold.
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<String>();
    let mut stopping = Stopping {
        terminating: HashMap::new(),
        releasing: HashMap::new(),
        done_tx,
    };
    let (crash_tx, mut crash_rx) = mpsc::unbounded_channel::<String>();
    let mut rejected: HashMap<String, String> = HashMap::new();
    let mut to_reclaim: Vec<Reclaim> = vec![];
    let mut first = true;
    // The channel's initial value is a placeholder: wait for the first scan.
    if desired.changed().await.is_err() {
        return;
    }
    loop {
        let current = desired.borrow_and_update().clone();
        env.metrics
            .manifest_errors
            .set(i64::try_from(current.errors.len()).unwrap_or(i64::MAX));
        let wanted: HashSet<&str> = current.pods.iter().map(|p| p.uid.as_str()).collect();
        if first {
            first = false;
            reap_orphans(&env, &wanted, &mut stopping.terminating).await;
        }
        stopping.terminating.retain(|_, t| t.peek().is_none());
        let gone: Vec<String> = workers
            .keys()
            .filter(|u| !wanted.contains(u.as_str()))
            .cloned()
            .collect();
        for uid in gone {
            let Running {
                handle,
                key,
                requests,
            } = workers.remove(&uid).expect("listed above");
            info!(pod = %format!("{}/{}", key.0, key.1), uid, "manifest removed or changed: stopping pod");
            let done = handle.stop();
            stopping.add(uid, key, requests, done);
        }
        for Reclaim { volume, path } in to_reclaim.drain(..) {
            // Emptied once the pods being stopped (those that used it) are gone.
            let pending: Vec<Terminated> = stopping.terminating.values().cloned().collect();
            let volumes = Arc::clone(&env.volumes);
            let protected = env.protected_dirs.clone();
            tokio::spawn(async move {
                futures::future::join_all(pending).await;
                info!(volume, path = %path.display(), "reclaiming volume (policy Delete): removing its contents");
                let p = path.clone();
                let done =
                    tokio::task::spawn_blocking(move || volumes.reclaim(&p, &protected)).await;
                match done {
                    Ok(Ok(())) => info!(volume, path = %path.display(), "volume reclaimed"),
                    Ok(Err(e)) => warn!(
                        volume,
                        reason = reason::VOLUME_FAILED_DELETE,
                        "reclaiming volume: {e}"
                    ),
                    Err(e) => warn!(
                        volume,
                        reason = reason::VOLUME_FAILED_DELETE,
                        "reclaiming volume: {e}"
                    ),
                }
            });
        }
        for uid in rejected
            .keys()
            .filter(|u| !wanted.contains(u.as_str()))
            .cloned()
            .collect::<Vec<_>>()
        {
            rejected.remove(&uid);
            env.store.remove(&uid);
        }
        let mut used: Resources = workers.values().map(|w| w.requests).sum::<Resources>()
            + stopping.releasing.values().copied().sum();
        for pod in &current.pods {
            if workers.contains_key(&pod.uid) {
                continue;
            }
            let (cpu_milli, memory) = crate::cgroup::qos::pod_requests(pod.spec());
            let requests = Resources {
                cpu_milli,
                memory,
                pods: 1,
            };
            if let Err(e) = node::admit(requests, used, allocatable) {
                let message = e.to_string();
                if rejected.get(&pod.uid) != Some(&message) {
                    warn!(pod = %pod.key(), reason = e.reason(), "{message}");
                    let mut status = PodStatus::new();
                    status.reason = Some(e.reason().to_string());
                    status.message = Some(message.clone());
                    status.qos_class = Some(crate::cgroup::qos::qos_class(pod.spec()));
                    env.store.publish(crate::pod::PodEntry {
                        pod: pod.clone(),
                        status,
                    });
                    rejected.insert(pod.uid.clone(), message);
                }
                continue;
            }
            rejected.remove(&pod.uid);
            used = used + requests;
            let key = (pod.namespace.clone(), pod.name.clone());
            info!(pod = %pod.key(), uid = %pod.uid, file = %pod.source.display(), "starting pod");
            let after = stopping.terminating.get(&key).cloned();
            let handle = spawn(pod.clone(), Arc::clone(&env), after, crash_tx.clone());
            workers.insert(
                pod.uid.clone(),
                Running {
                    handle,
                    key,
                    requests,
                },
            );
        }
        loop {
            tokio::select! {
                changed = desired.changed() => {
                    if changed.is_err() {
                        return;
                    }
                }
                Some(uid) = done_rx.recv() => {
                    stopping.releasing.remove(&uid);
                    env.events.forget(&uid);
                }
                // The source publishes the new pods before it sends the volume
                // to reclaim: handled on the next turn, after those pods' old
                // versions are being stopped.
                Some(r) = reclaims.recv() => to_reclaim.push(r),
                Some(reply) = pings.recv() => {
                    let _ = reply.send(());
                    continue;
                }
                // A worker that panicked leaves its pod to nobody: stop what
                // runs of it and clean up; the next turn starts a new worker.
                Some(uid) = crash_rx.recv() => {
                    let Some(Running { key, requests, .. }) = workers.remove(&uid) else {
                        continue;
                    };
                    error!(pod = %format!("{}/{}", key.0, key.1), uid, "pod worker panicked: stopping the pod to start it afresh");
                    env.metrics.sync_errors.inc();
                    // Without a list, the teardown still removes every
                    // container of the pod, only without a grace period.
                    let records = env.rt.list().await.unwrap_or_else(|e| {
                        warn!(uid, "listing containers: {e}");
                        vec![]
                    });
                    let done = stop_pod(&env, uid.clone(), key.clone(), &records);
                    stopping.add(uid, key, requests, done);
                }
            }
            break;
        }
    }
}

/// Pods being torn down: by (namespace, name), what a successor of the same
/// name waits for; by UID, the requests they hold until their containers
/// are gone.
struct Stopping {
    terminating: HashMap<(String, String), Terminated>,
    releasing: HashMap<String, Resources>,
    /// Told each UID whose teardown is over.
    done_tx: mpsc::UnboundedSender<String>,
}

impl Stopping {
    fn add(&mut self, uid: String, key: (String, String), requests: Resources, done: Terminated) {
        let previous = self.terminating.remove(&key);
        let chained = async move {
            if let Some(p) = previous {
                p.await;
            }
            done.await;
        }
        .boxed()
        .shared();
        self.terminating.insert(key, chained.clone());
        self.releasing.insert(uid.clone(), requests);
        let done_tx = self.done_tx.clone();
        tokio::spawn(async move {
            chained.await;
            let _ = done_tx.send(uid);
        });
    }
}

/// Stops the containers and sandboxes of pods that are no longer wanted,
/// found in containerd and under `<root>/pods`: manifests removed or edited
/// while the agent was down.
async fn reap_orphans(
    env: &Arc<WorkerEnv>,
    wanted: &HashSet<&str>,
    terminating: &mut HashMap<(String, String), Terminated>,
) {
    let mut retry = crate::pod::Retry::runtime();
    let records = loop {
        match env.rt.list().await {
            Ok(r) => break r,
            Err(e) if e.is_transient() => {
                let wait = retry.failed();
                warn!("listing containers: {e}; retrying in {wait:?}");
                tokio::time::sleep(wait).await;
            }
            Err(e) => {
                warn!("listing containers: {e}; not reaping orphans");
                return;
            }
        }
    };
    let mut orphans: HashMap<String, (String, String)> = HashMap::new();
    for r in &records {
        let Some(uid) = r.labels.get(labels::POD_UID) else {
            continue;
        };
        if !wanted.contains(uid.as_str()) {
            orphans.entry(uid.clone()).or_insert_with(|| names(r));
        }
    }
    // Sandboxes whose containers are already gone, and cgroups made before
    // anything else of their pod.
    let dirs = std::fs::read_dir(env.root_dir.join("pods"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned());
    let cgroups = Arc::clone(&env.cgroups);
    let with_cgroups = tokio::task::spawn_blocking(move || cgroups.pod_uids())
        .await
        .unwrap_or_default();
    for uid in dirs.chain(with_cgroups) {
        if !wanted.contains(uid.as_str()) {
            orphans.entry(uid).or_default();
        }
    }
    // Logs, named `<namespace>_<name>_<uid>` (neither a namespace nor a pod
    // name holds `_`): they also name pods whose containers never started.
    for entry in std::fs::read_dir(&env.pod_logs_dir)
        .into_iter()
        .flatten()
        .flatten()
    {
        let dir = entry.file_name().to_string_lossy().into_owned();
        let mut parts = dir.splitn(3, '_');
        if let (Some(ns), Some(name), Some(uid)) = (parts.next(), parts.next(), parts.next())
            && !wanted.contains(uid)
        {
            let key = orphans.entry(uid.to_string()).or_default();
            if key.1.is_empty() {
                *key = (ns.to_string(), name.to_string());
            }
        }
    }
    // Addresses held for pods that are neither wanted nor torn down below
    // (their sandbox teardown detaches them): an ADD cut short by a crash.
    let known: HashSet<String> = wanted
        .iter()
        .map(|u| u.to_string())
        .chain(orphans.keys().cloned())
        .collect();
    let sandboxes = Arc::clone(&env.sandboxes);
    match tokio::task::spawn_blocking(move || sandboxes.release_orphans(&known)).await {
        Ok(errors) => {
            for e in errors {
                warn!("releasing the network of a pod that is gone: {e}");
            }
        }
        Err(e) => warn!("releasing the networks of pods that are gone: {e}"),
    }
    for (uid, key) in orphans {
        info!(uid, pod = %format!("{}/{}", key.0, key.1), "stopping pod whose manifest is gone");
        let done = stop_pod(env, uid, key.clone(), &records);
        if !key.1.is_empty() {
            terminating.insert(key, done);
        }
    }
}

/// (namespace, name) of the pod a container belongs to, from its labels.
fn names(r: &crate::runtime::ContainerRecord) -> (String, String) {
    let label = |k: &str| r.labels.get(k).cloned().unwrap_or_default();
    (label(labels::POD_NAMESPACE), label(labels::POD_NAME))
}

/// Stops the running containers of pod `uid` found in `records` (SIGTERM,
/// SIGKILL after the grace period their labels carry) and removes the pod,
/// with no worker: the pod's manifest is gone, or its worker died.
fn stop_pod(
    env: &Arc<WorkerEnv>,
    uid: String,
    key: (String, String),
    records: &[crate::runtime::ContainerRecord],
) -> Terminated {
    let mine: Vec<&crate::runtime::ContainerRecord> = records
        .iter()
        .filter(|r| r.labels.get(labels::POD_UID) == Some(&uid))
        .collect();
    let running: Vec<String> = mine
        .iter()
        .filter(|r| matches!(r.task, crate::runtime::TaskState::Running { .. }))
        .map(|r| r.id.clone())
        .collect();
    let grace = mine
        .iter()
        .filter_map(|r| r.labels.get(labels::GRACE_PERIOD)?.parse().ok())
        .max()
        .unwrap_or(30);
    let env = Arc::clone(env);
    let task = tokio::spawn(async move {
        stop_containers(&env, &running, Duration::from_secs(grace)).await;
        let named = (!key.1.is_empty()).then_some((key.0.as_str(), key.1.as_str()));
        cleanup(&env, &uid, named).await;
    });
    task.map(|_| ()).boxed().shared()
}
