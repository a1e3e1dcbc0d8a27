//! `edgewire-agent publisher`: the CloudEvents HTTP ingress in front of one broker adapter.
//!
//! `POST /` takes binary, structured and batch mode and answers 202 only after the broker accepted the
//! event (as far as its protocol can tell), 400 with a problem body for an invalid event, 503 with
//! `Retry-After` while the broker is unreachable. `EVENT_BROKER_ENABLED=false` keeps the process up and
//! ready (so a rollout completes) but answers every POST with 503 `event-broker-disabled` and no
//! `Retry-After`: retrying will not help until the configuration changes.

pub mod asyncapi;
pub mod config;
mod http;
pub mod metrics;
pub mod problem;

use std::net::SocketAddr;
use std::sync::Arc;

use crate::adapters::{self, Adapter};
use crate::connect::SetupError;
use config::PublisherConfig;

pub use http::router;

/// Everything the HTTP handlers share.
pub struct Publisher {
    pub core_name: String,
    /// `None` when the event broker is disabled.
    pub adapter: Option<Arc<dyn Adapter>>,
    pub metrics: metrics::Metrics,
    pub asyncapi: serde_json::Value,
}

impl Publisher {
    /// Builds the adapter for `config` (it connects in the background) and the shared state.
    pub async fn new(config: &PublisherConfig) -> Result<Arc<Self>, SetupError> {
        let adapter = match (&config.broker, config.enabled) {
            (Some(b), true) => Some(adapters::connect(b).await?),
            _ => None,
        };
        Ok(Self::with_adapter(config, adapter))
    }

    /// Shared state around an adapter built elsewhere (tests, benches).
    pub fn with_adapter(config: &PublisherConfig, adapter: Option<Arc<dyn Adapter>>) -> Arc<Self> {
        let name = adapter.as_ref().map(|a| a.name()).unwrap_or("none");
        let mut metrics = metrics::Metrics::new(name);
        if let Some(calls) = adapter.as_ref().and_then(|a| a.broker_calls()) {
            metrics.register_broker_calls(calls);
        }
        Arc::new(Self {
            core_name: config.core_name.clone(),
            metrics,
            asyncapi: asyncapi::document(config),
            adapter,
        })
    }
}

/// Serves the ingress on `listen` until SIGTERM or Ctrl-C.
pub async fn run(config: PublisherConfig, listen: SocketAddr) -> anyhow::Result<()> {
    for note in &config.notes {
        tracing::warn!(%note, "configuration");
    }
    let publisher = Publisher::new(&config).await?;
    match &config.broker {
        Some(b) if config.enabled => {
            tracing::info!(adapter = b.adapter_name(), core_name = %config.core_name, %listen, "publisher starting")
        }
        _ => {
            tracing::warn!(%listen, "event broker disabled ({}=false): POST / answers 503", edgewire_api::env::ENABLED)
        }
    }
    let listener = tokio::net::TcpListener::bind(listen).await.map_err(|e| {
        anyhow::anyhow!(
            "{}: cannot listen on {listen}: {e}",
            edgewire_api::env::LISTEN
        )
    })?;
    axum::serve(listener, router(publisher))
        .with_graceful_shutdown(shutdown_signal())
        .await?;
    tracing::info!("publisher stopped");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
