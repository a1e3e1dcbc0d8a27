//! `mqttVersion: "5"` on both sides of the bridge, against real Mosquitto brokers (Mosquitto 2 speaks
//! MQTT 5): user properties, the persistent edge session (Session Expiry Interval), PUBACK reason codes.
//!
//! Run: `cargo test -p edgewire-agent --test bridge mqtt5 -- --test-threads 1`

use std::time::{Duration, Instant};

use edgewire_e2e::brokers::{BrokerProcess, Kind};
use futures::StreamExt;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{Packet, Publish};
use rumqttc::v5::{AsyncClient, Event, MqttOptions};
use tokio::sync::mpsc;

use super::common::*;
use super::{C2E_COMMANDS, E2C_TELEMETRY, SPOOL, nats_ep, until_arrives};

fn mqtt5_ep(port: u16) -> String {
    format!("{{protocol: mqtt, mqttVersion: \"5\", url: \"127.0.0.1:{port}\"}}")
}

fn with_headers(yaml: String) -> String {
    yaml.replace("spec:\n", "spec:\n  headers: {plant: berlin}\n")
}

fn topic(p: &Publish) -> String {
    String::from_utf8(p.topic.to_vec()).unwrap()
}

fn user_property<'a>(p: &'a Publish, key: &str) -> Option<&'a str> {
    p.properties
        .as_ref()?
        .user_properties
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

/// An MQTT 5 client whose event loop runs in the background; publishes matching `filter` (if any)
/// arrive on the channel. Returns once the SUBACK arrived.
async fn mqtt5_client(
    port: u16,
    id: &str,
    filter: Option<&str>,
) -> (AsyncClient, mpsc::Receiver<Publish>) {
    let mut o = MqttOptions::new(format!("{id}-{port}"), "127.0.0.1", port);
    o.set_max_packet_size(Some(1 << 20));
    let (client, mut el) = AsyncClient::new(o, 1000);
    if let Some(f) = filter {
        client.subscribe(f, QoS::AtLeastOnce).await.unwrap();
    }
    let (tx, rx) = mpsc::channel(20_000);
    let (ready_tx, mut ready) = mpsc::channel(1);
    tokio::spawn(async move {
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
    if filter.is_some() {
        tokio::time::timeout(Duration::from_secs(10), ready.recv())
            .await
            .expect("SUBACK");
    }
    (client, rx)
}

/// Publishes `from..to` (sequence-numbered payloads) at QoS 1 with an MQTT 5 client; returns once every
/// PUBACK arrived.
async fn mqtt5_publish(port: u16, topic: &str, from: u64, to: u64) {
    let o = MqttOptions::new(format!("pub5-{port}-{from}"), "127.0.0.1", port);
    let (client, mut el) = AsyncClient::new(o, 1000);
    let topic = topic.to_string();
    let pubs = tokio::spawn(async move {
        for i in from..to {
            client
                .publish(topic.clone(), QoS::AtLeastOnce, false, payload(i))
                .await
                .unwrap();
        }
        client
    });
    let mut acked = 0;
    while acked < to - from {
        match el.poll().await {
            Ok(Event::Incoming(Packet::PubAck(_))) => acked += 1,
            Ok(_) => {}
            Err(e) => panic!("MQTT 5 publisher connection: {e}"),
        }
    }
    let _client = pubs.await.unwrap();
}

/// Reads publishes on `topic` until `n` distinct sequence numbers were seen (others are skipped);
/// panics after `secs`. Returns them in arrival order.
async fn read_seq(
    rx: &mut mpsc::Receiver<Publish>,
    topic: &str,
    n: u64,
    secs: u64,
) -> Vec<Publish> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut seen = vec![false; n as usize];
    let mut distinct = 0;
    let mut out = Vec::new();
    while distinct < n {
        let left = deadline.saturating_duration_since(Instant::now());
        let p = match tokio::time::timeout(left, rx.recv()).await {
            Ok(Some(p)) => p,
            _ => panic!("{distinct} of {n} distinct messages arrived on {topic}"),
        };
        if self::topic(&p) != topic {
            continue;
        }
        let s = seq_of(&p.payload) as usize;
        if s < seen.len() && !seen[s] {
            seen[s] = true;
            distinct += 1;
        }
        out.push(p);
    }
    out
}

const SEQ_EDGE: &str = "local/telemetry/line1/seq";
const SEQ_CLOUD: &str = "edge/site-a/telemetry/line1/seq";

/// Publishes a probe on the edge until it arrives on the cloud subscriber: the bridge is connected
/// and subscribed on both sides.
async fn probe(edge_port: u16, cloud_rx: &mut mpsc::Receiver<Publish>) -> Publish {
    let (dev, _) = mqtt5_client(edge_port, "probe", None).await;
    until_arrives(
        || {
            let c = dev.clone();
            async move {
                c.publish("local/telemetry/probe", QoS::AtLeastOnce, false, "ping")
                    .await
                    .unwrap();
            }
        },
        cloud_rx,
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt5_edge_to_mqtt5_cloud_in_order_with_user_properties_and_commands_down() {
    let edge = edge_mosquitto();
    let cloud = edge_mosquitto();
    let dir = tempfile::tempdir().unwrap();
    let rules = format!("{E2C_TELEMETRY}{C2E_COMMANDS}");
    let yaml = with_headers(config(
        &mqtt5_ep(edge.port()),
        &mqtt5_ep(cloud.port()),
        &rules,
        SPOOL,
    ));
    let bridge = Bridge::start(dir.path(), &yaml, &[]);
    let (_sub, mut up) = mqtt5_client(cloud.port(), "cloud-sub", Some("edge/#")).await;
    let p = probe(edge.port(), &mut up).await;
    assert_eq!(topic(&p), "edge/site-a/telemetry/probe");
    assert_eq!(&p.payload[..], b"ping");

    const N: u64 = 2_000;
    mqtt5_publish(edge.port(), SEQ_EDGE, 0, N).await;
    let got = read_seq(&mut up, SEQ_CLOUD, N, 120).await;
    let order: Vec<u64> = got.iter().map(|p| seq_of(&p.payload)).collect();
    assert_complete_in_order(&order, N);
    for p in &got {
        assert_eq!(user_property(p, "edge-site-id"), Some("site-a"), "{p:?}");
        assert_eq!(user_property(p, "plant"), Some("berlin"), "{p:?}");
    }
    bridge.wait_metric("spool_messages", 30, |v| v == 0.0).await;
    assert!(bridge.metric("forwarded_total").await.unwrap() >= (N + 1) as f64);

    // Cloud → edge: an MQTT 5 cloud command reaches an MQTT 5 subscriber on the edge, unenriched.
    let (_edge_sub, mut down) = mqtt5_client(edge.port(), "edge-sub", Some("local/cmd/#")).await;
    let (ctl, _) = mqtt5_client(cloud.port(), "control", None).await;
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
    assert_eq!(topic(&p), "local/cmd/fan/on");
    assert_eq!(&p.payload[..], b"1");
    assert_eq!(user_property(&p, "edge-site-id"), None);
    bridge
        .wait_metric("delivered_to_edge_total", 10, |v| v >= 1.0)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt5_edge_to_nats_cloud_with_headers_from_311_and_5_publishers() {
    let edge = edge_mosquitto();
    let cloud = nats();
    let dir = tempfile::tempdir().unwrap();
    let yaml = with_headers(config(
        &mqtt5_ep(edge.port()),
        &nats_ep(cloud.port(), false),
        E2C_TELEMETRY,
        SPOOL,
    ));
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
    // A device speaking MQTT 3.1.1 …
    let (v3, mut v3_el) = rumqttc::AsyncClient::new(
        rumqttc::MqttOptions::new("device-311", "127.0.0.1", edge.port()),
        100,
    );
    tokio::spawn(async move {
        loop {
            if v3_el.poll().await.is_err() {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    });
    let m = until_arrives(
        || {
            let c = v3.clone();
            async move {
                c.publish(
                    "local/telemetry/line1/temp",
                    rumqttc::QoS::AtLeastOnce,
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
    // … and one speaking MQTT 5.
    let (v5, _) = mqtt5_client(edge.port(), "device-5", None).await;
    let m = loop {
        let m = until_arrives(
            || {
                let c = v5.clone();
                async move {
                    c.publish("local/telemetry/line2/rpm", QoS::AtLeastOnce, false, "900")
                        .await
                        .unwrap();
                }
            },
            &mut rx,
        )
        .await;
        // Resent 3.1.1 probes may still be on their way.
        if m.subject.as_str() != "edge.site-a.telemetry.line1.temp" {
            break m;
        }
    };
    assert_eq!(m.subject.as_str(), "edge.site-a.telemetry.line2.rpm");
    assert_eq!(&m.payload[..], b"900");
    let h = m.headers.expect("headers");
    assert_eq!(h.get("edge-site-id").map(|v| v.as_str()), Some("site-a"));
    assert_eq!(h.get("plant").map(|v| v.as_str()), Some("berlin"));
}

/// The edge session outlives the bridge: with the bridge killed (-9), the edge broker keeps queueing for
/// it — which an MQTT 5 broker does only with a Session Expiry Interval — and after the restart every
/// message arrives, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt5_edge_session_keeps_5000_messages_published_while_the_bridge_is_down() {
    const N: u64 = 5_000;
    let edge = edge_mosquitto();
    let cloud = edge_mosquitto();
    let dir = tempfile::tempdir().unwrap();
    let yaml = config(
        &mqtt5_ep(edge.port()),
        &mqtt5_ep(cloud.port()),
        E2C_TELEMETRY,
        SPOOL,
    );
    let mut bridge = Bridge::start(dir.path(), &yaml, &[]);
    let (_sub, mut up) = mqtt5_client(cloud.port(), "cloud-sub", Some("edge/#")).await;
    probe(edge.port(), &mut up).await;
    bridge.kill9();
    mqtt_publish(edge.port(), SEQ_EDGE, 0, N).await;
    bridge.spawn();
    let got = read_seq(&mut up, SEQ_CLOUD, N, 180).await;
    let order: Vec<u64> = got.iter().map(|p| seq_of(&p.payload)).collect();
    assert_complete_in_order(&order, N);
    bridge.wait_metric("spool_messages", 60, |v| v == 0.0).await;
    println!(
        "mqtt5 session: {N} published while the bridge was down, all arrived in order ({} deliveries)",
        order.len()
    );
}

/// A cloud that answers PUBACK 0x87 (Mosquitto's ACL denies the bridge's publishes; its debug log shows the answer): nothing counts as
/// forwarded, everything stays in the spool and is resent; once the ACL allows it, all arrive in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt5_cloud_refusing_with_puback_0x87_keeps_messages_in_the_spool() {
    const N: u64 = 200;
    let edge = edge_mosquitto();
    let conf = format!(
        "{}max_inflight_messages 1000\nmax_queued_messages 0\nacl_file {{dir}}/acl\nlog_type all\n",
        Kind::Mosquitto.default_config()
    );
    // Anonymous clients (the bridge and the test's subscriber) may read everything and write nothing.
    let cloud =
        BrokerProcess::start(Kind::Mosquitto, &conf, &[("acl", b"topic read #\n")]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let yaml = config(
        &mqtt5_ep(edge.port()),
        &mqtt5_ep(cloud.port()),
        E2C_TELEMETRY,
        SPOOL,
    );
    let bridge = Bridge::start(dir.path(), &yaml, &[]);
    let (_sub, mut up) = mqtt5_client(cloud.port(), "cloud-sub", Some("edge/#")).await;
    bridge.wait_metric("edge_connected", 30, |v| v == 1.0).await;
    bridge
        .wait_metric("cloud_connected", 30, |v| v == 1.0)
        .await;
    wait_subscribed(&edge, "local/telemetry/#").await;
    mqtt5_publish(edge.port(), SEQ_EDGE, 0, N).await;
    bridge
        .wait_metric("received_total", 60, |v| v == N as f64)
        .await;
    let errors = bridge
        .wait_metric("cloud_errors_total", 60, |v| v >= 3.0)
        .await;
    let total = bridge.metric("received_total").await.unwrap();
    assert_eq!(
        bridge.metric("spool_messages").await,
        Some(total),
        "refused messages stay in the spool"
    );
    assert_eq!(bridge.metric("forwarded_total").await, Some(0.0));
    // Mosquitto answers each refused PUBLISH with PUBACK 0x87 and then closes the connection (2.0:
    // "Bad socket read/write … Unknown error"). With more PUBLISHes unread in its socket the close is a
    // TCP reset, which can discard the PUBACK before the bridge reads it; so the refusal is shown by the
    // server's own log (debug level), and the bridge's side by what it kept and counted.
    let refused = cloud
        .log()
        .lines()
        .any(|l| l.contains("Sending PUBACK to edgewire-bridge-") && l.ends_with(", rc135)"));
    assert!(
        refused,
        "Mosquitto never answered the bridge with PUBACK 0x87:\n{}",
        cloud.log()
    );
    assert!(
        tokio::time::timeout(Duration::from_millis(500), up.recv())
            .await
            .is_err(),
        "the cloud delivered a message its ACL refused"
    );
    println!("mqtt5 refused: {errors} failed rounds, {total} messages held in the spool");

    // The ACL now allows the bridge: everything held arrives, in order.
    std::fs::write(cloud.dir().join("acl"), "topic readwrite #\n").unwrap();
    let hup = std::process::Command::new("kill")
        .args(["-HUP", &cloud.pid().unwrap().to_string()])
        .status()
        .unwrap();
    assert!(hup.success());
    let got = read_seq(&mut up, SEQ_CLOUD, N, 120).await;
    let order: Vec<u64> = got.iter().map(|p| seq_of(&p.payload)).collect();
    assert_complete_in_order(&order, N);
    bridge.wait_metric("spool_messages", 30, |v| v == 0.0).await;
    assert!(bridge.metric("forwarded_total").await.unwrap() >= total);
}

/// A cloud announcing a Maximum Packet Size in its CONNACK: a larger message (counting the bridge's user
/// properties) is refused before it is spooled — counted in `refused_total`, the edge acknowledged — and
/// the messages after it on the same rule arrive, in order, without the connection being dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt5_cloud_maximum_packet_size_refuses_a_larger_message_and_the_rule_goes_on() {
    let edge = edge_mosquitto();
    let conf = format!(
        "{}max_inflight_messages 1000\nmax_queued_messages 0\nmax_packet_size 2048\n",
        Kind::Mosquitto.default_config()
    );
    let cloud = BrokerProcess::start(Kind::Mosquitto, &conf, &[]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let yaml = with_headers(config(
        &mqtt5_ep(edge.port()),
        &mqtt5_ep(cloud.port()),
        E2C_TELEMETRY,
        SPOOL,
    ));
    let bridge = Bridge::start(dir.path(), &yaml, &[]);
    let (_sub, mut up) = mqtt5_client(cloud.port(), "cloud-sub", Some("edge/#")).await;
    probe(edge.port(), &mut up).await;
    assert_eq!(bridge.metric("refused_total").await, Some(0.0));
    let (dev, _) = mqtt5_client(edge.port(), "device", None).await;
    // 2,000 bytes of payload: the PUBLISH without the user properties would fit in 2,048 bytes.
    let mut big = payload(1);
    big.resize(2000, b'y');
    for p in [payload(0), big, payload(2), payload(3)] {
        dev.publish(SEQ_EDGE, QoS::AtLeastOnce, false, p)
            .await
            .unwrap();
    }
    let mut got = Vec::new();
    while got.len() < 3 {
        let p = tokio::time::timeout(Duration::from_secs(30), up.recv())
            .await
            .expect("the messages after the refused one arrive")
            .unwrap();
        if topic(&p) == SEQ_CLOUD {
            got.push(seq_of(&p.payload));
        }
    }
    assert_eq!(got, vec![0, 2, 3]);
    assert_eq!(bridge.metric("refused_total").await, Some(1.0));
    bridge.wait_metric("spool_messages", 30, |v| v == 0.0).await;
    assert_eq!(bridge.metric("cloud_errors_total").await, Some(0.0));
    assert_eq!(bridge.metric("cloud_connected").await, Some(1.0));
    let log = bridge.log();
    assert!(
        log.contains("exceeds the maximum MQTT packet size of 2048 bytes"),
        "{log}"
    );
    assert!(
        !log.contains("MQTT connection error"),
        "the connection was dropped:\n{log}"
    );
}

fn password_file(user: &str, pass: &str) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("passwd");
    let ok = std::process::Command::new("mosquitto_passwd")
        .arg("-b")
        .arg("-c")
        .arg(&f)
        .arg(user)
        .arg(pass)
        .status()
        .expect("mosquitto_passwd (package mosquitto)");
    assert!(ok.success());
    std::fs::read(f).unwrap()
}

/// Writes the cloud's token and CA into `<dir>/secrets` and returns the cloud endpoint (TLS, token).
fn tls_token_cloud(dir: &std::path::Path, port: u16, ca: &std::path::Path, token: &str) -> String {
    let s = dir.join("secrets");
    std::fs::create_dir_all(s.join("cloud-token")).unwrap();
    std::fs::create_dir_all(s.join("cloud-ca")).unwrap();
    std::fs::write(s.join("cloud-token/token"), format!("{token}\n")).unwrap();
    std::fs::copy(ca, s.join("cloud-ca/ca.crt")).unwrap();
    format!(
        "{{protocol: mqtt, mqttVersion: \"5\", url: \"localhost:{port}\", \
         auth: {{token: {{name: cloud-token, key: token}}}}, \
         tls: {{enabled: true, caSecretRef: {{name: cloud-ca, key: ca.crt}}}}}}"
    )
}

/// TLS and a token on an MQTT 5 cloud: the token is the password, the site id the user name; a wrong
/// token is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt5_cloud_over_tls_with_the_token_as_password_for_the_site_id() {
    let pki = edgewire_e2e::pki::TestPki::new("bridge").unwrap();
    let passwd = password_file("site-a", "tok-right");
    let mut files: Vec<(&str, &[u8])> = pki.server_files().to_vec();
    files.push(("passwd", &passwd));
    let mut cloud = BrokerProcess::start(
        Kind::Mosquitto,
        "per_listener_settings true\n\
         listener {port} 127.0.0.1\ncafile {dir}/ca.pem\ncertfile {dir}/server.pem\nkeyfile {dir}/server-key.pem\n\
         allow_anonymous false\npassword_file {dir}/passwd\n\
         listener {port2} 127.0.0.1\nallow_anonymous true\n",
        &files,
    )
    .expect("mosquitto with TLS");
    let edge = edge_mosquitto();
    let dir = tempfile::tempdir().unwrap();
    let yaml = config(
        &mqtt5_ep(edge.port()),
        &tls_token_cloud(dir.path(), cloud.port(), &pki.ca_path(), "tok-right"),
        E2C_TELEMETRY,
        SPOOL,
    );
    let _bridge = Bridge::start(dir.path(), &yaml, &[]);
    let (_sub, mut up) = mqtt5_client(cloud.port2(), "cloud-sub", Some("edge/#")).await;
    let p = probe(edge.port(), &mut up).await;
    assert_eq!(topic(&p), "edge/site-a/telemetry/probe");
    assert_eq!(user_property(&p, "edge-site-id"), Some("site-a"));

    let dir2 = tempfile::tempdir().unwrap();
    let yaml = config(
        &mqtt5_ep(edge.port()),
        &tls_token_cloud(dir2.path(), cloud.port(), &pki.ca_path(), "tok-wrong"),
        E2C_TELEMETRY,
        SPOOL,
    )
    .replace("name: site-a,", "name: site-b,");
    let bad = Bridge::start(dir2.path(), &yaml, &[]);
    bad.wait_metric("edge_connected", 30, |v| v == 1.0).await;
    let log = bad.wait_log("refused the connection", 30).await;
    assert!(connack_refusal(&log), "{log}");
    assert_eq!(bad.metric("cloud_connected").await, Some(0.0));

    // The same check against the same cloud stopped: a failed connection, no CONNACK refusal.
    drop(bad);
    cloud.stop();
    let dir3 = tempfile::tempdir().unwrap();
    let yaml = config(
        &mqtt5_ep(edge.port()),
        &tls_token_cloud(dir3.path(), cloud.port(), &pki.ca_path(), "tok-wrong"),
        E2C_TELEMETRY,
        SPOOL,
    )
    .replace("name: site-a,", "name: site-c,");
    let facing_nothing = Bridge::start(dir3.path(), &yaml, &[]);
    let log = facing_nothing.wait_log("MQTT connection error", 30).await;
    assert!(
        !connack_refusal(&log),
        "the refusal check passes against a stopped broker:\n{log}"
    );
}

/// Mosquitto's CONNACK refusing the token (MQTT 5 reason 0x86 or 0x87), as the bridge logs it.
fn connack_refusal(log: &str) -> bool {
    log.contains("refused the connection: BadUserNamePassword")
        || log.contains("refused the connection: NotAuthorized")
}
