//! Stage 2 (pure): check what the schema cannot (or what a cluster without CEL did not), resolve the
//! credentials a deployed broker is rendered with, and produce a [`ValidatedEventBroker`].

use super::names::{KIND_LABEL, default_image, has_ui};
use super::refs::{Refs, secret_uses};
use crate::children::Owner;
use crate::context::Settings;
use crate::hash::credentials_hash;
use crate::reconcile::{CredentialProblem, Invalid, Missing};
use crate::secret::ExposeSecret;
use crate::secret::GeneratedCredentials;
use crate::secret::SecretString;
use edgewire_api::endpoint::endpoint_override;
use edgewire_api::{
    Adapter, AwsRegion, BrokerKind, DeployBroker, EventBroker, EventBrokerSpec, GcpProjectId,
    IamRoleArn, NatsAuth, PASSWORD_KEY, PubsubTopicIdPrefix, Resources, SaslMechanism,
    SnsTopicArnPrefix, Storage, Tls, USERNAME_KEY,
};
use k8s_openapi::api::core::v1::Secret;
use std::str::FromStr;

/// An EventBroker whose spec passed validation, with everything the builders need resolved.
#[derive(Clone, Debug)]
pub struct ValidatedEventBroker {
    /// Who owns the children.
    pub owner: Owner,
    /// The spec as applied.
    pub spec: EventBrokerSpec,
    /// The adapter with aliases resolved.
    pub adapter: Adapter,
    /// The operator's settings.
    pub settings: Settings,
    /// Hash of every referenced Secret's data (and of generated credentials).
    pub credentials_hash: String,
    /// The broker the operator runs, if `deployBroker` is set.
    pub broker: Option<BrokerPlan>,
}

/// A broker to deploy, resolved from `spec.deployBroker` and the adapter's auth.
#[derive(Clone, Debug)]
pub struct BrokerPlan {
    pub kind: BrokerKind,
    pub replicas: i32,
    pub storage: Storage,
    pub ui: bool,
    /// The broker image (override or the default for `kind`).
    pub image: String,
    pub resources: Option<Resources>,
    /// Credentials the broker's config is rendered with.
    pub auth: BrokerAuth,
    /// Set when the operator generated the credentials (no auth in the spec): it owns this Secret.
    pub generated: Option<GeneratedCredentials>,
}

/// Credentials a deployed broker accepts (values, to be rendered into its config Secret only).
#[derive(Clone, Debug)]
pub enum BrokerAuth {
    /// NATS token.
    Token(SecretString),
    /// User and password (every broker).
    UserPassword {
        username: String,
        password: SecretString,
    },
    /// NATS NKEY user, by public key (derived from the referenced seed).
    Nkey { public_key: String },
}

fn invalid(field: &str, message: impl Into<String>) -> Invalid {
    Invalid::spec(field, message)
}

/// Spec checks that need no Secret. The CRD's CEL rules say the same; they are repeated here because
/// a cluster may not evaluate CEL (and the message then still names the field).
pub fn check_spec(eb: &EventBroker) -> Result<(), Invalid> {
    let spec = &eb.spec;
    let adapter = spec.adapter.canonical();
    let deployed = spec.deploy_broker.as_ref();
    match adapter {
        Adapter::GooglePubsub => check_google_pubsub(spec, deployed)?,
        Adapter::AwsSns => check_aws_sns(spec, deployed)?,
        Adapter::Nats => check_nats(spec, deployed)?,
        Adapter::Kafka => check_kafka(spec, deployed)?,
        Adapter::Amqp091 | Adapter::Rabbitmq => check_amqp091(spec, deployed)?,
        Adapter::Redis => check_redis(spec, deployed)?,
        Adapter::Mqtt => check_mqtt(spec, deployed)?,
    }
    check_tls(spec, adapter, deployed)?;
    if let Some(d) = deployed {
        check_deploy_broker(spec, d)?;
    }
    if spec.publisher.replicas < 0 {
        return Err(invalid("spec.publisher.replicas", "must not be negative"));
    }
    Ok(())
}

/// Google Pub/Sub: a project id and topic id prefix the publisher accepts, an http(s) endpoint, no broker to deploy.
fn check_google_pubsub(
    spec: &EventBrokerSpec,
    deployed: Option<&DeployBroker>,
) -> Result<(), Invalid> {
    let Some(ps) = spec.google_pubsub.as_ref() else {
        return Err(invalid(
            "spec.googlePubsub",
            "adapter google_pubsub needs spec.googlePubsub",
        ));
    };
    if deployed.is_some() {
        return Err(invalid(
            "spec.deployBroker",
            "Pub/Sub is a managed service: there is no broker to deploy",
        ));
    }
    GcpProjectId::from_str(&ps.project).map_err(|m| invalid("spec.googlePubsub.project", m))?;
    if let Some(p) = &ps.topic_id_prefix {
        PubsubTopicIdPrefix::from_str(p)
            .map_err(|m| invalid("spec.googlePubsub.topicIdPrefix", m))?;
    }
    if let Some(e) = &ps.endpoint {
        endpoint_override(e).map_err(|m| invalid("spec.googlePubsub.endpoint", m))?;
    }
    Ok(())
}

/// AWS SNS: region, ARN prefix (or provisioning), endpoint and role ARN; no broker to deploy.
fn check_aws_sns(spec: &EventBrokerSpec, deployed: Option<&DeployBroker>) -> Result<(), Invalid> {
    let Some(sns) = spec.aws_sns.as_ref() else {
        return Err(invalid("spec.awsSns", "adapter aws_sns needs spec.awsSns"));
    };
    if deployed.is_some() {
        return Err(invalid(
            "spec.deployBroker",
            "SNS is a managed service: there is no broker to deploy",
        ));
    }
    AwsRegion::from_str(&sns.region).map_err(|m| invalid("spec.awsSns.region", m))?;
    match &sns.topic_arn_prefix {
        Some(p) => {
            SnsTopicArnPrefix::from_str(p).map_err(|m| invalid("spec.awsSns.topicArnPrefix", m))?;
        }
        None if !sns.provision => {
            return Err(invalid(
                "spec.awsSns.topicArnPrefix",
                "is needed unless provision is true (the ARNs of provisioned topics give it)",
            ));
        }
        None => {}
    }
    if let Some(e) = &sns.endpoint {
        endpoint_override(e).map_err(|m| invalid("spec.awsSns.endpoint", m))?;
    }
    if let Some(r) = &sns.role_arn {
        IamRoleArn::from_str(r).map_err(|m| invalid("spec.awsSns.roleArn", m))?;
    }
    Ok(())
}

/// NATS: a URL or a deployed broker, one auth mode, no decentralized JWT auth on a deployed broker.
fn check_nats(spec: &EventBrokerSpec, deployed: Option<&DeployBroker>) -> Result<(), Invalid> {
    let nats = spec.nats.as_ref();
    if deployed.is_none() && nats.is_none_or(|n| n.urls.is_empty()) {
        return Err(invalid(
            "spec.nats.urls",
            "adapter nats needs at least one URL (or spec.deployBroker)",
        ));
    }
    if let Some(auth) = nats.and_then(|n| n.auth.as_ref()) {
        let n = [
            auth.token.is_some(),
            auth.user_password.is_some(),
            auth.nkey.is_some(),
        ];
        if n.iter().filter(|b| **b).count() != 1 {
            return Err(invalid(
                "spec.nats.auth",
                "set exactly one of token, userPassword, nkey",
            ));
        }
    }
    if deployed.is_some()
        && let Some(NatsAuth { nkey: Some(nk), .. }) = nats.and_then(|n| n.auth.as_ref())
        && nk.jwt.is_some()
    {
        return Err(invalid(
            "spec.nats.auth.nkey.jwt",
            "decentralized JWT auth needs an operator/account setup; a broker Edgewire deploys accepts a token, userPassword or a plain nkey",
        ));
    }
    Ok(())
}

/// Kafka: a bootstrap server or a deployed broker.
fn check_kafka(spec: &EventBrokerSpec, deployed: Option<&DeployBroker>) -> Result<(), Invalid> {
    if deployed.is_none() && spec.kafka.as_ref().is_none_or(|k| k.urls.is_empty()) {
        return Err(invalid(
            "spec.kafka.urls",
            "adapter kafka needs at least one bootstrap server (or spec.deployBroker)",
        ));
    }
    Ok(())
}

/// AMQP 0-9-1: a URL Secret or a deployed broker, not both.
fn check_amqp091(spec: &EventBrokerSpec, deployed: Option<&DeployBroker>) -> Result<(), Invalid> {
    let url = spec.amqp091.as_ref().and_then(|a| a.url.as_ref());
    if deployed.is_none() && url.is_none() {
        return Err(invalid(
            "spec.amqp091.url",
            "adapter amqp091 needs a URL Secret (or spec.deployBroker)",
        ));
    }
    if deployed.is_some() && url.is_some() {
        return Err(invalid(
            "spec.amqp091.url",
            "leave it unset with deployBroker: the operator generates the credentials and the URL",
        ));
    }
    Ok(())
}

/// Redis: a URL Secret or a deployed broker, not both.
fn check_redis(spec: &EventBrokerSpec, deployed: Option<&DeployBroker>) -> Result<(), Invalid> {
    let url = spec.redis.as_ref().and_then(|r| r.url.as_ref());
    if deployed.is_none() && url.is_none() {
        return Err(invalid(
            "spec.redis.url",
            "adapter redis needs a URL Secret (or spec.deployBroker)",
        ));
    }
    if deployed.is_some() && url.is_some() {
        return Err(invalid(
            "spec.redis.url",
            "leave it unset with deployBroker: the operator generates the credentials and the URL",
        ));
    }
    Ok(())
}

/// MQTT: a URL or a deployed broker, QoS 0 to 2, one auth mode, no JWT on a deployed broker.
fn check_mqtt(spec: &EventBrokerSpec, deployed: Option<&DeployBroker>) -> Result<(), Invalid> {
    let mqtt = spec.mqtt.as_ref();
    if deployed.is_none()
        && mqtt
            .and_then(|m| m.url.as_ref())
            .is_none_or(|u| u.is_empty())
    {
        return Err(invalid(
            "spec.mqtt.url",
            "adapter mqtt needs host:port (or spec.deployBroker)",
        ));
    }
    if let Some(m) = mqtt {
        if m.qos > 2 {
            return Err(invalid(
                "spec.mqtt.qos",
                format!("must be 0, 1 or 2, got {}", m.qos),
            ));
        }
        if let Some(a) = &m.auth {
            if a.jwt.is_some() == a.user_password.is_some() {
                return Err(invalid(
                    "spec.mqtt.auth",
                    "set exactly one of jwt, userPassword",
                ));
            }
            if deployed.is_some() && a.jwt.is_some() {
                return Err(invalid(
                    "spec.mqtt.auth.jwt",
                    "a broker Edgewire deploys authenticates with userPassword; JWT needs the broker's auth plugin",
                ));
            }
        }
    }
    Ok(())
}

/// A client certificate needs TLS on; a broker Edgewire deploys is reached without TLS.
fn check_tls(
    spec: &EventBrokerSpec,
    adapter: Adapter,
    deployed: Option<&DeployBroker>,
) -> Result<(), Invalid> {
    for (field, tls) in [
        (
            "spec.nats.tls",
            spec.nats.as_ref().and_then(|n| n.tls.as_ref()),
        ),
        (
            "spec.kafka.tls",
            spec.kafka.as_ref().and_then(|n| n.tls.as_ref()),
        ),
        (
            "spec.amqp091.tls",
            spec.amqp091.as_ref().and_then(|n| n.tls.as_ref()),
        ),
        (
            "spec.redis.tls",
            spec.redis.as_ref().and_then(|n| n.tls.as_ref()),
        ),
        (
            "spec.mqtt.tls",
            spec.mqtt.as_ref().and_then(|n| n.tls.as_ref()),
        ),
    ] {
        let Some(tls) = tls else { continue };
        if tls.client_cert_secret_ref.is_some() && !tls.enabled {
            return Err(invalid(
                &format!("{field}.clientCertSecretRef"),
                "requires tls.enabled: true (mTLS requires SSL)",
            ));
        }
        if deployed.is_some()
            && Tls::is_enabled(&Some(tls.clone()))
            && field.contains(adapter_section(adapter))
        {
            return Err(invalid(
                field,
                "TLS to a broker Edgewire deploys is not supported yet; it is reached over the cluster network",
            ));
        }
    }
    Ok(())
}

/// `deployBroker`: a kind of the adapter's family, replicas it can run, a UI it has.
fn check_deploy_broker(spec: &EventBrokerSpec, d: &DeployBroker) -> Result<(), Invalid> {
    if !spec.adapter.broker_family().contains(&d.kind) {
        let family: Vec<_> = spec
            .adapter
            .broker_family()
            .iter()
            .map(|k| k.as_str())
            .collect();
        return Err(invalid(
            "spec.deployBroker.kind",
            format!(
                "{} does not speak {}; choose one of: {}",
                d.kind.as_str(),
                spec.adapter.as_str(),
                family.join(", ")
            ),
        ));
    }
    if !d.kind.clusters() && d.replicas != 1 {
        return Err(invalid(
            "spec.deployBroker.replicas",
            format!("{} runs as a single replica", d.kind.as_str()),
        ));
    }
    if matches!(
        d.kind,
        BrokerKind::Nats | BrokerKind::Redpanda | BrokerKind::Kafka
    ) && d.replicas % 2 == 0
    {
        return Err(invalid(
            "spec.deployBroker.replicas",
            "must be odd for a quorum (1, 3, 5)",
        ));
    }
    if d.replicas < 1 {
        return Err(invalid("spec.deployBroker.replicas", "must be at least 1"));
    }
    if d.kind == BrokerKind::Redpanda
        && spec
            .kafka
            .as_ref()
            .and_then(|k| k.sasl.as_ref())
            .is_some_and(|s| s.mechanism == SaslMechanism::Plain)
    {
        return Err(invalid(
            "spec.kafka.sasl.mechanism",
            "a Redpanda deployed by Edgewire authenticates with SCRAM: choose scram_sha_256 or scram_sha_512",
        ));
    }
    if d.ui && !has_ui(d.kind) {
        return Err(invalid(
            "spec.deployBroker.ui",
            format!("{} has no web UI", d.kind.as_str()),
        ));
    }
    Ok(())
}

fn adapter_section(adapter: Adapter) -> &'static str {
    match adapter.canonical() {
        Adapter::Nats => "nats",
        Adapter::Kafka => "kafka",
        Adapter::Amqp091 | Adapter::Rabbitmq => "amqp091",
        Adapter::Redis => "redis",
        Adapter::Mqtt => "mqtt",
        Adapter::AwsSns => "awsSns",
        Adapter::GooglePubsub => "googlePubsub",
    }
}

/// Checks the spec, then that every referenced Secret and key exists, then resolves the broker's credentials.
pub fn validate(
    eb: &EventBroker,
    refs: &Refs,
    settings: &Settings,
) -> Result<ValidatedEventBroker, Invalid> {
    check_spec(eb)?;
    let owner = Owner::of(eb, KIND_LABEL).ok_or(Invalid::Metadata)?;
    let uses = secret_uses(&eb.spec);
    let mut problems = Vec::new();
    for u in &uses {
        match refs.secrets.get(&u.name) {
            None => problems.push(CredentialProblem::new(
                Missing::Secret,
                format!("Secret {} ({}) not found", u.name, u.field),
            )),
            Some(_) => {
                for k in &u.keys {
                    if refs.value(&u.name, k).is_none() {
                        problems.push(CredentialProblem::new(
                            Missing::Key,
                            format!("Secret {} has no key {} ({})", u.name, k, u.field),
                        ));
                    }
                }
            }
        }
    }
    if !problems.is_empty() {
        return Err(Invalid::Credentials(problems));
    }

    let spec = &eb.spec;
    let adapter = spec.adapter.canonical();
    let broker = match &spec.deploy_broker {
        None => None,
        Some(d) => {
            let auth = broker_auth(eb, refs)?;
            Some(BrokerPlan {
                kind: d.kind,
                replicas: d.replicas,
                storage: d.storage.clone(),
                ui: d.ui,
                image: d
                    .image
                    .clone()
                    .unwrap_or_else(|| default_image(d.kind).to_string()),
                resources: d.resources.clone(),
                auth,
                generated: refs.generated.clone(),
            })
        }
    };

    let mut hashed: Vec<Secret> = uses
        .iter()
        .filter_map(|u| refs.secrets.get(&u.name).cloned())
        .collect();
    if let Some(g) = &refs.generated {
        hashed.push(g.hash_input());
    }
    Ok(ValidatedEventBroker {
        owner,
        spec: spec.clone(),
        adapter,
        settings: settings.clone(),
        credentials_hash: credentials_hash(hashed.iter()),
        broker,
    })
}

/// The credentials a deployed broker is rendered with: from the adapter's auth, else the generated ones.
fn broker_auth(eb: &EventBroker, refs: &Refs) -> Result<BrokerAuth, Invalid> {
    let spec = &eb.spec;
    let get = |name: &str, key: &str| -> Result<SecretString, Invalid> {
        refs.value(name, key).ok_or_else(|| {
            Invalid::credential(Missing::Key, format!("Secret {name} has no key {key}"))
        })
    };
    let user_password = |secret: &str| -> Result<BrokerAuth, Invalid> {
        let username = get(secret, USERNAME_KEY)?.expose_secret().to_string();
        // Broker configs (Kafka JAAS options, SCRAM names, ACL files) need a plain name.
        if username.is_empty()
            || !username
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@'))
        {
            return Err(Invalid::credential(
                Missing::Key,
                format!(
                    "Secret {secret} key {USERNAME_KEY}: a broker Edgewire deploys needs a user name of letters, digits and . _ - @"
                ),
            ));
        }
        Ok(BrokerAuth::UserPassword {
            username,
            password: get(secret, PASSWORD_KEY)?,
        })
    };
    let from_spec = match spec.adapter.canonical() {
        Adapter::Nats => match spec.nats.as_ref().and_then(|n| n.auth.as_ref()) {
            Some(NatsAuth { token: Some(t), .. }) => Some(BrokerAuth::Token(get(&t.name, &t.key)?)),
            Some(NatsAuth {
                user_password: Some(up),
                ..
            }) => Some(user_password(&up.secret_name)?),
            Some(NatsAuth { nkey: Some(nk), .. }) => {
                let seed = get(&nk.seed.name, &nk.seed.key)?;
                let kp = nkeys::KeyPair::from_seed(seed.expose_secret().trim()).map_err(|_| {
                    Invalid::credential(
                        Missing::Key,
                        format!(
                            "Secret {} key {} is not a valid NKEY seed (spec.nats.auth.nkey.seed)",
                            nk.seed.name, nk.seed.key
                        ),
                    )
                })?;
                Some(BrokerAuth::Nkey {
                    public_key: kp.public_key(),
                })
            }
            _ => None,
        },
        Adapter::Kafka => match spec.kafka.as_ref().and_then(|k| k.sasl.as_ref()) {
            Some(s) => Some(user_password(&s.secret_name)?),
            None => None,
        },
        Adapter::Mqtt => match spec
            .mqtt
            .as_ref()
            .and_then(|m| m.auth.as_ref())
            .and_then(|a| a.user_password.as_ref())
        {
            Some(up) => Some(user_password(&up.secret_name)?),
            None => None,
        },
        _ => None,
    };
    match (from_spec, &refs.generated) {
        (Some(a), _) => Ok(a),
        (None, Some(g)) => Ok(BrokerAuth::UserPassword {
            username: g.username.clone(),
            password: g.password.clone(),
        }),
        (None, None) => Err(Invalid::credential(
            Missing::Secret,
            "no credentials for the deployed broker (generated credentials were not loaded)",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use edgewire_api::testing::NAMESPACE;
    use k8s_openapi::ByteString;

    fn field_of(eb: &EventBroker) -> String {
        match check_spec(eb) {
            Err(Invalid::Spec { field, .. }) => field,
            other => panic!("expected InvalidSpec, got {other:?}"),
        }
    }

    /// Each adapter's rules, refused naming their field, and the spec just inside each rule passing: a rule
    /// that refused too much would fail the passing half.
    #[test]
    fn each_adapter_rule_refuses_naming_its_field_and_passes_just_inside_it() {
        use serde_json::{Value, json};
        let check = |spec: Value| {
            let mut eb = EventBroker::test("e");
            eb.spec = serde_json::from_value(spec.clone()).unwrap();
            match check_spec(&eb) {
                Ok(()) => None,
                Err(Invalid::Spec { field, .. }) => Some(field),
                Err(other) => panic!("{spec}: {other:?}"),
            }
        };
        let url = json!({"name": "u", "key": "url"});
        let user = json!({"secretName": "u"});
        let jwt = json!({"name": "j", "key": "jwt"});
        let cases: Vec<(Value, Option<&str>)> = vec![
            (json!({"adapter": "kafka"}), Some("spec.kafka.urls")),
            (
                json!({"adapter": "kafka", "kafka": {"urls": []}}),
                Some("spec.kafka.urls"),
            ),
            (
                json!({"adapter": "kafka", "kafka": {"urls": ["k:9092"]}}),
                None,
            ),
            (
                json!({"adapter": "kafka", "deployBroker": {"kind": "kafka"}}),
                None,
            ),
            (json!({"adapter": "amqp091"}), Some("spec.amqp091.url")),
            (json!({"adapter": "amqp091", "amqp091": {"url": url}}), None),
            (
                json!({"adapter": "amqp091", "deployBroker": {"kind": "rabbitmq"}}),
                None,
            ),
            (
                json!({"adapter": "amqp091", "amqp091": {"url": url}, "deployBroker": {"kind": "rabbitmq"}}),
                Some("spec.amqp091.url"),
            ),
            (json!({"adapter": "redis"}), Some("spec.redis.url")),
            (json!({"adapter": "redis", "redis": {"url": url}}), None),
            (
                json!({"adapter": "redis", "deployBroker": {"kind": "redis"}}),
                None,
            ),
            (json!({"adapter": "mqtt"}), Some("spec.mqtt.url")),
            (
                json!({"adapter": "mqtt", "mqtt": {"url": ""}}),
                Some("spec.mqtt.url"),
            ),
            (
                json!({"adapter": "mqtt", "mqtt": {"url": "m:1883", "qos": 2}}),
                None,
            ),
            (
                json!({"adapter": "mqtt", "mqtt": {"url": "m:1883", "qos": 3}}),
                Some("spec.mqtt.qos"),
            ),
            (
                json!({"adapter": "mqtt", "mqtt": {"url": "m:1883", "auth": {}}}),
                Some("spec.mqtt.auth"),
            ),
            (
                json!({"adapter": "mqtt", "mqtt": {"url": "m:1883", "auth": {"jwt": jwt, "userPassword": user}}}),
                Some("spec.mqtt.auth"),
            ),
            (
                json!({"adapter": "mqtt", "mqtt": {"url": "m:1883", "auth": {"jwt": jwt}}}),
                None,
            ),
            (
                json!({"adapter": "mqtt", "mqtt": {"url": "m:1883", "auth": {"userPassword": user}}}),
                None,
            ),
            (
                json!({"adapter": "mqtt", "mqtt": {"auth": {"jwt": jwt}}, "deployBroker": {"kind": "mosquitto"}}),
                Some("spec.mqtt.auth.jwt"),
            ),
            (
                json!({"adapter": "mqtt", "mqtt": {"auth": {"userPassword": user}}, "deployBroker": {"kind": "mosquitto"}}),
                None,
            ),
            (
                json!({"adapter": "nats", "nats": {"urls": ["n:4222"], "tls": {"enabled": false, "clientCertSecretRef": user}}}),
                Some("spec.nats.tls.clientCertSecretRef"),
            ),
            (
                json!({"adapter": "nats", "nats": {"urls": ["n:4222"], "tls": {"enabled": true, "clientCertSecretRef": user}}}),
                None,
            ),
            (
                json!({"adapter": "nats", "nats": {"urls": ["n:4222"], "tls": {"enabled": false}}}),
                None,
            ),
            (
                json!({"adapter": "nats", "nats": {"urls": ["n:4222"], "tls": {"enabled": true}}}),
                None,
            ),
            (
                json!({"adapter": "nats", "nats": {"tls": {"enabled": true}}, "deployBroker": {"kind": "nats"}}),
                Some("spec.nats.tls"),
            ),
            // TLS settings of another adapter's section are not the deployed broker's.
            (
                json!({"adapter": "nats", "kafka": {"tls": {"enabled": true}}, "deployBroker": {"kind": "nats"}}),
                None,
            ),
            (
                json!({"adapter": "nats", "deployBroker": {"kind": "nats", "replicas": 3}}),
                None,
            ),
            (
                json!({"adapter": "redis", "deployBroker": {"kind": "redis", "replicas": 3}}),
                Some("spec.deployBroker.replicas"),
            ),
        ];
        for (spec, want) in cases {
            assert_eq!(check(spec.clone()).as_deref(), want, "{spec}");
        }
    }

    /// Zero publisher replicas is a publisher scaled down, not an error; below zero is.
    #[test]
    fn publisher_replicas_may_be_zero_but_not_negative() {
        let mut eb = EventBroker::test("e").adapter_nats();
        eb.spec.publisher.replicas = 0;
        assert_eq!(check_spec(&eb), Ok(()));
        eb.spec.publisher.replicas = -1;
        assert_eq!(field_of(&eb), "spec.publisher.replicas");
    }

    #[test]
    fn each_rule_names_its_field() {
        let mut no_urls = EventBroker::test("e").adapter_nats();
        no_urls.spec.nats.as_mut().unwrap().urls.clear();
        assert_eq!(field_of(&no_urls), "spec.nats.urls");
        assert_eq!(
            field_of(
                &EventBroker::test("e")
                    .adapter_nats()
                    .deploy(BrokerKind::Kafka)
            ),
            "spec.deployBroker.kind"
        );
        assert_eq!(
            field_of(
                &EventBroker::test("e")
                    .adapter(Adapter::Redis)
                    .deploy(BrokerKind::Redis)
            ),
            "spec.redis.url",
            "a URL Secret next to deployBroker is ambiguous"
        );
        assert_eq!(
            field_of(
                &EventBroker::test("e")
                    .adapter_nats()
                    .deploy(BrokerKind::Nats)
                    .replicas(2)
            ),
            "spec.deployBroker.replicas"
        );
        assert_eq!(
            field_of(&EventBroker::test("e").adapter(Adapter::AwsSns)),
            "spec.awsSns.topicArnPrefix"
        );
        let mut sns = EventBroker::test("e").adapter(Adapter::AwsSns);
        sns.spec.aws_sns.as_mut().unwrap().provision = true;
        assert_eq!(check_spec(&sns), Ok(()));
        sns.spec.aws_sns.as_mut().unwrap().topic_arn_prefix = Some("prod-".into());
        assert_eq!(field_of(&sns), "spec.awsSns.topicArnPrefix");
        sns.spec.aws_sns.as_mut().unwrap().topic_arn_prefix =
            Some("arn:aws:sns:us-east-1:123456789012:prod-".into());
        assert_eq!(check_spec(&sns), Ok(()));
        let mut ps = EventBroker::test("e").adapter(Adapter::GooglePubsub);
        assert_eq!(check_spec(&ps), Ok(()));
        ps.spec.google_pubsub.as_mut().unwrap().topic_id_prefix = Some("1prod".into());
        assert_eq!(field_of(&ps), "spec.googlePubsub.topicIdPrefix");
        ps.spec.google_pubsub.as_mut().unwrap().topic_id_prefix = Some("edge-prod-".into());
        assert_eq!(check_spec(&ps), Ok(()));
        ps.spec.google_pubsub.as_mut().unwrap().project = "My Project".into();
        assert_eq!(field_of(&ps), "spec.googlePubsub.project");
        // What the publisher refuses at start is refused here: a project id must start with a letter, and
        // a prefix must leave room for the longest domain topic name within 255 characters.
        ps.spec.google_pubsub.as_mut().unwrap().project = "1abc".into();
        assert_eq!(field_of(&ps), "spec.googlePubsub.project");
        ps.spec.google_pubsub.as_mut().unwrap().project = "my-project".into();
        ps.spec.google_pubsub.as_mut().unwrap().topic_id_prefix =
            Some(format!("e{}", "x".repeat(231)));
        assert_eq!(field_of(&ps), "spec.googlePubsub.topicIdPrefix");
        ps.spec.google_pubsub.as_mut().unwrap().topic_id_prefix =
            Some(format!("e{}", "x".repeat(230)));
        assert_eq!(check_spec(&ps), Ok(()));
        ps.spec.google_pubsub.as_mut().unwrap().topic_id_prefix = Some("goog-edge-".into());
        assert_eq!(field_of(&ps), "spec.googlePubsub.topicIdPrefix");
        let mut qos = EventBroker::test("e").adapter(Adapter::Mqtt);
        qos.spec.mqtt.as_mut().unwrap().qos = 3;
        assert_eq!(field_of(&qos), "spec.mqtt.qos");
        let mut ui = EventBroker::test("e")
            .adapter(Adapter::Mqtt)
            .deploy(BrokerKind::Mosquitto);
        ui.spec.deploy_broker.as_mut().unwrap().ui = true;
        assert_eq!(field_of(&ui), "spec.deployBroker.ui");
        let mut rp = EventBroker::test("e")
            .adapter(Adapter::Kafka)
            .deploy(BrokerKind::Redpanda);
        rp.spec.kafka.as_mut().unwrap().sasl = Some(edgewire_api::KafkaSasl {
            mechanism: SaslMechanism::Plain,
            secret_name: "k".into(),
        });
        assert_eq!(field_of(&rp), "spec.kafka.sasl.mechanism");
    }

    #[test]
    fn valid_specs_pass() {
        for eb in [
            EventBroker::test("e").adapter_nats().with_token("t"),
            EventBroker::test("e").adapter(Adapter::Kafka),
            EventBroker::test("e").adapter(Adapter::Rabbitmq),
            EventBroker::test("e")
                .adapter(Adapter::Mqtt)
                .deploy(BrokerKind::Emqx)
                .replicas(3),
        ] {
            assert_eq!(check_spec(&eb), Ok(()), "{:?}", eb.spec);
        }
        assert_eq!(
            EventBroker::test("e").metadata.namespace.as_deref(),
            Some(NAMESPACE)
        );
    }

    /// A deployed broker is configured with the credentials the spec names: a user name of every allowed
    /// character class for Kafka SASL, the token for NATS.
    #[test]
    fn deployed_brokers_take_the_credentials_the_spec_names() {
        let secret = edgewire_api::testing::secret_data::<&str>;
        let mut kafka = EventBroker::test("e")
            .adapter(Adapter::Kafka)
            .deploy(BrokerKind::Kafka);
        kafka.spec.kafka.as_mut().unwrap().sasl = Some(edgewire_api::KafkaSasl {
            mechanism: SaslMechanism::Plain,
            secret_name: "k".into(),
        });
        let mut refs = Refs::default();
        refs.secrets.insert(
            "k".into(),
            secret(&[("username", "svc.user_1-a@Corp9"), ("password", "p")]),
        );
        let plan = validate(&kafka, &refs, &Settings::default())
            .unwrap()
            .broker
            .unwrap();
        assert!(
            matches!(&plan.auth, BrokerAuth::UserPassword { username, .. } if username == "svc.user_1-a@Corp9"),
            "{:?}",
            plan.auth
        );
        assert!(plan.generated.is_none());

        let nats = EventBroker::test("n")
            .adapter_nats()
            .deploy(BrokerKind::Nats)
            .with_token("t");
        let mut refs = Refs::default();
        refs.secrets
            .insert("t".into(), secret(&[("token", "s3cret")]));
        let plan = validate(&nats, &refs, &Settings::default())
            .unwrap()
            .broker
            .unwrap();
        assert!(
            matches!(&plan.auth, BrokerAuth::Token(t) if t.expose_secret() == "s3cret"),
            "{:?}",
            plan.auth
        );

        // NATS user/password and NKEY, MQTT user/password: each from its own section.
        let seed = nkeys::KeyPair::new_user();
        let refs = {
            let mut refs = Refs::default();
            refs.secrets.insert(
                "up".into(),
                secret(&[("username", "edge"), ("password", "p")]),
            );
            refs.secrets
                .insert("nk".into(), secret(&[("seed", &seed.seed().unwrap())]));
            refs
        };
        let plan_of = |spec: serde_json::Value| {
            let mut eb = EventBroker::test("b");
            eb.spec = serde_json::from_value(spec).unwrap();
            validate(&eb, &refs, &Settings::default())
                .unwrap()
                .broker
                .unwrap()
                .auth
        };
        let user = serde_json::json!({"secretName": "up"});
        for spec in [
            serde_json::json!({"adapter": "nats", "nats": {"auth": {"userPassword": user}},
                "deployBroker": {"kind": "nats"}}),
            serde_json::json!({"adapter": "mqtt", "mqtt": {"auth": {"userPassword": user}},
                "deployBroker": {"kind": "mosquitto"}}),
        ] {
            let auth = plan_of(spec.clone());
            assert!(
                matches!(&auth, BrokerAuth::UserPassword { username, .. } if username == "edge"),
                "{spec}: {auth:?}"
            );
        }
        let auth = plan_of(serde_json::json!({"adapter": "nats",
            "nats": {"auth": {"nkey": {"seed": {"name": "nk", "key": "seed"}}}},
            "deployBroker": {"kind": "nats"}}));
        assert!(
            matches!(&auth, BrokerAuth::Nkey { public_key } if *public_key == seed.public_key()),
            "{auth:?}"
        );
    }

    #[test]
    fn unusable_usernames_for_deployed_brokers_are_credentials_problems() {
        let mut eb = EventBroker::test("e")
            .adapter(Adapter::Kafka)
            .deploy(BrokerKind::Kafka);
        eb.spec.kafka.as_mut().unwrap().sasl = Some(edgewire_api::KafkaSasl {
            mechanism: SaslMechanism::Plain,
            secret_name: "k".into(),
        });
        let mut refs = Refs::default();
        refs.secrets.insert(
            "k".into(),
            Secret {
                data: Some(
                    [
                        ("username".to_string(), ByteString(b"bad user,x".to_vec())),
                        ("password".to_string(), ByteString(b"p".to_vec())),
                    ]
                    .into(),
                ),
                ..Default::default()
            },
        );
        let err = validate(&eb, &refs, &Settings::default()).unwrap_err();
        assert!(
            matches!(&err, Invalid::Credentials(m) if m[0].message.contains("user name")),
            "{err:?}"
        );
        assert!(
            !format!("{err:?}").contains("bad user"),
            "the value itself stays out of messages"
        );
    }
}
