//! The environment contract: for every adapter and auth mode, the publisher Deployment that the operator
//! renders (`edgewire_operator::render`, which validates and builds as a reconcile does) starts a
//! publisher whose own environment parser (`edgewire_agent::publisher::config::env`) accepts it and yields
//! the adapter configuration the EventBroker asked for. Every sample EventBroker is a case, plus the spec
//! variants the samples do not show; the test also holds that each variable the operator sets is one the
//! agent reads.

use super::pod::{Pod, Rendered, render};
use edgewire_agent::publisher::config::env::{from_lookup, listen_addr};
use edgewire_agent::publisher::config::*;
use edgewire_api::env;
use std::cell::RefCell;
use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

/// Read by libraries, not by the agent's parser: the AWS SDK's standard chain and Google's Application
/// Default Credentials (whose values the cases check), and the log format the agent's logging reads.
const READ_ELSEWHERE: &[&str] = &[
    env::AWS_ACCESS_KEY_ID,
    env::AWS_SECRET_ACCESS_KEY,
    env::AWS_SESSION_TOKEN,
    env::GOOGLE_APPLICATION_CREDENTIALS,
    env::LOG_FORMAT,
];

struct Case {
    /// A sample's file name, or what a variant shows.
    name: String,
    yaml: String,
    /// The adapter configuration the agent must arrive at; also checks what is not in it (credentials a
    /// library reads, ServiceAccount annotations).
    expect: fn(&Pod, &Rendered) -> BrokerConfig,
}

fn secret(v: &str) -> Secret {
    Secret::new(v)
}

fn tls_on() -> TlsSettings {
    TlsSettings {
        enabled: true,
        ..Default::default()
    }
}

/// TLS with the CA and client certificate the operator mounts under `/etc/edgewire/tls`.
fn tls_mounted(p: &Pod, ca: bool, client: bool) -> TlsSettings {
    TlsSettings {
        enabled: true,
        ca_file: ca.then(|| p.path("/etc/edgewire/tls/ca/ca.crt")),
        client_cert: client.then(|| ClientCert {
            cert_file: p.path("/etc/edgewire/tls/client/tls.crt"),
            key_file: p.path("/etc/edgewire/tls/client/tls.key"),
        }),
        ..Default::default()
    }
}

/// The credentials `render` shows for a generated Secret.
const GENERATED_USER: &str = "edgewire";
const GENERATED_PASSWORD: &str = "GENERATED-AT-FIRST-RECONCILE";

fn has_service(r: &Rendered, name: &str) {
    assert!(
        r.services.iter().any(|s| s == name),
        "no Service {name} among {:?}",
        r.services
    );
}

fn annotation(r: &Rendered, key: &str) -> Option<String> {
    r.service_account
        .metadata
        .annotations
        .as_ref()?
        .get(key)
        .cloned()
}

fn file(p: &Pod, path: &str) -> String {
    std::fs::read_to_string(p.path(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn sample(name: &str, expect: fn(&Pod, &Rendered) -> BrokerConfig) -> Case {
    let root = Path::new(
        &std::env::var("CARGO_MANIFEST_DIR")
            .unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_owned()),
    )
    .join("../config/samples");
    Case {
        name: name.into(),
        yaml: std::fs::read_to_string(root.join(name)).unwrap_or_else(|e| panic!("{name}: {e}")),
        expect,
    }
}

/// A variant: an EventBroker `events` in namespace `factory` with `spec` (indented YAML under `spec:`),
/// after the documents in `secrets`.
fn variant(
    name: &str,
    secrets: &str,
    spec: &str,
    expect: fn(&Pod, &Rendered) -> BrokerConfig,
) -> Case {
    Case {
        name: name.into(),
        yaml: format!(
            "{secrets}\n---\napiVersion: edgewire.dev/v1alpha1\nkind: EventBroker\nmetadata: {{name: events, namespace: factory}}\nspec:\n  coreName: site-7\n{spec}"
        ),
        expect,
    }
}

/// A Secret document with string data.
fn secret_doc(name: &str, data: &[(&str, &str)]) -> String {
    let data: Vec<String> = data.iter().map(|(k, v)| format!("  {k}: {v:?}")).collect();
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}, namespace: factory}}\nstringData:\n{}\n---",
        data.join("\n")
    )
}

const CA: &str = "-----BEGIN CERTIFICATE-----\\nCA\\n-----END CERTIFICATE-----\\n";

fn tls_secrets() -> String {
    format!(
        "{}\n{}",
        secret_doc("ca", &[("ca.crt", CA)]),
        secret_doc("client", &[("tls.crt", "CRT"), ("tls.key", "KEY")])
    )
}

fn cases() -> Vec<Case> {
    vec![
        // ---- the samples ----
        sample("eventbroker-amqp091-external.yaml", |_, _| {
            BrokerConfig::Amqp(AmqpConfig {
                url: secret(
                    "amqps://edgewire:example-password-change-me@rabbitmq.example.com:5671/edge",
                ),
                tls: tls_on(),
            })
        }),
        sample("eventbroker-aws-sns-provisioned.yaml", |p, _| {
            assert_eq!(p.env[env::AWS_ACCESS_KEY_ID], "AKIAEXAMPLEEXAMPLE00");
            assert_eq!(
                p.env[env::AWS_SECRET_ACCESS_KEY],
                "example-secret-access-key"
            );
            assert!(
                !p.env.contains_key(env::AWS_SESSION_TOKEN),
                "the optional session token is absent from the Secret"
            );
            BrokerConfig::Sns(SnsConfig {
                region: "us-east-1".parse().unwrap(),
                topic_arn_prefix: "arn:aws:sns:us-east-1:123456789012:prod-".parse().unwrap(),
                endpoint: None,
                static_credentials: None,
            })
        }),
        sample("eventbroker-aws-sns.yaml", |p, r| {
            assert!(
                !p.env.contains_key(env::AWS_ACCESS_KEY_ID),
                "IRSA: no static keys"
            );
            assert_eq!(
                annotation(r, "eks.amazonaws.com/role-arn").as_deref(),
                Some("arn:aws:iam::123456789012:role/edgewire-publisher")
            );
            BrokerConfig::Sns(SnsConfig {
                region: "us-east-1".parse().unwrap(),
                topic_arn_prefix: "arn:aws:sns:us-east-1:123456789012:".parse().unwrap(),
                endpoint: None,
                static_credentials: None,
            })
        }),
        sample("eventbroker-emqx-deployed.yaml", |_, r| {
            has_service(r, "emqx-deployed-emqx");
            BrokerConfig::Mqtt(MqttConfig {
                host: "emqx-deployed-emqx.factory.svc".into(),
                port: 1883,
                qos: 1,
                auth: MqttAuth::UserPassword {
                    username: GENERATED_USER.into(),
                    password: Some(secret(GENERATED_PASSWORD)),
                },
                tls: TlsSettings::default(),
            })
        }),
        sample("eventbroker-kafka-deployed.yaml", |_, r| {
            has_service(r, "kafka-deployed-kafka");
            BrokerConfig::Kafka(KafkaConfig {
                brokers: vec!["kafka-deployed-kafka.factory.svc:9092".into()],
                topic: None,
                sasl: Some(KafkaSasl {
                    mechanism: SaslMechanism::Plain,
                    username: GENERATED_USER.into(),
                    password: secret(GENERATED_PASSWORD),
                }),
                tls: TlsSettings::default(),
            })
        }),
        sample("eventbroker-kafka-external.yaml", |_, _| {
            BrokerConfig::Kafka(KafkaConfig {
                brokers: vec![
                    "b-1.kafka.example.com:9096".into(),
                    "b-2.kafka.example.com:9096".into(),
                    "b-3.kafka.example.com:9096".into(),
                ],
                topic: None,
                sasl: Some(KafkaSasl {
                    mechanism: SaslMechanism::ScramSha512,
                    username: "edgewire-publisher".into(),
                    password: secret("example-scram-password-change-me"),
                }),
                tls: tls_on(),
            })
        }),
        sample("eventbroker-mosquitto-deployed.yaml", |_, r| {
            has_service(r, "mosquitto-deployed-mosquitto");
            BrokerConfig::Mqtt(MqttConfig {
                host: "mosquitto-deployed-mosquitto.factory.svc".into(),
                port: 1883,
                qos: 1,
                auth: MqttAuth::UserPassword {
                    username: GENERATED_USER.into(),
                    password: Some(secret(GENERATED_PASSWORD)),
                },
                tls: TlsSettings::default(),
            })
        }),
        sample("eventbroker-mqtt-external.yaml", |p, _| {
            assert!(file(p, "/etc/edgewire/tls/ca/ca.crt").contains("EXAMPLE-ONLY"));
            BrokerConfig::Mqtt(MqttConfig {
                host: "mqtt.example.com".into(),
                port: 8883,
                qos: 2,
                auth: MqttAuth::Jwt {
                    username: None,
                    token: secret("example.jwt-not-a-real-token.change-me"),
                },
                tls: TlsSettings {
                    server_name: Some("mqtt.example.com".into()),
                    ..tls_mounted(p, true, true)
                },
            })
        }),
        sample("eventbroker-nats-deployed.yaml", |_, r| {
            has_service(r, "nats-deployed-nats");
            BrokerConfig::Nats(NatsConfig {
                urls: vec!["nats://nats-deployed-nats.factory.svc:4222".into()],
                jetstream: Some(JetStreamConfig {
                    stream: "EDGE_EVENTS".into(),
                    max_age: Duration::from_secs(168 * 3600),
                }),
                auth: NatsAuth::Token(secret("example-nats-token-change-me")),
                tls: TlsSettings::default(),
            })
        }),
        sample("eventbroker-nats-external.yaml", |p, _| {
            BrokerConfig::Nats(NatsConfig {
                urls: (1..=3)
                    .map(|i| format!("tls://nats-{i}.example.com:4222"))
                    .collect(),
                jetstream: Some(JetStreamConfig {
                    stream: "EDGE_EVENTS".into(),
                    max_age: Duration::from_secs(72 * 3600),
                }),
                auth: NatsAuth::UserPassword {
                    username: "edgewire-publisher".into(),
                    password: secret("example-nats-password-change-me"),
                },
                tls: tls_mounted(p, true, false),
            })
        }),
        sample("eventbroker-pubsub-workload-identity.yaml", |p, r| {
            assert!(
                !p.env.contains_key(env::GOOGLE_APPLICATION_CREDENTIALS),
                "Workload Identity: Application Default Credentials from the metadata server"
            );
            assert_eq!(
                annotation(r, "iam.gke.io/gcp-service-account").as_deref(),
                Some("edgewire-publisher@my-project-123.iam.gserviceaccount.com")
            );
            BrokerConfig::PubSub(PubSubConfig {
                project: "my-project-123".parse().unwrap(),
                topic_id_prefix: Default::default(),
                endpoint: None,
                credentials_file: None,
            })
        }),
        sample("eventbroker-pubsub.yaml", |p, _| {
            let key = &p.env[env::GOOGLE_APPLICATION_CREDENTIALS];
            let json: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(key).unwrap()).unwrap();
            assert_eq!(
                json["type"], "service_account",
                "the mounted key is the Secret's"
            );
            BrokerConfig::PubSub(PubSubConfig {
                project: "my-project-123".parse().unwrap(),
                topic_id_prefix: "edge-prod-".parse().unwrap(),
                endpoint: None,
                credentials_file: None,
            })
        }),
        sample("eventbroker-rabbitmq-deployed.yaml", |_, r| {
            has_service(r, "rabbitmq-deployed-rabbitmq");
            BrokerConfig::Amqp(AmqpConfig {
                url: secret(&format!(
                    "amqp://{GENERATED_USER}:{GENERATED_PASSWORD}@rabbitmq-deployed-rabbitmq.factory.svc:5672/%2f"
                )),
                tls: TlsSettings::default(),
            })
        }),
        sample("eventbroker-redis-deployed.yaml", |_, r| {
            has_service(r, "redis-deployed-redis");
            BrokerConfig::Redis(RedisConfig {
                url: secret(&format!(
                    "redis://{GENERATED_USER}:{GENERATED_PASSWORD}@redis-deployed-redis.factory.svc:6379"
                )),
                tls: TlsSettings::default(),
            })
        }),
        sample("eventbroker-redis-external.yaml", |_, _| {
            BrokerConfig::Redis(RedisConfig {
                url: secret("rediss://default:example-password-change-me@redis.example.com:6380"),
                tls: tls_on(),
            })
        }),
        sample("eventbroker-redpanda-deployed.yaml", |_, r| {
            has_service(r, "redpanda-deployed-redpanda");
            BrokerConfig::Kafka(KafkaConfig {
                brokers: vec!["redpanda-deployed-redpanda.factory.svc:9092".into()],
                topic: None,
                sasl: Some(KafkaSasl {
                    mechanism: SaslMechanism::ScramSha256,
                    username: "edgewire-publisher".into(),
                    password: secret("example-scram-password-change-me"),
                }),
                tls: TlsSettings::default(),
            })
        }),
        // ---- the spec variants the samples do not show ----
        variant(
            "nats token, core NATS, no TLS",
            &secret_doc("nats", &[("token", "t0k3n")]),
            "  adapter: nats\n  nats:\n    urls: [\"nats://n1:4222\", \"n2:4222\"]\n    auth: {token: {name: nats, key: token}}\n",
            |_, _| {
                BrokerConfig::Nats(NatsConfig {
                    urls: vec!["nats://n1:4222".into(), "n2:4222".into()],
                    jetstream: None,
                    auth: NatsAuth::Token(secret("t0k3n")),
                    tls: TlsSettings::default(),
                })
            },
        ),
        variant(
            "nats NKEY seed and user JWT (creds), mTLS, TLS 1.3, server name",
            &format!(
                "{}\n{}",
                secret_doc(
                    "nats-creds",
                    &[
                        (
                            "seed",
                            "SUACSSL3UAHUDXKFSNVUZRF5UHPMWZ6BFDTJ7M6USDXIEDNPPQYYYCU3VY"
                        ),
                        ("jwt", "eyJ0eXAiOiJKV1QifQ.e30.sig")
                    ]
                ),
                tls_secrets()
            ),
            "  adapter: nats\n  nats:\n    urls: [\"tls://n1:4222\"]\n    jetStream: {enabled: true, stream: EDGE, maxAge: 1h30m}\n    auth: {nkey: {seed: {name: nats-creds, key: seed}, jwt: {name: nats-creds, key: jwt}}}\n    tls: {enabled: true, caSecretRef: {name: ca, key: ca.crt}, clientCertSecretRef: {secretName: client}, minVersion: \"1.3\", serverName: nats.internal}\n",
            |p, _| {
                BrokerConfig::Nats(NatsConfig {
                    urls: vec!["tls://n1:4222".into()],
                    jetstream: Some(JetStreamConfig {
                        stream: "EDGE".into(),
                        max_age: Duration::from_secs(5400),
                    }),
                    auth: NatsAuth::Nkey {
                        seed: secret("SUACSSL3UAHUDXKFSNVUZRF5UHPMWZ6BFDTJ7M6USDXIEDNPPQYYYCU3VY"),
                        jwt: Some(secret("eyJ0eXAiOiJKV1QifQ.e30.sig")),
                    },
                    tls: TlsSettings {
                        min_version: TlsVersion::V1_3,
                        server_name: Some("nats.internal".into()),
                        ..tls_mounted(p, true, true)
                    },
                })
            },
        ),
        variant(
            "nats NKEY seed alone",
            &secret_doc(
                "nkey",
                &[(
                    "seed",
                    "SUACSSL3UAHUDXKFSNVUZRF5UHPMWZ6BFDTJ7M6USDXIEDNPPQYYYCU3VY",
                )],
            ),
            "  adapter: nats\n  nats:\n    urls: [\"nats://n1:4222\"]\n    auth: {nkey: {seed: {name: nkey, key: seed}}}\n",
            |_, _| {
                BrokerConfig::Nats(NatsConfig {
                    urls: vec!["nats://n1:4222".into()],
                    jetstream: None,
                    auth: NatsAuth::Nkey {
                        seed: secret("SUACSSL3UAHUDXKFSNVUZRF5UHPMWZ6BFDTJ7M6USDXIEDNPPQYYYCU3VY"),
                        jwt: None,
                    },
                    tls: TlsSettings::default(),
                })
            },
        ),
        variant(
            "nats deployed with generated credentials (JetStream by default)",
            "",
            "  adapter: nats\n  deployBroker: {kind: nats, storage: {size: 1Gi}}\n",
            |_, r| {
                has_service(r, "events-nats");
                BrokerConfig::Nats(NatsConfig {
                    urls: vec!["nats://events-nats.factory.svc:4222".into()],
                    jetstream: Some(JetStreamConfig {
                        stream: "EDGE_EVENTS".into(),
                        max_age: Duration::from_secs(168 * 3600),
                    }),
                    auth: NatsAuth::UserPassword {
                        username: GENERATED_USER.into(),
                        password: secret(GENERATED_PASSWORD),
                    },
                    tls: TlsSettings::default(),
                })
            },
        ),
        variant(
            "redpanda deployed with generated credentials (its listener takes SCRAM-SHA-256)",
            "",
            "  adapter: kafka\n  deployBroker: {kind: redpanda, storage: {size: 1Gi}}\n",
            |_, r| {
                has_service(r, "events-redpanda");
                BrokerConfig::Kafka(KafkaConfig {
                    brokers: vec!["events-redpanda.factory.svc:9092".into()],
                    topic: None,
                    sasl: Some(KafkaSasl {
                        mechanism: SaslMechanism::ScramSha256,
                        username: GENERATED_USER.into(),
                        password: secret(GENERATED_PASSWORD),
                    }),
                    tls: TlsSettings::default(),
                })
            },
        ),
        variant(
            "kafka SASL plain, one topic",
            &secret_doc("sasl", &[("username", "u"), ("password", "p")]),
            "  adapter: kafka\n  kafka:\n    urls: [\"k1:9092\"]\n    topic: edge.all\n    sasl: {mechanism: plain, secretName: sasl}\n",
            |_, _| {
                BrokerConfig::Kafka(KafkaConfig {
                    brokers: vec!["k1:9092".into()],
                    topic: Some("edge.all".into()),
                    sasl: Some(KafkaSasl {
                        mechanism: SaslMechanism::Plain,
                        username: "u".into(),
                        password: secret("p"),
                    }),
                    tls: TlsSettings::default(),
                })
            },
        ),
        variant(
            "kafka SASL SCRAM-SHA-256 over TLS with a CA",
            &format!(
                "{}\n{}",
                secret_doc("sasl", &[("username", "u"), ("password", "p")]),
                tls_secrets()
            ),
            "  adapter: kafka\n  kafka:\n    urls: [\"k1:9093\"]\n    sasl: {mechanism: scram_sha_256, secretName: sasl}\n    tls: {enabled: true, caSecretRef: {name: ca, key: ca.crt}}\n",
            |p, _| {
                BrokerConfig::Kafka(KafkaConfig {
                    brokers: vec!["k1:9093".into()],
                    topic: None,
                    sasl: Some(KafkaSasl {
                        mechanism: SaslMechanism::ScramSha256,
                        username: "u".into(),
                        password: secret("p"),
                    }),
                    tls: tls_mounted(p, true, false),
                })
            },
        ),
        variant(
            "kafka without SASL, mTLS",
            &tls_secrets(),
            "  adapter: kafka\n  kafka:\n    urls: [\"k1:9093\"]\n    tls: {enabled: true, caSecretRef: {name: ca, key: ca.crt}, clientCertSecretRef: {secretName: client}}\n",
            |p, _| {
                BrokerConfig::Kafka(KafkaConfig {
                    brokers: vec!["k1:9093".into()],
                    topic: None,
                    sasl: None,
                    tls: tls_mounted(p, true, true),
                })
            },
        ),
        variant(
            "amqp091 URL Secret, no TLS",
            &secret_doc("amqp", &[("url", "amqp://u:p@rabbit:5672/%2f")]),
            "  adapter: amqp091\n  amqp091:\n    url: {name: amqp, key: url}\n",
            |_, _| {
                BrokerConfig::Amqp(AmqpConfig {
                    url: secret("amqp://u:p@rabbit:5672/%2f"),
                    tls: TlsSettings::default(),
                })
            },
        ),
        variant(
            "amqp091 URL Secret with mTLS",
            &format!(
                "{}\n{}",
                secret_doc("amqp", &[("url", "amqp://u:p@rabbit:5671/%2f")]),
                tls_secrets()
            ),
            "  adapter: amqp091\n  amqp091:\n    url: {name: amqp, key: url}\n    tls: {enabled: true, caSecretRef: {name: ca, key: ca.crt}, clientCertSecretRef: {secretName: client}}\n",
            |p, _| {
                BrokerConfig::Amqp(AmqpConfig {
                    url: secret("amqp://u:p@rabbit:5671/%2f"),
                    tls: tls_mounted(p, true, true),
                })
            },
        ),
        variant(
            "redis URL Secret, no TLS",
            &secret_doc("redis", &[("url", "redis://:pw@redis:6379")]),
            "  adapter: redis\n  redis:\n    url: {name: redis, key: url}\n",
            |_, _| {
                BrokerConfig::Redis(RedisConfig {
                    url: secret("redis://:pw@redis:6379"),
                    tls: TlsSettings::default(),
                })
            },
        ),
        variant(
            "redis URL Secret, TLS with a CA",
            &format!(
                "{}\n{}",
                secret_doc("redis", &[("url", "redis://:pw@redis:6380")]),
                tls_secrets()
            ),
            "  adapter: redis\n  redis:\n    url: {name: redis, key: url}\n    tls: {enabled: true, caSecretRef: {name: ca, key: ca.crt}}\n",
            |p, _| {
                BrokerConfig::Redis(RedisConfig {
                    url: secret("redis://:pw@redis:6380"),
                    tls: tls_mounted(p, true, false),
                })
            },
        ),
        variant(
            "mqtt user/password, no TLS",
            &secret_doc("mqtt", &[("username", "dev"), ("password", "pw")]),
            "  adapter: mqtt\n  mqtt:\n    url: mqtt.local:1884\n    qos: 0\n    auth: {userPassword: {secretName: mqtt}}\n",
            |_, _| {
                BrokerConfig::Mqtt(MqttConfig {
                    host: "mqtt.local".into(),
                    port: 1884,
                    qos: 0,
                    auth: MqttAuth::UserPassword {
                        username: "dev".into(),
                        password: Some(secret("pw")),
                    },
                    tls: TlsSettings::default(),
                })
            },
        ),
        variant(
            "mqtt without auth, TLS with the system roots",
            "",
            "  adapter: mqtt\n  mqtt:\n    url: mqtt.example.com:8883\n    tls: {enabled: true}\n",
            |_, _| {
                BrokerConfig::Mqtt(MqttConfig {
                    host: "mqtt.example.com".into(),
                    port: 8883,
                    qos: 1,
                    auth: MqttAuth::None,
                    tls: tls_on(),
                })
            },
        ),
        variant(
            "aws_sns static keys with a session token, endpoint override",
            &secret_doc(
                "aws",
                &[
                    ("AWS_ACCESS_KEY_ID", "AKIA0"),
                    ("AWS_SECRET_ACCESS_KEY", "s3"),
                    ("AWS_SESSION_TOKEN", "tok"),
                ],
            ),
            "  adapter: aws_sns\n  awsSns:\n    region: eu-west-1\n    topicArnPrefix: \"arn:aws:sns:eu-west-1:123456789012:edge-\"\n    endpoint: http://moto:5000\n    credentials: {secretName: aws}\n",
            |p, _| {
                assert_eq!(p.env[env::AWS_ACCESS_KEY_ID], "AKIA0");
                assert_eq!(p.env[env::AWS_SECRET_ACCESS_KEY], "s3");
                assert_eq!(p.env[env::AWS_SESSION_TOKEN], "tok");
                BrokerConfig::Sns(SnsConfig {
                    region: "eu-west-1".parse().unwrap(),
                    topic_arn_prefix: "arn:aws:sns:eu-west-1:123456789012:edge-".parse().unwrap(),
                    endpoint: Some("http://moto:5000".into()),
                    static_credentials: None,
                })
            },
        ),
        variant(
            "google_pubsub emulator",
            "",
            "  adapter: google_pubsub\n  googlePubsub:\n    project: local-project\n    topicIdPrefix: dev-\n    endpoint: http://pubsub-emulator:8085\n",
            |_, _| {
                BrokerConfig::PubSub(PubSubConfig {
                    project: "local-project".parse().unwrap(),
                    topic_id_prefix: "dev-".parse().unwrap(),
                    endpoint: Some("http://pubsub-emulator:8085".into()),
                    credentials_file: None,
                })
            },
        ),
    ]
}

/// The adapter and auth modes a configuration shows (with the pod's environment for what a library reads).
fn modes(b: &BrokerConfig, p: &Pod) -> Vec<String> {
    let tls = |t: &TlsSettings| {
        [
            t.enabled.then_some("tls"),
            t.client_cert.as_ref().map(|_| "mtls"),
        ]
        .into_iter()
        .flatten()
        .map(String::from)
        .collect::<Vec<_>>()
    };
    let (adapter, mut m) = match b {
        BrokerConfig::Nats(n) => {
            let mut m = vec![
                match &n.auth {
                    NatsAuth::None => "no auth",
                    NatsAuth::Token(_) => "token",
                    NatsAuth::UserPassword { .. } => "user/password",
                    NatsAuth::Nkey { jwt: Some(_), .. } => "nkey seed + jwt (creds)",
                    NatsAuth::Nkey { jwt: None, .. } => "nkey seed",
                }
                .to_string(),
            ];
            m.push(
                if n.jetstream.is_some() {
                    "jetstream"
                } else {
                    "core"
                }
                .into(),
            );
            m.extend(tls(&n.tls));
            ("nats", m)
        }
        BrokerConfig::Kafka(k) => {
            let mut m = vec![match &k.sasl {
                None => "no sasl".to_string(),
                Some(s) => format!("sasl {:?}", s.mechanism),
            }];
            m.extend(tls(&k.tls));
            ("kafka", m)
        }
        BrokerConfig::Amqp(a) => {
            let mut m = vec!["url secret".to_string()];
            m.extend(tls(&a.tls));
            ("amqp091", m)
        }
        BrokerConfig::Redis(r) => {
            let mut m = vec!["url secret".to_string()];
            m.extend(tls(&r.tls));
            ("redis", m)
        }
        BrokerConfig::Mqtt(q) => {
            let mut m = vec![
                match &q.auth {
                    MqttAuth::None => "no auth",
                    MqttAuth::Jwt { .. } => "jwt",
                    MqttAuth::UserPassword { .. } => "user/password",
                }
                .to_string(),
            ];
            m.extend(tls(&q.tls));
            ("mqtt", m)
        }
        BrokerConfig::Sns(_) => (
            "aws_sns",
            vec![
                if p.env.contains_key(env::AWS_ACCESS_KEY_ID) {
                    "static keys"
                } else {
                    "standard chain (IRSA role)"
                }
                .to_string(),
            ],
        ),
        BrokerConfig::PubSub(c) => (
            "google_pubsub",
            vec![
                if c.is_emulator() {
                    "emulator"
                } else if p.env.contains_key(env::GOOGLE_APPLICATION_CREDENTIALS) {
                    "service-account key"
                } else {
                    "application default credentials"
                }
                .to_string(),
            ],
        ),
    };
    m.iter_mut().for_each(|s| *s = format!("{adapter}: {s}"));
    m
}

#[test]
fn what_the_operator_renders_the_agent_parses() {
    let mut covered = BTreeSet::new();
    for case in cases() {
        let name = case.name.as_str();
        let rendered = render(name, &case.yaml);
        let pod = Pod::start(name, &rendered);
        let read = RefCell::new(BTreeSet::new());
        let config = from_lookup(|k| {
            read.borrow_mut().insert(k.to_string());
            pod.env.get(k).cloned()
        })
        .unwrap_or_else(|e| {
            panic!(
                "{name}: the agent refuses what the operator renders: {e}\n(variables: {:?})",
                pod.env.keys().collect::<Vec<_>>()
            )
        });
        assert!(config.enabled, "{name}");
        let eb = case
            .yaml
            .split("\n---")
            .find(|d| d.contains("kind: EventBroker"))
            .unwrap();
        let core = eb
            .lines()
            .find_map(|l| l.trim().strip_prefix("coreName: "))
            .unwrap();
        assert_eq!(config.core_name, core, "{name}");
        let broker = config.broker.expect("enabled");
        assert_eq!(broker, (case.expect)(&pod, &rendered), "{name}");
        assert!(config.notes.is_empty(), "{name}: {:?}", config.notes);
        // The ingress listens where the container port is.
        let addr = listen_addr(|k| {
            read.borrow_mut().insert(k.to_string());
            pod.env.get(k).cloned()
        })
        .unwrap_or_else(|e| panic!("{name}: {e}"));
        let ports: Vec<i32> = rendered
            .publisher()
            .ports
            .iter()
            .flatten()
            .map(|p| p.container_port)
            .collect();
        assert_eq!(ports, vec![i32::from(addr.port())], "{name}");
        // Every variable the operator sets is read: by the parser, or by the library it is meant for.
        let read = read.into_inner();
        for var in pod.env.keys() {
            assert!(
                read.contains(var) || READ_ELSEWHERE.contains(&var.as_str()),
                "{name}: the operator sets {var}, which the agent never reads"
            );
        }
        let m = modes(&broker, &pod);
        eprintln!("{name}: {}", m.join(", "));
        covered.extend(m);
    }
    // Every adapter and auth mode the spec offers, and TLS wherever an adapter has it.
    let required = [
        "nats: token",
        "nats: user/password",
        "nats: nkey seed",
        "nats: nkey seed + jwt (creds)",
        "nats: jetstream",
        "nats: core",
        "nats: tls",
        "nats: mtls",
        "kafka: no sasl",
        "kafka: sasl Plain",
        "kafka: sasl ScramSha256",
        "kafka: sasl ScramSha512",
        "kafka: tls",
        "kafka: mtls",
        "amqp091: url secret",
        "amqp091: tls",
        "amqp091: mtls",
        "redis: url secret",
        "redis: tls",
        "mqtt: no auth",
        "mqtt: user/password",
        "mqtt: jwt",
        "mqtt: tls",
        "mqtt: mtls",
        "aws_sns: static keys",
        "aws_sns: standard chain (IRSA role)",
        "google_pubsub: service-account key",
        "google_pubsub: application default credentials",
        "google_pubsub: emulator",
    ];
    let missing: Vec<&str> = required
        .iter()
        .copied()
        .filter(|r| !covered.contains(*r))
        .collect();
    assert!(missing.is_empty(), "no case shows {missing:?}");
}

/// Each sample EventBroker is a case above, so a new sample joins the contract or this fails.
#[test]
fn every_sample_event_broker_is_a_case() {
    let root = Path::new(
        &std::env::var("CARGO_MANIFEST_DIR")
            .unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_owned()),
    )
    .join("../config/samples");
    let names: BTreeSet<String> = cases().into_iter().map(|c| c.name).collect();
    let mut samples = 0;
    for entry in std::fs::read_dir(root).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        if name.starts_with("eventbroker-") {
            samples += 1;
            assert!(
                names.contains(&name),
                "sample {name} is no case of the env contract"
            );
        }
    }
    assert!(samples >= 16, "{samples} samples");
}
