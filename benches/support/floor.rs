//! The floor under a scrape's CPU: the files `/metrics/cadvisor` reads for
//! the agent's pods, read alone in the same run. Each file is opened once
//! and read with one `pread` per pass; nothing is parsed but the task
//! counts that decide, as in the agent, whether a process list is read.
//! What the agent spends above this is its own work (parsing, the text,
//! HTTP); the reads themselves cost what the kernel makes them cost on the
//! day, which moves with the host.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// v1's "no limit" starts here (the kernel's page-rounded `LONG_MAX`).
const V1_UNLIMITED: u64 = 1 << 62;

/// One pod or container cgroup, as a scrape reads it.
struct Cgroup {
    /// Read at every pass.
    counters: Vec<File>,
    /// `pids.current`: decides whether the process list is read.
    pids: Option<File>,
    procs: Option<File>,
    /// A pod's cgroup, read after its containers': its own tasks are its
    /// count minus theirs.
    pod: bool,
}

pub struct Floor {
    cgroups: Vec<Cgroup>,
    /// Read once a pass: the host's OOM kill count (v1) and each pod's
    /// network counters.
    others: Vec<File>,
    buf: Vec<u8>,
}

/// A v1 controller's hierarchy (or `unified`, a hybrid host's v2 tree).
fn v1_mount(controller: &str) -> PathBuf {
    Path::new("/sys/fs/cgroup").join(controller)
}

fn is_v2() -> bool {
    Path::new("/sys/fs/cgroup/cgroup.controllers").exists()
}

fn open(path: &Path) -> Option<File> {
    File::open(path).ok()
}

fn number(path: &Path) -> Option<i64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// The directories below `dir` (names only), sorted.
fn subdirs(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.path())
        .collect();
    out.sort();
    out
}

/// Pod cgroups below `dir` (cgroupfs `pod<uid>`, systemd `...-pod<uid>.slice`).
fn pod_dirs(dir: &Path, out: &mut Vec<PathBuf>) {
    for d in subdirs(dir) {
        let name = d.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.starts_with("pod") || name.contains("-pod") {
            out.push(d);
        } else {
            pod_dirs(&d, out);
        }
    }
}

impl Floor {
    /// The files of the pods and containers below the agent's
    /// `cgroup_root` (as the agent's configuration gives it).
    pub fn open(cgroup_root: &str) -> Floor {
        let root = cgroup_root.trim_start_matches('/');
        let v2 = is_v2();
        let tree = if v2 {
            PathBuf::from("/sys/fs/cgroup")
        } else {
            v1_mount("memory")
        };
        let mut pods = vec![];
        pod_dirs(&tree.join(root), &mut pods);
        let mut cgroups = vec![];
        let mut others = vec![];
        if !v2 {
            others.extend(open(Path::new("/proc/vmstat")));
        }
        for pod in pods {
            let rel_pod = pod.strip_prefix(&tree).unwrap().to_path_buf();
            let containers = subdirs(&pod);
            if let Some(c) = containers.first() {
                let procs = std::fs::read_to_string(c.join("cgroup.procs")).unwrap_or_default();
                if let Some(pid) = procs.lines().next()
                    && std::fs::read_link(format!("/proc/{pid}/ns/net")).ok()
                        != std::fs::read_link("/proc/self/ns/net").ok()
                {
                    others.extend(open(Path::new(&format!("/proc/{pid}/net/dev"))));
                }
            }
            for c in &containers {
                let rel = c.strip_prefix(&tree).unwrap();
                cgroups.push(Cgroup::open(rel, v2, false));
            }
            cgroups.push(Cgroup::open(&rel_pod, v2, true));
        }
        Floor {
            cgroups,
            others,
            buf: vec![0; 64 * 1024],
        }
    }

    /// How many cgroups a pass reads.
    pub fn cgroups(&self) -> usize {
        self.cgroups.len()
    }

    /// One pass over the files; the CPU time this thread spent on it.
    pub fn pass(&mut self) -> Duration {
        let t0 = thread_cpu();
        for f in &self.others {
            let _ = f.read_at(&mut self.buf, 0);
        }
        let mut below = 0;
        for c in &self.cgroups {
            for f in &c.counters {
                let _ = f.read_at(&mut self.buf, 0);
            }
            let threads = c.pids.as_ref().and_then(|f| {
                let n = f.read_at(&mut self.buf, 0).ok()?;
                std::str::from_utf8(&self.buf[..n])
                    .ok()?
                    .trim()
                    .parse::<u64>()
                    .ok()
            });
            let own = match (threads, c.pod) {
                (Some(t), false) => {
                    below += t;
                    Some(t)
                }
                (Some(t), true) => t.checked_sub(std::mem::take(&mut below)),
                (None, _) => None,
            };
            if own.is_none_or(|n| n > 1)
                && let Some(p) = &c.procs
            {
                let _ = p.read_at(&mut self.buf, 0);
            }
        }
        thread_cpu() - t0
    }
}

impl Cgroup {
    /// The files the agent's scrape reads for cgroup `rel` (see the
    /// agent's `cgroup::cpu::usage`, `memory::usage` and `pids::tasks`).
    fn open(rel: &Path, v2: bool, pod: bool) -> Cgroup {
        let mut counters = vec![];
        if v2 {
            let d = Path::new("/sys/fs/cgroup").join(rel);
            for f in [
                "cpu.stat",
                "memory.stat",
                "memory.current",
                "memory.events",
                "memory.swap.current",
            ] {
                counters.extend(open(&d.join(f)));
            }
            return Cgroup {
                counters,
                pids: open(&d.join("pids.current")),
                procs: open(&d.join("cgroup.procs")),
                pod,
            };
        }
        let at = |controller: &str| v1_mount(controller).join(rel);
        let unified_cpu = at("unified").join("cpu.stat");
        if std::fs::read_to_string(&unified_cpu).is_ok_and(|t| t.contains("usage_usec ")) {
            counters.extend(open(&unified_cpu));
        } else {
            counters.extend(open(&at("cpuacct").join("cpuacct.stat")));
            counters.extend(open(&at("cpuacct").join("cpuacct.usage")));
        }
        if number(&at("cpu").join("cpu.cfs_quota_us")).is_some_and(|q| q > 0) {
            counters.extend(open(&at("cpu").join("cpu.stat")));
        }
        let memory = at("memory");
        counters.extend(open(&memory.join("memory.usage_in_bytes")));
        counters.extend(open(&memory.join("memory.stat")));
        if number(&memory.join("memory.limit_in_bytes"))
            .is_some_and(|l| u64::try_from(l).is_ok_and(|l| l < V1_UNLIMITED))
        {
            counters.extend(open(&memory.join("memory.failcnt")));
        }
        let procs_dir = if at("unified").is_dir() {
            at("unified")
        } else {
            memory
        };
        Cgroup {
            counters,
            pids: open(&at("pids").join("pids.current")),
            procs: open(&procs_dir.join("cgroup.procs")),
            pod,
        }
    }
}

/// This thread's CPU time so far.
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec it is given.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(
        u64::try_from(ts.tv_sec).unwrap_or(0),
        u32::try_from(ts.tv_nsec).unwrap_or(0),
    )
}
