//! Kafka cloud: librdkafka's mock cluster in the test process, the bridge child connects to its bootstrap
//! servers; the edge is a real Mosquitto.

use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use rumqttc::QoS;
use tokio::sync::mpsc;

use crate::common::*;
use crate::{mqtt_client, mqtt_subscriber, until_arrives};

const E2C: &str = "    - {direction: EdgeToCloud, from: \"local.telemetry.#\", to: \"edge.site-a.telemetry.#\"}\n";
const TELEMETRY_TOPIC: &str = "edge.site-a.telemetry.line1.temp";
const SPOOL: &str = "{maxBytes: 1Gi}";

fn mqtt_ep(port: u16) -> String {
    format!("{{protocol: mqtt, url: \"127.0.0.1:{port}\"}}")
}

fn kafka_ep(bootstrap: &str) -> String {
    format!("{{protocol: kafka, url: \"{bootstrap}\"}}")
}

#[derive(Debug)]
struct Rec {
    key: String,
    headers: Vec<(String, String)>,
    payload: Vec<u8>,
}

impl Rec {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The sequence number of a [`payload`] or [`small_payload`] record; None for probes.
    fn seq(&self) -> Option<u64> {
        (self.payload.len() == 256 || self.payload.len() == 12).then(|| seq_of(&self.payload))
    }
}

/// Reads `topic` partition 0 from the beginning on a thread, forever; records arrive on the channel.
fn reader(bootstrap: &str, topic: &str) -> mpsc::Receiver<Rec> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", format!("test-reader-{topic}"))
        // The mock broker holds a fetch for this long even when records arrive meanwhile.
        .set("fetch.wait.max.ms", "5")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Beginning)
        .unwrap();
    c.assign(&tpl).unwrap();
    let (tx, rx) = mpsc::channel(100_000);
    std::thread::spawn(move || {
        loop {
            let Some(m) = c.poll(Duration::from_millis(200)) else {
                if tx.is_closed() {
                    return;
                }
                continue;
            };
            let m = match m {
                Ok(m) => m,
                Err(e) => {
                    eprintln!("test reader: {e}");
                    continue;
                }
            };
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
            let r = Rec {
                key: String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned(),
                headers,
                payload: m.payload().unwrap_or_default().to_vec(),
            };
            if tx.blocking_send(r).is_err() {
                return;
            }
        }
    });
    rx
}

/// The sequence number alone (12 bytes). librdkafka's mock cluster keeps only the last 5 MiB of a
/// partition: 20,000 records of 256 B would push the first ones out before a reader sees them.
fn small_payload(seq: u64) -> Vec<u8> {
    format!("{seq:012}").into_bytes()
}

/// [`mqtt_publish`] with [`small_payload`]s: returns once every PUBACK arrived.
async fn mqtt_publish_small(port: u16, topic: &str, from: u64, to: u64) {
    let mut o = rumqttc::MqttOptions::new(format!("pub-small-{port}-{from}"), "127.0.0.1", port);
    o.set_inflight(500).set_keep_alive(Duration::from_secs(30));
    let (client, mut el) = rumqttc::AsyncClient::new(o, 1000);
    let topic = topic.to_string();
    let pubs = tokio::spawn(async move {
        for i in from..to {
            client
                .publish(topic.clone(), QoS::AtLeastOnce, false, small_payload(i))
                .await
                .unwrap();
        }
        client
    });
    let mut acked = 0;
    while acked < to - from {
        match el.poll().await {
            Ok(rumqttc::Event::Incoming(rumqttc::Packet::PubAck(_))) => acked += 1,
            Ok(_) => {}
            Err(e) => panic!("publisher connection: {e}"),
        }
    }
    let _client = pubs.await.unwrap();
}

/// Publishes a short probe on `mqtt_topic` every 200 ms until a record arrives on `rx` (the bridge
/// subscribes on the edge right after it connected): from then on nothing published is missed.
async fn probe(edge_port: u16, mqtt_topic: &str, rx: &mut mpsc::Receiver<Rec>) -> Rec {
    let dev = mqtt_client(edge_port, "probe").await;
    let topic = mqtt_topic.to_string();
    until_arrives(
        || {
            let c = dev.clone();
            let t = topic.clone();
            async move {
                c.publish(t, QoS::AtLeastOnce, false, "probe")
                    .await
                    .unwrap();
            }
        },
        rx,
    )
    .await
}

/// Reads until `n` sequence-numbered records arrived; their sequence numbers in arrival order.
async fn read_seqs(rx: &mut mpsc::Receiver<Rec>, n: u64, secs: u64) -> Vec<u64> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut seen = std::collections::HashSet::new();
    let mut order = Vec::with_capacity(n as usize);
    while (seen.len() as u64) < n {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, rx.recv()).await {
            Ok(Some(r)) => {
                if let Some(s) = r.seq() {
                    assert_eq!(r.key, "site-a", "record key");
                    order.push(s);
                    seen.insert(s);
                }
            }
            _ => panic!("{} of {n} distinct records arrived in {secs} s", seen.len()),
        }
    }
    order
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_cloud_topic_key_headers_in_order() {
    let edge = edge_mosquitto();
    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic(TELEMETRY_TOPIC, 1, 1).unwrap();
    let bootstrap = cluster.bootstrap_servers();
    let dir = tempfile::tempdir().unwrap();
    let yaml = config(&mqtt_ep(edge.port()), &kafka_ep(&bootstrap), E2C, SPOOL)
        .replace("spec:\n", "spec:\n  headers: {plant: berlin}\n");
    let bridge = Bridge::start(dir.path(), &yaml, &[]);
    let mut rx = reader(&bootstrap, TELEMETRY_TOPIC);
    bridge.wait_metric("edge_connected", 30, |v| v == 1.0).await;
    bridge
        .wait_metric("cloud_connected", 30, |v| v == 1.0)
        .await;
    let first = probe(edge.port(), "local/telemetry/line1/temp", &mut rx).await;
    assert_eq!(first.payload, b"probe");
    assert_eq!(first.key, "site-a", "key = the site id");
    assert_eq!(first.header("edge-site-id"), Some("site-a"));
    assert_eq!(first.header("plant"), Some("berlin"), "spec.headers entry");
    const M: u64 = 1000;
    mqtt_publish(edge.port(), "local/telemetry/line1/temp", 0, M).await;
    let order = read_seqs(&mut rx, M, 60).await;
    assert_complete_in_order(&order, M);
    bridge.wait_metric("spool_messages", 30, |v| v == 0.0).await;
    assert!(bridge.metric("forwarded_total").await.unwrap() >= M as f64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_cloud_commands_reach_the_edge_and_offsets_are_committed() {
    let edge = edge_mosquitto();
    let cluster = MockCluster::new(1).unwrap();
    // One topic per subscription kind: a wildcard rule (regex subscription) and a literal one.
    cluster.create_topic("cmd.site-a.valve.open", 1, 1).unwrap();
    cluster.create_topic("ops.site-a.reboot", 1, 1).unwrap();
    let bootstrap = cluster.bootstrap_servers();
    let dir = tempfile::tempdir().unwrap();
    let rules = format!(
        "{E2C}    - {{direction: CloudToEdge, from: \"cmd.site-a.#\", to: \"local.cmd.#\"}}\n    - {{direction: CloudToEdge, from: \"ops.site-a.reboot\", to: \"local.ops.reboot\"}}\n"
    );
    let yaml = config(&mqtt_ep(edge.port()), &kafka_ep(&bootstrap), &rules, SPOOL);
    let bridge = Bridge::start(dir.path(), &yaml, &[]);
    let mut cmds = mqtt_subscriber(edge.port(), "local/#").await;
    bridge.wait_metric("edge_connected", 30, |v| v == 1.0).await;
    bridge
        .wait_metric("cloud_connected", 30, |v| v == 1.0)
        .await;
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .create()
        .unwrap();
    let send = |topic: &'static str, payload: &'static str| {
        let p = producer.clone();
        async move {
            p.send(
                FutureRecord::<(), _>::to(topic).payload(payload),
                Duration::from_secs(5),
            )
            .await
            .unwrap();
        }
    };
    // The group joins and starts at the end of the partitions: resend until one arrives.
    let p = until_arrives(|| send("cmd.site-a.valve.open", "1"), &mut cmds).await;
    assert_eq!(p.topic, "local/cmd/valve/open");
    assert_eq!(&p.payload[..], b"1");
    // Further copies of the first command (it was sent until one arrived) may still come: skip them.
    let p = loop {
        let p = until_arrives(|| send("ops.site-a.reboot", "now"), &mut cmds).await;
        if p.topic != "local/cmd/valve/open" {
            break p;
        }
    };
    assert_eq!(p.topic, "local/ops/reboot");
    assert_eq!(&p.payload[..], b"now");
    assert!(bridge.metric("delivered_to_edge_total").await.unwrap() >= 2.0);

    // Delivered records are committed for the bridge's group (the restart point).
    let group = "edgewire-bridge-test-site-a-cloud";
    let probe: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("group.id", group)
        .create()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition("cmd.site-a.valve.open", 0);
        let committed =
            tokio::task::block_in_place(|| probe.committed_offsets(tpl, Duration::from_secs(5)));
        let off = committed.ok().and_then(|t| {
            t.find_partition("cmd.site-a.valve.open", 0)
                .map(|p| p.offset())
        });
        if matches!(off, Some(Offset::Offset(o)) if o >= 1) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "group {group} committed no offset: {off:?}\n{}",
            bridge.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

const N: u64 = 20_000;

/// Kafka down, 20,000 QoS 1 messages to the edge, Kafka back: all arrive in order, the spool drains.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_outage_20k_messages_all_arrive_in_order_after_the_cluster_returns() {
    let edge = edge_mosquitto();
    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic(TELEMETRY_TOPIC, 1, 1).unwrap();
    let bootstrap = cluster.bootstrap_servers();
    let dir = tempfile::tempdir().unwrap();
    let yaml = config(&mqtt_ep(edge.port()), &kafka_ep(&bootstrap), E2C, SPOOL);
    let bridge = Bridge::start(dir.path(), &yaml, &[]);
    let mut rx = reader(&bootstrap, TELEMETRY_TOPIC);
    bridge.wait_metric("edge_connected", 30, |v| v == 1.0).await;
    bridge
        .wait_metric("cloud_connected", 30, |v| v == 1.0)
        .await;
    probe(edge.port(), "local/telemetry/line1/temp", &mut rx).await;
    let forwarded_before = bridge.metric("forwarded_total").await.unwrap();

    cluster.broker_down(-1).unwrap();
    bridge
        .wait_metric("cloud_connected", 30, |v| v == 0.0)
        .await;
    mqtt_publish_small(edge.port(), "local/telemetry/line1/temp", 0, N).await;
    bridge
        .wait_metric("spool_messages", 120, |v| v == N as f64)
        .await;
    assert_eq!(
        bridge.metric("forwarded_total").await,
        Some(forwarded_before),
        "nothing is forwarded while the cluster is down"
    );

    cluster.broker_up(-1).unwrap();
    let t = Instant::now();
    bridge
        .wait_metric("cloud_connected", 60, |v| v == 1.0)
        .await;
    let reconnected = t.elapsed();
    bridge
        .wait_metric("spool_messages", 120, |v| v == 0.0)
        .await;
    let drained = t.elapsed();
    // What the topic holds, read by a consumer that did not live through the outage (the mock cluster's
    // broker_down/up sometimes leaves an assigned consumer fetching nothing).
    drop(rx);
    let mut rx = reader(&bootstrap, TELEMETRY_TOPIC);
    let order = read_seqs(&mut rx, N, 120).await;
    assert_complete_in_order(&order, N);
    println!(
        "kafka outage: reconnected after {reconnected:?}, {N} drained by {drained:?}, in order, {} duplicates",
        order.len() as u64 - N
    );
}

/// A mapped topic that is not a legal Kafka name is refused and counted; valid messages behind it arrive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_illegal_topic_names_are_refused_and_block_nothing() {
    let edge = edge_mosquitto();
    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic(TELEMETRY_TOPIC, 1, 1).unwrap();
    let bootstrap = cluster.bootstrap_servers();
    let dir = tempfile::tempdir().unwrap();
    let yaml = config(&mqtt_ep(edge.port()), &kafka_ep(&bootstrap), E2C, SPOOL);
    let bridge = Bridge::start(dir.path(), &yaml, &[]);
    let mut rx = reader(&bootstrap, TELEMETRY_TOPIC);
    bridge.wait_metric("edge_connected", 30, |v| v == 1.0).await;
    bridge
        .wait_metric("cloud_connected", 30, |v| v == 1.0)
        .await;
    probe(edge.port(), "local/telemetry/line1/temp", &mut rx).await;
    assert_eq!(bridge.metric("refused_total").await, Some(0.0));
    // "line 1" and "temp:c" map to names with characters Kafka does not allow.
    mqtt_publish(edge.port(), "local/telemetry/line 1/temp", 0, 3).await;
    mqtt_publish(edge.port(), "local/telemetry/line1/temp:c", 3, 5).await;
    mqtt_publish(edge.port(), "local/telemetry/line1/temp", 5, 105).await;
    bridge.wait_metric("refused_total", 30, |v| v == 5.0).await;
    let order = read_seqs(&mut rx, 100, 60).await;
    assert!(
        order.iter().all(|s| (5..105).contains(s)),
        "only the valid messages arrive"
    );
    let shifted: Vec<u64> = order.iter().map(|s| s - 5).collect();
    assert_complete_in_order(&shifted, 100);
    bridge.wait_metric("spool_messages", 30, |v| v == 0.0).await;
}

/// `auth.token` on a Kafka endpoint is a configuration error naming the field (no OAUTHBEARER).
#[test]
fn kafka_token_auth_is_refused_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("secrets/tok")).unwrap();
    std::fs::write(dir.path().join("secrets/tok/token"), "t0ken-value").unwrap();
    let cloud = "{protocol: kafka, url: \"127.0.0.1:9\", auth: {token: {name: tok, key: token}}}";
    let yaml = config(&mqtt_ep(1), cloud, E2C, SPOOL);
    std::fs::write(dir.path().join("b.yaml"), yaml).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_edgewire-agent"))
        .args(["bridge", "--config"])
        .arg(dir.path().join("b.yaml"))
        .arg("--spool-dir")
        .arg(dir.path().join("spool"))
        .arg("--secrets-dir")
        .arg(dir.path().join("secrets"))
        .arg("--http-addr")
        .arg("127.0.0.1:0")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("spec.cloud.endpoint.auth.token") && err.contains("OAUTHBEARER"),
        "{err}"
    );
    assert!(!err.contains("t0ken-value"), "the secret leaked: {err}");
}

/// Issue 14 item 4, Kafka cloud: a message over the producer's `message.max.bytes` (1,000,000 by
/// default) failed at every send and held up everything behind it. It is refused before the spool,
/// counted, and the small messages after it arrive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_over_message_max_bytes_is_refused_and_the_rest_arrives() {
    let edge = edge_mosquitto();
    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic(TELEMETRY_TOPIC, 1, 1).unwrap();
    let bootstrap = cluster.bootstrap_servers();
    let dir = tempfile::tempdir().unwrap();
    let yaml = config(&mqtt_ep(edge.port()), &kafka_ep(&bootstrap), E2C, SPOOL);
    let bridge = Bridge::start(dir.path(), &yaml, &[]);
    let mut rx = reader(&bootstrap, TELEMETRY_TOPIC);
    bridge
        .wait_metric("cloud_connected", 30, |v| v == 1.0)
        .await;
    probe(edge.port(), "local/telemetry/line1/temp", &mut rx).await;
    crate::hostile::mqtt_publish_one(
        edge.port(),
        "big",
        "local/telemetry/line1/temp",
        vec![b'b'; 1_200_000],
    )
    .await;
    mqtt_publish_small(edge.port(), "local/telemetry/line1/temp", 0, 10).await;
    let order = read_seqs(&mut rx, 10, 30).await;
    assert_eq!(order.len(), 10, "{order:?}");
    let refused = bridge.wait_metric("refused_total", 10, |v| v >= 1.0).await;
    assert_eq!(refused, 1.0, "{}", bridge.log());
}
