//! Real broker processes for broker, chaos and e2e tests.
//!
//! ```no_run
//! use edgewire_e2e::brokers::{BrokerProcess, Kind};
//!
//! let mut nats = BrokerProcess::start_default(Kind::Nats)?;
//! // ... connect to nats.url() ...
//! nats.stop();
//! nats.restart()?; // same port, same JetStream store
//! # anyhow::Ok(())
//! ```
//!
//! Each broker runs in its own process group with its stdout/stderr appended to `{dir}/broker.log`
//! (see [`BrokerProcess::log`]); it is stopped when the [`BrokerProcess`] is dropped.

mod kind;
mod rabbitmq;

pub use kind::Kind;

use std::collections::HashSet;
use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Component, Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tempfile::TempDir;

/// Name of the file in the broker's dir that collects its stdout and stderr.
pub const LOG_FILE: &str = "broker.log";

/// How many lines of the broker log go into a start-up error.
const LOG_TAIL_LINES: usize = 60;

/// A free TCP port on 127.0.0.1 (bound to port 0, then released).
///
/// Ports handed out before by this process are never handed out again, so brokers started by
/// parallel tests of one test binary do not collide.
pub fn free_port() -> u16 {
    static HANDED_OUT: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
    let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
    let handed_out = handed_out.get_or_insert_with(HashSet::new);
    loop {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind 127.0.0.1:0");
        let port = listener
            .local_addr()
            .expect("local_addr of a bound listener")
            .port();
        if handed_out.insert(port) {
            return port;
        }
    }
}

/// Whether 127.0.0.1:`port` accepts a TCP connection within `timeout` (polled).
pub fn wait_for_port(port: u16, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if port_accepts(port) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn port_accepts(port: u16) -> bool {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    TcpStream::connect_timeout(&addr, Duration::from_millis(250)).is_ok()
}

/// A broker process on loopback ports with a private temp dir.
#[derive(Debug)]
pub struct BrokerProcess {
    kind: Kind,
    binary: PathBuf,
    child: Option<Child>,
    dir: TempDir,
    port: u16,
    port2: u16,
    port3: u16,
    rabbit: Option<rabbitmq::Rabbit>,
}

impl BrokerProcess {
    /// Start `kind` with `config` (the broker's config file contents). Placeholders in `config` and in the
    /// extra files are replaced: `{port}` (the main client port, chosen free), `{dir}` (a private temp dir),
    /// `{port2}`, `{port3}` (more free ports for TLS/websocket/monitoring/management listeners).
    /// `files` are written into `{dir}` first (name, bytes), e.g. password files, ACLs, certificates;
    /// names may contain sub-directories (`certs/ca.pem`).
    ///
    /// Waits until the main port accepts TCP (30 s; RabbitMQ 90 s and an AMQP handshake), else returns an
    /// error with the broker's log tail. If the binary is missing the error names the Debian package and
    /// `make deps`. The binary can be overridden with `EDGEWIRE_TEST_BIN_{NATS,MOSQUITTO,REDIS,RABBITMQ}`.
    ///
    /// The config file is `{dir}/nats.conf`, `mosquitto.conf`, `redis.conf` or `rabbitmq.conf`
    /// ([`Self::config_path`]); [`Self::restart`] re-reads it, so a test may rewrite it in between.
    pub fn start(kind: Kind, config: &str, files: &[(&str, &[u8])]) -> anyhow::Result<Self> {
        let binary = kind.binary()?;
        let dir = tempfile::Builder::new()
            .prefix(&format!("edgewire-{}-", kind.binary_name()))
            .tempdir()
            .context("creating the broker's temp dir")?;
        let mut broker = BrokerProcess {
            kind,
            binary,
            child: None,
            dir,
            port: free_port(),
            port2: free_port(),
            port3: free_port(),
            rabbit: None,
        };
        let vars = broker.placeholders();
        for (name, bytes) in files {
            let path = broker.file_path(name)?;
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)
                    .with_context(|| format!("creating {}", parent.display()))?;
            }
            std::fs::write(&path, substitute(bytes, &vars))
                .with_context(|| format!("writing {}", path.display()))?;
        }
        let mut config =
            String::from_utf8(substitute(config.as_bytes(), &vars)).expect("UTF-8 in, UTF-8 out");
        if kind == Kind::Mosquitto
            && running_as_root()
            && !config.lines().any(|l| l.trim_start().starts_with("user "))
        {
            // Started as root, mosquitto switches to the `mosquitto` user, which cannot read our 0700 temp dir.
            config.push_str(
                "\n# added by edgewire-e2e: stay root, the temp dir is root's\nuser root\n",
            );
        }
        std::fs::write(broker.config_path(), config).context("writing the broker config")?;
        if kind == Kind::RabbitMq {
            broker.rabbit = Some(rabbitmq::Rabbit::new(broker.dir.path(), broker.port)?);
        }
        if let Err(e) = broker.spawn() {
            broker.stop();
            return Err(e);
        }
        Ok(broker)
    }

    /// Sensible defaults: NATS with JetStream (store in `{dir}/jetstream`), Mosquitto allowing anonymous on
    /// `{port}` with persistence in `{dir}`, Redis with no auth and no persistence, RabbitMQ with the default
    /// `guest` user (allowed from loopback). See [`Kind::default_config`].
    pub fn start_default(kind: Kind) -> anyhow::Result<Self> {
        Self::start(kind, kind.default_config(), &[])
    }

    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// The main client port (`{port}`).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A second free port (`{port2}`), for a TLS, websocket or monitoring listener.
    pub fn port2(&self) -> u16 {
        self.port2
    }

    /// A third free port (`{port3}`).
    pub fn port3(&self) -> u16 {
        self.port3
    }

    /// The broker's private dir (`{dir}`); removed on drop.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The config file the broker was started with (placeholders replaced).
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join(self.kind.config_file_name())
    }

    /// The file that collects the broker's stdout and stderr.
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join(LOG_FILE)
    }

    /// Client URL for the default config: `nats://127.0.0.1:P`, `127.0.0.1:P` (mosquitto),
    /// `redis://127.0.0.1:P`, `amqp://guest:guest@127.0.0.1:P/%2f`. Custom configs build their own.
    pub fn url(&self) -> String {
        let port = self.port;
        match self.kind {
            Kind::Nats => format!("nats://127.0.0.1:{port}"),
            Kind::Mosquitto => format!("127.0.0.1:{port}"),
            Kind::Redis => format!("redis://127.0.0.1:{port}"),
            Kind::RabbitMq => format!("amqp://guest:guest@127.0.0.1:{port}/%2f"),
            Kind::Moto => format!("http://127.0.0.1:{port}"),
        }
    }

    /// The running process's id (for RabbitMQ: the start script's); `None` once stopped or killed.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGTERM, then SIGKILL to the whole process group after a grace period (10 s; RabbitMQ 30 s); waits
    /// until every process of the group is gone (ports closed). Idempotent.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let pid = child.id();
            if matches!(child.try_wait(), Ok(None)) {
                signal(&pid.to_string(), "TERM");
                let deadline = Instant::now() + self.kind.stop_grace();
                while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(25));
                }
                if matches!(child.try_wait(), Ok(None)) {
                    signal(&format!("-{pid}"), "KILL");
                    let _ = child.wait();
                }
            }
            // Anything the broker left behind in its process group (RabbitMQ: the Erlang VM under the start
            // script).
            signal(&format!("-{pid}"), "KILL");
            wait_group_gone(pid);
        }
        if let Some(rabbit) = &self.rabbit {
            rabbit.stop_epmd();
        }
    }

    /// SIGKILL to the broker's whole process group (a crash: nothing is flushed); waits until every process
    /// of the group is gone.
    /// [`Self::restart`] brings it back.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let pid = child.id();
            signal(&format!("-{pid}"), "KILL");
            let _ = child.kill();
            let _ = child.wait();
            wait_group_gone(pid);
        }
    }

    /// Stops the broker if it runs, then starts it again on the same ports with the same dir (config file,
    /// JetStream store, mosquitto persistence, RabbitMQ's database survive).
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.stop();
        if let Err(e) = self.spawn() {
            self.stop();
            return Err(e);
        }
        Ok(())
    }

    /// Everything the broker wrote to stdout/stderr so far, across restarts (for assertion messages).
    pub fn log(&self) -> String {
        let mut bytes = Vec::new();
        let _ = std::fs::File::open(self.log_path()).and_then(|mut f| f.read_to_end(&mut bytes));
        String::from_utf8_lossy(&bytes).into_owned()
    }

    fn log_tail(&self) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
    }

    fn placeholders(&self) -> [(&'static str, String); 4] {
        [
            ("{port}", self.port.to_string()),
            ("{port2}", self.port2.to_string()),
            ("{port3}", self.port3.to_string()),
            ("{dir}", self.dir.path().display().to_string()),
        ]
    }

    fn file_path(&self, name: &str) -> anyhow::Result<PathBuf> {
        let relative = Path::new(name);
        if name.is_empty()
            || !relative
                .components()
                .all(|c| matches!(c, Component::Normal(_)))
        {
            bail!("file name {name:?} must be a relative path inside the broker dir");
        }
        Ok(self.dir.path().join(relative))
    }

    fn spawn(&mut self) -> anyhow::Result<()> {
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .context("opening the broker log")?;
        writeln!(
            log,
            "--- edgewire-e2e: starting {} on port {} ---",
            self.binary.display(),
            self.port
        )?;
        let mut cmd = Command::new(&self.binary);
        cmd.stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .current_dir(self.dir.path())
            .process_group(0);
        let config = self.config_path();
        match self.kind {
            Kind::Nats | Kind::Mosquitto => {
                cmd.arg("-c").arg(&config);
            }
            Kind::Redis => {
                cmd.arg(&config);
            }
            Kind::Moto => {
                cmd.args(["-H", "127.0.0.1", "-p"])
                    .arg(self.port.to_string())
                    // Accept any credentials unless a test turns IAM enforcement on itself.
                    .env("MOTO_ALLOW_NONEXISTENT_REGION", "true");
            }
            Kind::RabbitMq => {
                let rabbit = self.rabbit.as_ref().expect("set up in start");
                rabbit.prepare()?;
                rabbit.configure(&mut cmd, self.port);
            }
        }
        let started = Instant::now();
        let child = cmd
            .spawn()
            .with_context(|| format!("spawning {}", self.binary.display()))?;
        self.child = Some(child);
        self.wait_ready(started)
    }

    fn wait_ready(&mut self, started: Instant) -> anyhow::Result<()> {
        let timeout = self.kind.start_timeout();
        let deadline = started + timeout;
        let mut accepting_since: Option<Instant> = None;
        loop {
            let child = self.child.as_mut().expect("spawned");
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                bail!(
                    "{} exited during start-up ({status}); log tail ({}):\n{}",
                    self.kind,
                    self.log_path().display(),
                    self.log_tail()
                );
            }
            if port_accepts(self.port) {
                if self.kind != Kind::RabbitMq {
                    return Ok(());
                }
                // The AMQP listener opens near the end of boot; a Connection.Start proves it is serving.
                // A main port that is not plain AMQP (e.g. TLS) is accepted after 10 s of accepting.
                let since = *accepting_since.get_or_insert_with(Instant::now);
                if amqp_greets(self.port) || since.elapsed() > Duration::from_secs(10) {
                    return Ok(());
                }
            }
            if Instant::now() >= deadline {
                bail!(
                    "{} did not accept connections on 127.0.0.1:{} within {timeout:?}; log tail ({}):\n{}",
                    self.kind,
                    self.port,
                    self.log_path().display(),
                    self.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for BrokerProcess {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Whether 127.0.0.1:`port` answers an AMQP 0-9-1 protocol header with a method frame (Connection.Start).
fn amqp_greets(port: u16) -> bool {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(500)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let mut first = [0u8; 1];
    stream.write_all(b"AMQP\x00\x00\x09\x01").is_ok()
        && stream.read_exact(&mut first).is_ok()
        && first[0] == 1
}

/// `kill -<sig> -- <target>`; `target` is a pid or `-pgid`. Errors (already gone) are ignored.
fn signal(target: &str, sig: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg("--")
        .arg(target)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Waits (up to 10 s) until no process of group `pgid` is left, so the ports are closed on return.
fn wait_group_gone(pgid: u32) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        let alive = Command::new("kill")
            .args(["-0", "--", &format!("-{pgid}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !alive {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether this process runs with effective uid 0 (read from /proc, no libc needed).
pub(crate) fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|status| {
        status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|ids| ids.split_whitespace().nth(1).map(|euid| euid == "0"))
            .unwrap_or(false)
    })
}

/// Replaces each placeholder in `bytes` (byte-wise, so binary files pass through untouched).
fn substitute(bytes: &[u8], vars: &[(&str, String)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    'outer: while i < bytes.len() {
        if bytes[i] == b'{' {
            for (name, value) in vars {
                if bytes[i..].starts_with(name.as_bytes()) {
                    out.extend_from_slice(value.as_bytes());
                    i += name.len();
                    continue 'outer;
                }
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_replaced_and_braces_kept() {
        let vars = [
            ("{port}", "1".to_string()),
            ("{port2}", "2".to_string()),
            ("{port3}", "3".to_string()),
            ("{dir}", "/d".to_string()),
        ];
        let out = substitute(
            b"a {port} {port2} {port3} {dir}/x jetstream { {portx} }",
            &vars,
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "a 1 2 3 /d/x jetstream { {portx} }"
        );
    }

    #[test]
    fn free_ports_are_distinct_and_bindable() {
        let ports: HashSet<u16> = (0..50).map(|_| free_port()).collect();
        assert_eq!(ports.len(), 50);
        for port in ports.iter().take(5) {
            TcpListener::bind((Ipv4Addr::LOCALHOST, *port)).expect("free port is bindable");
        }
    }

    #[test]
    fn wait_for_port_sees_a_listener_and_times_out_without_one() {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let port = listener.local_addr().unwrap().port();
        assert!(wait_for_port(port, Duration::from_secs(1)));
        drop(listener);
        assert!(!wait_for_port(port, Duration::from_millis(200)));
    }
}
