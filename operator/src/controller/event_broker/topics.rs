//! Managed-cloud topics (`aws_sns` with `provision: true`): the four domain topics are created before the
//! publisher is built (its ARN prefix may come from them), recorded in `status.topics` and summarized in
//! `TopicsReady`. With `deletionPolicy: Delete` the EventBroker carries the finalizer `edgewire.dev/cleanup`
//! and its deletion deletes the topics tagged as ours (`edgewire.dev/owner=<namespace>/<name>`); a topic
//! without our tag is never deleted.

use super::ValidatedEventBroker;
use super::refs::Refs;
use crate::cloud::aws::{AwsSettings, StaticKeys, keys, sdk_config};
use crate::cloud::sns::{self, Topic};
use crate::context::Context;
use crate::controller::{Error, has_finalizer, set_finalizer};
use edgewire_api::condition::{self, reasons, types};
use edgewire_api::domain::DOMAINS;
use edgewire_api::{
    Adapter, AwsSnsSpec, DeletionPolicy, EventBroker, EventBrokerStatus, TopicStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::ResourceExt;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use std::time::Duration;
use tracing::{info, warn};

/// How soon failed provisioning is tried again.
pub const RETRY: Duration = Duration::from_secs(60);

/// The SNS spec when this EventBroker provisions its topics.
pub fn provisioning(eb: &EventBroker) -> Option<&AwsSnsSpec> {
    (eb.spec.adapter.canonical() == Adapter::AwsSns)
        .then_some(eb.spec.aws_sns.as_ref())
        .flatten()
        .filter(|s| s.provision)
}

/// `namespace/name`: the value of the owner tag.
pub fn owner_tag(eb: &EventBroker) -> String {
    format!("{}/{}", eb.namespace().unwrap_or_default(), eb.name_any())
}

/// Where and as whom the operator calls SNS (static keys from the referenced Secret, else the default chain).
pub fn aws_settings(sns: &AwsSnsSpec, refs: &Refs) -> AwsSettings {
    let credentials = sns.credentials.as_ref().and_then(|c| {
        Some(StaticKeys {
            access_key_id: refs.value(&c.secret_name, keys::ACCESS_KEY_ID)?,
            secret_access_key: refs.value(&c.secret_name, keys::SECRET_ACCESS_KEY)?,
            session_token: refs.value(&c.secret_name, keys::SESSION_TOKEN),
        })
    });
    AwsSettings {
        region: sns.region.clone(),
        endpoint: sns.endpoint.clone(),
        credentials,
    }
}

async fn client(settings: &AwsSettings) -> aws_sdk_sns::Client {
    aws_sdk_sns::Client::new(&sdk_config(settings).await)
}

/// Creates the topics (idempotent), then fills in the ARN prefix the publisher needs when the spec has none.
/// Returns the topics as SNS answered.
pub async fn provision(eb: &EventBroker, v: &mut ValidatedEventBroker, refs: &Refs) -> Vec<Topic> {
    let Some(sns_spec) = v.spec.aws_sns.clone().filter(|s| s.provision) else {
        return Vec::new();
    };
    let prefix = sns_spec
        .topic_arn_prefix
        .as_deref()
        .and_then(sns::name_prefix)
        .unwrap_or_default()
        .to_string();
    let c = client(&aws_settings(&sns_spec, refs)).await;
    let topics = sns::ensure_topics(&c, &prefix, &owner_tag(eb)).await;
    if sns_spec.topic_arn_prefix.is_none()
        && let Some(derived) = topics.iter().zip(DOMAINS).find_map(|(t, d)| {
            t.arn
                .as_deref()
                .and_then(|arn| sns::arn_prefix_of(arn, d.topic))
        })
        && let Some(s) = v.spec.aws_sns.as_mut()
    {
        s.topic_arn_prefix = Some(derived);
    }
    topics
}

/// `TopicsReady` and `status.topics` from the provisioned topics (no topics: not applicable). `Ready` is
/// False while a topic failed.
pub fn apply_status(eb: &EventBroker, status: &mut EventBrokerStatus, topics: &[Topic]) {
    if provisioning(eb).is_none() {
        return;
    }
    let generation = eb.metadata.generation;
    let failed_msg = failure(topics);
    let foreign: Vec<&str> = topics
        .iter()
        .filter(|t| t.error.is_none() && !t.owned)
        .map(|t| t.name.as_str())
        .collect();
    let ok = failed_msg.is_none();
    let mut msg = match &failed_msg {
        None => format!("{} topics provisioned", topics.len()),
        Some(f) => {
            let n = topics.iter().filter(|t| t.error.is_some()).count();
            format!("{n} of {} topics failed: {f}", topics.len())
        }
    };
    if !foreign.is_empty() {
        msg.push_str(&format!(
            "; not created by this EventBroker (no {}={} tag), used but never deleted: {}",
            edgewire_api::OWNER_TAG,
            owner_tag(eb),
            foreign.join(", ")
        ));
    }
    let topics_cond = condition::new(
        types::TOPICS_READY,
        ok,
        if ok {
            reasons::PROVISIONED
        } else {
            reasons::PROVISIONING_FAILED
        },
        msg.clone(),
        generation,
    );
    let mut conds: Vec<Condition> = vec![topics_cond];
    if !ok {
        conds.push(condition::new(
            types::READY,
            false,
            reasons::PROVISIONING_FAILED,
            msg,
            generation,
        ));
    }
    status.conditions = condition::update(&status.conditions, conds);
    status.topics = topics
        .iter()
        .map(|t| TopicStatus {
            domain: t.domain.into(),
            name: t.name.clone(),
            id: t.arn.clone(),
        })
        .collect();
}

/// The message when any topic failed: the topics that failed alike, then why (`a, b: sns:CreateTopic denied
/// (AuthorizationError): ...`), groups joined by `; `.
pub fn failure(topics: &[Topic]) -> Option<String> {
    let mut groups: Vec<(String, Vec<&str>)> = Vec::new();
    for t in topics {
        let Some(e) = &t.error else { continue };
        let why = e.to_string();
        match groups.iter_mut().find(|(w, _)| *w == why) {
            Some((_, names)) => names.push(&t.name),
            None => groups.push((why, vec![&t.name])),
        }
    }
    (!groups.is_empty()).then(|| {
        groups
            .iter()
            .map(|(why, names)| format!("{}: {why}", names.join(", ")))
            .collect::<Vec<_>>()
            .join("; ")
    })
}

/// Adds the finalizer with provisioning under Delete, removes it otherwise.
pub async fn sync_finalizer(ctx: &Context, eb: &EventBroker) -> Result<(), Error> {
    let want = provisioning(eb).is_some() && eb.spec.deletion_policy == DeletionPolicy::Delete;
    if set_finalizer(&ctx.client, eb, want)
        .await
        .map_err(Error::Finalizer)?
    {
        info!(finalizer = want, "finalizer updated");
    }
    Ok(())
}

/// Whether the deletion of `eb` waits for [`finalize`].
pub fn needs_finalize(eb: &EventBroker) -> bool {
    has_finalizer(eb)
}

/// Deletion with the finalizer: under Delete, the topics tagged as ours go (those in status, and the names
/// the spec gives when an ARN prefix is known), then the finalizer.
pub async fn finalize(eb: &EventBroker, ctx: &Context) -> Result<Action, Error> {
    if eb.spec.deletion_policy == DeletionPolicy::Delete
        && let Some(sns_spec) = eb.spec.aws_sns.as_ref()
    {
        let mut arns: Vec<String> = eb
            .status
            .as_ref()
            .map(|s| s.topics.iter().filter_map(|t| t.id.clone()).collect())
            .unwrap_or_default();
        if let Some(p) = &sns_spec.topic_arn_prefix {
            for d in DOMAINS {
                let arn = format!("{p}{}", d.topic);
                if !arns.contains(&arn) {
                    arns.push(arn);
                }
            }
        }
        let refs = super::refs::fetch(&ctx.client, eb)
            .await
            .map_err(Error::Refs)?;
        let c = client(&aws_settings(sns_spec, &refs)).await;
        match sns::delete_owned(&c, &arns, &owner_tag(eb)).await {
            Ok(deleted) => info!(?deleted, "SNS topics deleted"),
            Err(e) => {
                warn!(error = %e, "SNS topics not deleted");
                crate::status::publish(ctx, eb, EventType::Warning, "CleanupFailed", e.to_string())
                    .await;
                return Err(Error::Cleanup(e));
            }
        }
    }
    set_finalizer(&ctx.client, eb, false)
        .await
        .map_err(Error::Finalizer)?;
    Ok(Action::await_change())
}
