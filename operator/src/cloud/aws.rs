//! The shared AWS client configuration: region, credentials (static keys from a Secret, else the default
//! chain: environment, shared files, IRSA web identity, instance metadata), an optional endpoint override
//! (VPC endpoints, moto), and an HTTP client on rustls with ring (no aws-lc).

use super::CloudError;
use crate::secret::ExposeSecret;
use crate::secret::SecretString;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_credential_types::Credentials;
use aws_credential_types::provider::SharedCredentialsProvider;
use aws_smithy_http_client::tls;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use aws_smithy_types::timeout::TimeoutConfig;
use std::time::Duration;

/// Keys of the credentials Secret (the AWS CLI's environment names).
pub mod keys {
    pub const ACCESS_KEY_ID: &str = "AWS_ACCESS_KEY_ID";
    pub const SECRET_ACCESS_KEY: &str = "AWS_SECRET_ACCESS_KEY";
    pub const SESSION_TOKEN: &str = "AWS_SESSION_TOKEN";
}

/// Static credentials read from a Secret.
#[derive(Clone, Debug)]
pub struct StaticKeys {
    pub access_key_id: SecretString,
    pub secret_access_key: SecretString,
    pub session_token: Option<SecretString>,
}

/// Where and as whom to call AWS.
#[derive(Clone, Debug)]
pub struct AwsSettings {
    pub region: String,
    /// Endpoint override (`http://127.0.0.1:5000` for moto, a VPC endpoint).
    pub endpoint: Option<String>,
    /// Static keys; the default credential chain when `None`.
    pub credentials: Option<StaticKeys>,
}

/// How long one API call (retries included) may take before the reconcile reports it failed.
const OPERATION_TIMEOUT: Duration = Duration::from_secs(30);

/// The SDK configuration for `settings`.
pub async fn sdk_config(settings: &AwsSettings) -> SdkConfig {
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(
            tls::rustls_provider::CryptoMode::Ring,
        ))
        .build_https();
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .http_client(http)
        .region(Region::new(settings.region.clone()))
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(5))
                .operation_timeout(OPERATION_TIMEOUT)
                .build(),
        );
    if let Some(endpoint) = &settings.endpoint {
        loader = loader.endpoint_url(endpoint.clone());
    }
    if let Some(k) = &settings.credentials {
        let creds = Credentials::new(
            k.access_key_id.expose_secret(),
            k.secret_access_key.expose_secret(),
            k.session_token
                .as_ref()
                .map(|t| t.expose_secret().to_string()),
            None,
            "edgewire-secret",
        );
        loader = loader.credentials_provider(SharedCredentialsProvider::new(creds));
    }
    loader.load().await
}

/// A failed SDK call as a [`CloudError`] naming `action`.
pub fn error<E>(action: &'static str, err: E) -> CloudError
where
    E: ProvideErrorMetadata + std::error::Error,
{
    match err.code() {
        Some(code) => CloudError {
            action,
            code: Some(code.to_string()),
            message: err.message().unwrap_or_default().to_string(),
        },
        None => {
            // No answer from the service (connection, DNS, timeout): the error and its root cause.
            let mut root: &dyn std::error::Error = &err;
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
