//! Kafka cloud side of the bridge (librdkafka through rdkafka). Kafka is a cloud target only.
//!
//! - `url` is the bootstrap list (`host:port,host:port`). `tls.enabled` → SSL with the CA and the client
//!   certificate of the endpoint; `auth.userPassword` → SASL/SCRAM-SHA-512 (over SSL when TLS is on);
//!   `auth.token` is refused (SASL/OAUTHBEARER is not supported). The settings start from the
//!   Kafka client settings every Edgewire client uses ([`crate::connect::kafka::client_config`]).
//! - TLS `minVersion: "1.3"`: librdkafka has no minimum-version setting, only `ssl.cipher.suites` (the
//!   OpenSSL cipher list for TLS ≤ 1.2; TLS 1.3 suites are configured separately and stay enabled). It is
//!   set to `PSK`: suites that need a pre-shared key the client never has, so OpenSSL offers no TLS 1.2
//!   suite at all and a broker that cannot speak TLS 1.3 fails the handshake.
//! - Edge→cloud: record topic = the mapped topic, key = the site id (all records of one topic and site go
//!   to one partition, in order), record headers = `headers` + `edge-site-id`. The producer is idempotent
//!   (`enable.idempotence`, `acks=all`): librdkafka retries without duplicating or reordering within a
//!   session. Sends are pipelined; each [`AckFuture`] is the message's delivery report.
//!   `message.timeout.ms` is 0 (no timeout): while the cluster is away the messages already handed over
//!   wait in librdkafka and go out in order when it returns, instead of timing out one by one (which
//!   librdkafka documents may leave gaps). A delivery error (a permanent one: authorization, size, unknown
//!   topic) makes the forwarder send again from the spool.
//! - Health: connected while librdkafka reports at least one broker connection up (statistics every
//!   second), down with librdkafka's reason when all brokers are down.
//! - Cloud→edge: one consumer in group [`Connect::client_id`], subscribed to the rules' `from` (a literal
//!   pattern is a topic name; `*`/`#` become a regex subscription, `^…$`), offsets stored only once the edge
//!   acknowledged the delivery and committed every second (`enable.auto.commit=false`). A new group starts
//!   at the end of each partition (`auto.offset.reset=latest`): commands produced before the bridge first
//!   ran are not delivered.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use edgewire_api::v1alpha1::{Token, TopicPattern};
use futures::future::BoxFuture;
use rdkafka::client::ClientContext;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::{CommitMode, Consumer, ConsumerContext, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::statistics::Statistics;
use tokio::sync::mpsc;

use super::Connect;
use super::config::{Auth, BridgeConfigError, EndpointConfig};
use super::side::{AckFuture, Inbound, Outbound, Role, Side, Subscription};
use crate::connect::kafka::{KafkaSasl, SaslMechanism};
use crate::connect::{self, Health};
use crate::tls::TlsVersion;

/// `linger.ms` of the producer: how long librdkafka waits to fill a batch. 0: a record goes out at once;
/// under load librdkafka still batches what accumulates while earlier requests are in flight (up to 5 with
/// idempotence). Measured edge Mosquitto → bridge → mock cluster, one message at a time: p50 5.6 ms with
/// 0 against 11.4 ms with 5; a 20,000-record backlog drained in about 0.2 s either way.
const LINGER_MS: &str = "0";

/// librdkafka's default `message.max.bytes` (the broker's own default, 1,048,588, is above it).
const DEFAULT_MESSAGE_MAX_BYTES: usize = 1_000_000;

/// Longest legal Kafka topic name.
const MAX_TOPIC_LEN: usize = 249;

/// librdkafka's callbacks: statistics and errors drive the side's [`Health`] (producer) or are noted
/// (consumer); librdkafka's log goes to `tracing`.
#[derive(Clone)]
pub struct Ctx {
    health: Arc<Health>,
    /// Whether this client's view of the brokers is the side's connection state.
    drives_health: bool,
}

impl ClientContext for Ctx {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, msg: &str) {
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error
            | RDKafkaLogLevel::Warning => tracing::warn!(facility = fac, "librdkafka: {msg}"),
            _ => tracing::debug!(facility = fac, "librdkafka: {msg}"),
        }
    }

    fn stats(&self, s: Statistics) {
        if !self.drives_health {
            return;
        }
        if s.brokers.values().any(|b| b.state == "UP") {
            self.health.set_connected();
        } else {
            self.health.set_down(format!(
                "no Kafka broker connection is up ({} known: {})",
                s.brokers.len(),
                s.brokers
                    .values()
                    .map(|b| format!("{} {}", b.name, b.state))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        let all_down = error.rdkafka_error_code() == Some(RDKafkaErrorCode::AllBrokersDown);
        if all_down && self.drives_health {
            self.health
                .set_down(format!("all Kafka brokers are down: {reason}"));
        } else {
            self.health.note(format!("Kafka: {error}: {reason}"));
            tracing::warn!(error = %error, reason, "Kafka client error");
        }
    }
}

impl ConsumerContext for Ctx {}

/// A legal Kafka topic name: 1 to 249 characters of `[a-zA-Z0-9._-]`, not `.` or `..`.
pub(crate) fn check_topic_name(t: &str) -> Result<(), String> {
    if t.is_empty() || t.len() > MAX_TOPIC_LEN {
        return Err(format!(
            "{t:?} is not a valid Kafka topic name (1 to {MAX_TOPIC_LEN} characters)"
        ));
    }
    if t == "." || t == ".." {
        return Err(format!("{t:?} is not a valid Kafka topic name"));
    }
    if let Some(c) = t
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!(
            "{t:?} is not a valid Kafka topic name ({c:?} is outside [a-zA-Z0-9._-])"
        ));
    }
    Ok(())
}

/// What a consumer subscribes to for `p`: the topic name of a literal pattern, else a librdkafka regex
/// subscription (`^` prefix) with `*` = one token (`[^.]+`) and `#` = one or more tokens (`.+`).
pub(crate) fn subscription(p: &TopicPattern) -> Result<String, String> {
    if p.is_literal() {
        check_topic_name(p.as_str())?;
        return Ok(p.as_str().to_string());
    }
    let mut re = String::from("^");
    for (i, t) in p.tokens().iter().enumerate() {
        if i > 0 {
            re.push_str("\\.");
        }
        match t {
            Token::Literal(l) => {
                if let Some(c) = l
                    .chars()
                    .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-')))
                {
                    return Err(format!(
                        "pattern {p}: {c:?} cannot occur in a Kafka topic name"
                    ));
                }
                re.push_str(l);
            }
            Token::One => re.push_str("[^.]+"),
            Token::Rest => re.push_str(".+"),
        }
    }
    re.push('$');
    Ok(re)
}

/// librdkafka settings shared by the producer and the consumer of one endpoint.
pub(crate) fn base_config(
    e: &EndpointConfig,
    role: Role,
    client_id: &str,
) -> Result<ClientConfig, BridgeConfigError> {
    let field = format!("spec.{}.endpoint", role.as_str());
    let sasl = match &e.auth {
        Auth::None => None,
        Auth::Token(_) => {
            return Err(BridgeConfigError(format!(
                "{field}.auth.token: a Kafka endpoint does not take a token (SASL/OAUTHBEARER is not supported); use userPassword (SASL/SCRAM-SHA-512) or clientCert"
            )));
        }
        Auth::UserPassword { username, password } => Some(KafkaSasl {
            mechanism: SaslMechanism::ScramSha512,
            username: username.clone(),
            password: password.clone(),
        }),
    };
    if e.tls.server_name.is_some() {
        return Err(BridgeConfigError(format!(
            "{field}.tls.serverName: librdkafka verifies each broker's certificate against the host name it connects to (bootstrap and advertised listeners); a Kafka endpoint cannot override it"
        )));
    }
    let brokers: Vec<String> = e
        .url
        .split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect();
    if brokers.is_empty() {
        return Err(BridgeConfigError(format!(
            "{field}.url: a comma-separated list of bootstrap servers (host:port) is required"
        )));
    }
    let mut cc = connect::kafka::client_config(&brokers, sasl.as_ref(), &e.tls);
    cc.set("client.id", client_id)
        .set("statistics.interval.ms", "1000");
    if e.tls.enabled && e.tls.min_version == TlsVersion::V1_3 {
        // Only suites needing a pre-shared key, which the client never has: no TLS 1.2 suite is offered.
        cc.set("ssl.cipher.suites", "PSK");
    }
    Ok(cc)
}

/// Producer settings on top of [`base_config`].
pub(crate) fn producer_config(base: &ClientConfig) -> ClientConfig {
    let mut pc = base.clone();
    pc.set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", LINGER_MS)
        .set("message.timeout.ms", "0");
    pc
}

/// Consumer settings on top of [`base_config`].
pub(crate) fn consumer_config(base: &ClientConfig, group: &str) -> ClientConfig {
    let mut cc = base.clone();
    cc.set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "latest")
        // New topics matching a regex subscription are found within this interval.
        .set("topic.metadata.refresh.interval.ms", "30000");
    cc
}

pub struct KafkaSide {
    producer: Mutex<FutureProducer<Ctx>>,
    config: ClientConfig,
    health: Arc<Health>,
    headers: OwnedHeaders,
    key: String,
    /// The producer's `message.max.bytes`.
    max_message: usize,
    /// What key and headers add to a message's size.
    overhead: usize,
}

fn create_producer(
    config: &ClientConfig,
    health: &Arc<Health>,
) -> Result<FutureProducer<Ctx>, KafkaError> {
    config.create_with_context(Ctx {
        health: health.clone(),
        drives_health: true,
    })
}

/// Connects the cloud side: the producer, and a consumer when cloud→edge rules exist.
pub async fn connect(c: Connect<'_>) -> anyhow::Result<Arc<dyn Side>> {
    if c.role == Role::Edge {
        anyhow::bail!("spec.edge.endpoint.protocol: kafka is a cloud-only protocol");
    }
    let base = base_config(c.endpoint, c.role, &c.client_id()).context(c.role.as_str())?;
    let health = Arc::new(Health::default());
    let config = producer_config(&base);
    let producer = create_producer(&config, &health)
        .map_err(|e| BridgeConfigError(format!("Kafka producer: {e}")))
        .context(c.role.as_str())?;
    if !c.subscriptions.is_empty() {
        start_consumer(&c, &base, health.clone()).context(c.role.as_str())?;
    }
    let mut headers = OwnedHeaders::new_with_capacity(c.cfg.headers.len());
    for (k, v) in &c.cfg.headers {
        headers = headers.insert(Header {
            key: k,
            value: Some(v.as_bytes()),
        });
    }
    let max_message = config
        .get("message.max.bytes")
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_MESSAGE_MAX_BYTES);
    // librdkafka counts key, value and headers against `message.max.bytes`; a header costs its name, its
    // value and two varint lengths (at most 5 bytes each).
    let overhead = c.cfg.site_id.len()
        + c.cfg
            .headers
            .iter()
            .map(|(k, v)| k.len() + v.len() + 10)
            .sum::<usize>();
    Ok(Arc::new(KafkaSide {
        producer: Mutex::new(producer),
        config,
        health,
        headers,
        key: c.cfg.site_id.clone(),
        max_message,
        overhead,
    }))
}

fn start_consumer(
    c: &Connect<'_>,
    base: &ClientConfig,
    health: Arc<Health>,
) -> Result<(), BridgeConfigError> {
    let topics = topics(&c.subscriptions)?;
    let consumer: StreamConsumer<Ctx> = consumer_config(base, &c.client_id())
        .create_with_context(Ctx {
            health: health.clone(),
            drives_health: false,
        })
        .map_err(|e| BridgeConfigError(format!("Kafka consumer: {e}")))?;
    let refs: Vec<&str> = topics.iter().map(String::as_str).collect();
    consumer
        .subscribe(&refs)
        .map_err(|e| BridgeConfigError(format!("Kafka subscription to {topics:?}: {e}")))?;
    let consumer = Arc::new(consumer);
    let stored = Arc::new(AtomicBool::new(false));
    tokio::spawn(consume(
        consumer.clone(),
        c.inbound.clone(),
        health,
        stored.clone(),
    ));
    tokio::spawn(commit_stored(consumer, stored));
    Ok(())
}

fn topics(subs: &[Subscription]) -> Result<Vec<String>, BridgeConfigError> {
    subs.iter()
        .map(|s| {
            subscription(&s.pattern)
                .map_err(|e| BridgeConfigError(format!("spec.rules[{}].from: {e}", s.rule)))
        })
        .collect()
}

/// Hands every received record to the bridge; its acknowledgement stores the offset.
async fn consume(
    consumer: Arc<StreamConsumer<Ctx>>,
    tx: mpsc::Sender<Inbound>,
    health: Arc<Health>,
    stored: Arc<AtomicBool>,
) {
    // librdkafka reconnects by itself: after an error pause briefly (at most about a second), not longer.
    let mut backoff =
        crate::retry::Policy::new(Duration::from_millis(250), Duration::from_secs(1)).backoff();
    loop {
        let (topic, partition, offset, payload) = match consumer.recv().await {
            Ok(m) => (
                m.topic().to_string(),
                m.partition(),
                m.offset(),
                Bytes::copy_from_slice(m.payload().unwrap_or_default()),
            ),
            Err(e) => {
                health.note(format!("Kafka consumer: {e}"));
                tracing::warn!(error = %e, "Kafka consumer");
                backoff.wait().await;
                continue;
            }
        };
        backoff.reset();
        let (c, t, s) = (consumer.clone(), topic.clone(), stored.clone());
        let ack = Box::pin(async move {
            // Stores offset + 1: the next record to read after a restart or a rebalance.
            match c.store_offset(&t, partition, offset) {
                Ok(()) => s.store(true, Ordering::Release),
                // The partition moved to another member meanwhile: it reads the record again.
                Err(e) => {
                    tracing::debug!(topic = %t, partition, offset, error = %e, "offset not stored")
                }
            }
        }) as BoxFuture<'static, ()>;
        let msg = Inbound {
            packet: None,
            topic,
            payload,
            ack: Some(ack),
        };
        if tx.send(msg).await.is_err() {
            return;
        }
    }
}

/// Commits the stored offsets every second when some were stored since the last commit.
async fn commit_stored(consumer: Arc<StreamConsumer<Ctx>>, stored: Arc<AtomicBool>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        if stored.swap(false, Ordering::AcqRel)
            && let Err(e) = consumer.commit_consumer_state(CommitMode::Async)
        {
            stored.store(true, Ordering::Release);
            tracing::warn!(error = %e, "Kafka offset commit");
        }
    }
}

impl KafkaSide {
    /// The producer; a new one when librdkafka raised a fatal error on the current one (the idempotent
    /// producer cannot continue after, for example, an unrecoverable sequence error).
    fn producer(&self) -> anyhow::Result<FutureProducer<Ctx>> {
        let mut p = self
            .producer
            .lock()
            .map_err(|_| anyhow::anyhow!("Kafka producer lock poisoned"))?;
        if let Some(e) = p.client().fatal_error() {
            tracing::warn!(error = ?e, "Kafka producer hit a fatal error; creating a new one");
            *p = create_producer(&self.config, &self.health)
                .map_err(|e| anyhow::anyhow!("Kafka producer: {e}"))?;
        }
        Ok(p.clone())
    }
}

impl Side for KafkaSide {
    fn health(&self) -> Arc<Health> {
        self.health.clone()
    }

    fn check_topic(&self, topic: &str) -> Result<(), String> {
        check_topic_name(topic)
    }

    /// librdkafka refuses a message over `message.max.bytes` (key, value and headers) at every send; the
    /// forwarder would resend it forever.
    fn check_size(&self, topic: &str, payload_len: usize) -> Result<(), String> {
        let size = payload_len + self.overhead;
        if size > self.max_message {
            return Err(format!(
                "a message of {size} bytes (value, key and headers) to {topic:?} exceeds the Kafka producer's message.max.bytes of {}",
                self.max_message
            ));
        }
        Ok(())
    }

    fn send(&self, m: Outbound) -> BoxFuture<'_, anyhow::Result<AckFuture>> {
        Box::pin(async move {
            let producer = self.producer()?;
            let mut record = FutureRecord::to(&m.topic)
                .key(self.key.as_bytes())
                .payload(&m.payload[..]);
            if m.enrich {
                record = record.headers(self.headers.clone());
            }
            loop {
                match producer.send_result(record) {
                    Ok(delivery) => {
                        return Ok(Box::pin(async move {
                            match delivery.await {
                                Ok(Ok(_)) => Ok(()),
                                Ok(Err((e, msg))) => {
                                    Err(anyhow::anyhow!("Kafka delivery to {}: {e}", msg.topic()))
                                }
                                Err(_) => Err(anyhow::anyhow!(
                                    "the Kafka producer closed before the delivery report"
                                )),
                            }
                        }) as AckFuture);
                    }
                    // librdkafka's queue is full: wait for room, in order.
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                        record = r;
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    Err((e, _)) => anyhow::bail!("Kafka produce to {}: {e}", m.topic),
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names() {
        for ok in [
            "edge.site-a.telemetry.line1.temp",
            "a",
            "A_b-c.9",
            &"x".repeat(249),
        ] {
            assert!(check_topic_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", ".", "..", "a b", "a/b", "ä", &"x".repeat(250), "a\0"] {
            assert!(check_topic_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn subscriptions_translate_wildcards_to_anchored_regexes() {
        let p = |s: &str| subscription(&TopicPattern::parse(s).unwrap());
        assert_eq!(p("cmd.site-a.valve").unwrap(), "cmd.site-a.valve");
        assert_eq!(p("cmd.site-a.#").unwrap(), "^cmd\\.site-a\\..+$");
        assert_eq!(p("cmd.*.valve").unwrap(), "^cmd\\.[^.]+\\.valve$");
        assert!(p("cmd.site:a.#").is_err());
        assert!(p("cmd.site:a").is_err());
    }

    fn endpoint(url: &str) -> EndpointConfig {
        EndpointConfig {
            protocol: edgewire_api::v1alpha1::Protocol::Kafka,
            url: url.into(),
            mqtt_version: Default::default(),
            jetstream: false,
            exchange: None,
            auth: Auth::None,
            tls: Default::default(),
        }
    }

    #[test]
    fn token_auth_and_server_name_are_refused_naming_the_field() {
        let mut e = endpoint("k:9092");
        e.auth = Auth::Token(crate::secret::Secret::new("t"));
        let err = base_config(&e, Role::Cloud, "id").unwrap_err().0;
        assert!(
            err.contains("spec.cloud.endpoint.auth.token") && err.contains("OAUTHBEARER"),
            "{err}"
        );
        let mut e = endpoint("k:9092");
        e.tls.enabled = true;
        e.tls.server_name = Some("kafka.example".into());
        let err = base_config(&e, Role::Cloud, "id").unwrap_err().0;
        assert!(err.contains("spec.cloud.endpoint.tls.serverName"), "{err}");
        let err = base_config(&endpoint(" , "), Role::Cloud, "id")
            .unwrap_err()
            .0;
        assert!(err.contains("spec.cloud.endpoint.url"), "{err}");
    }

    #[test]
    fn user_password_is_scram_sha_512_and_the_producer_is_idempotent() {
        let mut e = endpoint("a:9092, b:9092");
        e.auth = Auth::UserPassword {
            username: "site".into(),
            password: crate::secret::Secret::new("pw"),
        };
        let pc = producer_config(&base_config(&e, Role::Cloud, "bridge-x").unwrap());
        let get = |k: &str| pc.get(k).map(str::to_string);
        assert_eq!(get("bootstrap.servers").as_deref(), Some("a:9092,b:9092"));
        assert_eq!(get("security.protocol").as_deref(), Some("SASL_PLAINTEXT"));
        assert_eq!(get("sasl.mechanism").as_deref(), Some("SCRAM-SHA-512"));
        assert_eq!(get("client.id").as_deref(), Some("bridge-x"));
        assert_eq!(get("enable.idempotence").as_deref(), Some("true"));
        assert_eq!(get("acks").as_deref(), Some("all"));
        // librdkafka accepts the combination.
        if let Err(e) = pc.create::<rdkafka::producer::BaseProducer>() {
            panic!("librdkafka refused the producer settings: {e}");
        }
        let cc = consumer_config(&base_config(&e, Role::Cloud, "bridge-x").unwrap(), "g");
        assert_eq!(cc.get("enable.auto.commit"), Some("false"));
        assert_eq!(cc.get("auto.offset.reset"), Some("latest"));
        if let Err(e) = cc.create::<rdkafka::consumer::BaseConsumer>() {
            panic!("librdkafka refused the consumer settings: {e}");
        }
    }

    /// What librdkafka negotiates with a broker speaking only `versions`, under `min`.
    fn librdkafka_against(
        versions: &[&'static rustls::SupportedProtocolVersion],
        min: TlsVersion,
    ) -> Result<rustls::ProtocolVersion, String> {
        let pki = edgewire_e2e::pki::TestPki::new("bridge").unwrap();
        let (port, rx) = crate::tls::testing::tls_server(&pki, versions);
        let mut e = endpoint(&format!("localhost:{port}"));
        e.tls.enabled = true;
        e.tls.ca_file = Some(pki.ca_path());
        e.tls.min_version = min;
        let p: rdkafka::producer::BaseProducer =
            producer_config(&base_config(&e, Role::Cloud, "tls-probe").unwrap())
                .create()
                .unwrap();
        // A metadata request makes librdkafka connect to the bootstrap server.
        std::thread::spawn(move || {
            let _ = p.client().fetch_metadata(None, Duration::from_secs(15));
        });
        rx.recv_timeout(Duration::from_secs(30))
            .expect("librdkafka never connected to the TLS server")
    }

    #[test]
    fn min_version_1_3_is_enforced_on_librdkafka_connections() {
        use rustls::ProtocolVersion::{TLSv1_2, TLSv1_3};
        use rustls::version::{TLS12, TLS13};
        // Without the minimum, librdkafka (OpenSSL) settles for TLS 1.2 with a 1.2-only broker ...
        assert_eq!(librdkafka_against(&[&TLS12], TlsVersion::V1_2), Ok(TLSv1_2));
        // ... with minVersion 1.3 that handshake fails,
        let r = librdkafka_against(&[&TLS12], TlsVersion::V1_3);
        assert!(r.is_err(), "a TLS 1.2-only broker was accepted: {r:?}");
        // and a TLS 1.3 broker is still reached.
        assert_eq!(librdkafka_against(&[&TLS13], TlsVersion::V1_3), Ok(TLSv1_3));
    }
}
