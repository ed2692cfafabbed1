//! One cgroup's statistics, as the scrape endpoints report them: each
//! controller reads its own files ([`cpu`], [`memory`], [`pids`]) and the
//! figures are put together here. Read at scrape time, no background loop:
//! an idle agent costs nothing.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::mode::{Mode, Opened};
use super::pids::{self, Below};
use super::{cpu, memory};

#[derive(Debug, Clone, Default, PartialEq)]
pub struct CgroupStats {
    pub cpu_usage_ns: u64,
    pub cpu_user_ns: u64,
    pub cpu_system_ns: u64,
    pub cfs_periods: u64,
    pub cfs_throttled_periods: u64,
    pub cfs_throttled_ns: u64,
    pub memory_usage: u64,
    /// Usage minus inactive file pages: what the kubelet evicts on.
    pub memory_working_set: u64,
    pub memory_rss: u64,
    pub memory_cache: u64,
    pub memory_swap: u64,
    pub memory_failcnt: u64,
    pub oom_kills: u64,
    /// Limits as configured (0 = none).
    pub cpu_shares: u64,
    pub cpu_quota_us: i64,
    pub cpu_period_us: u64,
    pub memory_limit: u64,
    pub processes: u64,
    pub threads: u64,
}

/// A cgroup's configured values. They do not change while the cgroup
/// lives (changed resources make a new pod), so a scrape reads them once per
/// cgroup and then only the counters.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Spec {
    pub cpu: cpu::Spec,
    pub memory_limit: u64,
}

/// What a scrape keeps of each cgroup between scrapes: its directories,
/// opened (so that the long paths are walked once per cgroup, not once per
/// scrape), its configured values, and its OOM kill count with when it
/// was read.
#[derive(Debug, Clone)]
struct Kept {
    opened: Arc<Opened>,
    spec: Spec,
    oom_kills: Arc<Mutex<Option<(u64, Instant)>>>,
}

/// How long after the host's OOM kill count moved the cgroups' counts are
/// read again: the kernel moves the host's count and the victim cgroup's a
/// statement apart, so a read just after the first may miss the second.
const OOM_SETTLE: Duration = Duration::from_secs(2);

/// The host's OOM kill count as the scrapes saw it ([`super::memory::host_oom_kills`]).
#[derive(Debug, Clone, Copy)]
struct HostOom {
    count: u64,
    /// When a scrape first saw this count.
    seen_at: Instant,
}

/// The cgroups read by earlier scrapes, by path. A scrape forgets the
/// cgroups it did not read with [`SpecCache::scrape`] and
/// [`SpecCache::forget_unread`]; [`SpecCache::configured`] makes a
/// cgroup's configured values read again after they were written.
#[derive(Debug, Default)]
pub struct SpecCache {
    /// Each cgroup with the number of the last scrape that read it.
    kept: Mutex<HashMap<String, (Kept, u64)>>,
    /// Bumped by [`SpecCache::configured`]: a scrape that began reading a
    /// cgroup's values before a write does not keep what it read.
    writes: AtomicU64,
    /// Scrapes begun.
    scrapes: AtomicU64,
    /// The host's OOM kill count at the last scrape; `None`: not read (v2,
    /// or unreadable), every cgroup's count is read.
    host_oom: Mutex<Option<HostOom>>,
}

impl SpecCache {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Kept, u64)>> {
        self.kept.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn get(&self, rel: &str) -> Option<Kept> {
        let scrape = self.scrapes.load(Ordering::Acquire);
        self.map().get_mut(rel).map(|(kept, read_by)| {
            *read_by = scrape;
            kept.clone()
        })
    }

    fn writes(&self) -> u64 {
        self.writes.load(Ordering::Acquire)
    }

    /// Keeps what was read if no values were written since `writes`.
    fn put(&self, rel: &str, kept: Kept, writes: u64) {
        let mut map = self.map();
        if self.writes() == writes {
            let scrape = self.scrapes.load(Ordering::Acquire);
            map.insert(rel.to_string(), (kept, scrape));
        }
    }

    fn forget(&self, rel: &str) {
        self.map().remove(rel);
    }

    /// Cgroup `rel`'s configured values were written: the next scrape reads
    /// them again (a pod's cgroup is made before its limits are written).
    pub fn configured(&self, rel: &str) {
        let mut map = self.map();
        self.writes.fetch_add(1, Ordering::AcqRel);
        map.remove(rel);
    }

    /// A scrape begins: its number, for [`SpecCache::forget_unread`].
    /// `host_oom_kills`: the host's OOM kill count now (cgroup v1, where a
    /// cgroup's own count is a file of its own to read): while it stands
    /// still, the counts read after it settled are kept.
    pub fn scrape(&self, host_oom_kills: Option<u64>) -> u64 {
        let mut host = self.host_oom.lock().unwrap_or_else(|e| e.into_inner());
        *host = host_oom_kills.map(|count| match *host {
            Some(seen) if seen.count == count => seen,
            _ => HostOom {
                count,
                seen_at: Instant::now(),
            },
        });
        drop(host);
        self.scrapes.fetch_add(1, Ordering::AcqRel) + 1
    }

    /// A cgroup's OOM kill count kept from an earlier read, if no OOM kill
    /// can have happened on the host since: it was read after the host's
    /// count last moved and settled.
    fn known_oom_kills(&self, kept: &Kept) -> Option<u64> {
        let host = (*self.host_oom.lock().unwrap_or_else(|e| e.into_inner()))?;
        let (count, read_at) = (*kept.oom_kills.lock().unwrap_or_else(|e| e.into_inner()))?;
        (read_at >= host.seen_at + OOM_SETTLE).then_some(count)
    }

    /// Forgets the cgroups that neither scrape `scrape` nor a later one
    /// read (the cache follows the pods through any churn; a scrape running
    /// beside keeps what it read).
    pub fn forget_unread(&self, scrape: u64) {
        self.map().retain(|_, (_, read_by)| *read_by >= scrape);
    }

    /// How many cgroups are kept.
    pub fn len(&self) -> usize {
        self.map().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Reads the stats of cgroup `rel`; `None` when it does not exist. With a
/// cache, its directories are opened and its configured values read once;
/// a kept cgroup that can no longer be read (removed, or removed and made
/// again at the same path) is opened afresh. `below` may spare reading the
/// process list ([`Below`]).
pub fn read(
    mode: &Mode,
    rel: &str,
    cache: Option<&SpecCache>,
    below: Below,
) -> Option<CgroupStats> {
    let Some(cache) = cache else {
        let opened = mode.open(rel)?;
        let spec = spec_of(&opened);
        return read_opened(&opened, &spec, below, None);
    };
    if let Some(kept) = cache.get(rel) {
        let known = cache.known_oom_kills(&kept);
        let read_at = Instant::now();
        if let Some(stats) = read_opened(&kept.opened, &kept.spec, below, known) {
            if known.is_none() {
                *kept.oom_kills.lock().unwrap_or_else(|e| e.into_inner()) =
                    Some((stats.oom_kills, read_at));
            }
            return Some(stats);
        }
        cache.forget(rel);
    }
    let writes = cache.writes();
    let opened = Arc::new(mode.open(rel)?);
    let spec = spec_of(&opened);
    let read_at = Instant::now();
    let stats = read_opened(&opened, &spec, below, None)?;
    let oom_kills = Arc::new(Mutex::new(Some((stats.oom_kills, read_at))));
    cache.put(
        rel,
        Kept {
            opened,
            spec,
            oom_kills,
        },
        writes,
    );
    Some(stats)
}

fn spec_of(cg: &Opened) -> Spec {
    Spec {
        cpu: cpu::spec(cg.version, cg.cpu()),
        memory_limit: memory::limit(cg.version, cg.memory()),
    }
}

fn read_opened(
    cg: &Opened,
    spec: &Spec,
    below: Below,
    known_oom_kills: Option<u64>,
) -> Option<CgroupStats> {
    let v = cg.version;
    let cpu = cpu::usage(
        v,
        cg.cpu(),
        cg.cpuacct(),
        cg.unified(),
        spec.cpu.quota_us > 0,
    )?;
    let memory = memory::usage(v, cg.memory(), spec.memory_limit > 0, known_oom_kills)?;
    let tasks = pids::tasks(v, cg.pids(), cg.processes(), below);
    Some(CgroupStats {
        cpu_usage_ns: cpu.usage_ns,
        cpu_user_ns: cpu.user_ns,
        cpu_system_ns: cpu.system_ns,
        cfs_periods: cpu.periods,
        cfs_throttled_periods: cpu.throttled_periods,
        cfs_throttled_ns: cpu.throttled_ns,
        memory_usage: memory.usage,
        memory_working_set: memory.working_set,
        memory_rss: memory.rss,
        memory_cache: memory.cache,
        memory_swap: memory.swap,
        memory_failcnt: memory.failcnt,
        oom_kills: memory.oom_kills,
        cpu_shares: spec.cpu.shares,
        cpu_quota_us: spec.cpu.quota_us,
        cpu_period_us: spec.cpu.period_us,
        memory_limit: spec.memory_limit,
        processes: tasks.processes,
        threads: tasks.threads,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cgroup::fs::tests::temp;
    use std::collections::BTreeMap;
    use std::path::PathBuf;

    #[test]
    fn v2_one_directory() {
        let root = temp("stats-v2");
        let d = root.join("kubepods/podu/c1");
        std::fs::create_dir_all(&d).unwrap();
        for (f, v) in [
            (
                "cpu.stat",
                "usage_usec 2000000\nuser_usec 1500000\nsystem_usec 500000\nnr_periods 40\nnr_throttled 30\nthrottled_usec 250000\n",
            ),
            ("memory.current", "104857600\n"),
            (
                "memory.stat",
                "anon 52428800\nfile 41943040\ninactive_file 20971520\n",
            ),
            ("memory.events", "low 0\nhigh 0\nmax 7\noom 1\noom_kill 1\n"),
            ("cpu.weight", "100\n"),
            ("cpu.max", "20000 100000\n"),
            ("memory.max", "max\n"),
            ("cgroup.procs", "12\n13\n"),
            ("cgroup.threads", "12\n13\n14\n"),
        ] {
            std::fs::write(d.join(f), v).unwrap();
        }
        let mode = Mode::V2(root.clone());
        let s = read(&mode, "/kubepods/podu/c1", None, Below::Unknown).unwrap();
        assert_eq!(s.cpu_usage_ns, 2_000_000_000);
        assert_eq!(s.cpu_user_ns, 1_500_000_000);
        assert_eq!(
            (s.cfs_periods, s.cfs_throttled_periods, s.cfs_throttled_ns),
            (40, 30, 250_000_000)
        );
        assert_eq!(s.memory_working_set, 104_857_600 - 20_971_520);
        assert_eq!(
            (s.memory_rss, s.memory_cache, s.memory_failcnt, s.oom_kills),
            (52_428_800, 41_943_040, 7, 1)
        );
        assert_eq!(
            (s.cpu_quota_us, s.cpu_period_us, s.memory_limit),
            (20_000, 100_000, 0)
        );
        assert_eq!(s.cpu_shares, cpu::shares_from_weight(100));
        assert_eq!((s.processes, s.threads), (2, 3));
        assert!(read(&mode, "/nope", None, Below::Unknown).is_none());

        // Cached: the configured values are read once; the counters always.
        let cache = SpecCache::default();
        assert_eq!(
            read(&mode, "/kubepods/podu/c1", Some(&cache), Below::Unknown).unwrap(),
            s
        );
        std::fs::write(d.join("cpu.max"), "max 100000\n").unwrap();
        std::fs::write(d.join("cgroup.procs"), "12\n").unwrap();
        let again = read(&mode, "/kubepods/podu/c1", Some(&cache), Below::Unknown).unwrap();
        assert_eq!((again.cpu_quota_us, again.processes), (20_000, 1));
        assert_eq!(cache.len(), 1);
        // Read by the scrape that began before: kept ...
        let first = cache.scrape(None);
        read(&mode, "/kubepods/podu/c1", Some(&cache), Below::Unknown).unwrap();
        let second = cache.scrape(None);
        cache.forget_unread(first);
        assert_eq!(cache.len(), 1);
        // ... and forgotten once a scrape did not read it.
        cache.forget_unread(second);
        assert!(cache.is_empty());
        let rel = "/kubepods/podu/c1";
        let fresh = read(&mode, rel, Some(&cache), Below::Unknown).unwrap();
        assert_eq!(fresh.cpu_quota_us, -1);
        // Values written later are read again once said to be written...
        std::fs::write(d.join("cpu.max"), "50000 100000\n").unwrap();
        let kept = read(&mode, rel, Some(&cache), Below::Unknown).unwrap();
        assert_eq!(kept.cpu_quota_us, -1);
        cache.configured(rel);
        let written = read(&mode, rel, Some(&cache), Below::Unknown).unwrap();
        assert_eq!(written.cpu_quota_us, 50_000);
        // ...and what a scrape began reading before such a write is not
        // kept.
        let before = cache.writes();
        let entry = cache.get(rel).unwrap();
        cache.configured(rel);
        cache.put(rel, entry, before);
        assert!(cache.get(rel).is_none());
        // A cgroup removed and made again at the same path is read afresh
        // because the kernel fails reads of the old one's kept files: that
        // needs real cgroups (tests/resources.rs).
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn v1_oom_kills_kept_while_the_host_count_stands_still() {
        let root = temp("stats-oom");
        let dirs: BTreeMap<String, PathBuf> = ["cpu", "memory"]
            .iter()
            .map(|c| (c.to_string(), root.join(c)))
            .collect();
        std::fs::create_dir_all(root.join("cpu/kp/c")).unwrap();
        let d = root.join("memory/kp/c");
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("memory.usage_in_bytes"), "1000\n").unwrap();
        let oom = |n: u64| {
            std::fs::write(
                d.join("memory.oom_control"),
                format!("oom_kill_disable 0\nunder_oom 0\noom_kill {n}\n"),
            )
            .unwrap();
        };
        let mode = Mode::V1(dirs);
        let cache = SpecCache::default();
        let read_oom = || {
            read(&mode, "kp/c", Some(&cache), Below::Unknown)
                .unwrap()
                .oom_kills
        };
        // The host's count settled long ago.
        let settled = |cache: &SpecCache| {
            let mut host = cache.host_oom.lock().unwrap();
            let h = host.as_mut().unwrap();
            h.seen_at = h.seen_at.checked_sub(OOM_SETTLE * 2).unwrap();
        };
        oom(3);
        cache.scrape(Some(5));
        settled(&cache);
        assert_eq!(read_oom(), 3);
        // The host's count stands still: the cgroup's is not read again (a
        // file that says otherwise shows it).
        oom(4);
        cache.scrape(Some(5));
        assert_eq!(read_oom(), 3);
        // It moved: read again, and at every scrape until it settles.
        cache.scrape(Some(6));
        assert_eq!(read_oom(), 4);
        oom(5);
        cache.scrape(Some(6));
        assert_eq!(read_oom(), 5);
        oom(6);
        assert_eq!(read_oom(), 6);
        // Without the host's count (v2, or unreadable): always read.
        cache.scrape(None);
        oom(7);
        assert_eq!(read_oom(), 7);
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn v1_directory_per_controller() {
        let root = temp("stats-v1");
        let dirs: BTreeMap<String, PathBuf> = ["cpu", "cpuacct", "memory", "pids"]
            .iter()
            .map(|c| (c.to_string(), root.join(c)))
            .collect();
        for (c, f, v) in [
            ("cpuacct", "cpuacct.usage", "3000000000\n"),
            ("cpuacct", "cpuacct.stat", "user 250\nsystem 50\n"),
            (
                "cpu",
                "cpu.stat",
                "nr_periods 10\nnr_throttled 4\nthrottled_time 123\n",
            ),
            ("cpu", "cpu.shares", "204\n"),
            ("cpu", "cpu.cfs_quota_us", "50000\n"),
            ("cpu", "cpu.cfs_period_us", "100000\n"),
            ("memory", "memory.usage_in_bytes", "1000\n"),
            (
                "memory",
                "memory.stat",
                "cache 5\ntotal_cache 600\ntotal_rss 300\ntotal_inactive_file 1200\ntotal_swap 0\n",
            ),
            ("memory", "memory.failcnt", "2\n"),
            ("memory", "memory.limit_in_bytes", "67108864\n"),
            (
                "memory",
                "memory.oom_control",
                "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n",
            ),
            ("pids", "cgroup.procs", "1\n"),
            ("pids", "tasks", "1\n2\n"),
        ] {
            let d = root.join(c).join("kp/c");
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join(f), v).unwrap();
        }
        let s = read(&Mode::V1(dirs.clone()), "kp/c", None, Below::Unknown).unwrap();
        assert_eq!(s.cpu_usage_ns, 3_000_000_000);
        assert_eq!(
            (s.cpu_user_ns, s.cpu_system_ns),
            (2_500_000_000, 500_000_000)
        );
        assert_eq!(s.cfs_throttled_periods, 4);
        assert_eq!(s.memory_working_set, 0);
        assert_eq!(
            (s.memory_rss, s.memory_cache, s.memory_failcnt, s.oom_kills),
            (300, 600, 2, 3)
        );
        assert_eq!(
            (s.cpu_shares, s.cpu_quota_us, s.memory_limit),
            (204, 50_000, 64 << 20)
        );
        assert_eq!((s.processes, s.threads), (1, 2));
        // Hybrid: CPU time from the v2 tree's cpu.stat.
        let unified = root.join("unified/kp/c");
        std::fs::create_dir_all(&unified).unwrap();
        std::fs::write(
            unified.join("cpu.stat"),
            "usage_usec 3100000\nuser_usec 3000000\nsystem_usec 100000\n",
        )
        .unwrap();
        let mut hybrid = dirs.clone();
        hybrid.insert(
            super::super::mode::UNIFIED.to_string(),
            root.join("unified"),
        );
        let s = read(&Mode::V1(hybrid), "kp/c", None, Below::Unknown).unwrap();
        assert_eq!(
            (s.cpu_usage_ns, s.cpu_user_ns, s.cpu_system_ns),
            (3_100_000_000, 3_000_000_000, 100_000_000)
        );
        assert_eq!(s.cfs_throttled_periods, 4);
        // Without the pids hierarchy, the memory one lists the processes
        // and threads.
        std::fs::write(root.join("memory/kp/c/cgroup.procs"), "1\n2\n3\n").unwrap();
        std::fs::write(root.join("memory/kp/c/tasks"), "1\n2\n3\n4\n").unwrap();
        let mut no_pids = dirs.clone();
        no_pids.remove("pids");
        let s = read(&Mode::V1(no_pids), "kp/c", None, Below::Unknown).unwrap();
        assert_eq!((s.processes, s.threads), (3, 4));
        // A cgroup missing from the memory hierarchy is no cgroup.
        std::fs::remove_dir_all(root.join("memory/kp/c")).unwrap();
        assert!(read(&Mode::V1(dirs), "kp/c", None, Below::Unknown).is_none());
        std::fs::remove_dir_all(&root).unwrap();
    }
}
