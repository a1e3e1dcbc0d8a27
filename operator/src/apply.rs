//! Server-side apply of children under one field manager, and the sweep of children no longer wanted.

use crate::children::Owner;
use edgewire_api::FIELD_MANAGER;
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{Secret, Service};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::{Api, Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::collections::BTreeSet;
use std::fmt::Debug;

/// Applies `obj` with server-side apply (forced: the operator owns every field it sets) and returns the
/// object as the API server holds it, status included.
pub async fn ssa<K>(client: &Client, obj: &K) -> Result<K, kube::Error>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Serialize
        + DeserializeOwned
        + Clone
        + Debug,
{
    let ns = obj.namespace().unwrap_or_default();
    let api: Api<K> = Api::namespaced(client.clone(), &ns);
    let params = PatchParams::apply(FIELD_MANAGER).force();
    api.patch(&obj.name_any(), &params, &Patch::Apply(obj))
        .await
}

/// Names applied in this pass, per kind, so the sweep knows what to keep.
#[derive(Default, Debug, Clone)]
pub struct Kept(BTreeSet<(String, String)>);

impl Kept {
    /// Applies `obj` ([`ssa`]) and keeps it; returns it as the API server holds it.
    pub async fn apply<K>(&mut self, client: &Client, obj: &K) -> Result<K, kube::Error>
    where
        K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
            + Serialize
            + DeserializeOwned
            + Clone
            + Debug,
    {
        let applied = ssa(client, obj).await?;
        self.keep(&applied);
        Ok(applied)
    }

    pub fn keep<K: Resource<DynamicType = ()>>(&mut self, obj: &K) {
        self.0.insert((K::kind(&()).into_owned(), obj.name_any()));
    }
    pub fn contains<K: Resource<DynamicType = ()>>(&self, name: &str) -> bool {
        self.0
            .contains(&(K::kind(&()).into_owned(), name.to_string()))
    }
}

/// [`sweep`] of the kinds every workload owner has: StatefulSets, Services and Secrets of `owner` not in
/// `kept`. Returns the names deleted.
pub async fn sweep_workload(
    client: &Client,
    owner: &Owner,
    kept: &Kept,
) -> Result<Vec<String>, kube::Error> {
    let (ns, sel) = (&owner.namespace, owner.sweep_selector());
    let mut swept = sweep::<StatefulSet>(client, ns, &sel, kept).await?;
    swept.extend(sweep::<Service>(client, ns, &sel, kept).await?);
    swept.extend(sweep::<Secret>(client, ns, &sel, kept).await?);
    Ok(swept)
}

/// Deletes the objects of kind `K` in `ns` that carry the owner's labels (`selector`) but were not applied in
/// this pass: a switched adapter or a removed `deployBroker` leaves no orphan behind. Returns the names deleted.
pub async fn sweep<K>(
    client: &Client,
    ns: &str,
    selector: &str,
    kept: &Kept,
) -> Result<Vec<String>, kube::Error>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + DeserializeOwned
        + Clone
        + Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), ns);
    let mut deleted = Vec::new();
    for obj in api.list(&ListParams::default().labels(selector)).await? {
        let name = obj.name_any();
        if !kept.contains::<K>(&name) && obj.meta().deletion_timestamp.is_none() {
            match api.delete(&name, &DeleteParams::background()).await {
                Ok(_) => deleted.push(name),
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(deleted)
}
