//! Helpers: run the real publisher (adapter + axum router) on a loopback port and talk real HTTP to it.

use std::collections::HashMap;
use std::time::Duration;

use edgewire_agent::publisher::config::{PublisherConfig, env};
use edgewire_agent::publisher::{Limits, Publisher, serve_until};
use serde_json::{Value, json};

pub const CORE: &str = "test-core";

/// Parses an environment given as pairs, as the operator would render it.
pub fn env_config(vars: &[(&str, &str)]) -> PublisherConfig {
    let map: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    env::from_lookup(|k| map.get(k).cloned()).expect("valid environment")
}

pub struct Ingress {
    pub base: String,
    pub addr: std::net::SocketAddr,
    pub http: reqwest::Client,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Ingress {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts the publisher for `config` on 127.0.0.1:<random>, as `edgewire-agent publisher` serves it.
pub async fn serve(config: PublisherConfig) -> Ingress {
    serve_limited(config, Limits::default()).await
}

/// The same with the ingress limits `limits`.
pub async fn serve_limited(config: PublisherConfig, limits: Limits) -> Ingress {
    let publisher = Publisher::new_limited(&config, limits)
        .await
        .expect("adapter builds");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let task = tokio::spawn(async move {
        serve_until(listener, publisher, std::future::pending()).await;
    });
    Ingress {
        base: format!("http://{addr}"),
        addr,
        http: reqwest::Client::new(),
        task,
    }
}

impl Ingress {
    pub async fn readyz(&self) -> (u16, String) {
        let r = self
            .http
            .get(format!("{}/readyz", self.base))
            .send()
            .await
            .expect("GET /readyz");
        (r.status().as_u16(), r.text().await.unwrap_or_default())
    }

    /// Polls `/readyz` until it answers `want` (200 or 503); panics with the last answer after `secs`.
    pub async fn wait_ready_status(&self, want: u16, secs: u64) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
        loop {
            let (s, body) = self.readyz().await;
            if s == want {
                return;
            }
            if tokio::time::Instant::now() > deadline {
                panic!("/readyz stayed {s} ({body}), wanted {want}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn wait_ready(&self) {
        self.wait_ready_status(200, 30).await;
    }

    /// Waits (30 s) until `/readyz` shows the broker's refusal: 503 with `answer`, the broker's own words
    /// (or its certificate's verdict), in the detail; then checks that a POST is 503 too. A publisher still
    /// connecting, or one facing a dead broker, never shows them: see [`refusal_not_shown`].
    pub async fn expect_refused(&self, answer: &str) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let (status, body) = self.readyz().await;
            if shows_refusal(status, &body, answer) {
                eprintln!("refused ({answer}): {}", readyz_detail(&body));
                break;
            }
            if tokio::time::Instant::now() > deadline {
                panic!(
                    "/readyz never showed the broker's refusal {answer:?}: last {status} {body}"
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let r = self
            .post_binary("edge.node.registered", "refused", "{}")
            .await;
        assert_eq!(
            r.status().as_u16(),
            503,
            "a refused publisher takes no event"
        );
    }

    /// Waits (30 s) until `/readyz` reports a failed connection attempt (503 with a detail other than the
    /// initial "connecting"); returns that answer.
    pub async fn wait_failed_attempt(&self) -> (u16, String) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let (status, body) = self.readyz().await;
            let detail = readyz_detail(&body);
            if status == 503 && !detail.is_empty() && detail != "connecting" {
                return (status, body);
            }
            if tokio::time::Instant::now() > deadline {
                panic!("/readyz never reported a failed attempt: last {status} {body}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Binary mode: ce-* headers, body = data.
    pub async fn post_binary(&self, ty: &str, id: &str, data: &str) -> reqwest::Response {
        self.http
            .post(&self.base)
            .header("ce-specversion", "1.0")
            .header("ce-id", id)
            .header("ce-source", "/tests/binary")
            .header("ce-type", ty)
            .header("ce-subject", "node-7")
            .header("content-type", "application/json")
            .body(data.to_string())
            .send()
            .await
            .expect("POST binary")
    }

    pub async fn post_structured(&self, event: &Value) -> reqwest::Response {
        self.http
            .post(&self.base)
            .header("content-type", "application/cloudevents+json")
            .body(event.to_string())
            .send()
            .await
            .expect("POST structured")
    }

    pub async fn post_batch(&self, events: &[Value]) -> reqwest::Response {
        self.http
            .post(&self.base)
            .header("content-type", "application/cloudevents-batch+json")
            .body(Value::Array(events.to_vec()).to_string())
            .send()
            .await
            .expect("POST batch")
    }
}

/// The `detail` of a `/readyz` problem body; empty for a body that is not one.
pub fn readyz_detail(body: &str) -> String {
    serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| v["detail"].as_str().map(str::to_string))
        .unwrap_or_default()
}

/// Whether a `/readyz` answer shows the broker's refusal `answer` (case-insensitive) in its detail.
pub fn shows_refusal(status: u16, body: &str, answer: &str) -> bool {
    status == 503
        && readyz_detail(body)
            .to_lowercase()
            .contains(&answer.to_lowercase())
}

/// The meta-test of a refusal check: a publisher configured as the check configures it, facing the
/// check's broker **stopped**, reports its failed attempt, and that answer does not pass the check.
pub async fn refusal_not_shown(config: PublisherConfig, answer: &str) {
    let ingress = serve(config).await;
    let (status, body) = ingress.wait_failed_attempt().await;
    eprintln!("stopped broker ({answer}?): {}", readyz_detail(&body));
    assert!(
        !shows_refusal(status, &body, answer),
        "the refusal check for {answer:?} passes against a stopped broker: {status} {body}"
    );
}

/// A structured-mode event with JSON data.
pub fn event(ty: &str, id: &str, data: Value) -> Value {
    json!({
        "specversion": "1.0",
        "id": id,
        "source": "/tests/structured",
        "type": ty,
        "datacontenttype": "application/json",
        "data": data
    })
}

/// The three modes, as (mode, type, id, data) the arrival tests send and expect.
pub fn three_modes() -> Vec<(&'static str, &'static str, &'static str, Value)> {
    vec![
        (
            "binary",
            "edge.node.registered",
            "bin-1",
            json!({"node": "n1", "mode": "binary"}),
        ),
        (
            "structured",
            "edge.command_execution.completed",
            "str-1",
            json!({"cmd": "c1", "mode": "structured"}),
        ),
        (
            "batch",
            "edge.self_update.started",
            "bat-1",
            json!({"n": 1, "mode": "batch"}),
        ),
        (
            "batch",
            "edge.ssh.opened",
            "bat-2",
            json!({"n": 2, "mode": "batch"}),
        ),
    ]
}

/// Sends [`three_modes`] (the two batch events in one request) and asserts 202 for each request.
pub async fn send_three_modes(ingress: &Ingress) {
    let modes = three_modes();
    let (_, ty, id, data) = &modes[0];
    let r = ingress.post_binary(ty, id, &data.to_string()).await;
    assert_eq!(
        r.status().as_u16(),
        202,
        "binary: {}",
        r.text().await.unwrap_or_default()
    );
    let (_, ty, id, data) = &modes[1];
    let r = ingress.post_structured(&event(ty, id, data.clone())).await;
    assert_eq!(
        r.status().as_u16(),
        202,
        "structured: {}",
        r.text().await.unwrap_or_default()
    );
    let batch: Vec<Value> = modes[2..]
        .iter()
        .map(|(_, ty, id, data)| event(ty, id, data.clone()))
        .collect();
    let r = ingress.post_batch(&batch).await;
    assert_eq!(
        r.status().as_u16(),
        202,
        "batch: {}",
        r.text().await.unwrap_or_default()
    );
}

/// Waits up to `secs` for `f` to produce a value.
pub async fn within<T>(secs: u64, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(secs), f)
        .await
        .expect("timed out waiting")
}

/// Sends `sig` (STOP, CONT) to process `pid`.
pub fn signal(pid: u32, sig: &str) {
    let ok = std::process::Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "kill -{sig} {pid}");
}

/// A publisher on a fresh nats-server (core NATS), ready: the broker process and the ingress.
pub async fn nats_ingress() -> (edgewire_e2e::brokers::BrokerProcess, Ingress) {
    let nats =
        edgewire_e2e::brokers::BrokerProcess::start_default(edgewire_e2e::brokers::Kind::Nats)
            .expect("nats-server");
    let url = nats.url();
    let ingress = serve(env_config(&[
        ("EVENT_BROKER_ENABLED", "true"),
        ("EVENT_BROKER_ADAPTER", "nats"),
        ("EVENT_BROKER_NATS_URLS", &url),
        ("CORE_NAME", CORE),
    ]))
    .await;
    ingress.wait_ready().await;
    (nats, ingress)
}
