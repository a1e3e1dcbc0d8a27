//! Stage 1 (async): fetch the brokers the sides reference, then the Secrets both endpoints read (as
//! [`resolve`](super::resolve) names them; none when a side cannot be resolved, which `validate` reports).

use super::resolve::{self, Brokers, SecretUse};
use crate::apply::Namespaced;
use crate::context::Context;
use edgewire_api::{BridgeLink, BrokerRefKind, EventBroker, MqttBroker};
use k8s_openapi::api::core::v1::Secret;
use kube::{Api, ResourceExt};
use std::collections::BTreeMap;

/// What `fetch` found: referenced brokers and Secrets that exist.
#[derive(Clone, Debug, Default)]
pub struct Refs {
    pub brokers: Brokers,
    /// Secrets by name.
    pub secrets: BTreeMap<String, Secret>,
}

/// Fetches what `bl` references (missing brokers and Secrets are simply absent).
pub async fn fetch(ctx: &Context, bl: &BridgeLink) -> Result<Refs, kube::Error> {
    let ns = bl.namespace().unwrap_or_default();
    let brokers = fetch_brokers(ctx, bl).await?;
    let uses = resolve::resolve(bl, &brokers)
        .map(|r| r.secret_uses)
        .unwrap_or_default();
    let secrets = fetch_secrets(ctx, &ns, &uses).await?;
    Ok(Refs { brokers, secrets })
}

/// The broker `ns/name` of kind `K`: from the store of its controller, else read.
async fn broker<K: Namespaced>(
    ctx: &Context,
    ns: &str,
    name: &str,
) -> Result<Option<K>, kube::Error> {
    if let Some(b) = ctx.applied.watched.get::<K>(ns, name) {
        return Ok(Some(K::clone(&b)));
    }
    Api::<K>::namespaced(ctx.client.clone(), ns)
        .get_opt(name)
        .await
}

/// Fetches the brokers the sides reference (missing ones are simply absent).
pub async fn fetch_brokers(ctx: &Context, bl: &BridgeLink) -> Result<Brokers, kube::Error> {
    let ns = bl.namespace().unwrap_or_default();
    let mut b = Brokers::default();
    for r in [&bl.spec.edge, &bl.spec.cloud]
        .into_iter()
        .filter_map(|s| s.broker_ref.as_ref())
    {
        match r.kind {
            BrokerRefKind::EventBroker => {
                if let Some(eb) = broker::<EventBroker>(ctx, &ns, &r.name).await? {
                    b.event_brokers.insert(r.name.clone(), eb);
                }
            }
            BrokerRefKind::MqttBroker => {
                if let Some(m) = broker::<MqttBroker>(ctx, &ns, &r.name).await? {
                    b.mqtt_brokers.insert(r.name.clone(), m);
                }
            }
        }
    }
    Ok(b)
}

/// Fetches the Secrets in `uses` (missing ones are simply absent).
pub async fn fetch_secrets(
    ctx: &Context,
    ns: &str,
    uses: &[SecretUse],
) -> Result<BTreeMap<String, Secret>, kube::Error> {
    let mut found = BTreeMap::new();
    for u in uses {
        if found.contains_key(&u.name) {
            continue;
        }
        if let Some(s) = ctx.secret(ns, &u.name).await? {
            found.insert(u.name.clone(), s);
        }
    }
    Ok(found)
}
