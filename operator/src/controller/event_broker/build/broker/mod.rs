//! Self-hosted brokers (`spec.deployBroker`): StatefulSet with a PVC template, headless and client Services,
//! the broker's configuration rendered into a Secret (credentials inside), and an optional UI.
//!
//! Names: StatefulSet and client Service `<eb>-<kind>`, headless Service `<eb>-<kind>-headless`,
//! config Secret `<eb>-<kind>-config`, UI Deployment/Service `<eb>-<kind>-ui`.

mod common;
pub mod emqx;
pub mod kafka;
pub mod mosquitto;
pub mod nats;
pub mod rabbitmq;
pub mod redis;
pub mod redpanda;

pub use super::super::names::{default_image, has_ui};
use super::super::validate::{BrokerPlan, ValidatedEventBroker};
use crate::children::Owner;
use edgewire_api::BrokerKind;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{Secret, Service};

/// Objects of one deployed broker.
#[derive(Clone, Debug, PartialEq)]
pub struct BrokerChildren {
    /// Rendered configuration files (and credentials) mounted into the broker.
    pub config: Secret,
    /// Headless Service for stable pod DNS (cluster routes, KRaft quorum).
    pub headless: Service,
    /// Client Service the publisher and apps connect to.
    pub client: Service,
    pub statefulset: StatefulSet,
    /// The broker's web UI, when `ui: true`.
    pub ui: Option<UiChildren>,
}

/// A broker UI: a Deployment for UIs that run separately (NUI, Redpanda Console, Kafka UI), none for UIs
/// built into the broker (RabbitMQ management, EMQX dashboard); always a Service.
#[derive(Clone, Debug, PartialEq)]
pub struct UiChildren {
    pub deployment: Option<Deployment>,
    pub service: Service,
}

/// Where clients reach a deployed broker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientEndpoint {
    /// `<eb>-<kind>.<ns>.svc`
    pub host: String,
    pub port: i32,
    /// URL scheme clients use (`nats`, `amqp`, `redis`), none for Kafka and MQTT (`host:port`).
    pub scheme: Option<&'static str>,
}

impl ClientEndpoint {
    /// `scheme://host:port`, or `host:port` without a scheme.
    pub fn url(&self) -> String {
        match self.scheme {
            Some(s) => format!("{s}://{}:{}", self.host, self.port),
            None => format!("{}:{}", self.host, self.port),
        }
    }
}

/// Name of the StatefulSet and client Service.
pub fn broker_name(owner: &Owner, kind: BrokerKind) -> String {
    format!("{}-{}", owner.name, kind.as_str())
}

/// The client endpoint of a broker of `kind` deployed for `owner`.
pub fn client_endpoint(owner: &Owner, kind: BrokerKind) -> ClientEndpoint {
    let (port, scheme) = match kind {
        BrokerKind::Nats => (4222, Some("nats")),
        BrokerKind::Redpanda | BrokerKind::Kafka => (9092, None),
        BrokerKind::Rabbitmq => (5672, Some("amqp")),
        BrokerKind::Redis => (6379, Some("redis")),
        BrokerKind::Emqx | BrokerKind::Mosquitto => (1883, None),
    };
    ClientEndpoint {
        host: format!("{}.{}.svc", broker_name(owner, kind), owner.namespace),
        port,
        scheme,
    }
}

/// Every object of the broker in `plan`. Pure and deterministic: the same input renders byte-identical
/// objects (salts and cluster ids are derived, never random), so server-side apply sees no change.
pub fn build(v: &ValidatedEventBroker, plan: &BrokerPlan) -> BrokerChildren {
    let ctx = common::Ctx::new(v, plan);
    let mut children = match plan.kind {
        BrokerKind::Nats => nats::build(&ctx),
        BrokerKind::Rabbitmq => rabbitmq::build(&ctx),
        BrokerKind::Redis => redis::build(&ctx),
        BrokerKind::Kafka => kafka::build(&ctx),
        BrokerKind::Redpanda => redpanda::build(&ctx),
        BrokerKind::Mosquitto => mosquitto::build(&ctx),
        BrokerKind::Emqx => emqx::build(&ctx),
    };
    if !has_ui(plan.kind) {
        children.ui = None;
    }
    children
}
