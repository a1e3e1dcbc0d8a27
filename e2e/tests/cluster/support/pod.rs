//! A workload's container run as a host process the way the kubelet would run it (there is no container
//! runtime here: kwok only pretends the pod runs).
//!
//! - Its Secret volumes are written, key by key, under a private root at their mount paths; its other
//!   volumes (the spool claim, emptyDirs) are empty directories there. Args naming a path under a mount,
//!   or a directory holding mounts, are re-rooted.
//! - Its env is the container's (`value`s; `secretKeyRef`s resolved from the API).
//! - Listen addresses on `0.0.0.0:<port>` move to a free loopback port: nothing is exposed, and fake Pod
//!   IPs are never dialled.
//! - It authenticates as the pod's ServiceAccount: a TokenRequest token in a kubeconfig of its own
//!   (`KUBECONFIG`), the in-cluster credentials it would have had.

use super::{Cluster, at, str_at};
use base64::Engine;
use serde_json::Value;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// A container of a workload's pod template, running on the host. Killed on drop.
pub struct HostPod {
    child: Child,
    root: PathBuf,
    log: PathBuf,
    /// `127.0.0.1:<port>` that replaced the first `0.0.0.0:<port>` in the args.
    http_addr: Option<String>,
}

/// Writes the Secret `ns/name`'s keys into `dir` (created), one file per key.
fn write_secret(cluster: &Cluster, ns: &str, name: &str, dir: &Path) {
    let secret = cluster
        .get(ns, "secret", name)
        .unwrap_or_else(|| panic!("Secret {ns}/{name} of a volume does not exist"));
    std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
    let data = at(&secret, "/data")
        .as_object()
        .cloned()
        .unwrap_or_default();
    for (key, b64) in data {
        let b64 = b64
            .as_str()
            .unwrap_or_else(|| panic!("Secret {name} key {key}: not a string"));
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap_or_else(|e| panic!("Secret {name} key {key}: not base64: {e}"));
        std::fs::write(dir.join(&key), bytes)
            .unwrap_or_else(|e| panic!("write {}: {e}", dir.join(&key).display()));
    }
}

impl HostPod {
    /// Runs container `container` of `workload`'s pod template (a Deployment or StatefulSet as JSON) from
    /// binary `bin`. Its files and log live in `<test dir>/pod-<workload name>/`.
    pub fn start(
        cluster: &Cluster,
        ns: &str,
        workload: &Value,
        container: &str,
        bin: &Path,
    ) -> HostPod {
        let name = str_at(workload, "/metadata/name");
        let spec = at(workload, "/spec/template/spec");
        let c = at(spec, "/containers")
            .as_array()
            .and_then(|cs| cs.iter().find(|c| c["name"] == container))
            .unwrap_or_else(|| panic!("{name} has no container {container}: {spec}"))
            .clone();
        let root = cluster.dir().join(format!("pod-{name}"));
        std::fs::create_dir_all(&root).unwrap_or_else(|e| panic!("create {}: {e}", root.display()));
        let volumes = at(spec, "/volumes").as_array().cloned().unwrap_or_default();
        let mut mounts: Vec<String> = Vec::new();
        for m in at(&c, "/volumeMounts")
            .as_array()
            .cloned()
            .unwrap_or_default()
        {
            let path = str_at(&m, "/mountPath").to_string();
            let dir = root.join(path.trim_start_matches('/'));
            let volume = volumes
                .iter()
                .find(|v| v["name"] == m["name"])
                .cloned()
                // A claim template's volume is not in the pod spec's volumes.
                .unwrap_or(Value::Null);
            if let Some(secret) = volume.pointer("/secret") {
                assert!(
                    secret.get("items").is_none(),
                    "{name}: Secret volumes with items are not supported here: {volume}"
                );
                write_secret(cluster, ns, str_at(secret, "/secretName"), &dir);
            } else {
                std::fs::create_dir_all(&dir)
                    .unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
            }
            mounts.push(path);
        }
        let mut http_addr = None;
        let args: Vec<String> = at(&c, "/args")
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|a| {
                let a = a.as_str().unwrap_or_default();
                if let Some(port) = a.strip_prefix("0.0.0.0:") {
                    assert!(port.parse::<u16>().is_ok(), "{name}: odd address {a}");
                    let addr = format!("127.0.0.1:{}", edgewire_e2e::brokers::free_port());
                    http_addr.get_or_insert(addr.clone());
                    addr
                } else if a.starts_with('/')
                    && mounts
                        .iter()
                        .any(|m| Path::new(a).starts_with(m) || Path::new(m).starts_with(a))
                {
                    // A path under a mount, or a directory holding mounts (the secrets dir).
                    root.join(a.trim_start_matches('/')).display().to_string()
                } else {
                    a.to_string()
                }
            })
            .collect();
        let sa = str_at(spec, "/serviceAccountName");
        assert!(!sa.is_empty(), "{name}: no serviceAccountName");
        let kubeconfig = cluster.service_account_kubeconfig(ns, sa);
        let log = root.join("container.log");
        let out = File::create(&log).expect("create the container log");
        let mut cmd = Command::new(bin);
        cmd.args(&args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("KUBECONFIG", &kubeconfig)
            .env("RUST_BACKTRACE", "0")
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("clone log handle"))
            .stderr(out);
        for e in at(&c, "/env").as_array().cloned().unwrap_or_default() {
            let var = str_at(&e, "/name");
            let value = match e.get("value") {
                Some(v) => v
                    .as_str()
                    .unwrap_or_else(|| panic!("env {var}: value is not a string: {e}"))
                    .to_string(),
                None => {
                    let r = at(&e, "/valueFrom/secretKeyRef");
                    let dir = root.join(format!(".env-{}", str_at(r, "/name")));
                    write_secret(cluster, ns, str_at(r, "/name"), &dir);
                    std::fs::read_to_string(dir.join(str_at(r, "/key")))
                        .unwrap_or_else(|e| panic!("env {var}: Secret key {r}: {e}"))
                }
            };
            cmd.env(var, value);
        }
        cluster.control_plane().adopt(&mut cmd);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", bin.display()));
        HostPod {
            child,
            root,
            log,
            http_addr,
        }
    }

    /// The loopback address of its HTTP server (`0.0.0.0:<port>` in the pod's args).
    pub fn http_addr(&self) -> Option<&str> {
        self.http_addr.as_deref()
    }

    /// Where its volumes are (`<root>/<mount path>`).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Its stdout and stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The last 40 lines of its log, labelled.
    pub fn log_tail(&self) -> String {
        format!(
            "--- host pod {} log tail:\n{}",
            self.log.display(),
            super::cluster::tail(&self.log, 40)
        )
    }

    /// Whether it still runs.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for HostPod {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
