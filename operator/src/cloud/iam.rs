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

/// Pub/Sub: the publisher's role bindings (`roles/pubsub.publisher` on each topic for `member`), as the
/// `gcloud` commands that grant them (the seed's form).
pub fn pubsub_publisher_bindings(project: &str, topic_ids: &[String], member: &str) -> String {
    let mut out = String::new();
    for t in topic_ids {
        out.push_str(&format!(
            "gcloud pubsub topics add-iam-policy-binding {t} --project={project} \\\n    --member={member} --role=roles/pubsub.publisher\n"
        ));
    }
    out
}

/// Pub/Sub: the permissions the operator's calls need when it provisions topics (CreateTopic, GetTopic,
/// DeleteTopic); nothing else.
pub const PUBSUB_OPERATOR_PERMISSIONS: [&str; 3] = [
    "pubsub.topics.create",
    "pubsub.topics.get",
    "pubsub.topics.delete",
];

/// Pub/Sub: a custom role for the operator listing exactly [`PUBSUB_OPERATOR_PERMISSIONS`] (the narrow
/// alternative to `roles/pubsub.editor`), as the YAML `gcloud iam roles create --file` reads.
pub fn pubsub_operator_role() -> Value {
    json!({
        "title": "Edgewire topic provisioner",
        "description": "Create, read and delete the Edgewire domain topics",
        "stage": "GA",
        "includedPermissions": PUBSUB_OPERATOR_PERMISSIONS,
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
    fn pubsub_bindings_name_each_topic_and_the_role() {
        let ids = vec![
            "edge-prod-edge-nodes-events".to_string(),
            "edge-prod-edge-ssh-events".to_string(),
        ];
        let text = pubsub_publisher_bindings(
            "my-project-123",
            &ids,
            "serviceAccount:edge@my-project-123.iam.gserviceaccount.com",
        );
        assert_eq!(
            text.matches("--role=roles/pubsub.publisher").count(),
            2,
            "{text}"
        );
        assert!(text.contains(
            "gcloud pubsub topics add-iam-policy-binding edge-prod-edge-ssh-events --project=my-project-123"
        ));
        assert_eq!(
            pubsub_operator_role()["includedPermissions"],
            json!([
                "pubsub.topics.create",
                "pubsub.topics.get",
                "pubsub.topics.delete"
            ])
        );
    }

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
