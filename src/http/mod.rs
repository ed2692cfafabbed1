//! The agent's HTTP endpoints:
//! - `/healthz`;
//! - `/pods`: the pods with their status, as a Kubernetes `PodList`;
//! - `/events`: the node's recent events, as a Kubernetes `EventList`;
//! - `/metrics/cadvisor`, `/metrics/resource`, `/stats/summary`: container
//!   statistics as a kubelet serves them (see [`cadvisor`]);
//! - `/metrics`: the agent's own metrics;
//! - `/metrics/probes`: probe results and durations, as the kubelet's.
//!
//! Everything but `/healthz` needs a bearer token (see [`token`]) or a
//! client certificate signed by `tlsClientCAFile`; the metrics paths may be
//! opened with `metricsAnonymous`. Served by [`server`] with bounds on what
//! a client may cost; the statistics are computed a few at a time.

pub mod cadvisor;
pub mod server;
pub mod tls;
pub mod token;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use k8s_openapi::api::core::v1::Pod;
use serde_json::json;
use tokio::sync::Semaphore;
use tracing::warn;

use crate::cgroup::Cgroups;
use crate::metrics::AgentMetrics;
use crate::pod::{PodEntry, Store};
use crate::stats::volumes::VolumeStats;

/// What the handlers read.
pub struct Shared {
    pub store: Store,
    pub cgroups: Cgroups,
    pub metrics: Arc<AgentMetrics>,
    pub node_name: String,
    pub root_dir: PathBuf,
    /// Required as `Authorization: Bearer <token>`.
    pub token: String,
    /// The metrics paths are served without authentication.
    pub metrics_anonymous: bool,
    pub rates: cadvisor::RateState,
    /// The pods' network counter files, kept between scrapes.
    pub nets: Arc<crate::stats::NetFiles>,
    /// Statistics computations running at once (see [`SCRAPE_SLOTS`]).
    pub scrape_slots: Arc<Semaphore>,
    /// Volume usage, measured in the background.
    pub volume_stats: Arc<VolumeStats>,
    /// The node's recent events.
    pub events: crate::events::Recorder,
    /// Whether containerd answers: the node's `Ready` condition.
    pub runtime: Arc<crate::runtime::health::RuntimeHealth>,
    pub capacity: crate::node::Resources,
    pub allocatable: crate::node::Resources,
}

impl Shared {
    /// The scrape bound, for [`Shared::scrape_slots`].
    pub fn scrape_slots() -> Arc<Semaphore> {
        Arc::new(Semaphore::new(SCRAPE_SLOTS))
    }
}

type AppState = Arc<Shared>;

/// Set by the server on requests of a TLS connection whose client presented
/// a certificate that `tlsClientCAFile` verified.
#[derive(Debug, Clone, Copy)]
pub struct ClientCertificate;

/// The pods in the form `kubectl get --raw /api/v1/pods` has, as JSON
/// text (keys in the order `serde_json` sorts them). Written one pod at a
/// time: a tree of every pod's JSON values first took about 20 times the
/// text's size (4 MiB at 110 pods), on every poll of `/pods`.
pub fn pod_list(store: &Store) -> Result<Vec<u8>, serde_json::Error> {
    let store = store.read();
    let mut out = br#"{"apiVersion":"v1","items":["#.to_vec();
    for (i, entry) in store.values().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        serde_json::to_writer(&mut out, &pod_object(entry)?)?;
    }
    out.extend_from_slice(br#"],"kind":"PodList","metadata":{}}"#);
    Ok(out)
}

/// One pod with its status, as an item of [`pod_list`].
pub fn pod_object(entry: &PodEntry) -> Result<serde_json::Value, serde_json::Error> {
    let mut pod: Pod = entry.pod.pod.clone();
    pod.status = Some(entry.status.to_api());
    pod.metadata.deletion_timestamp = entry
        .status
        .terminating_since
        .map(crate::pod::status::to_time);
    // A mirror pod's creation is when the API server heard of it; here,
    // when the agent started the pod (what kubectl's AGE counts from).
    if pod.metadata.creation_timestamp.is_none() {
        pod.metadata.creation_timestamp = entry.status.start_time.map(crate::pod::status::to_time);
    }
    let mut v = serde_json::to_value(&pod)?;
    v["apiVersion"] = json!("v1");
    v["kind"] = json!("Pod");
    // Not part of the Kubernetes object: what the agent saw happen.
    v["status"]["events"] = serde_json::to_value(&entry.status.events)?;
    Ok(v)
}

/// The node's events (see [`crate::events`]) as a Kubernetes `EventList`.
pub fn event_list(
    events: &crate::events::Recorder,
) -> Result<serde_json::Value, serde_json::Error> {
    Ok(json!({
        "apiVersion": "v1",
        "kind": "EventList",
        "metadata": {},
        "items": serde_json::to_value(events.list())?,
    }))
}

/// Statistics computations (cgroup reads, JSON) running at once: they run
/// on the blocking pool, which mounts, manifest scans and teardown share,
/// so scrapes may hold only this many of its threads.
pub const SCRAPE_SLOTS: usize = 2;
/// How long a scrape waits for a slot before it is answered 503.
const SCRAPE_WAIT: Duration = Duration::from_secs(2);
/// Told to a client turned away for lack of a slot.
const RETRY_AFTER_SECS: &str = "1";

/// Why a handler did not answer 200. Never an empty 200: a scraper must
/// see the failure, not a target that has no series.
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    #[error("{SCRAPE_SLOTS} statistics requests are being computed; retry later")]
    Busy,
    #[error("computing the response failed: {0}")]
    Failed(String),
}

impl IntoResponse for HandlerError {
    fn into_response(self) -> Response {
        let body = format!("{self}\n");
        match self {
            HandlerError::Busy => (
                StatusCode::SERVICE_UNAVAILABLE,
                [(header::RETRY_AFTER, RETRY_AFTER_SECS)],
                body,
            )
                .into_response(),
            HandlerError::Failed(e) => {
                warn!("HTTP handler failed: {e}");
                (StatusCode::INTERNAL_SERVER_ERROR, body).into_response()
            }
        }
    }
}

/// Runs a statistics computation on the blocking pool once one of `slots`
/// is free (waiting at most [`SCRAPE_WAIT`]). The slot is held by the
/// computation itself, not by the request: a client that hangs up does not
/// free it while its computation still runs.
pub async fn scrape<T: Send + 'static>(
    slots: &Arc<Semaphore>,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, HandlerError> {
    let permit = tokio::time::timeout(SCRAPE_WAIT, Arc::clone(slots).acquire_owned())
        .await
        .map_err(|_| HandlerError::Busy)?
        .map_err(|_| HandlerError::Busy)?;
    tokio::task::spawn_blocking(move || {
        let _slot = permit;
        f()
    })
    .await
    .map_err(|e| HandlerError::Failed(e.to_string()))
}

const TEXT_FORMAT: &str = "text/plain; version=0.0.4; charset=utf-8";

fn text(body: impl Into<axum::body::Body>) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, TEXT_FORMAT)],
        body.into(),
    )
        .into_response()
}

/// A scrape's text, sent piece by piece as it is made.
fn streamed(chunks: cadvisor::Chunks) -> axum::body::Body {
    axum::body::Body::from_stream(futures::stream::iter(
        chunks.map(Ok::<_, std::convert::Infallible>),
    ))
}

fn json_response(v: &serde_json::Value) -> Result<Response, HandlerError> {
    let body = serde_json::to_vec(v).map_err(|e| HandlerError::Failed(e.to_string()))?;
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response())
}

async fn pods(State(s): State<AppState>) -> Result<Response, HandlerError> {
    let body = pod_list(&s.store).map_err(|e| HandlerError::Failed(e.to_string()))?;
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response())
}

async fn events(State(s): State<AppState>) -> Result<Response, HandlerError> {
    let list = event_list(&s.events).map_err(|e| HandlerError::Failed(e.to_string()))?;
    json_response(&list)
}

/// `/node`: this node as a Node object's status shows it: the `Ready`
/// condition (false while containerd does not answer), the runtime's
/// version, capacity and allocatable.
async fn node(State(s): State<AppState>) -> Result<Response, HandlerError> {
    json_response(&node_object(&s))
}

fn node_object(s: &Shared) -> serde_json::Value {
    let quantities = |r: &crate::node::Resources| {
        serde_json::json!({
            "cpu": crate::node::cpu_quantity(r.cpu_milli),
            "memory": format!("{}Ki", r.memory / 1024),
            "pods": r.pods.to_string(),
        })
    };
    let runtime = s.runtime.state();
    serde_json::json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": s.node_name},
        "status": {
            "conditions": [s.runtime.ready_condition()],
            "capacity": quantities(&s.capacity),
            "allocatable": quantities(&s.allocatable),
            "nodeInfo": {
                "containerRuntimeVersion": runtime.version.unwrap_or_default(),
                "kubeletVersion": concat!("kubelet-lite/", env!("CARGO_PKG_VERSION")),
                "operatingSystem": "linux",
                "architecture": crate::runtime::image_ref::go_arch(),
            },
        },
    })
}

async fn metrics_cadvisor(State(s): State<AppState>) -> Result<Response, HandlerError> {
    let s2 = Arc::clone(&s);
    let body = scrape(&s.scrape_slots, move || {
        cadvisor::cadvisor(
            &s2.store,
            &s2.cgroups,
            &s2.nets,
            &s2.root_dir,
            &s2.volume_stats,
        )
    })
    .await?;
    Ok(text(streamed(body)))
}

async fn metrics_resource(State(s): State<AppState>) -> Result<Response, HandlerError> {
    let s2 = Arc::clone(&s);
    let body = scrape(&s.scrape_slots, move || {
        cadvisor::resource(&s2.store, &s2.cgroups)
    })
    .await?;
    Ok(text(streamed(body)))
}

async fn stats_summary(State(s): State<AppState>) -> Result<Response, HandlerError> {
    let s2 = Arc::clone(&s);
    let v = scrape(&s.scrape_slots, move || {
        cadvisor::summary(
            &s2.store,
            &s2.cgroups,
            &s2.nets,
            &s2.node_name,
            &s2.root_dir,
            &s2.rates,
            &s2.volume_stats,
        )
    })
    .await?;
    json_response(&v)
}

/// The agent's own registry speaks OpenMetrics (counter families named
/// without `_total`, samples with it, `# EOF`): say so, so that Prometheus
/// parses it as such.
async fn agent_metrics(State(s): State<AppState>) -> Response {
    let ct = "application/openmetrics-text; version=1.0.0; charset=utf-8";
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, ct)],
        s.metrics.encode(),
    )
        .into_response()
}

async fn metrics_probes(State(s): State<AppState>) -> Response {
    let ct = "application/openmetrics-text; version=1.0.0; charset=utf-8";
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, ct)],
        s.metrics.probes.encode(),
    )
        .into_response()
}

/// Paths served without a token when `metricsAnonymous` is set.
const METRICS_PATHS: [&str; 4] = [
    "/metrics",
    "/metrics/cadvisor",
    "/metrics/probes",
    "/metrics/resource",
];

/// Who may read what: `/healthz` is open; the metrics paths are open with
/// `metricsAnonymous`; the rest (pod specs with their env values, volume
/// and pod names) needs the token or a verified client certificate.
async fn auth(State(s): State<AppState>, req: Request, next: Next) -> Response {
    let path = req.uri().path();
    let open = path == "/healthz" || (s.metrics_anonymous && METRICS_PATHS.contains(&path));
    let certified = req.extensions().get::<ClientCertificate>().is_some();
    let bearer = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|g| token::equal(g.trim().as_bytes(), s.token.as_bytes()));
    if !(open || certified || bearer) {
        return (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            "Unauthorized\n",
        )
            .into_response();
    }
    next.run(req).await
}

pub fn router(shared: AppState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/pods", get(pods))
        .route("/events", get(events))
        .route("/node", get(node))
        .route("/metrics", get(agent_metrics))
        .route("/metrics/probes", get(metrics_probes))
        .route("/metrics/cadvisor", get(metrics_cadvisor))
        .route("/metrics/resource", get(metrics_resource))
        .route("/stats/summary", get(stats_summary))
        .layer(middleware::from_fn_with_state(Arc::clone(&shared), auth))
        .with_state(shared)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pod_list_is_the_kubernetes_pod_list() {
        let store = Store::default();
        for name in ["a", "b"] {
            let text = format!(
                "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  containers:\n  - {{name: c, image: busybox}}\n"
            );
            let parsed =
                crate::manifest::parse_file(std::path::Path::new("/m/p.yaml"), &text, "n1");
            let pod = parsed.pods.into_iter().next().unwrap();
            store.publish(PodEntry {
                pod: Arc::new(pod),
                status: crate::pod::PodStatus::new(),
            });
        }
        let text = pod_list(&store).unwrap();
        let got: serde_json::Value = serde_json::from_slice(&text).unwrap();
        let items: Vec<_> = store
            .read()
            .values()
            .map(|e| pod_object(e).unwrap())
            .collect();
        let want = json!({"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": items});
        assert_eq!(got, want);
        // The same text serde_json writes for the whole tree.
        assert_eq!(text, serde_json::to_vec(&want).unwrap());
        let mut names: Vec<_> = (0..2)
            .map(|i| got["items"][i]["metadata"]["name"].as_str().unwrap())
            .collect();
        names.sort_unstable();
        assert_eq!(names, ["a-n1", "b-n1"]);
    }

    async fn status_of(r: Result<Response, HandlerError>) -> (StatusCode, Option<String>, String) {
        let resp = match r {
            Ok(r) => r,
            Err(e) => e.into_response(),
        };
        let status = resp.status();
        let retry = resp
            .headers()
            .get(header::RETRY_AFTER)
            .map(|v| v.to_str().unwrap().to_string());
        let body = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .unwrap();
        (status, retry, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn a_failed_computation_is_a_500_not_an_empty_200() {
        let slots = Shared::scrape_slots();
        let r = scrape(&slots, || -> String { panic!("cgroup reader bug") })
            .await
            .map(text);
        let (status, _, body) = status_of(r).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert!(!body.is_empty());
        // The slot came back with the panic.
        assert_eq!(slots.available_permits(), SCRAPE_SLOTS);
    }

    #[tokio::test]
    async fn scrapes_past_the_bound_wait_then_get_503_with_retry_after() {
        let slots = Shared::scrape_slots();
        // SCRAPE_SLOTS computations that hold their slot until released.
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let rx = Arc::new(std::sync::Mutex::new(rx));
        let mut running = vec![];
        for _ in 0..SCRAPE_SLOTS {
            let rx = Arc::clone(&rx);
            let slots = Arc::clone(&slots);
            running.push(tokio::spawn(async move {
                scrape(&slots, move || {
                    let _ = rx.lock().unwrap().recv();
                    "done".to_string()
                })
                .await
            }));
        }
        while slots.available_permits() > 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let t0 = std::time::Instant::now();
        let (status, retry, _) =
            status_of(scrape(&slots, || "x".to_string()).await.map(text)).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(retry.as_deref(), Some(RETRY_AFTER_SECS));
        assert!(t0.elapsed() >= SCRAPE_WAIT - Duration::from_millis(50));
        for _ in 0..SCRAPE_SLOTS {
            tx.send(()).unwrap();
        }
        for r in running {
            assert_eq!(r.await.unwrap().unwrap(), "done");
        }
        // Freed: the next one runs.
        let (status, _, body) = status_of(scrape(&slots, || "x".to_string()).await.map(text)).await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, "x"));
    }
}
