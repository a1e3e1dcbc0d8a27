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

/// Which connection a publish went out on, as far as the client can tell: how many times it had
/// connected and how many times the connection had gone down ([`Health::downs`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Generation {
    connects: u64,
    downs: u64,
}

/// Acknowledgements for core NATS publishes, shared by every concurrent publisher: what core NATS can offer
/// as an acknowledgement is a server round trip. `Client::flush` only writes the client's buffer to the
/// socket, so a frozen or dying server may never read what it "acknowledged"; an echo does better: an empty
/// message to the client's own inbox comes back only after the server processed everything the connection
/// sent before it. (A request answered by the server's "no responders" would hang as soon as anyone
/// subscribes to `>` — a monitoring tap — and never answers; the echo does not depend on other subscribers,
/// who only see one empty message on the inbox.) The client needs permission to publish to and subscribe to
/// `_INBOX.>`, as for any request.
///
/// One subscription to `<inbox>.*` lives as long as this; each publish is numbered once it is written, and
/// an empty message to `<inbox>.<n>`, sent after it, acknowledges every publish numbered up to `n` when it
/// comes back.
///
/// One task sends the echoes: woken by a publish no echo covers yet, it first lets the other runnable
/// tasks run (concurrent requests write their publishes meanwhile), then sends one echo for everything
/// written so far. Echoes do not wait for one another, so a publish waits about one round trip; and a
/// lost echo stalls nothing, the next publish wakes the task again.
///
/// An echo acknowledges only publishes that went out on the connection it came back on: a publish made
/// before the connection went down may have been lost with it, so it fails (a 503 to retry) rather than
/// being acknowledged by an echo on the next connection, and a disconnect fails every publish waiting.
pub struct SharedAcks {
    client: async_nats::Client,
    downs: tokio::sync::watch::Receiver<u64>,
    inner: Arc<AckInner>,
    tasks: [tokio::task::AbortHandle; 2],
}

#[derive(Default)]
struct AckInner {
    /// Publishes numbered so far.
    written: std::sync::atomic::AtomicU64,
    /// The highest number an echo has been sent for.
    requested: std::sync::atomic::AtomicU64,
    /// Wakes the echo sender.
    send: tokio::sync::Notify,
    state: std::sync::Mutex<AckState>,
}

#[derive(Default)]
struct AckState {
    /// Every publish numbered up to this has been acknowledged by an echo...
    acked: u64,
    /// ...which came back on this connection.
    acked_on: Generation,
    /// Waiting publishes by number, with the connection each went out on.
    waiters: std::collections::BTreeMap<u64, (Generation, Waiter)>,
}

type Waiter = tokio::sync::oneshot::Sender<Result<(), String>>;

const LOST: &str =
    "the connection to NATS went down before the server acknowledged the message; it may be lost";

fn verdict(sent_on: Generation, acked_on: Generation) -> Result<(), String> {
    if sent_on == acked_on {
        Ok(())
    } else {
        Err(LOST.into())
    }
}

impl AckState {
    fn fail_all(&mut self, why: &str) {
        for (_, (_, w)) in std::mem::take(&mut self.waiters) {
            let _ = w.send(Err(why.to_string()));
        }
    }
}

fn lock(m: &std::sync::Mutex<AckState>) -> std::sync::MutexGuard<'_, AckState> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn generation(
    client: &async_nats::Client,
    downs: &tokio::sync::watch::Receiver<u64>,
) -> Generation {
    Generation {
        connects: client
            .statistics()
            .connects
            .load(std::sync::atomic::Ordering::SeqCst),
        downs: *downs.borrow(),
    }
}

impl SharedAcks {
    /// Subscribes to a fresh inbox of `client` (it needs permission to publish to and subscribe to
    /// `_INBOX.>`, as for any request); `health` is the one the client's events drive.
    pub async fn new(client: async_nats::Client, health: &Health) -> Result<Self, String> {
        let inbox = client.new_inbox();
        let echoes = client
            .subscribe(format!("{inbox}.*"))
            .await
            .map_err(|e| format!("NATS acknowledgement inbox: {e}"))?;
        let inner = Arc::new(AckInner::default());
        let downs = health.downs();
        let reader = tokio::spawn(read_echoes(
            echoes,
            client.clone(),
            downs.clone(),
            inner.clone(),
            inbox.len() + 1,
        ))
        .abort_handle();
        let sender = tokio::spawn(send_echoes(
            client.clone(),
            inner.clone(),
            format!("{inbox}."),
        ))
        .abort_handle();
        Ok(Self {
            client,
            downs,
            inner,
            tasks: [reader, sender],
        })
    }

    /// The connection a publish about to be written goes out on: take it before writing.
    pub fn generation(&self) -> Generation {
        generation(&self.client, &self.downs)
    }

    /// Resolves once the server has processed a publish just written (after [`Self::generation`] gave
    /// `sent_on`); `Err` when the connection went down before it was acknowledged. The publish is numbered
    /// and an echo asked for when this is called, not when the future is first polled: a caller that
    /// collects the futures of many publishes and awaits them later (the bridge's forwarder) still has
    /// them covered by one echo.
    pub fn acknowledged(
        &self,
        sent_on: Generation,
    ) -> impl Future<Output = Result<(), String>> + Send + 'static {
        use std::sync::atomic::Ordering::SeqCst;
        let seq = self.inner.written.fetch_add(1, SeqCst) + 1;
        let (tx, rx) = tokio::sync::oneshot::channel();
        let settled = {
            let mut st = lock(&self.inner.state);
            if st.acked >= seq {
                Some(verdict(sent_on, st.acked_on))
            } else if *self.downs.borrow() != sent_on.downs {
                // A disconnect the reader has handled already would not fail this waiter.
                Some(Err(LOST.into()))
            } else {
                st.waiters.insert(seq, (sent_on, tx));
                None
            }
        };
        // Leaves the map if the future is dropped (the caller's timeout) before the answer.
        let registered = settled.is_none().then(|| Registered {
            inner: self.inner.clone(),
            seq,
        });
        if registered.is_some() && self.inner.requested.load(SeqCst) < seq {
            self.inner.send.notify_one();
        }
        async move {
            if let Some(verdict) = settled {
                return verdict;
            }
            let _registered = registered;
            rx.await
                .unwrap_or_else(|_| Err("NATS acknowledgements stopped".into()))
        }
    }
}

impl Drop for SharedAcks {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// A waiter's place in [`AckState::waiters`], given up on drop.
struct Registered {
    inner: Arc<AckInner>,
    seq: u64,
}

impl Drop for Registered {
    fn drop(&mut self) {
        lock(&self.inner.state).waiters.remove(&self.seq);
    }
}

/// Sends an echo to `<prefix><n>` for everything written, each time a publish asks for one.
async fn send_echoes(client: async_nats::Client, inner: Arc<AckInner>, prefix: String) {
    use std::sync::atomic::Ordering::SeqCst;
    loop {
        inner.send.notified().await;
        // Let the requests that are ready to run write their publishes first: one echo covers them all.
        tokio::task::yield_now().await;
        let upto = inner.written.load(SeqCst);
        if inner.requested.fetch_max(upto, SeqCst) >= upto {
            continue;
        }
        if let Err(e) = client
            .publish(format!("{prefix}{upto}"), bytes::Bytes::new())
            .await
        {
            // The client is closed: nothing it sends comes back.
            lock(&inner.state).fail_all(&format!("NATS round trip: {e}"));
            return;
        }
    }
}

/// Answers the waiters as echoes come back (`<inbox>.<n>`, the number after `skip` bytes), and fails
/// them all when the connection goes down.
async fn read_echoes(
    mut echoes: async_nats::Subscriber,
    client: async_nats::Client,
    mut downs: tokio::sync::watch::Receiver<u64>,
    inner: Arc<AckInner>,
    skip: usize,
) {
    use futures::StreamExt;
    let mut watching = true;
    loop {
        tokio::select! {
            m = echoes.next() => {
                let Some(m) = m else {
                    lock(&inner.state).fail_all("NATS acknowledgements stopped: the client closed");
                    return;
                };
                let requested = inner.requested.load(std::sync::atomic::Ordering::SeqCst);
                // Anyone allowed to publish to the inbox may; a number no echo was sent for
                // acknowledges nothing.
                let Some(upto) = m
                    .subject
                    .get(skip..)
                    .and_then(|n| n.parse::<u64>().ok())
                    .filter(|n| *n <= requested)
                else {
                    continue;
                };
                let now = generation(&client, &downs);
                let mut st = lock(&inner.state);
                st.acked = st.acked.max(upto);
                st.acked_on = now;
                let acked = st.acked;
                while let Some(entry) = st.waiters.first_entry() {
                    if *entry.key() > acked {
                        break;
                    }
                    let (sent_on, w) = entry.remove();
                    let _ = w.send(verdict(sent_on, now));
                }
            }
            r = downs.changed(), if watching => match r {
                Ok(()) => lock(&inner.state).fail_all(LOST),
                // The health is gone (its adapter with it); the echoes end soon too.
                Err(_) => watching = false,
            },
        }
    }
}
