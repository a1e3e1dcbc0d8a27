//! The MQTT sides of the bridge: MQTT 3.1.1 ([`v311`], `rumqttc`) and MQTT 5 ([`v5`], `rumqttc::v5`),
//! chosen by the endpoint's `mqttVersion`. What both versions share lives here: the [`Tracker`] that
//! matches acknowledgements to sent messages by packet id, its sending half [`Acks`], the packet size
//! arithmetic that refuses a message before it is spooled, the topic-name rule, and the credentials and
//! TLS transport of an endpoint (on top of [`crate::connect::mqtt`]).

pub mod v311;
pub mod v5;

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex as StdMutex, MutexGuard};
use std::time::Duration;

use edgewire_api::v1alpha1::MqttVersion;
use rumqttc::Transport;
use tokio::sync::{Mutex, oneshot};

use super::Connect;
use super::config::{Auth, BridgeConfigError, EndpointConfig};
use super::side::{AckFuture, Side};
use crate::connect;

pub(crate) use crate::connect::mqtt::MAX_PACKET;

/// How long a sent message may wait for its acknowledgement before the connection is presumed stuck.
pub(crate) const ACK_TIMEOUT: Duration = Duration::from_secs(30);

/// The result of one sent message, as the event loop learns it.
type Done = oneshot::Sender<Result<(), String>>;

/// Which sent message an acknowledgement belongs to, for both MQTT versions (the event loop translates
/// its rumqttc events into these calls).
///
/// Each QoS ≥ 1 send queues a one-shot sender in request order ([`Acks::send`]). When rumqttc puts a
/// PUBLISH on the wire it emits `Outgoing::Publish(pkid)`, in the order of its request channel: the front
/// sender is filed under that packet id ([`Tracker::on_wire`]), and the acknowledgement with that id
/// resolves it ([`Tracker::resolve`]). A lost connection fails what was on the wire and what rumqttc
/// moved aside into its pending list, while sends still in the request channel keep their place for the
/// next connection ([`Tracker::lost`]); a persistent session keeps both until the CONNACK says whether
/// the broker kept the session ([`Tracker::connected`]).
#[derive(Default)]
pub(crate) struct Tracker {
    /// QoS ≥ 1 sends handed to the client, not yet on the wire, in request-channel order.
    queued: VecDeque<Done>,
    /// On the wire, by packet id, waiting for their acknowledgement.
    wire: HashMap<u16, Done>,
    /// Persistent session only: how many of `queued` (from the front) rumqttc moved into its pending list
    /// at the last disconnect. They are sent after a CONNACK with the session present and lost without.
    held: usize,
}

impl Tracker {
    /// rumqttc put a PUBLISH with this packet id on the wire. Packet id 0: QoS 0, nothing to wait for. A
    /// packet id already on the wire: the session resending an unacknowledged message after a reconnect.
    pub(crate) fn on_wire(&mut self, pkid: u16) {
        if pkid != 0
            && !self.wire.contains_key(&pkid)
            && let Some(d) = self.queued.pop_front()
        {
            self.wire.insert(pkid, d);
        }
    }

    /// The broker answered the message with this packet id (`Ok`: acknowledged). An unknown id (a message
    /// already failed by a lost connection) is ignored.
    pub(crate) fn resolve(&mut self, pkid: u16, result: Result<(), String>) {
        if let Some(d) = self.wire.remove(&pkid) {
            let _ = d.send(result);
        }
    }

    /// The connection is gone. `fresh`: QoS ≥ 1 publishes rumqttc moved from its request channel into
    /// its pending list (the front of `queued`).
    pub(crate) fn lost(&mut self, persistent: bool, fresh: usize) {
        if persistent {
            // The session resends what was on the wire and sends the rest; `connected` settles it.
            self.held = fresh.min(self.queued.len());
        } else {
            for (_, d) in self.wire.drain() {
                let _ = d.send(Err("MQTT connection lost before the PUBACK arrived".into()));
            }
            for d in self.queued.drain(..fresh.min(self.queued.len())) {
                let _ = d.send(Err(
                    "MQTT connection lost before the message was sent".into()
                ));
            }
            self.held = 0;
        }
    }

    /// A QoS ≥ 1 send, as [`Acks::send`] queues it; returns the receiving end of its result.
    #[cfg(test)]
    pub(crate) fn sent(&mut self) -> oneshot::Receiver<Result<(), String>> {
        let (tx, rx) = oneshot::channel();
        self.queued.push_back(tx);
        rx
    }

    /// Nothing waiting for the wire or an acknowledgement.
    #[cfg(test)]
    pub(crate) fn is_idle(&self) -> bool {
        self.queued.is_empty() && self.wire.is_empty()
    }

    /// A CONNACK: without a session nothing of the old connection will be acknowledged.
    pub(crate) fn connected(&mut self, session_present: bool) {
        if !session_present {
            for (_, d) in self.wire.drain() {
                let _ = d.send(Err(
                    "the MQTT broker did not keep the session: the message was not acknowledged"
                        .into(),
                ));
            }
            let held = self.held.min(self.queued.len());
            for d in self.queued.drain(..held) {
                let _ = d.send(Err(
                    "the MQTT broker did not keep the session: the message was not sent".into(),
                ));
            }
        }
        self.held = 0;
    }
}

/// Locks the tracker. A panic while holding the lock cannot leave it half-updated in a way that matters
/// more than stopping the bridge would.
pub(crate) fn lock(t: &StdMutex<Tracker>) -> MutexGuard<'_, Tracker> {
    t.lock().unwrap_or_else(|p| p.into_inner())
}

/// The sending half of a [`Tracker`]: hands out one [`AckFuture`] per sent message.
pub(crate) struct Acks {
    tracker: Arc<StdMutex<Tracker>>,
    /// Serializes sends so that `tracker.queued` has the order of the request channel.
    order: Mutex<()>,
}

impl Acks {
    /// The sending half and the tracker the event loop feeds.
    pub(crate) fn new() -> (Self, Arc<StdMutex<Tracker>>) {
        let tracker = Arc::new(StdMutex::new(Tracker::default()));
        let acks = Acks {
            tracker: tracker.clone(),
            order: Mutex::new(()),
        };
        (acks, tracker)
    }

    /// Runs `put` (which hands one PUBLISH to the client's request channel) and returns the future of its
    /// acknowledgement. `acked`: QoS ≥ 1; a QoS 0 message is done once the client took it.
    pub(crate) async fn send<F, E>(&self, acked: bool, put: F) -> anyhow::Result<AckFuture>
    where
        F: std::future::Future<Output = Result<(), E>>,
        E: std::fmt::Display,
    {
        let _order = self.order.lock().await;
        if !acked {
            put.await
                .map_err(|e| anyhow::anyhow!("MQTT publish: {e}"))?;
            return Ok(Box::pin(async { Ok(()) }));
        }
        let (tx, rx) = oneshot::channel();
        lock(&self.tracker).queued.push_back(tx);
        let mut unqueue = Unqueue {
            tracker: &self.tracker,
            armed: true,
        };
        put.await
            .map_err(|e| anyhow::anyhow!("MQTT publish: {e}"))?;
        unqueue.armed = false;
        Ok(Box::pin(async move {
            match tokio::time::timeout(ACK_TIMEOUT, rx).await {
                Ok(Ok(Ok(()))) => Ok(()),
                Ok(Ok(Err(why))) => Err(anyhow::anyhow!(why)),
                Ok(Err(_)) => anyhow::bail!("MQTT connection task stopped"),
                Err(_) => anyhow::bail!("no PUBACK from the MQTT broker in {ACK_TIMEOUT:?}"),
            }
        }))
    }
}

/// Removes the last queued sender unless disarmed (the send did not reach the request channel).
struct Unqueue<'a> {
    tracker: &'a StdMutex<Tracker>,
    armed: bool,
}

impl Drop for Unqueue<'_> {
    fn drop(&mut self) {
        if self.armed {
            lock(self.tracker).queued.pop_back();
        }
    }
}

/// Bytes of the Remaining Length field encoding `len` (MQTT §2.2.3).
fn remaining_length_bytes(len: usize) -> usize {
    match len {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    }
}

/// The size on the wire of a QoS ≥ 1 PUBLISH whose variable header (after the topic and packet id) and
/// payload have `rest` bytes: fixed header, topic length and name, packet id, `rest`.
pub(crate) fn publish_size(topic: &str, rest: usize) -> usize {
    let len = 2 + topic.len() + 2 + rest;
    1 + remaining_length_bytes(len) + len
}

/// The size of an MQTT 5 property block (its length field and `len` bytes of properties).
pub(crate) fn properties_size(len: usize) -> usize {
    remaining_length_bytes(len) + len
}

/// Refuses a message whose PUBLISH would be larger than `max` bytes.
pub(crate) fn check_packet(topic: &str, size: usize, max: usize) -> Result<(), String> {
    if size > max {
        return Err(format!(
            "a message of {size} bytes to {topic:?} exceeds the maximum MQTT packet size of {max} bytes"
        ));
    }
    Ok(())
}

/// An MQTT topic name a message can be published to: not empty, no wildcards, no NUL, at most 65,535 bytes.
pub(crate) fn check_topic(topic: &str) -> Result<(), String> {
    if topic.is_empty() || topic.len() > 65_535 {
        return Err(format!("{topic:?} is not a valid MQTT topic name (length)"));
    }
    if topic.contains(['+', '#', '\0']) {
        return Err(format!(
            "{topic:?} is not a valid MQTT topic name (wildcard or NUL)"
        ));
    }
    Ok(())
}

/// User name and password of the endpoint's auth. A token goes in the password slot with the site id
/// as the user name (the API's documented mapping).
pub(crate) fn credentials(c: &Connect<'_>) -> Option<(String, String)> {
    match &c.endpoint.auth {
        Auth::None => None,
        Auth::Token(t) => Some((c.cfg.site_id.clone(), t.expose().to_string())),
        Auth::UserPassword { username, password } => {
            Some((username.clone(), password.expose().to_string()))
        }
    }
}

/// The TLS transport of the endpoint; `None` for plain TCP.
pub(crate) fn transport(e: &EndpointConfig) -> Result<Option<Transport>, BridgeConfigError> {
    connect::mqtt::transport(&e.tls).map_err(|err| BridgeConfigError(format!("TLS: {err}")))
}

/// Connects the side in the background, in the endpoint's MQTT version.
pub async fn connect(c: Connect<'_>) -> anyhow::Result<Arc<dyn Side>> {
    match c.endpoint.mqtt_version {
        MqttVersion::V311 => v311::connect(c).await,
        MqttVersion::V5 => v5::connect(c).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rumqttc::QoS;

    #[tokio::test]
    async fn a_send_that_never_reached_the_client_leaves_no_sender_behind() {
        let (acks, tracker) = Acks::new();
        let refused = acks
            .send(true, async { Err::<(), _>("request channel closed") })
            .await;
        assert!(refused.is_err());
        let ok = acks
            .send(true, async { Ok::<(), String>(()) })
            .await
            .unwrap();
        {
            let mut t = lock(&tracker);
            assert_eq!(t.queued.len(), 1);
            t.on_wire(4);
            t.resolve(4, Ok(()));
        }
        ok.await.unwrap();
    }

    #[test]
    fn publish_size_matches_the_encoded_packet() {
        for len in [0, 100, 16_000, 16_370, 16_380, 2_097_140, MAX_PACKET] {
            let mut p = rumqttc::Publish::new("a/b", QoS::AtLeastOnce, vec![0u8; len]);
            p.pkid = 1;
            assert_eq!(publish_size("a/b", len), p.size(), "payload {len}");
        }
    }
}
