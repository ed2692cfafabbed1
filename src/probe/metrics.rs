//! `/metrics/probes`, with the kubelet's names (pkg/kubelet/prober):
//! `prober_probe_total{probe_type,result,container,pod,namespace,pod_uid}`
//! and `prober_probe_duration_seconds{probe_type,container,pod,namespace}`.
//! A pod's series go when the pod goes.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use super::{Kind, Outcome};

/// Who a probe belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ProbeLabels {
    pub container: String,
    pub pod: String,
    pub namespace: String,
    pub pod_uid: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TotalLabels {
    probe_type: &'static str,
    result: &'static str,
    container: String,
    pod: String,
    namespace: String,
    pod_uid: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DurationLabels {
    probe_type: &'static str,
    container: String,
    pod: String,
    namespace: String,
}

const KINDS: [Kind; 3] = [Kind::Liveness, Kind::Readiness, Kind::Startup];
const RESULTS: [&str; 3] = ["successful", "failed", "unknown"];

fn duration_histogram() -> Histogram {
    // Prometheus' default buckets, as the kubelet's histogram has them.
    Histogram::new([
        0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    ])
}

pub struct ProbeMetrics {
    registry: Registry,
    total: Family<TotalLabels, Counter>,
    duration: Family<DurationLabels, Histogram>,
}

impl std::fmt::Debug for ProbeMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ProbeMetrics")
    }
}

impl Default for ProbeMetrics {
    fn default() -> Self {
        ProbeMetrics::new()
    }
}

impl ProbeMetrics {
    pub fn new() -> ProbeMetrics {
        let mut registry = Registry::default();
        let total = Family::<TotalLabels, Counter>::default();
        let duration =
            Family::<DurationLabels, Histogram>::new_with_constructor(duration_histogram);
        // The text encoder adds `_total` to counters.
        registry.register(
            "prober_probe",
            "Cumulative number of a liveness, readiness or startup probe for a container by result.",
            total.clone(),
        );
        registry.register(
            "prober_probe_duration_seconds",
            "Duration in seconds for a probe response.",
            duration.clone(),
        );
        ProbeMetrics {
            registry,
            total,
            duration,
        }
    }

    pub fn observe(&self, l: &ProbeLabels, kind: Kind, outcome: &Outcome, seconds: f64) {
        self.total
            .get_or_create(&TotalLabels {
                probe_type: kind.as_str(),
                result: outcome.metric_result(),
                container: l.container.clone(),
                pod: l.pod.clone(),
                namespace: l.namespace.clone(),
                pod_uid: l.pod_uid.clone(),
            })
            .inc();
        // The kubelet times what was not an error.
        if !matches!(outcome, Outcome::Error(_)) {
            self.duration
                .get_or_create(&DurationLabels {
                    probe_type: kind.as_str(),
                    container: l.container.clone(),
                    pod: l.pod.clone(),
                    namespace: l.namespace.clone(),
                })
                .observe(seconds);
        }
    }

    /// Drops the series of a container of a pod that is gone.
    pub fn forget(&self, l: &ProbeLabels) {
        for kind in KINDS {
            for result in RESULTS {
                self.total.remove(&TotalLabels {
                    probe_type: kind.as_str(),
                    result,
                    container: l.container.clone(),
                    pod: l.pod.clone(),
                    namespace: l.namespace.clone(),
                    pod_uid: l.pod_uid.clone(),
                });
            }
            self.duration.remove(&DurationLabels {
                probe_type: kind.as_str(),
                container: l.container.clone(),
                pod: l.pod.clone(),
                namespace: l.namespace.clone(),
            });
        }
    }

    /// Text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_have_the_kubelets_names_and_go_with_the_pod() {
        let m = ProbeMetrics::new();
        let l = ProbeLabels {
            container: "web".into(),
            pod: "web-node1".into(),
            namespace: "default".into(),
            pod_uid: "u1".into(),
        };
        m.observe(&l, Kind::Liveness, &Outcome::Success, 0.002);
        m.observe(&l, Kind::Liveness, &Outcome::Failure("x".into()), 0.003);
        m.observe(&l, Kind::Readiness, &Outcome::Error("x".into()), 0.0);
        let text = m.encode();
        assert!(text.contains(
            "prober_probe_total{probe_type=\"Liveness\",result=\"successful\",container=\"web\",pod=\"web-node1\",namespace=\"default\",pod_uid=\"u1\"} 1"
        ), "{text}");
        assert!(text.contains("result=\"failed\""), "{text}");
        assert!(
            text.contains("probe_type=\"Readiness\",result=\"unknown\""),
            "{text}"
        );
        assert!(text.contains(
            "prober_probe_duration_seconds_count{probe_type=\"Liveness\",container=\"web\",pod=\"web-node1\",namespace=\"default\"} 2"
        ), "{text}");
        m.forget(&l);
        assert!(!m.encode().contains("web-node1"));
    }
}
