//! A real Kubernetes control plane for the end-to-end tests, or the cluster in `KUBECONFIG`.
//!
//! [`ControlPlane::shared`] starts one per process (a test binary shares it between its tests, which
//! work in namespaces of their own) from the binaries `hack/kube/build.sh` built from Go modules
//! (`make deps` runs it; here it is only called, and is a no-op when they are up to date):
//!
//! ```text
//! etcd ─► kube-apiserver ─┬─► helm install charts/edgewire (CRDs, RBAC, ServiceAccount, Deployment)
//!                         │        └─► kube-controller-manager (after the CRDs are Established, so its
//!                         │            garbage collector knows them from its first discovery)
//!                         └─► kube-scheduler, kwok ─► 3 fake Nodes, a default hostPath StorageClass
//! ```
//!
//! everything on 127.0.0.1 (free ports), with the flags of `hack/kube/smoke.sh`: client-certificate
//! admin, `--authorization-mode=Node,RBAC`, ServiceAccount tokens signed by the kube-apiserver,
//! default admission plugins (PodSecurity included). kwok plays the kubelet: Pods on its fake nodes
//! become Running and Ready with fake IPs that nothing routes or dials. There is no container runtime:
//! the data plane (publisher, bridge agent, brokers) runs as host processes the tests start.
//! PersistentVolumes are hostPath volumes the controller-manager provisions on demand
//! (`--enable-hostpath-provisioner`, StorageClass `kubernetes.io/host-path`, directories under
//! `/tmp/hostpath_pv/`, deleted with their claims), so StatefulSet claim templates bind.
//!
//! Teardown: a [guardian](guardian) stops the components when the test process is gone (a `static` is
//! never dropped; the process may be killed), keeps the work directory (logs, certificates, the tests'
//! files) when a test called [`ControlPlane::keep_logs`] or `EDGEWIRE_E2E_KEEP` is set, and removes it
//! otherwise.
//!
//! With `KUBECONFIG` set nothing is started: the chart is installed (`helm upgrade --install`) into
//! that cluster, and everything else works the same.

pub mod guardian;
pub mod pki;

use std::ffi::OsStr;
use std::fmt;
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::Value;

use crate::brokers::free_port;
use guardian::Guardian;

/// The chart release on the control plane the harness starts, and its namespace (what the README
/// tells users to type).
pub const RELEASE: (&str, &str) = ("edgewire", "edgewire-system");
/// The release on the cluster in `KUBECONFIG`: names of its own (its ClusterRole, ServiceAccount), next to
/// whatever Edgewire installation runs there.
pub const EXTERNAL_RELEASE: (&str, &str) = ("edgewire-e2e", "edgewire-e2e");
/// Names of the fake nodes kwok manages.
pub const NODES: &[&str] = &["kwok-node-0", "kwok-node-1", "kwok-node-2"];
/// `$EDGEWIRE_E2E_CONTROL_PLANE_QPS` (unset: Kubernetes' defaults, 20 for the controller-manager and 50 for
/// the scheduler): the rate at which kube-controller-manager and kube-scheduler may call the API server, as
/// their `--kube-api-qps` and `--kube-api-burst`. The scale bench raises it (`--control-plane-qps`): at 20 a
/// second, creating the pods, ReplicaSets and volume claims of 2,200 resources alone takes minutes.
pub const CONTROL_PLANE_QPS_ENV: &str = "EDGEWIRE_E2E_CONTROL_PLANE_QPS";

fn control_plane_qps() -> Vec<String> {
    match std::env::var(CONTROL_PLANE_QPS_ENV) {
        Ok(qps) if !qps.trim().is_empty() => vec![
            format!("--kube-api-qps={}", qps.trim()),
            format!("--kube-api-burst={}", qps.trim()),
        ],
        _ => Vec::new(),
    }
}

/// The default StorageClass: hostPath volumes the controller-manager provisions.
pub const STORAGE_CLASS: &str = "hostpath";
/// Service ClusterIPs: virtual, nothing routes them (no kube-proxy). A /16: the scale bench creates more than
/// 2,000 Services (a /24 ran out at 254).
const SERVICE_CIDR: &str = "10.0.0.0/16";
/// Pod IPs kwok hands out: status only.
const POD_CIDR: &str = "10.244.0.0/16";
/// Lifetime of the tokens the harness requests.
const TOKEN_DURATION: &str = "12h";
/// How long one component may take to become ready (a loaded 2-core machine).
const READY_TIMEOUT: Duration = Duration::from_secs(120);

/// The workspace root (parent of the `e2e` crate).
pub fn workspace_root() -> PathBuf {
    Path::new(
        &std::env::var("CARGO_MANIFEST_DIR")
            .unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_owned()),
    )
    .parent()
    .expect("the e2e crate has a parent directory")
    .to_path_buf()
}

/// A tool from `$EDGEWIRE_TOOLS`, else `~/.cache/edgewire/bin` (where `make deps` puts kubectl and
/// helm), else `PATH`.
pub fn tool(name: &str) -> anyhow::Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let dirs = std::env::var_os("EDGEWIRE_TOOLS")
        .map(PathBuf::from)
        .into_iter()
        .chain(std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/edgewire/bin")))
        .chain(std::env::split_paths(&path));
    for d in dirs {
        let p = d.join(name);
        if p.is_file() {
            return Ok(p);
        }
    }
    bail!(
        "{name} not found in $EDGEWIRE_TOOLS, ~/.cache/edgewire/bin or PATH: run `make deps` (hack/deps.sh installs it)"
    )
}

/// The last `n` lines of a file, for error messages.
pub fn tail(path: &Path, n: usize) -> String {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(n)..].join("\n")
        }
        Err(e) => format!("<cannot read {}: {e}>", path.display()),
    }
}

/// A start-up step that failed: which, why, and the tail of its log.
#[derive(Debug, Clone)]
pub struct StartError {
    pub step: String,
    pub message: String,
    /// The work directory, kept for inspection.
    pub dir: PathBuf,
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "control plane: step '{}' failed: {}\n(logs kept in {})",
            self.step,
            self.message,
            self.dir.display()
        )
    }
}

impl std::error::Error for StartError {}

/// How long each start-up step took.
#[derive(Clone, Debug, Default)]
pub struct Startup {
    pub steps: Vec<(&'static str, Duration)>,
    /// From the start of etcd to every component ready (the build check and certificates before it).
    pub total: Duration,
}

impl fmt::Display for Startup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ready in {} ms (", self.total.as_millis())?;
        for (i, (step, d)) in self.steps.iter().enumerate() {
            let sep = if i == 0 { "" } else { ", " };
            write!(f, "{sep}{step} {} ms", d.as_millis())?;
        }
        write!(f, ")")
    }
}

/// A component process: name, child, log file.
struct Component {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

/// A running control plane (or the cluster in `KUBECONFIG`) with the chart installed.
pub struct ControlPlane {
    dir: PathBuf,
    local: bool,
    admin: PathBuf,
    /// `kubectl config view --minify --flatten` of the admin kubeconfig: the template of token kubeconfigs.
    admin_view: Value,
    kubectl: PathBuf,
    helm: PathBuf,
    release_name: String,
    release_namespace: String,
    guardian: Guardian,
    components: Mutex<Vec<Component>>,
    startup: Startup,
    operator_kubeconfig: OnceLock<Result<PathBuf, String>>,
}

static SHARED: OnceLock<Result<ControlPlane, StartError>> = OnceLock::new();

impl ControlPlane {
    /// The control plane of this process: started by the first caller, shared by every later one.
    /// Panics with the failed step and its log tail if it cannot start (every caller, every time).
    pub fn shared() -> &'static ControlPlane {
        let cp = SHARED.get_or_init(|| {
            let started = ControlPlane::start();
            match &started {
                Ok(cp) if cp.local => {
                    eprintln!("e2e: control plane in {}: {}", cp.dir.display(), cp.startup)
                }
                Ok(cp) => eprintln!(
                    "e2e: using the cluster in KUBECONFIG ({})",
                    cp.dir.display()
                ),
                Err(_) => {}
            }
            started
        });
        match cp {
            Ok(cp) => cp,
            Err(e) => panic!("{e}"),
        }
    }

    /// Starts a control plane (or connects to the cluster in `KUBECONFIG`) and installs the chart. It stops
    /// when dropped, or when the process is gone.
    pub fn start() -> Result<ControlPlane, StartError> {
        let dir = tempfile::Builder::new()
            .prefix("edgewire-e2e-")
            .tempdir()
            .map_err(|e| StartError {
                step: "create the work directory".into(),
                message: e.to_string(),
                dir: std::env::temp_dir(),
            })?
            .keep();
        let fail = |step: &str, e: anyhow::Error| StartError {
            step: step.into(),
            message: format!("{e:#}"),
            dir: dir.clone(),
        };
        let keep = std::env::var_os("EDGEWIRE_E2E_KEEP").is_some_and(|v| !v.is_empty());
        let guardian = Guardian::start(&dir, keep).map_err(|e| fail("start the guardian", e))?;
        let tools = (|| anyhow::Ok((tool("kubectl")?, tool("helm")?, tool("curl")?)))();
        let (kubectl, helm, _) = match tools {
            Ok(t) => t,
            Err(e) => {
                guardian.keep();
                return Err(fail("find kubectl, helm and curl", e));
            }
        };
        let external = std::env::var_os("KUBECONFIG").filter(|v| !v.is_empty());
        let mut cp = ControlPlane {
            admin: dir.join("kubeconfigs/admin.kubeconfig"),
            release_name: if external.is_some() {
                EXTERNAL_RELEASE.0
            } else {
                RELEASE.0
            }
            .into(),
            release_namespace: if external.is_some() {
                EXTERNAL_RELEASE.1
            } else {
                RELEASE.1
            }
            .into(),
            dir,
            local: external.is_none(),
            admin_view: Value::Null,
            kubectl,
            helm,
            guardian,
            components: Mutex::new(Vec::new()),
            startup: Startup::default(),
            operator_kubeconfig: OnceLock::new(),
        };
        for d in ["logs", "kubeconfigs", "tests"] {
            if let Err(e) = std::fs::create_dir_all(cp.dir.join(d)) {
                return Err(cp.failed("create the work directory", e.into()));
            }
        }
        let result = match external {
            Some(kc) => cp.connect(&kc),
            None => cp.boot(),
        };
        match result {
            Ok(()) => Ok(cp),
            Err((step, e)) => Err(cp.failed(step, e)),
        }
    }

    /// Marks the start as failed: keep the logs; the error names the step.
    fn failed(&self, step: &str, e: anyhow::Error) -> StartError {
        self.guardian.keep();
        StartError {
            step: step.into(),
            message: format!("{e:#}"),
            dir: self.dir.clone(),
        }
    }

    /// The cluster in `KUBECONFIG`: a flattened copy of its current context, and the chart.
    fn connect(&mut self, kubeconfig: &OsStr) -> Result<(), (&'static str, anyhow::Error)> {
        let step = "read KUBECONFIG";
        let out = Command::new(&self.kubectl)
            .args(["config", "view", "--minify", "--flatten", "-o", "json"])
            .env("KUBECONFIG", kubeconfig)
            .output()
            .map_err(|e| (step, e.into()))?;
        if !out.status.success() {
            return Err((
                step,
                anyhow::anyhow!("{}", String::from_utf8_lossy(&out.stderr)),
            ));
        }
        std::fs::write(&self.admin, &out.stdout).map_err(|e| (step, e.into()))?;
        self.admin_view = self.read_admin_view().map_err(|e| (step, e))?;
        let step = "install the chart (helm)";
        self.create_restricted_namespace(&self.release_namespace.clone())
            .map_err(|e| (step, e))?;
        // Were an image of the operator to run there, it watches only its own namespace, which holds no
        // test resources: the tests' operators do not compete with it.
        let watch = format!("watchNamespace={}", self.release_namespace);
        let mut args = vec!["upgrade", "--install", "--set", &watch];
        // CRDs another release installed stay that release's (helm refuses to adopt them).
        let crd = self
            .kubectl_ok(&[
                "get",
                "crd",
                edgewire_crd_names()[0],
                "-o",
                "json",
                "--ignore-not-found",
            ])
            .map_err(|e| (step, e))?;
        let theirs = !crd.trim().is_empty() && {
            let crd: Value = serde_json::from_str(&crd).map_err(|e| (step, e.into()))?;
            let annotations = &crd["metadata"]["annotations"];
            annotations["meta.helm.sh/release-name"] != self.release_name.as_str()
                || annotations["meta.helm.sh/release-namespace"] != self.release_namespace.as_str()
        };
        if theirs {
            eprintln!(
                "e2e: the Edgewire CRDs in KUBECONFIG's cluster belong to another installation; using them"
            );
            args.extend(["--set", "crds.install=false"]);
        }
        self.install_chart(&args).map_err(|e| (step, e))
    }

    /// Builds (if needed) and starts every component, installs the chart, creates nodes and storage.
    fn boot(&mut self) -> Result<(), (&'static str, anyhow::Error)> {
        let step = "build the control plane (hack/kube/build.sh)";
        let bin = self.build().map_err(|e| (step, e))?;
        for b in [
            "etcd",
            "kube-apiserver",
            "kube-controller-manager",
            "kube-scheduler",
            "kwok",
        ] {
            if !bin.join(b).is_file() {
                return Err((
                    step,
                    anyhow::anyhow!(
                        "{} is missing after hack/kube/build.sh (see {})",
                        bin.join(b).display(),
                        self.dir.join("logs/build.log").display()
                    ),
                ));
            }
        }
        let stages = bin
            .parent()
            .map(|p| p.join("kwok-stages"))
            .unwrap_or_default();
        let mut steps: Vec<(&'static str, Duration)> = Vec::new();

        let t = Instant::now();
        let step = "generate certificates";
        let pki = pki::generate(&self.dir.join("pki")).map_err(|e| (step, e))?;
        steps.push(("certificates", t.elapsed()));
        let api_port = free_port();
        let server = format!("https://127.0.0.1:{api_port}");
        for user in pki::USERS {
            self.write_cert_kubeconfig(&server, &pki, user.file)
                .map_err(|e| (step, e))?;
        }

        let t0 = Instant::now();
        // etcd
        let (etcd_port, etcd_peer) = (free_port(), free_port());
        let data = self.dir.join("etcd");
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&data)
            .map_err(|e| ("start etcd", e.into()))?;
        let client_url = format!("http://127.0.0.1:{etcd_port}");
        let peer_url = format!("http://127.0.0.1:{etcd_peer}");
        self.spawn(
            "etcd",
            &bin,
            &[
                "--name=e2e".into(),
                format!("--data-dir={}", data.display()),
                format!("--listen-client-urls={client_url}"),
                format!("--advertise-client-urls={client_url}"),
                format!("--listen-peer-urls={peer_url}"),
                format!("--initial-advertise-peer-urls={peer_url}"),
                format!("--initial-cluster=e2e={peer_url}"),
                // A throw-away store: no fsync (the kube-apiserver's writes are the suite's hot path).
                "--unsafe-no-fsync=true".into(),
                "--log-level=warn".into(),
            ],
        )?;
        let etcd_ready = format!("{client_url}/readyz");
        steps.push(("etcd", self.wait_ready("etcd", || curl(&[&etcd_ready]))?));

        // kube-apiserver
        let t = Instant::now();
        let p = |name: &str| pki.dir.join(name).display().to_string();
        let audit_policy = self.dir.join("audit-policy.yaml");
        std::fs::write(&audit_policy, self.audit_policy())
            .map_err(|e| ("start kube-apiserver", e.into()))?;
        self.spawn(
            "kube-apiserver",
            &bin,
            &[
                format!("--etcd-servers={client_url}"),
                "--bind-address=127.0.0.1".into(),
                "--advertise-address=127.0.0.1".into(),
                format!("--secure-port={api_port}"),
                "--endpoint-reconciler-type=none".into(),
                format!("--cert-dir={}", self.dir.join("apiserver-certs").display()),
                format!("--tls-cert-file={}", p("apiserver.crt")),
                format!("--tls-private-key-file={}", p("apiserver.key")),
                format!("--client-ca-file={}", p("ca.crt")),
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local".into(),
                format!("--service-account-key-file={}", p("sa.pub")),
                format!("--service-account-signing-key-file={}", p("sa.key")),
                format!("--service-cluster-ip-range={SERVICE_CIDR}"),
                "--authorization-mode=Node,RBAC".into(),
                // On top of the default plugins (NamespaceLifecycle, ServiceAccount, DefaultStorageClass,
                // PodSecurity, ResourceQuota, the webhook and policy plugins, ...). With
                // OwnerReferencesPermissionEnforcement (as OpenShift runs it) a child whose owner reference
                // blocks the owner's deletion needs `update` on the owner's `finalizers`: the chart's grant of
                // it is exercised here, not only carried.
                "--enable-admission-plugins=NodeRestriction,OwnerReferencesPermissionEnforcement"
                    .into(),
                "--allow-privileged=true".into(),
                format!("--requestheader-client-ca-file={}", p("front-proxy-ca.crt")),
                "--requestheader-allowed-names=front-proxy-client".into(),
                "--requestheader-username-headers=X-Remote-User".into(),
                "--requestheader-group-headers=X-Remote-Group".into(),
                "--requestheader-extra-headers-prefix=X-Remote-Extra-".into(),
                format!("--proxy-client-cert-file={}", p("front-proxy-client.crt")),
                format!("--proxy-client-key-file={}", p("front-proxy-client.key")),
                "--profiling=false".into(),
                // Every request of the chart's ServiceAccount (what the operator runs as), metadata only:
                // what the RBAC test compares with the ClusterRole. Blocking: an entry is written before its
                // response is sent, so a test that saw the response finds the entry.
                format!("--audit-policy-file={}", audit_policy.display()),
                format!("--audit-log-path={}", self.log_path("audit").display()),
                "--audit-log-format=json".into(),
                "--audit-log-mode=blocking".into(),
                "--audit-log-maxsize=0".into(),
            ],
        )?;
        let (ca, admin_crt, admin_key) = (p("ca.crt"), p("admin.crt"), p("admin.key"));
        let api_ready = format!("{server}/readyz");
        self.wait_ready("kube-apiserver", || {
            curl(&[
                "--cacert", &ca, "--cert", &admin_crt, "--key", &admin_key, &api_ready,
            ])
        })?;
        steps.push(("kube-apiserver", t.elapsed()));
        self.admin_view = self
            .read_admin_view()
            .map_err(|e| ("read the admin kubeconfig", e))?;

        // kube-scheduler and kwok need nothing else; start them while the chart installs.
        let t_sched = Instant::now();
        let sched_port = free_port();
        let sched_kc = self.dir.join("kubeconfigs/scheduler.kubeconfig");
        let sched_kc = sched_kc.display();
        self.spawn(
            "kube-scheduler",
            &bin,
            &[
                format!("--kubeconfig={sched_kc}"),
                format!("--authentication-kubeconfig={sched_kc}"),
                format!("--authorization-kubeconfig={sched_kc}"),
                "--bind-address=127.0.0.1".into(),
                format!("--secure-port={sched_port}"),
                format!("--cert-dir={}", self.dir.join("scheduler-certs").display()),
                "--leader-elect=false".into(),
                "--profiling=false".into(),
            ]
            .into_iter()
            .chain(control_plane_qps())
            .collect::<Vec<_>>(),
        )?;
        let kwok_port = free_port();
        let stage_files = stage_files(&stages).map_err(|e| ("start kwok", e))?;
        self.spawn(
            "kwok",
            &bin,
            &[
                format!(
                    "--kubeconfig={}",
                    self.dir.join("kubeconfigs/kwok.kubeconfig").display()
                ),
                format!("--config={stage_files}"),
                "--manage-all-nodes=true".into(),
                "--node-lease-duration-seconds=40".into(),
                format!("--cidr={POD_CIDR}"),
                "--node-ip=127.0.0.1".into(),
                format!("--server-address=127.0.0.1:{kwok_port}"),
            ],
        )?;

        // The chart, the way users install it; then its CRDs Established before the controller-manager
        // starts, so that the garbage collector's first discovery includes them (it looks again only
        // every 30 s, and until then it cannot collect the children of a deleted EventBroker).
        let t = Instant::now();
        let step = "install the chart (helm)";
        self.create_restricted_namespace(&self.release_namespace.clone())
            .map_err(|e| (step, e))?;
        self.install_chart(&["install"]).map_err(|e| (step, e))?;
        steps.push(("helm install", t.elapsed()));

        let t = Instant::now();
        let kcm_port = free_port();
        let kcm_kc = self.dir.join("kubeconfigs/kcm.kubeconfig");
        let kcm_kc = kcm_kc.display();
        self.spawn(
            "kube-controller-manager",
            &bin,
            &[
                format!("--kubeconfig={kcm_kc}"),
                format!("--authentication-kubeconfig={kcm_kc}"),
                format!("--authorization-kubeconfig={kcm_kc}"),
                "--bind-address=127.0.0.1".into(),
                format!("--secure-port={kcm_port}"),
                format!("--cert-dir={}", self.dir.join("kcm-certs").display()),
                "--leader-elect=false".into(),
                "--use-service-account-credentials=true".into(),
                format!("--service-account-private-key-file={}", p("sa.key")),
                format!("--root-ca-file={}", p("ca.crt")),
                format!("--cluster-signing-cert-file={}", p("ca.crt")),
                format!("--cluster-signing-key-file={}", p("ca.key")),
                // PersistentVolumes on demand for StatefulSet claim templates (StorageClass below).
                "--enable-hostpath-provisioner=true".into(),
                "--profiling=false".into(),
            ]
            .into_iter()
            .chain(control_plane_qps())
            .collect::<Vec<_>>(),
        )?;

        let step = "create the kwok nodes and the StorageClass";
        let mut objects = String::new();
        for node in NODES {
            objects.push_str(&format!(
                "apiVersion: v1\nkind: Node\nmetadata:\n  name: {node}\n  labels: {{type: kwok, kubernetes.io/hostname: {node}, kubernetes.io/os: linux, kubernetes.io/arch: amd64}}\n  annotations: {{node.alpha.kubernetes.io/ttl: \"0\", kwok.x-k8s.io/node: fake}}\n---\n"
            ));
        }
        objects.push_str(&format!(
            "apiVersion: storage.k8s.io/v1\nkind: StorageClass\nmetadata:\n  name: {STORAGE_CLASS}\n  annotations: {{storageclass.kubernetes.io/is-default-class: \"true\"}}\nprovisioner: kubernetes.io/host-path\nvolumeBindingMode: Immediate\nreclaimPolicy: Delete\n"
        ));
        self.apply(&objects).map_err(|e| (step, e))?;

        let kcm_health = format!("https://127.0.0.1:{kcm_port}/healthz");
        self.wait_ready("kube-controller-manager", || curl(&["-k", &kcm_health]))?;
        steps.push(("kube-controller-manager", t.elapsed()));
        let sched_ready = format!("https://127.0.0.1:{sched_port}/readyz");
        self.wait_ready("kube-scheduler", || curl(&["-k", &sched_ready]))?;
        steps.push(("kube-scheduler", t_sched.elapsed()));
        let kwok_health = format!("http://127.0.0.1:{kwok_port}/healthz");
        self.wait_ready("kwok", || curl(&[&kwok_health]))?;
        let t = Instant::now();
        let mut wait = vec!["wait", "--for=condition=Ready", "--timeout=120s"];
        let nodes: Vec<String> = NODES.iter().map(|n| format!("node/{n}")).collect();
        wait.extend(nodes.iter().map(String::as_str));
        self.kubectl_ok(&wait).map_err(|e| {
            (
                "kwok nodes Ready",
                anyhow::anyhow!("{e:#}; {}", self.log_note("kwok")),
            )
        })?;
        steps.push(("nodes Ready", t.elapsed()));
        self.startup = Startup {
            steps,
            total: t0.elapsed(),
        };
        let _ = std::fs::write(self.dir.join("startup.txt"), self.startup.to_string());
        Ok(())
    }

    /// The kube-apiserver's audit policy: the requests of the chart's ServiceAccount at `Metadata` level (who,
    /// verb, resource, response code; no bodies), nothing else.
    fn audit_policy(&self) -> String {
        format!(
            "apiVersion: audit.k8s.io/v1\nkind: Policy\nomitStages: [RequestReceived]\nrules:\n  \
             - level: Metadata\n    users: [\"{}\"]\n  - level: None\n",
            self.chart_user()
        )
    }

    /// Runs `hack/kube/build.sh` (a no-op when the binaries are up to date); its stdout is the bin dir.
    fn build(&self) -> anyhow::Result<PathBuf> {
        let script = workspace_root().join("hack/kube/build.sh");
        let log = self.dir.join("logs/build.log");
        let out = Command::new("bash")
            .arg(&script)
            .stdin(Stdio::null())
            .stderr(File::create(&log)?)
            .output()
            .with_context(|| format!("running {}", script.display()))?;
        if !out.status.success() {
            bail!(
                "{} exited with {}; last lines of {}:\n{}",
                script.display(),
                out.status,
                log.display(),
                tail(&log, 40)
            );
        }
        let bin = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if bin.is_empty() {
            bail!("{} printed no bin directory", script.display());
        }
        Ok(PathBuf::from(bin))
    }

    /// Starts component `name` from `bin` with its log in `logs/<name>.log`, in the guardian's care.
    fn spawn(
        &self,
        name: &'static str,
        bin: &Path,
        args: &[String],
    ) -> Result<(), (&'static str, anyhow::Error)> {
        let step = match name {
            "etcd" => "start etcd",
            "kube-apiserver" => "start kube-apiserver",
            "kube-controller-manager" => "start kube-controller-manager",
            "kube-scheduler" => "start kube-scheduler",
            _ => "start kwok",
        };
        let log = self.dir.join(format!("logs/{name}.log"));
        let spawn = || -> anyhow::Result<Child> {
            let out = File::create(&log)?;
            let mut cmd = Command::new(bin.join(name));
            cmd.args(args)
                .stdin(Stdio::null())
                .stdout(out.try_clone()?)
                .stderr(out);
            self.guardian.adopt(&mut cmd);
            let child = cmd
                .spawn()
                .with_context(|| format!("spawning {}", bin.join(name).display()))?;
            self.guardian.register(child.id())?;
            Ok(child)
        };
        let child = spawn().map_err(|e| (step, e))?;
        self.components
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Component { name, child, log });
        Ok(())
    }

    /// Polls `probe` until it succeeds; fails with the component's log tail if it exits or times out.
    fn wait_ready(
        &self,
        name: &'static str,
        mut probe: impl FnMut() -> bool,
    ) -> Result<Duration, (&'static str, anyhow::Error)> {
        let step = match name {
            "etcd" => "etcd ready",
            "kube-apiserver" => "kube-apiserver ready",
            "kube-controller-manager" => "kube-controller-manager ready",
            "kube-scheduler" => "kube-scheduler ready",
            _ => "kwok ready",
        };
        let start = Instant::now();
        loop {
            if probe() {
                return Ok(start.elapsed());
            }
            let exited = {
                let mut components = self.components.lock().unwrap_or_else(|e| e.into_inner());
                components
                    .iter_mut()
                    .find(|c| c.name == name)
                    .and_then(|c| c.child.try_wait().ok().flatten())
            };
            if let Some(status) = exited {
                return Err((
                    step,
                    anyhow::anyhow!(
                        "{name} exited ({status}) before it was ready; {}",
                        self.log_note(name)
                    ),
                ));
            }
            if start.elapsed() > READY_TIMEOUT {
                return Err((
                    step,
                    anyhow::anyhow!(
                        "{name} not ready after {READY_TIMEOUT:?}; {}",
                        self.log_note(name)
                    ),
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// "last lines of <log>: ..." of a component.
    fn log_note(&self, name: &str) -> String {
        let log = self.log_path(name);
        format!("last lines of {}:\n{}\n", log.display(), tail(&log, 30))
    }

    fn write_cert_kubeconfig(
        &self,
        server: &str,
        pki: &pki::Pki,
        user: &str,
    ) -> anyhow::Result<()> {
        let kc = serde_json::json!({
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "e2e", "cluster": {
                "server": server, "certificate-authority": pki.ca()}}],
            "users": [{"name": user, "user": {
                "client-certificate": pki.cert(user), "client-key": pki.key(user)}}],
            "contexts": [{"name": "e2e", "context": {"cluster": "e2e", "user": user}}],
            "current-context": "e2e",
        });
        let path = self.dir.join(format!("kubeconfigs/{user}.kubeconfig"));
        std::fs::write(&path, serde_json::to_vec_pretty(&kc)?)
            .with_context(|| format!("writing {}", path.display()))
    }

    fn read_admin_view(&self) -> anyhow::Result<Value> {
        let out = self.kubectl_ok(&["config", "view", "--minify", "--flatten", "-o", "json"])?;
        let v: Value = serde_json::from_str(&out).context("kubectl config view: not JSON")?;
        if v.pointer("/clusters/0/cluster/server").is_none() {
            bail!("the kubeconfig has no cluster server: {out}");
        }
        Ok(v)
    }

    /// `helm <verb...> edgewire charts/edgewire -n <release namespace>`.
    fn install_chart(&self, verb: &[&str]) -> anyhow::Result<()> {
        let chart = workspace_root().join("charts/edgewire");
        let chart = chart.to_string_lossy().into_owned();
        let mut args: Vec<&str> = verb.to_vec();
        args.extend([
            self.release_name.as_str(),
            chart.as_str(),
            "--namespace",
            self.release_namespace.as_str(),
        ]);
        let out = self.helm(&args)?;
        if !out.status.success() {
            bail!(
                "helm {} failed ({}): {}{}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr),
                String::from_utf8_lossy(&out.stdout)
            );
        }
        let crds: Vec<String> = edgewire_crd_names()
            .iter()
            .map(|c| format!("crd/{c}"))
            .collect();
        let mut wait = vec!["wait", "--for=condition=Established", "--timeout=60s"];
        wait.extend(crds.iter().map(String::as_str));
        self.kubectl_ok(&wait)?;
        Ok(())
    }

    // --- what tests use ---------------------------------------------------------------------------

    /// Whether the harness started this control plane (`false`: the cluster in `KUBECONFIG`).
    pub fn is_local(&self) -> bool {
        self.local
    }

    /// How long the start took (empty for the cluster in `KUBECONFIG`).
    pub fn startup(&self) -> &Startup {
        &self.startup
    }

    /// The work directory: `logs/`, `pki/`, `kubeconfigs/`, `tests/` (the tests' own files).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The log of component `name` (`etcd`, `kube-apiserver`, `kube-controller-manager`,
    /// `kube-scheduler`, `kwok`).
    pub fn log_path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("logs/{name}.log"))
    }

    /// The last `n` lines of every component's log, labelled (for failure messages).
    pub fn log_tails(&self, n: usize) -> String {
        let components = self.components.lock().unwrap_or_else(|e| e.into_inner());
        components
            .iter()
            .map(|c| format!("--- {} ({}):\n{}", c.name, c.log.display(), tail(&c.log, n)))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Keep the work directory when the control plane stops (call when a test fails).
    pub fn keep_logs(&self) {
        self.guardian.keep();
    }

    /// Puts a process the test starts (an operator, an agent) into the guardian's process group: it is
    /// killed when the test process is gone, even when that was killed. Call before `spawn`.
    pub fn adopt(&self, cmd: &mut Command) {
        self.guardian.adopt(cmd);
    }

    /// The admin's kubeconfig (`system:masters`).
    pub fn admin_kubeconfig(&self) -> &Path {
        &self.admin
    }

    /// The chart's release namespace (where its ServiceAccount, Role and Deployment live).
    pub fn release_namespace(&self) -> &str {
        &self.release_namespace
    }

    /// The chart's release name, which is also the name of its Deployment, ServiceAccount and ClusterRole
    /// (the chart's full name is the release name when that contains `edgewire`).
    pub fn release_name(&self) -> &str {
        &self.release_name
    }

    /// The chart's ServiceAccount, what the operator runs as.
    pub fn chart_service_account(&self) -> &str {
        &self.release_name
    }

    /// The user name the chart's ServiceAccount authenticates as
    /// (`system:serviceaccount:<release namespace>:<name>`).
    pub fn chart_user(&self) -> String {
        format!(
            "system:serviceaccount:{}:{}",
            self.release_namespace,
            self.chart_service_account()
        )
    }

    /// The kube-apiserver's audit log (JSON lines): every request of the chart's ServiceAccount at
    /// `Metadata` level. `None` on the cluster in `KUBECONFIG`, whose audit configuration is not ours.
    pub fn audit_log(&self) -> Option<PathBuf> {
        self.local.then(|| self.log_path("audit"))
    }

    /// `kubectl` with the admin kubeconfig and a discovery cache shared by the run.
    pub fn kubectl_command(&self, args: &[&str]) -> Command {
        self.kubectl_command_as(&self.admin, args)
    }

    /// `kubectl` with `kubeconfig`.
    pub fn kubectl_command_as(&self, kubeconfig: &Path, args: &[&str]) -> Command {
        let mut c = Command::new(&self.kubectl);
        c.args(args)
            .env("KUBECONFIG", kubeconfig)
            .env("KUBECACHEDIR", self.dir.join("kubecache"))
            .stdin(Stdio::null());
        c
    }

    /// Runs kubectl as the admin.
    pub fn kubectl(&self, args: &[&str]) -> anyhow::Result<Output> {
        self.kubectl_command(args)
            .output()
            .with_context(|| format!("running {}", self.kubectl.display()))
    }

    /// Runs kubectl as the admin; its stdout, or an error with its stderr.
    pub fn kubectl_ok(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = self.kubectl(args)?;
        if !out.status.success() {
            bail!(
                "kubectl {} failed ({}): {}{}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr),
                String::from_utf8_lossy(&out.stdout)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `kubectl <args> -f -` as the admin with `input` on stdin.
    pub fn kubectl_stdin(&self, args: &[&str], input: &str) -> anyhow::Result<Output> {
        let mut all = args.to_vec();
        all.extend(["-f", "-"]);
        let mut child = self
            .kubectl_command(&all)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("running {}", self.kubectl.display()))?;
        child
            .stdin
            .take()
            .context("kubectl stdin")?
            .write_all(input.as_bytes())
            .context("writing to kubectl")?;
        child.wait_with_output().context("waiting for kubectl")
    }

    /// `kubectl apply -f -` as the admin.
    pub fn apply(&self, yaml: &str) -> anyhow::Result<String> {
        let out = self.kubectl_stdin(&["apply"], yaml)?;
        if !out.status.success() {
            bail!(
                "kubectl apply failed ({}): {}\nmanifest:\n{yaml}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `helm` with the admin kubeconfig and private helm directories.
    pub fn helm(&self, args: &[&str]) -> anyhow::Result<Output> {
        let home = self.dir.join("helm");
        Command::new(&self.helm)
            .args(args)
            .env("KUBECONFIG", &self.admin)
            .env("HELM_CACHE_HOME", home.join("cache"))
            .env("HELM_CONFIG_HOME", home.join("config"))
            .env("HELM_DATA_HOME", home.join("data"))
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("running {}", self.helm.display()))
    }

    /// Creates (or labels) namespace `name` with `pod-security.kubernetes.io/enforce: restricted`.
    pub fn create_restricted_namespace(&self, name: &str) -> anyhow::Result<()> {
        self.apply(&format!(
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {name}\n  labels:\n    pod-security.kubernetes.io/enforce: restricted\n    pod-security.kubernetes.io/enforce-version: latest\n"
        ))
        .map(drop)
    }

    /// A token of ServiceAccount `ns/sa` from the TokenRequest API (`kubectl create token`).
    pub fn create_token(&self, ns: &str, sa: &str) -> anyhow::Result<String> {
        let out = self.kubectl_ok(&[
            "create",
            "token",
            sa,
            "-n",
            ns,
            &format!("--duration={TOKEN_DURATION}"),
        ])?;
        let token = out.trim().to_string();
        if token.is_empty() {
            bail!("kubectl create token {sa} -n {ns} printed nothing");
        }
        Ok(token)
    }

    /// A kubeconfig for this cluster that authenticates with `token`, written to
    /// `kubeconfigs/<stem>.kubeconfig`.
    pub fn token_kubeconfig(&self, stem: &str, token: &str) -> anyhow::Result<PathBuf> {
        let mut kc = self.admin_view.clone();
        let user = kc
            .pointer_mut("/users/0")
            .context("the admin kubeconfig has no user")?;
        *user = serde_json::json!({"name": stem, "user": {"token": token}});
        if let Some(ctx) = kc.pointer_mut("/contexts/0/context/user") {
            *ctx = Value::String(stem.into());
        }
        let path = self.dir.join(format!("kubeconfigs/{stem}.kubeconfig"));
        std::fs::write(&path, serde_json::to_vec_pretty(&kc)?)
            .with_context(|| format!("writing {}", path.display()))?;
        Ok(path)
    }

    /// A kubeconfig authenticating as ServiceAccount `ns/sa` (a fresh TokenRequest token).
    pub fn service_account_kubeconfig(&self, ns: &str, sa: &str) -> anyhow::Result<PathBuf> {
        let token = self.create_token(ns, sa)?;
        self.token_kubeconfig(&format!("{ns}.{sa}"), &token)
    }

    /// The kubeconfig of the chart's ServiceAccount: what the operator runs with, so that the chart's
    /// RBAC is all it has. Made once per run.
    pub fn operator_kubeconfig(&self) -> anyhow::Result<PathBuf> {
        self.operator_kubeconfig
            .get_or_init(|| {
                self.service_account_kubeconfig(
                    &self.release_namespace,
                    self.chart_service_account(),
                )
                .map_err(|e| format!("{e:#}"))
            })
            .clone()
            .map_err(|e| anyhow::anyhow!("{e}"))
    }
}

impl Drop for ControlPlane {
    /// An owned control plane (a `static` one is never dropped; the guardian sees the process go instead).
    fn drop(&mut self) {
        self.guardian.shut_down();
        for c in self
            .components
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .iter_mut()
        {
            let _ = c.child.wait();
        }
    }
}

/// `name` of the Edgewire CRDs, as the api crate generates them.
pub fn edgewire_crd_names() -> [&'static str; 3] {
    [
        "eventbrokers.edgewire.dev",
        "mqttbrokers.edgewire.dev",
        "bridgelinks.edgewire.dev",
    ]
}

/// The kwok Stage files, comma-separated (what `--config` takes).
fn stage_files(dir: &Path) -> anyhow::Result<String> {
    let mut files: Vec<String> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {} (hack/kube/build.sh copies them)", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .map(|p| p.display().to_string())
        .collect();
    files.sort();
    if files.is_empty() {
        bail!("no kwok Stage files in {}", dir.display());
    }
    Ok(files.join(","))
}

/// `curl -fsS --max-time 2 <args>` succeeds.
fn curl(args: &[&str]) -> bool {
    Command::new("curl")
        .args(["-fsS", "--max-time", "2", "-o", "/dev/null"])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}
