//! `type: iotcore`: the spec checks and the credentials Secret, resolved into a [`ValidatedIotCore`].

use super::{check_spec, invalid};
use crate::children::Owner;
use crate::cloud::aws::{AwsSettings, StaticKeys, keys as aws_keys};
use crate::cloud::iot::{DesiredRule, rule_sql};
use crate::controller::mqtt_broker::names::KIND_LABEL;
use crate::controller::mqtt_broker::refs::Refs;
use crate::hash::credentials_hash;
use crate::reconcile::{CredentialProblem, Invalid, Missing};
use crate::secret::{ExposeSecret, SecretString, is_secret_name};
use edgewire_api::endpoint::endpoint_override;
use edgewire_api::{AwsRegion, DeletionPolicy, IamRoleArn, MqttBroker};
use std::str::FromStr;

/// An iotcore MqttBroker whose spec passed validation, credentials resolved.
#[derive(Clone, Debug)]
pub struct ValidatedIotCore {
    pub owner: Owner,
    pub aws: AwsSettings,
    /// The credentials Secret, when static keys are used.
    pub credentials_secret: Option<String>,
    /// Hash of the credentials Secret: `status.credentialsRevision`.
    pub credentials_hash: Option<String>,
    pub rule: Option<DesiredRule>,
    pub deletion_policy: DeletionPolicy,
    /// `spec.endpoint`, which replaces the discovered one in status.
    pub endpoint_override: Option<String>,
}

/// Spec checks of `type: iotcore`.
pub(super) fn check_iotcore(mqb: &MqttBroker) -> Result<(), Invalid> {
    let spec = &mqb.spec;
    if spec.builtin.is_some() {
        return Err(invalid(
            "spec.builtin",
            "is set but type is iotcore; remove it",
        ));
    }
    let Some(iot) = &spec.iotcore else {
        return Err(invalid("spec.iotcore", "type iotcore needs spec.iotcore"));
    };
    AwsRegion::from_str(&iot.region).map_err(|m| invalid("spec.iotcore.region", m))?;
    if let Some(c) = &iot.credentials
        && !is_secret_name(&c.secret_name)
    {
        return Err(invalid(
            "spec.iotcore.credentials.secretName",
            format!("{:?} is not a valid Secret name", c.secret_name),
        ));
    }
    if let Some(e) = &iot.api_endpoint {
        endpoint_override(e).map_err(|m| invalid("spec.iotcore.apiEndpoint", m))?;
    }
    if let Some(r) = &iot.topic_rule {
        if r.name.is_empty()
            || r.name.len() > 128
            || !r
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_')
        {
            return Err(invalid(
                "spec.iotcore.topicRule.name",
                format!("{:?} must be 1 to 128 letters, digits and _", r.name),
            ));
        }
        if !r.sqs_queue_url.starts_with("https://") && !r.sqs_queue_url.starts_with("http://") {
            return Err(invalid(
                "spec.iotcore.topicRule.sqsQueueUrl",
                format!("{:?} must be the queue's URL", r.sqs_queue_url),
            ));
        }
        IamRoleArn::from_str(&r.role_arn)
            .map_err(|m| invalid("spec.iotcore.topicRule.roleArn", m))?;
    }
    Ok(())
}

/// Checks an iotcore spec and resolves its credentials Secret.
pub fn validate_iotcore(mqb: &MqttBroker, refs: &Refs) -> Result<ValidatedIotCore, Invalid> {
    check_spec(mqb)?;
    let owner = Owner::of(mqb, KIND_LABEL).ok_or(Invalid::Metadata)?;
    let iot = mqb
        .spec
        .iotcore
        .clone()
        .ok_or_else(|| invalid("spec.iotcore", "type iotcore needs spec.iotcore"))?;
    let mut credentials = None;
    let mut secret_hash = None;
    if let Some(c) = &iot.credentials {
        let name = &c.secret_name;
        let field = "spec.iotcore.credentials.secretName";
        let Some(secret) = refs.secrets.get(name) else {
            return Err(Invalid::Credentials(vec![CredentialProblem {
                user: None,
                missing: Missing::Secret,
                message: format!("Secret {name} ({field}) not found"),
            }]));
        };
        let mut problems = Vec::new();
        let mut value = |key: &str, required: bool| match refs.value(name, key) {
            Some(v) if !v.expose_secret().trim().is_empty() => {
                Some(SecretString::from(v.expose_secret().trim()))
            }
            _ if !required && !refs.has_key(name, key) => None,
            found => {
                let why = match found {
                    Some(_) => "is empty",
                    None if refs.has_key(name, key) => "is not UTF-8 text",
                    None => "is missing",
                };
                problems.push(CredentialProblem {
                    user: None,
                    missing: Missing::Key,
                    message: format!("Secret {name} key {key} {why} ({field})"),
                });
                None
            }
        };
        let access_key_id = value(aws_keys::ACCESS_KEY_ID, true);
        let secret_access_key = value(aws_keys::SECRET_ACCESS_KEY, true);
        let session_token = value(aws_keys::SESSION_TOKEN, false);
        match (access_key_id, secret_access_key) {
            (Some(access_key_id), Some(secret_access_key)) if problems.is_empty() => {
                credentials = Some(StaticKeys {
                    access_key_id,
                    secret_access_key,
                    session_token,
                });
                secret_hash = Some(credentials_hash([secret]));
            }
            _ => return Err(Invalid::Credentials(problems)),
        }
    }
    let endpoint_override = mqb
        .spec
        .endpoint
        .as_deref()
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .map(str::to_string);
    Ok(ValidatedIotCore {
        owner,
        aws: AwsSettings {
            region: iot.region.clone(),
            endpoint: iot.api_endpoint.clone(),
            credentials,
        },
        credentials_secret: iot.credentials.as_ref().map(|c| c.secret_name.clone()),
        credentials_hash: secret_hash,
        rule: iot.topic_rule.as_ref().map(|r| DesiredRule {
            name: r.name.clone(),
            sql: rule_sql(&mqb.spec.topic_namespace),
            queue_url: r.sqs_queue_url.clone(),
            role_arn: r.role_arn.clone(),
        }),
        deletion_policy: mqb.spec.deletion_policy,
        endpoint_override,
    })
}
