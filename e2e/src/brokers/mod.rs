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
pub mod nats;
mod rabbitmq;

pub use kind::Kind;
pub use rabbitmq::RabbitCluster;

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

/// How many times [`BrokerProcess::start`] starts a broker on fresh ports after it lost one to another
/// process (the broker said "address already in use").
const START_ATTEMPTS: u32 = 5;

/// A free TCP port on 127.0.0.1 (checked bindable, then released).
///
/// The port is picked at random **below the kernel's ephemeral range** (`ip_local_port_range`), so no
/// `bind(0)` and no outgoing connection of any process on the machine can be handed it between this
/// check and the broker's own bind; only another explicit picker (another test binary) can, and
/// [`BrokerProcess::start`] detects that and starts again on fresh ports. Ports handed out before by
/// this process are never handed out again, so brokers started by parallel tests of one test binary do
/// not collide. Falls back to the kernel's choice when the range leaves no room below it.
pub fn free_port() -> u16 {
    static HANDED_OUT: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
    let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
    let handed_out = handed_out.get_or_insert_with(HashSet::new);
    let below = below_ephemeral_range();
    loop {
        let port = match below {
            Some((low, high)) => low + (random() % u64::from(high - low)) as u16,
            None => TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
                .and_then(|l| l.local_addr())
                .expect("bind 127.0.0.1:0")
                .port(),
        };
        if handed_out.contains(&port) || TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_err() {
            continue;
        }
        handed_out.insert(port);
        return port;
    }
}

/// `[low, high)` below the kernel's ephemeral port range, at least 1000 ports wide, starting at 10000.
fn below_ephemeral_range() -> Option<(u16, u16)> {
    const LOW: u16 = 10_000;
    let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok()?;
    let first: u16 = range.split_whitespace().next()?.parse().ok()?;
    (first >= LOW + 1000).then_some((LOW, first))
}

/// A random number (std's per-process random hasher keys, no extra dependency).
fn random() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.finish()
}

/// A loopback port that refuses connections for as long as this value lives: a socket bound to it that
/// never listens, so no other process can take the port and start accepting (unlike a port that was
/// bound and released). For tests of an unreachable broker or endpoint.
#[derive(Debug)]
pub struct ClosedPort {
    _socket: tokio::net::TcpSocket,
    port: u16,
}

impl ClosedPort {
    pub fn new() -> std::io::Result<Self> {
        let socket = tokio::net::TcpSocket::new_v4()?;
        socket.bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))?;
        let port = socket.local_addr()?.port();
        Ok(ClosedPort {
            _socket: socket,
            port,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
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

/// Bytes the kernel holds unread in the receive queues of the TCP connections accepted on local port
/// `port` (/proc/net/tcp): what a frozen server was sent and has not read.
pub fn unread_by_server(port: u16) -> u64 {
    let mut total = 0;
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let text = std::fs::read_to_string(table).unwrap_or_default();
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 5 || f[3] != "01" {
                continue;
            }
            let local_port = f[1]
                .rsplit(':')
                .next()
                .and_then(|p| u16::from_str_radix(p, 16).ok());
            if local_port != Some(port) {
                continue;
            }
            if let Some(rx) = f[4].split(':').nth(1) {
                total += u64::from_str_radix(rx, 16).unwrap_or(0);
            }
        }
    }
    total
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
    /// The last start saw the main port accept connections for another process.
    port_taken: bool,
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
        Self::start_with(kind, config, files, None, &mut free_port)
    }

    /// [`Self::start`] with the ports from `pick`, and for a RabbitMQ cluster node its name, cookie and
    /// epmd. A start that lost a port to another process is repeated on fresh ports (fresh dir too), up
    /// to [`START_ATTEMPTS`] times.
    pub(crate) fn start_with(
        kind: Kind,
        config: &str,
        files: &[(&str, &[u8])],
        node: Option<&rabbitmq::ClusterNode>,
        pick: &mut dyn FnMut() -> u16,
    ) -> anyhow::Result<Self> {
        let mut attempt = 1;
        loop {
            let mut broker = Self::prepare(kind, config, files, node, pick)?;
            let Err(e) = broker.spawn() else {
                return Ok(broker);
            };
            let lost = broker.lost_a_port();
            broker.stop();
            if !lost {
                return Err(e);
            }
            if attempt >= START_ATTEMPTS {
                return Err(e.context(format!(
                    "{kind} lost a port to another process {attempt} times in a row"
                )));
            }
            attempt += 1;
        }
    }

    /// A broker with its ports picked and its dir and files written, not started yet.
    fn prepare(
        kind: Kind,
        config: &str,
        files: &[(&str, &[u8])],
        node: Option<&rabbitmq::ClusterNode>,
        pick: &mut dyn FnMut() -> u16,
    ) -> anyhow::Result<Self> {
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
            port: pick(),
            port2: pick(),
            port3: pick(),
            rabbit: None,
            port_taken: false,
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
            broker.rabbit = Some(rabbitmq::Rabbit::new(
                broker.dir.path(),
                broker.port,
                node,
                pick,
            )?);
        }
        Ok(broker)
    }

    /// Whether the last start failed because another process held one of the broker's ports: the
    /// broker said so, or its main port was served by a process not of its process group.
    fn lost_a_port(&self) -> bool {
        let log = self.log().to_lowercase();
        self.port_taken || log.contains("address already in use") || log.contains("eaddrinuse")
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
        self.port_taken = false;
        let child_id = self.child.as_ref().expect("spawned").id();
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
                if !self.serves_own_port(child_id) {
                    // Someone else's listener: ours fails to bind and exits, and start() tries again.
                    self.port_taken = true;
                    if Instant::now() >= deadline {
                        bail!(
                            "127.0.0.1:{} is served by a process outside {}'s process group; log tail ({}):\n{}",
                            self.port,
                            self.kind,
                            self.log_path().display(),
                            self.log_tail()
                        );
                    }
                    std::thread::sleep(Duration::from_millis(50));
                    continue;
                }
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

impl BrokerProcess {
    /// Whether the listener on the main port belongs to a process of the broker's process group (the
    /// child leads its own group). `true` where `/proc` cannot tell (not Linux).
    fn serves_own_port(&self, pgid: u32) -> bool {
        listener_owned_by_group(self.port, pgid).unwrap_or(true)
    }
}

/// Whether a process of process group `pgid` holds the socket listening on TCP `port` (any address), from
/// `/proc/net/tcp{,6}` and `/proc/<pid>/fd`; `None` when `/proc/net/tcp` cannot be read.
fn listener_owned_by_group(port: u16, pgid: u32) -> Option<bool> {
    let mut inodes = Vec::new();
    let mut readable = false;
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        readable = true;
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            // sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
            let listening = f.get(3) == Some(&"0A");
            let on_port = f
                .get(1)
                .and_then(|a| a.rsplit_once(':'))
                .and_then(|(_, p)| u16::from_str_radix(p, 16).ok())
                == Some(port);
            if listening
                && on_port
                && let Some(inode) = f.get(9)
            {
                inodes.push(format!("socket:[{inode}]"));
            }
        }
    }
    if !readable {
        return None;
    }
    if inodes.is_empty() {
        return Some(false);
    }
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return None;
    };
    for entry in procs.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        if process_group(pid) != Some(pgid) {
            continue;
        }
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if let Ok(target) = std::fs::read_link(fd.path())
                && inodes.iter().any(|i| target.as_os_str() == i.as_str())
            {
                return Some(true);
            }
        }
    }
    Some(false)
}

/// The process group of `pid` (field 5 of `/proc/<pid>/stat`, counted after the parenthesised name).
fn process_group(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(2)?.parse().ok()
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
    fn free_ports_are_below_the_ephemeral_range() {
        let Some((low, high)) = below_ephemeral_range() else {
            panic!(
                "/proc/sys/net/ipv4/ip_local_port_range leaves no room below it on this machine"
            );
        };
        for _ in 0..50 {
            let port = free_port();
            assert!((low..high).contains(&port), "{port} not in {low}..{high}");
        }
    }

    #[test]
    fn a_closed_port_refuses_connections_while_held() {
        let closed = ClosedPort::new().unwrap();
        let err = TcpStream::connect((Ipv4Addr::LOCALHOST, closed.port())).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused);
        assert!(
            TcpListener::bind((Ipv4Addr::LOCALHOST, closed.port())).is_err(),
            "nobody else can take it"
        );
    }

    #[test]
    fn a_listener_is_told_apart_by_its_process_group() {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let port = listener.local_addr().unwrap().port();
        let ours = process_group(std::process::id()).expect("our process group");
        assert_eq!(listener_owned_by_group(port, ours), Some(true));
        assert_eq!(listener_owned_by_group(port, ours + 1), Some(false));
        drop(listener);
        assert_eq!(listener_owned_by_group(port, ours), Some(false));
    }

    /// Another process listens on the first port the harness picks: the broker cannot bind it, and the
    /// start is repeated on fresh ports instead of failing (or, worse, succeeding against the intruder).
    #[test]
    fn a_start_that_lost_its_port_starts_again_on_fresh_ports() {
        let intruder = TcpListener::bind((Ipv4Addr::LOCALHOST, free_port())).unwrap();
        let taken = intruder.local_addr().unwrap().port();
        let (mut first, mut picked) = (Some(taken), 0);
        let mut pick = || {
            picked += 1;
            first.take().unwrap_or_else(free_port)
        };
        let redis = BrokerProcess::start_with(
            Kind::Redis,
            Kind::Redis.default_config(),
            &[],
            None,
            &mut pick,
        )
        .unwrap_or_else(|e| panic!("{e:#}"));
        assert_eq!(picked, 6, "two attempts of three ports each");
        assert_ne!(redis.port(), taken);
        let pgid = redis.pid().unwrap();
        assert_eq!(listener_owned_by_group(redis.port(), pgid), Some(true));
        let mut s = TcpStream::connect((Ipv4Addr::LOCALHOST, redis.port())).unwrap();
        s.write_all(b"PING\r\n").unwrap();
        let mut reply = [0u8; 7];
        s.read_exact(&mut reply).unwrap();
        assert_eq!(&reply, b"+PONG\r\n");
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
