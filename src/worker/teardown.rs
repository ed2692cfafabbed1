//! Removing a pod from the host: its containers, sandbox, cgroups and logs.
//! Used by a worker at its end, and by the pod manager for pods that have
//! no worker (manifest removed while the agent was down, worker panicked).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use tracing::{info, warn};

use super::WorkerEnv;
use crate::logs;
use crate::pod::error::reason;
use crate::pod::{Retry, plan::KILL_WAIT};
use crate::runtime::RuntimeError;

/// SIGTERM to each task, SIGKILL to whatever still runs after `grace`,
/// waiting on containerd for the exits.
pub async fn stop_containers(env: &WorkerEnv, ids: &[String], grace: Duration) {
    let mut exits: FuturesUnordered<_> = ids
        .iter()
        .map(|id| {
            let rt = Arc::clone(&env.rt);
            let id = id.clone();
            async move {
                let _ = rt.wait(&id).await;
                id
            }
        })
        .collect();
    let mut alive: HashSet<String> = ids.iter().cloned().collect();
    for id in ids {
        if let Err(e) = env.rt.kill(id, libc::SIGTERM, false).await {
            warn!(id, "SIGTERM: {e}");
        }
    }
    for (signal, wait) in [(None, grace), (Some(libc::SIGKILL), KILL_WAIT)] {
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
                Some(id) = exits.next() => { alive.remove(&id); }
                _ = tokio::time::sleep_until(deadline) => break,
            }
        }
        if alive.is_empty() {
            return;
        }
    }
}

/// Removes every container of pod `uid`, its sandbox, cgroups and (given
/// namespace and name) its logs. Retries while containerd is unavailable;
/// what the host keeps (a busy mount) is retried in the background.
pub async fn cleanup(env: &Arc<WorkerEnv>, uid: &str, names: Option<(&str, &str)>) {
    let started = std::time::Instant::now();
    let mut retry = Retry::runtime();
    loop {
        let result: Result<(), RuntimeError> = async {
            // Together: each removal waits for its shim to go.
            let records = env.rt.list_pod(uid).await?;
            futures::future::try_join_all(records.iter().map(|r| env.rt.remove(&r.id))).await?;
            Ok(())
        }
        .await;
        match result {
            Ok(()) => break,
            Err(e) => {
                let wait = retry.failed();
                warn!(uid, "removing containers: {e}; retrying in {wait:?}");
                tokio::time::sleep(wait).await;
            }
        }
    }
    let containers_gone = started.elapsed();
    let errors = remove_host_state(env, uid, names).await;
    tracing::debug!(
        uid,
        ?containers_gone,
        host_state_gone = ?started.elapsed() - containers_gone,
        "pod torn down"
    );
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
        let mut retry = Retry::teardown();
        loop {
            tokio::time::sleep(retry.failed()).await;
            let named = names.as_ref().map(|(ns, n)| (ns.as_str(), n.as_str()));
            let errors = remove_host_state(&env, &uid, named).await;
            if errors.is_empty() {
                info!(uid, "pod torn down after retries");
                return;
            }
            for e in &errors {
                warn!(
                    uid,
                    reason = reason::FAILED_KILL_POD,
                    "tearing the pod down: {e}; retrying"
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
    let sandboxes = Arc::clone(&env.sandboxes);
    match tokio::task::spawn_blocking(move || sandboxes.teardown(&dir)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => errors.push(format!("removing sandbox: {e}")),
        Err(e) => errors.push(format!("removing sandbox: {e}")),
    }
    let cgroups = Arc::clone(&env.cgroups);
    let uid_owned = uid.to_string();
    match tokio::task::spawn_blocking(move || cgroups.remove_pod(&uid_owned)).await {
        Ok(problems) => errors.extend(problems.into_iter().map(|p| format!("removing cgroup {p}"))),
        Err(e) => errors.push(format!("removing cgroups: {e}")),
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
