//! The publisher end to end: an EventBroker for each self-hosted adapter, applied with kubectl, yields a
//! publisher Deployment whose environment is exactly the `EVENT_BROKER_*` set the agent reads. The test
//! then runs `edgewire-agent publisher` with that environment (Secret values resolved from the API, as the
//! kubelet would) against a real broker, POSTs a CloudEvent, and an independent subscriber receives it.

mod support;

use base64::Engine;
use edgewire_e2e::brokers::{BrokerProcess, Kind, free_port};
use futures::StreamExt;
use serde_json::Value;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use support::{Cluster, Operator, at, str_at, wait_for};

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

fn agent_bin() -> PathBuf {
    if let Ok(p) = std::env::var("EDGEWIRE_AGENT_BIN") {
        return PathBuf::from(p);
    }
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| support::workspace_root().join("target"));
    let bin = target.join("debug/edgewire-agent");
    assert!(
        bin.exists(),
        "{} missing: run `cargo build -p edgewire-agent`",
        bin.display()
    );
    bin
}

/// Applies `yaml`, waits for the publisher Deployment, and returns its container env with every
/// `secretKeyRef` resolved from the API (what the kubelet would hand the container).
fn rendered_env(cluster: &Cluster, ns: &str, eb: &str, yaml: &str) -> Vec<(String, String)> {
    cluster.apply_yaml(yaml);
    let deploy = wait_for("the publisher Deployment", Duration::from_secs(60), || {
        cluster
            .get(ns, "deployment", &format!("{eb}-publisher"))
            .ok_or_else(|| "not yet".to_string())
    })
    .unwrap();
    let env = at(&deploy, "/spec/template/spec/containers/0/env")
        .as_array()
        .cloned()
        .unwrap_or_default();
    env.iter()
        .map(|e| {
            let name = str_at(e, "/name").to_string();
            let value = match e.get("value") {
                Some(v) => v.as_str().unwrap_or_default().to_string(),
                None => {
                    let secret = str_at(e, "/valueFrom/secretKeyRef/name");
                    let key = str_at(e, "/valueFrom/secretKeyRef/key");
                    let s = cluster.get_json(ns, "secret", secret);
                    let b64 = at(
                        &s,
                        &format!("/data/{}", key.replace('~', "~0").replace('/', "~1")),
                    );
                    let raw = base64::engine::general_purpose::STANDARD
                        .decode(b64.as_str().unwrap_or_default())
                        .unwrap();
                    String::from_utf8(raw).unwrap()
                }
            };
            (name, value)
        })
        .collect()
}

struct Agent(Child, String);

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the agent with exactly `env` (only the listen address moved to a free loopback port).
fn start_publisher(env: &[(String, String)]) -> Agent {
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
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let addr = format!("127.0.0.1:{port}");
    let mut agent = Agent(child, addr.clone());
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
    agent.1 = addr;
    agent
}

/// A minimal HTTP/1.1 client: status code and body.
fn http(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> std::io::Result<(u16, String)> {
    let mut s = std::net::TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\ncontent-length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes())?;
    let mut resp = String::new();
    s.read_to_string(&mut resp)?;
    let code = resp
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = resp
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((code, body))
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
    let agent = start_publisher(&env);
    rt().block_on(async {
        let client = async_nats::ConnectOptions::with_token("e2e-t0ken".into())
            .connect(format!("127.0.0.1:{}", nats.port()))
            .await
            .unwrap();
        let mut sub = client.subscribe("edge.node.registered").await.unwrap();
        client.flush().await.unwrap();
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
    let agent = start_publisher(&env);
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

#[test]
fn mqtt_with_user_password() {
    let (cluster, _op, ns) = setup("pub-mqtt");
    let mosquitto = BrokerProcess::start_default(Kind::Mosquitto).expect("mosquitto");
    let yaml = format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: mqtt-auth, namespace: {ns}}}\nstringData: {{username: edge, password: any}}\n---\n\
         apiVersion: edgewire.dev/v1alpha1\nkind: EventBroker\nmetadata: {{name: events, namespace: {ns}}}\n\
         spec:\n  coreName: e2e-core\n  adapter: mqtt\n  mqtt:\n    url: \"127.0.0.1:{}\"\n    qos: 1\n    auth: {{userPassword: {{secretName: mqtt-auth}}}}\n",
        mosquitto.port()
    );
    let env = rendered_env(&cluster, &ns, "events", &yaml);
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
    let agent = start_publisher(&env);
    rt().block_on(async {
        let mut opts = rumqttc::MqttOptions::new("e2e-sub", "127.0.0.1", mosquitto.port());
        opts.set_keep_alive(Duration::from_secs(5));
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
    let agent = start_publisher(&env);
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
    let agent = start_publisher(&env);
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
