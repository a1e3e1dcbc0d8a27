//! Redis: `redis.conf` (port 6379, append-only file on the PVC, ACL with the default user off and one user
//! whose password is stored as its SHA-256). No UI.

use super::BrokerChildren;
use super::common::*;
use k8s_openapi::api::core::v1::Container;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fmt::Write;

pub const REDIS_PORT: i32 = 6379;
pub const CONFIG_KEY: &str = "redis.conf";
/// Keys the probe reads (`REDISCLI_AUTH` and the user for `redis-cli`).
pub const USERNAME_KEY: &str = "username";
pub const PASSWORD_KEY: &str = "password";

const CONFIG_DIR: &str = "/etc/redis";
const DATA_DIR: &str = "/data";
/// A token has no user: it becomes the password of Redis' `default` user.
const TOKEN_USER: &str = "default";
/// `redis` in the official alpine image.
const USER: ImageUser = ImageUser {
    uid: 999,
    gid: 1000,
};
const DEFAULTS: Defaults = Defaults {
    cpu_request: "50m",
    memory_request: "64Mi",
    memory_limit: "512Mi",
};

pub fn build(ctx: &Ctx) -> BrokerChildren {
    let user = ctx.user_password(TOKEN_USER);
    let mut files = BTreeMap::from([(
        CONFIG_KEY.to_string(),
        render_config(ctx, user).into_bytes(),
    )]);
    if let Some((u, p)) = user {
        files.insert(USERNAME_KEY.into(), u.as_bytes().to_vec());
        files.insert(PASSWORD_KEY.into(), p.as_bytes().to_vec());
    }
    let config = ctx.config_secret(files);

    // An authenticated PING proves more than an open port: the ACL loaded and the user can log in.
    let (readiness, env) = if user.is_some() {
        (
            exec_probe(
                &[
                    "sh",
                    "-c",
                    "redis-cli -h 127.0.0.1 -p 6379 --user \"$REDIS_USERNAME\" ping | grep -q PONG",
                ],
                READY,
            ),
            Some(vec![
                ctx.secret_env("REDIS_USERNAME", USERNAME_KEY),
                ctx.secret_env("REDISCLI_AUTH", PASSWORD_KEY),
            ]),
        )
    } else {
        (tcp_probe("redis", READY), None)
    };
    let container = Container {
        name: "redis".into(),
        image: Some(ctx.plan.image.clone()),
        command: Some(vec![
            "redis-server".into(),
            format!("{CONFIG_DIR}/{CONFIG_KEY}"),
        ]),
        env,
        ports: Some(container_ports(&[("redis", REDIS_PORT)])),
        volume_mounts: Some(vec![
            mount(CONFIG_VOLUME, CONFIG_DIR, true),
            mount(DATA_VOLUME, DATA_DIR, false),
        ]),
        readiness_probe: Some(readiness),
        liveness_probe: Some(tcp_probe("redis", LIVE)),
        resources: Some(ctx.resources(DEFAULTS)),
        security_context: Some(container_security_context(true)),
        ..Default::default()
    };
    let statefulset = ctx.statefulset(
        Workload {
            container,
            init_containers: vec![],
            volumes: vec![],
            config_items: vec![(CONFIG_KEY, CONFIG_KEY)],
            user: USER,
            grace_seconds: 30,
        },
        &config,
    );
    BrokerChildren {
        headless: ctx.headless_service(&[("redis", REDIS_PORT)]),
        client: ctx.client_service(&[("redis", REDIS_PORT)]),
        config,
        statefulset,
        ui: None,
    }
}

/// `redis.conf`.
pub fn render_config(ctx: &Ctx, user: Option<(&str, &str)>) -> String {
    let o = &ctx.v.owner;
    let mut c = String::new();
    let _ = writeln!(
        c,
        "# Rendered by edgewire-operator for EventBroker {}/{}; edits are overwritten.",
        o.namespace, o.name
    );
    // Every interface; IPv6 only where the node has it.
    c.push_str("bind * -::*\n");
    let _ = writeln!(c, "port {REDIS_PORT}");
    // Clients authenticate through the ACL below, so protected mode (loopback only) is not needed.
    c.push_str("protected-mode no\n");
    let _ = writeln!(c, "dir {DATA_DIR}");
    c.push_str("appendonly yes\nappendfsync everysec\n");
    c.push_str("daemonize no\nlogfile \"\"\n");
    // `default` is off unless it is the user; the password is stored as its SHA-256 (`#<hex>`), so the file
    // needs no quoting and holds no plaintext.
    match user {
        Some((u, p)) => {
            if u != "default" {
                c.push_str("user default off\n");
            }
            let _ = writeln!(
                c,
                "user {u} on #{} ~* &* +@all",
                hex::encode(Sha256::digest(p.as_bytes()))
            );
        }
        None => c.push_str("user default off\n"),
    }
    c
}
