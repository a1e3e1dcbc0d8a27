//! Kafka against librdkafka's in-process mock cluster.

use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::mocking::MockCluster;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde_json::Value;

use crate::common::*;

const TOPICS: [&str; 5] = [
    "edge-nodes-events",
    "edge-commands-events",
    "edge-self-updates-events",
    "edge-ssh-events",
    "all-events",
];

fn kafka_env<'a>(bootstrap: &'a str, extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut v = vec![
        ("EVENT_BROKER_ENABLED", "true"),
        ("EVENT_BROKER_ADAPTER", "kafka"),
        ("EVENT_BROKER_KAFKA_URLS", bootstrap),
        ("CORE_NAME", CORE),
    ];
    v.extend_from_slice(extra);
    v
}

/// An independent rdkafka consumer reading `topic` partition 0 from the beginning.
fn consumer(bootstrap: &str, topic: &str) -> BaseConsumer {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", format!("test-{topic}"))
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Beginning)
        .unwrap();
    c.assign(&tpl).unwrap();
    c
}

struct Record {
    key: String,
    headers: Vec<(String, String)>,
    payload: Vec<u8>,
}

fn next_record(c: &BaseConsumer) -> Record {
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(m) = c.poll(Duration::from_millis(200)) {
            let m = m.expect("kafka message");
            let headers = m
                .headers()
                .map(|hs| {
                    hs.iter()
                        .map(|h| {
                            (
                                h.key.to_string(),
                                String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned(),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            return Record {
                key: String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned(),
                headers,
                payload: m.payload().unwrap_or_default().to_vec(),
            };
        }
        assert!(std::time::Instant::now() < deadline, "no record");
    }
}

fn header<'a>(r: &'a Record, name: &str) -> Option<&'a str> {
    r.headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_every_mode_goes_to_its_domain_topic_keyed_by_corename() {
    let cluster = MockCluster::new(1).unwrap();
    for t in TOPICS {
        cluster.create_topic(t, 1, 1).unwrap();
    }
    let bootstrap = cluster.bootstrap_servers();
    let ingress = serve(env_config(&kafka_env(&bootstrap, &[]))).await;
    ingress.wait_ready().await;
    send_three_modes(&ingress).await;
    for (mode, ty, id, data) in three_modes() {
        let topic = edgewire_api::domain::for_type(ty).unwrap().topic;
        let b = bootstrap.clone();
        let r = tokio::task::spawn_blocking(move || next_record(&consumer(&b, topic)))
            .await
            .unwrap();
        assert_eq!(r.key, CORE, "{mode}: key = corename");
        assert_eq!(header(&r, "ce_type"), Some(ty), "{mode}");
        assert_eq!(header(&r, "ce_corename"), Some(CORE), "{mode}");
        assert_eq!(header(&r, "ce_id"), Some(id), "{mode}");
        assert_eq!(header(&r, "ce_specversion"), Some("1.0"), "{mode}");
        assert_eq!(
            header(&r, "content-type"),
            Some("application/json"),
            "{mode}"
        );
        assert_eq!(
            serde_json::from_slice::<Value>(&r.payload).unwrap(),
            data,
            "{mode}: body intact"
        );
    }

    // A type outside the four domains cannot be routed: 400 naming the domains.
    let r = ingress
        .post_binary("billing.invoice.created", "x", "{}")
        .await;
    assert_eq!(r.status().as_u16(), 400);
    assert_eq!(
        r.headers().get("content-type").unwrap(),
        "application/problem+json"
    );
    let p: Value = r.json().await.unwrap();
    assert!(p["detail"].as_str().unwrap().contains("edge.node.*"), "{p}");

    // Broker down → 503 (never 202); back → 202.
    cluster.broker_down(1).unwrap();
    ingress.wait_ready_status(503, 20).await;
    let r = ingress
        .post_binary("edge.node.registered", "down", "{}")
        .await;
    assert_eq!(r.status().as_u16(), 503);
    cluster.broker_up(1).unwrap();
    ingress.wait_ready_status(200, 30).await;
    let r = ingress
        .post_binary("edge.node.registered", "back", "{}")
        .await;
    assert_eq!(
        r.status().as_u16(),
        202,
        "{}",
        r.text().await.unwrap_or_default()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_one_topic_for_every_event_when_configured() {
    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic("all-events", 1, 1).unwrap();
    let bootstrap = cluster.bootstrap_servers();
    let ingress = serve(env_config(&kafka_env(
        &bootstrap,
        &[("EVENT_BROKER_KAFKA_TOPIC", "all-events")],
    )))
    .await;
    ingress.wait_ready().await;
    let r = ingress
        .post_binary("billing.invoice.created", "any-1", r#"{"x":1}"#)
        .await;
    assert_eq!(r.status().as_u16(), 202);
    let b = bootstrap.clone();
    let rec = tokio::task::spawn_blocking(move || next_record(&consumer(&b, "all-events")))
        .await
        .unwrap();
    assert_eq!(header(&rec, "ce_type"), Some("billing.invoice.created"));
    assert_eq!(rec.payload, br#"{"x":1}"#);
}
