//! Eclipse Mosquitto's files, for both Mosquittos the operator runs: an EventBroker's deployed broker
//! (`deployBroker.kind: mosquitto`) and the builtin MqttBroker. One renderer for `mosquitto.conf`'s global
//! settings and one for password-file lines (Mosquitto's own PBKDF2-SHA512 `$7$` format).

use crate::children::Owner;
use crate::hash::derive;
use edgewire_api::LogLevel;
use sha2::Sha512;
use std::fmt::Write;

pub const CONFIG_KEY: &str = "mosquitto.conf";
pub const PASSWD_KEY: &str = "passwd";
pub const ACL_KEY: &str = "acl";
/// Where the config Secret is mounted.
pub const CONFIG_DIR: &str = "/mosquitto/config";
/// Where the PVC is mounted.
pub const DATA_DIR: &str = "/mosquitto/data";
/// Port of the plain MQTT listener.
pub const MQTT_PORT: i32 = 1883;
/// User and group of the `eclipse-mosquitto` image.
pub const UID: i64 = 1883;
/// Mosquitto's own iteration count for `$7$` hashes (`mosquitto_passwd` uses the same).
pub const PBKDF2_ITERATIONS: u32 = 101;
/// Salt length of `mosquitto_passwd`.
pub const SALT_LEN: usize = 12;

/// One line of a Mosquitto password file: `user:$7$101$<base64 salt>$<base64 PBKDF2-HMAC-SHA512>`.
///
/// The salt is derived from the user and password (not random) so the rendered Secret is the same on every
/// reconcile; it still differs between users and passwords, which is what a salt is for here.
pub fn password_line(user: &str, password: &str) -> String {
    use base64::Engine;
    let derived = derive(
        "edgewire/mosquitto-salt\0",
        &[user.as_bytes(), password.as_bytes()],
    );
    let salt = &derived[..SALT_LEN];
    let mut hash = [0u8; 64];
    pbkdf2::pbkdf2_hmac::<Sha512>(password.as_bytes(), salt, PBKDF2_ITERATIONS, &mut hash);
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    format!("{user}:$7${PBKDF2_ITERATIONS}${}${}", b64(salt), b64(&hash))
}

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

/// What differs between the two Mosquittos' `mosquitto.conf`.
pub struct Conf<'a> {
    /// `EventBroker` or `MqttBroker`: named in the header comment with the owner.
    pub kind: &'a str,
    pub owner: &'a Owner,
    /// A plain listener declared before the global settings (the EventBroker's single listener); the
    /// MqttBroker appends its listener sections after [`render`]'s output instead.
    pub leading_listener: Option<i32>,
    /// `sys_interval`, when `$SYS` is read (the MqttBroker's metrics sidecar).
    pub sys_interval: Option<u32>,
    pub log_level: LogLevel,
}

/// `mosquitto.conf` up to its listener sections. Security settings are global (`per_listener_settings
/// false`): every listener authenticates against the same password file and ACL.
pub fn render(conf: &Conf) -> String {
    let o = conf.owner;
    let mut c = String::new();
    let _ = writeln!(
        c,
        "# Rendered by edgewire-operator for {} {}/{}; edits are overwritten.",
        conf.kind, o.namespace, o.name
    );
    c.push_str("per_listener_settings false\n");
    if let Some(port) = conf.leading_listener {
        let _ = writeln!(c, "listener {port}");
        c.push_str("protocol mqtt\n");
    }
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
    if let Some(s) = conf.sys_interval {
        let _ = writeln!(c, "sys_interval {s}");
    }
    c.push_str("log_dest stdout\n");
    for t in log_types(conf.log_level) {
        let _ = writeln!(c, "log_type {t}");
    }
    c.push_str("log_timestamp_format %Y-%m-%dT%H:%M:%S\n");
    c
}
