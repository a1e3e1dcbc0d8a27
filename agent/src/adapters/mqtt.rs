//! MQTT 3.1.1 (rumqttc): topic = event type with `.` → `/`, body = structured-mode JSON, QoS from the
//! configuration. QoS 1 resolves on PUBACK, QoS 2 on PUBCOMP, QoS 0 once written to the socket. A JWT
//! goes in the CONNECT password slot. rumqttc reconnects when its event loop keeps being polled.
//!
//! rumqttc 0.25 hands out no per-publish acknowledgement, so the event loop pairs them up: requests are
//! written in the order they were queued, so the n-th `Outgoing::Publish(pkid)` belongs to the n-th
//! waiter; the waiter then resolves on that pkid's PUBACK/PUBCOMP. On a disconnect every waiter fails
//! with 503 and the unsent queue is dropped (clean session), so the pairing can never drift.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use cloudevents::{AttributesReader, Event};
use futures::FutureExt;
use futures::future::BoxFuture;
use rumqttc::{AsyncClient, EventLoop, MqttOptions, Outgoing, Packet, QoS};
use tokio::sync::oneshot;

use super::{Adapter, PUBLISH_TIMEOUT, PublishError, Unfit};
use crate::connect::{self, Health, Readiness, SetupError};
use crate::event;
use crate::publisher::config::{MqttAuth, MqttConfig};

type Waiter = oneshot::Sender<Result<(), PublishError>>;

#[derive(Default)]
struct Waiters {
    /// Queued publishes not yet written, oldest first.
    queued: VecDeque<Waiter>,
    /// Written QoS 1/2 publishes by packet id.
    inflight: HashMap<u16, Waiter>,
}

impl Waiters {
    fn fail_all(&mut self, why: &str) {
        for w in self
            .queued
            .drain(..)
            .chain(self.inflight.drain().map(|(_, w)| w))
        {
            let _ = w.send(Err(PublishError::Unavailable(why.to_string())));
        }
    }
}

pub struct MqttAdapter {
    client: AsyncClient,
    qos: QoS,
    waiters: Arc<Mutex<Waiters>>,
    health: Arc<Health>,
}

/// MQTT options for `c`: 3.1.1, clean session, credentials, TLS. Shared with `tail`.
pub fn options(c: &MqttConfig, client_id: &str) -> Result<MqttOptions, SetupError> {
    let credentials = match &c.auth {
        MqttAuth::None => None,
        MqttAuth::Jwt { username, token } => Some((
            username.clone().unwrap_or_default(),
            token.expose().to_string(),
        )),
        MqttAuth::UserPassword { username, password } => Some((
            username.clone(),
            password
                .as_ref()
                .map(|p| p.expose().to_string())
                .unwrap_or_default(),
        )),
    };
    let mut o = connect::mqtt::options(client_id, c.host.clone(), c.port, credentials, &c.tls)?;
    o.set_clean_session(true);
    Ok(o)
}

impl MqttAdapter {
    pub fn connect(c: MqttConfig) -> Result<Self, SetupError> {
        let opts = options(&c, &connect::mqtt::client_id("publisher"))?;
        let (client, eventloop) = AsyncClient::new(opts, 1024);
        let waiters = Arc::new(Mutex::new(Waiters::default()));
        let health = Arc::new(Health::default());
        let q = connect::mqtt::qos(c.qos);
        tokio::spawn(drive(eventloop, q, waiters.clone(), health.clone()));
        Ok(Self {
            client,
            qos: q,
            waiters,
            health,
        })
    }
}

fn lock(w: &Mutex<Waiters>) -> std::sync::MutexGuard<'_, Waiters> {
    w.lock().unwrap_or_else(|e| e.into_inner())
}

async fn drive(mut el: EventLoop, qos: QoS, waiters: Arc<Mutex<Waiters>>, health: Arc<Health>) {
    let mut backoff = crate::retry::PUBLISHER.backoff();
    loop {
        match el.poll().await {
            Ok(rumqttc::Event::Incoming(Packet::ConnAck(ack))) => {
                if ack.code == rumqttc::ConnectReturnCode::Success {
                    backoff.reset();
                    health.set_connected();
                }
            }
            Ok(rumqttc::Event::Outgoing(Outgoing::Publish(pkid))) => {
                let mut w = lock(&waiters);
                if let Some(tx) = w.queued.pop_front() {
                    if qos == QoS::AtMostOnce {
                        let _ = tx.send(Ok(()));
                    } else {
                        w.inflight.insert(pkid, tx);
                    }
                }
            }
            Ok(rumqttc::Event::Incoming(Packet::PubAck(a))) if qos == QoS::AtLeastOnce => {
                if let Some(tx) = lock(&waiters).inflight.remove(&a.pkid) {
                    let _ = tx.send(Ok(()));
                }
            }
            Ok(rumqttc::Event::Incoming(Packet::PubComp(c))) if qos == QoS::ExactlyOnce => {
                if let Some(tx) = lock(&waiters).inflight.remove(&c.pkid) {
                    let _ = tx.send(Ok(()));
                }
            }
            Ok(_) => {}
            Err(e) => {
                let why = connect::mqtt::describe(&e);
                health.set_down(why.clone());
                {
                    // Under the lock no publish can be queued: drop everything unsent or unacked and
                    // fail its waiters, so no stale request is replayed after the reconnect.
                    let mut w = lock(&waiters);
                    el.clean();
                    el.pending.clear();
                    w.fail_all(&why);
                }
                backoff.wait().await;
            }
        }
    }
}

impl Adapter for MqttAdapter {
    fn name(&self) -> &'static str {
        "mqtt"
    }

    fn validate(&self, event: &Event) -> Result<(), String> {
        match event::mqtt_topic_problem(event.ty()) {
            Some(p) => Err(p),
            None => Ok(()),
        }
    }

    /// rumqttc refuses to write a packet over [`connect::mqtt::MAX_PACKET`] by dropping the connection,
    /// which failed every request in flight with a 503: a too-large event is a 413 before it is queued.
    fn fits(&self, ev: &Event) -> Result<(), Unfit> {
        let topic = event::mqtt_topic(ev.ty());
        // `publish` serializes the event; here a bound does when it can (nearly every event is far
        // below the limit), so the event is serialized once, not twice.
        if let Some(bound) = event::structured_json_len_at_most(ev)
            && crate::bridge::mqtt::publish_size(&topic, bound) <= connect::mqtt::MAX_PACKET
        {
            return Ok(());
        }
        let size = crate::bridge::mqtt::publish_size(&topic, event::structured_json(ev).len());
        if size > connect::mqtt::MAX_PACKET {
            return Err(Unfit::TooLarge(format!(
                "the event is a {size}-byte MQTT packet as structured JSON; the client sends at most {} bytes",
                connect::mqtt::MAX_PACKET
            )));
        }
        Ok(())
    }

    fn publish<'a>(&'a self, ev: &'a Event) -> BoxFuture<'a, Result<(), PublishError>> {
        async move {
            self.health.require()?;
            let topic = event::mqtt_topic(ev.ty());
            let body = event::structured_json(ev);
            let (tx, rx) = oneshot::channel();
            {
                let mut w = lock(&self.waiters);
                self.client
                    .try_publish(topic, self.qos, false, body)
                    .map_err(|_| {
                        PublishError::Unavailable("the MQTT publish queue is full".into())
                    })?;
                w.queued.push_back(tx);
            }
            match tokio::time::timeout(PUBLISH_TIMEOUT, rx).await {
                Ok(Ok(r)) => r,
                Ok(Err(_)) => Err(PublishError::Unavailable("MQTT connection lost".into())),
                Err(_) => Err(PublishError::Timeout(
                    "no PUBACK from the MQTT broker".into(),
                )),
            }
        }
        .boxed()
    }

    fn readiness(&self) -> Readiness {
        self.health.readiness()
    }
}
