//! AWS SNS topic provisioning: the four domain topics, tagged `edgewire.dev/owner=<namespace>/<name>`;
//! deletion only of topics whose tag says they are ours.

use super::CloudError;
use super::aws::error;
use aws_sdk_sns::Client;
use aws_sdk_sns::types::Tag;
use edgewire_api::OWNER_TAG;
use edgewire_api::domain::DOMAINS;

/// One domain topic after provisioning.
#[derive(Clone, Debug, PartialEq)]
pub struct Topic {
    /// Domain (`nodes`).
    pub domain: &'static str,
    /// Topic name (`prod-edge-nodes-events`).
    pub name: String,
    /// ARN, when CreateTopic answered.
    pub arn: Option<String>,
    /// Whether the topic carries our owner tag (a topic someone else created is used, never deleted).
    pub owned: bool,
    pub error: Option<CloudError>,
}

/// The ARN prefix of the account, from one topic's ARN and name (ARN = prefix + name).
pub fn arn_prefix_of(arn: &str, name: &str) -> Option<String> {
    arn.strip_suffix(name).map(str::to_string)
}

async fn owned_by(client: &Client, arn: &str, owner: &str) -> Result<bool, CloudError> {
    let out = client
        .list_tags_for_resource()
        .resource_arn(arn)
        .send()
        .await
        .map_err(|e| error("sns:ListTagsForResource", e))?;
    Ok(out
        .tags()
        .iter()
        .any(|t| t.key() == OWNER_TAG && t.value() == owner))
}

/// Creates (idempotently) the four domain topics `<prefix><name>` tagged with `owner` (`namespace/name`).
/// Each topic's result stands alone: one denied topic does not stop the others.
pub async fn ensure_topics(client: &Client, prefix: &str, owner: &str) -> Vec<Topic> {
    let mut out = Vec::new();
    for d in DOMAINS {
        let name = format!("{prefix}{}", d.topic);
        let mut topic = Topic {
            domain: d.name,
            name: name.clone(),
            arn: None,
            owned: false,
            error: None,
        };
        let tag = Tag::builder().key(OWNER_TAG).value(owner).build();
        let created = match tag {
            Ok(tag) => client
                .create_topic()
                .name(&name)
                .tags(tag)
                .send()
                .await
                .map_err(|e| error("sns:CreateTopic", e)),
            Err(e) => Err(CloudError {
                action: "sns:CreateTopic",
                code: None,
                message: e.to_string(),
            }),
        };
        match created {
            Ok(o) => match o.topic_arn() {
                Some(arn) => {
                    topic.arn = Some(arn.to_string());
                    match owned_by(client, arn, owner).await {
                        Ok(owned) => topic.owned = owned,
                        Err(e) => topic.error = Some(e),
                    }
                }
                None => {
                    topic.error = Some(CloudError {
                        action: "sns:CreateTopic",
                        code: None,
                        message: "the answer has no TopicArn".into(),
                    })
                }
            },
            Err(e) => topic.error = Some(e),
        }
        out.push(topic);
    }
    out
}

/// Deletes each topic of `arns` whose owner tag is `owner`; a topic that is gone already is skipped and
/// one without our tag is left alone. Returns the ARNs deleted.
pub async fn delete_owned(
    client: &Client,
    arns: &[String],
    owner: &str,
) -> Result<Vec<String>, CloudError> {
    let mut deleted = Vec::new();
    for arn in arns {
        match owned_by(client, arn, owner).await {
            Ok(true) => {}
            Ok(false) => continue,
            Err(e) if e.not_found() => continue,
            Err(e) => return Err(e),
        }
        match client.delete_topic().topic_arn(arn).send().await {
            Ok(_) => deleted.push(arn.clone()),
            Err(e) => {
                let e = error("sns:DeleteTopic", e);
                if !e.not_found() {
                    return Err(e);
                }
            }
        }
    }
    Ok(deleted)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes() {
        // The name prefix of an ARN prefix: `edgewire_api::SnsTopicArnPrefix::name_prefix`.
        assert_eq!(
            arn_prefix_of(
                "arn:aws:sns:us-east-1:123456789012:prod-edge-nodes-events",
                "edge-nodes-events"
            )
            .as_deref(),
            Some("arn:aws:sns:us-east-1:123456789012:prod-")
        );
    }
}
