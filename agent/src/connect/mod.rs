//! Broker connections, one module per protocol, shared by the publisher's adapters, the bridge's sides and
//! `tail`: how a client for that protocol is set up (options, credentials, TLS, URL rules), so each rule is
//! written once. What a connection is used for (publishing events, bridging, printing) stays with its user.
//!
//! Every connection reports its state in a [`Health`], which `/readyz` and the bridge's metrics read.

pub mod amqp;
pub mod kafka;
pub mod mqtt;
pub mod nats;
pub mod redis;

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

/// Why a connection cannot be set up at all (bad TLS material, a bad key or URL): a retry cannot fix it,
/// so the process stops at startup. Names files and fields, never a secret.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("{0}")]
    Tls(#[from] crate::tls::TlsError),
    #[error("{0}")]
    Config(String),
}

/// What `/readyz` reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Readiness {
    pub connected: bool,
    /// Why not connected (last connection error), never secret.
    pub detail: Option<String>,
}

/// Not connected to the broker, with the reason ([`Health::require`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("broker unavailable: {0}")]
pub struct Unavailable(pub String);

/// Connection state shared between a connection's background task and its readers.
#[derive(Debug, Default)]
pub struct Health {
    connected: AtomicBool,
    detail: Mutex<Option<String>>,
    /// Why the last connection attempt failed, in the client library's full words (the server's refusal,
    /// the TLS verdict), where its events carry less.
    attempt: Mutex<Option<String>>,
    /// How many times the connection went down (every [`Health::set_down`]), for waiters that must not
    /// outlive the connection their message went out on ([`Health::downs`]).
    downs: tokio::sync::watch::Sender<u64>,
}

impl Health {
    pub fn set_connected(&self) {
        self.connected.store(true, Ordering::SeqCst);
        if let Ok(mut d) = self.detail.lock() {
            *d = None;
        }
        if let Ok(mut a) = self.attempt.lock() {
            *a = None;
        }
    }

    /// Records why the last connection attempt failed; `/readyz` shows it next to the detail.
    pub fn note_attempt(&self, why: impl Into<String>) {
        if let Ok(mut a) = self.attempt.lock() {
            *a = Some(why.into());
        }
    }

    pub fn set_down(&self, why: impl Into<String>) {
        let why = why.into();
        let was = self.connected.swap(false, Ordering::SeqCst);
        self.downs.send_modify(|n| *n += 1);
        if let Ok(mut d) = self.detail.lock() {
            if was || d.as_deref() != Some(why.as_str()) {
                tracing::warn!(reason = %why, "broker connection down");
            }
            *d = Some(why);
        }
    }

    /// Records an error without changing the connection state (it may be transient).
    pub fn note(&self, why: impl Into<String>) {
        if let Ok(mut d) = self.detail.lock() {
            *d = Some(why.into());
        }
    }

    /// The number of times the connection went down so far, to watch for the next time.
    pub fn downs(&self) -> tokio::sync::watch::Receiver<u64> {
        self.downs.subscribe()
    }

    pub fn is_connected(&self) -> bool {
        self.connected.load(Ordering::SeqCst)
    }

    pub fn readiness(&self) -> Readiness {
        let connected = self.is_connected();
        if connected {
            return Readiness {
                connected,
                detail: None,
            };
        }
        let detail = self
            .detail
            .lock()
            .ok()
            .and_then(|d| d.clone())
            .unwrap_or_else(|| "connecting".into());
        let attempt = self.attempt.lock().ok().and_then(|a| a.clone());
        Readiness {
            connected,
            detail: Some(match attempt {
                Some(a) if !detail.contains(&a) => format!("{detail} (last attempt: {a})"),
                _ => detail,
            }),
        }
    }

    /// `Err(Unavailable)` while down, for the top of every publish or send.
    pub fn require(&self) -> Result<(), Unavailable> {
        if self.is_connected() {
            Ok(())
        } else {
            Err(Unavailable(
                self.readiness()
                    .detail
                    .unwrap_or_else(|| "not connected".into()),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_transitions() {
        let h = Health::default();
        assert_eq!(
            h.readiness(),
            Readiness {
                connected: false,
                detail: Some("connecting".into())
            }
        );
        assert!(matches!(h.require(), Err(Unavailable(_))));
        h.set_connected();
        assert!(h.require().is_ok());
        let downs = h.downs();
        h.set_down("connection refused");
        assert_eq!(h.readiness().detail.as_deref(), Some("connection refused"));
        assert_eq!(*downs.borrow(), 1, "a watcher sees the connection go down");
        h.note_attempt("IO error: invalid peer certificate: UnknownIssuer");
        assert_eq!(
            h.readiness().detail.as_deref(),
            Some(
                "connection refused (last attempt: IO error: invalid peer certificate: UnknownIssuer)"
            )
        );
        h.set_connected();
        assert_eq!(h.readiness().detail, None);
        h.set_down("disconnected");
        assert_eq!(
            h.readiness().detail.as_deref(),
            Some("disconnected"),
            "a connection clears the last attempt"
        );
    }
}
