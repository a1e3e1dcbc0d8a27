//! The EventBroker controller: `refs` (fetch Secrets) → `validate` (pure) → `build` (pure) → `apply` (SSA)
//! → `status`.

pub mod apply;
pub mod build;
pub mod names;
pub mod refs;
pub mod status;
pub mod topics;
pub mod validate;

pub use names::{KIND_LABEL, PUBLISHER_APP, PUBLISHER_PORT, generated_secret_name};
pub use validate::{BrokerAuth, BrokerPlan, ValidatedEventBroker};

use super::{Controlled, Owned};
use crate::context::Context;
use crate::reconcile::{Error, Notes, Reconciled, finish, not_reconciled};
use edgewire_api::{EventBroker, EventBrokerStatus};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::runtime::Controller;
use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};
use std::sync::Arc;
use std::time::Duration;
use tracing::{info, instrument, warn};

/// How often a healthy EventBroker is looked at again even without a change.
pub const RESYNC: Duration = Duration::from_secs(300);

impl Reconciled for EventBroker {
    type Status = EventBrokerStatus;
    const KIND_LABEL: &'static str = KIND_LABEL;
    /// A missing Secret appears through the Secret watch; look again now and then regardless.
    const MISSING_RETRY: Duration = Duration::from_secs(60);
    fn operator_status(&self) -> Option<EventBrokerStatus> {
        self.status.clone()
    }
}

impl Controlled for EventBroker {
    fn referenced_secrets(&self) -> Vec<String> {
        refs::referenced_secret_names(self)
    }
    /// Also its publisher Deployments (and the broker UI's), and the publisher's ServiceAccount.
    fn owns(c: Controller<Self>, owned: &Owned<'_>) -> Controller<Self> {
        let c = owned.whole::<Self, Deployment>(owned.workloads(c));
        owned.metadata::<Self, ServiceAccount>(c)
    }
    fn reconcile(
        eb: Arc<Self>,
        ctx: Arc<Context>,
    ) -> impl Future<Output = Result<Action, Error>> + Send + 'static {
        reconcile(eb, ctx)
    }
}

#[instrument(skip(eb, ctx), fields(name = %eb.name_any(), namespace = eb.namespace().unwrap_or_default()))]
pub async fn reconcile(eb: Arc<EventBroker>, ctx: Arc<Context>) -> Result<Action, Error> {
    let _timer = ctx.metrics.reconcile(KIND_LABEL);
    if eb.meta().deletion_timestamp.is_some() {
        if topics::needs_finalize(&eb) {
            return topics::finalize(&eb, &ctx).await;
        }
        // Children carry owner references: the garbage collector removes them.
        return Ok(Action::await_change());
    }
    let refs = refs::fetch(&ctx, &eb).await.map_err(Error::Refs)?;
    let valid = match validate::validate(&eb, &refs, &ctx.settings) {
        Ok(v) => v,
        Err(err) => return not_reconciled(&ctx, &*eb, &err, status::failed(&eb, &err)).await,
    };
    let mut valid = valid;
    topics::sync_finalizer(&ctx, &eb).await?;
    let provisioned = topics::provision(&eb, &mut valid, &refs).await;
    let topics_failed = topics::failure(&provisioned);
    if topics::sns_provisioning(&eb).is_some()
        && valid
            .spec
            .aws_sns
            .as_ref()
            .is_some_and(|s| s.topic_arn_prefix.is_none())
    {
        // No topic answered: the publisher's ARN prefix is unknown; nothing to apply yet.
        let mut st = eb.status.clone().unwrap_or_default();
        st.observed_generation = eb.metadata.generation;
        topics::apply_status(&eb, &mut st, &provisioned);
        crate::status::write(&ctx.client, &*eb, eb.status.as_ref(), st)
            .await
            .map_err(Error::Status)?;
        if let Some(msg) = &topics_failed {
            topics::record_failure(&ctx, &eb, msg).await;
        }
        warn!(error = ?topics_failed, "topics not provisioned");
        return Ok(Action::requeue(topics::RETRY));
    }
    let desired = build::build(&valid);
    let applied = apply::apply(&ctx.client, &ctx.applied, &valid.owner, desired)
        .await
        .map_err(Error::Apply)?;
    if !applied.swept.is_empty() {
        info!(deleted = ?applied.swept, "removed children no longer wanted");
    }
    let mut new_status = status::desired(&eb, &valid, &applied);
    topics::apply_status(&eb, &mut new_status, &provisioned);
    finish(
        &ctx,
        &*eb,
        new_status,
        Notes {
            ready: "broker and publisher are ready".into(),
            rotated: "referenced Secrets changed; workloads roll",
        },
    )
    .await?;
    if let Some(msg) = topics_failed {
        ctx.metrics.error(
            KIND_LABEL,
            edgewire_api::condition::reasons::PROVISIONING_FAILED,
        );
        topics::record_failure(&ctx, &eb, &msg).await;
        warn!(error = %msg, "topics not provisioned");
        return Ok(Action::requeue(topics::RETRY));
    }
    Ok(Action::requeue(RESYNC))
}
