//! The ingress's own answers: problem bodies for invalid input, batch semantics, disabled mode,
//! /healthz, /metrics, /asyncapi. Runs against a real NATS so valid events really publish.

use serde_json::{Value, json};

use crate::common::*;

async fn problem(r: reqwest::Response) -> (u16, Value) {
    let status = r.status().as_u16();
    assert_eq!(
        r.headers().get("content-type").unwrap(),
        "application/problem+json"
    );
    (status, r.json().await.unwrap())
}

#[tokio::test]
async fn invalid_input_gets_problem_json() {
    let (_nats, ing) = nats_ingress().await;
    // Structured mode without specversion.
    let mut ev = event("edge.node.registered", "1", json!({}));
    ev.as_object_mut().unwrap().remove("specversion");
    let (s, p) = problem(ing.post_structured(&ev).await).await;
    assert_eq!(s, 400);
    assert_eq!(p["status"], 400);
    assert!(p["detail"].as_str().unwrap().contains("specversion"), "{p}");
    assert!(p["type"].as_str().unwrap().ends_with("missing-specversion"));
    assert!(p["title"].is_string());

    // Binary mode without ce-specversion.
    let r = ing
        .http
        .post(&ing.base)
        .header("ce-id", "1")
        .header("ce-type", "edge.node.x")
        .header("ce-source", "/s")
        .body("{}")
        .send()
        .await
        .unwrap();
    let (s, p) = problem(r).await;
    assert_eq!(s, 400);
    assert!(p["detail"].as_str().unwrap().contains("specversion"), "{p}");

    // Non-JSON structured body.
    let r = ing
        .http
        .post(&ing.base)
        .header("content-type", "application/cloudevents+json")
        .body("this is not json")
        .send()
        .await
        .unwrap();
    let (s, p) = problem(r).await;
    assert_eq!(s, 400);
    assert!(
        p["detail"].as_str().unwrap().contains("not valid JSON"),
        "{p}"
    );

    // A wildcard in the type cannot be a NATS subject.
    let (s, _) = problem(ing.post_binary("edge.*.x", "1", "{}").await).await;
    assert_eq!(s, 400);
}

#[tokio::test]
async fn batch_with_one_invalid_event_publishes_nothing_and_lists_the_index() {
    let (_nats, ing) = nats_ingress().await;
    let mut bad = event("edge.node.b", "2", json!({}));
    bad.as_object_mut().unwrap().remove("id");
    let (s, p) = problem(
        ing.post_batch(&[event("edge.node.a", "1", json!({})), bad])
            .await,
    )
    .await;
    assert_eq!(s, 400);
    assert_eq!(p["errors"][0]["index"], 1);
    assert_eq!(p["errors"].as_array().unwrap().len(), 1);
    let metrics = ing
        .http
        .get(format!("{}/metrics", ing.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("edgewire_publisher_events_published_total{adapter=\"nats\"} 0"),
        "{metrics}"
    );
    // Not an array.
    let r = ing
        .http
        .post(&ing.base)
        .header("content-type", "application/cloudevents-batch+json")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(problem(r).await.0, 400);
}

#[tokio::test]
async fn probes_metrics_and_asyncapi() {
    let (mut nats, ing) = nats_ingress().await;
    let get = |p: &str| ing.http.get(format!("{}{p}", ing.base)).send();
    assert_eq!(get("/healthz").await.unwrap().status().as_u16(), 200);
    assert_eq!(get("/readyz").await.unwrap().status().as_u16(), 200);
    let doc: Value = get("/asyncapi").await.unwrap().json().await.unwrap();
    assert_eq!(doc["asyncapi"], "3.0.0");
    assert_eq!(doc["channels"]["nodes"]["address"], "edge.node.{event}");
    assert_eq!(
        doc["components"]["schemas"]["CloudEvent"]["properties"]["corename"]["const"],
        CORE
    );
    let m = get("/metrics").await.unwrap().text().await.unwrap();
    for name in [
        "edgewire_publisher_events_accepted_total",
        "edgewire_publisher_events_published_total",
        "edgewire_publisher_publish_duration_seconds",
        "edgewire_publisher_broker_connected",
    ] {
        assert!(m.contains(name), "{name} missing from {m}");
    }
    nats.stop();
    ing.wait_ready_status(503, 15).await;
    // /healthz is the process, not the broker.
    assert_eq!(get("/healthz").await.unwrap().status().as_u16(), 200);
    let r = ing.post_binary("edge.node.registered", "1", "{}").await;
    assert_eq!(r.status().as_u16(), 503);
    let m = get("/metrics").await.unwrap().text().await.unwrap();
    assert!(
        m.contains("edgewire_publisher_broker_connected{adapter=\"nats\"} 0"),
        "{m}"
    );
    assert!(
        m.contains(
            "edgewire_publisher_events_failed_total{adapter=\"nats\",reason=\"unavailable\"} 1"
        ),
        "{m}"
    );
}

#[tokio::test]
async fn disabled_broker_serves_but_refuses_events() {
    let ing = serve(env_config(&[("EVENT_BROKER_ENABLED", "false")])).await;
    assert_eq!(ing.readyz().await.0, 200);
    let r = ing.post_binary("edge.node.registered", "1", "{}").await;
    assert_eq!(r.status().as_u16(), 503);
    assert!(
        r.headers().get("retry-after").is_none(),
        "retrying cannot help while disabled"
    );
    let (_, p) = problem(r).await;
    assert!(
        p["detail"]
            .as_str()
            .unwrap()
            .contains("event broker disabled")
    );
}
