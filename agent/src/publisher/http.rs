//! The routes: `POST /`, `GET /healthz`, `/readyz`, `/metrics`, `/asyncapi`.

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use cloudevents::Event;

use super::Publisher;
use super::problem::{ItemError, Problem};
use crate::adapters::{Adapter, PublishError};
use crate::event::{self, EventError, Mode};

/// Largest request body (a batch).
const BODY_LIMIT: usize = 4 * 1024 * 1024;

pub fn router(state: Arc<Publisher>) -> Router {
    Router::new()
        .route("/", post(ingest))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/asyncapi", get(asyncapi))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(state)
}

fn event_problem(e: &EventError) -> Problem {
    match e {
        EventError::NotJson(_) => Problem::new(
            StatusCode::BAD_REQUEST,
            "invalid-json",
            "Body is not JSON",
            e.to_string(),
        ),
        EventError::MissingSpecVersion(_) => Problem::new(
            StatusCode::BAD_REQUEST,
            "missing-specversion",
            "Missing specversion",
            e.to_string(),
        ),
        _ => Problem::invalid(e.to_string()),
    }
}

fn publish_problem(e: &PublishError) -> Problem {
    match e {
        PublishError::Unavailable(_) | PublishError::Timeout(_) => {
            Problem::unavailable(e.to_string())
        }
        PublishError::Rejected(_) => Problem::new(
            StatusCode::BAD_GATEWAY,
            "broker-rejected",
            "Broker refused the event",
            e.to_string(),
        ),
    }
}

fn status_of(e: &PublishError) -> StatusCode {
    match e {
        PublishError::Unavailable(_) | PublishError::Timeout(_) => StatusCode::SERVICE_UNAVAILABLE,
        PublishError::Rejected(_) => StatusCode::BAD_GATEWAY,
    }
}

/// Parses/validates one event: corename stamped, routing checked.
fn prepare(
    p: &Publisher,
    adapter: &dyn Adapter,
    parsed: Result<Event, EventError>,
) -> Result<Event, Box<Problem>> {
    let mut ev = parsed.map_err(|e| Box::new(event_problem(&e)))?;
    event::stamp_corename(&mut ev, &p.core_name);
    adapter.validate(&ev).map_err(|m| {
        Box::new(Problem::new(
            StatusCode::BAD_REQUEST,
            "unroutable-type",
            "Event type cannot be routed",
            m,
        ))
    })?;
    Ok(ev)
}

async fn publish_one(p: &Publisher, adapter: &dyn Adapter, ev: &Event) -> Result<(), PublishError> {
    let start = Instant::now();
    let r = adapter.publish(ev).await;
    match &r {
        Ok(()) => p.metrics.published(start.elapsed().as_secs_f64()),
        Err(e) => {
            p.metrics.failed(e.reason());
            tracing::debug!(error = %e, "publish failed");
        }
    }
    r
}

async fn ingest(State(p): State<Arc<Publisher>>, headers: HeaderMap, body: Bytes) -> Response {
    let Some(adapter) = p.adapter.clone() else {
        p.metrics.failed("disabled");
        return Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "event-broker-disabled",
            "Event broker disabled",
            format!(
                "event broker disabled ({}=false): this publisher does not forward events",
                edgewire_api::env::ENABLED
            ),
        )
        .into_response();
    };
    let adapter = adapter.as_ref();
    let mode = Mode::of(&headers);
    if mode == Mode::Batch {
        return ingest_batch(&p, adapter, &body).await;
    }
    let parsed = match mode {
        Mode::Binary => event::parse_binary(&headers, &body),
        _ => event::parse_structured(&body),
    };
    let ev = match prepare(&p, adapter, parsed) {
        Ok(ev) => ev,
        Err(problem) => {
            p.metrics.failed("invalid");
            return problem.into_response();
        }
    };
    p.metrics.accepted();
    match publish_one(&p, adapter, &ev).await {
        Ok(()) => StatusCode::ACCEPTED.into_response(),
        Err(e) => publish_problem(&e).into_response(),
    }
}

/// Batch mode. Validation is all-or-nothing (one invalid event → 400, nothing published); publishing is
/// per event: 202 when the broker accepted all, else the worst status with the failed indexes (to
/// resend) and the accepted ones (not to resend).
async fn ingest_batch(p: &Publisher, adapter: &dyn Adapter, body: &[u8]) -> Response {
    let items = match event::parse_batch(body) {
        Ok(items) => items,
        Err(e) => {
            p.metrics.failed("invalid");
            return event_problem(&e).into_response();
        }
    };
    let mut events = Vec::with_capacity(items.len());
    let mut invalid = Vec::new();
    for (index, item) in items.into_iter().enumerate() {
        match prepare(p, adapter, item) {
            Ok(ev) => events.push(ev),
            Err(problem) => invalid.push(ItemError {
                index,
                status: problem.status,
                detail: problem.detail,
            }),
        }
    }
    if !invalid.is_empty() {
        for _ in &invalid {
            p.metrics.failed("invalid");
        }
        let mut problem = Problem::invalid(format!(
            "{} of {} events in the batch are invalid; nothing was published",
            invalid.len(),
            invalid.len() + events.len()
        ));
        problem.errors = invalid;
        return problem.into_response();
    }
    for _ in &events {
        p.metrics.accepted();
    }
    let start = Instant::now();
    let results = adapter.publish_batch(&events).await;
    let seconds = start.elapsed().as_secs_f64();
    for r in &results {
        match r {
            Ok(()) => p.metrics.published(seconds),
            Err(e) => {
                p.metrics.failed(e.reason());
                tracing::debug!(error = %e, "publish failed");
            }
        }
    }
    let mut accepted = Vec::new();
    let mut failed = Vec::new();
    let mut worst: Option<PublishError> = None;
    for (index, r) in results.into_iter().enumerate() {
        match r {
            Ok(()) => accepted.push(index),
            Err(e) => {
                failed.push(ItemError {
                    index,
                    status: status_of(&e).as_u16(),
                    detail: e.to_string(),
                });
                if worst
                    .as_ref()
                    .is_none_or(|w| status_of(w) != StatusCode::SERVICE_UNAVAILABLE)
                {
                    worst = Some(e);
                }
            }
        }
    }
    match worst {
        None => StatusCode::ACCEPTED.into_response(),
        Some(e) => {
            let mut problem = publish_problem(&e);
            problem.detail = format!(
                "{} of {} events were not published (resend those listed in `errors`): {e}",
                failed.len(),
                failed.len() + accepted.len()
            );
            problem.errors = failed;
            problem.accepted = Some(accepted);
            problem.into_response()
        }
    }
}

async fn readyz(State(p): State<Arc<Publisher>>) -> Response {
    let Some(adapter) = &p.adapter else {
        return (StatusCode::OK, "ok: event broker disabled\n").into_response();
    };
    let r = adapter.readiness();
    p.metrics.set_connected(r.connected);
    if r.connected {
        (StatusCode::OK, "ok\n").into_response()
    } else {
        let detail = r.detail.unwrap_or_else(|| "not connected".into());
        Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "broker-unavailable",
            "Broker unavailable",
            detail,
        )
        .into_response()
    }
}

async fn metrics(State(p): State<Arc<Publisher>>) -> Response {
    if let Some(a) = &p.adapter {
        p.metrics.set_connected(a.readiness().connected);
    }
    let mut resp = p.metrics.encode().into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    resp
}

async fn asyncapi(State(p): State<Arc<Publisher>>) -> Response {
    axum::Json(p.asyncapi.clone()).into_response()
}
