//! Keeps one worker per desired pod: starts workers for new pods, stops the
//! workers of removed ones, and makes a replacement wait for its
//! predecessor (an edited manifest) to be gone.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::future::FutureExt;
use tokio::sync::{mpsc, watch};
use tracing::{info, warn};

use super::{PodHandle, Terminated, WorkerEnv, cleanup, spawn, stop_containers};
use crate::node::{self, Resources};
use crate::pod::PodStatus;
use crate::runtime::labels;
use crate::source::Desired;

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
    mut reclaims: mpsc::UnboundedReceiver<PathBuf>,
) {
    let mut workers: HashMap<String, Running> = HashMap::new();
    // Pods being torn down, by (namespace, name), and what they still hold.
    let mut terminating: HashMap<(String, String), Terminated> = HashMap::new();
    let mut releasing: HashMap<String, Resources> = HashMap::new();
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<String>();
    let mut rejected: HashMap<String, String> = HashMap::new();
    let mut to_reclaim: Vec<PathBuf> = vec![];
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
            reap_orphans(&env, &wanted, &mut terminating).await;
        }
        terminating.retain(|_, t| t.peek().is_none());
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
            let previous = terminating.remove(&key);
            let chained = async move {
                if let Some(p) = previous {
                    p.await;
                }
                done.await;
            }
            .boxed()
            .shared();
            terminating.insert(key, chained.clone());
            // Its resources count until its containers are gone.
            releasing.insert(uid.clone(), requests);
            let done_tx = done_tx.clone();
            tokio::spawn(async move {
                chained.await;
                let _ = done_tx.send(uid);
            });
        }
        for path in to_reclaim.drain(..) {
            // Emptied once the pods being stopped (those that used it) are gone.
            let pending: Vec<Terminated> = terminating.values().cloned().collect();
            tokio::spawn(async move {
                futures::future::join_all(pending).await;
                info!(path = %path.display(), "reclaiming volume (policy Delete): removing its contents");
                let p = path.clone();
                match tokio::task::spawn_blocking(move || crate::volume::mount::reclaim(&p)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => warn!(path = %path.display(), "reclaiming volume: {e}"),
                    Err(e) => warn!(path = %path.display(), "reclaiming volume: {e}"),
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
            env.store
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&uid);
        }
        let mut used: Resources = workers.values().map(|w| w.requests).sum::<Resources>()
            + releasing.values().copied().sum();
        for pod in &current.pods {
            if workers.contains_key(&pod.uid) {
                continue;
            }
            let (cpu_milli, memory) = crate::cgroup::qos::pod_requests(pod.spec());
            let requests = Resources { cpu_milli, memory };
            if let Err((reason, message)) = node::admit(requests, used, allocatable) {
                if rejected.get(&pod.uid) != Some(&message) {
                    warn!(pod = %pod.key(), reason, "{message}");
                    let mut status = PodStatus::new();
                    status.reason = Some(reason);
                    status.message = Some(message.clone());
                    status.qos_class = Some(crate::cgroup::qos::qos_class(pod.spec()));
                    let entry = super::PodEntry {
                        pod: pod.clone(),
                        status,
                    };
                    env.store
                        .write()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(pod.uid.clone(), entry);
                    rejected.insert(pod.uid.clone(), message);
                }
                continue;
            }
            rejected.remove(&pod.uid);
            used = used + requests;
            let key = (pod.namespace.clone(), pod.name.clone());
            info!(pod = %pod.key(), uid = %pod.uid, file = %pod.source.display(), "starting pod");
            let after = terminating.get(&key).cloned();
            let handle = spawn(pod.clone(), Arc::clone(&env), after);
            workers.insert(
                pod.uid.clone(),
                Running {
                    handle,
                    key,
                    requests,
                },
            );
        }
        tokio::select! {
            changed = desired.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            Some(uid) = done_rx.recv() => {
                releasing.remove(&uid);
            }
            // The source publishes the new pods before it sends the volume
            // to reclaim: handled on the next turn, after those pods' old
            // versions are being stopped.
            Some(path) = reclaims.recv() => to_reclaim.push(path),
        }
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
    let records = loop {
        match env.rt.list().await {
            Ok(r) => break r,
            Err(e) if e.is_transient() => {
                warn!("listing containers: {e}; retrying");
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
            Err(e) => {
                warn!("listing containers: {e}; not reaping orphans");
                return;
            }
        }
    };
    struct Orphan {
        running: Vec<String>,
        grace: u64,
        key: (String, String),
    }
    let mut orphans: HashMap<String, Orphan> = HashMap::new();
    for r in records {
        let Some(uid) = r.labels.get(labels::POD_UID) else {
            continue;
        };
        if wanted.contains(uid.as_str()) {
            continue;
        }
        let key = (
            r.labels
                .get(labels::POD_NAMESPACE)
                .cloned()
                .unwrap_or_default(),
            r.labels.get(labels::POD_NAME).cloned().unwrap_or_default(),
        );
        let grace = r
            .labels
            .get(labels::GRACE_PERIOD)
            .and_then(|g| g.parse().ok())
            .unwrap_or(30);
        let e = orphans.entry(uid.clone()).or_insert(Orphan {
            running: vec![],
            grace,
            key,
        });
        if matches!(r.task, crate::runtime::TaskState::Running { .. }) {
            e.running.push(r.id);
        }
    }
    // Sandboxes whose containers are already gone.
    for entry in std::fs::read_dir(env.root_dir.join("pods"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let uid = entry.file_name().to_string_lossy().into_owned();
        if !wanted.contains(uid.as_str()) && !orphans.contains_key(&uid) {
            orphans.insert(
                uid,
                Orphan {
                    running: vec![],
                    grace: 0,
                    key: Default::default(),
                },
            );
        }
    }
    for (
        uid,
        Orphan {
            running,
            grace,
            key,
        },
    ) in orphans
    {
        info!(uid, pod = %format!("{}/{}", key.0, key.1), "stopping pod whose manifest is gone");
        let env = Arc::clone(env);
        let names = key.clone();
        let task = tokio::spawn(async move {
            // No worker follows these containers: wait on containerd directly.
            let (tx, mut rx) = mpsc::unbounded_channel();
            for id in &running {
                let rt = Arc::clone(&env.rt);
                let tx = tx.clone();
                let id = id.clone();
                tokio::spawn(async move {
                    let result = rt.wait(&id).await;
                    let _ = tx.send(super::Msg::Exited {
                        slot: 0,
                        id,
                        result,
                    });
                });
            }
            drop(tx);
            stop_containers(&env, &running, Duration::from_secs(grace), &mut rx).await;
            let named = (!names.1.is_empty()).then_some((names.0.as_str(), names.1.as_str()));
            cleanup(&env, &uid, named).await;
        });
        let done: Terminated = task.map(|_| ()).boxed().shared();
        if !key.1.is_empty() {
            terminating.insert(key, done);
        }
    }
}
