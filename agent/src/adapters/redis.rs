//! Redis Pub/Sub: `PUBLISH` on channel = event type (`PSUBSCRIBE edge.*` sees everything), body =
//! structured-mode JSON of the whole event. Redis keeps nothing: a 202 means the server took the
//! PUBLISH, not that anybody listened. `ConnectionManager` reconnects; a PING loop tracks reachability.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use cloudevents::{AttributesReader, Event};
use futures::FutureExt;
use futures::future::BoxFuture;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use super::{Adapter, AdapterError, Health, PUBLISH_TIMEOUT, PublishError, Readiness};
use crate::config::RedisConfig;
use crate::event;

pub struct RedisAdapter {
    conn: Arc<RwLock<Option<ConnectionManager>>>,
    health: Arc<Health>,
}

/// A redis client for `c`: `rediss://` when TLS is on, with the CA and client certificate when given.
pub fn client(c: &RedisConfig) -> Result<redis::Client, AdapterError> {
    let raw = c.url.expose();
    let url = match raw.strip_prefix("redis://") {
        Some(rest) if c.tls.enabled => format!("rediss://{rest}"),
        _ => raw.to_string(),
    };
    let bad_url = |e: redis::RedisError| {
        AdapterError::Config(format!("EVENT_BROKER_REDIS_URL: {}", e.kind_name()))
    };
    if c.tls.enabled && (c.tls.ca_file.is_some() || c.tls.client_cert.is_some()) {
        let read = |p: &std::path::Path| {
            std::fs::read(p).map_err(|e| {
                AdapterError::Config(format!("cannot read {}: {}", p.display(), e.kind()))
            })
        };
        let root_cert = match &c.tls.ca_file {
            Some(p) => Some(read(p)?),
            None => None,
        };
        let client_tls = match &c.tls.client_cert {
            Some(cc) => Some(redis::ClientTlsConfig {
                client_cert: read(&cc.cert_file)?,
                client_key: read(&cc.key_file)?,
            }),
            None => None,
        };
        redis::Client::build_with_tls(
            url.as_str(),
            redis::TlsCertificates {
                client_tls,
                root_cert,
            },
        )
        .map_err(bad_url)
    } else {
        redis::Client::open(url.as_str()).map_err(bad_url)
    }
}

trait KindName {
    fn kind_name(&self) -> String;
}

impl KindName for redis::RedisError {
    /// The error without its detail, which may quote the URL.
    fn kind_name(&self) -> String {
        format!("invalid URL ({:?})", self.kind())
    }
}

impl RedisAdapter {
    pub fn connect(c: RedisConfig) -> Result<Self, AdapterError> {
        crate::tls::install_crypto_provider();
        let client = client(&c)?;
        let conn = Arc::new(RwLock::new(None));
        let health = Arc::new(Health::default());
        tokio::spawn(supervise(client, conn.clone(), health.clone()));
        Ok(Self { conn, health })
    }
}

async fn supervise(
    client: redis::Client,
    slot: Arc<RwLock<Option<ConnectionManager>>>,
    health: Arc<Health>,
) {
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(3)))
        .set_response_timeout(Some(Duration::from_secs(3)))
        .set_number_of_retries(2)
        .set_max_delay(Duration::from_secs(2));
    let mut attempt = 0u32;
    let mut cm = loop {
        match client
            .get_connection_manager_with_config(config.clone())
            .await
        {
            Ok(cm) => break cm,
            Err(e) => {
                health.set_down(format!("cannot connect to Redis: {}", describe(&e)));
                tokio::time::sleep(super::backoff(attempt)).await;
                attempt = attempt.saturating_add(1);
            }
        }
    };
    if let Ok(mut s) = slot.write() {
        *s = Some(cm.clone());
    }
    loop {
        match redis::cmd("PING").query_async::<String>(&mut cm).await {
            Ok(_) => health.set_connected(),
            Err(e) => health.set_down(format!("Redis unreachable: {}", describe(&e))),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Redis errors without anything that may quote credentials: the server's error code and detail, or for
/// an I/O error (refused, reset, a TLS verdict on the server's certificate) the I/O error, which never
/// holds the URL.
fn describe(e: &redis::RedisError) -> String {
    match (e.code(), std::error::Error::source(e)) {
        (Some(code), _) => format!("{code} {}", e.detail().unwrap_or_default()),
        (None, Some(io)) if e.is_io_error() => format!("{:?}: {io}", e.kind()),
        (None, _) => format!("{:?}", e.kind()),
    }
}

impl Adapter for RedisAdapter {
    fn name(&self) -> &'static str {
        "redis"
    }

    fn validate(&self, _event: &Event) -> Result<(), String> {
        Ok(())
    }

    fn publish<'a>(&'a self, ev: &'a Event) -> BoxFuture<'a, Result<(), PublishError>> {
        async move {
            self.health.require()?;
            let mut cm = self
                .conn
                .read()
                .ok()
                .and_then(|g| g.clone())
                .ok_or_else(|| PublishError::Unavailable("not connected to Redis".into()))?;
            let body = event::structured_json(ev);
            let mut cmd = redis::cmd("PUBLISH");
            cmd.arg(ev.ty()).arg(body);
            let fut = cmd.query_async::<i64>(&mut cm);
            match tokio::time::timeout(PUBLISH_TIMEOUT, fut).await {
                Ok(Ok(_receivers)) => Ok(()),
                Ok(Err(e)) if e.is_io_error() || e.is_connection_dropped() || e.is_timeout() => {
                    Err(PublishError::Unavailable(describe(&e)))
                }
                Ok(Err(e)) => Err(PublishError::Rejected(describe(&e))),
                Err(_) => Err(PublishError::Timeout("no reply from Redis".into())),
            }
        }
        .boxed()
    }

    fn readiness(&self) -> Readiness {
        self.health.readiness()
    }
}
