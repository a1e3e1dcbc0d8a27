//! Shared support of the `e2e_*` tests: an API server ([`Cluster`]: a real cluster when `KUBECONFIG` is
//! set, else the in-memory stand-in in `e2e/standin/`), the real `edgewire-operator` binary as a process
//! ([`Operator`]), `kubectl` helpers, and polling.
//!
//! Everything goes through the same tools users use: `kubectl` (JSON output parsed with serde_json) and
//! the operator's own `/metrics` endpoint (a plain HTTP GET over a `TcpStream`).

// Each test file compiles this module on its own and uses a part of it.
#![allow(dead_code)]

pub mod cluster;
pub mod manifests;
pub mod operator;

pub use cluster::Cluster;
pub use operator::Operator;

use serde_json::Value;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// How long a condition may take to come true. Generous: these machines are shared and noisy.
pub const TIMEOUT: Duration = Duration::from_secs(60);
/// How often [`wait_for`] looks again.
pub const POLL: Duration = Duration::from_millis(200);

/// The workspace root (the parent of the `e2e` crate).
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("e2e crate has a parent directory")
        .to_path_buf()
}

/// Polls `f` every [`POLL`] until it returns `Ok`, for at most `timeout`. The error names `what` and the
/// last observation `f` reported, so a failed wait says what it saw.
pub fn wait_for<T>(
    what: &str,
    timeout: Duration,
    mut f: impl FnMut() -> Result<T, String>,
) -> Result<T, String> {
    let start = Instant::now();
    loop {
        match f() {
            Ok(v) => return Ok(v),
            Err(last) => {
                if start.elapsed() >= timeout {
                    return Err(format!(
                        "timed out after {timeout:?} waiting for {what}; last observation: {last}"
                    ));
                }
            }
        }
        std::thread::sleep(POLL);
    }
}

/// `v` at a JSON pointer (`/status/observedGeneration`), `Null` when absent.
pub fn at<'a>(v: &'a Value, pointer: &str) -> &'a Value {
    v.pointer(pointer).unwrap_or(&Value::Null)
}

/// String at a JSON pointer, `""` when absent.
pub fn str_at<'a>(v: &'a Value, pointer: &str) -> &'a str {
    at(v, pointer).as_str().unwrap_or("")
}

/// The condition of `type_` in `status.conditions`.
pub fn condition<'a>(obj: &'a Value, type_: &str) -> Option<&'a Value> {
    at(obj, "/status/conditions")
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
}

/// `status` of the condition of `type_` (`"True"`, `"False"`, `"Unknown"`), `""` when absent.
pub fn condition_status<'a>(obj: &'a Value, type_: &str) -> &'a str {
    condition(obj, type_)
        .and_then(|c| c["status"].as_str())
        .unwrap_or("")
}

/// `metadata.generation` and `status.observedGeneration` of a resource.
pub fn generations(obj: &Value) -> (i64, i64) {
    (
        at(obj, "/metadata/generation").as_i64().unwrap_or(-1),
        at(obj, "/status/observedGeneration").as_i64().unwrap_or(-1),
    )
}

/// A short summary of a resource's status, for failure messages.
pub fn status_summary(obj: &Value) -> String {
    let (generation, observed) = generations(obj);
    let conditions: Vec<String> = at(obj, "/status/conditions")
        .as_array()
        .map(|cs| {
            cs.iter()
                .map(|c| {
                    format!(
                        "{}={} ({}: {})",
                        c["type"].as_str().unwrap_or("?"),
                        c["status"].as_str().unwrap_or("?"),
                        c["reason"].as_str().unwrap_or(""),
                        c["message"].as_str().unwrap_or("")
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    format!(
        "generation {generation}, observedGeneration {observed}, conditions [{}]",
        conditions.join("; ")
    )
}

/// Name of the pod-template annotation that carries the hash of the referenced Secrets.
pub const CREDENTIALS_HASH: &str = "edgewire.dev/credentials-hash";

/// The pod-template `edgewire.dev/credentials-hash` annotation of a Deployment or StatefulSet.
pub fn credentials_hash(workload: &Value) -> String {
    at(workload, "/spec/template/metadata/annotations")
        .get(CREDENTIALS_HASH)
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string()
}

/// One child object: (kind, name, uid).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ChildRef {
    pub kind: String,
    pub name: String,
    pub uid: String,
}

impl ChildRef {
    pub fn of(obj: &Value) -> Self {
        ChildRef {
            kind: str_at(obj, "/kind").to_string(),
            name: str_at(obj, "/metadata/name").to_string(),
            uid: str_at(obj, "/metadata/uid").to_string(),
        }
    }

    /// `Kind/name`.
    pub fn key(&self) -> String {
        format!("{}/{}", self.kind, self.name)
    }
}

/// `Kind/name` of each child, sorted.
pub fn keys(children: &[ChildRef]) -> Vec<String> {
    let mut k: Vec<String> = children.iter().map(ChildRef::key).collect();
    k.sort();
    k
}
