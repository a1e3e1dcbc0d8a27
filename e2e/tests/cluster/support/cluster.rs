//! A test's view of the control plane ([`ControlPlane::shared`]: one per test binary, or the cluster in
//! `KUBECONFIG`): `kubectl` as the admin, namespaces of its own (PodSecurity `restricted`), a directory for
//! its files, and on failure the state of its namespaces written next to the control plane's logs, which
//! are then kept.

use super::{ChildRef, at};
use edgewire_e2e::kube::ControlPlane;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

/// Kinds an EventBroker's children can have (`kubectl get` resource names).
pub const CHILD_RESOURCES: &str =
    "statefulsets.apps,deployments.apps,services,secrets,serviceaccounts";

/// What a failed test's namespaces are dumped with.
const DUMP_RESOURCES: &str = "edgewire,statefulsets.apps,deployments.apps,replicasets.apps,pods,services,\
serviceaccounts,roles.rbac.authorization.k8s.io,rolebindings.rbac.authorization.k8s.io,\
persistentvolumeclaims,configmaps,events";

/// One test on the shared control plane.
pub struct Cluster {
    cp: &'static ControlPlane,
    dir: PathBuf,
    /// Namespaces this test created (deleted when it ends).
    namespaces: Mutex<Vec<String>>,
}

pub use edgewire_e2e::kube::tail;

/// The test's name (libtest names the thread after it), as a file name.
fn test_name() -> String {
    let t = std::thread::current();
    let name = t.name().unwrap_or("test").replace("::", ".");
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// A short suffix unique to this process (namespaces must not collide on a shared cluster).
fn unique_suffix() -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    format!("{:x}{n}", std::process::id() & 0xffff)
}

impl Cluster {
    /// The shared control plane (started by the first test that asks), and a directory for this test.
    pub fn start() -> Cluster {
        let cp = ControlPlane::shared();
        let dir = cp.dir().join("tests").join(test_name());
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
        Cluster {
            cp,
            dir,
            namespaces: Mutex::new(Vec::new()),
        }
    }

    pub fn control_plane(&self) -> &'static ControlPlane {
        self.cp
    }

    /// The admin's kubeconfig.
    pub fn kubeconfig(&self) -> &Path {
        self.cp.admin_kubeconfig()
    }

    /// This test's directory (operator and agent logs, files it writes), inside the control plane's work
    /// directory: kept with it when a test fails.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The kubeconfig of the chart's ServiceAccount (what the operator runs with).
    pub fn operator_kubeconfig(&self) -> PathBuf {
        self.cp
            .operator_kubeconfig()
            .unwrap_or_else(|e| panic!("a token for the chart's ServiceAccount: {e:#}"))
    }

    /// A kubeconfig with a fresh TokenRequest token of ServiceAccount `ns/sa`.
    pub fn service_account_kubeconfig(&self, ns: &str, sa: &str) -> PathBuf {
        self.cp
            .service_account_kubeconfig(ns, sa)
            .unwrap_or_else(|e| panic!("a token for ServiceAccount {ns}/{sa}: {e:#}"))
    }

    /// Runs kubectl as the admin.
    pub fn kubectl(&self, args: &[&str]) -> Output {
        self.cp.kubectl(args).unwrap_or_else(|e| panic!("{e:#}"))
    }

    /// Runs kubectl as the admin, panics unless it succeeds, returns stdout.
    pub fn kubectl_ok(&self, args: &[&str]) -> String {
        self.cp.kubectl_ok(args).unwrap_or_else(|e| panic!("{e:#}"))
    }

    /// `kubectl <args> -f -` with `yaml` on stdin (e.g. `apply`), returning the raw output.
    pub fn kubectl_stdin(&self, args: &[&str], yaml: &str) -> Output {
        self.cp
            .kubectl_stdin(args, yaml)
            .unwrap_or_else(|e| panic!("{e:#}"))
    }

    /// `kubectl apply -f -`; panics unless it succeeds.
    pub fn apply_yaml(&self, yaml: &str) -> String {
        self.cp.apply(yaml).unwrap_or_else(|e| panic!("{e:#}"))
    }

    /// Creates a namespace `<prefix>-<unique>` (PodSecurity `restricted`) and returns its name.
    pub fn create_namespace(&self, prefix: &str) -> String {
        let name = format!("{prefix}-{}", unique_suffix());
        self.cp
            .create_restricted_namespace(&name)
            .unwrap_or_else(|e| panic!("{e:#}"));
        self.namespaces.lock().unwrap().push(name.clone());
        name
    }

    /// Creates namespace `name` (PodSecurity `restricted`) unless it exists; it is deleted at the end
    /// only if this call created it.
    pub fn ensure_namespace(&self, name: &str) {
        if self.get("", "namespace", name).is_none() {
            self.cp
                .create_restricted_namespace(name)
                .unwrap_or_else(|e| panic!("{e:#}"));
            self.namespaces.lock().unwrap().push(name.to_string());
        }
    }

    /// `kubectl get <resource> <name> -o json` in `ns` (`""`: cluster-scoped), `None` if absent.
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

    /// Every child of the resource `instance` (label `app.kubernetes.io/instance`), sorted by kind and
    /// name.
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

    /// `kubectl wait --for=<condition> <resource> -n <ns> --timeout=<timeout>`; panics with the object's
    /// state and `context` (e.g. an operator's log tail) unless the condition is met. An object the operator
    /// has yet to create is waited for first: `kubectl wait` fails at once on an object that does not exist.
    pub fn wait(
        &self,
        ns: &str,
        resource: &str,
        condition: &str,
        timeout: Duration,
        context: impl FnOnce() -> String,
    ) {
        let started = std::time::Instant::now();
        let exists = super::wait_for(&format!("{resource} in {ns} to exist"), timeout, || {
            let out = self.kubectl(&["get", resource, "-n", ns, "-o", "name"]);
            if out.status.success() {
                Ok(())
            } else {
                Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
            }
        });
        if let Err(e) = exists {
            panic!("{e}\n{}", context());
        }
        let left = timeout
            .saturating_sub(started.elapsed())
            .max(Duration::from_secs(1));
        let timeout = format!("--timeout={}s", left.as_secs());
        let for_ = format!("--for={condition}");
        let out = self.kubectl(&["wait", &for_, resource, "-n", ns, &timeout]);
        if !out.status.success() {
            let state = self
                .kubectl(&["get", resource, "-n", ns, "-o", "yaml"])
                .stdout;
            panic!(
                "kubectl wait --for={condition} {resource} -n {ns} failed: {}\nstate:\n{}\n{}",
                String::from_utf8_lossy(&out.stderr),
                String::from_utf8_lossy(&state),
                context()
            );
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let namespaces = std::mem::take(&mut *self.namespaces.lock().unwrap());
        if std::thread::panicking() {
            self.cp.keep_logs();
            for ns in &namespaces {
                let file = self.dir.join(format!("namespace-{ns}.yaml"));
                if let Ok(out) = self
                    .cp
                    .kubectl(&["get", DUMP_RESOURCES, "-n", ns, "-o", "yaml"])
                {
                    let _ = std::fs::write(&file, [out.stdout, out.stderr].concat());
                }
            }
            eprintln!(
                "e2e: this test's files and namespace dumps are in {}; the control plane's logs in {} \
                 (both kept when the test process ends)",
                self.dir.display(),
                self.cp.dir().join("logs").display()
            );
        }
        for ns in namespaces {
            let _ = self.cp.kubectl(&[
                "delete",
                "namespace",
                &ns,
                "--wait=false",
                "--ignore-not-found",
            ]);
        }
    }
}
