//! The bridge's Prometheus metrics (prefix `edgewire_bridge_`), through `prometheus-client`: a collector
//! reads the spool's [`Stats`](super::spool::Stats), the bridge's [`Counters`](super::Counters) and the
//! sides' health at every scrape (the same atomics `status.runtime` is built from, so the two never
//! disagree). Counters are named without `_total`; the OpenMetrics encoder appends it to the sample.
//!
//! Exported (the README's table lists the same, checked by the bridge test
//! `the_metrics_exported_are_the_ones_the_readme_lists`): `spool_messages`, `spool_bytes`,
//! `spool_max_bytes` (the configured `spool.maxBytes`, what the spool-filling alerts compare
//! `spool_bytes` with),
//! `spool_oldest_age_seconds` (replay lag: how long the oldest waiting message has been waiting),
//! `spool_commits_total` (group commits, one fsync each), `spool_dropped_total` (DropOldest),
//! `spool_corrupt_records_total` (damaged or missing records skipped), `spool_write_blocked` (1 while
//! the spool cannot write, e.g. a full disk: the edge is not acknowledged),
//! `forwarded_total` (acknowledged by the cloud), `received_total` (taken from the edge),
//! `unmatched_total`, `refused_total`, `edge_redeliveries_total`, `delivered_to_edge_total`, `cloud_errors_total`,
//! `last_forward_timestamp_seconds`, `edge_connected`, `cloud_connected`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeGaugeValue, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use super::Runtime;

/// The metric name prefix.
pub const PREFIX: &str = "edgewire_bridge";

/// The registry `/metrics` encodes: one collector over `rt`.
pub fn registry(rt: Arc<Runtime>) -> Registry {
    let mut registry = Registry::with_prefix(PREFIX);
    registry.register_collector(Box::new(RuntimeCollector(rt)));
    registry
}

/// The OpenMetrics text exposition of `registry`.
pub fn encode(registry: &Registry) -> String {
    let mut out = String::with_capacity(4096);
    if prometheus_client::encoding::text::encode(&mut out, registry).is_err() {
        out.clear();
    }
    out
}

/// Reads the runtime figures at every scrape.
struct RuntimeCollector(Arc<Runtime>);

impl std::fmt::Debug for RuntimeCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RuntimeCollector")
    }
}

fn gauge<N: EncodeGaugeValue>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: N,
) -> Result<(), std::fmt::Error> {
    let metric = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    ConstGauge::new(value).encode(metric)
}

fn counter(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: &AtomicU64,
) -> Result<(), std::fmt::Error> {
    let metric = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    ConstCounter::new(value.load(Ordering::SeqCst)).encode(metric)
}

/// A count as a gauge value.
fn count(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl Collector for RuntimeCollector {
    fn encode(&self, mut e: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let rt = &self.0;
        let (s, c) = (&rt.spool, &rt.counters);
        let e = &mut e;
        gauge(
            e,
            "spool_messages",
            "Messages waiting in the spool.",
            count(s.messages()),
        )?;
        gauge(
            e,
            "spool_bytes",
            "Bytes waiting in the spool (framing included).",
            count(s.bytes()),
        )?;
        gauge(
            e,
            "spool_max_bytes",
            "The spool's bound in bytes (spool.maxBytes): RejectNew holds the edge back and DropOldest drops the oldest there.",
            count(rt.spool_max_bytes),
        )?;
        gauge(
            e,
            "spool_oldest_age_seconds",
            "Age of the oldest waiting message (replay lag).",
            count(rt.oldest_age_seconds().unwrap_or(0)),
        )?;
        counter(
            e,
            "spool_commits",
            "Spool group commits (one fsync each).",
            &s.commits,
        )?;
        counter(
            e,
            "spool_dropped",
            "Messages dropped by overflow DropOldest.",
            &s.dropped,
        )?;
        counter(
            e,
            "spool_corrupt_records",
            "Spooled records found damaged or missing and skipped (logged with segment and offset).",
            &s.corrupt,
        )?;
        gauge(
            e,
            "spool_write_blocked",
            "1 while the spool cannot write (a full disk): the edge is not acknowledged meanwhile.",
            i64::from(s.write_error().is_some()),
        )?;
        counter(
            e,
            "forwarded",
            "Messages the cloud acknowledged.",
            &s.forwarded,
        )?;
        counter(
            e,
            "received",
            "Edge messages taken into the spool.",
            &c.received,
        )?;
        counter(
            e,
            "unmatched",
            "Edge messages that matched no rule.",
            &c.unmatched,
        )?;
        counter(
            e,
            "refused",
            "Edge messages the cloud cannot take: the mapped topic is not a valid name there, or the message is over its size limit (acknowledged, not spooled).",
            &c.refused,
        )?;
        counter(
            e,
            "edge_redeliveries",
            "Edge redeliveries (MQTT DUP) of messages already spooled, after a crash or a lost connection cut off their PUBACK: acknowledged, not spooled again.",
            &c.edge_redeliveries,
        )?;
        counter(
            e,
            "delivered_to_edge",
            "Cloud messages delivered to the edge.",
            &c.delivered_to_edge,
        )?;
        counter(
            e,
            "cloud_errors",
            "Failed cloud publish rounds (resent from the spool).",
            &c.cloud_errors,
        )?;
        gauge(
            e,
            "last_forward_timestamp_seconds",
            "When the cloud last acknowledged a message.",
            c.last_forward_ms.load(Ordering::SeqCst) as f64 / 1000.0,
        )?;
        gauge(
            e,
            "edge_connected",
            "1 while the edge side is connected.",
            i64::from(rt.edge.is_connected()),
        )?;
        gauge(
            e,
            "cloud_connected",
            "1 while the cloud side is connected.",
            i64::from(rt.cloud.is_connected()),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bridge::Counters;
    use crate::bridge::spool::Stats;
    use crate::connect::Health;

    #[test]
    fn counters_get_their_total_suffix_and_values_are_read_at_each_scrape() {
        let rt = Arc::new(Runtime {
            spool: Arc::new(Stats::default()),
            spool_max_bytes: 1 << 20,
            counters: Arc::new(Counters::default()),
            edge: Arc::new(Health::default()),
            cloud: Arc::new(Health::default()),
        });
        let registry = registry(rt.clone());
        rt.spool.forwarded.store(7, Ordering::SeqCst);
        rt.spool.written_seq.store(10, Ordering::SeqCst);
        rt.spool.acked_seq.store(7, Ordering::SeqCst);
        rt.counters
            .last_forward_ms
            .store(1_700_000_000_250, Ordering::SeqCst);
        rt.edge.set_connected();
        let text = encode(&registry);
        for line in [
            "# HELP edgewire_bridge_forwarded Messages the cloud acknowledged.",
            "# TYPE edgewire_bridge_forwarded counter",
            "edgewire_bridge_forwarded_total 7",
            "# TYPE edgewire_bridge_spool_messages gauge",
            "edgewire_bridge_spool_messages 3",
            "edgewire_bridge_last_forward_timestamp_seconds 1700000000.25",
            "edgewire_bridge_edge_connected 1",
            "edgewire_bridge_cloud_connected 0",
            "# EOF",
        ] {
            assert!(text.lines().any(|l| l == line), "{line:?} not in\n{text}");
        }
        rt.spool.forwarded.store(8, Ordering::SeqCst);
        assert!(encode(&registry).contains("edgewire_bridge_forwarded_total 8\n"));
    }
}
