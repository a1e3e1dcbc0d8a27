//! Issue 14, hostile input at the ingress: events whose attributes a protocol cannot carry (items 9 and
//! 10), types that reach the NATS server's own subjects (14), the HTTP limits (11) and an MQTT event over
//! the packet limit (12). Each answer is a problem body; nothing panics, and a batch with one such event
//! publishes nothing.

use std::time::{Duration, Instant};

use edgewire_agent::publisher::Limits;
use edgewire_e2e::brokers::{BrokerProcess, Kind};
use futures::{FutureExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::*;

fn nats_env(url: &str) -> Vec<(&'static str, String)> {
    vec![
        ("EVENT_BROKER_ENABLED", "true".into()),
        ("EVENT_BROKER_ADAPTER", "nats".into()),
        ("EVENT_BROKER_NATS_URLS", url.into()),
        ("CORE_NAME", CORE.into()),
    ]
}

fn config(vars: &[(&'static str, String)]) -> edgewire_agent::publisher::config::PublisherConfig {
    let pairs: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
    env_config(&pairs)
}

/// Status, problem type suffix and body of an answer that must be `application/problem+json`.
async fn problem(r: reqwest::Response) -> (u16, String, Value) {
    let status = r.status().as_u16();
    let ct = r
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap_or("").to_string());
    let text = r.text().await.unwrap_or_default();
    assert_eq!(
        ct.as_deref(),
        Some("application/problem+json"),
        "{status}: {text}"
    );
    let body: Value = serde_json::from_str(&text).expect("problem JSON");
    let slug = body["type"]
        .as_str()
        .and_then(|t| t.rsplit('/').next())
        .unwrap_or("")
        .to_string();
    (status, slug, body)
}

/// A NATS server, a subscriber on everything an event could reach, and the publisher.
struct NatsSetup {
    _nats: BrokerProcess,
    _client: async_nats::Client,
    subs: Vec<async_nats::Subscriber>,
    ingress: Ingress,
}

async fn nats_setup() -> NatsSetup {
    let nats = BrokerProcess::start_default(Kind::Nats).expect("nats-server");
    let client = async_nats::connect(nats.url()).await.unwrap();
    let mut subs = Vec::new();
    for subject in [">", "$JS.>", "$KV.>", "$O.>", "$SYS.>", "$G.>"] {
        subs.push(client.subscribe(subject).await.unwrap());
    }
    let round_trip = edgewire_e2e::brokers::nats::round_trip(&client)
        .await
        .unwrap();
    // `>` saw the round trip's message; nothing else has been published yet.
    let m = within(10, subs[0].next()).await.expect("subscription");
    assert_eq!(m.subject.as_str(), round_trip);
    let ingress = serve(config(&nats_env(&nats.url()))).await;
    ingress.wait_ready().await;
    NatsSetup {
        _nats: nats,
        _client: client,
        subs,
        ingress,
    }
}

impl NatsSetup {
    /// Publishes a sentinel through the ingress and returns the subjects of everything that reached the
    /// server before it. Messages of one connection arrive in order, so whatever the refused requests
    /// had published is in a subscription by the time the sentinel arrives.
    async fn published_before_sentinel(&mut self) -> Vec<String> {
        let r = self
            .ingress
            .post_structured(&event("edge.node.sentinel", "sentinel", json!({})))
            .await;
        assert_eq!(r.status().as_u16(), 202, "{}", r.text().await.unwrap());
        let mut seen = Vec::new();
        loop {
            let m = within(10, self.subs[0].next()).await.expect("subscription");
            if m.subject.as_str() == "edge.node.sentinel" {
                break;
            }
            seen.push(m.subject.to_string());
        }
        for s in &mut self.subs[1..] {
            while let Some(Some(m)) = s.next().now_or_never() {
                seen.push(m.subject.to_string());
            }
        }
        seen
    }
}

/// Item 9: attributes NATS headers cannot carry (a line break in a value; names outside the CloudEvents
/// rule) were handed to async-nats, whose header parser panics: the connection dropped without an answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_attributes_no_header_can_carry_are_400_and_a_batch_with_one_publishes_nothing() {
    let mut s = nats_setup().await;
    let ing = &s.ingress;
    let mut cases: Vec<(&str, Value, &str)> = Vec::new();
    let mut ev = event("edge.node.registered", "1", json!({}));
    ev["subject"] = json!("a\nb");
    cases.push(("subject with LF", ev, "unsupported-attribute"));
    let mut ev = event("edge.node.registered", "2", json!({}));
    ev["traceparent"] = json!("00-abc\r\n-01");
    cases.push(("extension value with CRLF", ev, "unsupported-attribute"));
    let mut ev = event("edge.node.registered", "3", json!({}));
    ev["source"] = json!("/nodes/\u{7}bell");
    cases.push((
        "source with a control character",
        ev,
        "unsupported-attribute",
    ));
    let mut ev = event("edge.node.registered", "4", json!({}));
    ev["bad name"] = json!("x");
    cases.push(("extension name with a space", ev, "invalid-event"));
    let mut ev = event("edge.node.registered", "5", json!({}));
    ev["a:b"] = json!("x");
    cases.push(("extension name with a colon", ev, "invalid-event"));
    let mut ev = event("edge.node.registered", "6", json!({}));
    ev["nämé"] = json!("x");
    cases.push(("extension name not ASCII", ev, "invalid-event"));
    for (what, ev, want) in &cases {
        let (status, slug, body) = problem(ing.post_structured(ev).await).await;
        eprintln!("{what}: {status} {}", body["detail"]);
        assert_eq!((status, slug.as_str()), (400, *want), "{what}: {body}");
    }
    // Binary mode: an HTTP header name CloudEvents does not allow.
    let r = ing
        .http
        .post(&ing.base)
        .header("ce-specversion", "1.0")
        .header("ce-id", "7")
        .header("ce-source", "/s")
        .header("ce-type", "edge.node.registered")
        .header("ce-trace_id", "x")
        .body("{}")
        .send()
        .await
        .expect("an answer, not a dropped connection");
    let (status, slug, body) = problem(r).await;
    assert_eq!((status, slug.as_str()), (400, "invalid-event"), "{body}");

    // A batch with one such event among good ones: 400 naming its index, nothing published.
    let batch: Vec<Value> = vec![
        event("edge.node.a", "b1", json!({})),
        cases[0].1.clone(),
        event("edge.node.b", "b3", json!({})),
    ];
    let (status, _, body) = problem(ing.post_batch(&batch).await).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["errors"][0]["index"], 1, "{body}");
    assert_eq!(body["errors"].as_array().unwrap().len(), 1, "{body}");
    let published = s.published_before_sentinel().await;
    assert!(published.is_empty(), "published: {published:?}");
}

/// Item 14: an event type became the subject unchecked, so the ingress reached the JetStream API,
/// key-value and object stores, the system account and request inboxes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_types_outside_the_publishers_subject_space_are_400() {
    let mut s = nats_setup().await;
    let reserved = [
        "$JS.API.STREAM.DELETE.orders",
        "$KV.config.key",
        "$O.bucket.x",
        "$SYS.REQ.SERVER.PING",
        "$G.x",
        "_INBOX.abcdef",
        "_R_.x.y",
    ];
    for ty in reserved {
        let r = s.ingress.post_binary(ty, "1", "{}").await;
        let (status, slug, body) = problem(r).await;
        assert_eq!(
            (status, slug.as_str()),
            (400, "unroutable-type"),
            "{ty}: {body}"
        );
        let (status, _, _) =
            problem(s.ingress.post_structured(&event(ty, "2", json!({}))).await).await;
        assert_eq!(status, 400, "{ty} structured");
    }
    let published = s.published_before_sentinel().await;
    assert!(published.is_empty(), "reached: {published:?}");
    // Types inside the space still go out.
    let r = s.ingress.post_binary("orders.created", "3", "{}").await;
    assert_eq!(r.status().as_u16(), 202);
}

/// Item 10: AMQP 0-9-1 short strings (message id, content type, header names) over 255 bytes panicked in
/// lapin.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqp_short_strings_over_255_bytes_are_400() {
    let rabbit = BrokerProcess::start_default(Kind::RabbitMq).expect("rabbitmq");
    let url = rabbit.url();
    let ing = serve(config(&[
        ("EVENT_BROKER_ENABLED", "true".into()),
        ("EVENT_BROKER_ADAPTER", "rabbitmq".into()),
        ("EVENT_BROKER_RABBITMQ_URL", url.clone()),
        ("CORE_NAME", CORE.into()),
    ]))
    .await;
    ing.wait_ready().await;
    let long = "x".repeat(300);
    let mut cases: Vec<(&str, Value)> = Vec::new();
    cases.push(("id", event("edge.node.registered", &long, json!({}))));
    let mut ev = event("edge.node.registered", "2", json!("text"));
    ev["datacontenttype"] = json!(format!("text/{long}"));
    cases.push(("datacontenttype", ev));
    let mut ev = event("edge.node.registered", "3", json!({}));
    ev["a".repeat(250)] = json!("x");
    cases.push(("extension name", ev));
    for (what, ev) in &cases {
        let (status, slug, body) = problem(ing.post_structured(ev).await).await;
        eprintln!("{what}: {status} {}", body["detail"]);
        assert_eq!(
            (status, slug.as_str()),
            (400, "unsupported-attribute"),
            "{what}: {body}"
        );
    }
    // The same id in binary mode.
    let r = ing.post_binary("edge.node.registered", &long, "{}").await;
    assert_eq!(problem(r).await.0, 400);
    // One in a batch: nothing is published. A consumer bound to everything sees the sentinel first.
    let conn = lapin::Connection::connect(&url, lapin::ConnectionProperties::default())
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    let q = ch
        .queue_declare(
            "".into(),
            lapin::options::QueueDeclareOptions {
                exclusive: true,
                ..Default::default()
            },
            lapin::types::FieldTable::default(),
        )
        .await
        .unwrap();
    ch.queue_bind(
        q.name().clone(),
        "edge.events".into(),
        "#".into(),
        lapin::options::QueueBindOptions::default(),
        lapin::types::FieldTable::default(),
    )
    .await
    .unwrap();
    let mut consumer = ch
        .basic_consume(
            q.name().clone(),
            "t".into(),
            lapin::options::BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            lapin::types::FieldTable::default(),
        )
        .await
        .unwrap();
    let batch = vec![event("edge.node.a", "b1", json!({})), cases[0].1.clone()];
    let (status, _, body) = problem(ing.post_batch(&batch).await).await;
    assert_eq!(status, 400, "{body}");
    let r = ing
        .post_structured(&event("edge.node.sentinel", "s", json!({})))
        .await;
    assert_eq!(r.status().as_u16(), 202);
    let first = within(10, consumer.next()).await.unwrap().unwrap();
    assert_eq!(first.routing_key.as_str(), "edge.node.sentinel");
}

fn offline_nats() -> edgewire_agent::publisher::config::PublisherConfig {
    // Nothing listens there: these answers come before any publish.
    config(&nats_env("nats://127.0.0.1:1"))
}

/// Item 11: a client that opens a connection and trickles its request headers is closed after the header
/// timeout (axum::serve ran hyper without a timer: never).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_loris_connection_is_closed_after_the_header_timeout() {
    let limits = Limits {
        header_timeout_seconds: 1,
        ..Limits::default()
    };
    let ing = serve_limited(offline_nats(), limits).await;
    let mut conn = tokio::net::TcpStream::connect(ing.addr).await.unwrap();
    conn.write_all(b"POST / HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    let (mut rd, mut wr) = conn.into_split();
    // One more header byte every 200 ms, as a slow-loris client does, for as long as the connection is
    // open (the timeout is not extended by them; the write half stays open, no EOF ends the request).
    let trickle = tokio::spawn(async move {
        if wr.write_all(b"X-Slow: ").await.is_err() {
            return;
        }
        loop {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if wr.write_all(b"a").await.is_err() {
                return;
            }
        }
    });
    let mut buf = [0u8; 1024];
    // The outer bound only keeps a broken server from hanging the test.
    let closed = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    trickle.abort();
    assert!(closed.is_ok(), "the slow-loris connection is still open");
    eprintln!("slow-loris connection closed after {:?}", started.elapsed());
    // The server is fine.
    let r = ing
        .http
        .get(format!("{}/healthz", ing.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
}

/// Item 11: hundreds of idle connections leave `/healthz` answering; over `max_connections` a new
/// connection is closed at once and counted, and room returns as connections close.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_are_capped_and_healthz_answers_with_hundreds_idle() {
    let ing = serve(offline_nats()).await;
    let mut idle = Vec::new();
    for _ in 0..300 {
        idle.push(tokio::net::TcpStream::connect(ing.addr).await.unwrap());
    }
    let r = within(10, ing.http.get(format!("{}/healthz", ing.base)).send())
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200, "300 idle connections open");
    drop(idle);

    let limits = Limits {
        max_connections: 8,
        header_timeout_seconds: 600,
        ..Limits::default()
    };
    let ing = serve_limited(offline_nats(), limits).await;
    let mut held = Vec::new();
    for _ in 0..8 {
        held.push(tokio::net::TcpStream::connect(ing.addr).await.unwrap());
    }
    // Accepted in order: the ninth finds the eight holding every slot and is closed unanswered.
    let mut ninth = tokio::net::TcpStream::connect(ing.addr).await.unwrap();
    let _ = ninth
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await;
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(30), ninth.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "the ninth connection was kept open");
    assert!(
        !String::from_utf8_lossy(&buf).contains("200 OK"),
        "the ninth connection was served"
    );
    drop(held);
    // The eight closed: connections are served again (their permits come back as the server sees EOF).
    let deadline = Instant::now() + Duration::from_secs(30);
    let metrics = loop {
        if let Ok(r) = ing.http.get(format!("{}/metrics", ing.base)).send().await
            && r.status().as_u16() == 200
        {
            break r.text().await.unwrap();
        }
        assert!(Instant::now() < deadline, "never served again");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let refused = metrics
        .lines()
        .find_map(|l| l.strip_prefix("edgewire_publisher_connections_refused_total "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .expect("connections_refused_total in /metrics");
    assert!(refused >= 1.0, "{refused}");
}

/// Item 11: batch and body limits and the answers of other methods and paths are problem bodies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_body_and_method_limits_answer_problem_json() {
    let limits = Limits {
        max_batch_events: 3,
        body_timeout_seconds: 1,
        ..Limits::default()
    };
    let ing = serve_limited(offline_nats(), limits).await;
    let four: Vec<Value> = (0..4)
        .map(|i| event("edge.node.a", &i.to_string(), json!({})))
        .collect();
    let (status, slug, body) = problem(ing.post_batch(&four).await).await;
    assert_eq!((status, slug.as_str()), (413, "batch-too-large"), "{body}");
    assert!(
        body["detail"].as_str().unwrap().contains("at most 3"),
        "{body}"
    );

    let (status, slug, body) = problem(ing.post_batch(&[]).await).await;
    assert_eq!((status, slug.as_str()), (400, "empty-batch"), "{body}");

    let big = "x".repeat(5 * 1024 * 1024);
    let r = ing
        .http
        .post(&ing.base)
        .header("content-type", "application/cloudevents+json")
        .body(big)
        .send()
        .await
        .unwrap();
    let (status, slug, _) = problem(r).await;
    assert_eq!((status, slug.as_str()), (413, "event-too-large"));

    let r = ing.http.get(&ing.base).send().await.unwrap();
    let (status, slug, _) = problem(r).await;
    assert_eq!((status, slug.as_str()), (405, "method-not-allowed"));
    let r = ing
        .http
        .delete(format!("{}/healthz", ing.base))
        .send()
        .await
        .unwrap();
    assert_eq!(problem(r).await.0, 405);
    let r = ing
        .http
        .get(format!("{}/nope", ing.base))
        .send()
        .await
        .unwrap();
    assert_eq!(problem(r).await.0, 404);

    // Headers, then a body that never comes: 408 after the body timeout.
    let mut conn = tokio::net::TcpStream::connect(ing.addr).await.unwrap();
    conn.write_all(
        b"POST / HTTP/1.1\r\nHost: x\r\ncontent-type: application/cloudevents+json\r\ncontent-length: 100\r\n\r\n{",
    )
    .await
    .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = within(30, conn.read(&mut buf)).await.unwrap();
    let answer = String::from_utf8_lossy(&buf[..n]);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("application/problem+json"), "{answer}");
}

/// Item 12: an MQTT event over the client's packet limit made rumqttc drop the connection, failing every
/// request in flight with 503. It is a 413 before publishing; the small events sent with it are 202.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_event_over_the_packet_limit_is_413_and_concurrent_small_events_pass() {
    let mosq = BrokerProcess::start_default(Kind::Mosquitto).expect("mosquitto");
    let ing = serve(config(&[
        ("EVENT_BROKER_ENABLED", "true".into()),
        ("EVENT_BROKER_ADAPTER", "mqtt".into()),
        ("EVENT_BROKER_MQTT_URL", mosq.url()),
        ("CORE_NAME", CORE.into()),
    ]))
    .await;
    ing.wait_ready().await;
    // 3.5 MiB of bytes: under the 4 MiB body limit, over the 4 MiB packet limit as base64 in JSON.
    let big = vec![0xA5u8; 3 * 1024 * 1024 + 512 * 1024];
    let big_req = ing
        .http
        .post(&ing.base)
        .header("ce-specversion", "1.0")
        .header("ce-id", "big")
        .header("ce-source", "/s")
        .header("ce-type", "edge.node.big")
        .header("content-type", "application/octet-stream")
        .body(big)
        .send();
    let ids: Vec<String> = (0..20).map(|i| format!("s{i}")).collect();
    let small = futures::future::join_all(
        ids.iter()
            .map(|id| ing.post_binary("edge.node.small", id, "{}")),
    );
    let (big, small) = tokio::join!(big_req, small);
    let (status, slug, body) = problem(big.unwrap()).await;
    eprintln!("big: {status} {}", body["detail"]);
    assert_eq!((status, slug.as_str()), (413, "event-too-large"), "{body}");
    for (i, r) in small.into_iter().enumerate() {
        assert_eq!(
            r.status().as_u16(),
            202,
            "small {i}: {}",
            r.text().await.unwrap()
        );
    }
    assert_eq!(ing.readyz().await.0, 200, "the connection stayed up");
}
