//! The status of every pod, by UID: written by the pod's worker (and, for a
//! pod that was not admitted, by the pod manager) through [`Store::publish`]
//! and [`Store::remove`]; the HTTP endpoints and stats read copies.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock, RwLockReadGuard};

use super::PodStatus;
use crate::manifest::StaticPod;

/// A pod and what is known of it, as the HTTP endpoints show it.
#[derive(Debug, Clone)]
pub struct PodEntry {
    pub pod: StaticPod,
    pub status: PodStatus,
}

#[derive(Debug, Clone, Default)]
pub struct Store(Arc<RwLock<BTreeMap<String, PodEntry>>>);

impl Store {
    /// Replaces the entry of `entry.pod.uid`.
    pub fn publish(&self, entry: PodEntry) {
        self.0
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(entry.pod.uid.clone(), entry);
    }

    pub fn remove(&self, uid: &str) {
        self.0
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(uid);
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
