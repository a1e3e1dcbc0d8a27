//! `edgewire-agent bridge` against real brokers, run as a child process (the built binary).
//!
//! Run: `cargo test -p edgewire-agent --test bridge -- --test-threads 1` (the 200,000-message tests are
//! heavy; one at a time on a small machine).

mod amqp;
mod common;
mod hostile;
mod kafka;
mod mqtt5;
mod reliability;

use std::collections::BTreeSet;
use std::time::Duration;

use common::*;
use futures::StreamExt;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::sync::mpsc;

const E2C_TELEMETRY: &str = "    - {direction: EdgeToCloud, from: \"local.telemetry.#\", to: \"edge.site-a.telemetry.#\"}\n";
const C2E_COMMANDS: &str =
    "    - {direction: CloudToEdge, from: \"cmd.site-a.#\", to: \"local.cmd.#\"}\n";
const SPOOL: &str = "{maxBytes: 1Gi}";

fn mqtt_ep(port: u16) -> String {
    format!("{{protocol: mqtt, url: \"127.0.0.1:{port}\"}}")
}
fn nats_ep(port: u16, js: bool) -> String {
    format!("{{protocol: nats, url: \"nats://127.0.0.1:{port}\", jetStream: {{enabled: {js}}}}}")
}

/// An MQTT subscriber on `filter`; publishes arrive on the channel.
async fn mqtt_subscriber(port: u16, filter: &str) -> mpsc::Receiver<rumqttc::Publish> {
    let o = MqttOptions::new(
        format!("sub-{port}-{}", std::process::id()),
        "127.0.0.1",
        port,
    );
    let (client, mut el) = AsyncClient::new(o, 100);
    client.subscribe(filter, QoS::AtLeastOnce).await.unwrap();
    let (tx, rx) = mpsc::channel(1000);
    let (ready_tx, mut ready) = mpsc::channel(1);
    tokio::spawn(async move {
        let _c = client;
        loop {
            match el.poll().await {
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    if tx.send(p).await.is_err() {
                        return;
                    }
                }
                Ok(Event::Incoming(Packet::SubAck(_))) => {
                    let _ = ready_tx.try_send(());
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    });
    tokio::time::timeout(Duration::from_secs(10), ready.recv())
        .await
        .expect("SUBACK");
    rx
}

async fn mqtt_client(port: u16, id: &str) -> AsyncClient {
    let o = MqttOptions::new(format!("{id}-{port}"), "127.0.0.1", port);
    let (client, mut el) = AsyncClient::new(o, 100);
    tokio::spawn(async move {
        loop {
            if el.poll().await.is_err() {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    });
    client
}

/// Publishes with `send` every 200 ms until `recv` yields (the bridge subscribes right after it connects).
async fn until_arrives<T, F, Fut>(mut send: F, rx: &mut mpsc::Receiver<T>) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    for _ in 0..100 {
        send().await;
        if let Ok(Some(v)) = tokio::time::timeout(Duration::from_millis(200), rx.recv()).await {
            return v;
        }
    }
    panic!("nothing arrived in 20 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_edge_to_nats_cloud_maps_topics_adds_site_header_and_delivers_commands_down() {
    let edge = edge_mosquitto();
    let cloud = nats();
    let dir = tempfile::tempdir().unwrap();
    let rules = format!("{E2C_TELEMETRY}{C2E_COMMANDS}");
    let yaml = config(
        &mqtt_ep(edge.port()),
        &nats_ep(cloud.port(), false),
        &rules,
        SPOOL,
    )
    .replace("spec:\n", "spec:\n  headers: {plant: berlin}\n");
    let bridge = Bridge::start(dir.path(), &yaml, &[]);
    let nc = async_nats::connect(cloud.url()).await.unwrap();
    let mut sub = nc.subscribe("edge.>").await.unwrap();
    let (tx, mut rx) = mpsc::channel(100);
    tokio::spawn(async move {
        while let Some(m) = sub.next().await {
            let _ = tx.send(m).await;
        }
    });
    bridge.wait_metric("edge_connected", 30, |v| v == 1.0).await;
    bridge
        .wait_metric("cloud_connected", 30, |v| v == 1.0)
        .await;
    let pubc = mqtt_client(edge.port(), "device").await;
    let m = until_arrives(
        || {
            let c = pubc.clone();
            async move {
                c.publish(
                    "local/telemetry/line1/temp",
                    QoS::AtLeastOnce,
                    false,
                    "21.5",
                )
                .await
                .unwrap();
            }
        },
        &mut rx,
    )
    .await;
    assert_eq!(m.subject.as_str(), "edge.site-a.telemetry.line1.temp");
    assert_eq!(&m.payload[..], b"21.5");
    let h = m.headers.expect("headers");
    assert_eq!(h.get("edge-site-id").map(|v| v.as_str()), Some("site-a"));
    assert_eq!(h.get("plant").map(|v| v.as_str()), Some("berlin"));

    // Cloud → edge.
    let mut cmds = mqtt_subscriber(edge.port(), "local/cmd/#").await;
    let p = until_arrives(
        || {
            let nc = nc.clone();
            async move {
                nc.publish("cmd.site-a.valve.open", "1".into())
                    .await
                    .unwrap();
                nc.flush().await.unwrap();
            }
        },
        &mut cmds,
    )
    .await;
    assert_eq!(p.topic, "local/cmd/valve/open");
    assert_eq!(&p.payload[..], b"1");
    assert!(bridge.metric("delivered_to_edge_total").await.unwrap() >= 1.0);
    bridge.wait_metric("spool_messages", 10, |v| v == 0.0).await;
}

/// A scrape of the running bridge exports exactly the metrics the README's table lists.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_metrics_exported_are_the_ones_the_readme_lists() {
    let edge = edge_mosquitto();
    let cloud = nats();
    let dir = tempfile::tempdir().unwrap();
    let yaml = config(
        &mqtt_ep(edge.port()),
        &nats_ep(cloud.port(), false),
        E2C_TELEMETRY,
        SPOOL,
    );
    let bridge = Bridge::start(dir.path(), &yaml, &[]);
    bridge.wait_metric("edge_connected", 30, |v| v == 1.0).await;
    let url = format!(
        "http://127.0.0.1:{}/metrics",
        bridge
            .http_port()
            .expect("the bridge logged its /metrics address")
    );
    let text = reqwest::get(&url).await.unwrap().text().await.unwrap();
    let exported: BTreeSet<&str> = text
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split([' ', '{']).next())
        .collect();
    let readme = std::fs::read_to_string(format!(
        "{}/../README.md",
        std::env::var("CARGO_MANIFEST_DIR")
            .unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_owned())
    ))
    .unwrap();
    let listed: BTreeSet<&str> = readme
        .lines()
        .filter(|l| l.starts_with('|'))
        .flat_map(|l| l.split('`'))
        .filter(|w| w.starts_with("edgewire_bridge_"))
        .collect();
    assert_eq!(exported, listed, "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_edge_to_nats_cloud_both_directions() {
    let edge = nats();
    let cloud = nats();
    let dir = tempfile::tempdir().unwrap();
    let rules = format!("{E2C_TELEMETRY}{C2E_COMMANDS}");
    let yaml = config(
        &nats_ep(edge.port(), false),
        &nats_ep(cloud.port(), false),
        &rules,
        SPOOL,
    );
    let bridge = Bridge::start(dir.path(), &yaml, &[]);
    let cloud_c = async_nats::connect(cloud.url()).await.unwrap();
    let edge_c = async_nats::connect(edge.url()).await.unwrap();
    let (tx, mut rx) = mpsc::channel(100);
    let mut up = cloud_c.subscribe("edge.>").await.unwrap();
    let t = tx.clone();
    tokio::spawn(async move {
        while let Some(m) = up.next().await {
            let _ = t.send(m).await;
        }
    });
    let (dtx, mut drx) = mpsc::channel(100);
    let mut down = edge_c.subscribe("local.cmd.>").await.unwrap();
    tokio::spawn(async move {
        while let Some(m) = down.next().await {
            let _ = dtx.send(m).await;
        }
    });
    bridge.wait_metric("edge_connected", 30, |v| v == 1.0).await;
    bridge
        .wait_metric("cloud_connected", 30, |v| v == 1.0)
        .await;
    let m = until_arrives(
        || {
            let c = edge_c.clone();
            async move {
                c.publish("local.telemetry.line2.rpm", "900".into())
                    .await
                    .unwrap();
                c.flush().await.unwrap();
            }
        },
        &mut rx,
    )
    .await;
    assert_eq!(m.subject.as_str(), "edge.site-a.telemetry.line2.rpm");
    assert_eq!(
        m.headers.unwrap().get("edge-site-id").map(|v| v.as_str()),
        Some("site-a")
    );
    let d = until_arrives(
        || {
            let c = cloud_c.clone();
            async move {
                c.publish("cmd.site-a.stop", "now".into()).await.unwrap();
                c.flush().await.unwrap();
            }
        },
        &mut drx,
    )
    .await;
    assert_eq!(d.subject.as_str(), "local.cmd.stop");
    assert_eq!(&d.payload[..], b"now");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_edge_to_mqtt_cloud_with_commands_back_down() {
    let edge = edge_mosquitto();
    let cloud = edge_mosquitto();
    let dir = tempfile::tempdir().unwrap();
    let rules = format!("{E2C_TELEMETRY}{C2E_COMMANDS}");
    let yaml = config(&mqtt_ep(edge.port()), &mqtt_ep(cloud.port()), &rules, SPOOL);
    let bridge = Bridge::start(dir.path(), &yaml, &[]);
    let mut up = mqtt_subscriber(cloud.port(), "edge/#").await;
    let mut down = mqtt_subscriber(edge.port(), "local/cmd/#").await;
    bridge.wait_metric("edge_connected", 30, |v| v == 1.0).await;
    bridge
        .wait_metric("cloud_connected", 30, |v| v == 1.0)
        .await;
    let dev = mqtt_client(edge.port(), "device").await;
    let p = until_arrives(
        || {
            let c = dev.clone();
            async move {
                c.publish("local/telemetry/line1/temp", QoS::AtLeastOnce, false, "22")
                    .await
                    .unwrap();
            }
        },
        &mut up,
    )
    .await;
    assert_eq!(p.topic, "edge/site-a/telemetry/line1/temp");
    assert_eq!(&p.payload[..], b"22");
    let ctl = mqtt_client(cloud.port(), "control").await;
    let p = until_arrives(
        || {
            let c = ctl.clone();
            async move {
                c.publish("cmd/site-a/fan/on", QoS::AtLeastOnce, false, "1")
                    .await
                    .unwrap();
            }
        },
        &mut down,
    )
    .await;
    assert_eq!(p.topic, "local/cmd/fan/on");
}

#[test]
fn a_looping_rule_set_is_rejected_naming_both_rules() {
    let dir = tempfile::tempdir().unwrap();
    let rules = "    - {direction: EdgeToCloud, from: \"local.#\", to: \"edge.site-a.#\"}\n    - {direction: CloudToEdge, from: \"cmd.#\", to: \"local.cmd.#\"}\n";
    let yaml = config(&mqtt_ep(1), &nats_ep(2, false), rules, SPOOL);
    std::fs::write(dir.path().join("b.yaml"), yaml).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_edgewire-agent"))
        .args(["bridge", "--config"])
        .arg(dir.path().join("b.yaml"))
        .arg("--spool-dir")
        .arg(dir.path().join("spool"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("spec.rules[1]") && err.contains("spec.rules[0]") && err.contains("loop"),
        "{err}"
    );
}

const N: u64 = 200_000;

/// Cloud down, 200,000 QoS 1 messages to the edge, cloud back: all arrive, in order, spool drains to 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outage_200k_messages_all_arrive_in_order_after_the_cloud_returns() {
    let edge = edge_mosquitto();
    let mut cloud = nats();
    let js = edge_stream(&cloud.url()).await;
    drop(js);
    cloud.stop();
    let dir = tempfile::tempdir().unwrap();
    let yaml = config(
        &mqtt_ep(edge.port()),
        &nats_ep(cloud.port(), true),
        E2C_TELEMETRY,
        SPOOL,
    );
    let bridge = Bridge::start(dir.path(), &yaml, &[]);
    bridge.wait_metric("edge_connected", 30, |v| v == 1.0).await;
    wait_subscribed(&edge, "local/telemetry/#").await;
    let t = std::time::Instant::now();
    mqtt_publish(edge.port(), "local/telemetry/line1/seq", 0, N).await;
    let published = t.elapsed();
    bridge
        .wait_metric("spool_messages", 120, |v| v == N as f64)
        .await;
    let spooled = t.elapsed();
    assert_eq!(bridge.metric("forwarded_total").await, Some(0.0));
    cloud.restart().unwrap();
    let js = edge_stream(&cloud.url()).await;
    bridge
        .wait_metric("spool_messages", 120, |v| v == 0.0)
        .await;
    let drained = t.elapsed();
    let (order, dups) = read_stream(&js, N, 120).await;
    assert_complete_in_order(&order, N);
    println!(
        "outage: {N} published in {published:?}, spooled by {spooled:?}, drained by {drained:?}; duplicates {dups}"
    );
}

/// kill -9 of the bridge in the middle of a 200,000-message run, restart on the same spool: none lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_kill9_mid_run_loses_nothing() {
    let edge = edge_mosquitto();
    let cloud = nats();
    let js = edge_stream(&cloud.url()).await;
    let dir = tempfile::tempdir().unwrap();
    let yaml = config(
        &mqtt_ep(edge.port()),
        &nats_ep(cloud.port(), true),
        E2C_TELEMETRY,
        SPOOL,
    );
    let mut bridge = Bridge::start(dir.path(), &yaml, &[]);
    bridge.wait_metric("edge_connected", 30, |v| v == 1.0).await;
    bridge
        .wait_metric("cloud_connected", 30, |v| v == 1.0)
        .await;
    wait_subscribed(&edge, "local/telemetry/#").await;
    let port = edge.port();
    let publisher =
        tokio::spawn(async move { mqtt_publish(port, "local/telemetry/line1/seq", 0, N).await });
    let at = bridge
        .wait_metric("received_total", 120, |v| v >= (N / 3) as f64)
        .await;
    bridge.kill9();
    println!("crash: killed the bridge after it had taken {at} messages");
    bridge.spawn();
    publisher.await.unwrap();
    let (order, dups) = read_stream(&js, N, 180).await;
    assert_complete_in_order(&order, N);
    bridge.wait_metric("spool_messages", 60, |v| v == 0.0).await;
    println!("crash: 0 lost, {dups} duplicates of {N}");
}

const SMALL: u64 = 5_000;

/// A full spool with RejectNew: the bridge stops taking (and acknowledging) edge messages, the edge broker
/// holds them; once the cloud returns every one arrives, none dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_spool_reject_new_holds_back_the_edge_and_loses_nothing() {
    let edge = edge_mosquitto();
    let mut cloud = nats();
    drop(edge_stream(&cloud.url()).await);
    cloud.stop();
    let dir = tempfile::tempdir().unwrap();
    let max = 256 * 1024;
    let yaml = config(
        &mqtt_ep(edge.port()),
        &nats_ep(cloud.port(), true),
        E2C_TELEMETRY,
        &format!("{{maxBytes: \"{max}\", overflow: RejectNew}}"),
    );
    let bridge = Bridge::start(dir.path(), &yaml, &[]);
    bridge.wait_metric("edge_connected", 30, |v| v == 1.0).await;
    wait_subscribed(&edge, "local/telemetry/#").await;
    // The bound is exported for the spool-filling alerts (spool_bytes / spool_max_bytes).
    assert_eq!(bridge.metric("spool_max_bytes").await, Some(max as f64));
    mqtt_publish(edge.port(), "local/telemetry/line1/seq", 0, SMALL).await;
    // The spool fills up to the limit (less than one ~300-byte record below it) while Mosquitto has
    // acknowledged all SMALL to the publisher: the rest waits at the edge, not in the bridge.
    let bytes = bridge
        .wait_metric("spool_bytes", 30, |v| v > (max - 1024) as f64)
        .await;
    let taken = bridge.metric("received_total").await.unwrap();
    assert!(
        bytes <= max as f64,
        "spool_bytes {bytes} above maxBytes {max}"
    );
    assert!(
        taken < SMALL as f64,
        "the bridge took all {SMALL} ({taken}) although the spool holds at most {max} bytes"
    );
    assert_eq!(bridge.metric("spool_dropped_total").await, Some(0.0));
    cloud.restart().unwrap();
    let js = edge_stream(&cloud.url()).await;
    let (order, dups) = read_stream(&js, SMALL, 120).await;
    assert_complete_in_order(&order, SMALL);
    bridge.wait_metric("spool_messages", 60, |v| v == 0.0).await;
    assert_eq!(bridge.metric("spool_dropped_total").await, Some(0.0));
    println!("reject-new: held at {taken} of {SMALL} while full; 0 lost, {dups} duplicates");
}

/// A full spool with DropOldest: exactly the counted number is missing, and they are the oldest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_spool_drop_oldest_misses_exactly_the_counted_oldest_messages() {
    let edge = edge_mosquitto();
    let mut cloud = nats();
    drop(edge_stream(&cloud.url()).await);
    cloud.stop();
    let dir = tempfile::tempdir().unwrap();
    let max = 256 * 1024;
    let yaml = config(
        &mqtt_ep(edge.port()),
        &nats_ep(cloud.port(), true),
        E2C_TELEMETRY,
        &format!("{{maxBytes: \"{max}\", overflow: DropOldest}}"),
    );
    let bridge = Bridge::start(dir.path(), &yaml, &[]);
    bridge.wait_metric("edge_connected", 30, |v| v == 1.0).await;
    wait_subscribed(&edge, "local/telemetry/#").await;
    mqtt_publish(edge.port(), "local/telemetry/line1/seq", 0, SMALL).await;
    bridge
        .wait_metric("received_total", 60, |v| v == SMALL as f64)
        .await;
    // Every message written: waiting + dropped account for all.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let dropped = loop {
        let dropped = bridge.metric("spool_dropped_total").await.unwrap() as u64;
        let waiting = bridge.metric("spool_messages").await.unwrap() as u64;
        if dropped + waiting == SMALL {
            break dropped;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "dropped {dropped} + waiting {waiting} never added up to {SMALL}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        dropped > 0,
        "{SMALL} messages of 256 B cannot fit in {max} bytes"
    );
    assert!(bridge.metric("spool_bytes").await.unwrap() <= max as f64);
    assert!(bridge.log().contains("dropped the oldest messages"));
    cloud.restart().unwrap();
    let js = edge_stream(&cloud.url()).await;
    bridge.wait_metric("spool_messages", 60, |v| v == 0.0).await;
    let (order, _dups) = read_stream_upto(&js, SMALL - dropped, SMALL, 60).await;
    let mut got: Vec<u64> = order.clone();
    got.sort_unstable();
    got.dedup();
    let expected: Vec<u64> = (dropped..SMALL).collect();
    assert_eq!(
        got.len() as u64,
        SMALL - dropped,
        "exactly {dropped} missing"
    );
    assert_eq!(got, expected, "the oldest {dropped} are the ones missing");
    let info = js
        .get_stream("EDGE")
        .await
        .unwrap()
        .cached_info()
        .state
        .messages;
    assert_eq!(info, SMALL - dropped, "nothing else arrived");
    println!("drop-oldest: {dropped} dropped and counted of {SMALL}");
}

/// Publishes `from..to` to the edge's JetStream on `subject` and waits for every PubAck.
async fn js_publish(js: &async_nats::jetstream::Context, subject: &str, from: u64, to: u64) {
    let mut acks = Vec::with_capacity(1000);
    for i in from..to {
        acks.push(
            js.publish(subject.to_string(), payload(i).into())
                .await
                .unwrap(),
        );
        if acks.len() == 1000 || i + 1 == to {
            for a in acks.drain(..) {
                a.await.unwrap();
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jetstream_edge_is_consumed_durably_what_it_stored_while_the_bridge_was_down_arrives() {
    jetstream_edge_durably(
        async_nats::jetstream::stream::RetentionPolicy::Limits,
        20_000,
    )
    .await;
}

/// With interest retention the edge stream keeps only what a consumer has still to acknowledge, so while
/// the bridge makes its consumer again a second one holds those messages (deleting the only consumer would
/// delete them).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jetstream_edge_with_interest_retention_is_consumed_durably_and_in_order() {
    jetstream_edge_durably(
        async_nats::jetstream::stream::RetentionPolicy::Interest,
        5_000,
    )
    .await;
}

/// A work-queue stream allows one consumer per subject: the bridge makes its consumer again without a
/// second one holding the messages (the stream keeps them without a consumer).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jetstream_edge_with_work_queue_retention_is_consumed_durably_and_in_order() {
    jetstream_edge_durably(
        async_nats::jetstream::stream::RetentionPolicy::WorkQueue,
        5_000,
    )
    .await;
}

/// A bridge reads `n` messages from a JetStream edge, is killed, and a restarted bridge forwards the `n`
/// stored meanwhile, complete and in order, without reading the stream from the start again.
///
/// Between the two, a pull request the server still holds for a bridge it has not seen die (a node
/// lost without a FIN, or a kill it has not noticed yet) takes the first message stored after the kill
/// and never acknowledges it. The consumer would deliver that message again only after its
/// `ack_wait` (120 s), behind all the others: the restarted bridge starts the consumer again after its
/// acknowledgement floor instead.
async fn jetstream_edge_durably(retention: async_nats::jetstream::stream::RetentionPolicy, n: u64) {
    use async_nats::jetstream::stream::RetentionPolicy;
    let edge = nats();
    let cloud = nats();
    let cloud_js = edge_stream(&cloud.url()).await;
    let edge_js = async_nats::jetstream::new(async_nats::connect(edge.url()).await.unwrap());
    let stream = edge_js
        .get_or_create_stream(async_nats::jetstream::stream::Config {
            name: "LOCAL".into(),
            subjects: vec!["local.>".into()],
            retention,
            ..Default::default()
        })
        .await
        .unwrap();
    let consumers = || async {
        stream
            .consumer_names()
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .map(|n| n.unwrap())
            .collect::<Vec<String>>()
    };
    let dir = tempfile::tempdir().unwrap();
    let yaml = config(
        &nats_ep(edge.port(), true),
        &nats_ep(cloud.port(), true),
        E2C_TELEMETRY,
        SPOOL,
    );
    let mut bridge;
    if retention != RetentionPolicy::Interest {
        // Stored at the edge before any bridge ran.
        js_publish(&edge_js, "local.telemetry.line1.temp", 0, n).await;
        bridge = Bridge::start(dir.path(), &yaml, &[]);
    } else {
        // An interest stream keeps nothing while no consumer is interested: the bridge's comes first.
        bridge = Bridge::start(dir.path(), &yaml, &[]);
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while consumers().await.is_empty() {
            assert!(
                std::time::Instant::now() < deadline,
                "the bridge made no consumer in 60 s"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        js_publish(&edge_js, "local.telemetry.line1.temp", 0, n).await;
    }
    let (order, _) = read_stream(&cloud_js, n, 120).await;
    assert_complete_in_order(&order, n);
    bridge.wait_metric("spool_messages", 60, |v| v == 0.0).await;
    // The edge acknowledgements went out (after the spool's fsync): a restarted bridge resumes its
    // durable consumer after them instead of reading the stream from the start again.
    bridge.kill9();
    let durable = consumers()
        .await
        .pop()
        .expect("the bridge's durable consumer");
    let stale = async_nats::connect(edge.url()).await.unwrap();
    let mut stale_inbox = edgewire_e2e::brokers::nats::subscribed(&stale, "stale.pull")
        .await
        .unwrap();
    stale
        .publish_with_reply(
            format!("$JS.API.CONSUMER.MSG.NEXT.LOCAL.{durable}"),
            "stale.pull",
            r#"{"batch":1,"expires":300000000000}"#.into(),
        )
        .await
        .unwrap();
    edgewire_e2e::brokers::nats::round_trip(&stale)
        .await
        .unwrap();
    js_publish(&edge_js, "local.telemetry.line1.temp", n, 2 * n).await;
    let taken = tokio::time::timeout(Duration::from_secs(30), stale_inbox.next())
        .await
        .expect("the stale pull request got no message")
        .unwrap();
    assert_eq!(
        seq_of(&taken.payload),
        n,
        "the stale pull request took the first one"
    );
    let info = stream.clone().consumer_info(&durable).await.unwrap();
    assert!(info.num_ack_pending >= 1, "{info:?}");
    bridge.spawn();
    let (order, dups) = read_stream(&cloud_js, 2 * n, 120).await;
    assert_complete_in_order(&order, 2 * n);
    assert!(
        dups < n / 2,
        "{dups} duplicates: the restarted bridge read the edge stream from the start again"
    );
    assert_eq!(
        consumers().await,
        std::slice::from_ref(&durable),
        "one durable consumer"
    );
    assert!(
        durable.starts_with("edgewire-bridge-test-site-a-edge-"),
        "{durable}"
    );
    if retention != RetentionPolicy::WorkQueue {
        // A bridge killed half way through making its consumer again: the hold made, the rule's consumer
        // deleted. The next one starts the rule's consumer where the hold starts, not at the stream's start.
        bridge.wait_metric("spool_messages", 60, |v| v == 0.0).await;
        bridge.kill9();
        let info = stream.clone().consumer_info(&durable).await.unwrap();
        stream
            .create_consumer(async_nats::jetstream::consumer::pull::Config {
                durable_name: Some(format!("{durable}-hold")),
                filter_subject: info.config.filter_subject.clone(),
                deliver_policy: async_nats::jetstream::consumer::DeliverPolicy::ByStartSequence {
                    start_sequence: info.ack_floor.stream_sequence + 1,
                },
                ack_policy: async_nats::jetstream::consumer::AckPolicy::Explicit,
                ..Default::default()
            })
            .await
            .unwrap();
        stream.delete_consumer(&durable).await.unwrap();
        js_publish(&edge_js, "local.telemetry.line1.temp", 2 * n, 3 * n).await;
        bridge.spawn();
        let (order, all_dups) = read_stream(&cloud_js, 3 * n, 120).await;
        assert_complete_in_order(&order, 3 * n);
        assert!(
            all_dups - dups < n / 2,
            "{} duplicates: the rule's consumer was made again from the stream's start",
            all_dups - dups
        );
        assert_eq!(
            consumers().await,
            std::slice::from_ref(&durable),
            "the hold is gone"
        );
    }
    if retention != RetentionPolicy::Limits {
        // What the consumer acknowledged is gone, and the bridge acknowledged everything.
        bridge.wait_metric("spool_messages", 60, |v| v == 0.0).await;
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let left = stream.clone().info().await.unwrap().state.messages;
            if left == 0 {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{left} messages never acknowledged"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}
