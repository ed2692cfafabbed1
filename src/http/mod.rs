//! The agent's HTTP endpoints:
//! - `/healthz`;
//! - `/pods`: the pods with their status, as a Kubernetes `PodList`;
//! - `/metrics/cadvisor`, `/metrics/resource`, `/stats/summary`: container
//!   statistics as a kubelet serves them (see [`cadvisor`]);
//! - `/metrics`: the agent's own metrics.
//!
//! Served by hyper with bounds on what a client may cost: header size and
//! read time, connection count and lifetime. With a bearer token
//! configured, everything but `/healthz` needs it.

pub mod cadvisor;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use hyper_util::rt::{TokioIo, TokioTimer};
use k8s_openapi::api::core::v1::Pod;
use serde_json::json;
use tracing::{debug, warn};

use crate::cgroup::Cgroups;
use crate::metrics::AgentMetrics;
use crate::worker::StatusStore;

/// What the handlers read.
pub struct Shared {
    pub store: StatusStore,
    pub cgroups: Cgroups,
    pub metrics: Arc<AgentMetrics>,
    pub node_name: String,
    pub root_dir: PathBuf,
    /// Required as `Authorization: Bearer <token>` when set.
    pub token: Option<String>,
    pub rates: cadvisor::RateState,
    pub specs: crate::stats::SpecCache,
}

type AppState = Arc<Shared>;

/// The pods in the form `kubectl get --raw /api/v1/pods` has.
pub fn pod_list(store: &StatusStore) -> serde_json::Value {
    let store = store.read().unwrap_or_else(|e| e.into_inner());
    let items: Vec<serde_json::Value> = store
        .values()
        .map(|entry| {
            let mut pod: Pod = entry.pod.pod.clone();
            pod.status = Some(entry.status.to_api());
            pod.metadata.deletion_timestamp = entry
                .status
                .terminating_since
                .map(crate::pod::status::to_time);
            let mut v = serde_json::to_value(&pod).expect("a Pod serializes");
            v["apiVersion"] = json!("v1");
            v["kind"] = json!("Pod");
            // Not part of the Kubernetes object: what the agent saw happen.
            v["status"]["events"] = serde_json::to_value(&entry.status.events).unwrap_or_default();
            v
        })
        .collect();
    json!({"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": items})
}

const TEXT_FORMAT: &str = "text/plain; version=0.0.4; charset=utf-8";

fn text(body: String) -> Response {
    (StatusCode::OK, [(header::CONTENT_TYPE, TEXT_FORMAT)], body).into_response()
}

fn json_response(v: &serde_json::Value) -> Response {
    let body = serde_json::to_vec(v).expect("JSON serializes");
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response()
}

async fn pods(State(s): State<AppState>) -> Response {
    json_response(&pod_list(&s.store))
}

async fn metrics_cadvisor(State(s): State<AppState>) -> Response {
    let s2 = Arc::clone(&s);
    let body = tokio::task::spawn_blocking(move || {
        cadvisor::cadvisor(&s2.store, &s2.cgroups, &s2.specs, &s2.root_dir)
    })
    .await
    .unwrap_or_default();
    text(body)
}

async fn metrics_resource(State(s): State<AppState>) -> Response {
    let s2 = Arc::clone(&s);
    let body =
        tokio::task::spawn_blocking(move || cadvisor::resource(&s2.store, &s2.cgroups, &s2.specs))
            .await
            .unwrap_or_default();
    text(body)
}

async fn stats_summary(State(s): State<AppState>) -> Response {
    let s2 = Arc::clone(&s);
    let v = tokio::task::spawn_blocking(move || {
        cadvisor::summary(
            &s2.store,
            &s2.cgroups,
            &s2.specs,
            &s2.node_name,
            &s2.root_dir,
            &s2.rates,
        )
    })
    .await
    .unwrap_or_default();
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

async fn auth(State(s): State<AppState>, req: Request, next: Next) -> Response {
    if let Some(token) = &s.token
        && req.uri().path() != "/healthz"
    {
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        // Compare without an early exit on the first differing byte.
        let ok = given.is_some_and(|g| {
            g.len() == token.len()
                && g.bytes()
                    .zip(token.bytes())
                    .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                    == 0
        });
        if !ok {
            return (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Bearer")],
                "Unauthorized\n",
            )
                .into_response();
        }
    }
    next.run(req).await
}

pub fn router(shared: AppState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/pods", get(pods))
        .route("/metrics", get(agent_metrics))
        .route("/metrics/cadvisor", get(metrics_cadvisor))
        .route("/metrics/resource", get(metrics_resource))
        .route("/stats/summary", get(stats_summary))
        .layer(middleware::from_fn_with_state(Arc::clone(&shared), auth))
        .with_state(shared)
}

/// Limits on what one client can hold.
const MAX_CONNECTIONS: usize = 256;
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
const CONNECTION_LIFETIME: Duration = Duration::from_secs(60);
const MAX_BUF: usize = 64 * 1024;

/// Serves until the process ends.
pub async fn serve(listener: tokio::net::TcpListener, router: Router) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                warn!("accepting a connection: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        // Over the limit, new connections are closed at once.
        let Ok(permit) = Arc::clone(&slots).try_acquire_owned() else {
            debug!(%peer, "too many connections; closing");
            continue;
        };
        let service = hyper_util::service::TowerToHyperService::new(router.clone());
        tokio::spawn(async move {
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .max_buf_size(MAX_BUF)
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service);
            let _ = tokio::time::timeout(CONNECTION_LIFETIME, conn).await;
            drop(permit);
        });
    }
}
