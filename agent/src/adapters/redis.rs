//! Redis Pub/Sub: `PUBLISH` on channel = event type (`PSUBSCRIBE edge.*` sees everything), body =
//! structured-mode JSON of the whole event. Redis keeps nothing: a 202 means the server took the
//! PUBLISH, not that anybody listened. `ConnectionManager` reconnects; a PING loop tracks reachability.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use cloudevents::{AttributesReader, Event};
use futures::FutureExt;
use futures::future::BoxFuture;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use super::{Adapter, PUBLISH_TIMEOUT, PublishError};
use crate::connect::redis::describe;
use crate::connect::{self, Health, Readiness, SetupError};
use crate::event;
use crate::publisher::config::RedisConfig;

pub struct RedisAdapter {
    conn: Arc<RwLock<Option<ConnectionManager>>>,
    health: Arc<Health>,
}

impl RedisAdapter {
    pub fn connect(c: RedisConfig) -> Result<Self, SetupError> {
        crate::tls::install_crypto_provider();
        let client = connect::redis::client(&c.url, &c.tls)?;
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
    let mut backoff = crate::retry::PUBLISHER.backoff();
    let mut cm = loop {
        match client
            .get_connection_manager_with_config(config.clone())
            .await
        {
            Ok(cm) => break cm,
            Err(e) => {
                health.set_down(format!("cannot connect to Redis: {}", describe(&e)));
                backoff.wait().await;
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
