//! `edgewire-agent bridge`: forwards edge topics to the cloud through a durable spool, and delivers cloud
//! topics to the edge (DESIGN §2 BridgeLink; the contract with the operator is the command line below).
//!
//! - Edge→cloud: each message on an `EdgeToCloud` rule's `from` is mapped (captures substituted into
//!   `to`), appended to the [`spool`], and acknowledged to the edge (MQTT PUBACK) only once the spool has
//!   fsync'd it. The forwarder replays the spool in order and removes records once the cloud acknowledged
//!   them (core NATS: a server round trip after them; JetStream PubAck; MQTT PUBACK). Delivery is at least once: after a cloud error
//!   or a crash, records not yet acknowledged are sent again (duplicates, never loss).
//! - Cloud→edge: delivered directly (no spool) at the rule's QoS.
//! - `/metrics` (prefix `edgewire_bridge_`, [`metrics`]), `/healthz`, `/readyz` (ready while the edge is connected:
//!   a cloud outage is what the spool is for; the cloud state is in the metrics and `status.runtime`).
//! - `--report-status`: server-side apply of `status.runtime` when it changes and every 20 s (see [`status`]).

pub mod amqp;
pub mod config;
pub mod http;
pub mod kafka;
pub mod metrics;
pub mod mqtt;
pub mod nats;
pub mod redelivery;
pub mod side;
pub mod spool;
pub mod status;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use std::collections::VecDeque;

use anyhow::Context;
use edgewire_api::v1alpha1::Protocol;
use edgewire_api::v1alpha1::{BridgeRule, Direction};
use futures::FutureExt;
use tokio::sync::mpsc;

use crate::connect::Health;
use config::{BridgeConfig, EndpointConfig};
use side::{AckFuture, Inbound, Outbound, Role, Side, SourceAck, Subscription};
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

/// Counters beyond the spool's own.
#[derive(Debug, Default)]
pub struct Counters {
    /// Edge messages taken into the spool.
    pub received: AtomicU64,
    /// Edge messages that matched no rule (acknowledged and ignored).
    pub unmatched: AtomicU64,
    /// Edge messages mapped to a name the cloud protocol does not allow (acknowledged, not spooled).
    pub refused: AtomicU64,
    /// Edge redeliveries (MQTT DUP) of messages already spooled: acknowledged, not spooled again
    /// ([`redelivery`]).
    pub edge_redeliveries: AtomicU64,
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
    /// The spool's bound in bytes (`spool.maxBytes`), exported so that alerts can compare the fill with it.
    pub spool_max_bytes: u64,
    pub counters: Arc<Counters>,
    pub edge: Arc<Health>,
    pub cloud: Arc<Health>,
}

impl Runtime {
    /// Age of the oldest waiting message in seconds, if any is waiting.
    pub fn oldest_age_seconds(&self) -> Option<u64> {
        if self.spool.messages() == 0 {
            return None;
        }
        let ms = self.spool.oldest_ms.load(Ordering::SeqCst);
        (ms > 0).then(|| spool::now_ms().saturating_sub(ms) / 1000)
    }
}

/// Everything a protocol module needs to connect one side.
pub struct Connect<'a> {
    pub endpoint: &'a EndpointConfig,
    pub cfg: &'a BridgeConfig,
    pub role: Role,
    pub subscriptions: Vec<Subscription>,
    /// Where received messages go. A module stops reading from its broker while this is full.
    pub inbound: mpsc::Sender<Inbound>,
}

impl Connect<'_> {
    /// A client id / name stable per BridgeLink and role (an MQTT persistent session and a JetStream
    /// durable consumer survive restarts under it).
    pub fn client_id(&self) -> String {
        format!(
            "edgewire-bridge-{}-{}-{}",
            self.cfg.namespace,
            self.cfg.name,
            self.role.as_str()
        )
    }
}

/// Connects the side described by `c.endpoint` with its protocol's module.
pub async fn connect(c: Connect<'_>) -> anyhow::Result<Arc<dyn Side>> {
    match c.endpoint.protocol {
        Protocol::Mqtt => mqtt::connect(c).await,
        Protocol::Nats => nats::connect(c).await,
        Protocol::Amqp091 => amqp::connect(c).await,
        Protocol::Kafka => kafka::connect(c).await,
    }
}

/// The topic separator of a protocol: `/` for MQTT, `.` for NATS subjects, AMQP routing keys and Kafka
/// topic names.
pub fn separator(p: Protocol) -> char {
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
    let tokens: Vec<&str> = topic.split(separator(source)).collect();
    rules
        .iter()
        .enumerate()
        .filter(|(_, r)| r.direction == dir)
        .find_map(|(i, r)| {
            let caps = r.from.captures(&tokens)?;
            let out = r.to.substitute(&caps)?;
            Some((i, out.join(&separator(target).to_string())))
        })
}

/// The subscriptions of the side that is the source of `dir`'s rules.
fn subscriptions(cfg: &BridgeConfig, dir: Direction) -> Vec<Subscription> {
    cfg.rules
        .iter()
        .enumerate()
        .filter(|(_, r)| r.direction == dir)
        .map(|(i, r)| Subscription {
            rule: i,
            pattern: r.from.clone(),
            qos: r.qos,
        })
        .collect()
}

/// Edge messages queued between the edge client and the spool.
const EDGE_QUEUE: usize = 256;

/// Edge messages taken from that queue at once: spooled with one `write`.
const EDGE_BATCH: usize = EDGE_QUEUE;

/// Runs the bridge until SIGTERM/SIGINT.
pub async fn run(args: BridgeArgs) -> anyhow::Result<()> {
    crate::tls::install_crypto_provider();
    let cfg = config::from_file(&args.config, &args.secrets_dir)?;
    // Before `open`: recovery deletes acknowledged segments, whose newest records the edge may redeliver.
    let recent = redelivery::Window::new(
        redelivery::WINDOW,
        spool::recent_edge_records(&args.spool_dir, redelivery::WINDOW),
    );
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
    // The senders stay open for the life of the bridge: a side without subscriptions sends nothing, and
    // its channel must not look closed.
    // What the edge client delivers waits here until the spool takes it: few messages, so that large
    // ones cannot pile up in memory (the edge broker keeps the rest; the spool batches its own queue).
    let (edge_tx, edge_in) = mpsc::channel::<Inbound>(EDGE_QUEUE);
    let (cloud_tx, cloud_in) = mpsc::channel::<Inbound>(8192);
    let _open = (edge_tx.clone(), cloud_tx.clone());
    let edge = connect(Connect {
        endpoint: &cfg.edge,
        cfg: &cfg,
        role: Role::Edge,
        subscriptions: subscriptions(&cfg, Direction::EdgeToCloud),
        inbound: edge_tx,
    })
    .await
    .context("edge")?;
    let cloud = connect(Connect {
        endpoint: &cfg.cloud,
        cfg: &cfg,
        role: Role::Cloud,
        subscriptions: subscriptions(&cfg, Direction::CloudToEdge),
        inbound: cloud_tx,
    })
    .await
    .context("cloud")?;
    let counters = Arc::new(Counters::default());
    let rt = Arc::new(Runtime {
        spool: spool_stats,
        spool_max_bytes: cfg.spool_max_bytes,
        counters: counters.clone(),
        edge: edge.health(),
        cloud: cloud.health(),
    });
    let cfg = Arc::new(cfg);

    let listener = tokio::net::TcpListener::bind(args.http_addr)
        .await
        .with_context(|| format!("binding {}", args.http_addr))?;
    // The bound address, for an `--http-addr` with port 0.
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(http_addr = %addr, "serving /metrics and /healthz");
    }
    tokio::spawn(http::serve(listener, rt.clone()));
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(ingest(
        cfg.clone(),
        cloud.clone(),
        edge_in,
        appender,
        recent,
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

/// Edge → spool; the edge is acknowledged once the record is durable. An edge redelivery of a message
/// already spooled is acknowledged once its record is durable, and not spooled again ([`redelivery`]).
/// A message that matches no rule or that the cloud could never take is acknowledged without being
/// spooled, once the records before it are durable: acknowledgements keep the order of arrival.
async fn ingest(
    cfg: Arc<BridgeConfig>,
    cloud: Arc<dyn Side>,
    mut inbound: mpsc::Receiver<Inbound>,
    mut appender: spool::Appender,
    mut recent: redelivery::Window,
    counters: Arc<Counters>,
) -> anyhow::Result<()> {
    // Acknowledgements go out in the order the messages arrived (MQTT 3.1.1 §4.6 asks it of PUBACKs), each
    // once the spool's fsync covered its record, or, for a message not spooled, every record before it.
    let (ack_tx, mut ack_rx) = mpsc::unbounded_channel::<(u64, SourceAck)>();
    let mut durable = appender.durable();
    tokio::spawn(async move {
        let mut buf = Vec::with_capacity(4096);
        while ack_rx.recv_many(&mut buf, 4096).await > 0 {
            for (seq, ack) in buf.drain(..) {
                if *durable.borrow() < seq && durable.wait_for(|d| *d >= seq).await.is_err() {
                    return;
                }
                ack.await;
            }
        }
    });
    let cloud_proto = cfg.cloud.protocol;
    let edge_proto = cfg.edge.protocol;
    // What the edge delivered meanwhile is taken at once and written with one `write`.
    let mut batch = Vec::with_capacity(EDGE_BATCH);
    while inbound.recv_many(&mut batch, EDGE_BATCH).await > 0 {
        for m in batch.drain(..) {
            let mapped = map_topic(
                &cfg.rules,
                Direction::EdgeToCloud,
                &m.topic,
                edge_proto,
                cloud_proto,
            );
            let Some((rule, topic)) = mapped else {
                counters.unmatched.fetch_add(1, Ordering::Relaxed);
                // Not spooled, but acknowledged in its turn: after the spooled messages before it.
                if let Some(ack) = m.ack {
                    let _ = ack_tx.send((appender.last_seq(), ack));
                }
                continue;
            };
            let fits = cloud
                .check_topic(&topic)
                .and_then(|()| cloud.check_size(&topic, m.payload.len()))
                .and_then(|()| spool_fits(&topic, m.payload.len()));
            if let Err(why) = fits {
                // It could never be delivered and would hold up everything behind it in the spool.
                let n = counters.refused.fetch_add(1, Ordering::Relaxed);
                if n.is_power_of_two() || n == 0 {
                    tracing::warn!(edge_topic = %m.topic, reason = %why, refused = n + 1, "edge message refused: the cloud cannot take it (topic not valid there, or too large)");
                }
                if let Some(ack) = m.ack {
                    let _ = ack_tx.send((appender.last_seq(), ack));
                }
                continue;
            }
            let edge = m
                .packet
                .map(|p| (p.id, spool::edge_hash(&topic, &m.payload)));
            match (m.packet, edge) {
                (Some(p), Some((id, hash))) if p.dup => {
                    if let Some(seq) = recent.redelivered(id, hash) {
                        counters.edge_redeliveries.fetch_add(1, Ordering::Relaxed);
                        if let Some(ack) = m.ack {
                            let _ = ack_tx.send((seq, ack));
                        }
                        continue;
                    }
                }
                (Some(_), _) => recent.first_delivery(),
                _ => {}
            }
            appender.reserve(topic.len() + m.payload.len()).await?;
            let seq = appender
                .push(Incoming {
                    rule: rule as u16,
                    topic,
                    payload: m.payload,
                    edge_id: edge.map_or(0, |(id, _)| id),
                })
                .await?;
            if let Some((id, hash)) = edge {
                recent.remember(id, hash, seq);
            }
            counters.received.fetch_add(1, Ordering::Relaxed);
            if let Some(ack) = m.ack {
                let _ = ack_tx.send((seq, ack));
            }
        }
        appender.flush().await?;
    }
    anyhow::bail!("the edge connection task stopped")
}

/// A record the spool can read back: it refuses longer bodies when reading (they look like a damaged
/// length), so a larger message is refused before the spool like one the cloud cannot take.
fn spool_fits(topic: &str, payload_len: usize) -> Result<(), String> {
    if topic.len() > usize::from(u16::MAX) || topic.len() + payload_len > spool::MAX_RECORD {
        return Err(format!(
            "{} bytes of topic and payload exceed the spool's record limit of {} bytes",
            topic.len() + payload_len,
            spool::MAX_RECORD
        ));
    }
    Ok(())
}

/// Records sent to the cloud at most, waiting for their acknowledgements.
const WINDOW: usize = 4096;

/// Payload bytes sent to the cloud at most, waiting for their acknowledgements: with large messages the
/// window is bounded by this, not by [`WINDOW`] (5,000 × 128 KiB after an outage must fit the pod's
/// memory).
const WINDOW_BYTES: usize = 8 * 1024 * 1024;

/// Spool → cloud, in order and pipelined: records are sent while earlier ones wait for their
/// acknowledgements, and leave the spool as the acknowledgements come back (in order). A failure
/// resends everything after the last acknowledged record.
async fn forward(
    cfg: Arc<BridgeConfig>,
    cloud: Arc<dyn Side>,
    mut replayer: spool::Replayer,
    counters: Arc<Counters>,
) -> anyhow::Result<()> {
    let health = cloud.health();
    let mut backoff = crate::retry::BRIDGE.backoff();
    let mut pending: VecDeque<(Sent, AckFuture)> = VecDeque::with_capacity(WINDOW);
    let mut pending_bytes = 0usize;
    let ids = MessageIds {
        site: cfg.site_id.clone(),
        spool: replayer.spool_id().to_string(),
    };
    // Records handed out that a failed round neither sent nor queued.
    let mut unsent: Vec<u64> = Vec::new();
    loop {
        let room = WINDOW - pending.len();
        let room_bytes = WINDOW_BYTES.saturating_sub(pending_bytes);
        let waiting = !pending.is_empty();
        let failure: anyhow::Error = tokio::select! {
            biased;
            r = async { pending.front_mut().expect("guarded").1.as_mut().await }, if waiting => {
                match r {
                    Ok(()) => {
                        let mut n = 1u64;
                        let mut last = pending.pop_front().expect("guarded").0;
                        pending_bytes -= last.bytes;
                        let mut failed = None;
                        // Everything acknowledged since is released in one step.
                        while let Some((_, f)) = pending.front_mut() {
                            match f.as_mut().now_or_never() {
                                Some(Ok(())) => {
                                    last = pending.pop_front().expect("guarded").0;
                                    pending_bytes -= last.bytes;
                                    n += 1;
                                }
                                Some(Err(e)) => {
                                    failed = Some(e);
                                    break;
                                }
                                None => break,
                            }
                        }
                        replayer.ack_through(last.seq, last.end_pos, n, pending.front().map(|(r, _)| r.ts_ms));
                        counters.last_forward_ms.store(spool::now_ms(), Ordering::Relaxed);
                        backoff.reset();
                        match failed {
                            None => continue,
                            Some(e) => e,
                        }
                    }
                    Err(e) => e,
                }
            }
            batch = replayer.next_batch_within(room, room_bytes), if room > 0 && room_bytes > 0 && health.is_connected() => {
                // DropOldest may have discarded records while the cloud was away.
                let acked = replayer.acked_seq();
                let (send, passed): (Vec<Record>, Vec<Record>) =
                    batch?.into_iter().partition(|r| r.seq > acked);
                replayer.unsent(passed.len() as u64);
                match send_all(&cfg, &*cloud, &ids, send, &mut pending, &mut pending_bytes).await {
                    Ok(()) => continue,
                    Err((e, rest)) => {
                        unsent = rest;
                        e
                    }
                }
            }
            else => {
                // Nothing in flight and the cloud is down: wait for it.
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        counters.cloud_errors.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(error = %format!("{failure:#}"), "cloud publish failed; resending from the spool");
        replayer.rewind_with(
            pending
                .drain(..)
                .map(|(r, _)| r.seq)
                .chain(unsent.drain(..)),
        );
        pending_bytes = 0;
        backoff.wait().await;
    }
}

/// What the forwarder keeps of a record in flight: its topic and payload went to the cloud client.
struct Sent {
    seq: u64,
    end_pos: u64,
    ts_ms: u64,
    /// Topic and payload bytes, held by the client until the acknowledgement.
    bytes: usize,
}

/// Names every spooled record for good: `<site id>-<spool id>-<sequence number>`, JetStream's
/// `Nats-Msg-Id`, so the stream's duplicate window absorbs what is sent again after a crash or a failed
/// round. The spool id tells a new spool (numbering from 1 again) from the old one.
struct MessageIds {
    site: String,
    spool: String,
}

impl MessageIds {
    fn of(&self, seq: u64) -> String {
        format!("{}-{}-{}", self.site, self.spool, seq)
    }
}

async fn send_all(
    cfg: &BridgeConfig,
    cloud: &dyn Side,
    ids: &MessageIds,
    batch: Vec<Record>,
    pending: &mut VecDeque<(Sent, AckFuture)>,
    pending_bytes: &mut usize,
) -> Result<(), (anyhow::Error, Vec<u64>)> {
    let named = cloud.sends_message_ids();
    let mut batch = batch.into_iter();
    while let Some(r) = batch.next() {
        let qos = cfg.rules.get(r.rule as usize).map(|x| x.qos).unwrap_or(1);
        let s = Sent {
            seq: r.seq,
            end_pos: r.end_pos,
            ts_ms: r.ts_ms,
            bytes: r.payload.len() + r.topic.len(),
        };
        // Topic and payload move to the client: a resend reads them from the spool again.
        let sent = cloud
            .send(Outbound {
                topic: r.topic,
                payload: r.payload,
                qos,
                enrich: true,
                id: named.then(|| ids.of(r.seq)),
            })
            .await;
        match sent {
            Ok(f) => {
                *pending_bytes += s.bytes;
                pending.push_back((s, f));
            }
            Err(e) => {
                let rest = std::iter::once(s.seq).chain(batch.map(|r| r.seq)).collect();
                return Err((e, rest));
            }
        }
    }
    Ok(())
}

/// Cloud → edge, directly at the rule's QoS; the cloud message is acknowledged once the edge
/// acknowledged the delivery. A delivery the edge did not acknowledge (the edge down, a refusal) is sent
/// again with backoff until it is, and only then acknowledged to the cloud: a command is never dropped.
/// Deliveries are pipelined, so after a failure a retried command may arrive after later ones.
async fn downlink(
    cfg: Arc<BridgeConfig>,
    edge: Arc<dyn Side>,
    mut inbound: mpsc::Receiver<Inbound>,
    counters: Arc<Counters>,
) -> anyhow::Result<()> {
    type Delivery = (AckFuture, Command, Option<SourceAck>);
    let (done_tx, mut done_rx) = mpsc::channel::<Delivery>(4096);
    let c = counters.clone();
    let e = edge.clone();
    tokio::spawn(async move {
        while let Some((mut delivered, cmd, ack)) = done_rx.recv().await {
            let mut backoff = crate::retry::BRIDGE.backoff();
            loop {
                match delivered.await {
                    Ok(()) => break,
                    Err(err) => {
                        tracing::warn!(error = %format!("{err:#}"), topic = %cmd.topic, "cloud→edge delivery not acknowledged; sending it again");
                        backoff.wait().await;
                        delivered = deliver(&*e, &cmd).await;
                    }
                }
            }
            c.delivered_to_edge.fetch_add(1, Ordering::Relaxed);
            if let Some(ack) = ack {
                ack.await;
            }
        }
    });
    while let Some(m) = inbound.recv().await {
        let Some((rule, topic)) = map_topic(
            &cfg.rules,
            Direction::CloudToEdge,
            &m.topic,
            cfg.cloud.protocol,
            cfg.edge.protocol,
        ) else {
            if let Some(ack) = m.ack {
                ack.await;
            }
            continue;
        };
        if let Err(why) = edge.check_topic(&topic) {
            tracing::warn!(cloud_topic = %m.topic, reason = %why, "cloud message not delivered: its mapped topic is not valid on the edge");
            if let Some(ack) = m.ack {
                ack.await;
            }
            continue;
        }
        let cmd = Command {
            topic,
            payload: m.payload,
            qos: cfg.rules[rule].qos,
        };
        let f = deliver(&*edge, &cmd).await;
        if done_tx.send((f, cmd, m.ack)).await.is_err() {
            break;
        }
    }
    anyhow::bail!("the cloud connection task stopped")
}

/// A cloud→edge message on its way.
struct Command {
    topic: String,
    payload: bytes::Bytes,
    qos: u8,
}

/// Sends `cmd` to the edge, retrying with backoff while the edge cannot take it (down); the future
/// resolves with the edge's acknowledgement.
async fn deliver(edge: &dyn Side, cmd: &Command) -> AckFuture {
    let mut backoff = crate::retry::BRIDGE.backoff();
    loop {
        let sent = edge
            .send(Outbound {
                topic: cmd.topic.clone(),
                payload: cmd.payload.clone(),
                qos: cmd.qos,
                enrich: false,
                id: None,
            })
            .await;
        match sent {
            Ok(f) => return f,
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), topic = %cmd.topic, "cloud→edge delivery failed; retrying");
                backoff.wait().await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;
    use std::sync::Mutex;

    use bytes::Bytes;
    use edgewire_api::v1alpha1::Overflow;
    use futures::future::BoxFuture;
    use side::Packet;

    /// A cloud that refuses every subject with `bad` in it and is never sent to (ingest only checks).
    struct Cloud(Arc<Health>);

    impl Side for Cloud {
        fn health(&self) -> Arc<Health> {
            self.0.clone()
        }
        fn check_topic(&self, topic: &str) -> Result<(), String> {
            if topic.contains("bad") {
                return Err("not a subject this cloud takes".into());
            }
            Ok(())
        }
        fn send(&self, _msg: Outbound) -> BoxFuture<'_, anyhow::Result<AckFuture>> {
            Box::pin(async { anyhow::bail!("ingest does not send to the cloud") })
        }
    }

    /// MQTT 3.1.1 §4.6: a client sends PUBACKs in the order the PUBLISHes arrived. A message the bridge does
    /// not spool (no rule matches it; the cloud would refuse it) must not be acknowledged ahead of spooled
    /// messages that came before it and still wait for the fsync.
    #[tokio::test]
    async fn edge_acknowledgements_keep_the_order_of_arrival() {
        let dir = tempfile::tempdir().unwrap();
        // Its EdgeToCloud rule maps `local/telemetry/#`: `local/other/x` matches no rule.
        let cfg = config::from_yaml(config::tests::DOC, Path::new("/nonexistent")).unwrap();
        let (appender, mut replayer, _stats) = spool::open(SpoolOptions {
            dir: dir.path().to_path_buf(),
            max_bytes: 1 << 20,
            overflow: Overflow::DropOldest,
            segment_bytes: 0,
        })
        .unwrap();
        let acked = Arc::new(Mutex::new(Vec::<String>::new()));
        let (tx, rx) = mpsc::channel(16);
        // Spooled, no rule, spooled, refused by the cloud, spooled.
        let topics = [
            "local/telemetry/a",
            "local/other/x",
            "local/telemetry/b",
            "local/telemetry/bad",
            "local/telemetry/c",
        ];
        for (id, topic) in (1u16..).zip(topics) {
            let (log, t) = (acked.clone(), topic.to_string());
            tx.send(Inbound {
                topic: topic.to_string(),
                payload: Bytes::from_static(b"reading"),
                ack: Some(Box::pin(async move { log.lock().unwrap().push(t) })),
                packet: Some(Packet { id, dup: false }),
            })
            .await
            .unwrap();
        }
        let counters = Arc::new(Counters::default());
        let task = tokio::spawn(ingest(
            Arc::new(cfg),
            Arc::new(Cloud(Arc::default())),
            rx,
            appender,
            redelivery::Window::new(redelivery::WINDOW, Vec::new()),
            counters.clone(),
        ));
        tokio::time::timeout(Duration::from_secs(30), async {
            while acked.lock().unwrap().len() < topics.len() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("every message acknowledged");
        assert_eq!(*acked.lock().unwrap(), topics);
        assert_eq!(counters.received.load(Ordering::SeqCst), 3);
        assert_eq!(counters.unmatched.load(Ordering::SeqCst), 1);
        assert_eq!(counters.refused.load(Ordering::SeqCst), 1);
        // The edge gone, ingest stops and drops the appender; the replayer sees the spool stopped once the
        // final cursor is written, so the directory can go.
        drop(tx);
        assert!(task.await.unwrap().is_err());
        while replayer.next_batch(1000).await.is_ok() {}
    }
}
