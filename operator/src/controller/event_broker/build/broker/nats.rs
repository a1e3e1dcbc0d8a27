//! NATS with JetStream: `nats.conf` (client 4222, monitoring 8222, cluster 6222 with routes to every replica
//! when clustered, authorization from the plan), and NUI as the optional UI.

use super::super::super::validate::BrokerAuth;
use super::common::*;
use super::{BrokerChildren, UiChildren};
use crate::secret::ExposeSecret;
use k8s_openapi::api::core::v1::{Container, ExecAction, Lifecycle, LifecycleHandler};
use std::collections::BTreeMap;
use std::fmt::Write;

pub const CLIENT_PORT: i32 = 4222;
pub const CLUSTER_PORT: i32 = 6222;
pub const MONITOR_PORT: i32 = 8222;
/// Key of `nats.conf` in the config Secret.
pub const CONFIG_KEY: &str = "nats.conf";
/// Key of the NUI connection context in the config Secret.
pub const NUI_CONTEXT_KEY: &str = "nui-context.json";
/// NUI, the NATS web UI.
pub const NUI_IMAGE: &str = "ghcr.io/nats-nui/nui:0.5";
pub const NUI_PORT: i32 = 31311;

const CONFIG_DIR: &str = "/etc/nats-config";
const DATA_DIR: &str = "/data";
const PID_DIR: &str = "/var/run/nats";
const HEALTH: &str = "/healthz?js-enabled-only=true";
// The nats image runs as root unless told otherwise; nats-server needs no particular user.
const USER: ImageUser = ImageUser {
    uid: 1000,
    gid: 1000,
};
const DEFAULTS: Defaults = Defaults {
    cpu_request: "100m",
    memory_request: "256Mi",
    memory_limit: "1Gi",
};

pub fn build(ctx: &Ctx) -> BrokerChildren {
    let mut files = BTreeMap::from([(CONFIG_KEY.to_string(), render_config(ctx).into_bytes())]);
    if ctx.plan.ui {
        files.insert(NUI_CONTEXT_KEY.into(), nui_context(ctx).into_bytes());
    }
    let config = ctx.config_secret(files);

    let mut vars = vec![pod_name_env()];
    // The Go runtime does not see the cgroup limit; stay below it instead of being OOM-killed.
    vars.push(env(
        "GOMEMLIMIT",
        (ctx.memory_bytes(DEFAULTS) / 10 * 9).to_string(),
    ));
    let container = Container {
        name: "nats".into(),
        image: Some(ctx.plan.image.clone()),
        command: Some(vec!["nats-server".into()]),
        args: Some(vec![
            "--config".into(),
            format!("{CONFIG_DIR}/{CONFIG_KEY}"),
        ]),
        env: Some(vars),
        ports: Some(container_ports(&ports(ctx))),
        volume_mounts: Some(vec![
            mount(CONFIG_VOLUME, CONFIG_DIR, true),
            mount(DATA_VOLUME, DATA_DIR, false),
            mount("pid", PID_DIR, false),
        ]),
        startup_probe: Some(http_probe(HEALTH, "monitor", STARTUP)),
        readiness_probe: Some(http_probe(HEALTH, "monitor", READY)),
        liveness_probe: Some(http_probe(HEALTH, "monitor", LIVE)),
        // Lame-duck mode: clients are told to move to another server before this one stops.
        lifecycle: Some(Lifecycle {
            pre_stop: Some(LifecycleHandler {
                exec: Some(ExecAction {
                    command: Some(vec![
                        "nats-server".into(),
                        "--signal".into(),
                        format!("ldm={PID_DIR}/nats.pid"),
                    ]),
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        resources: Some(ctx.resources(DEFAULTS)),
        security_context: Some(container_security_context(true)),
        ..Default::default()
    };
    let statefulset = ctx.statefulset(
        Workload {
            container,
            init_containers: vec![],
            volumes: vec![empty_dir("pid")],
            config_items: vec![(CONFIG_KEY, CONFIG_KEY)],
            user: USER,
            // Lame-duck duration (30 s) plus a margin for JetStream to flush.
            grace_seconds: 60,
        },
        &config,
    );
    let ui = ctx.plan.ui.then(|| build_ui(ctx, &config));
    BrokerChildren {
        headless: ctx.headless_service(&ports(ctx)),
        client: ctx.client_service(&[("client", CLIENT_PORT), ("monitor", MONITOR_PORT)]),
        config,
        statefulset,
        ui,
    }
}

fn ports(ctx: &Ctx) -> Vec<(&'static str, i32)> {
    let mut ports = vec![("client", CLIENT_PORT), ("monitor", MONITOR_PORT)];
    if ctx.clustered() {
        ports.push(("cluster", CLUSTER_PORT));
    }
    ports
}

/// Cluster route URLs, one per replica, through the headless Service.
pub fn routes(ctx: &Ctx) -> Vec<String> {
    (0..ctx.replicas())
        .map(|i| format!("nats://{}:{CLUSTER_PORT}", ctx.pod_host(i)))
        .collect()
}

/// `nats.conf`.
pub fn render_config(ctx: &Ctx) -> String {
    let mut c = String::new();
    let o = &ctx.v.owner;
    let _ = writeln!(
        c,
        "# Rendered by edgewire-operator for EventBroker {}/{}; edits are overwritten.",
        o.namespace, o.name
    );
    // Unquoted `$POD_NAME` is a variable nats-server resolves from the environment: each replica gets its own
    // name, which JetStream clustering requires.
    c.push_str("server_name: $POD_NAME\n");
    let _ = writeln!(c, "port: {CLIENT_PORT}");
    let _ = writeln!(c, "http_port: {MONITOR_PORT}");
    let _ = writeln!(
        c,
        "pid_file: {}",
        nats_quote(&format!("{PID_DIR}/nats.pid"))
    );
    c.push_str("lame_duck_duration: \"30s\"\nlame_duck_grace_period: \"10s\"\n");
    c.push_str("\njetstream {\n");
    let _ = writeln!(
        c,
        "  store_dir: {}",
        nats_quote(&format!("{DATA_DIR}/jetstream"))
    );
    c.push_str("}\n");
    c.push('\n');
    c.push_str(&render_authorization(&ctx.plan.auth));
    if ctx.clustered() {
        c.push_str("\ncluster {\n");
        let _ = writeln!(c, "  name: {}", nats_quote(&ctx.name));
        let _ = writeln!(c, "  port: {CLUSTER_PORT}");
        // Peers may start in any order (Parallel pod management): keep retrying routes.
        c.push_str("  connect_retries: 120\n");
        c.push_str("  routes: [\n");
        for route in routes(ctx) {
            let _ = writeln!(c, "    {}", nats_quote(&route));
        }
        c.push_str("  ]\n}\n");
    }
    c
}

fn render_authorization(auth: &BrokerAuth) -> String {
    match auth {
        BrokerAuth::Token(token) => format!(
            "authorization {{\n  token: {}\n}}\n",
            nats_quote(token.expose_secret())
        ),
        BrokerAuth::UserPassword { username, password } => format!(
            "authorization {{\n  users: [\n    {{user: {}, password: {}}}\n  ]\n}}\n",
            nats_quote(username),
            nats_quote(password.expose_secret())
        ),
        BrokerAuth::Nkey { public_key } => {
            format!(
                "authorization {{\n  users: [\n    {{nkey: {}}}\n  ]\n}}\n",
                nats_quote(public_key)
            )
        }
    }
}

/// A double-quoted nats.conf string: `\` and `"` escaped, control characters as `\xHH`. Inside quotes
/// `$` is literal (only unquoted `$name` is a variable).
pub fn nats_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for ch in s.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                let _ = write!(out, "\\x{:02X}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A `nats` CLI context for NUI, pointing at the client Service with the broker's credentials.
fn nui_context(ctx: &Ctx) -> String {
    let mut context = serde_json::Map::new();
    context.insert(
        "description".into(),
        format!(
            "Edgewire EventBroker {}/{}",
            ctx.namespace, ctx.v.owner.name
        )
        .into(),
    );
    context.insert(
        "url".into(),
        format!("nats://{}:{CLIENT_PORT}", ctx.client_host()).into(),
    );
    match &ctx.plan.auth {
        BrokerAuth::Token(t) => {
            context.insert("token".into(), t.expose_secret().into());
        }
        BrokerAuth::UserPassword { username, password } => {
            context.insert("user".into(), username.as_str().into());
            context.insert("password".into(), password.expose_secret().into());
        }
        // The seed is the user's, not ours: NUI asks for it when connecting.
        BrokerAuth::Nkey { .. } => {}
    }
    serde_json::to_string_pretty(&serde_json::Value::Object(context))
        .expect("a JSON map serializes")
}

fn build_ui(ctx: &Ctx, config: &k8s_openapi::api::core::v1::Secret) -> UiChildren {
    let context_file = format!("{}.json", ctx.v.owner.name);
    let container = Container {
        name: "nui".into(),
        image: Some(NUI_IMAGE.into()),
        // The binary directly: the image's entrypoint chowns /db and switches users, which a non-root pod
        // cannot do.
        command: Some(vec!["/cmd/nui-web".into()]),
        args: Some(vec![
            "--db-path=/db".into(),
            "--nats-cli-contexts=/nats-cli-contexts".into(),
        ]),
        ports: Some(container_ports(&[("http", NUI_PORT)])),
        volume_mounts: Some(vec![
            mount("db", "/db", false),
            mount("contexts", "/nats-cli-contexts", true),
        ]),
        readiness_probe: Some(http_probe("/", "http", READY)),
        liveness_probe: Some(http_probe("/", "http", LIVE)),
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
    let volumes = vec![
        empty_dir("db"),
        ctx.config_volume("contexts", &[(NUI_CONTEXT_KEY, context_file.as_str())]),
    ];
    UiChildren {
        deployment: Some(ctx.ui_deployment(
            container,
            volumes,
            ImageUser {
                uid: 1001,
                gid: 1001,
            },
            config,
        )),
        service: ctx.ui_service(ctx.ui_selector(), "http", NUI_PORT),
    }
}
