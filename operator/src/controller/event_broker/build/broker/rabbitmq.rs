//! RabbitMQ: `rabbitmq.conf`, `enabled_plugins`, and `definitions.json` (the user with a salted SHA-256
//! password hash, the `/` vhost and its permissions), plus the Erlang cookie. Clustered through
//! `classic_config` peer discovery over the headless Service. The UI is the management plugin.
//!
//! The user comes from definitions rather than `default_user`/`default_pass`: those apply only to a blank
//! node, so a rotated password would never reach a running cluster, while definitions are imported on every
//! boot (and carry no plaintext). With definitions configured RabbitMQ creates no `guest` user at all.

use super::common::*;
use super::{BrokerChildren, UiChildren};
use k8s_openapi::api::core::v1::Container;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fmt::Write;

pub const AMQP_PORT: i32 = 5672;
pub const MANAGEMENT_PORT: i32 = 15672;
pub const PROMETHEUS_PORT: i32 = 15692;
pub const EPMD_PORT: i32 = 4369;
pub const DIST_PORT: i32 = 25672;
pub const CONFIG_KEY: &str = "rabbitmq.conf";
pub const PLUGINS_KEY: &str = "enabled_plugins";
pub const DEFINITIONS_KEY: &str = "definitions.json";
pub const COOKIE_KEY: &str = ".erlang.cookie";

const CONFIG_DIR: &str = "/etc/rabbitmq";
const DATA_DIR: &str = "/var/lib/rabbitmq";
const COOKIE_DIR: &str = "/var/run/edgewire-cookie";
/// A token becomes the password of this user.
const TOKEN_USER: &str = "edgewire";
/// `rabbitmq` in the official alpine image.
const USER: ImageUser = ImageUser { uid: 100, gid: 101 };
const DEFAULTS: Defaults = Defaults {
    cpu_request: "200m",
    memory_request: "512Mi",
    memory_limit: "1Gi",
};

/// `password_hash` of RabbitMQ's `rabbit_password_hashing_sha256`: base64(salt ‖ SHA-256(salt ‖ password))
/// with a 4-byte salt, derived from user and password so the rendered Secret is stable.
pub fn password_hash(user: &str, password: &str) -> String {
    let derived = derive(
        "edgewire/rabbitmq-salt\0",
        &[user.as_bytes(), password.as_bytes()],
    );
    let salt = &derived[..4];
    let digest = Sha256::new()
        .chain_update(salt)
        .chain_update(password.as_bytes())
        .finalize();
    let mut out = salt.to_vec();
    out.extend_from_slice(&digest);
    b64(&out)
}

/// Erlang node name of pod `i`.
pub fn node_name(ctx: &Ctx, i: i32) -> String {
    format!("rabbit@{}", ctx.pod_host(i))
}

pub fn build(ctx: &Ctx) -> BrokerChildren {
    let files = BTreeMap::from([
        (CONFIG_KEY.to_string(), render_config(ctx).into_bytes()),
        (
            PLUGINS_KEY.to_string(),
            render_plugins(ctx.plan.ui).into_bytes(),
        ),
        (
            DEFINITIONS_KEY.to_string(),
            render_definitions(ctx.user_password(TOKEN_USER)).into_bytes(),
        ),
        (COOKIE_KEY.to_string(), ctx.erlang_cookie().into_bytes()),
    ]);
    let config = ctx.config_secret(files);

    let vars = vec![
        pod_name_env(),
        env("RABBITMQ_USE_LONGNAME", "true"),
        env(
            "RABBITMQ_NODENAME",
            format!("rabbit@{}", ctx.own_host_env()),
        ),
    ];
    let container = Container {
        name: "rabbitmq".into(),
        image: Some(ctx.plan.image.clone()),
        env: Some(vars),
        ports: Some(container_ports(&ports(ctx))),
        volume_mounts: Some(vec![
            mount(CONFIG_VOLUME, CONFIG_DIR, true),
            mount(DATA_VOLUME, DATA_DIR, false),
        ]),
        startup_probe: Some(tcp_probe("amqp", STARTUP)),
        readiness_probe: Some(tcp_probe("amqp", READY)),
        // Starts an Erlang VM each time: rarely, and with a generous timeout.
        liveness_probe: Some(exec_probe(
            &["rabbitmq-diagnostics", "-q", "ping"],
            Timing {
                initial_delay: Some(60),
                period: 60,
                timeout: 20,
                failures: 3,
            },
        )),
        resources: Some(ctx.resources(DEFAULTS)),
        security_context: Some(container_security_context(false)),
        ..Default::default()
    };
    let setup = Container {
        name: "setup".into(),
        image: Some(ctx.plan.image.clone()),
        command: Some(vec!["sh".into(), "-ec".into(), setup_script(ctx)]),
        env: Some(vec![env("RABBITMQ_USE_LONGNAME", "true")]),
        volume_mounts: Some(vec![
            mount("cookie", COOKIE_DIR, true),
            mount(DATA_VOLUME, DATA_DIR, false),
        ]),
        resources: Some(
            Defaults {
                cpu_request: "10m",
                memory_request: "64Mi",
                memory_limit: "256Mi",
            }
            .requirements(),
        ),
        security_context: Some(container_security_context(false)),
        ..Default::default()
    };
    let statefulset = ctx.statefulset(
        Workload {
            container,
            init_containers: vec![setup],
            volumes: vec![ctx.config_volume("cookie", &[(COOKIE_KEY, "erlang-cookie")])],
            config_items: vec![
                (CONFIG_KEY, CONFIG_KEY),
                (PLUGINS_KEY, PLUGINS_KEY),
                (DEFINITIONS_KEY, DEFINITIONS_KEY),
            ],
            user: USER,
            // Time to close connections and hand queue leadership over.
            grace_seconds: 120,
        },
        &config,
    );
    let ui = ctx.plan.ui.then(|| UiChildren {
        deployment: None,
        service: ctx.ui_service(ctx.selector(), "management", MANAGEMENT_PORT),
    });
    BrokerChildren {
        headless: ctx.headless_service(&ports(ctx)),
        client: ctx.client_service(&[("amqp", AMQP_PORT), ("prometheus", PROMETHEUS_PORT)]),
        config,
        statefulset,
        ui,
    }
}

fn ports(ctx: &Ctx) -> Vec<(&'static str, i32)> {
    let mut ports = vec![("amqp", AMQP_PORT), ("prometheus", PROMETHEUS_PORT)];
    if ctx.plan.ui {
        ports.push(("management", MANAGEMENT_PORT));
    }
    ports.extend([("epmd", EPMD_PORT), ("dist", DIST_PORT)]);
    ports
}

/// Installs the cookie with the mode Erlang insists on (owner-only), and on a blank clustered replica other
/// than the first waits for the first to answer, so the cluster forms around one seed instead of racing
/// into several.
fn setup_script(ctx: &Ctx) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "cookie={DATA_DIR}/.erlang.cookie");
    s.push_str("rm -f \"$cookie\"\n");
    let _ = writeln!(s, "cp {COOKIE_DIR}/erlang-cookie \"$cookie\"");
    s.push_str("chmod 400 \"$cookie\"\n");
    if ctx.clustered() {
        let _ = writeln!(
            s,
            "if [ ! -d {DATA_DIR}/mnesia ] && [ \"${{HOSTNAME##*-}}\" != 0 ]; then"
        );
        let _ = writeln!(s, "  seed={}", shell_quote(&node_name(ctx, 0)));
        s.push_str("  i=0\n");
        s.push_str(
            "  until rabbitmq-diagnostics -q -l -t 5 -n \"$seed\" ping >/dev/null 2>&1; do\n",
        );
        s.push_str("    i=$((i + 1)); [ \"$i\" -ge 60 ] && break; sleep 5\n");
        s.push_str("  done\nfi\n");
    }
    s
}

/// `rabbitmq.conf`.
pub fn render_config(ctx: &Ctx) -> String {
    let o = &ctx.v.owner;
    let mut c = String::new();
    let _ = writeln!(
        c,
        "# Rendered by edgewire-operator for EventBroker {}/{}; edits are overwritten.",
        o.namespace, o.name
    );
    let _ = writeln!(c, "listeners.tcp.default = {AMQP_PORT}");
    c.push_str("loopback_users = none\n");
    let _ = writeln!(c, "load_definitions = {CONFIG_DIR}/{DEFINITIONS_KEY}");
    let _ = writeln!(c, "prometheus.tcp.port = {PROMETHEUS_PORT}");
    if ctx.plan.ui {
        let _ = writeln!(c, "management.tcp.port = {MANAGEMENT_PORT}");
    }
    // The Erlang VM does not see the container's limit; the memory alarm is relative to this.
    let _ = writeln!(
        c,
        "total_memory_available_override_value = {}",
        ctx.memory_bytes(DEFAULTS)
    );
    c.push_str("log.console = true\nlog.console.level = info\nlog.file = false\n");
    if ctx.clustered() {
        c.push_str("cluster_formation.peer_discovery_backend = classic_config\n");
        for i in 0..ctx.replicas() {
            let _ = writeln!(
                c,
                "cluster_formation.classic_config.nodes.{} = {}",
                i + 1,
                node_name(ctx, i)
            );
        }
        c.push_str("cluster_partition_handling = pause_minority\n");
    }
    c
}

/// `enabled_plugins`: Prometheus metrics always, the management UI when asked for.
pub fn render_plugins(ui: bool) -> String {
    if ui {
        "[rabbitmq_management,rabbitmq_prometheus].\n"
    } else {
        "[rabbitmq_prometheus].\n"
    }
    .into()
}

/// `definitions.json`: the `/` vhost, and the user with full permissions on it.
pub fn render_definitions(user: Option<(&str, &str)>) -> String {
    let (users, permissions) = match user {
        Some((u, p)) => (
            serde_json::json!([{
                "name": u,
                "password_hash": password_hash(u, p),
                "hashing_algorithm": "rabbit_password_hashing_sha256",
                "tags": "administrator",
            }]),
            serde_json::json!([{"user": u, "vhost": "/", "configure": ".*", "write": ".*", "read": ".*"}]),
        ),
        None => (serde_json::json!([]), serde_json::json!([])),
    };
    let definitions = serde_json::json!({
        "users": users,
        "vhosts": [{"name": "/"}],
        "permissions": permissions,
    });
    serde_json::to_string_pretty(&definitions).expect("JSON values serialize") + "\n"
}
