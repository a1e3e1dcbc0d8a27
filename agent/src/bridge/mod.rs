//! `edgewire-agent bridge`: forwards edge topics to the cloud through a durable spool, and delivers cloud
//! topics to the edge (DESIGN §2 BridgeLink; the contract with the operator is the command line below).
//!
//! - Edge→cloud: each message on an `EdgeToCloud` rule's `from` is mapped (captures substituted into
//!   `to`), appended to the [`spool`], and acknowledged to the edge (MQTT PUBACK) only once the spool has
//!   fsync'd it. The forwarder replays the spool in order and removes records once the cloud acknowledged
//!   them (NATS flush / JetStream PubAck / MQTT PUBACK). Delivery is at least once: after a cloud error
//!   or a crash, records not yet acknowledged are sent again (duplicates, never loss).
//! - Cloud→edge: delivered directly (no spool) at the rule's QoS.
//! - `/metrics` (prefix `edgewire_bridge_`), `/healthz`, `/readyz` (ready while the edge is connected:
//!   a cloud outage is what the spool is for; the cloud state is in the metrics and `status.runtime`).
//! - `--report-status`: server-side apply of `status.runtime` every 5 s (see [`status`]).

pub mod config;
pub mod http;
pub mod mqtt;
pub mod nats;
pub mod spool;
pub mod status;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use edgewire_api::v1alpha1::Protocol;
use edgewire_api::v1alpha1::{BridgeRule, Direction};
use futures::StreamExt;
use tokio::sync::mpsc;

use crate::adapters::Health;
use config::{BridgeConfig, EndpointConfig};
use spool::{Incoming, Record, SpoolOptions};

/// Command-line interface of `edgewire-agent bridge` (the contract with the operator).
#[derive(clap::Args, Debug, Clone)]
pub struct BridgeArgs {
    /// The BridgeLink YAML document.
    #[arg(
        long,
        env = "EDGEWIRE_BRIDGE_CONFIG",
        default_value = "/etc/edgewire/bridge/bridge.yaml"
    )]
    pub config: PathBuf,
    /// Referenced Secrets as `<dir>/<secret name>/<key>`.
    #[arg(
        long,
        env = "EDGEWIRE_BRIDGE_SECRETS_DIR",
        default_value = "/etc/edgewire/secrets"
    )]
    pub secrets_dir: PathBuf,
    /// The spool directory (the PVC mount).
    #[arg(
        long,
        env = "EDGEWIRE_BRIDGE_SPOOL_DIR",
        default_value = "/var/lib/edgewire/spool"
    )]
    pub spool_dir: PathBuf,
    /// Listen address of /metrics, /healthz, /readyz.
    #[arg(
        long,
        env = "EDGEWIRE_BRIDGE_HTTP_ADDR",
        default_value = "0.0.0.0:9464"
    )]
    pub http_addr: SocketAddr,
    /// Patch status.runtime of the BridgeLink (in-cluster config or KUBECONFIG).
    #[arg(long, env = "EDGEWIRE_BRIDGE_REPORT_STATUS", default_value_t = false)]
    pub report_status: bool,
    /// Spool segment size in bytes (0: maxBytes / 8, between 64 KiB and 64 MiB).
    #[arg(
        long,
        env = "EDGEWIRE_BRIDGE_SEGMENT_BYTES",
        default_value_t = 0,
        hide = true
    )]
    pub segment_bytes: u64,
}

/// Delay before reconnect or retry attempt `n`: 250 ms doubling up to 10 s, with up to 25 % jitter.
pub fn backoff(n: u32) -> Duration {
    let base = 250u64.saturating_mul(1u64 << n.min(6)).min(10_000);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos() as u64)
        .unwrap_or(0);
    Duration::from_millis(base + (nanos % (base / 4 + 1)))
}

/// Counters beyond the spool's own.
#[derive(Debug, Default)]
pub struct Counters {
    /// Edge messages taken into the spool.
    pub received: AtomicU64,
    /// Edge messages that matched no rule (acknowledged and ignored).
    pub unmatched: AtomicU64,
    /// Cloud→edge messages delivered.
    pub delivered_to_edge: AtomicU64,
    /// Failed cloud publish rounds.
    pub cloud_errors: AtomicU64,
    /// Unix ms of the last cloud acknowledgement.
    pub last_forward_ms: AtomicU64,
}

/// Everything `/metrics` and the status reporter read.
pub struct Runtime {
    pub spool: Arc<spool::Stats>,
    pub counters: Arc<Counters>,
    pub edge: Arc<Health>,
    pub cloud: Arc<Health>,
}

fn sep(p: Protocol) -> char {
    if p == Protocol::Mqtt { '/' } else { '.' }
}

/// The first rule of `dir` whose `from` matches `topic` (in `source` syntax), and the mapped topic in
/// `target` syntax.
pub fn map_topic(
    rules: &[BridgeRule],
    dir: Direction,
    topic: &str,
    source: Protocol,
    target: Protocol,
) -> Option<(usize, String)> {
    let tokens: Vec<&str> = topic.split(sep(source)).collect();
    rules
        .iter()
        .enumerate()
        .filter(|(_, r)| r.direction == dir)
        .find_map(|(i, r)| {
            let caps = r.from.captures(&tokens)?;
            let out = r.to.substitute(&caps)?;
            Some((i, out.join(&sep(target).to_string())))
        })
}

fn filter(rule: &BridgeRule, p: Protocol) -> String {
    if p == Protocol::Mqtt {
        rule.from.to_mqtt()
    } else {
        rule.from.to_nats()
    }
}

enum Side {
    Mqtt(mqtt::MqttSide),
    Nats(Box<nats::NatsSide>),
}

impl Side {
    fn health(&self) -> Arc<Health> {
        match self {
            Side::Mqtt(m) => m.health.clone(),
            Side::Nats(n) => n.health.clone(),
        }
    }
}

/// A message from a side's subscriptions.
enum Inbound {
    Mqtt(rumqttc::Publish),
    Nats(async_nats::Message),
}

impl Inbound {
    fn topic(&self) -> &str {
        match self {
            Inbound::Mqtt(p) => &p.topic,
            Inbound::Nats(m) => m.subject.as_str(),
        }
    }
    fn payload(&self) -> Bytes {
        match self {
            Inbound::Mqtt(p) => p.payload.clone(),
            Inbound::Nats(m) => m.payload.clone(),
        }
    }
}

/// Connects one side, subscribing to the `from` of the rules of direction `dir`.
async fn connect_side(
    c: &EndpointConfig,
    cfg: &BridgeConfig,
    role: &str,
    dir: Direction,
    persistent: bool,
) -> anyhow::Result<(Side, mpsc::Receiver<Inbound>)> {
    let rules: Vec<&BridgeRule> = cfg.rules.iter().filter(|r| r.direction == dir).collect();
    let (tx, rx) = mpsc::channel::<Inbound>(8192);
    match c.protocol {
        Protocol::Mqtt => {
            let (ptx, mut prx) = mpsc::channel(8192);
            let filters = rules
                .iter()
                .map(|r| (filter(r, Protocol::Mqtt), mqtt::qos(r.qos)))
                .collect();
            let id = format!("edgewire-bridge-{}-{}-{role}", cfg.namespace, cfg.name);
            let side = mqtt::connect(c, &id, &cfg.site_id, persistent, filters, ptx)?;
            tokio::spawn(async move {
                while let Some(p) = prx.recv().await {
                    if tx.send(Inbound::Mqtt(p)).await.is_err() {
                        return;
                    }
                }
            });
            Ok((Side::Mqtt(side), rx))
        }
        Protocol::Nats => {
            let side = nats::connect(c, &format!("edgewire-bridge-{}-{role}", cfg.name)).await?;
            let mut subs = Vec::new();
            for r in &rules {
                subs.push(
                    side.client
                        .subscribe(filter(r, Protocol::Nats))
                        .await
                        .with_context(|| format!("subscribing to {}", r.from))?,
                );
            }
            let mut all = futures::stream::select_all(subs);
            tokio::spawn(async move {
                if all.is_empty() {
                    // No rule reads this side: keep the channel open (an empty stream would end at once).
                    let _tx = tx;
                    return std::future::pending::<()>().await;
                }
                while let Some(m) = all.next().await {
                    if tx.send(Inbound::Nats(m)).await.is_err() {
                        return;
                    }
                }
            });
            Ok((Side::Nats(Box::new(side)), rx))
        }
        p => anyhow::bail!("{role}: protocol {p:?} is not supported on this side"),
    }
}

/// Runs the bridge until SIGTERM/SIGINT.
pub async fn run(args: BridgeArgs) -> anyhow::Result<()> {
    crate::tls::install_crypto_provider();
    let cfg = config::from_file(&args.config, &args.secrets_dir)?;
    let (appender, replayer, spool_stats) = spool::open(SpoolOptions {
        dir: args.spool_dir.clone(),
        max_bytes: cfg.spool_max_bytes,
        overflow: cfg.overflow,
        segment_bytes: args.segment_bytes,
    })
    .with_context(|| format!("opening the spool in {}", args.spool_dir.display()))?;
    tracing::info!(
        name = %cfg.name,
        namespace = %cfg.namespace,
        spooled = spool_stats.messages(),
        "bridge starting"
    );
    let (edge, edge_in) =
        connect_side(&cfg.edge, &cfg, "edge", Direction::EdgeToCloud, true).await?;
    let (cloud, cloud_in) =
        connect_side(&cfg.cloud, &cfg, "cloud", Direction::CloudToEdge, false).await?;
    let counters = Arc::new(Counters::default());
    let rt = Arc::new(Runtime {
        spool: spool_stats,
        counters: counters.clone(),
        edge: edge.health(),
        cloud: cloud.health(),
    });
    let edge = Arc::new(edge);
    let cloud = Arc::new(cloud);
    let cfg = Arc::new(cfg);

    let listener = tokio::net::TcpListener::bind(args.http_addr)
        .await
        .with_context(|| format!("binding {}", args.http_addr))?;
    tokio::spawn(http::serve(listener, rt.clone()));
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(ingest(
        cfg.clone(),
        edge.clone(),
        edge_in,
        appender,
        counters.clone(),
    ));
    tasks.spawn(forward(
        cfg.clone(),
        cloud.clone(),
        replayer,
        counters.clone(),
    ));
    tasks.spawn(downlink(
        cfg.clone(),
        cloud.clone(),
        edge.clone(),
        cloud_in,
        counters.clone(),
    ));
    let reporter = if args.report_status {
        Some(status::Reporter::new(&cfg.namespace, &cfg.name, rt.clone()).await?)
    } else {
        None
    };
    if let Some(r) = &reporter {
        let r = r.clone();
        tasks.spawn(async move {
            r.run().await;
            Ok(())
        });
    }
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let result = tokio::select! {
        _ = term.recv() => Ok(()),
        _ = tokio::signal::ctrl_c() => Ok(()),
        r = tasks.join_next() => match r {
            Some(Ok(Err(e))) => Err(e),
            Some(Err(e)) => Err(anyhow::anyhow!("bridge task failed: {e}")),
            _ => Ok(()),
        },
    };
    tracing::info!("bridge stopping");
    if let Some(r) = &reporter {
        r.report_once().await;
    }
    result
}

/// Edge → spool; the edge is acknowledged once the record is durable.
async fn ingest(
    cfg: Arc<BridgeConfig>,
    edge: Arc<Side>,
    mut inbound: mpsc::Receiver<Inbound>,
    mut appender: spool::Appender,
    counters: Arc<Counters>,
) -> anyhow::Result<()> {
    let (ack_tx, mut ack_rx) = mpsc::unbounded_channel::<(u64, rumqttc::Publish)>();
    if let Side::Mqtt(m) = &*edge {
        let client = m.client.clone();
        let mut durable = appender.durable();
        tokio::spawn(async move {
            let mut buf = Vec::with_capacity(4096);
            while ack_rx.recv_many(&mut buf, 4096).await > 0 {
                for (seq, p) in buf.drain(..) {
                    if *durable.borrow() < seq && durable.wait_for(|d| *d >= seq).await.is_err() {
                        return;
                    }
                    if client.ack(&p).await.is_err() {
                        return;
                    }
                }
            }
        });
    }
    let cloud_proto = cfg.cloud.protocol;
    let edge_proto = cfg.edge.protocol;
    while let Some(m) = inbound.recv().await {
        let mapped = map_topic(
            &cfg.rules,
            Direction::EdgeToCloud,
            m.topic(),
            edge_proto,
            cloud_proto,
        );
        let Some((rule, topic)) = mapped else {
            counters.unmatched.fetch_add(1, Ordering::Relaxed);
            if let (Side::Mqtt(e), Inbound::Mqtt(p)) = (&*edge, &m) {
                let _ = e.client.ack(p).await;
            }
            continue;
        };
        let payload = m.payload();
        appender.reserve(topic.len() + payload.len()).await;
        let seq = appender
            .append(Incoming {
                rule: rule as u16,
                topic,
                payload,
            })
            .await?;
        counters.received.fetch_add(1, Ordering::Relaxed);
        if let Inbound::Mqtt(p) = m {
            let _ = ack_tx.send((seq, p));
        }
    }
    anyhow::bail!("the edge connection task stopped")
}

/// Spool → cloud, in order; records leave the spool once the cloud acknowledged them.
async fn forward(
    cfg: Arc<BridgeConfig>,
    cloud: Arc<Side>,
    mut replayer: spool::Replayer,
    counters: Arc<Counters>,
) -> anyhow::Result<()> {
    let headers = {
        let mut h = async_nats::HeaderMap::new();
        for (k, v) in &cfg.headers {
            h.insert(k.as_str(), v.as_str());
        }
        h
    };
    let health = cloud.health();
    let mut attempt = 0u32;
    loop {
        let batch: Vec<Record> = replayer.next_batch(2048).await?;
        if batch.is_empty() {
            continue;
        }
        let mut batch = batch;
        while !health.is_connected() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // DropOldest may have discarded part of this batch while the cloud was away.
        let acked = replayer.acked_seq();
        batch.retain(|r| r.seq > acked);
        if batch.is_empty() {
            continue;
        }
        let result = match &*cloud {
            Side::Nats(n) => {
                n.publish_batch(
                    batch.iter().map(|r| (r.topic.clone(), r.payload.clone())),
                    Some(&headers),
                )
                .await
            }
            Side::Mqtt(m) => {
                m.publish_batch(batch.iter().map(|r| {
                    let q = cfg.rules.get(r.rule as usize).map(|x| x.qos).unwrap_or(1);
                    (r.topic.clone(), r.payload.clone(), mqtt::qos(q))
                }))
                .await
            }
        };
        match result {
            Ok(()) => {
                attempt = 0;
                if let Some(last) = batch.last() {
                    replayer.ack(last, batch.len() as u64, None);
                    counters
                        .last_forward_ms
                        .store(spool::now_ms(), Ordering::Relaxed);
                }
            }
            Err(e) => {
                counters.cloud_errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %e, "cloud publish failed; resending from the spool");
                replayer.rewind();
                tokio::time::sleep(backoff(attempt)).await;
                attempt = attempt.saturating_add(1);
            }
        }
    }
}

/// Cloud → edge, directly at the rule's QoS.
async fn downlink(
    cfg: Arc<BridgeConfig>,
    cloud: Arc<Side>,
    edge: Arc<Side>,
    mut inbound: mpsc::Receiver<Inbound>,
    counters: Arc<Counters>,
) -> anyhow::Result<()> {
    while let Some(m) = inbound.recv().await {
        if let Some((rule, topic)) = map_topic(
            &cfg.rules,
            Direction::CloudToEdge,
            m.topic(),
            cfg.cloud.protocol,
            cfg.edge.protocol,
        ) {
            let q = cfg.rules[rule].qos;
            let sent = match &*edge {
                Side::Mqtt(e) => e
                    .client
                    .publish_bytes(topic, mqtt::qos(q), false, m.payload())
                    .await
                    .map_err(|e| e.to_string()),
                Side::Nats(n) => n
                    .client
                    .publish(topic, m.payload())
                    .await
                    .map_err(|e| e.to_string()),
            };
            match sent {
                Ok(()) => {
                    counters.delivered_to_edge.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => tracing::warn!(error = %e, "cloud→edge delivery failed"),
            }
        }
        if let (Side::Mqtt(c), Inbound::Mqtt(p)) = (&*cloud, &m) {
            let _ = c.client.ack(p).await;
        }
    }
    anyhow::bail!("the cloud connection task stopped")
}
