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

/// Live whatever the spool found: a restart would not mend damaged records or a full disk. The body
/// names what needs a look.
async fn health(State(s): State<Arc<Shared>>) -> String {
    let spool = &s.rt.spool;
    let mut out = "ok\n".to_string();
    let corrupt = spool.corrupt.load(std::sync::atomic::Ordering::SeqCst);
    if corrupt > 0 {
        out.push_str(&format!(
            "spool: {corrupt} damaged records skipped; last: {}\n",
            spool.last_corrupt().unwrap_or_default()
        ));
    }
    if let Some(e) = spool.write_error() {
        out.push_str(&format!("spool: {e}\n"));
    }
    out
}

async fn ready(State(s): State<Arc<Shared>>) -> impl IntoResponse {
    let rt = &s.rt;
    if let Some(e) = rt.spool.write_error() {
        // Not taking anything from the edge until the disk has room again.
        (StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n"))
    } else if rt.edge.is_connected() {
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
        .route("/healthz", get(health))
        .route("/readyz", get(ready))
        .with_state(Arc::new(Shared {
            registry: metrics::registry(rt.clone()),
            rt,
        }));
    if let Err(e) = axum::serve(listener, app).await {
        tracing::error!(error = %e, "metrics server stopped");
    }
}
