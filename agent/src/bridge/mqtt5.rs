//! MQTT 5 side of the bridge (`rumqttc::v5`), for endpoints with `mqttVersion: "5"`.
//!
//! Like the MQTT 3.1.1 side ([`super::mqtt`]): one connection per side, incoming publishes handed to the
//! bridge with their PUBACK as the [`SourceAck`](super::side::SourceAck) (manual acks: on the edge the
//! PUBACK goes out only once the spool's fsync covered the message), pipelined sends whose
//! [`AckFuture`] resolves on the broker's acknowledgement. What MQTT 5 adds:
//!
//! - **Session expiry.** The edge connects with Clean Start off *and* a Session Expiry Interval of
//!   [`EDGE_SESSION_EXPIRY`] (7 days). Without the interval an MQTT 5 broker discards the session when
//!   the connection closes, and everything the devices publish while the bridge is down would be lost.
//!   7 days outlasts any realistic outage of the bridge pod (a node lost over a long weekend, a stuck
//!   volume) while bounding what an abandoned session (a deleted or renamed BridgeLink) keeps queueing
//!   on the edge broker; `0xFFFFFFFF` (never) would hold it forever. The cloud connects with Clean Start
//!   on and no expiry: the spool is the cloud side's memory.
//! - **User properties.** Edge→cloud messages (`enrich`) carry `spec.headers` and `edge-site-id` as MQTT 5
//!   user properties on the PUBLISH.
//! - **Reason codes.** A PUBACK or PUBREC with a reason code ≥ 0x80 (0x87 Not authorized, 0x97 Quota
//!   exceeded, …) is not an acknowledgement: that message's [`AckFuture`] fails with the reason code and
//!   string, the forwarder keeps it in the spool and sends it again after a backoff. 0x10 No matching
//!   subscribers is success (the broker took the message).
//! - **Server limits.** rumqttc applies the CONNACK's Receive Maximum to the window of unacknowledged
//!   QoS ≥ 1 messages; a message larger than the CONNACK's Maximum Packet Size is refused by
//!   [`Side::send`] before it reaches the client (rumqttc would otherwise drop the whole connection).
//!
//! Acknowledgements are matched by packet id, not counted: each QoS ≥ 1 send queues a one-shot sender
//! in request order; when rumqttc puts a PUBLISH on the wire (its `Outgoing::Publish(pkid)` event, in
//! the same order) the front sender is filed under that packet id; the PUBACK/PUBCOMP (or the failing
//! PUBACK/PUBREC) with that id resolves it. A failure reason therefore fails exactly its own message, and
//! a lost connection fails what was on the wire and what rumqttc moved aside, while sends that are still
//! in the request channel keep their place for the next connection.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex as StdMutex, MutexGuard};
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use futures::future::BoxFuture;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{
    ConnAck, Filter, Packet, PubAckReason, PubCompReason, PubRecReason, Publish, PublishProperties,
    RetainForwardRule, SubscribeReasonCode,
};
use rumqttc::v5::{AsyncClient, ConnectionError, Event, EventLoop, MqttOptions, Request};
use rumqttc::{NetworkOptions, Outgoing, TlsConfiguration, Transport};
use tokio::sync::{Mutex, oneshot};

use super::config::{Auth, BridgeConfigError, EndpointConfig};
use super::mqtt::{ACK_TIMEOUT, MAX_PACKET, check_topic};
use super::side::{AckFuture, Connect, Inbound, Outbound, Role, Side};
use crate::adapters::Health;

/// Session Expiry Interval of the edge connection, in seconds (7 days; see the module docs).
pub const EDGE_SESSION_EXPIRY: u32 = 7 * 24 * 3600;

/// Upper bound of unacknowledged QoS ≥ 1 messages sent on one connection (the server's Receive Maximum
/// lowers it).
const INFLIGHT: u16 = 1000;

/// The result of one sent message, as the event loop learns it.
type Done = oneshot::Sender<Result<(), String>>;

/// Which sent message an acknowledgement belongs to.
#[derive(Default)]
struct Tracker {
    /// QoS ≥ 1 sends handed to the client, not yet on the wire, in request-channel order.
    queued: VecDeque<Done>,
    /// On the wire, by packet id, waiting for PUBACK / PUBCOMP.
    wire: HashMap<u16, Done>,
    /// Persistent session only: how many of `queued` (from the front) rumqttc moved into its pending list
    /// at the last disconnect. They are sent after a CONNACK with the session present and lost without.
    held: usize,
}

impl Tracker {
    /// Follows one event of the connection. Returns a reason when the connection must be dropped: a
    /// failed QoS 2 exchange leaves rumqttc 0.25 counting the message as in flight, which only a new
    /// connection resets.
    fn track(&mut self, ev: &Event) -> Option<String> {
        match ev {
            // Packet id 0: QoS 0, nothing to wait for. A packet id already on the wire: rumqttc resending
            // the session's unacknowledged messages after a reconnect.
            Event::Outgoing(Outgoing::Publish(pkid))
                if *pkid != 0 && !self.wire.contains_key(pkid) =>
            {
                if let Some(d) = self.queued.pop_front() {
                    self.wire.insert(*pkid, d);
                }
            }
            Event::Incoming(Packet::PubAck(a)) => {
                let (code, name) = puback_reason(a.reason);
                if let Some(d) = self.wire.remove(&a.pkid) {
                    let why = a.properties.as_ref().and_then(|p| p.reason_string.clone());
                    let _ = d.send(outcome("PUBACK", code, name, why));
                }
            }
            Event::Incoming(Packet::PubRec(r)) => {
                let (code, name) = pubrec_reason(r.reason);
                if code >= 0x80 {
                    if let Some(d) = self.wire.remove(&r.pkid) {
                        let why = r.properties.as_ref().and_then(|p| p.reason_string.clone());
                        let _ = d.send(outcome("PUBREC", code, name, why));
                    }
                    return Some(format!("PUBREC reason 0x{code:02x} {name}"));
                }
            }
            Event::Incoming(Packet::PubComp(c)) => {
                let failed = c.reason != PubCompReason::Success;
                if let Some(d) = self.wire.remove(&c.pkid) {
                    let _ = d.send(if failed {
                        Err(
                            "the MQTT broker answered PUBCOMP 0x92 Packet identifier not found"
                                .into(),
                        )
                    } else {
                        Ok(())
                    });
                }
                if failed {
                    return Some("PUBCOMP reason 0x92 Packet identifier not found".into());
                }
            }
            _ => {}
        }
        None
    }

    /// The connection is gone. `fresh`: QoS ≥ 1 publishes rumqttc moved from its request channel into
    /// its pending list (the front of `queued`).
    fn lost(&mut self, persistent: bool, fresh: usize) {
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

    /// A CONNACK: without a session nothing of the old connection will be acknowledged.
    fn connected(&mut self, session_present: bool) {
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

fn outcome(packet: &str, code: u8, name: &str, why: Option<String>) -> Result<(), String> {
    if code < 0x80 {
        return Ok(());
    }
    let why = why.map(|w| format!(": {w}")).unwrap_or_default();
    Err(format!(
        "the MQTT broker refused the message: {packet} reason 0x{code:02x} {name}{why}"
    ))
}

/// Reason code and name of a PUBACK (MQTT 5 §3.4.2.1).
fn puback_reason(r: PubAckReason) -> (u8, &'static str) {
    use PubAckReason::*;
    match r {
        Success => (0x00, "Success"),
        NoMatchingSubscribers => (0x10, "No matching subscribers"),
        UnspecifiedError => (0x80, "Unspecified error"),
        ImplementationSpecificError => (0x83, "Implementation specific error"),
        NotAuthorized => (0x87, "Not authorized"),
        TopicNameInvalid => (0x90, "Topic Name invalid"),
        PacketIdentifierInUse => (0x91, "Packet identifier in use"),
        QuotaExceeded => (0x97, "Quota exceeded"),
        PayloadFormatInvalid => (0x99, "Payload format invalid"),
    }
}

/// Reason code and name of a PUBREC (MQTT 5 §3.5.2.1).
fn pubrec_reason(r: PubRecReason) -> (u8, &'static str) {
    use PubRecReason::*;
    match r {
        Success => (0x00, "Success"),
        NoMatchingSubscribers => (0x10, "No matching subscribers"),
        UnspecifiedError => (0x80, "Unspecified error"),
        ImplementationSpecificError => (0x83, "Implementation specific error"),
        NotAuthorized => (0x87, "Not authorized"),
        TopicNameInvalid => (0x90, "Topic Name invalid"),
        PacketIdentifierInUse => (0x91, "Packet identifier in use"),
        QuotaExceeded => (0x97, "Quota exceeded"),
        PayloadFormatInvalid => (0x99, "Payload format invalid"),
    }
}

fn lock(t: &StdMutex<Tracker>) -> MutexGuard<'_, Tracker> {
    // A panic while holding the lock cannot leave the tracker half-updated in a way that matters more
    // than stopping the bridge would.
    t.lock().unwrap_or_else(|p| p.into_inner())
}

pub fn qos(q: u8) -> QoS {
    match q {
        0 => QoS::AtMostOnce,
        2 => QoS::ExactlyOnce,
        _ => QoS::AtLeastOnce,
    }
}

pub struct Mqtt5Side {
    client: AsyncClient,
    health: Arc<Health>,
    tracker: Arc<StdMutex<Tracker>>,
    /// Serializes sends so that `tracker.queued` has the order of the request channel.
    send_lock: Mutex<()>,
    /// The server's Maximum Packet Size from the last CONNACK (0: none given).
    max_packet: Arc<AtomicU32>,
    /// User properties of edge→cloud messages, and their encoded size.
    headers: Vec<(String, String)>,
    headers_len: usize,
}

fn options(c: &Connect<'_>) -> Result<MqttOptions, BridgeConfigError> {
    let e: &EndpointConfig = c.endpoint;
    let (host, port) = e.mqtt_host_port()?;
    let mut o = MqttOptions::new(c.client_id(), host, port);
    o.set_keep_alive(Duration::from_secs(15))
        .set_clean_start(c.role == Role::Cloud)
        .set_manual_acks(true)
        .set_outgoing_inflight_upper_limit(INFLIGHT)
        .set_max_packet_size(Some(MAX_PACKET as u32));
    if c.role == Role::Edge {
        o.set_session_expiry_interval(Some(EDGE_SESSION_EXPIRY));
    }
    // TCP_NODELAY: every PUBLISH and PUBACK is a small write (see the MQTT 3.1.1 side).
    let mut net = NetworkOptions::new();
    net.set_tcp_nodelay(true);
    o.set_network_options(net);
    match &e.auth {
        Auth::None => {}
        // A token goes in the password slot with the site id as the user name (the API's documented mapping).
        Auth::Token(t) => {
            o.set_credentials(c.cfg.site_id.clone(), t.expose());
        }
        Auth::UserPassword { username, password } => {
            o.set_credentials(username.clone(), password.expose());
        }
    }
    if e.tls.enabled {
        let cfg = crate::tls::client_config(&e.tls)
            .map_err(|err| BridgeConfigError(format!("TLS: {err}")))?;
        o.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(
            Arc::new(cfg),
        )));
    }
    Ok(o)
}

/// QoS ≥ 1 publishes that rumqttc took from the request channel but never sent (packet id not yet set).
fn fresh_in_pending(el: &EventLoop) -> usize {
    el.pending
        .iter()
        .filter(|r| matches!(r, Request::Publish(p) if p.qos != QoS::AtMostOnce && p.pkid == 0))
        .count()
}

fn topic_string(t: &Bytes) -> String {
    String::from_utf8(t.to_vec()).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into())
}

/// Connects in the background.
pub async fn connect(c: Connect<'_>) -> anyhow::Result<Arc<dyn Side>> {
    let opts = options(&c).context(c.role.as_str())?;
    let persistent = c.role == Role::Edge;
    let filters: Vec<Filter> = c
        .subscriptions
        .iter()
        .map(|s| Filter {
            path: s.pattern.to_mqtt(),
            qos: qos(s.qos),
            // Never receive what this connection published itself.
            nolocal: true,
            preserve_retain: false,
            // Subscribing again after every CONNACK (so that a changed rule set takes effect on a kept
            // session) must not replay retained messages each time.
            retain_forward_rule: RetainForwardRule::OnNewSubscribe,
        })
        .collect();
    let incoming = c.inbound;
    let (client, mut el) = AsyncClient::new(opts, 4096);
    let health = Arc::new(Health::default());
    let tracker = Arc::new(StdMutex::new(Tracker::default()));
    let max_packet = Arc::new(AtomicU32::new(0));
    // Incremented by every CONNACK without a session: acknowledgements of messages received before it
    // would name packet ids of a session that no longer exists.
    let session = Arc::new(AtomicU64::new(0));
    let h = health.clone();
    let sub = client.clone();
    let t = tracker.clone();
    let mp = max_packet.clone();
    tokio::spawn(async move {
        let mut attempt = 0u32;
        loop {
            let why = match el.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                    on_connack(&ack, &t, &mp, &session);
                    attempt = 0;
                    h.set_connected();
                    if !filters.is_empty() {
                        // Not awaited here: the request channel may be full of sends, and only this task
                        // empties it.
                        let client = sub.clone();
                        let filters = filters.clone();
                        let h = h.clone();
                        tokio::spawn(async move {
                            if let Err(e) = client.subscribe_many(filters).await {
                                h.note(format!("cannot subscribe: {e}"));
                            }
                        });
                    }
                    continue;
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    if incoming.send(inbound(p, &sub, &session)).await.is_err() {
                        return;
                    }
                    continue;
                }
                Ok(Event::Incoming(Packet::SubAck(s))) => {
                    let refused: Vec<String> = s
                        .return_codes
                        .iter()
                        .filter(|r| !matches!(r, SubscribeReasonCode::Success(_)))
                        .map(|r| format!("{r:?}"))
                        .collect();
                    if !refused.is_empty() {
                        h.note(format!(
                            "the MQTT broker refused a subscription: {}",
                            refused.join(", ")
                        ));
                    }
                    continue;
                }
                Ok(ev) => match lock(&t).track(&ev) {
                    None => continue,
                    Some(why) => {
                        // Drop the connection (rumqttc moves its state aside as for a network error).
                        el.clean();
                        format!("MQTT connection reset after {why}")
                    }
                },
                Err(e) => match &e {
                    ConnectionError::ConnectionRefused(code) => {
                        format!("the MQTT broker refused the connection: {code:?}")
                    }
                    other => format!("MQTT connection error: {other}"),
                },
            };
            h.set_down(why);
            // Events rumqttc buffered before the error belong to the old connection.
            let mut stale = Vec::new();
            {
                let mut tr = lock(&t);
                while let Some(ev) = el.state.events.pop_front() {
                    match ev {
                        Event::Incoming(Packet::Publish(p)) => stale.push(p),
                        ev => {
                            tr.track(&ev);
                        }
                    }
                }
                let fresh = fresh_in_pending(&el);
                tr.lost(persistent, fresh);
                if !persistent {
                    // Nothing unsent or unacknowledged is replayed by the client: the spool does it.
                    el.pending.clear();
                }
            }
            for p in stale {
                if incoming.send(inbound(p, &sub, &session)).await.is_err() {
                    return;
                }
            }
            tokio::time::sleep(super::backoff(attempt)).await;
            attempt = attempt.saturating_add(1);
        }
    });
    let headers = c.cfg.headers.clone();
    let headers_len = headers.iter().map(|(k, v)| 5 + k.len() + v.len()).sum();
    Ok(Arc::new(Mqtt5Side {
        client,
        health,
        tracker,
        send_lock: Mutex::new(()),
        max_packet,
        headers,
        headers_len,
    }))
}

fn on_connack(ack: &ConnAck, t: &StdMutex<Tracker>, max_packet: &AtomicU32, session: &AtomicU64) {
    let max = ack
        .properties
        .as_ref()
        .and_then(|p| p.max_packet_size)
        .unwrap_or(0);
    max_packet.store(max, Ordering::SeqCst);
    if !ack.session_present {
        session.fetch_add(1, Ordering::SeqCst);
    }
    lock(t).connected(ack.session_present);
}

/// A received publish with its acknowledgement (PUBACK for QoS 1, PUBREC for QoS 2).
fn inbound(p: Publish, client: &AsyncClient, session: &Arc<AtomicU64>) -> Inbound {
    let ack = (p.qos != QoS::AtMostOnce).then(|| {
        let client = client.clone();
        let session = session.clone();
        let epoch = session.load(Ordering::SeqCst);
        // The acknowledgement needs only the packet id and QoS: keep no copy of the payload.
        let mut a = Publish::new("", p.qos, Bytes::new(), None);
        a.pkid = p.pkid;
        Box::pin(async move {
            if session.load(Ordering::SeqCst) == epoch {
                let _ = client.ack(&a).await;
            }
        }) as BoxFuture<'static, ()>
    });
    Inbound {
        topic: topic_string(&p.topic),
        payload: p.payload,
        ack,
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

impl Mqtt5Side {
    /// The encoded size of the PUBLISH when it may come near the server's limit, checked against it.
    fn check_size(
        &self,
        m: &Outbound,
        q: QoS,
        props: &Option<PublishProperties>,
    ) -> anyhow::Result<()> {
        let max = self.max_packet.load(Ordering::SeqCst) as usize;
        if max == 0 || m.topic.len() + m.payload.len() + self.headers_len + 16 < max {
            return Ok(());
        }
        let mut p = Publish::new(m.topic.clone(), q, m.payload.clone(), props.clone());
        p.pkid = 1;
        let size = p.size();
        if size > max {
            anyhow::bail!(
                "a message of {size} bytes to {:?} exceeds the MQTT broker's maximum packet size of {max} bytes",
                m.topic
            );
        }
        Ok(())
    }
}

impl Side for Mqtt5Side {
    fn health(&self) -> Arc<Health> {
        self.health.clone()
    }

    fn check_topic(&self, topic: &str) -> Result<(), String> {
        check_topic(topic)
    }

    fn send(&self, m: Outbound) -> BoxFuture<'_, anyhow::Result<AckFuture>> {
        Box::pin(async move {
            let q = qos(m.qos);
            let props = (m.enrich && !self.headers.is_empty()).then(|| PublishProperties {
                user_properties: self.headers.clone(),
                ..Default::default()
            });
            self.check_size(&m, q, &props)?;
            let _order = self.send_lock.lock().await;
            let put = |client: AsyncClient| async move {
                match props {
                    Some(p) => {
                        client
                            .publish_bytes_with_properties(m.topic, q, false, m.payload, p)
                            .await
                    }
                    None => client.publish_bytes(m.topic, q, false, m.payload).await,
                }
            };
            if q == QoS::AtMostOnce {
                put(self.client.clone())
                    .await
                    .map_err(|e| anyhow::anyhow!("MQTT publish: {e}"))?;
                return Ok(Box::pin(async { Ok(()) }) as AckFuture);
            }
            let (tx, rx) = oneshot::channel();
            lock(&self.tracker).queued.push_back(tx);
            let mut unqueue = Unqueue {
                tracker: &self.tracker,
                armed: true,
            };
            put(self.client.clone())
                .await
                .map_err(|e| anyhow::anyhow!("MQTT publish: {e}"))?;
            unqueue.armed = false;
            Ok(Box::pin(async move {
                match tokio::time::timeout(ACK_TIMEOUT, rx).await {
                    Ok(Ok(Ok(()))) => Ok(()),
                    Ok(Ok(Err(why))) => Err(anyhow::anyhow!(why)),
                    Ok(Err(_)) => anyhow::bail!("MQTT connection task stopped"),
                    Err(_) => anyhow::bail!("no PUBACK from the MQTT broker in {ACK_TIMEOUT:?}"),
                }
            }) as AckFuture)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rumqttc::v5::mqttbytes::v5::{PubAck, PubAckProperties, PubComp, PubRec};

    fn sent(t: &mut Tracker) -> oneshot::Receiver<Result<(), String>> {
        let (tx, rx) = oneshot::channel();
        t.queued.push_back(tx);
        rx
    }

    fn on_wire(t: &mut Tracker, pkid: u16) {
        assert!(t.track(&Event::Outgoing(Outgoing::Publish(pkid))).is_none());
    }

    fn puback(pkid: u16, reason: PubAckReason) -> Event {
        Event::Incoming(Packet::PubAck(PubAck {
            pkid,
            reason,
            properties: None,
        }))
    }

    fn result(rx: &mut oneshot::Receiver<Result<(), String>>) -> Option<Result<(), String>> {
        rx.try_recv().ok()
    }

    #[test]
    fn a_failure_reason_fails_exactly_its_own_message() {
        let mut t = Tracker::default();
        let mut rx: Vec<_> = (0..4).map(|_| sent(&mut t)).collect();
        for pkid in 1..=4 {
            on_wire(&mut t, pkid);
        }
        t.track(&puback(1, PubAckReason::Success));
        t.track(&puback(2, PubAckReason::NoMatchingSubscribers));
        t.track(&Event::Incoming(Packet::PubAck(PubAck {
            pkid: 3,
            reason: PubAckReason::NotAuthorized,
            properties: Some(PubAckProperties {
                reason_string: Some("ACL".into()),
                user_properties: vec![],
            }),
        })));
        t.track(&puback(4, PubAckReason::QuotaExceeded));
        assert_eq!(result(&mut rx[0]), Some(Ok(())));
        assert_eq!(result(&mut rx[1]), Some(Ok(())), "0x10 is a success");
        let e = result(&mut rx[2]).unwrap().unwrap_err();
        assert!(e.contains("0x87 Not authorized: ACL"), "{e}");
        let e = result(&mut rx[3]).unwrap().unwrap_err();
        assert!(e.contains("0x97 Quota exceeded"), "{e}");
        assert!(t.wire.is_empty() && t.queued.is_empty());
    }

    #[test]
    fn qos0_and_resent_packet_ids_do_not_take_a_queued_sender() {
        let mut t = Tracker::default();
        let mut a = sent(&mut t);
        on_wire(&mut t, 7);
        let mut b = sent(&mut t);
        on_wire(&mut t, 0); // a QoS 0 publish
        on_wire(&mut t, 7); // the session resending 7 after a reconnect
        assert_eq!(t.queued.len(), 1, "b is still waiting for the wire");
        on_wire(&mut t, 8);
        t.track(&puback(8, PubAckReason::Success));
        assert_eq!(result(&mut b), Some(Ok(())));
        assert_eq!(result(&mut a), None);
        t.track(&puback(7, PubAckReason::Success));
        assert_eq!(result(&mut a), Some(Ok(())));
    }

    #[test]
    fn a_failed_pubrec_fails_its_message_and_resets_the_connection() {
        let mut t = Tracker::default();
        let mut a = sent(&mut t);
        let mut b = sent(&mut t);
        on_wire(&mut t, 1);
        on_wire(&mut t, 2);
        let ok = Event::Incoming(Packet::PubRec(PubRec::new(1, None)));
        assert!(t.track(&ok).is_none());
        assert_eq!(result(&mut a), None, "QoS 2 completes with PUBCOMP");
        let mut refused = PubRec::new(2, None);
        refused.reason = PubRecReason::NotAuthorized;
        let reset = t.track(&Event::Incoming(Packet::PubRec(refused)));
        assert!(reset.unwrap().contains("0x87"));
        assert!(
            result(&mut b)
                .unwrap()
                .unwrap_err()
                .contains("PUBREC reason 0x87")
        );
        t.track(&Event::Incoming(Packet::PubComp(PubComp::new(1, None))));
        assert_eq!(result(&mut a), Some(Ok(())));
    }

    #[test]
    fn a_lost_clean_connection_fails_what_was_sent_and_keeps_what_is_still_queued() {
        let mut t = Tracker::default();
        let mut a = sent(&mut t); // on the wire
        on_wire(&mut t, 1);
        let mut b = sent(&mut t); // moved into rumqttc's pending list
        let mut c = sent(&mut t); // still in the request channel
        t.lost(false, 1);
        assert!(result(&mut a).unwrap().is_err());
        assert!(result(&mut b).unwrap().is_err());
        assert_eq!(result(&mut c), None);
        t.connected(false);
        on_wire(&mut t, 1);
        t.track(&puback(1, PubAckReason::Success));
        assert_eq!(result(&mut c), Some(Ok(())));
    }

    #[test]
    fn a_persistent_session_keeps_its_messages_unless_the_broker_lost_it() {
        let mut t = Tracker::default();
        let mut a = sent(&mut t);
        on_wire(&mut t, 1);
        let mut b = sent(&mut t);
        t.lost(true, 1);
        t.connected(true);
        on_wire(&mut t, 1); // resent
        on_wire(&mut t, 2); // b, sent now
        t.track(&puback(1, PubAckReason::Success));
        t.track(&puback(2, PubAckReason::Success));
        assert_eq!(result(&mut a), Some(Ok(())));
        assert_eq!(result(&mut b), Some(Ok(())));

        let mut c = sent(&mut t);
        on_wire(&mut t, 3);
        let mut d = sent(&mut t);
        let mut e = sent(&mut t);
        t.lost(true, 1);
        t.connected(false);
        assert!(result(&mut c).unwrap().is_err());
        assert!(result(&mut d).unwrap().is_err());
        assert_eq!(result(&mut e), None, "still in the request channel");
    }
}
