//! Stage 1 (async): fetch every Secret the EventBroker references, and the credentials the operator
//! generated for a deployed broker (read back, so they are generated once and never again).

use super::names::generated_secret_name;
use crate::context::Context;
use crate::secret::{self, GeneratedCredentials, SecretString, read_generated};
use edgewire_api::{
    Adapter, EventBroker, EventBrokerSpec, NatsAuth, PASSWORD_KEY, Tls, USERNAME_KEY,
};
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use std::collections::BTreeMap;

/// One referenced Secret and the keys the spec needs from it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecretUse {
    pub name: String,
    pub keys: Vec<String>,
    /// Spec field that references it, for messages (`spec.nats.auth.token`).
    pub field: &'static str,
}

/// What `fetch` found.
#[derive(Clone, Debug, Default)]
pub struct Refs {
    /// Referenced Secrets that exist, by name.
    pub secrets: BTreeMap<String, Secret>,
    /// Generated broker credentials (existing, or new when none were stored yet).
    pub generated: Option<GeneratedCredentials>,
}

impl Refs {
    /// The value of `key` in Secret `name`, if both exist and it is UTF-8.
    pub fn value(&self, name: &str, key: &str) -> Option<SecretString> {
        secret::value(self.secrets.get(name)?, key)
    }
}

fn tls_uses(
    out: &mut Vec<SecretUse>,
    tls: &Option<Tls>,
    ca_field: &'static str,
    cert_field: &'static str,
) {
    if let Some(t) = tls.as_ref().filter(|t| t.enabled) {
        if let Some(ca) = &t.ca_secret_ref {
            out.push(SecretUse {
                name: ca.name.clone(),
                keys: vec![ca.key.clone()],
                field: ca_field,
            });
        }
        if let Some(c) = &t.client_cert_secret_ref {
            out.push(SecretUse {
                name: c.secret_name.clone(),
                keys: vec!["tls.crt".into(), "tls.key".into()],
                field: cert_field,
            });
        }
    }
}

fn user_password(name: &str, field: &'static str) -> SecretUse {
    SecretUse {
        name: name.into(),
        keys: vec![USERNAME_KEY.into(), PASSWORD_KEY.into()],
        field,
    }
}

/// Every Secret the active adapter's section references (sections of other adapters are ignored).
pub fn secret_uses(spec: &EventBrokerSpec) -> Vec<SecretUse> {
    let mut out = Vec::new();
    match spec.adapter.canonical() {
        Adapter::Nats => {
            if let Some(n) = &spec.nats {
                match &n.auth {
                    Some(NatsAuth { token: Some(t), .. }) => out.push(SecretUse {
                        name: t.name.clone(),
                        keys: vec![t.key.clone()],
                        field: "spec.nats.auth.token",
                    }),
                    Some(NatsAuth {
                        user_password: Some(up),
                        ..
                    }) => out.push(user_password(
                        &up.secret_name,
                        "spec.nats.auth.userPassword",
                    )),
                    Some(NatsAuth { nkey: Some(nk), .. }) => {
                        out.push(SecretUse {
                            name: nk.seed.name.clone(),
                            keys: vec![nk.seed.key.clone()],
                            field: "spec.nats.auth.nkey.seed",
                        });
                        if let Some(j) = &nk.jwt {
                            out.push(SecretUse {
                                name: j.name.clone(),
                                keys: vec![j.key.clone()],
                                field: "spec.nats.auth.nkey.jwt",
                            });
                        }
                    }
                    _ => {}
                }
                tls_uses(
                    &mut out,
                    &n.tls,
                    "spec.nats.tls.caSecretRef",
                    "spec.nats.tls.clientCertSecretRef",
                );
            }
        }
        Adapter::Kafka => {
            if let Some(k) = &spec.kafka {
                if let Some(s) = &k.sasl {
                    out.push(user_password(&s.secret_name, "spec.kafka.sasl.secretName"));
                }
                tls_uses(
                    &mut out,
                    &k.tls,
                    "spec.kafka.tls.caSecretRef",
                    "spec.kafka.tls.clientCertSecretRef",
                );
            }
        }
        Adapter::Amqp091 | Adapter::Rabbitmq => {
            if let Some(a) = &spec.amqp091 {
                if let Some(u) = &a.url {
                    out.push(SecretUse {
                        name: u.name.clone(),
                        keys: vec![u.key.clone()],
                        field: "spec.amqp091.url",
                    });
                }
                tls_uses(
                    &mut out,
                    &a.tls,
                    "spec.amqp091.tls.caSecretRef",
                    "spec.amqp091.tls.clientCertSecretRef",
                );
            }
        }
        Adapter::Redis => {
            if let Some(r) = &spec.redis {
                if let Some(u) = &r.url {
                    out.push(SecretUse {
                        name: u.name.clone(),
                        keys: vec![u.key.clone()],
                        field: "spec.redis.url",
                    });
                }
                tls_uses(
                    &mut out,
                    &r.tls,
                    "spec.redis.tls.caSecretRef",
                    "spec.redis.tls.clientCertSecretRef",
                );
            }
        }
        Adapter::Mqtt => {
            if let Some(m) = &spec.mqtt {
                if let Some(a) = &m.auth {
                    if let Some(j) = &a.jwt {
                        out.push(SecretUse {
                            name: j.name.clone(),
                            keys: vec![j.key.clone()],
                            field: "spec.mqtt.auth.jwt",
                        });
                    } else if let Some(up) = &a.user_password {
                        out.push(user_password(
                            &up.secret_name,
                            "spec.mqtt.auth.userPassword",
                        ));
                    }
                }
                tls_uses(
                    &mut out,
                    &m.tls,
                    "spec.mqtt.tls.caSecretRef",
                    "spec.mqtt.tls.clientCertSecretRef",
                );
            }
        }
        Adapter::AwsSns => {
            if let Some(c) = spec.aws_sns.as_ref().and_then(|s| s.credentials.as_ref()) {
                out.push(SecretUse {
                    name: c.secret_name.clone(),
                    keys: vec!["AWS_ACCESS_KEY_ID".into(), "AWS_SECRET_ACCESS_KEY".into()],
                    field: "spec.awsSns.credentials",
                });
            }
        }
        Adapter::GooglePubsub => {
            if let Some(c) = spec
                .google_pubsub
                .as_ref()
                .and_then(|s| s.credentials.as_ref())
            {
                out.push(SecretUse {
                    name: c.name.clone(),
                    keys: vec![c.key.clone()],
                    field: "spec.googlePubsub.credentials",
                });
            }
        }
    }
    out
}

/// Names of the Secrets an EventBroker references (the reverse index from Secret to EventBroker uses it).
pub fn referenced_secret_names(eb: &EventBroker) -> Vec<String> {
    let mut names: Vec<String> = secret_uses(&eb.spec).into_iter().map(|u| u.name).collect();
    if needs_generated_credentials(&eb.spec) {
        names.push(generated_secret_name(&eb.name_any()));
    }
    names.sort();
    names.dedup();
    names
}

/// A deployed broker with no credentials in the spec gets generated ones.
pub fn needs_generated_credentials(spec: &EventBrokerSpec) -> bool {
    if spec.deploy_broker.is_none() {
        return false;
    }
    match spec.adapter.canonical() {
        Adapter::Nats => spec.nats.as_ref().and_then(|n| n.auth.as_ref()).is_none(),
        Adapter::Kafka => spec.kafka.as_ref().and_then(|k| k.sasl.as_ref()).is_none(),
        Adapter::Amqp091 | Adapter::Rabbitmq => {
            spec.amqp091.as_ref().and_then(|a| a.url.as_ref()).is_none()
        }
        Adapter::Redis => spec.redis.as_ref().and_then(|r| r.url.as_ref()).is_none(),
        Adapter::Mqtt => spec.mqtt.as_ref().and_then(|m| m.auth.as_ref()).is_none(),
        Adapter::AwsSns | Adapter::GooglePubsub => false,
    }
}

/// Fresh credentials for a broker that has none yet.
pub fn new_generated(name: &str) -> GeneratedCredentials {
    GeneratedCredentials::generate(name, "edgewire")
}

/// Fetches the referenced Secrets (missing ones are simply absent from `secrets`).
pub async fn fetch(ctx: &Context, eb: &EventBroker) -> Result<Refs, kube::Error> {
    let ns = eb.namespace().unwrap_or_default();
    let mut refs = Refs::default();
    for use_ in secret_uses(&eb.spec) {
        if refs.secrets.contains_key(&use_.name) {
            continue;
        }
        if let Some(s) = ctx.secret(&ns, &use_.name).await? {
            refs.secrets.insert(use_.name.clone(), s);
        }
    }
    if needs_generated_credentials(&eb.spec) {
        let name = generated_secret_name(&eb.name_any());
        let existing = ctx.secret(&ns, &name).await?;
        refs.generated =
            Some(read_generated(&name, existing.as_ref()).unwrap_or_else(|| new_generated(&name)));
    }
    Ok(refs)
}
