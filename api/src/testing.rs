//! Test fixtures that read like sentences: `EventBroker::test("events").adapter_nats().with_token("nats-creds")`.
//! Compiled only with the `testing` feature (enabled by the workspace's test crates).

use crate::*;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

/// Namespace every fixture lives in.
pub const NAMESPACE: &str = "factory";

/// A Secret holding `pairs` (key, value) in `data`.
pub fn secret_data<V: AsRef<[u8]>>(pairs: &[(&str, V)]) -> k8s_openapi::api::core::v1::Secret {
    k8s_openapi::api::core::v1::Secret {
        data: Some(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), k8s_openapi::ByteString(v.as_ref().to_vec())))
                .collect(),
        ),
        ..Default::default()
    }
}

fn meta(name: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.into()),
        namespace: Some(NAMESPACE.into()),
        uid: Some(format!("uid-{name}")),
        generation: Some(1),
        resource_version: Some("1".into()),
        ..Default::default()
    }
}

impl EventBroker {
    /// An EventBroker named `name` in [`NAMESPACE`] with the NATS adapter and no connection settings yet.
    pub fn test(name: &str) -> Self {
        let spec: EventBrokerSpec = serde_json::from_value(serde_json::json!({"adapter": "nats"}))
            .expect("minimal spec deserializes");
        EventBroker {
            metadata: meta(name),
            spec,
            status: None,
        }
    }

    /// Adapter nats pointing at an external server.
    pub fn adapter_nats(mut self) -> Self {
        self.spec.adapter = Adapter::Nats;
        self.spec.nats = Some(NatsSpec {
            urls: vec!["nats://nats.messaging:4222".into()],
            ..Default::default()
        });
        self
    }

    /// NATS token auth from `secret` key `token`.
    pub fn with_token(mut self, secret: &str) -> Self {
        let nats = self.spec.nats.get_or_insert_with(Default::default);
        nats.auth = Some(NatsAuth {
            token: Some(SecretKeyRef::new(secret, "token")),
            ..Default::default()
        });
        self
    }

    /// JetStream on.
    pub fn with_jetstream(mut self) -> Self {
        let nats = self.spec.nats.get_or_insert_with(Default::default);
        nats.jet_stream = Some(JetStreamSpec {
            enabled: true,
            ..Default::default()
        });
        self
    }

    /// Switch to `adapter` with a plausible external connection section.
    pub fn adapter(mut self, adapter: Adapter) -> Self {
        self.spec.adapter = adapter;
        match adapter.canonical() {
            Adapter::Nats => return self.adapter_nats(),
            Adapter::Kafka => {
                self.spec.kafka = Some(KafkaSpec {
                    urls: vec!["kafka.messaging:9092".into()],
                    ..Default::default()
                })
            }
            Adapter::Amqp091 => {
                self.spec.amqp091 = Some(Amqp091Spec {
                    url: Some(SecretKeyRef::new("amqp-url", "url")),
                    ..Default::default()
                })
            }
            Adapter::Redis => {
                self.spec.redis = Some(RedisSpec {
                    url: Some(SecretKeyRef::new("redis-url", "url")),
                    ..Default::default()
                })
            }
            Adapter::Mqtt => {
                self.spec.mqtt = Some(MqttSpec {
                    url: Some("mqtt.messaging:1883".into()),
                    ..Default::default()
                })
            }
            Adapter::AwsSns => {
                self.spec.aws_sns = Some(AwsSnsSpec {
                    region: "us-east-1".into(),
                    ..Default::default()
                })
            }
            Adapter::GooglePubsub => {
                self.spec.google_pubsub = Some(GooglePubsubSpec {
                    project: "my-project".into(),
                    ..Default::default()
                })
            }
            Adapter::Rabbitmq => unreachable!("canonical() resolves the alias"),
        }
        self
    }

    /// Let the operator run a broker of `kind`.
    pub fn deploy(mut self, kind: BrokerKind) -> Self {
        self.spec.deploy_broker = Some(
            serde_json::from_value(serde_json::json!({"kind": kind.as_str()}))
                .expect("deployBroker deserializes"),
        );
        self
    }

    /// `deployBroker.replicas`.
    pub fn replicas(mut self, n: i32) -> Self {
        if let Some(d) = self.spec.deploy_broker.as_mut() {
            d.replicas = n;
        }
        self
    }

    /// Set `metadata.generation`.
    pub fn generation(mut self, g: i64) -> Self {
        self.metadata.generation = Some(g);
        self
    }
}

impl MqttBroker {
    /// A builtin MqttBroker named `name` with no users.
    pub fn test(name: &str) -> Self {
        let spec: MqttBrokerSpec =
            serde_json::from_value(serde_json::json!({"type": "builtin", "builtin": {}}))
                .expect("minimal spec deserializes");
        MqttBroker {
            metadata: meta(name),
            spec,
            status: None,
        }
    }

    /// Add a user whose password is in `secret` key `password` (or generated when `None`).
    pub fn user(mut self, name: &str, secret: Option<&str>) -> Self {
        let b = self.spec.builtin.get_or_insert_with(Default::default);
        b.users.push(MqttUser {
            name: name.into(),
            password: secret.map(|s| SecretKeyRef::new(s, "password")),
            publish: None,
            subscribe: None,
        });
        self
    }
}

impl BridgeLink {
    /// A BridgeLink `name` for site `site-a`: MQTT edge at `edge:1883`, NATS cloud, telemetry up and commands down.
    pub fn test(name: &str) -> Self {
        let spec: BridgeLinkSpec = serde_json::from_value(serde_json::json!({
            "siteId": "site-a",
            "edge": {"endpoint": {"protocol": "mqtt", "url": "edge:1883"}},
            "cloud": {"endpoint": {"protocol": "nats", "url": "nats://cloud:4222"}},
            "rules": [
                {"direction": "EdgeToCloud", "from": "local.telemetry.#", "to": "edge.site-a.telemetry.#"},
                {"direction": "CloudToEdge", "from": "cloud.commands.site-a", "to": "local.commands"}
            ]
        }))
        .expect("fixture deserializes");
        BridgeLink {
            metadata: meta(name),
            spec,
            status: None,
        }
    }
}
