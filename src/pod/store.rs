//! The status of every pod, by UID: written by the pod's worker (and, for a
//! pod that was not admitted, by the pod manager) through [`Store::publish`]
//! and [`Store::remove`]; the HTTP endpoints and stats read copies.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock, RwLockReadGuard};

use tokio::sync::watch;

use super::PodStatus;
use crate::manifest::StaticPod;

/// A pod and what is known of it, as the HTTP endpoints show it.
#[derive(Debug, Clone)]
pub struct PodEntry {
    /// Shared with the desired set and the pod's worker.
    pub pod: Arc<StaticPod>,
    pub status: PodStatus,
}

#[derive(Debug, Clone)]
pub struct Store(
    Arc<RwLock<BTreeMap<String, PodEntry>>>,
    Arc<watch::Sender<u64>>,
);

impl Default for Store {
    fn default() -> Self {
        Store(Default::default(), Arc::new(watch::Sender::new(0)))
    }
}

impl Store {
    /// Replaces the entry of `entry.pod.uid`.
    pub fn publish(&self, entry: PodEntry) {
        self.0
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(entry.pod.uid.clone(), entry);
        self.1.send_modify(|n| *n = n.wrapping_add(1));
    }

    pub fn remove(&self, uid: &str) {
        self.0
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(uid);
        self.1.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Wakes up after each publish or remove (a counter that changes), for
    /// readers that follow the pods (`get pods -w`).
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.1.subscribe()
    }

    /// Read access; a writer that panicked left whole entries behind, so a
    /// poisoned lock is still read.
    pub fn read(&self) -> RwLockReadGuard<'_, BTreeMap<String, PodEntry>> {
        self.0.read().unwrap_or_else(|e| e.into_inner())
    }

    pub fn get(&self, uid: &str) -> Option<PodEntry> {
        self.read().get(uid).cloned()
    }
}
