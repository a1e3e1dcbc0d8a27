//! Apache Kafka in KRaft mode (combined broker + controller): `server.properties` with SASL on both
//! listeners, `node.id` and the advertised listener appended at start from the pod's ordinal, storage
//! formatted once with a cluster id derived from the owner's uid (and the SCRAM user, when SCRAM is asked
//! for). Kafka UI as the optional UI. The SASL helpers here serve Redpanda too.

use super::common::*;
use super::{BrokerChildren, UiChildren};
use base64::Engine;
use edgewire_api::SaslMechanism;
use k8s_openapi::api::core::v1::{Container, Secret};
use sha2::{Sha256, Sha512};
use std::collections::BTreeMap;
use std::fmt::Write;

pub const CLIENT_PORT: i32 = 9092;
pub const CONTROLLER_PORT: i32 = 9093;
pub const CONFIG_KEY: &str = "server.properties";
/// `--add-scram` argument of `kafka-storage format` (salted, no plaintext).
pub const SCRAM_KEY: &str = "scram-credential";
/// `sasl.jaas.config` for clients (the UI).
pub const CLIENT_JAAS_KEY: &str = "client.jaas";
pub const USERNAME_KEY: &str = "username";
pub const PASSWORD_KEY: &str = "password";
pub const KAFKA_UI_IMAGE: &str = "provectuslabs/kafka-ui:v0.7.2";
pub const UI_PORT: i32 = 8080;
/// SCRAM iterations (Kafka's minimum, and its default).
pub const SCRAM_ITERATIONS: u32 = 4096;

const CONFIG_DIR: &str = "/etc/kafka-edgewire";
const RUN_DIR: &str = "/var/run/kafka";
const DATA_MOUNT: &str = "/var/lib/kafka";
/// A subdirectory: Kafka would take a volume's `lost+found` for a partition.
const LOG_DIR: &str = "/var/lib/kafka/data";
/// A token becomes the password of this user.
pub(super) const TOKEN_USER: &str = "edgewire";
/// `appuser` in the apache/kafka image.
const USER: ImageUser = ImageUser {
    uid: 1000,
    gid: 1000,
};
const DEFAULTS: Defaults = Defaults {
    cpu_request: "250m",
    memory_request: "1Gi",
    memory_limit: "2Gi",
};

/// The SASL mechanism clients use, as Kafka spells it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mechanism {
    Plain,
    ScramSha256,
    ScramSha512,
}

impl Mechanism {
    pub fn as_kafka(self) -> &'static str {
        match self {
            Mechanism::Plain => "PLAIN",
            Mechanism::ScramSha256 => "SCRAM-SHA-256",
            Mechanism::ScramSha512 => "SCRAM-SHA-512",
        }
    }

    fn login_module(self) -> &'static str {
        match self {
            Mechanism::Plain => "org.apache.kafka.common.security.plain.PlainLoginModule",
            _ => "org.apache.kafka.common.security.scram.ScramLoginModule",
        }
    }
}

/// What `spec.kafka.sasl.mechanism` asks for (PLAIN when absent).
pub fn requested_mechanism(ctx: &Ctx) -> Mechanism {
    match ctx
        .v
        .spec
        .kafka
        .as_ref()
        .and_then(|k| k.sasl.as_ref())
        .map(|s| s.mechanism)
    {
        Some(SaslMechanism::ScramSha256) => Mechanism::ScramSha256,
        Some(SaslMechanism::ScramSha512) => Mechanism::ScramSha512,
        Some(SaslMechanism::Plain) | None => Mechanism::Plain,
    }
}

/// A JAAS option value: double-quoted, `\` and `"` escaped.
pub fn jaas_quote(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// A client `sasl.jaas.config` value.
pub fn client_jaas(mechanism: Mechanism, user: &str, password: &str) -> String {
    format!(
        "{} required username={} password={};",
        mechanism.login_module(),
        jaas_quote(user),
        jaas_quote(password)
    )
}

/// A value in a Java `.properties` file (read as ISO-8859-1): backslashes, control characters, a leading
/// space and everything outside printable ASCII escaped.
pub fn properties_value(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for (i, ch) in s.chars().enumerate() {
        match ch {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\x0c' => out.push_str("\\f"),
            ' ' if i == 0 => out.push_str("\\ "),
            c if (' '..='~').contains(&c) => out.push(c),
            c => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    let _ = write!(out, "\\u{unit:04X}");
                }
            }
        }
    }
    out
}

/// SCRAM `SaltedPassword` = Hi(password, salt, i) (RFC 5802), with the salt derived from user and password
/// so the rendered Secret is stable. Returns `(salt, salted_password)`.
pub fn scram_salted_password(
    mechanism: Mechanism,
    user: &str,
    password: &str,
) -> (Vec<u8>, Vec<u8>) {
    let derived = derive(
        "edgewire/kafka-scram-salt\0",
        &[
            mechanism.as_kafka().as_bytes(),
            user.as_bytes(),
            password.as_bytes(),
        ],
    );
    let salt = derived[..16].to_vec();
    let salted = match mechanism {
        Mechanism::ScramSha512 => {
            let mut out = [0u8; 64];
            pbkdf2::pbkdf2_hmac::<Sha512>(password.as_bytes(), &salt, SCRAM_ITERATIONS, &mut out);
            out.to_vec()
        }
        _ => {
            let mut out = [0u8; 32];
            pbkdf2::pbkdf2_hmac::<Sha256>(password.as_bytes(), &salt, SCRAM_ITERATIONS, &mut out);
            out.to_vec()
        }
    };
    (salt, salted)
}

/// The `--add-scram` argument: the salted form, because `kafka-storage` splits a plaintext password on
/// commas and drops its quotes.
pub fn scram_credential(mechanism: Mechanism, user: &str, password: &str) -> String {
    let (salt, salted) = scram_salted_password(mechanism, user, password);
    format!(
        "{}=[name={user},iterations={SCRAM_ITERATIONS},salt=\"{}\",saltedpassword=\"{}\"]",
        mechanism.as_kafka(),
        b64(&salt),
        b64(&salted)
    )
}

/// The cluster id every replica formats its storage with: 16 bytes from the owner's uid, in Kafka's
/// URL-safe base64 form, so it is the same on every replica and every reconcile.
pub fn cluster_id(ctx: &Ctx) -> String {
    cluster_id_for_uid(&ctx.v.owner.owner_ref.uid)
}

/// The cluster id of the owner with `uid`.
pub fn cluster_id_for_uid(uid: &str) -> String {
    let derived = derive("edgewire/kafka-cluster-id\0", &[uid.as_bytes()]);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&derived[..16])
}

/// Replication settings: `(replication factor, min in-sync replicas)`.
pub fn replication(replicas: i32) -> (i32, i32) {
    let factor = replicas.clamp(1, 3);
    (factor, if factor >= 3 { 2 } else { 1 })
}

pub fn build(ctx: &Ctx) -> BrokerChildren {
    let mechanism = requested_mechanism(ctx);
    let user = ctx.user_password(TOKEN_USER);
    let mut files = BTreeMap::from([(
        CONFIG_KEY.to_string(),
        render_config(ctx, mechanism, user).into_bytes(),
    )]);
    if let (Some((u, p)), true) = (user, mechanism != Mechanism::Plain) {
        files.insert(
            SCRAM_KEY.into(),
            scram_credential(mechanism, u, p).into_bytes(),
        );
    }
    if let (Some((u, p)), true) = (user, ctx.plan.ui) {
        files.insert(
            CLIENT_JAAS_KEY.into(),
            client_jaas(mechanism, u, p).into_bytes(),
        );
        files.insert(USERNAME_KEY.into(), u.as_bytes().to_vec());
        files.insert(PASSWORD_KEY.into(), p.as_bytes().to_vec());
    }
    let config = ctx.config_secret(files);

    let heap_mib = (ctx.memory_bytes(DEFAULTS) >> 20) / 2;
    let container = Container {
        name: "kafka".into(),
        image: Some(ctx.plan.image.clone()),
        command: Some(vec![
            "sh".into(),
            "-ec".into(),
            start_script(ctx, mechanism, user.is_some()),
        ]),
        env: Some(vec![env(
            "KAFKA_HEAP_OPTS",
            format!("-Xmx{heap_mib}m -Xms{heap_mib}m"),
        )]),
        ports: Some(container_ports(&[
            ("client", CLIENT_PORT),
            ("controller", CONTROLLER_PORT),
        ])),
        volume_mounts: Some(vec![
            mount(CONFIG_VOLUME, CONFIG_DIR, true),
            mount(DATA_VOLUME, DATA_MOUNT, false),
            mount("run", RUN_DIR, false),
        ]),
        startup_probe: Some(tcp_probe("client", STARTUP)),
        readiness_probe: Some(tcp_probe("client", READY)),
        liveness_probe: Some(tcp_probe("client", LIVE)),
        resources: Some(ctx.resources(DEFAULTS)),
        security_context: Some(container_security_context(false)),
        ..Default::default()
    };
    let mut config_items = vec![(CONFIG_KEY, CONFIG_KEY)];
    if config
        .data
        .as_ref()
        .is_some_and(|d| d.contains_key(SCRAM_KEY))
    {
        config_items.push((SCRAM_KEY, SCRAM_KEY));
    }
    let statefulset = ctx.statefulset(
        Workload {
            container,
            init_containers: vec![],
            volumes: vec![empty_dir("run")],
            config_items,
            user: USER,
            // Controlled shutdown moves partition leadership away first.
            grace_seconds: 120,
        },
        &config,
    );
    let ui = (ctx.plan.ui && user.is_some()).then(|| build_ui(ctx, mechanism, &config));
    BrokerChildren {
        headless: ctx.headless_service(&[("client", CLIENT_PORT), ("controller", CONTROLLER_PORT)]),
        client: ctx.client_service(&[("client", CLIENT_PORT)]),
        config,
        statefulset,
        ui,
    }
}

/// Copies the config, appends what differs per pod, formats the storage once, and starts Kafka.
fn start_script(ctx: &Ctx, mechanism: Mechanism, has_user: bool) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "conf={RUN_DIR}/server.properties");
    let _ = writeln!(s, "cp {CONFIG_DIR}/{CONFIG_KEY} \"$conf\"");
    // The StatefulSet's pod name ends in the ordinal: it is the node id, matching controller.quorum.voters.
    s.push_str("echo \"node.id=${HOSTNAME##*-}\" >> \"$conf\"\n");
    let _ = writeln!(
        s,
        "echo \"advertised.listeners=CLIENT://${{HOSTNAME}}.{}.{}.svc:{CLIENT_PORT}\" >> \"$conf\"",
        ctx.headless, ctx.namespace
    );
    let _ = write!(
        s,
        "/opt/kafka/bin/kafka-storage.sh format --ignore-formatted --cluster-id {} --config \"$conf\"",
        shell_quote(&cluster_id(ctx))
    );
    if mechanism != Mechanism::Plain && has_user {
        // SCRAM users live in the metadata log: KRaft can only bootstrap them when formatting.
        let _ = write!(s, " --add-scram \"$(cat {CONFIG_DIR}/{SCRAM_KEY})\"");
    }
    s.push('\n');
    s.push_str("exec /opt/kafka/bin/kafka-server-start.sh \"$conf\"\n");
    s
}

/// `server.properties` without `node.id` and `advertised.listeners` (appended per pod at start).
pub fn render_config(ctx: &Ctx, mechanism: Mechanism, user: Option<(&str, &str)>) -> String {
    let o = &ctx.v.owner;
    let (factor, min_isr) = replication(ctx.replicas());
    let voters: Vec<String> = (0..ctx.replicas())
        .map(|i| format!("{i}@{}:{CONTROLLER_PORT}", ctx.pod_host(i)))
        .collect();
    let mut c = String::new();
    let _ = writeln!(
        c,
        "# Rendered by edgewire-operator for EventBroker {}/{}; edits are overwritten.",
        o.namespace, o.name
    );
    c.push_str(
        "# node.id and advertised.listeners are appended by the start command of each pod.\n",
    );
    c.push_str("process.roles=broker,controller\n");
    let _ = writeln!(c, "controller.quorum.voters={}", voters.join(","));
    let _ = writeln!(
        c,
        "listeners=CLIENT://:{CLIENT_PORT},CONTROLLER://:{CONTROLLER_PORT}"
    );
    c.push_str("listener.security.protocol.map=CLIENT:SASL_PLAINTEXT,CONTROLLER:SASL_PLAINTEXT\n");
    c.push_str("inter.broker.listener.name=CLIENT\n");
    c.push_str("controller.listener.names=CONTROLLER\n");
    let _ = writeln!(c, "sasl.enabled.mechanisms={}", mechanism.as_kafka());
    let _ = writeln!(
        c,
        "sasl.mechanism.inter.broker.protocol={}",
        mechanism.as_kafka()
    );
    // SCRAM credentials live in the metadata log the controllers serve, so controllers authenticate with PLAIN.
    c.push_str("sasl.mechanism.controller.protocol=PLAIN\n");
    c.push_str("listener.name.controller.sasl.enabled.mechanisms=PLAIN\n");
    let (u, p) = user.unwrap_or((TOKEN_USER, ""));
    // PLAIN server side: `user_<name>` lists who may log in; none without credentials.
    let plain_users = match user {
        Some((u, p)) => format!(" user_{u}={}", jaas_quote(p)),
        None => String::new(),
    };
    let plain_jaas = format!(
        "{} required username={} password={}{plain_users};",
        Mechanism::Plain.login_module(),
        jaas_quote(u),
        jaas_quote(p)
    );
    let _ = writeln!(
        c,
        "listener.name.controller.plain.sasl.jaas.config={}",
        properties_value(&plain_jaas)
    );
    match mechanism {
        Mechanism::Plain => {
            let _ = writeln!(
                c,
                "listener.name.client.plain.sasl.jaas.config={}",
                properties_value(&plain_jaas)
            );
        }
        m => {
            let _ = writeln!(
                c,
                "listener.name.client.{}.sasl.jaas.config={}",
                m.as_kafka().to_ascii_lowercase(),
                properties_value(&client_jaas(m, u, p))
            );
        }
    }
    let _ = writeln!(c, "log.dirs={LOG_DIR}");
    c.push_str("num.partitions=1\n");
    let _ = writeln!(c, "default.replication.factor={factor}");
    let _ = writeln!(c, "min.insync.replicas={min_isr}");
    let _ = writeln!(c, "offsets.topic.replication.factor={factor}");
    let _ = writeln!(c, "transaction.state.log.replication.factor={factor}");
    let _ = writeln!(c, "transaction.state.log.min.isr={min_isr}");
    c.push_str("auto.create.topics.enable=true\n");
    c.push_str("group.initial.rebalance.delay.ms=0\n");
    c
}

fn build_ui(ctx: &Ctx, mechanism: Mechanism, config: &Secret) -> UiChildren {
    let container = Container {
        name: "kafka-ui".into(),
        image: Some(KAFKA_UI_IMAGE.into()),
        env: Some(vec![
            env("KAFKA_CLUSTERS_0_NAME", ctx.v.owner.name.clone()),
            env(
                "KAFKA_CLUSTERS_0_BOOTSTRAPSERVERS",
                format!("{}:{CLIENT_PORT}", ctx.client_host()),
            ),
            env(
                "KAFKA_CLUSTERS_0_PROPERTIES_SECURITY_PROTOCOL",
                "SASL_PLAINTEXT",
            ),
            env(
                "KAFKA_CLUSTERS_0_PROPERTIES_SASL_MECHANISM",
                mechanism.as_kafka(),
            ),
            ctx.secret_env(
                "KAFKA_CLUSTERS_0_PROPERTIES_SASL_JAAS_CONFIG",
                CLIENT_JAAS_KEY,
            ),
            // The UI can do anything the broker user can: it asks for the same credentials.
            env("AUTH_TYPE", "LOGIN_FORM"),
            ctx.secret_env("SPRING_SECURITY_USER_NAME", USERNAME_KEY),
            ctx.secret_env("SPRING_SECURITY_USER_PASSWORD", PASSWORD_KEY),
            env("DYNAMIC_CONFIG_ENABLED", "false"),
        ]),
        ports: Some(container_ports(&[("http", UI_PORT)])),
        readiness_probe: Some(tcp_probe("http", READY)),
        liveness_probe: Some(tcp_probe("http", LIVE)),
        resources: Some(
            Defaults {
                cpu_request: "100m",
                memory_request: "256Mi",
                memory_limit: "768Mi",
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
            ImageUser { uid: 100, gid: 101 },
            config,
        )),
        service: ctx.ui_service(ctx.ui_selector(), "http", UI_PORT),
    }
}
