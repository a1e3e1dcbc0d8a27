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
pub mod serve;

use std::net::SocketAddr;
use std::sync::Arc;

use crate::adapters::{self, Adapter};
use crate::connect::SetupError;
use config::PublisherConfig;

pub use http::router;
pub use serve::Limits;

/// Everything the HTTP handlers share.
pub struct Publisher {
    pub core_name: String,
    /// `None` when the event broker is disabled.
    pub adapter: Option<Arc<dyn Adapter>>,
    pub metrics: metrics::Metrics,
    pub asyncapi: serde_json::Value,
    /// The ingress's limits (batch size, body timeout; the connection limits are [`serve::serve`]'s).
    pub limits: Limits,
}

impl Publisher {
    /// Builds the adapter for `config` (it connects in the background) and the shared state, with the
    /// default [`Limits`].
    pub async fn new(config: &PublisherConfig) -> Result<Arc<Self>, SetupError> {
        Self::new_limited(config, Limits::default()).await
    }

    /// The same with `limits`.
    pub async fn new_limited(
        config: &PublisherConfig,
        limits: Limits,
    ) -> Result<Arc<Self>, SetupError> {
        let adapter = match (&config.broker, config.enabled) {
            (Some(b), true) => Some(adapters::connect(b).await?),
            _ => None,
        };
        Ok(Self::with_adapter_limited(config, adapter, limits))
    }

    /// Shared state around an adapter built elsewhere (tests, benches).
    pub fn with_adapter(config: &PublisherConfig, adapter: Option<Arc<dyn Adapter>>) -> Arc<Self> {
        Self::with_adapter_limited(config, adapter, Limits::default())
    }

    fn with_adapter_limited(
        config: &PublisherConfig,
        adapter: Option<Arc<dyn Adapter>>,
        limits: Limits,
    ) -> Arc<Self> {
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
            limits,
        })
    }
}

/// Serves the ingress on `listen` until SIGTERM or Ctrl-C.
pub async fn run(
    config: PublisherConfig,
    listen: SocketAddr,
    limits: Limits,
) -> anyhow::Result<()> {
    for note in &config.notes {
        tracing::warn!(%note, "configuration");
    }
    let publisher = Publisher::new_limited(&config, limits).await?;
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
    serve_until(listener, publisher, shutdown_signal()).await;
    tracing::info!("publisher stopped");
    Ok(())
}

/// Serves `publisher`'s router on `listener` with its [`Limits`] until `shutdown` resolves.
pub async fn serve_until(
    listener: tokio::net::TcpListener,
    publisher: Arc<Publisher>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let limits = publisher.limits.clone();
    let refused = publisher.metrics.connections_refused();
    serve::serve(listener, router(publisher), &limits, refused, shutdown).await;
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
