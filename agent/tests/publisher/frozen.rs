//! Issue 14 item 2 from the publisher's side: the broker process frozen with SIGSTOP (it accepts nothing,
//! answers nothing, and its sockets stay open). Every request made meanwhile is a 503 — answered, by the
//! publisher's acknowledgement timeout ([`PUBLISH_TIMEOUT`]) — and none is a 2xx; after SIGCONT new
//! requests are accepted again; and every event that was answered 202 is in the broker afterwards.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use edgewire_agent::adapters::PUBLISH_TIMEOUT;
use edgewire_e2e::brokers::nats::subscribed;
use edgewire_e2e::brokers::{BrokerProcess, Kind};
use futures::StreamExt;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::sync::mpsc;

use crate::common::*;

const TYPE: &str = "edge.node.registered";
/// Requests made while the broker is frozen.
const FROZEN: usize = 4;

/// A broker frozen for the life of the value; thawed on drop (so a failed test leaves no stopped process).
struct Frozen(u32);

impl Frozen {
    /// SIGSTOP, then waits until every thread of the broker has stopped: `kill` returns once the signal is
    /// queued, and on a loaded machine a thread can still run for a while and answer what arrives meanwhile.
    fn freeze(b: &BrokerProcess) -> Frozen {
        let pid = b.pid().expect("the broker runs");
        signal(pid, "STOP");
        let frozen = Frozen(pid);
        let deadline = Instant::now() + Duration::from_secs(30);
        while !all_threads_stopped(pid) {
            assert!(
                Instant::now() < deadline,
                "the broker (pid {pid}) did not stop within 30 s of SIGSTOP"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        frozen
    }
}

/// Every thread of `pid` is in the stopped state (`T` in `/proc/<pid>/task/<tid>/stat`).
fn all_threads_stopped(pid: u32) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    tasks.flatten().all(|t| {
        std::fs::read_to_string(t.path().join("stat"))
            .ok()
            .and_then(|s| s.rsplit_once(") ").map(|(_, rest)| rest.starts_with('T')))
            .unwrap_or(false)
    })
}

impl Drop for Frozen {
    fn drop(&mut self) {
        signal(self.0, "CONT");
    }
}

/// Posts `n` events with ids `<prefix>-0..n` and expects each to be a 202; returns the ids.
async fn accepted(ingress: &Ingress, prefix: &str, n: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for i in 0..n {
        let id = format!("{prefix}-{i}");
        let r = ingress.post_binary(TYPE, &id, "{}").await;
        assert_eq!(
            r.status().as_u16(),
            202,
            "{id}: {}",
            r.text().await.unwrap()
        );
        ids.push(id);
    }
    ids
}

/// [`FROZEN`] concurrent requests while the broker is frozen: each must be answered, with a 503 and a
/// `Retry-After`, never a 2xx, and not hang: the acknowledgement timeout bounds it (the guard leaves
/// room for a loaded machine). Returns (status, seconds it took) of each, for the record.
async fn while_frozen(ingress: &Ingress) -> Vec<(u16, f64)> {
    let guard = PUBLISH_TIMEOUT * 3;
    futures::future::join_all((0..FROZEN).map(|i| async move {
        let start = Instant::now();
        let r = tokio::time::timeout(
            guard,
            ingress.post_binary(TYPE, &format!("frozen-{i}"), "{}"),
        )
        .await
        .unwrap_or_else(|_| panic!("request {i} to a frozen broker not answered in {guard:?}"));
        let status = r.status().as_u16();
        let retry_after = r.headers().contains_key("retry-after");
        let body = r.text().await.unwrap();
        assert_eq!(
            status, 503,
            "request {i} while the broker is frozen: {body}"
        );
        assert!(retry_after, "503 without Retry-After: {body}");
        (status, start.elapsed().as_secs_f64())
    }))
    .await
}

/// After SIGCONT: posts new events until one is accepted (each refused one a 503, never another code),
/// then a few more that must all be accepted. Returns the accepted ids.
async fn after_thaw(ingress: &Ingress) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut n = 0;
    loop {
        let id = format!("thawed-{n}");
        n += 1;
        let r = ingress.post_binary(TYPE, &id, "{}").await;
        match r.status().as_u16() {
            202 => break,
            503 => {
                assert!(
                    Instant::now() < deadline,
                    "still 503 two minutes after SIGCONT: {}",
                    r.text().await.unwrap()
                );
                ingress.wait_ready().await;
            }
            other => panic!("{id} after the thaw: {other} {}", r.text().await.unwrap()),
        }
    }
    let mut ids = vec![format!("thawed-{}", n - 1)];
    ids.extend(accepted(ingress, "after", 5).await);
    ids
}

fn nats_js_env(url: &str) -> Vec<(&str, &str)> {
    vec![
        ("EVENT_BROKER_ENABLED", "true"),
        ("EVENT_BROKER_ADAPTER", "nats"),
        ("EVENT_BROKER_NATS_URLS", url),
        ("EVENT_BROKER_NATS_JETSTREAM", "true"),
        ("CORE_NAME", CORE),
    ]
}

/// NATS JetStream: the publish waits for the stream's PubAck, which a frozen server never sends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jetstream_frozen_server_503_then_accepts_and_keeps_every_acknowledged_event() {
    let nats = BrokerProcess::start_default(Kind::Nats).expect("nats-server");
    let url = nats.url();
    {
        let c = async_nats::connect(&url).await.unwrap();
        async_nats::jetstream::new(c)
            .create_stream(async_nats::jetstream::stream::Config {
                name: "EDGE_EVENTS".into(),
                subjects: vec!["edge.>".into()],
                ..Default::default()
            })
            .await
            .unwrap();
    }
    let ingress = serve(env_config(&nats_js_env(&url))).await;
    ingress.wait_ready().await;
    let mut acked: BTreeSet<String> = accepted(&ingress, "before", 5).await.into_iter().collect();
    let frozen = Frozen::freeze(&nats);
    let answers = while_frozen(&ingress).await;
    drop(frozen);
    acked.extend(after_thaw(&ingress).await);

    // Every event answered 202 is in the stream (those answered 503 may be too: the thawed server read
    // them late — duplicates are allowed, loss is not).
    let c = async_nats::connect(&url).await.unwrap();
    let js = async_nats::jetstream::new(c);
    let mut stream = js.get_stream("EDGE_EVENTS").await.unwrap();
    let stored = stream.info().await.unwrap().state.messages;
    let consumer = stream
        .create_consumer(async_nats::jetstream::consumer::pull::OrderedConfig::default())
        .await
        .unwrap();
    let mut msgs = consumer.messages().await.unwrap();
    let mut ids = BTreeSet::new();
    for _ in 0..stored {
        let m = within(30, msgs.next()).await.unwrap().unwrap();
        let id = m
            .headers
            .as_ref()
            .and_then(|h| h.get("ce-id"))
            .map(|v| v.to_string())
            .expect("ce-id");
        ids.insert(id);
    }
    let lost: Vec<&String> = acked.difference(&ids).collect();
    assert!(
        lost.is_empty(),
        "answered 202 but not in the stream: {lost:?}"
    );
    println!(
        "JetStream frozen: {FROZEN} requests answered {answers:?} (status, seconds; ack timeout {PUBLISH_TIMEOUT:?}); {} accepted before and after, all {} in the stream of {stored}",
        acked.len(),
        acked.len()
    );
}

/// A subscriber on `edge/#` with a persistent session (so it gets what was published while it, too, was
/// frozen); the `id` of every event it receives arrives on the channel.
async fn persistent_subscriber(port: u16) -> (AsyncClient, mpsc::UnboundedReceiver<String>) {
    let mut o = MqttOptions::new("frozen-test-sub", "127.0.0.1", port);
    o.set_clean_session(false);
    let (client, mut el) = AsyncClient::new(o, 100);
    client.subscribe("edge/#", QoS::AtLeastOnce).await.unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    let (ready_tx, mut ready) = mpsc::channel(1);
    tokio::spawn(async move {
        loop {
            match el.poll().await {
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let v: serde_json::Value = serde_json::from_slice(&p.payload).unwrap();
                    if tx.send(v["id"].as_str().unwrap().to_string()).is_err() {
                        return;
                    }
                }
                Ok(Event::Incoming(Packet::SubAck(_))) => {
                    let _ = ready_tx.try_send(());
                }
                Ok(_) => {}
                // Reconnects (the frozen broker's keep-alive) are the client's own business.
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    });
    within(10, ready.recv()).await.expect("SUBACK");
    (client, rx)
}

/// MQTT at QoS 1: the publish waits for the PUBACK, which a frozen broker never sends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_frozen_broker_503_then_accepts_and_delivers_every_acknowledged_event() {
    let broker = BrokerProcess::start_default(Kind::Mosquitto).expect("mosquitto");
    let (_sub, mut received) = persistent_subscriber(broker.port()).await;
    let ingress = serve(env_config(&[
        ("EVENT_BROKER_ENABLED", "true"),
        ("EVENT_BROKER_ADAPTER", "mqtt"),
        ("EVENT_BROKER_MQTT_URL", &broker.url()),
        ("EVENT_BROKER_MQTT_QOS", "1"),
        ("CORE_NAME", CORE),
    ]))
    .await;
    ingress.wait_ready().await;
    let mut acked: BTreeSet<String> = accepted(&ingress, "before", 5).await.into_iter().collect();
    let frozen = Frozen::freeze(&broker);
    let answers = while_frozen(&ingress).await;
    drop(frozen);
    acked.extend(after_thaw(&ingress).await);

    // Every event answered 202 reaches the subscriber.
    let mut seen = BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !acked.is_subset(&seen) {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, received.recv()).await {
            Ok(Some(id)) => {
                seen.insert(id);
            }
            _ => panic!(
                "answered 202 but never delivered: {:?}",
                acked.difference(&seen).collect::<Vec<_>>()
            ),
        }
    }
    println!(
        "MQTT frozen: {FROZEN} requests answered {answers:?} (status, seconds; ack timeout {PUBLISH_TIMEOUT:?}); all {} accepted events delivered ({} distinct received)",
        acked.len(),
        seen.len()
    );
}

/// Core NATS: the acknowledgement is an echo through the server (a frozen one sends none), so no request
/// is a 202 while it is frozen; after the thaw requests are accepted again, and what is accepted once a
/// subscriber is listening reaches it. (Core NATS keeps nothing for a subscriber that was away, so
/// delivery is checked for the events accepted after a fresh subscription, not for the ones before.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn core_nats_frozen_server_no_202_then_accepts_and_delivers() {
    let (nats, ingress) = nats_ingress().await;
    let url = nats.url();
    accepted(&ingress, "before", 5).await;
    let frozen = Frozen::freeze(&nats);
    let answers = while_frozen(&ingress).await;
    drop(frozen);
    let thawed = after_thaw(&ingress).await;

    let c = async_nats::connect(&url).await.unwrap();
    let mut sub = subscribed(&c, "edge.>").await.unwrap();
    let ids: BTreeSet<String> = accepted(&ingress, "subscribed", 5)
        .await
        .into_iter()
        .collect();
    let mut seen = BTreeSet::new();
    while !ids.is_subset(&seen) {
        let m = within(30, sub.next())
            .await
            .expect("the subscription ended");
        let v: serde_json::Value = match serde_json::from_slice(&m.payload) {
            Ok(v) => v,
            Err(_) => continue,
        };
        let id = m
            .headers
            .as_ref()
            .and_then(|h| h.get("ce-id"))
            .map(|v| v.to_string())
            .or_else(|| v["id"].as_str().map(str::to_string));
        if let Some(id) = id {
            seen.insert(id);
        }
    }
    println!(
        "core NATS frozen: {FROZEN} requests answered {answers:?} (status, seconds; ack timeout {PUBLISH_TIMEOUT:?}); {} accepted after the thaw; the 5 accepted after a fresh subscription all delivered",
        thawed.len()
    );
}
