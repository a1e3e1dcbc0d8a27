//! NATS side of the bridge (async-nats): core NATS and JetStream.
//!
//! Publishing a batch: core NATS writes every message and then flushes (the server has read everything
//! before its PONG; that is the strongest acknowledgement core NATS has); JetStream publishes every
//! message and waits for each PubAck (the stream capturing the subjects must exist). Edge→cloud messages
//! carry `headers` and `edge-site-id` as NATS headers.
//!
//! Subscribing: core NATS subscriptions on the rule subjects (at most once: a core NATS edge holds
//! nothing for the bridge while it is down — use JetStream on the edge for that).

use std::sync::Arc;
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream;
use bytes::Bytes;

use super::config::{Auth, BridgeConfigError, EndpointConfig};
use crate::adapters::Health;

pub struct NatsSide {
    pub client: async_nats::Client,
    pub js: Option<jetstream::Context>,
    pub health: Arc<Health>,
}

/// Connects (in the background: a server that is down is retried forever with capped backoff).
pub async fn connect(c: &EndpointConfig, name: &str) -> Result<NatsSide, BridgeConfigError> {
    let health = Arc::new(Health::default());
    let h = health.clone();
    let mut opts = async_nats::ConnectOptions::new()
        .name(name)
        .retry_on_initial_connect()
        .max_reconnects(None)
        .connection_timeout(Duration::from_secs(5))
        .reconnect_delay_callback(|n| super::backoff(n.min(32) as u32))
        .event_callback(move |ev| {
            let h = h.clone();
            async move {
                match ev {
                    async_nats::Event::Connected => h.set_connected(),
                    async_nats::Event::Disconnected => {
                        h.set_down("disconnected from the NATS server")
                    }
                    async_nats::Event::ServerError(e) => h.note(format!("NATS server error: {e}")),
                    async_nats::Event::ClientError(e) => h.note(format!("NATS client error: {e}")),
                    _ => {}
                }
            }
        });
    opts = match &c.auth {
        Auth::None => opts,
        Auth::Token(t) => opts.token(t.expose().to_string()),
        Auth::UserPassword { username, password } => {
            opts.user_and_password(username.clone(), password.expose().to_string())
        }
    };
    if c.tls.enabled {
        opts = opts.require_tls(true).tls_client_config(
            crate::tls::client_config(&c.tls)
                .map_err(|e| BridgeConfigError(format!("TLS: {e}")))?,
        );
    }
    let urls: Vec<String> = c.url.split(',').map(|u| u.trim().to_string()).collect();
    let client = opts
        .connect(urls)
        .await
        .map_err(|e| BridgeConfigError(format!("NATS endpoint {}: {e}", c.url)))?;
    let js = c.jetstream.then(|| jetstream::new(client.clone()));
    Ok(NatsSide { client, js, health })
}

impl NatsSide {
    /// Publishes every message and returns once the server acknowledged all (flush or PubAcks).
    pub async fn publish_batch(
        &self,
        msgs: impl Iterator<Item = (String, Bytes)>,
        headers: Option<&HeaderMap>,
    ) -> Result<(), String> {
        self.health.require().map_err(|e| e.to_string())?;
        match &self.js {
            Some(js) => {
                let mut acks = Vec::new();
                for (subject, payload) in msgs {
                    let f = match headers {
                        Some(h) => js.publish_with_headers(subject, h.clone(), payload).await,
                        None => js.publish(subject, payload).await,
                    }
                    .map_err(|e| format!("JetStream publish: {e}"))?;
                    acks.push(f);
                }
                for a in acks {
                    tokio::time::timeout(Duration::from_secs(10), a.into_future())
                        .await
                        .map_err(|_| "no JetStream PubAck in 10 s".to_string())?
                        .map_err(|e| format!("JetStream PubAck: {e}"))?;
                }
            }
            None => {
                for (subject, payload) in msgs {
                    match headers {
                        Some(h) => {
                            self.client
                                .publish_with_headers(subject, h.clone(), payload)
                                .await
                        }
                        None => self.client.publish(subject, payload).await,
                    }
                    .map_err(|e| format!("NATS publish: {e}"))?;
                }
                tokio::time::timeout(Duration::from_secs(10), self.client.flush())
                    .await
                    .map_err(|_| "NATS flush did not return in 10 s".to_string())?
                    .map_err(|e| format!("NATS flush: {e}"))?;
            }
        }
        Ok(())
    }
}
