//! Eclipse Mosquitto: `mosquitto.conf` (listener 1883, no anonymous access, persistence on the PVC), a
//! password file in Mosquitto's own PBKDF2-SHA512 format and an ACL file. No UI.

use super::BrokerChildren;
use super::common::*;
use k8s_openapi::api::core::v1::Container;
use sha2::Sha512;
use std::collections::BTreeMap;
use std::fmt::Write;

pub const MQTT_PORT: i32 = 1883;
pub const CONFIG_KEY: &str = "mosquitto.conf";
pub const PASSWD_KEY: &str = "passwd";
pub const ACL_KEY: &str = "acl";
/// Mosquitto's own iteration count for `$7$` hashes (`mosquitto_passwd` uses the same).
pub const PBKDF2_ITERATIONS: u32 = 101;
/// Salt length of `mosquitto_passwd`.
pub const SALT_LEN: usize = 12;

const CONFIG_DIR: &str = "/mosquitto/config";
const DATA_DIR: &str = "/mosquitto/data";
/// User of a token when one is given to Mosquitto (it has no token mode).
const TOKEN_USER: &str = "default";
const USER: ImageUser = ImageUser {
    uid: 1883,
    gid: 1883,
};
const DEFAULTS: Defaults = Defaults {
    cpu_request: "25m",
    memory_request: "32Mi",
    memory_limit: "256Mi",
};

/// One line of a Mosquitto password file: `user:$7$101$<base64 salt>$<base64 PBKDF2-HMAC-SHA512>`.
///
/// The salt is derived from the user and password (not random) so the rendered Secret is the same on every
/// reconcile; it still differs between users and passwords, which is what a salt is for here.
pub fn mosquitto_password_line(user: &str, password: &str) -> String {
    let derived = derive(
        "edgewire/mosquitto-salt\0",
        &[user.as_bytes(), password.as_bytes()],
    );
    let salt = &derived[..SALT_LEN];
    let mut hash = [0u8; 64];
    pbkdf2::pbkdf2_hmac::<Sha512>(password.as_bytes(), salt, PBKDF2_ITERATIONS, &mut hash);
    format!("{user}:$7${PBKDF2_ITERATIONS}${}${}", b64(salt), b64(&hash))
}

pub fn build(ctx: &Ctx) -> BrokerChildren {
    let user = ctx.user_password(TOKEN_USER);
    let files = BTreeMap::from([
        (CONFIG_KEY.to_string(), render_config(ctx).into_bytes()),
        (PASSWD_KEY.to_string(), render_passwd(user).into_bytes()),
        (
            ACL_KEY.to_string(),
            render_acl(user.map(|(u, _)| u)).into_bytes(),
        ),
    ]);
    let config = ctx.config_secret(files);
    let container = Container {
        name: "mosquitto".into(),
        image: Some(ctx.plan.image.clone()),
        command: Some(vec![
            "mosquitto".into(),
            "-c".into(),
            format!("{CONFIG_DIR}/{CONFIG_KEY}"),
        ]),
        ports: Some(container_ports(&[("mqtt", MQTT_PORT)])),
        volume_mounts: Some(vec![
            mount(CONFIG_VOLUME, CONFIG_DIR, true),
            mount(DATA_VOLUME, DATA_DIR, false),
        ]),
        readiness_probe: Some(tcp_probe("mqtt", READY)),
        liveness_probe: Some(tcp_probe("mqtt", LIVE)),
        resources: Some(ctx.resources(DEFAULTS)),
        security_context: Some(container_security_context(true)),
        ..Default::default()
    };
    let statefulset = ctx.statefulset(
        Workload {
            container,
            init_containers: vec![],
            volumes: vec![],
            config_items: vec![],
            user: USER,
            grace_seconds: 30,
        },
        &config,
    );
    BrokerChildren {
        headless: ctx.headless_service(&[("mqtt", MQTT_PORT)]),
        client: ctx.client_service(&[("mqtt", MQTT_PORT)]),
        config,
        statefulset,
        ui: None,
    }
}

/// `mosquitto.conf`.
pub fn render_config(ctx: &Ctx) -> String {
    let o = &ctx.v.owner;
    let mut c = String::new();
    let _ = writeln!(
        c,
        "# Rendered by edgewire-operator for EventBroker {}/{}; edits are overwritten.",
        o.namespace, o.name
    );
    c.push_str("per_listener_settings false\n");
    let _ = writeln!(c, "listener {MQTT_PORT}");
    c.push_str("protocol mqtt\n");
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
    c.push_str("log_dest stdout\nlog_type error\nlog_type warning\nlog_type notice\n");
    c.push_str("log_timestamp_format %Y-%m-%dT%H:%M:%S\n");
    c
}

/// The password file: the one user, or empty (nobody may connect) when the plan has no password.
pub fn render_passwd(user: Option<(&str, &str)>) -> String {
    match user {
        Some((u, p)) => format!("{}\n", mosquitto_password_line(u, p)),
        None => String::new(),
    }
}

/// The ACL file: the user may publish and subscribe everywhere (`#`; `$SYS` stays closed).
pub fn render_acl(user: Option<&str>) -> String {
    match user {
        Some(u) => format!("user {u}\ntopic readwrite #\n"),
        None => String::new(),
    }
}
