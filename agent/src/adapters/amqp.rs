//! AMQP 0-9-1 (lapin): durable topic exchange `edge.events` (declared), routing key = event type,
//! application headers with the AMQP binding's names (`cloudEvents:type`, `cloudEvents:corename`, ...),
//! the content type in the content-type property, persistent delivery, and publisher confirms: the
//! publish resolves on the broker's ack. The connection is [`crate::connect::amqp`]'s (our rustls
//! configuration: the TLS minimum version and server name apply); a supervisor task reconnects it.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use cloudevents::{AttributesReader, Event};
use futures::FutureExt;
use futures::future::BoxFuture;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{BasicProperties, Channel, Connection, ExchangeKind};

use super::{Adapter, PUBLISH_TIMEOUT, PublishError, Unfit};
use crate::connect::amqp::Connector;
use crate::connect::{self, Health, Readiness, SetupError};
use crate::event;
use crate::publisher::config::{AMQP_EXCHANGE, AmqpConfig};

pub struct AmqpAdapter {
    channel: Arc<RwLock<Option<Channel>>>,
    health: Arc<Health>,
}

/// The connector for `c`: the URL (`amqps://` with `EVENT_BROKER_RABBITMQ_SSL=true`), TLS, the URL's
/// password kept out of error texts. Shared with `tail`.
pub fn connector(c: &AmqpConfig) -> Result<Connector, SetupError> {
    let uri = connect::amqp::uri(c.url.expose(), c.tls.enabled)
        .map_err(|m| SetupError::Config(format!("{}: {m}", edgewire_api::env::RABBITMQ_URL)))?;
    let secrets = vec![uri.authority.userinfo.password.clone()];
    Ok(Connector::new(uri, &c.tls, "edgewire-agent", secrets)?)
}

async fn open_channel(conn: &Connection) -> Result<Channel, String> {
    let ch = conn.create_channel().await.map_err(|e| e.to_string())?;
    ch.exchange_declare(
        AMQP_EXCHANGE.into(),
        ExchangeKind::Topic,
        ExchangeDeclareOptions {
            durable: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .map_err(|e| format!("cannot declare exchange {AMQP_EXCHANGE}: {e}"))?;
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .map_err(|e| e.to_string())?;
    Ok(ch)
}

impl AmqpAdapter {
    pub fn connect(c: AmqpConfig) -> Result<Self, SetupError> {
        // Fails fast on a bad URL or unreadable TLS files.
        let connector = connector(&c)?;
        let channel = Arc::new(RwLock::new(None));
        let health = Arc::new(Health::default());
        tokio::spawn(supervise(connector, channel.clone(), health.clone()));
        Ok(Self { channel, health })
    }
}

async fn supervise(c: Connector, slot: Arc<RwLock<Option<Channel>>>, health: Arc<Health>) {
    let mut backoff = crate::retry::PUBLISHER.backoff();
    loop {
        let conn = match c.open().await {
            Ok(conn) => conn,
            Err(e) => {
                health.set_down(format!("cannot connect to the AMQP broker: {e}"));
                backoff.wait().await;
                continue;
            }
        };
        let ch = match open_channel(&conn).await {
            Ok(ch) => ch,
            Err(e) => {
                health.set_down(e);
                let _ = conn.close(200, "bye".into()).await;
                backoff.wait().await;
                continue;
            }
        };
        backoff.reset();
        if let Ok(mut s) = slot.write() {
            *s = Some(ch.clone());
        }
        health.set_connected();
        tracing::info!(exchange = AMQP_EXCHANGE, "connected to the AMQP broker");
        while conn.status().connected() && ch.status().connected() {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        if let Ok(mut s) = slot.write() {
            *s = None;
        }
        health.set_down("lost the connection to the AMQP broker");
    }
}

impl Adapter for AmqpAdapter {
    fn name(&self) -> &'static str {
        "amqp091"
    }

    fn validate(&self, event: &Event) -> Result<(), String> {
        if event.ty().len() > 255 {
            return Err("type is longer than 255 bytes, the AMQP routing key limit".into());
        }
        Ok(())
    }

    fn fits(&self, ev: &Event) -> Result<(), Unfit> {
        match event::amqp_problem(ev) {
            Some(p) => Err(Unfit::Attribute(p)),
            None => Ok(()),
        }
    }

    fn publish<'a>(&'a self, ev: &'a Event) -> BoxFuture<'a, Result<(), PublishError>> {
        async move {
            self.health.require()?;
            let ch = self
                .channel
                .read()
                .ok()
                .and_then(|g| g.clone())
                .ok_or_else(|| {
                    PublishError::Unavailable("not connected to the AMQP broker".into())
                })?;
            // Short strings through `try_new`: lapin's `From<&str>` panics over 255 bytes. `fits` has
            // refused such events already; this keeps any other caller from a panic.
            let short = |v: &str| {
                ShortString::try_new(v).map_err(|e| PublishError::Rejected(e.to_string()))
            };
            let mut headers = FieldTable::default();
            for (k, v) in event::amqp_headers(ev) {
                headers.insert(short(&k)?, AMQPValue::LongString(v.into()));
            }
            let mut props = BasicProperties::default()
                .with_headers(headers)
                .with_delivery_mode(2)
                .with_message_id(short(ev.id())?);
            if let Some(ct) = ev.datacontenttype() {
                props = props.with_content_type(short(ct)?);
            }
            let routing_key = short(ev.ty())?;
            let payload = event::data_bytes(ev);
            let fut = async {
                let confirm = ch
                    .basic_publish(
                        AMQP_EXCHANGE.into(),
                        routing_key,
                        BasicPublishOptions::default(),
                        &payload,
                        props,
                    )
                    .await
                    .map_err(|e| PublishError::Unavailable(e.to_string()))?;
                let confirmation = confirm
                    .await
                    .map_err(|e| PublishError::Unavailable(e.to_string()))?;
                if confirmation.is_nack() {
                    return Err(PublishError::Rejected(
                        "the broker answered basic.nack".into(),
                    ));
                }
                Ok(())
            };
            match tokio::time::timeout(PUBLISH_TIMEOUT, fut).await {
                Ok(r) => r,
                Err(_) => Err(PublishError::Timeout("no publisher confirm".into())),
            }
        }
        .boxed()
    }

    fn readiness(&self) -> Readiness {
        self.health.readiness()
    }
}
