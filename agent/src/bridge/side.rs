//! What the bridge needs from one side, whatever its protocol.
//!
//! A side is connected once ([`super::connect`]) and then:
//! - delivers what arrives on its subscriptions (the `from` patterns of the rules whose source it is) as
//!   [`Inbound`] messages, each with the acknowledgement the broker expects (MQTT PUBACK, JetStream ack,
//!   AMQP `basic.ack`, Kafka offset commit), run by the bridge only once the message is safe (spooled
//!   and fsync'd on the edge, delivered to the edge on the cloud);
//! - sends [`Outbound`] messages in call order ([`Side::send`]); each send returns an [`AckFuture`]
//!   that resolves once the broker acknowledged that message, so the forwarder can keep many messages in
//!   flight and remove records from the spool as their acknowledgements come back, in order.
//!
//! Every protocol module (`mqtt` with `mqtt::v311` and `mqtt::v5`, `nats`, `amqp`, `kafka`) implements
//! [`Side`] and has a `connect(Connect) -> anyhow::Result<Arc<dyn Side>>`; [`super::connect`] picks it. Connecting never fails because the broker is down:
//! the side reconnects in the background with [`crate::retry::BRIDGE`] and reports its state in
//! [`Side::health`]; it fails only on configuration a retry cannot fix.

use std::sync::Arc;

use bytes::Bytes;
use edgewire_api::v1alpha1::TopicPattern;
use futures::future::BoxFuture;

use crate::connect::Health;

/// Resolves once the broker acknowledged one sent message (or failed: connection lost, timeout, refused).
pub type AckFuture = BoxFuture<'static, anyhow::Result<()>>;

/// Acknowledges one received message to the broker it came from.
pub type SourceAck = BoxFuture<'static, ()>;

/// Which side of the bridge a connection is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Where local devices publish: its session persists across bridge restarts where the protocol can
    /// (MQTT clean session off, JetStream durable consumer), so nothing is lost while the bridge is down.
    Edge,
    /// The cloud broker.
    Cloud,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Edge => "edge",
            Role::Cloud => "cloud",
        }
    }
}

/// A message received on one of a side's subscriptions.
pub struct Inbound {
    /// Topic, subject, routing key or Kafka topic, in this side's syntax.
    pub topic: String,
    pub payload: Bytes,
    /// The broker's acknowledgement; `None` when the protocol has none (core NATS, MQTT QoS 0).
    pub ack: Option<SourceAck>,
    /// MQTT at QoS ≥ 1: the packet id it was delivered under and its DUP flag (edge redeliveries,
    /// [`crate::bridge::redelivery`]); `None` for other protocols and QoS 0.
    pub packet: Option<Packet>,
}

/// How an MQTT broker delivered a QoS ≥ 1 message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Packet {
    pub id: u16,
    /// Set on a redelivery of a message the broker sent before and has no acknowledgement of.
    pub dup: bool,
}

/// A message to send to a side.
pub struct Outbound {
    /// Topic in this side's syntax (already mapped).
    pub topic: String,
    pub payload: Bytes,
    /// The rule's QoS (MQTT sides; others ignore it).
    pub qos: u8,
    /// Add the bridge's headers (`spec.headers` and `edge-site-id`), as far as the protocol carries
    /// headers: NATS headers, MQTT 5 user properties, AMQP message headers, Kafka record headers. Set on
    /// edge→cloud messages.
    pub enrich: bool,
    /// A name for this message that stays the same when it is sent again (edge→cloud: site, spool and
    /// sequence number). JetStream sends it as `Nats-Msg-Id`, so the stream drops resends within its
    /// duplicate window; other protocols ignore it.
    pub id: Option<String>,
}

/// A source pattern a side subscribes to.
#[derive(Clone, Debug)]
pub struct Subscription {
    /// Index of the rule in `spec.rules`.
    pub rule: usize,
    /// The rule's `from`, in the neutral syntax (each module translates it).
    pub pattern: TopicPattern,
    /// The rule's QoS.
    pub qos: u8,
}

/// One connected side.
pub trait Side: Send + Sync + 'static {
    /// Connection state (connected / down with the reason).
    fn health(&self) -> Arc<Health>;

    /// Checks that `topic` is a valid destination name on this protocol (a Kafka topic name, an AMQP
    /// routing key of at most 255 bytes, an MQTT topic without wildcards, a NATS subject without
    /// whitespace). A message mapped to an invalid name is refused before it is spooled — it could never
    /// be delivered, and would block everything behind it.
    fn check_topic(&self, topic: &str) -> Result<(), String>;

    /// Checks that a message of `payload_len` bytes to `topic` fits this side's size limit (the client's
    /// or the broker's maximum packet or message size, as far as the side knows it). A message that
    /// cannot fit is refused before it is spooled, like an invalid topic: sending it would fail every
    /// time and hold up its rule.
    fn check_size(&self, _topic: &str, _payload_len: usize) -> Result<(), String> {
        Ok(())
    }

    /// Puts one message on the wire, after every message sent before it. Returns once the client took
    /// it (this may wait for room in the client's window), with a future that resolves once the broker
    /// acknowledged it. An error here or from the future means the message may not have arrived: the
    /// forwarder sends it and everything after it again.
    fn send(&self, msg: Outbound) -> BoxFuture<'_, anyhow::Result<AckFuture>>;

    /// Whether this side sends [`Outbound::id`] (JetStream's `Nats-Msg-Id`); the forwarder names records
    /// only for a side that does.
    fn sends_message_ids(&self) -> bool {
        false
    }
}
