//! Eclipse Mosquitto: `mosquitto.conf` (listener 1883, no anonymous access, persistence on the PVC), a
//! password file in Mosquitto's own PBKDF2-SHA512 format and an ACL file. No UI.

use super::BrokerChildren;
use super::common::*;
use crate::mosquitto::{
    self as conf, ACL_KEY, CONFIG_DIR, CONFIG_KEY, DATA_DIR, MQTT_PORT, PASSWD_KEY, password_line,
};
use edgewire_api::LogLevel;
use k8s_openapi::api::core::v1::Container;
use std::collections::BTreeMap;

/// User of a token when one is given to Mosquitto (it has no token mode).
const TOKEN_USER: &str = "default";
const USER: ImageUser = ImageUser {
    uid: conf::UID,
    gid: conf::UID,
};
const DEFAULTS: Defaults = Defaults {
    cpu_request: "25m",
    memory_request: "32Mi",
    memory_limit: "256Mi",
};

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

/// `mosquitto.conf`: the one plain listener, notices and above logged.
pub fn render_config(ctx: &Ctx) -> String {
    conf::render(&conf::Conf {
        kind: "EventBroker",
        owner: &ctx.v.owner,
        leading_listener: Some(MQTT_PORT),
        sys_interval: None,
        log_level: LogLevel::Notice,
    })
}

/// The password file: the one user, or empty (nobody may connect) when the plan has no password.
pub fn render_passwd(user: Option<(&str, &str)>) -> String {
    match user {
        Some((u, p)) => format!("{}\n", password_line(u, p)),
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
