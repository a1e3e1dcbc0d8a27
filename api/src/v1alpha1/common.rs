//! Value types shared by the three kinds.

use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A key in a Secret in the resource's namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// Name of the Secret, in the same namespace as the resource.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key inside the Secret's data.
    #[schemars(length(min = 1))]
    pub key: String,
}

impl SecretKeyRef {
    pub fn new(name: impl Into<String>, key: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            key: key.into(),
        }
    }
}

/// A whole Secret whose keys are fixed by the field that references it (for example `username` and
/// `password` for user/password auth, `tls.crt` and `tls.key` for a client certificate).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretRef {
    /// Name of the Secret, in the same namespace as the resource.
    #[schemars(length(min = 1, max = 253))]
    pub secret_name: String,
}

impl SecretRef {
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            secret_name: name.into(),
        }
    }
}

/// Keys read from a `userPassword` Secret.
pub const USERNAME_KEY: &str = "username";
/// Keys read from a `userPassword` Secret.
pub const PASSWORD_KEY: &str = "password";

/// Lowest TLS protocol version accepted.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum TlsVersion {
    /// TLS 1.2 and 1.3.
    #[default]
    #[serde(rename = "1.2")]
    V1_2,
    /// TLS 1.3 only.
    #[serde(rename = "1.3")]
    V1_3,
}

/// TLS settings, one type for every connection Edgewire makes or serves.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.clientCertSecretRef) || self.enabled").message("tls.clientCertSecretRef requires tls.enabled: true (mTLS requires SSL)"))]
pub struct Tls {
    /// Use TLS for this connection.
    #[serde(default)]
    pub enabled: bool,
    /// CA bundle (PEM) that verifies the peer; the system roots when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_secret_ref: Option<SecretKeyRef>,
    /// A `kubernetes.io/tls` Secret (`tls.crt`, `tls.key`) presented as the client certificate (mTLS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_cert_secret_ref: Option<SecretRef>,
    /// Lowest protocol version accepted: "1.2" (default) or "1.3".
    #[serde(default)]
    pub min_version: TlsVersion,
    /// Server name to verify, when it differs from the host in the URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
}

impl Tls {
    pub fn is_enabled(tls: &Option<Tls>) -> bool {
        tls.as_ref().is_some_and(|t| t.enabled)
    }
}

/// What outlives the resource when it is deleted.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum DeletionPolicy {
    /// Keep provisioned cloud topics, IoT rules and volumes.
    #[default]
    Retain,
    /// Delete what the operator created for this resource.
    Delete,
}

/// Persistent storage of a workload.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Storage {
    /// Size of each replica's volume.
    #[schemars(schema_with = "super::schema::quantity")]
    pub size: String,
    /// StorageClass of the volume; the cluster default when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,
}

/// Wire protocol of a bridge endpoint.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// MQTT 3.1.1 or 5 (see `mqttVersion`).
    Mqtt,
    /// NATS, core or JetStream.
    Nats,
    /// AMQP 0-9-1 (RabbitMQ and compatibles); cloud side only.
    Amqp091,
    /// Kafka wire protocol; cloud side only.
    Kafka,
}

/// MQTT protocol version spoken to a broker.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum MqttVersion {
    /// MQTT 3.1.1.
    #[default]
    #[serde(rename = "3.1.1")]
    V311,
    /// MQTT 5.0 (user properties carry headers).
    #[serde(rename = "5")]
    V5,
}

/// JetStream use on a NATS bridge endpoint.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EndpointJetStream {
    /// Publish with JetStream acknowledgements (the stream capturing the subjects must exist), or consume
    /// from JetStream on the edge side.
    #[serde(default)]
    pub enabled: bool,
}

/// Authentication of a bridge endpoint: exactly one mode.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("(has(self.token) ? 1 : 0) + (has(self.userPassword) ? 1 : 0) + (has(self.clientCert) ? 1 : 0) == 1").message("auth: set exactly one of token, userPassword, clientCert"))]
pub struct EndpointAuth {
    /// A bearer token (NATS token, MQTT password slot with the site id as user, Kafka SASL/OAUTHBEARER is not supported).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<SecretKeyRef>,
    /// A Secret with keys `username` and `password`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_password: Option<SecretRef>,
    /// A `kubernetes.io/tls` Secret presented as the client certificate; requires `tls.enabled`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_cert: Option<SecretRef>,
}

/// An explicit broker endpoint.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.auth) || !has(self.auth.clientCert) || (has(self.tls) && self.tls.enabled)").message("auth.clientCert requires tls.enabled: true"))]
#[x_kube(validation = Rule::new("!has(self.mqttVersion) || self.protocol == 'mqtt'").message("mqttVersion applies to protocol mqtt only"))]
#[x_kube(validation = Rule::new("!has(self.jetStream) || self.protocol == 'nats'").message("jetStream applies to protocol nats only"))]
#[x_kube(validation = Rule::new("!has(self.exchange) || self.protocol == 'amqp091'").message("exchange applies to protocol amqp091 only"))]
pub struct Endpoint {
    /// Wire protocol.
    pub protocol: Protocol,
    /// Where to connect: `host:port`, `nats://` / `tls://` URLs, `amqp://` / `amqps://` URLs, or a comma-separated
    /// Kafka bootstrap list. Credentials do not belong here: use `auth`.
    #[schemars(length(min = 1))]
    pub url: String,
    /// MQTT protocol version ("3.1.1" default, or "5").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mqtt_version: Option<MqttVersion>,
    /// NATS JetStream settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jet_stream: Option<EndpointJetStream>,
    /// AMQP 0-9-1: the topic exchange edge→cloud messages are published to (routing key = the mapped
    /// topic) and cloud→edge rules bind their queue to. Default `amq.topic`, which every RabbitMQ virtual
    /// host has; another exchange must exist and be of type topic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 255))]
    pub exchange: Option<String>,
    /// Authentication; none when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<EndpointAuth>,
    /// TLS settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<Tls>,
}

/// Resource requests and limits of a container.
pub type Resources = k8s_openapi::api::core::v1::ResourceRequirements;
