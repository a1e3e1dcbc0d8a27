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

#[cfg(test)]
mod tests {
    use super::*;
    use edgewire_api::testing::secret_data;
    use edgewire_api::{IotCoreSpec, MqttBrokerType, SecretRef, TopicRule};

    fn iot() -> MqttBroker {
        let mut m = MqttBroker::test("m");
        m.spec.broker_type = MqttBrokerType::Iotcore;
        m.spec.builtin = None;
        m.spec.iotcore = Some(IotCoreSpec {
            region: "us-east-1".into(),
            credentials: Some(SecretRef {
                secret_name: "aws".into(),
            }),
            topic_rule: Some(TopicRule {
                name: "workers_to_sqs".into(),
                sqs_queue_url: "https://sqs.us-east-1.amazonaws.com/123456789012/q".into(),
                role_arn: "arn:aws:iam::123456789012:role/iot-to-sqs".into(),
            }),
            api_endpoint: None,
        });
        m
    }

    fn spec_of(m: &mut MqttBroker) -> &mut IotCoreSpec {
        m.spec.iotcore.as_mut().unwrap()
    }

    fn field(r: Result<(), Invalid>) -> Option<String> {
        match r {
            Ok(()) => None,
            Err(Invalid::Spec { field, .. }) => Some(field),
            Err(e) => panic!("expected InvalidSpec, got {e:?}"),
        }
    }

    /// Each spec rule of `type: iotcore` refuses naming its field, and passes the value just inside it.
    #[test]
    fn each_iotcore_rule_refuses_naming_its_field_and_passes_just_inside_it() {
        assert_eq!(field(check_iotcore(&iot())), None);
        let rule_name = |name: String| {
            let mut m = iot();
            spec_of(&mut m).topic_rule.as_mut().unwrap().name = name;
            field(check_iotcore(&m))
        };
        let name_field = Some("spec.iotcore.topicRule.name".to_string());
        assert_eq!(rule_name("a".repeat(128)), None);
        assert_eq!(rule_name("a".repeat(129)), name_field);
        assert_eq!(rule_name(String::new()), name_field);
        assert_eq!(rule_name("a-b".into()), name_field);
        assert_eq!(rule_name("A_1".into()), None);

        let queue = |url: &str| {
            let mut m = iot();
            spec_of(&mut m).topic_rule.as_mut().unwrap().sqs_queue_url = url.into();
            field(check_iotcore(&m))
        };
        assert_eq!(queue("http://localhost:4566/000000000000/q"), None);
        assert_eq!(
            queue("sqs.us-east-1.amazonaws.com/q"),
            Some("spec.iotcore.topicRule.sqsQueueUrl".into())
        );

        let mut bad_secret = iot();
        spec_of(&mut bad_secret).credentials = Some(SecretRef {
            secret_name: "Not_A_Name".into(),
        });
        assert_eq!(
            field(check_iotcore(&bad_secret)),
            Some("spec.iotcore.credentials.secretName".into())
        );
    }

    fn with_secret(pairs: &[(&str, &[u8])]) -> Result<ValidatedIotCore, Invalid> {
        let mut m = iot();
        m.metadata.uid = Some("uid-1".into());
        m.metadata.namespace = Some("factory".into());
        let refs = Refs {
            secrets: [("aws".to_string(), secret_data(pairs))].into(),
            ..Refs::default()
        };
        validate_iotcore(&m, &refs)
    }

    fn problems(r: Result<ValidatedIotCore, Invalid>) -> String {
        match r {
            Err(e @ Invalid::Credentials(_)) => e.to_string(),
            other => panic!("expected a credential problem, got {other:?}"),
        }
    }

    /// The static keys are trimmed; the session token is optional, but present it must be usable; each
    /// unusable key says why.
    #[test]
    fn the_aws_keys_are_trimmed_and_each_unusable_one_says_why() {
        let (id, secret, token) = (
            aws_keys::ACCESS_KEY_ID,
            aws_keys::SECRET_ACCESS_KEY,
            aws_keys::SESSION_TOKEN,
        );
        let ok = with_secret(&[(id, b" AKIA \n"), (secret, b"s3cr3t")]).unwrap();
        let keys = ok.aws.credentials.unwrap();
        assert_eq!(keys.access_key_id.expose_secret(), "AKIA");
        assert!(keys.session_token.is_none());
        assert!(ok.credentials_hash.is_some());

        let with_token =
            with_secret(&[(id, b"AKIA"), (secret, b"s3cr3t"), (token, b" t0k ")]).unwrap();
        let t = with_token.aws.credentials.unwrap().session_token.unwrap();
        assert_eq!(t.expose_secret(), "t0k");

        let empty = problems(with_secret(&[(id, b"  "), (secret, b"s3cr3t")]));
        assert!(empty.contains(&format!("key {id} is empty")), "{empty}");
        let missing = problems(with_secret(&[(secret, b"s3cr3t")]));
        assert!(
            missing.contains(&format!("key {id} is missing")),
            "{missing}"
        );
        let empty_token = problems(with_secret(&[(id, b"AKIA"), (secret, b"s"), (token, b"")]));
        assert!(
            empty_token.contains(&format!("key {token} is empty")),
            "{empty_token}"
        );
        let binary_token = problems(with_secret(&[
            (id, b"AKIA"),
            (secret, b"s"),
            (token, &[0xff, 0xfe]),
        ]));
        assert!(
            binary_token.contains(&format!("key {token} is not UTF-8 text")),
            "{binary_token}"
        );
    }

    /// `spec.endpoint` replaces the discovered endpoint trimmed; a blank one replaces nothing.
    #[test]
    fn a_blank_endpoint_override_is_none_and_a_given_one_is_trimmed() {
        let with_endpoint = |e: &str| {
            let mut m = iot();
            m.metadata.uid = Some("uid-1".into());
            m.metadata.namespace = Some("factory".into());
            spec_of(&mut m).credentials = None;
            m.spec.endpoint = Some(e.into());
            validate_iotcore(&m, &Refs::default())
                .unwrap()
                .endpoint_override
        };
        assert_eq!(with_endpoint("  "), None);
        assert_eq!(
            with_endpoint(" a1b2-ats.iot.us-east-1.amazonaws.com "),
            Some("a1b2-ats.iot.us-east-1.amazonaws.com".into())
        );
    }
}
