//! MQTT 3.1.1 side of the bridge (rumqttc).
//!
//! One connection per side. It subscribes to the rule filters whose source is this side (again after
//! every CONNACK without a session) and hands incoming publishes to the bridge with their PUBACK as the
//! [`SourceAck`](crate::bridge::side::SourceAck) (`set_manual_acks`: on the edge the PUBACK goes out only once the
//! message is durable in the spool). The edge session is persistent (clean session off, a client id
//! stable per BridgeLink) so the broker keeps what arrives while the bridge is down.
//!
//! Sending is pipelined: [`Side::send`] queues the PUBLISH and returns a future for its PUBACK (PUBCOMP
//! at QoS 2). Acknowledgements are matched to messages by packet id with the [`Tracker`] shared with the
//! MQTT 5 side: counting them is not enough, because after a reconnect the client sends
//! what was still in its request channel and the persistent edge session resends what was never
//! acknowledged, and their PUBACKs would count towards newer messages.
//! MQTT 3.1.1 has no headers: edge→cloud messages to an MQTT 3.1.1 cloud carry the payload unchanged and
//! `headers`/`edge-site-id` are not transmitted (put the site in the `to` pattern, or use MQTT 5).

use std::sync::Arc;

use anyhow::Context as _;
use futures::future::BoxFuture;
use rumqttc::{
    AsyncClient, ConnectReturnCode, Event, EventLoop, MqttOptions, NetworkOptions, Outgoing,
    Packet, QoS, Request,
};

use super::{
    Acks, MAX_PACKET, Tracker, check_packet, check_topic, credentials, lock, publish_size,
};
use crate::bridge::Connect;
use crate::bridge::config::{BridgeConfigError, EndpointConfig};
use crate::bridge::side::{AckFuture, Inbound, Outbound, Packet as Delivered, Role, Side};
use crate::connect::mqtt::qos;
use crate::connect::{self, Health};

pub struct MqttSide {
    client: AsyncClient,
    health: Arc<Health>,
    acks: Acks,
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
                    if p.size() > MAX_PACKET && el.mqtt_options.max_packet_size() > MAX_PACKET {
                        // The oversized message arrived: later connections take the usual limit again.
                        el.mqtt_options.set_max_packet_size(MAX_PACKET, MAX_PACKET);
                    }
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
            if persistent {
                read_oversized_once(&mut el, &e);
            }
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

/// MQTT 3.1.1 cannot tell the broker how large a packet the client takes, so the broker sends the edge
/// session a message over the client's limit ([`MAX_PACKET`]); rumqttc then drops the connection, the
/// persistent session redelivers the same message first after the reconnect, and the bridge would
/// reconnect forever with everything behind it held up. After such an error the next connection reads
/// packets up to that size, once: the bridge receives the message and either forwards it (the cloud takes
/// it) or refuses it into `refused_total` (too large for the cloud) — in both cases acknowledging it, so
/// the session moves on. The memory this costs is bounded by the edge broker's own message size limit
/// (Mosquitto's `message_size_limit`) and MQTT's 256 MiB.
fn read_oversized_once(el: &mut EventLoop, e: &rumqttc::ConnectionError) {
    use rumqttc::{ConnectionError, StateError};
    if let ConnectionError::MqttState(StateError::Deserialization(
        rumqttc::mqttbytes::Error::PayloadSizeLimitExceeded(size),
    )) = e
    {
        let size = (*size).max(el.mqtt_options.max_packet_size());
        tracing::warn!(
            size,
            limit = MAX_PACKET,
            "the edge broker sent a message over the client's packet limit; reading it once on the next connection so it can be forwarded or refused"
        );
        el.mqtt_options.set_max_packet_size(size, MAX_PACKET);
    }
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
        packet: (p.qos != QoS::AtMostOnce).then_some(Delivered {
            id: p.pkid,
            dup: p.dup,
        }),
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
    use tokio::sync::oneshot;

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
