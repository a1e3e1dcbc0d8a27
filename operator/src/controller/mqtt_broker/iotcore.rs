//! `type: iotcore`: no children in the cluster. The reconcile discovers the data endpoint
//! (`DescribeEndpoint`, `iot:Data-ATS`) and, when `topicRule` is set, creates or replaces the IoT topic rule
//! `SELECT * FROM '<ns>/writeonly/#'` with one SQS action. With `deletionPolicy: Delete` the MqttBroker
//! carries the finalizer `edgewire.dev/cleanup` and its deletion deletes the rule; with `Retain` it carries
//! none and the rule outlives it.
//!
//! `status.endpoint` is `<host>:8883` (IoT Core's MQTT-over-TLS port), or `spec.endpoint` when set.

use super::names::{KIND_LABEL, RESYNC};
use super::refs;
use super::validate;
use super::validate::ValidatedIotCore;
use crate::children::Owner;
use crate::cloud::CloudError;
use crate::cloud::aws::{AwsSettings, sdk_config};
use crate::cloud::iot::{self, MQTTS_PORT, RuleChange, rule_name_of_arn};
use crate::context::Context;
use crate::reconcile::Invalid;
use crate::reconcile::{Error, abandon_cleanup, has_finalizer, not_reconciled, set_finalizer};
use edgewire_api::condition::{self, Progress, reasons, types};
use edgewire_api::{DeletionPolicy, MqttBroker, MqttBrokerStatus};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use std::time::Duration;
use tracing::{info, warn};

/// How soon a failed AWS call is tried again.
pub const RETRY: Duration = Duration::from_secs(60);

/// What the AWS calls of one reconcile found.
#[derive(Clone, Debug, PartialEq)]
pub struct Observed {
    pub endpoint: Result<String, CloudError>,
    /// `None` when no topic rule is wanted.
    pub rule: Option<Result<iot::RuleOutcome, CloudError>>,
    /// A rule deleted because it was renamed or removed from the spec (Delete policy).
    pub old_rule: Option<Result<String, CloudError>>,
}

async fn client(aws: &AwsSettings) -> aws_sdk_iot::Client {
    aws_sdk_iot::Client::new(&sdk_config(aws).await)
}

/// Reconciles an iotcore MqttBroker (not being deleted).
pub async fn reconcile(mqb: &MqttBroker, ctx: &Context) -> Result<Action, Error> {
    let refs = refs::fetch(ctx, mqb).await.map_err(Error::Refs)?;
    let valid = match validate::validate_iotcore(mqb, &refs) {
        Ok(v) => v,
        Err(err) => {
            return not_reconciled(ctx, mqb, &err, super::status::failed(mqb, &err)).await;
        }
    };
    // Switched from builtin: its children go (owner references would only remove them with the MqttBroker).
    sweep_builtin(ctx, &valid.owner).await?;
    let want_finalizer = valid.deletion_policy == DeletionPolicy::Delete;
    if set_finalizer(&ctx.client, mqb, want_finalizer)
        .await
        .map_err(Error::Finalizer)?
    {
        info!(finalizer = want_finalizer, "finalizer updated");
    }
    let iot = client(&valid.aws).await;
    let endpoint = iot::describe_endpoint(&iot).await;
    let rule = match &valid.rule {
        Some(r) => Some(iot::ensure_rule(&iot, r).await),
        None => None,
    };
    // A rule the spec no longer names (renamed or removed) is ours to delete only under Delete.
    let previous = mqb
        .status
        .as_ref()
        .and_then(|s| s.topic_rule_arn.as_deref())
        .and_then(rule_name_of_arn)
        .map(str::to_string);
    let old_rule = match previous {
        Some(old) if want_finalizer && valid.rule.as_ref().is_none_or(|r| r.name != old) => {
            Some(iot::delete_rule(&iot, &old).await.map(|_| old))
        }
        _ => None,
    };
    let observed = Observed {
        endpoint,
        rule,
        old_rule,
    };
    if let Some(Ok(o)) = &observed.rule
        && o.change != RuleChange::Unchanged
    {
        let what = if o.change == RuleChange::Created {
            "created"
        } else {
            "replaced"
        };
        let name = valid
            .rule
            .as_ref()
            .map(|r| r.name.as_str())
            .unwrap_or_default();
        info!(rule = name, arn = %o.arn, "topic rule {what}");
        crate::status::publish(
            ctx,
            mqb,
            EventType::Normal,
            reasons::TOPIC_RULE_APPLIED,
            format!("IoT topic rule {name} {what}"),
        )
        .await;
    }
    let failed = failure(&observed);
    let new_status = desired(mqb, &valid, &observed);
    let old = mqb.status.clone().unwrap_or_default();
    let became_ready = condition::is_true(&new_status.conditions, types::READY)
        && !condition::is_true(&old.conditions, types::READY);
    let new_failure = failed.as_ref().is_some_and(|f| {
        condition::find(&old.conditions, types::READY).is_none_or(|c| c.message != *f)
    });
    crate::status::write(&ctx.client, mqb, mqb.status.as_ref(), new_status)
        .await
        .map_err(Error::Status)?;
    if became_ready {
        crate::status::publish(
            ctx,
            mqb,
            EventType::Normal,
            "Ready",
            "AWS IoT Core endpoint discovered".into(),
        )
        .await;
    }
    match failed {
        Some(msg) => {
            ctx.metrics.error(KIND_LABEL, reasons::PROVISIONING_FAILED);
            warn!(error = %msg, "AWS IoT Core not reconciled");
            if new_failure {
                crate::status::publish(
                    ctx,
                    mqb,
                    EventType::Warning,
                    reasons::PROVISIONING_FAILED,
                    msg,
                )
                .await;
            }
            Ok(Action::requeue(RETRY))
        }
        None => Ok(Action::requeue(RESYNC)),
    }
}

async fn sweep_builtin(ctx: &Context, owner: &Owner) -> Result<(), Error> {
    let swept = crate::apply::sweep_workload(&ctx.client, owner, &crate::apply::Kept::default())
        .await
        .map_err(Error::Apply)?;
    if !swept.is_empty() {
        info!(deleted = ?swept, "removed the builtin broker's children");
    }
    Ok(())
}

/// The message of the first failure, if any AWS call failed.
fn failure(o: &Observed) -> Option<String> {
    let mut msgs = Vec::new();
    if let Err(e) = &o.endpoint {
        msgs.push(e.to_string());
    }
    if let Some(Err(e)) = &o.rule {
        msgs.push(e.to_string());
    }
    if let Some(Err(e)) = &o.old_rule {
        msgs.push(e.to_string());
    }
    (!msgs.is_empty()).then(|| msgs.join("; "))
}

/// The status after the AWS calls of this reconcile.
pub fn desired(mqb: &MqttBroker, v: &ValidatedIotCore, o: &Observed) -> MqttBrokerStatus {
    let generation = mqb.metadata.generation;
    let current = mqb.status.clone().unwrap_or_default();
    let endpoint = o.endpoint.as_ref().ok().map(|host| {
        v.endpoint_override
            .clone()
            .unwrap_or_else(|| format!("{host}:{MQTTS_PORT}"))
    });
    let (endpoint_ok, endpoint_reason, endpoint_msg) = match &o.endpoint {
        Ok(host) => (
            true,
            reasons::READY,
            match &v.endpoint_override {
                // The discovered host is not what workers use; keep status stable.
                Some(e) => format!(
                    "spec.endpoint {e} ({} endpoint discovered)",
                    iot::ENDPOINT_TYPE
                ),
                None => format!("{} endpoint {host}", iot::ENDPOINT_TYPE),
            },
        ),
        Err(e) => (false, reasons::PROVISIONING_FAILED, e.to_string()),
    };
    let (rule_ok, rule_reason, rule_msg, rule_arn) = match (&o.rule, &v.rule) {
        (Some(Ok(out)), Some(r)) => (
            true,
            reasons::PROVISIONED,
            format!("rule {} forwards \"{}\" to {}", r.name, r.sql, r.queue_url),
            Some(out.arn.clone()),
        ),
        (Some(Err(e)), _) => (
            false,
            reasons::PROVISIONING_FAILED,
            e.to_string(),
            current.topic_rule_arn.clone(),
        ),
        _ => (
            true,
            reasons::NOT_APPLICABLE,
            "no topicRule in the spec".to_string(),
            None,
        ),
    };
    let (rule_ok, rule_reason, rule_msg) = match &o.old_rule {
        Some(Err(e)) => (false, reasons::PROVISIONING_FAILED, e.to_string()),
        _ => (rule_ok, rule_reason, rule_msg),
    };
    let (cred_reason, cred_msg) = match &v.credentials_secret {
        Some(s) => (
            reasons::SECRETS_RESOLVED,
            format!("static keys from Secret {s}"),
        ),
        None => (
            reasons::NOT_APPLICABLE,
            "no credentials Secret: the pod identity (IRSA) or the default AWS credential chain"
                .to_string(),
        ),
    };
    let ready = endpoint_ok && rule_ok;
    let ready_msg = match (ready, &endpoint) {
        (true, Some(e)) => format!("AWS IoT Core at {e}"),
        _ => [
            (!endpoint_ok).then_some(&endpoint_msg),
            (!rule_ok).then_some(&rule_msg),
        ]
        .into_iter()
        .flatten()
        .cloned()
        .collect::<Vec<_>>()
        .join("; "),
    };
    let conditions = vec![
        condition::new(
            types::ENDPOINT_READY,
            endpoint_ok,
            endpoint_reason,
            endpoint_msg,
            generation,
        ),
        condition::new(
            types::USERS_READY,
            true,
            reasons::NOT_APPLICABLE,
            "IoT Core authenticates devices with its own certificates and policies",
            generation,
        ),
        condition::new(
            types::CREDENTIALS_READY,
            true,
            cred_reason,
            cred_msg,
            generation,
        ),
        condition::new(
            types::TOPIC_RULE_READY,
            rule_ok,
            rule_reason,
            rule_msg,
            generation,
        ),
    ];
    let errors = [
        o.endpoint.as_ref().err(),
        o.rule.as_ref().and_then(|r| r.as_ref().err()),
        o.old_rule.as_ref().and_then(|r| r.as_ref().err()),
    ];
    let conditions = [
        conditions,
        condition::summary(
            if ready {
                Progress::Ready
            } else {
                crate::status::cloud_failure(errors.into_iter().flatten())
            },
            if ready {
                reasons::READY
            } else {
                reasons::PROVISIONING_FAILED
            },
            ready_msg,
            generation,
        ),
    ]
    .concat();
    MqttBrokerStatus {
        observed_generation: generation,
        conditions: condition::merge(&current.conditions, conditions),
        endpoint: endpoint.or(current.endpoint),
        credentials_revision: v.credentials_hash.clone(),
        users: Vec::new(),
        topic_rule_arn: rule_arn,
    }
}

/// Deletion of an iotcore MqttBroker that carries the finalizer: under `Delete` the rule goes (its name from
/// the spec, else from `status.topicRuleArn`), then the finalizer. A failed delete keeps the finalizer and
/// is retried; when the credentials are gone the rule stays, named in a Warning Event, and the finalizer goes
/// ([`abandon_cleanup`]).
pub async fn finalize(mqb: &MqttBroker, ctx: &Context) -> Result<Action, Error> {
    if mqb.spec.deletion_policy == DeletionPolicy::Delete {
        let name = mqb
            .spec
            .iotcore
            .as_ref()
            .and_then(|i| i.topic_rule.as_ref())
            .map(|r| r.name.clone())
            .or_else(|| {
                mqb.status
                    .as_ref()
                    .and_then(|s| s.topic_rule_arn.as_deref())
                    .and_then(rule_name_of_arn)
                    .map(str::to_string)
            });
        if let Some(name) = name {
            let refs = refs::fetch(ctx, mqb).await.map_err(Error::Refs)?;
            let valid = match validate::validate_iotcore(mqb, &refs) {
                Ok(v) => v,
                Err(err @ Invalid::Credentials(_)) => {
                    let left = format!("IoT topic rule {name}");
                    return abandon_cleanup(ctx, mqb, &left, &err.to_string()).await;
                }
                Err(err @ Invalid::Spec { .. }) => {
                    warn!(error = %err, "cannot delete the topic rule");
                    crate::status::publish(
                        ctx,
                        mqb,
                        EventType::Warning,
                        reasons::CLEANUP_FAILED,
                        format!("cannot delete IoT topic rule {name}: {err}"),
                    )
                    .await;
                    return Ok(Action::requeue(RETRY));
                }
                Err(Invalid::Metadata) => return Ok(Action::await_change()),
            };
            let iot = client(&valid.aws).await;
            match iot::delete_rule(&iot, &name).await {
                Ok(existed) => info!(rule = %name, existed, "topic rule deleted"),
                Err(e) => {
                    crate::status::publish(
                        ctx,
                        mqb,
                        EventType::Warning,
                        reasons::CLEANUP_FAILED,
                        e.to_string(),
                    )
                    .await;
                    return Err(Error::Cleanup(e));
                }
            }
        }
    }
    set_finalizer(&ctx.client, mqb, false)
        .await
        .map_err(Error::Finalizer)?;
    Ok(Action::await_change())
}

/// Whether the deletion of `mqb` waits for [`finalize`].
pub fn needs_finalize(mqb: &MqttBroker) -> bool {
    has_finalizer(mqb)
}

/// What `edgewire-operator render` prints for an iotcore MqttBroker: no objects (nothing runs in the cluster),
/// the least-privilege IAM policy of the operator as YAML comments.
pub fn render_policy(v: &ValidatedIotCore) -> String {
    let policy = crate::cloud::iam::iot_operator_policy(
        &v.aws.region,
        v.rule.as_ref().map(|r| r.name.as_str()),
        v.rule.as_ref().map(|r| r.role_arn.as_str()),
    );
    let mut out = String::from(
        "# type: iotcore runs nothing in the cluster: the operator calls AWS IoT Core.\n",
    );
    if let Some(r) = &v.rule {
        out.push_str(&format!(
            "# Topic rule {}: {} -> SQS {}\n",
            r.name, r.sql, r.queue_url
        ));
    }
    out.push_str(&crate::cloud::iam::as_comments(
        "IAM policy the operator needs (attach to its role or to the credentials Secret's user):",
        &serde_json::to_string_pretty(&policy).unwrap_or_default(),
    ));
    out
}
