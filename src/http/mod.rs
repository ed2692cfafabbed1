//! The agent's HTTP endpoints: `/healthz` and `/pods` (the pods with their
//! status, as a Kubernetes `PodList`).

use std::net::SocketAddr;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use k8s_openapi::api::core::v1::Pod;
use serde_json::json;

use crate::worker::StatusStore;

#[derive(Clone)]
struct AppState {
    store: StatusStore,
}

pub fn router(store: StatusStore) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/pods", get(pods))
        .with_state(AppState { store })
}

/// The pods in the form `kubectl get --raw /api/v1/pods` has.
pub fn pod_list(store: &StatusStore) -> serde_json::Value {
    let store = store.read().unwrap_or_else(|e| e.into_inner());
    let items: Vec<serde_json::Value> = store
        .values()
        .map(|entry| {
            let mut pod: Pod = entry.pod.pod.clone();
            pod.status = Some(entry.status.to_api());
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

async fn pods(State(state): State<AppState>) -> impl IntoResponse {
    let body = serde_json::to_vec(&pod_list(&state.store)).expect("JSON serializes");
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        body,
    )
}

/// Serves until the process ends.
pub async fn serve(addr: SocketAddr, store: StatusStore) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    axum::serve(listener, router(store)).await
}
