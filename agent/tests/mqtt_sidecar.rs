//! `edgewire-agent mqtt-sidecar` against a real Mosquitto (Debian's `mosquitto`, started by the harness),
//! configured as the operator renders it: `per_listener_settings false`, no anonymous, a `$7$` password file
//! (made with `mosquitto_passwd`), an ACL file, `$SYS` every second.
//!
//! The sidecar runs in-process (`run_until` on a task) with `--mosquitto-pid` set to the harness's broker:
//! other tests on this machine run their own `mosquitto` processes.

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use edgewire_agent::mqtt_sidecar::{SidecarArgs, run_on, run_until};
use edgewire_e2e::brokers::{BrokerProcess, Kind};
use rumqttc::{AsyncClient, ConnectReturnCode, ConnectionError, Event, MqttOptions, Packet, QoS};
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

const SIDECAR_USER: &str = "edgewire-mqtt-sidecar";
const SIDECAR_PASSWORD: &str = "sidecar-Secret-1";
const ALICE_OLD: &str = "alice-old-pw";
const ALICE_NEW: &str = "alice-new-pw";
const BOB_PASSWORD: &str = "bob-pw";
const CAROL_PASSWORD: &str = "carol-pw";
/// What Bob may read and Alice may write.
const BOB_TOPIC: &str = "edgewire/readonly/bob";

/// `mosquitto.conf` as the operator renders it (loopback listener, `$SYS` every second for the test).
const CONFIG: &str = "per_listener_settings false\n\
allow_anonymous false\n\
password_file {dir}/passwd\n\
acl_file {dir}/acl\n\
sys_interval 1\n\
log_dest stderr\n\
log_type error\n\
log_type warning\n\
log_type notice\n\
log_type information\n\
listener {port} 127.0.0.1\n";

const ACL: &str = "user edgewire-mqtt-sidecar\n\
topic read $SYS/#\n\
\n\
user alice\n\
topic write edgewire/readonly/bob/#\n\
\n\
user bob\n\
topic read edgewire/readonly/bob/#\n\
\n\
user carol\n\
topic read edgewire/readonly/carol/#\n";

const WAIT: Duration = Duration::from_secs(15);

fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "edgewire_agent=debug".into()),
        )
        .with_test_writer()
        .try_init();
}

/// `mosquitto_passwd -b FILE USER PASSWORD`: adds or replaces USER's `$7$` line.
fn mosquitto_passwd(file: &Path, user: &str, password: &str) {
    let out = Command::new("mosquitto_passwd")
        .arg("-b")
        .arg(file)
        .arg(user)
        .arg(password)
        .output()
        .expect("mosquitto_passwd (Debian package `mosquitto`, /usr/bin) must be installed");
    assert!(
        out.status.success(),
        "mosquitto_passwd failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A password file with these users.
fn passwd_file(users: &[(&str, &str)]) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("passwd");
    std::fs::write(&file, "").unwrap();
    for (user, password) in users {
        mosquitto_passwd(&file, user, password);
    }
    let bytes = std::fs::read(&file).unwrap();
    assert!(
        String::from_utf8_lossy(&bytes)
            .lines()
            .all(|l| l.contains(":$7$")),
        "PBKDF2-SHA512 lines"
    );
    bytes
}

fn start_broker() -> BrokerProcess {
    let passwd = passwd_file(&[
        (SIDECAR_USER, SIDECAR_PASSWORD),
        ("alice", ALICE_OLD),
        ("bob", BOB_PASSWORD),
        ("carol", CAROL_PASSWORD),
    ]);
    BrokerProcess::start(
        Kind::Mosquitto,
        CONFIG,
        &[("passwd", &passwd), ("acl", ACL.as_bytes())],
    )
    .expect("start mosquitto")
}

/// Changes `user`'s password the way the kubelet publishes a Secret: a complete new file renamed over
/// the old one.
fn rotate_password(dir: &Path, user: &str, password: &str) {
    let tmp = dir.join(".passwd.new");
    std::fs::copy(dir.join("passwd"), &tmp).unwrap();
    mosquitto_passwd(&tmp, user, password);
    std::fs::rename(&tmp, dir.join("passwd")).unwrap();
}

fn sidecar_args(broker: &BrokerProcess) -> SidecarArgs {
    SidecarArgs {
        config_dir: broker.dir().to_path_buf(),
        // Not used: `Sidecar::start` hands the sidecar a listener on port 0.
        metrics_port: 0,
        broker: format!("127.0.0.1:{}", broker.port()),
        username: Some(SIDECAR_USER.into()),
        password: Some(SIDECAR_PASSWORD.into()),
        mosquitto_pid: broker.pid(),
        poll_interval_ms: 200,
    }
}

/// The sidecar on a task of this test's runtime.
struct Sidecar {
    port: u16,
    stop: oneshot::Sender<()>,
    task: JoinHandle<anyhow::Result<()>>,
    http: reqwest::Client,
}

impl Sidecar {
    fn start(args: SidecarArgs) -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        listener.set_nonblocking(true).unwrap();
        let listener = tokio::net::TcpListener::from_std(listener).unwrap();
        let port = listener.local_addr().unwrap().port();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(run_on(listener, args, async move {
            let _ = stopped.await;
        }));
        Sidecar {
            port,
            stop,
            task,
            http: reqwest::Client::new(),
        }
    }

    async fn get(&self, path: &str) -> Option<(reqwest::StatusCode, String)> {
        let resp = self
            .http
            .get(format!("http://127.0.0.1:{}{path}", self.port))
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .ok()?;
        let status = resp.status();
        Some((status, resp.text().await.ok()?))
    }

    async fn metrics(&self) -> String {
        let (status, body) = eventually("GET /metrics answers", WAIT, async || {
            self.get("/metrics").await
        })
        .await;
        assert_eq!(status, 200, "{body}");
        body
    }

    async fn health(&self) -> Value {
        let (status, body) = eventually("GET /healthz answers", WAIT, async || {
            self.get("/healthz").await
        })
        .await;
        assert_eq!(
            status, 200,
            "/healthz is 200 while the process runs: {body}"
        );
        serde_json::from_str(&body).unwrap()
    }

    /// Waits until the sidecar completed two more polls of the config dir than when called: one of them
    /// started after the call, so it saw whatever the files were at the call.
    async fn two_more_rounds(&self) {
        let rounds = |h: &Value| h["reload"]["rounds"].as_u64().expect("reload.rounds");
        let first = rounds(&self.health().await);
        eventually("two more polls of the config dir", WAIT, async || {
            (rounds(&self.health().await) >= first + 2).then_some(())
        })
        .await;
    }

    /// Stops it; what `run_until` returned.
    async fn stop(self) -> anyhow::Result<()> {
        assert!(
            !self.task.is_finished(),
            "the sidecar stopped on its own: {:?}",
            self.task.await
        );
        let _ = self.stop.send(());
        tokio::time::timeout(WAIT, self.task)
            .await
            .expect("the sidecar stops when told")
            .expect("the sidecar task did not panic")
    }
}

/// The reload-at-start rule is a time rule: files written more than 500 ms after Mosquitto started are
/// newer than what it loaded. Waits until Mosquitto is `age` old, from its start time in `/proc` (no wait
/// at all when it already is).
async fn mosquitto_older_than(broker: &BrokerProcess, age: Duration) {
    let pid = broker.pid().expect("mosquitto runs");
    loop {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        let started = edgewire_agent::mqtt_sidecar::reload::started_after_boot(&stat).unwrap();
        let uptime: f64 = std::fs::read_to_string("/proc/uptime")
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap()
            .parse()
            .unwrap();
        let missing = age.as_secs_f64() - (uptime - started);
        if missing <= 0.0 {
            return;
        }
        tokio::time::sleep(Duration::from_secs_f64(missing)).await;
    }
}

/// Polls `f` every 50 ms until it returns `Some`, for at most `timeout`.
async fn eventually<T>(what: &str, timeout: Duration, mut f: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?}: {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The value of one series (`name` or `name{labels}`) in a text exposition.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (s, v) = l.rsplit_once(' ')?;
        (s == series).then(|| v.parse().ok())?
    })
}

/// What a test client saw after connecting.
#[derive(Debug, Clone, PartialEq)]
enum Seen {
    SubAck,
    PubAck,
    /// A keep-alive round trip on the connection.
    PingResp,
    Publish(String, String),
    /// The connection ended (the client does not reconnect).
    Error(String),
}

/// A test MQTT client whose event loop runs on a task and stops at the first error.
struct Client {
    client: AsyncClient,
    events: mpsc::UnboundedReceiver<Seen>,
    seen: Vec<Seen>,
}

fn mqtt_options(port: u16, id: &str, user: &str, password: &str) -> MqttOptions {
    let mut o = MqttOptions::new(id, "127.0.0.1", port);
    o.set_credentials(user, password)
        .set_keep_alive(Duration::from_secs(2))
        .set_clean_session(true);
    o
}

/// Connects; the CONNACK's refusal code if the broker refuses.
async fn connect(
    port: u16,
    id: &str,
    user: &str,
    password: &str,
) -> Result<Client, ConnectReturnCode> {
    let (client, mut el) = AsyncClient::new(mqtt_options(port, id, user, password), 64);
    let deadline = Instant::now() + WAIT;
    loop {
        assert!(Instant::now() < deadline, "{id}: no CONNACK");
        match tokio::time::timeout(WAIT, el.poll()).await {
            Ok(Ok(Event::Incoming(Packet::ConnAck(_)))) => break,
            Ok(Ok(_)) => {}
            Ok(Err(ConnectionError::ConnectionRefused(code))) => return Err(code),
            Ok(Err(e)) => panic!("{id}: cannot connect: {e}"),
            Err(_) => panic!("{id}: no CONNACK within {WAIT:?}"),
        }
    }
    let (tx, events) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let seen = match el.poll().await {
                Ok(Event::Incoming(Packet::SubAck(_))) => Seen::SubAck,
                Ok(Event::Incoming(Packet::PubAck(_))) => Seen::PubAck,
                Ok(Event::Incoming(Packet::PingResp)) => Seen::PingResp,
                Ok(Event::Incoming(Packet::Publish(p))) => Seen::Publish(
                    p.topic.clone(),
                    String::from_utf8_lossy(&p.payload).into_owned(),
                ),
                Ok(Event::Incoming(Packet::ConnAck(_))) => Seen::Error("a second CONNACK".into()),
                Ok(Event::Incoming(Packet::Disconnect)) => Seen::Error("DISCONNECT".into()),
                Ok(_) => continue,
                Err(e) => {
                    let _ = tx.send(Seen::Error(e.to_string()));
                    return;
                }
            };
            if tx.send(seen).is_err() {
                return;
            }
        }
    });
    Ok(Client {
        client,
        events,
        seen: Vec::new(),
    })
}

impl Client {
    /// Waits for an event matching `want`; everything seen is kept in `self.seen`.
    async fn wait_for(&mut self, what: &str, want: impl Fn(&Seen) -> bool) -> Seen {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.events.recv()).await {
                Ok(Some(e)) => {
                    self.seen.push(e.clone());
                    if want(&e) {
                        return e;
                    }
                }
                Ok(None) => panic!("{what}: the event loop ended; seen {:?}", self.seen),
                Err(_) => panic!("{what}: not within {WAIT:?}; seen {:?}", self.seen),
            }
        }
    }

    /// Takes in whatever arrived so far without waiting.
    fn drain(&mut self) {
        while let Ok(e) = self.events.try_recv() {
            self.seen.push(e);
        }
    }

    fn errors(&self) -> Vec<&Seen> {
        self.seen
            .iter()
            .filter(|e| matches!(e, Seen::Error(_)))
            .collect()
    }

    async fn subscribe(&mut self, filter: &str) {
        self.client
            .subscribe(filter, QoS::AtLeastOnce)
            .await
            .unwrap();
        self.wait_for("SUBACK", |e| *e == Seen::SubAck).await;
    }

    async fn publish(&mut self, topic: &str, payload: &str) {
        self.client
            .publish(topic, QoS::AtLeastOnce, false, payload.as_bytes().to_vec())
            .await
            .unwrap();
        self.wait_for("PUBACK", |e| *e == Seen::PubAck).await;
    }
}

/// Every value seen per `$SYS` topic, by an independent subscriber.
#[derive(Clone, Default)]
struct SysObserver(Arc<Mutex<HashMap<String, Vec<String>>>>);

impl SysObserver {
    async fn start(port: u16) -> Self {
        let mut c = connect(port, "test-sys-observer", SIDECAR_USER, SIDECAR_PASSWORD)
            .await
            .expect("the observer logs in");
        c.client.subscribe("$SYS/#", QoS::AtMostOnce).await.unwrap();
        let seen = SysObserver::default();
        let store = seen.clone();
        tokio::spawn(async move {
            let _client = c.client; // keeps the event loop alive
            while let Some(e) = c.events.recv().await {
                if let Seen::Publish(topic, payload) = e {
                    let mut map = store.0.lock().unwrap();
                    map.entry(topic).or_default().push(payload);
                }
            }
        });
        seen
    }

    fn values(&self, topic: &str) -> Vec<String> {
        self.0
            .lock()
            .unwrap()
            .get(topic)
            .cloned()
            .unwrap_or_default()
    }

    fn last(&self, topic: &str) -> Option<String> {
        self.values(topic).last().cloned()
    }

    /// Whether `value` is one of the integers published on `topic`.
    fn saw_int(&self, topic: &str, value: f64) -> bool {
        self.values(topic)
            .iter()
            .any(|v| v.trim().parse::<f64>().ok() == Some(value))
    }
}

fn broker_log_count(broker: &BrokerProcess, needle: &str) -> usize {
    broker.log().matches(needle).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotating_one_password_reloads_mosquitto_and_keeps_the_others_connected() {
    init_logs();
    let broker = start_broker();
    let port = broker.port();

    // Bob reads his topic; Alice writes to it.
    let mut bob = connect(port, "bob", "bob", BOB_PASSWORD).await.unwrap();
    bob.subscribe(&format!("{BOB_TOPIC}/#")).await;
    let mut alice_old = connect(port, "alice-old", "alice", ALICE_OLD)
        .await
        .expect("alice's old password works before the rotation");
    alice_old.publish(&format!("{BOB_TOPIC}/1"), "before").await;
    bob.wait_for(
        "bob gets the message sent before the rotation",
        |e| matches!(e, Seen::Publish(_, p) if p == "before"),
    )
    .await;

    let sidecar = Sidecar::start(sidecar_args(&broker));
    let health = eventually(
        "the sidecar watches the config dir and reads $SYS",
        WAIT,
        async || {
            let h = sidecar.health().await;
            (h["reload"]["watching"] == true && h["broker"]["receiving"] == true).then_some(h)
        },
    )
    .await;
    assert_eq!(health["reload"]["reloads"], 0, "{health}");
    let metrics = sidecar.metrics().await;
    assert_eq!(
        sample(&metrics, "edgewire_mqtt_reloads_total"),
        Some(0.0),
        "{metrics}"
    );
    assert_eq!(
        sample(&metrics, "edgewire_mqtt_reload_errors_total"),
        Some(0.0)
    );
    assert_eq!(
        broker_log_count(&broker, "Reloading config"),
        0,
        "no SIGHUP at start-up: the files are older than Mosquitto"
    );

    // The Secret changes: Alice's password only.
    let rotated = Instant::now();
    rotate_password(broker.dir(), "alice", ALICE_NEW);
    eventually("the sidecar reloads Mosquitto", WAIT, async || {
        let m = sidecar.metrics().await;
        (sample(&m, "edgewire_mqtt_reloads_total") == Some(1.0)).then_some(())
    })
    .await;
    let reload_latency = rotated.elapsed();
    eventually("Mosquitto logs the reload", WAIT, async || {
        (broker_log_count(&broker, "Reloading config") == 1).then_some(())
    })
    .await;

    // Alice's old login no longer holds: her session is closed and a new one is refused.
    alice_old
        .wait_for("alice's old session ends", |e| matches!(e, Seen::Error(_)))
        .await;
    let refused = connect(port, "alice-old-again", "alice", ALICE_OLD)
        .await
        .err();
    assert!(
        matches!(
            refused,
            Some(ConnectReturnCode::NotAuthorized | ConnectReturnCode::BadUserNamePassword)
        ),
        "alice's old password is refused, got {refused:?}"
    );
    // The new one works, and what she sends still reaches Bob on the connection he had all along.
    let mut alice_new = connect(port, "alice-new", "alice", ALICE_NEW)
        .await
        .expect("alice's new password works");
    alice_new.publish(&format!("{BOB_TOPIC}/2"), "after").await;
    bob.wait_for(
        "bob gets the message sent after the rotation",
        |e| matches!(e, Seen::Publish(_, p) if p == "after"),
    )
    .await;
    // Two more keep-alive round trips on Bob's connection: it is still the first one.
    for _ in 0..2 {
        bob.wait_for("a keep-alive round trip", |e| *e == Seen::PingResp)
            .await;
    }
    bob.drain();
    assert!(
        bob.errors().is_empty(),
        "bob was never disconnected: {:?}",
        bob.seen
    );
    assert_eq!(
        broker.log().matches("u'bob'").count(),
        1,
        "bob connected exactly once:\n{}",
        broker.log()
    );

    let metrics = sidecar.metrics().await;
    assert_eq!(
        sample(&metrics, "edgewire_mqtt_reloads_total"),
        Some(1.0),
        "{metrics}"
    );
    assert_eq!(
        sample(&metrics, "edgewire_mqtt_reload_errors_total"),
        Some(0.0)
    );
    let health = sidecar.health().await;
    assert_eq!(health["reload"]["reloads"], 1, "{health}");
    assert!(health["reload"]["lastReload"].is_string(), "{health}");
    assert_eq!(health["reload"]["restartRequired"], false, "{health}");

    // A mosquitto.conf change needs a restart: reported, not SIGHUPed.
    let conf = broker.config_path();
    let tmp = broker.dir().join(".mosquitto.conf.new");
    let mut text = std::fs::read_to_string(&conf).unwrap();
    text.push_str("# a listener change would go here\n");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, &conf).unwrap();
    let health = eventually(
        "the sidecar notices mosquitto.conf changed",
        WAIT,
        async || {
            let h = sidecar.health().await;
            (h["reload"]["restartRequired"] == true).then_some(h)
        },
    )
    .await;
    assert_eq!(
        health["reload"]["reloads"], 1,
        "no SIGHUP for mosquitto.conf: {health}"
    );
    assert_eq!(broker_log_count(&broker, "Reloading config"), 1);

    sidecar.stop().await.expect("the sidecar stops cleanly");
    eprintln!(
        "figures: passwd renamed -> reload counted in {reload_latency:?} (poll interval 200 ms)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_changed_while_no_sidecar_watched_is_reloaded_at_start() {
    init_logs();
    let broker = start_broker();
    let port = broker.port();
    // The Secret changes after Mosquitto started, while the sidecar is not running (a sidecar restart).
    mosquitto_older_than(&broker, Duration::from_millis(600)).await;
    rotate_password(broker.dir(), "alice", ALICE_NEW);
    assert!(
        connect(port, "alice-1", "alice", ALICE_NEW).await.is_err(),
        "not loaded yet"
    );

    // No --mosquitto-pid: found in /proc by name (other tests' brokers run too; ours is the one started
    // from the config dir).
    let mut args = sidecar_args(&broker);
    args.mosquitto_pid = None;
    let sidecar = Sidecar::start(args);
    eventually("the sidecar reloads Mosquitto at start", WAIT, async || {
        let m = sidecar.metrics().await;
        (sample(&m, "edgewire_mqtt_reloads_total") == Some(1.0)).then_some(())
    })
    .await;
    connect(port, "alice-2", "alice", ALICE_NEW)
        .await
        .expect("alice's new password works");
    assert!(connect(port, "alice-3", "alice", ALICE_OLD).await.is_err());
    // And only once: two more polls saw the same files.
    sidecar.two_more_rounds().await;
    let m = sidecar.metrics().await;
    assert_eq!(sample(&m, "edgewire_mqtt_reloads_total"), Some(1.0), "{m}");
    assert_eq!(broker_log_count(&broker, "Reloading config"), 1);
    sidecar.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_match_what_the_test_did_and_what_sys_says() {
    init_logs();
    let broker = start_broker();
    let port = broker.port();
    const N: usize = 3; // alice, bob, carol
    const M: usize = 20;

    let mut alice = connect(port, "alice", "alice", ALICE_OLD).await.unwrap();
    let mut bob = connect(port, "bob", "bob", BOB_PASSWORD).await.unwrap();
    bob.subscribe(&format!("{BOB_TOPIC}/#")).await;
    let mut carol = connect(port, "carol", "carol", CAROL_PASSWORD)
        .await
        .unwrap();
    carol.subscribe("edgewire/readonly/carol/#").await;
    let observer = SysObserver::start(port).await;
    let sidecar = Sidecar::start(sidecar_args(&broker));

    for i in 0..M {
        alice
            .publish(&format!("{BOB_TOPIC}/{i}"), &format!("m{i}"))
            .await;
    }
    for i in 0..M {
        let want = format!("m{i}");
        bob.wait_for(
            "bob gets every message",
            |e| matches!(e, Seen::Publish(_, p) if *p == want),
        )
        .await;
    }

    // Connected: the N clients, the observer and the sidecar itself.
    let connected = (N + 2) as f64;
    // Subscriptions: bob's, carol's, and $SYS/# of the observer and of the sidecar.
    let subscriptions = 4.0;
    let metrics = eventually(
        "the sidecar reports the clients and the publishes",
        WAIT,
        async || {
            let m = sidecar.metrics().await;
            let ok = sample(&m, "edgewire_mqtt_clients_connected") == Some(connected)
                && sample(&m, "edgewire_mqtt_publish_messages_received_total") == Some(M as f64)
                && sample(&m, "edgewire_mqtt_subscriptions") == Some(subscriptions);
            ok.then_some(m)
        },
    )
    .await;
    // The test's own $SYS subscriber read the same.
    assert_eq!(
        observer.last("$SYS/broker/clients/connected").as_deref(),
        Some(connected.to_string().as_str())
    );
    assert_eq!(
        observer.last("$SYS/broker/publish/messages/received"),
        Some(M.to_string())
    );
    assert_eq!(
        sample(&metrics, "edgewire_mqtt_broker_up"),
        Some(1.0),
        "{metrics}"
    );
    assert_eq!(
        sample(&metrics, "edgewire_mqtt_sessions"),
        Some(connected),
        "clean sessions only"
    );
    let version = observer.last("$SYS/broker/version").unwrap();
    let version = version.trim_start_matches("mosquitto version ");
    assert_eq!(
        sample(
            &metrics,
            &format!("edgewire_mqtt_broker_info{{version=\"{version}\"}}")
        ),
        Some(1.0),
        "{metrics}"
    );
    for help in [
        "# HELP edgewire_mqtt_messages_received_per_second ",
        "# TYPE edgewire_mqtt_messages_received counter",
        "# TYPE edgewire_mqtt_clients_connected gauge",
    ] {
        assert!(metrics.contains(help), "{help:?} in\n{metrics}");
    }
    assert!(
        metrics.contains("divided by 60"),
        "the HELP says how the rate is made"
    );

    // Cumulative counters and rates: each exported value is one Mosquitto published (rates: divided by 60).
    let (m, figures) = eventually(
        "every counter and rate matches a $SYS value",
        WAIT,
        async || {
            let m = sidecar.metrics().await;
            let mut figures = Vec::new();
            for (series, topic) in [
                ("edgewire_mqtt_messages_received_total", "messages/received"),
                ("edgewire_mqtt_messages_sent_total", "messages/sent"),
                (
                    "edgewire_mqtt_publish_messages_sent_total",
                    "publish/messages/sent",
                ),
                ("edgewire_mqtt_bytes_received_total", "bytes/received"),
                ("edgewire_mqtt_bytes_sent_total", "bytes/sent"),
                ("edgewire_mqtt_retained_messages", "retained messages/count"),
            ] {
                let v = sample(&m, series)?;
                if !observer.saw_int(&format!("$SYS/broker/{topic}"), v) {
                    return None;
                }
                figures.push(format!("{series}={v}"));
            }
            for (series, topic) in [
                (
                    "edgewire_mqtt_messages_received_per_second",
                    "messages/received",
                ),
                (
                    "edgewire_mqtt_publish_messages_received_per_second",
                    "publish/received",
                ),
                ("edgewire_mqtt_bytes_received_per_second", "bytes/received"),
            ] {
                let v = sample(&m, &format!("{series}{{window=\"1min\"}}"))?;
                let per_minute = observer.values(&format!("$SYS/broker/load/{topic}/1min"));
                let matches = per_minute
                    .iter()
                    .filter_map(|p| p.trim().parse::<f64>().ok())
                    .any(|p| (p / 60.0 - v).abs() < 1e-9);
                if !(matches && v > 0.0) {
                    return None;
                }
                figures.push(format!("{series}{{window=\"1min\"}}={v:.3}"));
            }
            Some((m, figures))
        },
    )
    .await;
    let received = sample(&m, "edgewire_mqtt_messages_received_total").unwrap();
    assert!(
        received >= M as f64,
        "all packets received include the {M} PUBLISHes: {received}"
    );
    let sent = sample(&m, "edgewire_mqtt_publish_messages_sent_total").unwrap();
    assert!(sent >= M as f64, "bob got {M} PUBLISHes: {sent}");
    for window in ["5min", "15min"] {
        assert!(
            sample(
                &m,
                &format!("edgewire_mqtt_messages_received_per_second{{window=\"{window}\"}}")
            )
            .is_some(),
            "{window} in\n{m}"
        );
    }

    // One client leaves: the gauge follows.
    carol.client.disconnect().await.unwrap();
    eventually("carol's departure shows", WAIT, async || {
        let m = sidecar.metrics().await;
        (sample(&m, "edgewire_mqtt_clients_connected") == Some(connected - 1.0)).then_some(())
    })
    .await;

    sidecar.stop().await.unwrap();
    eprintln!(
        "figures: clients_connected={connected} (N={N} + observer + sidecar), publish_messages_received={M}, {}",
        figures.join(", ")
    );
}

/// No broker listening at the address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_broker_is_reported_not_fatal() {
    init_logs();
    let config_dir = tempfile::tempdir().unwrap();
    // The broker of the wrong-credentials test below, stopped; the sidecar has the wrong password too, so
    // this is also that test's refusal check against a stopped broker, which must fail.
    let mut broker = start_broker();
    broker.stop();
    let mut args = SidecarArgs::new(config_dir.path());
    args.broker = format!("127.0.0.1:{}", broker.port());
    args.username = Some(SIDECAR_USER.into());
    args.password = Some("not-the-password".into());
    args.poll_interval_ms = 100;
    let sidecar = Sidecar::start(args);
    let health = eventually(
        "/healthz says the broker is not connected",
        WAIT,
        async || {
            let h = sidecar.health().await;
            (h["broker"]["detail"]
                .as_str()?
                .contains("Connection refused"))
            .then_some(h)
        },
    )
    .await;
    assert!(
        !connack_refusal(&health["broker"]["detail"]),
        "the refusal check passes against a stopped broker: {health}"
    );
    assert_eq!(health["status"], "ok");
    assert_eq!(health["broker"]["connected"], false, "{health}");
    assert_eq!(
        health["reload"]["watching"], false,
        "no files in the config dir: {health}"
    );
    let m = sidecar.metrics().await;
    assert_eq!(sample(&m, "edgewire_mqtt_broker_up"), Some(0.0), "{m}");
    assert!(
        !m.contains("edgewire_mqtt_clients_connected"),
        "no $SYS metrics without $SYS:\n{m}"
    );
    sidecar.stop().await.unwrap();

    // A malformed address is a start-up error, not a panic.
    let mut args = SidecarArgs::new(config_dir.path());
    args.metrics_port = 0;
    args.broker = "127.0.0.1:notaport".into();
    let err = run_until(args, std::future::pending()).await.unwrap_err();
    assert!(err.to_string().contains("--broker"), "{err}");
}

/// Mosquitto's CONNACK refusing a login, as the sidecar's `/healthz` detail reports it.
fn connack_refusal(detail: &Value) -> bool {
    detail.as_str().is_some_and(|d| {
        d.contains("refused the connection: NotAuthorized")
            || d.contains("refused the connection: BadUserNamePassword")
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_credentials_or_no_sys_acl_are_reported_not_fatal() {
    init_logs();
    let broker = start_broker();

    // Wrong password: Mosquitto refuses the connection.
    let mut args = sidecar_args(&broker);
    args.password = Some("not-the-password".into());
    let wrong = Sidecar::start(args);
    let health = eventually("/healthz says the login was refused", WAIT, async || {
        let h = wrong.health().await;
        connack_refusal(&h["broker"]["detail"]).then_some(h)
    })
    .await;
    assert_eq!(health["broker"]["connected"], false, "{health}");
    let m = wrong.metrics().await;
    assert_eq!(sample(&m, "edgewire_mqtt_broker_up"), Some(0.0), "{m}");
    assert!(!m.contains("edgewire_mqtt_clients_connected"), "{m}");

    // A user whose ACL does not grant $SYS: Mosquitto accepts the login and the subscription, then sends
    // nothing; the sidecar does not claim to be up.
    let mut args = sidecar_args(&broker);
    args.username = Some("bob".into());
    args.password = Some(BOB_PASSWORD.into());
    let no_acl = Sidecar::start(args);
    eventually(
        "the sidecar without $SYS read is subscribed",
        WAIT,
        async || {
            let h = no_acl.health().await;
            (h["broker"]["subscribed"] == true).then_some(())
        },
    )
    .await;
    // $SYS flows: a client of the sidecar's user (which may read it) gets three updates after the sidecar
    // without the ACL subscribed (the first may be the retained one; the others are sent to every
    // subscription at once, a second apart), and by then that sidecar has seen none.
    let mut probe = connect(broker.port(), "sys-probe", SIDECAR_USER, SIDECAR_PASSWORD)
        .await
        .unwrap();
    probe.subscribe("$SYS/broker/uptime").await;
    for _ in 0..3 {
        probe
            .wait_for(
                "a $SYS update",
                |e| matches!(e, Seen::Publish(t, _) if t == "$SYS/broker/uptime"),
            )
            .await;
    }
    let health = no_acl.health().await;
    assert_eq!(health["broker"]["connected"], true, "{health}");
    assert_eq!(health["broker"]["receiving"], false, "{health}");
    assert!(
        health["broker"]["detail"]
            .as_str()
            .unwrap()
            .contains("topic read $SYS/#"),
        "{health}"
    );
    let m = no_acl.metrics().await;
    assert_eq!(sample(&m, "edgewire_mqtt_broker_up"), Some(0.0), "{m}");

    wrong.stop().await.unwrap();
    no_acl.stop().await.unwrap();
}

/// The Secret volume as the kubelet lays it out: `passwd -> ..data/passwd`, `..data -> ..<timestamp>`, and
/// an update swaps `..data`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kubelet_secret_swap_reloads_mosquitto() {
    init_logs();
    let passwd = passwd_file(&[
        (SIDECAR_USER, SIDECAR_PASSWORD),
        ("alice", ALICE_OLD),
        ("bob", BOB_PASSWORD),
    ]);
    let config = CONFIG
        .replace("{dir}/passwd", "{dir}/secret/passwd")
        .replace("{dir}/acl", "{dir}/secret/acl");
    let broker = BrokerProcess::start(
        Kind::Mosquitto,
        &config,
        &[("secret/passwd", &passwd), ("secret/acl", ACL.as_bytes())],
    )
    .expect("start mosquitto");
    let secret = broker.dir().join("secret");
    let port = broker.port();
    let mut bob = connect(port, "bob", "bob", BOB_PASSWORD).await.unwrap();
    bob.subscribe(&format!("{BOB_TOPIC}/#")).await;

    let mut args = sidecar_args(&broker);
    args.config_dir = secret.clone();
    let sidecar = Sidecar::start(args);
    eventually("the sidecar watches the secret dir", WAIT, async || {
        (sidecar.health().await["reload"]["watching"] == true).then_some(())
    })
    .await;

    // Same contents, new layout (new inodes, new mtimes, symlinks): nothing to reload.
    let publish = |generation: &str, passwd: &[u8]| {
        let dir = secret.join(generation);
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("passwd"), passwd).unwrap();
        std::fs::write(dir.join("acl"), ACL).unwrap();
        let tmp = secret.join("..data_tmp");
        std::os::unix::fs::symlink(generation, &tmp).unwrap();
        std::fs::rename(&tmp, secret.join("..data")).unwrap();
    };
    publish("..2026_01_01_00_00_00.000000001", &passwd);
    for file in ["passwd", "acl"] {
        let tmp = secret.join(format!(".{file}.link"));
        std::os::unix::fs::symlink(format!("..data/{file}"), &tmp).unwrap();
        std::fs::rename(&tmp, secret.join(file)).unwrap();
    }
    sidecar.two_more_rounds().await;
    let m = sidecar.metrics().await;
    assert_eq!(sample(&m, "edgewire_mqtt_reloads_total"), Some(0.0), "{m}");

    // The Secret update: a new generation with Alice's new password, `..data` swapped, the old one removed.
    let rotated = secret.join(".rotated");
    std::fs::write(&rotated, &passwd).unwrap();
    mosquitto_passwd(&rotated, "alice", ALICE_NEW);
    let new_passwd = std::fs::read(&rotated).unwrap();
    std::fs::remove_file(&rotated).unwrap();
    publish("..2026_01_01_00_05_00.000000002", &new_passwd);
    std::fs::remove_dir_all(secret.join("..2026_01_01_00_00_00.000000001")).unwrap();

    eventually("the sidecar reloads Mosquitto", WAIT, async || {
        let m = sidecar.metrics().await;
        (sample(&m, "edgewire_mqtt_reloads_total") == Some(1.0)).then_some(())
    })
    .await;
    let mut alice = connect(port, "alice", "alice", ALICE_NEW)
        .await
        .expect("alice's new password works");
    assert!(
        connect(port, "alice-old", "alice", ALICE_OLD)
            .await
            .is_err()
    );
    alice.publish(&format!("{BOB_TOPIC}/k"), "swapped").await;
    bob.wait_for(
        "bob still gets messages",
        |e| matches!(e, Seen::Publish(_, p) if p == "swapped"),
    )
    .await;
    bob.drain();
    assert!(bob.errors().is_empty(), "{:?}", bob.seen);
    let m = sidecar.metrics().await;
    assert_eq!(sample(&m, "edgewire_mqtt_reloads_total"), Some(1.0), "{m}");
    assert_eq!(
        sample(&m, "edgewire_mqtt_reload_errors_total"),
        Some(0.0),
        "{m}"
    );
    sidecar.stop().await.unwrap();
}

/// What the operator renders for the sidecar container of the builtin samples (`render`, as
/// `edgewire-operator render -f` prints it) parses as the agent's `mqtt-sidecar` subcommand (the image's
/// entrypoint is the agent binary), and means what the pod needs: the mounted config dir, the declared
/// metrics port, Mosquitto's loopback listener, and credentials from the two env vars the args read.
#[test]
fn the_operator_arguments_parse() {
    use clap::{Args, Parser};
    use k8s_openapi::api::apps::v1::StatefulSet;
    use k8s_openapi::api::core::v1::Secret;
    #[derive(clap::Parser)]
    struct Cli {
        #[command(subcommand)]
        command: Cmd,
    }
    // As `edgewire-agent`'s main.rs names it.
    #[derive(clap::Subcommand)]
    enum Cmd {
        MqttSidecar(SidecarArgs),
    }
    let root = Path::new(
        &std::env::var("CARGO_MANIFEST_DIR")
            .unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_owned()),
    )
    .parent()
    .unwrap()
    .to_path_buf();
    let settings = edgewire_operator::context::Settings::default();
    let arg_env = |id: &str| {
        SidecarArgs::augment_args(clap::Command::new("mqtt-sidecar"))
            .get_arguments()
            .find(|a| a.get_id() == id)
            .and_then(|a| a.get_env().map(|e| e.to_string_lossy().into_owned()))
    };
    for sample in ["mqttbroker-builtin.yaml", "mqttbroker-builtin-tls.yaml"] {
        let yaml = std::fs::read_to_string(root.join("config/samples").join(sample)).unwrap();
        let rendered = edgewire_operator::render::render(&yaml, &settings)
            .unwrap_or_else(|e| panic!("{sample}: {e:#}"));
        let docs: Vec<serde_norway::Value> = serde_norway::Deserializer::from_str(&rendered)
            .map(|d| <serde_norway::Value as serde::Deserialize>::deserialize(d).unwrap())
            .collect();
        let sts: StatefulSet = docs
            .iter()
            .find(|v| v["kind"] == "StatefulSet")
            .map(|v| serde_norway::from_value(v.clone()).unwrap())
            .unwrap_or_else(|| panic!("{sample}: no StatefulSet in\n{rendered}"));
        let mosquitto_conf: String = docs
            .iter()
            .filter(|v| v["kind"] == "Secret")
            .map(|v| serde_norway::from_value::<Secret>(v.clone()).unwrap())
            .find_map(|s| s.data?.remove("mosquitto.conf"))
            .map(|b| String::from_utf8(b.0).unwrap())
            .unwrap_or_else(|| panic!("{sample}: no mosquitto.conf in\n{rendered}"));
        let pod = sts.spec.unwrap().template.spec.unwrap();
        let container = |name: &str| {
            pod.containers
                .iter()
                .find(|c| c.name == name)
                .unwrap_or_else(|| panic!("{sample}: no container {name}"))
                .clone()
        };
        let sidecar = container("mqtt-sidecar");
        assert_eq!(
            sidecar.command, None,
            "{sample}: the image's entrypoint runs"
        );
        let args = sidecar.args.clone().unwrap();
        let Cmd::MqttSidecar(a) =
            Cli::try_parse_from(std::iter::once("edgewire-agent".to_string()).chain(args.clone()))
                .unwrap_or_else(|e| panic!("{sample}: {args:?} do not parse: {e}"))
                .command;
        let metrics = sidecar
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref() == Some("metrics"))
            .expect("a metrics port");
        assert_eq!(
            i32::from(a.metrics_port),
            metrics.container_port,
            "{sample}"
        );
        let config_mount = sidecar
            .volume_mounts
            .iter()
            .flatten()
            .next()
            .expect("a mount");
        assert_eq!(
            a.config_dir,
            Path::new(&config_mount.mount_path),
            "{sample}"
        );
        let (host, port) = a.broker.rsplit_once(':').expect("host:port");
        assert_eq!(host, "127.0.0.1", "{sample}: the pod's loopback");
        assert!(
            mosquitto_conf
                .lines()
                .any(|l| l == format!("listener {port}")
                    || l == format!("listener {port} 127.0.0.1")),
            "{sample}: no Mosquitto listener reachable on 127.0.0.1:{port} in\n{mosquitto_conf}"
        );
        let env: Vec<String> = sidecar
            .env
            .iter()
            .flatten()
            .map(|e| e.name.clone())
            .collect();
        assert_eq!(
            env,
            [
                arg_env("username").expect("--username reads an env var"),
                arg_env("password").expect("--password reads an env var"),
            ],
            "{sample}: the container sets exactly the variables the args read"
        );
        assert_eq!(
            a.mosquitto_pid, None,
            "{sample}: found in the shared process namespace"
        );
        assert_eq!(pod.share_process_namespace, Some(true), "{sample}");
    }
    // Defaults, and what clap refuses.
    let Cmd::MqttSidecar(d) = Cli::try_parse_from([
        "edgewire-agent",
        "mqtt-sidecar",
        "--mosquitto-pid",
        "42",
        "--poll-interval-ms",
        "100",
    ])
    .unwrap()
    .command;
    assert_eq!(d.config_dir, Path::new("/mosquitto/config"));
    assert_eq!(d.metrics_port, 9431);
    assert_eq!(d.broker, "127.0.0.1:1883");
    assert_eq!(d.mosquitto_pid, Some(42));
    assert_eq!(d.poll_interval_ms, 100);
    assert!(
        Cli::try_parse_from(["edgewire-agent", "mqtt-sidecar", "--poll-interval-ms", "0"]).is_err()
    );
}
