//! Server-side apply of children under one field manager, and the sweep of children no longer wanted; both
//! skipped when they cannot change anything ([`Memo`]), so that a resync of an unchanged resource writes
//! nothing.

use crate::children::Owner;
use edgewire_api::FIELD_MANAGER;
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{Secret, Service};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::{Api, Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::collections::{BTreeSet, HashMap};
use std::fmt::Debug;
use std::hash::{Hash, Hasher};
use std::sync::Mutex;

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

/// (kind, name) of a child.
type ChildKey = (String, String);

/// What this process last applied for the children of each owner (by owner uid): per child the digest of the
/// body it applied and the `resourceVersion` the API server answered, and the set of children its last
/// completed sweep kept.
///
/// - A child whose body is unchanged and whose `resourceVersion` is still the one the apply answered is as
///   that apply left it (any write by anyone, a controller's status included, changes the resourceVersion):
///   applying the same body again would change nothing, so [`Kept::apply`] reads it (GET) instead of writing.
///   Anything else — another body, another resourceVersion (drift, a status change), a deleted child — is
///   applied as before.
/// - Orphans come only from children an earlier pass applied and this one does not: when every child of a
///   pass is in the set the last completed sweep kept, there is nothing to sweep ([`Kept::must_sweep`]).
///   Applying a child outside that set forgets it first, so a pass that fails between its applies and its
///   sweep leaves the next pass sweeping.
///
/// In memory only: a restarted operator applies and sweeps everything once. An owner's entry goes with the
/// owner ([`Memo::forget`]).
#[derive(Default, Debug)]
pub struct Memo {
    owners: Mutex<HashMap<String, OwnerMemo>>,
}

#[derive(Default, Debug)]
struct OwnerMemo {
    /// Per child: (digest of the applied body, resourceVersion the apply answered).
    applied: HashMap<ChildKey, (u64, String)>,
    /// What the last completed sweep kept.
    swept: Option<BTreeSet<ChildKey>>,
}

impl Memo {
    fn with<T>(&self, owner: &str, f: impl FnOnce(&mut OwnerMemo) -> T) -> T {
        let mut owners = self.owners.lock().unwrap_or_else(|e| e.into_inner());
        f(owners.entry(owner.to_string()).or_default())
    }

    /// Drops what is remembered about the children of `owner` (its uid): it is being deleted.
    pub fn forget(&self, owner_uid: &str) {
        self.owners
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(owner_uid);
    }

    /// Owners remembered (for tests).
    pub fn len(&self) -> usize {
        self.owners.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A digest of `obj` as it is sent.
fn digest<K: Serialize>(obj: &K) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    serde_json::to_vec(obj).unwrap_or_default().hash(&mut h);
    h.finish()
}

/// Names applied in this pass, per kind, so the sweep knows what to keep; with a [`Memo`], applies and
/// sweeps that cannot change anything are skipped.
#[derive(Default, Debug, Clone)]
pub struct Kept<'a> {
    set: BTreeSet<ChildKey>,
    memo: Option<(&'a Memo, String)>,
}

impl<'a> Kept<'a> {
    /// Children of `owner`, remembered in `memo`.
    pub fn new(memo: &'a Memo, owner: &Owner) -> Self {
        Kept {
            set: BTreeSet::new(),
            memo: Some((memo, owner.owner_ref.uid.clone())),
        }
    }

    /// Applies `obj` ([`ssa`]) and keeps it; returns it as the API server holds it. With a memo that shows the
    /// same body applied and the child unchanged since, reads it instead.
    pub async fn apply<K>(&mut self, client: &Client, obj: &K) -> Result<K, kube::Error>
    where
        K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
            + Serialize
            + DeserializeOwned
            + Clone
            + Debug,
    {
        let key: ChildKey = (K::kind(&()).into_owned(), obj.name_any());
        let Some((memo, owner)) = self.memo.clone() else {
            let applied = ssa(client, obj).await?;
            self.keep(&applied);
            return Ok(applied);
        };
        let body = digest(obj);
        let remembered = memo.with(&owner, |m| {
            if !m.swept.as_ref().is_some_and(|s| s.contains(&key)) {
                m.swept = None;
            }
            m.applied
                .get(&key)
                .filter(|(d, _)| *d == body)
                .map(|(_, rv)| rv.clone())
        });
        if let Some(rv) = remembered {
            let api: Api<K> = Api::namespaced(client.clone(), &obj.namespace().unwrap_or_default());
            if let Some(live) = api.get_opt(&key.1).await?
                && live.resource_version().as_deref() == Some(rv.as_str())
            {
                self.keep(&live);
                return Ok(live);
            }
        }
        let applied = ssa(client, obj).await?;
        if let Some(rv) = applied.resource_version() {
            memo.with(&owner, |m| m.applied.insert(key, (body, rv)));
        }
        self.keep(&applied);
        Ok(applied)
    }

    pub fn keep<K: Resource<DynamicType = ()>>(&mut self, obj: &K) {
        self.set.insert((K::kind(&()).into_owned(), obj.name_any()));
    }
    pub fn contains<K: Resource<DynamicType = ()>>(&self, name: &str) -> bool {
        self.set
            .contains(&(K::kind(&()).into_owned(), name.to_string()))
    }

    /// Whether the sweep may find anything: always without a memo; with one, unless the last completed sweep
    /// kept exactly these children.
    pub fn must_sweep(&self) -> bool {
        match &self.memo {
            None => true,
            Some((memo, owner)) => memo.with(owner, |m| m.swept.as_ref() != Some(&self.set)),
        }
    }

    /// Records a completed sweep that kept these children.
    pub fn swept(&self) {
        if let Some((memo, owner)) = &self.memo {
            memo.with(owner, |m| {
                m.applied.retain(|k, _| self.set.contains(k));
                m.swept = Some(self.set.clone());
            });
        }
    }
}

/// [`sweep`] of the kinds every workload owner has: StatefulSets, Services and Secrets of `owner` not in
/// `kept`. Returns the names deleted.
pub async fn sweep_workload(
    client: &Client,
    owner: &Owner,
    kept: &Kept<'_>,
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
    kept: &Kept<'_>,
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
