//! `/metrics` (see [`super::metrics`]), `/healthz`, `/readyz` of the bridge.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::registry::Registry;

use super::{Runtime, metrics};

/// What the handlers share.
struct Shared {
    rt: Arc<Runtime>,
    registry: Registry,
}

async fn scrape(State(s): State<Arc<Shared>>) -> impl IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        metrics::encode(&s.registry),
    )
}

async fn ready(State(s): State<Arc<Shared>>) -> impl IntoResponse {
    let rt = &s.rt;
    if rt.edge.is_connected() {
        (StatusCode::OK, "ready\n".to_string())
    } else {
        let why = rt.edge.readiness().detail.unwrap_or_default();
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("edge not connected: {why}\n"),
        )
    }
}

pub async fn serve(listener: tokio::net::TcpListener, rt: Arc<Runtime>) {
    let app = Router::new()
        .route("/metrics", get(scrape))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .with_state(Arc::new(Shared {
            registry: metrics::registry(rt.clone()),
            rt,
        }));
    if let Err(e) = axum::serve(listener, app).await {
        tracing::error!(error = %e, "metrics server stopped");
    }
}
