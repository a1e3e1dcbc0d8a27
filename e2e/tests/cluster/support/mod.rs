//! Shared support of the end-to-end tests: the control plane ([`Cluster`]: the one this test binary
//! starts, or the cluster in `KUBECONFIG`), the real `edgewire-operator` binary as a process
//! ([`Operator`]) under the chart's ServiceAccount, the `edgewire-agent` binary, `kubectl` helpers, and
//! polling.
//!
//! Everything goes through the same tools users use: `kubectl` (JSON output parsed with serde_json) and
//! the operator's own `/metrics` endpoint (a plain HTTP GET over a `TcpStream`).

// Not every helper is used by every scenario.
#![allow(dead_code)]

pub mod cluster;
pub mod manifests;
pub mod operator;
pub mod pod;

pub use cluster::Cluster;
pub use operator::Operator;

use serde_json::Value;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// How long a condition may take to come true. Generous: these machines are shared and noisy.
pub const TIMEOUT: Duration = Duration::from_secs(60);
/// How often [`wait_for`] looks again.
pub const POLL: Duration = Duration::from_millis(200);

pub use edgewire_e2e::kube::workspace_root;

/// A binary of the workspace's debug build: `$<env>`, else `$CARGO_TARGET_DIR/debug/<name>`, else
/// `<workspace>/target/debug/<name>`.
fn workspace_bin(env: &str, name: &str, package: &str) -> PathBuf {
    if let Some(p) = std::env::var_os(env).filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        assert!(p.is_file(), "{env}={} does not exist", p.display());
        return p;
    }
    let target = match std::env::var_os("CARGO_TARGET_DIR").filter(|p| !p.is_empty()) {
        Some(t) => workspace_root().join(t), // join keeps an absolute path as is
        None => workspace_root().join("target"),
    };
    let p = target.join("debug").join(name);
    assert!(
        p.is_file(),
        "{} not found: run `cargo build -p {package}` first",
        p.display()
    );
    p
}

/// The operator binary (`$EDGEWIRE_OPERATOR_BIN`, else the debug build).
pub fn operator_bin() -> PathBuf {
    workspace_bin(
        "EDGEWIRE_OPERATOR_BIN",
        "edgewire-operator",
        "edgewire-operator",
    )
}

/// The agent binary (`$EDGEWIRE_AGENT_BIN`, else the debug build).
pub fn agent_bin() -> PathBuf {
    workspace_bin("EDGEWIRE_AGENT_BIN", "edgewire-agent", "edgewire-agent")
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

/// The return code of the CONNACK an MQTT 3.1.1 broker on 127.0.0.1:`port` answers to a CONNECT with
/// `login` (user name and password; `None`: anonymous): 0 accepted, 4 bad user name or password, 5 not
/// authorized.
pub fn mqtt_connack(port: u16, client_id: &str, login: Option<(&str, &str)>) -> Result<u8, String> {
    use std::io::{Read, Write};
    fn field(out: &mut Vec<u8>, s: &str) {
        out.extend_from_slice(&(s.len() as u16).to_be_bytes());
        out.extend_from_slice(s.as_bytes());
    }
    // Protocol "MQTT" level 4; flags: clean session (+ user name and password); keep-alive 60 s.
    let flags = if login.is_some() { 0xC2 } else { 0x02 };
    let mut body = vec![0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, flags, 0x00, 0x3c];
    field(&mut body, client_id);
    if let Some((username, password)) = login {
        field(&mut body, username);
        field(&mut body, password);
    }
    let mut packet = vec![0x10];
    let mut len = body.len();
    loop {
        let mut byte = (len % 128) as u8;
        len /= 128;
        if len > 0 {
            byte |= 0x80;
        }
        packet.push(byte);
        if len == 0 {
            break;
        }
    }
    packet.extend(body);
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port))
        .map_err(|e| format!("connect 127.0.0.1:{port}: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    s.write_all(&packet)
        .map_err(|e| format!("send CONNECT: {e}"))?;
    let mut ack = [0u8; 4];
    s.read_exact(&mut ack)
        .map_err(|e| format!("read CONNACK: {e}"))?;
    if ack[..2] != [0x20, 0x02] {
        return Err(format!("not a CONNACK: {ack:?}"));
    }
    Ok(ack[3])
}

/// A minimal HTTP/1.1 client (`connection: close`): status code and body.
pub fn http(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> std::io::Result<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\ncontent-length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes())?;
    let mut resp = String::new();
    s.read_to_string(&mut resp)?;
    let code = resp
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = resp
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((code, body))
}

/// Publishes `payloads` at QoS 1 to `local/telemetry/line1/temp` on the edge broker at `port` (as client
/// `client_id`, with `login` when given) and waits for every PUBACK (the bridge took each into its spool);
/// returns how many were acknowledged. Publishing runs on a thread of its own so that more messages than
/// the client's request queue holds do not block the event loop that drains it.
pub fn publish_at_edge(
    port: u16,
    client_id: &str,
    login: Option<(&str, &str)>,
    payloads: Vec<String>,
) -> usize {
    let mut opts = rumqttc::MqttOptions::new(client_id, "127.0.0.1", port);
    if let Some((user, password)) = login {
        opts.set_credentials(user, password);
    }
    let (client, mut conn) = rumqttc::Client::new(opts, 100);
    let n = payloads.len();
    let publisher = {
        let client = client.clone();
        std::thread::spawn(move || {
            for payload in payloads {
                if client
                    .publish(
                        "local/telemetry/line1/temp",
                        rumqttc::QoS::AtLeastOnce,
                        false,
                        payload,
                    )
                    .is_err()
                {
                    break;
                }
            }
        })
    };
    let mut acked = 0;
    let mut events = conn.iter();
    while acked < n {
        match events.next() {
            Some(Ok(rumqttc::Event::Incoming(rumqttc::Packet::PubAck(_)))) => acked += 1,
            Some(Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(ack)))) => assert_eq!(
                ack.code,
                rumqttc::ConnectReturnCode::Success,
                "the edge broker refused the test's publisher"
            ),
            Some(Ok(_)) => {}
            Some(Err(e)) => panic!("edge publisher: {e}"),
            None => break,
        }
    }
    let _ = publisher.join();
    let _ = client.disconnect();
    acked
}
