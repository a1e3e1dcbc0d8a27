//! The real `edgewire-operator run` binary as a host process, its log and its `/metrics`.
//!
//! It runs the way the chart's Deployment runs it, with the chart's ServiceAccount (a TokenRequest token in
//! a kubeconfig of its own: the chart's RBAC is all it has) and its Lease in the release namespace (the
//! chart's leader-election Role); each test's operators get a Lease name of their own and watch the test's
//! namespace, so the tests sharing the control plane do not meet.

use super::cluster::tail;
use super::{Cluster, POLL, TIMEOUT, operator_bin, wait_for};
use std::fs::File;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// How the operator is started.
#[derive(Clone, Debug)]
pub struct OperatorOpts {
    /// `--identity`: the lease holder name.
    pub identity: String,
    /// `--lease-name` (in the chart's release namespace).
    pub lease_name: String,
    /// `--lease-duration-seconds`.
    pub lease_seconds: u64,
    /// `--watch-namespace` (none: all namespaces).
    pub watch_namespace: Option<String>,
    /// The kubeconfig it runs with (none: the chart's ServiceAccount's, [`Cluster::operator_kubeconfig`]).
    pub kubeconfig: Option<PathBuf>,
    /// More arguments of `run` (e.g. the chart's `--agent-image`).
    pub args: Vec<String>,
}

impl OperatorOpts {
    /// Watches `ns` with a Lease named after it, default lease duration of the binary (15 s).
    pub fn new(ns: &str, identity: &str) -> Self {
        OperatorOpts {
            identity: identity.into(),
            lease_name: format!("edgewire-operator-{ns}"),
            lease_seconds: 15,
            watch_namespace: Some(ns.into()),
            kubeconfig: None,
            args: Vec::new(),
        }
    }
}

/// A running `edgewire-operator run`. Killed (SIGKILL) on drop if still running.
pub struct Operator {
    child: Child,
    log: PathBuf,
    /// `host:port` of its HTTP server (`/metrics`, `/healthz`, `/readyz`).
    addr: String,
    opts: OperatorOpts,
    exited: Option<ExitStatus>,
}

impl Operator {
    /// Starts the operator leasing and watching in `ns` with the binary's default lease duration.
    pub fn start(cluster: &Cluster, ns: &str, identity: &str) -> Operator {
        Self::start_with(cluster, OperatorOpts::new(ns, identity))
    }

    /// Starts the operator and waits until its HTTP server is listening.
    pub fn start_with(cluster: &Cluster, opts: OperatorOpts) -> Operator {
        static N: AtomicU32 = AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let log = cluster
            .dir()
            .join(format!("operator-{}-{n}.log", opts.identity));
        let bin = operator_bin();
        let log_file = File::create(&log).expect("create operator log");
        let cp = cluster.control_plane();
        let mut cmd = Command::new(&bin);
        cmd.args([
            "run",
            "--http-addr",
            "127.0.0.1:0",
            "--lease-namespace",
            cp.release_namespace(),
            "--lease-name",
            &opts.lease_name,
        ])
        .args([
            "--lease-duration-seconds",
            &opts.lease_seconds.to_string(),
            "--identity",
            &opts.identity,
        ])
        .args(&opts.args)
        .env(
            "KUBECONFIG",
            opts.kubeconfig
                .clone()
                .unwrap_or_else(|| cluster.operator_kubeconfig()),
        )
        .env("EDGEWIRE_LOG_FORMAT", "json")
        // A panic then fits in the log tail shown by failed assertions.
        .env("RUST_BACKTRACE", "0")
        .env(
            "RUST_LOG",
            std::env::var("EDGEWIRE_E2E_OPERATOR_LOG").unwrap_or_else(|_| "info".into()),
        )
        .stdin(Stdio::null())
        .stdout(log_file.try_clone().expect("clone operator log handle"))
        .stderr(log_file);
        if let Some(ns) = &opts.watch_namespace {
            cmd.args(["--watch-namespace", ns]);
        }
        cp.adopt(&mut cmd);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", bin.display()));
        let mut op = Operator {
            child,
            log,
            addr: String::new(),
            opts,
            exited: None,
        };
        let start = Instant::now();
        loop {
            if let Some(a) = op.listen_addr() {
                op.addr = a;
                return op;
            }
            if let Some(status) = op.child.try_wait().ok().flatten() {
                op.exited = Some(status);
                panic!(
                    "{} exited at start-up ({status})\n{}",
                    bin.display(),
                    op.log_tail()
                );
            }
            if start.elapsed() > TIMEOUT {
                panic!(
                    "the operator did not serve HTTP within {TIMEOUT:?}\n{}",
                    op.log_tail()
                );
            }
            std::thread::sleep(POLL);
        }
    }

    /// The address from the `serving /metrics /healthz /readyz` log line.
    fn listen_addr(&self) -> Option<String> {
        let text = std::fs::read_to_string(&self.log).ok()?;
        text.lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find_map(|v| {
                let serving = v["message"]
                    .as_str()
                    .is_some_and(|m| m.starts_with("serving"));
                v["addr"].as_str().filter(|_| serving).map(str::to_string)
            })
    }

    pub fn identity(&self) -> &str {
        &self.opts.identity
    }

    /// `spec.holderIdentity` of this operator's Lease (`""` when released or absent).
    pub fn lease_holder(&self, cluster: &Cluster) -> String {
        cluster
            .get(
                cluster.control_plane().release_namespace(),
                "lease.coordination.k8s.io",
                &self.opts.lease_name,
            )
            .map(|l| super::str_at(&l, "/spec/holderIdentity").to_string())
            .unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its log file (JSON lines, stdout and stderr).
    pub fn log_path(&self) -> &std::path::Path {
        &self.log
    }

    /// The whole log (JSON lines, stdout and stderr).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The last 40 log lines, labelled, for failure messages.
    pub fn log_tail(&self) -> String {
        format!(
            "--- operator {} (pid {}) log tail ({}):\n{}",
            self.opts.identity,
            self.pid(),
            self.log.display(),
            tail(&self.log, 40)
        )
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        if self.exited.is_some() {
            return false;
        }
        match self.child.try_wait() {
            Ok(Some(status)) => {
                self.exited = Some(status);
                false
            }
            _ => true,
        }
    }

    /// `GET path` on the operator's HTTP server: (status code, body).
    pub fn http_get(&self, path: &str) -> Result<(u16, String), String> {
        let mut s =
            TcpStream::connect(&self.addr).map_err(|e| format!("connect {}: {e}", self.addr))?;
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .map_err(|e| e.to_string())?;
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            self.addr
        )
        .map_err(|e| e.to_string())?;
        let mut raw = String::new();
        s.read_to_string(&mut raw)
            .map_err(|e| format!("read {path}: {e}"))?;
        let (head, body) = raw
            .split_once("\r\n\r\n")
            .ok_or_else(|| format!("malformed HTTP response: {raw:?}"))?;
        let code = head
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| format!("no status code in {head:?}"))?;
        Ok((code, body.to_string()))
    }

    /// The `/metrics` text.
    pub fn metrics(&self) -> Result<String, String> {
        match self.http_get("/metrics")? {
            (200, body) => Ok(body),
            (code, body) => Err(format!("/metrics answered {code}: {body}")),
        }
    }

    /// The value of the sample `series` (name with labels, exactly as exposed) in `/metrics`, `None` if the
    /// series is not exposed (yet).
    pub fn metric(&self, series: &str) -> Result<Option<f64>, String> {
        let text = self.metrics()?;
        Ok(text.lines().find_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            if name == series {
                value.parse().ok()
            } else {
                None
            }
        }))
    }

    /// `edgewire_operator_reconciles_total{kind="eventbroker"}` (0 before the first reconcile). Panics with
    /// the log tail if `/metrics` cannot be read.
    pub fn reconciles(&self) -> u64 {
        self.try_reconciles()
            .unwrap_or_else(|e| panic!("{e}\n{}", self.log_tail()))
    }

    pub fn try_reconciles(&self) -> Result<u64, String> {
        Ok(self
            .metric(r#"edgewire_operator_reconciles_total{kind="eventbroker"}"#)?
            .unwrap_or(0.0) as u64)
    }

    /// `edgewire_operator_leader` (1 while this process leads), `None` if not exposed.
    pub fn leader(&self) -> Result<Option<f64>, String> {
        self.metric("edgewire_operator_leader")
    }

    /// [`wait_for`] with the default timeout; on timeout panics with this operator's log tail.
    pub fn wait<T>(&self, what: &str, f: impl FnMut() -> Result<T, String>) -> T {
        self.wait_within(what, TIMEOUT, f)
    }

    /// [`wait_for`] with `timeout`; on timeout panics with this operator's log tail.
    pub fn wait_within<T>(
        &self,
        what: &str,
        timeout: Duration,
        f: impl FnMut() -> Result<T, String>,
    ) -> T {
        wait_for(what, timeout, f).unwrap_or_else(|e| panic!("{e}\n{}", self.log_tail()))
    }

    /// `kill -9`: no shutdown, no lease release.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        if let Ok(status) = self.child.wait() {
            self.exited = Some(status);
        }
    }

    /// SIGTERM and wait (at most 30 s) for a clean exit; returns the exit status.
    pub fn stop(&mut self) -> ExitStatus {
        if let Some(status) = self.exited {
            return status;
        }
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status();
        let start = Instant::now();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                self.exited = Some(status);
                return status;
            }
            if start.elapsed() > Duration::from_secs(30) {
                let tail = self.log_tail();
                self.kill9();
                panic!("the operator did not exit within 30 s of SIGTERM\n{tail}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        if self.exited.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
