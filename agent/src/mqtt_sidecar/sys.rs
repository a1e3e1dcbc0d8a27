//! Mosquitto's `$SYS` tree as Prometheus metrics.
//!
//! Mosquitto publishes its statistics every `sys_interval` seconds as retained messages under `$SYS/broker/…`
//! (a value is published only when it changed). [`SysState`] keeps the last value of each topic it knows,
//! and [`SysCollector`] encodes them on every scrape. A metric appears only once its topic was seen on the
//! current connection: the state is cleared when the connection to the broker drops, so a scrape never
//! shows stale numbers from a broker the sidecar cannot see (and topics a Mosquitto build does not publish
//! stay absent rather than reading 0).
//!
//! Three kinds of values:
//! - **current values** (clients connected, subscriptions, retained messages, …): gauges;
//! - **cumulative counts since the broker started** (`$SYS/broker/messages/received`, bytes, …): counters
//!   named `…_total`. They mirror Mosquitto's own counters, so they go back to 0 when Mosquitto restarts;
//!   Prometheus' `rate()`/`increase()` treat that as a counter reset, as for any restarted process;
//! - **moving averages** (`$SYS/broker/load/…/1min|5min|15min`): Mosquitto publishes *per-minute*
//!   averages; they are divided by 60 and exported as per-second gauges with a `window` label.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, LazyLock, Mutex, MutexGuard};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

/// The subscription that carries every statistic.
pub const SYS_FILTER: &str = "$SYS/#";

/// Averaging windows of Mosquitto's `load` topics, as they appear in the topic and in the `window` label.
pub const WINDOWS: [&str; 3] = ["1min", "5min", "15min"];

/// How a topic's payload is read and exported.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// An integer that goes up and down.
    Gauge,
    /// An integer that only grows while the broker runs (exported as a counter, `_total`).
    Counter,
    /// A per-minute moving average (`12.34`), exported divided by 60, one series per window.
    PerMinute,
    /// `"<n> seconds"`.
    Seconds,
    /// `"mosquitto version 2.0.11"`, exported as an info gauge (`1`) with a `version` label.
    Version,
}

/// One exported metric family and the `$SYS` topic it is made of.
struct Family {
    /// Name as exported; for counters without `_total`, which the encoder appends.
    name: &'static str,
    help: &'static str,
    kind: Kind,
    /// Topic under `$SYS/broker/`; for [`Kind::PerMinute`] the prefix that `/<window>` completes.
    topic: &'static str,
}

const fn family(name: &'static str, kind: Kind, topic: &'static str, help: &'static str) -> Family {
    Family {
        name,
        help,
        kind,
        topic,
    }
}

use Kind::{Counter, Gauge, PerMinute, Seconds, Version};

/// Every family, in the order they are encoded.
static FAMILIES: &[Family] = &[
    family(
        "edgewire_mqtt_clients_connected",
        Gauge,
        "clients/connected",
        "Clients connected to Mosquitto now ($SYS/broker/clients/connected); includes this sidecar's own connection",
    ),
    family(
        "edgewire_mqtt_clients_disconnected",
        Gauge,
        "clients/disconnected",
        "Disconnected clients whose persistent session Mosquitto keeps ($SYS/broker/clients/disconnected)",
    ),
    family(
        "edgewire_mqtt_sessions",
        Gauge,
        "clients/total",
        "Client sessions Mosquitto holds, connected or not ($SYS/broker/clients/total: connected clients plus disconnected ones with a persistent session)",
    ),
    family(
        "edgewire_mqtt_clients_maximum",
        Gauge,
        "clients/maximum",
        "Most clients connected at once since Mosquitto started ($SYS/broker/clients/maximum)",
    ),
    family(
        "edgewire_mqtt_clients_expired",
        Counter,
        "clients/expired",
        "Persistent sessions expired since Mosquitto started ($SYS/broker/clients/expired; cumulative, resets when Mosquitto restarts)",
    ),
    family(
        "edgewire_mqtt_subscriptions",
        Gauge,
        "subscriptions/count",
        "Subscriptions Mosquitto holds ($SYS/broker/subscriptions/count); includes this sidecar's $SYS/# subscription",
    ),
    family(
        "edgewire_mqtt_shared_subscriptions",
        Gauge,
        "shared_subscriptions/count",
        "Shared subscriptions Mosquitto holds ($SYS/broker/shared_subscriptions/count)",
    ),
    family(
        "edgewire_mqtt_retained_messages",
        Gauge,
        "retained messages/count",
        "Retained messages Mosquitto holds ($SYS/broker/retained messages/count); includes its own retained $SYS messages",
    ),
    family(
        "edgewire_mqtt_stored_messages",
        Gauge,
        "store/messages/count",
        "Messages in Mosquitto's store: retained and queued for clients ($SYS/broker/store/messages/count)",
    ),
    family(
        "edgewire_mqtt_stored_bytes",
        Gauge,
        "store/messages/bytes",
        "Payload bytes of the messages in Mosquitto's store ($SYS/broker/store/messages/bytes)",
    ),
    family(
        "edgewire_mqtt_heap_bytes",
        Gauge,
        "heap/current",
        "Heap memory Mosquitto uses ($SYS/broker/heap/current; only when Mosquitto is built with memory tracking)",
    ),
    family(
        "edgewire_mqtt_messages_received",
        Counter,
        "messages/received",
        "MQTT packets of any type (PUBLISH, CONNECT, PINGREQ, ...) received since Mosquitto started ($SYS/broker/messages/received; cumulative, resets when Mosquitto restarts)",
    ),
    family(
        "edgewire_mqtt_messages_sent",
        Counter,
        "messages/sent",
        "MQTT packets of any type sent since Mosquitto started ($SYS/broker/messages/sent; cumulative, resets when Mosquitto restarts)",
    ),
    family(
        "edgewire_mqtt_publish_messages_received",
        Counter,
        "publish/messages/received",
        "PUBLISH packets received from clients since Mosquitto started ($SYS/broker/publish/messages/received; cumulative, resets when Mosquitto restarts)",
    ),
    family(
        "edgewire_mqtt_publish_messages_sent",
        Counter,
        "publish/messages/sent",
        "PUBLISH packets sent to clients since Mosquitto started, $SYS updates included ($SYS/broker/publish/messages/sent; cumulative, resets when Mosquitto restarts)",
    ),
    family(
        "edgewire_mqtt_publish_messages_dropped",
        Counter,
        "publish/messages/dropped",
        "PUBLISH messages dropped (queue limits) since Mosquitto started ($SYS/broker/publish/messages/dropped; cumulative, resets when Mosquitto restarts)",
    ),
    family(
        "edgewire_mqtt_publish_bytes_received",
        Counter,
        "publish/bytes/received",
        "PUBLISH payload bytes received since Mosquitto started ($SYS/broker/publish/bytes/received; cumulative, resets when Mosquitto restarts)",
    ),
    family(
        "edgewire_mqtt_publish_bytes_sent",
        Counter,
        "publish/bytes/sent",
        "PUBLISH payload bytes sent since Mosquitto started ($SYS/broker/publish/bytes/sent; cumulative, resets when Mosquitto restarts)",
    ),
    family(
        "edgewire_mqtt_bytes_received",
        Counter,
        "bytes/received",
        "Bytes received on all connections since Mosquitto started ($SYS/broker/bytes/received; cumulative, resets when Mosquitto restarts)",
    ),
    family(
        "edgewire_mqtt_bytes_sent",
        Counter,
        "bytes/sent",
        "Bytes sent on all connections since Mosquitto started ($SYS/broker/bytes/sent; cumulative, resets when Mosquitto restarts)",
    ),
    family(
        "edgewire_mqtt_messages_received_per_second",
        PerMinute,
        "load/messages/received",
        "MQTT packets of any type received per second, moving average over `window` (Mosquitto's per-minute average $SYS/broker/load/messages/received/<window> divided by 60)",
    ),
    family(
        "edgewire_mqtt_messages_sent_per_second",
        PerMinute,
        "load/messages/sent",
        "MQTT packets of any type sent per second, moving average over `window` (Mosquitto's per-minute average $SYS/broker/load/messages/sent/<window> divided by 60)",
    ),
    family(
        "edgewire_mqtt_publish_messages_received_per_second",
        PerMinute,
        "load/publish/received",
        "PUBLISH packets received per second, moving average over `window` (Mosquitto's per-minute average $SYS/broker/load/publish/received/<window> divided by 60)",
    ),
    family(
        "edgewire_mqtt_publish_messages_sent_per_second",
        PerMinute,
        "load/publish/sent",
        "PUBLISH packets sent per second, moving average over `window` (Mosquitto's per-minute average $SYS/broker/load/publish/sent/<window> divided by 60)",
    ),
    family(
        "edgewire_mqtt_publish_messages_dropped_per_second",
        PerMinute,
        "load/publish/dropped",
        "PUBLISH messages dropped per second, moving average over `window` (Mosquitto's per-minute average $SYS/broker/load/publish/dropped/<window> divided by 60)",
    ),
    family(
        "edgewire_mqtt_bytes_received_per_second",
        PerMinute,
        "load/bytes/received",
        "Bytes received per second, moving average over `window` (Mosquitto's per-minute average $SYS/broker/load/bytes/received/<window> divided by 60)",
    ),
    family(
        "edgewire_mqtt_bytes_sent_per_second",
        PerMinute,
        "load/bytes/sent",
        "Bytes sent per second, moving average over `window` (Mosquitto's per-minute average $SYS/broker/load/bytes/sent/<window> divided by 60)",
    ),
    family(
        "edgewire_mqtt_connections_per_second",
        PerMinute,
        "load/connections",
        "CONNECT packets received per second, moving average over `window` (Mosquitto's per-minute average $SYS/broker/load/connections/<window> divided by 60)",
    ),
    family(
        "edgewire_mqtt_sockets_per_second",
        PerMinute,
        "load/sockets",
        "Sockets opened per second, moving average over `window` (Mosquitto's per-minute average $SYS/broker/load/sockets/<window> divided by 60)",
    ),
    family(
        "edgewire_mqtt_broker_uptime_seconds",
        Seconds,
        "uptime",
        "Seconds since Mosquitto started ($SYS/broker/uptime)",
    ),
    family(
        "edgewire_mqtt_broker_info",
        Version,
        "version",
        "Mosquitto's version ($SYS/broker/version), as the `version` label; always 1",
    ),
];

/// Full `$SYS` topic → (family index, window index).
static TOPICS: LazyLock<HashMap<String, (usize, usize)>> = LazyLock::new(|| {
    let mut topics = HashMap::new();
    for (i, f) in FAMILIES.iter().enumerate() {
        if f.kind == PerMinute {
            for (w, window) in WINDOWS.iter().enumerate() {
                topics.insert(format!("$SYS/broker/{}/{window}", f.topic), (i, w));
            }
        } else {
            topics.insert(format!("$SYS/broker/{}", f.topic), (i, 0));
        }
    }
    topics
});

/// The last value of a topic, parsed.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Int(u64),
    /// Already per second.
    Float(f64),
    Text(String),
}

/// What [`SysState::update`] made of a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Update {
    /// A topic behind a metric; its value was stored.
    Stored,
    /// A `$SYS` topic no metric is made of (e.g. `$SYS/broker/clients/active`, deprecated).
    Ignored,
    /// A topic behind a metric whose payload did not parse; the previous value was dropped.
    Malformed,
}

/// The last value of every known `$SYS` topic seen on the current connection.
#[derive(Debug, Default)]
pub struct SysState {
    values: BTreeMap<(usize, usize), Value>,
    /// Messages received on `$SYS` since the last [`Self::clear`] (known topics or not).
    messages: u64,
}

impl SysState {
    /// Takes in one `$SYS` message.
    pub fn update(&mut self, topic: &str, payload: &[u8]) -> Update {
        self.messages += 1;
        let Some(&(family, window)) = TOPICS.get(topic) else {
            return Update::Ignored;
        };
        match parse(FAMILIES[family].kind, payload) {
            Some(v) => {
                self.values.insert((family, window), v);
                Update::Stored
            }
            None => {
                self.values.remove(&(family, window));
                Update::Malformed
            }
        }
    }

    /// Forgets every value (the connection to the broker is gone).
    pub fn clear(&mut self) {
        self.values.clear();
        self.messages = 0;
    }

    /// `$SYS` messages received since the last [`Self::clear`].
    pub fn messages(&self) -> u64 {
        self.messages
    }

    /// The stored value of `name` (as exported, counters without `_total`) and `window` (for the per-second
    /// families), if any.
    pub fn get(&self, name: &str, window: Option<&str>) -> Option<&Value> {
        let family = FAMILIES.iter().position(|f| f.name == name)?;
        let window = match window {
            Some(w) => WINDOWS.iter().position(|x| *x == w)?,
            None => 0,
        };
        self.values.get(&(family, window))
    }

    fn encode(&self, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        for (i, f) in FAMILIES.iter().enumerate() {
            let mut entries = self.values.range((i, 0)..(i + 1, 0)).peekable();
            if entries.peek().is_none() {
                continue;
            }
            let metric_type = match f.kind {
                Counter => MetricType::Counter,
                _ => MetricType::Gauge,
            };
            let mut metric = encoder.encode_descriptor(f.name, f.help, None, metric_type)?;
            if f.kind == PerMinute {
                for (&(_, window), value) in entries {
                    if let Value::Float(v) = value {
                        let labels = [("window", WINDOWS[window])];
                        ConstGauge::new(*v).encode(metric.encode_family(&labels)?)?;
                    }
                }
                continue;
            }
            // Every other family has one topic, so one sample.
            let Some((_, value)) = entries.next() else {
                continue;
            };
            match (f.kind, value) {
                (Counter, Value::Int(v)) => ConstCounter::new(*v).encode(metric)?,
                (Gauge | Seconds, Value::Int(v)) => {
                    ConstGauge::new(i64::try_from(*v).unwrap_or(i64::MAX)).encode(metric)?;
                }
                (Version, Value::Text(v)) => {
                    let labels = [("version", v.as_str())];
                    ConstGauge::new(1i64).encode(metric.encode_family(&labels)?)?;
                }
                // `parse` makes each kind's value; nothing else is stored.
                _ => {}
            }
        }
        Ok(())
    }
}

/// Reads a payload as `kind` says; `None` if it does not parse.
fn parse(kind: Kind, payload: &[u8]) -> Option<Value> {
    let text = std::str::from_utf8(payload).ok()?.trim();
    match kind {
        Gauge | Counter => text.parse().ok().map(Value::Int),
        PerMinute => text
            .parse::<f64>()
            .ok()
            .filter(|v| v.is_finite() && *v >= 0.0)
            .map(|per_minute| Value::Float(per_minute / 60.0)),
        Seconds => text.split_whitespace().next()?.parse().ok().map(Value::Int),
        Version => {
            let version = text.strip_prefix("mosquitto version ").unwrap_or(text);
            (!version.is_empty()).then(|| Value::Text(version.to_string()))
        }
    }
}

/// Encodes a shared [`SysState`] on every scrape.
#[derive(Debug, Clone, Default)]
pub struct SysCollector(pub Arc<Mutex<SysState>>);

impl SysCollector {
    pub fn lock(&self) -> MutexGuard<'_, SysState> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Collector for SysCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        self.lock().encode(&mut encoder)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::registry::Registry;

    fn encode(state: SysState) -> String {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(SysCollector(Arc::new(Mutex::new(state)))));
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &registry).unwrap();
        out
    }

    #[test]
    fn every_family_has_a_distinct_name_and_topic() {
        let mut names: Vec<_> = FAMILIES.iter().map(|f| f.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), FAMILIES.len());
        let windows = FAMILIES.iter().filter(|f| f.kind == PerMinute).count();
        assert_eq!(TOPICS.len(), FAMILIES.len() + windows * (WINDOWS.len() - 1));
        for f in FAMILIES {
            assert!(f.name.starts_with("edgewire_mqtt_"), "{}", f.name);
            assert!(
                !f.name.ends_with("_total"),
                "{}: the encoder adds _total",
                f.name
            );
            assert!(
                f.help.contains("$SYS/broker/"),
                "{}: help names the topic",
                f.name
            );
        }
    }

    #[test]
    fn parses_what_mosquitto_publishes() {
        let mut s = SysState::default();
        let stored = [
            ("$SYS/broker/clients/connected", "3"),
            ("$SYS/broker/messages/received", "1234"),
            ("$SYS/broker/load/messages/received/1min", "120.00"),
            ("$SYS/broker/load/bytes/sent/15min", "6.60"),
            ("$SYS/broker/retained messages/count", "52"),
            ("$SYS/broker/uptime", "6 seconds"),
            ("$SYS/broker/version", "mosquitto version 2.0.11"),
        ];
        for (topic, payload) in stored {
            assert_eq!(
                s.update(topic, payload.as_bytes()),
                Update::Stored,
                "{topic}"
            );
        }
        assert_eq!(
            s.update("$SYS/broker/clients/active", b"1"),
            Update::Ignored
        );
        assert_eq!(s.messages(), 8);
        assert_eq!(
            s.get("edgewire_mqtt_clients_connected", None),
            Some(&Value::Int(3))
        );
        assert_eq!(
            s.get("edgewire_mqtt_messages_received_per_second", Some("1min")),
            Some(&Value::Float(2.0))
        );
        assert_eq!(
            s.get("edgewire_mqtt_bytes_sent_per_second", Some("15min")),
            Some(&Value::Float(0.11))
        );
        assert_eq!(
            s.get("edgewire_mqtt_broker_uptime_seconds", None),
            Some(&Value::Int(6))
        );

        let text = encode(s);
        for line in [
            "# TYPE edgewire_mqtt_clients_connected gauge",
            "edgewire_mqtt_clients_connected 3",
            "# TYPE edgewire_mqtt_messages_received counter",
            "edgewire_mqtt_messages_received_total 1234",
            "edgewire_mqtt_messages_received_per_second{window=\"1min\"} 2.0",
            "edgewire_mqtt_bytes_sent_per_second{window=\"15min\"} 0.11",
            "edgewire_mqtt_retained_messages 52",
            "edgewire_mqtt_broker_uptime_seconds 6",
            "edgewire_mqtt_broker_info{version=\"2.0.11\"} 1",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line:?} missing in:\n{text}"
            );
        }
        // Never seen, never shown.
        assert!(!text.contains("edgewire_mqtt_subscriptions"), "{text}");
    }

    #[test]
    fn malformed_payload_drops_the_value_and_clear_forgets_everything() {
        let mut s = SysState::default();
        s.update("$SYS/broker/subscriptions/count", b"4");
        assert_eq!(
            s.update("$SYS/broker/subscriptions/count", b"four"),
            Update::Malformed
        );
        assert_eq!(s.get("edgewire_mqtt_subscriptions", None), None);
        assert_eq!(
            s.update("$SYS/broker/load/sockets/5min", b"-1"),
            Update::Malformed
        );
        s.update("$SYS/broker/bytes/sent", b"10");
        s.clear();
        assert_eq!(s.messages(), 0);
        assert_eq!(encode(s).trim(), "# EOF");
    }
}
