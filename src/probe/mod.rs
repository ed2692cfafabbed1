//! Liveness, readiness and startup probes, as the kubelet runs them
//! (pkg/kubelet/prober): what a container's probes are once defaulted and
//! resolved ([`ProbeSpec`]), the pure bookkeeping of consecutive results
//! ([`Tracker`]), the handlers ([`handler`]), the loop that runs one probe
//! of one container ([`lane`]), and the metrics ([`metrics`]).
//!
//! The worker starts the lanes of a container when it starts, and aborts
//! them when it stops; what they find reaches it as messages.

pub mod handler;
pub mod lane;
pub mod metrics;
pub mod netns;

use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

/// The kubelet's probe types, with its names (the `probe_type` label and
/// the start of the events' messages).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Liveness,
    Readiness,
    Startup,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Liveness => "Liveness",
            Kind::Readiness => "Readiness",
            Kind::Startup => "Startup",
        }
    }
}

/// What one run of a probe found (the kubelet's `probe.Result` with its
/// output).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Success,
    /// A success with something to say: an HTTP redirect to another host
    /// that was not followed (event `ProbeWarning`).
    Warning(String),
    Failure(String),
    /// The probe could not be run (no address yet, the runtime down): the
    /// kubelet throws such a result away.
    Error(String),
}

impl Outcome {
    /// The `result` label of `prober_probe_total`.
    pub fn metric_result(&self) -> &'static str {
        match self {
            Outcome::Success | Outcome::Warning(_) => "successful",
            Outcome::Failure(_) => "failed",
            Outcome::Error(_) => "unknown",
        }
    }
}

/// When a probe runs, and how many results in a row change its verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    pub initial_delay: Duration,
    pub period: Duration,
    pub timeout: Duration,
    pub success_threshold: u32,
    pub failure_threshold: u32,
}

/// An HTTP GET probe with its port resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpGet {
    pub https: bool,
    /// `None`: the pod's IP.
    pub host: Option<String>,
    pub port: u16,
    /// Path and query, starting with `/`.
    pub path: String,
    pub headers: Vec<(String, String)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Handler {
    Exec(Vec<String>),
    Http(HttpGet),
    Tcp { host: Option<String>, port: u16 },
    Grpc { port: u16, service: Option<String> },
}

/// One probe of one container, defaulted as the API server defaults it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeSpec {
    pub kind: Kind,
    pub handler: Handler,
    pub timing: Timing,
    /// The probe's own grace period for the kill that follows its failure.
    pub termination_grace: Option<Duration>,
}

/// A field the API server defaults when unset or 0 (SetDefaults_Probe).
fn or_default(v: Option<i32>, default: u32) -> u32 {
    v.and_then(|v| u32::try_from(v).ok())
        .filter(|v| *v > 0)
        .unwrap_or(default)
}

/// A port by number, or by the name of one of the container's ports.
fn resolve_port(p: &IntOrString, c: &Container) -> Result<u16, String> {
    let n = match p {
        IntOrString::Int(n) => *n,
        IntOrString::String(name) => match name.parse::<i32>() {
            Ok(n) => n,
            Err(_) => c
                .ports
                .iter()
                .flatten()
                .find(|p| p.name.as_deref() == Some(name.as_str()))
                .map(|p| p.container_port)
                .ok_or_else(|| format!("couldn't find port: {name:?}"))?,
        },
    };
    u16::try_from(n)
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("invalid port number: {n}"))
}

impl ProbeSpec {
    /// The probe as the prober runs it. Fails only on what validation
    /// refuses (no handler, a port that does not exist).
    pub fn of(kind: Kind, p: &Probe, c: &Container) -> Result<ProbeSpec, String> {
        let handler = if let Some(x) = &p.exec {
            Handler::Exec(x.command.clone().unwrap_or_default())
        } else if let Some(g) = &p.http_get {
            let path = g.path.clone().filter(|p| !p.is_empty()).unwrap_or_default();
            Handler::Http(HttpGet {
                https: g.scheme.as_deref() == Some("HTTPS"),
                host: g.host.clone().filter(|h| !h.is_empty()),
                port: resolve_port(&g.port, c)?,
                // The kubelet prefixes a missing slash (formatURL).
                path: if path.starts_with('/') {
                    path
                } else {
                    format!("/{path}")
                },
                headers: g
                    .http_headers
                    .iter()
                    .flatten()
                    .map(|h| (h.name.clone(), h.value.clone()))
                    .collect(),
            })
        } else if let Some(t) = &p.tcp_socket {
            Handler::Tcp {
                host: t.host.clone().filter(|h| !h.is_empty()),
                port: resolve_port(&t.port, c)?,
            }
        } else if let Some(g) = &p.grpc {
            Handler::Grpc {
                port: resolve_port(&IntOrString::Int(g.port), c)?,
                service: g.service.clone(),
            }
        } else {
            return Err("missing probe handler".into());
        };
        Ok(ProbeSpec {
            kind,
            handler,
            timing: Timing {
                initial_delay: Duration::from_secs(u64::from(or_default(
                    p.initial_delay_seconds,
                    0,
                ))),
                period: Duration::from_secs(u64::from(or_default(p.period_seconds, 10))),
                timeout: Duration::from_secs(u64::from(or_default(p.timeout_seconds, 1))),
                success_threshold: or_default(p.success_threshold, 1),
                failure_threshold: or_default(p.failure_threshold, 3),
            },
            termination_grace: p
                .termination_grace_period_seconds
                .and_then(|s| u64::try_from(s).ok())
                .map(Duration::from_secs),
        })
    }

    /// The container's probes, startup first.
    pub fn all_of(c: &Container) -> Vec<Result<ProbeSpec, String>> {
        [
            (Kind::Startup, &c.startup_probe),
            (Kind::Liveness, &c.liveness_probe),
            (Kind::Readiness, &c.readiness_probe),
        ]
        .into_iter()
        .filter_map(|(k, p)| p.as_ref().map(|p| ProbeSpec::of(k, p, c)))
        .collect()
    }
}

/// Consecutive results of one probe, and the verdict they add up to (the
/// kubelet's worker: `lastResult`, `resultRun` and the results manager).
/// A verdict changes after `failure_threshold` failures or
/// `success_threshold` successes in a row; errors change nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tracker {
    timing: Timing,
    last: Option<bool>,
    run: u32,
    verdict: Option<bool>,
}

impl Tracker {
    /// Before any result, readiness is "not ready", liveness "alive" and
    /// startup undecided, as the kubelet starts them.
    pub fn new(kind: Kind, timing: Timing) -> Tracker {
        Tracker {
            timing,
            last: None,
            run: 0,
            verdict: match kind {
                Kind::Readiness => Some(false),
                Kind::Liveness => Some(true),
                Kind::Startup => None,
            },
        }
    }

    pub fn verdict(&self) -> Option<bool> {
        self.verdict
    }

    /// Counts one result; returns the new verdict when it changed.
    pub fn record(&mut self, outcome: &Outcome) -> Option<bool> {
        let ok = match outcome {
            Outcome::Success | Outcome::Warning(_) => true,
            Outcome::Failure(_) => false,
            Outcome::Error(_) => return None,
        };
        if self.last == Some(ok) {
            self.run = self.run.saturating_add(1);
        } else {
            self.last = Some(ok);
            self.run = 1;
        }
        let threshold = if ok {
            self.timing.success_threshold
        } else {
            self.timing.failure_threshold
        };
        if self.run < threshold || self.verdict == Some(ok) {
            return None;
        }
        self.verdict = Some(ok);
        Some(ok)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container(yaml: &str) -> Container {
        serde_norway::from_str(yaml).unwrap()
    }

    #[test]
    fn probes_get_the_api_servers_defaults_and_resolved_ports() {
        let c = container(
            "name: web\nports: [{name: http, containerPort: 8080}]\nlivenessProbe: {httpGet: {port: http, path: healthz, httpHeaders: [{name: X-A, value: b}]}}\nreadinessProbe: {tcpSocket: {port: 8080}, periodSeconds: 2, timeoutSeconds: 0, failureThreshold: 1}\nstartupProbe: {exec: {command: [cat, /ok]}, terminationGracePeriodSeconds: 5}\n",
        );
        let all: Vec<ProbeSpec> = ProbeSpec::all_of(&c)
            .into_iter()
            .map(Result::unwrap)
            .collect();
        assert_eq!(
            all.iter().map(|p| p.kind).collect::<Vec<_>>(),
            [Kind::Startup, Kind::Liveness, Kind::Readiness]
        );
        assert_eq!(
            all[0].handler,
            Handler::Exec(vec!["cat".into(), "/ok".into()])
        );
        assert_eq!(all[0].termination_grace, Some(Duration::from_secs(5)));
        assert_eq!(
            all[1].handler,
            Handler::Http(HttpGet {
                https: false,
                host: None,
                port: 8080,
                path: "/healthz".into(),
                headers: vec![("X-A".into(), "b".into())],
            })
        );
        assert_eq!(
            all[1].timing,
            Timing {
                initial_delay: Duration::ZERO,
                period: Duration::from_secs(10),
                timeout: Duration::from_secs(1),
                success_threshold: 1,
                failure_threshold: 3,
            }
        );
        assert_eq!(
            all[2].handler,
            Handler::Tcp {
                host: None,
                port: 8080
            }
        );
        assert_eq!(
            (
                all[2].timing.period,
                all[2].timing.timeout,
                all[2].timing.failure_threshold
            ),
            (Duration::from_secs(2), Duration::from_secs(1), 1)
        );
        let missing = container("name: web\nlivenessProbe: {tcpSocket: {port: http}}\n");
        assert_eq!(
            ProbeSpec::all_of(&missing)[0],
            Err("couldn't find port: \"http\"".to_string())
        );
    }

    #[test]
    fn kubeadm_style_probes() {
        // etcd as kubeadm writes it: host 127.0.0.1 on a hostNetwork pod,
        // a query in the path, long timeouts.
        let c = container(
            "name: etcd
livenessProbe:
  failureThreshold: 8
  httpGet: {host: 127.0.0.1, path: '/health?exclude=NOSPACE&serializable=true', port: 2381, scheme: HTTP}
  initialDelaySeconds: 10
  periodSeconds: 10
  timeoutSeconds: 15
startupProbe:
  failureThreshold: 24
  httpGet: {host: 127.0.0.1, path: '/health?serializable=false', port: 2381, scheme: HTTPS}
  initialDelaySeconds: 10
  periodSeconds: 10
  timeoutSeconds: 15
",
        );
        let all: Vec<ProbeSpec> = ProbeSpec::all_of(&c)
            .into_iter()
            .map(Result::unwrap)
            .collect();
        let Handler::Http(live) = &all[1].handler else {
            panic!("{all:?}")
        };
        assert_eq!(live.host.as_deref(), Some("127.0.0.1"));
        assert_eq!(live.path, "/health?exclude=NOSPACE&serializable=true");
        assert!(!live.https);
        assert_eq!(
            all[1].timing,
            Timing {
                initial_delay: Duration::from_secs(10),
                period: Duration::from_secs(10),
                timeout: Duration::from_secs(15),
                success_threshold: 1,
                failure_threshold: 8,
            }
        );
        let Handler::Http(startup) = &all[0].handler else {
            panic!("{all:?}")
        };
        assert!(startup.https);
    }

    fn timing(success: u32, failure: u32) -> Timing {
        Timing {
            initial_delay: Duration::ZERO,
            period: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            success_threshold: success,
            failure_threshold: failure,
        }
    }

    #[test]
    fn verdicts_change_after_threshold_results_in_a_row() {
        let fail = || Outcome::Failure("HTTP probe failed with statuscode: 500".into());
        let mut live = Tracker::new(Kind::Liveness, timing(1, 3));
        assert_eq!(live.verdict(), Some(true));
        assert_eq!(live.record(&fail()), None);
        assert_eq!(live.record(&fail()), None);
        // A success in between starts the count again.
        assert_eq!(live.record(&Outcome::Success), None);
        assert_eq!(live.record(&fail()), None);
        assert_eq!(live.record(&fail()), None);
        // Errors neither count nor break the run.
        assert_eq!(live.record(&Outcome::Error("no address".into())), None);
        assert_eq!(live.record(&fail()), Some(false));
        assert_eq!(live.record(&fail()), None, "reported once");

        let mut ready = Tracker::new(Kind::Readiness, timing(2, 1));
        assert_eq!(ready.verdict(), Some(false));
        assert_eq!(ready.record(&Outcome::Success), None);
        assert_eq!(
            ready.record(&Outcome::Warning("redirect".into())),
            Some(true)
        );
        assert_eq!(ready.record(&fail()), Some(false));

        let mut startup = Tracker::new(Kind::Startup, timing(1, 2));
        assert_eq!(startup.verdict(), None);
        assert_eq!(startup.record(&Outcome::Success), Some(true));
        let mut startup = Tracker::new(Kind::Startup, timing(1, 2));
        assert_eq!(startup.record(&fail()), None);
        assert_eq!(startup.record(&fail()), Some(false));
    }
}
