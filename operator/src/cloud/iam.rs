//! Least privilege, written for the user: the IAM policies a managed-cloud resource needs, as `edgewire-operator render` prints them (YAML comments). Pure functions.

use serde_json::{Value, json};

/// IoT Core: what the operator calls for an MqttBroker with `type: iotcore`.
pub fn iot_operator_policy(region: &str, rule_name: Option<&str>, role_arn: Option<&str>) -> Value {
    let mut statements = vec![json!({
        "Sid": "DiscoverEndpoint",
        "Effect": "Allow",
        "Action": ["iot:DescribeEndpoint"],
        "Resource": "*",
    })];
    if let Some(rule) = rule_name {
        statements.push(json!({
            "Sid": "ManageTopicRule",
            "Effect": "Allow",
            "Action": [
                "iot:CreateTopicRule",
                "iot:ReplaceTopicRule",
                "iot:GetTopicRule",
                "iot:DeleteTopicRule",
            ],
            "Resource": format!("arn:aws:iot:{region}:<account-id>:rule/{rule}"),
        }));
    }
    if let Some(role) = role_arn {
        statements.push(json!({
            "Sid": "PassRuleRole",
            "Effect": "Allow",
            "Action": ["iam:PassRole"],
            "Resource": role,
        }));
    }
    json!({"Version": "2012-10-17", "Statement": statements})
}

/// SNS: the publisher's policy (`sns:Publish` on the topic ARNs).
pub fn sns_publisher_policy(topic_arns: &[String]) -> Value {
    json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Sid": "PublishEdgeEvents",
            "Effect": "Allow",
            "Action": ["sns:Publish"],
            "Resource": topic_arns,
        }],
    })
}

/// SNS: the operator's policy when it provisions the topics.
pub fn sns_operator_policy(topic_arns: &[String]) -> Value {
    json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Sid": "ProvisionEdgeTopics",
            "Effect": "Allow",
            "Action": [
                "sns:CreateTopic",
                "sns:TagResource",
                "sns:ListTagsForResource",
                "sns:DeleteTopic",
            ],
            "Resource": topic_arns,
        }],
    })
}

/// `text` as YAML comment lines (`# ...`).
pub fn as_comments(title: &str, text: &str) -> String {
    let mut out = format!("# {title}\n");
    for line in text.lines() {
        out.push_str("#   ");
        out.push_str(line);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iot_policy_grants_exactly_the_calls_the_controller_makes() {
        let p = iot_operator_policy(
            "us-east-1",
            Some("workers_to_sqs"),
            Some("arn:aws:iam::123456789012:role/iot-to-sqs"),
        );
        let actions: Vec<&str> = p["Statement"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|s| s["Action"].as_array().unwrap())
            .map(|a| a.as_str().unwrap())
            .collect();
        assert_eq!(
            actions,
            [
                "iot:DescribeEndpoint",
                "iot:CreateTopicRule",
                "iot:ReplaceTopicRule",
                "iot:GetTopicRule",
                "iot:DeleteTopicRule",
                "iam:PassRole"
            ]
        );
        assert_eq!(
            p["Statement"][1]["Resource"],
            "arn:aws:iot:us-east-1:<account-id>:rule/workers_to_sqs"
        );
        assert_eq!(
            p["Statement"][2]["Resource"],
            "arn:aws:iam::123456789012:role/iot-to-sqs"
        );
        // Without a rule only endpoint discovery is needed.
        let p = iot_operator_policy("us-east-1", None, None);
        assert_eq!(p["Statement"].as_array().unwrap().len(), 1);
    }
}
