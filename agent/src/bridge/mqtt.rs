//! MQTT 3.1.1 side of the bridge (rumqttc).
//!
//! One connection per side. It subscribes to the rule filters whose source is this side (again after
//! every CONNACK without a session), hands incoming publishes to the bridge, and publishes what the other
//! side sends here. Incoming publishes are acknowledged manually (`set_manual_acks`): on the edge only
//! once the message is durable in the spool. The edge session is persistent (clean session off, a
//! client id stable per BridgeLink) so the broker keeps what arrives while the bridge is down.
//!
//! Publishing waits for PUBACKs by counting them: the forwarder sends a batch and waits until as many
//! PUBACKs arrived as it sent; a disconnect in between fails the batch (it is sent again from the spool).
//! MQTT 3.1.1 has no headers: edge→cloud messages to an MQTT 3.1.1 cloud carry the payload unchanged and
//! `headers`/`edge-site-id` are not transmitted (put the site in the `to` pattern).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rumqttc::{
    AsyncClient, ConnectReturnCode, Event, MqttOptions, NetworkOptions, Outgoing, Packet, Publish,
    QoS, TlsConfiguration, Transport,
};
use tokio::sync::{mpsc, watch};

use super::config::{Auth, BridgeConfigError, EndpointConfig};
use crate::adapters::Health;

const MAX_PACKET: usize = 4 * 1024 * 1024;

/// Connection events the publisher waits on: PUBACKs received, disconnects seen.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AckState {
    pub pubacks: u64,
    pub disconnects: u64,
}

pub struct MqttSide {
    pub client: AsyncClient,
    pub health: Arc<Health>,
    pub acks: watch::Receiver<AckState>,
}

pub fn qos(q: u8) -> QoS {
    match q {
        0 => QoS::AtMostOnce,
        2 => QoS::ExactlyOnce,
        _ => QoS::AtLeastOnce,
    }
}

fn options(
    c: &EndpointConfig,
    client_id: &str,
    site_id: &str,
    persistent: bool,
) -> Result<MqttOptions, BridgeConfigError> {
    let (host, port) = c.mqtt_host_port()?;
    let mut o = MqttOptions::new(client_id, host, port);
    o.set_keep_alive(Duration::from_secs(15))
        .set_clean_session(!persistent)
        .set_manual_acks(true)
        .set_inflight(1000)
        .set_max_packet_size(MAX_PACKET, MAX_PACKET);
    match &c.auth {
        Auth::None => {}
        // A token goes in the password slot with the site id as the user name (the API's documented mapping).
        Auth::Token(t) => {
            o.set_credentials(site_id, t.expose());
        }
        Auth::UserPassword { username, password } => {
            o.set_credentials(username.clone(), password.expose());
        }
    }
    if c.tls.enabled {
        let cfg = crate::tls::client_config(&c.tls)
            .map_err(|e| BridgeConfigError(format!("TLS: {e}")))?;
        o.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(
            Arc::new(cfg),
        )));
    }
    Ok(o)
}

/// Connects in the background. `filters`: what to subscribe to; incoming publishes go to `incoming`.
pub fn connect(
    c: &EndpointConfig,
    client_id: &str,
    site_id: &str,
    persistent: bool,
    filters: Vec<(String, QoS)>,
    incoming: mpsc::Sender<Publish>,
) -> Result<MqttSide, BridgeConfigError> {
    let opts = options(c, client_id, site_id, persistent)?;
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
                    if incoming.send(p).await.is_err() {
                        return;
                    }
                }
                Ok(Event::Incoming(Packet::PubAck(_)))
                | Ok(Event::Incoming(Packet::PubComp(_))) => {
                    acks_tx.send_modify(|a| a.pubacks += 1);
                }
                Ok(Event::Outgoing(Outgoing::Disconnect)) => {}
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
    Ok(MqttSide {
        client,
        health,
        acks,
    })
}

impl MqttSide {
    /// Publishes `msgs` at `q` and waits until the broker acknowledged all of them (QoS 0: written).
    pub async fn publish_batch(
        &self,
        msgs: impl Iterator<Item = (String, Bytes, QoS)>,
    ) -> Result<(), String> {
        let mut acks = self.acks.clone();
        let start = *acks.borrow_and_update();
        let mut need = 0u64;
        for (topic, payload, q) in msgs {
            self.client
                .publish_bytes(topic, q, false, payload)
                .await
                .map_err(|e| format!("MQTT publish: {e}"))?;
            if q != QoS::AtMostOnce {
                need += 1;
            }
        }
        loop {
            let now = *acks.borrow_and_update();
            if now.disconnects != start.disconnects {
                return Err("MQTT connection lost before every PUBACK arrived".into());
            }
            if now.pubacks >= start.pubacks + need {
                return Ok(());
            }
            match tokio::time::timeout(Duration::from_secs(10), acks.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return Err("MQTT connection task stopped".into()),
                Err(_) => return Err("no PUBACK from the MQTT broker in 10 s".into()),
            }
        }
    }
}
