//! The publisher workload: ServiceAccount, Deployment running `edgewire-agent publisher`, Service on 8080.
//! Configuration is the seed's `EVENT_BROKER_*` environment; Secret values arrive through `secretKeyRef`,
//! TLS material as mounted files.

use super::super::names::{PUBLISHER_APP, PUBLISHER_PORT};
use super::super::validate::ValidatedEventBroker;
use super::broker::client_endpoint;
use crate::pod::{
    AGENT_DEFAULTS, AGENT_USER, agent_probe, container_ports, empty_dir, env as plain, mount,
    restricted_container, restricted_pod, secret_env, secret_volume, service_ports,
};
use crate::secret::generated_keys;
use edgewire_api::env;
use edgewire_api::{
    Adapter, EventBrokerSpec, NatsAuth, PASSWORD_KEY, SecretKeyRef, Tls, TlsVersion, USERNAME_KEY,
};
use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment,
};
use k8s_openapi::api::core::v1::{
    Container, EnvVar, PodSpec, PodTemplateSpec, Service, ServiceAccount, ServiceSpec, Volume,
    VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

const COMPONENT: &str = "publisher";
/// Where TLS material is mounted in the publisher container.
pub const TLS_DIR: &str = "/etc/edgewire/tls";
/// Where the Google service-account key (`googlePubsub.credentials`) is mounted; `GOOGLE_APPLICATION_CREDENTIALS`
/// names it.
pub const GCP_CREDENTIALS_FILE: &str = "/etc/edgewire/gcp/credentials.json";

/// `<name>-publisher`: Deployment, Service and ServiceAccount share it.
pub fn publisher_name(v: &ValidatedEventBroker) -> String {
    format!("{}-publisher", v.owner.name)
}

/// The in-cluster CloudEvents ingress URL (what `status.endpoint` reports).
pub fn ingress_url(v: &ValidatedEventBroker) -> String {
    format!(
        "http://{}.{}.svc:{PUBLISHER_PORT}",
        publisher_name(v),
        v.owner.namespace
    )
}

pub fn build_service_account(v: &ValidatedEventBroker) -> ServiceAccount {
    ServiceAccount {
        metadata: {
            let mut meta = v.owner.meta(publisher_name(v), PUBLISHER_APP, COMPONENT);
            // IRSA: EKS injects a web identity token for this role into the publisher's pods.
            if v.adapter == Adapter::AwsSns
                && let Some(role) = v.spec.aws_sns.as_ref().and_then(|s| s.role_arn.as_ref())
            {
                meta.annotations
                    .get_or_insert_with(Default::default)
                    .insert("eks.amazonaws.com/role-arn".into(), role.clone());
            }
            // Workload Identity: GKE lets the publisher's pods act as this Google service account.
            if v.adapter == Adapter::GooglePubsub
                && let Some(gsa) = v
                    .spec
                    .google_pubsub
                    .as_ref()
                    .and_then(|s| s.service_account.as_ref())
            {
                meta.annotations
                    .get_or_insert_with(Default::default)
                    .insert("iam.gke.io/gcp-service-account".into(), gsa.clone());
            }
            meta
        },
        automount_service_account_token: Some(false),
        ..Default::default()
    }
}

pub fn build_service(v: &ValidatedEventBroker) -> Service {
    Service {
        metadata: v.owner.meta(publisher_name(v), PUBLISHER_APP, COMPONENT),
        spec: Some(ServiceSpec {
            selector: Some(v.owner.selector(PUBLISHER_APP, COMPONENT)),
            ports: Some(service_ports(&[("http", PUBLISHER_PORT)])),
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub fn build_deployment(v: &ValidatedEventBroker) -> Deployment {
    let env = build_env(v);
    let (volumes, mounts) = tls_volumes(v);
    let mut all_volumes = vec![empty_dir("tmp")];
    all_volumes.extend(volumes);
    let mut all_mounts = vec![mount("tmp", "/tmp", false)];
    all_mounts.extend(mounts);

    let container = Container {
        name: "publisher".into(),
        image: Some(v.settings.agent.clone()),
        image_pull_policy: Some(v.settings.agent_pull_policy()),
        args: Some(vec!["publisher".into()]),
        env: Some(env),
        ports: Some(container_ports(&[("http", PUBLISHER_PORT)])),
        liveness_probe: Some(agent_probe("/healthz", "http", 10)),
        readiness_probe: Some(agent_probe("/readyz", "http", 5)),
        resources: Some(
            v.spec
                .publisher
                .resources
                .clone()
                .unwrap_or_else(|| AGENT_DEFAULTS.requirements()),
        ),
        security_context: Some(restricted_container()),
        volume_mounts: Some(all_mounts),
        ..Default::default()
    };

    Deployment {
        metadata: v.owner.meta(publisher_name(v), PUBLISHER_APP, COMPONENT),
        spec: Some(DeploymentSpec {
            replicas: Some(v.spec.publisher.replicas),
            selector: LabelSelector {
                match_labels: Some(v.owner.selector(PUBLISHER_APP, COMPONENT)),
                ..Default::default()
            },
            strategy: Some(DeploymentStrategy {
                type_: Some("RollingUpdate".into()),
                rolling_update: Some(RollingUpdateDeployment {
                    max_unavailable: Some(IntOrString::Int(0)),
                    max_surge: Some(IntOrString::Int(1)),
                }),
            }),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(v.owner.labels(PUBLISHER_APP, COMPONENT)),
                    annotations: Some(super::pod_annotations(v)),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    service_account_name: Some(publisher_name(v)),
                    automount_service_account_token: Some(false),
                    containers: vec![container],
                    volumes: Some(all_volumes),
                    security_context: Some(restricted_pod(AGENT_USER)),
                    termination_grace_period_seconds: Some(30),
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn from_secret(name: &str, secret: &str, key: &str) -> EnvVar {
    secret_env(name, secret, key, Some(false))
}

fn from_ref(name: &str, r: &SecretKeyRef) -> EnvVar {
    from_secret(name, &r.name, &r.key)
}

/// The env-var prefix of each adapter's settings, as the seed spells it.
pub fn env_prefix(adapter: Adapter) -> &'static str {
    env::adapter_prefix(adapter)
}

/// The adapter's TLS settings, if any.
fn adapter_tls(spec: &EventBrokerSpec, adapter: Adapter) -> Option<&Tls> {
    match adapter.canonical() {
        Adapter::Nats => spec.nats.as_ref()?.tls.as_ref(),
        Adapter::Kafka => spec.kafka.as_ref()?.tls.as_ref(),
        Adapter::Amqp091 | Adapter::Rabbitmq => spec.amqp091.as_ref()?.tls.as_ref(),
        Adapter::Redis => spec.redis.as_ref()?.tls.as_ref(),
        Adapter::Mqtt => spec.mqtt.as_ref()?.tls.as_ref(),
        Adapter::AwsSns | Adapter::GooglePubsub => None,
    }
    .filter(|t| t.enabled)
}

/// The publisher's environment: exactly the `EVENT_BROKER_*` set the agent reads.
pub fn build_env(v: &ValidatedEventBroker) -> Vec<EnvVar> {
    let spec = &v.spec;
    let deployed = v
        .broker
        .as_ref()
        .map(|plan| (plan, client_endpoint(&v.owner, plan.kind)));
    let generated = v
        .broker
        .as_ref()
        .and_then(|p| p.generated.as_ref())
        .map(|g| g.secret_name.clone());
    let mut env = vec![
        plain(env::ENABLED, "true"),
        plain(env::ADAPTER, spec.adapter.as_str()),
        plain(env::CORE_NAME, spec.core_name.clone()),
    ];
    let user_password = |env: &mut Vec<EnvVar>, secret: &str| {
        env.push(from_secret(
            &env::adapter_var(v.adapter, env::suffix::USERNAME),
            secret,
            USERNAME_KEY,
        ));
        env.push(from_secret(
            &env::adapter_var(v.adapter, env::suffix::PASSWORD),
            secret,
            PASSWORD_KEY,
        ));
    };
    match v.adapter {
        Adapter::Nats => {
            let nats = spec.nats.clone().unwrap_or_default();
            let urls = match &deployed {
                Some((_, ep)) => ep.url(),
                None => nats.urls.join(","),
            };
            env.push(plain(env::NATS_URLS, urls));
            let js = nats.jet_stream.clone().unwrap_or_default();
            let js_on = js.enabled || deployed.is_some_and(|_| nats.jet_stream.is_none());
            env.push(plain(env::NATS_JETSTREAM, js_on.to_string()));
            if js_on {
                env.push(plain(env::NATS_STREAM, js.stream.clone()));
                env.push(plain(env::NATS_STREAM_MAX_AGE, js.max_age.clone()));
            }
            match nats.auth {
                Some(NatsAuth { token: Some(t), .. }) => env.push(from_ref(env::NATS_TOKEN, &t)),
                Some(NatsAuth {
                    user_password: Some(up),
                    ..
                }) => user_password(&mut env, &up.secret_name),
                Some(NatsAuth { nkey: Some(nk), .. }) => {
                    env.push(from_ref(env::NATS_NKEY_SEED, &nk.seed));
                    if let Some(jwt) = &nk.jwt {
                        env.push(from_ref(env::NATS_JWT, jwt));
                    }
                }
                _ => {
                    if let Some(g) = &generated {
                        user_password(&mut env, g);
                    }
                }
            }
        }
        Adapter::Kafka => {
            let kafka = spec.kafka.clone().unwrap_or_default();
            let urls = match &deployed {
                Some((_, ep)) => ep.url(),
                None => kafka.urls.join(","),
            };
            env.push(plain(env::KAFKA_URLS, urls));
            if let Some(topic) = &kafka.topic {
                env.push(plain(env::KAFKA_TOPIC, topic.clone()));
            }
            match (&kafka.sasl, &generated) {
                (Some(sasl), _) => {
                    user_password(&mut env, &sasl.secret_name);
                    env.push(plain(env::KAFKA_SASL_MECHANISM, sasl.mechanism.as_str()));
                }
                (None, Some(g)) => {
                    user_password(&mut env, g);
                    env.push(plain(
                        env::KAFKA_SASL_MECHANISM,
                        deployed_kafka_mechanism(v),
                    ));
                }
                (None, None) => {}
            }
        }
        Adapter::Amqp091 => {
            let url = spec.amqp091.as_ref().and_then(|a| a.url.clone());
            match (url, &generated) {
                (Some(u), _) => env.push(from_ref(env::RABBITMQ_URL, &u)),
                (None, Some(g)) => env.push(from_secret(env::RABBITMQ_URL, g, generated_keys::URL)),
                (None, None) => {}
            }
        }
        Adapter::Redis => {
            let url = spec.redis.as_ref().and_then(|a| a.url.clone());
            match (url, &generated) {
                (Some(u), _) => env.push(from_ref(env::REDIS_URL, &u)),
                (None, Some(g)) => env.push(from_secret(env::REDIS_URL, g, generated_keys::URL)),
                (None, None) => {}
            }
        }
        Adapter::Mqtt => {
            let mqtt = spec.mqtt.clone().unwrap_or_default();
            let url = match &deployed {
                Some((_, ep)) => ep.url(),
                None => mqtt.url.clone().unwrap_or_default(),
            };
            env.push(plain(env::MQTT_URL, url));
            env.push(plain(env::MQTT_QOS, mqtt.qos.to_string()));
            match (&mqtt.auth, &generated) {
                (Some(a), _) if a.jwt.is_some() => {
                    env.push(from_ref(env::MQTT_JWT, a.jwt.as_ref().expect("checked")))
                }
                (Some(a), _) if a.user_password.is_some() => user_password(
                    &mut env,
                    &a.user_password.as_ref().expect("checked").secret_name,
                ),
                (_, Some(g)) => user_password(&mut env, g),
                _ => {}
            }
        }
        Adapter::AwsSns => {
            let sns = spec.aws_sns.clone().unwrap_or_default();
            env.push(plain(env::AWS_SNS_REGION, sns.region.clone()));
            // From the spec, or (provisioning) derived from the topics' ARNs before the build.
            if let Some(p) = &sns.topic_arn_prefix {
                env.push(plain(env::AWS_SNS_TOPIC_ARN_PREFIX, p.clone()));
            }
            if let Some(e) = &sns.endpoint {
                env.push(plain(env::AWS_SNS_ENDPOINT, e.clone()));
            }
            if let Some(c) = &sns.credentials {
                env.push(from_secret(
                    env::AWS_ACCESS_KEY_ID,
                    &c.secret_name,
                    env::AWS_ACCESS_KEY_ID,
                ));
                env.push(from_secret(
                    env::AWS_SECRET_ACCESS_KEY,
                    &c.secret_name,
                    env::AWS_SECRET_ACCESS_KEY,
                ));
                let mut token = from_secret(
                    env::AWS_SESSION_TOKEN,
                    &c.secret_name,
                    env::AWS_SESSION_TOKEN,
                );
                if let Some(sel) = token
                    .value_from
                    .as_mut()
                    .and_then(|v| v.secret_key_ref.as_mut())
                {
                    sel.optional = Some(true);
                }
                env.push(token);
            }
        }
        Adapter::GooglePubsub => {
            let ps = spec.google_pubsub.clone().unwrap_or_default();
            env.push(plain(env::GOOGLE_PUBSUB_PROJECT, ps.project.clone()));
            if let Some(p) = &ps.topic_id_prefix {
                env.push(plain(env::GOOGLE_PUBSUB_TOPIC_ID_PREFIX, p.clone()));
            }
            if let Some(e) = &ps.endpoint {
                env.push(plain(env::GOOGLE_PUBSUB_ENDPOINT, e.clone()));
            }
            if ps.credentials.is_some() {
                env.push(plain(
                    env::GOOGLE_APPLICATION_CREDENTIALS,
                    GCP_CREDENTIALS_FILE,
                ));
            }
        }
        // `canonical()` resolved the alias to Amqp091.
        Adapter::Rabbitmq => {}
    }
    if let Some(tls) = adapter_tls(spec, v.adapter) {
        env.push(plain(
            &env::adapter_var(v.adapter, env::suffix::SSL),
            "true",
        ));
        if tls.ca_secret_ref.is_some() {
            env.push(plain(
                &env::adapter_var(v.adapter, env::suffix::CACERT_FILE),
                format!("{TLS_DIR}/ca/ca.crt"),
            ));
        }
        if tls.client_cert_secret_ref.is_some() {
            env.push(plain(
                &env::adapter_var(v.adapter, env::suffix::CLIENT_CERT_FILE),
                format!("{TLS_DIR}/client/tls.crt"),
            ));
            env.push(plain(
                &env::adapter_var(v.adapter, env::suffix::CLIENT_KEY_FILE),
                format!("{TLS_DIR}/client/tls.key"),
            ));
        }
        if tls.min_version == TlsVersion::V1_3 {
            env.push(plain(
                &env::adapter_var(v.adapter, env::suffix::TLS_MIN_VERSION),
                "1.3",
            ));
        }
        if let Some(sn) = &tls.server_name {
            env.push(plain(
                &env::adapter_var(v.adapter, env::suffix::TLS_SERVER_NAME),
                sn.clone(),
            ));
        }
    }
    env.push(plain(env::LISTEN, format!("0.0.0.0:{PUBLISHER_PORT}")));
    env.push(plain(env::LOG_FORMAT, "json"));
    env
}

/// The SASL mechanism a deployed Kafka-family broker is rendered with when the spec names none.
pub fn deployed_kafka_mechanism(v: &ValidatedEventBroker) -> &'static str {
    match v.broker.as_ref().map(|b| b.kind) {
        Some(edgewire_api::BrokerKind::Redpanda) => "scram_sha_256",
        _ => "plain",
    }
}

/// Secret volumes for the adapter's CA bundle and client certificate.
fn tls_volumes(v: &ValidatedEventBroker) -> (Vec<Volume>, Vec<VolumeMount>) {
    let mut volumes = Vec::new();
    let mut mounts = Vec::new();
    if v.adapter == Adapter::GooglePubsub
        && let Some(c) = v
            .spec
            .google_pubsub
            .as_ref()
            .and_then(|s| s.credentials.as_ref())
    {
        let (dir, file) = GCP_CREDENTIALS_FILE
            .rsplit_once('/')
            .expect("an absolute path");
        volumes.push(secret_volume("gcp-credentials", &c.name, &[(&c.key, file)]));
        mounts.push(mount("gcp-credentials", dir, true));
    }
    let Some(tls) = adapter_tls(&v.spec, v.adapter) else {
        return (volumes, mounts);
    };
    if let Some(ca) = &tls.ca_secret_ref {
        volumes.push(secret_volume("tls-ca", &ca.name, &[(&ca.key, "ca.crt")]));
        mounts.push(mount("tls-ca", &format!("{TLS_DIR}/ca"), true));
    }
    if let Some(cert) = &tls.client_cert_secret_ref {
        volumes.push(secret_volume(
            "tls-client",
            &cert.secret_name,
            &[("tls.crt", "tls.crt"), ("tls.key", "tls.key")],
        ));
        mounts.push(mount("tls-client", &format!("{TLS_DIR}/client"), true));
    }
    (volumes, mounts)
}
