//! The publisher end to end: an EventBroker for each self-hosted adapter, applied with kubectl, yields a
//! publisher Deployment whose environment is exactly the `EVENT_BROKER_*` set the agent reads. The test
//! then runs `edgewire-agent publisher` with that environment (Secret values resolved from the API, as the
//! kubelet would; a reference to a missing Secret or key fails the test) against a real broker, POSTs a
//! CloudEvent, and an independent subscriber receives it. The MQTT broker refuses anonymous clients and
//! wrong passwords, and the publisher rendered from a Secret with a wrong password is refused.

use crate::support::{Cluster, Operator, agent_bin, at, http, mqtt_connack, str_at, wait_for};
use base64::Engine;
use edgewire_e2e::brokers::{BrokerProcess, Kind, free_port};
use futures::StreamExt;
use serde_json::Value;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Every variable `edgewire-agent publisher` reads (agent/src/publisher/config/env/).
const AGENT_READS: &[&str] = &[
    "EVENT_BROKER_ENABLED",
    "EVENT_BROKER_ADAPTER",
    "CORE_NAME",
    "EDGEWIRE_LISTEN",
    "EDGEWIRE_LOG_FORMAT",
    "EVENT_BROKER_NATS_URLS",
    "EVENT_BROKER_NATS_JETSTREAM",
    "EVENT_BROKER_NATS_STREAM",
    "EVENT_BROKER_NATS_STREAM_MAX_AGE",
    "EVENT_BROKER_NATS_TOKEN",
    "EVENT_BROKER_NATS_USERNAME",
    "EVENT_BROKER_NATS_PASSWORD",
    "EVENT_BROKER_NATS_NKEY_SEED",
    "EVENT_BROKER_NATS_JWT",
    "EVENT_BROKER_KAFKA_URLS",
    "EVENT_BROKER_KAFKA_USERNAME",
    "EVENT_BROKER_KAFKA_PASSWORD",
    "EVENT_BROKER_KAFKA_SASL_MECHANISM",
    "EVENT_BROKER_KAFKA_SSL",
    "EVENT_BROKER_KAFKA_TOPIC",
    "EVENT_BROKER_RABBITMQ_URL",
    "EVENT_BROKER_RABBITMQ_SSL",
    "EVENT_BROKER_REDIS_URL",
    "EVENT_BROKER_REDIS_SSL",
    "EVENT_BROKER_MQTT_URL",
    "EVENT_BROKER_MQTT_QOS",
    "EVENT_BROKER_MQTT_JWT",
    "EVENT_BROKER_MQTT_USERNAME",
    "EVENT_BROKER_MQTT_PASSWORD",
    "EVENT_BROKER_MQTT_SSL",
    "EVENT_BROKER_MQTT_CACERT_FILE",
    "EVENT_BROKER_MQTT_CLIENT_CERT_FILE",
    "EVENT_BROKER_MQTT_CLIENT_KEY_FILE",
];

/// Applies `yaml` and waits for the publisher Deployment.
fn apply_and_get_publisher(cluster: &Cluster, ns: &str, eb: &str, yaml: &str) -> Value {
    cluster.apply_yaml(yaml);
    wait_for("the publisher Deployment", Duration::from_secs(60), || {
        cluster
            .get(ns, "deployment", &format!("{eb}-publisher"))
            .ok_or_else(|| "not yet".to_string())
    })
    .unwrap()
}

/// The container env of `deploy` with every `secretKeyRef` resolved from the API, as the kubelet would
/// hand it to the container: a reference to a Secret or key that does not exist is what keeps the kubelet
/// from starting the container, so it fails the test.
fn resolve_env(cluster: &Cluster, ns: &str, deploy: &Value) -> Vec<(String, String)> {
    let env = at(deploy, "/spec/template/spec/containers/0/env")
        .as_array()
        .unwrap_or_else(|| panic!("the publisher has no env: {deploy}"));
    env.iter()
        .map(|e| {
            let name = str_at(e, "/name").to_string();
            let value = if let Some(v) = e.get("value") {
                v.as_str()
                    .unwrap_or_else(|| panic!("env {name}: value is not a string: {e}"))
                    .to_string()
            } else {
                let secret = str_at(e, "/valueFrom/secretKeyRef/name");
                let key = str_at(e, "/valueFrom/secretKeyRef/key");
                assert!(
                    !secret.is_empty() && !key.is_empty(),
                    "env {name}: neither a value nor a secretKeyRef: {e}"
                );
                let s = cluster.get(ns, "secret", secret).unwrap_or_else(|| {
                    panic!("env {name} references Secret {ns}/{secret}, which does not exist")
                });
                let b64 = at(
                    &s,
                    &format!("/data/{}", key.replace('~', "~0").replace('/', "~1")),
                )
                .as_str()
                .unwrap_or_else(|| {
                    panic!("env {name} references key {key:?} of Secret {secret}, which it does not hold")
                });
                let raw = base64::engine::general_purpose::STANDARD
                    .decode(b64)
                    .unwrap_or_else(|e| panic!("Secret {secret} key {key}: not base64: {e}"));
                String::from_utf8(raw)
                    .unwrap_or_else(|e| panic!("Secret {secret} key {key}: not UTF-8: {e}"))
            };
            (name, value)
        })
        .collect()
}

/// Applies `yaml`, waits for the publisher Deployment, and returns its resolved env ([`resolve_env`]).
fn rendered_env(cluster: &Cluster, ns: &str, eb: &str, yaml: &str) -> Vec<(String, String)> {
    let deploy = apply_and_get_publisher(cluster, ns, eb, yaml);
    resolve_env(cluster, ns, &deploy)
}

struct Agent(Child, String);

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the agent with exactly `env` (only the listen address moved to a free loopback port) and waits
/// until it is ready.
fn start_publisher(cluster: &Cluster, env: &[(String, String)]) -> Agent {
    let mut agent = spawn_publisher(cluster, env);
    let addr = agent.1.clone();
    wait_for("the publisher to be ready", Duration::from_secs(60), || {
        if let Ok(Some(st)) = agent.0.try_wait() {
            panic!("publisher exited: {st}");
        }
        match http(&addr, "GET", "/readyz", &[], "") {
            Ok((200, _)) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .unwrap();
    agent
}

/// Starts the agent with exactly `env` (only the listen address moved to a free loopback port).
fn spawn_publisher(cluster: &Cluster, env: &[(String, String)]) -> Agent {
    let port = free_port();
    let mut cmd = Command::new(agent_bin());
    cmd.arg("publisher")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default());
    for (k, v) in env {
        cmd.env(
            k,
            if k == "EDGEWIRE_LISTEN" {
                format!("127.0.0.1:{port}")
            } else {
                v.clone()
            },
        );
    }
    cluster.control_plane().adopt(&mut cmd);
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    Agent(child, format!("127.0.0.1:{port}"))
}

/// POSTs `edge.node.registered` in binary mode; the publisher must answer 202.
fn post_event(addr: &str, id: &str) {
    let (code, body) = http(
        addr,
        "POST",
        "/",
        &[
            ("ce-specversion", "1.0"),
            ("ce-id", id),
            ("ce-source", "/e2e"),
            ("ce-type", "edge.node.registered"),
            ("content-type", "application/json"),
        ],
        r#"{"node":"n-42"}"#,
    )
    .unwrap();
    assert_eq!(code, 202, "publisher answered {code}: {body}");
}

/// The env names must all be ones the agent reads, and the credentials must come from Secrets.
fn assert_env_contract(env: &[(String, String)], adapter: &str, must: &[&str]) {
    let names: Vec<&str> = env.iter().map(|(k, _)| k.as_str()).collect();
    for n in &names {
        assert!(
            AGENT_READS.contains(n),
            "the operator rendered {n}, which the agent does not read"
        );
    }
    for m in must {
        assert!(
            names.contains(m),
            "{m} missing from the rendered env: {names:?}"
        );
    }
    assert!(env.contains(&("EVENT_BROKER_ADAPTER".into(), adapter.into())));
    assert!(env.contains(&("CORE_NAME".into(), "e2e-core".into())));
}

fn setup(prefix: &str) -> (Cluster, Operator, String) {
    let cluster = Cluster::start();
    let ns = cluster.create_namespace(prefix);
    let op = Operator::start(&cluster, &ns, "op");
    (cluster, op, ns)
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn nats_jetstream_with_token() {
    let (cluster, _op, ns) = setup("pub-nats");
    let nats = BrokerProcess::start(
        Kind::Nats,
        "listen: 127.0.0.1:{port}\njetstream { store_dir: \"{dir}/js\" }\nauthorization { token: \"e2e-t0ken\" }\n",
        &[],
    )
    .expect("nats-server");
    let yaml = format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: nats-auth, namespace: {ns}}}\nstringData: {{token: e2e-t0ken}}\n---\n\
         apiVersion: edgewire.dev/v1alpha1\nkind: EventBroker\nmetadata: {{name: events, namespace: {ns}}}\n\
         spec:\n  coreName: e2e-core\n  adapter: nats\n  nats:\n    urls: [\"nats://127.0.0.1:{}\"]\n    jetStream: {{enabled: true}}\n    auth: {{token: {{name: nats-auth, key: token}}}}\n",
        nats.port()
    );
    let env = rendered_env(&cluster, &ns, "events", &yaml);
    assert_env_contract(
        &env,
        "nats",
        &[
            "EVENT_BROKER_NATS_URLS",
            "EVENT_BROKER_NATS_TOKEN",
            "EVENT_BROKER_NATS_JETSTREAM",
        ],
    );
    let agent = start_publisher(&cluster, &env);
    rt().block_on(async {
        let client = async_nats::ConnectOptions::with_token("e2e-t0ken".into())
            .connect(format!("127.0.0.1:{}", nats.port()))
            .await
            .unwrap();
        let mut sub = edgewire_e2e::brokers::nats::subscribed(&client, "edge.node.registered")
            .await
            .unwrap();
        post_event(&agent.1, "nats-1");
        let msg = tokio::time::timeout(Duration::from_secs(20), sub.next())
            .await
            .unwrap()
            .unwrap();
        let h = msg.headers.expect("binary mode headers");
        assert_eq!(
            h.get("ce-type").map(|v| v.as_str()),
            Some("edge.node.registered")
        );
        assert_eq!(h.get("ce-corename").map(|v| v.as_str()), Some("e2e-core"));
        assert_eq!(&msg.payload[..], br#"{"node":"n-42"}"#);
        // JetStream kept it: the stream holds the event.
        let js = async_nats::jetstream::new(client);
        let mut stream = js.get_stream("EDGE_EVENTS").await.unwrap();
        assert!(stream.info().await.unwrap().state.messages >= 1);
    });
}

#[test]
fn redis_with_url_secret() {
    let (cluster, _op, ns) = setup("pub-redis");
    let redis = BrokerProcess::start(
        Kind::Redis,
        "port {port}\nbind 127.0.0.1\nsave \"\"\nappendonly no\nuser default off\nuser edge on >r3d1s-pw ~* &* +@all\n",
        &[],
    )
    .expect("redis-server");
    let url = format!("redis://edge:r3d1s-pw@127.0.0.1:{}", redis.port());
    let yaml = format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: redis-url, namespace: {ns}}}\nstringData: {{url: \"{url}\"}}\n---\n\
         apiVersion: edgewire.dev/v1alpha1\nkind: EventBroker\nmetadata: {{name: events, namespace: {ns}}}\n\
         spec:\n  coreName: e2e-core\n  adapter: redis\n  redis: {{url: {{name: redis-url, key: url}}}}\n"
    );
    let env = rendered_env(&cluster, &ns, "events", &yaml);
    assert_env_contract(&env, "redis", &["EVENT_BROKER_REDIS_URL"]);
    let agent = start_publisher(&cluster, &env);
    rt().block_on(async {
        let client = redis::Client::open(url.as_str()).unwrap();
        let mut pubsub = client.get_async_pubsub().await.unwrap();
        pubsub.psubscribe("edge.*").await.unwrap();
        post_event(&agent.1, "redis-1");
        let mut stream = pubsub.on_message();
        let msg = tokio::time::timeout(Duration::from_secs(20), stream.next())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(msg.get_channel_name(), "edge.node.registered");
        let body: Value = serde_json::from_slice(msg.get_payload_bytes()).unwrap();
        assert_eq!(body["type"], "edge.node.registered");
        assert_eq!(body["corename"], "e2e-core");
        assert_eq!(body["data"]["node"], "n-42");
    });
}

/// `mosquitto_passwd -b -c`: a Mosquitto password file with one user.
fn mosquitto_password_file(user: &str, password: &str) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("passwd");
    let out = Command::new("mosquitto_passwd")
        .arg("-b")
        .arg("-c")
        .arg(&file)
        .args([user, password])
        .output()
        .expect("mosquitto_passwd (Debian package `mosquitto`) must be installed: run `make deps`");
    assert!(
        out.status.success(),
        "mosquitto_passwd: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::read(file).unwrap()
}

/// Against a Mosquitto that refuses anonymous clients and wrong passwords: the publisher rendered with the
/// user and password of the Secret connects and delivers; once the Secret holds a wrong password, the
/// publisher rendered from it is refused by the broker (its readiness says so) and accepts no event.
#[test]
fn mqtt_with_user_password() {
    const PASSWORD: &str = "e2e-mqtt-pa55";
    let (cluster, _op, ns) = setup("pub-mqtt");
    let mosquitto = BrokerProcess::start(
        Kind::Mosquitto,
        "listener {port} 127.0.0.1\nallow_anonymous false\npassword_file {dir}/passwd\n",
        &[("passwd", &mosquitto_password_file("edge", PASSWORD))],
    )
    .expect("mosquitto");
    let port = mosquitto.port();
    // The broker checks credentials: anonymous and a wrong password are refused, the right one accepted.
    let anonymous = mqtt_connack(port, "anonymous", None);
    assert_eq!(anonymous, Ok(5), "anonymous CONNECT: {anonymous:?}");
    let wrong = mqtt_connack(port, "wrong", Some(("edge", "not-the-password")));
    assert!(matches!(wrong, Ok(4 | 5)), "wrong password: {wrong:?}");
    assert_eq!(mqtt_connack(port, "right", Some(("edge", PASSWORD))), Ok(0));

    let yaml = format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: mqtt-auth, namespace: {ns}}}\nstringData: {{username: edge, password: {PASSWORD}}}\n---\n\
         apiVersion: edgewire.dev/v1alpha1\nkind: EventBroker\nmetadata: {{name: events, namespace: {ns}}}\n\
         spec:\n  coreName: e2e-core\n  adapter: mqtt\n  mqtt:\n    url: \"127.0.0.1:{port}\"\n    qos: 1\n    auth: {{userPassword: {{secretName: mqtt-auth}}}}\n"
    );
    let deploy = apply_and_get_publisher(&cluster, &ns, "events", &yaml);
    let env = resolve_env(&cluster, &ns, &deploy);
    assert_env_contract(
        &env,
        "mqtt",
        &[
            "EVENT_BROKER_MQTT_URL",
            "EVENT_BROKER_MQTT_QOS",
            "EVENT_BROKER_MQTT_USERNAME",
            "EVENT_BROKER_MQTT_PASSWORD",
        ],
    );
    let agent = start_publisher(&cluster, &env);
    rt().block_on(async {
        let mut opts = rumqttc::MqttOptions::new("e2e-sub", "127.0.0.1", port);
        opts.set_keep_alive(Duration::from_secs(5));
        opts.set_credentials("edge", PASSWORD);
        let (client, mut el) = rumqttc::AsyncClient::new(opts, 10);
        client
            .subscribe("edge/#", rumqttc::QoS::AtLeastOnce)
            .await
            .unwrap();
        let got = tokio::time::timeout(Duration::from_secs(20), async {
            let mut posted = false;
            loop {
                match el.poll().await.unwrap() {
                    rumqttc::Event::Incoming(rumqttc::Packet::SubAck(_)) if !posted => {
                        posted = true;
                        let addr = agent.1.clone();
                        tokio::task::spawn_blocking(move || post_event(&addr, "mqtt-1"));
                    }
                    rumqttc::Event::Incoming(rumqttc::Packet::Publish(p)) => return p,
                    _ => {}
                }
            }
        })
        .await
        .unwrap();
        assert_eq!(got.topic, "edge/node/registered");
        let body: Value = serde_json::from_slice(&got.payload).unwrap();
        assert_eq!(body["type"], "edge.node.registered");
        assert_eq!(body["corename"], "e2e-core");
        assert_eq!(body["data"]["node"], "n-42");
    });

    // A wrong password in the Secret: the publisher rendered from it is refused by the broker.
    cluster.kubectl_ok(&[
        "-n",
        &ns,
        "patch",
        "secret",
        "mqtt-auth",
        "--type=merge",
        "-p",
        r#"{"stringData":{"password":"a-wrong-password"}}"#,
    ]);
    let env = resolve_env(&cluster, &ns, &deploy);
    assert!(
        env.contains(&(
            "EVENT_BROKER_MQTT_PASSWORD".into(),
            "a-wrong-password".into()
        )),
        "the env does not carry the Secret's new password"
    );
    let mut refused = spawn_publisher(&cluster, &env);
    let addr = refused.1.clone();
    let detail = wait_for(
        "the broker to refuse the publisher",
        Duration::from_secs(60),
        || {
            if let Ok(Some(st)) = refused.0.try_wait() {
                panic!("publisher exited: {st}");
            }
            match http(&addr, "GET", "/readyz", &[], "") {
                Ok((503, body)) if body.contains("refused the connection") => Ok(body),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .unwrap();
    assert!(
        detail.contains("NotAuthorized") || detail.contains("BadUserNamePassword"),
        "the broker's answer is not in the readiness detail: {detail}"
    );
    let (code, body) = http(
        &addr,
        "POST",
        "/",
        &[
            ("ce-specversion", "1.0"),
            ("ce-id", "mqtt-refused"),
            ("ce-source", "/e2e"),
            ("ce-type", "edge.node.registered"),
            ("content-type", "application/json"),
        ],
        r#"{"node":"n-42"}"#,
    )
    .unwrap();
    assert_eq!(code, 503, "a refused publisher accepted an event: {body}");
}

#[test]
fn amqp091_with_url_secret() {
    let (cluster, _op, ns) = setup("pub-amqp");
    let rabbit = BrokerProcess::start_default(Kind::RabbitMq).expect("rabbitmq-server");
    let url = rabbit.url();
    let yaml = format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: amqp-url, namespace: {ns}}}\nstringData: {{url: \"{url}\"}}\n---\n\
         apiVersion: edgewire.dev/v1alpha1\nkind: EventBroker\nmetadata: {{name: events, namespace: {ns}}}\n\
         spec:\n  coreName: e2e-core\n  adapter: rabbitmq\n  amqp091: {{url: {{name: amqp-url, key: url}}}}\n"
    );
    let env = rendered_env(&cluster, &ns, "events", &yaml);
    assert_env_contract(&env, "rabbitmq", &["EVENT_BROKER_RABBITMQ_URL"]);
    let agent = start_publisher(&cluster, &env);
    rt().block_on(async {
        use lapin::options::*;
        let conn = lapin::Connection::connect(&url, lapin::ConnectionProperties::default())
            .await
            .unwrap();
        let ch = conn.create_channel().await.unwrap();
        let q = ch
            .queue_declare(
                "".into(),
                QueueDeclareOptions {
                    exclusive: true,
                    ..Default::default()
                },
                Default::default(),
            )
            .await
            .unwrap();
        ch.queue_bind(
            q.name().clone(),
            "edge.events".into(),
            "edge.node.#".into(),
            Default::default(),
            Default::default(),
        )
        .await
        .unwrap();
        let mut consumer = ch
            .basic_consume(
                q.name().clone(),
                "e2e".into(),
                BasicConsumeOptions {
                    no_ack: true,
                    ..Default::default()
                },
                Default::default(),
            )
            .await
            .unwrap();
        post_event(&agent.1, "amqp-1");
        let d = tokio::time::timeout(Duration::from_secs(20), consumer.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(d.routing_key.as_str(), "edge.node.registered");
        let headers = d.properties.headers().clone().expect("AMQP headers");
        let h = headers.inner();
        let text = |k: &str| match h.get(k) {
            Some(lapin::types::AMQPValue::LongString(v)) => {
                String::from_utf8_lossy(v.as_bytes()).to_string()
            }
            Some(lapin::types::AMQPValue::ShortString(v)) => v.as_str().to_string(),
            other => panic!("header {k}: {other:?} in {h:?}"),
        };
        assert_eq!(text("cloudEvents:type"), "edge.node.registered");
        assert_eq!(text("cloudEvents:corename"), "e2e-core");
        assert_eq!(&d.data[..], br#"{"node":"n-42"}"#);
    });
}

#[test]
fn kafka_domain_topic_with_corename_key() {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::message::{Headers, Message};
    let (cluster, _op, ns) = setup("pub-kafka");
    let mock = rdkafka::mocking::MockCluster::new(1).unwrap();
    for t in [
        "edge-nodes-events",
        "edge-commands-events",
        "edge-self-updates-events",
        "edge-ssh-events",
    ] {
        mock.create_topic(t, 1, 1).unwrap();
    }
    let bootstrap = mock.bootstrap_servers();
    let yaml = format!(
        "apiVersion: edgewire.dev/v1alpha1\nkind: EventBroker\nmetadata: {{name: events, namespace: {ns}}}\n\
         spec:\n  coreName: e2e-core\n  adapter: kafka\n  kafka: {{urls: [\"{bootstrap}\"]}}\n"
    );
    let env = rendered_env(&cluster, &ns, "events", &yaml);
    assert_env_contract(&env, "kafka", &["EVENT_BROKER_KAFKA_URLS"]);
    let agent = start_publisher(&cluster, &env);
    post_event(&agent.1, "kafka-1");
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("group.id", "e2e")
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    consumer.subscribe(&["edge-nodes-events"]).unwrap();
    let msg = wait_for(
        "the record on edge-nodes-events",
        Duration::from_secs(30),
        || match consumer.poll(Duration::from_millis(500)) {
            Some(Ok(m)) => Ok(m.detach()),
            other => Err(format!("{:?}", other.map(|r| r.map(|m| m.offset())))),
        },
    )
    .unwrap();
    assert_eq!(msg.key(), Some(&b"e2e-core"[..]));
    assert_eq!(msg.payload(), Some(&br#"{"node":"n-42"}"#[..]));
    let headers = msg.headers().expect("record headers");
    let get = |k: &str| {
        headers
            .iter()
            .find(|h| h.key == k)
            .and_then(|h| h.value)
            .map(|v| String::from_utf8_lossy(v).to_string())
    };
    assert_eq!(get("ce_type").as_deref(), Some("edge.node.registered"));
    assert_eq!(get("ce_corename").as_deref(), Some("e2e-core"));
}
