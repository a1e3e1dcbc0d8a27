//! `edgewire-operator render -f FILE`: the objects the operator would apply, with no cluster. Secrets the
//! resources reference are taken from the same file; generated credentials are shown as placeholders.

use crate::context::Settings;
use crate::controller::event_broker::{self, build, refs, validate};
use crate::secret::SecretString;
use anyhow::{Context as _, bail};
use edgewire_api::EventBroker;
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::Path;

/// Renders every EventBroker, MqttBroker and BridgeLink in `yaml` (a multi-document stream).
pub fn render(yaml: &str, settings: &Settings) -> anyhow::Result<String> {
    let mut brokers = Vec::new();
    let mut mqtt_brokers = Vec::new();
    let mut bridge_links = Vec::new();
    let mut secrets: BTreeMap<(String, String), Secret> = BTreeMap::new();
    for (i, doc) in serde_norway::Deserializer::from_str(yaml).enumerate() {
        let value = serde_norway::Value::deserialize(doc)
            .with_context(|| format!("document {}: not YAML", i + 1))?;
        if value.is_null() {
            continue;
        }
        let kind = value
            .get("kind")
            .and_then(|k| k.as_str())
            .unwrap_or_default()
            .to_string();
        match kind.as_str() {
            "EventBroker" => {
                let mut eb: EventBroker = serde_norway::from_value(value)
                    .with_context(|| format!("document {}: not a valid EventBroker", i + 1))?;
                crate::children::for_render(&mut eb);
                brokers.push(eb);
            }
            "Secret" => {
                let mut s: Secret = serde_norway::from_value(value)
                    .with_context(|| format!("document {}: not a valid Secret", i + 1))?;
                // stringData is what people write by hand; the operator reads data.
                if let Some(sd) = s.string_data.take() {
                    let data = s.data.get_or_insert_with(Default::default);
                    for (k, v) in sd {
                        data.insert(k, k8s_openapi::ByteString(v.into_bytes()));
                    }
                }
                let ns = s.namespace().unwrap_or_else(|| "default".into());
                secrets.insert((ns, s.name_any()), s);
            }
            "MqttBroker" => mqtt_brokers.push(
                serde_norway::from_value::<edgewire_api::MqttBroker>(value)
                    .with_context(|| format!("document {}: not a valid MqttBroker", i + 1))?,
            ),
            "BridgeLink" => bridge_links.push(
                serde_norway::from_value::<edgewire_api::BridgeLink>(value)
                    .with_context(|| format!("document {}: not a valid BridgeLink", i + 1))?,
            ),
            other => bail!("document {}: unexpected kind {other:?}", i + 1),
        }
    }
    let mut out = String::new();
    for eb in &brokers {
        let ns = eb.namespace().unwrap_or_default();
        let mut r = refs::Refs::default();
        for u in refs::secret_uses(&eb.spec) {
            if let Some(s) = secrets.get(&(ns.clone(), u.name.clone())) {
                r.secrets.insert(u.name.clone(), s.clone());
            }
        }
        if refs::needs_generated_credentials(&eb.spec) {
            let name = event_broker::generated_secret_name(&eb.name_any());
            let stored = secrets.get(&(ns.clone(), name.clone()));
            r.generated = Some(
                crate::secret::read_generated(&name, stored).unwrap_or_else(|| {
                    crate::secret::GeneratedCredentials {
                        secret_name: name,
                        username: "edgewire".into(),
                        password: SecretString::from("GENERATED-AT-FIRST-RECONCILE"),
                    }
                }),
            );
        }
        let valid = validate::validate(eb, &r, settings)
            .map_err(|e| anyhow::anyhow!("EventBroker {ns}/{}: {e}", eb.name_any()))?;
        let children = build::build(&valid);
        out.push_str(&format!("# EventBroker {ns}/{}\n", eb.name_any()));
        out.push_str(&least_privilege(eb));
        for doc in children_yaml(children)? {
            out.push_str("---\n");
            out.push_str(&doc);
        }
    }
    for mqb in &mqtt_brokers {
        let ns = mqb.namespace().unwrap_or_else(|| "default".into());
        out.push_str(&format!("# MqttBroker {ns}/{}\n", mqb.name_any()));
        for doc in crate::controller::mqtt_broker::render(mqb, &secrets, settings)? {
            out.push_str("---\n");
            out.push_str(&doc);
        }
    }
    let key = |ns: Option<String>, name: String| (ns.unwrap_or_else(|| "default".into()), name);
    let ebs: BTreeMap<(String, String), EventBroker> = brokers
        .iter()
        .map(|eb| (key(eb.namespace(), eb.name_any()), eb.clone()))
        .collect();
    let mqbs: BTreeMap<(String, String), edgewire_api::MqttBroker> = mqtt_brokers
        .iter()
        .map(|m| (key(m.namespace(), m.name_any()), m.clone()))
        .collect();
    for bl in &bridge_links {
        let ns = bl.namespace().unwrap_or_else(|| "default".into());
        out.push_str(&format!("# BridgeLink {ns}/{}\n", bl.name_any()));
        for doc in crate::controller::bridge_link::render(bl, &ebs, &mqbs, &secrets, settings)? {
            out.push_str("---\n");
            out.push_str(&doc);
        }
    }
    Ok(out)
}

/// Every child as a YAML document, in apply order.
fn children_yaml(c: build::Children) -> anyhow::Result<Vec<String>> {
    let build::Children {
        service_account,
        generated_secret,
        broker,
        publisher_service,
        publisher_deployment,
    } = c;
    let mut docs = vec![serde_norway::to_string(&service_account)?];
    if let Some(s) = generated_secret {
        docs.push(serde_norway::to_string(&s)?);
    }
    if let Some(b) = broker {
        let build::broker::BrokerChildren {
            config,
            headless,
            client,
            statefulset,
            ui,
        } = b;
        docs.push(serde_norway::to_string(&config)?);
        docs.push(serde_norway::to_string(&headless)?);
        docs.push(serde_norway::to_string(&client)?);
        if let Some(build::broker::UiChildren {
            deployment,
            service,
        }) = ui
        {
            docs.push(serde_norway::to_string(&service)?);
            if let Some(d) = deployment {
                docs.push(serde_norway::to_string(&d)?);
            }
        }
        docs.push(serde_norway::to_string(&statefulset)?);
    }
    docs.push(serde_norway::to_string(&publisher_service)?);
    docs.push(serde_norway::to_string(&publisher_deployment)?);
    Ok(docs)
}

pub fn render_file(path: &Path, settings: &Settings) -> anyhow::Result<()> {
    let yaml =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let out = render(&yaml, settings)?;
    print!("{out}");
    Ok(())
}

/// The minimal IAM policies of a managed-cloud EventBroker, as YAML comments (empty for other adapters).
pub fn least_privilege(eb: &EventBroker) -> String {
    use crate::cloud::iam;
    use edgewire_api::Adapter;
    use edgewire_api::domain::DOMAINS;
    if eb.spec.adapter.canonical() == Adapter::GooglePubsub
        && let Some(ps) = eb.spec.google_pubsub.as_ref()
    {
        return pubsub_least_privilege(ps);
    }
    let Some(sns) = eb
        .spec
        .aws_sns
        .as_ref()
        .filter(|_| eb.spec.adapter.canonical() == Adapter::AwsSns)
    else {
        return String::new();
    };
    let prefix = sns
        .topic_arn_prefix
        .clone()
        .unwrap_or_else(|| format!("arn:aws:sns:{}:<account-id>:", sns.region));
    let arns: Vec<String> = DOMAINS
        .iter()
        .map(|d| format!("{prefix}{}", d.topic))
        .collect();
    let pretty = |v: serde_json::Value| serde_json::to_string_pretty(&v).unwrap_or_default();
    let mut out = iam::as_comments(
        "IAM policy of the publisher (its role, e.g. spec.awsSns.roleArn via IRSA, or the credentials Secret's user):",
        &pretty(iam::sns_publisher_policy(&arns)),
    );
    if sns.provision {
        out.push_str(&iam::as_comments(
            "IAM policy of the operator (provision: true creates, tags and, with deletionPolicy Delete, deletes the topics):",
            &pretty(iam::sns_operator_policy(&arns)),
        ));
    }
    out
}

/// The Pub/Sub role bindings of a `google_pubsub` EventBroker: `roles/pubsub.publisher` on the four topics
/// for the publisher's Google service account; with `provision: true`, the operator's custom role.
fn pubsub_least_privilege(ps: &edgewire_api::GooglePubsubSpec) -> String {
    use crate::cloud::iam;
    use edgewire_api::domain::DOMAINS;
    let prefix = ps.topic_id_prefix.as_deref().unwrap_or_default();
    let ids: Vec<String> = DOMAINS
        .iter()
        .map(|d| format!("{prefix}{}", d.topic))
        .collect();
    let member = match &ps.service_account {
        Some(gsa) => format!("serviceAccount:{gsa}"),
        None => "serviceAccount:<client_email of the credentials key>".to_string(),
    };
    let mut out = iam::as_comments(
        "Pub/Sub role bindings of the publisher (spec.googlePubsub.serviceAccount via Workload Identity, or the credentials key's account):",
        &iam::pubsub_publisher_bindings(&ps.project, &ids, &member),
    );
    if ps.provision {
        let role = serde_norway::to_string(&iam::pubsub_operator_role()).unwrap_or_default();
        let grant = format!(
            "{}\ngcloud iam roles create edgewireTopicProvisioner --project={p} --file=role.yaml\n\
             gcloud projects add-iam-policy-binding {p} \\\n    \
             --member=serviceAccount:<operator's account> --role=projects/{p}/roles/edgewireTopicProvisioner\n\
             (or roles/pubsub.editor, which grants more)",
            role.trim_end(),
            p = ps.project
        );
        out.push_str(&iam::as_comments(
            "Custom role of the operator (provision: true creates the topics, reads their labels and, with deletionPolicy Delete, deletes them):",
            &grant,
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use edgewire_api::{Adapter, EventBroker};

    #[test]
    fn pubsub_bindings_follow_the_spec() {
        let mut eb = EventBroker::test("events").adapter(Adapter::GooglePubsub);
        let ps = eb.spec.google_pubsub.as_mut().unwrap();
        ps.topic_id_prefix = Some("edge-prod-".into());
        ps.service_account = Some("pub@my-project.iam.gserviceaccount.com".into());
        let text = least_privilege(&eb);
        for t in [
            "edge-nodes-events",
            "edge-commands-events",
            "edge-self-updates-events",
            "edge-ssh-events",
        ] {
            assert!(
                text.contains(&format!(
                    "add-iam-policy-binding edge-prod-{t} --project=my-project"
                )),
                "{t}: {text}"
            );
        }
        assert!(text.contains("--member=serviceAccount:pub@my-project.iam.gserviceaccount.com"));
        assert!(text.lines().all(|l| l.starts_with('#')), "{text}");
        assert!(
            !text.contains("pubsub.topics.create"),
            "no provisioning: {text}"
        );
        eb.spec.google_pubsub.as_mut().unwrap().provision = true;
        let text = least_privilege(&eb);
        for p in [
            "pubsub.topics.create",
            "pubsub.topics.get",
            "pubsub.topics.delete",
        ] {
            assert!(text.contains(p), "{p}: {text}");
        }
        assert!(!text.contains("pubsub.topics.update"), "{text}");
    }
}
