//! MQTT 5 side of the bridge (`rumqttc::v5`), for endpoints with `mqttVersion: "5"`.
//!
//! Like the MQTT 3.1.1 side ([`super::v311`]): one connection per side, incoming publishes handed to the
//! bridge with their PUBACK as the [`SourceAck`](crate::bridge::side::SourceAck) (manual acks: on the edge the
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
//!   QoS ≥ 1 messages. A message whose PUBLISH would exceed the CONNACK's Maximum Packet Size (or
//!   [`MAX_PACKET`]) is refused before it is spooled ([`Side::check_size`]): counted as refused, the edge
//!   acknowledged, the messages after it go on. [`Side::send`] checks again against the limit of the
//!   current connection, because rumqttc would otherwise drop the whole connection: a message spooled
//!   before the first CONNACK or before the server lowered its limit fails its send every time, and the
//!   forwarder retries it (with backoff, counted in `cloud_errors`) until the limit allows it again.
//!
//! Acknowledgements are matched by packet id with the tracker shared with the MQTT 3.1.1 side
//! ([`super::Tracker`]); what MQTT 5 adds is the reason code: a failure reason fails exactly its
//! own message.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex as StdMutex};

use anyhow::Context as _;
use bytes::Bytes;
use futures::future::BoxFuture;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{
    ConnAck, Filter, Packet, PubAckReason, PubCompReason, PubRecReason, Publish, PublishProperties,
    RetainForwardRule, SubscribeReasonCode,
};
use rumqttc::v5::{AsyncClient, Event, EventLoop, MqttOptions, Request};
use rumqttc::{NetworkOptions, Outgoing};

use super::{
    Acks, MAX_PACKET, Tracker, check_packet, check_topic, credentials, lock, properties_size,
    publish_size, transport,
};
use crate::bridge::Connect;
use crate::bridge::config::{BridgeConfigError, EndpointConfig};
use crate::bridge::side::{AckFuture, Inbound, Outbound, Packet as Delivered, Role, Side};
use crate::connect::mqtt::qos_v5 as qos;
use crate::connect::{self, Health};

/// Session Expiry Interval of the edge connection, in seconds (7 days; see the module docs).
pub const EDGE_SESSION_EXPIRY: u32 = 7 * 24 * 3600;

/// Upper bound of unacknowledged QoS ≥ 1 messages sent on one connection (the server's Receive Maximum
/// lowers it).
const INFLIGHT: u16 = 1000;

/// Feeds one event of the connection to the tracker. Returns a reason when the connection must be
/// dropped: a failed QoS 2 exchange leaves rumqttc 0.25 counting the message as in flight, which only a
/// new connection resets.
fn track(t: &mut Tracker, ev: &Event) -> Option<String> {
    match ev {
        Event::Outgoing(Outgoing::Publish(pkid)) => t.on_wire(*pkid),
        Event::Incoming(Packet::PubAck(a)) => {
            let (code, name) = puback_reason(a.reason);
            let why = a.properties.as_ref().and_then(|p| p.reason_string.clone());
            t.resolve(a.pkid, outcome("PUBACK", code, name, why));
        }
        Event::Incoming(Packet::PubRec(r)) => {
            let (code, name) = pubrec_reason(r.reason);
            if code >= 0x80 {
                let why = r.properties.as_ref().and_then(|p| p.reason_string.clone());
                t.resolve(r.pkid, outcome("PUBREC", code, name, why));
                return Some(format!("PUBREC reason 0x{code:02x} {name}"));
            }
        }
        Event::Incoming(Packet::PubComp(c)) => {
            if c.reason != PubCompReason::Success {
                let why = "PUBCOMP reason 0x92 Packet identifier not found";
                t.resolve(c.pkid, Err(format!("the MQTT broker answered {why}")));
                return Some(why.into());
            }
            t.resolve(c.pkid, Ok(()));
        }
        _ => {}
    }
    None
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

pub struct Mqtt5Side {
    client: AsyncClient,
    health: Arc<Health>,
    acks: Acks,
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
    o.set_keep_alive(connect::mqtt::KEEP_ALIVE)
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
    if let Some((user, password)) = credentials(c) {
        o.set_credentials(user, password);
    }
    if let Some(t) = transport(e)? {
        o.set_transport(t);
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
    let (acks, tracker) = Acks::new();
    let max_packet = Arc::new(AtomicU32::new(0));
    // Incremented by every CONNACK without a session: acknowledgements of messages received before it
    // would name packet ids of a session that no longer exists.
    let session = Arc::new(AtomicU64::new(0));
    let h = health.clone();
    let sub = client.clone();
    let t = tracker.clone();
    let mp = max_packet.clone();
    tokio::spawn(async move {
        let mut backoff = crate::retry::BRIDGE.backoff();
        loop {
            let why = match el.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                    on_connack(&ack, &t, &mp, &session);
                    backoff.reset();
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
                Ok(ev) => match track(&mut lock(&t), &ev) {
                    None => continue,
                    Some(why) => {
                        // Drop the connection (rumqttc moves its state aside as for a network error).
                        el.clean();
                        format!("MQTT connection reset after {why}")
                    }
                },
                Err(e) => connect::mqtt::describe_v5(&e),
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
                            track(&mut tr, &ev);
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
            backoff.wait().await;
        }
    });
    let headers = c.cfg.headers.clone();
    let headers_len = headers.iter().map(|(k, v)| 5 + k.len() + v.len()).sum();
    Ok(Arc::new(Mqtt5Side {
        client,
        health,
        acks,
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
        packet: (p.qos != QoS::AtMostOnce).then_some(Delivered {
            id: p.pkid,
            dup: p.dup,
        }),
        topic: topic_string(&p.topic),
        payload: p.payload,
        ack,
    }
}

impl Mqtt5Side {
    /// The largest PUBLISH this connection may send: the server's Maximum Packet Size from the last
    /// CONNACK (none before the first one) and [`MAX_PACKET`].
    fn max_packet(&self) -> usize {
        match self.max_packet.load(Ordering::SeqCst) {
            0 => MAX_PACKET,
            n => MAX_PACKET.min(n as usize),
        }
    }

    /// The size on the wire of a QoS ≥ 1 PUBLISH carrying `props` bytes of properties.
    fn size(topic: &str, payload_len: usize, props: usize) -> usize {
        publish_size(topic, properties_size(props) + payload_len)
    }
}

impl Side for Mqtt5Side {
    fn health(&self) -> Arc<Health> {
        self.health.clone()
    }

    fn check_topic(&self, topic: &str) -> Result<(), String> {
        check_topic(topic)
    }

    /// Edge→cloud messages carry the bridge's user properties: they count.
    fn check_size(&self, topic: &str, payload_len: usize) -> Result<(), String> {
        let size = Self::size(topic, payload_len, self.headers_len);
        check_packet(topic, size, self.max_packet())
    }

    fn send(&self, m: Outbound) -> BoxFuture<'_, anyhow::Result<AckFuture>> {
        Box::pin(async move {
            let q = qos(m.qos);
            let props = (m.enrich && !self.headers.is_empty()).then(|| PublishProperties {
                user_properties: self.headers.clone(),
                ..Default::default()
            });
            // The server may have lowered its limit since the message was spooled: rumqttc would drop
            // the connection. The forwarder retries (see the module docs).
            let props_len = if props.is_some() { self.headers_len } else { 0 };
            let size = Self::size(&m.topic, m.payload.len(), props_len);
            check_packet(&m.topic, size, self.max_packet()).map_err(|e| anyhow::anyhow!(e))?;
            let client = &self.client;
            let put = async move {
                match props {
                    Some(p) => {
                        client
                            .publish_bytes_with_properties(m.topic, q, false, m.payload, p)
                            .await
                    }
                    None => client.publish_bytes(m.topic, q, false, m.payload).await,
                }
            };
            self.acks.send(q != QoS::AtMostOnce, put).await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rumqttc::v5::mqttbytes::v5::{PubAck, PubAckProperties, PubComp, PubRec};
    use tokio::sync::oneshot;

    fn sent(t: &mut Tracker) -> oneshot::Receiver<Result<(), String>> {
        t.sent()
    }

    fn on_wire(t: &mut Tracker, pkid: u16) {
        assert!(track(t, &Event::Outgoing(Outgoing::Publish(pkid))).is_none());
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
        track(&mut t, &puback(1, PubAckReason::Success));
        track(&mut t, &puback(2, PubAckReason::NoMatchingSubscribers));
        track(
            &mut t,
            &Event::Incoming(Packet::PubAck(PubAck {
                pkid: 3,
                reason: PubAckReason::NotAuthorized,
                properties: Some(PubAckProperties {
                    reason_string: Some("ACL".into()),
                    user_properties: vec![],
                }),
            })),
        );
        track(&mut t, &puback(4, PubAckReason::QuotaExceeded));
        assert_eq!(result(&mut rx[0]), Some(Ok(())));
        assert_eq!(result(&mut rx[1]), Some(Ok(())), "0x10 is a success");
        let e = result(&mut rx[2]).unwrap().unwrap_err();
        assert!(e.contains("0x87 Not authorized: ACL"), "{e}");
        let e = result(&mut rx[3]).unwrap().unwrap_err();
        assert!(e.contains("0x97 Quota exceeded"), "{e}");
        assert!(t.is_idle());
    }

    #[test]
    fn qos0_and_resent_packet_ids_do_not_take_a_queued_sender() {
        let mut t = Tracker::default();
        let mut a = sent(&mut t);
        on_wire(&mut t, 7);
        let mut b = sent(&mut t);
        on_wire(&mut t, 0); // a QoS 0 publish
        on_wire(&mut t, 7); // the session resending 7 after a reconnect
        assert_eq!(result(&mut b), None, "b is still waiting for the wire");
        on_wire(&mut t, 8);
        track(&mut t, &puback(8, PubAckReason::Success));
        assert_eq!(result(&mut b), Some(Ok(())));
        assert_eq!(result(&mut a), None);
        track(&mut t, &puback(7, PubAckReason::Success));
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
        assert!(track(&mut t, &ok).is_none());
        assert_eq!(result(&mut a), None, "QoS 2 completes with PUBCOMP");
        let mut refused = PubRec::new(2, None);
        refused.reason = PubRecReason::NotAuthorized;
        let reset = track(&mut t, &Event::Incoming(Packet::PubRec(refused)));
        assert!(reset.unwrap().contains("0x87"));
        assert!(
            result(&mut b)
                .unwrap()
                .unwrap_err()
                .contains("PUBREC reason 0x87")
        );
        track(
            &mut t,
            &Event::Incoming(Packet::PubComp(PubComp::new(1, None))),
        );
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
        track(&mut t, &puback(1, PubAckReason::Success));
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
        track(&mut t, &puback(1, PubAckReason::Success));
        track(&mut t, &puback(2, PubAckReason::Success));
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

    #[test]
    fn the_size_with_user_properties_matches_the_encoded_packet() {
        let headers = vec![
            ("plant".to_string(), "berlin".to_string()),
            ("edge-site-id".to_string(), "site-a".to_string()),
        ];
        let props_len = headers.iter().map(|(k, v)| 5 + k.len() + v.len()).sum();
        for len in [0, 100, 16_300, 16_370, 2_097_100, MAX_PACKET] {
            let props = PublishProperties {
                user_properties: headers.clone(),
                ..Default::default()
            };
            let mut p = Publish::new("a/b", QoS::AtLeastOnce, vec![0u8; len], Some(props));
            p.pkid = 1;
            assert_eq!(Mqtt5Side::size("a/b", len, props_len), p.size(), "{len}");
            let mut p = Publish::new("a/b", QoS::AtLeastOnce, vec![0u8; len], None);
            p.pkid = 1;
            assert_eq!(Mqtt5Side::size("a/b", len, 0), p.size(), "{len}");
        }
    }
}
