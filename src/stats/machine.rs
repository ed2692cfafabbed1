//! The machine as cAdvisor's machine collector describes it
//! (`machine_cpu_cores`, `machine_cpu_physical_cores`, `machine_cpu_sockets`,
//! `machine_memory_bytes`, `machine_swap_bytes`, labelled with `boot_id`,
//! `machine_id`, `system_uuid`).
//!
//! Where cAdvisor looks: logical CPUs are the online ones
//! (`/sys/devices/system/cpu/online`); a physical core is a distinct
//! (`physical_package_id`, `core_id`) pair of their topology, a socket a
//! distinct `physical_package_id`; memory and swap are `MemTotal` and
//! `SwapTotal` of /proc/meminfo; the IDs come from
//! /proc/sys/kernel/random/boot_id, /etc/machine-id (or dbus's copy) and
//! /sys/class/dmi/id/product_uuid, empty when unreadable (a VM without DMI,
//! a container without /etc/machine-id). Every path is below `root`, so
//! tests read a made-up tree. As cAdvisor, a reading is served for 5
//! minutes ([`current`]).

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a reading of the machine is served: cAdvisor's
/// `update_machine_info_interval` (5 minutes).
pub const REFRESH: Duration = Duration::from_secs(300);

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MachineInfo {
    pub cpu_cores: u64,
    pub cpu_physical_cores: u64,
    pub cpu_sockets: u64,
    pub memory_bytes: u64,
    pub swap_bytes: u64,
    pub boot_id: String,
    pub machine_id: String,
    pub system_uuid: String,
}

/// CPU numbers of a sysfs CPU list (`0-3,8,10-11`). Malformed parts are
/// skipped; a range is taken only when it is ascending.
pub fn parse_cpu_list(text: &str) -> Vec<u32> {
    let mut out = vec![];
    for part in text.trim().split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                if let (Ok(a), Ok(b)) = (a.parse::<u32>(), b.parse::<u32>())
                    && a <= b
                {
                    out.extend(a..=b);
                }
            }
            None => out.extend(part.parse::<u32>().ok()),
        }
    }
    out
}

/// A `Key: N kB` line of /proc/meminfo, in bytes.
pub fn meminfo_bytes(meminfo: &str, key: &str) -> u64 {
    meminfo
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb.saturating_mul(1024))
}

fn read_trimmed(path: &Path) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

impl MachineInfo {
    /// Reads the machine below `root` (`/` in production).
    pub fn read(root: &Path) -> MachineInfo {
        let cpu_dir = root.join("sys/devices/system/cpu");
        let online = read_trimmed(&cpu_dir.join("online"))
            .map(|t| parse_cpu_list(&t))
            .unwrap_or_default();
        let mut cores = BTreeSet::new();
        let mut sockets = BTreeSet::new();
        for cpu in &online {
            let topology = cpu_dir.join(format!("cpu{cpu}/topology"));
            let package = read_trimmed(&topology.join("physical_package_id"));
            let core = read_trimmed(&topology.join("core_id"));
            if let (Some(p), Some(c)) = (package, core) {
                sockets.insert(p.clone());
                cores.insert((p, c));
            }
        }
        let count = |n: usize| u64::try_from(n).unwrap_or(u64::MAX);
        let meminfo = std::fs::read_to_string(root.join("proc/meminfo")).unwrap_or_default();
        MachineInfo {
            cpu_cores: count(online.len()),
            cpu_physical_cores: count(cores.len()),
            cpu_sockets: count(sockets.len()),
            memory_bytes: meminfo_bytes(&meminfo, "MemTotal"),
            swap_bytes: meminfo_bytes(&meminfo, "SwapTotal"),
            boot_id: read_trimmed(&root.join("proc/sys/kernel/random/boot_id")).unwrap_or_default(),
            machine_id: read_trimmed(&root.join("etc/machine-id"))
                .or_else(|| read_trimmed(&root.join("var/lib/dbus/machine-id")))
                .unwrap_or_default(),
            system_uuid: read_trimmed(&root.join("sys/class/dmi/id/product_uuid"))
                .unwrap_or_default(),
        }
    }
}

/// A reading of the machine kept for [`REFRESH`], so that a scrape does not
/// walk each CPU's topology in sysfs.
#[derive(Debug, Default)]
pub struct Kept(Mutex<Option<(Instant, Arc<MachineInfo>)>>);

impl Kept {
    /// The reading of less than [`REFRESH`] before `now`, else `read()`'s.
    pub fn get(&self, now: Instant, read: impl FnOnce() -> MachineInfo) -> Arc<MachineInfo> {
        let mut kept = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((at, m)) = kept.as_ref()
            && now.saturating_duration_since(*at) < REFRESH
        {
            return Arc::clone(m);
        }
        let m = Arc::new(read());
        *kept = Some((now, Arc::clone(&m)));
        m
    }
}

/// This machine, read at most once per [`REFRESH`].
pub fn current() -> Arc<MachineInfo> {
    static KEPT: Kept = Kept(Mutex::new(None));
    KEPT.get(Instant::now(), || MachineInfo::read(Path::new("/")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reading_is_kept_for_the_refresh_interval() {
        let kept = Kept::default();
        let t0 = Instant::now();
        let one = |n| {
            move || MachineInfo {
                cpu_cores: n,
                ..MachineInfo::default()
            }
        };
        assert_eq!(kept.get(t0, one(1)).cpu_cores, 1);
        assert_eq!(kept.get(t0 + REFRESH / 2, one(2)).cpu_cores, 1);
        assert_eq!(kept.get(t0 + REFRESH, one(3)).cpu_cores, 3);
        assert_eq!(kept.get(t0 + REFRESH + REFRESH / 2, one(4)).cpu_cores, 3);
    }

    #[test]
    fn cpu_lists() {
        assert_eq!(parse_cpu_list("0-1\n"), [0, 1]);
        assert_eq!(parse_cpu_list("0-2,5,7-8"), [0, 1, 2, 5, 7, 8]);
        assert_eq!(parse_cpu_list("3"), [3]);
        assert_eq!(parse_cpu_list(""), Vec::<u32>::new());
        assert_eq!(parse_cpu_list("x,2-1,4"), [4]);
    }

    #[test]
    fn meminfo_lines() {
        let m = "MemTotal:       24576000 kB\nSwapCached: 0 kB\nSwapTotal:      1024 kB\n";
        assert_eq!(meminfo_bytes(m, "MemTotal"), 24_576_000 * 1024);
        assert_eq!(meminfo_bytes(m, "SwapTotal"), 1024 * 1024);
        assert_eq!(meminfo_bytes(m, "Swap"), 0);
        assert_eq!(meminfo_bytes("", "MemTotal"), 0);
    }

    #[test]
    fn reads_a_tree() {
        let root = std::env::temp_dir().join(format!("kl-machine-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let write = |rel: &str, text: &str| {
            let p = root.join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        };
        // Two sockets of two cores with two threads each; cpu7 offline.
        write("sys/devices/system/cpu/online", "0-6\n");
        for (cpu, package, core) in [
            (0, 0, 0),
            (1, 0, 0),
            (2, 0, 1),
            (3, 0, 1),
            (4, 1, 0),
            (5, 1, 0),
            (6, 1, 1),
            (7, 1, 1),
        ] {
            write(
                &format!("sys/devices/system/cpu/cpu{cpu}/topology/physical_package_id"),
                &format!("{package}\n"),
            );
            write(
                &format!("sys/devices/system/cpu/cpu{cpu}/topology/core_id"),
                &format!("{core}\n"),
            );
        }
        write("proc/meminfo", "MemTotal: 2048 kB\nSwapTotal: 512 kB\n");
        write("proc/sys/kernel/random/boot_id", "b-1\n");
        write("var/lib/dbus/machine-id", "m-1\n");
        let m = MachineInfo::read(&root);
        assert_eq!(
            m,
            MachineInfo {
                cpu_cores: 7,
                cpu_physical_cores: 4,
                cpu_sockets: 2,
                memory_bytes: 2048 * 1024,
                swap_bytes: 512 * 1024,
                boot_id: "b-1".into(),
                machine_id: "m-1".into(),
                system_uuid: String::new(),
            }
        );
        std::fs::remove_dir_all(&root).unwrap();
    }
}
