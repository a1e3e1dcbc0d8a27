//! Helpers: the bridge binary as a child process, brokers, an MQTT QoS 1 publisher, a JetStream reader.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use async_nats::jetstream;
pub use edgewire_e2e::brokers::unread_by_server;
use edgewire_e2e::brokers::{BrokerProcess, Kind};
use futures::StreamExt;
use rumqttc::{AsyncClient, Event, MqttOptions, Outgoing, Packet, QoS};

/// Mosquitto as an edge broker for a bridge: persistent sessions, no cap on the bridge's queue (the
/// default 1000 would make Mosquitto drop what the bridge has not taken yet), and a window of 1000
/// unacknowledged QoS 1 messages towards the bridge (the default 20 would allow 20 per fsync). It logs
/// every subscription ([`wait_subscribed`]) besides its default log types.
pub fn edge_mosquitto() -> BrokerProcess {
    edge_mosquitto_inflight(1000)
}

/// [`edge_mosquitto`] with a window of `inflight` unacknowledged messages towards the bridge (0: no
/// limit).
pub fn edge_mosquitto_inflight(inflight: u32) -> BrokerProcess {
    let conf = format!(
        "{}max_inflight_messages {inflight}\nmax_queued_messages 0\n\
         log_type error\nlog_type warning\nlog_type notice\nlog_type information\nlog_type subscribe\n",
        Kind::Mosquitto.default_config()
    );
    BrokerProcess::start(Kind::Mosquitto, &conf, &[]).expect("mosquitto")
}

/// Waits (30 s) until Mosquitto `broker` (started by [`edge_mosquitto`]) logged the bridge's subscription
/// to `filter`: the SUBSCRIBE is processed, so everything published from now on is routed to the bridge.
/// (Mosquitto logs `<time>: <client id> <qos> <filter>` after adding the subscription, before the SUBACK.)
pub async fn wait_subscribed(broker: &BrokerProcess, filter: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let tail = format!(" {filter}");
    loop {
        let log = broker.log();
        if log
            .lines()
            .any(|l| l.contains(": edgewire-bridge-") && l.ends_with(&tail))
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no subscription of the bridge to {filter} in the broker log:\n{log}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub fn nats() -> BrokerProcess {
    BrokerProcess::start_default(Kind::Nats).expect("nats-server")
}

pub struct Bridge {
    pub child: Option<Child>,
    pub config: PathBuf,
    pub spool: PathBuf,
    /// The port of `/metrics`: the bridge binds port 0 at its first start and logs what it got; a
    /// restart binds that port again.
    http_port: std::sync::OnceLock<u16>,
    pub log: PathBuf,
    extra: Vec<String>,
}

impl Bridge {
    /// Writes `yaml` into `dir` and starts `edgewire-agent bridge` on it with the spool in `dir/spool`.
    pub fn start(dir: &Path, yaml: &str, extra: &[&str]) -> Bridge {
        let config = dir.join("bridge.yaml");
        std::fs::write(&config, yaml).unwrap();
        let mut b = Bridge {
            child: None,
            config,
            spool: dir.join("spool"),
            http_port: std::sync::OnceLock::new(),
            log: dir.join("bridge.log"),
            extra: extra.iter().map(|s| s.to_string()).collect(),
        };
        b.spawn();
        b
    }

    pub fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_edgewire-agent"))
            .arg("bridge")
            .arg("--config")
            .arg(&self.config)
            .arg("--spool-dir")
            .arg(&self.spool)
            .arg("--secrets-dir")
            .arg(self.config.parent().unwrap().join("secrets"))
            .arg("--http-addr")
            .arg(format!("127.0.0.1:{}", self.http_port().unwrap_or(0)))
            .args(&self.extra)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn edgewire-agent bridge");
        self.child = Some(child);
    }

    /// The bridge process's id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the bridge process has exited on its own (its status then).
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// SIGTERM, and waits for the process to exit (a clean stop: the final cursor is written).
    pub fn stop(&mut self) -> std::process::ExitStatus {
        let mut c = self.child.take().expect("the bridge runs");
        signal(c.id(), "TERM");
        c.wait().unwrap()
    }

    /// The body of `/healthz`.
    pub async fn healthz(&self) -> Option<String> {
        let url = format!("http://127.0.0.1:{}/healthz", self.http_port()?);
        reqwest::get(&url).await.ok()?.text().await.ok()
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill(); // SIGKILL
            let _ = c.wait();
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The `/metrics` port, once the bridge logged it (its first `"http_addr"` log field).
    pub fn http_port(&self) -> Option<u16> {
        if let Some(port) = self.http_port.get() {
            return Some(*port);
        }
        let log = self.log();
        let (_, rest) = log.split_once("\"http_addr\":\"127.0.0.1:")?;
        let port = rest.split('"').next()?.parse().ok()?;
        Some(*self.http_port.get_or_init(|| port))
    }

    /// One metric from /metrics (`edgewire_bridge_<name>`); None while not reachable.
    pub async fn metric(&self, name: &str) -> Option<f64> {
        let url = format!("http://127.0.0.1:{}/metrics", self.http_port()?);
        let text = reqwest::get(&url).await.ok()?.text().await.ok()?;
        let key = format!("edgewire_bridge_{name} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&key))
            .and_then(|v| v.trim().parse().ok())
    }

    /// Waits until the bridge's log contains `needle`; panics with the log after `secs`.
    pub async fn wait_log(&self, needle: &str, secs: u64) -> String {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let log = self.log();
            if log.contains(needle) {
                return log;
            }
            assert!(
                Instant::now() < deadline,
                "{needle:?} not in the bridge log after {secs} s:\n{log}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until `pred(metric)` holds; panics with the bridge log after `secs`.
    pub async fn wait_metric(&self, name: &str, secs: u64, pred: impl Fn(f64) -> bool) -> f64 {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            if let Some(v) = self.metric(name).await
                && pred(v)
            {
                return v;
            }
            if Instant::now() > deadline {
                panic!(
                    "metric {name} = {:?} did not reach the expected value in {secs} s\n{}",
                    self.metric(name).await,
                    self.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A bridge config: MQTT edge on `edge_port`, cloud `cloud` (an endpoint YAML flow mapping), rules.
pub fn config(edge: &str, cloud: &str, rules: &str, spool: &str) -> String {
    format!(
        "apiVersion: edgewire.dev/v1alpha1\nkind: BridgeLink\nmetadata: {{name: site-a, namespace: test}}\n\
         spec:\n  siteId: site-a\n  edge: {{endpoint: {edge}}}\n  cloud: {{endpoint: {cloud}}}\n  spool: {spool}\n  rules:\n{rules}"
    )
}

/// 256-byte payload starting with the sequence number.
pub fn payload(seq: u64) -> Vec<u8> {
    let mut p = format!("{seq:012}").into_bytes();
    p.resize(256, b'x');
    p
}

pub fn seq_of(p: &[u8]) -> u64 {
    std::str::from_utf8(&p[..12]).unwrap().parse().unwrap()
}

/// Publishes `from..to` at QoS 1 on `topic` and returns once every PUBACK arrived.
pub async fn mqtt_publish(port: u16, topic: &str, from: u64, to: u64) {
    let mut o = MqttOptions::new(format!("pub-{port}-{from}"), "127.0.0.1", port);
    o.set_inflight(500).set_keep_alive(Duration::from_secs(30));
    let (client, mut el) = AsyncClient::new(o, 1000);
    let topic = topic.to_string();
    let pubs = tokio::spawn(async move {
        for i in from..to {
            client
                .publish(topic.clone(), QoS::AtLeastOnce, false, payload(i))
                .await
                .unwrap();
        }
        client
    });
    let mut acked = 0;
    let total = to - from;
    while acked < total {
        match el.poll().await {
            Ok(Event::Incoming(Packet::PubAck(_))) => acked += 1,
            Ok(Event::Outgoing(Outgoing::Disconnect)) => break,
            Ok(_) => {}
            Err(e) => panic!("publisher connection: {e}"),
        }
    }
    let _client = pubs.await.unwrap();
}

/// A JetStream stream `EDGE` capturing `edge.>`.
pub async fn edge_stream(url: &str) -> jetstream::Context {
    let c = async_nats::connect(url).await.expect("nats");
    let js = jetstream::new(c);
    js.get_or_create_stream(jetstream::stream::Config {
        name: "EDGE".into(),
        subjects: vec!["edge.>".into()],
        ..Default::default()
    })
    .await
    .expect("stream");
    js
}

/// Reads the stream from the start until `n` distinct sequence numbers were seen: (sequence numbers in
/// arrival order, duplicates).
pub async fn read_stream(js: &jetstream::Context, n: u64, secs: u64) -> (Vec<u64>, u64) {
    read_stream_upto(js, n, n, secs).await
}

/// Like [`read_stream`] for sequence numbers below `max_seq`, of which `n` distinct are expected.
pub async fn read_stream_upto(
    js: &jetstream::Context,
    n: u64,
    max_seq: u64,
    secs: u64,
) -> (Vec<u64>, u64) {
    let stream = js.get_stream("EDGE").await.unwrap();
    let consumer = stream
        .create_consumer(jetstream::consumer::pull::OrderedConfig::default())
        .await
        .unwrap();
    let mut msgs = consumer.messages().await.unwrap();
    let mut seen = vec![false; max_seq as usize + 1];
    let mut distinct = 0;
    let mut order = Vec::with_capacity(n as usize);
    let mut dups = 0;
    let deadline = Instant::now() + Duration::from_secs(secs);
    while distinct < n {
        let left = deadline.saturating_duration_since(Instant::now());
        let m = match tokio::time::timeout(left, msgs.next()).await {
            Ok(Some(Ok(m))) => m,
            other => panic!(
                "stream ended or timed out after {distinct} of {n} distinct messages: {:?}",
                other.map(|o| o.map(|r| r.map(|_| ())))
            ),
        };
        let s = seq_of(&m.payload);
        order.push(s);
        if seen[s as usize] {
            dups += 1;
        } else {
            seen[s as usize] = true;
            distinct += 1;
        }
    }
    (order, dups)
}

/// Checks that every sequence number in `0..n` is present and that first arrivals are in order.
pub fn assert_complete_in_order(order: &[u64], n: u64) {
    let mut seen = vec![false; n as usize];
    let mut last_first = None;
    for &s in order {
        assert!(s < n, "unexpected sequence number {s}");
        if !seen[s as usize] {
            seen[s as usize] = true;
            if let Some(l) = last_first {
                assert!(s > l, "first arrival of {s} after {l}: out of order");
            }
            last_first = Some(s);
        }
    }
    let missing: Vec<u64> = (0..n).filter(|s| !seen[*s as usize]).take(10).collect();
    assert!(
        missing.is_empty(),
        "missing sequence numbers, e.g. {missing:?}"
    );
}

/// Sends `sig` (TERM, STOP, CONT, …) to process `pid`.
pub fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "kill -{sig} {pid}");
}

/// The peak resident set size (VmHWM) of process `pid`, in bytes.
pub fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/<pid>/status");
    kb * 1024
}
