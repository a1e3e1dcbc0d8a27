use edgewire_e2e::brokers::{BrokerProcess, Kind};
use edgewire_e2e::pki::TestPki;
use futures::StreamExt;
use serde_json::Value;

use crate::common::*;

fn redis_env<'a>(url: &'a str, extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut v = vec![
        ("EVENT_BROKER_ENABLED", "true"),
        ("EVENT_BROKER_ADAPTER", "redis"),
        ("EVENT_BROKER_REDIS_URL", url),
        ("CORE_NAME", CORE),
    ];
    v.extend_from_slice(extra);
    v
}

/// An independent redis-rs subscriber on `PSUBSCRIBE edge.*`, yielding (channel, payload).
async fn subscriber(client: redis::Client) -> tokio::sync::mpsc::Receiver<(String, Vec<u8>)> {
    let mut ps = client.get_async_pubsub().await.expect("pubsub connection");
    ps.psubscribe("edge.*").await.unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel(100);
    tokio::spawn(async move {
        let mut s = ps.on_message();
        while let Some(m) = s.next().await {
            if tx
                .send((
                    m.get_channel_name().to_string(),
                    m.get_payload_bytes().to_vec(),
                ))
                .await
                .is_err()
            {
                return;
            }
        }
    });
    rx
}

async fn expect_arrivals(rx: &mut tokio::sync::mpsc::Receiver<(String, Vec<u8>)>) {
    for (mode, ty, id, data) in three_modes() {
        let (channel, payload) = within(10, rx.recv()).await.expect("message");
        assert_eq!(channel, ty, "{mode}: channel = type");
        let ev: Value = serde_json::from_slice(&payload).expect("structured JSON");
        assert_eq!(ev["type"], ty, "{mode}");
        assert_eq!(ev["corename"], CORE, "{mode}");
        assert_eq!(ev["id"], id, "{mode}");
        assert_eq!(ev["data"], data, "{mode}: body intact");
    }
}

#[tokio::test]
async fn redis_every_mode_arrives_on_channel_type() {
    let mut r = BrokerProcess::start_default(Kind::Redis).expect("redis-server");
    let url = r.url();
    let mut rx = subscriber(redis::Client::open(url.as_str()).unwrap()).await;
    let ingress = serve(env_config(&redis_env(&url, &[]))).await;
    ingress.wait_ready().await;
    send_three_modes(&ingress).await;
    expect_arrivals(&mut rx).await;

    // Reconnection: down → 503, back → 202.
    r.stop();
    ingress.wait_ready_status(503, 15).await;
    assert_eq!(
        ingress
            .post_binary("edge.node.registered", "down", "{}")
            .await
            .status()
            .as_u16(),
        503
    );
    r.restart().unwrap();
    ingress.wait_ready_status(200, 30).await;
    let mut rx = subscriber(redis::Client::open(url.as_str()).unwrap()).await;
    assert_eq!(
        ingress
            .post_binary("edge.node.registered", "back", "{}")
            .await
            .status()
            .as_u16(),
        202
    );
    let (_, payload) = within(10, rx.recv()).await.unwrap();
    assert_eq!(
        serde_json::from_slice::<Value>(&payload).unwrap()["id"],
        "back"
    );
}

#[tokio::test]
async fn redis_acl_user_accepted_and_refused() {
    let r = BrokerProcess::start(
        Kind::Redis,
        "bind 127.0.0.1\nport {port}\nsave \"\"\nappendonly no\ndir {dir}\n\
         user default off\nuser alice on >pw-right ~* &* +@all\n",
        &[],
    )
    .expect("redis-server");
    let port = r.port();
    let good = format!("redis://alice:pw-right@127.0.0.1:{port}");
    let bad = format!("redis://alice:pw-wrong@127.0.0.1:{port}");
    let mut rx = subscriber(redis::Client::open(good.as_str()).unwrap()).await;
    let ingress = serve(env_config(&redis_env(&good, &[]))).await;
    ingress.wait_ready().await;
    assert_eq!(
        ingress
            .post_binary("edge.node.registered", "acl-1", "{}")
            .await
            .status()
            .as_u16(),
        202
    );
    assert_eq!(
        within(10, rx.recv()).await.unwrap().0,
        "edge.node.registered"
    );

    let refused = serve(env_config(&redis_env(&bad, &[]))).await;
    refused.expect_refused(AUTH_FAILED).await;
    let (_, body) = refused.readyz().await;
    assert!(
        !body.contains("pw-wrong"),
        "credentials leaked into /readyz: {body}"
    );
}

#[tokio::test]
async fn redis_tls_with_the_test_ca() {
    let pki = TestPki::new("publisher").unwrap();
    let r = BrokerProcess::start(
        Kind::Redis,
        "bind 127.0.0.1\nport {port2}\ntls-port {port}\nsave \"\"\nappendonly no\ndir {dir}\n\
         tls-cert-file {dir}/server.pem\ntls-key-file {dir}/server-key.pem\ntls-ca-cert-file {dir}/ca.pem\ntls-auth-clients no\n",
        &pki.server_files(),
    )
    .expect("redis-server with TLS");
    let plain = format!("redis://127.0.0.1:{}", r.port2());
    let mut rx = subscriber(redis::Client::open(plain.as_str()).unwrap()).await;
    let tls_url = format!("rediss://127.0.0.1:{}", r.port());
    let ca = pki.ca_path().display().to_string();
    let ingress = serve(env_config(&redis_env(
        &tls_url,
        &[("EVENT_BROKER_REDIS_CACERT_FILE", &ca)],
    )))
    .await;
    ingress.wait_ready().await;
    send_three_modes(&ingress).await;
    expect_arrivals(&mut rx).await;
    // Without the test CA the server is not trusted.
    let untrusted = serve(env_config(&redis_env(&tls_url, &[]))).await;
    untrusted.expect_refused(UNTRUSTED_SERVER).await;
}

/// Redis answers AUTH with a wrong password `-WRONGPASS`; redis-rs reports that reply (and only a server's
/// error reply to AUTH) as `AuthenticationFailed`.
const AUTH_FAILED: &str = "AuthenticationFailed";
/// rustls's verdict on a server certificate from a CA the publisher does not trust.
const UNTRUSTED_SERVER: &str = "UnknownIssuer";

/// The two refusal checks above, against their brokers stopped: neither passes.
#[tokio::test]
async fn the_refusal_checks_fail_against_a_stopped_broker() {
    let mut r = BrokerProcess::start_default(Kind::Redis).expect("redis-server");
    let port = r.port();
    r.stop();
    let bad = format!("redis://alice:pw-wrong@127.0.0.1:{port}");
    refusal_not_shown(env_config(&redis_env(&bad, &[])), AUTH_FAILED).await;
    let tls_url = format!("rediss://127.0.0.1:{port}");
    refusal_not_shown(env_config(&redis_env(&tls_url, &[])), UNTRUSTED_SERVER).await;
}
