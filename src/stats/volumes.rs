//! Volume usage, collected in the background and read by the scrapes.
//!
//! `statvfs(2)` and a directory walk on an NFS volume whose server is gone
//! do not return (hard mounts retry forever) and cannot be interrupted: a
//! request that made them would hold its thread for good. So the figures
//! are gathered apart from requests, every `volumeStatsAggPeriod` (the
//! kubelet's name and default, 1 min), each volume on a thread of its own
//! with a deadline. A volume that misses it is reported unavailable, and
//! while its probe is still stuck it is not probed again: one parked
//! thread per dead volume at most, never a pool filled with them.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tracing::{debug, warn};

/// What one volume holds, as the Summary API's `FsStats` tells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    pub capacity_bytes: u64,
    pub available_bytes: u64,
    pub used_bytes: u64,
    pub inodes: u64,
    pub inodes_free: u64,
}

/// The latest figure of one volume.
#[derive(Debug, Clone, PartialEq)]
pub enum Figure {
    Ready {
        usage: Usage,
        time: SystemTime,
    },
    /// The last probe failed or did not answer in time.
    Unavailable {
        reason: String,
        time: SystemTime,
    },
}

/// Measures one volume directory; blocking, and may never return.
pub type Probe = Arc<dyn Fn(&Path) -> std::io::Result<Usage> + Send + Sync>;

/// The real probe: statvfs for capacity and inodes, a walk for what the
/// volume's files use (the kubelet's `du` for emptyDir).
pub fn statvfs_and_walk(dir: &Path) -> std::io::Result<Usage> {
    let st = nix::sys::statvfs::statvfs(dir).map_err(std::io::Error::from)?;
    let block = st.fragment_size();
    Ok(Usage {
        capacity_bytes: st.blocks() * block,
        available_bytes: st.blocks_available() * block,
        used_bytes: crate::volume::mount::usage(dir),
        inodes: st.files(),
        inodes_free: st.files_free(),
    })
}

/// The directory of a pod's volume whose usage is reported, if it has one
/// under the pod's directory.
pub fn volume_dir(root_dir: &Path, pod_uid: &str, v: &crate::volume::Volume) -> Option<PathBuf> {
    Some(root_dir.join("pods").join(pod_uid).join(v.plugin_dir()?))
}

/// The volume directories of every known pod.
pub fn dirs_of(store: &crate::pod::Store, root_dir: &Path) -> Vec<PathBuf> {
    let store = store.read();
    store
        .values()
        .flat_map(|e| {
            e.pod
                .resolved
                .volumes
                .iter()
                .filter_map(|v| volume_dir(root_dir, &e.pod.uid, v))
        })
        .collect()
}

/// Latest figures by volume directory, and the probes still running.
#[derive(Default)]
pub struct VolumeStats {
    figures: Mutex<HashMap<PathBuf, Figure>>,
    in_flight: Mutex<HashSet<PathBuf>>,
}

impl VolumeStats {
    pub fn get(&self, dir: &Path) -> Option<Figure> {
        lock(&self.figures).get(dir).cloned()
    }

    fn set(&self, dir: &Path, f: Figure) {
        lock(&self.figures).insert(dir.to_path_buf(), f);
    }

    /// Whether a probe of `dir` has not returned yet.
    pub fn probing(&self, dir: &Path) -> bool {
        lock(&self.in_flight).contains(dir)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Clears a volume's in-flight mark when its probe thread ends, however
/// it ends.
struct InFlight {
    stats: Arc<VolumeStats>,
    dir: PathBuf,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        lock(&self.stats.in_flight).remove(&self.dir);
    }
}

pub struct Collector {
    pub stats: Arc<VolumeStats>,
    pub probe: Probe,
    /// How long one volume may take before it is reported unavailable.
    pub deadline: Duration,
}

impl Collector {
    pub fn new(stats: Arc<VolumeStats>) -> Collector {
        Collector {
            stats,
            probe: Arc::new(statvfs_and_walk),
            deadline: Duration::from_secs(5),
        }
    }

    /// Measures every directory of `dirs` at once, each within the
    /// deadline, and forgets the figures of directories no longer listed.
    pub async fn collect(&self, dirs: &[PathBuf]) {
        let keep: HashSet<&PathBuf> = dirs.iter().collect();
        lock(&self.stats.figures).retain(|d, _| keep.contains(d));
        let rounds = dirs.iter().map(|dir| self.collect_one(dir.clone()));
        futures::future::join_all(rounds).await;
    }

    async fn collect_one(&self, dir: PathBuf) {
        if !lock(&self.stats.in_flight).insert(dir.clone()) {
            debug!(dir = %dir.display(), "volume probe still stuck; not probing again");
            self.stats.set(
                &dir,
                Figure::Unavailable {
                    reason: "a previous probe has not returned".into(),
                    time: SystemTime::now(),
                },
            );
            return;
        }
        let guard = InFlight {
            stats: Arc::clone(&self.stats),
            dir: dir.clone(),
        };
        let (tx, rx) = tokio::sync::oneshot::channel();
        let probe = Arc::clone(&self.probe);
        let d = dir.clone();
        // A thread of its own, not the runtime's blocking pool: a probe
        // stuck in the kernel keeps its thread, and the pool's threads are
        // shared with mounts and teardown.
        let spawned = std::thread::Builder::new()
            .name("volume-stats".into())
            .spawn(move || {
                let r = probe(&d);
                drop(guard);
                let _ = tx.send(r);
            });
        if let Err(e) = spawned {
            // The closure (and the guard in it) is dropped: no mark stays.
            self.stats.set(
                &dir,
                Figure::Unavailable {
                    reason: format!("starting a probe thread: {e}"),
                    time: SystemTime::now(),
                },
            );
            return;
        }
        let figure = match tokio::time::timeout(self.deadline, rx).await {
            Ok(Ok(Ok(usage))) => Figure::Ready {
                usage,
                time: SystemTime::now(),
            },
            Ok(Ok(Err(e))) => Figure::Unavailable {
                reason: e.to_string(),
                time: SystemTime::now(),
            },
            Ok(Err(_)) => Figure::Unavailable {
                reason: "the probe thread ended without an answer".into(),
                time: SystemTime::now(),
            },
            Err(_) => {
                warn!(dir = %dir.display(), deadline = ?self.deadline, "volume did not answer statvfs in time; reported unavailable");
                Figure::Unavailable {
                    reason: format!("no answer within {:?}", self.deadline),
                    time: SystemTime::now(),
                }
            }
        };
        self.stats.set(&dir, figure);
    }

    /// Collects every `period` while `dirs` lists something. A `period` of
    /// zero turns collection off.
    pub async fn run(self, period: Duration, dirs: impl Fn() -> Vec<PathBuf>) {
        if period.is_zero() {
            return;
        }
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let list = dirs();
            if !list.is_empty() || !lock(&self.stats.figures).is_empty() {
                self.collect(&list).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage(n: u64) -> Usage {
        Usage {
            capacity_bytes: n,
            available_bytes: n,
            used_bytes: n,
            inodes: n,
            inodes_free: n,
        }
    }

    /// A probe that blocks forever on one directory (as statvfs on a dead
    /// hard NFS mount does) and answers at once on the others; counts
    /// its calls per directory.
    fn probe_hanging_on(stuck: &'static str, calls: Arc<Mutex<Vec<PathBuf>>>) -> Probe {
        Arc::new(move |dir: &Path| {
            lock(&calls).push(dir.to_path_buf());
            if dir == Path::new(stuck) {
                loop {
                    std::thread::park();
                }
            }
            Ok(usage(7))
        })
    }

    #[tokio::test]
    async fn a_stuck_volume_misses_the_deadline_and_is_not_reentered() {
        let stats = Arc::new(VolumeStats::default());
        let calls = Arc::new(Mutex::new(vec![]));
        let c = Collector {
            stats: Arc::clone(&stats),
            probe: probe_hanging_on("/dead", Arc::clone(&calls)),
            deadline: Duration::from_millis(200),
        };
        let dirs = [PathBuf::from("/dead"), PathBuf::from("/fine")];
        let t0 = std::time::Instant::now();
        c.collect(&dirs).await;
        assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
        assert!(
            matches!(stats.get(Path::new("/fine")), Some(Figure::Ready { usage: u, .. }) if u == usage(7))
        );
        match stats.get(Path::new("/dead")) {
            Some(Figure::Unavailable { reason, .. }) => {
                assert!(reason.contains("no answer within"), "{reason}")
            }
            other => panic!("{other:?}"),
        }
        assert!(stats.probing(Path::new("/dead")));
        assert!(!stats.probing(Path::new("/fine")));
        // The next round does not start a second probe of the stuck one.
        c.collect(&dirs).await;
        let calls = lock(&calls).clone();
        assert_eq!(
            calls.iter().filter(|d| *d == Path::new("/dead")).count(),
            1,
            "{calls:?}"
        );
        assert_eq!(calls.iter().filter(|d| *d == Path::new("/fine")).count(), 2);
        assert!(matches!(
            stats.get(Path::new("/dead")),
            Some(Figure::Unavailable { .. })
        ));
        // A volume gone from the list is forgotten.
        c.collect(&[PathBuf::from("/fine")]).await;
        assert!(stats.get(Path::new("/dead")).is_none());
    }

    #[tokio::test]
    async fn errors_are_reported_and_a_real_directory_is_measured() {
        let stats = Arc::new(VolumeStats::default());
        let c = Collector::new(Arc::clone(&stats));
        let dir = std::env::temp_dir().join(format!("kl-volstats-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("f"), vec![1u8; 64 * 1024]).unwrap();
        let missing = dir.join("missing");
        c.collect(&[dir.clone(), missing.clone()]).await;
        match stats.get(&dir) {
            Some(Figure::Ready { usage, .. }) => {
                assert!(usage.used_bytes >= 64 * 1024, "{usage:?}");
                assert!(usage.capacity_bytes > 0 && usage.inodes > 0);
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            stats.get(&missing),
            Some(Figure::Unavailable { .. })
        ));
        assert!(!stats.probing(&missing));
        let _ = std::fs::remove_dir_all(dir);
    }
}
