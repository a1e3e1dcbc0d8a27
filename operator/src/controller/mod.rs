//! One controller per kind, and what they share: the reconcile error, the root watch (generation changes
//! only), the reverse index from Secrets to the resources that reference them, and the driver that wraps
//! reconcile in per-object backoff.

pub mod backoff;
pub mod bridge_link;
pub mod event_broker;
pub mod mqtt_broker;

use crate::context::Context;
use backoff::Backoff;
use edgewire_api::BridgeLink;
use edgewire_api::EventBroker;
use futures::{Stream, StreamExt};
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{Secret, Service};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher::{self, Config};
use kube::runtime::{WatchStreamExt, predicates};
use kube::{Api, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use std::fmt::Debug;
use std::future::Future;
use std::sync::Arc;
use tracing::{debug, warn};

/// Why a reconcile failed (transient: the error policy requeues with backoff).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reading referenced Secrets: {0}")]
    Refs(#[source] kube::Error),
    #[error("applying children: {0}")]
    Apply(#[source] kube::Error),
    #[error("writing status: {0}")]
    Status(#[source] kube::Error),
    #[error("updating the finalizer: {0}")]
    Finalizer(#[source] kube::Error),
    #[error("cleaning up before deletion: {0}")]
    Cleanup(#[source] crate::cloud::CloudError),
}

impl Error {
    /// Condition reason, Event reason and metric label.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::Refs(_) => "SecretReadFailed",
            Error::Apply(_) => "ApplyFailed",
            Error::Status(_) => "StatusWriteFailed",
            Error::Finalizer(_) => "FinalizerUpdateFailed",
            Error::Cleanup(_) => "CleanupFailed",
        }
    }
}

/// The finalizer on a resource whose deletion must clean up outside the cluster (an IoT topic rule, SNS or
/// Pub/Sub topics). Present only with `deletionPolicy: Delete`.
pub const FINALIZER: &str = "edgewire.dev/cleanup";

/// Whether `obj` carries [`FINALIZER`].
pub fn has_finalizer<K: Resource>(obj: &K) -> bool {
    obj.meta()
        .finalizers
        .as_ref()
        .is_some_and(|f| f.iter().any(|x| x == FINALIZER))
}

/// Adds (`want`) or removes [`FINALIZER`] with a merge patch of `metadata.finalizers` guarded by the
/// resourceVersion (a concurrent change makes it fail and the reconcile retry). Other finalizers are kept.
/// Returns whether it patched.
pub async fn set_finalizer<K>(
    client: &kube::Client,
    obj: &K,
    want: bool,
) -> Result<bool, kube::Error>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + DeserializeOwned
        + Clone
        + Debug,
{
    if has_finalizer(obj) == want {
        return Ok(false);
    }
    let mut next: Vec<String> = obj
        .meta()
        .finalizers
        .clone()
        .unwrap_or_default()
        .into_iter()
        .filter(|f| f != FINALIZER)
        .collect();
    if want {
        next.push(FINALIZER.into());
    }
    let api: Api<K> = Api::namespaced(client.clone(), &obj.namespace().unwrap_or_default());
    let patch = serde_json::json!({
        "metadata": {"finalizers": next, "resourceVersion": obj.resource_version()},
    });
    api.patch(
        &obj.name_any(),
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(&patch),
    )
    .await?;
    Ok(true)
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

/// Bounds every watched root kind meets.
pub(crate) trait Root:
    Resource<Scope = NamespaceResourceScope, DynamicType = ()>
    + DeserializeOwned
    + Clone
    + Debug
    + Send
    + Sync
    + 'static
{
}
impl<K> Root for K where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + DeserializeOwned
        + Clone
        + Debug
        + Send
        + Sync
        + 'static
{
}

/// The root stream of a controller and its store: only changes of `key` pass (for most kinds
/// [`generation_or_deletion`]: spec changes), so the controller's own status writes do not loop back into
/// reconciles.
fn root<K: Root>(
    client: &kube::Client,
    ns: Option<&str>,
    key: fn(&K) -> Option<u64>,
) -> (
    impl Stream<Item = Result<K, watcher::Error>> + Send + 'static,
    Store<K>,
) {
    let (reader, writer) = kube::runtime::reflector::store::<K>();
    let stream = kube::runtime::watcher(api::<K>(client, ns), Config::default().any_semantic())
        .default_backoff()
        .reflect(writer)
        .applied_objects()
        .predicate_filter(key, Default::default());
    (stream, reader)
}

/// The root predicate: a new generation, or the start of a deletion (an API server that does not bump the
/// generation when it sets `deletionTimestamp` must still wake the finalizer).
fn generation_or_deletion<K: Resource>(obj: &K) -> Option<u64> {
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

/// Reverse index: a Secret event maps to every resource in its namespace that references it.
fn secret_index<K: Root>(
    store: Store<K>,
    referenced: fn(&K) -> Vec<String>,
) -> impl Fn(Secret) -> Vec<ObjectRef<K>> + Send + Sync + 'static {
    move |secret: Secret| {
        let ns = secret.namespace();
        let name = secret.name_any();
        store
            .state()
            .into_iter()
            .filter(|obj| obj.namespace() == ns && referenced(obj).contains(&name))
            .map(|obj| ObjectRef::from_obj(&*obj))
            .collect()
    }
}

/// Runs `controller` until `shutdown` resolves: reconcile wrapped in per-object exponential backoff, reset
/// on success; errors counted per kind and reason.
async fn drive<K, Fut>(
    controller: Controller<K>,
    ctx: Arc<Context>,
    kind_label: &'static str,
    reconcile: fn(Arc<K>, Arc<Context>) -> Fut,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) where
    K: Root,
    Fut: Future<Output = Result<Action, Error>> + Send + 'static,
{
    let key_of = |obj: &K| format!("{}/{}", obj.namespace().unwrap_or_default(), obj.name_any());
    let backoff = Arc::new(Backoff::default());
    let policy_backoff = backoff.clone();
    let policy_ctx = ctx.clone();
    controller
        .graceful_shutdown_on(shutdown)
        .run(
            move |obj, ctx| {
                let backoff = backoff.clone();
                async move {
                    let key = key_of(&obj);
                    let result = reconcile(obj, ctx).await;
                    if result.is_ok() {
                        backoff.reset(&key);
                    }
                    result
                }
            },
            move |obj, err: &Error, _ctx| {
                policy_ctx.metrics.error(kind_label, err.reason());
                let wait = policy_backoff.fail(&key_of(&obj));
                warn!(kind = kind_label, name = %obj.name_any(), error = %err, retry_in = ?wait, "reconcile failed");
                Action::requeue(wait)
            },
            ctx,
        )
        .for_each(|res| async move {
            if let Err(e) = res {
                debug!(error = %e, "controller event");
            }
        })
        .await;
}

/// Runs the EventBroker controller until `shutdown` resolves.
pub async fn run_event_broker(
    ctx: Arc<Context>,
    namespace: Option<String>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let client = ctx.client.clone();
    let ns = namespace.as_deref();
    let (stream, reader) = root::<EventBroker>(&client, ns, generation_or_deletion);
    let owned = owned(event_broker::KIND_LABEL);
    let controller = Controller::for_stream(stream, reader.clone())
        .owns(api::<Deployment>(&client, ns), owned.clone())
        .owns(api::<StatefulSet>(&client, ns), owned.clone())
        .owns(api::<Service>(&client, ns), owned.clone())
        .owns(api::<Secret>(&client, ns), owned)
        .watches(
            api::<Secret>(&client, ns),
            Config::default().any_semantic(),
            secret_index(reader, event_broker::refs::referenced_secret_names),
        );
    drive(
        controller,
        ctx,
        event_broker::KIND_LABEL,
        event_broker::reconcile,
        shutdown,
    )
    .await;
}

/// Runs the MqttBroker controller until `shutdown` resolves.
pub async fn run_mqtt_broker(
    ctx: Arc<Context>,
    namespace: Option<String>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let client = ctx.client.clone();
    let ns = namespace.as_deref();
    let (stream, reader) = root::<edgewire_api::MqttBroker>(&client, ns, generation_or_deletion);
    let owned = owned(mqtt_broker::KIND_LABEL);
    let controller = Controller::for_stream(stream, reader.clone())
        .owns(api::<StatefulSet>(&client, ns), owned.clone())
        .owns(api::<Service>(&client, ns), owned.clone())
        .owns(api::<Secret>(&client, ns), owned)
        .watches(
            api::<Secret>(&client, ns),
            Config::default().any_semantic(),
            secret_index(reader, mqtt_broker::refs::referenced_secret_names),
        );
    drive(
        controller,
        ctx,
        mqtt_broker::KIND_LABEL,
        mqtt_broker::reconcile,
        shutdown,
    )
    .await;
}

/// Runs the BridgeLink controller until `shutdown` resolves. Unlike the other kinds, its root passes more
/// than spec changes: the bridge agent's `status.runtime` reports drive `EdgeConnected`, `CloudConnected`,
/// `Spooling` and the `SpoolOverflow` Event, so the predicate keys on those too (see
/// [`bridge_link::watch_key`]); the operator's own condition writes do not change the key and do not loop.
pub async fn run_bridge_link(
    ctx: Arc<Context>,
    namespace: Option<String>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let client = ctx.client.clone();
    let ns = namespace.as_deref();
    let (stream, reader) = root::<BridgeLink>(&client, ns, bridge_link::watch_key);
    let owned = owned(bridge_link::KIND_LABEL);
    let controller = Controller::for_stream(stream, reader.clone())
        .owns(api::<StatefulSet>(&client, ns), owned.clone())
        .owns(api::<Service>(&client, ns), owned.clone())
        .owns(api::<Secret>(&client, ns), owned)
        .watches(
            api::<Secret>(&client, ns),
            Config::default().any_semantic(),
            secret_index(reader, bridge_link::referenced_secret_names),
        );
    drive(
        controller,
        ctx,
        bridge_link::KIND_LABEL,
        bridge_link::reconcile,
        shutdown,
    )
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;
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
