//! Stage 1 (async): fetch the Secrets an MqttBroker references (users' passwords, the TLS listener's
//! certificate) and read back the passwords the operator generated, so each is generated once and never again.

use super::names::{SIDECAR_USER, sidecar_secret_name, user_secret_name};
use crate::cloud::aws::keys as aws_keys;
use crate::context::Context;
use crate::secret::{self, GeneratedCredentials, SecretString, is_secret_name, read_generated};
use edgewire_api::{MqttBroker, MqttBrokerType};
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use std::collections::BTreeMap;

/// Keys of the listener's `kubernetes.io/tls` Secret.
pub mod tls_keys {
    pub const CERT: &str = "tls.crt";
    pub const KEY: &str = "tls.key";
    pub const CA: &str = "ca.crt";
}

/// One referenced Secret and the keys the spec needs from it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecretUse {
    pub name: String,
    pub keys: Vec<String>,
    /// Spec field that references it, for messages (`spec.builtin.users[0].password`).
    pub field: String,
    /// The user whose password it holds; `None` for the TLS Secret.
    pub user: Option<String>,
}

/// What `fetch` found.
#[derive(Clone, Debug, Default)]
pub struct Refs {
    /// Referenced Secrets that exist, by name.
    pub secrets: BTreeMap<String, Secret>,
    /// Generated passwords of the users without a `password` reference, by user name (read back, or new).
    pub generated: BTreeMap<String, GeneratedCredentials>,
    /// The sidecar's generated credentials (read back, or new).
    pub sidecar: Option<GeneratedCredentials>,
}

impl Refs {
    /// The value of `key` in Secret `name`, if both exist and it is UTF-8.
    pub fn value(&self, name: &str, key: &str) -> Option<SecretString> {
        secret::value(self.secrets.get(name)?, key)
    }

    /// Whether Secret `name` has `key` (any bytes).
    pub fn has_key(&self, name: &str, key: &str) -> bool {
        self.secrets
            .get(name)
            .is_some_and(|s| secret::has_key(s, key))
    }
}

fn builtin(mqb: &MqttBroker) -> bool {
    mqb.spec.broker_type == MqttBrokerType::Builtin
}

/// Every Secret the spec references: for builtin each user's password Secret (spec order), then the TLS
/// Secret; for iotcore the credentials Secret (`AWS_SESSION_TOKEN` is optional and not listed).
pub fn secret_uses(mqb: &MqttBroker) -> Vec<SecretUse> {
    let mut out = Vec::new();
    if mqb.spec.broker_type == MqttBrokerType::Iotcore {
        if let Some(c) = mqb
            .spec
            .iotcore
            .as_ref()
            .and_then(|i| i.credentials.as_ref())
        {
            out.push(SecretUse {
                name: c.secret_name.clone(),
                keys: vec![
                    aws_keys::ACCESS_KEY_ID.to_string(),
                    aws_keys::SECRET_ACCESS_KEY.to_string(),
                ],
                field: "spec.iotcore.credentials.secretName".into(),
                user: None,
            });
        }
        return out;
    }
    let Some(b) = mqb.spec.builtin.as_ref().filter(|_| builtin(mqb)) else {
        return out;
    };
    for (i, u) in b.users.iter().enumerate() {
        if let Some(p) = &u.password {
            out.push(SecretUse {
                name: p.name.clone(),
                keys: vec![p.key.clone()],
                field: format!("spec.builtin.users[{i}].password"),
                user: Some(u.name.clone()),
            });
        }
    }
    if let Some(t) = &b.listeners.mqtts {
        let mut keys = vec![tls_keys::CERT.to_string(), tls_keys::KEY.to_string()];
        if t.require_client_cert {
            keys.push(tls_keys::CA.into());
        }
        out.push(SecretUse {
            name: t.cert_secret_name.clone(),
            keys,
            field: "spec.builtin.listeners.mqtts.certSecretName".into(),
            user: None,
        });
    }
    out
}

/// `(user, Secret name)` of the users whose password the operator generates. Users whose name cannot name
/// a Secret are left out (validation rejects them).
pub fn generated_users(mqb: &MqttBroker) -> Vec<(String, String)> {
    let Some(b) = mqb.spec.builtin.as_ref().filter(|_| builtin(mqb)) else {
        return Vec::new();
    };
    let owner = mqb.name_any();
    b.users
        .iter()
        .filter(|u| u.password.is_none())
        .map(|u| (u.name.clone(), user_secret_name(&owner, &u.name)))
        .filter(|(_, secret)| is_secret_name(secret))
        .collect()
}

/// Every Secret an MqttBroker reads, in the order `fetch` reads them: referenced ones, the generated users',
/// the sidecar's. The reverse index from Secret to MqttBroker uses it.
pub fn referenced_secret_names(mqb: &MqttBroker) -> Vec<String> {
    if !builtin(mqb) {
        return secret_uses(mqb).into_iter().map(|u| u.name).collect();
    }
    let mut names: Vec<String> = secret_uses(mqb).into_iter().map(|u| u.name).collect();
    names.extend(generated_users(mqb).into_iter().map(|(_, s)| s));
    names.push(sidecar_secret_name(&mqb.name_any()));
    let mut seen = std::collections::BTreeSet::new();
    names.retain(|n| seen.insert(n.clone()));
    names
}

/// Fresh credentials for `username`, to be stored in `secret_name`.
pub fn new_generated(secret_name: &str, username: &str) -> GeneratedCredentials {
    GeneratedCredentials::generate(secret_name, username)
}

/// The refs of `mqb` from Secrets found by `lookup` (by name, in the MqttBroker's namespace); `generate`
/// makes credentials for a generated Secret that does not hold any yet.
pub fn from_lookup<'a>(
    mqb: &MqttBroker,
    lookup: impl Fn(&str) -> Option<&'a Secret>,
    generate: impl Fn(&str, &str) -> GeneratedCredentials,
) -> Refs {
    let mut refs = Refs::default();
    for u in secret_uses(mqb) {
        if let Some(s) = lookup(&u.name) {
            refs.secrets.insert(u.name, s.clone());
        }
    }
    if !builtin(mqb) {
        return refs;
    }
    let read_back = |secret: &str, username: &str| {
        let mut g =
            read_generated(secret, lookup(secret)).unwrap_or_else(|| generate(secret, username));
        // The user name is the spec's; a hand-edited `username` key is put back on the next apply.
        g.username = username.into();
        g
    };
    for (user, secret) in generated_users(mqb) {
        let g = read_back(&secret, &user);
        refs.generated.insert(user, g);
    }
    refs.sidecar = Some(read_back(
        &sidecar_secret_name(&mqb.name_any()),
        SIDECAR_USER,
    ));
    refs
}

/// Fetches every Secret `mqb` reads (missing ones are simply absent) and resolves the generated credentials.
pub async fn fetch(ctx: &Context, mqb: &MqttBroker) -> Result<Refs, kube::Error> {
    let ns = mqb.namespace().unwrap_or_default();
    let mut found = BTreeMap::new();
    for name in referenced_secret_names(mqb) {
        if let Some(s) = ctx.secret(&ns, &name).await? {
            found.insert(name, s);
        }
    }
    Ok(from_lookup(mqb, |n| found.get(n), new_generated))
}
