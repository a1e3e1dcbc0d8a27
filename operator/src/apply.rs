//! Server-side apply of children under one field manager, and the sweep of children no longer wanted; both
//! skipped when they cannot change anything ([`Memo`]), so that a resync of an unchanged resource writes
//! nothing, and reads nothing when the controller's watches show the children ([`Watched`]).

use crate::cache::{Seen, Watched};
use crate::children::Owner;
use crate::rollout::{Rollout, Workload};
use edgewire_api::FIELD_MANAGER;
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{Secret, Service};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::{Api, Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::borrow::Cow;
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

/// A namespaced kind the operator applies, looks up in its watches or reads: a child, or a broker a
/// BridgeLink references.
pub trait Namespaced:
    Resource<Scope = NamespaceResourceScope, DynamicType = ()>
    + Serialize
    + DeserializeOwned
    + Clone
    + Debug
    + Send
    + Sync
    + 'static
{
}

impl<K> Namespaced for K where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Serialize
        + DeserializeOwned
        + Clone
        + Debug
        + Send
        + Sync
        + 'static
{
}

/// (kind, name) of a child. Kinds are static strings (k8s-openapi's and the CRDs'): only the name is
/// allocated per child.
type ChildKey = (Cow<'static, str>, String);

/// What this process last applied for the children of each owner (by owner uid): per child the digest of the
/// body it applied and the `resourceVersion` and `generation` the API server answered, and the set of
/// children its last completed sweep kept.
///
/// - A child whose body is unchanged and whose `resourceVersion` is still the one the apply answered is as
///   that apply left it (any write by anyone, a controller's status included, changes the resourceVersion):
///   applying the same body again would change nothing, so [`Kept::apply`] does not write it. It looks the
///   child up in the controller's watches ([`Watched`]), and reads it (GET) only where they do not show it.
///   A child with a `generation` (a workload) whose generation is still the one the apply answered has had
///   only its status or metadata written since: its spec is as applied, so it is not written either. A child
///   that loses the owner-kind label its watch selects on leaves the watch, and is read and applied again;
///   other labels or annotations of a workload changed by hand are put back at its next apply (a new body, or
///   the first pass after a restart). Anything else — another body, another resourceVersion (drift, a status change of a child without
///   a generation), a deleted child — is applied as before.
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
    /// The children the controllers' watches show.
    pub watched: Watched,
}

/// One child as the operator last applied it.
#[derive(Debug, Clone)]
struct Applied {
    /// Digest of the body sent.
    body: u64,
    /// What the API server answered.
    resource_version: String,
    generation: Option<i64>,
}

impl Applied {
    /// Whether the child as `seen` by a watch is still as this apply left it (see [`Memo`]).
    fn holds(&self, seen: &Seen) -> bool {
        *seen.resource_version == *self.resource_version
            || (self.generation.is_some() && seen.generation == self.generation)
    }
}

#[derive(Default, Debug)]
struct OwnerMemo {
    /// Per child: what it was last applied as.
    applied: HashMap<ChildKey, Applied>,
    /// What the last completed sweep kept.
    swept: Option<BTreeSet<ChildKey>>,
    /// Every child written since the last completed sweep, noted before the write (which may fail having
    /// created it): what a watch may not show yet that the sweep must still find.
    written: BTreeSet<ChildKey>,
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

/// A child after [`Kept::apply_or_read`].
enum Current<K> {
    /// As the API server answered a write or a read.
    Object(K),
    /// Unchanged since this process applied it, as a watch shows it.
    Seen(Seen),
}

impl<'a> Kept<'a> {
    /// Children of `owner`, remembered in `memo`.
    pub fn new(memo: &'a Memo, owner: &Owner) -> Self {
        Kept {
            set: BTreeSet::new(),
            memo: Some((memo, owner.owner_ref.uid.clone())),
        }
    }

    /// Applies `obj` ([`ssa`]) and keeps it, unless the memo shows the same body applied and the child
    /// unchanged since ([`Memo`]).
    pub async fn apply<K: Namespaced>(
        &mut self,
        client: &Client,
        obj: &K,
    ) -> Result<(), kube::Error> {
        self.apply_or_read(client, obj).await.map(drop)
    }

    /// [`Kept::apply`] of a workload; returns its rollout as the API server holds it (as the watch shows
    /// it, when it was not written): it drives the conditions.
    pub async fn apply_workload<K: Workload + Namespaced>(
        &mut self,
        client: &Client,
        obj: &K,
    ) -> Result<Rollout, kube::Error> {
        match self.apply_or_read(client, obj).await? {
            Current::Object(live) => Ok(live.rollout()),
            Current::Seen(Seen {
                rollout: Some(r), ..
            }) => Ok(r),
            // Watched by its metadata only: its status is read.
            Current::Seen(_) => {
                let api: Api<K> =
                    Api::namespaced(client.clone(), &obj.namespace().unwrap_or_default());
                match api.get_opt(&obj.name_any()).await? {
                    Some(live) => Ok(live.rollout()),
                    None => Ok(self.write(client, obj).await?.rollout()),
                }
            }
        }
    }

    /// The child after this pass: applied or read ([`Current::Object`]), or unchanged as a watch shows it
    /// ([`Current::Seen`]).
    async fn apply_or_read<K: Namespaced>(
        &mut self,
        client: &Client,
        obj: &K,
    ) -> Result<Current<K>, kube::Error> {
        let key: ChildKey = (K::kind(&()), obj.name_any());
        let Some((memo, owner)) = self.memo.clone() else {
            return self.write(client, obj).await.map(Current::Object);
        };
        let body = digest(obj);
        let remembered = memo.with(&owner, |m| {
            if !m.swept.as_ref().is_some_and(|s| s.contains(&key)) {
                m.swept = None;
            }
            m.applied.get(&key).filter(|a| a.body == body).cloned()
        });
        if let Some(applied) = remembered {
            let ns = obj.namespace().unwrap_or_default();
            match memo.watched.seen::<K>(&ns, &key.1) {
                Some(seen) if applied.holds(&seen) => {
                    self.keep(obj);
                    return Ok(Current::Seen(seen));
                }
                Some(_) => {}
                None => {
                    let api: Api<K> = Api::namespaced(client.clone(), &ns);
                    if let Some(live) = api.get_opt(&key.1).await?
                        && live.resource_version().as_deref()
                            == Some(applied.resource_version.as_str())
                    {
                        self.keep(&live);
                        return Ok(Current::Object(live));
                    }
                }
            }
        }
        memo.with(&owner, |m| m.written.insert(key.clone()));
        let applied = self.write(client, obj).await?;
        if let Some(rv) = applied.resource_version() {
            let generation = applied.meta().generation;
            memo.with(&owner, |m| {
                m.applied.insert(
                    key,
                    Applied {
                        body,
                        resource_version: rv,
                        generation,
                    },
                )
            });
        }
        Ok(Current::Object(applied))
    }

    /// [`ssa`], and keeps the child.
    async fn write<K: Namespaced>(&mut self, client: &Client, obj: &K) -> Result<K, kube::Error> {
        let applied = ssa(client, obj).await?;
        self.keep(&applied);
        Ok(applied)
    }

    pub fn keep<K: Resource<DynamicType = ()>>(&mut self, obj: &K) {
        self.set.insert((K::kind(&()), obj.name_any()));
    }
    pub fn contains<K: Resource<DynamicType = ()>>(&self, name: &str) -> bool {
        self.set.contains(&(K::kind(&()), name.to_string()))
    }

    /// The names of the owner's children of kind `K` as the watches show them, when they show every child
    /// the sweep must consider (see [`sweep`]); `None` when the sweep must list them.
    fn watched<K: Namespaced>(&self, owner: &Owner) -> Option<Vec<String>> {
        let (memo, uid) = self.memo.as_ref()?;
        let shown = memo.watched.owned_by::<K>(&owner.namespace, uid)?;
        let kind = K::kind(&());
        let unseen = memo.with(uid, |m| {
            m.written
                .iter()
                .any(|key| key.0 == kind && !self.set.contains(key) && !shown.contains(&key.1))
        });
        (!unseen).then_some(shown)
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
                m.written.retain(|k| self.set.contains(k));
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
    let mut swept = sweep::<StatefulSet>(client, owner, kept).await?;
    swept.extend(sweep::<Service>(client, owner, kept).await?);
    swept.extend(sweep::<Secret>(client, owner, kept).await?);
    Ok(swept)
}

/// Deletes the children of kind `K` of `owner` (in its namespace, with an owner reference to it; the watches
/// select its kind's label, the list all of [`Owner::sweep_selector`]) that were not applied in this pass: a switched adapter or a removed `deployBroker` leaves no orphan
/// behind. An object with the labels that the owner does not own (made by hand, or orphaned by a deletion
/// of an earlier owner of the same name with `--cascade=orphan`) is not the sweep's to delete. Returns the
/// names deleted.
///
/// The candidates come from the controller's watches when they can be trusted to show every one: the stores
/// of `K` have listed once, and every child of kind `K` this process wrote for the owner since its last
/// completed sweep (and does not keep now) is in them. Otherwise (no memo, a store not listed yet, a write the
/// watch has not delivered yet) they are listed from the API server by the same labels.
pub async fn sweep<K: Namespaced>(
    client: &Client,
    owner: &Owner,
    kept: &Kept<'_>,
) -> Result<Vec<String>, kube::Error> {
    let ns = &owner.namespace;
    let api: Api<K> = Api::namespaced(client.clone(), ns);
    let names = match kept.watched::<K>(owner) {
        Some(names) => names,
        None => api
            .list(&ListParams::default().labels(&owner.sweep_selector()))
            .await?
            .into_iter()
            .filter(|obj| {
                obj.meta().deletion_timestamp.is_none()
                    && crate::cache::is_owned_by(obj.meta(), &owner.owner_ref.uid)
            })
            .map(|obj| obj.name_any())
            .collect(),
    };
    let mut deleted = Vec::new();
    for name in names {
        if !kept.contains::<K>(&name) {
            match api.delete(&name, &DeleteParams::background()).await {
                Ok(_) => deleted.push(name),
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(deleted)
}
