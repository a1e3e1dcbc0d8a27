//! Prometheus metrics of the publisher.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AdapterLabel {
    pub adapter: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FailedLabels {
    pub adapter: String,
    pub reason: String,
}

type HistogramFamily = Family<AdapterLabel, Histogram, fn() -> Histogram>;

pub struct Metrics {
    registry: Registry,
    adapter: String,
    failed: Family<FailedLabels, Counter>,
    connected: Family<AdapterLabel, Gauge>,
    connections_refused: Counter,
    /// This adapter's series of events accepted and published and of the publish duration, looked up
    /// once: every event counts in them, and a family lookup hashes the label and takes a lock each time.
    accepted_series: Counter,
    published_series: Counter,
    duration_series: Histogram,
}

fn histogram() -> Histogram {
    // 50 µs .. ~1.6 s
    Histogram::new(exponential_buckets(0.00005, 2.0, 16))
}

impl Metrics {
    pub fn new(adapter: &str) -> Self {
        let mut registry = Registry::with_prefix("edgewire_publisher");
        let accepted = Family::<AdapterLabel, Counter>::default();
        let published = Family::<AdapterLabel, Counter>::default();
        let failed = Family::<FailedLabels, Counter>::default();
        let duration: HistogramFamily = Family::new_with_constructor(histogram);
        let connected = Family::<AdapterLabel, Gauge>::default();
        let connections_refused = Counter::default();
        registry.register(
            "connections_refused",
            "Connections closed as soon as accepted because EDGEWIRE_HTTP_MAX_CONNECTIONS were open",
            connections_refused.clone(),
        );
        registry.register(
            "events_accepted",
            "Valid events taken in by the HTTP ingress",
            accepted.clone(),
        );
        registry.register(
            "events_published",
            "Events the broker acknowledged",
            published.clone(),
        );
        registry.register(
            "events_failed",
            "Events not published, by reason",
            failed.clone(),
        );
        registry.register(
            "publish_duration_seconds",
            "Time from handing an event to the adapter to the broker's acknowledgement",
            duration.clone(),
        );
        registry.register(
            "broker_connected",
            "1 while connected to the broker",
            connected.clone(),
        );
        // Every series exists from the start, so dashboards see zeros rather than nothing.
        let label = AdapterLabel {
            adapter: adapter.to_string(),
        };
        let _ = connected.get_or_create(&label);
        Self {
            registry,
            adapter: adapter.to_string(),
            accepted_series: accepted.get_or_create_owned(&label),
            published_series: published.get_or_create_owned(&label),
            duration_series: duration.get_or_create_owned(&label),
            failed,
            connected,
            connections_refused,
        }
    }

    fn label(&self) -> AdapterLabel {
        AdapterLabel {
            adapter: self.adapter.clone(),
        }
    }

    pub fn accepted(&self) {
        self.accepted_series.inc();
    }

    pub fn published(&self, seconds: f64) {
        self.published_series.inc();
        self.duration_series.observe(seconds);
    }

    pub fn failed(&self, reason: &str) {
        self.failed
            .get_or_create(&FailedLabels {
                adapter: self.adapter.clone(),
                reason: reason.to_string(),
            })
            .inc();
    }

    pub fn set_connected(&self, up: bool) {
        self.connected
            .get_or_create(&self.label())
            .set(i64::from(up));
    }

    /// The counter of connections refused over the limit, for [`super::serve::serve`].
    pub fn connections_refused(&self) -> Counter {
        self.connections_refused.clone()
    }

    /// Registers the adapter's API call counters (`edgewire_publisher_broker_requests_total`).
    pub fn register_broker_calls(&mut self, calls: crate::adapters::BrokerCalls) {
        self.registry.register(
            "broker_requests",
            "API calls made to the broker, by operation (request/response brokers such as SNS)",
            calls,
        );
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}
