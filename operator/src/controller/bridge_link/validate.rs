//! Stage 2 (pure): what the schema cannot check, both sides resolved into endpoints ([`resolve`]), and the
//! referenced brokers' and Secrets' presence. A failure here means no children: `InvalidSpec` (naming the
//! field) or `CredentialsReady=False` (naming the broker, the Secret and key).

use super::names::KIND_LABEL;
use super::refs::Refs;
use super::resolve::{self, SecretUse};
use crate::children::Owner;
use crate::context::Settings;
use crate::hash::credentials_hash;
use crate::reconcile::{CredentialProblem, Invalid, Missing};
use crate::secret::has_key;
use edgewire_api::quantity::quantity_bytes;
use edgewire_api::{
    BridgeLink, BridgeLinkSpec, BridgeSide, Endpoint, HeaderName, HeaderValue, Protocol,
    validate_rules,
};
use k8s_openapi::api::core::v1::Secret;
use std::str::FromStr;

/// A BridgeLink whose spec passed validation, both sides resolved to endpoints.
#[derive(Clone, Debug)]
pub struct ValidatedBridgeLink {
    pub owner: Owner,
    /// The spec with `edge` and `cloud` as endpoints (what the agent reads).
    pub spec: BridgeLinkSpec,
    /// Every Secret the endpoints reference, sorted: each is mounted into the pod.
    pub secret_names: Vec<String>,
    pub settings: Settings,
    /// Hash of the referenced Secrets' data: pod-template annotation and `status.credentialsRevision`.
    pub credentials_hash: String,
}

/// The error of a rule [`validate_rules`] refuses: its message starts with the field.
fn rule_error(msg: String) -> Invalid {
    match msg.split_once(": ") {
        Some((field, message)) => Invalid::spec(field, message),
        None => Invalid::spec("spec.rules", msg),
    }
}

fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// What the schema allows but a protocol cannot do: rejected here, so the resource says so in
/// `Ready=False, reason InvalidSpec` instead of the bridge pod failing at start.
fn check_protocol_fit(field: &str, e: &Endpoint) -> Result<(), Invalid> {
    if e.protocol == Protocol::Kafka && e.auth.as_ref().is_some_and(|a| a.token.is_some()) {
        return Err(Invalid::spec(
            format!("{field}.auth.token"),
            "Kafka SASL/OAUTHBEARER is not supported; use userPassword (SASL) or clientCert (mTLS)",
        ));
    }
    if e.protocol == Protocol::Kafka && e.tls.as_ref().is_some_and(|t| t.server_name.is_some()) {
        return Err(Invalid::spec(
            format!("{field}.tls.serverName"),
            "librdkafka cannot override the TLS server name; the certificate must match the bootstrap host names",
        ));
    }
    Ok(())
}

/// The checks the CRD schema makes, repeated for specs that never passed an API server (`render`, an edge
/// box's file) and for endpoints resolved from a `brokerRef`.
fn check_endpoint(field: &str, e: &Endpoint) -> Result<(), Invalid> {
    if e.url.trim().is_empty() {
        return Err(Invalid::spec(format!("{field}.url"), "must not be empty"));
    }
    if e.mqtt_version.is_some() && e.protocol != Protocol::Mqtt {
        return Err(Invalid::spec(
            format!("{field}.mqttVersion"),
            "applies to protocol mqtt only",
        ));
    }
    if e.jet_stream.is_some() && e.protocol != Protocol::Nats {
        return Err(Invalid::spec(
            format!("{field}.jetStream"),
            "applies to protocol nats only",
        ));
    }
    if e.exchange.is_some() && e.protocol != Protocol::Amqp091 {
        return Err(Invalid::spec(
            format!("{field}.exchange"),
            "applies to protocol amqp091 only",
        ));
    }
    let tls = e.tls.as_ref().is_some_and(|t| t.enabled);
    if let Some(a) = &e.auth {
        let modes = [
            a.token.is_some(),
            a.user_password.is_some(),
            a.client_cert.is_some(),
        ]
        .iter()
        .filter(|b| **b)
        .count();
        if modes != 1 {
            return Err(Invalid::spec(
                format!("{field}.auth"),
                "set exactly one of token, userPassword, clientCert",
            ));
        }
        if a.client_cert.is_some() && !tls {
            return Err(Invalid::spec(
                format!("{field}.auth.clientCert"),
                "requires tls.enabled: true (mTLS requires SSL)",
            ));
        }
    }
    if e.tls
        .as_ref()
        .is_some_and(|t| t.client_cert_secret_ref.is_some() && !t.enabled)
    {
        return Err(Invalid::spec(
            format!("{field}.tls.clientCertSecretRef"),
            "requires tls.enabled: true (mTLS requires SSL)",
        ));
    }
    Ok(())
}

fn check_side(field: &str, side: &BridgeSide) -> Result<(), Invalid> {
    match (&side.endpoint, &side.broker_ref) {
        (Some(e), None) => check_endpoint(&format!("{field}.endpoint"), e),
        (None, Some(_)) => Ok(()),
        _ => Err(Invalid::spec(
            field,
            "set exactly one of brokerRef, endpoint",
        )),
    }
}

/// Everything checkable from the spec alone: site id, sides, rules (patterns, loops, edge protocol), spool.
pub fn check_spec(spec: &BridgeLinkSpec) -> Result<(), Invalid> {
    if !is_dns_label(&spec.site_id) {
        return Err(Invalid::spec(
            "spec.siteId",
            format!(
                "{:?} must be a DNS label (lower-case letters, digits and '-', at most 63)",
                spec.site_id
            ),
        ));
    }
    for (name, value) in &spec.headers {
        HeaderName::from_str(name).map_err(|m| Invalid::spec("spec.headers", m))?;
        HeaderValue::from_str(value)
            .map_err(|m| Invalid::spec(format!("spec.headers.{name}"), m))?;
    }
    check_side("spec.edge", &spec.edge)?;
    check_side("spec.cloud", &spec.cloud)?;
    validate_rules(spec).map_err(rule_error)?;
    let size = quantity_bytes(&spec.spool.size).ok_or_else(|| {
        Invalid::spec(
            "spec.spool.size",
            format!("{:?} is not a quantity", spec.spool.size),
        )
    })?;
    let max = quantity_bytes(&spec.spool.max_bytes).ok_or_else(|| {
        Invalid::spec(
            "spec.spool.maxBytes",
            format!("{:?} is not a quantity", spec.spool.max_bytes),
        )
    })?;
    let disk = edgewire_api::v1alpha1::spool_disk_bytes(max);
    if max == 0 || disk > size {
        return Err(Invalid::spec(
            "spec.spool.maxBytes",
            format!(
                "{} must be above zero and leave room in spec.spool.size ({}): the spool can fill {disk} bytes on disk with it (maxBytes, two segments of {} bytes for the acknowledged part of the oldest one and the one being written, {} for its files)",
                spec.spool.max_bytes,
                spec.spool.size,
                edgewire_api::v1alpha1::spool_segment_bytes(max),
                edgewire_api::v1alpha1::SPOOL_DISK_OVERHEAD,
            ),
        ));
    }
    Ok(())
}

/// Checks the resolved endpoints and that every referenced Secret and key exists. With `allow_generated`
/// (`render`), a missing Secret an operator generates is accepted.
pub fn validate(
    bl: &BridgeLink,
    refs: &Refs,
    settings: &Settings,
    allow_generated: bool,
) -> Result<ValidatedBridgeLink, Invalid> {
    let owner = Owner::of(bl, KIND_LABEL).ok_or(Invalid::Metadata)?;
    check_spec(&bl.spec)?;
    let resolved = resolve::resolve(bl, &refs.brokers)?;
    let secrets = &refs.secrets;
    let field = |side: &BridgeSide, name: &str| {
        if side.broker_ref.is_some() {
            format!("spec.{name}.brokerRef")
        } else {
            format!("spec.{name}.endpoint")
        }
    };
    check_endpoint(&field(&bl.spec.edge, "edge"), &resolved.edge)?;
    check_endpoint(&field(&bl.spec.cloud, "cloud"), &resolved.cloud)?;
    check_protocol_fit(&field(&bl.spec.edge, "edge"), &resolved.edge)?;
    check_protocol_fit(&field(&bl.spec.cloud, "cloud"), &resolved.cloud)?;
    let mut spec = bl.spec.clone();
    spec.edge = BridgeSide {
        broker_ref: None,
        endpoint: Some(resolved.edge),
    };
    spec.cloud = BridgeSide {
        broker_ref: None,
        endpoint: Some(resolved.cloud),
    };
    // The edge protocol of a resolved brokerRef, and everything else, once more on the resolved spec.
    validate_rules(&spec).map_err(rule_error)?;

    let mut problems = Vec::new();
    for SecretUse {
        name,
        keys,
        field,
        generated,
    } in &resolved.secret_uses
    {
        match secrets.get(name) {
            None if *generated && allow_generated => {}
            None => problems.push(CredentialProblem::new(
                Missing::Secret,
                format!("{field}: Secret {name:?} not found"),
            )),
            Some(s) => {
                for k in keys {
                    if !has_key(s, k) {
                        problems.push(CredentialProblem::new(
                            Missing::Key,
                            format!("{field}: Secret {name:?} has no key {k:?}"),
                        ));
                    }
                }
            }
        }
    }
    if !problems.is_empty() {
        return Err(Invalid::Credentials(problems));
    }
    let mut secret_names: Vec<String> = resolved
        .secret_uses
        .iter()
        .map(|u| u.name.clone())
        .collect();
    secret_names.sort();
    secret_names.dedup();
    let used: Vec<&Secret> = secret_names.iter().filter_map(|n| secrets.get(n)).collect();
    Ok(ValidatedBridgeLink {
        owner,
        spec,
        secret_names,
        settings: settings.clone(),
        credentials_hash: credentials_hash(used),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A header the bridge could not send on NATS (which panics on a ':' in a name or a line break in a
    /// value) is refused before a bridge pod starts.
    #[test]
    fn headers_every_protocol_can_carry() {
        let mut spec: BridgeLinkSpec = serde_json::from_value(serde_json::json!({
            "siteId": "site-a",
            "edge": {"endpoint": {"protocol": "mqtt", "url": "e:1883"}},
            "cloud": {"endpoint": {"protocol": "nats", "url": "nats://c:4222"}},
            "rules": [{"direction": "EdgeToCloud", "from": "a.#", "to": "b.#"}],
            "headers": {"plant": "berlin"}
        }))
        .unwrap();
        assert_eq!(check_spec(&spec), Ok(()));
        spec.headers.insert("line:4".into(), "x".into());
        assert!(
            matches!(check_spec(&spec), Err(Invalid::Spec { field, .. }) if field == "spec.headers")
        );
        spec.headers.remove("line:4");
        spec.headers
            .insert("line".into(), "4\r\nX-Injected: 1".into());
        assert!(
            matches!(check_spec(&spec), Err(Invalid::Spec { field, .. }) if field == "spec.headers.line")
        );
    }

    /// One quantity parser for every size: `1e9` is a billion bytes here as in a broker's storage.
    #[test]
    fn spool_sizes_are_quantities_like_every_other_size() {
        let mut spec: BridgeLinkSpec = serde_json::from_value(serde_json::json!({
            "siteId": "site-a",
            "edge": {"endpoint": {"protocol": "mqtt", "url": "e:1883"}},
            "cloud": {"endpoint": {"protocol": "nats", "url": "nats://c:4222"}},
            "rules": [{"direction": "EdgeToCloud", "from": "a.#", "to": "b.#"}],
            "spool": {"size": "5Gi", "maxBytes": "1e9"}
        }))
        .unwrap();
        assert_eq!(check_spec(&spec), Ok(()));
        assert_eq!(
            edgewire_api::quantity::quantity_bytes(&spec.spool.max_bytes),
            Some(1_000_000_000)
        );
        spec.spool.max_bytes = "6e9".into();
        assert!(
            check_spec(&spec)
                .unwrap_err()
                .to_string()
                .starts_with("spec.spool.maxBytes: 6e9 must be above zero and leave room"),
        );
    }

    /// Issue 14 item 8: the spool on disk holds more than `maxBytes` — the acknowledged part of the oldest
    /// segment and the segment being written. A `maxBytes` just below `size` filled the volume before the
    /// spool's own limit held the edge back.
    #[test]
    fn max_bytes_leaves_room_for_the_segments_on_disk() {
        let mut spec: BridgeLinkSpec = serde_json::from_value(serde_json::json!({
            "siteId": "site-a",
            "edge": {"endpoint": {"protocol": "mqtt", "url": "e:1883"}},
            "cloud": {"endpoint": {"protocol": "nats", "url": "nats://c:4222"}},
            "rules": [{"direction": "EdgeToCloud", "from": "a.#", "to": "b.#"}],
            "spool": {"size": "1Gi", "maxBytes": "1000Mi"}
        }))
        .unwrap();
        let err = check_spec(&spec).unwrap_err().to_string();
        assert!(err.contains("two segments of 67108864 bytes"), "{err}");
        // 880 MiB + 2 × 64 MiB + 4 MiB = 1012 MiB: fits 1 GiB.
        spec.spool.max_bytes = "880Mi".into();
        assert_eq!(check_spec(&spec), Ok(()));
        spec.spool.max_bytes = "900Mi".into();
        assert!(check_spec(&spec).is_err());
        // Exactly filling the volume is room enough.
        spec.spool.max_bytes = "880Mi".into();
        spec.spool.size = "1012Mi".into();
        assert_eq!(check_spec(&spec), Ok(()));
        spec.spool.size = format!("{}", 1012 * 1024 * 1024 - 1);
        assert!(check_spec(&spec).is_err());
    }

    /// Each rule `check_spec` repeats from the schema, refused naming its field; the value just inside each
    /// rule's edge passes.
    #[test]
    fn each_spec_rule_names_its_field() {
        let base = serde_json::json!({
            "siteId": "site-a",
            "edge": {"endpoint": {"protocol": "mqtt", "url": "e:1883"}},
            "cloud": {"endpoint": {"protocol": "nats", "url": "nats://c:4222"}},
            "rules": [{"direction": "EdgeToCloud", "from": "a.#", "to": "b.#"}]
        });
        let field_of = |set: &dyn Fn(&mut serde_json::Value)| {
            let mut v = base.clone();
            set(&mut v);
            let spec: BridgeLinkSpec = serde_json::from_value(v).unwrap();
            match check_spec(&spec) {
                Ok(()) => None,
                Err(Invalid::Spec { field, .. }) => Some(field),
                Err(other) => panic!("{other}"),
            }
        };
        let site =
            |id: String| field_of(&|v: &mut serde_json::Value| v["siteId"] = id.clone().into());
        for ok in ["a", "site-a", "0a", "a-1", &"a".repeat(63)] {
            assert_eq!(site(ok.to_string()), None, "{ok}");
        }
        for bad in ["", "Site", "-a", "a-", "a_b", "a.b", &"a".repeat(64)] {
            assert_eq!(
                site(bad.to_string()).as_deref(),
                Some("spec.siteId"),
                "{bad}"
            );
        }
        let cloud = |e: serde_json::Value| {
            field_of(&|v: &mut serde_json::Value| v["cloud"]["endpoint"] = e.clone())
        };
        let edge = |e: serde_json::Value| {
            field_of(&|v: &mut serde_json::Value| v["edge"]["endpoint"] = e.clone())
        };
        let nats = |extra: serde_json::Value| {
            let mut e = serde_json::json!({"protocol": "nats", "url": "nats://c:4222"});
            for (k, x) in extra.as_object().unwrap() {
                e[k] = x.clone();
            }
            cloud(e)
        };
        use serde_json::json;
        assert_eq!(
            cloud(json!({"protocol": "nats", "url": " "})).as_deref(),
            Some("spec.cloud.endpoint.url")
        );
        assert_eq!(
            nats(json!({"mqttVersion": "5"})).as_deref(),
            Some("spec.cloud.endpoint.mqttVersion")
        );
        assert_eq!(
            edge(json!({"protocol": "mqtt", "url": "e:1883", "mqttVersion": "5"})),
            None
        );
        assert_eq!(
            edge(json!({"protocol": "mqtt", "url": "e:1883", "jetStream": {"enabled": true}}))
                .as_deref(),
            Some("spec.edge.endpoint.jetStream")
        );
        assert_eq!(nats(json!({"jetStream": {"enabled": true}})), None);
        assert_eq!(
            nats(json!({"exchange": "x"})).as_deref(),
            Some("spec.cloud.endpoint.exchange")
        );
        assert_eq!(
            cloud(json!({"protocol": "amqp091", "url": "amqp://c", "exchange": "x"})),
            None
        );
        let token = json!({"name": "s", "key": "token"});
        let user = json!({"secretName": "u"});
        let tls_on = json!({"enabled": true});
        assert_eq!(nats(json!({"auth": {"token": token}})), None);
        for auth in [json!({}), json!({"token": token, "userPassword": user})] {
            assert_eq!(
                nats(json!({"auth": auth})).as_deref(),
                Some("spec.cloud.endpoint.auth"),
                "{auth}"
            );
        }
        assert_eq!(
            nats(json!({"auth": {"clientCert": user}})).as_deref(),
            Some("spec.cloud.endpoint.auth.clientCert")
        );
        assert_eq!(
            nats(json!({"auth": {"clientCert": user}, "tls": {"enabled": false}})).as_deref(),
            Some("spec.cloud.endpoint.auth.clientCert")
        );
        assert_eq!(
            nats(json!({"auth": {"clientCert": user}, "tls": tls_on})),
            None
        );
        assert_eq!(
            nats(json!({"tls": {"enabled": false, "clientCertSecretRef": user}})).as_deref(),
            Some("spec.cloud.endpoint.tls.clientCertSecretRef")
        );
        assert_eq!(
            nats(json!({"tls": {"enabled": true, "clientCertSecretRef": user}})),
            None
        );
        let broker_ref = json!({"kind": "MqttBroker", "name": "m"});
        assert_eq!(
            field_of(&|v: &mut serde_json::Value| v["edge"]["brokerRef"] = broker_ref.clone())
                .as_deref(),
            Some("spec.edge")
        );
        assert_eq!(
            field_of(&|v: &mut serde_json::Value| v["edge"] = json!({})).as_deref(),
            Some("spec.edge")
        );
        assert_eq!(
            field_of(
                &|v: &mut serde_json::Value| v["cloud"] = json!({"brokerRef": broker_ref.clone()})
            ),
            None
        );
    }

    /// A broker's generated credentials Secret may be missing only for `render` (the operator writes it when
    /// it reconciles the broker); a Secret the user names must exist either way.
    #[test]
    fn only_render_passes_a_missing_generated_secret() {
        use crate::controller::bridge_link::resolve::Brokers;
        use edgewire_api::{BrokerKind, EventBroker};
        let eb = EventBroker::test("cloud")
            .adapter_nats()
            .deploy(BrokerKind::Nats);
        let brokers = Brokers {
            event_brokers: [("cloud".to_string(), eb)].into(),
            ..Brokers::default()
        };
        let mut bl = BridgeLink::test("b");
        bl.spec.cloud = serde_json::from_value(serde_json::json!(
            {"brokerRef": {"kind": "EventBroker", "name": "cloud"}}
        ))
        .unwrap();
        let refs = Refs {
            brokers,
            secrets: Default::default(),
        };
        let settings = Settings::default();
        assert!(validate(&bl, &refs, &settings, true).is_ok());
        let refused = validate(&bl, &refs, &settings, false).unwrap_err();
        assert_eq!(
            refused.reason(),
            edgewire_api::condition::reasons::SECRET_MISSING,
            "{refused}"
        );
        assert!(refused.to_string().contains("cloud-"), "{refused}");

        bl.spec.edge = serde_json::from_value(serde_json::json!({"endpoint": {
            "protocol": "mqtt", "url": "edge:1883",
            "auth": {"userPassword": {"secretName": "edge-creds"}},
        }}))
        .unwrap();
        let named = validate(&bl, &refs, &settings, true).unwrap_err();
        assert!(
            named.to_string().contains("\"edge-creds\" not found"),
            "{named}"
        );
    }
}
