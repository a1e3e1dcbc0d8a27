//! Stage 2 (pure): check what the schema cannot (or what a cluster without CEL did not), resolve every user's
//! password and topic filters, and produce a [`ValidatedMqttBroker`]; `type: iotcore` is checked in
//! [`iotcore`].

mod iotcore;

pub use iotcore::{ValidatedIotCore, validate_iotcore};

use super::names::{KIND_LABEL, MQTT_PORT, SIDECAR_USER, user_secret_name};
use super::refs::{Refs, secret_uses, tls_keys};
use crate::children::Owner;
use crate::context::Settings;
use crate::hash::credentials_hash;
use crate::reconcile::{CredentialProblem, Invalid, Missing};
use crate::secret::ExposeSecret;
use crate::secret::GeneratedCredentials;
use crate::secret::{SecretString, is_secret_name};
use edgewire_api::{BuiltinMqtt, DeletionPolicy, MqttBroker, MqttBrokerType, MqttUser};
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use std::collections::BTreeMap;

/// An MqttBroker whose spec passed validation, with every credential resolved.
#[derive(Clone, Debug)]
pub struct ValidatedMqttBroker {
    /// Who owns the children.
    pub owner: Owner,
    /// The builtin broker's settings (defaults filled in).
    pub builtin: BuiltinMqtt,
    pub deletion_policy: DeletionPolicy,
    /// What workers connect to (`spec.endpoint`, else the Service).
    pub endpoint: String,
    /// Users in spec order, topic filters with `{ns}` substituted.
    pub users: Vec<ResolvedUser>,
    /// Credentials of the sidecar user (generated once into `<mqb>-sidecar`).
    pub sidecar: GeneratedCredentials,
    /// The TLS listener, when `listeners.mqtts` is set.
    pub tls: Option<ResolvedTls>,
    /// Settings from the operator's configuration.
    pub settings: Settings,
    /// Hash of every user Secret's data (referenced and generated, the sidecar's included):
    /// `status.credentialsRevision`. Not on the pod template: credentials reload in place.
    pub credentials_hash: String,
    /// Hash of what the pod reads only at start (the TLS Secret, the sidecar's environment): on the pod
    /// template, so a changed certificate or sidecar password rolls the pod.
    pub pod_secrets_hash: String,
}

/// A user with its password resolved.
#[derive(Clone, Debug)]
pub struct ResolvedUser {
    pub name: String,
    pub password: SecretString,
    /// The Secret holding the password: the referenced one, or `<mqb>-user-<name>`.
    pub secret_name: String,
    /// Whether the operator generated the password (and owns `secret_name`).
    pub generated: bool,
    /// Topic filters the user may publish to (`{ns}` substituted).
    pub publish: Vec<String>,
    /// Topic filters the user may subscribe to (`{ns}` substituted).
    pub subscribe: Vec<String>,
}

/// The TLS listener.
#[derive(Clone, Debug, PartialEq)]
pub struct ResolvedTls {
    pub port: i32,
    /// The `kubernetes.io/tls` Secret mounted at `/mosquitto/certs`.
    pub secret_name: String,
    /// Whether the Secret has `ca.crt` (rendered as `cafile`).
    pub has_ca: bool,
    pub require_client_cert: bool,
}

fn invalid(field: impl Into<String>, message: impl Into<String>) -> Invalid {
    Invalid::spec(field, message)
}

fn is_user_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// The user's publish filters as written (`{ns}` not yet substituted): the spec's, or the default.
pub fn publish_filters(u: &MqttUser) -> Vec<String> {
    u.publish
        .clone()
        .unwrap_or_else(|| vec![format!("{{ns}}/writeonly/{}/#", u.name)])
}

/// The user's subscribe filters as written: the spec's, or the default.
pub fn subscribe_filters(u: &MqttUser) -> Vec<String> {
    u.subscribe
        .clone()
        .unwrap_or_else(|| vec![format!("{{ns}}/readonly/{}/#", u.name)])
}

/// Why `filter` is not a valid MQTT topic filter (MQTT 3.1.1 §4.7), if it is not. Also refused: what
/// would break or silently change a line of Mosquitto's ACL file (control characters, surrounding
/// whitespace) and a `{placeholder}` other than `{ns}` (a typo would otherwise become a literal topic).
pub fn check_filter(filter: &str) -> Result<(), String> {
    if filter.is_empty() {
        return Err("must not be empty".into());
    }
    if filter.len() > 65535 {
        return Err("is longer than 65535 bytes".into());
    }
    if filter.chars().any(char::is_control) {
        return Err("must not contain control characters".into());
    }
    if filter.trim() != filter {
        return Err("must not start or end with whitespace".into());
    }
    let levels: Vec<&str> = filter.split('/').collect();
    for (i, level) in levels.iter().enumerate() {
        if level.contains('#') && (*level != "#" || i + 1 != levels.len()) {
            return Err("# must be the whole last level".into());
        }
        if level.contains('+') && *level != "+" {
            return Err("+ must be a whole level".into());
        }
    }
    if let Some(start) = filter.find('{')
        && let Some(len) = filter[start + 1..].find('}')
    {
        let inner = &filter[start + 1..start + 1 + len];
        if !inner.is_empty()
            && inner
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_')
        {
            return Err(format!(
                "unknown placeholder {{{inner}}}; only {{ns}} is substituted"
            ));
        }
    }
    Ok(())
}

/// The builtin settings with defaults for an absent `spec.builtin`.
pub fn builtin_of(mqb: &MqttBroker) -> BuiltinMqtt {
    mqb.spec.builtin.clone().unwrap_or_default()
}

/// `(field, port)` of every port the pod listens on, metrics included.
fn ports(b: &BuiltinMqtt) -> Vec<(&'static str, i32)> {
    let l = &b.listeners;
    let mut out = Vec::new();
    if let Some(p) = l.mqtt {
        out.push(("spec.builtin.listeners.mqtt", p));
    }
    if let Some(t) = &l.mqtts {
        out.push(("spec.builtin.listeners.mqtts.port", t.port));
    }
    if let Some(w) = &l.websockets {
        out.push(("spec.builtin.listeners.websockets.port", w.port));
    }
    out.push(("spec.builtin.metrics.port", b.metrics.port));
    out
}

fn check_topic_namespace(ns: &str) -> Result<(), Invalid> {
    if ns.is_empty()
        || !ns
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'))
    {
        return Err(invalid(
            "spec.topicNamespace",
            format!("{ns:?} must be letters, digits, _ and - (it is the first topic level)"),
        ));
    }
    Ok(())
}

/// Spec checks that need no Secret. The CRD's schema and CEL rules say some of the same; they are repeated
/// here because a cluster may not enforce them (and the message then still names the field).
pub fn check_spec(mqb: &MqttBroker) -> Result<(), Invalid> {
    let spec = &mqb.spec;
    check_topic_namespace(&spec.topic_namespace)?;
    if spec.broker_type == MqttBrokerType::Iotcore {
        return iotcore::check_iotcore(mqb);
    }
    if spec.iotcore.is_some() {
        return Err(invalid(
            "spec.iotcore",
            "is set but type is builtin; remove it",
        ));
    }
    let ns = &spec.topic_namespace;
    let b = builtin_of(mqb);
    if b.image.trim().is_empty() {
        return Err(invalid("spec.builtin.image", "must not be empty"));
    }
    let owner = mqb.name_any();
    let mut seen = BTreeMap::new();
    for (i, u) in b.users.iter().enumerate() {
        let field = format!("spec.builtin.users[{i}]");
        if !is_user_name(&u.name) {
            return Err(invalid(
                format!("{field}.name"),
                format!("{:?} must be 1 to 64 letters, digits, _ . and -", u.name),
            ));
        }
        if u.name == SIDECAR_USER {
            return Err(invalid(
                format!("{field}.name"),
                format!("{SIDECAR_USER} is reserved for the operator's metrics sidecar"),
            ));
        }
        if let Some(j) = seen.insert(u.name.clone(), i) {
            return Err(invalid(
                format!("{field}.name"),
                format!(
                    "duplicate user name {} (also spec.builtin.users[{j}])",
                    u.name
                ),
            ));
        }
        match &u.password {
            Some(p) if p.name.is_empty() || p.key.is_empty() => {
                return Err(invalid(
                    format!("{field}.password"),
                    "needs a Secret name and key",
                ));
            }
            Some(_) => {}
            None => {
                let secret = user_secret_name(&owner, &u.name);
                if !is_secret_name(&secret) {
                    return Err(invalid(
                        format!("{field}.password"),
                        format!(
                            "without a password Secret the operator generates one named {secret}, which is not a valid Secret name (lower-case letters, digits, - and .); reference a Secret or rename the user"
                        ),
                    ));
                }
            }
        }
        for (list, filters) in [
            ("publish", publish_filters(u)),
            ("subscribe", subscribe_filters(u)),
        ] {
            for (j, f) in filters.iter().enumerate() {
                let resolved = f.replace("{ns}", ns);
                check_filter(&resolved).map_err(|why| {
                    invalid(
                        format!("{field}.{list}[{j}]"),
                        format!("{f:?} is not a valid MQTT topic filter: {why}"),
                    )
                })?;
            }
        }
    }
    let l = &b.listeners;
    if l.mqtt.is_none() && l.mqtts.is_none() && l.websockets.is_none() {
        return Err(invalid(
            "spec.builtin.listeners",
            "enable at least one of mqtt, mqtts, websockets",
        ));
    }
    if let Some(t) = &l.mqtts
        && t.cert_secret_name.is_empty()
    {
        return Err(invalid(
            "spec.builtin.listeners.mqtts.certSecretName",
            "must name a kubernetes.io/tls Secret",
        ));
    }
    let mut used: Vec<(&str, i32)> = Vec::new();
    if l.mqtt.is_none() {
        // The sidecar then reaches Mosquitto on a loopback-only listener on this port.
        used.push((
            "the sidecar's loopback listener (listeners.mqtt is null)",
            MQTT_PORT,
        ));
    }
    for (field, port) in ports(&b) {
        if !(1..=65535).contains(&port) {
            return Err(invalid(field, format!("{port} is not a port (1-65535)")));
        }
        if let Some((other, _)) = used.iter().find(|(_, p)| *p == port) {
            return Err(invalid(
                field,
                format!("port {port} is also used by {other}"),
            ));
        }
        used.push((field, port));
    }
    Ok(())
}

/// Checks the spec, then that every referenced Secret and key exists, then resolves the users.
pub fn validate(
    mqb: &MqttBroker,
    refs: &Refs,
    settings: &Settings,
) -> Result<ValidatedMqttBroker, Invalid> {
    check_spec(mqb)?;
    let owner = Owner::of(mqb, KIND_LABEL).ok_or(Invalid::Metadata)?;
    let b = builtin_of(mqb);
    let uses = secret_uses(mqb);
    let mut problems = Vec::new();
    for u in &uses {
        let who = match &u.user {
            Some(user) => format!("user {user}: "),
            None => String::new(),
        };
        if !refs.secrets.contains_key(&u.name) {
            problems.push(CredentialProblem {
                user: u.user.clone(),
                missing: Missing::Secret,
                message: format!("{who}Secret {} ({}) not found", u.name, u.field),
            });
            continue;
        }
        for k in &u.keys {
            let problem = if u.user.is_some() {
                match refs.value(&u.name, k) {
                    None if refs.has_key(&u.name, k) => Some("is not UTF-8 text"),
                    None => Some("is missing"),
                    Some(v) if v.expose_secret().is_empty() => Some("is empty"),
                    Some(_) => None,
                }
            } else {
                (!refs.has_key(&u.name, k)).then_some("is missing")
            };
            if let Some(why) = problem {
                problems.push(CredentialProblem {
                    user: u.user.clone(),
                    missing: Missing::Key,
                    message: format!("{who}Secret {} key {k} {why} ({})", u.name, u.field),
                });
            }
        }
    }
    if !problems.is_empty() {
        return Err(Invalid::Credentials(problems));
    }
    let not_loaded = |what: &str| {
        Invalid::Credentials(vec![CredentialProblem {
            user: None,
            missing: Missing::Secret,
            message: format!("the credentials of {what} were not loaded"),
        }])
    };

    let ns = &mqb.spec.topic_namespace;
    let resolve = |filters: Vec<String>| -> Vec<String> {
        filters.iter().map(|f| f.replace("{ns}", ns)).collect()
    };
    let mut users = Vec::new();
    let mut hashed: Vec<Secret> = Vec::new();
    for u in &b.users {
        let (password, secret_name, generated) = match &u.password {
            Some(p) => {
                // Present and non-empty: checked above.
                let value = refs
                    .value(&p.name, &p.key)
                    .ok_or_else(|| not_loaded(&format!("user {}", u.name)))?;
                hashed.extend(refs.secrets.get(&p.name).cloned());
                (value, p.name.clone(), false)
            }
            None => {
                let g = refs
                    .generated
                    .get(&u.name)
                    .ok_or_else(|| not_loaded(&format!("user {}", u.name)))?;
                hashed.push(g.hash_input());
                (g.password.clone(), g.secret_name.clone(), true)
            }
        };
        users.push(ResolvedUser {
            name: u.name.clone(),
            password,
            secret_name,
            generated,
            publish: resolve(publish_filters(u)),
            subscribe: resolve(subscribe_filters(u)),
        });
    }
    let sidecar = refs
        .sidecar
        .clone()
        .ok_or_else(|| not_loaded("the sidecar"))?;
    hashed.push(sidecar.hash_input());

    let tls = b.listeners.mqtts.as_ref().map(|t| ResolvedTls {
        port: t.port,
        secret_name: t.cert_secret_name.clone(),
        has_ca: refs.has_key(&t.cert_secret_name, tls_keys::CA),
        require_client_cert: t.require_client_cert,
    });
    let mut pod_secrets = vec![sidecar.hash_input()];
    if let Some(t) = &tls {
        pod_secrets.extend(refs.secrets.get(&t.secret_name).cloned());
    }
    let endpoint = match mqb.spec.endpoint.as_deref().map(str::trim) {
        Some(e) if !e.is_empty() => e.to_string(),
        _ => format!("{}.{}.svc:{}", owner.name, owner.namespace, client_port(&b)),
    };
    Ok(ValidatedMqttBroker {
        owner,
        deletion_policy: mqb.spec.deletion_policy,
        endpoint,
        users,
        sidecar,
        tls,
        settings: settings.clone(),
        credentials_hash: credentials_hash(hashed.iter()),
        pod_secrets_hash: credentials_hash(pod_secrets.iter()),
        builtin: b,
    })
}

/// The port workers are pointed at by default: plain MQTT, else TLS, else WebSockets.
pub fn client_port(b: &BuiltinMqtt) -> i32 {
    let l = &b.listeners;
    l.mqtt
        .or(l.mqtts.as_ref().map(|t| t.port))
        .or(l.websockets.as_ref().map(|w| w.port))
        .unwrap_or(MQTT_PORT)
}

#[cfg(test)]
mod tests {
    use super::*;
    use edgewire_api::{SecretKeyRef, TlsListener, WebsocketsListener};

    fn field_of(mqb: &MqttBroker) -> String {
        match check_spec(mqb) {
            Err(Invalid::Spec { field, .. }) => field,
            other => panic!("expected InvalidSpec, got {other:?}"),
        }
    }

    fn users(mqb: &mut MqttBroker) -> &mut Vec<MqttUser> {
        &mut mqb.spec.builtin.as_mut().unwrap().users
    }

    #[test]
    fn filters_follow_mqtt_rules() {
        for ok in [
            "a", "a/b", "#", "a/#", "+", "+/b/+", "a//b", "/a", "$SYS/#", "a/{", "a/{x-y}",
        ] {
            assert_eq!(check_filter(ok), Ok(()), "{ok}");
        }
        for (bad, why) in [
            ("", "empty"),
            ("a/#/b", "# must be the whole last level"),
            ("a#", "# must be"),
            ("a/b#", "# must be"),
            ("a+/b", "+ must be a whole level"),
            ("a/+b", "+ must be"),
            ("a\nb", "control"),
            (" a", "whitespace"),
            ("{pool}/x", "unknown placeholder {pool}"),
        ] {
            let err = check_filter(bad).unwrap_err();
            assert!(err.contains(why), "{bad:?}: {err}");
        }
    }

    #[test]
    fn each_rule_names_its_field() {
        let mut iot = MqttBroker::test("m");
        iot.spec.broker_type = MqttBrokerType::Iotcore;
        assert_eq!(
            check_spec(&iot).unwrap_err().to_string(),
            "spec.builtin: is set but type is iotcore; remove it"
        );
        iot.spec.builtin = None;
        assert_eq!(
            check_spec(&iot).unwrap_err().to_string(),
            "spec.iotcore: type iotcore needs spec.iotcore"
        );
        iot.spec.iotcore = Some(edgewire_api::IotCoreSpec {
            region: "us-east-1".into(),
            credentials: None,
            topic_rule: Some(edgewire_api::TopicRule {
                name: "workers-to-sqs".into(),
                sqs_queue_url: "https://sqs.us-east-1.amazonaws.com/123456789012/q".into(),
                role_arn: "arn:aws:iam::123456789012:role/iot-to-sqs".into(),
            }),
            api_endpoint: None,
        });
        assert_eq!(field_of(&iot), "spec.iotcore.topicRule.name");
        iot.spec
            .iotcore
            .as_mut()
            .unwrap()
            .topic_rule
            .as_mut()
            .unwrap()
            .name = "w".into();
        assert_eq!(check_spec(&iot), Ok(()));
        iot.spec
            .iotcore
            .as_mut()
            .unwrap()
            .topic_rule
            .as_mut()
            .unwrap()
            .role_arn = "r".into();
        assert_eq!(field_of(&iot), "spec.iotcore.topicRule.roleArn");

        let dup = MqttBroker::test("m").user("a", None).user("a", Some("s"));
        assert_eq!(field_of(&dup), "spec.builtin.users[1].name");

        let mut bad = MqttBroker::test("m").user("a", None).user("b", None);
        users(&mut bad)[1].publish = Some(vec!["{ns}/ok/#".into(), "a/#/b".into()]);
        let err = check_spec(&bad).unwrap_err().to_string();
        assert!(
            err.starts_with("spec.builtin.users[1].publish[1]: \"a/#/b\""),
            "{err}"
        );

        let mut sub = MqttBroker::test("m").user("a", None);
        users(&mut sub)[0].subscribe = Some(vec![String::new()]);
        assert_eq!(field_of(&sub), "spec.builtin.users[0].subscribe[0]");

        let reserved = MqttBroker::test("m").user(SIDECAR_USER, Some("s"));
        assert_eq!(field_of(&reserved), "spec.builtin.users[0].name");

        let upper = MqttBroker::test("m").user("Pool_A", None);
        assert_eq!(field_of(&upper), "spec.builtin.users[0].password");
        let upper_with_secret = MqttBroker::test("m").user("Pool_A", Some("pool-a"));
        assert_eq!(check_spec(&upper_with_secret), Ok(()));

        let mut none = MqttBroker::test("m");
        let l = &mut none.spec.builtin.as_mut().unwrap().listeners;
        l.mqtt = None;
        assert_eq!(field_of(&none), "spec.builtin.listeners");

        let mut clash = MqttBroker::test("m");
        clash.spec.builtin.as_mut().unwrap().listeners.websockets =
            Some(WebsocketsListener { port: 1883 });
        assert_eq!(field_of(&clash), "spec.builtin.listeners.websockets.port");

        let mut metrics = MqttBroker::test("m");
        metrics.spec.builtin.as_mut().unwrap().metrics.port = 1883;
        assert_eq!(field_of(&metrics), "spec.builtin.metrics.port");

        let mut loopback = MqttBroker::test("m");
        let l = &mut loopback.spec.builtin.as_mut().unwrap().listeners;
        l.mqtt = None;
        l.mqtts = Some(TlsListener {
            port: 1883,
            cert_secret_name: "tls".into(),
            require_client_cert: false,
        });
        let err = check_spec(&loopback).unwrap_err().to_string();
        assert!(err.contains("loopback"), "{err}");
    }

    #[test]
    fn defaults_follow_the_seed_layout() {
        let mut mqb = MqttBroker::test("workers").user("pool-a", Some("pool-a-creds"));
        mqb.spec.topic_namespace = "spacelift".into();
        let mut refs = Refs::default();
        refs.secrets.insert(
            "pool-a-creds".into(),
            Secret {
                data: Some(
                    [(
                        "password".to_string(),
                        k8s_openapi::ByteString(b"pw".to_vec()),
                    )]
                    .into(),
                ),
                ..Default::default()
            },
        );
        refs.sidecar = Some(crate::controller::mqtt_broker::refs::new_generated(
            "workers-sidecar",
            SIDECAR_USER,
        ));
        let v = validate(&mqb, &refs, &Settings::default()).unwrap();
        assert_eq!(v.users[0].publish, ["spacelift/writeonly/pool-a/#"]);
        assert_eq!(v.users[0].subscribe, ["spacelift/readonly/pool-a/#"]);
        assert_eq!(v.users[0].secret_name, "pool-a-creds");
        assert_eq!(v.endpoint, "workers.factory.svc:1883");
    }

    #[test]
    fn missing_secrets_and_keys_name_the_user_and_the_secret() {
        let mut mqb = MqttBroker::test("m")
            .user("a", Some("a-creds"))
            .user("b", Some("b-creds"));
        users(&mut mqb)[1].password = Some(SecretKeyRef::new("b-creds", "pw"));
        let mut refs = Refs::default();
        refs.secrets.insert("b-creds".into(), Secret::default());
        refs.sidecar = Some(crate::controller::mqtt_broker::refs::new_generated(
            "m-sidecar",
            SIDECAR_USER,
        ));
        let err = validate(&mqb, &refs, &Settings::default()).unwrap_err();
        let Invalid::Credentials(p) = &err else {
            panic!("{err:?}")
        };
        assert_eq!(p.len(), 2);
        assert_eq!(p[0].user.as_deref(), Some("a"));
        assert_eq!(p[0].missing, Missing::Secret);
        assert_eq!(
            err.to_string(),
            "user a: Secret a-creds (spec.builtin.users[0].password) not found; \
             user b: Secret b-creds key pw is missing (spec.builtin.users[1].password)"
        );
    }

    /// Why a key is unusable, per kind of Secret: a user's password must be UTF-8 and not empty; a TLS
    /// Secret's keys only have to be there. And `spec.endpoint`, trimmed, replaces the Service address.
    #[test]
    fn unusable_keys_say_why_and_the_endpoint_override_is_trimmed() {
        let bytes = edgewire_api::testing::secret_data::<&[u8]>;
        let mut mqb = MqttBroker::test("m")
            .user("a", Some("a-creds"))
            .user("b", Some("b-creds"))
            .user("c", Some("c-creds"));
        mqb.spec.builtin.as_mut().unwrap().listeners.mqtts = Some(TlsListener {
            port: 8883,
            cert_secret_name: "tls".into(),
            require_client_cert: false,
        });
        let mut refs = Refs::default();
        refs.sidecar = Some(crate::controller::mqtt_broker::refs::new_generated(
            "m-sidecar",
            SIDECAR_USER,
        ));
        refs.secrets
            .insert("a-creds".into(), bytes(&[("password", b"\xff\xfe")]));
        refs.secrets
            .insert("b-creds".into(), bytes(&[("password", b"")]));
        refs.secrets
            .insert("c-creds".into(), bytes(&[("password", b"ok")]));
        refs.secrets
            .insert("tls".into(), bytes(&[("tls.crt", b"c")]));
        let err = validate(&mqb, &refs, &Settings::default())
            .unwrap_err()
            .to_string();
        for want in [
            "user a: Secret a-creds key password is not UTF-8 text",
            "user b: Secret b-creds key password is empty",
            "Secret tls key tls.key is missing",
        ] {
            assert!(err.contains(want), "{want:?} in {err}");
        }
        assert!(!err.contains("user c"), "{err}");
        assert!(!err.contains("tls.crt"), "a present TLS key is fine: {err}");

        refs.secrets
            .insert("a-creds".into(), bytes(&[("password", b"pw")]));
        refs.secrets
            .insert("b-creds".into(), bytes(&[("password", b"pw")]));
        refs.secrets
            .insert("tls".into(), bytes(&[("tls.crt", b"c"), ("tls.key", b"k")]));
        let endpoint =
            |mqb: &MqttBroker| validate(mqb, &refs, &Settings::default()).unwrap().endpoint;
        assert_eq!(endpoint(&mqb), "m.factory.svc:1883");
        mqb.spec.endpoint = Some("  mqtt.example.com:8883 ".into());
        assert_eq!(endpoint(&mqb), "mqtt.example.com:8883");
        mqb.spec.endpoint = Some("  ".into());
        assert_eq!(endpoint(&mqb), "m.factory.svc:1883");
    }

    /// The edges of the rules `each_rule_names_its_field` names: lengths, characters, ports.
    #[test]
    fn rule_edges() {
        let longest = format!("a/{}", "b".repeat(65533));
        assert_eq!(check_filter(&longest), Ok(()));
        let err = check_filter(&format!("{longest}b")).unwrap_err();
        assert!(err.contains("65535"), "{err}");
        for (bad, why) in [
            ("a ", "whitespace"),
            ("a/\tb", "control"),
            ("#/a", "# must be the whole last level"),
            ("a/{ns_2}", "unknown placeholder {ns_2}"),
        ] {
            let err = check_filter(bad).unwrap_err();
            assert!(err.contains(why), "{bad:?}: {err}");
        }
        for ok in ["a/{}", "a/{x.y}", "a/{x-y}z", "a b/c"] {
            assert_eq!(check_filter(ok), Ok(()), "{ok}");
        }

        let name = |n: &str| field_of(&MqttBroker::test("m").user(n, Some("s")));
        for ok in ["a", "A.b-c_9", &"u".repeat(64)] {
            assert_eq!(
                check_spec(&MqttBroker::test("m").user(ok, Some("s"))),
                Ok(()),
                "{ok}"
            );
        }
        for bad in ["", "a b", "a/b", "a:b", &"u".repeat(65)] {
            assert_eq!(name(bad), "spec.builtin.users[0].name", "{bad:?}");
        }

        for ok in ["edgewire", "A-b_9"] {
            let mut m = MqttBroker::test("m");
            m.spec.topic_namespace = ok.into();
            assert_eq!(check_spec(&m), Ok(()), "{ok}");
        }
        for bad in ["", "a/b", "a.b", "a b", "+"] {
            let mut m = MqttBroker::test("m");
            m.spec.topic_namespace = bad.into();
            assert_eq!(field_of(&m), "spec.topicNamespace", "{bad:?}");
        }

        let mut m = MqttBroker::test("m").user("a", Some("s"));
        users(&mut m)[0].password = Some(SecretKeyRef::new("", "password"));
        assert_eq!(field_of(&m), "spec.builtin.users[0].password");
        users(&mut m)[0].password = Some(SecretKeyRef::new("s", ""));
        assert_eq!(field_of(&m), "spec.builtin.users[0].password");

        let mut m = MqttBroker::test("m");
        m.spec.builtin.as_mut().unwrap().image = " ".into();
        assert_eq!(field_of(&m), "spec.builtin.image");

        for (port, ok) in [(0, false), (1, true), (65535, true), (65536, false)] {
            let mut m = MqttBroker::test("m");
            m.spec.builtin.as_mut().unwrap().listeners.websockets =
                Some(WebsocketsListener { port });
            let got = check_spec(&m).err().map(|e| e.to_string());
            if ok {
                assert_eq!(got, None, "{port}");
            } else {
                assert_eq!(
                    got,
                    Some(format!(
                        "spec.builtin.listeners.websockets.port: {port} is not a port (1-65535)"
                    ))
                );
            }
        }

        let mut m = MqttBroker::test("m");
        m.spec.builtin.as_mut().unwrap().listeners.mqtts = Some(TlsListener {
            port: 8883,
            cert_secret_name: String::new(),
            require_client_cert: false,
        });
        assert_eq!(field_of(&m), "spec.builtin.listeners.mqtts.certSecretName");
    }
}
