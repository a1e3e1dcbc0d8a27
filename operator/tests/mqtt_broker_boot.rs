//! The builtin MqttBroker's rendered `mosquitto.conf`, password file and ACL file boot Debian's Mosquitto
//! and do what the spec says: each user publishes and subscribes only where its filters allow, wrong and
//! missing credentials are refused, the TLS listener works with the test CA, and the WebSockets listener
//! speaks MQTT.
//!
//! The files are taken from the config Secret exactly as the operator renders them. Only what ties them to
//! the pod is rewritten, with the substitutions listed in [`localize`]: mount points become the broker's
//! private temp dir `{dir}`, fixed ports become free loopback ones (`{port}`, `{port2}`, `{port3}`). Every
//! substitution must match, so a change in the rendered shape fails here instead of testing something else.
//!
//! A missing `mosquitto` binary fails the test with the Debian package to install.

#[path = "fixtures/mqtt/mod.rs"]
mod fixtures;

use edgewire_e2e::brokers::{BrokerProcess, Kind, wait_for_port};
use edgewire_e2e::pki::TestPki;
use edgewire_operator::controller::mqtt_broker::SIDECAR_USER;
use edgewire_operator::controller::mqtt_broker::build::Children;
use fixtures::*;
use rumqttc::{
    AsyncClient, ConnectReturnCode, ConnectionError, Event, EventLoop, MqttOptions, Outgoing,
    Packet, QoS, SubscribeReasonCode, TlsConfiguration, Transport,
};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;
use tokio::time::timeout;

const STEP: Duration = Duration::from_secs(20);

// What Mosquitto answers, as the client reports it. A stopped broker answers none of these ("Connection
// refused"): `refusal_checks_fail_against_a_stopped_broker` shows it.
/// The CONNACK for every failed login (MQTT 3.1.1 return code 5).
const NOT_AUTHORIZED: &str = "NotAuthorized";
/// rustls's verdict on the server certificate when the client trusts another CA.
const UNTRUSTED_SERVER: &str = "UnknownIssuer";
/// The TLS 1.3 alert of `require_certificate true` when the client sends no certificate.
const NO_CLIENT_CERT: &str = "CertificateRequired";
/// The TLS alert (OpenSSL) for a client certificate from a CA the listener does not know.
const UNKNOWN_CLIENT_CA: &str = "UnknownCA";

/// Applies each substitution; each must match at least once.
fn localize(config: &str, subs: &[(&str, &str)]) -> String {
    let mut out = config.to_string();
    for (from, to) in subs {
        assert!(
            out.contains(from),
            "expected {from:?} in the rendered config:\n{out}"
        );
        out = out.replace(from, to);
    }
    out
}

/// Starts Mosquitto with the rendered files. `listeners` are the extra substitutions of listener lines.
fn start(c: &Children, listeners: &[(&str, &str)], extra: &[(&str, &[u8])]) -> BrokerProcess {
    let mut subs = vec![
        ("/mosquitto/config/", "{dir}/"),
        (
            "persistence_location /mosquitto/data/",
            "persistence_location {dir}/",
        ),
    ];
    subs.extend_from_slice(listeners);
    let conf = localize(&file(&c.config, "mosquitto.conf"), &subs);
    let passwd = file(&c.config, "passwd");
    let acl = file(&c.config, "acl");
    let mut files: Vec<(&str, &[u8])> =
        vec![("passwd", passwd.as_bytes()), ("acl", acl.as_bytes())];
    files.extend_from_slice(extra);
    BrokerProcess::start(Kind::Mosquitto, &conf, &files)
        .unwrap_or_else(|e| panic!("Mosquitto did not boot the rendered config: {e:#}\n{conf}"))
}

const PLAIN: (&str, &str) = ("listener 1883\n", "listener {port} 127.0.0.1\n");
const TLS: (&str, &str) = ("listener 8883\n", "listener {port2} 127.0.0.1\n");
// Mosquitto 2.0.11 hands a websockets listener's address to libwebsockets as an interface name, which
// `127.0.0.1` is not (the listener then refuses connections): this one binds every interface.
const WS: (&str, &str) = ("listener 8080\n", "listener {port3}\n");
const CERTS: (&str, &str) = ("/mosquitto/certs/", "{dir}/certs/");

fn tls_transport(ca: &str, client_auth: Option<(String, String)>) -> Transport {
    // kube (ring) and rumqttc (aws-lc-rs) both enable a rustls provider: pick one for the process.
    let _ = rumqttc::tokio_rustls::rustls::crypto::ring::default_provider().install_default();
    Transport::Tls(TlsConfiguration::Simple {
        ca: ca.as_bytes().to_vec(),
        alpn: None,
        client_auth: client_auth.map(|(c, k)| (c.into_bytes(), k.into_bytes())),
    })
}

/// An MQTT 3.1.1 client and its event loop, driven only while a method awaits.
struct Client {
    client: AsyncClient,
    ev: EventLoop,
}

impl Client {
    /// Connects as `login` (anonymous when `None`); the refusal when not accepted.
    async fn connect(
        id: &str,
        port: u16,
        login: Option<(&str, &str)>,
        transport: Transport,
    ) -> Result<Client, String> {
        let mut opts = MqttOptions::new(id, "127.0.0.1", port);
        if let Some((u, p)) = login {
            opts.set_credentials(u, p);
        }
        opts.set_keep_alive(Duration::from_secs(30));
        opts.set_transport(transport);
        let (client, mut ev) = AsyncClient::new(opts, 10);
        let connack = timeout(STEP, async {
            loop {
                match ev.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => return Ok(()),
                    Ok(_) => {}
                    Err(ConnectionError::ConnectionRefused(code)) => {
                        return Err(format!("refused: {code:?}"));
                    }
                    Err(e) => return Err(format!("failed: {e}")),
                }
            }
        })
        .await
        .unwrap_or_else(|_| Err("timed out".into()));
        connack.map(|()| Client { client, ev })
    }

    async fn user(id: &str, port: u16, user: &str, password: &str) -> Client {
        Client::connect(id, port, Some((user, password)), Transport::Tcp)
            .await
            .unwrap_or_else(|e| panic!("{user} could not connect: {e}"))
    }

    /// Subscribes at QoS 1; the SUBACK's return code.
    async fn subscribe(&mut self, filter: &str) -> SubscribeReasonCode {
        self.client
            .subscribe(filter, QoS::AtLeastOnce)
            .await
            .unwrap();
        timeout(STEP, async {
            loop {
                if let Event::Incoming(Packet::SubAck(ack)) = self.ev.poll().await.unwrap() {
                    return ack.return_codes[0];
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("no SUBACK for {filter}"))
    }

    /// Publishes at QoS 1 and waits for this message's PUBACK (Mosquitto acknowledges a publish the ACL
    /// denies too, so the sender learns nothing; whether it was delivered is for the subscriber to see).
    async fn publish(&mut self, topic: &str, payload: &str) {
        self.client
            .publish(topic, QoS::AtLeastOnce, false, payload.as_bytes().to_vec())
            .await
            .unwrap();
        let mut mine = None;
        timeout(STEP, async {
            loop {
                match self.ev.poll().await.unwrap() {
                    Event::Outgoing(Outgoing::Publish(pkid)) => mine = Some(pkid),
                    Event::Incoming(Packet::PubAck(ack)) if Some(ack.pkid) == mine => return,
                    _ => {}
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("no PUBACK for {topic}"))
    }

    /// The next message delivered within `wait`: `(topic, payload)`.
    async fn next_message(&mut self, wait: Duration) -> Option<(String, String)> {
        timeout(wait, async {
            loop {
                if let Event::Incoming(Packet::Publish(p)) = self.ev.poll().await.unwrap() {
                    return (p.topic, String::from_utf8_lossy(&p.payload).into_owned());
                }
            }
        })
        .await
        .ok()
    }
}

fn granted() -> SubscribeReasonCode {
    SubscribeReasonCode::Success(QoS::AtLeastOnce)
}

fn msg(topic: &str, payload: &str) -> Option<(String, String)> {
    Some((topic.to_string(), payload.to_string()))
}

#[tokio::test]
async fn each_user_publishes_and_subscribes_only_where_its_acl_allows() {
    let (_, c) = three_users().build();
    let broker = start(&c, &[PLAIN], &[]);
    let port = broker.port();

    // ops reads what every worker writes.
    let mut ops = Client::user("ops", port, "ops", OPS_PASSWORD).await;
    assert_eq!(
        ops.subscribe("edgewire/writeonly/#").await,
        granted(),
        "{}",
        broker.log()
    );

    // pool-a writes into pool-b's topic first (denied), then into its own: ops gets only the second. Mosquitto
    // handles one client's publishes in order, so had the first been allowed it would have arrived first.
    let mut a = Client::user("pool-a", port, "pool-a", POOL_A_PASSWORD).await;
    a.publish("edgewire/writeonly/pool-b/w1", "forged-by-a")
        .await;
    a.publish("edgewire/writeonly/pool-a/w1", "from-a").await;
    assert_eq!(
        ops.next_message(STEP).await,
        msg("edgewire/writeonly/pool-a/w1", "from-a"),
        "{}",
        broker.log()
    );

    // pool-b logs in with the generated password and writes its own topic.
    let mut b = Client::user("pool-b", port, "pool-b", POOL_B_PASSWORD).await;
    b.publish("edgewire/writeonly/pool-b/w7", "from-b").await;
    assert_eq!(
        ops.next_message(STEP).await,
        msg("edgewire/writeonly/pool-b/w7", "from-b")
    );
    assert_eq!(
        ops.next_message(Duration::from_millis(500)).await,
        None,
        "nothing else arrived"
    );

    // pool-a may not read pool-b's readonly topic or $SYS. Mosquitto 2.0.11 grants every SUBSCRIBE (SUBACK
    // with the requested QoS, never 0x80) and applies `topic read` when it delivers: nothing outside the
    // ACL arrives. ops writes to pool-b, then to pool-a; pool-a's first message is its own (a retained $SYS
    // message would have come at once, before either).
    assert_eq!(
        a.subscribe("edgewire/readonly/pool-b/#").await,
        granted(),
        "{}",
        broker.log()
    );
    assert_eq!(a.subscribe("$SYS/#").await, granted());
    assert_eq!(a.subscribe("edgewire/readonly/pool-a/#").await, granted());
    ops.publish("edgewire/readonly/pool-b/w1", "for-b").await;
    ops.publish("edgewire/readonly/pool-a/w1", "for-a").await;
    assert_eq!(
        a.next_message(STEP).await,
        msg("edgewire/readonly/pool-a/w1", "for-a")
    );
    // A worker cannot write where workers read (its own readonly topic is the server's to write).
    a.publish("edgewire/readonly/pool-a/w1", "self-sent").await;
    a.publish("edgewire/writeonly/pool-a/w2", "marker").await;
    assert_eq!(
        ops.next_message(STEP).await,
        msg("edgewire/writeonly/pool-a/w2", "marker")
    );
    assert_eq!(a.next_message(Duration::from_millis(500)).await, None);

    // The sidecar reads $SYS (retained broker facts arrive at once) and nothing else.
    let mut sidecar = Client::user("sidecar", port, SIDECAR_USER, SIDECAR_PASSWORD).await;
    assert_eq!(sidecar.subscribe("edgewire/#").await, granted());
    assert_eq!(sidecar.subscribe("$SYS/broker/version").await, granted());
    let (topic, version) = sidecar
        .next_message(STEP)
        .await
        .expect("$SYS/broker/version");
    assert_eq!(topic, "$SYS/broker/version");
    assert!(version.starts_with("mosquitto version"), "{version}");
    ops.publish("edgewire/readonly/pool-a/w3", "not-for-the-sidecar")
        .await;
    assert_eq!(
        a.next_message(STEP).await,
        msg("edgewire/readonly/pool-a/w3", "not-for-the-sidecar"),
        "the message was routed"
    );
    assert_eq!(
        sidecar.next_message(Duration::from_secs(1)).await,
        None,
        "but not to the sidecar"
    );
}

#[tokio::test]
async fn wrong_and_missing_credentials_are_refused() {
    let (_, c) = three_users().build();
    let broker = start(&c, &[PLAIN], &[]);
    let port = broker.port();
    for (what, login) in [
        ("a wrong password", Some(("pool-a", "not-the-password"))),
        ("another user's password", Some(("pool-a", OPS_PASSWORD))),
        ("an unknown user", Some(("nobody", POOL_A_PASSWORD))),
        ("anonymous", None),
    ] {
        let refused = Client::connect("x", port, login, Transport::Tcp)
            .await
            .err()
            .unwrap_or_else(|| panic!("{what} was accepted"));
        // Mosquitto 2.0 answers MQTT 3.1.1 CONNECT with code 5 for every authentication failure.
        assert_eq!(
            refused,
            format!("refused: {:?}", ConnectReturnCode::NotAuthorized),
            "{what}"
        );
    }
    Client::user("ok", port, "pool-a", POOL_A_PASSWORD).await;
}

#[tokio::test]
async fn the_tls_listener_works_with_the_test_ca() {
    let pki = TestPki::new("worker-1").unwrap();
    let (_, c) = three_users()
        .tls(
            "workers-tls",
            &pki.server_cert_pem,
            &pki.server_key_pem,
            Some(&pki.ca_pem),
        )
        .build();
    let broker = start(
        &c,
        &[PLAIN, TLS, CERTS],
        &[
            ("certs/tls.crt", pki.server_cert_pem.as_bytes()),
            ("certs/tls.key", pki.server_key_pem.as_bytes()),
            ("certs/ca.crt", pki.ca_pem.as_bytes()),
        ],
    );
    let tls_port = broker.port2();
    let login = Some(("pool-a", POOL_A_PASSWORD));

    let mut ops = Client::user("ops", broker.port(), "ops", OPS_PASSWORD).await;
    assert_eq!(ops.subscribe("edgewire/writeonly/#").await, granted());
    let mut a = Client::connect("a-tls", tls_port, login, tls_transport(&pki.ca_pem, None))
        .await
        .unwrap_or_else(|e| panic!("TLS with the test CA: {e}\n{}", broker.log()));
    a.publish("edgewire/writeonly/pool-a/tls", "over-tls").await;
    assert_eq!(
        ops.next_message(STEP).await,
        msg("edgewire/writeonly/pool-a/tls", "over-tls"),
        "TLS and plain listeners share users and ACL"
    );

    // The password is still required on TLS.
    let refused = Client::connect(
        "a-tls-wrong",
        tls_port,
        Some(("pool-a", "wrong")),
        tls_transport(&pki.ca_pem, None),
    )
    .await
    .err()
    .expect("a wrong password over TLS is refused");
    assert!(refused.contains(NOT_AUTHORIZED), "{refused}");
    // A client that trusts another CA does not accept the server.
    let other = TestPki::other_ca().unwrap();
    let err = Client::connect(
        "a-other-ca",
        tls_port,
        login,
        tls_transport(&other.ca_pem, None),
    )
    .await
    .err()
    .expect("a server certificate from an untrusted CA is rejected");
    assert!(err.contains(UNTRUSTED_SERVER), "{err}");
    // Plain MQTT to the TLS port gets no CONNACK.
    let err = Client::connect("a-plain-to-tls", tls_port, login, Transport::Tcp)
        .await
        .err()
        .expect("plain MQTT on the TLS port fails");
    assert!(!err.contains("refused"), "no MQTT answer at all, got {err}");
}

#[tokio::test]
async fn required_client_certificates_are_enforced_and_the_password_still_counts() {
    let pki = TestPki::new("worker-1").unwrap();
    let (_, c) = three_users()
        .tls(
            "workers-tls",
            &pki.server_cert_pem,
            &pki.server_key_pem,
            Some(&pki.ca_pem),
        )
        .require_client_cert()
        .build();
    let broker = start(
        &c,
        &[PLAIN, TLS, CERTS],
        &[
            ("certs/tls.crt", pki.server_cert_pem.as_bytes()),
            ("certs/tls.key", pki.server_key_pem.as_bytes()),
            ("certs/ca.crt", pki.ca_pem.as_bytes()),
        ],
    );
    let port = broker.port2();
    let cert = Some((pki.client_cert_pem.clone(), pki.client_key_pem.clone()));
    let login = Some(("pool-a", POOL_A_PASSWORD));

    Client::connect(
        "with-cert",
        port,
        login,
        tls_transport(&pki.ca_pem, cert.clone()),
    )
    .await
    .unwrap_or_else(|e| panic!("client certificate and password: {e}\n{}", broker.log()));
    let err = Client::connect("no-cert", port, login, tls_transport(&pki.ca_pem, None))
        .await
        .err()
        .expect("no client certificate is refused");
    assert!(err.contains(NO_CLIENT_CERT), "{err}");
    let other = TestPki::other_ca().unwrap();
    let intruder = Some((other.client_cert_pem.clone(), other.client_key_pem.clone()));
    let err = Client::connect(
        "intruder",
        port,
        login,
        tls_transport(&pki.ca_pem, intruder),
    )
    .await
    .err()
    .expect("a client certificate from another CA is refused");
    assert!(err.contains(UNKNOWN_CLIENT_CA), "{err}");
    // use_identity_as_username is off: the certificate alone does not log anyone in.
    let refused = Client::connect("cert-only", port, None, tls_transport(&pki.ca_pem, cert))
        .await
        .err()
        .expect("a certificate without a password is refused");
    assert!(refused.contains(NOT_AUTHORIZED), "{refused}");
}

/// The refusal checks above against the broker stopped: each one fails, so each one needs Mosquitto's
/// own answer (CONNACK, certificate, TLS alert).
#[tokio::test]
async fn refusal_checks_fail_against_a_stopped_broker() {
    let pki = TestPki::new("worker-1").unwrap();
    let other = TestPki::other_ca().unwrap();
    let (_, c) = three_users()
        .tls(
            "workers-tls",
            &pki.server_cert_pem,
            &pki.server_key_pem,
            Some(&pki.ca_pem),
        )
        .require_client_cert()
        .build();
    let mut broker = start(
        &c,
        &[PLAIN, TLS, CERTS],
        &[
            ("certs/tls.crt", pki.server_cert_pem.as_bytes()),
            ("certs/tls.key", pki.server_key_pem.as_bytes()),
            ("certs/ca.crt", pki.ca_pem.as_bytes()),
        ],
    );
    let (port, tls_port) = (broker.port(), broker.port2());
    broker.stop();
    let login = Some(("pool-a", "not-the-password"));
    let intruder = Some((other.client_cert_pem.clone(), other.client_key_pem.clone()));
    for (what, port, transport, answer) in [
        ("a wrong password", port, Transport::Tcp, NOT_AUTHORIZED),
        (
            "another CA's server",
            tls_port,
            tls_transport(&other.ca_pem, None),
            UNTRUSTED_SERVER,
        ),
        (
            "no client certificate",
            tls_port,
            tls_transport(&pki.ca_pem, None),
            NO_CLIENT_CERT,
        ),
        (
            "another CA's client certificate",
            tls_port,
            tls_transport(&pki.ca_pem, intruder),
            UNKNOWN_CLIENT_CA,
        ),
    ] {
        let err = Client::connect("stopped", port, login, transport)
            .await
            .err()
            .unwrap_or_else(|| panic!("{what}: accepted by a stopped broker"));
        assert!(
            !err.contains(answer),
            "{what}: the refusal check passes against a stopped broker: {err}"
        );
    }
}

/// One WebSocket handshake (`Sec-WebSocket-Protocol: mqtt`) and an MQTT 3.1.1 CONNECT in a masked binary
/// frame; the CONNACK return code (0 accepted, 5 not authorized).
fn websocket_connect(port: u16, user: &str, password: &str) -> u8 {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("the WebSockets port accepts");
    s.set_read_timeout(Some(STEP)).unwrap();
    s.write_all(
        b"GET /mqtt HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
          Sec-WebSocket-Protocol: mqtt\r\n\r\n",
    )
    .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut byte).expect("an HTTP answer");
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");

    let field = |v: &[u8]| {
        let mut f = (v.len() as u16).to_be_bytes().to_vec();
        f.extend_from_slice(v);
        f
    };
    let mut body = field(b"MQTT");
    body.extend_from_slice(&[4, 0xC2, 0, 30]); // 3.1.1; username, password, clean session; keep-alive 30 s
    body.extend(field(b"ws-client"));
    body.extend(field(user.as_bytes()));
    body.extend(field(password.as_bytes()));
    assert!(body.len() < 128);
    let mut packet = vec![0x10, body.len() as u8];
    packet.extend(body);
    let mask = [0x12u8, 0x34, 0x56, 0x78];
    assert!(packet.len() < 126);
    let mut frame = vec![0x82, 0x80 | packet.len() as u8];
    frame.extend_from_slice(&mask);
    frame.extend(packet.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    s.write_all(&frame).unwrap();

    let mut answer = [0u8; 6];
    s.read_exact(&mut answer).expect("a CONNACK frame");
    assert_eq!(
        &answer[..2],
        [0x82, 4],
        "an unmasked binary frame of 4 bytes"
    );
    assert_eq!(&answer[2..4], [0x20, 2], "a CONNACK");
    answer[5]
}

#[test]
fn the_websockets_listener_speaks_mqtt_with_the_same_users() {
    let (_, c) = three_users().websockets().build();
    let broker = start(&c, &[PLAIN, WS], &[]);
    // The harness waits for the main port; Mosquitto opens the WebSockets listener just after it.
    assert!(
        wait_for_port(broker.port3(), STEP),
        "the WebSockets listener did not open\n{}",
        broker.log()
    );
    assert_eq!(
        websocket_connect(broker.port3(), "pool-a", POOL_A_PASSWORD),
        0,
        "{}",
        broker.log()
    );
    assert_eq!(websocket_connect(broker.port3(), "pool-a", "wrong"), 5);
}

#[tokio::test]
async fn without_the_plain_listener_the_sidecar_still_reaches_mosquitto_on_loopback() {
    let pki = TestPki::new("worker-1").unwrap();
    let mut f = three_users().tls(
        "workers-tls",
        &pki.server_cert_pem,
        &pki.server_key_pem,
        None,
    );
    f.builtin().listeners.mqtt = None;
    let (_, c) = f.build();
    let broker = start(
        &c,
        &[
            ("listener 1883 127.0.0.1\n", "listener {port} 127.0.0.1\n"),
            TLS,
            CERTS,
        ],
        &[
            ("certs/tls.crt", pki.server_cert_pem.as_bytes()),
            ("certs/tls.key", pki.server_key_pem.as_bytes()),
        ],
    );
    // No `cafile` (the Secret has no ca.crt): server-only TLS still works.
    Client::connect(
        "a-tls",
        broker.port2(),
        Some(("pool-a", POOL_A_PASSWORD)),
        tls_transport(&pki.ca_pem, None),
    )
    .await
    .unwrap_or_else(|e| panic!("TLS without cafile: {e}\n{}", broker.log()));
    let mut sidecar = Client::user("sidecar", broker.port(), SIDECAR_USER, SIDECAR_PASSWORD).await;
    assert_eq!(sidecar.subscribe("$SYS/broker/version").await, granted());
}
