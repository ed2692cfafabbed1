//! Container statistics read from cgroup files at scrape time (no
//! background loop for them: an idle agent costs nothing; volume usage is
//! the exception, see [`volumes`]). cgroup v1 and v2 name
//! things differently; both are read into one [`CgroupStats`].
//!
//! v1: `cpuacct.usage` (ns), `cpuacct.stat` (user/system in USER_HZ ticks),
//! `cpu.stat` (`nr_periods`, `nr_throttled`, `throttled_time` ns),
//! `memory.usage_in_bytes`, `memory.stat` (`total_*` keys include
//! children), `memory.failcnt`, `memory.oom_control` (`oom_kill`).
//! v2: `cpu.stat` (`usage_usec`, `user_usec`, `system_usec`,
//! `nr_periods`, `nr_throttled`, `throttled_usec`), `memory.current`,
//! `memory.stat` (`anon`, `file`, `inactive_file`), `memory.swap.current`,
//! `memory.events` (`max` as failcnt, `oom_kill`).

pub mod machine;
pub mod volumes;

use std::path::Path;

use crate::cgroup::Mode;
use crate::cgroup::fs::parse_keyed;

/// Clock ticks per second of `cpuacct.stat` (USER_HZ, 100 on Linux).
const USER_HZ: u64 = 100;

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

/// An opened cgroup directory. Its files are opened relative to it: the
/// long path is walked once per cgroup, not once per file (path lookup is
/// most of a scrape's cost otherwise).
struct Dir(std::os::fd::OwnedFd);

impl Dir {
    fn open(path: &Path) -> Option<Dir> {
        use nix::fcntl::OFlag;
        nix::fcntl::open(
            path,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
        .ok()
        .map(Dir)
    }
}

fn read_file(dir: &Dir, file: &str) -> Option<String> {
    use nix::fcntl::OFlag;
    use std::io::Read;
    let fd = nix::fcntl::openat(
        &dir.0,
        file,
        OFlag::O_RDONLY | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .ok()?;
    let mut out = String::new();
    std::fs::File::from(fd).read_to_string(&mut out).ok()?;
    Some(out)
}

fn num(dir: &Dir, file: &str) -> Option<u64> {
    read_file(dir, file)?.trim().parse().ok()
}

fn lines(dir: &Dir, file: &str) -> u64 {
    read_file(dir, file).map_or(0, |t| {
        t.lines().filter(|l| !l.trim().is_empty()).count() as u64
    })
}

/// Working set as cAdvisor computes it: usage minus inactive file, not
/// below zero.
pub fn working_set(usage: u64, inactive_file: u64) -> u64 {
    usage.saturating_sub(inactive_file)
}

/// v1 `cpu.shares` from a v2 `cpu.weight` (cAdvisor's inverse of the
/// linear mapping).
pub fn shares_from_weight(weight: u64) -> u64 {
    if weight == 0 {
        0
    } else {
        2 + ((weight - 1) * 262_142) / 9999
    }
}

/// A cgroup's configured values. They do not change while the cgroup
/// lives (changed resources make a new pod), so a scrape reads them once per
/// cgroup and then only the counters.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Spec {
    pub cpu_shares: u64,
    pub cpu_quota_us: i64,
    pub cpu_period_us: u64,
    pub memory_limit: u64,
}

/// Specs by cgroup path, kept between scrapes.
#[derive(Debug, Default)]
pub struct SpecCache(std::sync::Mutex<std::collections::HashMap<String, Spec>>);

impl SpecCache {
    fn get(&self, rel: &str) -> Option<Spec> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(rel)
            .copied()
    }

    fn put(&self, rel: &str, spec: Spec) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(rel.to_string(), spec);
    }

    /// Forgets the cgroups not in `live`.
    pub fn retain(&self, live: &std::collections::HashSet<String>) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|k, _| live.contains(k));
    }
}

/// Reads the stats of cgroup `rel`, its spec from `cache` when known.
pub fn read_cgroup_cached(mode: &Mode, rel: &str, cache: &SpecCache) -> Option<CgroupStats> {
    let known = cache.get(rel);
    let s = read(mode, rel, known)?;
    if known.is_none() {
        cache.put(
            rel,
            Spec {
                cpu_shares: s.cpu_shares,
                cpu_quota_us: s.cpu_quota_us,
                cpu_period_us: s.cpu_period_us,
                memory_limit: s.memory_limit,
            },
        );
    }
    Some(s)
}

/// Reads the stats of cgroup `rel`; `None` when it does not exist.
pub fn read_cgroup(mode: &Mode, rel: &str) -> Option<CgroupStats> {
    read(mode, rel, None)
}

fn read(mode: &Mode, rel: &str, spec: Option<Spec>) -> Option<CgroupStats> {
    let mut s = CgroupStats::default();
    if let Some(sp) = spec {
        s.cpu_shares = sp.cpu_shares;
        s.cpu_quota_us = sp.cpu_quota_us;
        s.cpu_period_us = sp.cpu_period_us;
        s.memory_limit = sp.memory_limit;
    }
    match mode {
        Mode::V2(_) => {
            let dir = Dir::open(&mode.dir("cpu", rel)?)?;
            let cpu = read_file(&dir, "cpu.stat")?;
            let k = |key: &str| parse_keyed(&cpu, key).unwrap_or(0);
            s.cpu_usage_ns = k("usage_usec") * 1000;
            s.cpu_user_ns = k("user_usec") * 1000;
            s.cpu_system_ns = k("system_usec") * 1000;
            s.cfs_periods = k("nr_periods");
            s.cfs_throttled_periods = k("nr_throttled");
            s.cfs_throttled_ns = k("throttled_usec") * 1000;
            s.memory_usage = num(&dir, "memory.current").unwrap_or(0);
            let mem = read_file(&dir, "memory.stat").unwrap_or_default();
            let m = |key: &str| parse_keyed(&mem, key).unwrap_or(0);
            s.memory_working_set = working_set(s.memory_usage, m("inactive_file"));
            s.memory_rss = m("anon");
            s.memory_cache = m("file");
            s.memory_swap = num(&dir, "memory.swap.current").unwrap_or(0);
            let events = read_file(&dir, "memory.events").unwrap_or_default();
            s.memory_failcnt = parse_keyed(&events, "max").unwrap_or(0);
            s.oom_kills = parse_keyed(&events, "oom_kill").unwrap_or(0);
            if spec.is_none() {
                s.cpu_shares = num(&dir, "cpu.weight").map_or(0, shares_from_weight);
                if let Some(max) = read_file(&dir, "cpu.max") {
                    let mut parts = max.split_whitespace();
                    s.cpu_quota_us = parts.next().and_then(|q| q.parse().ok()).unwrap_or(-1);
                    s.cpu_period_us = parts.next().and_then(|p| p.parse().ok()).unwrap_or(100_000);
                }
                s.memory_limit = read_file(&dir, "memory.max")
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0);
            }
            s.processes = lines(&dir, "cgroup.procs");
            s.threads = lines(&dir, "cgroup.threads");
        }
        Mode::V1(_) => {
            let cpu = Dir::open(&mode.dir("cpu", rel)?);
            let memory = Dir::open(&mode.dir("memory", rel)?);
            let (Some(cpu), Some(memory)) = (cpu, memory) else {
                return None;
            };
            let cpuacct = match (mode.dir("cpuacct", rel), mode.dir("cpu", rel)) {
                (Some(a), Some(c)) if a == c => None,
                (Some(a), _) => Dir::open(&a),
                _ => None,
            };
            let cpuacct = cpuacct.as_ref().unwrap_or(&cpu);
            s.cpu_usage_ns = num(cpuacct, "cpuacct.usage").unwrap_or(0);
            let ticks = read_file(cpuacct, "cpuacct.stat").unwrap_or_default();
            s.cpu_user_ns = parse_keyed(&ticks, "user").unwrap_or(0) * 1_000_000_000 / USER_HZ;
            s.cpu_system_ns = parse_keyed(&ticks, "system").unwrap_or(0) * 1_000_000_000 / USER_HZ;
            let stat = read_file(&cpu, "cpu.stat").unwrap_or_default();
            s.cfs_periods = parse_keyed(&stat, "nr_periods").unwrap_or(0);
            s.cfs_throttled_periods = parse_keyed(&stat, "nr_throttled").unwrap_or(0);
            s.cfs_throttled_ns = parse_keyed(&stat, "throttled_time").unwrap_or(0);
            if spec.is_none() {
                s.cpu_shares = num(&cpu, "cpu.shares").unwrap_or(0);
                s.cpu_quota_us = read_file(&cpu, "cpu.cfs_quota_us")
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(-1);
                s.cpu_period_us = num(&cpu, "cpu.cfs_period_us").unwrap_or(100_000);
                // v1 reports "no limit" as a huge page-aligned number.
                s.memory_limit = num(&memory, "memory.limit_in_bytes")
                    .filter(|l| *l < (1 << 62))
                    .unwrap_or(0);
            }
            s.memory_usage = num(&memory, "memory.usage_in_bytes").unwrap_or(0);
            let mem = read_file(&memory, "memory.stat").unwrap_or_default();
            let m = |key: &str| parse_keyed(&mem, key).unwrap_or(0);
            s.memory_working_set = working_set(s.memory_usage, m("total_inactive_file"));
            s.memory_rss = m("total_rss");
            s.memory_cache = m("total_cache");
            s.memory_swap = m("total_swap");
            s.memory_failcnt = num(&memory, "memory.failcnt").unwrap_or(0);
            s.oom_kills = read_file(&memory, "memory.oom_control")
                .and_then(|t| parse_keyed(&t, "oom_kill"))
                .unwrap_or(0);
            let pids = mode.dir("pids", rel).and_then(|p| Dir::open(&p));
            let pids = pids.as_ref().unwrap_or(&memory);
            s.processes = lines(pids, "cgroup.procs");
            s.threads = lines(pids, "tasks");
        }
    }
    Some(s)
}

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

pub fn parse_net_dev(text: &str) -> Vec<NetDev> {
    text.lines()
        .skip(2)
        .filter_map(|l| {
            let (name, rest) = l.split_once(':')?;
            let f: Vec<u64> = rest
                .split_whitespace()
                .filter_map(|v| v.parse().ok())
                .collect();
            if f.len() < 16 {
                return None;
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::path::PathBuf;

    fn temp(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("kl-stats-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn v2_files() {
        let root = temp("v2");
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
        let s = read_cgroup(&Mode::V2(root.clone()), "/kubepods/podu/c1").unwrap();
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
        assert_eq!(s.cpu_shares, shares_from_weight(100));
        assert_eq!((s.processes, s.threads), (2, 3));
        assert!(read_cgroup(&Mode::V2(root.clone()), "/nope").is_none());
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn v1_files() {
        let root = temp("v1");
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
            ("cpu", "cpu.cfs_quota_us", "-1\n"),
            ("cpu", "cpu.cfs_period_us", "100000\n"),
            ("memory", "memory.usage_in_bytes", "1000\n"),
            (
                "memory",
                "memory.stat",
                "cache 5\ntotal_cache 600\ntotal_rss 300\ntotal_inactive_file 1200\ntotal_swap 0\n",
            ),
            ("memory", "memory.failcnt", "2\n"),
            ("memory", "memory.limit_in_bytes", "9223372036854771712\n"),
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
        let s = read_cgroup(&Mode::V1(dirs), "kp/c").unwrap();
        assert_eq!(s.cpu_usage_ns, 3_000_000_000);
        assert_eq!(
            (s.cpu_user_ns, s.cpu_system_ns),
            (2_500_000_000, 500_000_000)
        );
        // Working set never goes below zero.
        assert_eq!(s.memory_working_set, 0);
        assert_eq!(
            (s.memory_rss, s.memory_cache, s.memory_failcnt, s.oom_kills),
            (300, 600, 2, 3)
        );
        assert_eq!((s.cpu_shares, s.cpu_quota_us, s.memory_limit), (204, -1, 0));
        assert_eq!((s.processes, s.threads), (1, 2));
        std::fs::remove_dir_all(&root).unwrap();
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
