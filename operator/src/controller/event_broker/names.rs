//! Names, labels and fixed facts of an EventBroker's children: what every stage may know.

use edgewire_api::BrokerKind;

/// `app.kubernetes.io/name` of the publisher's objects.
pub const PUBLISHER_APP: &str = "edgewire-publisher";
/// Port of the publisher's CloudEvents ingress.
pub const PUBLISHER_PORT: i32 = 8080;
/// Owner-kind label value of EventBroker children.
pub const KIND_LABEL: &str = "eventbroker";

/// Name of the generated credentials Secret.
pub fn generated_secret_name(eb_name: &str) -> String {
    format!("{eb_name}-broker-credentials")
}

/// The default image of each broker.
pub fn default_image(kind: BrokerKind) -> &'static str {
    match kind {
        BrokerKind::Nats => "nats:2.10-alpine",
        BrokerKind::Redpanda => "docker.redpanda.com/redpandadata/redpanda:v24.2.7",
        BrokerKind::Kafka => "apache/kafka:3.8.0",
        BrokerKind::Rabbitmq => "rabbitmq:3.13-management-alpine",
        BrokerKind::Redis => "redis:7.4-alpine",
        BrokerKind::Emqx => "emqx/emqx:5.8.1",
        BrokerKind::Mosquitto => "eclipse-mosquitto:2",
    }
}

/// Whether `kind` has a UI `ui: true` can turn on.
pub fn has_ui(kind: BrokerKind) -> bool {
    !matches!(kind, BrokerKind::Redis | BrokerKind::Mosquitto)
}
