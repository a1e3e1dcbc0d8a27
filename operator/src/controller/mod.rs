//! One controller per kind and the runner they share: the root watch (generation changes only, one
//! undecodable object skipped rather than stalling the watch), `.owns()` children, the reverse index from
//! Secrets to the resources that reference them, and the driver that wraps reconcile in per-object backoff.
//! A kind plugs in by implementing [`Controlled`]; [`run`] is the same for all.

pub mod backoff;
pub mod bridge_link;
pub mod event_broker;
pub mod fair;
pub mod mqtt_broker;

use crate::apply::{Memo, Namespaced};
use crate::cache::SecretCache;
use crate::context::Context;
use crate::reconcile::{Error, Reconciled};
use crate::rollout::Workload;
use backoff::Backoff;
use futures::{FutureExt, Stream, StreamExt};
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{Secret, Service};
use kube::core::{DeserializeGuard, PartialObjectMeta};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher::{self, Config, Event};
use kube::runtime::{WatchStreamExt, predicates};
use kube::{Api, Client, Resource, ResourceExt};
use std::future::Future;
use std::sync::Arc;
use tracing::{debug, warn};

/// The annotation in which client-side `kubectl apply` keeps the object it last applied.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// A kind the operator runs a controller for.
pub trait Controlled: Reconciled + Send + Sync + 'static {
    /// The root predicate: only changes of this key wake a reconcile, so the controller's own status writes
    /// do not loop back. For most kinds [`generation_or_deletion`]: spec changes.
    fn watch_key(&self) -> Option<u64> {
        generation_or_deletion(self)
    }
    /// Names of the Secrets the object references (the reverse index from Secret to object).
    fn referenced_secrets(&self) -> Vec<String>;
    /// The controller with its children owned: StatefulSets, Services and Secrets unless a kind says more.
    fn owns(c: Controller<Self>, owned: &Owned<'_>) -> Controller<Self> {
        owned.workloads(c)
    }
    /// One reconcile: `refs → validate → build → apply → status`.
    fn reconcile(
        obj: Arc<Self>,
        ctx: Arc<Context>,
    ) -> impl Future<Output = Result<Action, Error>> + Send + 'static;
}

/// The watches of one controller's children: each selects the children of that controller's kind (the
/// owner-kind label), wakes the owner of what changes, and keeps what it shows in a store the reconciles
/// look children up in ([`Watched`](crate::cache::Watched)) instead of reading them.
pub struct Owned<'a> {
    client: &'a Client,
    ns: Option<&'a str>,
    config: Config,
    memo: &'a Memo,
}

impl Owned<'_> {
    /// `c` owning the StatefulSets, Services and Secrets of its kind.
    pub fn workloads<K: Controlled>(&self, c: Controller<K>) -> Controller<K> {
        let c = self.whole::<K, StatefulSet>(c);
        let c = self.metadata::<K, Service>(c);
        self.metadata::<K, Secret>(c)
    }

    /// `c` owning children of kind `C`, watched by their metadata only and kept as [`Children`](crate::cache::Children).
    pub fn metadata<K: Controlled, C: Namespaced>(&self, c: Controller<K>) -> Controller<K> {
        let children = self.memo.watched.children::<C>();
        // An Api of PartialObjectMeta asks the API server for metadata only.
        let stream = kube::runtime::watcher(
            api::<PartialObjectMeta<C>>(self.client, self.ns),
            self.config.clone(),
        )
        .default_backoff()
        .inspect(move |ev| {
            if let Ok(ev) = ev {
                children.observe_metadata(ev);
            }
        })
        .touched_objects();
        c.owns_stream(stream)
    }

    /// `c` owning workloads of kind `C`, watched whole and kept as [`Children`](crate::cache::Children) with their
    /// [`Rollout`](crate::rollout::Rollout): it drives the conditions.
    pub fn whole<K: Controlled, C: Workload + Namespaced>(
        &self,
        c: Controller<K>,
    ) -> Controller<K> {
        let children = self.memo.watched.children::<C>();
        let stream = kube::runtime::watcher(api::<C>(self.client, self.ns), self.config.clone())
            .default_backoff()
            .inspect(move |ev| {
                if let Ok(ev) = ev {
                    children.observe_workload(ev);
                }
            })
            .touched_objects();
        c.owns_stream(stream)
    }
}

/// Which namespaces to watch: all, or one.
pub(crate) fn api<K>(client: &kube::Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// The root stream of a controller and its store: only changes of [`Controlled::watch_key`] pass. Objects are
/// decoded one by one ([`DeserializeGuard`]): one that does not decode (written before a schema change, or
/// by hand with the schema off) is logged and skipped, and the others are still reconciled.
fn root<K: Controlled>(
    client: &Client,
    ns: Option<&str>,
    memo: Arc<Memo>,
) -> (
    impl Stream<Item = Result<K, watcher::Error>> + Send + 'static,
    Store<K>,
) {
    let (reader, writer) = kube::runtime::reflector::store::<K>();
    let stream = kube::runtime::watcher(
        api::<DeserializeGuard<K>>(client, ns),
        Config::default().any_semantic(),
    )
    .default_backoff()
    .filter_map(|ev| std::future::ready(decodable(ev)))
    // Managed fields are most of a resource's metadata, and `kubectl apply` (client-side) keeps a copy of the
    // whole object in an annotation: nothing here reads either, and the store keeps every object.
    .modify(|obj: &mut K| {
        let meta = obj.meta_mut();
        meta.managed_fields = None;
        if let Some(a) = meta.annotations.as_mut() {
            a.remove(LAST_APPLIED);
        }
    })
    .inspect(move |ev| {
        // A deleted object's children go with it: so does what was remembered about applying them.
        if let Ok(Event::Delete(obj)) = ev
            && let Some(uid) = obj.meta().uid.as_deref()
        {
            memo.forget(uid);
        }
    })
    .reflect(writer)
    .applied_objects()
    .predicate_filter(K::watch_key, Default::default());
    (stream, reader)
}

/// The watch event with its object decoded, or `None` (logged) for an object that does not decode.
fn decodable<K: Resource<DynamicType = ()>>(
    ev: Result<Event<DeserializeGuard<K>>, watcher::Error>,
) -> Option<Result<Event<K>, watcher::Error>> {
    let decoded = |g: DeserializeGuard<K>| match g.0 {
        Ok(obj) => Some(obj),
        Err(e) => {
            warn!(
                kind = %K::kind(&()),
                name = e.metadata.name.as_deref().unwrap_or_default(),
                namespace = e.metadata.namespace.as_deref().unwrap_or_default(),
                error = %e,
                "skipping an object that does not decode"
            );
            None
        }
    };
    Some(Ok(match ev {
        Err(e) => return Some(Err(e)),
        Ok(Event::Init) => Event::Init,
        Ok(Event::InitDone) => Event::InitDone,
        Ok(Event::InitApply(g)) => Event::InitApply(decoded(g)?),
        Ok(Event::Apply(g)) => Event::Apply(decoded(g)?),
        Ok(Event::Delete(g)) => Event::Delete(decoded(g)?),
    }))
}

/// The root predicate: a new generation, or the start of a deletion (an API server that does not bump the
/// generation when it sets `deletionTimestamp` must still wake the finalizer).
pub fn generation_or_deletion<K: Resource>(obj: &K) -> Option<u64> {
    let deleting = u64::from(obj.meta().deletion_timestamp.is_some());
    predicates::generation(obj).map(|g| (g << 1) | deleting)
}

/// Children of one kind are owned and watched by its owner-kind label.
fn owned(kind_label: &str) -> Config {
    Config::default()
        .labels(&format!(
            "{}={kind_label}",
            edgewire_api::labels::OWNER_KIND
        ))
        .any_semantic()
}

/// The Secrets' trigger stream: metadata only (name, namespace, resourceVersion; never `data`). Any change
/// of a Secret, its data included, changes its resourceVersion and arrives here, which is all the reverse
/// index needs; the values are read by the reconcile that follows, for the Secrets it references only. So
/// the operator neither receives nor decodes the data of every Secret in the cluster (issue 17). What the
/// reconciles read is kept until this watch shows it changed ([`SecretCache::observe`]).
fn secret_triggers(
    client: &Client,
    ns: Option<&str>,
    cache: Arc<SecretCache>,
) -> impl Stream<Item = Result<PartialObjectMeta<Secret>, watcher::Error>> + Send + 'static {
    // An Api of PartialObjectMeta asks the API server for metadata only.
    kube::runtime::watcher(
        api::<PartialObjectMeta<Secret>>(client, ns),
        Config::default().any_semantic(),
    )
    .default_backoff()
    .inspect(move |ev| {
        if let Ok(ev) = ev {
            cache.observe(ev);
        }
    })
    .touched_objects()
}

/// Reverse index: a Secret event maps to every resource in its namespace that references it. Objects of
/// other namespaces are passed over before their references are computed.
fn secret_index<K: Controlled>(
    store: Store<K>,
) -> impl Fn(PartialObjectMeta<Secret>) -> Vec<ObjectRef<K>> + Send + Sync + 'static {
    move |secret: PartialObjectMeta<Secret>| {
        let ns = secret.metadata.namespace.as_deref();
        let Some(name) = secret.metadata.name.as_deref() else {
            return Vec::new();
        };
        store
            .state()
            .into_iter()
            .filter(|obj| {
                obj.meta().namespace.as_deref() == ns
                    && obj.referenced_secrets().iter().any(|s| s == name)
            })
            .map(|obj| ObjectRef::from_obj(&*obj))
            .collect()
    }
}

/// Runs the controller of kind `K` until `shutdown` resolves: reconcile wrapped in per-object exponential
/// backoff, reset on success; errors counted per kind and reason.
pub async fn run<K: Controlled>(
    ctx: Arc<Context>,
    namespace: Option<String>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let client = ctx.client.clone();
    let ns = namespace.as_deref();
    let (stream, reader) = root::<K>(&client, ns, ctx.applied.clone());
    // A BridgeLink's reconcile finds the brokers it references in their controllers' stores.
    ctx.applied.watched.add(reader.clone());
    let shutdown = shutdown.shared();
    // kube's applier holds its runner until the root store has listed once, and does not see the shutdown
    // meanwhile: with the kind's list refused (CRD not installed, RBAC) it would never stop. Nothing has
    // been reconciled then, so stopping at once is the graceful stop.
    let stopped_before_ready = {
        let (shutdown, reader) = (shutdown.clone(), reader.clone());
        async move {
            shutdown.await;
            if reader.wait_until_ready().now_or_never().is_none() {
                debug!(
                    kind = K::KIND_LABEL,
                    "stopping before the first list completed"
                );
                return;
            }
            std::future::pending::<()>().await
        }
    };
    // The limit on reconciles at once is kept here, first come first served, not by kube (see `fair`).
    let fair = fair::Fair::new(ctx.settings.concurrent_reconciles, reader.clone());
    tokio::spawn({
        let (fair, shutdown) = (fair.clone(), shutdown.clone());
        async move {
            shutdown.await;
            fair.close();
        }
    });
    let owned = Owned {
        client: &client,
        ns,
        config: owned(K::KIND_LABEL),
        memo: &ctx.applied,
    };
    let controller = K::owns(Controller::for_stream(stream, reader.clone()), &owned)
        .watches_stream(
            secret_triggers(&client, ns, ctx.secrets.clone()),
            secret_index(reader),
        );
    let key_of = |obj: &K| format!("{}/{}", obj.namespace().unwrap_or_default(), obj.name_any());
    let backoff = Arc::new(Backoff::default());
    let policy_backoff = backoff.clone();
    let policy_ctx = ctx.clone();
    let running = controller
        .graceful_shutdown_on(shutdown)
        .run(
            move |obj, ctx| {
                let (backoff, fair) = (backoff.clone(), fair.clone());
                async move {
                    let Some(turn) = fair.turn(obj).await else {
                        return Ok(Action::await_change());
                    };
                    let key = key_of(&turn.obj);
                    // Boxed: a reconcile's future is tens of kilobytes, and one waits here for every object
                    // due; it is allocated when its turn comes, not while it waits.
                    let result = Box::pin(K::reconcile(turn.obj.clone(), ctx)).await;
                    if result.is_ok() {
                        backoff.reset(&key);
                    }
                    result
                }
            },
            move |obj, err: &Error, _ctx| {
                policy_ctx.metrics.error(K::KIND_LABEL, err.reason());
                let wait = policy_backoff.fail(&key_of(&obj));
                warn!(kind = K::KIND_LABEL, name = %obj.name_any(), error = %err, retry_in = ?wait, "reconcile failed");
                Action::requeue(wait)
            },
            ctx,
        )
        .for_each(|res| async move {
            if let Err(e) = res {
                debug!(error = %e, "controller event");
            }
        });
    tokio::select! {
        () = running => {}
        () = stopped_before_ready => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use edgewire_api::EventBroker;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    #[test]
    fn the_root_predicate_passes_a_deletion_without_a_new_generation() {
        let eb = EventBroker::test("e");
        let mut deleting = eb.clone();
        deleting.metadata.deletion_timestamp = Some(Time(Default::default()));
        assert_ne!(
            generation_or_deletion(&eb),
            generation_or_deletion(&deleting)
        );
        let mut status_only = eb.clone();
        status_only.metadata.resource_version = Some("99".into());
        assert_eq!(
            generation_or_deletion(&eb),
            generation_or_deletion(&status_only)
        );
    }
}
