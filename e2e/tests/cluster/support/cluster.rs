//! The API server the tests talk to, and `kubectl` against it.
//!
//! - `KUBECONFIG` set: that cluster. Nothing stands in for readiness; the namespaces a test creates are
//!   deleted when the [`Cluster`] drops.
//! - otherwise: the in-memory stand-in (`e2e/standin/standin.py`) on a free loopback port, with a private
//!   kubeconfig and `KUBECACHEDIR` in a temp dir; it is killed when the [`Cluster`] drops. Each test starts
//!   its own.
//!
//! Either way the Edgewire CRDs from `crds/` are applied with kubectl and waited on (`Established`).

use super::{ChildRef, TIMEOUT, at, workspace_root};
use serde_json::Value;
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::sync::{Mutex, Once};
use std::time::{SystemTime, UNIX_EPOCH};
use tempfile::TempDir;

/// Kinds an EventBroker's children can have (`kubectl get` resource names).
pub const CHILD_RESOURCES: &str =
    "statefulsets.apps,deployments.apps,services,secrets,serviceaccounts";

struct StandIn {
    child: Child,
    url: String,
    log: PathBuf,
}

/// An API server with the Edgewire CRDs installed.
pub struct Cluster {
    kubectl: PathBuf,
    kubeconfig: PathBuf,
    cache_dir: PathBuf,
    standin: Option<StandIn>,
    /// Namespaces created by the test (deleted on drop against a real cluster).
    namespaces: Mutex<Vec<String>>,
    /// Logs and files of this test; kept when the test fails or `EDGEWIRE_E2E_KEEP` is set.
    dir: Option<TempDir>,
}

/// `kubectl`: `$EDGEWIRE_TOOLS/kubectl`, else `~/.cache/edgewire/bin/kubectl` (what `hack/deps.sh` installs),
/// else the first `kubectl` on `PATH`.
pub fn kubectl_path() -> PathBuf {
    let tools = std::env::var_os("EDGEWIRE_TOOLS")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/edgewire/bin")));
    if let Some(p) = tools.map(|t| t.join("kubectl")).filter(|p| p.is_file()) {
        return p;
    }
    if let Some(p) = std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|d| d.join("kubectl"))
        .find(|p| p.is_file())
    {
        return p;
    }
    panic!(
        "kubectl not found in $EDGEWIRE_TOOLS, ~/.cache/edgewire/bin or PATH: run `make deps` (hack/deps.sh installs it)"
    );
}

/// Last `n` lines of a log file (for failure messages).
pub fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| format!("<cannot read {}: {e}>", path.display()));
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// A name unique to this process and call (namespaces must not collide on a shared real cluster).
fn unique_suffix() -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    format!(
        "{:x}{n}",
        (nanos ^ std::process::id().rotate_left(16)) & 0xfffff
    )
}

impl Cluster {
    /// The cluster in `KUBECONFIG`, else a fresh stand-in. CRDs applied and established.
    pub fn start() -> Cluster {
        let dir = tempfile::Builder::new()
            .prefix("edgewire-e2e-")
            .tempdir()
            .expect("create temp dir");
        let kubectl = kubectl_path();
        let cache_dir = dir.path().join("kubecache");
        let real = std::env::var_os("KUBECONFIG")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from);
        let (kubeconfig, standin) = match real {
            Some(kc) => (kc, None),
            None => {
                let kc = dir.path().join("kubeconfig.yaml");
                let standin = start_standin(dir.path(), &kc);
                (kc, Some(standin))
            }
        };
        let cluster = Cluster {
            kubectl,
            kubeconfig,
            cache_dir,
            standin,
            namespaces: Mutex::new(Vec::new()),
            dir: Some(dir),
        };
        cluster.install_crds();
        cluster
    }

    /// Whether this is the in-memory stand-in (the tests then stand in for kubelet and controllers).
    pub fn is_standin(&self) -> bool {
        self.standin.is_some()
    }

    /// The kubeconfig the operator and kubectl use.
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// A private directory for logs and files of this test.
    pub fn dir(&self) -> &Path {
        self.dir.as_ref().expect("temp dir").path()
    }

    /// The stand-in's log tail (empty against a real cluster), for failure messages.
    pub fn standin_log_tail(&self) -> String {
        match &self.standin {
            Some(s) => format!("stand-in {} log tail:\n{}", s.url, tail(&s.log, 30)),
            None => String::new(),
        }
    }

    /// Applies `crds/` and waits until established: once per stand-in, once per process on a real cluster
    /// (tests run in parallel there and would race on the same CRDs).
    fn install_crds(&self) {
        static REAL_CLUSTER: Once = Once::new();
        if self.is_standin() {
            self.apply_crds();
        } else {
            REAL_CLUSTER.call_once(|| self.apply_crds());
        }
    }

    fn apply_crds(&self) {
        let crds = workspace_root().join("crds");
        let crds = crds.to_str().expect("utf-8 path");
        self.kubectl_ok(&["apply", "-f", crds]);
        self.kubectl_ok(&[
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            "-f",
            crds,
        ]);
    }

    /// Runs kubectl with this cluster's kubeconfig and a private discovery cache.
    pub fn kubectl(&self, args: &[&str]) -> Output {
        self.command(args)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("run {}: {e}", self.kubectl.display()))
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.kubectl);
        c.args(args)
            .env("KUBECONFIG", &self.kubeconfig)
            .env("KUBECACHEDIR", &self.cache_dir);
        c
    }

    /// Runs kubectl, panics unless it succeeds, returns stdout.
    pub fn kubectl_ok(&self, args: &[&str]) -> String {
        let out = self.kubectl(args);
        self.check(args, &out);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn check(&self, args: &[&str], out: &Output) {
        if !out.status.success() {
            panic!(
                "kubectl {} failed ({}):\nstderr: {}\nstdout: {}\n{}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr),
                String::from_utf8_lossy(&out.stdout),
                self.standin_log_tail()
            );
        }
    }

    /// `kubectl <args> -f -` with `yaml` on stdin (e.g. `apply`), returning the raw output.
    pub fn kubectl_stdin(&self, args: &[&str], yaml: &str) -> Output {
        let mut all: Vec<&str> = args.to_vec();
        all.extend(["-f", "-"]);
        let mut child = self
            .command(&all)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("run {}: {e}", self.kubectl.display()));
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(yaml.as_bytes())
            .expect("write manifest to kubectl");
        child.wait_with_output().expect("wait for kubectl")
    }

    /// `kubectl apply -f -`; panics unless it succeeds.
    pub fn apply_yaml(&self, yaml: &str) -> String {
        let out = self.kubectl_stdin(&["apply"], yaml);
        if !out.status.success() {
            panic!(
                "kubectl apply failed ({}):\n{}\nmanifest:\n{yaml}\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr),
                self.standin_log_tail()
            );
        }
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Creates a namespace `<prefix>-<unique>` and returns its name.
    pub fn create_namespace(&self, prefix: &str) -> String {
        let name = format!("{prefix}-{}", unique_suffix());
        self.kubectl_ok(&["create", "namespace", &name]);
        self.namespaces.lock().unwrap().push(name.clone());
        name
    }

    /// Creates namespace `name` unless it exists (it is deleted on drop against a real cluster only if
    /// this call created it).
    pub fn ensure_namespace(&self, name: &str) {
        if self.get("", "namespace", name).is_none() {
            self.kubectl_ok(&["create", "namespace", name]);
            self.namespaces.lock().unwrap().push(name.to_string());
        }
    }

    /// `kubectl get <resource> <name> -o json` in `ns` (`""`: cluster-scoped or current), `None` if absent.
    pub fn get(&self, ns: &str, resource: &str, name: &str) -> Option<Value> {
        let mut args = vec!["get", resource, name, "-o", "json", "--ignore-not-found"];
        if !ns.is_empty() {
            args.extend(["-n", ns]);
        }
        let out = self.kubectl_ok(&args);
        if out.trim().is_empty() {
            return None;
        }
        Some(
            serde_json::from_str(&out)
                .unwrap_or_else(|e| panic!("kubectl get {resource} {name}: bad JSON: {e}\n{out}")),
        )
    }

    /// [`Cluster::get`] that must find the object.
    pub fn get_json(&self, ns: &str, resource: &str, name: &str) -> Value {
        self.get(ns, resource, name)
            .unwrap_or_else(|| panic!("{resource} {ns}/{name} not found"))
    }

    /// `kubectl get <resources> -l <selector> -o json` in `ns`: the items.
    pub fn list(&self, ns: &str, resources: &str, selector: &str) -> Vec<Value> {
        let mut args = vec!["get", resources, "-n", ns, "-o", "json"];
        if !selector.is_empty() {
            args.extend(["-l", selector]);
        }
        let out = self.kubectl_ok(&args);
        let v: Value = serde_json::from_str(&out)
            .unwrap_or_else(|e| panic!("kubectl get {resources}: bad JSON: {e}\n{out}"));
        at(&v, "/items").as_array().cloned().unwrap_or_default()
    }

    /// Every child of the EventBroker `instance` (label `app.kubernetes.io/instance`), sorted by kind and name.
    pub fn children(&self, ns: &str, instance: &str) -> Vec<ChildRef> {
        let mut c: Vec<ChildRef> = self
            .list(
                ns,
                CHILD_RESOURCES,
                &format!("app.kubernetes.io/instance={instance}"),
            )
            .iter()
            .map(ChildRef::of)
            .collect();
        c.sort();
        c
    }

    /// Writes `status.runtime` of BridgeLink `ns/name` the way the bridge agent's `--report-status` does:
    /// server-side apply on the status subresource under the field manager `edgewire-bridge`. `updated` is
    /// set to now. Works on the stand-in and on a real cluster.
    pub fn report_bridge_runtime(&self, ns: &str, name: &str, mut runtime: Value) {
        let now = Command::new("date")
            .args(["-u", "+%Y-%m-%dT%H:%M:%SZ"])
            .output()
            .expect("run date");
        runtime["updated"] = Value::String(String::from_utf8_lossy(&now.stdout).trim().into());
        let doc = serde_json::json!({
            "apiVersion": "edgewire.dev/v1alpha1",
            "kind": "BridgeLink",
            "metadata": {"name": name, "namespace": ns},
            "status": {"runtime": runtime},
        });
        let out = self.kubectl_stdin(
            &[
                "apply",
                "--server-side",
                "--subresource=status",
                "--field-manager=edgewire-bridge",
            ],
            &doc.to_string(),
        );
        assert!(
            out.status.success(),
            "status.runtime apply failed: {}{}",
            String::from_utf8_lossy(&out.stderr),
            self.standin_log_tail()
        );
    }

    /// Stands in for the StatefulSet controller and kubelet (stand-in only; a no-op on a real cluster):
    /// every replica ready, status observed at the current generation.
    pub fn stand_in_statefulset_ready(&self, ns: &str, name: &str) {
        if !self.is_standin() {
            return;
        }
        let sts = self.get_json(ns, "statefulset.apps", name);
        let generation = at(&sts, "/metadata/generation").as_i64().unwrap_or(1);
        let replicas = at(&sts, "/spec/replicas").as_i64().unwrap_or(1);
        let patch = serde_json::json!({"status": {
            "replicas": replicas, "readyReplicas": replicas, "availableReplicas": replicas,
            "currentReplicas": replicas, "updatedReplicas": replicas, "observedGeneration": generation,
        }});
        self.kubectl_ok(&[
            "patch",
            "-n",
            ns,
            &format!("statefulset.apps/{name}"),
            "--subresource=status",
            "--type=merge",
            "-p",
            &patch.to_string(),
        ]);
    }

    /// Stands in for the Deployment controller and kubelet (stand-in only; a no-op on a real cluster): every
    /// replica available, `Available=True`, status observed at the current generation.
    pub fn stand_in_deployment_ready(&self, ns: &str, name: &str) {
        if !self.is_standin() {
            return;
        }
        let d = self.get_json(ns, "deployment.apps", name);
        let generation = at(&d, "/metadata/generation").as_i64().unwrap_or(1);
        let replicas = at(&d, "/spec/replicas").as_i64().unwrap_or(1);
        let patch = serde_json::json!({"status": {
            "replicas": replicas, "readyReplicas": replicas, "availableReplicas": replicas,
            "updatedReplicas": replicas, "observedGeneration": generation,
            "conditions": [{"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable",
                            "message": "stood in by the e2e test"}],
        }});
        self.kubectl_ok(&[
            "patch",
            "-n",
            ns,
            &format!("deployment.apps/{name}"),
            "--subresource=status",
            "--type=merge",
            "-p",
            &patch.to_string(),
        ]);
    }

    /// Stands in for readiness of every workload of EventBroker `name`: the deployed broker's StatefulSet (if
    /// `spec.deployBroker`) and the publisher Deployment. Stand-in only.
    pub fn stand_in_eventbroker_ready(&self, ns: &str, name: &str) {
        if !self.is_standin() {
            return;
        }
        let eb = self.get_json(ns, "eventbroker", name);
        if let Some(kind) = at(&eb, "/spec/deployBroker/kind").as_str() {
            self.stand_in_statefulset_ready(ns, &format!("{name}-{kind}"));
        }
        self.stand_in_deployment_ready(ns, &format!("{name}-publisher"));
    }
}

fn start_standin(dir: &Path, kubeconfig: &Path) -> StandIn {
    let script = workspace_root().join("e2e/standin/standin.py");
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    let log = dir.join("standin.log");
    let mut child = Command::new(&python)
        .arg(&script)
        .args(["--port", "0", "--kubeconfig"])
        .arg(kubeconfig)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(File::create(&log).expect("create stand-in log"))
        .spawn()
        .unwrap_or_else(|e| panic!("start the stand-in ({python} {}): {e}", script.display()));
    // The first stdout line is `READY <url>`; keep draining stdout afterwards so the pipe never fills.
    let stdout = child.stdout.take().expect("stand-in stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut tx = Some(tx);
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(tx) = tx.take() {
                let _ = tx.send(line);
            }
        }
    });
    match rx.recv_timeout(TIMEOUT) {
        Ok(line) if line.starts_with("READY ") => StandIn {
            child,
            url: line.trim_start_matches("READY ").trim().to_string(),
            log,
        },
        other => {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "the API stand-in did not start (first line: {other:?}); it needs python3 with kmock 0.8 and pyyaml \
                 (see e2e/standin/README.md). Its log:\n{}",
                tail(&log, 40)
            );
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if (std::thread::panicking() || std::env::var_os("EDGEWIRE_E2E_KEEP").is_some())
            && let Some(dir) = self.dir.take()
        {
            eprintln!("e2e: kept logs and files in {}", dir.keep().display());
        }
        match &mut self.standin {
            Some(s) => {
                let _ = s.child.kill();
                let _ = s.child.wait();
            }
            None => {
                let namespaces = std::mem::take(&mut *self.namespaces.lock().unwrap());
                for ns in namespaces {
                    let _ = self.kubectl(&[
                        "delete",
                        "namespace",
                        &ns,
                        "--wait=false",
                        "--ignore-not-found",
                    ]);
                }
            }
        }
    }
}
