//! AWS IoT Core: endpoint discovery and the topic rule that forwards what workers publish to SQS.

use super::CloudError;
use super::aws::error;
use aws_sdk_iot::Client;
use aws_sdk_iot::types::{Action, SqsAction, TopicRulePayload};

/// The endpoint type workers connect to (Amazon Trust Services certificates).
pub const ENDPOINT_TYPE: &str = "iot:Data-ATS";
/// The MQTT-over-TLS port of IoT Core's data endpoint.
pub const MQTTS_PORT: u16 = 8883;

/// The rule as it should be.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DesiredRule {
    pub name: String,
    pub sql: String,
    pub queue_url: String,
    pub role_arn: String,
}

/// The SQL of the rule forwarding every topic under `<topic_namespace>/writeonly/`.
pub fn rule_sql(topic_namespace: &str) -> String {
    format!("SELECT * FROM '{topic_namespace}/writeonly/#'")
}

/// What [`ensure_rule`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RuleChange {
    Created,
    Replaced,
    Unchanged,
}

/// The rule's ARN and what was done to it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleOutcome {
    pub arn: String,
    pub change: RuleChange,
}

/// `DescribeEndpoint(iot:Data-ATS)`: the host workers connect to.
pub async fn describe_endpoint(client: &Client) -> Result<String, CloudError> {
    const ACTION: &str = "iot:DescribeEndpoint";
    let out = client
        .describe_endpoint()
        .endpoint_type(ENDPOINT_TYPE)
        .send()
        .await
        .map_err(|e| error(ACTION, e))?;
    out.endpoint_address()
        .filter(|a| !a.is_empty())
        .map(str::to_string)
        .ok_or_else(|| CloudError {
            action: ACTION,
            code: None,
            message: "the answer has no endpointAddress".into(),
        })
}

fn payload(rule: &DesiredRule) -> Result<TopicRulePayload, CloudError> {
    let build_error = |e: aws_smithy_types::error::operation::BuildError| CloudError {
        action: "iot:CreateTopicRule",
        code: None,
        message: e.to_string(),
    };
    let sqs = SqsAction::builder()
        .queue_url(&rule.queue_url)
        .role_arn(&rule.role_arn)
        .use_base64(false)
        .build()
        .map_err(build_error)?;
    TopicRulePayload::builder()
        .sql(&rule.sql)
        .description("managed by edgewire-operator")
        .aws_iot_sql_version("2016-03-23")
        .rule_disabled(false)
        .actions(Action::builder().sqs(sqs).build())
        .build()
        .map_err(build_error)
}

/// Whether the rule `GetTopicRule` returned is `rule` (same SQL, one SQS action to the same queue and role).
fn matches(found: &aws_sdk_iot::types::TopicRule, rule: &DesiredRule) -> bool {
    let actions = found.actions();
    found.sql() == Some(rule.sql.as_str())
        && found.rule_disabled() != Some(true)
        && actions.len() == 1
        && actions[0]
            .sqs()
            .is_some_and(|s| s.queue_url() == rule.queue_url && s.role_arn() == rule.role_arn)
}

/// The rule `name` as IoT Core has it (`None` when it does not exist) and its ARN.
pub async fn get_rule(
    client: &Client,
    name: &str,
) -> Result<Option<(aws_sdk_iot::types::TopicRule, String)>, CloudError> {
    match client.get_topic_rule().rule_name(name).send().await {
        Ok(out) => {
            let arn = out.rule_arn().unwrap_or_default().to_string();
            Ok(out.rule().cloned().map(|r| (r, arn)))
        }
        Err(e) => {
            let e = error("iot:GetTopicRule", e);
            // IoT Core answers UnauthorizedException for a rule that does not exist as well as for a
            // missing permission; CreateTopicRule then tells the two apart.
            if e.not_found() || e.code.as_deref() == Some("UnauthorizedException") {
                Ok(None)
            } else {
                Err(e)
            }
        }
    }
}

/// Creates the rule, or replaces it when its SQL or SQS action differ (`ReplaceTopicRule`).
pub async fn ensure_rule(client: &Client, rule: &DesiredRule) -> Result<RuleOutcome, CloudError> {
    let payload = payload(rule)?;
    let change = match get_rule(client, &rule.name).await? {
        Some((found, arn)) if matches(&found, rule) => {
            return Ok(RuleOutcome {
                arn,
                change: RuleChange::Unchanged,
            });
        }
        Some(_) => {
            client
                .replace_topic_rule()
                .rule_name(&rule.name)
                .topic_rule_payload(payload)
                .send()
                .await
                .map_err(|e| error("iot:ReplaceTopicRule", e))?;
            RuleChange::Replaced
        }
        None => {
            client
                .create_topic_rule()
                .rule_name(&rule.name)
                .topic_rule_payload(payload)
                .send()
                .await
                .map_err(|e| error("iot:CreateTopicRule", e))?;
            RuleChange::Created
        }
    };
    let arn = match get_rule(client, &rule.name).await? {
        Some((_, arn)) if !arn.is_empty() => arn,
        _ => {
            return Err(CloudError {
                action: "iot:GetTopicRule",
                code: None,
                message: format!("rule {} has no ARN after it was written", rule.name),
            });
        }
    };
    Ok(RuleOutcome { arn, change })
}

/// Deletes the rule `name`; one that does not exist is already deleted. Returns whether it existed.
pub async fn delete_rule(client: &Client, name: &str) -> Result<bool, CloudError> {
    match client.delete_topic_rule().rule_name(name).send().await {
        Ok(_) => Ok(true),
        Err(e) => {
            let e = error("iot:DeleteTopicRule", e);
            if e.not_found() { Ok(false) } else { Err(e) }
        }
    }
}

/// The rule name in a topic rule ARN (`arn:aws:iot:us-east-1:123456789012:rule/workers_to_sqs`).
pub fn rule_name_of_arn(arn: &str) -> Option<&str> {
    arn.rsplit_once(":rule/")
        .map(|(_, n)| n)
        .filter(|n| !n.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sql_forwards_the_writeonly_tree() {
        assert_eq!(rule_sql("edgewire"), "SELECT * FROM 'edgewire/writeonly/#'");
    }

    #[test]
    fn rule_name_from_arn() {
        assert_eq!(
            rule_name_of_arn("arn:aws:iot:us-east-1:123456789012:rule/workers_to_sqs"),
            Some("workers_to_sqs")
        );
        assert_eq!(rule_name_of_arn("arn:aws:iot:us-east-1:1:thing/x"), None);
    }
}
