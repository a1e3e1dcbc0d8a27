//! Stage 1 (async): fetch the brokers the sides reference, then the Secrets both endpoints read (as
//! [`resolve`](super::resolve) names them; none when a side cannot be resolved, which `validate` reports).

use super::resolve::{self, Brokers, SecretUse};
use edgewire_api::{BridgeLink, BrokerRefKind, EventBroker, MqttBroker};
use k8s_openapi::api::core::v1::Secret;
use kube::{Api, Client, ResourceExt};
use std::collections::BTreeMap;

/// What `fetch` found: referenced brokers and Secrets that exist.
#[derive(Clone, Debug, Default)]
pub struct Refs {
    pub brokers: Brokers,
    /// Secrets by name.
    pub secrets: BTreeMap<String, Secret>,
}

/// Fetches what `bl` references (missing brokers and Secrets are simply absent).
pub async fn fetch(client: &Client, bl: &BridgeLink) -> Result<Refs, kube::Error> {
    let ns = bl.namespace().unwrap_or_default();
    let brokers = fetch_brokers(client, bl).await?;
    let uses = resolve::resolve(bl, &brokers)
        .map(|r| r.secret_uses)
        .unwrap_or_default();
    let secrets = fetch_secrets(client, &ns, &uses).await?;
    Ok(Refs { brokers, secrets })
}

/// Fetches the brokers the sides reference (missing ones are simply absent).
pub async fn fetch_brokers(client: &Client, bl: &BridgeLink) -> Result<Brokers, kube::Error> {
    let ns = bl.namespace().unwrap_or_default();
    let mut b = Brokers::default();
    for r in [&bl.spec.edge, &bl.spec.cloud]
        .into_iter()
        .filter_map(|s| s.broker_ref.as_ref())
    {
        match r.kind {
            BrokerRefKind::EventBroker => {
                let api: Api<EventBroker> = Api::namespaced(client.clone(), &ns);
                if let Some(eb) = api.get_opt(&r.name).await? {
                    b.event_brokers.insert(r.name.clone(), eb);
                }
            }
            BrokerRefKind::MqttBroker => {
                let api: Api<MqttBroker> = Api::namespaced(client.clone(), &ns);
                if let Some(m) = api.get_opt(&r.name).await? {
                    b.mqtt_brokers.insert(r.name.clone(), m);
                }
            }
        }
    }
    Ok(b)
}

/// Fetches the Secrets in `uses` (missing ones are simply absent).
pub async fn fetch_secrets(
    client: &Client,
    ns: &str,
    uses: &[SecretUse],
) -> Result<BTreeMap<String, Secret>, kube::Error> {
    let api: Api<Secret> = Api::namespaced(client.clone(), ns);
    let mut found = BTreeMap::new();
    for u in uses {
        if found.contains_key(&u.name) {
            continue;
        }
        if let Some(s) = api.get_opt(&u.name).await? {
            found.insert(u.name.clone(), s);
        }
    }
    Ok(found)
}
