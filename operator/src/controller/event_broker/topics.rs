//! Managed-cloud topics (`aws_sns` or `google_pubsub` with `provision: true`): the four domain topics are
//! created before the publisher is built (its SNS ARN prefix may come from them), recorded in
//! `status.topics` and summarized in `TopicsReady`. With `deletionPolicy: Delete` the EventBroker carries
//! the finalizer `edgewire.dev/cleanup` and its deletion deletes the topics marked as ours (SNS tag
//! `edgewire.dev/owner=<namespace>/<name>`, Pub/Sub label `edgewire-dev-owner=<namespace>_<name>`, see
//! [`crate::cloud::pubsub`]); a topic without our mark is never deleted.

use super::refs::Refs;
use super::validate::ValidatedEventBroker;
use crate::cloud::CloudError;
use crate::cloud::aws::{AwsSettings, StaticKeys, keys, sdk_config};
use crate::cloud::pubsub::{self, PubsubSettings};
use crate::cloud::sns;
use crate::context::Context;
use crate::reconcile::{Error, Invalid, abandon_cleanup, has_finalizer, set_finalizer};
use edgewire_api::condition::{self, reasons, types};
use edgewire_api::domain::DOMAINS;
use edgewire_api::{
    Adapter, AwsSnsSpec, DeletionPolicy, EventBroker, EventBrokerStatus, GooglePubsubSpec,
    SnsTopicArnPrefix, TopicStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::ResourceExt;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use std::str::FromStr;
use std::time::Duration;
use tracing::{info, warn};

/// How soon failed provisioning is tried again.
pub const RETRY: Duration = Duration::from_secs(60);

/// One domain topic after provisioning, whichever the service.
#[derive(Clone, Debug, PartialEq)]
pub struct Topic {
    /// Domain (`nodes`).
    pub domain: &'static str,
    /// Topic name (`prod-edge-nodes-events`).
    pub name: String,
    /// SNS ARN or Pub/Sub topic path, once the service answered.
    pub id: Option<String>,
    /// Whether the topic carries our owner tag / label.
    pub owned: bool,
    pub error: Option<CloudError>,
}

impl From<sns::Topic> for Topic {
    fn from(t: sns::Topic) -> Self {
        Self {
            domain: t.domain,
            name: t.name,
            id: t.arn,
            owned: t.owned,
            error: t.error,
        }
    }
}

impl From<pubsub::Topic> for Topic {
    fn from(t: pubsub::Topic) -> Self {
        Self {
            domain: t.domain,
            name: t.name,
            id: t.id,
            owned: t.owned,
            error: t.error,
        }
    }
}

/// The SNS spec when this EventBroker provisions SNS topics.
pub fn sns_provisioning(eb: &EventBroker) -> Option<&AwsSnsSpec> {
    (eb.spec.adapter.canonical() == Adapter::AwsSns)
        .then_some(eb.spec.aws_sns.as_ref())
        .flatten()
        .filter(|s| s.provision)
}

/// The Pub/Sub spec when this EventBroker provisions Pub/Sub topics.
pub fn pubsub_provisioning(eb: &EventBroker) -> Option<&GooglePubsubSpec> {
    (eb.spec.adapter.canonical() == Adapter::GooglePubsub)
        .then_some(eb.spec.google_pubsub.as_ref())
        .flatten()
        .filter(|s| s.provision)
}

/// Whether this EventBroker provisions its topics.
pub fn provisioning(eb: &EventBroker) -> bool {
    sns_provisioning(eb).is_some() || pubsub_provisioning(eb).is_some()
}

/// `namespace/name`: the value of the SNS owner tag.
pub fn owner_tag(eb: &EventBroker) -> String {
    format!("{}/{}", eb.namespace().unwrap_or_default(), eb.name_any())
}

/// The value of the Pub/Sub owner label (`namespace_name`, see [`pubsub::owner_label`]).
pub fn owner_label(eb: &EventBroker) -> String {
    pubsub::owner_label(&eb.namespace().unwrap_or_default(), &eb.name_any())
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

/// Where and as whom the operator calls Pub/Sub: the service-account JSON of the referenced Secret key
/// (the one the publisher mounts), else Application Default Credentials (anonymous with an endpoint
/// override, for emulators).
pub fn pubsub_settings(ps: &GooglePubsubSpec, refs: &Refs) -> PubsubSettings {
    PubsubSettings {
        endpoint: ps.endpoint.clone(),
        credentials: ps
            .credentials
            .as_ref()
            .and_then(|c| refs.value(&c.name, &c.key)),
    }
}

/// The four topic paths of a Pub/Sub spec.
fn pubsub_paths(ps: &GooglePubsubSpec) -> Vec<String> {
    let prefix = ps.topic_id_prefix.as_deref().unwrap_or_default();
    DOMAINS
        .iter()
        .map(|d| pubsub::topic_path(&ps.project, prefix, d.topic))
        .collect()
}

async fn client(settings: &AwsSettings) -> aws_sdk_sns::Client {
    aws_sdk_sns::Client::new(&sdk_config(settings).await)
}

/// Creates the topics (idempotent), then fills in the SNS ARN prefix the publisher needs when the spec has
/// none. Returns the topics as the service answered.
pub async fn provision(eb: &EventBroker, v: &mut ValidatedEventBroker, refs: &Refs) -> Vec<Topic> {
    if v.adapter == Adapter::GooglePubsub {
        let Some(ps) = v.spec.google_pubsub.clone().filter(|s| s.provision) else {
            return Vec::new();
        };
        let prefix = ps.topic_id_prefix.clone().unwrap_or_default();
        return match pubsub::admin(&pubsub_settings(&ps, refs)).await {
            Ok(admin) => pubsub::ensure_topics(&admin, &ps.project, &prefix, &owner_label(eb))
                .await
                .into_iter()
                .map(Topic::from)
                .collect(),
            // No client (unusable credentials): every topic fails alike.
            Err(e) => DOMAINS
                .iter()
                .map(|d| Topic {
                    domain: d.name,
                    name: format!("{prefix}{}", d.topic),
                    id: None,
                    owned: false,
                    error: Some(e.clone()),
                })
                .collect(),
        };
    }
    let Some(sns_spec) = v.spec.aws_sns.clone().filter(|s| s.provision) else {
        return Vec::new();
    };
    // Validation parsed it; a prefix it refused never reaches here.
    let prefix = sns_spec
        .topic_arn_prefix
        .as_deref()
        .and_then(|p| SnsTopicArnPrefix::from_str(p).ok())
        .map(|p| p.name_prefix().to_string())
        .unwrap_or_default();
    let c = client(&aws_settings(&sns_spec, refs)).await;
    let topics: Vec<Topic> = sns::ensure_topics(&c, &prefix, &owner_tag(eb))
        .await
        .into_iter()
        .map(Topic::from)
        .collect();
    if sns_spec.topic_arn_prefix.is_none()
        && let Some(derived) = topics.iter().zip(DOMAINS).find_map(|(t, d)| {
            t.id.as_deref()
                .and_then(|arn| sns::arn_prefix_of(arn, d.topic))
        })
        && let Some(s) = v.spec.aws_sns.as_mut()
    {
        s.topic_arn_prefix = Some(derived);
    }
    topics
}

/// The Warning Event `ProvisioningFailed` naming what failed, on the transition into the failure only: not
/// again on each retry while `TopicsReady` already says so.
pub async fn record_failure(ctx: &Context, eb: &EventBroker, message: &str) {
    let already = eb
        .status
        .as_ref()
        .and_then(|s| condition::find(&s.conditions, types::TOPICS_READY))
        .is_some_and(|c| c.status == "False" && c.reason == reasons::PROVISIONING_FAILED);
    if !already {
        crate::status::publish(
            ctx,
            eb,
            EventType::Warning,
            reasons::PROVISIONING_FAILED,
            format!("topics not provisioned: {message}"),
        )
        .await;
    }
}

/// `TopicsReady` and `status.topics` from the provisioned topics (no topics: not applicable). `Ready` is
/// False while a topic failed, with `Stalled` when the cloud denied a call and `Reconciling` otherwise (see
/// [`crate::status::cloud_failure`]).
pub fn apply_status(eb: &EventBroker, status: &mut EventBrokerStatus, topics: &[Topic]) {
    if !provisioning(eb) {
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
        let mark = if pubsub_provisioning(eb).is_some() {
            format!("{}={} label", pubsub::OWNER_LABEL, owner_label(eb))
        } else {
            format!("{}={} tag", edgewire_api::OWNER_TAG, owner_tag(eb))
        };
        msg.push_str(&format!(
            "; not created by this EventBroker (no {mark}), used but never deleted: {}",
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
        let progress = crate::status::cloud_failure(topics.iter().filter_map(|t| t.error.as_ref()));
        conds.extend(condition::summary(
            progress,
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
            id: t.id.clone(),
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
    let want = provisioning(eb) && eb.spec.deletion_policy == DeletionPolicy::Delete;
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

/// Why the cleanup can never run, if the credentials it needs are gone (a referenced Secret or key missing).
fn credentials_gone(eb: &EventBroker, refs: &Refs, ctx: &Context) -> Option<String> {
    match super::validate::validate(eb, refs, &ctx.settings) {
        Err(e @ Invalid::Credentials(_)) => Some(e.to_string()),
        _ => None,
    }
}

/// `SNS topics arn:…:edge-nodes-events, …`: the topics a cleanup that cannot run leaves behind.
fn left_behind(service: &str, ids: &[String]) -> String {
    if ids.is_empty() {
        format!("{service} topics: none known")
    } else {
        format!("{service} topics {}", ids.join(", "))
    }
}

/// Deletion with the finalizer: under Delete, the topics marked as ours go (those in status, and the names
/// the spec gives when they are known), then the finalizer. When the credentials are gone the topics stay,
/// named in a Warning Event, and the finalizer goes all the same ([`abandon_cleanup`]).
pub async fn finalize(eb: &EventBroker, ctx: &Context) -> Result<Action, Error> {
    if eb.spec.deletion_policy == DeletionPolicy::Delete {
        let mut ids: Vec<String> = eb
            .status
            .as_ref()
            .map(|s| s.topics.iter().filter_map(|t| t.id.clone()).collect())
            .unwrap_or_default();
        let cleaned = match eb.spec.adapter.canonical() {
            Adapter::AwsSns => match eb.spec.aws_sns.as_ref() {
                Some(sns_spec) => {
                    if let Some(p) = &sns_spec.topic_arn_prefix {
                        for d in DOMAINS {
                            let arn = format!("{p}{}", d.topic);
                            if !ids.contains(&arn) {
                                ids.push(arn);
                            }
                        }
                    }
                    let refs = super::refs::fetch(ctx, eb).await.map_err(Error::Refs)?;
                    if let Some(why) = credentials_gone(eb, &refs, ctx) {
                        return abandon_cleanup(ctx, eb, &left_behind("SNS", &ids), &why).await;
                    }
                    let c = client(&aws_settings(sns_spec, &refs)).await;
                    Some(("SNS", sns::delete_owned(&c, &ids, &owner_tag(eb)).await))
                }
                None => None,
            },
            Adapter::GooglePubsub => match eb.spec.google_pubsub.as_ref() {
                Some(ps) => {
                    for path in pubsub_paths(ps) {
                        if !ids.contains(&path) {
                            ids.push(path);
                        }
                    }
                    let refs = super::refs::fetch(ctx, eb).await.map_err(Error::Refs)?;
                    if let Some(why) = credentials_gone(eb, &refs, ctx) {
                        return abandon_cleanup(ctx, eb, &left_behind("Pub/Sub", &ids), &why).await;
                    }
                    let result = match pubsub::admin(&pubsub_settings(ps, &refs)).await {
                        Ok(admin) => pubsub::delete_owned(&admin, &ids, &owner_label(eb)).await,
                        Err(e) => Err(e),
                    };
                    Some(("Pub/Sub", result))
                }
                None => None,
            },
            _ => None,
        };
        match cleaned {
            Some((service, Ok(deleted))) => info!(service, ?deleted, "topics deleted"),
            Some((service, Err(e))) => {
                warn!(service, error = %e, "topics not deleted");
                crate::status::publish(
                    ctx,
                    eb,
                    EventType::Warning,
                    reasons::CLEANUP_FAILED,
                    e.to_string(),
                )
                .await;
                return Err(Error::Cleanup(e));
            }
            None => {}
        }
    }
    set_finalizer(&ctx.client, eb, false)
        .await
        .map_err(Error::Finalizer)?;
    Ok(Action::await_change())
}
