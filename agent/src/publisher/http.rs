//! The routes: `POST /`, `GET /healthz`, `/readyz`, `/metrics`, `/asyncapi`.

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequest, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use cloudevents::Event;

use super::Publisher;
use super::problem::{ItemError, Problem};
use crate::adapters::{Adapter, PublishError, Unfit};
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
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(state)
}

async fn not_found() -> Response {
    Problem::new(
        StatusCode::NOT_FOUND,
        "not-found",
        "Not found",
        "events go to POST /; GET /healthz, /readyz, /metrics, /asyncapi",
    )
    .into_response()
}

async fn method_not_allowed() -> Response {
    Problem::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method-not-allowed",
        "Method not allowed",
        "events are sent with POST /; the other paths answer GET",
    )
    .into_response()
}

/// Reads the body within the body timeout and under [`BODY_LIMIT`]: 408 or 413 problems otherwise.
async fn read_body(p: &Publisher, req: Request) -> Result<Bytes, Box<Problem>> {
    match tokio::time::timeout(p.limits.body_timeout(), Bytes::from_request(req, &())).await {
        Ok(Ok(body)) => Ok(body),
        Ok(Err(rejection)) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => Err(Box::new(
            Problem::too_large(format!("the request body is over {BODY_LIMIT} bytes")),
        )),
        Ok(Err(rejection)) => Err(Box::new(Problem::new(
            StatusCode::BAD_REQUEST,
            "unreadable-body",
            "Body could not be read",
            rejection.body_text(),
        ))),
        Err(_) => Err(Box::new(Problem::new(
            StatusCode::REQUEST_TIMEOUT,
            "body-timeout",
            "Body not received in time",
            format!(
                "the request body did not arrive within {} s (EDGEWIRE_HTTP_BODY_TIMEOUT_SECONDS)",
                p.limits.body_timeout_seconds
            ),
        ))),
    }
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
    if let Some(m) = event::attribute_name_problem(&ev) {
        return Err(Box::new(Problem::invalid(m)));
    }
    event::stamp_corename(&mut ev, &p.core_name);
    adapter.validate(&ev).map_err(|m| {
        Box::new(Problem::new(
            StatusCode::BAD_REQUEST,
            "unroutable-type",
            "Event type cannot be routed",
            m,
        ))
    })?;
    adapter
        .fits(&ev)
        .map_err(|u| Box::new(unfit_problem(adapter, &u)))?;
    Ok(ev)
}

fn unfit_problem(adapter: &dyn Adapter, u: &Unfit) -> Problem {
    match u {
        Unfit::Attribute(m) => Problem::new(
            StatusCode::BAD_REQUEST,
            "unsupported-attribute",
            "Attribute cannot be carried by the broker protocol",
            format!("{} adapter: {m}", adapter.name()),
        ),
        Unfit::TooLarge(m) => Problem::too_large(format!("{} adapter: {m}", adapter.name())),
    }
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

async fn ingest(State(p): State<Arc<Publisher>>, req: Request) -> Response {
    // The headers are the event's attributes in binary mode; reading the body needs none of them.
    let (mut parts, body) = req.into_parts();
    let headers = std::mem::take(&mut parts.headers);
    let req = Request::from_parts(parts, body);
    let body = match read_body(&p, req).await {
        Ok(body) => body,
        Err(problem) => {
            p.metrics.failed("invalid");
            return problem.into_response();
        }
    };
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
    if items.is_empty() {
        p.metrics.failed("invalid");
        return Problem::new(
            StatusCode::BAD_REQUEST,
            "empty-batch",
            "Empty batch",
            "a batch must hold at least one CloudEvent",
        )
        .into_response();
    }
    let max = p.limits.max_batch_events as usize;
    if items.len() > max {
        p.metrics.failed("invalid");
        return Problem::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "batch-too-large",
            "Batch too large",
            format!(
                "the batch holds {} events; this ingress takes at most {max} per request (EDGEWIRE_MAX_BATCH_EVENTS): split it",
                items.len()
            ),
        )
        .into_response();
    }
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

#[cfg(test)]
mod tests {
    //! The decoder and the ingress as a whole, against arbitrary requests: every answer is 202 (the fake
    //! adapter accepts all) or a 4xx problem, nothing panics, and an event the checks let through never
    //! trips the panicking conversions of the NATS and AMQP client libraries.

    use super::*;
    use crate::connect::Readiness;
    use crate::publisher::config::PublisherConfig;
    use axum::body::Body;
    use futures::FutureExt;
    use futures::future::BoxFuture;
    use proptest::prelude::*;

    /// Accepts every event; `fits` is the NATS and AMQP adapters' checks together, and `publish` does
    /// what those adapters do with the event through the library calls that panic on bad input.
    struct Strict;

    impl Adapter for Strict {
        fn name(&self) -> &'static str {
            "strict"
        }
        fn validate(&self, ev: &Event) -> Result<(), String> {
            match event::nats_subject_problem(cloudevents::AttributesReader::ty(ev)) {
                Some(p) => Err(p),
                None => Ok(()),
            }
        }
        fn fits(&self, ev: &Event) -> Result<(), Unfit> {
            match event::nats_headers_problem(ev).or_else(|| event::amqp_problem(ev)) {
                Some(p) => Err(Unfit::Attribute(p)),
                None => Ok(()),
            }
        }
        fn publish<'a>(&'a self, ev: &'a Event) -> BoxFuture<'a, Result<(), PublishError>> {
            async move {
                let mut h = async_nats::HeaderMap::new();
                for (k, v) in event::nats_headers(ev) {
                    h.insert(k.as_str(), v.as_str());
                }
                for (k, _) in event::amqp_headers(ev) {
                    let _ = lapin::types::ShortString::from(k);
                }
                let _ = lapin::types::ShortString::from(cloudevents::AttributesReader::id(ev));
                let _ = event::structured_json(ev);
                Ok(())
            }
            .boxed()
        }
        fn readiness(&self) -> Readiness {
            Readiness {
                connected: true,
                detail: None,
            }
        }
    }

    fn publisher() -> Arc<Publisher> {
        let config = PublisherConfig {
            enabled: true,
            core_name: "prop".into(),
            broker: None,
            notes: Vec::new(),
        };
        Publisher::with_adapter(&config, Some(Arc::new(Strict)))
    }

    fn answer(p: &Arc<Publisher>, req: Request) -> (StatusCode, Option<String>) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let resp = rt.block_on(ingest(State(p.clone()), req));
        let ct = resp
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        (resp.status(), ct)
    }

    fn assert_answer((status, ct): (StatusCode, Option<String>)) -> Result<(), TestCaseError> {
        prop_assert!(
            status == StatusCode::ACCEPTED || status.is_client_error(),
            "status {status}"
        );
        if status.is_client_error() {
            prop_assert_eq!(
                ct.as_deref(),
                Some(super::super::problem::PROBLEM_CONTENT_TYPE)
            );
        }
        Ok(())
    }

    /// Header names a binary-mode request may carry: the CloudEvents ones, odd extensions, and others.
    fn header_name() -> impl Strategy<Value = String> {
        prop_oneof![
            prop::sample::select(vec![
                "ce-specversion",
                "ce-id",
                "ce-source",
                "ce-type",
                "ce-subject",
                "ce-time",
                "ce-dataschema",
                "ce-datacontenttype",
                "content-type",
                "ce-corename",
            ])
            .prop_map(String::from),
            "ce-[a-z0-9_.-]{0,300}",
            "[a-z-]{1,20}",
        ]
    }

    /// Header value bytes HTTP allows (visible ASCII, space, tab, obs-text).
    fn header_value() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            Just(b"1.0".to_vec()),
            Just(b"edge.node.registered".to_vec()),
            Just(b"$JS.API.STREAM.DELETE.x".to_vec()),
            Just(b"application/json".to_vec()),
            prop::collection::vec(
                prop_oneof![0x20u8..0x7f, Just(b'\t'), 0x80u8..=0xff],
                0..300
            ),
        ]
    }

    /// JSON values an attribute may be given, hostile strings included.
    fn json_value() -> impl Strategy<Value = serde_json::Value> {
        use serde_json::Value;
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(Value::from),
            ".{0,40}".prop_map(Value::from),
            "[a-z.$_]{1,20}".prop_map(Value::from),
            prop::sample::select(vec![
                "1.0",
                "a\nb",
                "a\r\nb",
                "\u{7}",
                "edge.node.x",
                "_INBOX.x"
            ])
            .prop_map(Value::from),
            "x{250,300}".prop_map(Value::from),
        ];
        leaf.prop_recursive(2, 8, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map("[a-z]{1,5}", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    /// A structured event: mostly the required attributes, plus members with CloudEvents names, odd names
    /// and hostile values (control characters, long strings) weighted so they are common.
    fn structured() -> impl Strategy<Value = serde_json::Value> {
        let key = prop_oneof![
            4 => prop::sample::select(vec![
                "specversion",
                "id",
                "source",
                "type",
                "subject",
                "time",
                "datacontenttype",
                "dataschema",
                "data",
                "data_base64",
                "corename",
            ])
            .prop_map(String::from),
            3 => "[a-z0-9]{1,10}",
            1 => ".{1,12}",
            1 => "[a-z]{240,260}",
        ];
        let value = prop_oneof![
            3 => "(?s).{0,20}".prop_map(serde_json::Value::from),
            2 => prop::sample::select(vec!["a\nb", "a\r\nb", "\u{0}", "\u{7f}", "x\ty", "é"])
                .prop_map(serde_json::Value::from),
            1 => "x{250,300}".prop_map(serde_json::Value::from),
            2 => json_value(),
        ];
        let base = prop::sample::select(vec![true, true, true, false]);
        (
            base,
            prop::collection::vec((key, value), 0..6),
            prop::collection::vec(json_value(), 4),
        )
            .prop_map(|(base, extra, req)| {
                let mut m = serde_json::Map::new();
                if base {
                    m.insert("specversion".into(), "1.0".into());
                    m.insert("id".into(), "1".into());
                    m.insert("source".into(), "/s".into());
                    m.insert("type".into(), "edge.node.x".into());
                } else {
                    for (k, v) in ["specversion", "id", "source", "type"].iter().zip(req) {
                        m.insert((*k).into(), v);
                    }
                }
                for (k, v) in extra {
                    m.insert(k, v);
                }
                serde_json::Value::Object(m)
            })
    }

    fn request(
        content_type: Option<&str>,
        headers: &[(String, Vec<u8>)],
        body: Vec<u8>,
    ) -> Request {
        let mut b = http::Request::builder().method("POST").uri("/");
        if let Some(ct) = content_type {
            b = b.header(header::CONTENT_TYPE, ct);
        }
        for (k, v) in headers {
            if let (Ok(n), Ok(v)) = (
                http::HeaderName::from_bytes(k.as_bytes()),
                HeaderValue::from_bytes(v),
            ) {
                b = b.header(n, v);
            }
        }
        b.body(Body::from(body)).unwrap()
    }

    proptest! {
        #![proptest_config(ProptestConfig { failure_persistence: None, ..ProptestConfig::default() })]

        #[test]
        fn binary_mode_answers_202_or_a_4xx_problem(
            headers in prop::collection::vec((header_name(), header_value()), 0..10),
            body in prop::collection::vec(any::<u8>(), 0..200),
        ) {
            let mut all = vec![
                ("ce-specversion".to_string(), b"1.0".to_vec()),
                ("ce-id".to_string(), b"1".to_vec()),
                ("ce-source".to_string(), b"/s".to_vec()),
                ("ce-type".to_string(), b"edge.node.x".to_vec()),
            ];
            // Later values replace the defaults (HeaderMap keeps both; the SDK reads the first), so put
            // the generated ones first.
            let mut hs = headers;
            hs.append(&mut all);
            assert_answer(answer(&publisher(), request(None, &hs, body)))?;
        }

        #[test]
        fn structured_mode_answers_202_or_a_4xx_problem(ev in structured()) {
            let body = serde_json::to_vec(&ev).unwrap();
            let req = request(Some(event::STRUCTURED_CONTENT_TYPE), &[], body);
            assert_answer(answer(&publisher(), req))?;
        }

        #[test]
        fn batch_mode_answers_202_or_a_4xx_problem(
            evs in prop::collection::vec(prop_oneof![structured(), json_value()], 0..5),
        ) {
            let body = serde_json::to_vec(&evs).unwrap();
            let req = request(Some(event::BATCH_CONTENT_TYPE), &[], body);
            assert_answer(answer(&publisher(), req))?;
        }

        #[test]
        fn any_body_answers_202_or_a_4xx_problem(
            ct in prop::sample::select(vec![
                event::STRUCTURED_CONTENT_TYPE,
                event::BATCH_CONTENT_TYPE,
                "application/cloudevents",
                "application/json",
            ]),
            body in prop::collection::vec(any::<u8>(), 0..300),
        ) {
            let req = request(Some(ct), &[("ce-specversion".into(), b"1.0".to_vec())], body);
            assert_answer(answer(&publisher(), req))?;
        }
    }
}
