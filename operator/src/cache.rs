//! What the watches already show, so that a reconcile asks the API server only for what changed (issue 17: a
//! resync of 2,200 unchanged resources read back ~9 children and Secrets each, every time).
//!
//! - [`Watched`]: the stores of the children each controller watches (`.owns()`), by kind. Children the
//!   operator only needs to recognise are watched by their metadata; workloads (whose status drives the
//!   conditions) are kept whole but without their pod template. [`crate::apply::Kept`] looks a child up here
//!   before it reads it from the API server, and [`crate::apply::sweep`] takes its candidates from here
//!   (by owner reference) instead of listing them once every store has listed. The controllers' own stores of the three kinds are here too:
//!   a BridgeLink finds the brokers it references in them.
//! - [`SecretCache`]: the Secrets reconciles have read, kept until the Secret watch shows them changed or
//!   deleted. The watch itself carries metadata only, so the values of Secrets nobody references are never
//!   received, let alone kept.
//!
//! Both only save requests: a lookup that finds nothing falls back to the API server.

use futures::FutureExt;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ObjectMeta};
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{Lookup, ObjectRef, Store};
use kube::runtime::watcher::Event;
use kube::{Client, Resource};
use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};

/// Keeps of a child's metadata only what tells one version from another and what maps it to its owner: name,
/// namespace, uid, resourceVersion, generation, owner references and deletion timestamp. Labels, annotations
/// and managed fields (most of an object's metadata) are dropped before the object is stored.
pub fn strip_meta(meta: &mut ObjectMeta) {
    *meta = ObjectMeta {
        name: meta.name.take(),
        namespace: meta.namespace.take(),
        uid: meta.uid.take(),
        resource_version: meta.resource_version.take(),
        generation: meta.generation.take(),
        owner_references: meta.owner_references.take(),
        deletion_timestamp: meta.deletion_timestamp.take(),
        ..ObjectMeta::default()
    };
}

/// Whether `meta` has an owner reference to `owner_uid`.
pub fn is_owned_by(meta: &ObjectMeta, owner_uid: &str) -> bool {
    meta.owner_references
        .iter()
        .flatten()
        .any(|r| r.uid == owner_uid)
}

/// A workload kept in a store: its metadata stripped ([`strip_meta`]) and its pod template dropped; what is
/// left (replicas, selector, status, generation) is what its readiness is computed from.
pub trait Workload: Resource<DynamicType = ()> + Clone + Send + Sync + 'static {
    fn strip(&mut self);
}

impl Workload for StatefulSet {
    fn strip(&mut self) {
        strip_meta(&mut self.metadata);
        if let Some(spec) = self.spec.as_mut() {
            spec.template = Default::default();
            spec.volume_claim_templates = None;
        }
    }
}

impl Workload for Deployment {
    fn strip(&mut self) {
        strip_meta(&mut self.metadata);
        if let Some(spec) = self.spec.as_mut() {
            spec.template = Default::default();
        }
    }
}

/// A child as the watch last showed it.
#[derive(Clone, Debug)]
pub struct Seen<K> {
    pub resource_version: Option<String>,
    pub generation: Option<i64>,
    /// The object itself, for kinds kept whole ([`Workload`]s); `None` for kinds watched by metadata.
    pub object: Option<Arc<K>>,
}

/// The stores of watched children, by kind: `Store<K>` for workloads, `Store<PartialObjectMeta<K>>` for the
/// rest. One per controller and watched namespace; a child is in the store of its owner's controller only
/// (the watches select on the owner-kind label).
#[derive(Default)]
pub struct Watched {
    stores: RwLock<HashMap<TypeId, Vec<Box<dyn Any + Send + Sync>>>>,
}

impl std::fmt::Debug for Watched {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let stores = self.stores.read().unwrap_or_else(|e| e.into_inner());
        f.debug_struct("Watched")
            .field("kinds", &stores.len())
            .finish()
    }
}

impl Watched {
    /// Adds a store to look children up in.
    pub fn add<T>(&self, store: Store<T>)
    where
        T: Lookup<DynamicType = ()> + Clone + Send + Sync + 'static,
    {
        self.stores
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .entry(TypeId::of::<T>())
            .or_default()
            .push(Box::new(store));
    }

    /// The object `namespace/name` of type `T` in a store of that type.
    pub fn get<T>(&self, namespace: &str, name: &str) -> Option<Arc<T>>
    where
        T: Lookup<DynamicType = ()> + Clone + Send + Sync + 'static,
    {
        let stores = self.stores.read().unwrap_or_else(|e| e.into_inner());
        let key = ObjectRef::<T>::new(name).within(namespace);
        stores
            .get(&TypeId::of::<T>())?
            .iter()
            .filter_map(|s| s.downcast_ref::<Store<T>>())
            .find_map(|s| s.get(&key))
    }

    /// The names of the objects of kind `K` in `namespace` owned by `owner_uid` (an owner reference) and not
    /// being deleted, as the watches show them; `None` unless a store of `K` (whole or by metadata) exists
    /// and every such store has listed once (before that a store may not show what is there).
    pub fn owned_by<K>(&self, namespace: &str, owner_uid: &str) -> Option<Vec<String>>
    where
        K: Resource<DynamicType = ()> + Clone + Send + Sync + 'static,
    {
        fn matching<T: Resource<DynamicType = ()> + Clone>(
            store: &Store<T>,
            namespace: &str,
            owner_uid: &str,
        ) -> Option<Vec<String>> {
            store.wait_until_ready().now_or_never()?.ok()?;
            let found = store.state_filter(|obj| {
                let meta = obj.meta();
                meta.namespace.as_deref() == Some(namespace)
                    && meta.deletion_timestamp.is_none()
                    && is_owned_by(meta, owner_uid)
            });
            Some(
                found
                    .iter()
                    .map(|obj| obj.meta().name.clone().unwrap_or_default())
                    .collect(),
            )
        }
        let stores = self.stores.read().unwrap_or_else(|e| e.into_inner());
        let whole = stores.get(&TypeId::of::<K>()).into_iter().flatten();
        let meta = stores
            .get(&TypeId::of::<PartialObjectMeta<K>>())
            .into_iter()
            .flatten();
        let mut names = Vec::new();
        let mut any = false;
        for store in whole.chain(meta) {
            let found = if let Some(s) = store.downcast_ref::<Store<K>>() {
                matching(s, namespace, owner_uid)
            } else if let Some(s) = store.downcast_ref::<Store<PartialObjectMeta<K>>>() {
                matching(s, namespace, owner_uid)
            } else {
                None
            };
            names.extend(found?);
            any = true;
        }
        any.then_some(names)
    }

    /// The child `namespace/name` of kind `K` as a watch shows it, or `None` when no store has it (not
    /// watched, not listed yet, or not there).
    pub fn seen<K>(&self, namespace: &str, name: &str) -> Option<Seen<K>>
    where
        K: Resource<DynamicType = ()> + Clone + Send + Sync + 'static,
    {
        if let Some(obj) = self.get::<K>(namespace, name) {
            return Some(Seen {
                resource_version: obj.meta().resource_version.clone(),
                generation: obj.meta().generation,
                object: Some(obj),
            });
        }
        let meta = self.get::<PartialObjectMeta<K>>(namespace, name)?;
        Some(Seen {
            resource_version: meta.metadata.resource_version.clone(),
            generation: meta.metadata.generation,
            object: None,
        })
    }
}

type SecretKey = (String, String);

/// Secrets read by reconciles, kept until the Secret watch shows them changed. Serves nothing until a watch
/// has listed the Secrets once ([`SecretCache::observe`] of `InitDone`): without a watch (tests, `render`),
/// every read goes to the API server.
#[derive(Default, Debug)]
pub struct SecretCache {
    watched: AtomicBool,
    inner: Mutex<SecretEntries>,
}

#[derive(Default, Debug)]
struct SecretEntries {
    values: HashMap<SecretKey, Arc<Secret>>,
    /// Reads in flight, and whether the watch showed a change of that Secret meanwhile (then what the read
    /// returns may be older than the change, and is not kept).
    reading: HashMap<SecretKey, bool>,
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
                return Ok(Some(Secret::clone(s)));
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
                let mut kept = s.clone();
                kept.metadata.managed_fields = None;
                e.values.insert(key, Arc::new(kept));
            }
        }
        read
    }
}
