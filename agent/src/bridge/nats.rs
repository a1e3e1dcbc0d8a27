//! NATS side of the bridge (async-nats): core NATS and JetStream.
//!
//! Sending: JetStream publishes each message with `Nats-Msg-Id` = the record's id (site, spool, sequence
//! number), so the stream's duplicate window drops what is sent again after a crash, and its
//! [`AckFuture`] is the PubAck (the stream capturing the subjects must exist). Core NATS has no
//! per-message acknowledgement: a message is acknowledged by a server round trip sent after it on the same
//! connection ([`connect::nats::SharedAcks`]: one echo covers every message written before it, and echoes
//! are pipelined, so the forwarder never waits for one before sending more). A message written on a
//! connection that went down before its echo came back fails, and the spool sends it again.
//! Edge→cloud messages carry `headers` and `edge-site-id` as NATS headers.
//!
//! Receiving: on a JetStream edge (`jetStream.enabled`), one durable pull consumer per rule on the
//! stream that captures the rule's subjects (found by subject; it must exist), explicit acks sent once
//! the message is in the spool — what the edge stored while the bridge or the cloud was down is
//! forwarded when the bridge runs again, in stream order (see [`attach`]). Otherwise (core NATS edge,
//! and cloud→edge rules on any NATS cloud) core subscriptions: at most once, a core NATS edge holds nothing for the bridge while it is
//! down.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use async_nats::HeaderMap;
use async_nats::jetstream::{self, consumer};
use futures::StreamExt;
use futures::future::BoxFuture;
use tokio::sync::mpsc;

use super::Connect;
use super::config::{Auth, BridgeConfigError, EndpointConfig};
use super::side::{AckFuture, Inbound, Outbound, Role, Side, Subscription};
use crate::connect::nats::NatsAuth;
use crate::connect::{self, Health};

const ACK_TIMEOUT: Duration = Duration::from_secs(30);

pub struct NatsSide {
    client: async_nats::Client,
    ack: Ack,
    health: Arc<Health>,
    headers: HeaderMap,
    /// Bytes the headers add to an enriched message (async-nats counts them against `max_payload`).
    headers_len: usize,
}

/// How a sent message is acknowledged.
enum Ack {
    /// The stream's PubAck.
    JetStream(jetstream::Context),
    /// Core NATS: an echo sent after it on the same connection.
    Core(connect::nats::SharedAcks),
}

/// Connects (in the background: a server that is down is retried forever with [`crate::retry::BRIDGE`]).
async fn client(
    c: &EndpointConfig,
    name: &str,
) -> Result<(async_nats::Client, Arc<Health>), BridgeConfigError> {
    let health = Arc::new(Health::default());
    let auth = match &c.auth {
        Auth::None => NatsAuth::None,
        Auth::Token(t) => NatsAuth::Token(t.clone()),
        Auth::UserPassword { username, password } => NatsAuth::UserPassword {
            username: username.clone(),
            password: password.clone(),
        },
    };
    let opts = connect::nats::options(name, &auth, &c.tls, crate::retry::BRIDGE, health.clone())
        .map_err(|e| BridgeConfigError(format!("TLS: {e}")))?;
    let urls: Vec<String> = c.url.split(',').map(|u| u.trim().to_string()).collect();
    let client = opts.connect(urls).await.map_err(|e| {
        BridgeConfigError(format!(
            "NATS endpoint {}: {}",
            crate::secret::redact_url(&c.url),
            crate::secret::redact_url(&e.to_string())
        ))
    })?;
    Ok((client, health))
}

/// A NATS subject a message can be published to: non-empty tokens, no wildcards, no whitespace.
pub(crate) fn check_subject(s: &str) -> Result<(), String> {
    let bad = s.is_empty()
        || s.split('.').any(|t| t.is_empty() || t == "*" || t == ">")
        || s.chars().any(|c| c.is_whitespace() || c == '\0');
    if bad {
        Err(format!("{s:?} is not a valid NATS subject"))
    } else {
        Ok(())
    }
}

/// The bridge's headers as a NATS header map. The configuration was checked ([`super::config`]); the
/// fallible parsers still stand between a bad value and async-nats's `insert(&str, &str)`, which panics.
fn header_map(headers: &[(String, String)]) -> Result<HeaderMap, BridgeConfigError> {
    let mut map = HeaderMap::new();
    for (k, v) in headers {
        let name = k.parse::<async_nats::HeaderName>().map_err(|_| {
            BridgeConfigError(format!("spec.headers: {k:?} cannot be a NATS header name"))
        })?;
        let value = v.parse::<async_nats::HeaderValue>().map_err(|_| {
            BridgeConfigError(format!(
                "spec.headers.{k}: the value cannot be a NATS header value"
            ))
        })?;
        map.insert(name, value);
    }
    Ok(map)
}

/// The size of the header block async-nats writes for `headers`: `NATS/1.0\r\n`, `name: value\r\n`
/// each, `\r\n`; nothing without headers.
fn headers_wire_len(headers: &[(String, String)]) -> usize {
    if headers.is_empty() {
        return 0;
    }
    10 + headers
        .iter()
        .map(|(k, v)| k.len() + 2 + v.len() + 2)
        .sum::<usize>()
        + 2
}

/// Connects one side and starts its subscriptions.
pub async fn connect(c: Connect<'_>) -> anyhow::Result<Arc<dyn Side>> {
    let (client, health) = client(c.endpoint, &c.client_id())
        .await
        .context(c.role.as_str())?;
    let js = c.endpoint.jetstream.then(|| jetstream::new(client.clone()));
    let headers = header_map(&c.cfg.headers).context(c.role.as_str())?;
    let headers_len = headers_wire_len(&c.cfg.headers);
    match (&js, c.role) {
        (Some(js), Role::Edge) => {
            for s in &c.subscriptions {
                tokio::spawn(consume(
                    js.clone(),
                    durable_name(&c, s),
                    s.clone(),
                    c.inbound.clone(),
                    health.clone(),
                ));
            }
        }
        _ => {
            let mut subs = Vec::new();
            for s in &c.subscriptions {
                subs.push(
                    client
                        .subscribe(s.pattern.to_nats())
                        .await
                        .with_context(|| format!("subscribing to {}", s.pattern))?,
                );
            }
            if !subs.is_empty() {
                let mut all = futures::stream::select_all(subs);
                let tx = c.inbound.clone();
                tokio::spawn(async move {
                    while let Some(m) = all.next().await {
                        let msg = Inbound {
                            packet: None,
                            topic: m.subject.to_string(),
                            payload: m.payload,
                            ack: None,
                        };
                        if tx.send(msg).await.is_err() {
                            return;
                        }
                    }
                });
            }
        }
    }
    let ack = match js {
        Some(js) => Ack::JetStream(js),
        None => Ack::Core(
            connect::nats::SharedAcks::new(client.clone(), &health)
                .await
                .map_err(anyhow::Error::msg)
                .context(c.role.as_str())?,
        ),
    };
    Ok(Arc::new(NatsSide {
        client,
        ack,
        health,
        headers,
        headers_len,
    }))
}

/// The durable consumer of one rule: stable per BridgeLink and subject (not per rule index, so that
/// reordering rules does not start a consumer from the beginning of the stream again).
fn durable_name(c: &Connect<'_>, s: &Subscription) -> String {
    let subject = s.pattern.to_nats();
    let h = crc32fast::hash(subject.as_bytes());
    format!("{}-{h:08x}", c.client_id())
}

/// Pulls one rule's subjects from the edge stream forever, re-creating the consumer after errors.
async fn consume(
    js: jetstream::Context,
    durable: String,
    s: Subscription,
    tx: mpsc::Sender<Inbound>,
    health: Arc<Health>,
) {
    let subject = s.pattern.to_nats();
    let mut backoff = crate::retry::BRIDGE.backoff();
    loop {
        match pull(&js, &durable, &subject, &tx, &mut backoff).await {
            Ok(()) => return, // the bridge is stopping
            Err(e) => {
                health.note(format!("JetStream consumer for {subject}: {e:#}"));
                tracing::warn!(subject = %subject, error = %format!("{e:#}"), "edge JetStream consumer; retrying");
                backoff.wait().await;
            }
        }
    }
}

async fn pull(
    js: &jetstream::Context,
    durable: &str,
    subject: &str,
    tx: &mpsc::Sender<Inbound>,
    backoff: &mut crate::retry::Backoff,
) -> anyhow::Result<()> {
    let stream_name = js
        .stream_by_subject(subject)
        .await
        .with_context(|| format!("no edge stream captures {subject}"))?;
    let stream = js.get_stream(&stream_name).await?;
    let consumer = attach(&stream, durable, subject)
        .await
        .with_context(|| format!("durable consumer {durable} on stream {stream_name}"))?;
    let mut messages = consumer
        .stream()
        .max_messages_per_batch(1000)
        .messages()
        .await?;
    backoff.reset();
    while let Some(m) = messages.next().await {
        let m = m?;
        let (m, acker) = m.split();
        let msg = Inbound {
            packet: None,
            topic: m.subject.to_string(),
            payload: m.payload,
            ack: Some(Box::pin(async move {
                let _ = acker.ack().await;
            })),
        };
        if tx.send(msg).await.is_err() {
            return Ok(());
        }
    }
    anyhow::bail!("the consumer's message stream ended")
}

/// Attaches to a rule's durable consumer so that it delivers, in stream order, from the first message
/// not acknowledged.
///
/// A message the consumer delivered to an earlier attachment and that was never acknowledged (the
/// bridge was killed before the spool's fsync, or the connection dropped with it on the way) comes back
/// only after `ack_wait`, behind everything delivered since. A pull request left by a bridge that died
/// before the server noticed takes new messages the same way. So a consumer found with unacknowledged
/// deliveries or waiting pull requests is made again, starting after its acknowledgement floor, which
/// ends both. Messages acknowledged above the floor, or still on their way to the spool when a consumer
/// of this process failed, come again: duplicates, never a gap.
///
/// Deleting the only consumer of an interest stream deletes what it had not acknowledged, so a second
/// consumer holds those messages while the rule's is made again ([`held`]). A work-queue stream keeps
/// its messages without a consumer, and allows no second one on the same subjects.
async fn attach(
    stream: &jetstream::stream::Stream,
    durable: &str,
    subject: &str,
) -> anyhow::Result<consumer::PullConsumer> {
    let config = |name: &str, deliver_policy| consumer::pull::Config {
        durable_name: Some(name.to_string()),
        filter_subject: subject.to_string(),
        deliver_policy,
        ack_policy: consumer::AckPolicy::Explicit,
        // A message waits for the spool's fsync (and for room under RejectNew) before its ack.
        ack_wait: Duration::from_secs(120),
        max_ack_pending: 20_000,
        ..Default::default()
    };
    // A hold left by a bridge that stopped half way through the steps below knows where the rule's
    // consumer starts, should that one be gone too (a new one would read a limits stream from its start).
    let hold = held(durable);
    let left = match stream.consumer_info(&hold).await {
        Ok(info) => Some(info.config.deliver_policy),
        Err(e) if e.kind() == jetstream::context::ConsumerInfoErrorKind::NotFound => None,
        Err(e) => return Err(e.into()),
    };
    let first = left.unwrap_or(consumer::DeliverPolicy::All);
    let found: consumer::PullConsumer = stream
        .get_or_create_consumer(durable, config(durable, first))
        .await?;
    let info = found.cached_info();
    if info.num_ack_pending == 0 && info.num_waiting == 0 {
        if left.is_some() {
            delete_if_present(stream, &hold).await?;
        }
        return Ok(found);
    }
    let start_sequence = info.ack_floor.stream_sequence + 1;
    let start = consumer::DeliverPolicy::ByStartSequence { start_sequence };
    let (pending, waiting) = (info.num_ack_pending, info.num_waiting);
    let work_queue =
        stream.cached_info().config.retention == jetstream::stream::RetentionPolicy::WorkQueue;
    if !work_queue {
        let _: consumer::PullConsumer = stream
            .get_or_create_consumer(&hold, config(&hold, start))
            .await?;
    }
    stream.delete_consumer(durable).await?;
    let made = stream.create_consumer(config(durable, start)).await?;
    delete_if_present(stream, &hold).await?;
    tracing::info!(
        consumer = durable,
        pending,
        waiting,
        start = start_sequence,
        "edge JetStream consumer made again after its acknowledgement floor"
    );
    Ok(made)
}

/// The consumer that keeps an interest stream's unacknowledged messages while [`attach`] makes the
/// rule's consumer again.
fn held(durable: &str) -> String {
    format!("{durable}-hold")
}

async fn delete_if_present(stream: &jetstream::stream::Stream, name: &str) -> anyhow::Result<()> {
    match stream.delete_consumer(name).await {
        Ok(_) => Ok(()),
        Err(e) => match e.kind() {
            jetstream::stream::ConsumerErrorKind::JetStream(j)
                if j.error_code() == jetstream::ErrorCode::CONSUMER_NOT_FOUND =>
            {
                Ok(())
            }
            _ => Err(e.into()),
        },
    }
}

impl Side for NatsSide {
    fn health(&self) -> Arc<Health> {
        self.health.clone()
    }

    fn check_topic(&self, topic: &str) -> Result<(), String> {
        check_subject(topic)
    }

    /// async-nats refuses to publish a message (headers included) over the `max_payload` of the server's
    /// INFO (before the first INFO, its default of 1 MiB, the server's default too); the forwarder would
    /// send it again forever.
    fn check_size(&self, topic: &str, payload_len: usize) -> Result<(), String> {
        let max = self.client.max_payload();
        let size = self.headers_len + payload_len;
        if size > max {
            return Err(format!(
                "a message of {size} bytes (data and the bridge's headers) to {topic:?} exceeds the NATS server's max_payload of {max} bytes"
            ));
        }
        Ok(())
    }

    fn send(&self, m: Outbound) -> BoxFuture<'_, anyhow::Result<AckFuture>> {
        Box::pin(async move {
            self.health.require()?;
            let headers = m.enrich.then(|| self.headers.clone());
            match &self.ack {
                Ack::JetStream(js) => {
                    // The stream drops a message whose id it stored within its duplicate window.
                    let headers = match (headers, &m.id) {
                        (h, Some(id)) => {
                            let mut h = h.unwrap_or_default();
                            h.insert(async_nats::header::NATS_MESSAGE_ID, id.as_str());
                            Some(h)
                        }
                        (h, None) => h,
                    };
                    let f = match headers {
                        Some(h) => js.publish_with_headers(m.topic, h, m.payload).await,
                        None => js.publish(m.topic, m.payload).await,
                    }
                    .map_err(|e| anyhow::anyhow!("JetStream publish: {e}"))?;
                    Ok(Box::pin(async move {
                        tokio::time::timeout(ACK_TIMEOUT, f.into_future())
                            .await
                            .map_err(|_| anyhow::anyhow!("no JetStream PubAck in {ACK_TIMEOUT:?}"))?
                            .map_err(|e| anyhow::anyhow!("JetStream PubAck: {e}"))?;
                        Ok(())
                    }) as AckFuture)
                }
                Ack::Core(acks) => {
                    let sent_on = acks.generation();
                    match headers {
                        Some(h) => {
                            self.client
                                .publish_with_headers(m.topic, h, m.payload)
                                .await
                        }
                        None => self.client.publish(m.topic, m.payload).await,
                    }
                    .map_err(|e| anyhow::anyhow!("NATS publish: {e}"))?;
                    let acked = acks.acknowledged(sent_on);
                    Ok(Box::pin(async move {
                        tokio::time::timeout(ACK_TIMEOUT, acked)
                            .await
                            .map_err(|_| {
                                anyhow::anyhow!("no NATS server round trip in {ACK_TIMEOUT:?}")
                            })?
                            .map_err(|e| anyhow::anyhow!(e))?;
                        Ok(())
                    }) as AckFuture)
                }
            }
        })
    }

    fn sends_message_ids(&self) -> bool {
        matches!(self.ack, Ack::JetStream(_))
    }
}
