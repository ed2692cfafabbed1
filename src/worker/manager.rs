//! Keeps one worker per desired pod: starts workers for new pods, stops the
//! workers of removed ones, and makes a replacement wait for its
//! predecessor (an edited manifest) to be gone.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::future::FutureExt;
use tokio::sync::{mpsc, watch};
use tracing::{info, warn};

use super::{PodHandle, Terminated, WorkerEnv, cleanup, spawn, stop_containers};
use crate::runtime::labels;
use crate::source::Desired;

/// Runs until the source goes away.
pub async fn run(mut desired: watch::Receiver<Arc<Desired>>, env: Arc<WorkerEnv>) {
    let mut workers: HashMap<String, (PodHandle, (String, String))> = HashMap::new();
    // Pods being torn down, by (namespace, name).
    let mut terminating: HashMap<(String, String), Terminated> = HashMap::new();
    let mut first = true;
    // The channel's initial value is a placeholder: wait for the first scan.
    if desired.changed().await.is_err() {
        return;
    }
    loop {
        let current = desired.borrow_and_update().clone();
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
            let (handle, key) = workers.remove(&uid).expect("listed above");
            info!(pod = %format!("{}/{}", key.0, key.1), uid, "manifest removed or changed: stopping pod");
            let done = handle.stop();
            let previous = terminating.remove(&key);
            let chained = async move {
                if let Some(p) = previous {
                    p.await;
                }
                done.await;
            };
            terminating.insert(key, chained.boxed().shared());
        }
        for pod in &current.pods {
            if workers.contains_key(&pod.uid) {
                continue;
            }
            let key = (pod.namespace.clone(), pod.name.clone());
            info!(pod = %pod.key(), uid = %pod.uid, file = %pod.source.display(), "starting pod");
            let after = terminating.get(&key).cloned();
            workers.insert(
                pod.uid.clone(),
                (spawn(pod.clone(), Arc::clone(&env), after), key),
            );
        }
        if desired.changed().await.is_err() {
            return;
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
