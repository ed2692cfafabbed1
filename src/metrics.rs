//! The agent's own metrics (`/metrics`), kept in a registry handed to
//! whoever records them: pod start latency, sync and manifest errors,
//! containerd call latencies, and process figures.

use std::sync::atomic::AtomicU64;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Operation {
    pub operation: String,
}

pub struct AgentMetrics {
    registry: Registry,
    /// Seconds from a pod's worker start to all its containers running.
    pub pod_start: Histogram,
    pub sync_errors: Counter,
    pub manifest_errors: Gauge<i64, std::sync::atomic::AtomicI64>,
    pub containerd: Family<Operation, Histogram>,
    /// Served apart, on `/metrics/probes`, as the kubelet does.
    pub probes: std::sync::Arc<crate::probe::metrics::ProbeMetrics>,
}

impl std::fmt::Debug for AgentMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AgentMetrics")
    }
}

fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.005, 2.0, 14))
}

impl Default for AgentMetrics {
    fn default() -> Self {
        AgentMetrics::new()
    }
}

impl AgentMetrics {
    pub fn new() -> AgentMetrics {
        let mut registry = Registry::default();
        let pod_start = latency_histogram();
        let sync_errors = Counter::<u64, AtomicU64>::default();
        let manifest_errors = Gauge::default();
        let containerd = Family::<Operation, Histogram>::new_with_constructor(latency_histogram);
        registry.register(
            "kubelet_pod_start_duration_seconds",
            "Duration from a pod's worker starting to all its containers running",
            pod_start.clone(),
        );
        registry.register(
            "kubelet_lite_sync_errors",
            "Failed attempts to set up a pod or start a container",
            sync_errors.clone(),
        );
        registry.register(
            "kubelet_lite_manifest_errors",
            "Problems found in the static pod directory at the last read",
            manifest_errors.clone(),
        );
        registry.register(
            "kubelet_lite_containerd_request_duration_seconds",
            "Latency of containerd calls by operation",
            containerd.clone(),
        );
        registry.register_collector(Box::new(ProcessCollector));
        AgentMetrics {
            registry,
            pod_start,
            sync_errors,
            manifest_errors,
            containerd,
            probes: Default::default(),
        }
    }

    pub fn observe_containerd(&self, operation: &str, seconds: f64) {
        self.containerd
            .get_or_create(&Operation {
                operation: operation.to_string(),
            })
            .observe(seconds);
    }

    /// Text exposition of everything.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String");
        out
    }
}

/// `process_*` metrics of the agent, read from /proc/self at scrape time.
#[derive(Debug)]
struct ProcessCollector;

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
        // Fields after the command name (which may contain spaces).
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map(|(_, r)| r.split_whitespace().collect())
            .unwrap_or_default();
        let field = |i: usize| {
            fields
                .get(i)
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        // SAFETY: sysconf only reads system values.
        let (ticks, page) = unsafe {
            (
                libc::sysconf(libc::_SC_CLK_TCK).max(1) as f64,
                u64::try_from(libc::sysconf(libc::_SC_PAGESIZE)).unwrap_or(4096),
            )
        };
        // utime and stime are fields 14 and 15 of stat, 11 and 12 here.
        let cpu = (field(11) + field(12)) as f64 / ticks;
        let rss = field(21) * page;
        let fds = std::fs::read_dir("/proc/self/fd")
            .map(|d| i64::try_from(d.count()).unwrap_or(i64::MAX))
            .unwrap_or(0);
        let counter = ConstCounter::new(cpu);
        counter.encode(encoder.encode_descriptor(
            "process_cpu_seconds",
            "Total user and system CPU time spent in seconds",
            None,
            counter.metric_type(),
        )?)?;
        let rss_gauge = ConstGauge::new(i64::try_from(rss).unwrap_or(i64::MAX));
        rss_gauge.encode(encoder.encode_descriptor(
            "process_resident_memory_bytes",
            "Resident memory size in bytes",
            None,
            rss_gauge.metric_type(),
        )?)?;
        let fd_gauge = ConstGauge::new(fds);
        fd_gauge.encode(encoder.encode_descriptor(
            "process_open_fds",
            "Number of open file descriptors",
            None,
            fd_gauge.metric_type(),
        )?)?;
        Ok(())
    }
}
