//! Redpanda: node settings as `rpk redpanda start` flags (Kafka API 9092, admin API 9644, RPC 33145, seeds
//! over the headless Service), cluster settings in `.bootstrap.yaml` (SASL on, the user a superuser, the
//! admin API behind authentication), and the SCRAM user bootstrapped through `RP_BOOTSTRAP_USER`.
//! Redpanda Console as the optional UI.

use super::common::*;
use super::kafka::{Mechanism, TOKEN_USER, replication, requested_mechanism};
use super::{BrokerChildren, UiChildren};
use k8s_openapi::api::core::v1::{Container, Secret};
use std::collections::BTreeMap;
use std::fmt::Write;

pub const KAFKA_PORT: i32 = 9092;
pub const ADMIN_PORT: i32 = 9644;
pub const RPC_PORT: i32 = 33145;
pub const BOOTSTRAP_KEY: &str = ".bootstrap.yaml";
/// `user:password:MECHANISM` for `RP_BOOTSTRAP_USER`.
pub const BOOTSTRAP_USER_KEY: &str = "bootstrap-user";
pub const USERNAME_KEY: &str = "username";
pub const PASSWORD_KEY: &str = "password";
pub const CONSOLE_IMAGE: &str = "docker.redpanda.com/redpandadata/console:v2.7.2";
pub const CONSOLE_PORT: i32 = 8080;

const DATA_DIR: &str = "/var/lib/redpanda/data";
/// `redpanda` in the official image.
const USER: ImageUser = ImageUser { uid: 101, gid: 101 };
const DEFAULTS: Defaults = Defaults {
    cpu_request: "500m",
    memory_request: "2Gi",
    memory_limit: "2Gi",
};

/// Redpanda speaks SCRAM: SHA-512 when asked for, else SHA-256 (also for a spec asking for PLAIN).
pub fn mechanism(ctx: &Ctx) -> Mechanism {
    match requested_mechanism(ctx) {
        Mechanism::ScramSha512 => Mechanism::ScramSha512,
        _ => Mechanism::ScramSha256,
    }
}

/// Seed servers: every replica's RPC address.
pub fn seeds(ctx: &Ctx) -> Vec<String> {
    (0..ctx.replicas())
        .map(|i| format!("{}:{RPC_PORT}", ctx.pod_host(i)))
        .collect()
}

pub fn build(ctx: &Ctx) -> BrokerChildren {
    let mechanism = mechanism(ctx);
    let user = ctx.user_password(TOKEN_USER);
    let mut files = BTreeMap::from([(
        BOOTSTRAP_KEY.to_string(),
        render_bootstrap(ctx, user.map(|(u, _)| u)).into_bytes(),
    )]);
    if let Some((u, p)) = user {
        files.insert(
            BOOTSTRAP_USER_KEY.into(),
            format!("{u}:{p}:{}", mechanism.as_kafka()).into_bytes(),
        );
        if ctx.plan.ui {
            files.insert(USERNAME_KEY.into(), u.as_bytes().to_vec());
            files.insert(PASSWORD_KEY.into(), p.as_bytes().to_vec());
        }
    }
    let config = ctx.config_secret(files);

    let mut vars = vec![pod_name_env()];
    if user.is_some() {
        vars.push(ctx.secret_env("RP_BOOTSTRAP_USER", BOOTSTRAP_USER_KEY));
    }
    let container = Container {
        name: "redpanda".into(),
        image: Some(ctx.plan.image.clone()),
        command: Some(vec!["rpk".into()]),
        args: Some(start_args(ctx)),
        env: Some(vars),
        ports: Some(container_ports(&[
            ("kafka", KAFKA_PORT),
            ("admin", ADMIN_PORT),
            ("rpc", RPC_PORT),
        ])),
        volume_mounts: Some(vec![
            // One file: rpk writes redpanda.yaml next to it.
            mount_file(
                CONFIG_VOLUME,
                &format!("/etc/redpanda/{BOOTSTRAP_KEY}"),
                BOOTSTRAP_KEY,
            ),
            mount(DATA_VOLUME, DATA_DIR, false),
        ]),
        startup_probe: Some(http_probe("/v1/status/ready", "admin", STARTUP)),
        readiness_probe: Some(http_probe("/v1/status/ready", "admin", READY)),
        liveness_probe: Some(tcp_probe("admin", LIVE)),
        resources: Some(ctx.resources(DEFAULTS)),
        security_context: Some(container_security_context(false)),
        ..Default::default()
    };
    let statefulset = ctx.statefulset(
        Workload {
            container,
            init_containers: vec![],
            volumes: vec![],
            config_items: vec![(BOOTSTRAP_KEY, BOOTSTRAP_KEY)],
            user: USER,
            grace_seconds: 90,
        },
        &config,
    );
    let ui = (ctx.plan.ui && user.is_some()).then(|| build_console(ctx, mechanism, &config));
    BrokerChildren {
        headless: ctx.headless_service(&[
            ("kafka", KAFKA_PORT),
            ("admin", ADMIN_PORT),
            ("rpc", RPC_PORT),
        ]),
        client: ctx.client_service(&[("kafka", KAFKA_PORT), ("admin", ADMIN_PORT)]),
        config,
        statefulset,
        ui,
    }
}

/// `rpk redpanda start` flags. Memory for Seastar is three quarters of the container's, the rest is left
/// to the process outside Seastar's allocator.
fn start_args(ctx: &Ctx) -> Vec<String> {
    let memory_mib = (ctx.memory_bytes(DEFAULTS) >> 20) * 3 / 4;
    let own = ctx.own_host_env();
    vec![
        "redpanda".into(),
        "start".into(),
        "--smp=1".into(),
        format!("--memory={memory_mib}M"),
        "--reserve-memory=0M".into(),
        "--overprovisioned".into(),
        "--default-log-level=info".into(),
        format!("--kafka-addr=internal://0.0.0.0:{KAFKA_PORT}"),
        format!("--advertise-kafka-addr=internal://{own}:{KAFKA_PORT}"),
        format!("--rpc-addr=0.0.0.0:{RPC_PORT}"),
        format!("--advertise-rpc-addr={own}:{RPC_PORT}"),
        format!("--seeds={}", seeds(ctx).join(",")),
        // Every replica lists the same seeds; the cluster forms once they see each other.
        "--set=redpanda.empty_seed_starts_cluster=false".into(),
    ]
}

/// `.bootstrap.yaml`: cluster properties applied when the cluster first forms.
pub fn render_bootstrap(ctx: &Ctx, user: Option<&str>) -> String {
    let o = &ctx.v.owner;
    let (factor, _) = replication(ctx.replicas());
    let mut c = String::new();
    let _ = writeln!(
        c,
        "# Rendered by edgewire-operator for EventBroker {}/{}; applied when the cluster forms.",
        o.namespace, o.name
    );
    c.push_str("enable_sasl: true\n");
    c.push_str("admin_api_require_auth: true\n");
    match user {
        Some(u) => {
            let _ = writeln!(c, "superusers:\n  - {}", json_quote(u));
        }
        None => c.push_str("superusers: []\n"),
    }
    c.push_str("auto_create_topics_enabled: true\n");
    let _ = writeln!(c, "default_topic_replications: {factor}");
    c
}

fn build_console(ctx: &Ctx, mechanism: Mechanism, config: &Secret) -> UiChildren {
    let container = Container {
        name: "console".into(),
        image: Some(CONSOLE_IMAGE.into()),
        env: Some(vec![
            env(
                "KAFKA_BROKERS",
                format!("{}:{KAFKA_PORT}", ctx.client_host()),
            ),
            env("KAFKA_SASL_ENABLED", "true"),
            env("KAFKA_SASL_MECHANISM", mechanism.as_kafka()),
            ctx.secret_env("KAFKA_SASL_USERNAME", USERNAME_KEY),
            ctx.secret_env("KAFKA_SASL_PASSWORD", PASSWORD_KEY),
            env("REDPANDA_ADMINAPI_ENABLED", "true"),
            env(
                "REDPANDA_ADMINAPI_URLS",
                format!("http://{}:{ADMIN_PORT}", ctx.client_host()),
            ),
            ctx.secret_env("REDPANDA_ADMINAPI_USERNAME", USERNAME_KEY),
            ctx.secret_env("REDPANDA_ADMINAPI_PASSWORD", PASSWORD_KEY),
            env("SERVER_LISTENPORT", CONSOLE_PORT.to_string()),
        ]),
        ports: Some(container_ports(&[("http", CONSOLE_PORT)])),
        readiness_probe: Some(tcp_probe("http", READY)),
        liveness_probe: Some(tcp_probe("http", LIVE)),
        resources: Some(
            Defaults {
                cpu_request: "50m",
                memory_request: "128Mi",
                memory_limit: "512Mi",
            }
            .requirements(),
        ),
        security_context: Some(container_security_context(false)),
        ..Default::default()
    };
    UiChildren {
        deployment: Some(ctx.ui_deployment(
            container,
            vec![],
            ImageUser { uid: 99, gid: 99 },
            config,
        )),
        service: ctx.ui_service(ctx.ui_selector(), "http", CONSOLE_PORT),
    }
}
