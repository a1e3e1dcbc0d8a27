//! Mosquitto's files: `mosquitto.conf`, the password file (Mosquitto's own PBKDF2-SHA512 `$7$` lines) and
//! the ACL file. `mosquitto.conf` changes only with the spec (listeners, log level); `passwd` and `acl` change
//! with the users and their passwords, which Mosquitto reloads on SIGHUP without dropping anyone.

use super::super::{MQTT_PORT, ValidatedMqttBroker};
use crate::controller::event_broker::build::broker::mosquitto_password_line;
use edgewire_api::LogLevel;
use std::fmt::Write;

pub const CONFIG_KEY: &str = "mosquitto.conf";
pub const PASSWD_KEY: &str = "passwd";
pub const ACL_KEY: &str = "acl";
/// Where the config Secret is mounted (Mosquitto and the sidecar).
pub const CONFIG_DIR: &str = "/mosquitto/config";
/// Where the PVC is mounted.
pub const DATA_DIR: &str = "/mosquitto/data";
/// Where the TLS Secret is mounted.
pub const CERTS_DIR: &str = "/mosquitto/certs";
/// How often Mosquitto publishes `$SYS` (what the sidecar's metrics are made of), seconds.
pub const SYS_INTERVAL: u32 = 10;

/// Mosquitto's `log_type`s for a level: each level adds to the one below; debug logs everything.
pub fn log_types(level: LogLevel) -> &'static [&'static str] {
    match level {
        LogLevel::Error => &["error"],
        LogLevel::Warning => &["error", "warning"],
        LogLevel::Notice => &["error", "warning", "notice"],
        LogLevel::Information => &["error", "warning", "notice", "information"],
        LogLevel::Debug => &["all"],
    }
}

/// `mosquitto.conf`. Security settings are global (`per_listener_settings false`): every listener
/// authenticates against the same password file and ACL.
pub fn render_config(v: &ValidatedMqttBroker) -> String {
    let o = &v.owner;
    let b = &v.builtin;
    let mut c = String::new();
    let _ = writeln!(
        c,
        "# Rendered by edgewire-operator for MqttBroker {}/{}; edits are overwritten.",
        o.namespace, o.name
    );
    c.push_str("per_listener_settings false\n");
    c.push_str("allow_anonymous false\n");
    let _ = writeln!(c, "password_file {CONFIG_DIR}/{PASSWD_KEY}");
    let _ = writeln!(c, "acl_file {CONFIG_DIR}/{ACL_KEY}");
    c.push_str("persistence true\n");
    let _ = writeln!(c, "persistence_location {DATA_DIR}/");
    c.push_str("autosave_interval 60\n");
    // Every PUBLISH and PUBACK is a small write: with Nagle on, delayed ACKs add ~40 ms per hop under load.
    c.push_str("set_tcp_nodelay true\n");
    // A window of 1,000 unacknowledged QoS 1/2 messages per client (default 20: one bridge fsync would cover
    // at most 20), and 100,000 queued per client (default 1,000) for a persistent session that is away —
    // a bridge pod being rescheduled, a worker restarting.
    c.push_str("max_inflight_messages 1000\nmax_queued_messages 100000\n");
    let _ = writeln!(c, "sys_interval {SYS_INTERVAL}");
    c.push_str("log_dest stdout\n");
    for t in log_types(b.log_level) {
        let _ = writeln!(c, "log_type {t}");
    }
    c.push_str("log_timestamp_format %Y-%m-%dT%H:%M:%S\n");

    let l = &b.listeners;
    match l.mqtt {
        Some(port) => {
            let _ = writeln!(c, "\n# MQTT\nlistener {port}\nprotocol mqtt");
        }
        None => {
            let _ = writeln!(
                c,
                "\n# Loopback only, for the mqtt-sidecar ($SYS metrics); the plain listener is off\nlistener {MQTT_PORT} 127.0.0.1\nprotocol mqtt"
            );
        }
    }
    if let Some(t) = &v.tls {
        let _ = writeln!(
            c,
            "\n# MQTT over TLS (Secret {})\nlistener {}\nprotocol mqtt",
            t.secret_name, t.port
        );
        if t.has_ca {
            let _ = writeln!(c, "cafile {CERTS_DIR}/ca.crt");
        }
        let _ = writeln!(c, "certfile {CERTS_DIR}/tls.crt");
        let _ = writeln!(c, "keyfile {CERTS_DIR}/tls.key");
        let _ = writeln!(c, "require_certificate {}", t.require_client_cert);
        // Client certificates (when required) prove the device; the user still logs in with a password.
        c.push_str("use_identity_as_username false\n");
    }
    if let Some(w) = &l.websockets {
        let _ = writeln!(
            c,
            "\n# MQTT over WebSockets\nlistener {}\nprotocol websockets",
            w.port
        );
    }
    c
}

/// `(user, password)` of everyone who may log in, sorted by name: the spec's users and the sidecar.
fn logins(v: &ValidatedMqttBroker) -> Vec<(&str, &str)> {
    let mut out: Vec<(&str, &str)> = v
        .users
        .iter()
        .map(|u| (u.name.as_str(), u.password.expose()))
        .collect();
    out.push((v.sidecar.username.as_str(), v.sidecar.password.expose()));
    out.sort();
    out
}

/// The password file: one `$7$` line per user, sorted by user name. Salts are derived from user and password,
/// so the file is the same on every reconcile and changes only with a password.
pub fn render_passwd(v: &ValidatedMqttBroker) -> String {
    logins(v)
        .into_iter()
        .map(|(u, p)| format!("{}\n", mosquitto_password_line(u, p)))
        .collect()
}

/// The ACL file: per user, `topic write` for what it publishes and `topic read` for what it subscribes to;
/// the sidecar reads `$SYS` only. Mosquitto denies whatever is not granted here.
pub fn render_acl(v: &ValidatedMqttBroker) -> String {
    let o = &v.owner;
    let mut entries: Vec<(&str, Vec<String>)> = v
        .users
        .iter()
        .map(|u| {
            let mut lines: Vec<String> = u
                .publish
                .iter()
                .map(|f| format!("topic write {f}"))
                .collect();
            lines.extend(u.subscribe.iter().map(|f| format!("topic read {f}")));
            (u.name.as_str(), lines)
        })
        .collect();
    entries.push((
        v.sidecar.username.as_str(),
        vec!["topic read $SYS/#".to_string()],
    ));
    entries.sort();
    let mut c = format!(
        "# Rendered by edgewire-operator for MqttBroker {}/{}; edits are overwritten.\n",
        o.namespace, o.name
    );
    for (user, lines) in entries {
        let _ = writeln!(c, "\nuser {user}");
        for l in lines {
            let _ = writeln!(c, "{l}");
        }
    }
    c
}
