//! EMQX 5: `emqx.conf` (HOCON: cookie, static cluster discovery over the headless Service, MQTT listener,
//! dashboard with the broker's credentials, password authentication against the built-in database
//! bootstrapped from a CSV file). The UI is the built-in dashboard.

use super::common::*;
use super::{BrokerChildren, UiChildren};
use k8s_openapi::api::core::v1::Container;
use std::collections::BTreeMap;
use std::fmt::Write;

pub const MQTT_PORT: i32 = 1883;
pub const WS_PORT: i32 = 8083;
pub const DASHBOARD_PORT: i32 = 18083;
/// Erlang distribution (ekka).
pub const EKKA_PORT: i32 = 4370;
/// Cluster RPC (gen_rpc).
pub const RPC_PORT: i32 = 5369;
pub const CONFIG_KEY: &str = "emqx.conf";
pub const BOOTSTRAP_KEY: &str = "auth-built-in-db-bootstrap.csv";

const ETC_DIR: &str = "/opt/emqx/etc";
const DATA_DIR: &str = "/opt/emqx/data";
/// A token becomes the password of this user.
const TOKEN_USER: &str = "edgewire";
/// `emqx` in the official image.
const USER: ImageUser = ImageUser {
    uid: 1000,
    gid: 1000,
};
const DEFAULTS: Defaults = Defaults {
    cpu_request: "250m",
    memory_request: "512Mi",
    memory_limit: "1Gi",
};

/// Erlang node name of pod `i`.
pub fn node_name(ctx: &Ctx, i: i32) -> String {
    format!("emqx@{}.cluster.local", ctx.pod_host(i))
}

pub fn build(ctx: &Ctx) -> BrokerChildren {
    let user = ctx.user_password(TOKEN_USER);
    let files = BTreeMap::from([
        (
            CONFIG_KEY.to_string(),
            render_config(ctx, user).into_bytes(),
        ),
        (
            BOOTSTRAP_KEY.to_string(),
            render_bootstrap(user).into_bytes(),
        ),
    ]);
    let config = ctx.config_secret(files);
    let container = Container {
        name: "emqx".into(),
        image: Some(ctx.plan.image.clone()),
        env: Some(vec![
            pod_name_env(),
            env(
                "EMQX_NODE__NAME",
                format!("emqx@{}.cluster.local", ctx.own_host_env()),
            ),
        ]),
        ports: Some(container_ports(&ports())),
        volume_mounts: Some(vec![
            // Single files: the image keeps the rest of etc/ (vm.args, certificates, ACL defaults).
            mount_file(
                CONFIG_VOLUME,
                &format!("{ETC_DIR}/{CONFIG_KEY}"),
                CONFIG_KEY,
            ),
            mount_file(
                CONFIG_VOLUME,
                &format!("{ETC_DIR}/{BOOTSTRAP_KEY}"),
                BOOTSTRAP_KEY,
            ),
            mount(DATA_VOLUME, DATA_DIR, false),
        ]),
        startup_probe: Some(http_probe("/status", "dashboard", STARTUP)),
        readiness_probe: Some(http_probe("/status", "dashboard", READY)),
        liveness_probe: Some(http_probe("/status", "dashboard", LIVE)),
        resources: Some(ctx.resources(DEFAULTS)),
        security_context: Some(container_security_context(false)),
        ..Default::default()
    };
    let statefulset = ctx.statefulset(
        Workload {
            container,
            init_containers: vec![],
            volumes: vec![],
            config_items: vec![],
            user: USER,
            grace_seconds: 60,
        },
        &config,
    );
    let ui = ctx.plan.ui.then(|| UiChildren {
        deployment: None,
        service: ctx.ui_service(ctx.selector(), "dashboard", DASHBOARD_PORT),
    });
    BrokerChildren {
        headless: ctx.headless_service(&ports()),
        client: ctx.client_service(&[("mqtt", MQTT_PORT), ("ws", WS_PORT)]),
        config,
        statefulset,
        ui,
    }
}

fn ports() -> Vec<(&'static str, i32)> {
    vec![
        ("mqtt", MQTT_PORT),
        ("ws", WS_PORT),
        ("dashboard", DASHBOARD_PORT),
        ("ekka", EKKA_PORT),
        ("rpc", RPC_PORT),
    ]
}

/// `emqx.conf`.
pub fn render_config(ctx: &Ctx, user: Option<(&str, &str)>) -> String {
    let o = &ctx.v.owner;
    let mut c = String::new();
    let _ = writeln!(
        c,
        "# Rendered by edgewire-operator for EventBroker {}/{}; edits are overwritten.",
        o.namespace, o.name
    );
    c.push_str("# node.name comes from EMQX_NODE__NAME (the pod's DNS name).\n");
    let cookie = ctx.erlang_cookie();
    let _ = writeln!(
        c,
        "node {{\n  cookie = {}\n  data_dir = \"data\"\n}}",
        json_quote(&cookie)
    );
    c.push_str("cluster {\n  name = edgewire\n");
    if ctx.clustered() {
        c.push_str("  discovery_strategy = static\n  static.seeds = [\n");
        for i in 0..ctx.replicas() {
            let _ = writeln!(c, "    {}", json_quote(&node_name(ctx, i)));
        }
        c.push_str("  ]\n");
    } else {
        c.push_str("  discovery_strategy = manual\n");
    }
    c.push_str("}\n");
    let _ = writeln!(c, "listeners.tcp.default.bind = \"0.0.0.0:{MQTT_PORT}\"");
    let _ = writeln!(c, "listeners.ws.default.bind = \"0.0.0.0:{WS_PORT}\"");
    // The dashboard listener also serves /status for the probes, so it is on with or without `ui`. Its admin
    // is the broker user (the default password only seeds a blank node).
    let (admin, admin_password) = user.unwrap_or(("admin", cookie.as_str()));
    let _ = writeln!(
        c,
        "dashboard {{\n  listeners.http.bind = {DASHBOARD_PORT}\n  default_username = {}\n  default_password = {}\n}}",
        json_quote(admin),
        json_quote(admin_password)
    );
    c.push_str("authentication = [\n  {\n");
    c.push_str("    mechanism = password_based\n    backend = built_in_database\n    user_id_type = username\n");
    c.push_str("    password_hash_algorithm { name = sha256, salt_position = suffix }\n");
    let _ = writeln!(
        c,
        "    bootstrap_file = {}",
        json_quote(&format!("{ETC_DIR}/{BOOTSTRAP_KEY}"))
    );
    c.push_str("    bootstrap_type = plain\n  }\n]\n");
    c.push_str("log.console { enable = true, level = warning }\n");
    c
}

/// The users EMQX imports into its built-in database: `user_id,password,is_superuser`.
pub fn render_bootstrap(user: Option<(&str, &str)>) -> String {
    let mut c = String::from("user_id,password,is_superuser\n");
    if let Some((u, p)) = user {
        let _ = writeln!(c, "{},{},true", csv_field(u), csv_field(p));
    }
    c
}

/// RFC 4180: quoted (quotes doubled) only when the field needs it.
fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}
