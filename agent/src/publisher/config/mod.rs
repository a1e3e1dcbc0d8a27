//! The publisher's configuration, from the seed's environment interface ([`env`]) or from an
//! `EventBroker` YAML file with Secrets mounted as files ([`file`]). Both produce [`PublisherConfig`].

pub mod env;
pub mod file;

use std::path::PathBuf;
use std::time::Duration;

// Connection settings the publisher shares with the bridge and `tail`.
pub use crate::connect::kafka::{KafkaSasl, SaslMechanism};
pub use crate::connect::nats::NatsAuth;
pub use crate::secret::Secret;
pub use crate::tls::{ClientCert, TlsSettings, TlsVersion};
// Values with a rule of the API: parsed, so an adapter never sees an unchecked one.
pub use edgewire_api::{AwsRegion, GcpProjectId, PubsubTopicIdPrefix, SnsTopicArnPrefix};

/// A configuration error: `name` is the environment variable (or spec field) at fault. The message never
/// contains a secret value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{name}: {message}")]
pub struct ConfigError {
    pub name: String,
    pub message: String,
}

impl ConfigError {
    pub fn new(name: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            message: message.into(),
        }
    }
}

/// Everything the publisher and `tail` need.
#[derive(Debug, Clone, PartialEq)]
pub struct PublisherConfig {
    /// `EVENT_BROKER_ENABLED`. When false the publisher serves HTTP but refuses events (503, not retryable).
    pub enabled: bool,
    /// `CORE_NAME`, set as the `corename` extension of every event.
    pub core_name: String,
    /// The broker connection; `None` only when disabled.
    pub broker: Option<BrokerConfig>,
    /// Settings that were ignored because of a precedence rule (logged at startup, never secret).
    pub notes: Vec<String>,
}

/// One broker connection, per adapter.
#[derive(Debug, Clone, PartialEq)]
pub enum BrokerConfig {
    Nats(NatsConfig),
    Kafka(KafkaConfig),
    Amqp(AmqpConfig),
    Redis(RedisConfig),
    Mqtt(MqttConfig),
    Sns(SnsConfig),
    PubSub(PubSubConfig),
}

impl BrokerConfig {
    /// The adapter id used in metric labels and logs.
    pub fn adapter_name(&self) -> &'static str {
        match self {
            BrokerConfig::Nats(_) => "nats",
            BrokerConfig::Kafka(_) => "kafka",
            BrokerConfig::Amqp(_) => "amqp091",
            BrokerConfig::Redis(_) => "redis",
            BrokerConfig::Mqtt(_) => "mqtt",
            BrokerConfig::Sns(_) => "aws_sns",
            BrokerConfig::PubSub(_) => "google_pubsub",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct NatsConfig {
    pub urls: Vec<String>,
    pub jetstream: Option<JetStreamConfig>,
    pub auth: NatsAuth,
    pub tls: TlsSettings,
}

#[derive(Debug, Clone, PartialEq)]
pub struct JetStreamConfig {
    /// Stream capturing `edge.>`.
    pub stream: String,
    pub max_age: Duration,
}

/// The subjects the JetStream stream must capture.
pub const JETSTREAM_SUBJECTS: &str = "edge.>";

#[derive(Debug, Clone, PartialEq)]
pub struct KafkaConfig {
    /// Bootstrap servers, `host:port`.
    pub brokers: Vec<String>,
    /// One topic for every event; else the event's domain topic.
    pub topic: Option<String>,
    pub sasl: Option<KafkaSasl>,
    pub tls: TlsSettings,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AmqpConfig {
    /// `amqp://user:pass@host:5672/vhost`; secret because the credentials are inside.
    pub url: Secret,
    pub tls: TlsSettings,
}

/// The durable topic exchange every event is published to.
pub const AMQP_EXCHANGE: &str = "edge.events";

#[derive(Debug, Clone, PartialEq)]
pub struct RedisConfig {
    /// `redis://` or `rediss://`; secret because credentials may be inside.
    pub url: Secret,
    pub tls: TlsSettings,
}

#[derive(Debug, Clone, PartialEq)]
pub struct MqttConfig {
    pub host: String,
    pub port: u16,
    pub qos: u8,
    pub auth: MqttAuth,
    pub tls: TlsSettings,
}

#[derive(Debug, Clone, PartialEq)]
pub enum MqttAuth {
    None,
    /// The JWT goes in the CONNECT password slot; the user name is `EVENT_BROKER_MQTT_USERNAME` or empty.
    Jwt {
        username: Option<String>,
        token: Secret,
    },
    UserPassword {
        username: String,
        password: Option<Secret>,
    },
}

/// AWS SNS: every event goes to `topic_arn_prefix` + its domain topic name.
#[derive(Debug, Clone, PartialEq)]
pub struct SnsConfig {
    /// `EVENT_BROKER_AWS_SNS_REGION`; the ARN prefix's region when unset.
    pub region: AwsRegion,
    /// `EVENT_BROKER_AWS_SNS_TOPIC_ARN_PREFIX`, e.g. `arn:aws:sns:us-east-1:123456789012:` (may end in a name
    /// prefix such as `...:123456789012:prod-`).
    pub topic_arn_prefix: SnsTopicArnPrefix,
    /// `EVENT_BROKER_AWS_SNS_ENDPOINT`: VPC endpoints, local emulators (moto, LocalStack).
    pub endpoint: Option<String>,
    /// Static keys (`spec.awsSns.credentials` in `--config` mode). `None`: the standard chain (env
    /// `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`/`AWS_SESSION_TOKEN`, shared files, IRSA web identity,
    /// ECS/EC2 instance roles).
    pub static_credentials: Option<AwsStaticCredentials>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AwsStaticCredentials {
    pub access_key_id: Secret,
    pub secret_access_key: Secret,
    pub session_token: Option<Secret>,
}

/// Google Cloud Pub/Sub: every event goes to `projects/<project>/topics/<topic_id_prefix><domain topic>`.
#[derive(Debug, Clone, PartialEq)]
pub struct PubSubConfig {
    /// `EVENT_BROKER_GOOGLE_PUBSUB_PROJECT`.
    pub project: GcpProjectId,
    /// `EVENT_BROKER_GOOGLE_PUBSUB_TOPIC_ID_PREFIX`, e.g. `edge-prod-` (empty: none).
    pub topic_id_prefix: PubsubTopicIdPrefix,
    /// `EVENT_BROKER_GOOGLE_PUBSUB_ENDPOINT`. An `http://` endpoint (emulators) is used without credentials;
    /// an `https://` one (private / regional endpoints) with the usual credentials.
    pub endpoint: Option<String>,
    /// A service-account JSON key (`spec.googlePubsub.credentials` in `--config` mode). `None`: Application
    /// Default Credentials (`GOOGLE_APPLICATION_CREDENTIALS`, then the metadata server / Workload Identity).
    pub credentials_file: Option<PathBuf>,
}

impl PubSubConfig {
    /// Whether the endpoint is a cleartext emulator endpoint (no credentials are sent there).
    pub fn is_emulator(&self) -> bool {
        self.endpoint
            .as_deref()
            .is_some_and(|e| e.starts_with("http://"))
    }
}

/// Checks a URL's scheme without ever echoing the URL (it holds credentials); true for the TLS scheme.
pub fn check_scheme(field: &str, url: &str, plain: &str, tls: &str) -> Result<bool, ConfigError> {
    match url.split_once("://") {
        Some((s, rest)) if s == plain && !rest.is_empty() => Ok(false),
        Some((s, rest)) if s == tls && !rest.is_empty() => Ok(true),
        _ => Err(ConfigError::new(
            field,
            format!("must be a {plain}:// or {tls}:// URL"),
        )),
    }
}

/// An endpoint override (`field`) by the api crate's rule ([`edgewire_api::endpoint::endpoint_override`],
/// which the operator's validation applies too), without a trailing `/`; empty or absent is none.
pub fn endpoint_override(field: &str, value: Option<&str>) -> Result<Option<String>, ConfigError> {
    match value.map(str::trim).filter(|e| !e.is_empty()) {
        None => Ok(None),
        Some(e) => edgewire_api::endpoint::endpoint_override(e)
            .map(Some)
            .map_err(|m| ConfigError::new(field, m)),
    }
}

/// Parses a Go duration (`168h`, `1h30m`, `90s`, `1.5h`, `250ms`).
pub fn parse_go_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    if s == "0" {
        return Some(Duration::ZERO);
    }
    let mut total = 0f64;
    let mut rest = s;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if num_len == 0 {
            return None;
        }
        let value: f64 = rest[..num_len].parse().ok()?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let factor = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total += value * factor;
    }
    if !total.is_finite() || total > 1e12 {
        return None;
    }
    Some(Duration::from_secs_f64(total))
}

/// Parses a `true`/`false` switch as the seed's env interface spells it (also 1/0, yes/no).
pub fn parse_bool(s: &str) -> Option<bool> {
    match s.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Some(true),
        "false" | "0" | "no" | "off" => Some(false),
        _ => None,
    }
}

/// Parses `plain | scram_sha_256 | scram_sha_512` (case and `-`/`_` insensitive: `SCRAM-SHA-256` works too).
pub fn parse_sasl_mechanism(s: &str) -> Option<SaslMechanism> {
    match s.trim().to_ascii_lowercase().replace('-', "_").as_str() {
        "plain" => Some(SaslMechanism::Plain),
        "scram_sha_256" => Some(SaslMechanism::ScramSha256),
        "scram_sha_512" => Some(SaslMechanism::ScramSha512),
        _ => None,
    }
}

/// Splits `host:port` (IPv6 as `[::1]:port`); the port defaults to `default_port`.
pub fn split_host_port(s: &str, default_port: u16) -> Option<(String, u16)> {
    let s = s.trim();
    if s.is_empty() || s.contains('/') {
        return None;
    }
    if let Some(rest) = s.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse().ok()?,
            None if after.is_empty() => default_port,
            None => return None,
        };
        return Some((host.to_string(), port));
    }
    match s.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && !host.contains(':') => {
            Some((host.to_string(), port.parse().ok()?))
        }
        Some(_) => None,
        None => Some((s.to_string(), default_port)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        assert_eq!(
            parse_go_duration("168h"),
            Some(Duration::from_secs(168 * 3600))
        );
        assert_eq!(parse_go_duration("1h30m"), Some(Duration::from_secs(5400)));
        assert_eq!(parse_go_duration("1.5h"), Some(Duration::from_secs(5400)));
        assert_eq!(parse_go_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_go_duration("0"), Some(Duration::ZERO));
        for bad in ["", "h", "10", "10x", "1h 30m", "-1h", "1e9h"] {
            assert_eq!(parse_go_duration(bad), None, "{bad}");
        }
    }

    #[test]
    fn host_ports() {
        assert_eq!(
            split_host_port("mqtt.local:1884", 1883),
            Some(("mqtt.local".into(), 1884))
        );
        assert_eq!(
            split_host_port("mqtt.local", 1883),
            Some(("mqtt.local".into(), 1883))
        );
        assert_eq!(
            split_host_port("[::1]:8883", 1883),
            Some(("::1".into(), 8883))
        );
        assert_eq!(split_host_port("host:notaport", 1883), None);
        assert_eq!(split_host_port("mqtt://host:1883", 1883), None);
        assert_eq!(split_host_port("", 1883), None);
    }

    #[test]
    fn sasl_mechanisms() {
        assert_eq!(parse_sasl_mechanism("plain"), Some(SaslMechanism::Plain));
        assert_eq!(
            parse_sasl_mechanism("SCRAM-SHA-256"),
            Some(SaslMechanism::ScramSha256)
        );
        assert_eq!(
            parse_sasl_mechanism("scram_sha_512"),
            Some(SaslMechanism::ScramSha512)
        );
        assert_eq!(parse_sasl_mechanism("gssapi"), None);
    }
}
