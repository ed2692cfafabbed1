//! A pod's network counters: `/proc/<pid>/net/dev` of any of its
//! processes (they share the pod's network namespace), kept open from one
//! scrape to the next ([`NetFiles`]).

use std::collections::HashMap;
use std::fs::File;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use crate::cgroup::fs::read_with;
use crate::pod::Store;

/// Per-interface counters of a network namespace, from `/proc/<pid>/net/dev`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetDev {
    pub interface: String,
    pub rx_bytes: u64,
    pub rx_packets: u64,
    pub rx_errors: u64,
    pub rx_dropped: u64,
    pub tx_bytes: u64,
    pub tx_packets: u64,
    pub tx_errors: u64,
    pub tx_dropped: u64,
}

/// The interfaces of a `/proc/<pid>/net/dev` text, loopback included.
pub fn parse_net_dev(text: &str) -> Vec<NetDev> {
    text.lines()
        .skip(2)
        .filter_map(|l| {
            let (name, rest) = l.split_once(':')?;
            let mut f = [0u64; 16];
            let mut fields = rest.split_whitespace();
            for v in &mut f {
                *v = fields.next()?.parse().ok()?;
            }
            Some(NetDev {
                interface: name.trim().to_string(),
                rx_bytes: f[0],
                rx_packets: f[1],
                rx_errors: f[2],
                rx_dropped: f[3],
                tx_bytes: f[8],
                tx_packets: f[9],
                tx_errors: f[10],
                tx_dropped: f[11],
            })
        })
        .collect()
}

/// Each pod's `/proc/<pid>/net/dev`, opened once and read again at each
/// scrape (one `pread` instead of a path walk through `/proc`, an open and
/// a close: a sixth of a scrape's system calls at 110 pods).
///
/// The open file holds the pod's network namespace (its `seq_file` keeps a
/// reference), so it follows the pod, not the process it was opened
/// through: it is kept for the pod's UID and start, stays valid through
/// container restarts (the namespace is the pod sandbox's, pinned for the
/// pod's life), and is let go once the pod is gone ([`NetFiles::follow`],
/// [`NetFiles::keep_pods_in`]).
#[derive(Debug, Default)]
pub struct NetFiles(Mutex<HashMap<String, (SystemTime, Arc<File>)>>);

impl NetFiles {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, (SystemTime, Arc<File>)>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The interface counters of pod `uid`, started at `started`, read
    /// through its process `pid` when its file is not kept yet; `None` when
    /// they cannot be read (the process is gone).
    pub fn read(&self, uid: &str, started: SystemTime, pid: u32) -> Option<Vec<NetDev>> {
        let kept = self
            .map()
            .get(uid)
            .filter(|(at, _)| *at == started)
            .map(|(_, f)| Arc::clone(f));
        if let Some(file) = kept
            && let Some(devs) = read_with(&file, true, parse_net_dev)
        {
            return Some(devs);
        }
        let file = Arc::new(File::open(format!("/proc/{pid}/net/dev")).ok()?);
        let devs = read_with(&file, true, parse_net_dev)?;
        self.map().insert(uid.to_string(), (started, file));
        Some(devs)
    }

    /// Closes the files of the pods for which `live` is false.
    fn retain(&self, live: impl Fn(&str) -> bool) {
        self.map().retain(|uid, _| live(uid));
    }

    /// Closes the files of the pods no longer in `store`.
    pub fn keep_pods_in(&self, store: &Store) {
        if !self.is_empty() {
            let pods = store.read();
            self.retain(|uid| pods.contains_key(uid));
        }
    }

    /// Lets go of a pod's file as soon as the pod leaves `store`, not at
    /// the next scrape (which may never come): its namespace is not held
    /// after the pod.
    pub async fn follow(nets: Arc<NetFiles>, store: Store) {
        let mut changes = store.changes();
        while changes.changed().await.is_ok() {
            nets.keep_pods_in(&store);
        }
    }

    /// How many files are kept.
    pub fn len(&self) -> usize {
        self.map().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_are_kept_for_the_pod_not_the_process() {
        let nets = NetFiles::default();
        let started = SystemTime::now();
        let mut child = std::process::Command::new("sleep")
            .arg("60")
            .spawn()
            .unwrap();
        let devs = nets.read("u1", started, child.id()).unwrap();
        assert!(devs.iter().any(|d| d.interface == "lo"), "{devs:?}");
        child.kill().unwrap();
        child.wait().unwrap();
        // The process it was opened through is gone: the kept file still
        // reads the namespace.
        assert_eq!(
            nets.read("u1", started, child.id()).unwrap().len(),
            devs.len()
        );
        // A pod made again under the same UID (a new start) is opened
        // afresh, through its own process.
        let later = started + std::time::Duration::from_secs(1);
        assert_eq!(nets.read("u1", later, child.id()), None);
        let me = std::process::id();
        assert!(nets.read("u1", later, me).is_some());
        assert!(nets.read("u2", later, me).is_some());
        assert_eq!(nets.len(), 2);
        nets.retain(|uid| uid == "u2");
        assert_eq!(nets.len(), 1);
    }

    #[test]
    fn net_dev() {
        let text = "Inter-|   Receive                                                |  Transmit\n face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n    lo:    1234      10    0    0    0     0          0         0     1234      10    0    0    0     0       0          0\n  eth0: 100 2 1 3 0 0 0 0 200 4 5 6 0 0 0 0\n";
        let d = parse_net_dev(text);
        assert_eq!(d.len(), 2);
        assert_eq!(d[0].interface, "lo");
        assert_eq!(
            (
                d[1].rx_bytes,
                d[1].rx_packets,
                d[1].rx_errors,
                d[1].rx_dropped
            ),
            (100, 2, 1, 3)
        );
        assert_eq!(
            (
                d[1].tx_bytes,
                d[1].tx_packets,
                d[1].tx_errors,
                d[1].tx_dropped
            ),
            (200, 4, 5, 6)
        );
    }
}
