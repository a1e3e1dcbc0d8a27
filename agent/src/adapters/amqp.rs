//! AMQP 0-9-1 (lapin): durable topic exchange `edge.events` (declared), routing key = event type,
//! application headers with the AMQP binding's names (`cloudEvents:type`, `cloudEvents:corename`, ...),
//! the content type in the content-type property, persistent delivery, and publisher confirms: the
//! publish resolves on the broker's ack. lapin does not reconnect by itself, so a supervisor task does.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use cloudevents::{AttributesReader, Event};
use futures::FutureExt;
use futures::future::BoxFuture;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions};
use lapin::tcp::{OwnedIdentity, OwnedTLSConfig};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};

use super::{Adapter, AdapterError, Health, PUBLISH_TIMEOUT, PublishError, Readiness};
use crate::config::{AMQP_EXCHANGE, AmqpConfig, TlsSettings};
use crate::event;

pub struct AmqpAdapter {
    channel: Arc<RwLock<Option<Channel>>>,
    health: Arc<Health>,
}

/// The URL with `amqps://` when TLS is on (`EVENT_BROKER_RABBITMQ_SSL=true` with an `amqp://` URL).
pub fn effective_url(c: &AmqpConfig) -> String {
    let url = c.url.expose();
    match url.strip_prefix("amqp://") {
        Some(rest) if c.tls.enabled => format!("amqps://{rest}"),
        _ => url.to_string(),
    }
}

/// Parses an `amqp://` / `amqps://` URL. amq-protocol-uri takes the host only from a domain name and
/// falls back to `localhost` for an IP address (`amqp://10.0.0.5` would silently connect to localhost):
/// the host is taken from the URL as written. The error never quotes the URL (it may hold credentials).
pub fn parse_uri(raw: &str) -> Result<lapin::uri::AMQPUri, String> {
    let mut uri: lapin::uri::AMQPUri = raw.parse().map_err(|m: String| {
        format!(
            "not an amqp:// or amqps:// URL: {}",
            m.replace(raw, "<url>")
        )
    })?;
    if let Some(host) = url::Url::parse(raw)
        .ok()
        .and_then(|u| u.host_str().map(|h| h.trim_matches(['[', ']']).to_string()))
    {
        uri.authority.host = host;
    }
    Ok(uri)
}

/// lapin's TLS settings from ours: the CA bundle and the client identity, as PEM.
pub fn tls_config(t: &TlsSettings) -> Result<OwnedTLSConfig, AdapterError> {
    let read = |p: &std::path::Path| {
        std::fs::read(p)
            .map_err(|e| AdapterError::Config(format!("cannot read {}: {}", p.display(), e.kind())))
    };
    let cert_chain = match &t.ca_file {
        Some(p) => Some(
            String::from_utf8(read(p)?)
                .map_err(|_| AdapterError::Config(format!("{} is not PEM", p.display())))?,
        ),
        None => None,
    };
    let identity = match &t.client_cert {
        Some(cc) => Some(OwnedIdentity::PKCS8 {
            pem: read(&cc.cert_file)?,
            key: read(&cc.key_file)?,
        }),
        None => None,
    };
    Ok(OwnedTLSConfig {
        identity,
        cert_chain,
    })
}

/// Connects once (used by the supervisor and by `tail`).
pub async fn connect_once(c: &AmqpConfig) -> Result<Connection, String> {
    let tls = tls_config(&c.tls).map_err(|e| e.to_string())?;
    let runtime = lapin::runtime::default_runtime().map_err(|e| e.to_string())?;
    let props = ConnectionProperties::default().with_connection_name("edgewire-agent".into());
    let conn = tokio::time::timeout(
        Duration::from_secs(10),
        Connection::connect_uri_with_config(
            parse_uri(&effective_url(c)).map_err(|e| redact(&e, c))?,
            props,
            tls,
            runtime,
        ),
    )
    .await
    .map_err(|_| "timed out connecting to the AMQP broker".to_string())?
    .map_err(|e| redact(&e.to_string(), c))?;
    Ok(conn)
}

/// Error text from lapin may echo the URL; strip its credentials.
fn redact(msg: &str, c: &AmqpConfig) -> String {
    let mut out = msg.to_string();
    if let Ok(u) = url::Url::parse(c.url.expose())
        && let Some(p) = u.password()
        && !p.is_empty()
    {
        out = out.replace(p, "***");
    }
    out
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
    pub fn connect(c: AmqpConfig) -> Result<Self, AdapterError> {
        tls_config(&c.tls)?; // fail fast on unreadable TLS files
        let channel = Arc::new(RwLock::new(None));
        let health = Arc::new(Health::default());
        tokio::spawn(supervise(c, channel.clone(), health.clone()));
        Ok(Self { channel, health })
    }
}

async fn supervise(c: AmqpConfig, slot: Arc<RwLock<Option<Channel>>>, health: Arc<Health>) {
    let mut backoff = crate::retry::PUBLISHER.backoff();
    loop {
        let conn = match connect_once(&c).await {
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
            let mut headers = FieldTable::default();
            for (k, v) in event::amqp_headers(ev) {
                headers.insert(k.into(), AMQPValue::LongString(v.into()));
            }
            let mut props = BasicProperties::default()
                .with_headers(headers)
                .with_delivery_mode(2)
                .with_message_id(ev.id().into());
            if let Some(ct) = ev.datacontenttype() {
                props = props.with_content_type(ct.into());
            }
            let payload = event::data_bytes(ev);
            let fut = async {
                let confirm = ch
                    .basic_publish(
                        AMQP_EXCHANGE.into(),
                        ev.ty().into(),
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

#[cfg(test)]
mod tests {
    use super::parse_uri;

    #[test]
    fn an_ip_address_host_is_kept_not_replaced_by_localhost() {
        let u = parse_uri("amqp://user:pw@10.0.0.5:5673/%2f").unwrap();
        assert_eq!(u.authority.host, "10.0.0.5");
        assert_eq!(u.authority.port, 5673);
        let u = parse_uri("amqps://[fd00::7]/prod").unwrap();
        assert_eq!(u.authority.host, "fd00::7");
        assert_eq!(u.vhost, "prod");
        assert_eq!(
            parse_uri("amqp://rabbit.ns.svc:5672/%2f")
                .unwrap()
                .authority
                .host,
            "rabbit.ns.svc"
        );
    }

    #[test]
    fn a_bad_url_error_does_not_quote_the_credentials() {
        let e = parse_uri("amqpx://user:s3cret@host/").unwrap_err();
        assert!(!e.contains("s3cret"), "{e}");
    }
}
