//! MQTT 3.1.1 side of the bridge (rumqttc).
//!
//! One connection per side. It subscribes to the rule filters whose source is this side (again after
//! every CONNACK without a session) and hands incoming publishes to the bridge with their PUBACK as the
//! [`SourceAck`](super::side::SourceAck) (`set_manual_acks`: on the edge the PUBACK goes out only once the
//! message is durable in the spool). The edge session is persistent (clean session off, a client id
//! stable per BridgeLink) so the broker keeps what arrives while the bridge is down.
//!
//! Sending is pipelined: [`Side::send`] queues the PUBLISH and returns a future for its PUBACK (PUBCOMP
//! at QoS 2). Acknowledgements are matched to messages by packet id with the [`Tracker`] this module
//! shares with the MQTT 5 side: counting them is not enough, because after a reconnect the client sends
//! what was still in its request channel and the persistent edge session resends what was never
//! acknowledged, and their PUBACKs would count towards newer messages.
//! MQTT 3.1.1 has no headers: edge→cloud messages to an MQTT 3.1.1 cloud carry the payload unchanged and
//! `headers`/`edge-site-id` are not transmitted (put the site in the `to` pattern, or use MQTT 5).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex as StdMutex, MutexGuard};
use std::time::Duration;

use anyhow::Context as _;
use futures::future::BoxFuture;
use rumqttc::{
    AsyncClient, ConnectReturnCode, Event, EventLoop, MqttOptions, NetworkOptions, Outgoing,
    Packet, QoS, Request, Transport,
};
use tokio::sync::{Mutex, oneshot};

use super::config::{Auth, BridgeConfigError, EndpointConfig};
use super::side::{AckFuture, Connect, Inbound, Outbound, Role, Side};
use crate::connect::mqtt::qos;
use crate::connect::{self, Health};

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

pub struct MqttSide {
    client: AsyncClient,
    health: Arc<Health>,
    acks: Acks,
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

fn options(c: &Connect<'_>) -> Result<MqttOptions, BridgeConfigError> {
    let e: &EndpointConfig = c.endpoint;
    let (host, port) = e.mqtt_host_port()?;
    let mut o = connect::mqtt::options(c.client_id(), host, port, credentials(c), &e.tls)
        .map_err(|err| BridgeConfigError(format!("TLS: {err}")))?;
    o.set_clean_session(c.role == Role::Cloud)
        .set_manual_acks(true)
        .set_inflight(1000);
    Ok(o)
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

/// Connects in the background.
pub async fn connect(c: Connect<'_>) -> anyhow::Result<Arc<dyn Side>> {
    let opts = options(&c).context(c.role.as_str())?;
    let persistent = c.role == Role::Edge;
    let filters: Vec<(String, QoS)> = c
        .subscriptions
        .iter()
        .map(|s| (s.pattern.to_mqtt(), qos(s.qos)))
        .collect();
    let incoming = c.inbound;
    let (client, mut el) = AsyncClient::new(opts, 4096);
    // TCP_NODELAY: every PUBLISH and PUBACK is a small write. With Nagle on, a write waits for the ACK
    // of the previous one, which the peer delays (delayed ACK, 40 ms on Linux) when it has nothing to
    // send back: that added 40-80 ms per hop under steady load.
    let mut net = NetworkOptions::new();
    net.set_tcp_nodelay(true);
    el.set_network_options(net);
    let health = Arc::new(Health::default());
    let (acks, tracker) = Acks::new();
    let h = health.clone();
    let sub = client.clone();
    tokio::spawn(async move {
        let mut backoff = crate::retry::BRIDGE.backoff();
        loop {
            let e = match el.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                    if ack.code == ConnectReturnCode::Success {
                        backoff.reset();
                        lock(&tracker).connected(ack.session_present);
                        h.set_connected();
                        if !ack.session_present {
                            for (f, q) in &filters {
                                if let Err(e) = sub.try_subscribe(f.clone(), *q) {
                                    h.note(format!("cannot subscribe to {f}: {e}"));
                                }
                            }
                        }
                    }
                    continue;
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    if incoming.send(inbound(p, &sub)).await.is_err() {
                        return;
                    }
                    continue;
                }
                Ok(ev) => {
                    track(&mut lock(&tracker), &ev);
                    continue;
                }
                Err(e) => e,
            };
            h.set_down(connect::mqtt::describe(&e));
            // Events rumqttc buffered before the error belong to the old connection: acknowledgements
            // count before the tracker gives up on what is still waiting.
            let mut stale = Vec::new();
            {
                let mut tr = lock(&tracker);
                while let Some(ev) = el.state.events.pop_front() {
                    match ev {
                        Event::Incoming(Packet::Publish(p)) => stale.push(p),
                        ev => track(&mut tr, &ev),
                    }
                }
                tr.lost(persistent, fresh_in_pending(&el));
                if !persistent {
                    // Nothing unsent or unacknowledged is replayed by the client: the spool does it.
                    el.pending.clear();
                }
            }
            for p in stale {
                if incoming.send(inbound(p, &sub)).await.is_err() {
                    return;
                }
            }
            backoff.wait().await;
        }
    });
    Ok(Arc::new(MqttSide {
        client,
        health,
        acks,
    }))
}

/// Feeds one event of the connection to the tracker: PUBLISHes put on the wire, PUBACKs (QoS 1) and
/// PUBCOMPs (QoS 2) received.
fn track(t: &mut Tracker, ev: &Event) {
    match ev {
        Event::Outgoing(Outgoing::Publish(pkid)) => t.on_wire(*pkid),
        Event::Incoming(Packet::PubAck(a)) => t.resolve(a.pkid, Ok(())),
        Event::Incoming(Packet::PubComp(c)) => t.resolve(c.pkid, Ok(())),
        _ => {}
    }
}

/// QoS ≥ 1 publishes that rumqttc took from the request channel but never sent (packet id not yet set).
fn fresh_in_pending(el: &EventLoop) -> usize {
    el.pending
        .iter()
        .filter(|r| matches!(r, Request::Publish(p) if p.qos != QoS::AtMostOnce && p.pkid == 0))
        .count()
}

/// A received publish with its PUBACK (PUBREC at QoS 2) as the bridge's acknowledgement.
fn inbound(p: rumqttc::Publish, client: &AsyncClient) -> Inbound {
    let ack = (p.qos != QoS::AtMostOnce).then(|| {
        let client = client.clone();
        // The acknowledgement needs only the packet id: keep no copy of the payload.
        let mut a = rumqttc::Publish::new("", p.qos, Vec::new());
        a.pkid = p.pkid;
        Box::pin(async move {
            let _ = client.ack(&a).await;
        }) as BoxFuture<'static, ()>
    });
    Inbound {
        topic: p.topic,
        payload: p.payload,
        ack,
    }
}

impl Side for MqttSide {
    fn health(&self) -> Arc<Health> {
        self.health.clone()
    }

    fn check_topic(&self, topic: &str) -> Result<(), String> {
        check_topic(topic)
    }

    /// The client refuses to write a packet larger than [`MAX_PACKET`] and drops the connection instead.
    fn check_size(&self, topic: &str, payload_len: usize) -> Result<(), String> {
        check_packet(topic, publish_size(topic, payload_len), MAX_PACKET)
    }

    fn send(&self, m: Outbound) -> BoxFuture<'_, anyhow::Result<AckFuture>> {
        Box::pin(async move {
            let q = qos(m.qos);
            self.acks
                .send(
                    q != QoS::AtMostOnce,
                    self.client.publish_bytes(m.topic, q, false, m.payload),
                )
                .await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rumqttc::{PubAck, PubComp};

    fn sent(t: &mut Tracker) -> oneshot::Receiver<Result<(), String>> {
        t.sent()
    }

    fn on_wire(t: &mut Tracker, pkid: u16) {
        track(t, &Event::Outgoing(Outgoing::Publish(pkid)));
    }

    fn puback(t: &mut Tracker, pkid: u16) {
        track(t, &Event::Incoming(Packet::PubAck(PubAck::new(pkid))));
    }

    fn result(rx: &mut oneshot::Receiver<Result<(), String>>) -> Option<Result<(), String>> {
        rx.try_recv().ok()
    }

    /// Review finding (a): a send still in the request channel when the connection dropped goes out on
    /// the new connection first. Its PUBACK must not acknowledge the first message sent after the
    /// reconnect, which a second disconnect then loses.
    #[test]
    fn a_stale_puback_after_a_reconnect_does_not_acknowledge_a_newer_message() {
        let mut t = Tracker::default();
        let mut a = sent(&mut t);
        on_wire(&mut t, 1);
        let mut stale = sent(&mut t); // in the request channel, not drained by the disconnect
        t.lost(false, 0);
        assert!(result(&mut a).unwrap().is_err(), "a was on the wire");
        assert_eq!(result(&mut stale), None);
        t.connected(false);
        let mut newer = sent(&mut t);
        on_wire(&mut t, 2); // the stale request, first on the new connection
        on_wire(&mut t, 3); // the newer message
        puback(&mut t, 2);
        assert_eq!(result(&mut stale), Some(Ok(())));
        assert_eq!(
            result(&mut newer),
            None,
            "the stale message's PUBACK acknowledged a newer message"
        );
        t.lost(false, 0);
        assert!(result(&mut newer).unwrap().is_err());
    }

    /// Review finding (b): on the persistent edge session, PUBACKs of messages the session resends
    /// acknowledge only those, not the commands sent after the reconnect.
    #[test]
    fn pubacks_of_resent_session_messages_do_not_acknowledge_new_sends() {
        let mut t = Tracker::default();
        let mut old: Vec<_> = (0..3).map(|_| sent(&mut t)).collect();
        for pkid in 5..8 {
            on_wire(&mut t, pkid);
        }
        let mut moved = sent(&mut t); // drained into rumqttc's pending list by the disconnect
        t.lost(true, 1);
        t.connected(true);
        let mut new = sent(&mut t);
        for pkid in 5..8 {
            on_wire(&mut t, pkid); // resent by the session: already tracked
        }
        on_wire(&mut t, 8); // `moved`
        on_wire(&mut t, 9); // `new`
        for pkid in 5..8 {
            puback(&mut t, pkid);
        }
        for rx in &mut old {
            assert_eq!(result(rx), Some(Ok(())));
        }
        assert_eq!(result(&mut moved), None);
        assert_eq!(
            result(&mut new),
            None,
            "acknowledged by a resent message's PUBACK"
        );
        puback(&mut t, 9);
        assert_eq!(result(&mut new), Some(Ok(())));
        assert_eq!(result(&mut moved), None);
        track(&mut t, &Event::Incoming(Packet::PubComp(PubComp::new(8))));
        assert_eq!(result(&mut moved), Some(Ok(())));
    }

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

    #[test]
    fn a_packet_over_the_client_limit_is_refused_before_spooling() {
        let (client, _el) = AsyncClient::new(MqttOptions::new("t", "127.0.0.1", 1), 1);
        let (acks, _) = Acks::new();
        let side = MqttSide {
            client,
            health: Arc::new(Health::default()),
            acks,
        };
        // Fixed header byte, 4-byte Remaining Length, topic length and name, packet id.
        let limit = MAX_PACKET - (1 + 4 + 2 + 3 + 2);
        assert!(side.check_size("t/x", limit).is_ok());
        let e = side.check_size("t/x", limit + 1).unwrap_err();
        assert!(e.contains(&format!("{}", MAX_PACKET)), "{e}");
    }
}
