//! `/metrics`, `/healthz`, `/readyz` of the bridge.
//!
//! Metrics (prefix `edgewire_bridge_`): `spool_messages`, `spool_bytes`, `spool_max_bytes` (the
//! configured `spool.maxBytes`, what the spool-filling alerts compare `spool_bytes` with), `spool_oldest_age_seconds`
//! (replay lag: how long the oldest waiting message has been waiting), `spool_commits_total` (group
//! commits, one fsync each), `spool_dropped_total` (DropOldest), `forwarded_total` (acknowledged by the
//! cloud), `received_total` (taken from the edge), `unmatched_total`, `delivered_to_edge_total`,
//! `cloud_errors_total`, `last_forward_timestamp_seconds`, `edge_connected`, `cloud_connected`.

use std::fmt::Write;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;

use super::Runtime;

/// Age of the oldest waiting message in seconds, if any is waiting.
pub fn oldest_age_seconds(rt: &Runtime) -> Option<u64> {
    if rt.spool.messages() == 0 {
        return None;
    }
    let ms = rt.spool.oldest_ms.load(Ordering::SeqCst);
    (ms > 0).then(|| super::spool::now_ms().saturating_sub(ms) / 1000)
}

/// The Prometheus text exposition (format 0.0.4) of `rt`. Not OpenMetrics: there a counter family's name
/// must not end in `_total`, and these names do, as the README lists them.
pub fn render(rt: &Runtime) -> String {
    let s = &rt.spool;
    let c = &rt.counters;
    let ld = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::SeqCst);
    let rows: [(&str, &str, &str, f64); 15] = [
        (
            "spool_messages",
            "gauge",
            "Messages waiting in the spool",
            s.messages() as f64,
        ),
        (
            "spool_bytes",
            "gauge",
            "Bytes waiting in the spool (framing included)",
            s.bytes() as f64,
        ),
        (
            "spool_max_bytes",
            "gauge",
            "The spool's bound in bytes (spool.maxBytes): RejectNew holds the edge back and DropOldest drops the oldest there",
            rt.spool_max_bytes as f64,
        ),
        (
            "spool_oldest_age_seconds",
            "gauge",
            "Age of the oldest waiting message (replay lag)",
            oldest_age_seconds(rt).unwrap_or(0) as f64,
        ),
        (
            "spool_commits_total",
            "counter",
            "Spool group commits (one fsync each)",
            ld(&s.commits) as f64,
        ),
        (
            "spool_dropped_total",
            "counter",
            "Messages dropped by overflow DropOldest",
            ld(&s.dropped) as f64,
        ),
        (
            "forwarded_total",
            "counter",
            "Messages the cloud acknowledged",
            ld(&s.forwarded) as f64,
        ),
        (
            "received_total",
            "counter",
            "Edge messages taken into the spool",
            ld(&c.received) as f64,
        ),
        (
            "unmatched_total",
            "counter",
            "Edge messages that matched no rule",
            ld(&c.unmatched) as f64,
        ),
        (
            "refused_total",
            "counter",
            "Edge messages whose mapped topic is not a valid name on the cloud protocol (acknowledged, not spooled)",
            ld(&c.refused) as f64,
        ),
        (
            "delivered_to_edge_total",
            "counter",
            "Cloud messages delivered to the edge",
            ld(&c.delivered_to_edge) as f64,
        ),
        (
            "cloud_errors_total",
            "counter",
            "Failed cloud publish rounds (resent from the spool)",
            ld(&c.cloud_errors) as f64,
        ),
        (
            "last_forward_timestamp_seconds",
            "gauge",
            "When the cloud last acknowledged a message",
            ld(&c.last_forward_ms) as f64 / 1000.0,
        ),
        (
            "edge_connected",
            "gauge",
            "1 while the edge side is connected",
            rt.edge.is_connected() as u8 as f64,
        ),
        (
            "cloud_connected",
            "gauge",
            "1 while the cloud side is connected",
            rt.cloud.is_connected() as u8 as f64,
        ),
    ];
    let mut out = String::with_capacity(2048);
    for (name, ty, help, v) in rows {
        let _ = writeln!(out, "# HELP edgewire_bridge_{name} {help}.");
        let _ = writeln!(out, "# TYPE edgewire_bridge_{name} {ty}");
        let _ = writeln!(out, "edgewire_bridge_{name} {v}");
    }
    out
}

async fn metrics(State(rt): State<Arc<Runtime>>) -> impl IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        render(&rt),
    )
}

async fn ready(State(rt): State<Arc<Runtime>>) -> impl IntoResponse {
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
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .with_state(rt);
    if let Err(e) = axum::serve(listener, app).await {
        tracing::error!(error = %e, "metrics server stopped");
    }
}
