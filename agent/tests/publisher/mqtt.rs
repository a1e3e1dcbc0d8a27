use std::time::Duration;

use edgewire_e2e::brokers::{BrokerProcess, Kind};
use edgewire_e2e::pki::TestPki;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::Value;
use tokio::sync::mpsc;

use crate::common::*;

/// An independent rumqttc subscriber on `edge/#` (plain TCP), ready once SUBACK arrived.
async fn subscriber(port: u16, creds: Option<(&str, &str)>) -> mpsc::Receiver<rumqttc::Publish> {
    let mut o = MqttOptions::new(
        format!("test-sub-{port}-{}", std::process::id()),
        "127.0.0.1",
        port,
    );
    o.set_max_packet_size(1 << 20, 1 << 20);
    if let Some((u, p)) = creds {
        o.set_credentials(u, p);
    }
    let (client, mut el) = AsyncClient::new(o, 64);
    client.subscribe("edge/#", QoS::AtLeastOnce).await.unwrap();
    let (tx, rx) = mpsc::channel(100);
    let (ready_tx, mut ready_rx) = mpsc::channel(1);
    tokio::spawn(async move {
        let _client = client;
        loop {
            match el.poll().await {
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    if tx.send(p).await.is_err() {
                        return;
                    }
                }
                Ok(Event::Incoming(Packet::SubAck(_))) => {
                    let _ = ready_tx.send(()).await;
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    });
    within(10, ready_rx.recv()).await.expect("SUBACK");
    rx
}

fn mqtt_env<'a>(url: &'a str, extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut v = vec![
        ("EVENT_BROKER_ENABLED", "true"),
        ("EVENT_BROKER_ADAPTER", "mqtt"),
        ("EVENT_BROKER_MQTT_URL", url),
        ("CORE_NAME", CORE),
    ];
    v.extend_from_slice(extra);
    v
}

async fn expect_arrivals(rx: &mut mpsc::Receiver<rumqttc::Publish>) {
    for (mode, ty, id, data) in three_modes() {
        let p = within(10, rx.recv()).await.expect("publish");
        assert_eq!(
            p.topic,
            ty.replace('.', "/"),
            "{mode}: topic = type with . -> /"
        );
        let ev: Value = serde_json::from_slice(&p.payload).expect("structured JSON");
        assert_eq!(ev["type"], ty, "{mode}");
        assert_eq!(ev["corename"], CORE, "{mode}");
        assert_eq!(ev["id"], id, "{mode}");
        assert_eq!(ev["specversion"], "1.0", "{mode}");
        assert_eq!(ev["data"], data, "{mode}: body intact");
    }
}

#[tokio::test]
async fn mqtt_every_mode_and_qos_arrives_as_structured_json_on_slash_topic() {
    let mosq = BrokerProcess::start_default(Kind::Mosquitto).expect("mosquitto");
    let url = mosq.url();
    let mut rx = subscriber(mosq.port(), None).await;
    for qos in ["1", "0", "2"] {
        let ingress = serve(env_config(&mqtt_env(
            &url,
            &[("EVENT_BROKER_MQTT_QOS", qos)],
        )))
        .await;
        ingress.wait_ready().await;
        send_three_modes(&ingress).await;
        expect_arrivals(&mut rx).await;
    }
}

#[tokio::test]
async fn mqtt_reconnects_after_a_broker_restart() {
    let mut mosq = BrokerProcess::start_default(Kind::Mosquitto).expect("mosquitto");
    let url = mosq.url();
    let ingress = serve(env_config(&mqtt_env(&url, &[]))).await;
    ingress.wait_ready().await;
    mosq.stop();
    ingress.wait_ready_status(503, 15).await;
    let r = ingress
        .post_binary("edge.node.registered", "down", "{}")
        .await;
    assert_eq!(r.status().as_u16(), 503);
    assert!(r.headers().get("retry-after").is_some());
    mosq.restart().unwrap();
    ingress.wait_ready_status(200, 30).await;
    let mut rx = subscriber(mosq.port(), None).await;
    let r = ingress
        .post_binary("edge.node.registered", "back", r#"{"back":true}"#)
        .await;
    assert_eq!(r.status().as_u16(), 202);
    let p = within(10, rx.recv()).await.unwrap();
    let ev: Value = serde_json::from_slice(&p.payload).unwrap();
    assert_eq!(ev["id"], "back");
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

#[tokio::test]
async fn mqtt_user_password_accepted_and_refused() {
    let passwd = password_file("alice", "pw-right");
    let mosq = BrokerProcess::start(
        Kind::Mosquitto,
        "listener {port} 127.0.0.1\nallow_anonymous false\npassword_file {dir}/passwd\n",
        &[("passwd", &passwd)],
    )
    .expect("mosquitto");
    let url = mosq.url();
    let mut rx = subscriber(mosq.port(), Some(("alice", "pw-right"))).await;
    let ingress = serve(env_config(&mqtt_env(
        &url,
        &[
            ("EVENT_BROKER_MQTT_USERNAME", "alice"),
            ("EVENT_BROKER_MQTT_PASSWORD", "pw-right"),
        ],
    )))
    .await;
    ingress.wait_ready().await;
    assert_eq!(
        ingress
            .post_binary("edge.node.registered", "up-1", "{}")
            .await
            .status()
            .as_u16(),
        202
    );
    assert_eq!(
        within(10, rx.recv()).await.unwrap().topic,
        "edge/node/registered"
    );

    let bad = serve(env_config(&mqtt_env(
        &url,
        &[
            ("EVENT_BROKER_MQTT_USERNAME", "alice"),
            ("EVENT_BROKER_MQTT_PASSWORD", "pw-wrong"),
        ],
    )))
    .await;
    bad.expect_refused(NOT_AUTHORIZED).await;
    // JWT goes in the password slot (and wins over user/password): a "JWT" equal to the password is accepted.
    let jwt = serve(env_config(&mqtt_env(
        &url,
        &[
            ("EVENT_BROKER_MQTT_JWT", "pw-right"),
            ("EVENT_BROKER_MQTT_USERNAME", "alice"),
            ("EVENT_BROKER_MQTT_PASSWORD", "pw-wrong"),
        ],
    )))
    .await;
    jwt.wait_ready().await;
    assert_eq!(
        jwt.post_binary("edge.node.registered", "jwt-1", "{}")
            .await
            .status()
            .as_u16(),
        202
    );
}

#[tokio::test]
async fn mqtt_mtls_with_require_certificate() {
    let pki = TestPki::new("publisher").unwrap();
    let mosq = BrokerProcess::start(
        Kind::Mosquitto,
        "per_listener_settings true\n\
         listener {port} 127.0.0.1\ncafile {dir}/ca.pem\ncertfile {dir}/server.pem\nkeyfile {dir}/server-key.pem\n\
         require_certificate true\nuse_identity_as_username true\nallow_anonymous false\n\
         listener {port2} 127.0.0.1\nallow_anonymous true\n",
        &pki.server_files(),
    )
    .expect("mosquitto with TLS");
    let url = format!("localhost:{}", mosq.port());
    let mut rx = subscriber(mosq.port2(), None).await;
    let ca = pki.ca_path().display().to_string();
    let cert = pki.client_cert_path().display().to_string();
    let key = pki.client_key_path().display().to_string();
    let tls = [
        ("EVENT_BROKER_MQTT_SSL", "true"),
        ("EVENT_BROKER_MQTT_CACERT_FILE", ca.as_str()),
        ("EVENT_BROKER_MQTT_CLIENT_CERT_FILE", cert.as_str()),
        ("EVENT_BROKER_MQTT_CLIENT_KEY_FILE", key.as_str()),
    ];
    let ingress = serve(env_config(&mqtt_env(&url, &tls))).await;
    ingress.wait_ready().await;
    send_three_modes(&ingress).await;
    expect_arrivals(&mut rx).await;

    // A client certificate from another CA is refused.
    let other = TestPki::other_ca().unwrap();
    let (ocert, okey) = (
        other.client_cert_path().display().to_string(),
        other.client_key_path().display().to_string(),
    );
    let bad = serve(env_config(&mqtt_env(
        &url,
        &[
            ("EVENT_BROKER_MQTT_SSL", "true"),
            ("EVENT_BROKER_MQTT_CACERT_FILE", &ca),
            ("EVENT_BROKER_MQTT_CLIENT_CERT_FILE", &ocert),
            ("EVENT_BROKER_MQTT_CLIENT_KEY_FILE", &okey),
        ],
    )))
    .await;
    bad.expect_refused(UNKNOWN_CA).await;
    // TLS without a client certificate is refused too (require_certificate).
    let none = serve(env_config(&mqtt_env(
        &url,
        &[
            ("EVENT_BROKER_MQTT_SSL", "true"),
            ("EVENT_BROKER_MQTT_CACERT_FILE", &ca),
        ],
    )))
    .await;
    none.expect_refused(CERTIFICATE_REQUIRED).await;
}

/// Mosquitto's CONNACK for a wrong password (MQTT 3.1.1 return code 5).
const NOT_AUTHORIZED: &str = "NotAuthorized";
/// The TLS alert Mosquitto (OpenSSL) sends for a client certificate from a CA it does not know.
const UNKNOWN_CA: &str = "UnknownCA";
/// The TLS 1.3 alert Mosquitto sends when `require_certificate` finds none.
const CERTIFICATE_REQUIRED: &str = "CertificateRequired";

/// The three refusal checks above, against their brokers stopped: none passes.
#[tokio::test]
async fn the_refusal_checks_fail_against_a_stopped_broker() {
    let pki = TestPki::new("publisher").unwrap();
    let other = TestPki::other_ca().unwrap();
    let mut mosq = BrokerProcess::start_default(Kind::Mosquitto).expect("mosquitto");
    let url = mosq.url();
    let tls_url = format!("localhost:{}", mosq.port());
    mosq.stop();
    let ca = pki.ca_path().display().to_string();
    let (ocert, okey) = (
        other.client_cert_path().display().to_string(),
        other.client_key_path().display().to_string(),
    );
    refusal_not_shown(
        env_config(&mqtt_env(
            &url,
            &[
                ("EVENT_BROKER_MQTT_USERNAME", "alice"),
                ("EVENT_BROKER_MQTT_PASSWORD", "pw-wrong"),
            ],
        )),
        NOT_AUTHORIZED,
    )
    .await;
    refusal_not_shown(
        env_config(&mqtt_env(
            &tls_url,
            &[
                ("EVENT_BROKER_MQTT_SSL", "true"),
                ("EVENT_BROKER_MQTT_CACERT_FILE", &ca),
                ("EVENT_BROKER_MQTT_CLIENT_CERT_FILE", &ocert),
                ("EVENT_BROKER_MQTT_CLIENT_KEY_FILE", &okey),
            ],
        )),
        UNKNOWN_CA,
    )
    .await;
    refusal_not_shown(
        env_config(&mqtt_env(
            &tls_url,
            &[
                ("EVENT_BROKER_MQTT_SSL", "true"),
                ("EVENT_BROKER_MQTT_CACERT_FILE", &ca),
            ],
        )),
        CERTIFICATE_REQUIRED,
    )
    .await;
}
