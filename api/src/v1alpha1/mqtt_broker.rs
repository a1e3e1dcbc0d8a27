//! `MqttBroker`: an MQTT broker for workers, builtin (Mosquitto in the cluster) or AWS IoT Core.

use super::common::*;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Desired state of an MqttBroker.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[kube(
    group = "edgewire.dev",
    version = "v1alpha1",
    kind = "MqttBroker",
    doc = "An MQTT broker for workers: builtin (Mosquitto in the cluster, users and topic permissions from the spec) or AWS IoT Core.",
    plural = "mqttbrokers",
    shortname = "mqb",
    category = "edgewire",
    namespaced,
    status = "MqttBrokerStatus",
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Type","type":"string","jsonPath":".spec.type"}"#,
    printcolumn = r#"{"name":"Endpoint","type":"string","jsonPath":".status.endpoint"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.type != 'iotcore' || has(self.iotcore)").message("type iotcore needs spec.iotcore"))]
#[x_kube(validation = Rule::new("self.type != 'builtin' || !has(self.iotcore)").message("spec.iotcore is set but type is builtin"))]
pub struct MqttBrokerSpec {
    /// builtin (Mosquitto in the cluster) or iotcore (AWS IoT Core).
    #[serde(rename = "type")]
    pub broker_type: MqttBrokerType,
    /// What workers connect to (`host:port`); builtin defaults to the Service, iotcore to the discovered
    /// `iot:Data-ATS` endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Top-level topic namespace: `<ns>/readonly/<pool>/<worker>` to workers, `<ns>/writeonly/<pool>/<worker>`
    /// from workers. Default "edgewire".
    #[serde(default = "default_namespace")]
    #[schemars(regex(pattern = r"^[A-Za-z0-9_-]+$"))]
    pub topic_namespace: String,
    /// Settings of the builtin broker.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub builtin: Option<BuiltinMqtt>,
    /// Settings of AWS IoT Core.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iotcore: Option<IotCoreSpec>,
    /// What outlives this resource: the persistence volume (builtin) and the topic rule (iotcore). Default Retain.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,
}

fn default_namespace() -> String {
    "edgewire".into()
}

/// Kind of MQTT broker.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum MqttBrokerType {
    /// Eclipse Mosquitto run by the operator.
    Builtin,
    /// AWS IoT Core.
    Iotcore,
}

/// Mosquitto log level.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    /// Errors only (default).
    #[default]
    Error,
    /// Errors and warnings.
    Warning,
    /// Adds notices.
    Notice,
    /// Adds information.
    Information,
    /// Everything.
    Debug,
}

/// The builtin broker.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BuiltinMqtt {
    /// Mosquitto image.
    #[serde(default = "default_mosquitto_image")]
    pub image: String,
    /// Log level: error (default), warning, notice, information, debug.
    #[serde(default)]
    pub log_level: LogLevel,
    /// Listeners.
    #[serde(default)]
    pub listeners: Listeners,
    /// Users with their publish and subscribe topic filters (MQTT syntax; `{ns}` stands for `topicNamespace`).
    #[serde(default)]
    #[schemars(schema_with = "super::schema::named_list::<MqttUser>")]
    pub users: Vec<MqttUser>,
    /// Volume for Mosquitto's persistence (retained messages, QoS 1/2 sessions).
    #[serde(default = "default_persistence")]
    pub persistence: Storage,
    /// Prometheus metrics served by the sidecar.
    #[serde(default)]
    pub metrics: MetricsSpec,
    /// Resources of the Mosquitto container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<Resources>,
}

impl Default for BuiltinMqtt {
    fn default() -> Self {
        Self {
            image: default_mosquitto_image(),
            log_level: LogLevel::default(),
            listeners: Listeners::default(),
            users: Vec::new(),
            persistence: default_persistence(),
            metrics: MetricsSpec::default(),
            resources: None,
        }
    }
}

fn default_mosquitto_image() -> String {
    "eclipse-mosquitto:2".into()
}
fn default_persistence() -> Storage {
    Storage {
        size: "1Gi".into(),
        storage_class_name: None,
    }
}

/// Listeners of the builtin broker.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Listeners {
    /// Plain MQTT port (default 1883); null disables it.
    #[serde(default = "default_mqtt_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub mqtt: Option<i32>,
    /// MQTT over TLS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mqtts: Option<TlsListener>,
    /// MQTT over WebSockets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub websockets: Option<WebsocketsListener>,
}

impl Default for Listeners {
    fn default() -> Self {
        Self {
            mqtt: default_mqtt_port(),
            mqtts: None,
            websockets: None,
        }
    }
}

fn default_mqtt_port() -> Option<i32> {
    Some(1883)
}

/// A TLS listener.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TlsListener {
    /// Port (default 8883).
    #[serde(default = "default_mqtts_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,
    /// A `kubernetes.io/tls` Secret with `tls.crt`, `tls.key` and optionally `ca.crt`.
    pub cert_secret_name: String,
    /// Require client certificates signed by `ca.crt` (mTLS).
    #[serde(default)]
    pub require_client_cert: bool,
}

fn default_mqtts_port() -> i32 {
    8883
}

/// A WebSockets listener.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebsocketsListener {
    /// Port (default 8080).
    #[serde(default = "default_ws_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,
}

fn default_ws_port() -> i32 {
    8080
}

/// A user of the builtin broker (like an hpfeeds ident with pubchans/subchans).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MqttUser {
    /// User name (MQTT username).
    #[schemars(regex(pattern = r"^[A-Za-z0-9_.-]{1,64}$"))]
    pub name: String,
    /// The user's password; when absent the operator generates one once into an owned Secret
    /// `<broker>-user-<name>` (keys `username`, `password`), named in status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<SecretKeyRef>,
    /// Topic filters the user may publish to; default `{ns}/writeonly/<name>/#`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publish: Option<Vec<String>>,
    /// Topic filters the user may subscribe to; default `{ns}/readonly/<name>/#`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subscribe: Option<Vec<String>>,
}

/// Prometheus metrics of the builtin broker.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MetricsSpec {
    /// Port of the sidecar's `/metrics` (default 9431).
    #[serde(default = "default_metrics_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,
}

impl Default for MetricsSpec {
    fn default() -> Self {
        Self {
            port: default_metrics_port(),
        }
    }
}

fn default_metrics_port() -> i32 {
    9431
}

/// AWS IoT Core.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IotCoreSpec {
    /// AWS region.
    #[schemars(schema_with = "super::checked::AwsRegion::schema")]
    pub region: String,
    /// Static credentials (Secret with `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`); the pod identity when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<SecretRef>,
    /// IoT topic rule forwarding `<ns>/writeonly/#` to an SQS queue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic_rule: Option<TopicRule>,
    /// Endpoint override for the IoT control-plane API (VPC endpoints, local emulators).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_endpoint: Option<String>,
}

/// An IoT topic rule to SQS.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TopicRule {
    /// Rule name (letters, digits, underscore).
    #[schemars(regex(pattern = r"^[A-Za-z0-9_]{1,128}$"))]
    pub name: String,
    /// URL of the SQS queue messages go to.
    pub sqs_queue_url: String,
    /// IAM role IoT assumes to send to the queue.
    #[schemars(schema_with = "super::checked::IamRoleArn::schema")]
    pub role_arn: String,
}

/// Observed state of an MqttBroker.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MqttBrokerStatus {
    /// The generation this status was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Ready, EndpointReady, UsersReady, TopicRuleReady, CredentialsReady.
    #[serde(default)]
    #[schemars(schema_with = "super::schema::conditions")]
    pub conditions: Vec<Condition>,
    /// What workers connect to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Hash of the user Secrets in force.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_revision: Option<String>,
    /// Each user and the Secret holding its credentials (generated ones included).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub users: Vec<MqttUserStatus>,
    /// ARN of the IoT topic rule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic_rule_arn: Option<String>,
}

/// A user and where its credentials are.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MqttUserStatus {
    /// User name.
    pub name: String,
    /// Secret with its password.
    pub secret_name: String,
}
