//! The publisher's environment interface (`edgewire-agent publisher`), as the seed spells it: the operator's
//! publisher builder renders these variables and the agent reads them, so both name them from here.
//!
//! Per-adapter settings are `EVENT_BROKER_<ADAPTER>_<SETTING>`: the adapter part is [`adapter_prefix`], the
//! TLS settings every self-hosted adapter shares are the `tls` suffixes appended to it.

use crate::Adapter;

/// `true` turns the publisher on.
pub const ENABLED: &str = "EVENT_BROKER_ENABLED";
/// The adapter id (`nats`, `kafka`, `amqp091`, `rabbitmq`, `redis`, `mqtt`, `aws_sns`, `google_pubsub`).
pub const ADAPTER: &str = "EVENT_BROKER_ADAPTER";
/// Name of this core, in every event envelope.
pub const CORE_NAME: &str = "CORE_NAME";
/// Address of the CloudEvents HTTP ingress (`0.0.0.0:8080`).
pub const LISTEN: &str = "EDGEWIRE_LISTEN";
/// Log format: `json` or `text`.
pub const LOG_FORMAT: &str = "EDGEWIRE_LOG_FORMAT";

/// NATS: comma-separated server URLs.
pub const NATS_URLS: &str = "EVENT_BROKER_NATS_URLS";
/// NATS: publish through JetStream (`true`/`false`).
pub const NATS_JETSTREAM: &str = "EVENT_BROKER_NATS_JETSTREAM";
/// NATS: the JetStream stream.
pub const NATS_STREAM: &str = "EVENT_BROKER_NATS_STREAM";
/// NATS: the stream's max age (Go duration).
pub const NATS_STREAM_MAX_AGE: &str = "EVENT_BROKER_NATS_STREAM_MAX_AGE";
/// NATS: token auth.
pub const NATS_TOKEN: &str = "EVENT_BROKER_NATS_TOKEN";
/// NATS: NKEY seed.
pub const NATS_NKEY_SEED: &str = "EVENT_BROKER_NATS_NKEY_SEED";
/// NATS: user JWT next to the NKEY seed.
pub const NATS_JWT: &str = "EVENT_BROKER_NATS_JWT";

/// Kafka: comma-separated bootstrap servers.
pub const KAFKA_URLS: &str = "EVENT_BROKER_KAFKA_URLS";
/// Kafka: one topic for every event.
pub const KAFKA_TOPIC: &str = "EVENT_BROKER_KAFKA_TOPIC";
/// Kafka: `plain`, `scram_sha_256` or `scram_sha_512`.
pub const KAFKA_SASL_MECHANISM: &str = "EVENT_BROKER_KAFKA_SASL_MECHANISM";

/// AMQP 0-9-1: the URL, credentials inside.
pub const RABBITMQ_URL: &str = "EVENT_BROKER_RABBITMQ_URL";
/// Redis: the URL, credentials inside.
pub const REDIS_URL: &str = "EVENT_BROKER_REDIS_URL";

/// MQTT: `host:port`.
pub const MQTT_URL: &str = "EVENT_BROKER_MQTT_URL";
/// MQTT: QoS of every publish.
pub const MQTT_QOS: &str = "EVENT_BROKER_MQTT_QOS";
/// MQTT: a JWT in the CONNECT password slot.
pub const MQTT_JWT: &str = "EVENT_BROKER_MQTT_JWT";

/// AWS SNS: region.
pub const AWS_SNS_REGION: &str = "EVENT_BROKER_AWS_SNS_REGION";
/// AWS SNS: the topic ARN prefix.
pub const AWS_SNS_TOPIC_ARN_PREFIX: &str = "EVENT_BROKER_AWS_SNS_TOPIC_ARN_PREFIX";
/// AWS SNS: endpoint override.
pub const AWS_SNS_ENDPOINT: &str = "EVENT_BROKER_AWS_SNS_ENDPOINT";
/// AWS static credentials (the AWS CLI's names; also the keys of a credentials Secret).
pub const AWS_ACCESS_KEY_ID: &str = "AWS_ACCESS_KEY_ID";
pub const AWS_SECRET_ACCESS_KEY: &str = "AWS_SECRET_ACCESS_KEY";
pub const AWS_SESSION_TOKEN: &str = "AWS_SESSION_TOKEN";

/// Google Pub/Sub: project id.
pub const GOOGLE_PUBSUB_PROJECT: &str = "EVENT_BROKER_GOOGLE_PUBSUB_PROJECT";
/// Google Pub/Sub: topic id prefix.
pub const GOOGLE_PUBSUB_TOPIC_ID_PREFIX: &str = "EVENT_BROKER_GOOGLE_PUBSUB_TOPIC_ID_PREFIX";
/// Google Pub/Sub: endpoint override.
pub const GOOGLE_PUBSUB_ENDPOINT: &str = "EVENT_BROKER_GOOGLE_PUBSUB_ENDPOINT";
/// The service-account key file (Application Default Credentials).
pub const GOOGLE_APPLICATION_CREDENTIALS: &str = "GOOGLE_APPLICATION_CREDENTIALS";

/// Suffixes after [`adapter_prefix`] shared by several adapters.
pub mod suffix {
    /// User/password auth (NATS, Kafka SASL, MQTT).
    pub const USERNAME: &str = "_USERNAME";
    pub const PASSWORD: &str = "_PASSWORD";
    /// TLS on (`true`).
    pub const SSL: &str = "_SSL";
    /// CA bundle file.
    pub const CACERT_FILE: &str = "_CACERT_FILE";
    /// Client certificate and key files (mTLS).
    pub const CLIENT_CERT_FILE: &str = "_CLIENT_CERT_FILE";
    pub const CLIENT_KEY_FILE: &str = "_CLIENT_KEY_FILE";
    /// `1.3` to refuse TLS 1.2.
    pub const TLS_MIN_VERSION: &str = "_TLS_MIN_VERSION";
    /// Server name to verify.
    pub const TLS_SERVER_NAME: &str = "_TLS_SERVER_NAME";
}

/// The `EVENT_BROKER_<ADAPTER>` part of an adapter's settings.
pub fn adapter_prefix(adapter: Adapter) -> &'static str {
    match adapter.canonical() {
        Adapter::Nats => "EVENT_BROKER_NATS",
        Adapter::Kafka => "EVENT_BROKER_KAFKA",
        Adapter::Amqp091 | Adapter::Rabbitmq => "EVENT_BROKER_RABBITMQ",
        Adapter::Redis => "EVENT_BROKER_REDIS",
        Adapter::Mqtt => "EVENT_BROKER_MQTT",
        Adapter::AwsSns => "EVENT_BROKER_AWS_SNS",
        Adapter::GooglePubsub => "EVENT_BROKER_GOOGLE_PUBSUB",
    }
}

/// `EVENT_BROKER_<ADAPTER><suffix>`.
pub fn adapter_var(adapter: Adapter, suffix: &str) -> String {
    format!("{}{suffix}", adapter_prefix(adapter))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_names_agree_with_the_prefixes() {
        for (a, fixed) in [
            (Adapter::Nats, NATS_URLS),
            (Adapter::Kafka, KAFKA_URLS),
            (Adapter::Rabbitmq, RABBITMQ_URL),
            (Adapter::Redis, REDIS_URL),
            (Adapter::Mqtt, MQTT_URL),
            (Adapter::AwsSns, AWS_SNS_REGION),
            (Adapter::GooglePubsub, GOOGLE_PUBSUB_PROJECT),
        ] {
            assert!(fixed.starts_with(adapter_prefix(a)), "{fixed}");
        }
        assert_eq!(
            adapter_var(Adapter::Mqtt, suffix::SSL),
            "EVENT_BROKER_MQTT_SSL"
        );
    }
}
