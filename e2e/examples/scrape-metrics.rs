//! `make observability-test`: runs every Edgewire binary that serves `/metrics` the way it runs in a cluster,
//! against real brokers on loopback, and saves what each serves, for `edgewire-promcheck` to check the
//! chart's alerts and dashboard against (`hack/observability/test.sh`).
//!
//! ```text
//! scrape-metrics OUT_DIR
//! ```
//!
//! writes `OUT_DIR/<source>.prom` (the body) and `OUT_DIR/<source>.prom.content-type` (the Content-Type it
//! was served with) for:
//! - `publisher`: `edgewire-agent publisher` on a `nats-server`, after one event it published and one it
//!   refused as invalid (a failure reason is a label, so the failed counter has a series only after one);
//! - `bridge`: `edgewire-agent bridge` between a Mosquitto (edge) and that `nats-server` (cloud), once both
//!   sides are connected;
//! - `mqtt-sidecar`: `edgewire-agent mqtt-sidecar` beside that Mosquitto (`sys_interval 1`), once it holds a
//!   full `$SYS` round (it shows an uptime of two intervals or more);
//! - `operator`: `edgewire-operator run` with a kubeconfig naming a closed port (it serves `/metrics` while
//!   it waits for the API server).
//!
//! Binaries: `$EDGEWIRE_AGENT_BIN` and `$EDGEWIRE_OPERATOR_BIN`, else beside this example's own directory
//! (`<target>/debug/`). Every process is stopped when the example ends, however it ends.

use std::cell::RefCell;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use edgewire_e2e::brokers::{BrokerProcess, Kind, free_port};

/// How long a process may take to serve what is waited for.
const TIMEOUT: Duration = Duration::from_secs(60);

fn main() -> anyhow::Result<()> {
    let out = PathBuf::from(
        std::env::args_os()
            .nth(1)
            .context("usage: scrape-metrics OUT_DIR")?,
    );
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let work = tempfile::tempdir()?;

    let nats = BrokerProcess::start_default(Kind::Nats)?;
    let mosquitto = BrokerProcess::start(
        Kind::Mosquitto,
        "listener {port} 127.0.0.1\nallow_anonymous true\nsys_interval 1\n",
        &[],
    )?;

    let publisher = publisher(work.path(), &nats)?;
    save(&out, "publisher", &publisher.get("/metrics")?)?;

    let bridge = bridge(work.path(), &mosquitto, &nats)?;
    save(&out, "bridge", &bridge.get("/metrics")?)?;

    let sidecar = sidecar(work.path(), &mosquitto)?;
    save(&out, "mqtt-sidecar", &sidecar.get("/metrics")?)?;

    let operator = operator(work.path())?;
    save(&out, "operator", &operator.get("/metrics")?)?;

    println!(
        "scrape-metrics: publisher, bridge, mqtt-sidecar, operator scraped into {}",
        out.display()
    );
    Ok(())
}

/// `edgewire-agent publisher` with the seed's environment, after one published and one invalid event.
fn publisher(work: &Path, nats: &BrokerProcess) -> anyhow::Result<Proc> {
    let port = free_port();
    let p = Proc::spawn(
        "publisher",
        work,
        Command::new(binary("EDGEWIRE_AGENT_BIN", "edgewire-agent")?)
            .arg("publisher")
            .env("EVENT_BROKER_ENABLED", "true")
            .env("EVENT_BROKER_ADAPTER", "nats")
            .env("EVENT_BROKER_NATS_URLS", nats.url())
            .env("CORE_NAME", "scrape")
            .env("EDGEWIRE_LISTEN", format!("127.0.0.1:{port}")),
        port,
    )?;
    p.wait_for("/readyz answers 200 (broker connected)", |p| {
        Ok(p.get("/readyz")?.status == 200)
    })?;
    let event = |id: Option<&str>| {
        let mut headers = vec![
            ("ce-specversion", "1.0"),
            ("ce-source", "/scrape"),
            ("ce-type", "edge.node.registered"),
            ("content-type", "application/json"),
        ];
        if let Some(id) = id {
            headers.push(("ce-id", id));
        }
        p.request("POST", "/", &headers, b"{\"node\":\"n-1\"}")
    };
    let ok = event(Some("1"))?;
    if ok.status != 202 {
        bail!("publisher: a valid event got {}: {}", ok.status, ok.body);
    }
    let invalid = event(None)?;
    if invalid.status != 400 {
        bail!(
            "publisher: an event without ce-id got {}, want 400: {}",
            invalid.status,
            invalid.body
        );
    }
    Ok(p)
}

/// `edgewire-agent bridge` from a BridgeLink file: MQTT edge, NATS cloud, both connected.
fn bridge(work: &Path, edge: &BrokerProcess, cloud: &BrokerProcess) -> anyhow::Result<Proc> {
    let dir = work.join("bridge");
    std::fs::create_dir_all(dir.join("secrets"))?;
    let config = dir.join("bridge.yaml");
    std::fs::write(
        &config,
        format!(
            r#"apiVersion: edgewire.dev/v1alpha1
kind: BridgeLink
metadata: {{name: site-a, namespace: scrape}}
spec:
  siteId: site-a
  edge: {{endpoint: {{protocol: mqtt, url: "{}"}}}}
  cloud: {{endpoint: {{protocol: nats, url: "{}"}}}}
  rules:
    - {{direction: EdgeToCloud, from: "local.telemetry.#", to: "edge.site-a.telemetry.#", qos: 1}}
  spool: {{size: 1Gi, maxBytes: 64Mi}}
"#,
            edge.url(),
            cloud.url()
        ),
    )?;
    let port = free_port();
    let p = Proc::spawn(
        "bridge",
        work,
        Command::new(binary("EDGEWIRE_AGENT_BIN", "edgewire-agent")?)
            .arg("bridge")
            .arg("--config")
            .arg(&config)
            .arg("--secrets-dir")
            .arg(dir.join("secrets"))
            .arg("--spool-dir")
            .arg(dir.join("spool"))
            .args(["--http-addr", &format!("127.0.0.1:{port}")]),
        port,
    )?;
    p.wait_for("both sides connected", |p| {
        let m = p.get("/metrics")?.body;
        Ok(sample(&m, "edgewire_bridge_edge_connected") == Some(1.0)
            && sample(&m, "edgewire_bridge_cloud_connected") == Some(1.0))
    })?;
    Ok(p)
}

/// `edgewire-agent mqtt-sidecar` beside `mosquitto`, once it holds a full `$SYS` round.
fn sidecar(work: &Path, mosquitto: &BrokerProcess) -> anyhow::Result<Proc> {
    let config_dir = work.join("sidecar-config");
    std::fs::create_dir_all(&config_dir)?;
    let port = free_port();
    let pid = mosquitto.pid().context("mosquitto is not running")?;
    let p = Proc::spawn(
        "mqtt-sidecar",
        work,
        Command::new(binary("EDGEWIRE_AGENT_BIN", "edgewire-agent")?)
            .arg("mqtt-sidecar")
            .arg("--config-dir")
            .arg(&config_dir)
            .args(["--metrics-port", &port.to_string()])
            .args(["--broker", &mosquitto.url()])
            .args(["--mosquitto-pid", &pid.to_string()]),
        port,
    )?;
    // Mosquitto publishes its whole $SYS tree, retained, every sys_interval (1 s), and a subscriber gets the
    // retained tree first, in order: once the sidecar shows an uptime of 2 s or more, a full round is in.
    p.wait_for("a $SYS round with Mosquitto's uptime >= 2 s", |p| {
        let m = p.get("/metrics")?.body;
        Ok(sample(&m, "edgewire_mqtt_broker_uptime_seconds").is_some_and(|v| v >= 2.0))
    })?;
    Ok(p)
}

/// `edgewire-operator run` with no reachable API server: it serves `/metrics` while it retries.
fn operator(work: &Path) -> anyhow::Result<Proc> {
    let kubeconfig = work.join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\n\
             clusters: [{{name: none, cluster: {{server: \"https://127.0.0.1:{}\"}}}}]\n\
             users: [{{name: none, user: {{token: none}}}}]\n\
             contexts: [{{name: none, context: {{cluster: none, user: none}}}}]\n\
             current-context: none\n",
            free_port()
        ),
    )?;
    let port = free_port();
    let p = Proc::spawn(
        "operator",
        work,
        Command::new(binary("EDGEWIRE_OPERATOR_BIN", "edgewire-operator")?)
            .args([
                "--log-format",
                "text",
                "run",
                "--http-addr",
                &format!("127.0.0.1:{port}"),
                "--lease-namespace",
                "scrape",
                "--identity",
                "scrape",
            ])
            .env("KUBECONFIG", &kubeconfig),
        port,
    )?;
    p.wait_for("/healthz answers 200", |p| {
        Ok(p.get("/healthz")?.status == 200)
    })?;
    Ok(p)
}

/// The first sample value of `name` (no labels) in an exposition.
fn sample(exposition: &str, name: &str) -> Option<f64> {
    exposition
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

fn save(dir: &Path, name: &str, resp: &Response) -> anyhow::Result<()> {
    if resp.status != 200 {
        bail!("{name}: /metrics answered {}: {}", resp.status, resp.body);
    }
    std::fs::write(dir.join(format!("{name}.prom")), &resp.body)?;
    std::fs::write(
        dir.join(format!("{name}.prom.content-type")),
        &resp.content_type,
    )?;
    Ok(())
}

/// `$var`, else `<dir of this example>/../<name>`.
fn binary(var: &str, name: &str) -> anyhow::Result<PathBuf> {
    if let Some(p) = std::env::var_os(var).filter(|p| !p.is_empty()) {
        return Ok(p.into());
    }
    let exe = std::env::current_exe()?;
    let p = exe
        .parent()
        .and_then(Path::parent)
        .context("the example's directory")?
        .join(name);
    if !p.is_file() {
        bail!(
            "{} missing: run `cargo build --workspace --bins` (or set {var})",
            p.display()
        );
    }
    Ok(p)
}

/// A child process serving HTTP on 127.0.0.1:`port`, killed on drop; its output in `<work>/<name>.log`.
struct Proc {
    name: &'static str,
    child: RefCell<Child>,
    port: u16,
    log: PathBuf,
}

struct Response {
    status: u16,
    content_type: String,
    body: String,
}

impl Proc {
    fn spawn(
        name: &'static str,
        work: &Path,
        cmd: &mut Command,
        port: u16,
    ) -> anyhow::Result<Proc> {
        let log = work.join(format!("{name}.log"));
        let file = std::fs::File::create(&log)?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        let p = Proc {
            name,
            child: RefCell::new(child),
            port,
            log,
        };
        p.wait_for("its HTTP port to accept", |p| {
            Ok(TcpStream::connect(("127.0.0.1", p.port)).is_ok())
        })?;
        Ok(p)
    }

    /// Polls `ready` until it says true; on timeout, or when the process exits, fails with its log.
    fn wait_for(
        &self,
        what: &str,
        ready: impl Fn(&Proc) -> anyhow::Result<bool>,
    ) -> anyhow::Result<()> {
        let deadline = Instant::now() + TIMEOUT;
        let mut last = String::new();
        loop {
            match ready(self) {
                Ok(true) => return Ok(()),
                Ok(false) => {}
                Err(e) => last = format!("{e:#}"),
            }
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(30).collect();
            let tail = tail.into_iter().rev().collect::<Vec<_>>().join("\n");
            if let Ok(Some(status)) = self.child.borrow_mut().try_wait() {
                bail!("{} exited ({status}) before {what}\n{tail}", self.name);
            }
            if Instant::now() >= deadline {
                bail!(
                    "{}: no {what} within {TIMEOUT:?} (last error: {last})\n{tail}",
                    self.name
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn get(&self, path: &str) -> anyhow::Result<Response> {
        self.request("GET", path, &[], b"")
    }

    /// One HTTP/1.1 request with `Connection: close`.
    fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> anyhow::Result<Response> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port))?;
        s.set_read_timeout(Some(Duration::from_secs(15)))?;
        let mut req = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Length: {}\r\n",
            body.len()
        );
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        s.write_all(req.as_bytes())?;
        s.write_all(body)?;
        let mut raw = Vec::new();
        s.read_to_end(&mut raw)?;
        let raw = String::from_utf8(raw).context("a response that is not UTF-8")?;
        let (head, body) = raw.split_once("\r\n\r\n").context("no end of headers")?;
        let mut lines = head.lines();
        let status = lines
            .next()
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|c| c.parse().ok())
            .context("no status line")?;
        let content_type = lines
            .filter_map(|l| l.split_once(':'))
            .find(|(k, _)| k.eq_ignore_ascii_case("content-type"))
            .map(|(_, v)| v.trim().to_string())
            .unwrap_or_default();
        let chunked = head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked");
        let body = if chunked {
            dechunk(body)?
        } else {
            body.to_string()
        };
        Ok(Response {
            status,
            content_type,
            body,
        })
    }
}

/// The body of a chunked transfer encoding.
fn dechunk(mut s: &str) -> anyhow::Result<String> {
    let mut out = String::new();
    loop {
        let (size, rest) = s.split_once("\r\n").context("chunk size")?;
        let size = usize::from_str_radix(size.trim(), 16)?;
        if size == 0 {
            return Ok(out);
        }
        out.push_str(rest.get(..size).context("short chunk")?);
        s = rest.get(size + 2..).context("chunk end")?;
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let child = self.child.get_mut();
        let _ = child.kill();
        let _ = child.wait();
    }
}
