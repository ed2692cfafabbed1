//! `/metrics/cadvisor`, `/metrics/resource` and `/stats/summary`: the
//! container statistics a kubelet serves, computed from cgroup files at
//! scrape time (volume usage: from the background collector's latest
//! figures). Names and labels follow cAdvisor and the kubelet, so that
//! Prometheus rules and metrics-server work unchanged.
//!
//! The exposition is the Prometheus text format 0.0.4, written here: these
//! families are rebuilt on every scrape with cAdvisor's exact names (a
//! client library's registry is for long-lived instruments, and emits
//! OpenMetrics with its own suffix rules).

use std::collections::HashMap;
use std::fmt::Write;
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use serde_json::{Value, json};

use k8s_openapi::api::core::v1::PodSpec;

use crate::cgroup::{Below, CgroupStats, Cgroups, QosClass};
use crate::manifest::StaticPod;
use crate::pod::ContainerState;
use crate::pod::{PodEntry, Store};
use crate::stats::volumes::{self, Figure, VolumeStats};
use crate::stats::{self, NetDev, NetFiles};
use crate::volume::Source;

/// One sample: its rendered label set (`{a="b",...}`, shared by the
/// samples of one container), value, optional timestamp (ms).
type Sample = (Arc<str>, f64, Option<i64>);

/// Renders a label set once; every family of a container reuses it.
fn render<V: AsRef<str>>(labels: &[(&'static str, V)]) -> Arc<str> {
    if labels.is_empty() {
        return Arc::from("");
    }
    let mut out = String::with_capacity(
        2 + labels
            .iter()
            .map(|(k, v)| k.len() + v.as_ref().len() + 4)
            .sum::<usize>(),
    );
    out.push('{');
    for (i, (k, v)) in labels.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(k);
        out.push_str("=\"");
        push_escaped(&mut out, v.as_ref());
        out.push('"');
    }
    out.push('}');
    Arc::from(out)
}

struct Family {
    name: &'static str,
    help: &'static str,
    kind: &'static str,
    samples: Vec<Sample>,
}

/// A label value as the text format escapes it.
fn push_escaped(out: &mut String, v: &str) {
    if memchr::memchr3(b'\\', b'"', b'\n', v.as_bytes()).is_none() {
        out.push_str(v);
        return;
    }
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// The exposition text of `families`, made piece by piece as the response
/// is sent: a piece is about [`Chunks::SIZE`] (a scrape at 110 pods is
/// 1.4 MB). Pieces of that size are reused from the allocator's free lists;
/// one buffer of the whole text was mapped afresh, and faulted in page by
/// page, at every scrape.
pub struct Chunks {
    families: std::vec::IntoIter<Family>,
    current: Option<(Family, usize)>,
}

impl Chunks {
    const SIZE: usize = 64 * 1024;

    /// The whole text at once.
    pub fn text(self) -> String {
        self.map(|b| String::from_utf8_lossy(&b).into_owned())
            .collect()
    }
}

impl Iterator for Chunks {
    type Item = bytes::Bytes;

    fn next(&mut self) -> Option<bytes::Bytes> {
        let mut out = String::with_capacity(Chunks::SIZE + 1024);
        while out.len() < Chunks::SIZE {
            let (f, from) = match self.current.take() {
                Some(current) => current,
                None => {
                    let Some(f) = self.families.find(|f| !f.samples.is_empty()) else {
                        break;
                    };
                    let _ = writeln!(out, "# HELP {} {}", f.name, f.help);
                    let _ = writeln!(out, "# TYPE {} {}", f.name, f.kind);
                    (f, 0)
                }
            };
            let mut done = from;
            for (labels, value, ts) in &f.samples[from..] {
                if out.len() >= Chunks::SIZE {
                    break;
                }
                out.push_str(f.name);
                out.push_str(labels);
                out.push(' ');
                write_value(&mut out, *value);
                if let Some(t) = ts {
                    out.push(' ');
                    out.push_str(itoa::Buffer::new().format(*t));
                }
                out.push('\n');
                done += 1;
            }
            if done < f.samples.len() {
                self.current = Some((f, done));
            }
        }
        (!out.is_empty()).then(|| bytes::Bytes::from(out))
    }
}

/// A sample value: integers without a fraction (most counters and gauges
/// here), others in their shortest form.
fn write_value(out: &mut String, v: f64) {
    // Integral and exact in an i64: the integer's digits are the same text
    // as the float's, made faster.
    if v.fract() == 0.0 && v.abs() < 1e15 {
        #[allow(clippy::cast_possible_truncation, reason = "integral and below 2^53")]
        out.push_str(itoa::Buffer::new().format(v as i64));
    } else {
        let _ = write!(out, "{v}");
    }
}

fn encode(families: Vec<Family>) -> Chunks {
    Chunks {
        families: families.into_iter(),
        current: None,
    }
}

fn now_ms() -> i64 {
    let ms = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis();
    i64::try_from(ms).unwrap_or(i64::MAX)
}

fn secs(t: SystemTime) -> f64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

/// A running container with its cgroup's stats.
struct Row {
    c: Running,
    cgroup: String,
    stats: CgroupStats,
}

/// What a scrape takes of a pod from the store: its running containers,
/// not a copy of its whole status.
struct Seen {
    pod: Arc<StaticPod>,
    qos: QosClass,
    start_time: Option<SystemTime>,
    running: Vec<Running>,
}

struct Running {
    name: String,
    image: String,
    id: String,
    started_at: SystemTime,
    pid: Option<u32>,
}

impl Seen {
    fn of(entry: &PodEntry) -> Seen {
        let status = &entry.status;
        let running = status
            .init_containers
            .iter()
            .chain(&status.containers)
            .filter_map(|c| match (&c.state, &c.container_id) {
                (ContainerState::Running { started_at }, Some(id)) => Some(Running {
                    name: c.name.clone(),
                    image: c.image.clone(),
                    id: id.clone(),
                    started_at: *started_at,
                    pid: c.pid,
                }),
                _ => None,
            })
            .collect();
        Seen {
            pod: entry.pod.clone(),
            qos: status.qos_class.unwrap_or(QosClass::BestEffort),
            start_time: status.start_time,
            running,
        }
    }
}

/// A pod with its own cgroup's stats and its containers.
struct PodRow {
    pod: Arc<StaticPod>,
    start_time: Option<SystemTime>,
    cgroup: String,
    stats: Option<CgroupStats>,
    containers: Vec<Row>,
    net: Vec<NetDev>,
}

/// Reads everything one scrape needs; the pods' network counters only with
/// `nets` (`/metrics/resource` has no network series).
fn collect(store: &Store, cgroups: &Cgroups, nets: Option<&NetFiles>) -> Vec<PodRow> {
    let scrape = cgroups.begin_scrape();
    let entries: Vec<Seen> = store.read().values().map(Seen::of).collect();
    // Reading cgroup files is system-call bound: spread the pods over the
    // CPUs for the latency of one scrape (the CPU spent stays the same).
    // Counted once: the count reads the agent's own cgroup files.
    static THREADS: std::sync::LazyLock<usize> = std::sync::LazyLock::new(|| {
        std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .min(4)
    });
    let threads = *THREADS;
    let chunk = entries.len().div_ceil(threads).max(1);
    let mut entries = entries.into_iter();
    let parts = std::iter::from_fn(|| {
        let part: Vec<Seen> = entries.by_ref().take(chunk).collect();
        (!part.is_empty()).then_some(part)
    });
    let rows: Vec<PodRow> = std::thread::scope(|scope| {
        let handles: Vec<_> = parts
            .map(|part| scope.spawn(move || collect_pods(part, cgroups, nets)))
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_default())
            .collect()
    });
    // The configured values of cgroups that are gone are forgotten, so
    // that the cache follows the pods through any churn.
    cgroups.specs().forget_unread(scrape);
    // A pod removed after the store was read may have had its file kept
    // after `NetFiles::follow` saw the removal: checked against the store
    // as it is now.
    if let Some(nets) = nets {
        nets.keep_pods_in(store);
    }
    rows
}

fn collect_pods(pods: Vec<Seen>, cgroups: &Cgroups, nets: Option<&NetFiles>) -> Vec<PodRow> {
    let (manager, specs) = (cgroups.manager(), cgroups.specs());
    let mut out = vec![];
    for seen in pods {
        let Seen {
            pod,
            qos,
            start_time,
            running,
        } = seen;
        let pod_cgroup = manager.pod_cgroup(qos, &pod.uid);
        let mut containers = vec![];
        let mut net = None;
        // The tasks of the containers read, for the pod's own count.
        let mut tasks = 0;
        for c in running {
            let cgroup = manager.container_cgroup(qos, &pod.uid, &c.id);
            let below = if may_make_cgroups(pod.spec(), &c.name) {
                Below::Unknown
            } else {
                Below::Nothing
            };
            let Some(stats) = manager.stats(&cgroup, Some(specs), below) else {
                continue;
            };
            tasks += stats.threads;
            if net.is_none()
                && let Some(nets) = nets
                && let (Some(pid), Some(started)) = (c.pid, start_time)
                && pod.spec().host_network != Some(true)
            {
                // Any process of the pod sees its namespace's counters.
                // cAdvisor leaves loopback out (its isIgnoredDevice).
                let mut devs = nets.read(&pod.uid, started, pid).unwrap_or_default();
                devs.retain(|d| d.interface != "lo");
                net = Some(devs);
            }
            containers.push(Row { c, cgroup, stats });
        }
        let stats = manager.stats(&pod_cgroup, Some(specs), Below::Tasks(tasks));
        out.push(PodRow {
            pod,
            start_time,
            cgroup: pod_cgroup,
            stats,
            containers,
            net: net.unwrap_or_default(),
        });
    }
    out
}

/// Whether a container can make cgroups below its own: one that adds
/// `CAP_SYS_ADMIN` can mount a cgroup filesystem of its own (the one it is
/// given is read-only).
fn may_make_cgroups(spec: &PodSpec, container: &str) -> bool {
    spec.init_containers
        .iter()
        .flatten()
        .chain(&spec.containers)
        .filter(|c| c.name == container)
        .filter_map(|c| {
            c.security_context
                .as_ref()?
                .capabilities
                .as_ref()?
                .add
                .as_ref()
        })
        .flatten()
        .any(|cap| matches!(cap.trim_start_matches("CAP_"), "SYS_ADMIN" | "ALL"))
}

/// Whether the cgroup has a CPU quota (the CFS counters only move then).
fn quota(s: &CgroupStats) -> bool {
    s.cpu_quota_us > 0
}

/// `/metrics/cadvisor`.
pub fn cadvisor(
    store: &Store,
    cgroups: &Cgroups,
    nets: &NetFiles,
    root_dir: &std::path::Path,
    volume_stats: &VolumeStats,
) -> Chunks {
    let pods = collect(store, cgroups, Some(nets));
    // `None`: no sample. As cAdvisor, the CFS series and the quota only
    // for a cgroup with a CPU quota.
    type Get = fn(&CgroupStats) -> Option<f64>;
    let defs: [(&'static str, &'static str, &'static str, Get); 19] = [
        (
            "container_cpu_usage_seconds_total",
            "Cumulative cpu time consumed in seconds.",
            "counter",
            |s| Some(s.cpu_usage_ns as f64 / 1e9),
        ),
        (
            "container_cpu_user_seconds_total",
            "Cumulative user cpu time consumed in seconds.",
            "counter",
            |s| Some(s.cpu_user_ns as f64 / 1e9),
        ),
        (
            "container_cpu_system_seconds_total",
            "Cumulative system cpu time consumed in seconds.",
            "counter",
            |s| Some(s.cpu_system_ns as f64 / 1e9),
        ),
        (
            "container_cpu_cfs_periods_total",
            "Number of elapsed enforcement period intervals.",
            "counter",
            |s| quota(s).then_some(s.cfs_periods as f64),
        ),
        (
            "container_cpu_cfs_throttled_periods_total",
            "Number of throttled period intervals.",
            "counter",
            |s| quota(s).then_some(s.cfs_throttled_periods as f64),
        ),
        (
            "container_cpu_cfs_throttled_seconds_total",
            "Total time duration the container has been throttled.",
            "counter",
            |s| quota(s).then_some(s.cfs_throttled_ns as f64 / 1e9),
        ),
        (
            "container_memory_usage_bytes",
            "Current memory usage in bytes, including all memory regardless of when it was accessed",
            "gauge",
            |s| Some(s.memory_usage as f64),
        ),
        (
            "container_memory_working_set_bytes",
            "Current working set in bytes.",
            "gauge",
            |s| Some(s.memory_working_set as f64),
        ),
        (
            "container_memory_rss",
            "Size of RSS in bytes.",
            "gauge",
            |s| Some(s.memory_rss as f64),
        ),
        (
            "container_memory_cache",
            "Number of bytes of page cache memory.",
            "gauge",
            |s| Some(s.memory_cache as f64),
        ),
        (
            "container_memory_swap",
            "Container swap usage in bytes.",
            "gauge",
            |s| Some(s.memory_swap as f64),
        ),
        (
            "container_memory_failcnt",
            "Number of memory usage hits limits",
            "counter",
            |s| Some(s.memory_failcnt as f64),
        ),
        (
            "container_oom_events_total",
            "Count of out of memory events observed for the container",
            "counter",
            |s| Some(s.oom_kills as f64),
        ),
        (
            "container_spec_cpu_period",
            "CPU period of the container.",
            "gauge",
            |s| Some(s.cpu_period_us as f64),
        ),
        (
            "container_spec_cpu_quota",
            "CPU quota of the container.",
            "gauge",
            |s| quota(s).then_some(s.cpu_quota_us as f64),
        ),
        (
            "container_spec_cpu_shares",
            "CPU share of the container.",
            "gauge",
            |s| Some(s.cpu_shares as f64),
        ),
        (
            "container_spec_memory_limit_bytes",
            "Memory limit for the container.",
            "gauge",
            |s| Some(s.memory_limit as f64),
        ),
        (
            "container_processes",
            "Number of processes running inside the container.",
            "gauge",
            |s| Some(s.processes as f64),
        ),
        (
            "container_threads",
            "Number of threads running inside the container.",
            "gauge",
            |s| Some(s.threads as f64),
        ),
    ];
    // A sample per container and pod in each family.
    let rows = pods.iter().map(|p| p.containers.len() + 1).sum();
    let mut families: Vec<Family> = defs
        .iter()
        .map(|(name, help, kind, _)| Family {
            name,
            help,
            kind,
            samples: Vec::with_capacity(rows),
        })
        .collect();
    let mut start = Family {
        name: "container_start_time_seconds",
        help: "Start time of the container since unix epoch in seconds.",
        kind: "gauge",
        samples: vec![],
    };
    fn labels<'a>(
        container: &'a str,
        id: &'a str,
        image: &'a str,
        name: &'a str,
        ns: &'a str,
        pod: &'a str,
    ) -> Vec<(&'static str, &'a str)> {
        vec![
            ("container", container),
            ("id", id),
            ("image", image),
            ("name", name),
            ("namespace", ns),
            ("pod", pod),
        ]
    }
    let mut net_families: Vec<Family> = [
        (
            "container_network_receive_bytes_total",
            "Cumulative count of bytes received",
        ),
        (
            "container_network_receive_packets_total",
            "Cumulative count of packets received",
        ),
        (
            "container_network_receive_errors_total",
            "Cumulative count of errors encountered while receiving",
        ),
        (
            "container_network_receive_packets_dropped_total",
            "Cumulative count of packets dropped while receiving",
        ),
        (
            "container_network_transmit_bytes_total",
            "Cumulative count of bytes transmitted",
        ),
        (
            "container_network_transmit_packets_total",
            "Cumulative count of packets transmitted",
        ),
        (
            "container_network_transmit_errors_total",
            "Cumulative count of errors encountered while transmitting",
        ),
        (
            "container_network_transmit_packets_dropped_total",
            "Cumulative count of packets dropped while transmitting",
        ),
    ]
    .into_iter()
    .map(|(name, help)| Family {
        name,
        help,
        kind: "counter",
        samples: vec![],
    })
    .collect();
    let mut fs = Family {
        name: "container_fs_usage_bytes",
        help: "Number of bytes that are consumed by the container on this filesystem.",
        kind: "gauge",
        samples: vec![],
    };
    for p in &pods {
        let (ns, pod) = (p.pod.namespace.as_str(), p.pod.name.as_str());
        for r in &p.containers {
            let l = render(&labels(&r.c.name, &r.cgroup, &r.c.image, &r.c.id, ns, pod));
            for (f, (_, _, _, get)) in families.iter_mut().zip(&defs) {
                if let Some(v) = get(&r.stats) {
                    f.samples.push((l.clone(), v, None));
                }
            }
            start.samples.push((l, secs(r.c.started_at), None));
        }
        // The pod cgroup: container="", as the kubelet exposes it.
        if let Some(s) = &p.stats {
            let base = labels("", &p.cgroup, "", "", ns, pod);
            let l = render(&base);
            for (f, (_, _, _, get)) in families.iter_mut().zip(&defs) {
                if let Some(v) = get(s) {
                    f.samples.push((l.clone(), v, None));
                }
            }
            for d in &p.net {
                let mut l = base.clone();
                l.push(("interface", &d.interface));
                let l = render(&l);
                let values = [
                    d.rx_bytes,
                    d.rx_packets,
                    d.rx_errors,
                    d.rx_dropped,
                    d.tx_bytes,
                    d.tx_packets,
                    d.tx_errors,
                    d.tx_dropped,
                ];
                for (f, v) in net_families.iter_mut().zip(values) {
                    f.samples.push((l.clone(), v as f64, None));
                }
            }
        }
        for v in &p.pod.resolved.volumes {
            let Source::EmptyDir { .. } = &v.source else {
                continue;
            };
            let Some(path) = volumes::volume_dir(root_dir, &p.pod.uid, v) else {
                continue;
            };
            // The background collector's latest figure (none yet, or the
            // volume did not answer: no sample).
            if let Some(Figure::Ready { usage, .. }) = volume_stats.get(&path) {
                let device = path.display().to_string();
                let mut l = labels("", &p.cgroup, "", "", ns, pod);
                l.push(("device", &device));
                l.push(("volume", &v.name));
                fs.samples.push((render(&l), usage.used_bytes as f64, None));
            }
        }
    }
    families.push(start);
    families.extend(net_families);
    families.push(fs);
    families.extend(machine_families(&stats::machine::current()));
    encode(families)
}

/// cAdvisor's machine collector: one sample per family, labelled with the
/// machine's IDs (empty where unreadable, as cAdvisor leaves them).
fn machine_families(m: &stats::machine::MachineInfo) -> Vec<Family> {
    let labels = render(&[
        ("boot_id", &m.boot_id),
        ("machine_id", &m.machine_id),
        ("system_uuid", &m.system_uuid),
    ]);
    let families = [
        (
            "machine_cpu_cores",
            "Number of logical CPU cores.",
            m.cpu_cores as f64,
        ),
        (
            "machine_cpu_physical_cores",
            "Number of physical CPU cores.",
            m.cpu_physical_cores as f64,
        ),
        (
            "machine_cpu_sockets",
            "Number of CPU sockets.",
            m.cpu_sockets as f64,
        ),
        (
            "machine_memory_bytes",
            "Amount of memory installed on the machine.",
            m.memory_bytes as f64,
        ),
        (
            "machine_swap_bytes",
            "Amount of swap memory available on the machine.",
            m.swap_bytes as f64,
        ),
    ];
    families
        .into_iter()
        .map(|(name, help, value)| Family {
            name,
            help,
            kind: "gauge",
            samples: vec![(labels.clone(), value, None)],
        })
        .collect()
}

/// Node CPU time and memory working set, as the kubelet takes them from
/// cAdvisor's root container.
fn node_usage(cgroups: &Cgroups) -> (f64, u64, u64) {
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let kb = |key: &str| {
        meminfo
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .unwrap_or(0)
            * 1024
    };
    let total = kb("MemTotal:");
    let used = total.saturating_sub(kb("MemFree:"));
    let working_set = used.saturating_sub(kb("Inactive(file):"));
    let cpu = match cgroups
        .manager()
        .stats("/", None, Below::Unknown)
        .filter(|s| s.cpu_usage_ns > 0)
    {
        Some(s) => s.cpu_usage_ns as f64 / 1e9,
        None => {
            // cgroup v2 root: /proc/stat busy jiffies.
            let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
            let f: Vec<u64> = stat
                .lines()
                .next()
                .unwrap_or("")
                .split_whitespace()
                .skip(1)
                .filter_map(|v| v.parse().ok())
                .collect();
            // SAFETY: sysconf only reads a system value.
            let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
            let busy: u64 = f
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != 3 && *i != 4)
                .map(|(_, v)| *v)
                .sum();
            busy as f64 / hz
        }
    };
    (cpu, working_set, used)
}

/// One running container's cumulative CPU time and working set, read as
/// `/metrics/resource` reads them (what `top` turns into rates).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerUsage {
    pub namespace: String,
    pub pod: String,
    pub container: String,
    pub cpu_usage_ns: u64,
    pub memory_working_set: u64,
}

/// [`ContainerUsage`] of every running container.
pub fn usage(store: &Store, cgroups: &Cgroups) -> Vec<ContainerUsage> {
    collect(store, cgroups, None)
        .into_iter()
        .flat_map(|p| {
            let (ns, pod) = (p.pod.namespace.clone(), p.pod.name.clone());
            p.containers.into_iter().map(move |r| ContainerUsage {
                namespace: ns.clone(),
                pod: pod.clone(),
                container: r.c.name,
                cpu_usage_ns: r.stats.cpu_usage_ns,
                memory_working_set: r.stats.memory_working_set,
            })
        })
        .collect()
}

/// `/metrics/resource`: what metrics-server reads, with timestamps.
pub fn resource(store: &Store, cgroups: &Cgroups) -> Chunks {
    let pods = collect(store, cgroups, None);
    let ts = Some(now_ms());
    let (node_cpu, node_ws, _) = node_usage(cgroups);
    let fam = |name, help, kind| Family {
        name,
        help,
        kind,
        samples: vec![],
    };
    let mut node_cpu_f = fam(
        "node_cpu_usage_seconds_total",
        "Cumulative cpu time consumed by the node in core-seconds",
        "counter",
    );
    let mut node_mem_f = fam(
        "node_memory_working_set_bytes",
        "Current working set of the node in bytes",
        "gauge",
    );
    let mut c_cpu = fam(
        "container_cpu_usage_seconds_total",
        "Cumulative cpu time consumed by the container in core-seconds",
        "counter",
    );
    let mut c_mem = fam(
        "container_memory_working_set_bytes",
        "Current working set of the container in bytes",
        "gauge",
    );
    let mut c_start = fam(
        "container_start_time_seconds",
        "Start time of the container since unix epoch in seconds",
        "gauge",
    );
    let mut p_cpu = fam(
        "pod_cpu_usage_seconds_total",
        "Cumulative cpu time consumed by the pod in core-seconds",
        "counter",
    );
    let mut p_mem = fam(
        "pod_memory_working_set_bytes",
        "Current working set of the pod in bytes",
        "gauge",
    );
    let mut err = fam(
        "resource_scrape_error",
        "1 if there was an error while getting container metrics, 0 otherwise",
        "gauge",
    );
    node_cpu_f.samples.push((render::<&str>(&[]), node_cpu, ts));
    node_mem_f
        .samples
        .push((render::<&str>(&[]), node_ws as f64, ts));
    for p in &pods {
        let (ns, pod) = (p.pod.namespace.as_str(), p.pod.name.as_str());
        for r in &p.containers {
            let l = render(&[
                ("container", r.c.name.as_str()),
                ("namespace", ns),
                ("pod", pod),
            ]);
            c_cpu
                .samples
                .push((l.clone(), r.stats.cpu_usage_ns as f64 / 1e9, ts));
            c_mem
                .samples
                .push((l.clone(), r.stats.memory_working_set as f64, ts));
            c_start.samples.push((l, secs(r.c.started_at), ts));
        }
        if let Some(s) = &p.stats {
            let l = render(&[("namespace", ns), ("pod", pod)]);
            p_cpu
                .samples
                .push((l.clone(), s.cpu_usage_ns as f64 / 1e9, ts));
            p_mem.samples.push((l, s.memory_working_set as f64, ts));
        }
    }
    err.samples.push((render::<&str>(&[]), 0.0, None));
    encode(vec![
        node_cpu_f, node_mem_f, c_cpu, c_mem, c_start, p_cpu, p_mem, err,
    ])
}

/// Previous CPU samples, for rates (usageNanoCores).
#[derive(Default)]
pub struct RateState {
    last: Mutex<HashMap<String, (Instant, u64)>>,
}

impl RateState {
    /// Nanocores since the previous sample of `key`, if there was one.
    fn rate(&self, key: &str, usage_ns: u64) -> Option<u64> {
        let now = Instant::now();
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        let prev = last.insert(key.to_string(), (now, usage_ns));
        let (t, u) = prev?;
        let dt = now.duration_since(t).as_nanos() as f64;
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            reason = "a non-negative rate; a float-to-int `as` saturates, it cannot wrap"
        )]
        (dt > 0.0).then(|| (usage_ns.saturating_sub(u) as f64 * 1e9 / dt) as u64)
    }
}

fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    jiff::Timestamp::new(i64::try_from(d.as_secs()).unwrap_or(i64::MAX), 0)
        .unwrap_or(jiff::Timestamp::UNIX_EPOCH)
        .to_string()
}

fn cpu_json(key: &str, s: &CgroupStats, rates: &RateState, now: &str) -> Value {
    let mut v = json!({"time": now, "usageCoreNanoSeconds": s.cpu_usage_ns});
    if let Some(r) = rates.rate(key, s.cpu_usage_ns) {
        v["usageNanoCores"] = json!(r);
    }
    v
}

fn memory_json(s: &CgroupStats, now: &str) -> Value {
    let mut v = json!({
        "time": now,
        "usageBytes": s.memory_usage,
        "workingSetBytes": s.memory_working_set,
        "rssBytes": s.memory_rss,
        "pageFaults": 0,
        "majorPageFaults": 0,
    });
    if s.memory_limit > 0 {
        v["availableBytes"] = json!(s.memory_limit.saturating_sub(s.memory_working_set));
    }
    v
}

/// `/stats/summary`: the kubelet's Summary API (stats/v1alpha1).
pub fn summary(
    store: &Store,
    cgroups: &Cgroups,
    nets: &NetFiles,
    node_name: &str,
    root_dir: &std::path::Path,
    rates: &RateState,
    volume_stats: &VolumeStats,
) -> Value {
    let now = rfc3339(SystemTime::now());
    let pods = collect(store, cgroups, Some(nets));
    let (node_cpu, node_ws, node_used) = node_usage(cgroups);
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "CPU seconds are non-negative; a float-to-int `as` saturates, it cannot wrap"
    )]
    let node_cpu_ns = (node_cpu * 1e9) as u64;
    let capacity = crate::node::machine();
    let mut node_cpu_json = json!({"time": now, "usageCoreNanoSeconds": node_cpu_ns});
    if let Some(r) = rates.rate("node", node_cpu_ns) {
        node_cpu_json["usageNanoCores"] = json!(r);
    }
    let node = json!({
        "nodeName": node_name,
        "startTime": now,
        "cpu": node_cpu_json,
        "memory": {
            "time": now,
            "usageBytes": node_used,
            "workingSetBytes": node_ws,
            "availableBytes": u64::try_from(capacity.memory).unwrap_or(0).saturating_sub(node_ws),
        },
    });
    let pods: Vec<Value> = pods
        .iter()
        .map(|p| {
            let pod = &p.pod;
            let containers: Vec<Value> = p
                .containers
                .iter()
                .map(|r| {
                    json!({
                        "name": r.c.name,
                        "startTime": rfc3339(r.c.started_at),
                        "cpu": cpu_json(&r.c.id, &r.stats, rates, &now),
                        "memory": memory_json(&r.stats, &now),
                    })
                })
                .collect();
            // Figures from the background collector: a volume not measured
            // yet is left out; one that did not answer is listed by name
            // without figures (every FsStats figure is optional).
            let volumes: Vec<Value> = pod
                .resolved
                .volumes
                .iter()
                .filter_map(|v| {
                    let dir = volumes::volume_dir(root_dir, &pod.uid, v)?;
                    Some(match volume_stats.get(&dir)? {
                        Figure::Ready { usage, time } => json!({
                            "time": rfc3339(time),
                            "name": v.name,
                            "usedBytes": usage.used_bytes,
                            "capacityBytes": usage.capacity_bytes,
                            "availableBytes": usage.available_bytes,
                            "inodes": usage.inodes,
                            "inodesFree": usage.inodes_free,
                        }),
                        Figure::Unavailable { time, .. } => {
                            json!({"time": rfc3339(time), "name": v.name})
                        }
                    })
                })
                .collect();
            let mut v = json!({
                "podRef": {"name": pod.name, "namespace": pod.namespace, "uid": pod.uid},
                "startTime": p.start_time.map(rfc3339),
                "containers": containers,
                "volume": volumes,
            });
            if let Some(s) = &p.stats {
                v["cpu"] = cpu_json(&format!("pod/{}", pod.uid), s, rates, &now);
                v["memory"] = memory_json(s, &now);
            }
            if !p.net.is_empty() {
                v["network"] = network_json(&p.net, &now);
            }
            v
        })
        .collect();
    json!({"node": node, "pods": pods})
}

/// The Summary API's NetworkStats: the default interface (`eth0`, as the
/// kubelet picks it) inline, every interface in `interfaces`.
fn network_json(net: &[stats::NetDev], now: &str) -> Value {
    let one = |d: &stats::NetDev| json!({"name": d.interface, "rxBytes": d.rx_bytes, "rxErrors": d.rx_errors, "txBytes": d.tx_bytes, "txErrors": d.tx_errors});
    let default = net
        .iter()
        .find(|d| d.interface == crate::network::IFNAME)
        .unwrap_or(&net[0]);
    let mut v = one(default);
    v["time"] = json!(now);
    v["interfaces"] = net.iter().map(one).collect();
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_network_has_the_default_interface_and_all() {
        let d = |name: &str, rx: u64| stats::NetDev {
            interface: name.into(),
            rx_bytes: rx,
            tx_bytes: rx * 2,
            ..Default::default()
        };
        let v = network_json(&[d("net1", 5), d("eth0", 7)], "T");
        assert_eq!(v["name"], "eth0");
        assert_eq!(v["rxBytes"], 7);
        assert_eq!(v["txBytes"], 14);
        assert_eq!(v["time"], "T");
        assert_eq!(v["interfaces"].as_array().unwrap().len(), 2);
        assert_eq!(v["interfaces"][0]["name"], "net1");
    }

    #[test]
    fn text_format() {
        let f = Family {
            name: "x_total",
            help: "An x.",
            kind: "counter",
            samples: vec![
                (render(&[("a", "q\"uo\\te\n")]), 1.5, Some(7)),
                (render::<&str>(&[]), f64::NAN, None),
            ],
        };
        assert_eq!(
            encode(vec![f]).text(),
            "# HELP x_total An x.\n# TYPE x_total counter\nx_total{a=\"q\\\"uo\\\\te\\n\"} 1.5 7\nx_total NaN\n"
        );
    }

    #[test]
    fn pieces_join_to_the_whole_text() {
        let family = |name: &'static str| Family {
            name,
            help: "H.",
            kind: "gauge",
            samples: (0..10_000)
                .map(|i| (render(&[("i", i.to_string())]), f64::from(i) + 0.5, None))
                .collect(),
        };
        let empty = Family {
            samples: vec![],
            ..family("z")
        };
        let pieces: Vec<_> = encode(vec![family("a"), empty, family("b")]).collect();
        assert!(pieces.len() > 2, "{} pieces", pieces.len());
        assert!(pieces.iter().all(|p| p.len() < Chunks::SIZE + 100));
        let text: String = pieces
            .iter()
            .map(|p| std::str::from_utf8(p).unwrap())
            .collect();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2 * (10_000 + 2));
        assert_eq!(lines[0], "# HELP a H.");
        assert_eq!(lines[2], "a{i=\"0\"} 0.5");
        assert_eq!(lines[10_001], "a{i=\"9999\"} 9999.5");
        assert_eq!(lines[10_002], "# HELP b H.");
        assert_eq!(lines[20_003], "b{i=\"9999\"} 9999.5");
        for (i, l) in lines.iter().enumerate() {
            assert!(l.starts_with('#') || l.ends_with(".5"), "line {i}: {l}");
        }
        assert!(!text.contains("# HELP z"));
    }

    #[test]
    fn integral_values_print_without_a_fraction() {
        for (v, want) in [
            (0.0, "0"),
            (3.0, "3"),
            (1_073_741_824.0, "1073741824"),
            (-2.0, "-2"),
            (1.5, "1.5"),
            (1e20, "100000000000000000000"),
            (f64::NAN, "NaN"),
        ] {
            let mut out = String::new();
            write_value(&mut out, v);
            assert_eq!(out, want);
        }
    }

    #[test]
    fn machine_series() {
        let m = stats::machine::MachineInfo {
            cpu_cores: 2,
            cpu_physical_cores: 2,
            cpu_sockets: 1,
            memory_bytes: 1 << 30,
            swap_bytes: 0,
            boot_id: "b".into(),
            machine_id: "m".into(),
            system_uuid: String::new(),
        };
        let text = encode(machine_families(&m)).text();
        for line in [
            "# TYPE machine_cpu_cores gauge",
            "machine_cpu_cores{boot_id=\"b\",machine_id=\"m\",system_uuid=\"\"} 2",
            "machine_cpu_sockets{boot_id=\"b\",machine_id=\"m\",system_uuid=\"\"} 1",
            "machine_memory_bytes{boot_id=\"b\",machine_id=\"m\",system_uuid=\"\"} 1073741824",
            "machine_swap_bytes{boot_id=\"b\",machine_id=\"m\",system_uuid=\"\"} 0",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line} missing from\n{text}"
            );
        }
    }
}
