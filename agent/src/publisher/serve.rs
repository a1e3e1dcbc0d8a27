//! The ingress's connection handling: hyper with a timer, so a client that is slow to send its request
//! headers (slow-loris, or a connection opened and left idle) is closed after the header timeout; a cap on
//! open connections; and a bounded graceful shutdown. `axum::serve` has none of these: without a timer
//! hyper never times out a header read, and it accepts connections until the process runs out of file
//! descriptors.
//!
//! The limits are agent flags (with environment variables), not EventBroker fields: they protect the
//! process from its network, and the defaults suit every adapter.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use prometheus_client::metrics::counter::Counter;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};

/// How long open requests may take to finish once shutdown has begun.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Limits of the HTTP ingress.
#[derive(Clone, Debug, PartialEq, Eq, clap::Args)]
pub struct Limits {
    /// Seconds a client has to send a request's headers, counted from the connection's first byte or from
    /// the end of its previous request: slow-loris connections, and connections left idle, are closed
    /// after it.
    #[arg(
        long,
        env = "EDGEWIRE_HTTP_HEADER_TIMEOUT_SECONDS",
        default_value_t = Limits::DEFAULT.header_timeout_seconds,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub header_timeout_seconds: u64,
    /// Seconds a client has to send a request's body once its headers arrived (408 after it).
    #[arg(
        long,
        env = "EDGEWIRE_HTTP_BODY_TIMEOUT_SECONDS",
        default_value_t = Limits::DEFAULT.body_timeout_seconds,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub body_timeout_seconds: u64,
    /// Open connections at most; a connection beyond it is closed as soon as it is accepted.
    #[arg(
        long,
        env = "EDGEWIRE_HTTP_MAX_CONNECTIONS",
        default_value_t = Limits::DEFAULT.max_connections,
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    pub max_connections: u32,
    /// Events in one batch-mode request at most (413 above it).
    #[arg(
        long,
        env = "EDGEWIRE_MAX_BATCH_EVENTS",
        default_value_t = Limits::DEFAULT.max_batch_events,
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    pub max_batch_events: u32,
}

impl Limits {
    pub const DEFAULT: Limits = Limits {
        header_timeout_seconds: 10,
        body_timeout_seconds: 30,
        max_connections: 1024,
        max_batch_events: 1000,
    };

    pub fn header_timeout(&self) -> Duration {
        Duration::from_secs(self.header_timeout_seconds)
    }

    pub fn body_timeout(&self) -> Duration {
        Duration::from_secs(self.body_timeout_seconds)
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// Serves `app` on `listener` until `shutdown` resolves, counting connections closed at once because
/// [`Limits::max_connections`] were open in `refused`; then stops accepting, lets open requests finish
/// (at most [`SHUTDOWN_GRACE`]) and returns.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: &Limits,
    refused: Counter,
    shutdown: impl Future<Output = ()>,
) {
    let max = limits.max_connections.max(1);
    let permits = Arc::new(Semaphore::new(max as usize));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout());
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            () = &mut shutdown => break,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of file descriptors or a connection reset before accept: not fatal. Pause so a
                // persistent error (EMFILE) does not spin.
                tracing::warn!(error = %e, "cannot accept a connection");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            let n = refused.inc() + 1;
            if n.is_power_of_two() {
                tracing::warn!(
                    max_connections = max,
                    refused = n,
                    "connection refused: the ingress has EDGEWIRE_HTTP_MAX_CONNECTIONS open"
                );
            }
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(app.clone());
        let builder = builder.clone();
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
            let mut conn = std::pin::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                () = async { let _ = stop.wait_for(|s| *s).await; } => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
            drop(permit);
        });
    }
    drop(listener);
    let _ = stop_tx.send(true);
    // Every permit back means every connection has ended.
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, permits.acquire_many(max)).await;
}
