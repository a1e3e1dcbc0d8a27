//! One controller per kind, and the runner that starts them.

pub mod backoff;
pub mod event_broker;
pub mod mqtt_broker;

use crate::context::Context;
use backoff::Backoff;
use edgewire_api::EventBroker;
use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{Secret, Service};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher::Config;
use kube::runtime::{WatchStreamExt, predicates};
use kube::{Api, ResourceExt};
use std::future::Future;
use std::sync::Arc;
use tracing::{debug, warn};

/// Which namespaces to watch: all, or one.
fn api<K>(client: &kube::Client, namespace: Option<&str>) -> Api<K>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// Runs the EventBroker controller until `shutdown` resolves.
pub async fn run_event_broker(
    ctx: Arc<Context>,
    namespace: Option<String>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let client = ctx.client.clone();
    let ns = namespace.as_deref();
    let ebs: Api<EventBroker> = api(&client, ns);
    // Only spec changes (generation) trigger the root: status writes do not loop back.
    let root = kube::runtime::reflector::store::<EventBroker>();
    let (reader, writer) = root;
    let stream = kube::runtime::watcher(ebs, Config::default().any_semantic())
        .default_backoff()
        .reflect(writer)
        .applied_objects()
        .predicate_filter(predicates::generation, Default::default());
    let labels = format!(
        "{}={}",
        edgewire_api::labels::OWNER_KIND,
        event_broker::KIND_LABEL
    );
    let owned = Config::default().labels(&labels).any_semantic();
    let index = reader.clone();
    let backoff = Arc::new(Backoff::default());
    let policy_backoff = backoff.clone();
    let policy_ctx = ctx.clone();
    Controller::for_stream(stream, reader)
        .owns(api::<Deployment>(&client, ns), owned.clone())
        .owns(api::<StatefulSet>(&client, ns), owned.clone())
        .owns(api::<Service>(&client, ns), owned.clone())
        .owns(api::<Secret>(&client, ns), owned)
        // Reverse index: a Secret event reconciles every EventBroker in its namespace that references it.
        .watches(
            api::<Secret>(&client, ns),
            Config::default().any_semantic(),
            move |secret: Secret| {
                let sns = secret.namespace();
                let name = secret.name_any();
                index
                    .state()
                    .into_iter()
                    .filter(|eb| {
                        eb.namespace() == sns
                            && event_broker::refs::referenced_secret_names(eb).contains(&name)
                    })
                    .map(|eb| ObjectRef::from_obj(&*eb))
                    .collect::<Vec<_>>()
            },
        )
        .graceful_shutdown_on(shutdown)
        .run(
            move |eb, ctx| {
                let backoff = backoff.clone();
                async move {
                    let key = key_of(&eb);
                    let result = event_broker::reconcile(eb, ctx).await;
                    if result.is_ok() {
                        backoff.reset(&key);
                    }
                    result
                }
            },
            move |eb, err, _ctx| {
                policy_ctx
                    .metrics
                    .error(event_broker::KIND_LABEL, err.reason());
                let wait = policy_backoff.fail(&key_of(&eb));
                warn!(name = %eb.name_any(), error = %err, retry_in = ?wait, "reconcile failed");
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

fn key_of(eb: &EventBroker) -> String {
    format!("{}/{}", eb.namespace().unwrap_or_default(), eb.name_any())
}
