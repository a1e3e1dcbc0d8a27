//! google_pubsub against the fake Pub/Sub server of `edgewire-e2e` (gRPC, the official client on our
//! side): topic names with and without a prefix, attributes, data, call order, error mapping.

use std::collections::BTreeMap;

use edgewire_e2e::pubsub::{Code, FakePubSub, Method, Transport};
use serde_json::{Value, json};

use crate::common::*;

const PROJECT: &str = "edge-test-123";
const TOPICS: [&str; 4] = [
    "edge-nodes-events",
    "edge-commands-events",
    "edge-self-updates-events",
    "edge-ssh-events",
];

async fn setup(prefix: &str) -> (FakePubSub, Ingress) {
    let fake = FakePubSub::start().await.expect("fake Pub/Sub");
    for t in TOPICS {
        fake.create_topic(&format!("projects/{PROJECT}/topics/{prefix}{t}"), &[]);
    }
    let endpoint = fake.endpoint();
    let ingress = serve(env_config(&[
        ("EVENT_BROKER_ENABLED", "true"),
        ("EVENT_BROKER_ADAPTER", "google_pubsub"),
        ("EVENT_BROKER_GOOGLE_PUBSUB_PROJECT", PROJECT),
        ("EVENT_BROKER_GOOGLE_PUBSUB_TOPIC_ID_PREFIX", prefix),
        ("EVENT_BROKER_GOOGLE_PUBSUB_ENDPOINT", &endpoint),
        ("CORE_NAME", CORE),
    ]))
    .await;
    ingress.wait_ready().await;
    (fake, ingress)
}

fn topic(prefix: &str, t: &str) -> String {
    format!("projects/{PROJECT}/topics/{prefix}{t}")
}

fn attrs(ty: &str) -> BTreeMap<String, String> {
    [
        ("corename".to_string(), CORE.to_string()),
        ("type".to_string(), ty.to_string()),
    ]
    .into()
}

async fn every_mode_lands_on_its_domain_topic(prefix: &str) {
    let (fake, ingress) = setup(prefix).await;
    send_three_modes(&ingress).await;
    let calls = fake.requests_of(Method::Publish);
    assert!(
        calls
            .iter()
            .all(|c| c.transport == Transport::Grpc && c.failed.is_none())
    );
    // One Publish call per request and topic, in request order (the batch's two topics in either order).
    assert_eq!(calls.len(), 4, "{calls:#?}");
    assert_eq!(calls[0].topic, topic(prefix, "edge-nodes-events"));
    assert_eq!(calls[1].topic, topic(prefix, "edge-commands-events"));
    let mut batch_topics: Vec<&str> = calls[2..].iter().map(|c| c.topic.as_str()).collect();
    batch_topics.sort();
    let mut want = vec![
        topic(prefix, "edge-self-updates-events"),
        topic(prefix, "edge-ssh-events"),
    ];
    want.sort();
    assert_eq!(batch_topics, want);
    for (_, ty, id, data) in three_modes() {
        let c = calls
            .iter()
            .find(|c| {
                c.messages
                    .first()
                    .is_some_and(|m| m.attributes.get("type").map(String::as_str) == Some(ty))
            })
            .unwrap_or_else(|| panic!("no Publish carried {ty}"));
        assert_eq!(c.messages.len(), 1);
        let m = &c.messages[0];
        assert_eq!(
            m.attributes,
            attrs(ty),
            "{ty}: attributes type and corename"
        );
        let body: Value = serde_json::from_slice(&m.data).expect("structured JSON data");
        assert_eq!(body["id"], id);
        assert_eq!(body["type"], ty);
        assert_eq!(body["corename"], CORE);
        assert_eq!(body["data"], data, "{ty}: data intact");
    }
}

#[tokio::test]
async fn pubsub_topics_without_prefix() {
    every_mode_lands_on_its_domain_topic("").await;
}

#[tokio::test]
async fn pubsub_topics_with_prefix() {
    every_mode_lands_on_its_domain_topic("edge-prod-").await;
}

#[tokio::test]
async fn pubsub_batch_is_one_publish_per_topic_in_order() {
    let (fake, ingress) = setup("").await;
    let batch: Vec<Value> = (0..12)
        .map(|i| {
            let ty = if i % 3 == 0 {
                "edge.ssh.opened"
            } else {
                "edge.node.heartbeat"
            };
            event(ty, &format!("b-{i}"), json!({"i": i}))
        })
        .collect();
    let r = ingress.post_batch(&batch).await;
    assert_eq!(r.status().as_u16(), 202, "{}", r.text().await.unwrap());
    let calls = fake.requests_of(Method::Publish);
    assert_eq!(calls.len(), 2, "{calls:#?}");
    let ids_on = |t: &str| -> Vec<String> {
        let c = calls.iter().find(|c| c.topic == topic("", t)).unwrap();
        c.messages
            .iter()
            .map(|m| {
                let v: Value = serde_json::from_slice(&m.data).unwrap();
                v["id"].as_str().unwrap().to_string()
            })
            .collect()
    };
    assert_eq!(ids_on("edge-ssh-events"), ["b-0", "b-3", "b-6", "b-9"]);
    assert_eq!(
        ids_on("edge-nodes-events"),
        ["b-1", "b-2", "b-4", "b-5", "b-7", "b-8", "b-10", "b-11"]
    );
}

#[tokio::test]
async fn pubsub_errors_map_to_http_answers() {
    let (mut fake, ingress) = setup("").await;
    // Out of domain: 400 naming the domains, nothing sent.
    let r = ingress
        .post_structured(&event("com.example.order", "x-1", json!({})))
        .await;
    assert_eq!(r.status().as_u16(), 400);
    let body: Value = r.json().await.unwrap();
    for t in TOPICS {
        assert!(body["detail"].as_str().unwrap().contains(t), "{body}");
    }
    assert!(fake.requests().is_empty());

    // PERMISSION_DENIED: the broker refused the event (502, not retryable as such).
    fake.fail_next(Method::Publish, Code::PermissionDenied);
    let r = ingress
        .post_structured(&event("edge.node.registered", "pd-1", json!({})))
        .await;
    assert_eq!(r.status().as_u16(), 502);
    let body: Value = r.json().await.unwrap();
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("pubsub.topics.publish"),
        "{body}"
    );

    // A domain topic that does not exist (not provisioned): NOT_FOUND, refused.
    let ssh = topic("", "edge-ssh-events");
    assert!(fake.remove_topic(&ssh));
    let r = ingress
        .post_structured(&event("edge.ssh.opened", "nf-1", json!({})))
        .await;
    assert_eq!(r.status().as_u16(), 502);
    assert_eq!(
        fake.requests_of(Method::Publish)
            .last()
            .map(|c| (c.topic.clone(), c.failed)),
        Some((ssh, Some(Code::NotFound)))
    );

    // UNAVAILABLE (persisting through the client's retries): 503 with Retry-After.
    fake.fail_always(Method::Publish, Code::Unavailable);
    let r = ingress
        .post_structured(&event("edge.node.registered", "un-1", json!({})))
        .await;
    assert_eq!(r.status().as_u16(), 503);
    assert!(r.headers().get("retry-after").is_some());
    ingress.wait_ready_status(503, 10).await;
    fake.stop_failing(Method::Publish);
    let r = ingress
        .post_structured(&event("edge.node.registered", "ok-1", json!({})))
        .await;
    assert_eq!(r.status().as_u16(), 202, "{}", r.text().await.unwrap());
    ingress.wait_ready().await;
    let ok = fake.requests_of(Method::Publish);
    assert_eq!(ok.last().unwrap().failed, None);
    assert!(ok.iter().any(|c| c.failed == Some(Code::Unavailable)));

    // The service gone entirely: 503.
    fake.stop();
    let r = ingress
        .post_structured(&event("edge.node.registered", "down-1", json!({})))
        .await;
    assert_eq!(r.status().as_u16(), 503);
}
