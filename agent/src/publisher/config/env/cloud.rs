//! The managed clouds: AWS SNS (`EVENT_BROKER_AWS_SNS_*`) and Google Cloud Pub/Sub
//! (`EVENT_BROKER_GOOGLE_PUBSUB_*`). Their credentials are the SDKs' own standard chains.

use super::*;

impl<F: Fn(&str) -> Option<String>> Env<F> {
    /// `EVENT_BROKER_AWS_SNS_*`. Credentials are not read here: the AWS SDK's standard chain reads
    /// `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` / `AWS_SESSION_TOKEN`, the shared files and the IRSA
    /// web identity (`AWS_ROLE_ARN`, `AWS_WEB_IDENTITY_TOKEN_FILE`) itself.
    pub(super) fn sns(&self) -> Result<SnsConfig, ConfigError> {
        const PREFIX: &str = env::AWS_SNS_TOPIC_ARN_PREFIX;
        let topic_arn_prefix: SnsTopicArnPrefix = self.checked(PREFIX)?.ok_or_else(|| {
            ConfigError::new(
                PREFIX,
                "required for adapter aws_sns (e.g. arn:aws:sns:us-east-1:123456789012:)",
            )
        })?;
        let region = match self.checked(env::AWS_SNS_REGION)? {
            Some(region) => region,
            None => topic_arn_prefix.region(),
        };
        let endpoint = self.endpoint(env::AWS_SNS_ENDPOINT)?;
        Ok(SnsConfig {
            region,
            topic_arn_prefix,
            endpoint,
            static_credentials: None,
        })
    }

    /// `EVENT_BROKER_GOOGLE_PUBSUB_*`. `GOOGLE_APPLICATION_CREDENTIALS` is read by the Google auth library
    /// (Application Default Credentials).
    pub(super) fn pubsub(&self) -> Result<PubSubConfig, ConfigError> {
        const PROJECT: &str = env::GOOGLE_PUBSUB_PROJECT;
        let project = self
            .checked(PROJECT)?
            .ok_or_else(|| ConfigError::new(PROJECT, "required for adapter google_pubsub"))?;
        let topic_id_prefix = self
            .checked(env::GOOGLE_PUBSUB_TOPIC_ID_PREFIX)?
            .unwrap_or_default();
        let endpoint = self.endpoint(env::GOOGLE_PUBSUB_ENDPOINT)?;
        Ok(PubSubConfig {
            project,
            topic_id_prefix,
            endpoint,
            credentials_file: None,
        })
    }

    /// An endpoint override: an `http://` or `https://` URL.
    fn endpoint(&self, name: &str) -> Result<Option<String>, ConfigError> {
        endpoint_override(name, self.get(name).as_deref())
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;

    #[test]
    fn sns_seed_variables() {
        let BrokerConfig::Sns(c) = broker(&[
            ON,
            ("EVENT_BROKER_ADAPTER", "aws_sns"),
            ("EVENT_BROKER_AWS_SNS_REGION", "eu-west-1"),
            (
                "EVENT_BROKER_AWS_SNS_TOPIC_ARN_PREFIX",
                "arn:aws:sns:eu-west-1:123456789012:",
            ),
            ("EVENT_BROKER_AWS_SNS_ENDPOINT", "http://127.0.0.1:5000/"),
        ]) else {
            panic!("not sns")
        };
        assert_eq!(
            c,
            SnsConfig {
                region: "eu-west-1".parse().unwrap(),
                topic_arn_prefix: "arn:aws:sns:eu-west-1:123456789012:".parse().unwrap(),
                endpoint: Some("http://127.0.0.1:5000".into()),
                static_credentials: None,
            }
        );
        // The region defaults to the ARN prefix's; a name prefix after the account is allowed.
        let BrokerConfig::Sns(c) = broker(&[
            ON,
            ("EVENT_BROKER_ADAPTER", "aws_sns"),
            (
                "EVENT_BROKER_AWS_SNS_TOPIC_ARN_PREFIX",
                "arn:aws-cn:sns:cn-north-1:123456789012:prod-",
            ),
        ]) else {
            panic!("not sns")
        };
        assert_eq!(c.region.as_str(), "cn-north-1");
        assert_eq!(c.endpoint, None);
    }

    #[test]
    fn sns_errors_name_the_variable() {
        let base = [ON, ("EVENT_BROKER_ADAPTER", "aws_sns")];
        assert_eq!(err(&base).name, "EVENT_BROKER_AWS_SNS_TOPIC_ARN_PREFIX");
        for bad in [
            "123456789012",
            "arn:aws:sqs:us-east-1:123456789012:",
            "arn:aws:sns:us-east-1::",
            "arn:aws:sns:us-east-1:123456789012:a:b",
        ] {
            let mut v = base.to_vec();
            v.push(("EVENT_BROKER_AWS_SNS_TOPIC_ARN_PREFIX", bad));
            assert_eq!(
                err(&v).name,
                "EVENT_BROKER_AWS_SNS_TOPIC_ARN_PREFIX",
                "{bad}"
            );
        }
        let mut v = base.to_vec();
        v.push((
            "EVENT_BROKER_AWS_SNS_TOPIC_ARN_PREFIX",
            "arn:aws:sns:us-east-1:123456789012:",
        ));
        let mut bad_endpoint = v.clone();
        bad_endpoint.push(("EVENT_BROKER_AWS_SNS_ENDPOINT", "localhost:5000"));
        assert_eq!(err(&bad_endpoint).name, "EVENT_BROKER_AWS_SNS_ENDPOINT");
        let mut bad_region = v.clone();
        bad_region.push(("EVENT_BROKER_AWS_SNS_REGION", "US East"));
        assert_eq!(err(&bad_region).name, "EVENT_BROKER_AWS_SNS_REGION");
    }

    #[test]
    fn pubsub_seed_variables() {
        let BrokerConfig::PubSub(c) = broker(&[
            ON,
            ("EVENT_BROKER_ADAPTER", "google_pubsub"),
            ("EVENT_BROKER_GOOGLE_PUBSUB_PROJECT", "my-project-123"),
            ("EVENT_BROKER_GOOGLE_PUBSUB_TOPIC_ID_PREFIX", "edge-prod-"),
        ]) else {
            panic!("not pubsub")
        };
        assert_eq!(
            c,
            PubSubConfig {
                project: "my-project-123".parse().unwrap(),
                topic_id_prefix: "edge-prod-".parse().unwrap(),
                endpoint: None,
                credentials_file: None,
            }
        );
        assert!(!c.is_emulator());
        let BrokerConfig::PubSub(c) = broker(&[
            ON,
            ("EVENT_BROKER_ADAPTER", "google_pubsub"),
            ("EVENT_BROKER_GOOGLE_PUBSUB_PROJECT", "my-project-123"),
            ("EVENT_BROKER_GOOGLE_PUBSUB_TOPIC_ID_PREFIX", ""),
            (
                "EVENT_BROKER_GOOGLE_PUBSUB_ENDPOINT",
                "http://localhost:8085",
            ),
        ]) else {
            panic!("not pubsub")
        };
        assert_eq!(c.topic_id_prefix.as_str(), "");
        assert!(c.is_emulator());
        let base = [ON, ("EVENT_BROKER_ADAPTER", "google_pubsub")];
        assert_eq!(err(&base).name, "EVENT_BROKER_GOOGLE_PUBSUB_PROJECT");
        let mut v = base.to_vec();
        v.push(("EVENT_BROKER_GOOGLE_PUBSUB_PROJECT", "My Project"));
        assert_eq!(err(&v).name, "EVENT_BROKER_GOOGLE_PUBSUB_PROJECT");
        for bad in ["1edge-", "goog-", "edge prod"] {
            let mut v = base.to_vec();
            v.push(("EVENT_BROKER_GOOGLE_PUBSUB_PROJECT", "my-project-123"));
            v.push(("EVENT_BROKER_GOOGLE_PUBSUB_TOPIC_ID_PREFIX", bad));
            assert_eq!(
                err(&v).name,
                "EVENT_BROKER_GOOGLE_PUBSUB_TOPIC_ID_PREFIX",
                "{bad}"
            );
        }
    }
}
