//! NATS connections (async-nats) of the publisher adapter, the bridge's NATS side and `tail`: one set of
//! connect options. The client connects in the background (`retry_on_initial_connect`) and reconnects
//! forever, paced by a [`retry::Policy`]; its events drive a [`Health`]; credentials and TLS as configured.

use std::sync::Arc;
use std::time::Duration;

use async_nats::ConnectOptions;

use super::{Health, SetupError};
use crate::retry;
use crate::secret::Secret;
use crate::tls::TlsSettings;

/// How long one connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Returns once the server has processed everything this client sent before the call — what core NATS
/// can offer as an acknowledgement. `Client::flush` only writes the client's buffer to the socket, so a
/// frozen or dying server may never read what it "acknowledged". So the client subscribes to a fresh inbox
/// subject and publishes an empty message to it: the server processes a connection's messages in order, so
/// the echo comes back only after everything sent before it was processed. (A request answered by the
/// server's "no responders" would hang as soon as anyone subscribes to `>` — a monitoring tap — and never
/// answers; the echo does not depend on other subscribers, who only see one empty message on the inbox.)
/// The client needs permission to publish to and subscribe to `_INBOX.>`, as for any request.
pub async fn round_trip(client: &async_nats::Client) -> Result<(), String> {
    use futures::StreamExt;
    let subject = client.new_inbox();
    let mut echo = client
        .subscribe(subject.clone())
        .await
        .map_err(|e| format!("NATS round trip: {e}"))?;
    client
        .publish(subject, bytes::Bytes::new())
        .await
        .map_err(|e| format!("NATS round trip: {e}"))?;
    client
        .flush()
        .await
        .map_err(|e| format!("NATS flush: {e}"))?;
    match echo.next().await {
        Some(_) => Ok(()),
        None => Err("NATS round trip: the connection closed the subscription".into()),
    }
}

/// How a NATS client authenticates.
#[derive(Debug, Clone, PartialEq)]
pub enum NatsAuth {
    None,
    Token(Secret),
    UserPassword { username: String, password: Secret },
    Nkey { seed: Secret, jwt: Option<Secret> },
}

impl NatsAuth {
    pub fn mode(&self) -> &'static str {
        match self {
            NatsAuth::None => "none",
            NatsAuth::Token(_) => "token",
            NatsAuth::UserPassword { .. } => "user/password",
            NatsAuth::Nkey { jwt: None, .. } => "nkey",
            NatsAuth::Nkey { jwt: Some(_), .. } => "nkey+jwt",
        }
    }
}

/// Connect options: the connection `name`, background connect and endless reconnects paced by `policy`,
/// connection events into `health`, `auth`, and `tls` when enabled.
pub fn options(
    name: &str,
    auth: &NatsAuth,
    tls: &TlsSettings,
    policy: retry::Policy,
    health: Arc<Health>,
) -> Result<ConnectOptions, SetupError> {
    let mut opts = ConnectOptions::new()
        .name(name)
        .retry_on_initial_connect()
        .max_reconnects(None)
        .connection_timeout(CONNECT_TIMEOUT)
        .reconnect_delay_callback(move |n| policy.delay(n))
        .reconnect_to_server_callback({
            // The client's events name only the kind of a failed attempt ("IO error"); the server pool
            // keeps it whole (the TLS verdict, the server's -ERR). Never a URL: no credentials in it.
            let health = health.clone();
            move |servers, _| {
                if let Some(e) = servers.iter().find_map(|s| s.last_error.clone()) {
                    health.note_attempt(e);
                }
                // Keep the client's own choice of server.
                std::future::ready(None)
            }
        })
        .event_callback(move |ev| {
            let health = health.clone();
            async move {
                match ev {
                    async_nats::Event::Connected => health.set_connected(),
                    async_nats::Event::Disconnected => {
                        health.set_down("disconnected from the NATS server")
                    }
                    async_nats::Event::ServerError(e) => {
                        health.note(format!("NATS server error: {e}"))
                    }
                    async_nats::Event::ClientError(e) => {
                        health.note(format!("NATS client error: {e}"))
                    }
                    _ => {}
                }
            }
        });
    let bad_seed = || {
        SetupError::Config(format!(
            "{}: not a valid NKEY seed",
            edgewire_api::env::NATS_NKEY_SEED
        ))
    };
    opts = match auth {
        NatsAuth::None => opts,
        NatsAuth::Token(t) => opts.token(t.expose().to_string()),
        NatsAuth::UserPassword { username, password } => {
            opts.user_and_password(username.clone(), password.expose().to_string())
        }
        NatsAuth::Nkey { seed, jwt: None } => {
            nkeys::KeyPair::from_seed(seed.expose()).map_err(|_| bad_seed())?;
            opts.nkey(seed.expose().to_string())
        }
        NatsAuth::Nkey {
            seed,
            jwt: Some(jwt),
        } => {
            let kp = Arc::new(nkeys::KeyPair::from_seed(seed.expose()).map_err(|_| bad_seed())?);
            opts.jwt(jwt.expose().to_string(), move |nonce| {
                let kp = kp.clone();
                async move { kp.sign(&nonce).map_err(async_nats::AuthError::new) }
            })
        }
    };
    if tls.enabled {
        opts = opts
            .require_tls(true)
            .tls_client_config(crate::tls::client_config(tls)?);
    }
    Ok(opts)
}
