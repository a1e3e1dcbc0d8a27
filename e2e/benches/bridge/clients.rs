//! The bench's own clients: a publisher on the edge broker (MQTT QoS 1, NATS core, JetStream with acks) and an
//! observer on the cloud broker (MQTT QoS 1 subscription, NATS core subscription, ordered JetStream consumer)
//! that feeds a [`Tally`].

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::task::JoinHandle;

use crate::wire::{self, Shared};

/// MQTT publisher in-flight window (QoS 1 PUBLISHes awaiting PUBACK).
const MQTT_INFLIGHT: u16 = 1000;
/// JetStream publisher window (publishes awaiting their PubAck).
const JS_WINDOW: usize = 256;

fn client_id(role: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    format!(
        "ewb-{role}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Where the bench publishes.
#[derive(Debug, Clone)]
pub enum Target {
    /// MQTT 3.1.1, QoS 1, on 127.0.0.1:port.
    Mqtt(u16),
    /// NATS core (a flush at the end is the only acknowledgement).
    NatsCore(String),
    /// JetStream publish, every PubAck awaited (window [`JS_WINDOW`]).
    NatsJs(String),
}

pub enum Publisher {
    Mqtt {
        client: AsyncClient,
        sent: u64,
        acked: Arc<AtomicU64>,
        task: JoinHandle<()>,
    },
    NatsCore {
        client: async_nats::Client,
        sent: u64,
    },
    NatsJs {
        js: async_nats::jetstream::Context,
        acks: FuturesUnordered<BoxFuture<'static, anyhow::Result<()>>>,
        acked: u64,
    },
}

impl Publisher {
    pub async fn connect(target: &Target) -> anyhow::Result<Self> {
        Ok(match target {
            Target::Mqtt(port) => {
                let mut o = MqttOptions::new(client_id("pub"), "127.0.0.1", *port);
                o.set_max_packet_size(1 << 20, 1 << 20)
                    .set_inflight(MQTT_INFLIGHT)
                    .set_keep_alive(Duration::from_secs(30));
                let (client, mut el) = AsyncClient::new(o, 1024);
                let acked = Arc::new(AtomicU64::new(0));
                let counter = acked.clone();
                let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
                let mut ready_tx = Some(ready_tx);
                let task = tokio::spawn(async move {
                    loop {
                        match el.poll().await {
                            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                                if let Some(tx) = ready_tx.take() {
                                    let _ = tx.send(());
                                }
                            }
                            Ok(Event::Incoming(Packet::PubAck(_))) => {
                                counter.fetch_add(1, Ordering::Relaxed);
                            }
                            Ok(_) => {}
                            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                        }
                    }
                });
                tokio::time::timeout(Duration::from_secs(30), ready_rx)
                    .await
                    .context("MQTT publisher: no CONNACK from the edge broker within 30 s")?
                    .context("MQTT publisher event loop ended")?;
                Publisher::Mqtt {
                    client,
                    sent: 0,
                    acked,
                    task,
                }
            }
            Target::NatsCore(url) => Publisher::NatsCore {
                client: async_nats::connect(url.as_str())
                    .await
                    .with_context(|| format!("NATS publisher to {url}"))?,
                sent: 0,
            },
            Target::NatsJs(url) => {
                let client = async_nats::connect(url.as_str())
                    .await
                    .with_context(|| format!("NATS publisher to {url}"))?;
                Publisher::NatsJs {
                    js: async_nats::jetstream::new(client),
                    acks: FuturesUnordered::new(),
                    acked: 0,
                }
            }
        })
    }

    /// Publishes one message; waits when the in-flight window is full.
    pub async fn send(&mut self, topic: &str, payload: Vec<u8>) -> anyhow::Result<()> {
        match self {
            Publisher::Mqtt { client, sent, .. } => {
                client
                    .publish(topic, QoS::AtLeastOnce, false, payload)
                    .await
                    .context("MQTT publish")?;
                *sent += 1;
            }
            Publisher::NatsCore { client, sent } => {
                client
                    .publish(topic.to_string(), payload.into())
                    .await
                    .context("NATS publish")?;
                *sent += 1;
            }
            Publisher::NatsJs { js, acks, acked } => {
                let ack = js
                    .publish(topic.to_string(), payload.into())
                    .await
                    .context("JetStream publish")?;
                acks.push(Box::pin(async move {
                    ack.await.map(|_| ()).context("JetStream PubAck")
                }));
                if acks.len() >= JS_WINDOW
                    && let Some(r) = acks.next().await
                {
                    r?;
                    *acked += 1;
                }
            }
        }
        Ok(())
    }

    /// Waits until everything sent is acknowledged (MQTT PUBACK, JetStream PubAck, NATS core flush); returns how
    /// many messages were acknowledged in total.
    pub async fn finish(&mut self) -> anyhow::Result<u64> {
        match self {
            Publisher::Mqtt { sent, acked, .. } => {
                let mut last = (acked.load(Ordering::Relaxed), Instant::now());
                loop {
                    let now = acked.load(Ordering::Relaxed);
                    if now >= *sent {
                        return Ok(now);
                    }
                    if now != last.0 {
                        last = (now, Instant::now());
                    } else if last.1.elapsed() > Duration::from_secs(60) {
                        bail!("MQTT publisher: {now} of {sent} PUBACKs, none for 60 s");
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
            Publisher::NatsCore { client, sent } => {
                client.flush().await.context("NATS flush")?;
                Ok(*sent)
            }
            Publisher::NatsJs { acks, acked, .. } => {
                while let Some(r) = acks.next().await {
                    r?;
                    *acked += 1;
                }
                Ok(*acked)
            }
        }
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        if let Publisher::Mqtt { task, .. } = self {
            task.abort();
        }
    }
}

/// How the bench watches the cloud broker.
#[derive(Debug, Clone)]
pub enum Watch {
    /// MQTT QoS 1 subscription on 127.0.0.1:port; `persistent` = clean session off with a fixed client id
    /// (the cloud broker keeps the session, with persistence, across its restart).
    Mqtt { port: u16, persistent: bool },
    /// NATS core subscription (reconnects and resubscribes by itself).
    NatsCore(String),
    /// Ordered JetStream consumer on `stream`, from its first message, filtered to the topic.
    Stream { url: String, stream: String },
}

/// A running observer; stops when dropped.
pub struct Observer {
    task: JoinHandle<()>,
}

impl Drop for Observer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Observer {
    /// Subscribes to `topic` and records every arrival into `tally`; returns once the subscription is in place.
    pub async fn start(watch: &Watch, topic: &str, tally: Shared) -> anyhow::Result<Self> {
        match watch {
            Watch::Mqtt { port, persistent } => {
                let mut o = MqttOptions::new(client_id("obs"), "127.0.0.1", *port);
                o.set_max_packet_size(1 << 20, 1 << 20)
                    .set_keep_alive(Duration::from_secs(30))
                    .set_clean_session(!persistent);
                let (client, mut el) = AsyncClient::new(o, 64);
                let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
                let mut ready_tx = Some(ready_tx);
                let topic = topic.to_string();
                let task = tokio::spawn(async move {
                    loop {
                        match el.poll().await {
                            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                                // A clean session loses its subscription on a reconnect; subscribing again is
                                // harmless for a persistent one.
                                let _ = client.try_subscribe(topic.clone(), QoS::AtLeastOnce);
                            }
                            Ok(Event::Incoming(Packet::SubAck(_))) => {
                                if let Some(tx) = ready_tx.take() {
                                    let _ = tx.send(());
                                }
                            }
                            Ok(Event::Incoming(Packet::Publish(p))) => {
                                tally.lock().expect("tally lock").record(&p.payload);
                            }
                            Ok(_) => {}
                            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                        }
                    }
                });
                tokio::time::timeout(Duration::from_secs(30), ready_rx)
                    .await
                    .context("MQTT observer: no SUBACK from the cloud broker within 30 s")?
                    .context("MQTT observer event loop ended")?;
                Ok(Observer { task })
            }
            Watch::NatsCore(url) => {
                let client = async_nats::connect(url.as_str())
                    .await
                    .with_context(|| format!("NATS observer to {url}"))?;
                let mut sub = client
                    .subscribe(topic.to_string())
                    .await
                    .context("NATS subscribe")?;
                client.flush().await.context("NATS flush")?;
                let task = tokio::spawn(async move {
                    let _client = client;
                    while let Some(m) = sub.next().await {
                        tally.lock().expect("tally lock").record(&m.payload);
                    }
                });
                Ok(Observer { task })
            }
            Watch::Stream { url, stream } => {
                let deadline = Instant::now() + Duration::from_secs(60);
                let client = loop {
                    match async_nats::connect(url.as_str()).await {
                        Ok(c) => break c,
                        Err(e) if Instant::now() > deadline => {
                            return Err(e).with_context(|| format!("NATS observer to {url}"));
                        }
                        Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
                    }
                };
                let js = async_nats::jetstream::new(client);
                // After a restart the server needs a moment to recover its streams.
                let stream = loop {
                    match js.get_stream(stream.as_str()).await {
                        Ok(s) => break s,
                        Err(e) if Instant::now() > deadline => {
                            return Err(e).with_context(|| format!("stream {stream} on {url}"));
                        }
                        Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
                    }
                };
                let consumer = stream
                    .create_consumer(async_nats::jetstream::consumer::pull::OrderedConfig {
                        filter_subject: topic.to_string(),
                        deliver_policy: async_nats::jetstream::consumer::DeliverPolicy::All,
                        ..Default::default()
                    })
                    .await
                    .context("ordered consumer on the cloud stream")?;
                let mut messages = consumer
                    .messages()
                    .await
                    .context("ordered consumer messages")?;
                let task = tokio::spawn(async move {
                    while let Some(m) = messages.next().await {
                        match m {
                            Ok(m) => tally.lock().expect("tally lock").record(&m.payload),
                            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                        }
                    }
                });
                Ok(Observer { task })
            }
        }
    }
}

/// Publishes probes (one every 100 ms) until the observer has seen one of them: the path edge→cloud is open,
/// subscriptions included. Errors after `timeout`.
pub async fn open_path(
    publisher: &mut Publisher,
    topic: &str,
    tally: &Shared,
    timeout: Duration,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    let mut first = None;
    loop {
        let (id, payload) = wire::probe();
        let first = *first.get_or_insert(id);
        publisher.send(topic, payload).await?;
        if let Publisher::NatsCore { client, .. } = publisher {
            client.flush().await.context("NATS flush")?;
        }
        for _ in 0..10 {
            if tally.lock().expect("tally lock").max_probe >= first {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        if Instant::now() > deadline {
            bail!("no probe published to {topic} reached the cloud observer within {timeout:?}");
        }
    }
}
