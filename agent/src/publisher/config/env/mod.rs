//! The seed's environment interface (`EVENT_BROKER_*`, `CORE_NAME`) plus Edgewire's extensions
//! (`EVENT_BROKER_<A>_{SSL,CACERT_FILE,CLIENT_CERT_FILE,CLIENT_KEY_FILE,TLS_MIN_VERSION,TLS_SERVER_NAME}`,
//! `EVENT_BROKER_NATS_STREAM`, `EVENT_BROKER_NATS_STREAM_MAX_AGE`, `EVENT_BROKER_KAFKA_TOPIC`).
//!
//! An empty variable counts as unset: the operator renders optional Secret keys that way.
//!
//! Here: the switch, `CORE_NAME`, the adapter choice and the TLS variables every adapter shares. Each
//! adapter family reads its own variables in its own file: [`nats`], [`kafka`], [`amqp_redis`] (brokers
//! given by one URL), [`mqtt`], [`cloud`] (SNS, Pub/Sub).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;

use edgewire_api::Adapter;
use edgewire_api::env::{self, suffix};

use super::*;

mod amqp_redis;
mod cloud;
mod kafka;
mod mqtt;
mod nats;

/// Reads variables through `lookup`, so tests pass a map instead of the process environment.
pub struct Env<F: Fn(&str) -> Option<String>> {
    lookup: F,
}

/// Parses the process environment.
pub fn from_process_env() -> Result<PublisherConfig, ConfigError> {
    from_lookup(|k| std::env::var(k).ok())
}

/// Parses the environment seen through `lookup`.
pub fn from_lookup(
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<PublisherConfig, ConfigError> {
    Env { lookup }.publisher()
}

/// `EDGEWIRE_LISTEN`, default `0.0.0.0:8080`.
pub fn listen_addr(lookup: impl Fn(&str) -> Option<String>) -> Result<SocketAddr, ConfigError> {
    let vars = Env { lookup };
    match vars.get(env::LISTEN) {
        None => Ok(SocketAddr::from(([0, 0, 0, 0], 8080))),
        Some(v) => v.parse().map_err(|_| {
            ConfigError::new(
                env::LISTEN,
                format!("must be an address like 0.0.0.0:8080, got {v:?}"),
            )
        }),
    }
}

impl<F: Fn(&str) -> Option<String>> Env<F> {
    fn get(&self, name: &str) -> Option<String> {
        (self.lookup)(name)
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
    }

    fn secret(&self, name: &str) -> Option<Secret> {
        // Secrets keep their exact bytes apart from a trailing newline (files written with `echo`).
        (self.lookup)(name)
            .map(|v| v.trim_end_matches(['\n', '\r']).to_string())
            .filter(|v| !v.is_empty())
            .map(Secret::new)
    }

    /// A value with a rule of the API (`edgewire_api`'s checked types), checked by the type's `FromStr`: the
    /// operator's validation and the CRD schema hold the spec field it comes from to the same rule.
    /// The value is taken as it is, untrimmed, as the operator's validation and the schema take the field.
    fn checked<T: FromStr<Err = String>>(&self, name: &str) -> Result<Option<T>, ConfigError> {
        (self.lookup)(name)
            .filter(|v| !v.is_empty())
            .map(|v| T::from_str(&v).map_err(|m| ConfigError::new(name, m)))
            .transpose()
    }

    fn bool(&self, name: &str, default: bool) -> Result<bool, ConfigError> {
        match self.get(name) {
            None => Ok(default),
            Some(v) => parse_bool(&v)
                .ok_or_else(|| ConfigError::new(name, format!("must be true or false, got {v:?}"))),
        }
    }

    fn publisher(&self) -> Result<PublisherConfig, ConfigError> {
        let enabled = self.bool(env::ENABLED, false)?;
        let core_name = self
            .get(env::CORE_NAME)
            .unwrap_or_else(|| "default".to_string());
        if core_name.len() > 253 || core_name.chars().any(|c| c.is_control()) {
            return Err(ConfigError::new(
                env::CORE_NAME,
                "must be at most 253 printable characters",
            ));
        }
        let mut notes = Vec::new();
        if !enabled {
            return Ok(PublisherConfig {
                enabled,
                core_name,
                broker: None,
                notes,
            });
        }
        let adapter = self.get(env::ADAPTER).ok_or_else(|| {
            ConfigError::new(env::ADAPTER, format!("required when {}=true", env::ENABLED))
        })?;
        let broker = match Adapter::parse(&adapter).map(Adapter::canonical) {
            Some(Adapter::Nats) => BrokerConfig::Nats(self.nats(&mut notes)?),
            Some(Adapter::Kafka) => BrokerConfig::Kafka(self.kafka(&mut notes)?),
            Some(Adapter::Amqp091 | Adapter::Rabbitmq) => BrokerConfig::Amqp(self.amqp()?),
            Some(Adapter::Redis) => BrokerConfig::Redis(self.redis()?),
            Some(Adapter::Mqtt) => BrokerConfig::Mqtt(self.mqtt(&mut notes)?),
            Some(Adapter::AwsSns) => BrokerConfig::Sns(self.sns()?),
            Some(Adapter::GooglePubsub) => BrokerConfig::PubSub(self.pubsub()?),
            None => {
                return Err(ConfigError::new(
                    env::ADAPTER,
                    format!(
                        "unknown adapter {adapter:?} (expected one of nats, kafka, amqp091, rabbitmq, redis, mqtt, aws_sns, google_pubsub)"
                    ),
                ));
            }
        };
        Ok(PublisherConfig {
            enabled,
            core_name,
            broker: Some(broker),
            notes,
        })
    }

    /// `EVENT_BROKER_<A>_SSL` and the TLS extensions; `implied` is TLS required by the URL scheme.
    fn tls(&self, adapter: Adapter, implied: bool) -> Result<TlsSettings, ConfigError> {
        let var = |s: &str| env::adapter_var(adapter, s);
        let enabled = self.bool(&var(suffix::SSL), false)? || implied;
        let file = |s: &str| -> Result<Option<PathBuf>, ConfigError> {
            let name = var(s);
            match self.get(&name) {
                None => Ok(None),
                Some(p) => {
                    let path = PathBuf::from(&p);
                    if !path.is_file() {
                        return Err(ConfigError::new(
                            name,
                            format!("file {p:?} does not exist or is not readable"),
                        ));
                    }
                    Ok(Some(path))
                }
            }
        };
        let ca_file = file(suffix::CACERT_FILE)?;
        let cert = file(suffix::CLIENT_CERT_FILE)?;
        let key = file(suffix::CLIENT_KEY_FILE)?;
        let client_cert = match (cert, key) {
            (None, None) => None,
            (Some(_), None) => {
                return Err(ConfigError::new(
                    var(suffix::CLIENT_KEY_FILE),
                    format!("required with {}", var(suffix::CLIENT_CERT_FILE)),
                ));
            }
            (None, Some(_)) => {
                return Err(ConfigError::new(
                    var(suffix::CLIENT_CERT_FILE),
                    format!("required with {}", var(suffix::CLIENT_KEY_FILE)),
                ));
            }
            (Some(cert_file), Some(key_file)) => {
                if !enabled {
                    return Err(ConfigError::new(
                        var(suffix::CLIENT_CERT_FILE),
                        format!(
                            "a client certificate requires {}=true (mTLS requires SSL)",
                            var(suffix::SSL)
                        ),
                    ));
                }
                Some(ClientCert {
                    cert_file,
                    key_file,
                })
            }
        };
        let min_version = match self.get(&var(suffix::TLS_MIN_VERSION)).as_deref() {
            None | Some("1.2") => TlsVersion::V1_2,
            Some("1.3") => TlsVersion::V1_3,
            Some(v) => {
                return Err(ConfigError::new(
                    var(suffix::TLS_MIN_VERSION),
                    format!("must be 1.2 or 1.3, got {v:?}"),
                ));
            }
        };
        let server_name = self.get(&var(suffix::TLS_SERVER_NAME));
        Ok(TlsSettings {
            enabled,
            ca_file,
            client_cert,
            min_version,
            server_name,
        })
    }
}

/// What the tests of every adapter family parse with.
#[cfg(test)]
mod test_support {
    use super::*;
    use std::collections::HashMap;

    pub(super) fn parse(vars: &[(&str, &str)]) -> Result<PublisherConfig, ConfigError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        from_lookup(|k| map.get(k).cloned())
    }

    pub(super) fn broker(vars: &[(&str, &str)]) -> BrokerConfig {
        parse(vars).expect("valid config").broker.expect("enabled")
    }

    pub(super) fn err(vars: &[(&str, &str)]) -> ConfigError {
        parse(vars).expect_err("invalid config")
    }

    pub(super) const ON: (&str, &str) = ("EVENT_BROKER_ENABLED", "true");

    pub(super) fn mqtt(extra: &[(&str, &str)]) -> Result<(MqttConfig, Vec<String>), ConfigError> {
        let mut v = vec![
            ON,
            ("EVENT_BROKER_ADAPTER", "mqtt"),
            ("EVENT_BROKER_MQTT_URL", "broker:1883"),
        ];
        v.extend_from_slice(extra);
        let c = parse(&v)?;
        match c.broker {
            Some(BrokerConfig::Mqtt(m)) => Ok((m, c.notes)),
            _ => panic!("not mqtt"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::*;
    use super::*;

    #[test]
    fn disabled_by_default_and_needs_nothing_else() {
        let c = parse(&[]).unwrap();
        assert!(!c.enabled);
        assert_eq!(c.core_name, "default");
        assert_eq!(c.broker, None);
        // Adapter settings are not even looked at while disabled.
        assert!(
            parse(&[
                ("EVENT_BROKER_ENABLED", "false"),
                ("EVENT_BROKER_ADAPTER", "bogus")
            ])
            .is_ok()
        );
    }

    #[test]
    fn bad_switch_names_the_variable() {
        let e = err(&[("EVENT_BROKER_ENABLED", "maybe")]);
        assert_eq!(
            e.to_string(),
            "EVENT_BROKER_ENABLED: must be true or false, got \"maybe\""
        );
    }

    #[test]
    fn adapter_required_and_unknown() {
        assert_eq!(err(&[ON]).name, "EVENT_BROKER_ADAPTER");
        let e = err(&[ON, ("EVENT_BROKER_ADAPTER", "pulsar")]);
        assert_eq!(e.name, "EVENT_BROKER_ADAPTER");
        assert!(e.message.contains("unknown adapter \"pulsar\""), "{e}");
    }

    #[test]
    fn core_name_defaults_and_is_read() {
        let c = parse(&[
            ON,
            ("EVENT_BROKER_ADAPTER", "redis"),
            ("EVENT_BROKER_REDIS_URL", "redis://h:6379"),
            ("CORE_NAME", "prod-us"),
        ])
        .unwrap();
        assert_eq!(c.core_name, "prod-us");
    }

    #[test]
    fn client_cert_without_ssl_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let cert = dir.path().join("tls.crt");
        let key = dir.path().join("tls.key");
        std::fs::write(&cert, "x").unwrap();
        std::fs::write(&key, "x").unwrap();
        let (cert, key) = (cert.to_str().unwrap(), key.to_str().unwrap());
        let e = mqtt(&[
            ("EVENT_BROKER_MQTT_CLIENT_CERT_FILE", cert),
            ("EVENT_BROKER_MQTT_CLIENT_KEY_FILE", key),
        ])
        .unwrap_err();
        assert_eq!(e.name, "EVENT_BROKER_MQTT_CLIENT_CERT_FILE");
        assert!(e.message.contains("EVENT_BROKER_MQTT_SSL=true"), "{e}");
        let (m, _) = mqtt(&[
            ("EVENT_BROKER_MQTT_SSL", "true"),
            ("EVENT_BROKER_MQTT_CACERT_FILE", cert),
            ("EVENT_BROKER_MQTT_CLIENT_CERT_FILE", cert),
            ("EVENT_BROKER_MQTT_CLIENT_KEY_FILE", key),
            ("EVENT_BROKER_MQTT_TLS_MIN_VERSION", "1.3"),
            ("EVENT_BROKER_MQTT_TLS_SERVER_NAME", "mqtt.example.com"),
        ])
        .unwrap();
        assert!(m.tls.enabled && m.tls.client_cert.is_some() && m.tls.ca_file.is_some());
        assert_eq!(m.tls.min_version, TlsVersion::V1_3);
        assert_eq!(m.tls.server_name.as_deref(), Some("mqtt.example.com"));
        // The same rule holds for every adapter.
        let e = parse(&[
            ON,
            ("EVENT_BROKER_ADAPTER", "nats"),
            ("EVENT_BROKER_NATS_URLS", "nats://a:4222"),
            ("EVENT_BROKER_NATS_CLIENT_CERT_FILE", cert),
            ("EVENT_BROKER_NATS_CLIENT_KEY_FILE", key),
        ])
        .unwrap_err();
        assert_eq!(e.name, "EVENT_BROKER_NATS_CLIENT_CERT_FILE");
        let e = mqtt(&[
            ("EVENT_BROKER_MQTT_SSL", "true"),
            ("EVENT_BROKER_MQTT_CLIENT_CERT_FILE", cert),
        ])
        .unwrap_err();
        assert_eq!(e.name, "EVENT_BROKER_MQTT_CLIENT_KEY_FILE");
    }

    #[test]
    fn tls_files_must_exist_and_versions_are_checked() {
        let e = mqtt(&[
            ("EVENT_BROKER_MQTT_SSL", "true"),
            ("EVENT_BROKER_MQTT_CACERT_FILE", "/nonexistent/ca.crt"),
        ])
        .unwrap_err();
        assert_eq!(e.name, "EVENT_BROKER_MQTT_CACERT_FILE");
        let e = mqtt(&[("EVENT_BROKER_MQTT_TLS_MIN_VERSION", "1.1")]).unwrap_err();
        assert_eq!(e.name, "EVENT_BROKER_MQTT_TLS_MIN_VERSION");
    }

    #[test]
    fn listen_address() {
        assert_eq!(listen_addr(|_| None).unwrap().to_string(), "0.0.0.0:8080");
        assert_eq!(
            listen_addr(|_| Some("127.0.0.1:9000".into()))
                .unwrap()
                .to_string(),
            "127.0.0.1:9000"
        );
        assert_eq!(
            listen_addr(|_| Some("nope".into())).unwrap_err().name,
            "EDGEWIRE_LISTEN"
        );
    }
}
