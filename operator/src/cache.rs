//! What the watches already show, so that a reconcile asks the API server only for what changed (issue 17: a
//! resync of 2,200 unchanged resources read back ~9 children and Secrets each, every time).
//!
//! - [`Watched`]: what the watches of the children each controller owns (`.owns()`) show, by kind, each
//!   child reduced to its resourceVersion, generation, owners and (workloads, whose status drives the
//!   conditions) its [`Rollout`] ([`Children`]). Children the operator only needs to recognise are watched
//!   by their metadata. [`crate::apply::Kept`] looks a child up here before it reads it from the API server,
//!   and [`crate::apply::sweep`] takes its candidates from here (by owner reference) instead of listing
//!   them once every store has listed. The controllers' own stores of the three kinds are here too: a
//!   BridgeLink finds the brokers it references in them.
//! - [`SecretCache`]: the Secrets reconciles have read, kept until the Secret watch shows them changed or
//!   deleted. The watch itself carries metadata only, so the values of Secrets nobody references are never
//!   received, let alone kept.
//!
//! Both only save requests: a lookup that finds nothing falls back to the API server.

use crate::rollout::{Rollout, Workload};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::Client;
use kube::api::{Api, ObjectMeta};
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{Lookup, ObjectRef, Store};
use kube::runtime::watcher::Event;
use std::any::{Any, TypeId};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};

/// Whether `meta` has an owner reference to `owner_uid`.
pub fn is_owned_by(meta: &ObjectMeta, owner_uid: &str) -> bool {
    meta.owner_references
        .iter()
        .flatten()
        .any(|r| r.uid == owner_uid)
}

/// A child as the watch last showed it.
#[derive(Clone, Debug, PartialEq)]
pub struct Seen {
    pub resource_version: Box<str>,
    pub generation: Option<i64>,
    /// What a workload's readiness is computed from; `None` for kinds watched by their metadata.
    pub rollout: Option<Rollout>,
}

/// One child in [`Children`]: what tells one version from another, whom it belongs to, and (workloads) its
/// rollout.
#[derive(Debug)]
struct Child {
    seen: Seen,
    /// The uids of its owner references.
    owners: Box<[Box<str>]>,
    deleting: bool,
}

type ByNamespace = HashMap<Box<str>, HashMap<Box<str>, Child>>;

/// The children of one kind that one watch shows, by namespace and name, each reduced to a [`Child`] of a
/// few dozen bytes. (kube's `Store` keeps every object whole, plus a key of four strings: at 2,200 resources
/// the stores of their ~10,000 children were ~30 MB of the operator's ~65 MB heap, issue 17.)
///
/// Fed by [`Children::observe_metadata`] or [`Children::observe_workload`] with every event of its watch,
/// the way kube's reflector feeds a `Store`: a relist (`Init` … `InitDone`) is collected apart and replaces
/// what was shown when it completes.
#[derive(Debug, Default)]
pub struct Children {
    state: RwLock<ChildrenState>,
}

#[derive(Debug, Default)]
struct ChildrenState {
    shown: ByNamespace,
    /// A relist in progress.
    relisting: Option<ByNamespace>,
    /// Whether a list has completed once: before that the store may not show what is there.
    listed: bool,
}

impl Children {
    /// An event of a watch by metadata.
    pub fn observe_metadata<K>(&self, event: &Event<PartialObjectMeta<K>>) {
        self.observe(event, |m| &m.metadata, |_| None);
    }

    /// An event of a watch of whole workloads.
    pub fn observe_workload<K: Workload>(&self, event: &Event<K>) {
        self.observe(event, |k| k.meta(), |k| Some(k.rollout()));
    }

    fn observe<T>(
        &self,
        event: &Event<T>,
        meta: impl Fn(&T) -> &ObjectMeta,
        rollout: impl Fn(&T) -> Option<Rollout>,
    ) {
        let entry = |obj: &T| {
            let m = meta(obj);
            let key = (
                Box::<str>::from(m.namespace.as_deref().unwrap_or_default()),
                Box::<str>::from(m.name.as_deref().unwrap_or_default()),
            );
            let child = Child {
                seen: Seen {
                    resource_version: m.resource_version.as_deref().unwrap_or_default().into(),
                    generation: m.generation,
                    rollout: rollout(obj),
                },
                owners: m
                    .owner_references
                    .iter()
                    .flatten()
                    .map(|r| Box::<str>::from(r.uid.as_str()))
                    .collect(),
                deleting: m.deletion_timestamp.is_some(),
            };
            (key, child)
        };
        let insert = |into: &mut ByNamespace, obj: &T| {
            let ((ns, name), child) = entry(obj);
            into.entry(ns).or_default().insert(name, child);
        };
        let mut s = self.state.write().unwrap_or_else(|e| e.into_inner());
        match event {
            Event::Init => s.relisting = Some(ByNamespace::default()),
            Event::InitApply(obj) => insert(s.relisting.get_or_insert_with(Default::default), obj),
            Event::InitDone => {
                s.shown = s.relisting.take().unwrap_or_default();
                s.listed = true;
            }
            Event::Apply(obj) => insert(&mut s.shown, obj),
            Event::Delete(obj) => {
                let m = meta(obj);
                let ns = m.namespace.as_deref().unwrap_or_default();
                if let Some(names) = s.shown.get_mut(ns) {
                    names.remove(m.name.as_deref().unwrap_or_default());
                    if names.is_empty() {
                        s.shown.remove(ns);
                    }
                }
            }
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, ChildrenState> {
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    fn seen(&self, namespace: &str, name: &str) -> Option<Seen> {
        let s = self.read();
        Some(s.shown.get(namespace)?.get(name)?.seen.clone())
    }

    /// The names in `namespace` owned by `owner_uid` and not being deleted; `None` before the first list.
    fn owned_by(&self, namespace: &str, owner_uid: &str) -> Option<Vec<String>> {
        let s = self.read();
        if !s.listed {
            return None;
        }
        Some(
            s.shown
                .get(namespace)
                .into_iter()
                .flatten()
                .filter(|(_, c)| !c.deleting && c.owners.iter().any(|o| &**o == owner_uid))
                .map(|(name, _)| name.to_string())
                .collect(),
        )
    }
}

/// What the watches show: the [`Children`] each controller watches (`.owns()`), by child kind, and the
/// controllers' own stores of the three kinds (a BridgeLink finds the brokers it references in them). A child
/// is in the store of its owner's controller only (the watches select on the owner-kind label).
#[derive(Default)]
pub struct Watched {
    /// `Store<K>` of the controllers' kinds, by `TypeId` of `K`.
    roots: RwLock<HashMap<TypeId, Vec<Box<dyn Any + Send + Sync>>>>,
    children: RwLock<HashMap<TypeId, Vec<Arc<Children>>>>,
}

impl std::fmt::Debug for Watched {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let roots = self.roots.read().unwrap_or_else(|e| e.into_inner());
        let children = self.children.read().unwrap_or_else(|e| e.into_inner());
        f.debug_struct("Watched")
            .field("roots", &roots.len())
            .field("child_kinds", &children.len())
            .finish()
    }
}

impl Watched {
    /// Adds a controller's store of its own kind.
    pub fn add<T>(&self, store: Store<T>)
    where
        T: Lookup<DynamicType = ()> + Clone + Send + Sync + 'static,
    {
        self.roots
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .entry(TypeId::of::<T>())
            .or_default()
            .push(Box::new(store));
    }

    /// The object `namespace/name` of type `T` in a controller's store of that type.
    pub fn get<T>(&self, namespace: &str, name: &str) -> Option<Arc<T>>
    where
        T: Lookup<DynamicType = ()> + Clone + Send + Sync + 'static,
    {
        let roots = self.roots.read().unwrap_or_else(|e| e.into_inner());
        let key = ObjectRef::<T>::new(name).within(namespace);
        roots
            .get(&TypeId::of::<T>())?
            .iter()
            .filter_map(|s| s.downcast_ref::<Store<T>>())
            .find_map(|s| s.get(&key))
    }

    /// A new store of children of kind `K`, for one watch to feed.
    pub fn children<K: 'static>(&self) -> Arc<Children> {
        let store = Arc::new(Children::default());
        self.children
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .entry(TypeId::of::<K>())
            .or_default()
            .push(store.clone());
        store
    }

    /// `f` of the stores of kind `K` (none when that kind is not watched).
    fn with_stores<K: 'static, T>(&self, f: impl FnOnce(&[Arc<Children>]) -> T) -> T {
        let children = self.children.read().unwrap_or_else(|e| e.into_inner());
        f(children.get(&TypeId::of::<K>()).map_or(&[], Vec::as_slice))
    }

    /// The names of the objects of kind `K` in `namespace` owned by `owner_uid` (an owner reference) and not
    /// being deleted, as the watches show them; `None` unless a store of `K` exists and every such store has
    /// listed once (before that a store may not show what is there).
    pub fn owned_by<K: 'static>(&self, namespace: &str, owner_uid: &str) -> Option<Vec<String>> {
        self.with_stores::<K, _>(|stores| {
            if stores.is_empty() {
                return None;
            }
            let mut names = Vec::new();
            for store in stores {
                names.extend(store.owned_by(namespace, owner_uid)?);
            }
            Some(names)
        })
    }

    /// The child `namespace/name` of kind `K` as a watch shows it, or `None` when no store has it (not
    /// watched, not listed yet, or not there).
    pub fn seen<K: 'static>(&self, namespace: &str, name: &str) -> Option<Seen> {
        self.with_stores::<K, _>(|stores| stores.iter().find_map(|s| s.seen(namespace, name)))
    }
}

type SecretKey = (String, String);

/// Secrets read by reconciles (their data and type, [`KeptSecret`]), kept until the Secret watch shows them changed. Serves nothing until a watch
/// has listed the Secrets once ([`SecretCache::observe`] of `InitDone`): without a watch (tests, `render`),
/// every read goes to the API server.
#[derive(Default, Debug)]
pub struct SecretCache {
    watched: AtomicBool,
    inner: Mutex<SecretEntries>,
}

#[derive(Default, Debug)]
struct SecretEntries {
    values: HashMap<SecretKey, KeptSecret>,
    /// Reads in flight, and whether the watch showed a change of that Secret meanwhile (then what the read
    /// returns may be older than the change, and is not kept).
    reading: HashMap<SecretKey, bool>,
}

/// What is kept of a Secret: what reconciles read (its data and type; its name and namespace are the key).
#[derive(Debug)]
struct KeptSecret {
    data: Option<BTreeMap<String, ByteString>>,
    string_data: Option<BTreeMap<String, String>>,
    type_: Option<Box<str>>,
    resource_version: Option<Box<str>>,
}

impl KeptSecret {
    fn of(s: &Secret) -> Self {
        Self {
            data: s.data.clone(),
            string_data: s.string_data.clone(),
            type_: s.type_.as_deref().map(Box::from),
            resource_version: s.metadata.resource_version.as_deref().map(Box::from),
        }
    }

    /// The Secret as reconciles see it: its metadata is only its name, namespace and resourceVersion.
    fn secret(&self, (namespace, name): &SecretKey) -> Secret {
        Secret {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(namespace.clone()),
                resource_version: self.resource_version.as_deref().map(String::from),
                ..ObjectMeta::default()
            },
            data: self.data.clone(),
            string_data: self.string_data.clone(),
            type_: self.type_.as_deref().map(String::from),
            immutable: None,
        }
    }
}

impl SecretCache {
    fn entries(&self) -> std::sync::MutexGuard<'_, SecretEntries> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A watch event of the Secret metadata watch: a (re)list starting forgets everything, one completed
    /// turns the cache on, and any Secret seen changed or deleted is forgotten.
    pub fn observe(&self, event: &Event<PartialObjectMeta<Secret>>) {
        let forget = |obj: &PartialObjectMeta<Secret>| {
            let key = (
                obj.metadata.namespace.clone().unwrap_or_default(),
                obj.metadata.name.clone().unwrap_or_default(),
            );
            let mut e = self.entries();
            e.values.remove(&key);
            if let Some(changed) = e.reading.get_mut(&key) {
                *changed = true;
            }
        };
        match event {
            Event::Init => {
                let mut e = self.entries();
                e.values.clear();
                e.reading.values_mut().for_each(|changed| *changed = true);
            }
            Event::InitDone => self.watched.store(true, Ordering::Release),
            Event::InitApply(obj) | Event::Apply(obj) | Event::Delete(obj) => forget(obj),
        }
    }

    /// The Secret `namespace/name`: as kept, or read from the API server (and kept, unless the watch showed
    /// it changing during the read). A missing Secret is not kept: it is read again next time.
    pub async fn get(
        &self,
        client: &Client,
        namespace: &str,
        name: &str,
    ) -> Result<Option<Secret>, kube::Error> {
        let key = (namespace.to_string(), name.to_string());
        let watched = self.watched.load(Ordering::Acquire);
        if watched {
            let mut e = self.entries();
            if let Some(s) = e.values.get(&key) {
                return Ok(Some(s.secret(&key)));
            }
            e.reading.entry(key.clone()).or_insert(false);
        }
        let read = Api::<Secret>::namespaced(client.clone(), namespace)
            .get_opt(name)
            .await;
        if watched {
            let mut e = self.entries();
            let changed = e.reading.remove(&key);
            if let (Ok(Some(s)), Some(false)) = (&read, changed) {
                e.values.insert(key, KeptSecret::of(s));
            }
        }
        read
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::{StatefulSet, StatefulSetStatus};
    use k8s_openapi::api::core::v1::Service;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{OwnerReference, Time};

    fn meta(ns: &str, name: &str, rv: &str, owner: &str) -> ObjectMeta {
        ObjectMeta {
            namespace: Some(ns.into()),
            name: Some(name.into()),
            resource_version: Some(rv.into()),
            owner_references: Some(vec![OwnerReference {
                uid: owner.into(),
                ..Default::default()
            }]),
            ..Default::default()
        }
    }

    fn service(ns: &str, name: &str, rv: &str, owner: &str) -> PartialObjectMeta<Service> {
        PartialObjectMeta {
            metadata: meta(ns, name, rv, owner),
            ..Default::default()
        }
    }

    fn sorted(mut v: Vec<String>) -> Vec<String> {
        v.sort();
        v
    }

    /// The store answers for an owner only once it has listed; it shows applies and deletes; an object
    /// being deleted, another owner's and another namespace's are not the owner's; a relist replaces what
    /// was shown (a child deleted while the watch was down goes).
    #[test]
    fn children_follow_their_watch_and_a_relist_replaces_them() {
        let w = Watched::default();
        let c = w.children::<Service>();
        assert_eq!(w.owned_by::<Service>("a", "u1"), None, "not listed yet");
        c.observe_metadata::<Service>(&Event::Init);
        c.observe_metadata(&Event::InitApply(service("a", "s1", "1", "u1")));
        c.observe_metadata(&Event::InitApply(service("a", "s2", "2", "u1")));
        assert_eq!(w.owned_by::<Service>("a", "u1"), None, "list not complete");
        c.observe_metadata::<Service>(&Event::InitDone);
        assert_eq!(
            sorted(w.owned_by::<Service>("a", "u1").unwrap()),
            ["s1", "s2"]
        );

        c.observe_metadata(&Event::Apply(service("a", "s3", "3", "u2")));
        c.observe_metadata(&Event::Apply(service("b", "s4", "4", "u1")));
        let mut deleting = service("a", "s2", "5", "u1");
        deleting.metadata.deletion_timestamp = Some(Time(Default::default()));
        c.observe_metadata(&Event::Apply(deleting));
        assert_eq!(w.owned_by::<Service>("a", "u1").unwrap(), ["s1"]);
        assert_eq!(w.owned_by::<Service>("a", "u2").unwrap(), ["s3"]);
        assert_eq!(w.owned_by::<Service>("b", "u1").unwrap(), ["s4"]);
        assert_eq!(
            w.seen::<Service>("a", "s2").unwrap().resource_version,
            Box::from("5")
        );

        c.observe_metadata(&Event::Delete(service("a", "s3", "6", "u2")));
        assert_eq!(w.seen::<Service>("a", "s3"), None);
        assert_eq!(
            w.owned_by::<Service>("a", "u2").unwrap(),
            Vec::<String>::new()
        );

        // A relist that no longer has s1 (deleted while the watch was down) and has s1b.
        c.observe_metadata::<Service>(&Event::Init);
        c.observe_metadata(&Event::InitApply(service("a", "s1b", "7", "u1")));
        assert_eq!(
            w.owned_by::<Service>("a", "u1").unwrap(),
            ["s1"],
            "shown until the relist ends"
        );
        c.observe_metadata::<Service>(&Event::InitDone);
        assert_eq!(w.owned_by::<Service>("a", "u1").unwrap(), ["s1b"]);
        assert_eq!(w.seen::<Service>("a", "s1"), None);
        assert_eq!(w.seen::<Service>("b", "s4"), None);
        // Another kind has no store here.
        assert_eq!(w.owned_by::<Secret>("a", "u1"), None);
    }

    /// A workload's store keeps its rollout as the last event showed it.
    #[test]
    fn a_workload_is_kept_as_its_rollout() {
        let w = Watched::default();
        let c = w.children::<StatefulSet>();
        let sts = |rv: &str, ready: i32| StatefulSet {
            metadata: ObjectMeta {
                generation: Some(2),
                ..meta("a", "b", rv, "u1")
            },
            status: Some(StatefulSetStatus {
                observed_generation: Some(2),
                ready_replicas: Some(ready),
                ..Default::default()
            }),
            ..Default::default()
        };
        c.observe_workload(&Event::Apply(sts("1", 0)));
        c.observe_workload(&Event::Apply(sts("2", 1)));
        let seen = w.seen::<StatefulSet>("a", "b").unwrap();
        assert_eq!(seen.resource_version, Box::from("2"));
        assert_eq!(seen.generation, Some(2));
        assert_eq!(seen.rollout, Some(sts("2", 1).rollout()));
        assert_eq!(seen.rollout.unwrap().ready, 1);
        assert_eq!(w.seen::<Service>("a", "b"), None, "kept by kind");
    }
}
