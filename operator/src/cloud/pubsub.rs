//! Google Cloud Pub/Sub topic provisioning: the four domain topics
//! `projects/<project>/topics/<topicIdPrefix><name>`, labelled as ours; deletion only of topics whose label
//! says they are ours. The admin calls go through the official client's `TopicAdmin`.
//!
//! ## The owner label
//!
//! SNS tags say `edgewire.dev/owner=<namespace>/<name>`, but GCP label keys and values allow only lowercase
//! letters, digits, `-` and `_` (at most 63 characters, keys start with a letter). The Pub/Sub label is
//! therefore [`OWNER_LABEL`] `edgewire-dev-owner` with the value `<namespace>_<name>` (see [`owner_label`]):
//! `_` separates the two because neither a namespace nor an object name can contain it; a `.` of the
//! name becomes `-`; a value longer than 63 characters keeps its first 54 characters and ends with `-` and
//! 8 hex digits of the SHA-256 of `namespace/name`.

use super::CloudError;
use crate::secret::ExposeSecret;
use crate::secret::SecretString;
use edgewire_api::domain::DOMAINS;
use google_cloud_pubsub::client::TopicAdmin;
use sha2::{Digest, Sha256};
use std::time::Duration;

/// The Pub/Sub label key that marks a topic as created by an EventBroker.
pub const OWNER_LABEL: &str = "edgewire-dev-owner";

/// IAM permissions of the calls (what a denied call names).
pub mod permissions {
    pub const CREATE: &str = "pubsub.topics.create";
    pub const GET: &str = "pubsub.topics.get";
    pub const DELETE: &str = "pubsub.topics.delete";
    pub const UPDATE: &str = "pubsub.topics.update";
    pub const PUBLISH: &str = "pubsub.topics.publish";
}

/// The owner label value of the EventBroker `namespace/name` (the mapping is in the module docs).
pub fn owner_label(namespace: &str, name: &str) -> String {
    let value: String = format!("{namespace}_{name}")
        .chars()
        .map(|c| match c {
            'a'..='z' | '0'..='9' | '-' | '_' => c,
            'A'..='Z' => c.to_ascii_lowercase(),
            _ => '-',
        })
        .collect();
    if value.len() <= 63 {
        return value;
    }
    let digest = Sha256::digest(format!("{namespace}/{name}").as_bytes());
    format!("{}-{}", &value[..54], &hex::encode(digest)[..8])
}

/// `projects/<project>/topics/<prefix><name>`.
pub fn topic_path(project: &str, prefix: &str, name: &str) -> String {
    format!("projects/{project}/topics/{prefix}{name}")
}

/// Where and as whom to call Pub/Sub.
#[derive(Clone, Debug)]
pub struct PubsubSettings {
    /// Endpoint override (emulators, private endpoints); `https://pubsub.googleapis.com` when `None`.
    pub endpoint: Option<String>,
    /// A service-account JSON key; without one, Application Default Credentials (Workload Identity,
    /// the metadata server), or anonymous credentials when an endpoint override is set (emulators).
    pub credentials: Option<SecretString>,
}

fn build_error(action: &'static str, message: String) -> CloudError {
    CloudError {
        action,
        code: None,
        message,
    }
}

/// The admin client for `settings`. Fails when the credentials JSON is not a service-account key (the
/// message names neither the key nor its contents).
pub async fn admin(settings: &PubsubSettings) -> Result<TopicAdmin, CloudError> {
    use google_cloud_auth::credentials::{anonymous, service_account};
    let mut builder = TopicAdmin::builder().with_attempt_timeout(Duration::from_secs(10));
    if let Some(e) = &settings.endpoint {
        builder = builder.with_endpoint(e.clone());
    }
    match &settings.credentials {
        Some(json) => {
            let value: serde_json::Value =
                serde_json::from_str(json.expose_secret()).map_err(|_| {
                    build_error(
                        permissions::CREATE,
                        "the credentials Secret key is not JSON (a service-account key file)"
                            .into(),
                    )
                })?;
            let creds = service_account::Builder::new(value).build().map_err(|_| {
                build_error(
                    permissions::CREATE,
                    "the credentials Secret key is not a service-account key file".into(),
                )
            })?;
            builder = builder.with_credentials(creds);
        }
        None if settings.endpoint.is_some() => {
            builder = builder.with_credentials(anonymous::Builder::new().build());
        }
        None => {}
    }
    builder
        .build()
        .await
        .map_err(|e| build_error(permissions::CREATE, e.to_string()))
}

/// A failed call as a [`CloudError`] naming the permission it needs.
pub fn error(action: &'static str, err: &google_cloud_pubsub::Error) -> CloudError {
    match err.status() {
        Some(s) => CloudError {
            action,
            code: Some(s.code.name().to_string()),
            message: s.message.clone(),
        },
        None => {
            let mut root: &dyn std::error::Error = err;
            while let Some(s) = root.source() {
                root = s;
            }
            let (top, root) = (err.to_string(), root.to_string());
            CloudError {
                action,
                code: None,
                message: if top == root || root.is_empty() {
                    top
                } else {
                    format!("{top}: {root}")
                },
            }
        }
    }
}

/// One domain topic after provisioning.
#[derive(Clone, Debug, PartialEq)]
pub struct Topic {
    /// Domain (`nodes`).
    pub domain: &'static str,
    /// Topic id (`edge-prod-edge-nodes-events`).
    pub name: String,
    /// Full name `projects/<project>/topics/<id>`, once the topic exists.
    pub id: Option<String>,
    /// Whether the topic carries our owner label (a topic someone else created is used, never deleted).
    pub owned: bool,
    pub error: Option<CloudError>,
}

fn is_code(err: &google_cloud_pubsub::Error, name: &str) -> bool {
    err.status().is_some_and(|s| s.code.name() == name)
}

/// How long the calls for one topic (retries included) may take before the reconcile reports them failed.
const OPERATION_TIMEOUT: Duration = Duration::from_secs(30);

fn timed_out(action: &'static str) -> CloudError {
    build_error(
        action,
        format!("no answer within {}s", OPERATION_TIMEOUT.as_secs()),
    )
}

fn ours(labels: &std::collections::HashMap<String, String>, owner: &str) -> bool {
    labels.get(OWNER_LABEL).map(String::as_str) == Some(owner)
}

/// Reads the topic, creates it when missing; whether it carries our label.
async fn ensure_one(admin: &TopicAdmin, path: &str, owner: &str) -> Result<bool, CloudError> {
    match admin.get_topic().set_topic(path).send().await {
        Ok(t) => Ok(ours(&t.labels, owner)),
        Err(e) if is_code(&e, "NOT_FOUND") => {
            match admin
                .create_topic()
                .set_name(path)
                .set_labels([(OWNER_LABEL, owner)])
                .send()
                .await
            {
                Ok(t) => Ok(ours(&t.labels, owner)),
                Err(e) if is_code(&e, "ALREADY_EXISTS") => {
                    match admin.get_topic().set_topic(path).send().await {
                        Ok(t) => Ok(ours(&t.labels, owner)),
                        Err(e) => Err(error(permissions::GET, &e)),
                    }
                }
                Err(e) => Err(error(permissions::CREATE, &e)),
            }
        }
        Err(e) => Err(error(permissions::GET, &e)),
    }
}

/// Deletes the topic if it carries our label; whether it was deleted.
async fn delete_one(admin: &TopicAdmin, path: &str, owner: &str) -> Result<bool, CloudError> {
    match admin.get_topic().set_topic(path).send().await {
        Ok(t) if ours(&t.labels, owner) => {}
        Ok(_) => return Ok(false),
        Err(e) if is_code(&e, "NOT_FOUND") => return Ok(false),
        Err(e) => return Err(error(permissions::GET, &e)),
    }
    match admin.delete_topic().set_topic(path).send().await {
        Ok(_) => Ok(true),
        Err(e) if is_code(&e, "NOT_FOUND") => Ok(false),
        Err(e) => Err(error(permissions::DELETE, &e)),
    }
}

/// Creates (idempotently) the four domain topics `<prefix><name>` in `project` labelled
/// `edgewire-dev-owner=<owner>`. Each topic is read first (`GetTopic`): one that exists is used as it is
/// (owned when its label says so) and only a missing one is created, so a reconcile of existing topics makes
/// no create call; a create that meets `ALREADY_EXISTS` (created meanwhile) reads the topic again. Each
/// topic's result stands alone: one denied topic does not stop the others.
pub async fn ensure_topics(
    admin: &TopicAdmin,
    project: &str,
    prefix: &str,
    owner: &str,
) -> Vec<Topic> {
    let mut out = Vec::new();
    for d in DOMAINS {
        let path = topic_path(project, prefix, d.topic);
        let mut topic = Topic {
            domain: d.name,
            name: format!("{prefix}{}", d.topic),
            id: None,
            owned: false,
            error: None,
        };
        let result =
            match tokio::time::timeout(OPERATION_TIMEOUT, ensure_one(admin, &path, owner)).await {
                Ok(r) => r,
                Err(_) => Err(timed_out(permissions::GET)),
            };
        match result {
            Ok(owned) => {
                topic.owned = owned;
                topic.id = Some(path);
            }
            Err(e) => topic.error = Some(e),
        }
        out.push(topic);
    }
    out
}

/// Deletes each topic of `paths` whose owner label is `owner`; a topic that is gone already is skipped and
/// one without our label is left alone. Returns the topics deleted.
pub async fn delete_owned(
    admin: &TopicAdmin,
    paths: &[String],
    owner: &str,
) -> Result<Vec<String>, CloudError> {
    let mut deleted = Vec::new();
    for path in paths {
        match tokio::time::timeout(OPERATION_TIMEOUT, delete_one(admin, path, owner)).await {
            Ok(Ok(true)) => deleted.push(path.clone()),
            Ok(Ok(false)) => {}
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err(timed_out(permissions::DELETE)),
        }
    }
    Ok(deleted)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid_label(v: &str) -> bool {
        v.len() <= 63
            && v.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
    }

    #[test]
    fn owner_labels_follow_the_gcp_rules() {
        assert_eq!(owner_label("factory", "events"), "factory_events");
        assert_eq!(owner_label("factory", "events.v2"), "factory_events-v2");
        assert!(valid_label(OWNER_LABEL));
        let long_name = "e".repeat(200);
        let a = owner_label("factory", &long_name);
        let b = owner_label("factory2", &long_name);
        assert!(valid_label(&a), "{a}");
        assert_eq!(a.len(), 63);
        assert_ne!(a, b, "the hash keeps long owners apart");
    }

    #[test]
    fn paths() {
        assert_eq!(
            topic_path("p1", "edge-prod-", "edge-nodes-events"),
            "projects/p1/topics/edge-prod-edge-nodes-events"
        );
    }
}
