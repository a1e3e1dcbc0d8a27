//! MQTT 3.1.1 side of the bridge (rumqttc).
//!
//! One connection per side. It subscribes to the rule filters whose source is this side (again after
//! every CONNACK without a session) and hands incoming publishes to the bridge with their PUBACK as the
//! [`SourceAck`](super::side::SourceAck) (`set_manual_acks`: on the edge the PUBACK goes out only once the
//! message is durable in the spool). The edge session is persistent (clean session off, a client id
//! stable per BridgeLink) so the broker keeps what arrives while the bridge is down.
//!
//! Sending is pipelined: [`Side::send`] queues the PUBLISH and returns a future for its PUBACK. A broker
//! answers QoS 1 PUBLISHes with PUBACKs in the order it received them (MQTT 3.1.1 §4.6), so the n-th
//! PUBACK after a connection came up acknowledges the n-th QoS ≥ 1 message sent on it: acknowledgements
//! are counted, and a disconnect fails every message still waiting (the spool sends them again).
//! MQTT 3.1.1 has no headers: edge→cloud messages to an MQTT 3.1.1 cloud carry the payload unchanged and
//! `headers`/`edge-site-id` are not transmitted (put the site in the `to` pattern, or use MQTT 5).

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use futures::future::BoxFuture;
use rumqttc::{
    AsyncClient, ConnectReturnCode, Event, MqttOptions, NetworkOptions, Packet, QoS,
    TlsConfiguration, Transport,
};
use tokio::sync::{Mutex, watch};

use super::config::{Auth, BridgeConfigError, EndpointConfig};
use super::side::{AckFuture, Connect, Inbound, Outbound, Role, Side};
use crate::adapters::Health;

pub(crate) const MAX_PACKET: usize = 4 * 1024 * 1024;

/// How long a sent message may wait for its acknowledgement before the connection is presumed stuck.
pub(crate) const ACK_TIMEOUT: Duration = Duration::from_secs(30);

/// Connection events the acknowledgement futures wait on: PUBACKs received, disconnects seen.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AckState {
    pub pubacks: u64,
    pub disconnects: u64,
}

/// Counts acknowledgements of an in-order protocol and hands out one future per sent message.
pub(crate) struct AckCounter {
    state: watch::Receiver<AckState>,
    /// (disconnects when the count started, acknowledgements expected so far).
    sent: Mutex<(u64, u64)>,
}

impl AckCounter {
    pub(crate) fn new(state: watch::Receiver<AckState>) -> Self {
        AckCounter {
            state,
            sent: Mutex::new((0, 0)),
        }
    }

    /// Runs `put` (which puts one message on the wire) and returns the future of its acknowledgement.
    /// Sends are serialized so that the count matches the order on the wire.
    pub(crate) async fn send<F, E>(&self, acked: bool, put: F) -> anyhow::Result<AckFuture>
    where
        F: std::future::Future<Output = Result<(), E>>,
        E: std::fmt::Display,
    {
        let mut g = self.sent.lock().await;
        let now = *self.state.borrow();
        if g.0 != now.disconnects {
            // A new connection: acknowledgements of the old one will not come.
            *g = (now.disconnects, now.pubacks);
        }
        put.await
            .map_err(|e| anyhow::anyhow!("MQTT publish: {e}"))?;
        if !acked {
            return Ok(Box::pin(async { Ok(()) }));
        }
        g.1 += 1;
        let (epoch, target) = *g;
        let mut state = self.state.clone();
        Ok(Box::pin(async move {
            loop {
                let a = *state.borrow_and_update();
                if a.disconnects != epoch {
                    anyhow::bail!("MQTT connection lost before the PUBACK arrived");
                }
                if a.pubacks >= target {
                    return Ok(());
                }
                match tokio::time::timeout(ACK_TIMEOUT, state.changed()).await {
                    Ok(Ok(())) => {}
                    Ok(Err(_)) => anyhow::bail!("MQTT connection task stopped"),
                    Err(_) => anyhow::bail!("no PUBACK from the MQTT broker in {ACK_TIMEOUT:?}"),
                }
            }
        }))
    }
}

pub struct MqttSide {
    client: AsyncClient,
    health: Arc<Health>,
    acks: AckCounter,
}

pub fn qos(q: u8) -> QoS {
    match q {
        0 => QoS::AtMostOnce,
        2 => QoS::ExactlyOnce,
        _ => QoS::AtLeastOnce,
    }
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
    let mut o = MqttOptions::new(c.client_id(), host, port);
    o.set_keep_alive(Duration::from_secs(15))
        .set_clean_session(c.role == Role::Cloud)
        .set_manual_acks(true)
        .set_inflight(1000)
        .set_max_packet_size(MAX_PACKET, MAX_PACKET);
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
    let (acks_tx, acks) = watch::channel(AckState::default());
    let h = health.clone();
    let sub = client.clone();
    tokio::spawn(async move {
        let mut attempt = 0u32;
        loop {
            match el.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                    if ack.code == ConnectReturnCode::Success {
                        attempt = 0;
                        h.set_connected();
                        if !ack.session_present {
                            for (f, q) in &filters {
                                if let Err(e) = sub.try_subscribe(f.clone(), *q) {
                                    h.note(format!("cannot subscribe to {f}: {e}"));
                                }
                            }
                        }
                    }
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let ack = (p.qos != QoS::AtMostOnce).then(|| {
                        let client = sub.clone();
                        // The PUBACK needs only the packet id: keep no copy of the payload.
                        let mut a = rumqttc::Publish::new("", p.qos, Vec::new());
                        a.pkid = p.pkid;
                        Box::pin(async move {
                            let _ = client.ack(&a).await;
                        }) as BoxFuture<'static, ()>
                    });
                    let msg = Inbound {
                        topic: p.topic,
                        payload: p.payload,
                        ack,
                    };
                    if incoming.send(msg).await.is_err() {
                        return;
                    }
                }
                Ok(Event::Incoming(Packet::PubAck(_)))
                | Ok(Event::Incoming(Packet::PubComp(_))) => {
                    acks_tx.send_modify(|a| a.pubacks += 1);
                }
                Ok(_) => {}
                Err(e) => {
                    let why = match &e {
                        rumqttc::ConnectionError::ConnectionRefused(code) => {
                            format!("the MQTT broker refused the connection: {code:?}")
                        }
                        other => format!("MQTT connection error: {other}"),
                    };
                    h.set_down(why);
                    acks_tx.send_modify(|a| a.disconnects += 1);
                    if !persistent {
                        // Nothing unsent or unacknowledged is replayed by the client: the spool does it.
                        el.clean();
                        el.pending.clear();
                    }
                    tokio::time::sleep(super::backoff(attempt)).await;
                    attempt = attempt.saturating_add(1);
                }
            }
        }
    });
    Ok(Arc::new(MqttSide {
        client,
        health,
        acks: AckCounter::new(acks),
    }))
}

impl Side for MqttSide {
    fn health(&self) -> Arc<Health> {
        self.health.clone()
    }

    fn check_topic(&self, topic: &str) -> Result<(), String> {
        check_topic(topic)
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
