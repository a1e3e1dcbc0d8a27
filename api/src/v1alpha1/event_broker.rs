//! `EventBroker`: a CloudEvents publisher workload in front of the broker a team runs (or one the operator
//! deploys), plus topic provisioning on managed clouds.

use super::checked::*;
use super::common::*;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Desired state of an EventBroker.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[kube(
    group = "edgewire.dev",
    version = "v1alpha1",
    kind = "EventBroker",
    doc = "A CloudEvents publisher workload in front of the broker a team runs (or one the operator deploys), plus topic provisioning on managed clouds (AWS SNS, Google Pub/Sub).",
    plural = "eventbrokers",
    shortname = "eb",
    category = "edgewire",
    namespaced,
    status = "EventBrokerStatus",
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Adapter","type":"string","jsonPath":".spec.adapter"}"#,
    printcolumn = r#"{"name":"Endpoint","type":"string","jsonPath":".status.endpoint"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.adapter != 'nats' || has(self.nats) || has(self.deployBroker)").message("adapter nats needs spec.nats (or spec.deployBroker)"))]
#[x_kube(validation = Rule::new("self.adapter != 'kafka' || has(self.kafka) || has(self.deployBroker)").message("adapter kafka needs spec.kafka (or spec.deployBroker)"))]
#[x_kube(validation = Rule::new("!(self.adapter in ['amqp091', 'rabbitmq']) || (has(self.amqp091) && has(self.amqp091.url)) || has(self.deployBroker)").message("adapter amqp091 needs spec.amqp091.url (or spec.deployBroker)"))]
#[x_kube(validation = Rule::new("self.adapter != 'redis' || (has(self.redis) && has(self.redis.url)) || has(self.deployBroker)").message("adapter redis needs spec.redis.url (or spec.deployBroker)"))]
#[x_kube(validation = Rule::new("self.adapter != 'mqtt' || (has(self.mqtt) && has(self.mqtt.url)) || has(self.deployBroker)").message("adapter mqtt needs spec.mqtt.url (or spec.deployBroker)"))]
#[x_kube(validation = Rule::new("self.adapter != 'aws_sns' || has(self.awsSns)").message("adapter aws_sns needs spec.awsSns"))]
#[x_kube(validation = Rule::new("self.adapter != 'google_pubsub' || has(self.googlePubsub)").message("adapter google_pubsub needs spec.googlePubsub"))]
#[x_kube(validation = Rule::new("!has(self.deployBroker) || (self.adapter == 'nats' && self.deployBroker.kind == 'nats') || (self.adapter == 'kafka' && self.deployBroker.kind in ['redpanda', 'kafka']) || (self.adapter in ['amqp091', 'rabbitmq'] && self.deployBroker.kind == 'rabbitmq') || (self.adapter == 'redis' && self.deployBroker.kind == 'redis') || (self.adapter == 'mqtt' && self.deployBroker.kind in ['emqx', 'mosquitto'])").message("deployBroker.kind must belong to the adapter's family (nats: nats; kafka: redpanda | kafka; amqp091: rabbitmq; redis: redis; mqtt: emqx | mosquitto)"))]
pub struct EventBrokerSpec {
    /// Name of this core, included in every event envelope and promoted to a broker-native attribute
    /// (`corename`). Default "default".
    #[serde(default = "default_core_name")]
    #[schemars(length(min = 1, max = 63))]
    pub core_name: String,

    /// Which broker protocol the publisher speaks.
    pub adapter: Adapter,

    /// NATS / JetStream connection (adapter `nats`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nats: Option<NatsSpec>,
    /// Kafka connection (adapter `kafka`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kafka: Option<KafkaSpec>,
    /// AMQP 0-9-1 connection (adapter `amqp091`, alias `rabbitmq`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amqp091: Option<Amqp091Spec>,
    /// Redis connection (adapter `redis`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis: Option<RedisSpec>,
    /// MQTT connection (adapter `mqtt`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mqtt: Option<MqttSpec>,
    /// AWS SNS settings (adapter `aws_sns`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aws_sns: Option<AwsSnsSpec>,
    /// Google Cloud Pub/Sub settings (adapter `google_pubsub`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub google_pubsub: Option<GooglePubsubSpec>,

    /// Have the operator run the broker too, and point the adapter at it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deploy_broker: Option<DeployBroker>,

    /// The publisher workload (CloudEvents HTTP ingress).
    #[serde(default)]
    pub publisher: PublisherSpec,

    /// What outlives this resource: provisioned cloud topics and broker volumes. Default Retain.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,
}

fn default_core_name() -> String {
    "default".into()
}

/// Broker protocol of the publisher.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum Adapter {
    /// NATS core, or JetStream when `nats.jetStream.enabled`.
    #[serde(rename = "nats")]
    Nats,
    /// Kafka wire protocol (Apache Kafka, Redpanda, MSK, Event Hubs, ...).
    #[serde(rename = "kafka")]
    Kafka,
    /// AMQP 0-9-1 (RabbitMQ, LavinMQ, Amazon MQ, CloudAMQP).
    #[serde(rename = "amqp091")]
    Amqp091,
    /// Alias of `amqp091`.
    #[serde(rename = "rabbitmq")]
    Rabbitmq,
    /// Redis Pub/Sub.
    #[serde(rename = "redis")]
    Redis,
    /// MQTT 3.1.1 (5.0 brokers downgrade the session).
    #[serde(rename = "mqtt")]
    Mqtt,
    /// AWS SNS (managed).
    #[serde(rename = "aws_sns")]
    AwsSns,
    /// Google Cloud Pub/Sub (managed).
    #[serde(rename = "google_pubsub")]
    GooglePubsub,
}

impl Adapter {
    /// The adapter with aliases resolved (`rabbitmq` is `amqp091`).
    pub fn canonical(self) -> Adapter {
        match self {
            Adapter::Rabbitmq => Adapter::Amqp091,
            a => a,
        }
    }

    /// The id used in `EVENT_BROKER_ADAPTER` and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Adapter::Nats => "nats",
            Adapter::Kafka => "kafka",
            Adapter::Amqp091 => "amqp091",
            Adapter::Rabbitmq => "rabbitmq",
            Adapter::Redis => "redis",
            Adapter::Mqtt => "mqtt",
            Adapter::AwsSns => "aws_sns",
            Adapter::GooglePubsub => "google_pubsub",
        }
    }

    /// Parses an adapter id as the environment interface spells it.
    pub fn parse(s: &str) -> Option<Adapter> {
        [
            Adapter::Nats,
            Adapter::Kafka,
            Adapter::Amqp091,
            Adapter::Rabbitmq,
            Adapter::Redis,
            Adapter::Mqtt,
            Adapter::AwsSns,
            Adapter::GooglePubsub,
        ]
        .into_iter()
        .find(|a| a.as_str() == s)
    }

    /// Broker kinds `deployBroker` may run for this adapter.
    pub fn broker_family(self) -> &'static [BrokerKind] {
        match self.canonical() {
            Adapter::Nats => &[BrokerKind::Nats],
            Adapter::Kafka => &[BrokerKind::Redpanda, BrokerKind::Kafka],
            Adapter::Amqp091 => &[BrokerKind::Rabbitmq],
            Adapter::Redis => &[BrokerKind::Redis],
            Adapter::Mqtt => &[BrokerKind::Emqx, BrokerKind::Mosquitto],
            _ => &[],
        }
    }
}

/// NATS authentication: exactly one mode.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("(has(self.token) ? 1 : 0) + (has(self.userPassword) ? 1 : 0) + (has(self.nkey) ? 1 : 0) == 1").message("nats.auth: set exactly one of token, userPassword, nkey"))]
pub struct NatsAuth {
    /// A token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<SecretKeyRef>,
    /// A Secret with keys `username` and `password`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_password: Option<SecretRef>,
    /// An NKEY seed, alone or with a user JWT (decentralized auth).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nkey: Option<NatsNkey>,
}

/// NKEY seed and optional user JWT.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NatsNkey {
    /// The user's NKEY seed (`SU...`).
    pub seed: SecretKeyRef,
    /// The user JWT issued by the account, for decentralized auth.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwt: Option<SecretKeyRef>,
}

/// JetStream settings of the NATS adapter.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct JetStreamSpec {
    /// Publish through JetStream (durable log, replay); the publish waits for the stream's ack.
    #[serde(default)]
    pub enabled: bool,
    /// Stream capturing `edge.>`; created if absent, verified if present.
    #[serde(default = "default_stream")]
    #[schemars(regex(pattern = r"^[A-Za-z0-9_-]+$"))]
    pub stream: String,
    /// How long the stream keeps messages (Go duration: 168h, 30m).
    #[serde(default = "default_max_age")]
    #[schemars(regex(pattern = r"^([0-9]+(\.[0-9]+)?(ns|us|ms|s|m|h))+$"))]
    pub max_age: String,
}

impl Default for JetStreamSpec {
    fn default() -> Self {
        Self {
            enabled: false,
            stream: default_stream(),
            max_age: default_max_age(),
        }
    }
}

fn default_stream() -> String {
    "EDGE_EVENTS".into()
}
fn default_max_age() -> String {
    "168h".into()
}

/// Connection to NATS.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NatsSpec {
    /// Server URLs (`nats://host:4222`, `tls://` for external brokers). Empty with `deployBroker`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub urls: Vec<String>,
    /// JetStream durable log.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jet_stream: Option<JetStreamSpec>,
    /// Authentication; none when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<NatsAuth>,
    /// TLS settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<Tls>,
}

/// SASL mechanism for Kafka.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SaslMechanism {
    /// SASL/PLAIN.
    #[default]
    Plain,
    /// SASL/SCRAM-SHA-256.
    #[serde(rename = "scram_sha_256")]
    ScramSha256,
    /// SASL/SCRAM-SHA-512.
    #[serde(rename = "scram_sha_512")]
    ScramSha512,
}

impl SaslMechanism {
    pub fn as_str(self) -> &'static str {
        match self {
            SaslMechanism::Plain => "plain",
            SaslMechanism::ScramSha256 => "scram_sha_256",
            SaslMechanism::ScramSha512 => "scram_sha_512",
        }
    }
}

/// Kafka SASL authentication.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KafkaSasl {
    /// Mechanism: plain (default), scram_sha_256, scram_sha_512.
    #[serde(default)]
    pub mechanism: SaslMechanism,
    /// Secret with keys `username` and `password`.
    pub secret_name: String,
}

/// Connection to Kafka.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KafkaSpec {
    /// Bootstrap servers `host:port`, no scheme. Empty with `deployBroker`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub urls: Vec<String>,
    /// One topic for every event; when absent, each event goes to its domain topic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[A-Za-z0-9._-]{1,249}$"))]
    pub topic: Option<String>,
    /// SASL authentication; none when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sasl: Option<KafkaSasl>,
    /// TLS settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<Tls>,
}

/// Connection to an AMQP 0-9-1 broker.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Amqp091Spec {
    /// Secret key holding the `amqp://user:pass@host:5672/vhost` URL (credentials live inside it).
    /// Absent with `deployBroker`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<SecretKeyRef>,
    /// TLS settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<Tls>,
}

/// Connection to Redis.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RedisSpec {
    /// Secret key holding the `redis://user:pass@host:6379` (or `rediss://`) URL. Absent with `deployBroker`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<SecretKeyRef>,
    /// TLS settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<Tls>,
}

/// MQTT authentication: exactly one mode.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("(has(self.jwt) ? 1 : 0) + (has(self.userPassword) ? 1 : 0) == 1").message("mqtt.auth: set exactly one of jwt, userPassword"))]
pub struct MqttAuth {
    /// A JWT sent in the CONNECT password slot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwt: Option<SecretKeyRef>,
    /// A Secret with keys `username` and `password`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_password: Option<SecretRef>,
}

/// Connection to an MQTT broker.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct MqttSpec {
    /// `host:port`, no scheme. Absent with `deployBroker`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// QoS of every publish: 0, 1 (default, at least once with broker ack) or 2.
    #[serde(default = "default_qos")]
    #[schemars(range(min = 0, max = 2))]
    #[x_kube(validation = Rule::new("self >= 0 && self <= 2").message("mqtt.qos must be 0, 1 or 2"))]
    pub qos: u8,
    /// Authentication; none when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<MqttAuth>,
    /// TLS settings (custom CA, client certificate for mTLS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<Tls>,
}

impl Default for MqttSpec {
    fn default() -> Self {
        Self {
            url: None,
            qos: default_qos(),
            auth: None,
            tls: None,
        }
    }
}

fn default_qos() -> u8 {
    1
}

/// AWS SNS settings.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AwsSnsSpec {
    /// AWS region, e.g. us-east-1.
    #[schemars(schema_with = "AwsRegion::schema")]
    pub region: String,
    /// Account-scoped ARN prefix (`arn:aws:sns:us-east-1:123456789012:`); derived from the provisioned topics
    /// when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "SnsTopicArnPrefix::schema")]
    pub topic_arn_prefix: Option<String>,
    /// Create the four domain topics (and delete them with `deletionPolicy: Delete`).
    #[serde(default)]
    pub provision: bool,
    /// Static credentials (Secret with `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, optional
    /// `AWS_SESSION_TOKEN`); the standard chain (IRSA, instance profile) when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<SecretRef>,
    /// Endpoint override (VPC endpoints, local emulators).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// IAM role for the publisher's ServiceAccount (IRSA annotation `eks.amazonaws.com/role-arn`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "IamRoleArn::schema")]
    pub role_arn: Option<String>,
}

/// Google Cloud Pub/Sub settings.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GooglePubsubSpec {
    /// GCP project id.
    #[schemars(schema_with = "GcpProjectId::schema")]
    pub project: String,
    /// Prefix of the topic ids, e.g. `edge-prod-`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "PubsubTopicIdPrefix::schema")]
    pub topic_id_prefix: Option<String>,
    /// Create the four domain topics (and delete them with `deletionPolicy: Delete`).
    #[serde(default)]
    pub provision: bool,
    /// Service-account JSON key, mounted and named by `GOOGLE_APPLICATION_CREDENTIALS`; Workload Identity
    /// or the metadata server when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<SecretKeyRef>,
    /// Endpoint override (emulators, private endpoints).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// GCP service account for Workload Identity (annotation `iam.gke.io/gcp-service-account`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account: Option<String>,
}

/// A broker the operator can run.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum BrokerKind {
    /// NATS with JetStream.
    Nats,
    /// Redpanda (Kafka API).
    Redpanda,
    /// Apache Kafka in KRaft mode.
    Kafka,
    /// RabbitMQ.
    Rabbitmq,
    /// Redis.
    Redis,
    /// EMQX (MQTT).
    Emqx,
    /// Eclipse Mosquitto (MQTT).
    Mosquitto,
}

impl BrokerKind {
    pub fn as_str(self) -> &'static str {
        match self {
            BrokerKind::Nats => "nats",
            BrokerKind::Redpanda => "redpanda",
            BrokerKind::Kafka => "kafka",
            BrokerKind::Rabbitmq => "rabbitmq",
            BrokerKind::Redis => "redis",
            BrokerKind::Emqx => "emqx",
            BrokerKind::Mosquitto => "mosquitto",
        }
    }

    /// Whether `replicas > 1` forms a cluster for this broker.
    pub fn clusters(self) -> bool {
        !matches!(self, BrokerKind::Redis | BrokerKind::Mosquitto)
    }
}

/// A broker the operator runs next to the publisher.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.kind in ['nats', 'redpanda', 'kafka', 'rabbitmq', 'emqx'] || self.replicas == 1").message("deployBroker.replicas: redis and mosquitto run as a single replica"))]
#[x_kube(validation = Rule::new("self.kind == 'rabbitmq' || self.kind == 'emqx' || self.replicas % 2 == 1").message("deployBroker.replicas must be odd for a quorum (1, 3, 5)"))]
pub struct DeployBroker {
    /// Which broker; must belong to the adapter's family.
    pub kind: BrokerKind,
    /// Replicas; 3 forms a cluster where the broker supports it.
    #[serde(default = "one")]
    #[schemars(range(min = 1, max = 7))]
    pub replicas: i32,
    /// Volume of each replica.
    #[serde(default = "default_broker_storage")]
    pub storage: Storage,
    /// Also run the broker's web UI (NUI, Redpanda Console, Kafka UI, RabbitMQ management, EMQX dashboard).
    #[serde(default)]
    pub ui: bool,
    /// Override the broker's container image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Resources of the broker container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<Resources>,
}

fn one() -> i32 {
    1
}
fn default_broker_storage() -> Storage {
    Storage {
        size: "10Gi".into(),
        storage_class_name: None,
    }
}

/// The publisher workload.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PublisherSpec {
    /// Replicas of the publisher Deployment. Default 2.
    #[serde(default = "two")]
    #[schemars(range(min = 0, max = 100))]
    pub replicas: i32,
    /// Resources of the publisher container; sensible defaults when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<Resources>,
}

impl Default for PublisherSpec {
    fn default() -> Self {
        Self {
            replicas: 2,
            resources: None,
        }
    }
}

fn two() -> i32 {
    2
}

/// Observed state of an EventBroker.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EventBrokerStatus {
    /// The generation this status was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Ready, BrokerReady, PublisherReady, TopicsReady, CredentialsReady.
    #[serde(default)]
    #[schemars(schema_with = "super::schema::conditions")]
    pub conditions: Vec<Condition>,
    /// CloudEvents HTTP ingress for apps in the cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Where the publisher sends events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub broker_endpoint: Option<String>,
    /// Provisioned (or expected) managed-cloud topics.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub topics: Vec<TopicStatus>,
    /// Hash of the referenced Secrets' data in force.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_revision: Option<String>,
    /// Owned Secret holding credentials the operator generated for the deployed broker.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generated_secret: Option<String>,
}

/// One managed-cloud topic.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TopicStatus {
    /// Event domain: nodes, commands, self_updates, ssh.
    pub domain: String,
    /// Topic name.
    pub name: String,
    /// ARN (SNS) or full resource name (Pub/Sub).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The seed: `EVENT_BROKER_KAFKA_SASL_MECHANISM=plain # plain (default) | scram_sha_256 | scram_sha_512`.
    #[test]
    fn sasl_mechanisms_are_spelled_as_the_seed_spells_them() {
        for (m, seed) in [
            (SaslMechanism::Plain, "plain"),
            (SaslMechanism::ScramSha256, "scram_sha_256"),
            (SaslMechanism::ScramSha512, "scram_sha_512"),
        ] {
            assert_eq!(serde_json::to_value(m).unwrap(), seed);
            assert_eq!(m.as_str(), seed);
            assert_eq!(
                serde_json::from_value::<SaslMechanism>(seed.into()).unwrap(),
                m
            );
        }
        assert_eq!(
            SaslMechanism::default(),
            SaslMechanism::Plain,
            "plain (default)"
        );
        for other in ["PLAIN", "scram-sha-256", "SCRAM-SHA-512", "scramsha256"] {
            assert!(
                serde_json::from_value::<SaslMechanism>(other.into()).is_err(),
                "{other} is not the seed's spelling"
            );
        }
    }

    #[test]
    fn adapter_ids_round_trip() {
        for id in [
            "nats",
            "kafka",
            "amqp091",
            "rabbitmq",
            "redis",
            "mqtt",
            "aws_sns",
            "google_pubsub",
        ] {
            let a = Adapter::parse(id).unwrap();
            assert_eq!(a.as_str(), id);
            assert_eq!(serde_json::to_value(a).unwrap(), id);
        }
        assert_eq!(Adapter::Rabbitmq.canonical(), Adapter::Amqp091);
        assert!(Adapter::parse("amqp").is_none());
    }
}
