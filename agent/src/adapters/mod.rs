//! The publisher's adapters, one module per broker protocol. Each adapter connects in the background
//! through [`crate::connect`] (a broker that is down at startup, or goes away later, is picked up again
//! without a restart), reports its connection state for `/readyz`, and publishes one event with the
//! strongest acknowledgement its protocol offers.

pub mod amqp;
pub mod kafka;
pub mod mqtt;
pub mod nats;
pub mod pubsub;
pub mod redis;
pub mod sns;

use std::sync::Arc;
use std::time::Duration;

use cloudevents::Event;
use futures::future::BoxFuture;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

use crate::connect::{Readiness, SetupError, Unavailable};
use crate::publisher::config::BrokerConfig;

/// How long a publish may wait for the broker's acknowledgement before the ingress answers 503.
pub const PUBLISH_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a publish did not succeed. Messages never carry secrets.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PublishError {
    /// Not connected to the broker (retry later).
    #[error("broker unavailable: {0}")]
    Unavailable(String),
    /// No acknowledgement in time; the event may or may not have been stored (retry; consumers dedupe by id).
    #[error("broker did not acknowledge in time: {0}")]
    Timeout(String),
    /// The broker refused the message (negative ack, permission denied).
    #[error("broker refused the event: {0}")]
    Rejected(String),
}

impl PublishError {
    /// Metric label and problem type suffix.
    pub fn reason(&self) -> &'static str {
        match self {
            PublishError::Unavailable(_) => "unavailable",
            PublishError::Timeout(_) => "timeout",
            PublishError::Rejected(_) => "rejected",
        }
    }
}

impl From<Unavailable> for PublishError {
    fn from(u: Unavailable) -> Self {
        PublishError::Unavailable(u.0)
    }
}

/// Why the protocol cannot carry an event ([`Adapter::fits`]). Messages never carry secrets.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unfit {
    /// An attribute or extension the protocol has no room for (a 400).
    #[error("{0}")]
    Attribute(String),
    /// Larger than the broker or client takes (a 413).
    #[error("{0}")]
    TooLarge(String),
}

/// A broker adapter.
pub trait Adapter: Send + Sync + 'static {
    /// The adapter id (`nats`, `kafka`, `amqp091`, `redis`, `mqtt`, `aws_sns`, `google_pubsub`).
    fn name(&self) -> &'static str;
    /// Checks that the event can be routed (subject/topic rules, domain); the message becomes a 400.
    fn validate(&self, event: &Event) -> Result<(), String>;
    /// Checks that the protocol can carry the event as it is: every attribute as a header (no line break
    /// in a NATS header, no AMQP short string over 255 bytes) and its size under the broker's limit. Runs
    /// before anything is published (a batch with one unfit event publishes nothing), so a client gets a
    /// 400 or 413 instead of a dropped connection, a panic or a 503 for every request in flight.
    fn fits(&self, _event: &Event) -> Result<(), Unfit> {
        Ok(())
    }
    /// Publishes one event; resolves once the broker accepted it, as far as the protocol can tell.
    fn publish<'a>(&'a self, event: &'a Event) -> BoxFuture<'a, Result<(), PublishError>>;
    /// Publishes a batch (all validated); one result per event, in order. By default one `publish` per
    /// event, concurrently; adapters with a batch call of their own (SNS `PublishBatch`) override it.
    fn publish_batch<'a>(
        &'a self,
        events: &'a [Event],
    ) -> BoxFuture<'a, Vec<Result<(), PublishError>>> {
        Box::pin(futures::future::join_all(
            events.iter().map(|ev| self.publish(ev)),
        ))
    }
    /// Connection state.
    fn readiness(&self) -> Readiness;
    /// Calls made to the broker's API, by operation, for `/metrics` (adapters over request/response APIs).
    fn broker_calls(&self) -> Option<BrokerCalls> {
        None
    }
}

/// Labels of `edgewire_publisher_broker_requests_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CallLabels {
    pub adapter: String,
    /// The API operation (`Publish`, `PublishBatch`, `GetTopicAttributes`).
    pub operation: String,
}

/// Counters of broker API calls, shared between an adapter and the metrics registry.
pub type BrokerCalls = Family<CallLabels, Counter>;

/// Builds the adapter for `config`; connecting happens in the background.
pub async fn connect(config: &BrokerConfig) -> Result<Arc<dyn Adapter>, SetupError> {
    crate::tls::install_crypto_provider();
    Ok(match config {
        BrokerConfig::Nats(c) => Arc::new(nats::NatsAdapter::connect(c.clone()).await?),
        BrokerConfig::Kafka(c) => Arc::new(kafka::KafkaAdapter::connect(c.clone())?),
        BrokerConfig::Amqp(c) => Arc::new(amqp::AmqpAdapter::connect(c.clone())?),
        BrokerConfig::Redis(c) => Arc::new(redis::RedisAdapter::connect(c.clone())?),
        BrokerConfig::Mqtt(c) => Arc::new(mqtt::MqttAdapter::connect(c.clone())?),
        BrokerConfig::Sns(c) => Arc::new(sns::SnsAdapter::connect(c.clone()).await?),
        BrokerConfig::PubSub(c) => Arc::new(pubsub::PubSubAdapter::connect(c.clone()).await?),
    })
}
