//! Mosquitto's files: `mosquitto.conf`, the password file (Mosquitto's own PBKDF2-SHA512 `$7$` lines) and
//! the ACL file. `mosquitto.conf` changes only with the spec (listeners, log level); `passwd` and `acl` change
//! with the users and their passwords, which Mosquitto reloads on SIGHUP without dropping anyone.

use super::super::validate::ValidatedMqttBroker;
use crate::mosquitto::{self as conf, MQTT_PORT, password_line};
use crate::secret::ExposeSecret;
use std::fmt::Write;

pub use crate::mosquitto::{ACL_KEY, CONFIG_DIR, CONFIG_KEY, DATA_DIR, PASSWD_KEY};
/// Where the TLS Secret is mounted.
pub const CERTS_DIR: &str = "/mosquitto/certs";
/// How often Mosquitto publishes `$SYS` (what the sidecar's metrics are made of), seconds.
pub const SYS_INTERVAL: u32 = 10;

/// `mosquitto.conf`: the shared global settings with `$SYS` on and the spec's log level, then one section
/// per listener.
pub fn render_config(v: &ValidatedMqttBroker) -> String {
    let b = &v.builtin;
    let mut c = conf::render(&conf::Conf {
        kind: "MqttBroker",
        owner: &v.owner,
        leading_listener: None,
        sys_interval: Some(SYS_INTERVAL),
        log_level: b.log_level,
    });

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
        .map(|u| (u.name.as_str(), u.password.expose_secret()))
        .collect();
    out.push((
        v.sidecar.username.as_str(),
        v.sidecar.password.expose_secret(),
    ));
    out.sort();
    out
}

/// The password file: one `$7$` line per user, sorted by user name. Salts are derived from user and password,
/// so the file is the same on every reconcile and changes only with a password.
pub fn render_passwd(v: &ValidatedMqttBroker) -> String {
    logins(v)
        .into_iter()
        .map(|(u, p)| format!("{}\n", password_line(u, p)))
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
