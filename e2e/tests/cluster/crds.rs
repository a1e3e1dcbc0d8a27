//! The CRDs on the real API server: every `x-kubernetes-validations` rule refuses an object that breaks it
//! with the rule's own message (server-side CEL, before the operator sees anything), every sample is
//! accepted, and `kubectl explain` shows the field documentation.
//!
//! The rule list is read from the CRDs the chart installed, not written here: a rule added to the api crate
//! without a case below fails the test, and so does a case whose rule is gone.

use crate::support::{Cluster, at, str_at, workspace_root};
use serde_json::Value;
use std::collections::BTreeSet;

/// A rule: kind, where in the schema (`.spec.cloud.endpoint`, `[]` for list items), message.
type RuleKey = (String, String, String);

/// One object per rule that breaks that rule and nothing else the schema checks: (kind, path, message,
/// spec as flow-style YAML lines under `spec:`).
const CASES: &[(&str, &str, &str, &str)] = &[
    // EventBroker
    (
        "EventBroker",
        ".spec",
        "adapter nats needs spec.nats (or spec.deployBroker)",
        "adapter: nats",
    ),
    (
        "EventBroker",
        ".spec",
        "adapter kafka needs spec.kafka (or spec.deployBroker)",
        "adapter: kafka",
    ),
    (
        "EventBroker",
        ".spec",
        "adapter amqp091 needs spec.amqp091.url (or spec.deployBroker)",
        "adapter: amqp091",
    ),
    (
        "EventBroker",
        ".spec",
        "adapter redis needs spec.redis.url (or spec.deployBroker)",
        "adapter: redis",
    ),
    (
        "EventBroker",
        ".spec",
        "adapter mqtt needs spec.mqtt.url (or spec.deployBroker)",
        "adapter: mqtt",
    ),
    (
        "EventBroker",
        ".spec",
        "adapter aws_sns needs spec.awsSns",
        "adapter: aws_sns",
    ),
    (
        "EventBroker",
        ".spec",
        "adapter google_pubsub needs spec.googlePubsub",
        "adapter: google_pubsub",
    ),
    (
        "EventBroker",
        ".spec",
        "deployBroker.kind must belong to the adapter's family (nats: nats; kafka: redpanda | kafka; amqp091: rabbitmq; redis: redis; mqtt: emqx | mosquitto)",
        "adapter: nats\ndeployBroker: {kind: redis, replicas: 1}",
    ),
    (
        "EventBroker",
        ".spec.deployBroker",
        "deployBroker.replicas: redis and mosquitto run as a single replica",
        "adapter: redis\ndeployBroker: {kind: redis, replicas: 3}",
    ),
    (
        "EventBroker",
        ".spec.deployBroker",
        "deployBroker.replicas must be odd for a quorum (1, 3, 5)",
        "adapter: nats\ndeployBroker: {kind: nats, replicas: 2}",
    ),
    (
        "EventBroker",
        ".spec.amqp091.tls",
        "tls.clientCertSecretRef requires tls.enabled: true (mTLS requires SSL)",
        "adapter: amqp091\namqp091: {url: {name: u, key: url}, tls: {clientCertSecretRef: {secretName: c}}}",
    ),
    (
        "EventBroker",
        ".spec.kafka.tls",
        "tls.clientCertSecretRef requires tls.enabled: true (mTLS requires SSL)",
        "adapter: kafka\nkafka: {urls: ['kafka.example.com:9092'], tls: {clientCertSecretRef: {secretName: c}}}",
    ),
    (
        "EventBroker",
        ".spec.mqtt.auth",
        "mqtt.auth: set exactly one of jwt, userPassword",
        "adapter: mqtt\nmqtt: {url: 'mqtt.example.com:1883', auth: {jwt: {name: j, key: jwt}, userPassword: {secretName: u}}}",
    ),
    (
        "EventBroker",
        ".spec.mqtt.qos",
        "mqtt.qos must be 0, 1 or 2",
        "adapter: mqtt\nmqtt: {url: 'mqtt.example.com:1883', qos: 3}",
    ),
    (
        "EventBroker",
        ".spec.mqtt.tls",
        "tls.clientCertSecretRef requires tls.enabled: true (mTLS requires SSL)",
        "adapter: mqtt\nmqtt: {url: 'mqtt.example.com:1883', tls: {clientCertSecretRef: {secretName: c}}}",
    ),
    (
        "EventBroker",
        ".spec.nats.auth",
        "nats.auth: set exactly one of token, userPassword, nkey",
        "adapter: nats\nnats: {urls: ['nats://nats.example.com:4222'], auth: {token: {name: t, key: token}, userPassword: {secretName: u}}}",
    ),
    (
        "EventBroker",
        ".spec.nats.tls",
        "tls.clientCertSecretRef requires tls.enabled: true (mTLS requires SSL)",
        "adapter: nats\nnats: {urls: ['nats://nats.example.com:4222'], tls: {clientCertSecretRef: {secretName: c}}}",
    ),
    (
        "EventBroker",
        ".spec.redis.tls",
        "tls.clientCertSecretRef requires tls.enabled: true (mTLS requires SSL)",
        "adapter: redis\nredis: {url: {name: u, key: url}, tls: {clientCertSecretRef: {secretName: c}}}",
    ),
    // MqttBroker
    (
        "MqttBroker",
        ".spec",
        "type iotcore needs spec.iotcore",
        "type: iotcore",
    ),
    (
        "MqttBroker",
        ".spec",
        "spec.iotcore is set but type is builtin",
        "type: builtin\niotcore: {region: us-east-1}",
    ),
    // BridgeLink: {edge} and {cloud} are replaced by a valid side unless the case sets that side.
    (
        "BridgeLink",
        ".spec.cloud",
        "set exactly one of brokerRef, endpoint",
        "cloud: {brokerRef: {kind: EventBroker, name: eb}, endpoint: {protocol: nats, url: 'nats://c:4222'}}",
    ),
    (
        "BridgeLink",
        ".spec.edge",
        "set exactly one of brokerRef, endpoint",
        "edge: {brokerRef: {kind: EventBroker, name: eb}, endpoint: {protocol: nats, url: 'nats://e:4222'}}",
    ),
    (
        "BridgeLink",
        ".spec.cloud.endpoint",
        "auth.clientCert requires tls.enabled: true",
        "cloud: {endpoint: {protocol: mqtt, url: 'c:8883', auth: {clientCert: {secretName: c}}}}",
    ),
    (
        "BridgeLink",
        ".spec.edge.endpoint",
        "auth.clientCert requires tls.enabled: true",
        "edge: {endpoint: {protocol: mqtt, url: 'e:8883', auth: {clientCert: {secretName: c}}}}",
    ),
    (
        "BridgeLink",
        ".spec.cloud.endpoint",
        "mqttVersion applies to protocol mqtt only",
        "cloud: {endpoint: {protocol: nats, url: 'nats://c:4222', mqttVersion: '5'}}",
    ),
    (
        "BridgeLink",
        ".spec.edge.endpoint",
        "mqttVersion applies to protocol mqtt only",
        "edge: {endpoint: {protocol: nats, url: 'nats://e:4222', mqttVersion: '5'}}",
    ),
    (
        "BridgeLink",
        ".spec.cloud.endpoint",
        "jetStream applies to protocol nats only",
        "cloud: {endpoint: {protocol: mqtt, url: 'c:1883', jetStream: {enabled: true}}}",
    ),
    (
        "BridgeLink",
        ".spec.edge.endpoint",
        "jetStream applies to protocol nats only",
        "edge: {endpoint: {protocol: mqtt, url: 'e:1883', jetStream: {enabled: true}}}",
    ),
    (
        "BridgeLink",
        ".spec.cloud.endpoint",
        "exchange applies to protocol amqp091 only",
        "cloud: {endpoint: {protocol: nats, url: 'nats://c:4222', exchange: edge}}",
    ),
    (
        "BridgeLink",
        ".spec.edge.endpoint",
        "exchange applies to protocol amqp091 only",
        "edge: {endpoint: {protocol: nats, url: 'nats://e:4222', exchange: edge}}",
    ),
    (
        "BridgeLink",
        ".spec.cloud.endpoint.auth",
        "auth: set exactly one of token, userPassword, clientCert",
        "cloud: {endpoint: {protocol: nats, url: 'nats://c:4222', auth: {token: {name: t, key: token}, userPassword: {secretName: u}}}}",
    ),
    (
        "BridgeLink",
        ".spec.edge.endpoint.auth",
        "auth: set exactly one of token, userPassword, clientCert",
        "edge: {endpoint: {protocol: nats, url: 'nats://e:4222', auth: {token: {name: t, key: token}, userPassword: {secretName: u}}}}",
    ),
    (
        "BridgeLink",
        ".spec.cloud.endpoint.tls",
        "tls.clientCertSecretRef requires tls.enabled: true (mTLS requires SSL)",
        "cloud: {endpoint: {protocol: nats, url: 'nats://c:4222', tls: {clientCertSecretRef: {secretName: c}}}}",
    ),
    (
        "BridgeLink",
        ".spec.edge.endpoint.tls",
        "tls.clientCertSecretRef requires tls.enabled: true (mTLS requires SSL)",
        "edge: {endpoint: {protocol: nats, url: 'nats://e:4222', tls: {clientCertSecretRef: {secretName: c}}}}",
    ),
    (
        "BridgeLink",
        ".spec.rules[].qos",
        "rules[].qos must be 0, 1 or 2",
        "rules: [{direction: EdgeToCloud, from: a, to: b, qos: 3}]",
    ),
];

/// Every CEL rule of a schema: (path, message), depth first.
fn rules_of(schema: &Value, path: &str, out: &mut Vec<(String, String)>) {
    for v in at(schema, "/x-kubernetes-validations")
        .as_array()
        .into_iter()
        .flatten()
    {
        out.push((path.to_string(), str_at(v, "/message").to_string()));
    }
    if let Some(props) = schema["properties"].as_object() {
        for (k, sub) in props {
            rules_of(sub, &format!("{path}.{k}"), out);
        }
    }
    if schema["items"].is_object() {
        rules_of(&schema["items"], &format!("{path}[]"), out);
    }
    if schema["additionalProperties"].is_object() {
        rules_of(&schema["additionalProperties"], &format!("{path}{{}}"), out);
    }
}

/// The CRDs as the API server serves them: (kind, plural, schema of the served version).
fn served_crds(cluster: &Cluster) -> Vec<(String, String, Value)> {
    edgewire_e2e::kube::edgewire_crd_names()
        .iter()
        .map(|name| {
            let crd = cluster.get_json("", "crd", name);
            let version = at(&crd, "/spec/versions")
                .as_array()
                .and_then(|vs| vs.iter().find(|v| v["served"] == true))
                .unwrap_or_else(|| panic!("{name}: no served version"));
            (
                str_at(&crd, "/spec/names/kind").to_string(),
                str_at(&crd, "/spec/names/plural").to_string(),
                at(version, "/schema/openAPIV3Schema").clone(),
            )
        })
        .collect()
}

/// The manifest of case `i`: a whole object of `kind` in `ns` whose spec is `spec` (flow-style lines), a
/// BridgeLink completed with valid sides and rules where the case does not set them.
fn case_manifest(ns: &str, i: usize, kind: &str, spec: &str) -> String {
    let mut lines: Vec<String> = spec.lines().map(str::to_string).collect();
    if kind == "BridgeLink" {
        let has = |k: &str| spec.lines().any(|l| l.starts_with(&format!("{k}:")));
        lines.push("siteId: cel".into());
        if !has("edge") {
            lines.push("edge: {brokerRef: {kind: EventBroker, name: eb}}".into());
        }
        if !has("cloud") {
            lines.push("cloud: {endpoint: {protocol: nats, url: 'nats://c:4222'}}".into());
        }
        if !has("rules") {
            lines.push("rules: [{direction: EdgeToCloud, from: a, to: b}]".into());
        }
    }
    let spec: String = lines.iter().map(|l| format!("  {l}\n")).collect();
    format!(
        "apiVersion: edgewire.dev/v1alpha1\nkind: {kind}\nmetadata:\n  name: cel-{i}\n  namespace: {ns}\nspec:\n{spec}"
    )
}

/// The objects of every sample file, as kubectl parses them.
fn sample_objects(cluster: &Cluster) -> Vec<(String, Value)> {
    let dir = workspace_root().join("config/samples");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    let mut objs = Vec::new();
    for f in files {
        let f = f.to_string_lossy().into_owned();
        let out = cluster.kubectl_ok(&["create", "-f", &f, "--dry-run=client", "-o", "json"]);
        for v in serde_json::Deserializer::from_str(&out).into_iter::<Value>() {
            let v = v.unwrap_or_else(|e| panic!("{f}: not JSON: {e}"));
            match v["items"].as_array() {
                Some(items) if v["kind"] == "List" => {
                    objs.extend(items.iter().map(|o| (f.clone(), o.clone())))
                }
                _ => objs.push((f.clone(), v)),
            }
        }
    }
    objs
}

/// For every CEL rule of the served CRDs, `kubectl apply --server-side` of an object that breaks it is
/// refused with that rule's message and nothing is stored; the table covers exactly the CRDs' rules. Every
/// object of every sample (moved into the test's namespace) passes the same validation
/// (`--dry-run=server`).
#[test]
fn every_cel_rule_refuses_an_object_that_breaks_it_and_every_sample_is_accepted() {
    let cluster = Cluster::start();
    let ns = cluster.create_namespace("cel");

    let mut served: BTreeSet<RuleKey> = BTreeSet::new();
    for (kind, _, schema) in served_crds(&cluster) {
        let mut rules = Vec::new();
        rules_of(&schema, "", &mut rules);
        for (path, message) in rules {
            let new = served.insert((kind.clone(), path.clone(), message.clone()));
            assert!(new, "{kind} {path}: the message {message:?} is not unique");
        }
    }
    let table: BTreeSet<RuleKey> = CASES
        .iter()
        .map(|(k, p, m, _)| (k.to_string(), p.to_string(), m.to_string()))
        .collect();
    assert_eq!(table.len(), CASES.len(), "a rule has two cases");
    let untested: Vec<_> = served.difference(&table).collect();
    let stale: Vec<_> = table.difference(&served).collect();
    assert!(
        untested.is_empty() && stale.is_empty(),
        "the CEL table does not match the CRDs:\nrules without a case (add one to CASES): {untested:#?}\n\
         cases of no rule: {stale:#?}"
    );

    let mut failures = Vec::new();
    for (i, (kind, path, message, spec)) in CASES.iter().enumerate() {
        let manifest = case_manifest(&ns, i, kind, spec);
        let out = cluster.kubectl_stdin(&["apply", "--server-side"], &manifest);
        let stderr = String::from_utf8_lossy(&out.stderr);
        if out.status.success() || !stderr.contains(message) {
            failures.push(format!(
                "{kind} {path} {message:?}: kubectl apply {}: {}{}\n{manifest}",
                if out.status.success() {
                    "succeeded"
                } else {
                    "failed with another message"
                },
                stderr.trim(),
                String::from_utf8_lossy(&out.stdout).trim()
            ));
        }
        let resource = kind.to_lowercase();
        if cluster.get(&ns, &resource, &format!("cel-{i}")).is_some() {
            failures.push(format!("{kind} cel-{i} was stored"));
        }
    }
    assert!(
        failures.is_empty(),
        "CEL rules the API server did not enforce:\n{}",
        failures.join("\n")
    );
    eprintln!(
        "{} CEL rules, each refused by kube-apiserver with its message",
        CASES.len()
    );

    // Every sample passes the API server's validation (schema, CEL, defaults) in this namespace: one
    // dry-run apply of them all (kubectl names each object it refuses).
    let samples = sample_objects(&cluster);
    let mut kinds = BTreeSet::new();
    let items: Vec<Value> = samples
        .into_iter()
        .map(|(_, mut obj)| {
            obj["metadata"]["namespace"] = Value::String(ns.clone());
            kinds.insert(str_at(&obj, "/kind").to_string());
            obj
        })
        .collect();
    let n = items.len();
    let list = serde_json::json!({"apiVersion": "v1", "kind": "List", "items": items});
    let out = cluster.kubectl_stdin(
        &["apply", "--server-side", "--dry-run=server", "-o", "name"],
        &list.to_string(),
    );
    assert!(
        out.status.success(),
        "the API server refused sample objects: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let accepted = String::from_utf8_lossy(&out.stdout).lines().count();
    assert_eq!(accepted, n, "{}", String::from_utf8_lossy(&out.stdout));
    eprintln!("the {n} objects of the samples pass the API server's validation");
    for k in ["EventBroker", "MqttBroker", "BridgeLink"] {
        assert!(kinds.contains(k), "no sample of {k}: {kinds:?}");
    }
}

/// `kubectl explain` shows what the CRDs document: each kind's own description (not kube-rs's
/// placeholder) and, for every field of its spec, the field's description.
#[test]
fn kubectl_explain_shows_the_field_docs() {
    let cluster = Cluster::start();
    let words = |s: &str| s.split_whitespace().collect::<Vec<_>>().join(" ");
    let mut problems = Vec::new();
    let mut fields = 0;
    for (kind, plural, schema) in served_crds(&cluster) {
        let kind_doc = str_at(&schema, "/description");
        if kind_doc.is_empty() || kind_doc.starts_with("Auto-generated derived type") {
            problems.push(format!(
                "{kind}: no description of its own ({kind_doc:?}); set #[kube(doc = ...)]"
            ));
        }
        let top = words(&cluster.kubectl_ok(&["explain", &plural]));
        if !kind_doc.is_empty() && !top.contains(&words(kind_doc)) {
            problems.push(format!(
                "kubectl explain {plural} does not show {kind_doc:?}:\n{top}"
            ));
        }
        let spec = words(&cluster.kubectl_ok(&["explain", &format!("{plural}.spec")]));
        let props = at(&schema, "/properties/spec/properties")
            .as_object()
            .cloned()
            .unwrap_or_default();
        assert!(!props.is_empty(), "{kind}: no spec fields");
        for (field, sub) in props {
            fields += 1;
            let doc = str_at(&sub, "/description");
            // The first line is enough to recognise it (explain rewraps long text).
            let first = words(doc.lines().next().unwrap_or(""));
            if first.is_empty() {
                problems.push(format!("{kind}.spec.{field} has no description"));
            } else if !spec.contains(&format!("{field} ")) || !spec.contains(&first) {
                problems.push(format!(
                    "kubectl explain {plural}.spec does not show {field}: {first:?}"
                ));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    eprintln!(
        "kubectl explain shows the description of the 3 kinds and their {fields} spec fields"
    );
}

/// Where a schema sets `default` under `schema` (`.qos`, `[]` for list items).
fn defaults_under(schema: &Value, path: &str, out: &mut Vec<String>) {
    if schema.get("default").is_some() {
        out.push(path.to_string());
    }
    if let Some(props) = schema["properties"].as_object() {
        for (k, sub) in props {
            defaults_under(sub, &format!("{path}.{k}"), out);
        }
    }
    if schema["items"].is_object() {
        defaults_under(&schema["items"], &format!("{path}[]"), out);
    }
    if schema["additionalProperties"].is_object() {
        defaults_under(&schema["additionalProperties"], &format!("{path}{{}}"), out);
    }
}

/// Atomic lists (no `x-kubernetes-list-type` map or set) with a `default` somewhere in their items:
/// (list path, defaulted paths).
fn defaulted_atomic_lists(schema: &Value, path: &str, out: &mut Vec<(String, Vec<String>)>) {
    let atomic = schema["type"] == "array"
        && !matches!(
            schema["x-kubernetes-list-type"].as_str(),
            Some("map" | "set")
        );
    if atomic && schema["items"].is_object() {
        let mut found = Vec::new();
        defaults_under(&schema["items"], &format!("{path}[]"), &mut found);
        if !found.is_empty() {
            out.push((path.to_string(), found));
        }
    }
    if let Some(props) = schema["properties"].as_object() {
        for (k, sub) in props {
            defaulted_atomic_lists(sub, &format!("{path}.{k}"), out);
        }
    }
    if schema["items"].is_object() {
        defaulted_atomic_lists(&schema["items"], &format!("{path}[]"), out);
    }
}

/// No atomic list of the served CRDs has a schema default inside its items. Server-side apply compares an
/// atomic list whole: the stored list, defaults filled in, never equals a manifest that leaves the
/// defaulted field out, so every re-apply of that unchanged manifest rewrites the applier's
/// `managedFields` entry and bumps the object's resourceVersion (the samples scenario's no-drift check
/// caught `BridgeLink.spec.rules[].qos`). A default there belongs in the code that reads the field.
#[test]
fn no_atomic_list_of_the_crds_has_a_schema_default_in_its_items() {
    let cluster = Cluster::start();
    let mut found = Vec::new();
    for (kind, _, schema) in served_crds(&cluster) {
        let mut here = Vec::new();
        defaulted_atomic_lists(&schema, "", &mut here);
        found.extend(here.into_iter().map(|(l, d)| format!("{kind} {l}: {d:?}")));
    }
    assert!(
        found.is_empty(),
        "atomic lists with schema defaults in their items (re-applies bump resourceVersion):\n{}",
        found.join("\n")
    );
}
