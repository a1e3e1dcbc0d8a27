//! `GET /metrics` and `GET /healthz`.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::Shared;

pub(super) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .with_state(shared)
}

async fn metrics(State(s): State<Arc<Shared>>) -> Response {
    let mut resp = s.encode_metrics().into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    resp
}

/// 200 while the process runs (the liveness probe must not restart the sidecar for a broker problem);
/// the body tells whether the broker connection is up and what the reload watcher did.
async fn healthz(State(s): State<Arc<Shared>>) -> Response {
    axum::Json(s.health()).into_response()
}
