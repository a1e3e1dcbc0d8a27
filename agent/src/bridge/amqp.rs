//! AMQP 0-9-1 side of the bridge (lapin): a cloud target such as RabbitMQ.
//!
//! Sending (edge→cloud): every message is published to the endpoint's `exchange` (default `amq.topic`,
//! which every RabbitMQ virtual host has) with the mapped topic as routing key, persistent (delivery
//! mode 2), content type `application/octet-stream`, and `headers` plus `edge-site-id` as AMQP message
//! headers (string values). The channel is in publisher-confirm mode and every publish is `mandatory`:
//! the [`AckFuture`] resolves on the broker's `basic.ack`; a `basic.nack`, a channel or connection
//! error, 30 s without a confirm, or a `basic.return` (no queue is bound for that routing key) fail it.
//! An unroutable message is thus never acknowledged into the void: it stays in the spool, and is sent
//! again until a binding exists (one message per retry while the broker returns them, see
//! [`AmqpSide`]). Another exchange than `amq.topic` must exist: a passive declare checks
//! it on every connect, and a missing one keeps the side down with the reason in its health.
//!
//! Receiving (cloud→edge): a durable queue named [`Connect::client_id`] (stable per BridgeLink), bound
//! to the exchange with each rule's `from` pattern, consumed with manual acknowledgements: a message is
//! acknowledged (`basic.ack`) once the edge acknowledged its delivery, otherwise the broker delivers it
//! again after a reconnect. The queue, its bindings and the consumer are declared again on every connect.
//!
//! lapin's own recovery is off: a supervisor task reconnects with [`crate::retry::BRIDGE`].

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use lapin::message::BasicReturnMessage;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::uri::{AMQPUri, AMQPUserInfo};
use lapin::{BasicProperties, Channel, Confirmation, Connection, ExchangeKind, PublisherConfirm};
use tokio::sync::{mpsc, oneshot, watch};

use super::Connect;
use super::config::{Auth, BridgeConfigError, EndpointConfig};
use super::side::{AckFuture, Inbound, Outbound, Side, Subscription};
use crate::connect::amqp::Connector;
use crate::connect::{self, Health};

/// The exchange when the endpoint names none.
pub const DEFAULT_EXCHANGE: &str = "amq.topic";

/// The AMQP limit on a routing key (a short string).
pub const MAX_ROUTING_KEY: usize = 255;

const ACK_TIMEOUT: Duration = Duration::from_secs(30);
/// Heartbeat asked for unless the URL sets `?heartbeat=`: a silent network failure is noticed within
/// about twice this.
const HEARTBEAT_SECS: u16 = 15;
/// Unacknowledged cloud→edge deliveries at most (they wait for the edge's acknowledgement).
const PREFETCH: u16 = 1000;
const CONTENT_TYPE: &str = "application/octet-stream";

/// A routing key a message can be published with: not empty, at most 255 bytes.
/// The largest message sent: RabbitMQ's default `max_message_size` since 4.0 (16 MiB; 128 MiB before).
pub const MAX_MESSAGE: usize = 16 * 1024 * 1024;

pub(crate) fn check_routing_key(key: &str) -> Result<(), String> {
    if key.is_empty() {
        return Err("an empty AMQP routing key".into());
    }
    if key.len() > MAX_ROUTING_KEY {
        return Err(format!(
            "{key:?} is longer than {MAX_ROUTING_KEY} bytes, the AMQP routing key limit"
        ));
    }
    Ok(())
}

/// Everything needed to (re)connect.
struct Target {
    /// The connection, named [`Connect::client_id`] (also the queue name and consumer tag).
    conn: Connector,
    exchange: String,
    subscriptions: Vec<Subscription>,
    /// Set when the broker returned a message, cleared when a message was routed again.
    returning: Arc<AtomicBool>,
}

impl Target {
    fn new(c: &Connect<'_>) -> Result<Self, BridgeConfigError> {
        let e: &EndpointConfig = c.endpoint;
        let (uri, secrets) = uri(e, &c.cfg.site_id)?;
        let conn = Connector::new(uri, &e.tls, c.client_id(), secrets)
            .map_err(|err| BridgeConfigError(format!("TLS: {err}")))?;
        Ok(Target {
            conn,
            exchange: e
                .exchange
                .clone()
                .unwrap_or_else(|| DEFAULT_EXCHANGE.to_string()),
            subscriptions: c.subscriptions.clone(),
            returning: Arc::new(AtomicBool::new(false)),
        })
    }

    /// Connection name, queue name and consumer tag.
    fn name(&self) -> &str {
        self.conn.name()
    }

    fn redact(&self, msg: &str) -> String {
        self.conn.redact(msg)
    }

    fn describe(&self) -> String {
        self.conn.describe()
    }
}

/// The URL with the endpoint's credentials (`auth` wins over credentials in the URL), `amqps` when TLS
/// is on, and a heartbeat; plus the passwords to keep out of error texts.
fn uri(e: &EndpointConfig, site_id: &str) -> Result<(AMQPUri, Vec<String>), BridgeConfigError> {
    let mut uri = connect::amqp::uri(&e.url, e.tls.enabled)
        .map_err(|m| BridgeConfigError(format!("endpoint url is {m}")))?;
    let mut secrets = vec![uri.authority.userinfo.password.clone()];
    match &e.auth {
        Auth::None => {}
        // RabbitMQ's OAuth 2 backend takes the token as the password (the user name is not checked).
        Auth::Token(t) => {
            uri.authority.userinfo = AMQPUserInfo {
                username: site_id.to_string(),
                password: t.expose().to_string(),
            };
        }
        Auth::UserPassword { username, password } => {
            uri.authority.userinfo = AMQPUserInfo {
                username: username.clone(),
                password: password.expose().to_string(),
            };
        }
    }
    secrets.push(uri.authority.userinfo.password.clone());
    if uri.query.heartbeat.is_none() {
        uri.query.heartbeat = Some(HEARTBEAT_SECS);
    }
    Ok((uri, secrets))
}

/// A publisher confirm and who waits for its outcome.
type Waiter = (PublisherConfirm, oneshot::Sender<Result<(), String>>);

/// The current publish channel.
struct Link {
    channel: Channel,
    /// Publisher confirms in publish (delivery tag) order, to [`confirmations`].
    confirms: mpsc::UnboundedSender<Waiter>,
}

pub struct AmqpSide {
    link: watch::Receiver<Option<Arc<Link>>>,
    health: Arc<Health>,
    exchange: String,
    headers: FieldTable,
    /// Keeps a publish and the queueing of its confirm together (confirms are matched in order).
    order: tokio::sync::Mutex<()>,
    /// While the broker returns messages, one message at a time is sent, and `send` waits for its
    /// confirm: a routing key without a queue then costs one returned message per retry of the
    /// forwarder, not a window of 4096.
    returning: Arc<AtomicBool>,
}

/// Connects in the background; fails only on configuration (URL, TLS files).
pub async fn connect(c: Connect<'_>) -> anyhow::Result<Arc<dyn Side>> {
    let target = Target::new(&c).context(c.role.as_str())?;
    let mut headers = FieldTable::default();
    for (k, v) in &c.cfg.headers {
        // `try_new`: lapin's `From<&str>` panics over 255 bytes; the configuration was checked.
        let key = ShortString::try_new(k.as_str())
            .map_err(|e| BridgeConfigError(format!("spec.headers: {k:?}: {e}")))
            .context(c.role.as_str())?;
        headers.insert(key, AMQPValue::LongString(v.as_str().into()));
    }
    let exchange = target.exchange.clone();
    let returning = target.returning.clone();
    let health = Arc::new(Health::default());
    let (link_tx, link) = watch::channel(None);
    tokio::spawn(supervise(target, link_tx, health.clone(), c.inbound));
    Ok(Arc::new(AmqpSide {
        link,
        health,
        exchange,
        headers,
        order: tokio::sync::Mutex::new(()),
        returning,
    }))
}

/// Keeps a connection up: connect, declare, publish channel in confirm mode, consumer; on loss, again.
async fn supervise(
    t: Target,
    link: watch::Sender<Option<Arc<Link>>>,
    health: Arc<Health>,
    inbound: mpsc::Sender<Inbound>,
) {
    let mut backoff = crate::retry::BRIDGE.backoff();
    loop {
        let (was_up, why) = session(&t, &link, &health, &inbound).await;
        link.send_replace(None);
        health.set_down(why);
        if was_up {
            backoff.reset();
        }
        backoff.wait().await;
    }
}

/// One connection's life: returns whether it was up, and why it ended.
async fn session(
    t: &Target,
    link: &watch::Sender<Option<Arc<Link>>>,
    health: &Health,
    inbound: &mpsc::Sender<Inbound>,
) -> (bool, String) {
    let conn = match t.conn.open().await {
        Ok(c) => c,
        Err(e) => {
            return (
                false,
                format!("cannot connect to the AMQP broker at {}: {e}", t.describe()),
            );
        }
    };
    let setup = async {
        let ch = conn
            .create_channel()
            .await
            .map_err(|e| format!("opening a channel: {e}"))?;
        if t.exchange != DEFAULT_EXCHANGE {
            ch.exchange_declare(
                t.exchange.as_str().into(),
                ExchangeKind::Topic,
                ExchangeDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .map_err(|e| {
                format!(
                    "exchange {:?} is not usable on {} (an exchange other than {DEFAULT_EXCHANGE} must exist, of type topic): {e}",
                    t.exchange,
                    t.describe()
                )
            })?;
        }
        ch.confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(|e| format!("enabling publisher confirms: {e}"))?;
        let consumer = if t.subscriptions.is_empty() {
            None
        } else {
            Some(consume(&conn, t, inbound.clone()).await?)
        };
        Ok::<_, String>((ch, consumer))
    };
    let (ch, consumer) = match setup.await {
        Ok(x) => x,
        Err(e) => {
            let _ = conn.close(200, "bye".into()).await;
            return (false, t.redact(&e));
        }
    };
    let (confirms, rx) = mpsc::unbounded_channel();
    let failure = Arc::new(Mutex::new(None));
    tokio::spawn(confirmations(rx, failure.clone(), t.returning.clone()));
    link.send_replace(Some(Arc::new(Link {
        channel: ch.clone(),
        confirms,
    })));
    health.set_connected();
    tracing::info!(broker = %t.describe(), exchange = %t.exchange, bindings = t.subscriptions.len(), "connected to the AMQP broker");
    let why = loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        if !conn.status().connected() {
            break "lost the connection to the AMQP broker".to_string();
        }
        if !ch.status().connected() {
            let detail = failure.lock().ok().and_then(|f| f.clone());
            break format!(
                "the AMQP publish channel closed: {}",
                detail.as_deref().unwrap_or("no reason given")
            );
        }
        if let Some((cch, task)) = &consumer
            && (!cch.status().connected() || task.is_finished())
        {
            break "the AMQP consumer channel closed".to_string();
        }
    };
    link.send_replace(None);
    let why = match consumer {
        Some((_, task)) if task.is_finished() => match task.await {
            Ok(reason) => format!("{why}: {reason}"),
            Err(_) => why,
        },
        Some((_, task)) => {
            task.abort();
            why
        }
        None => why,
    };
    if conn.status().connected() {
        let _ = tokio::time::timeout(Duration::from_secs(5), conn.close(200, "bye".into())).await;
    }
    (true, t.redact(&why))
}

/// The cloud→edge queue: declared durable, bound with every rule's pattern, consumed with manual acks.
/// Returns the channel and the task handing deliveries to the bridge (it ends with the reason).
async fn consume(
    conn: &Connection,
    t: &Target,
    inbound: mpsc::Sender<Inbound>,
) -> Result<(Channel, tokio::task::JoinHandle<String>), String> {
    let ch = conn
        .create_channel()
        .await
        .map_err(|e| format!("opening the consumer channel: {e}"))?;
    ch.basic_qos(PREFETCH, BasicQosOptions::default())
        .await
        .map_err(|e| format!("basic.qos: {e}"))?;
    ch.queue_declare(
        t.name().into(),
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .map_err(|e| format!("declaring queue {}: {e}", t.name()))?;
    for s in &t.subscriptions {
        let key = s.pattern.to_amqp();
        ch.queue_bind(
            t.name().into(),
            t.exchange.as_str().into(),
            key.as_str().into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(|e| {
            format!(
                "binding queue {} to exchange {:?} with {key:?}: {e}",
                t.name(),
                t.exchange
            )
        })?;
    }
    let mut consumer = ch
        .basic_consume(
            t.name().into(),
            t.name().into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(|e| format!("consuming from queue {}: {e}", t.name()))?;
    let task = tokio::spawn(async move {
        while let Some(d) = consumer.next().await {
            let d = match d {
                Ok(d) => d,
                Err(e) => return format!("consumer: {e}"),
            };
            let acker = d.acker;
            let msg = Inbound {
                packet: None,
                topic: d.routing_key.as_str().to_string(),
                payload: Bytes::from(d.data),
                ack: Some(Box::pin(async move {
                    let _ = acker.ack(BasicAckOptions::default()).await;
                })),
            };
            if inbound.send(msg).await.is_err() {
                return "the bridge stopped".to_string();
            }
        }
        "the consumer was cancelled".to_string()
    });
    Ok((ch, task))
}

/// Why a returned message was not delivered.
fn unroutable(m: &BasicReturnMessage) -> String {
    format!(
        "no queue is bound to exchange {:?} for routing key {:?} (the broker returned the message: {} {}); it stays in the spool until a binding exists",
        m.delivery.exchange.as_str(),
        m.delivery.routing_key.as_str(),
        m.reply_code,
        m.reply_text.as_str()
    )
}

/// Resolves the publisher confirms of one channel, in delivery-tag order.
///
/// lapin hands a returned (unroutable) message to whichever confirm of the same `basic.ack` frame it
/// completes first, which with a `multiple` ack need not be the returned message's own. So the
/// confirms that resolved together are judged together: if any carries a returned message, none of
/// them counts as acknowledged (the spool sends them again: duplicates at worst, never a loss).
async fn confirmations(
    mut rx: mpsc::UnboundedReceiver<Waiter>,
    failure: Arc<Mutex<Option<String>>>,
    returning: Arc<AtomicBool>,
) {
    let mut queue: VecDeque<Waiter> = VecDeque::new();
    loop {
        if queue.is_empty() {
            match rx.recv().await {
                Some(w) => queue.push_back(w),
                None => return,
            }
        }
        let first = match queue.front_mut() {
            Some((confirm, _)) => confirm.await,
            None => continue,
        };
        let mut group = Vec::new();
        if let Some((_, tx)) = queue.pop_front() {
            group.push((first, tx));
        }
        // Confirms of the same frame resolved at the same moment; some may not be queued yet.
        while let Ok(w) = rx.try_recv() {
            queue.push_back(w);
        }
        while let Some((confirm, _)) = queue.front_mut() {
            let Some(r) = confirm.now_or_never() else {
                break;
            };
            if let Some((_, tx)) = queue.pop_front() {
                group.push((r, tx));
            }
        }
        let returned = group.iter().find_map(|(r, _)| match r {
            Ok(Confirmation::Ack(Some(m))) | Ok(Confirmation::Nack(Some(m))) => Some(unroutable(m)),
            _ => None,
        });
        if returned.is_some() {
            returning.store(true, Ordering::SeqCst);
        }
        for (r, tx) in group {
            let outcome = match r {
                Err(e) => {
                    let e = format!("AMQP channel error before the publisher confirm: {e}");
                    if let Ok(mut f) = failure.lock() {
                        *f = Some(e.clone());
                    }
                    Err(e)
                }
                Ok(Confirmation::Nack(_)) => Err("the AMQP broker answered basic.nack".into()),
                Ok(_) => match &returned {
                    Some(why) => Err(why.clone()),
                    None => Ok(()),
                },
            };
            let _ = tx.send(outcome);
        }
    }
}

/// The outcome of one publish, from [`confirmations`].
async fn confirmed(rx: oneshot::Receiver<Result<(), String>>) -> anyhow::Result<()> {
    match tokio::time::timeout(ACK_TIMEOUT, rx).await {
        Err(_) => anyhow::bail!("no publisher confirm from the AMQP broker in {ACK_TIMEOUT:?}"),
        Ok(Err(_)) => anyhow::bail!("the AMQP publish channel closed before the publisher confirm"),
        Ok(Ok(r)) => r.map_err(anyhow::Error::msg),
    }
}

impl Side for AmqpSide {
    fn health(&self) -> Arc<Health> {
        self.health.clone()
    }

    fn check_topic(&self, topic: &str) -> Result<(), String> {
        check_routing_key(topic)
    }

    /// RabbitMQ closes the channel on a message over its `max_message_size`, which AMQP does not
    /// announce; [`MAX_MESSAGE`] is RabbitMQ 4's default. Without the check such a message would be
    /// resent forever, each time taking the channel down.
    fn check_size(&self, topic: &str, payload_len: usize) -> Result<(), String> {
        if payload_len > MAX_MESSAGE {
            return Err(format!(
                "a message of {payload_len} bytes to {topic:?} exceeds {MAX_MESSAGE} bytes, RabbitMQ's default max_message_size"
            ));
        }
        Ok(())
    }

    fn send(&self, m: Outbound) -> BoxFuture<'_, anyhow::Result<AckFuture>> {
        Box::pin(async move {
            self.health.require()?;
            let link = self
                .link
                .borrow()
                .clone()
                .ok_or_else(|| anyhow::anyhow!("not connected to the AMQP broker"))?;
            let mut props = BasicProperties::default()
                .with_delivery_mode(2)
                .with_content_type(CONTENT_TYPE.into());
            if m.enrich {
                props = props.with_headers(self.headers.clone());
            }
            let rx = {
                let _order = self.order.lock().await;
                let publish = link.channel.basic_publish(
                    self.exchange.as_str().into(),
                    m.topic.as_str().into(),
                    BasicPublishOptions {
                        mandatory: true,
                        immediate: false,
                    },
                    &m.payload,
                    props,
                );
                // The broker stops reading while it is blocked (a memory or disk alarm).
                let confirm = tokio::time::timeout(ACK_TIMEOUT, publish)
                    .await
                    .map_err(|_| {
                        anyhow::anyhow!("the AMQP broker took no message in {ACK_TIMEOUT:?}")
                    })?
                    .map_err(|e| anyhow::anyhow!("AMQP publish: {e}"))?;
                let (tx, rx) = oneshot::channel();
                link.confirms
                    .send((confirm, tx))
                    .map_err(|_| anyhow::anyhow!("the AMQP publish channel is gone"))?;
                rx
            };
            if self.returning.load(Ordering::SeqCst) {
                // Probing: this message's fate decides whether the next one goes out.
                confirmed(rx).await?;
                self.returning.store(false, Ordering::SeqCst);
                return Ok(Box::pin(async { Ok(()) }) as AckFuture);
            }
            Ok(Box::pin(confirmed(rx)) as AckFuture)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connect::amqp::redact;
    use crate::secret::Secret;
    use crate::tls::TlsSettings;
    use lapin::uri::AMQPScheme;

    fn endpoint(url: &str, auth: Auth, tls: bool) -> EndpointConfig {
        EndpointConfig {
            protocol: edgewire_api::v1alpha1::Protocol::Amqp091,
            url: url.into(),
            mqtt_version: Default::default(),
            jetstream: false,
            exchange: None,
            auth,
            tls: TlsSettings {
                enabled: tls,
                ..Default::default()
            },
        }
    }

    #[test]
    fn routing_keys_up_to_255_bytes() {
        assert!(check_routing_key("edge.site-a.telemetry").is_ok());
        assert!(check_routing_key(&"a".repeat(255)).is_ok());
        assert!(check_routing_key(&"a".repeat(256)).is_err());
        assert!(check_routing_key("").is_err());
    }

    #[test]
    fn auth_wins_over_url_credentials_and_tls_switches_to_amqps() {
        let e = endpoint(
            "amqp://url-user:url-pw@rabbit:5672/prod",
            Auth::UserPassword {
                username: "bridge".into(),
                password: Secret::new("s3cr3t"),
            },
            false,
        );
        let (u, secrets) = uri(&e, "site-a").unwrap();
        assert_eq!(u.authority.userinfo.username, "bridge");
        assert_eq!(u.authority.userinfo.password, "s3cr3t");
        assert_eq!(u.vhost, "prod");
        assert_eq!(u.scheme, AMQPScheme::AMQP);
        assert_eq!(u.query.heartbeat, Some(HEARTBEAT_SECS));
        let msg = redact("ACCESS_REFUSED for bridge:s3cr3t and url-pw", &secrets);
        assert!(!msg.contains("s3cr3t") && !msg.contains("url-pw"), "{msg}");

        let e = endpoint("amqp://rabbit/%2f", Auth::None, true);
        let (u, _) = uri(&e, "site-a").unwrap();
        assert_eq!(u.authority.host, "rabbit");
        assert_eq!(u.scheme, AMQPScheme::AMQPS);
        assert_eq!(u.authority.port, 5671);
        assert_eq!(u.vhost, "/");
    }

    #[test]
    fn ip_addresses_are_kept_as_the_host() {
        for (url, host) in [
            ("amqp://10.1.2.3:5672/%2f", "10.1.2.3"),
            ("amqp://[fd00::7]:5672/%2f", "fd00::7"),
        ] {
            let (u, _) = uri(&endpoint(url, Auth::None, false), "site-a").unwrap();
            assert_eq!(u.authority.host, host, "{url}");
        }
    }

    #[test]
    fn a_bad_url_is_refused_without_quoting_it() {
        let e = endpoint("user:pw-in-url@rabbit", Auth::None, false);
        let err = uri(&e, "site-a").unwrap_err().to_string();
        assert!(!err.contains("pw-in-url"), "{err}");
    }
}
