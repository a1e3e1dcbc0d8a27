//! Pure: each side's `brokerRef` resolved into an explicit endpoint, and the Secrets both endpoints read.
//! `refs` uses it to know which Secrets to fetch, `validate` to check the endpoints and build the agent's
//! config.
//!
//! How a `brokerRef` becomes an endpoint:
//! - **EventBroker** with `deployBroker` of kind `nats`, `mosquitto` or `emqx`: its client Service
//!   (`nats://<eb>-nats.<ns>.svc:4222`, `<eb>-<kind>.<ns>.svc:1883`) and the credentials the broker is
//!   rendered with: the adapter's `auth` (NATS token or userPassword, MQTT userPassword) or, when the spec has
//!   none, the generated `<eb>-broker-credentials` Secret (`username`, `password`). NKEY and MQTT JWT auth have
//!   no bridge equivalent and are rejected.
//! - **MqttBroker** (builtin) with the plain listener: `<mqb>.<ns>.svc:<port>`. The bridge connects as the
//!   user named after `spec.siteId`, which the MqttBroker must declare in `spec.builtin.users` (so its topic
//!   ACLs say what the bridge may read and write). A generated password is passed as `auth.userPassword`
//!   (the `<mqb>-user-<siteId>` Secret holds `username` and `password`); a declared one (`password: {name,
//!   key}`) as `auth.token`, which MQTT sends with the site id as user name.

use crate::controller::event_broker::names::generated_secret_name;
use crate::controller::mqtt_broker::names::user_secret_name;
use crate::reconcile::{Invalid, Missing};
use edgewire_api::{
    BridgeLink, BridgeSide, BrokerKind, BrokerRefKind, Endpoint, EndpointAuth, EventBroker,
    MqttBroker, MqttBrokerType, NatsAuth, PASSWORD_KEY, Protocol, SecretKeyRef, SecretRef,
    USERNAME_KEY,
};
use kube::ResourceExt;
use std::collections::BTreeMap;

/// One Secret an endpoint reads and the keys it needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecretUse {
    pub name: String,
    pub keys: Vec<String>,
    /// Spec field that references it (`spec.cloud.endpoint.auth.userPassword`), or the brokerRef it came from.
    pub field: String,
    /// Whether an operator writes this Secret (a broker's generated credentials): `render` tolerates it absent.
    pub generated: bool,
}

/// Brokers referenced by `brokerRef`, by kind and name.
#[derive(Clone, Debug, Default)]
pub struct Brokers {
    pub event_brokers: BTreeMap<String, EventBroker>,
    pub mqtt_brokers: BTreeMap<String, MqttBroker>,
}

/// Both sides resolved into endpoints, and the Secrets they read (generated ones included).
#[derive(Clone, Debug, PartialEq)]
pub struct Resolved {
    pub edge: Endpoint,
    pub cloud: Endpoint,
    pub secret_uses: Vec<SecretUse>,
}

fn invalid(field: &str, msg: impl Into<String>) -> Invalid {
    Invalid::spec(field, msg)
}

fn plain_endpoint(protocol: Protocol, url: String, auth: Option<EndpointAuth>) -> Endpoint {
    Endpoint {
        protocol,
        url,
        mqtt_version: None,
        jet_stream: None,
        exchange: None,
        auth,
        tls: None,
    }
}

fn up(secret: &str) -> Option<EndpointAuth> {
    Some(EndpointAuth {
        user_password: Some(SecretRef::new(secret)),
        ..Default::default()
    })
}

fn from_event_broker(field: &str, eb: &EventBroker, ns: &str) -> Result<Endpoint, Invalid> {
    let name = eb.name_any();
    let Some(db) = eb.spec.deploy_broker.as_ref() else {
        return Err(invalid(
            field,
            format!(
                "EventBroker {name:?} deploys no broker (spec.deployBroker); reference a deployed nats, mosquitto or emqx broker, or give an endpoint"
            ),
        ));
    };
    let generated = || up(&generated_secret_name(&name));
    match db.kind {
        BrokerKind::Nats => {
            let auth = match eb.spec.nats.as_ref().and_then(|n| n.auth.as_ref()) {
                None => generated(),
                Some(NatsAuth { token: Some(t), .. }) => Some(EndpointAuth {
                    token: Some(t.clone()),
                    ..Default::default()
                }),
                Some(NatsAuth {
                    user_password: Some(s),
                    ..
                }) => up(&s.secret_name),
                Some(_) => {
                    return Err(invalid(
                        field,
                        format!(
                            "EventBroker {name:?} authenticates with an NKEY, which a bridge endpoint does not support; give an endpoint with token or userPassword auth"
                        ),
                    ));
                }
            };
            Ok(plain_endpoint(
                Protocol::Nats,
                format!("nats://{name}-nats.{ns}.svc:4222"),
                auth,
            ))
        }
        BrokerKind::Mosquitto | BrokerKind::Emqx => {
            let auth = match eb.spec.mqtt.as_ref().and_then(|m| m.auth.as_ref()) {
                None => generated(),
                Some(a) => match &a.user_password {
                    Some(s) => up(&s.secret_name),
                    None => {
                        return Err(invalid(
                            field,
                            format!(
                                "EventBroker {name:?} authenticates with a JWT, which a bridge endpoint does not support; give an endpoint with token or userPassword auth"
                            ),
                        ));
                    }
                },
            };
            Ok(plain_endpoint(
                Protocol::Mqtt,
                format!("{name}-{}.{ns}.svc:1883", db.kind.as_str()),
                auth,
            ))
        }
        other => Err(invalid(
            field,
            format!(
                "EventBroker {name:?} deploys {}; a bridge side needs a nats, mosquitto or emqx broker",
                other.as_str()
            ),
        )),
    }
}

fn from_mqtt_broker(
    field: &str,
    mqb: &MqttBroker,
    ns: &str,
    site_id: &str,
) -> Result<Endpoint, Invalid> {
    let name = mqb.name_any();
    let builtin = match (&mqb.spec.broker_type, &mqb.spec.builtin) {
        (MqttBrokerType::Builtin, b) => b.clone().unwrap_or_default(),
        (MqttBrokerType::Iotcore, _) => {
            return Err(invalid(
                field,
                format!(
                    "MqttBroker {name:?} is AWS IoT Core; a bridge side references a builtin MqttBroker (or give an endpoint)"
                ),
            ));
        }
    };
    let Some(port) = builtin.listeners.mqtt else {
        return Err(invalid(
            field,
            format!(
                "MqttBroker {name:?} has no plain listener (spec.builtin.listeners.mqtt), which the in-cluster bridge uses"
            ),
        ));
    };
    let Some(user) = builtin.users.iter().find(|u| u.name == site_id) else {
        return Err(invalid(
            field,
            format!(
                "MqttBroker {name:?} declares no user named {site_id:?}: the bridge connects to a builtin MqttBroker as the user named after spec.siteId; add it to the MqttBroker's spec.builtin.users with the topics the bridge may publish and subscribe"
            ),
        ));
    };
    let auth = match &user.password {
        // A declared password: its key is passed as a token (user name = the site id).
        Some(p) => EndpointAuth {
            token: Some(SecretKeyRef::new(p.name.clone(), p.key.clone())),
            ..Default::default()
        },
        // A generated password: its Secret holds `username` and `password`.
        None => EndpointAuth {
            user_password: Some(SecretRef::new(user_secret_name(&name, site_id))),
            ..Default::default()
        },
    };
    Ok(plain_endpoint(
        Protocol::Mqtt,
        format!("{name}.{ns}.svc:{port}"),
        Some(auth),
    ))
}

/// Resolves one side: its endpoint as given, or the endpoint of the broker it references.
pub fn resolve_side(
    field: &str,
    side: &BridgeSide,
    bl: &BridgeLink,
    brokers: &Brokers,
) -> Result<Endpoint, Invalid> {
    let ns = bl.namespace().unwrap_or_default();
    match (&side.endpoint, &side.broker_ref) {
        (Some(e), None) => Ok(e.clone()),
        (None, Some(r)) => {
            let field = format!("{field}.brokerRef");
            // The broker may not exist yet: a missing credential, looked at again.
            let missing = || {
                Invalid::credential(
                    Missing::Broker,
                    format!(
                        "{field}: {:?} {:?} not found in namespace {ns:?}",
                        r.kind, r.name
                    ),
                )
            };
            match r.kind {
                BrokerRefKind::EventBroker => {
                    let eb = brokers.event_brokers.get(&r.name).ok_or_else(missing)?;
                    from_event_broker(&field, eb, &ns)
                }
                BrokerRefKind::MqttBroker => {
                    let mqb = brokers.mqtt_brokers.get(&r.name).ok_or_else(missing)?;
                    from_mqtt_broker(&field, mqb, &ns, &bl.spec.site_id)
                }
            }
        }
        _ => Err(invalid(field, "set exactly one of brokerRef, endpoint")),
    }
}

/// Every Secret `e` reads. `field` is `spec.edge` or `spec.cloud`; `generated` marks a side resolved from a
/// brokerRef whose credentials an operator generates.
pub fn endpoint_secret_uses(field: &str, e: &Endpoint, generated: bool) -> Vec<SecretUse> {
    let mut out = Vec::new();
    let mut push = |name: &str, keys: &[&str], f: String| {
        out.push(SecretUse {
            name: name.into(),
            keys: keys.iter().map(|k| k.to_string()).collect(),
            field: f,
            generated,
        })
    };
    if let Some(a) = &e.auth {
        if let Some(t) = &a.token {
            push(&t.name, &[&t.key], format!("{field}.auth.token"));
        }
        if let Some(s) = &a.user_password {
            push(
                &s.secret_name,
                &[USERNAME_KEY, PASSWORD_KEY],
                format!("{field}.auth.userPassword"),
            );
        }
        if let Some(s) = &a.client_cert {
            push(
                &s.secret_name,
                &["tls.crt", "tls.key"],
                format!("{field}.auth.clientCert"),
            );
        }
    }
    if let Some(t) = &e.tls {
        if let Some(ca) = &t.ca_secret_ref {
            push(&ca.name, &[&ca.key], format!("{field}.tls.caSecretRef"));
        }
        if let Some(s) = &t.client_cert_secret_ref {
            push(
                &s.secret_name,
                &["tls.crt", "tls.key"],
                format!("{field}.tls.clientCertSecretRef"),
            );
        }
    }
    out
}

/// Resolves both sides (pure).
pub fn resolve(bl: &BridgeLink, brokers: &Brokers) -> Result<Resolved, Invalid> {
    let edge = resolve_side("spec.edge", &bl.spec.edge, bl, brokers)?;
    let cloud = resolve_side("spec.cloud", &bl.spec.cloud, bl, brokers)?;
    let generated = |side: &BridgeSide| side.broker_ref.is_some();
    let mut secret_uses = endpoint_secret_uses(
        if bl.spec.edge.broker_ref.is_some() {
            "spec.edge.brokerRef"
        } else {
            "spec.edge.endpoint"
        },
        &edge,
        generated(&bl.spec.edge),
    );
    secret_uses.extend(endpoint_secret_uses(
        if bl.spec.cloud.broker_ref.is_some() {
            "spec.cloud.brokerRef"
        } else {
            "spec.cloud.endpoint"
        },
        &cloud,
        generated(&bl.spec.cloud),
    ));
    Ok(Resolved {
        edge,
        cloud,
        secret_uses,
    })
}

/// Names of the Secrets a BridgeLink's explicit endpoints reference (the reverse index from Secret to
/// BridgeLink uses it; Secrets behind a `brokerRef` are picked up by the periodic resync).
pub fn referenced_secret_names(bl: &BridgeLink) -> Vec<String> {
    let mut names: Vec<String> = [&bl.spec.edge, &bl.spec.cloud]
        .into_iter()
        .filter_map(|s| s.endpoint.as_ref())
        .flat_map(|e| endpoint_secret_uses("", e, false))
        .map(|u| u.name)
        .collect();
    names.sort();
    names.dedup();
    names
}
