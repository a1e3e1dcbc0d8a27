//! The seed's environment interface (`EVENT_BROKER_*`, `CORE_NAME`) plus Edgewire's extensions
//! (`EVENT_BROKER_<A>_{SSL,CACERT_FILE,CLIENT_CERT_FILE,CLIENT_KEY_FILE,TLS_MIN_VERSION,TLS_SERVER_NAME}`,
//! `EVENT_BROKER_NATS_STREAM`, `EVENT_BROKER_NATS_STREAM_MAX_AGE`, `EVENT_BROKER_KAFKA_TOPIC`).
//!
//! An empty variable counts as unset: the operator renders optional Secret keys that way.

use std::net::SocketAddr;
use std::path::PathBuf;

use super::*;

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
    let env = Env { lookup };
    match env.get("EDGEWIRE_LISTEN") {
        None => Ok(SocketAddr::from(([0, 0, 0, 0], 8080))),
        Some(v) => v.parse().map_err(|_| {
            ConfigError::new(
                "EDGEWIRE_LISTEN",
                format!("must be an address like 0.0.0.0:8080, got {v:?}"),
            )
        }),
    }
}

/// Whether `e` is an `http://` or `https://` URL with a host (and no credentials).
pub(crate) fn endpoint_ok(e: &str) -> bool {
    match url::Url::parse(e) {
        Ok(u) => {
            matches!(u.scheme(), "http" | "https")
                && u.host_str().is_some_and(|h| !h.is_empty())
                && u.username().is_empty()
                && u.password().is_none()
        }
        Err(_) => false,
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

    fn bool(&self, name: &str, default: bool) -> Result<bool, ConfigError> {
        match self.get(name) {
            None => Ok(default),
            Some(v) => parse_bool(&v)
                .ok_or_else(|| ConfigError::new(name, format!("must be true or false, got {v:?}"))),
        }
    }

    fn publisher(&self) -> Result<PublisherConfig, ConfigError> {
        let enabled = self.bool("EVENT_BROKER_ENABLED", false)?;
        let core_name = self
            .get("CORE_NAME")
            .unwrap_or_else(|| "default".to_string());
        if core_name.len() > 253 || core_name.chars().any(|c| c.is_control()) {
            return Err(ConfigError::new(
                "CORE_NAME",
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
        let adapter = self.get("EVENT_BROKER_ADAPTER").ok_or_else(|| {
            ConfigError::new(
                "EVENT_BROKER_ADAPTER",
                "required when EVENT_BROKER_ENABLED=true",
            )
        })?;
        let broker = match adapter.as_str() {
            "nats" => BrokerConfig::Nats(self.nats(&mut notes)?),
            "kafka" => BrokerConfig::Kafka(self.kafka(&mut notes)?),
            "amqp091" | "rabbitmq" => BrokerConfig::Amqp(self.amqp()?),
            "redis" => BrokerConfig::Redis(self.redis()?),
            "mqtt" => BrokerConfig::Mqtt(self.mqtt(&mut notes)?),
            "aws_sns" => BrokerConfig::Sns(self.sns()?),
            "google_pubsub" => BrokerConfig::PubSub(self.pubsub()?),
            other => {
                return Err(ConfigError::new(
                    "EVENT_BROKER_ADAPTER",
                    format!(
                        "unknown adapter {other:?} (expected one of nats, kafka, amqp091, rabbitmq, redis, mqtt, aws_sns, google_pubsub)"
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
    fn tls(&self, a: &str, implied: bool) -> Result<TlsSettings, ConfigError> {
        let var = |s: &str| format!("EVENT_BROKER_{a}_{s}");
        let enabled = self.bool(&var("SSL"), false)? || implied;
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
        let ca_file = file("CACERT_FILE")?;
        let cert = file("CLIENT_CERT_FILE")?;
        let key = file("CLIENT_KEY_FILE")?;
        let client_cert = match (cert, key) {
            (None, None) => None,
            (Some(_), None) => {
                return Err(ConfigError::new(
                    var("CLIENT_KEY_FILE"),
                    format!("required with {}", var("CLIENT_CERT_FILE")),
                ));
            }
            (None, Some(_)) => {
                return Err(ConfigError::new(
                    var("CLIENT_CERT_FILE"),
                    format!("required with {}", var("CLIENT_KEY_FILE")),
                ));
            }
            (Some(cert_file), Some(key_file)) => {
                if !enabled {
                    return Err(ConfigError::new(
                        var("CLIENT_CERT_FILE"),
                        format!(
                            "a client certificate requires {}=true (mTLS requires SSL)",
                            var("SSL")
                        ),
                    ));
                }
                Some(ClientCert {
                    cert_file,
                    key_file,
                })
            }
        };
        let min_version = match self.get(&var("TLS_MIN_VERSION")).as_deref() {
            None | Some("1.2") => TlsVersion::V1_2,
            Some("1.3") => TlsVersion::V1_3,
            Some(v) => {
                return Err(ConfigError::new(
                    var("TLS_MIN_VERSION"),
                    format!("must be 1.2 or 1.3, got {v:?}"),
                ));
            }
        };
        let server_name = self.get(&var("TLS_SERVER_NAME"));
        Ok(TlsSettings {
            enabled,
            ca_file,
            client_cert,
            min_version,
            server_name,
        })
    }

    fn nats(&self, notes: &mut Vec<String>) -> Result<NatsConfig, ConfigError> {
        const URLS: &str = "EVENT_BROKER_NATS_URLS";
        let raw = self
            .get(URLS)
            .ok_or_else(|| ConfigError::new(URLS, "required for adapter nats"))?;
        let urls: Vec<String> = raw
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect();
        if urls.is_empty() {
            return Err(ConfigError::new(URLS, "required for adapter nats"));
        }
        let mut implied_tls = false;
        for u in &urls {
            match u.split_once("://") {
                Some(("nats", _)) | None => {}
                Some(("tls", _)) => implied_tls = true,
                Some((scheme, _)) => {
                    return Err(ConfigError::new(
                        URLS,
                        format!("unsupported scheme {scheme:?} (use nats:// or tls://)"),
                    ));
                }
            }
            if u.contains('@') {
                notes.push(format!("{URLS}: credentials in the URL are used as given"));
            }
        }
        let jetstream = if self.bool("EVENT_BROKER_NATS_JETSTREAM", false)? {
            let stream = self
                .get("EVENT_BROKER_NATS_STREAM")
                .unwrap_or_else(|| "EDGE_EVENTS".into());
            if !stream
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            {
                return Err(ConfigError::new(
                    "EVENT_BROKER_NATS_STREAM",
                    format!("must contain only letters, digits, _ and -, got {stream:?}"),
                ));
            }
            let max_age_raw = self
                .get("EVENT_BROKER_NATS_STREAM_MAX_AGE")
                .unwrap_or_else(|| "168h".into());
            let max_age = parse_go_duration(&max_age_raw).ok_or_else(|| {
                ConfigError::new(
                    "EVENT_BROKER_NATS_STREAM_MAX_AGE",
                    format!("must be a Go duration like 168h or 30m, got {max_age_raw:?}"),
                )
            })?;
            Some(JetStreamConfig { stream, max_age })
        } else {
            None
        };
        let token = self.secret("EVENT_BROKER_NATS_TOKEN");
        let username = self.get("EVENT_BROKER_NATS_USERNAME");
        let password = self.secret("EVENT_BROKER_NATS_PASSWORD");
        let seed = self.secret("EVENT_BROKER_NATS_NKEY_SEED");
        let jwt = self.secret("EVENT_BROKER_NATS_JWT");
        let auth = if let Some(token) = token {
            for (set, name) in [
                (username.is_some(), "EVENT_BROKER_NATS_USERNAME"),
                (password.is_some(), "EVENT_BROKER_NATS_PASSWORD"),
                (seed.is_some(), "EVENT_BROKER_NATS_NKEY_SEED"),
                (jwt.is_some(), "EVENT_BROKER_NATS_JWT"),
            ] {
                if set {
                    notes.push(format!(
                        "{name} ignored: EVENT_BROKER_NATS_TOKEN takes precedence"
                    ));
                }
            }
            NatsAuth::Token(token)
        } else if username.is_some() || password.is_some() {
            let username = username.ok_or_else(|| {
                ConfigError::new(
                    "EVENT_BROKER_NATS_USERNAME",
                    "required with EVENT_BROKER_NATS_PASSWORD",
                )
            })?;
            let password = password.ok_or_else(|| {
                ConfigError::new(
                    "EVENT_BROKER_NATS_PASSWORD",
                    "required with EVENT_BROKER_NATS_USERNAME",
                )
            })?;
            for (set, name) in [
                (seed.is_some(), "EVENT_BROKER_NATS_NKEY_SEED"),
                (jwt.is_some(), "EVENT_BROKER_NATS_JWT"),
            ] {
                if set {
                    notes.push(format!(
                        "{name} ignored: EVENT_BROKER_NATS_USERNAME/PASSWORD take precedence"
                    ));
                }
            }
            NatsAuth::UserPassword { username, password }
        } else if let Some(seed) = seed {
            if !seed.expose().starts_with("SU") {
                return Err(ConfigError::new(
                    "EVENT_BROKER_NATS_NKEY_SEED",
                    "must be a user NKEY seed (starts with \"SU\")",
                ));
            }
            NatsAuth::Nkey { seed, jwt }
        } else if jwt.is_some() {
            return Err(ConfigError::new(
                "EVENT_BROKER_NATS_JWT",
                "requires EVENT_BROKER_NATS_NKEY_SEED (the JWT is signed with the seed's key)",
            ));
        } else {
            NatsAuth::None
        };
        let tls = self.tls("NATS", implied_tls)?;
        Ok(NatsConfig {
            urls,
            jetstream,
            auth,
            tls,
        })
    }

    fn kafka(&self, notes: &mut Vec<String>) -> Result<KafkaConfig, ConfigError> {
        const URLS: &str = "EVENT_BROKER_KAFKA_URLS";
        let raw = self
            .get(URLS)
            .ok_or_else(|| ConfigError::new(URLS, "required for adapter kafka"))?;
        let brokers: Vec<String> = raw
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect();
        if brokers.is_empty() {
            return Err(ConfigError::new(URLS, "required for adapter kafka"));
        }
        for b in &brokers {
            if b.contains("://") {
                return Err(ConfigError::new(
                    URLS,
                    format!("must be host:port without a scheme, got {b:?}"),
                ));
            }
            if split_host_port(b, 9092).is_none() {
                return Err(ConfigError::new(
                    URLS,
                    format!("must be a comma-separated list of host:port, got {b:?}"),
                ));
            }
        }
        let topic = self.get("EVENT_BROKER_KAFKA_TOPIC");
        if let Some(t) = &topic
            && (t.len() > 249
                || !t
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
        {
            return Err(ConfigError::new(
                "EVENT_BROKER_KAFKA_TOPIC",
                format!("must be 1-249 characters of letters, digits, '.', '_' and '-', got {t:?}"),
            ));
        }
        let mechanism = match self.get("EVENT_BROKER_KAFKA_SASL_MECHANISM") {
            None => SaslMechanism::Plain,
            Some(m) => parse_sasl_mechanism(&m).ok_or_else(|| {
                ConfigError::new(
                    "EVENT_BROKER_KAFKA_SASL_MECHANISM",
                    format!("must be plain, scram_sha_256 or scram_sha_512, got {m:?}"),
                )
            })?,
        };
        let username = self.get("EVENT_BROKER_KAFKA_USERNAME");
        let password = self.secret("EVENT_BROKER_KAFKA_PASSWORD");
        let sasl = match (username, password) {
            (None, None) => {
                if self.get("EVENT_BROKER_KAFKA_SASL_MECHANISM").is_some() {
                    notes.push(
                        "EVENT_BROKER_KAFKA_SASL_MECHANISM ignored: no EVENT_BROKER_KAFKA_USERNAME"
                            .into(),
                    );
                }
                None
            }
            (Some(_), None) => {
                return Err(ConfigError::new(
                    "EVENT_BROKER_KAFKA_PASSWORD",
                    "required with EVENT_BROKER_KAFKA_USERNAME",
                ));
            }
            (None, Some(_)) => {
                return Err(ConfigError::new(
                    "EVENT_BROKER_KAFKA_USERNAME",
                    "required with EVENT_BROKER_KAFKA_PASSWORD",
                ));
            }
            (Some(username), Some(password)) => Some(KafkaSasl {
                mechanism,
                username,
                password,
            }),
        };
        let tls = self.tls("KAFKA", false)?;
        Ok(KafkaConfig {
            brokers,
            topic,
            sasl,
            tls,
        })
    }

    fn amqp(&self) -> Result<AmqpConfig, ConfigError> {
        const URL: &str = "EVENT_BROKER_RABBITMQ_URL";
        let url = self
            .secret(URL)
            .ok_or_else(|| ConfigError::new(URL, "required for adapter amqp091"))?;
        let implied = check_scheme(URL, url.expose(), "amqp", "amqps")?;
        let tls = self.tls("RABBITMQ", implied)?;
        Ok(AmqpConfig { url, tls })
    }

    fn redis(&self) -> Result<RedisConfig, ConfigError> {
        const URL: &str = "EVENT_BROKER_REDIS_URL";
        let url = self
            .secret(URL)
            .ok_or_else(|| ConfigError::new(URL, "required for adapter redis"))?;
        let implied = check_scheme(URL, url.expose(), "redis", "rediss")?;
        let tls = self.tls("REDIS", implied)?;
        Ok(RedisConfig { url, tls })
    }

    /// `EVENT_BROKER_AWS_SNS_*`. Credentials are not read here: the AWS SDK's standard chain reads
    /// `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` / `AWS_SESSION_TOKEN`, the shared files and the IRSA
    /// web identity (`AWS_ROLE_ARN`, `AWS_WEB_IDENTITY_TOKEN_FILE`) itself.
    fn sns(&self) -> Result<SnsConfig, ConfigError> {
        const PREFIX: &str = "EVENT_BROKER_AWS_SNS_TOPIC_ARN_PREFIX";
        const REGION: &str = "EVENT_BROKER_AWS_SNS_REGION";
        let topic_arn_prefix = self.get(PREFIX).ok_or_else(|| {
            ConfigError::new(
                PREFIX,
                "required for adapter aws_sns (e.g. arn:aws:sns:us-east-1:123456789012:)",
            )
        })?;
        let arn_region =
            sns_arn_prefix_region(&topic_arn_prefix).map_err(|m| ConfigError::new(PREFIX, m))?;
        let region = self.get(REGION).unwrap_or(arn_region);
        if !region
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        {
            return Err(ConfigError::new(
                REGION,
                format!("must be an AWS region like us-east-1, got {region:?}"),
            ));
        }
        let endpoint = self.endpoint("EVENT_BROKER_AWS_SNS_ENDPOINT")?;
        Ok(SnsConfig {
            region,
            topic_arn_prefix,
            endpoint,
            static_credentials: None,
        })
    }

    /// `EVENT_BROKER_GOOGLE_PUBSUB_*`. `GOOGLE_APPLICATION_CREDENTIALS` is read by the Google auth library
    /// (Application Default Credentials).
    fn pubsub(&self) -> Result<PubSubConfig, ConfigError> {
        const PROJECT: &str = "EVENT_BROKER_GOOGLE_PUBSUB_PROJECT";
        const PREFIX: &str = "EVENT_BROKER_GOOGLE_PUBSUB_TOPIC_ID_PREFIX";
        let project = self
            .get(PROJECT)
            .ok_or_else(|| ConfigError::new(PROJECT, "required for adapter google_pubsub"))?;
        if let Some(m) = pubsub_project_problem(&project) {
            return Err(ConfigError::new(PROJECT, m));
        }
        let topic_id_prefix = self.get(PREFIX).unwrap_or_default();
        if let Some(m) = pubsub_prefix_problem(&topic_id_prefix) {
            return Err(ConfigError::new(PREFIX, m));
        }
        let endpoint = self.endpoint("EVENT_BROKER_GOOGLE_PUBSUB_ENDPOINT")?;
        Ok(PubSubConfig {
            project,
            topic_id_prefix,
            endpoint,
            credentials_file: None,
        })
    }

    /// An endpoint override: an `http://` or `https://` URL.
    fn endpoint(&self, name: &str) -> Result<Option<String>, ConfigError> {
        match self.get(name) {
            None => Ok(None),
            Some(e) if endpoint_ok(&e) => Ok(Some(e.trim_end_matches('/').to_string())),
            Some(e) => Err(ConfigError::new(
                name,
                format!("must be an http:// or https:// URL, got {e:?}"),
            )),
        }
    }

    fn mqtt(&self, notes: &mut Vec<String>) -> Result<MqttConfig, ConfigError> {
        const URL: &str = "EVENT_BROKER_MQTT_URL";
        let raw = self
            .get(URL)
            .ok_or_else(|| ConfigError::new(URL, "required for adapter mqtt"))?;
        let tls = self.tls("MQTT", false)?;
        let (host, port) = split_host_port(&raw, if tls.enabled { 8883 } else { 1883 })
            .ok_or_else(|| {
                ConfigError::new(
                    URL,
                    format!("must be host:port without a scheme, got {raw:?}"),
                )
            })?;
        let qos = match self.get("EVENT_BROKER_MQTT_QOS").as_deref() {
            None => 1,
            Some("0") => 0,
            Some("1") => 1,
            Some("2") => 2,
            Some(v) => {
                return Err(ConfigError::new(
                    "EVENT_BROKER_MQTT_QOS",
                    format!("must be 0, 1 or 2, got {v:?}"),
                ));
            }
        };
        let jwt = self.secret("EVENT_BROKER_MQTT_JWT");
        let username = self.get("EVENT_BROKER_MQTT_USERNAME");
        let password = self.secret("EVENT_BROKER_MQTT_PASSWORD");
        let auth = if let Some(token) = jwt {
            if password.is_some() {
                notes.push(
                    "EVENT_BROKER_MQTT_PASSWORD ignored: EVENT_BROKER_MQTT_JWT takes precedence"
                        .into(),
                );
            }
            MqttAuth::Jwt { username, token }
        } else if let Some(username) = username {
            MqttAuth::UserPassword { username, password }
        } else if password.is_some() {
            return Err(ConfigError::new(
                "EVENT_BROKER_MQTT_USERNAME",
                "required with EVENT_BROKER_MQTT_PASSWORD (MQTT 3.1.1 sends no password without a user name)",
            ));
        } else {
            MqttAuth::None
        };
        Ok(MqttConfig {
            host,
            port,
            qos,
            auth,
            tls,
        })
    }
}

/// Checks a URL's scheme without ever echoing the URL (it holds credentials); true for the TLS scheme.
fn check_scheme(var: &str, url: &str, plain: &str, tls: &str) -> Result<bool, ConfigError> {
    match url.split_once("://") {
        Some((s, rest)) if s == plain && !rest.is_empty() => Ok(false),
        Some((s, rest)) if s == tls && !rest.is_empty() => Ok(true),
        _ => Err(ConfigError::new(
            var,
            format!("must be a {plain}:// or {tls}:// URL"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn parse(vars: &[(&str, &str)]) -> Result<PublisherConfig, ConfigError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        from_lookup(|k| map.get(k).cloned())
    }

    fn broker(vars: &[(&str, &str)]) -> BrokerConfig {
        parse(vars).expect("valid config").broker.expect("enabled")
    }

    fn err(vars: &[(&str, &str)]) -> ConfigError {
        parse(vars).expect_err("invalid config")
    }

    const ON: (&str, &str) = ("EVENT_BROKER_ENABLED", "true");

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
    fn sns_seed_variables() {
        let BrokerConfig::Sns(c) = broker(&[
            ON,
            ("EVENT_BROKER_ADAPTER", "aws_sns"),
            ("EVENT_BROKER_AWS_SNS_REGION", "eu-west-1"),
            (
                "EVENT_BROKER_AWS_SNS_TOPIC_ARN_PREFIX",
                "arn:aws:sns:eu-west-1:123456789012:",
            ),
            ("EVENT_BROKER_AWS_SNS_ENDPOINT", "http://127.0.0.1:5000/"),
        ]) else {
            panic!("not sns")
        };
        assert_eq!(
            c,
            SnsConfig {
                region: "eu-west-1".into(),
                topic_arn_prefix: "arn:aws:sns:eu-west-1:123456789012:".into(),
                endpoint: Some("http://127.0.0.1:5000".into()),
                static_credentials: None,
            }
        );
        // The region defaults to the ARN prefix's; a name prefix after the account is allowed.
        let BrokerConfig::Sns(c) = broker(&[
            ON,
            ("EVENT_BROKER_ADAPTER", "aws_sns"),
            (
                "EVENT_BROKER_AWS_SNS_TOPIC_ARN_PREFIX",
                "arn:aws-cn:sns:cn-north-1:123456789012:prod-",
            ),
        ]) else {
            panic!("not sns")
        };
        assert_eq!(c.region, "cn-north-1");
        assert_eq!(c.endpoint, None);
    }

    #[test]
    fn sns_errors_name_the_variable() {
        let base = [ON, ("EVENT_BROKER_ADAPTER", "aws_sns")];
        assert_eq!(err(&base).name, "EVENT_BROKER_AWS_SNS_TOPIC_ARN_PREFIX");
        for bad in [
            "123456789012",
            "arn:aws:sqs:us-east-1:123456789012:",
            "arn:aws:sns:us-east-1::",
            "arn:aws:sns:us-east-1:123456789012:a:b",
        ] {
            let mut v = base.to_vec();
            v.push(("EVENT_BROKER_AWS_SNS_TOPIC_ARN_PREFIX", bad));
            assert_eq!(
                err(&v).name,
                "EVENT_BROKER_AWS_SNS_TOPIC_ARN_PREFIX",
                "{bad}"
            );
        }
        let mut v = base.to_vec();
        v.push((
            "EVENT_BROKER_AWS_SNS_TOPIC_ARN_PREFIX",
            "arn:aws:sns:us-east-1:123456789012:",
        ));
        let mut bad_endpoint = v.clone();
        bad_endpoint.push(("EVENT_BROKER_AWS_SNS_ENDPOINT", "localhost:5000"));
        assert_eq!(err(&bad_endpoint).name, "EVENT_BROKER_AWS_SNS_ENDPOINT");
        let mut bad_region = v.clone();
        bad_region.push(("EVENT_BROKER_AWS_SNS_REGION", "US East"));
        assert_eq!(err(&bad_region).name, "EVENT_BROKER_AWS_SNS_REGION");
    }

    #[test]
    fn pubsub_seed_variables() {
        let BrokerConfig::PubSub(c) = broker(&[
            ON,
            ("EVENT_BROKER_ADAPTER", "google_pubsub"),
            ("EVENT_BROKER_GOOGLE_PUBSUB_PROJECT", "my-project-123"),
            ("EVENT_BROKER_GOOGLE_PUBSUB_TOPIC_ID_PREFIX", "edge-prod-"),
        ]) else {
            panic!("not pubsub")
        };
        assert_eq!(
            c,
            PubSubConfig {
                project: "my-project-123".into(),
                topic_id_prefix: "edge-prod-".into(),
                endpoint: None,
                credentials_file: None,
            }
        );
        assert!(!c.is_emulator());
        let BrokerConfig::PubSub(c) = broker(&[
            ON,
            ("EVENT_BROKER_ADAPTER", "google_pubsub"),
            ("EVENT_BROKER_GOOGLE_PUBSUB_PROJECT", "my-project-123"),
            ("EVENT_BROKER_GOOGLE_PUBSUB_TOPIC_ID_PREFIX", ""),
            (
                "EVENT_BROKER_GOOGLE_PUBSUB_ENDPOINT",
                "http://localhost:8085",
            ),
        ]) else {
            panic!("not pubsub")
        };
        assert_eq!(c.topic_id_prefix, "");
        assert!(c.is_emulator());
        let base = [ON, ("EVENT_BROKER_ADAPTER", "google_pubsub")];
        assert_eq!(err(&base).name, "EVENT_BROKER_GOOGLE_PUBSUB_PROJECT");
        let mut v = base.to_vec();
        v.push(("EVENT_BROKER_GOOGLE_PUBSUB_PROJECT", "My Project"));
        assert_eq!(err(&v).name, "EVENT_BROKER_GOOGLE_PUBSUB_PROJECT");
        for bad in ["1edge-", "goog-", "edge prod"] {
            let mut v = base.to_vec();
            v.push(("EVENT_BROKER_GOOGLE_PUBSUB_PROJECT", "my-project-123"));
            v.push(("EVENT_BROKER_GOOGLE_PUBSUB_TOPIC_ID_PREFIX", bad));
            assert_eq!(
                err(&v).name,
                "EVENT_BROKER_GOOGLE_PUBSUB_TOPIC_ID_PREFIX",
                "{bad}"
            );
        }
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
    fn nats_minimal_and_jetstream_defaults() {
        let BrokerConfig::Nats(n) = broker(&[
            ON,
            ("EVENT_BROKER_ADAPTER", "nats"),
            ("EVENT_BROKER_NATS_URLS", "nats://a:4222, nats://b:4222"),
        ]) else {
            panic!("not nats")
        };
        assert_eq!(n.urls, vec!["nats://a:4222", "nats://b:4222"]);
        assert_eq!(n.jetstream, None);
        assert_eq!(n.auth, NatsAuth::None);
        assert!(!n.tls.enabled);

        let BrokerConfig::Nats(n) = broker(&[
            ON,
            ("EVENT_BROKER_ADAPTER", "nats"),
            ("EVENT_BROKER_NATS_URLS", "tls://a:4222"),
            ("EVENT_BROKER_NATS_JETSTREAM", "true"),
        ]) else {
            panic!("not nats")
        };
        let js = n.jetstream.unwrap();
        assert_eq!(js.stream, "EDGE_EVENTS");
        assert_eq!(js.max_age, std::time::Duration::from_secs(168 * 3600));
        assert!(n.tls.enabled, "tls:// implies TLS");
    }

    #[test]
    fn nats_stream_extensions_are_validated() {
        let base = [
            ON,
            ("EVENT_BROKER_ADAPTER", "nats"),
            ("EVENT_BROKER_NATS_URLS", "nats://a:4222"),
            ("EVENT_BROKER_NATS_JETSTREAM", "true"),
        ];
        let mut v = base.to_vec();
        v.push(("EVENT_BROKER_NATS_STREAM_MAX_AGE", "a week"));
        assert_eq!(err(&v).name, "EVENT_BROKER_NATS_STREAM_MAX_AGE");
        let mut v = base.to_vec();
        v.push(("EVENT_BROKER_NATS_STREAM", "bad.name"));
        assert_eq!(err(&v).name, "EVENT_BROKER_NATS_STREAM");
        let mut v = base.to_vec();
        v.extend([
            ("EVENT_BROKER_NATS_STREAM", "EVENTS"),
            ("EVENT_BROKER_NATS_STREAM_MAX_AGE", "30m"),
        ]);
        let BrokerConfig::Nats(n) = broker(&v) else {
            panic!()
        };
        assert_eq!(
            n.jetstream,
            Some(JetStreamConfig {
                stream: "EVENTS".into(),
                max_age: std::time::Duration::from_secs(1800)
            })
        );
    }

    #[test]
    fn nats_urls_required_and_scheme_checked() {
        assert_eq!(
            err(&[ON, ("EVENT_BROKER_ADAPTER", "nats")]).name,
            "EVENT_BROKER_NATS_URLS"
        );
        assert_eq!(
            err(&[
                ON,
                ("EVENT_BROKER_ADAPTER", "nats"),
                ("EVENT_BROKER_NATS_URLS", " , ")
            ])
            .name,
            "EVENT_BROKER_NATS_URLS"
        );
        assert_eq!(
            err(&[
                ON,
                ("EVENT_BROKER_ADAPTER", "nats"),
                ("EVENT_BROKER_NATS_URLS", "http://a:4222")
            ])
            .name,
            "EVENT_BROKER_NATS_URLS"
        );
    }

    fn nats_auth(extra: &[(&str, &str)]) -> Result<(NatsAuth, Vec<String>), ConfigError> {
        let mut v = vec![
            ON,
            ("EVENT_BROKER_ADAPTER", "nats"),
            ("EVENT_BROKER_NATS_URLS", "nats://a:4222"),
        ];
        v.extend_from_slice(extra);
        let c = parse(&v)?;
        match c.broker {
            Some(BrokerConfig::Nats(n)) => Ok((n.auth, c.notes)),
            _ => panic!("not nats"),
        }
    }

    #[test]
    fn nats_token_takes_precedence_over_everything() {
        let (auth, notes) = nats_auth(&[
            ("EVENT_BROKER_NATS_TOKEN", "t0k"),
            ("EVENT_BROKER_NATS_USERNAME", "u"),
            ("EVENT_BROKER_NATS_PASSWORD", "p"),
            ("EVENT_BROKER_NATS_NKEY_SEED", "SUAAA"),
        ])
        .unwrap();
        assert_eq!(auth, NatsAuth::Token(Secret::new("t0k")));
        assert_eq!(notes.len(), 3, "{notes:?}");
        assert!(
            notes
                .iter()
                .all(|n| n.contains("EVENT_BROKER_NATS_TOKEN takes precedence"))
        );
        assert!(
            !notes
                .iter()
                .any(|n| n.contains("t0k") || n.contains("SUAAA"))
        );
    }

    #[test]
    fn nats_user_password_then_nkey() {
        let (auth, _) = nats_auth(&[
            ("EVENT_BROKER_NATS_USERNAME", "u"),
            ("EVENT_BROKER_NATS_PASSWORD", "p"),
        ])
        .unwrap();
        assert_eq!(
            auth,
            NatsAuth::UserPassword {
                username: "u".into(),
                password: Secret::new("p")
            }
        );
        let (auth, notes) = nats_auth(&[
            ("EVENT_BROKER_NATS_USERNAME", "u"),
            ("EVENT_BROKER_NATS_PASSWORD", "p"),
            ("EVENT_BROKER_NATS_NKEY_SEED", "SUAAA"),
        ])
        .unwrap();
        assert_eq!(auth.mode(), "user/password");
        assert_eq!(notes.len(), 1);
        assert_eq!(
            nats_auth(&[("EVENT_BROKER_NATS_USERNAME", "u")])
                .unwrap_err()
                .name,
            "EVENT_BROKER_NATS_PASSWORD"
        );
        assert_eq!(
            nats_auth(&[("EVENT_BROKER_NATS_PASSWORD", "p")])
                .unwrap_err()
                .name,
            "EVENT_BROKER_NATS_USERNAME"
        );
    }

    #[test]
    fn nats_nkey_alone_or_with_jwt() {
        let (auth, _) = nats_auth(&[("EVENT_BROKER_NATS_NKEY_SEED", "SUXYZ")]).unwrap();
        assert_eq!(
            auth,
            NatsAuth::Nkey {
                seed: Secret::new("SUXYZ"),
                jwt: None
            }
        );
        let (auth, _) = nats_auth(&[
            ("EVENT_BROKER_NATS_NKEY_SEED", "SUXYZ"),
            ("EVENT_BROKER_NATS_JWT", "eyJ"),
        ])
        .unwrap();
        assert_eq!(auth.mode(), "nkey+jwt");
        assert_eq!(
            nats_auth(&[("EVENT_BROKER_NATS_JWT", "eyJ")])
                .unwrap_err()
                .name,
            "EVENT_BROKER_NATS_JWT"
        );
        let e = nats_auth(&[("EVENT_BROKER_NATS_NKEY_SEED", "not-a-seed")]).unwrap_err();
        assert_eq!(e.name, "EVENT_BROKER_NATS_NKEY_SEED");
        assert!(
            !e.to_string().contains("not-a-seed"),
            "a secret leaked into {e}"
        );
    }

    #[test]
    fn empty_values_count_as_unset() {
        let (auth, _) = nats_auth(&[
            ("EVENT_BROKER_NATS_TOKEN", ""),
            ("EVENT_BROKER_NATS_USERNAME", ""),
        ])
        .unwrap();
        assert_eq!(auth, NatsAuth::None);
    }

    fn kafka(extra: &[(&str, &str)]) -> Result<KafkaConfig, ConfigError> {
        let mut v = vec![
            ON,
            ("EVENT_BROKER_ADAPTER", "kafka"),
            ("EVENT_BROKER_KAFKA_URLS", "k1:9092,k2:9092"),
        ];
        v.extend_from_slice(extra);
        match parse(&v)?.broker {
            Some(BrokerConfig::Kafka(k)) => Ok(k),
            _ => panic!("not kafka"),
        }
    }

    #[test]
    fn kafka_defaults_sasl_and_topic() {
        let k = kafka(&[]).unwrap();
        assert_eq!(k.brokers, vec!["k1:9092", "k2:9092"]);
        assert_eq!(k.sasl, None);
        assert_eq!(k.topic, None);
        let k = kafka(&[
            ("EVENT_BROKER_KAFKA_USERNAME", "u"),
            ("EVENT_BROKER_KAFKA_PASSWORD", "p"),
        ])
        .unwrap();
        assert_eq!(
            k.sasl.unwrap().mechanism,
            SaslMechanism::Plain,
            "plain is the default mechanism"
        );
        let k = kafka(&[
            ("EVENT_BROKER_KAFKA_USERNAME", "u"),
            ("EVENT_BROKER_KAFKA_PASSWORD", "p"),
            ("EVENT_BROKER_KAFKA_SASL_MECHANISM", "scram_sha_512"),
            ("EVENT_BROKER_KAFKA_SSL", "true"),
            ("EVENT_BROKER_KAFKA_TOPIC", "all-events"),
        ])
        .unwrap();
        assert_eq!(k.sasl.unwrap().mechanism, SaslMechanism::ScramSha512);
        assert!(k.tls.enabled);
        assert_eq!(k.topic.as_deref(), Some("all-events"));
    }

    #[test]
    fn kafka_errors_name_the_variable() {
        assert_eq!(
            kafka(&[("EVENT_BROKER_KAFKA_SASL_MECHANISM", "gssapi")])
                .unwrap_err()
                .name,
            "EVENT_BROKER_KAFKA_SASL_MECHANISM"
        );
        assert_eq!(
            kafka(&[("EVENT_BROKER_KAFKA_USERNAME", "u")])
                .unwrap_err()
                .name,
            "EVENT_BROKER_KAFKA_PASSWORD"
        );
        assert_eq!(
            kafka(&[("EVENT_BROKER_KAFKA_TOPIC", "bad topic")])
                .unwrap_err()
                .name,
            "EVENT_BROKER_KAFKA_TOPIC"
        );
        let e = parse(&[
            ON,
            ("EVENT_BROKER_ADAPTER", "kafka"),
            ("EVENT_BROKER_KAFKA_URLS", "kafka://k:9092"),
        ])
        .unwrap_err();
        assert_eq!(e.name, "EVENT_BROKER_KAFKA_URLS");
    }

    #[test]
    fn amqp_alias_and_url_scheme() {
        for a in ["amqp091", "rabbitmq"] {
            let b = broker(&[
                ON,
                ("EVENT_BROKER_ADAPTER", a),
                ("EVENT_BROKER_RABBITMQ_URL", "amqp://u:p@h:5672/%2f"),
            ]);
            assert_eq!(b.adapter_name(), "amqp091");
        }
        let BrokerConfig::Amqp(a) = broker(&[
            ON,
            ("EVENT_BROKER_ADAPTER", "rabbitmq"),
            ("EVENT_BROKER_RABBITMQ_URL", "amqps://u:p@h"),
        ]) else {
            panic!()
        };
        assert!(a.tls.enabled, "amqps:// implies TLS");
        let e = err(&[
            ON,
            ("EVENT_BROKER_ADAPTER", "rabbitmq"),
            ("EVENT_BROKER_RABBITMQ_URL", "http://u:s3cr3t@h"),
        ]);
        assert_eq!(e.name, "EVENT_BROKER_RABBITMQ_URL");
        assert!(
            !e.to_string().contains("s3cr3t"),
            "URL credentials leaked: {e}"
        );
    }

    #[test]
    fn redis_url_and_ssl() {
        let BrokerConfig::Redis(r) = broker(&[
            ON,
            ("EVENT_BROKER_ADAPTER", "redis"),
            ("EVENT_BROKER_REDIS_URL", "rediss://:pw@h:6380"),
        ]) else {
            panic!()
        };
        assert!(r.tls.enabled);
        let BrokerConfig::Redis(r) = broker(&[
            ON,
            ("EVENT_BROKER_ADAPTER", "redis"),
            ("EVENT_BROKER_REDIS_URL", "redis://h:6379"),
            ("EVENT_BROKER_REDIS_SSL", "true"),
        ]) else {
            panic!()
        };
        assert!(r.tls.enabled);
        assert_eq!(
            err(&[ON, ("EVENT_BROKER_ADAPTER", "redis")]).name,
            "EVENT_BROKER_REDIS_URL"
        );
    }

    fn mqtt(extra: &[(&str, &str)]) -> Result<(MqttConfig, Vec<String>), ConfigError> {
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

    #[test]
    fn mqtt_defaults() {
        let (m, _) = mqtt(&[]).unwrap();
        assert_eq!((m.host.as_str(), m.port, m.qos), ("broker", 1883, 1));
        assert_eq!(m.auth, MqttAuth::None);
    }

    #[test]
    fn mqtt_qos_is_validated_with_the_documented_message() {
        for q in ["0", "1", "2"] {
            assert_eq!(
                mqtt(&[("EVENT_BROKER_MQTT_QOS", q)])
                    .unwrap()
                    .0
                    .qos
                    .to_string(),
                q
            );
        }
        let e = mqtt(&[("EVENT_BROKER_MQTT_QOS", "5")]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "EVENT_BROKER_MQTT_QOS: must be 0, 1 or 2, got \"5\""
        );
    }

    #[test]
    fn mqtt_jwt_takes_precedence_over_user_password() {
        let (m, notes) = mqtt(&[
            ("EVENT_BROKER_MQTT_JWT", "eyJhbGciOi"),
            ("EVENT_BROKER_MQTT_USERNAME", "dev"),
            ("EVENT_BROKER_MQTT_PASSWORD", "pw"),
        ])
        .unwrap();
        assert_eq!(
            m.auth,
            MqttAuth::Jwt {
                username: Some("dev".into()),
                token: Secret::new("eyJhbGciOi")
            }
        );
        assert_eq!(notes.len(), 1);
        let (m, _) = mqtt(&[
            ("EVENT_BROKER_MQTT_USERNAME", "dev"),
            ("EVENT_BROKER_MQTT_PASSWORD", "pw"),
        ])
        .unwrap();
        assert_eq!(
            m.auth,
            MqttAuth::UserPassword {
                username: "dev".into(),
                password: Some(Secret::new("pw"))
            }
        );
        assert_eq!(
            mqtt(&[("EVENT_BROKER_MQTT_PASSWORD", "pw")])
                .unwrap_err()
                .name,
            "EVENT_BROKER_MQTT_USERNAME"
        );
    }

    #[test]
    fn mqtt_url_must_not_carry_a_scheme() {
        let e = parse(&[
            ON,
            ("EVENT_BROKER_ADAPTER", "mqtt"),
            ("EVENT_BROKER_MQTT_URL", "mqtt://b:1883"),
        ])
        .unwrap_err();
        assert_eq!(e.name, "EVENT_BROKER_MQTT_URL");
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
