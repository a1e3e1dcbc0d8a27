//! `edgewire-agent mqtt-sidecar`: runs beside Eclipse Mosquitto in a builtin `MqttBroker`'s pod (one
//! process namespace, the same uid) and does two things:
//!
//! - **metrics** — logs in to Mosquitto with its own user (ACL `topic read $SYS/#`), subscribes to `$SYS/#`
//!   and serves the statistics as Prometheus metrics on `0.0.0.0:<metrics-port>`: `GET /metrics`, and
//!   `GET /healthz` (always 200 while the process runs; the JSON body says whether the broker connection
//!   is up). See [`sys`] for the metric names and [`broker`] for the connection.
//! - **hot reload** — polls the mounted config Secret and sends Mosquitto SIGHUP when `passwd` or `acl`
//!   changed, so a rotated password takes effect without disconnecting anyone else. See [`reload`].
//!
//! Sidecar metrics next to the `$SYS` ones: `edgewire_mqtt_broker_up` (1 while `$SYS` data flows on the
//! subscription), `edgewire_mqtt_reloads_total`, `edgewire_mqtt_reload_errors_total`.

pub mod broker;
mod http;
pub mod reload;
pub mod sys;

use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use anyhow::Context;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde::Serialize;

use sys::{SysCollector, Update};

/// Default of `--metrics-port` (the hpfeeds broker's metrics port).
pub const DEFAULT_METRICS_PORT: u16 = 9431;
/// Environment variables with the sidecar's Mosquitto login.
pub const USERNAME_ENV: &str = "MQTT_SIDECAR_USERNAME";
pub const PASSWORD_ENV: &str = "MQTT_SIDECAR_PASSWORD";

/// `edgewire-agent mqtt-sidecar`: Prometheus metrics from Mosquitto's `$SYS` tree, and a SIGHUP to
/// Mosquitto when its password or ACL file changes.
#[derive(Clone, clap::Args)]
pub struct SidecarArgs {
    /// Directory of the mounted config Secret (`mosquitto.conf`, `passwd`, `acl`).
    #[arg(long, value_name = "DIR", default_value = "/mosquitto/config")]
    pub config_dir: PathBuf,
    /// Port of `/metrics` and `/healthz` (on all interfaces).
    #[arg(long, value_name = "PORT", default_value_t = DEFAULT_METRICS_PORT)]
    pub metrics_port: u16,
    /// Mosquitto's plain MQTT listener.
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:1883")]
    pub broker: String,
    /// User to log in to Mosquitto with (its ACL: `topic read $SYS/#`).
    #[arg(long, value_name = "USER", env = USERNAME_ENV)]
    pub username: Option<String>,
    /// Its password; prefer the environment variable (a flag shows in the process list).
    #[arg(long, value_name = "PASSWORD", env = PASSWORD_ENV, hide_env_values = true)]
    pub password: Option<String>,
    /// Signal this pid instead of looking for the process named `mosquitto` in /proc.
    #[arg(long, value_name = "PID")]
    pub mosquitto_pid: Option<u32>,
    /// How often to look at the config dir, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 2000, value_parser = clap::value_parser!(u64).range(10..))]
    pub poll_interval_ms: u64,
}

impl SidecarArgs {
    /// The defaults, for `config_dir` (what the binary gets without flags, minus the environment).
    pub fn new(config_dir: impl Into<PathBuf>) -> Self {
        SidecarArgs {
            config_dir: config_dir.into(),
            metrics_port: DEFAULT_METRICS_PORT,
            broker: format!("127.0.0.1:{}", broker::DEFAULT_PORT),
            username: None,
            password: None,
            mosquitto_pid: None,
            poll_interval_ms: 2000,
        }
    }
}

/// Runs until SIGTERM or Ctrl-C.
pub async fn run(args: SidecarArgs) -> anyhow::Result<()> {
    run_until(args, shutdown_signal()).await
}

/// Runs until `shutdown` completes (or the metrics server fails). Returns an error at start-up for a
/// malformed `--broker` or a metrics port that cannot be bound; an unreachable broker is not an error
/// (`/healthz` says so, and the sidecar keeps retrying).
pub async fn run_until(
    args: SidecarArgs,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    broker::parse_address(&args.broker)?;
    let listen = SocketAddr::from((Ipv4Addr::UNSPECIFIED, args.metrics_port));
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("--metrics-port: cannot listen on {listen}"))?;
    run_on(listener, args, shutdown).await
}

/// [`run_until`] serving `/metrics` and `/healthz` on `listener` (bound by the caller; `metrics_port` is
/// not used).
pub async fn run_on(
    listener: tokio::net::TcpListener,
    args: SidecarArgs,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let (host, port) = broker::parse_address(&args.broker)?;
    let listen = listener.local_addr().context("the metrics listener")?;
    let shared = Arc::new(Shared::new(args.broker.clone(), args.config_dir.clone()));
    let options = broker::options(
        &host,
        port,
        args.username.as_deref(),
        args.password.as_deref(),
    )?;
    let (client, eventloop) = rumqttc::AsyncClient::new(options, 16);
    let watcher = reload::Watcher::new(
        args.config_dir.clone(),
        args.mosquitto_pid,
        PathBuf::from("/proc"),
    );
    let interval = Duration::from_millis(args.poll_interval_ms);
    tracing::info!(
        %listen,
        broker = %args.broker,
        config_dir = %args.config_dir.display(),
        mosquitto_pid = ?args.mosquitto_pid,
        poll_interval = ?interval,
        "mqtt-sidecar starting"
    );
    let server = axum::serve(listener, http::router(shared.clone()));
    let result = tokio::select! {
        r = server => r.context("the metrics server stopped"),
        () = broker::watch(shared.clone(), client, eventloop) => unreachable!("the broker loop never ends"),
        () = watch_config(shared.clone(), watcher, interval) => unreachable!("the reload loop never ends"),
        () = shutdown => Ok(()),
    };
    tracing::info!("mqtt-sidecar stopped");
    result
}

/// Polls the config dir every `interval` and accounts for what happened.
async fn watch_config(shared: Arc<Shared>, mut watcher: reload::Watcher, interval: Duration) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        // File reads, a /proc scan and perhaps a `kill`: off the async workers.
        let (w, round) = match tokio::task::spawn_blocking(move || {
            let round = watcher.poll();
            (watcher, round)
        })
        .await
        {
            Ok(r) => r,
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        };
        watcher = w;
        shared.account(&round, watcher.watching());
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// The broker connection, as `/healthz` shows it.
#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
struct BrokerHealth {
    address: String,
    /// The MQTT connection is up (CONNACK accepted).
    connected: bool,
    /// The `$SYS/#` subscription was granted.
    subscribed: bool,
    /// `$SYS` messages arrive on the subscription (what `edgewire_mqtt_broker_up` reports).
    receiving: bool,
    /// What is missing, while `receiving` is false.
    detail: Option<String>,
    /// When `connected` last changed.
    since: Option<String>,
}

/// Hot reload, as `/healthz` shows it.
#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
struct ReloadHealth {
    config_dir: String,
    /// The files were read at least once (the baseline is taken).
    watching: bool,
    reloads: u64,
    reload_errors: u64,
    last_reload: Option<String>,
    last_error: Option<String>,
    /// `mosquitto.conf` changed since the sidecar started: Mosquitto needs a restart to apply it.
    restart_required: bool,
    /// Polls of the config dir completed so far (what a change is noticed by).
    rounds: u64,
}

/// State shared by the broker loop, the reload loop and the HTTP handlers.
pub(crate) struct Shared {
    registry: Registry,
    sys: SysCollector,
    broker_up: Gauge,
    reloads: Counter,
    reload_errors: Counter,
    broker_address: String,
    broker: Mutex<BrokerHealth>,
    reload: Mutex<ReloadHealth>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    fn new(broker_address: String, config_dir: PathBuf) -> Self {
        let mut registry = Registry::default();
        let sys = SysCollector::default();
        let broker_up = Gauge::default();
        let reloads = Counter::default();
        let reload_errors = Counter::default();
        registry.register(
            "edgewire_mqtt_broker_up",
            "1 while the sidecar is connected to Mosquitto and $SYS messages arrive on its $SYS/# subscription; the $SYS metrics are absent while it is 0",
            broker_up.clone(),
        );
        registry.register(
            "edgewire_mqtt_reloads",
            "SIGHUPs sent to Mosquitto to reload its password and ACL files after they changed",
            reloads.clone(),
        );
        registry.register(
            "edgewire_mqtt_reload_errors",
            "Attempts to signal Mosquitto after its password or ACL file changed that failed (retried every poll)",
            reload_errors.clone(),
        );
        registry.register_collector(Box::new(sys.clone()));
        Shared {
            registry,
            sys,
            broker_up,
            reloads,
            reload_errors,
            broker: Mutex::new(BrokerHealth {
                address: broker_address.clone(),
                detail: Some("not connected yet".into()),
                ..Default::default()
            }),
            broker_address,
            reload: Mutex::new(ReloadHealth {
                config_dir: config_dir.display().to_string(),
                ..Default::default()
            }),
        }
    }

    fn encode_metrics(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }

    fn health(&self) -> serde_json::Value {
        let broker = lock(&self.broker).clone();
        let reload = lock(&self.reload).clone();
        serde_json::json!({"status": "ok", "broker": broker, "reload": reload})
    }

    fn broker_connected(&self) {
        let mut b = lock(&self.broker);
        b.connected = true;
        b.subscribed = false;
        b.receiving = false;
        b.detail = Some(format!(
            "connected; waiting for the {} subscription",
            sys::SYS_FILTER
        ));
        b.since = Some(now());
    }

    fn broker_subscribed(&self) {
        let mut b = lock(&self.broker);
        b.subscribed = true;
        if !b.receiving {
            // Mosquitto grants a subscription its ACL denies and then sends nothing, so only data proves it.
            b.detail = Some(format!(
                "subscribed, but no $SYS message yet (does the sidecar's user have `topic read {}`?)",
                sys::SYS_FILTER
            ));
        }
    }

    fn broker_problem(&self, why: String) {
        lock(&self.broker).detail = Some(why);
    }

    fn broker_down(&self, why: String) {
        self.sys.lock().clear();
        self.broker_up.set(0);
        let mut b = lock(&self.broker);
        if b.connected {
            b.since = Some(now());
        }
        b.connected = false;
        b.subscribed = false;
        b.receiving = false;
        b.detail = Some(why);
    }

    fn sys_update(&self, topic: &str, payload: &[u8]) -> Update {
        let update = self.sys.lock().update(topic, payload);
        if self.broker_up.get() == 0 {
            self.broker_up.set(1);
            let mut b = lock(&self.broker);
            b.receiving = true;
            b.detail = None;
        }
        update
    }

    fn account(&self, round: &reload::Round, watching: bool) {
        use reload::Outcome;
        let dir = lock(&self.reload).config_dir.clone();
        if round.config_changed {
            tracing::warn!(config_dir = %dir, "mosquitto.conf changed: listener changes need a Mosquitto restart (the operator rolls the pod); passwd and acl are reloaded in place");
            lock(&self.reload).restart_required = true;
        }
        match &round.outcome {
            Outcome::Missing(rounds) => {
                // A swap in progress is over by the next round; a file that stays away is a problem.
                if *rounds % 15 == 0 {
                    tracing::warn!(config_dir = %dir, rounds, "passwd or acl is missing");
                } else {
                    tracing::debug!(config_dir = %dir, rounds, "passwd or acl is missing; skipping this round");
                }
            }
            Outcome::ReadError(e) => {
                tracing::warn!(config_dir = %dir, error = %e, "cannot read the config dir");
            }
            Outcome::Baseline => {
                tracing::info!(config_dir = %dir, "watching passwd and acl for changes");
            }
            Outcome::Unchanged => {}
            Outcome::Reloaded { pid, reason } => {
                self.reloads.inc();
                tracing::info!(
                    pid,
                    reason = reason.as_str(),
                    "sent SIGHUP: Mosquitto reloads its password and ACL files"
                );
                let mut r = lock(&self.reload);
                r.reloads = self.reloads.get();
                r.last_reload = Some(now());
            }
            Outcome::Failed { reason, error } => {
                self.reload_errors.inc();
                tracing::warn!(reason = reason.as_str(), %error, "cannot make Mosquitto reload; retrying next round");
                let mut r = lock(&self.reload);
                r.reload_errors = self.reload_errors.get();
                r.last_error = Some(error.clone());
            }
        }
        let mut r = lock(&self.reload);
        r.watching = watching;
        r.rounds += 1;
    }
}
