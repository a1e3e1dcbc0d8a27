//! One module per broker protocol. Each adapter connects in the background (a broker that is down at
//! startup, or goes away later, is picked up again without a restart), reports its connection state for
//! `/readyz`, and publishes one event with the strongest acknowledgement its protocol offers.

pub mod amqp;
pub mod kafka;
pub mod mqtt;
pub mod nats;
pub mod pubsub;
pub mod redis;
pub mod sns;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cloudevents::Event;
use futures::future::BoxFuture;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

use crate::config::BrokerConfig;

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

/// An error that stops the adapter from being built at all (bad TLS material, bad key): exits at startup.
#[derive(Debug, thiserror::Error)]
pub enum AdapterError {
    #[error("{0}")]
    Tls(#[from] crate::tls::TlsError),
    #[error("{0}")]
    Config(String),
}

/// What `/readyz` reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Readiness {
    pub connected: bool,
    /// Why not connected (last connection error), never secret.
    pub detail: Option<String>,
}

/// A broker adapter.
pub trait Adapter: Send + Sync + 'static {
    /// The adapter id (`nats`, `kafka`, `amqp091`, `redis`, `mqtt`, `aws_sns`, `google_pubsub`).
    fn name(&self) -> &'static str;
    /// Checks that the event can be routed (subject/topic rules, domain); the message becomes a 400.
    fn validate(&self, event: &Event) -> Result<(), String>;
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
pub async fn connect(config: &BrokerConfig) -> Result<Arc<dyn Adapter>, AdapterError> {
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

/// Connection state shared between an adapter's background task and `/readyz`.
#[derive(Debug, Default)]
pub struct Health {
    connected: AtomicBool,
    detail: Mutex<Option<String>>,
    /// Why the last connection attempt failed, in the client library's full words (the server's refusal,
    /// the TLS verdict), where its events carry less.
    attempt: Mutex<Option<String>>,
}

impl Health {
    pub fn set_connected(&self) {
        self.connected.store(true, Ordering::SeqCst);
        if let Ok(mut d) = self.detail.lock() {
            *d = None;
        }
        if let Ok(mut a) = self.attempt.lock() {
            *a = None;
        }
    }

    /// Records why the last connection attempt failed; `/readyz` shows it next to the detail.
    pub fn note_attempt(&self, why: impl Into<String>) {
        if let Ok(mut a) = self.attempt.lock() {
            *a = Some(why.into());
        }
    }

    pub fn set_down(&self, why: impl Into<String>) {
        let why = why.into();
        let was = self.connected.swap(false, Ordering::SeqCst);
        if let Ok(mut d) = self.detail.lock() {
            if was || d.as_deref() != Some(why.as_str()) {
                tracing::warn!(reason = %why, "broker connection down");
            }
            *d = Some(why);
        }
    }

    /// Records an error without changing the connection state (it may be transient).
    pub fn note(&self, why: impl Into<String>) {
        if let Ok(mut d) = self.detail.lock() {
            *d = Some(why.into());
        }
    }

    pub fn is_connected(&self) -> bool {
        self.connected.load(Ordering::SeqCst)
    }

    pub fn readiness(&self) -> Readiness {
        let connected = self.is_connected();
        if connected {
            return Readiness {
                connected,
                detail: None,
            };
        }
        let detail = self
            .detail
            .lock()
            .ok()
            .and_then(|d| d.clone())
            .unwrap_or_else(|| "connecting".into());
        let attempt = self.attempt.lock().ok().and_then(|a| a.clone());
        Readiness {
            connected,
            detail: Some(match attempt {
                Some(a) if !detail.contains(&a) => format!("{detail} (last attempt: {a})"),
                _ => detail,
            }),
        }
    }

    /// `Err(Unavailable)` while down, for the top of every publish.
    pub fn require(&self) -> Result<(), PublishError> {
        if self.is_connected() {
            Ok(())
        } else {
            Err(PublishError::Unavailable(
                self.readiness()
                    .detail
                    .unwrap_or_else(|| "not connected".into()),
            ))
        }
    }
}

/// Delay before reconnect attempt `n` (0-based): 250 ms doubling to 5 s.
pub fn backoff(n: u32) -> Duration {
    Duration::from_millis(250u64.saturating_mul(1u64 << n.min(5))).min(Duration::from_secs(5))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_transitions() {
        let h = Health::default();
        assert_eq!(
            h.readiness(),
            Readiness {
                connected: false,
                detail: Some("connecting".into())
            }
        );
        assert!(matches!(h.require(), Err(PublishError::Unavailable(_))));
        h.set_connected();
        assert!(h.require().is_ok());
        h.set_down("connection refused");
        assert_eq!(h.readiness().detail.as_deref(), Some("connection refused"));
        h.note_attempt("IO error: invalid peer certificate: UnknownIssuer");
        assert_eq!(
            h.readiness().detail.as_deref(),
            Some(
                "connection refused (last attempt: IO error: invalid peer certificate: UnknownIssuer)"
            )
        );
        h.set_connected();
        assert_eq!(h.readiness().detail, None);
        h.set_down("disconnected");
        assert_eq!(
            h.readiness().detail.as_deref(),
            Some("disconnected"),
            "a connection clears the last attempt"
        );
    }

    #[test]
    fn backoff_is_bounded() {
        assert_eq!(backoff(0), Duration::from_millis(250));
        assert_eq!(backoff(2), Duration::from_secs(1));
        assert_eq!(backoff(40), Duration::from_secs(5));
    }
}
