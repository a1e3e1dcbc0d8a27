//! Issue 14 on the bridge: headers no protocol can carry stop the start with exit 2 (item 9), messages
//! over the cloud's or the edge client's size limit are refused into `refused_total` while the small ones
//! behind them arrive (item 4), and no credential of a URL or Secret appears in what a failing bridge
//! prints (item 13).

use std::time::Duration;

use edgewire_e2e::brokers::{BrokerProcess, Kind};
use futures::StreamExt;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

use crate::common::*;
use crate::{mqtt_ep, nats_ep};

const E2C: &str = "    - {direction: EdgeToCloud, from: \"local.telemetry.#\", to: \"edge.site-a.telemetry.#\"}\n";
const SPOOL: &str = "{maxBytes: 1Gi}";

/// Runs `edgewire-agent bridge` on `yaml` until it exits, or for 10 s (then it is killed: a bridge that
/// keeps running with a bad endpoint retries and logs, and that output is what is checked); (exit code,
/// `None` when killed, and stdout + stderr).
fn run_to_exit(yaml: &str, secrets: &[(&str, &str, &str)]) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("b.yaml"), yaml).unwrap();
    for (secret, key, value) in secrets {
        let d = dir.path().join("secrets").join(secret);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join(key), value).unwrap();
    }
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_edgewire-agent"))
        .args(["bridge", "--config"])
        .arg(dir.path().join("b.yaml"))
        .arg("--spool-dir")
        .arg(dir.path().join("spool"))
        .arg("--secrets-dir")
        .arg(dir.path().join("secrets"))
        .arg("--http-addr")
        .arg("127.0.0.1:0")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while child.try_wait().unwrap().is_none() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), text)
}

/// Item 9: a `spec.headers` entry NATS cannot carry panicked async-nats at start (exit 101, a backtrace
/// hint); an AMQP key over 255 bytes panicked lapin at the first message.
#[test]
fn headers_no_protocol_can_carry_exit_2_naming_the_field_without_a_panic() {
    let base = config(&mqtt_ep(1), &nats_ep(2, false), E2C, SPOOL);
    let long = "k".repeat(256);
    let cases = [
        ("  headers: {\"plant name\": berlin}\n", "spec.headers"),
        ("  headers: {\"plant:name\": berlin}\n", "spec.headers"),
        ("  headers: {plant: \"ber\\nlin\"}\n", "spec.headers.plant"),
        (&*format!("  headers: {{{long}: x}}\n"), "spec.headers"),
    ];
    for (headers, field) in cases {
        let yaml = base.replace("  spool:", &format!("{headers}  spool:"));
        let (code, out) = run_to_exit(&yaml, &[]);
        eprintln!("{}: {code:?} {}", headers.trim(), out.trim());
        assert_eq!(code, Some(2), "{headers}: {out}");
        assert!(out.contains(field), "{headers}: {out}");
        assert!(!out.contains("panicked"), "{headers}: {out}");
    }
}

/// Item 13: a password planted in an endpoint URL and in a Secret file appears nowhere in what a
/// bridge that fails to start prints.
#[test]
fn a_failing_start_never_prints_a_credential() {
    const PLANTED: &str = "PlantedS3cret";
    let cases = [
        // Credentials in an MQTT URL: refused, the URL quoted without them.
        config(
            &format!("{{protocol: mqtt, url: \"mqtt://bridge:{PLANTED}@127.0.0.1:1883\"}}"),
            &nats_ep(2, false),
            E2C,
            SPOOL,
        ),
        // A bad port in a URL with credentials.
        config(
            &format!("{{protocol: mqtt, url: \"bridge:{PLANTED}@127.0.0.1:x\"}}"),
            &nats_ep(2, false),
            E2C,
            SPOOL,
        ),
        // A NATS URL async-nats cannot parse.
        config(
            &mqtt_ep(1),
            &format!("{{protocol: nats, url: \"nats://bridge:{PLANTED}@127.0.0.1:notaport\"}}"),
            E2C,
            SPOOL,
        ),
        // An AMQP URL lapin cannot parse.
        config(
            &mqtt_ep(1),
            &format!(
                "{{protocol: amqp091, url: \"amqp://bridge:{PLANTED}@127.0.0.1:notaport/%2f\"}}"
            ),
            E2C,
            SPOOL,
        ),
        // A Secret with the password and a configuration error after it was read.
        config(
            &mqtt_ep(1),
            "{protocol: kafka, url: \"127.0.0.1:9092\", auth: {token: {name: creds, key: token}}}",
            E2C,
            SPOOL,
        ),
    ];
    for yaml in cases {
        let (code, out) = run_to_exit(&yaml, &[("creds", "token", PLANTED)]);
        eprintln!("{code:?}: {}", out.trim());
        assert_ne!(code, Some(0), "{yaml}");
        assert!(!out.contains(PLANTED), "the secret leaked: {out}");
        assert!(!out.contains("panicked"), "{out}");
    }
}

/// A NATS server with `max_payload` of `max` bytes.
fn nats_with_max_payload(max: usize) -> BrokerProcess {
    let conf = format!("{}max_payload: {max}\n", Kind::Nats.default_config());
    BrokerProcess::start(Kind::Nats, &conf, &[]).expect("nats-server")
}

/// Publishes `payload` at QoS 1 on `topic` from a client whose own packet limit allows it.
pub(crate) async fn mqtt_publish_one(port: u16, id: &str, topic: &str, payload: Vec<u8>) {
    let mut o = MqttOptions::new(format!("{id}-{port}"), "127.0.0.1", port);
    o.set_max_packet_size(64 << 20, 64 << 20);
    let (client, mut el) = AsyncClient::new(o, 10);
    client
        .publish(topic, QoS::AtLeastOnce, false, payload)
        .await
        .unwrap();
    loop {
        match el.poll().await {
            Ok(Event::Incoming(Packet::PubAck(_))) => return,
            Ok(_) => {}
            Err(e) => panic!("publisher connection: {e}"),
        }
    }
}

/// Sends one oversized message, then small ones, to the edge Mosquitto; the small ones must arrive on
/// the cloud NATS `cloud` and `refused_total` must count the large one.
async fn oversized_then_small(edge: &BrokerProcess, cloud: &BrokerProcess, big: usize) {
    let nc = async_nats::connect(cloud.url()).await.unwrap();
    let mut sub = edgewire_e2e::brokers::nats::subscribed(&nc, "edge.site-a.telemetry.>")
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let yaml = config(
        &mqtt_ep(edge.port()),
        &nats_ep(cloud.port(), false),
        E2C,
        SPOOL,
    );
    let bridge = Bridge::start(dir.path(), &yaml, &[]);
    wait_subscribed(edge, "local/telemetry/#").await;
    // The cloud's INFO is in: the bridge's cloud side is connected.
    bridge
        .wait_metric("cloud_connected", 30, |v| v == 1.0)
        .await;
    mqtt_publish_one(edge.port(), "big", "local/telemetry/big", vec![b'b'; big]).await;
    for i in 0..5u8 {
        mqtt_publish_one(edge.port(), "small", "local/telemetry/small", vec![i; 16]).await;
    }
    for i in 0..5u8 {
        let m = tokio::time::timeout(Duration::from_secs(30), sub.next())
            .await
            .unwrap_or_else(|_| panic!("small message {i} held up:\n{}", bridge.log()))
            .unwrap();
        assert_eq!(m.subject.as_str(), "edge.site-a.telemetry.small");
        assert_eq!(m.payload.as_ref(), &[i; 16]);
    }
    let refused = bridge.wait_metric("refused_total", 10, |v| v >= 1.0).await;
    assert_eq!(refused, 1.0);
    let log = bridge.log();
    eprintln!(
        "refused {refused}; reconnects logged: {}",
        log.matches("over the client's packet limit").count()
    );
}

/// Item 4, NATS cloud: a message over the server's `max_payload` (from its INFO) was spooled and resent
/// forever (async-nats refuses it at every send), holding up everything behind it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_over_the_nats_clouds_max_payload_is_refused_and_the_rest_arrives() {
    let edge = edge_mosquitto();
    let cloud = nats_with_max_payload(64 * 1024);
    oversized_then_small(&edge, &cloud, 100 * 1024).await;
}

/// Item 4, MQTT 3.1.1 edge: a message over the client's 4 MiB packet limit made rumqttc drop the
/// connection; the persistent session redelivered it first after every reconnect, forever. It is read
/// once, refused (the cloud takes 1 MiB), acknowledged, and the session moves on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_message_over_the_mqtt_client_limit_does_not_loop_the_bridge() {
    let edge = edge_mosquitto();
    let cloud = nats();
    oversized_then_small(&edge, &cloud, 5 * 1024 * 1024).await;
}
