//! `--config FILE`: an `EventBroker` YAML for edge boxes without Kubernetes. Secret references resolve
//! from files `DIR/<secret-name>/<key>` under `--secrets-dir DIR`, the layout of mounted Secrets.

use std::path::{Path, PathBuf};

use edgewire_api::env as api_env;
use edgewire_api::{
    Adapter, EventBroker, EventBrokerSpec, PASSWORD_KEY, SecretKeyRef, SecretRef, Tls, USERNAME_KEY,
};

use super::*;
use crate::secret;

/// Reads and converts an EventBroker file.
pub fn from_file(path: &Path, secrets_dir: Option<&Path>) -> Result<PublisherConfig, ConfigError> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError::new(&name, format!("cannot read: {e}")))?;
    let eb: EventBroker = serde_norway::from_str(&text).map_err(|e| {
        ConfigError::new(
            &name,
            format!("not an EventBroker: {}", first_line(&e.to_string())),
        )
    })?;
    from_spec(&eb.spec, secrets_dir)
}

/// A spec field with a rule of the API, checked by its type (as the operator's validation checks it).
fn checked<T: std::str::FromStr<Err = String>>(field: &str, value: &str) -> Result<T, ConfigError> {
    T::from_str(value).map_err(|m| ConfigError::new(field, m))
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or(s)
}

struct Secrets<'a> {
    dir: Option<&'a Path>,
}

impl Secrets<'_> {
    fn path(&self, field: &str, name: &str, key: &str) -> Result<PathBuf, ConfigError> {
        let dir = self.dir.ok_or_else(|| {
            ConfigError::new(
                field,
                format!("references Secret {name:?}: pass --secrets-dir"),
            )
        })?;
        if name.contains('/') || key.contains('/') || name.starts_with('.') || key.starts_with("..")
        {
            return Err(ConfigError::new(
                field,
                "Secret name and key must not contain '/'",
            ));
        }
        let p = secret::key_path(dir, name, key);
        if !p.is_file() {
            return Err(ConfigError::new(
                field,
                format!("Secret file {} does not exist", p.display()),
            ));
        }
        Ok(p)
    }

    fn value(&self, field: &str, r: &SecretKeyRef) -> Result<Secret, ConfigError> {
        let p = self.path(field, &r.name, &r.key)?;
        let v = secret::read_file(&p).map_err(|e| {
            ConfigError::new(field, format!("cannot read {}: {}", p.display(), e.kind()))
        })?;
        if v.expose().is_empty() {
            return Err(ConfigError::new(
                field,
                format!("Secret file {} is empty", p.display()),
            ));
        }
        Ok(v)
    }

    fn user_password(&self, field: &str, r: &SecretRef) -> Result<(String, Secret), ConfigError> {
        let user = self.value(field, &SecretKeyRef::new(&r.secret_name, USERNAME_KEY))?;
        let pass = self.value(field, &SecretKeyRef::new(&r.secret_name, PASSWORD_KEY))?;
        Ok((user.expose().to_string(), pass))
    }

    fn tls(
        &self,
        field: &str,
        tls: &Option<Tls>,
        implied: bool,
    ) -> Result<TlsSettings, ConfigError> {
        let Some(t) = tls else {
            return Ok(TlsSettings {
                enabled: implied,
                ..Default::default()
            });
        };
        let enabled = t.enabled || implied;
        let ca_file = match &t.ca_secret_ref {
            Some(r) => Some(self.path(&format!("{field}.caSecretRef"), &r.name, &r.key)?),
            None => None,
        };
        let client_cert = match &t.client_cert_secret_ref {
            Some(r) => {
                let f = format!("{field}.clientCertSecretRef");
                if !enabled {
                    return Err(ConfigError::new(
                        f,
                        format!("requires {field}.enabled: true (mTLS requires SSL)"),
                    ));
                }
                Some(ClientCert {
                    cert_file: self.path(&f, &r.secret_name, secret::TLS_CERT_KEY)?,
                    key_file: self.path(&f, &r.secret_name, secret::TLS_KEY_KEY)?,
                })
            }
            None => None,
        };
        Ok(TlsSettings {
            enabled,
            ca_file,
            client_cert,
            min_version: t.min_version,
            server_name: t.server_name.clone(),
        })
    }
}

/// Converts an EventBroker spec (a file, or what the operator renders) to the publisher configuration.
pub fn from_spec(
    spec: &EventBrokerSpec,
    secrets_dir: Option<&Path>,
) -> Result<PublisherConfig, ConfigError> {
    let s = Secrets { dir: secrets_dir };
    let missing = |field: &str| {
        ConfigError::new(
            field,
            format!(
                "required for adapter {} (deployBroker is resolved by the operator, not in --config mode)",
                spec.adapter.as_str()
            ),
        )
    };
    let broker = match spec.adapter.canonical() {
        Adapter::Nats => {
            let n = spec.nats.as_ref().ok_or_else(|| missing("spec.nats"))?;
            if n.urls.is_empty() {
                return Err(missing("spec.nats.urls"));
            }
            let implied = n.urls.iter().any(|u| u.starts_with("tls://"));
            let jetstream = match &n.jet_stream {
                Some(js) if js.enabled => Some(JetStreamConfig {
                    stream: js.stream.clone(),
                    max_age: parse_go_duration(&js.max_age).ok_or_else(|| {
                        ConfigError::new(
                            "spec.nats.jetStream.maxAge",
                            format!("must be a Go duration, got {:?}", js.max_age),
                        )
                    })?,
                }),
                _ => None,
            };
            let auth = match &n.auth {
                None => NatsAuth::None,
                Some(a) => {
                    if let Some(t) = &a.token {
                        NatsAuth::Token(s.value("spec.nats.auth.token", t)?)
                    } else if let Some(up) = &a.user_password {
                        let (username, password) =
                            s.user_password("spec.nats.auth.userPassword", up)?;
                        NatsAuth::UserPassword { username, password }
                    } else if let Some(nk) = &a.nkey {
                        let seed = s.value("spec.nats.auth.nkey.seed", &nk.seed)?;
                        let jwt = match &nk.jwt {
                            Some(j) => Some(s.value("spec.nats.auth.nkey.jwt", j)?),
                            None => None,
                        };
                        NatsAuth::Nkey { seed, jwt }
                    } else {
                        NatsAuth::None
                    }
                }
            };
            BrokerConfig::Nats(NatsConfig {
                urls: n.urls.clone(),
                jetstream,
                auth,
                tls: s.tls("spec.nats.tls", &n.tls, implied)?,
            })
        }
        Adapter::Kafka => {
            let k = spec.kafka.as_ref().ok_or_else(|| missing("spec.kafka"))?;
            if k.urls.is_empty() {
                return Err(missing("spec.kafka.urls"));
            }
            let sasl = match &k.sasl {
                Some(sa) => {
                    let (username, password) = s.user_password(
                        "spec.kafka.sasl.secretName",
                        &SecretRef::new(&sa.secret_name),
                    )?;
                    Some(KafkaSasl {
                        mechanism: sa.mechanism,
                        username,
                        password,
                    })
                }
                None => None,
            };
            BrokerConfig::Kafka(KafkaConfig {
                brokers: k.urls.clone(),
                topic: k.topic.clone(),
                sasl,
                tls: s.tls("spec.kafka.tls", &k.tls, false)?,
            })
        }
        Adapter::Amqp091 => {
            let a = spec
                .amqp091
                .as_ref()
                .ok_or_else(|| missing("spec.amqp091"))?;
            let r = a.url.as_ref().ok_or_else(|| missing("spec.amqp091.url"))?;
            let url = s.value("spec.amqp091.url", r)?;
            let implied = check_scheme("spec.amqp091.url", url.expose(), "amqp", "amqps")?;
            BrokerConfig::Amqp(AmqpConfig {
                url,
                tls: s.tls("spec.amqp091.tls", &a.tls, implied)?,
            })
        }
        Adapter::Redis => {
            let r = spec.redis.as_ref().ok_or_else(|| missing("spec.redis"))?;
            let u = r.url.as_ref().ok_or_else(|| missing("spec.redis.url"))?;
            let url = s.value("spec.redis.url", u)?;
            let implied = check_scheme("spec.redis.url", url.expose(), "redis", "rediss")?;
            BrokerConfig::Redis(RedisConfig {
                url,
                tls: s.tls("spec.redis.tls", &r.tls, implied)?,
            })
        }
        Adapter::Mqtt => {
            let m = spec.mqtt.as_ref().ok_or_else(|| missing("spec.mqtt"))?;
            let url = m.url.as_ref().ok_or_else(|| missing("spec.mqtt.url"))?;
            let tls = s.tls("spec.mqtt.tls", &m.tls, false)?;
            let (host, port) = split_host_port(url, if tls.enabled { 8883 } else { 1883 })
                .ok_or_else(|| {
                    ConfigError::new(
                        "spec.mqtt.url",
                        format!(
                            "must be host:port without a scheme, got {:?}",
                            crate::secret::redact_url(url)
                        ),
                    )
                })?;
            if m.qos > 2 {
                return Err(ConfigError::new(
                    "spec.mqtt.qos",
                    format!("must be 0, 1 or 2, got {}", m.qos),
                ));
            }
            let auth = match &m.auth {
                None => MqttAuth::None,
                Some(a) => {
                    if let Some(j) = &a.jwt {
                        MqttAuth::Jwt {
                            username: None,
                            token: s.value("spec.mqtt.auth.jwt", j)?,
                        }
                    } else if let Some(up) = &a.user_password {
                        let (username, password) =
                            s.user_password("spec.mqtt.auth.userPassword", up)?;
                        MqttAuth::UserPassword {
                            username,
                            password: Some(password),
                        }
                    } else {
                        MqttAuth::None
                    }
                }
            };
            BrokerConfig::Mqtt(MqttConfig {
                host,
                port,
                qos: m.qos,
                auth,
                tls,
            })
        }
        Adapter::AwsSns => {
            let a = spec
                .aws_sns
                .as_ref()
                .ok_or_else(|| missing("spec.awsSns"))?;
            let region = checked("spec.awsSns.region", &a.region)?;
            let topic_arn_prefix = checked(
                "spec.awsSns.topicArnPrefix",
                a.topic_arn_prefix
                    .as_deref()
                    .ok_or_else(|| missing("spec.awsSns.topicArnPrefix"))?,
            )?;
            let endpoint = endpoint_override("spec.awsSns.endpoint", a.endpoint.as_deref())?;
            let static_credentials = match &a.credentials {
                None => None,
                Some(r) => {
                    let f = "spec.awsSns.credentials";
                    let key = |k: &str| SecretKeyRef::new(&r.secret_name, k);
                    let optional = |k: &str| s.value(f, &key(k)).ok();
                    Some(AwsStaticCredentials {
                        access_key_id: s.value(f, &key(api_env::AWS_ACCESS_KEY_ID))?,
                        secret_access_key: s.value(f, &key(api_env::AWS_SECRET_ACCESS_KEY))?,
                        session_token: optional(api_env::AWS_SESSION_TOKEN),
                    })
                }
            };
            BrokerConfig::Sns(SnsConfig {
                region,
                topic_arn_prefix,
                endpoint,
                static_credentials,
            })
        }
        Adapter::GooglePubsub => {
            let g = spec
                .google_pubsub
                .as_ref()
                .ok_or_else(|| missing("spec.googlePubsub"))?;
            let project = checked("spec.googlePubsub.project", &g.project)?;
            let topic_id_prefix = match &g.topic_id_prefix {
                Some(p) => checked("spec.googlePubsub.topicIdPrefix", p)?,
                None => PubsubTopicIdPrefix::default(),
            };
            let credentials_file = match &g.credentials {
                None => None,
                Some(r) => Some(s.path("spec.googlePubsub.credentials", &r.name, &r.key)?),
            };
            BrokerConfig::PubSub(PubSubConfig {
                project,
                topic_id_prefix,
                endpoint: endpoint_override("spec.googlePubsub.endpoint", g.endpoint.as_deref())?,
                credentials_file,
            })
        }
        other => {
            return Err(ConfigError::new(
                "spec.adapter",
                format!(
                    "adapter {:?} is not available in this build of edgewire-agent",
                    other.as_str()
                ),
            ));
        }
    };
    Ok(PublisherConfig {
        enabled: true,
        core_name: spec.core_name.clone(),
        broker: Some(broker),
        notes: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, rel: &str, content: &str) {
        let p = dir.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, content).unwrap();
    }

    fn load(yaml: &str, secrets: Option<&Path>) -> Result<PublisherConfig, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("eb.yaml");
        std::fs::write(&f, yaml).unwrap();
        from_file(&f, secrets)
    }

    const HEAD: &str =
        "apiVersion: edgewire.dev/v1alpha1\nkind: EventBroker\nmetadata: {name: events}\n";

    #[test]
    fn nats_with_token_and_jetstream_from_a_file() {
        let secrets = tempfile::tempdir().unwrap();
        write(secrets.path(), "nats-creds/token", "s3cret\n");
        let c = load(
            &format!(
                "{HEAD}spec:\n  coreName: prod-us\n  adapter: nats\n  nats:\n    urls: [nats://n:4222]\n    jetStream: {{enabled: true, maxAge: 1h}}\n    auth: {{token: {{name: nats-creds, key: token}}}}\n"
            ),
            Some(secrets.path()),
        )
        .unwrap();
        assert_eq!(c.core_name, "prod-us");
        let Some(BrokerConfig::Nats(n)) = c.broker else {
            panic!()
        };
        assert_eq!(n.auth, NatsAuth::Token(Secret::new("s3cret")));
        assert_eq!(
            n.jetstream,
            Some(JetStreamConfig {
                stream: "EDGE_EVENTS".into(),
                max_age: std::time::Duration::from_secs(3600)
            })
        );
    }

    #[test]
    fn file_and_env_produce_the_same_config() {
        let secrets = tempfile::tempdir().unwrap();
        write(secrets.path(), "mq/username", "dev");
        write(secrets.path(), "mq/password", "pw");
        let from_file = load(
            &format!("{HEAD}spec:\n  adapter: mqtt\n  mqtt:\n    url: broker:1883\n    qos: 2\n    auth: {{userPassword: {{secretName: mq}}}}\n"),
            Some(secrets.path()),
        )
        .unwrap();
        let vars = [
            ("EVENT_BROKER_ENABLED", "true"),
            ("EVENT_BROKER_ADAPTER", "mqtt"),
            ("EVENT_BROKER_MQTT_URL", "broker:1883"),
            ("EVENT_BROKER_MQTT_QOS", "2"),
            ("EVENT_BROKER_MQTT_USERNAME", "dev"),
            ("EVENT_BROKER_MQTT_PASSWORD", "pw"),
        ];
        let from_env = env::from_lookup(|k| {
            vars.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        })
        .unwrap();
        assert_eq!(from_file, from_env);
    }

    #[test]
    fn missing_secret_and_missing_dir_name_the_field() {
        let yaml = format!(
            "{HEAD}spec:\n  adapter: redis\n  redis:\n    url: {{name: redis-url, key: url}}\n"
        );
        assert_eq!(load(&yaml, None).unwrap_err().name, "spec.redis.url");
        let secrets = tempfile::tempdir().unwrap();
        let e = load(&yaml, Some(secrets.path())).unwrap_err();
        assert_eq!(e.name, "spec.redis.url");
        assert!(e.message.contains("redis-url/url"), "{e}");
        write(secrets.path(), "redis-url/url", "rediss://:pw@h:6380");
        let Some(BrokerConfig::Redis(r)) = load(&yaml, Some(secrets.path())).unwrap().broker else {
            panic!()
        };
        assert!(r.tls.enabled);
    }

    #[test]
    fn client_cert_paths_come_from_a_tls_secret() {
        let secrets = tempfile::tempdir().unwrap();
        write(secrets.path(), "ca/ca.crt", "x");
        write(secrets.path(), "client/tls.crt", "x");
        write(secrets.path(), "client/tls.key", "x");
        let yaml = |enabled: bool| {
            format!(
                "{HEAD}spec:\n  adapter: mqtt\n  mqtt:\n    url: broker:8883\n    tls: {{enabled: {enabled}, caSecretRef: {{name: ca, key: ca.crt}}, clientCertSecretRef: {{secretName: client}}}}\n"
            )
        };
        let Some(BrokerConfig::Mqtt(m)) = load(&yaml(true), Some(secrets.path())).unwrap().broker
        else {
            panic!()
        };
        assert_eq!(
            m.tls.client_cert.unwrap().key_file,
            secrets.path().join("client/tls.key")
        );
        assert_eq!(
            load(&yaml(false), Some(secrets.path())).unwrap_err().name,
            "spec.mqtt.tls.clientCertSecretRef"
        );
    }

    #[test]
    fn managed_clouds_from_a_file() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "aws/AWS_ACCESS_KEY_ID", "AKIDEXAMPLE\n");
        write(dir.path(), "aws/AWS_SECRET_ACCESS_KEY", "s3cr3t");
        write(dir.path(), "gcp/sa.json", "{}");
        let c = load(
            &format!(
                "{HEAD}spec:\n  adapter: aws_sns\n  awsSns:\n    region: us-east-1\n    topicArnPrefix: \"arn:aws:sns:us-east-1:123456789012:\"\n    endpoint: http://127.0.0.1:5000\n    credentials: {{secretName: aws}}\n"
            ),
            Some(dir.path()),
        )
        .unwrap();
        let Some(BrokerConfig::Sns(sns)) = c.broker else {
            panic!("not sns")
        };
        assert_eq!(sns.endpoint.as_deref(), Some("http://127.0.0.1:5000"));
        let creds = sns.static_credentials.unwrap();
        assert_eq!(creds.access_key_id.expose(), "AKIDEXAMPLE");
        assert_eq!(creds.secret_access_key.expose(), "s3cr3t");
        assert_eq!(creds.session_token, None);
        let c = load(
            &format!(
                "{HEAD}spec:\n  adapter: google_pubsub\n  googlePubsub:\n    project: my-project-123\n    topicIdPrefix: edge-prod-\n    credentials: {{name: gcp, key: sa.json}}\n"
            ),
            Some(dir.path()),
        )
        .unwrap();
        let Some(BrokerConfig::PubSub(ps)) = c.broker else {
            panic!("not pubsub")
        };
        assert_eq!(ps.topic_id_prefix.as_str(), "edge-prod-");
        assert_eq!(ps.credentials_file, Some(dir.path().join("gcp/sa.json")));
    }

    #[test]
    fn not_an_event_broker_and_missing_fields() {
        assert!(load("kind: [", None).is_err());
        let e = load(
            &format!("{HEAD}spec:\n  adapter: aws_sns\n  awsSns: {{region: us-east-1}}\n"),
            None,
        )
        .unwrap_err();
        assert_eq!(e.name, "spec.awsSns.topicArnPrefix");
        let e = load(
            &format!("{HEAD}spec:\n  adapter: nats\n  deployBroker: {{kind: nats}}\n"),
            None,
        )
        .unwrap_err();
        assert_eq!(e.name, "spec.nats");
    }
}
