//! Every rendered broker configuration boots the real broker (Debian's `nats-server`, `rabbitmq-server`,
//! `redis-server`, `mosquitto`), the rendered credentials work, and wrong ones are refused.
//!
//! The config is taken from the config Secret's data exactly as the operator renders it. Only what ties it to
//! the pod is rewritten, with the explicit substitutions listed in each test: container paths (`/data`,
//! mount points) become the broker's private temp dir `{dir}`, fixed ports become free ones (`{port}`,
//! `{port2}`, `{port3}`), and `$POD_NAME` (from the downward API in the pod) becomes a literal name. Every
//! substitution must match, so a change in the rendered shape fails here instead of silently testing
//! something else. Directives, authentication, ACLs and hash formats are booted as rendered.
//!
//! A missing broker binary fails the test with the Debian package to install.

#[path = "fixtures/brokers/mod.rs"]
mod fixtures;

use base64::Engine;
use edgewire_api::BrokerKind;
use edgewire_e2e::brokers::{BrokerProcess, Kind, RabbitCluster, free_port};
use edgewire_operator::controller::event_broker::BrokerAuth;
use edgewire_operator::controller::event_broker::build::broker::BrokerChildren;
use edgewire_operator::secret::SecretString;
use fixtures::{Case, USERNAME, file, user_password};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;
use tokio::time::timeout;

/// A password with every character the config formats treat specially: quotes, backslash, `$` (NATS
/// variables), `#` (comments), braces, comma, colon, space.
const BOOT_PASSWORD: &str = r#"Pw "q" \b $HOME #c {x},y:z"#;
const WRONG: &str = "not-the-password";
const STEP: Duration = Duration::from_secs(30);

// The servers' own answers to wrong credentials. A stopped server answers none of them ("Connection
// refused"), so a refusal check built on these cannot pass against a dead broker:
// `refusal_checks_fail_against_stopped_brokers` shows it.

/// nats-server: `-ERR 'Authorization Violation'`.
fn nats_refused(err: &str) -> bool {
    err.to_lowercase().contains("authorization violation")
}

/// RabbitMQ: `connection.close` 403 `ACCESS_REFUSED`.
fn amqp_refused(err: &str) -> bool {
    err.contains("ACCESS_REFUSED")
}

/// Redis: `-WRONGPASS` to AUTH, which redis-rs (and only for a server's error reply to AUTH) reports as
/// `AuthenticationFailed`.
fn redis_refused(err: &redis::RedisError) -> bool {
    err.kind() == redis::ErrorKind::AuthenticationFailed
}

/// Mosquitto: a CONNACK refusing the login.
fn mqtt_refused(err: &str) -> bool {
    err.contains("BadUserNamePassword") || err.contains("NotAuthorized")
}

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

fn start(kind: Kind, config: &str, files: &[(&str, &[u8])]) -> BrokerProcess {
    BrokerProcess::start(kind, config, files)
        .unwrap_or_else(|e| panic!("{kind} did not boot the rendered config: {e:#}"))
}

/// Percent-encodes everything but RFC 3986 unreserved characters (for userinfo in URLs).
fn pct(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `GET path` on 127.0.0.1:`port`; the status code.
fn http_status(port: u16, path: &str, basic: Option<(&str, &str)>) -> u16 {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("HTTP port accepts");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut request = format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n");
    if let Some((u, p)) = basic {
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"));
        request.push_str(&format!("Authorization: Basic {token}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not HTTP: {response}"))
}

fn readiness_http_path(c: &BrokerChildren) -> String {
    let pod = c
        .statefulset
        .spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap();
    pod.containers[0]
        .readiness_probe
        .as_ref()
        .unwrap()
        .http_get
        .as_ref()
        .unwrap()
        .path
        .clone()
        .unwrap()
}

// ---------------------------------------------------------------------------------------------- NATS

/// Substitutions for a single NATS server.
fn nats_single(conf: &str) -> String {
    localize(
        conf,
        &[
            ("server_name: $POD_NAME", "server_name: \"events-nats-0\""),
            ("port: 4222", "port: {port}"),
            ("http_port: 8222", "http_port: {port2}"),
            ("\"/var/run/nats/nats.pid\"", "\"{dir}/nats.pid\""),
            ("\"/data/jetstream\"", "\"{dir}/jetstream\""),
        ],
    )
}

async fn nats_connect(
    opts: async_nats::ConnectOptions,
    port: u16,
) -> Result<async_nats::Client, String> {
    let opts = opts.connection_timeout(Duration::from_secs(5));
    match timeout(STEP, opts.connect(format!("nats://127.0.0.1:{port}"))).await {
        Ok(r) => r.map_err(|e| e.to_string()),
        Err(_) => Err("timed out".into()),
    }
}

/// JetStream is on (the store dir is the rendered one) and a publish is acknowledged by a stream.
async fn nats_jetstream_roundtrip(client: async_nats::Client, replicas: usize) {
    let js = async_nats::jetstream::new(client);
    let config = async_nats::jetstream::stream::Config {
        name: "EDGE_EVENTS".into(),
        subjects: vec!["edge.>".into()],
        num_replicas: replicas,
        ..Default::default()
    };
    // A fresh cluster elects its JetStream meta leader first: retry until it answers.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut stream = loop {
        match js.get_or_create_stream(config.clone()).await {
            Ok(s) => break s,
            Err(e) if tokio::time::Instant::now() < deadline => {
                eprintln!("stream not created yet: {e}");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => panic!("JetStream stream creation failed: {e}"),
        }
    };
    let ack = timeout(STEP, async {
        js.publish("edge.node.registered", "hello".into())
            .await
            .unwrap()
            .await
    })
    .await
    .expect("publish ack in time")
    .expect("JetStream acknowledged the publish");
    assert_eq!(ack.stream, "EDGE_EVENTS");
    let info = stream.info().await.expect("stream info");
    assert_eq!(info.state.messages, 1);
    if replicas > 1 {
        let cluster = info
            .cluster
            .as_ref()
            .expect("a clustered stream reports its RAFT group");
        assert_eq!(cluster.replicas.len() + 1, replicas, "{cluster:?}");
    }
}

#[tokio::test]
async fn nats_user_password_config_boots_with_jetstream_and_auth() {
    let (_, c) = Case::new(BrokerKind::Nats)
        .auth(user_password(USERNAME, BOOT_PASSWORD))
        .build();
    let conf = nats_single(&file(&c.config, "nats.conf"));
    let nats = start(Kind::Nats, &conf, &[]);

    let good =
        async_nats::ConnectOptions::with_user_and_password(USERNAME.into(), BOOT_PASSWORD.into());
    let client = nats_connect(good, nats.port())
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", nats.log()));
    client
        .publish("edge.node.registered", "core".into())
        .await
        .unwrap();
    client
        .flush()
        .await
        .expect("the server accepted the publish");
    nats_jetstream_roundtrip(client, 1).await;
    assert!(
        nats.dir().join("jetstream").is_dir(),
        "JetStream stores under the rendered store_dir"
    );

    let bad = async_nats::ConnectOptions::with_user_and_password(USERNAME.into(), WRONG.into());
    let err = nats_connect(bad, nats.port())
        .await
        .expect_err("a wrong password is refused");
    assert!(nats_refused(&err), "{err}");
    let anonymous = nats_connect(async_nats::ConnectOptions::new(), nats.port())
        .await
        .expect_err("no credentials are refused");
    assert!(nats_refused(&anonymous), "{anonymous}");

    // The readiness/liveness probe path of the StatefulSet answers 200 on the monitoring port.
    assert_eq!(
        http_status(nats.port2(), &readiness_http_path(&c), None),
        200
    );
}

#[tokio::test]
async fn nats_token_config_boots_and_checks_the_token() {
    let token = r#"tok "q" \b $PATH #c"#;
    let (_, c) = Case::new(BrokerKind::Nats)
        .auth(BrokerAuth::Token(SecretString::from(token)))
        .build();
    let nats = start(Kind::Nats, &nats_single(&file(&c.config, "nats.conf")), &[]);
    let client = nats_connect(
        async_nats::ConnectOptions::with_token(token.into()),
        nats.port(),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", nats.log()));
    client
        .publish("edge.node.registered", "t".into())
        .await
        .unwrap();
    client.flush().await.unwrap();
    let err = nats_connect(
        async_nats::ConnectOptions::with_token(WRONG.into()),
        nats.port(),
    )
    .await
    .expect_err("a wrong token is refused");
    assert!(nats_refused(&err), "{err}");
}

#[tokio::test]
async fn nats_nkey_config_boots_and_checks_the_signature() {
    let user = nkeys::KeyPair::new_user();
    let (_, c) = Case::new(BrokerKind::Nats)
        .auth(BrokerAuth::Nkey {
            public_key: user.public_key(),
        })
        .build();
    let nats = start(Kind::Nats, &nats_single(&file(&c.config, "nats.conf")), &[]);
    let seed = user.seed().unwrap();
    let client = nats_connect(async_nats::ConnectOptions::with_nkey(seed), nats.port())
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", nats.log()));
    client
        .publish("edge.node.registered", "n".into())
        .await
        .unwrap();
    client.flush().await.unwrap();
    let stranger = nkeys::KeyPair::new_user().seed().unwrap();
    let err = nats_connect(async_nats::ConnectOptions::with_nkey(stranger), nats.port())
        .await
        .expect_err("an unknown NKEY is refused");
    assert!(nats_refused(&err), "{err}");
}

/// The three-replica config forms a real cluster: each server gets its own rendered file with the routes'
/// pod DNS names mapped to loopback ports, and a stream replicated three times is created and written.
#[tokio::test]
async fn nats_three_replica_config_forms_a_jetstream_cluster() {
    let (v, c) = Case::new(BrokerKind::Nats)
        .replicas(3)
        .auth(user_password(USERNAME, BOOT_PASSWORD))
        .build();
    let conf = file(&c.config, "nats.conf");
    let sts = format!("{}-nats", v.owner.name);
    let cluster_ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let servers: Vec<BrokerProcess> = (0..3)
        .map(|i| {
            let mut subs: Vec<(String, String)> = vec![
                (
                    "server_name: $POD_NAME".into(),
                    format!("server_name: \"{sts}-{i}\""),
                ),
                ("port: 4222".into(), "port: {port}".into()),
                ("http_port: 8222".into(), "http_port: {port2}".into()),
                (
                    "\"/var/run/nats/nats.pid\"".into(),
                    "\"{dir}/nats.pid\"".into(),
                ),
                ("\"/data/jetstream\"".into(), "\"{dir}/jetstream\"".into()),
                (
                    "  port: 6222".into(),
                    format!("  port: {}", cluster_ports[i]),
                ),
            ];
            for (j, port) in cluster_ports.iter().enumerate() {
                subs.push((
                    format!("nats://{sts}-{j}.{sts}-headless.factory.svc:6222"),
                    format!("nats://127.0.0.1:{port}"),
                ));
            }
            let subs: Vec<(&str, &str)> =
                subs.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
            start(Kind::Nats, &localize(&conf, &subs), &[])
        })
        .collect();
    let good =
        async_nats::ConnectOptions::with_user_and_password(USERNAME.into(), BOOT_PASSWORD.into());
    let client = nats_connect(good, servers[0].port())
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", servers[0].log()));
    nats_jetstream_roundtrip(client, 3).await;
}

// ------------------------------------------------------------------------------------------ RabbitMQ

fn rabbit_files(c: &BrokerChildren) -> (String, String, String) {
    let conf = localize(
        &file(&c.config, "rabbitmq.conf"),
        &[
            (
                "listeners.tcp.default = 5672",
                "listeners.tcp.default = {port}",
            ),
            (
                "management.tcp.port = 15672",
                "management.tcp.port = {port2}",
            ),
            (
                "prometheus.tcp.port = 15692",
                "prometheus.tcp.port = {port3}",
            ),
            (
                "load_definitions = /etc/rabbitmq/",
                "load_definitions = {dir}/",
            ),
        ],
    );
    (
        conf,
        file(&c.config, "enabled_plugins"),
        file(&c.config, "definitions.json"),
    )
}

async fn amqp_connect(port: u16, user: &str, password: &str) -> Result<lapin::Connection, String> {
    let uri = format!(
        "amqp://{}:{}@127.0.0.1:{port}/%2f",
        pct(user),
        pct(password)
    );
    match timeout(
        STEP,
        lapin::Connection::connect(&uri, lapin::ConnectionProperties::default()),
    )
    .await
    {
        Ok(r) => r.map_err(|e| e.to_string()),
        Err(_) => Err("timed out".into()),
    }
}

/// Declares the publisher's exchange and publishes with a confirm.
async fn amqp_publish(conn: &lapin::Connection) -> Result<(), String> {
    use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions};
    let e = |e: lapin::Error| e.to_string();
    let ch = conn.create_channel().await.map_err(e)?;
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .map_err(e)?;
    let durable = ExchangeDeclareOptions {
        durable: true,
        ..Default::default()
    };
    ch.exchange_declare(
        "edge.events".into(),
        lapin::ExchangeKind::Topic,
        durable,
        Default::default(),
    )
    .await
    .map_err(e)?;
    let confirm = ch
        .basic_publish(
            "edge.events".into(),
            "edge.node.registered".into(),
            BasicPublishOptions::default(),
            b"hello",
            lapin::BasicProperties::default(),
        )
        .await
        .map_err(e)?
        .await
        .map_err(e)?;
    if confirm.is_ack() {
        Ok(())
    } else {
        Err(format!("{confirm:?}"))
    }
}

#[tokio::test]
async fn rabbitmq_config_boots_with_definitions_management_and_rotation() {
    let (_, c) = Case::new(BrokerKind::Rabbitmq)
        .ui()
        .auth(user_password(USERNAME, BOOT_PASSWORD))
        .build();
    let (conf, plugins, definitions) = rabbit_files(&c);
    let mut rabbit = start(
        Kind::RabbitMq,
        &conf,
        &[
            ("enabled_plugins", plugins.as_bytes()),
            ("definitions.json", definitions.as_bytes()),
        ],
    );

    let conn = amqp_connect(rabbit.port(), USERNAME, BOOT_PASSWORD)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", rabbit.log()));
    amqp_publish(&conn)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", rabbit.log()));
    drop(conn);
    let err = amqp_connect(rabbit.port(), USERNAME, WRONG)
        .await
        .expect_err("a wrong password is refused");
    assert!(amqp_refused(&err), "{err}");
    // Definitions replace the default data: there is no guest user to fall back on.
    let err = amqp_connect(rabbit.port(), "guest", "guest")
        .await
        .expect_err("guest must not exist");
    assert!(amqp_refused(&err), "{err}");

    // The management plugin (ui) listens where configured and the user is an administrator.
    assert_eq!(
        http_status(
            rabbit.port2(),
            "/api/whoami",
            Some((USERNAME, BOOT_PASSWORD))
        ),
        200
    );
    assert_eq!(
        http_status(rabbit.port2(), "/api/whoami", Some((USERNAME, WRONG))),
        401
    );
    // Prometheus metrics where the client Service points.
    assert_eq!(http_status(rabbit.port3(), "/metrics", None), 200);

    // Rotation: definitions are imported on every boot, so a new password takes over after a restart.
    let rotated = "rotated-password";
    let (_, c2) = Case::new(BrokerKind::Rabbitmq)
        .ui()
        .auth(user_password(USERNAME, rotated))
        .build();
    std::fs::write(
        rabbit.dir().join("definitions.json"),
        file(&c2.config, "definitions.json"),
    )
    .unwrap();
    rabbit
        .restart()
        .unwrap_or_else(|e| panic!("restart: {e:#}"));
    let conn = amqp_connect(rabbit.port(), USERNAME, rotated)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", rabbit.log()));
    amqp_publish(&conn)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", rabbit.log()));
    let err = amqp_connect(rabbit.port(), USERNAME, BOOT_PASSWORD)
        .await
        .expect_err("the old password is gone");
    assert!(amqp_refused(&err), "{err}");

    // The same checks against the same broker stopped: they fail.
    rabbit.stop();
    let err = amqp_connect(rabbit.port(), USERNAME, BOOT_PASSWORD)
        .await
        .expect_err("nothing listens");
    assert!(
        !amqp_refused(&err),
        "the refusal check passes against a stopped RabbitMQ: {err}"
    );
}

/// The three-replica config forms a cluster: two nodes boot the rendered `rabbitmq.conf`, with the peer
/// discovery list (`classic_config`, the StatefulSet pods' node names) mapped to loopback node names that
/// share one epmd and one cookie. The second node joins the first through that list: a queue declared on
/// the first is there on the second, and a message published on the second is consumed on the first.
/// (The third pod is not started: classic_config joins whichever listed node answers.)
#[tokio::test]
async fn rabbitmq_three_replica_config_forms_a_cluster() {
    use lapin::options::{BasicConsumeOptions, BasicPublishOptions, QueueDeclareOptions};
    let (_, c) = Case::new(BrokerKind::Rabbitmq)
        .replicas(3)
        .auth(user_password(USERNAME, BOOT_PASSWORD))
        .build();
    let rendered = file(&c.config, "rabbitmq.conf");
    let peers: Vec<String> = rendered
        .lines()
        .filter_map(|l| l.strip_prefix("cluster_formation.classic_config.nodes."))
        .map(|l| l.split_once(" = ").expect("nodes.N = name").1.to_string())
        .collect();
    assert_eq!(peers.len(), 3, "one peer per replica:\n{rendered}");
    assert!(
        rendered.contains("cluster_formation.peer_discovery_backend = classic_config\n"),
        "{rendered}"
    );
    let cluster = RabbitCluster::new();
    let mut subs: Vec<(String, String)> = vec![
        (
            "listeners.tcp.default = 5672".into(),
            "listeners.tcp.default = {port}".into(),
        ),
        (
            "prometheus.tcp.port = 15692".into(),
            "prometheus.tcp.port = {port3}".into(),
        ),
        (
            "load_definitions = /etc/rabbitmq/".into(),
            "load_definitions = {dir}/".into(),
        ),
    ];
    for (i, peer) in peers.iter().enumerate() {
        subs.push((
            format!(" = {peer}\n"),
            format!(" = {}\n", cluster.node_name(i)),
        ));
    }
    let subs: Vec<(&str, &str)> = subs.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    let conf = localize(&rendered, &subs);
    let (plugins, definitions) = (
        file(&c.config, "enabled_plugins"),
        file(&c.config, "definitions.json"),
    );
    let files = [
        ("enabled_plugins", plugins.as_bytes()),
        ("definitions.json", definitions.as_bytes()),
    ];
    let first = cluster
        .start_node(0, &conf, &files)
        .unwrap_or_else(|e| panic!("node 0 did not boot the rendered config: {e:#}"));
    let second = cluster
        .start_node(1, &conf, &files)
        .unwrap_or_else(|e| panic!("node 1 did not boot the rendered config: {e:#}"));

    let on_first = amqp_connect(first.port(), USERNAME, BOOT_PASSWORD)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", first.log()));
    let on_second = amqp_connect(second.port(), USERNAME, BOOT_PASSWORD)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", second.log()));
    let (ch1, ch2) = (
        on_first.create_channel().await.unwrap(),
        on_second.create_channel().await.unwrap(),
    );
    let durable = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    ch1.queue_declare("clustered".into(), durable, Default::default())
        .await
        .unwrap();
    let passive = QueueDeclareOptions {
        passive: true,
        ..durable
    };
    ch2.queue_declare("clustered".into(), passive, Default::default())
        .await
        .unwrap_or_else(|e| {
            panic!(
                "the queue declared on node 0 is unknown to node 1: not one cluster: {e}\n{}",
                second.log()
            )
        });
    ch2.basic_publish(
        "".into(),
        "clustered".into(),
        BasicPublishOptions::default(),
        b"across",
        lapin::BasicProperties::default(),
    )
    .await
    .unwrap()
    .await
    .unwrap();
    let mut consumer = ch1
        .basic_consume(
            "clustered".into(),
            "test".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            Default::default(),
        )
        .await
        .unwrap();
    let got = timeout(STEP, futures::StreamExt::next(&mut consumer))
        .await
        .expect("the message published on node 1 reaches the consumer on node 0")
        .expect("consumer open")
        .unwrap();
    assert_eq!(got.data, b"across");
    assert!(
        second.log().contains(&cluster.node_name(0)),
        "node 1 names node 0 in its log (joined it):\n{}",
        second.log()
    );
}

// --------------------------------------------------------------------------------------------- Redis

#[tokio::test]
async fn redis_config_boots_with_acl_user_and_probe() {
    let (_, c) = Case::new(BrokerKind::Redis)
        .auth(user_password(USERNAME, BOOT_PASSWORD))
        .build();
    let conf = localize(
        &file(&c.config, "redis.conf"),
        &[("port 6379", "port {port}"), ("dir /data", "dir {dir}")],
    );
    let redis_server = start(Kind::Redis, &conf, &[]);
    let port = redis_server.port();

    let url = format!(
        "redis://{}:{}@127.0.0.1:{port}/",
        pct(USERNAME),
        pct(BOOT_PASSWORD)
    );
    let mut con = redis::Client::open(url.as_str())
        .unwrap()
        .get_connection_with_timeout(Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("{e}\n{}", redis_server.log()));
    let whoami: String = redis::cmd("ACL").arg("WHOAMI").query(&mut con).unwrap();
    assert_eq!(whoami, USERNAME);
    let receivers: i64 = redis::cmd("PUBLISH")
        .arg("edge.node.registered")
        .arg("hello")
        .query(&mut con)
        .unwrap();
    assert_eq!(receivers, 0);
    assert!(
        redis_server.dir().join("appendonlydir").is_dir(),
        "appendonly writes into the rendered dir"
    );

    let wrong = format!("redis://{}:{WRONG}@127.0.0.1:{port}/", pct(USERNAME));
    let err = redis::Client::open(wrong.as_str())
        .unwrap()
        .get_connection_with_timeout(Duration::from_secs(5))
        .err()
        .expect("a wrong password is refused");
    assert!(redis_refused(&err), "{err}");
    // The default user is off: an unauthenticated client can do nothing.
    let mut anon = redis::Client::open(format!("redis://127.0.0.1:{port}/").as_str())
        .unwrap()
        .get_connection_with_timeout(Duration::from_secs(5))
        .expect("TCP connects");
    let err = redis::cmd("PING")
        .query::<String>(&mut anon)
        .expect_err("NOAUTH");
    assert!(err.to_string().to_uppercase().contains("NOAUTH"), "{err}");

    // The readiness probe of the StatefulSet, run as the kubelet would (env from the Secret's keys).
    let pod = c
        .statefulset
        .spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap();
    let probe = pod.containers[0]
        .readiness_probe
        .as_ref()
        .unwrap()
        .exec
        .as_ref()
        .unwrap()
        .command
        .clone()
        .unwrap();
    let script = localize(&probe[2], &[("-p 6379", &format!("-p {port}"))]);
    let run = |password: &str| {
        let out = std::process::Command::new(&probe[0])
            .arg(&probe[1])
            .arg(&script)
            .env("REDIS_USERNAME", file(&c.config, "username"))
            .env("REDISCLI_AUTH", password)
            .output()
            .expect("sh runs");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, stderr) = run(&file(&c.config, "password"));
    assert!(
        ok,
        "the probe passes with the Secret's credentials: {stderr}"
    );
    let (ok, stderr) = run(WRONG);
    assert!(!ok, "the probe fails with a wrong password");
    // redis-cli prints the server's refusal of AUTH.
    assert!(stderr.contains("WRONGPASS"), "{stderr}");
}

// ----------------------------------------------------------------------------------------- Mosquitto

fn mosquitto_conf(c: &BrokerChildren) -> String {
    localize(
        &file(&c.config, "mosquitto.conf"),
        &[
            ("listener 1883", "listener {port} 127.0.0.1"),
            ("/mosquitto/config/", "{dir}/"),
            (
                "persistence_location /mosquitto/data/",
                "persistence_location {dir}/",
            ),
        ],
    )
}

fn mqtt(id: &str, port: u16, password: &str) -> (rumqttc::AsyncClient, rumqttc::EventLoop) {
    let mut opts = rumqttc::MqttOptions::new(id, "127.0.0.1", port);
    opts.set_credentials(USERNAME, password);
    opts.set_keep_alive(Duration::from_secs(5));
    rumqttc::AsyncClient::new(opts, 10)
}

/// Polls until CONNACK: `Ok` when accepted, the refusal otherwise.
async fn mqtt_connack(ev: &mut rumqttc::EventLoop) -> Result<(), String> {
    use rumqttc::{ConnectionError, Event, Packet};
    timeout(STEP, async {
        loop {
            match ev.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => return Ok(()),
                Ok(_) => {}
                Err(ConnectionError::ConnectionRefused(code)) => return Err(format!("{code:?}")),
                Err(e) => return Err(e.to_string()),
            }
        }
    })
    .await
    .unwrap_or_else(|_| Err("timed out".into()))
}

/// Subscribes to `edge/#`, publishes `edge/node/registered` from a second client; whether the subscriber
/// got it (within `wait`), and the SUBACK return code.
async fn mqtt_pubsub(port: u16, wait: Duration) -> (bool, rumqttc::SubscribeReasonCode) {
    use rumqttc::{Event, Packet, QoS};
    let (sub, mut sub_ev) = mqtt("edgewire-sub", port, BOOT_PASSWORD);
    mqtt_connack(&mut sub_ev)
        .await
        .expect("subscriber connects");
    sub.subscribe("edge/#", QoS::AtLeastOnce).await.unwrap();
    let code = timeout(STEP, async {
        loop {
            if let Event::Incoming(Packet::SubAck(ack)) = sub_ev.poll().await.unwrap() {
                return ack.return_codes[0];
            }
        }
    })
    .await
    .expect("SUBACK");

    let (publisher, mut pub_ev) = mqtt("edgewire-pub", port, BOOT_PASSWORD);
    mqtt_connack(&mut pub_ev).await.expect("publisher connects");
    publisher
        .publish("edge/node/registered", QoS::AtLeastOnce, false, "hello")
        .await
        .unwrap();
    let driver = tokio::spawn(async move {
        loop {
            match pub_ev.poll().await {
                Ok(Event::Incoming(Packet::PubAck(_))) => return true,
                Ok(_) => {}
                Err(_) => return false,
            }
        }
    });
    let received = timeout(wait, async {
        loop {
            if let Event::Incoming(Packet::Publish(p)) = sub_ev.poll().await.unwrap() {
                return p.topic == "edge/node/registered" && p.payload.as_ref() == b"hello";
            }
        }
    })
    .await
    .unwrap_or(false);
    let _ = timeout(STEP, driver).await;
    (received, code)
}

#[tokio::test]
async fn mosquitto_config_boots_with_password_file_and_acl() {
    let (_, c) = Case::new(BrokerKind::Mosquitto)
        .auth(user_password(USERNAME, BOOT_PASSWORD))
        .build();
    let passwd = file(&c.config, "passwd");
    let acl = file(&c.config, "acl");
    let broker = start(
        Kind::Mosquitto,
        &mosquitto_conf(&c),
        &[("passwd", passwd.as_bytes()), ("acl", acl.as_bytes())],
    );

    let (received, code) = mqtt_pubsub(broker.port(), STEP).await;
    assert_eq!(
        code,
        rumqttc::SubscribeReasonCode::Success(rumqttc::QoS::AtLeastOnce),
        "{}",
        broker.log()
    );
    assert!(
        received,
        "the generated user publishes and subscribes under its ACL\n{}",
        broker.log()
    );

    let (_client, mut ev) = mqtt("edgewire-wrong", broker.port(), WRONG);
    let refused = mqtt_connack(&mut ev)
        .await
        .expect_err("a wrong password is refused");
    assert!(mqtt_refused(&refused), "{refused}");
}

/// The refusal checks of the NATS, Redis and Mosquitto tests above, against the brokers stopped (the
/// RabbitMQ test does the same at its end): each one fails, so each needs the server's answer.
#[tokio::test]
async fn refusal_checks_fail_against_stopped_brokers() {
    let mut nats = start(Kind::Nats, Kind::Nats.default_config(), &[]);
    nats.stop();
    let opts = async_nats::ConnectOptions::with_user_and_password(USERNAME.into(), WRONG.into());
    let err = nats_connect(opts, nats.port())
        .await
        .expect_err("nothing listens");
    assert!(!nats_refused(&err), "passes against a stopped NATS: {err}");

    let mut redis_server = start(Kind::Redis, Kind::Redis.default_config(), &[]);
    redis_server.stop();
    let wrong = format!(
        "redis://{}:{WRONG}@127.0.0.1:{}/",
        pct(USERNAME),
        redis_server.port()
    );
    let err = redis::Client::open(wrong.as_str())
        .unwrap()
        .get_connection_with_timeout(Duration::from_secs(5))
        .err()
        .expect("nothing listens");
    assert!(
        !redis_refused(&err),
        "passes against a stopped Redis: {err}"
    );

    let mut mosquitto = start(Kind::Mosquitto, Kind::Mosquitto.default_config(), &[]);
    mosquitto.stop();
    let (_client, mut ev) = mqtt("edgewire-wrong", mosquitto.port(), WRONG);
    let err = mqtt_connack(&mut ev).await.expect_err("nothing listens");
    assert!(
        !mqtt_refused(&err),
        "passes against a stopped Mosquitto: {err}"
    );
}

/// Control for the ACL check above: the same config whose ACL gives the rendered entries to another user
/// lets nothing through, so the delivery above is the rendered ACL at work (Mosquitto denies what an
/// `acl_file` does not grant). The user keeps one grant, `probe/#`, as the proof that the path is live: a
/// probe published after the denied message arrives, and the denied one (which Mosquitto would have
/// delivered first, in order) never did.
#[tokio::test]
async fn mosquitto_acl_file_is_enforced() {
    use rumqttc::{Event, Packet, QoS};
    let (_, c) = Case::new(BrokerKind::Mosquitto)
        .auth(user_password(USERNAME, BOOT_PASSWORD))
        .build();
    let passwd = file(&c.config, "passwd");
    let acl = format!(
        "{}\nuser {USERNAME}\ntopic readwrite probe/#\n",
        localize(
            &file(&c.config, "acl"),
            &[(&format!("user {USERNAME}\n"), "user somebody-else\n")],
        )
    );
    let broker = start(
        Kind::Mosquitto,
        &mosquitto_conf(&c),
        &[("passwd", passwd.as_bytes()), ("acl", acl.as_bytes())],
    );
    let (sub, mut sub_ev) = mqtt("edgewire-sub", broker.port(), BOOT_PASSWORD);
    mqtt_connack(&mut sub_ev)
        .await
        .expect("subscriber connects");
    sub.subscribe("edge/#", QoS::AtLeastOnce).await.unwrap();
    sub.subscribe("probe/#", QoS::AtLeastOnce).await.unwrap();
    let mut subacks = 0;
    timeout(STEP, async {
        while subacks < 2 {
            if let Event::Incoming(Packet::SubAck(_)) = sub_ev.poll().await.unwrap() {
                subacks += 1;
            }
        }
    })
    .await
    .expect("two SUBACKs");

    let (publisher, mut pub_ev) = mqtt("edgewire-pub", broker.port(), BOOT_PASSWORD);
    mqtt_connack(&mut pub_ev).await.expect("publisher connects");
    for topic in ["edge/node/registered", "probe/after"] {
        publisher
            .publish(topic, QoS::AtLeastOnce, false, "hello")
            .await
            .unwrap();
    }
    let mut acked = 0;
    timeout(STEP, async {
        while acked < 2 {
            if let Event::Incoming(Packet::PubAck(_)) = pub_ev.poll().await.unwrap() {
                acked += 1;
            }
        }
    })
    .await
    .expect("both publishes acknowledged");
    let first = timeout(STEP, async {
        loop {
            if let Event::Incoming(Packet::Publish(p)) = sub_ev.poll().await.unwrap() {
                return p.topic;
            }
        }
    })
    .await
    .expect("the probe arrives");
    assert_eq!(
        first,
        "probe/after",
        "without an ACL entry for edge/# nothing may flow there\n{}",
        broker.log()
    );
}
