//! An AMQP 0-9-1 cloud (a real RabbitMQ): routing keys, headers, persistence and publisher confirms
//! edge→cloud, commands cloud→edge through the bridge's durable queue, an outage, unroutable messages.
//!
//! Run: `cargo test -p edgewire-agent --test bridge amqp -- --test-threads 1`.

use std::path::Path;
use std::time::{Duration, Instant};

use edgewire_e2e::brokers::{BrokerProcess, Kind};
use edgewire_e2e::pki::TestPki;
use futures::StreamExt;
use lapin::message::Delivery;
use lapin::options::{
    BasicConsumeOptions, BasicPublishOptions, ExchangeDeclareOptions, QueueBindOptions,
    QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};

use crate::common::*;
use crate::mqtt_subscriber;

const TELEMETRY: &str = "    - {direction: EdgeToCloud, from: \"local.telemetry.#\", to: \"edge.site-a.telemetry.#\"}\n";
const COMMANDS: &str =
    "    - {direction: CloudToEdge, from: \"cmd.site-a.#\", to: \"local.cmd.#\"}\n";
const SPOOL: &str = "{maxBytes: 1Gi}";

fn rabbit() -> BrokerProcess {
    BrokerProcess::start_default(Kind::RabbitMq).expect("rabbitmq-server")
}

/// The cloud endpoint: wrong credentials in the URL, the right ones (guest) in `auth`, which must win.
fn amqp_ep(port: u16, extra: &str) -> String {
    format!(
        "{{protocol: amqp091, url: \"amqp://nobody:url-password@127.0.0.1:{port}/%2f\", auth: {{userPassword: {{secretName: rabbit}}}}{extra}}}"
    )
}

fn mqtt_ep(port: u16) -> String {
    format!("{{protocol: mqtt, url: \"127.0.0.1:{port}\"}}")
}

/// The `rabbit` Secret the endpoint's `auth` names, under `<dir>/secrets`.
fn write_secrets(dir: &Path) {
    let d = dir.join("secrets/rabbit");
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join("username"), "guest\n").unwrap();
    std::fs::write(d.join("password"), "guest\n").unwrap();
}

async fn channel(url: &str) -> (Connection, Channel) {
    let conn = Connection::connect(url, ConnectionProperties::default())
        .await
        .expect("AMQP connect");
    let ch = conn.create_channel().await.unwrap();
    (conn, ch)
}

/// Declares `queue` (durable) and binds it to `exchange` with `pattern`.
async fn bind(ch: &Channel, queue: &str, exchange: &str, pattern: &str) {
    ch.queue_declare(
        queue.into(),
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .unwrap();
    ch.queue_bind(
        queue.into(),
        exchange.into(),
        pattern.into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
}

/// Reads `queue` until `n` distinct sequence numbers arrived: (deliveries in arrival order, first
/// arrivals' sequence numbers and duplicates in arrival order).
async fn read_queue(ch: &Channel, queue: &str, n: u64, secs: u64) -> (Vec<Delivery>, Vec<u64>) {
    let mut c = ch
        .basic_consume(
            queue.into(),
            format!("test-{queue}").as_str().into(),
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut seen = vec![false; n as usize];
    let mut distinct = 0;
    let (mut deliveries, mut order) = (Vec::new(), Vec::new());
    while distinct < n {
        let left = deadline.saturating_duration_since(Instant::now());
        let d = match tokio::time::timeout(left, c.next()).await {
            Ok(Some(Ok(d))) => d,
            other => panic!(
                "queue {queue}: {distinct} of {n} distinct messages, then {:?}",
                other.map(|o| o.map(|r| r.map(|_| ())))
            ),
        };
        let s = seq_of(&d.data);
        order.push(s);
        if s < n && !seen[s as usize] {
            seen[s as usize] = true;
            distinct += 1;
        }
        if deliveries.len() < 1000 {
            deliveries.push(d);
        }
    }
    (deliveries, order)
}

fn header(d: &Delivery, name: &str) -> Option<String> {
    d.properties
        .headers()
        .as_ref()
        .and_then(|h| h.inner().get(name))
        .and_then(|v| match v {
            AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
            _ => None,
        })
}

fn bridge_yaml(edge_port: u16, cloud: &str, rules: &str) -> String {
    config(&mqtt_ep(edge_port), cloud, rules, SPOOL)
        .replace("spec:\n", "spec:\n  headers: {plant: berlin}\n")
}

async fn start_bridge(dir: &Path, edge_port: u16, cloud: &str, rules: &str) -> Bridge {
    write_secrets(dir);
    Bridge::start(dir, &bridge_yaml(edge_port, cloud, rules), &[])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqp_cloud_gets_routing_key_headers_persistent_in_order() {
    let edge = edge_mosquitto();
    let mut cloud = rabbit();
    let (_conn, ch) = channel(&cloud.url()).await;
    bind(&ch, "cloud-telemetry", "amq.topic", "edge.site-a.#").await;
    let dir = tempfile::tempdir().unwrap();
    let bridge = start_bridge(
        dir.path(),
        edge.port(),
        &amqp_ep(cloud.port(), ""),
        TELEMETRY,
    )
    .await;
    bridge.wait_metric("edge_connected", 30, |v| v == 1.0).await;
    bridge
        .wait_metric("cloud_connected", 60, |v| v == 1.0)
        .await;
    wait_subscribed(&edge, "local/telemetry/#").await;
    const N: u64 = 200;
    mqtt_publish(edge.port(), "local/telemetry/line1/temp", 0, N).await;
    let (deliveries, order) = read_queue(&ch, "cloud-telemetry", N, 60).await;
    assert_complete_in_order(&order, N);
    let d = &deliveries[0];
    assert_eq!(d.exchange.as_str(), "amq.topic");
    assert_eq!(d.routing_key.as_str(), "edge.site-a.telemetry.line1.temp");
    assert_eq!(header(d, "edge-site-id").as_deref(), Some("site-a"));
    assert_eq!(header(d, "plant").as_deref(), Some("berlin"));
    assert_eq!(*d.properties.delivery_mode(), Some(2), "persistent");
    assert_eq!(
        d.properties.content_type().as_ref().map(|s| s.as_str()),
        Some("application/octet-stream")
    );
    assert_eq!(d.data, payload(0), "payload unchanged");
    bridge.wait_metric("spool_messages", 30, |v| v == 0.0).await;
    assert_eq!(bridge.metric("forwarded_total").await, Some(N as f64));
    assert!(!bridge.log().contains("url-password"));

    // A wrong password in the Secret: refused, reported, never printed. (One bridge at a time on the
    // edge: they share the MQTT client id.)
    drop(bridge);
    let dir2 = tempfile::tempdir().unwrap();
    write_secrets(dir2.path());
    std::fs::write(
        dir2.path().join("secrets/rabbit/password"),
        "not-the-pw-7731\n",
    )
    .unwrap();
    let refused = Bridge::start(
        dir2.path(),
        &bridge_yaml(edge.port(), &amqp_ep(cloud.port(), ""), TELEMETRY),
        &[],
    );
    refused.wait_log(ACCESS_REFUSED, 30).await;
    assert_eq!(refused.metric("cloud_connected").await, Some(0.0));
    assert!(!refused.log().contains("not-the-pw-7731"));

    // The same check against the same RabbitMQ stopped: the bridge fails to connect, and says nothing
    // of a refusal.
    drop(refused);
    cloud.stop();
    let dir3 = tempfile::tempdir().unwrap();
    write_secrets(dir3.path());
    std::fs::write(
        dir3.path().join("secrets/rabbit/password"),
        "not-the-pw-7731\n",
    )
    .unwrap();
    let facing_nothing = Bridge::start(
        dir3.path(),
        &bridge_yaml(edge.port(), &amqp_ep(cloud.port(), ""), TELEMETRY),
        &[],
    );
    let log = facing_nothing
        .wait_log("cannot connect to the AMQP broker", 30)
        .await;
    assert!(
        !log.contains(ACCESS_REFUSED),
        "the refusal check passes against a stopped RabbitMQ:\n{log}"
    );
}

/// RabbitMQ's answer to a login with a wrong password (connection.close 403).
const ACCESS_REFUSED: &str = "ACCESS_REFUSED";
/// rustls's verdict on a server certificate from a CA the bridge does not trust.
const UNTRUSTED_SERVER: &str = "invalid peer certificate";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqp_cloud_commands_reach_the_edge_and_are_acknowledged_once_delivered() {
    let edge = edge_mosquitto();
    let cloud = rabbit();
    let (_conn, ch) = channel(&cloud.url()).await;
    let dir = tempfile::tempdir().unwrap();
    let rules = format!("{TELEMETRY}{COMMANDS}");
    let mut bridge =
        start_bridge(dir.path(), edge.port(), &amqp_ep(cloud.port(), ""), &rules).await;
    bridge.wait_metric("edge_connected", 30, |v| v == 1.0).await;
    bridge
        .wait_metric("cloud_connected", 60, |v| v == 1.0)
        .await;
    let mut cmds = mqtt_subscriber(edge.port(), "local/cmd/#").await;
    let publish = |key: &'static str, body: &'static str| {
        let ch = ch.clone();
        async move {
            ch.basic_publish(
                "amq.topic".into(),
                key.into(),
                BasicPublishOptions::default(),
                body.as_bytes(),
                BasicProperties::default(),
            )
            .await
            .unwrap();
        }
    };
    // The bridge's queue and binding exist once it reports the cloud connected.
    publish("cmd.site-a.valve.open", "1").await;
    let p = tokio::time::timeout(Duration::from_secs(30), cmds.recv())
        .await
        .expect("command on the edge")
        .unwrap();
    assert_eq!(p.topic, "local/cmd/valve/open");
    assert_eq!(&p.payload[..], b"1");
    bridge
        .wait_metric("delivered_to_edge_total", 10, |v| v == 1.0)
        .await;
    // The queue is durable and named after the BridgeLink; the command was acknowledged after the
    // edge took it: a restarted bridge gets the next command, not the first one again.
    bridge.kill9();
    publish("cmd.site-a.valve.close", "0").await;
    bridge.spawn();
    let p = tokio::time::timeout(Duration::from_secs(60), cmds.recv())
        .await
        .expect("second command on the edge")
        .unwrap();
    assert_eq!(
        (p.topic.as_str(), &p.payload[..]),
        ("local/cmd/valve/close", &b"0"[..]),
        "the first command was delivered again: it had not been acknowledged"
    );
    // Commands sent while the bridge was down waited in its queue.
    let q = ch
        .queue_declare(
            "edgewire-bridge-test-site-a-cloud".into(),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("the bridge's queue");
    assert_eq!(q.message_count(), 0);
}

const OUTAGE_N: u64 = 20_000;

/// RabbitMQ stopped (port kept), 20,000 QoS 1 messages to the edge, RabbitMQ back: all arrive, in order,
/// and the spool drains to 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqp_outage_all_messages_arrive_in_order_after_rabbitmq_returns() {
    let edge = edge_mosquitto();
    let mut cloud = rabbit();
    {
        let (conn, ch) = channel(&cloud.url()).await;
        bind(&ch, "cloud-telemetry", "amq.topic", "edge.site-a.#").await;
        conn.close(200, "bye".into()).await.unwrap();
    }
    cloud.stop();
    let dir = tempfile::tempdir().unwrap();
    let bridge = start_bridge(
        dir.path(),
        edge.port(),
        &amqp_ep(cloud.port(), ""),
        TELEMETRY,
    )
    .await;
    bridge.wait_metric("edge_connected", 30, |v| v == 1.0).await;
    wait_subscribed(&edge, "local/telemetry/#").await;
    let t = Instant::now();
    mqtt_publish(edge.port(), "local/telemetry/line1/seq", 0, OUTAGE_N).await;
    bridge
        .wait_metric("spool_messages", 120, |v| v == OUTAGE_N as f64)
        .await;
    assert_eq!(bridge.metric("forwarded_total").await, Some(0.0));
    assert_eq!(bridge.metric("cloud_connected").await, Some(0.0));
    let spooled = t.elapsed();
    cloud.restart().unwrap();
    let back = Instant::now();
    bridge
        .wait_metric("spool_messages", 300, |v| v == 0.0)
        .await;
    let drained = back.elapsed();
    let (_conn, ch) = channel(&cloud.url()).await;
    let (_, order) = read_queue(&ch, "cloud-telemetry", OUTAGE_N, 120).await;
    assert_complete_in_order(&order, OUTAGE_N);
    println!(
        "amqp outage: {OUTAGE_N} spooled by {spooled:?}, drained {drained:?} after RabbitMQ returned; {} duplicates",
        order.len() as u64 - OUTAGE_N
    );
}

/// A missing exchange keeps the cloud side down (named in the log); with the exchange but no binding
/// for the routing key, messages are returned by the broker and stay in the spool; once a queue is bound
/// they arrive, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqp_unroutable_messages_stay_spooled_until_a_queue_is_bound() {
    let edge = edge_mosquitto();
    let cloud = rabbit();
    let (_conn, ch) = channel(&cloud.url()).await;
    let dir = tempfile::tempdir().unwrap();
    let ep = amqp_ep(cloud.port(), ", exchange: telemetry");
    let bridge = start_bridge(dir.path(), edge.port(), &ep, TELEMETRY).await;
    bridge.wait_metric("edge_connected", 30, |v| v == 1.0).await;
    // No exchange `telemetry` yet: the side stays down and says why.
    bridge
        .wait_log("exchange \\\"telemetry\\\" is not usable", 30)
        .await;
    assert_eq!(bridge.metric("cloud_connected").await, Some(0.0));
    ch.exchange_declare(
        "telemetry".into(),
        ExchangeKind::Topic,
        ExchangeDeclareOptions {
            durable: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .unwrap();
    bridge
        .wait_metric("cloud_connected", 60, |v| v == 1.0)
        .await;
    wait_subscribed(&edge, "local/telemetry/#").await;
    const N: u64 = 20;
    mqtt_publish(edge.port(), "local/telemetry/line1/seq", 0, N).await;
    // Every round is refused: nothing leaves the spool.
    bridge
        .wait_metric("cloud_errors_total", 60, |v| v >= 2.0)
        .await;
    assert_eq!(bridge.metric("spool_messages").await, Some(N as f64));
    assert_eq!(bridge.metric("forwarded_total").await, Some(0.0));
    assert!(
        bridge.log().contains(
            "no queue is bound to exchange \\\"telemetry\\\" for routing key \\\"edge.site-a.telemetry.line1.seq\\\""
        ),
        "{}",
        bridge.log()
    );
    bind(&ch, "late-binding", "telemetry", "edge.site-a.telemetry.#").await;
    let (_, order) = read_queue(&ch, "late-binding", N, 60).await;
    assert_complete_in_order(&order, N);
    bridge.wait_metric("spool_messages", 30, |v| v == 0.0).await;
}

/// TLS 1.3 only with a client certificate (RabbitMQ requires one): the endpoint's CA, client certificate
/// and `minVersion: "1.3"` reach the connection; a bridge trusting another CA does not connect and says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqp_cloud_over_mutual_tls_1_3() {
    let pki = TestPki::new("bridge").unwrap();
    let mut cloud = BrokerProcess::start(
        Kind::RabbitMq,
        "disk_free_limit.absolute = 1MB\n\
         listeners.ssl.default = {port2}\n\
         ssl_options.cacertfile = {dir}/ca.pem\nssl_options.certfile = {dir}/server.pem\nssl_options.keyfile = {dir}/server-key.pem\n\
         ssl_options.verify = verify_peer\nssl_options.fail_if_no_peer_cert = true\n\
         ssl_options.versions.1 = tlsv1.3\n",
        &pki.server_files(),
    )
    .expect("rabbitmq-server");
    let (_conn, ch) = channel(&cloud.url()).await;
    bind(&ch, "cloud-telemetry", "amq.topic", "edge.site-a.#").await;
    let edge = edge_mosquitto();
    let tls_ep = |port: u16| {
        format!(
            "{{protocol: amqp091, url: \"amqps://127.0.0.1:{port}/%2f\", auth: {{userPassword: {{secretName: rabbit}}}}, \
             tls: {{enabled: true, minVersion: \"1.3\", caSecretRef: {{name: cloud-ca, key: ca.crt}}, clientCertSecretRef: {{secretName: cloud-client}}}}}}"
        )
    };
    let write_tls = |dir: &Path, ca: &str| {
        let s = dir.join("secrets");
        std::fs::create_dir_all(s.join("cloud-ca")).unwrap();
        std::fs::create_dir_all(s.join("cloud-client")).unwrap();
        std::fs::write(s.join("cloud-ca/ca.crt"), ca).unwrap();
        std::fs::write(s.join("cloud-client/tls.crt"), &pki.client_cert_pem).unwrap();
        std::fs::write(s.join("cloud-client/tls.key"), &pki.client_key_pem).unwrap();
    };
    let dir = tempfile::tempdir().unwrap();
    write_tls(dir.path(), &pki.ca_pem);
    let bridge = start_bridge(dir.path(), edge.port(), &tls_ep(cloud.port2()), TELEMETRY).await;
    bridge.wait_metric("edge_connected", 30, |v| v == 1.0).await;
    bridge
        .wait_metric("cloud_connected", 60, |v| v == 1.0)
        .await;
    wait_subscribed(&edge, "local/telemetry/#").await;
    mqtt_publish(edge.port(), "local/telemetry/line1/temp", 0, 10).await;
    let (deliveries, order) = read_queue(&ch, "cloud-telemetry", 10, 60).await;
    assert_complete_in_order(&order, 10);
    assert_eq!(
        deliveries[0].routing_key.as_str(),
        "edge.site-a.telemetry.line1.temp"
    );

    // Another CA: the server certificate is refused, the side stays down with the reason.
    drop(bridge);
    let other = TestPki::other_ca().unwrap();
    let dir2 = tempfile::tempdir().unwrap();
    write_tls(dir2.path(), &other.ca_pem);
    let untrusting =
        start_bridge(dir2.path(), edge.port(), &tls_ep(cloud.port2()), TELEMETRY).await;
    let log = untrusting.wait_log(UNTRUSTED_SERVER, 30).await;
    assert!(log.contains("cannot connect to the AMQP broker"), "{log}");
    assert_eq!(untrusting.metric("cloud_connected").await, Some(0.0));

    // The same check against the same RabbitMQ stopped: no certificate, no verdict on one.
    drop(untrusting);
    cloud.stop();
    let dir3 = tempfile::tempdir().unwrap();
    write_tls(dir3.path(), &other.ca_pem);
    let facing_nothing =
        start_bridge(dir3.path(), edge.port(), &tls_ep(cloud.port2()), TELEMETRY).await;
    let log = facing_nothing
        .wait_log("cannot connect to the AMQP broker", 30)
        .await;
    assert!(
        !log.contains(UNTRUSTED_SERVER),
        "the refusal check passes against a stopped RabbitMQ:\n{log}"
    );
}
