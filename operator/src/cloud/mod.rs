//! Cloud provisioning: what the controllers create outside the cluster (AWS IoT Core topic rules, SNS topics,
//! Pub/Sub topics). Each service is a handful of async functions over an SDK client built from
//! [`aws::AwsSettings`]; errors are [`CloudError`], which names the API action that failed and says when the
//! cause was a denied permission. Nothing here logs a credential.

pub mod aws;
pub mod iam;
pub mod iot;
pub mod pubsub;
pub mod sns;

use std::fmt;

/// A cloud API call that failed. Its message names the action (`iot:DescribeEndpoint`) and, for a denied
/// permission, says so; it never contains a credential.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CloudError {
    /// The IAM action of the failed call (`sns:CreateTopic`, `pubsub.topics.create`).
    pub action: &'static str,
    /// The service's error code (`AccessDenied`, `AuthorizationError`), when it answered.
    pub code: Option<String>,
    /// The service's message, or why no answer came (connection refused, timeout).
    pub message: String,
}

impl CloudError {
    /// Whether the service refused the call for lack of permission.
    pub fn denied(&self) -> bool {
        self.code.as_deref().is_some_and(is_denied_code)
    }

    /// Whether the service said the resource does not exist.
    pub fn not_found(&self) -> bool {
        self.code
            .as_deref()
            .is_some_and(|c| c.contains("NotFound") || c == "NoSuchEntity" || c == "NOT_FOUND")
    }
}

/// Error codes AWS services (and Google APIs: `PERMISSION_DENIED`, `UNAUTHENTICATED`) use for a denied
/// permission.
fn is_denied_code(code: &str) -> bool {
    matches!(
        code,
        "AccessDenied"
            | "AccessDeniedException"
            | "AuthorizationError"
            | "UnauthorizedException"
            | "UnrecognizedClientException"
            | "InvalidClientTokenId"
            | "SignatureDoesNotMatch"
            | "ExpiredToken"
            | "ExpiredTokenException"
            | "PERMISSION_DENIED"
            | "UNAUTHENTICATED"
    )
}

impl fmt::Display for CloudError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let message = self.message.trim();
        match &self.code {
            Some(code) if self.denied() => {
                write!(f, "{} denied ({code})", self.action)?;
            }
            Some(code) => write!(f, "{} failed ({code})", self.action)?,
            None => write!(f, "{} failed", self.action)?,
        }
        if !message.is_empty() {
            write!(f, ": {message}")?;
        }
        Ok(())
    }
}

impl std::error::Error for CloudError {}
