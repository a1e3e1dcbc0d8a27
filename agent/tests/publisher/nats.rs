use edgewire_e2e::brokers::{BrokerProcess, Kind, unread_by_server};
use edgewire_e2e::pki::TestPki;
use futures::StreamExt;
use serde_json::Value;

use crate::common::*;

fn nats_env<'a>(url: &'a str, extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut v = vec![
        ("EVENT_BROKER_ENABLED", "true"),
        ("EVENT_BROKER_ADAPTER", "nats"),
        ("EVENT_BROKER_NATS_URLS", url),
        ("CORE_NAME", CORE),
    ];
    v.extend_from_slice(extra);
    v
}

fn header(m: &async_nats::Message, name: &str) -> Option<String> {
    m.headers
        .as_ref()
        .and_then(|h| h.get(name))
        .map(|v| v.to_string())
}

/// Checks every expected event arrived on subject = type, with ce-type/ce-corename headers, data intact.
async fn expect_arrivals(sub: &mut async_nats::Subscriber) {
    for (mode, ty, id, data) in three_modes() {
        let m = within(10, sub.next()).await.expect("subscription open");
        assert_eq!(m.subject.as_str(), ty, "{mode}: subject = type");
        assert_eq!(header(&m, "ce-type").as_deref(), Some(ty), "{mode}");
        assert_eq!(header(&m, "ce-corename").as_deref(), Some(CORE), "{mode}");
        assert_eq!(header(&m, "ce-id").as_deref(), Some(id), "{mode}");
        assert_eq!(
            header(&m, "ce-specversion").as_deref(),
            Some("1.0"),
            "{mode}"
        );
        assert_eq!(
            header(&m, "content-type").as_deref(),
            Some("application/json"),
            "{mode}"
        );
        let body: Value = serde_json::from_slice(&m.payload).expect("data is JSON");
        assert_eq!(body, data, "{mode}: body intact");
    }
}

#[tokio::test]
async fn core_nats_every_mode_arrives_on_subject_type_with_ce_headers() {
    let nats = BrokerProcess::start_default(Kind::Nats).expect("nats-server");
    let url = nats.url();
    let sub_client = async_nats::connect(&url).await.unwrap();
    let mut sub = edgewire_e2e::brokers::nats::subscribed(&sub_client, "edge.>")
        .await
        .unwrap();

    let ingress = serve(env_config(&nats_env(&url, &[]))).await;
    ingress.wait_ready().await;
    // Binary mode keeps the exact body bytes.
    let raw = r#"{"z": 1,   "a": [1,2]}"#;
    let r = ingress.post_binary("edge.node.raw", "raw-1", raw).await;
    assert_eq!(r.status().as_u16(), 202);
    let m = within(10, sub.next()).await.unwrap();
    assert_eq!(
        m.payload.as_ref(),
        raw.as_bytes(),
        "binary mode body must be byte-identical"
    );

    send_three_modes(&ingress).await;
    expect_arrivals(&mut sub).await;

    let metrics = ingress
        .http
        .get(format!("{}/metrics", ingress.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("edgewire_publisher_events_published_total{adapter=\"nats\"} 5"),
        "{metrics}"
    );
    assert!(
        metrics.contains("edgewire_publisher_broker_connected{adapter=\"nats\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("edgewire_publisher_publish_duration_seconds_count{adapter=\"nats\"} 5"),
        "{metrics}"
    );
}

#[tokio::test]
async fn jetstream_publish_is_in_the_stream_and_survives_a_broker_restart() {
    let mut nats = BrokerProcess::start_default(Kind::Nats).expect("nats-server");
    let url = nats.url();
    let ingress = serve(env_config(&nats_env(
        &url,
        &[("EVENT_BROKER_NATS_JETSTREAM", "true")],
    )))
    .await;
    ingress.wait_ready().await;

    let r = ingress
        .post_binary("edge.node.registered", "js-1", r#"{"seq":1}"#)
        .await;
    assert_eq!(r.status().as_u16(), 202);
    // Read it back by sequence with a plain client: the 202 came after the stream stored it.
    let client = async_nats::connect(&url).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let stream = js
        .get_stream("EDGE_EVENTS")
        .await
        .expect("stream created by the publisher");
    assert_eq!(
        stream.cached_info().config.subjects,
        vec!["edge.>".to_string()]
    );
    let m = stream.get_raw_message(1).await.expect("message 1");
    assert_eq!(m.subject.as_str(), "edge.node.registered");
    assert_eq!(
        m.headers
            .get("ce-corename")
            .map(|v| v.to_string())
            .as_deref(),
        Some(CORE)
    );
    assert_eq!(
        m.headers.get("ce-id").map(|v| v.to_string()).as_deref(),
        Some("js-1")
    );
    assert_eq!(m.payload.as_ref(), br#"{"seq":1}"#);

    // A type outside edge.> can never be stored: 400, not a silent loss.
    let r = ingress.post_binary("other.thing", "x", "{}").await;
    assert_eq!(r.status().as_u16(), 400);

    nats.stop();
    ingress.wait_ready_status(503, 15).await;
    let r = ingress
        .post_binary("edge.node.registered", "js-down", "{}")
        .await;
    assert_eq!(
        r.status().as_u16(),
        503,
        "never 202 while the broker is down"
    );
    assert!(r.headers().get("retry-after").is_some());
    assert_eq!(
        r.headers().get("content-type").unwrap(),
        "application/problem+json"
    );

    nats.restart().expect("restart");
    ingress.wait_ready_status(200, 30).await;
    let r = ingress
        .post_binary("edge.node.registered", "js-2", r#"{"seq":2}"#)
        .await;
    assert_eq!(
        r.status().as_u16(),
        202,
        "{}",
        r.text().await.unwrap_or_default()
    );
    let client = async_nats::connect(&url).await.unwrap();
    let stream = async_nats::jetstream::new(client)
        .get_stream("EDGE_EVENTS")
        .await
        .unwrap();
    let m = stream
        .get_raw_message(2)
        .await
        .expect("message 2 after the restart");
    assert_eq!(
        m.headers.get("ce-id").map(|v| v.to_string()).as_deref(),
        Some("js-2")
    );
}

#[tokio::test]
async fn jetstream_stream_not_covering_edge_is_a_readiness_error() {
    let nats = BrokerProcess::start_default(Kind::Nats).expect("nats-server");
    let url = nats.url();
    let client = async_nats::connect(&url).await.unwrap();
    async_nats::jetstream::new(client)
        .create_stream(async_nats::jetstream::stream::Config {
            name: "EDGE_EVENTS".into(),
            subjects: vec!["other.>".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    let ingress = serve(env_config(&nats_env(
        &url,
        &[("EVENT_BROKER_NATS_JETSTREAM", "true")],
    )))
    .await;
    // The stream's own subjects, read from the server, are the answer; then every POST is 503.
    ingress.expect_refused("do not cover edge.>").await;
}

/// Starts nats-server with `auth` as its authorization block.
fn nats_with(auth: &str) -> BrokerProcess {
    BrokerProcess::start(
        Kind::Nats,
        &format!("listen: 127.0.0.1:{{port}}\n{auth}\n"),
        &[],
    )
    .expect("nats-server")
}

async fn accepted(vars: Vec<(&str, &str)>) {
    let ingress = serve(env_config(&vars)).await;
    ingress.wait_ready().await;
    let r = ingress
        .post_binary("edge.node.registered", "auth-ok", "{}")
        .await;
    assert_eq!(r.status().as_u16(), 202);
}

/// What nats-server answers a CONNECT with wrong credentials (`-ERR 'Authorization Violation'`).
const AUTH_VIOLATION: &str = "authorization violation";
/// rustls's verdict on a server certificate from a CA the publisher does not trust.
const UNTRUSTED_SERVER: &str = "UnknownIssuer";
/// The TLS handshake ended by nats-server (Go, `verify: true`) for a client certificate from another CA. The
/// alert depends on the Go release it was built with: `BadCertificate` from Debian's 2.9, `UnknownCA` from
/// 2.15, so the check takes either (nothing else differs from the accepted connection before it).
const BAD_CLIENT_CERT: &str = "received fatal alert";

/// The broker's refusal shows in `/readyz` (see [`Ingress::expect_refused`]).
async fn refused(vars: Vec<(&str, &str)>, answer: &str) {
    serve(env_config(&vars)).await.expect_refused(answer).await;
}

#[tokio::test]
async fn nats_token_auth() {
    let nats = nats_with("authorization { token: \"t0ken-right\" }");
    let url = nats.url();
    accepted(nats_env(
        &url,
        &[("EVENT_BROKER_NATS_TOKEN", "t0ken-right")],
    ))
    .await;
    // Token takes precedence: wrong user/password next to the right token do not matter.
    accepted(nats_env(
        &url,
        &[
            ("EVENT_BROKER_NATS_TOKEN", "t0ken-right"),
            ("EVENT_BROKER_NATS_USERNAME", "x"),
            ("EVENT_BROKER_NATS_PASSWORD", "y"),
        ],
    ))
    .await;
    refused(
        nats_env(&url, &[("EVENT_BROKER_NATS_TOKEN", "t0ken-wrong")]),
        AUTH_VIOLATION,
    )
    .await;
}

#[tokio::test]
async fn nats_user_password_auth() {
    let nats = nats_with("authorization { user: alice, password: \"pw-right\" }");
    let url = nats.url();
    accepted(nats_env(
        &url,
        &[
            ("EVENT_BROKER_NATS_USERNAME", "alice"),
            ("EVENT_BROKER_NATS_PASSWORD", "pw-right"),
        ],
    ))
    .await;
    refused(
        nats_env(
            &url,
            &[
                ("EVENT_BROKER_NATS_USERNAME", "alice"),
                ("EVENT_BROKER_NATS_PASSWORD", "pw-wrong"),
            ],
        ),
        AUTH_VIOLATION,
    )
    .await;
}

#[tokio::test]
async fn nats_nkey_auth() {
    let user = nkeys::KeyPair::new_user();
    let other = nkeys::KeyPair::new_user();
    let nats = nats_with(&format!(
        "authorization {{ users: [ {{ nkey: {} }} ] }}",
        user.public_key()
    ));
    let url = nats.url();
    let seed = user.seed().unwrap();
    let wrong = other.seed().unwrap();
    accepted(nats_env(&url, &[("EVENT_BROKER_NATS_NKEY_SEED", &seed)])).await;
    refused(
        nats_env(&url, &[("EVENT_BROKER_NATS_NKEY_SEED", &wrong)]),
        AUTH_VIOLATION,
    )
    .await;
}

#[tokio::test]
async fn nats_tls_with_the_test_ca() {
    let pki = TestPki::new("publisher").unwrap();
    let nats = BrokerProcess::start(
        Kind::Nats,
        "listen: 127.0.0.1:{port}\ntls {\n  cert_file: \"{dir}/server.pem\"\n  key_file: \"{dir}/server-key.pem\"\n  ca_file: \"{dir}/ca.pem\"\n  verify: true\n}\n",
        &pki.server_files(),
    )
    .expect("nats-server with TLS");
    let url = format!("tls://127.0.0.1:{}", nats.port());
    let ca = pki.ca_path().display().to_string();
    let cert = pki.client_cert_path().display().to_string();
    let key = pki.client_key_path().display().to_string();
    accepted(nats_env(
        &url,
        &[
            ("EVENT_BROKER_NATS_SSL", "true"),
            ("EVENT_BROKER_NATS_CACERT_FILE", &ca),
            ("EVENT_BROKER_NATS_CLIENT_CERT_FILE", &cert),
            ("EVENT_BROKER_NATS_CLIENT_KEY_FILE", &key),
        ],
    ))
    .await;
    // Without the test CA the server certificate is not trusted.
    refused(
        nats_env(
            &url,
            &[
                ("EVENT_BROKER_NATS_CLIENT_CERT_FILE", &cert),
                ("EVENT_BROKER_NATS_CLIENT_KEY_FILE", &key),
                ("EVENT_BROKER_NATS_SSL", "true"),
            ],
        ),
        UNTRUSTED_SERVER,
    )
    .await;
    // A client certificate from another CA is refused by the server (verify: true).
    let other = TestPki::other_ca().unwrap();
    let ocert = other.client_cert_path().display().to_string();
    let okey = other.client_key_path().display().to_string();
    refused(
        nats_env(
            &url,
            &[
                ("EVENT_BROKER_NATS_SSL", "true"),
                ("EVENT_BROKER_NATS_CACERT_FILE", &ca),
                ("EVENT_BROKER_NATS_CLIENT_CERT_FILE", &ocert),
                ("EVENT_BROKER_NATS_CLIENT_KEY_FILE", &okey),
            ],
        ),
        BAD_CLIENT_CERT,
    )
    .await;
}

/// Each refusal check above, run against its broker stopped instead: none passes, so each one needs the
/// server's answer and not just a publisher that is not connected.
#[tokio::test]
async fn the_refusal_checks_fail_against_a_stopped_broker() {
    let pki = TestPki::new("publisher").unwrap();
    let other = TestPki::other_ca().unwrap();
    let mut nats = nats_with("authorization { token: \"t0ken-right\" }");
    let (url, tls_url) = (nats.url(), format!("tls://127.0.0.1:{}", nats.port()));
    nats.stop();
    let wrong_seed = nkeys::KeyPair::new_user().seed().unwrap();
    let ca = pki.ca_path().display().to_string();
    let cert = pki.client_cert_path().display().to_string();
    let key = pki.client_key_path().display().to_string();
    let ocert = other.client_cert_path().display().to_string();
    let okey = other.client_key_path().display().to_string();
    let cases: Vec<(Vec<(&str, &str)>, &str)> = vec![
        (
            nats_env(&url, &[("EVENT_BROKER_NATS_TOKEN", "t0ken-wrong")]),
            AUTH_VIOLATION,
        ),
        (
            nats_env(
                &url,
                &[
                    ("EVENT_BROKER_NATS_USERNAME", "alice"),
                    ("EVENT_BROKER_NATS_PASSWORD", "pw-wrong"),
                ],
            ),
            AUTH_VIOLATION,
        ),
        (
            nats_env(&url, &[("EVENT_BROKER_NATS_NKEY_SEED", &wrong_seed)]),
            AUTH_VIOLATION,
        ),
        (
            nats_env(
                &tls_url,
                &[
                    ("EVENT_BROKER_NATS_CLIENT_CERT_FILE", &cert),
                    ("EVENT_BROKER_NATS_CLIENT_KEY_FILE", &key),
                    ("EVENT_BROKER_NATS_SSL", "true"),
                ],
            ),
            UNTRUSTED_SERVER,
        ),
        (
            nats_env(
                &tls_url,
                &[
                    ("EVENT_BROKER_NATS_SSL", "true"),
                    ("EVENT_BROKER_NATS_CACERT_FILE", &ca),
                    ("EVENT_BROKER_NATS_CLIENT_CERT_FILE", &ocert),
                    ("EVENT_BROKER_NATS_CLIENT_KEY_FILE", &okey),
                ],
            ),
            BAD_CLIENT_CERT,
        ),
    ];
    for (vars, answer) in cases {
        refusal_not_shown(env_config(&vars), answer).await;
    }
}

/// Issue 17 (the publisher's single-event path): concurrent core NATS publishes share one round trip.
/// Three publishes made together are acknowledged by one echo through the acknowledgement inbox, not
/// one each (or one, then another for the two that waited behind it, as the locked group flush did).
/// The runtime is single-threaded, so the three are written before the echo task runs.
#[tokio::test]
async fn core_nats_concurrent_publishes_share_one_echo() {
    use edgewire_agent::connect::Health;
    use edgewire_agent::connect::nats::SharedAcks;
    use futures::FutureExt;

    let nats = BrokerProcess::start_default(Kind::Nats).expect("nats-server");
    let tap = async_nats::connect(nats.url()).await.unwrap();
    let mut inboxes = tap.subscribe("_INBOX.>").await.unwrap();
    let mut events = tap.subscribe("edge.>").await.unwrap();
    let round_trip = edgewire_e2e::brokers::nats::round_trip(&tap).await.unwrap();
    // `_INBOX.>` saw the round trip's message, before any echo.
    let m = within(10, inboxes.next()).await.expect("subscription");
    assert_eq!(m.subject.as_str(), round_trip);
    let client = async_nats::connect(nats.url()).await.unwrap();
    let health = Health::default();
    health.set_connected();
    let acks = SharedAcks::new(client.clone(), &health).await.unwrap();
    client.flush().await.unwrap();

    let publish = |i: usize| {
        let (acks, client) = (&acks, &client);
        async move {
            let sent_on = acks.generation();
            client
                .publish(format!("edge.node.n{i}"), "{}".into())
                .await
                .unwrap();
            acks.acknowledged(sent_on).await
        }
    };
    let results = within(10, futures::future::join_all((0..3).map(publish))).await;
    assert_eq!(results, vec![Ok(()), Ok(()), Ok(())]);

    // Everything the client sent before the sentinel has reached the tap when the sentinel does.
    client.publish("edge.sentinel", "{}".into()).await.unwrap();
    let mut published = Vec::new();
    loop {
        let m = within(10, events.next()).await.expect("subscription");
        if m.subject.as_str() == "edge.sentinel" {
            break;
        }
        published.push(m.subject.to_string());
    }
    assert_eq!(published, ["edge.node.n0", "edge.node.n1", "edge.node.n2"]);
    let mut echoes = Vec::new();
    while let Some(Some(m)) = inboxes.next().now_or_never() {
        echoes.push(m.subject.to_string());
    }
    assert_eq!(echoes.len(), 1, "one echo for three publishes: {echoes:?}");
}

/// Issue 17: sharing round trips must not let an echo on a new connection acknowledge a publish the old
/// connection may have lost. A request whose publish sat unread in a frozen server when the server died
/// answers 503, while a request made after the reconnect is acknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn core_nats_publish_lost_with_its_connection_is_503_not_acknowledged_by_the_next() {
    let mut nats = BrokerProcess::start_default(Kind::Nats).expect("nats-server");
    let ingress = serve(env_config(&nats_env(&nats.url(), &[]))).await;
    ingress.wait_ready().await;
    let r = ingress
        .post_binary("edge.node.registered", "before", "{}")
        .await;
    assert_eq!(r.status().as_u16(), 202);

    let pid = nats.pid().expect("running");
    signal(pid, "STOP");
    let (http, base) = (ingress.http.clone(), ingress.base.clone());
    let lost = tokio::spawn(async move {
        http.post(&base)
            .header("ce-specversion", "1.0")
            .header("ce-id", "lost")
            .header("ce-source", "/tests")
            .header("ce-type", "edge.node.registered")
            .header("content-type", "application/json")
            .body(r#"{"seq":1}"#)
            .send()
            .await
            .expect("an answer")
    });
    // The publish (and the echo after it) wait unread in the frozen server's socket.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while unread_by_server(nats.port()) < 64 {
        assert!(
            std::time::Instant::now() < deadline,
            "the publish never reached the frozen server's socket"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    nats.kill9();
    nats.restart().expect("restart");
    ingress.wait_ready().await;
    let r = ingress
        .post_binary("edge.node.registered", "after", "{}")
        .await;
    assert_eq!(r.status().as_u16(), 202, "the new connection acknowledges");
    let r = within(15, lost).await.unwrap();
    assert_eq!(
        r.status().as_u16(),
        503,
        "the publish the dead server never read is not acknowledged: {}",
        r.text().await.unwrap_or_default()
    );
}
