//! `edgewire-operator render -f` works on every sample in config/samples/: the real binary, run as a user
//! runs it, prints the objects the operator would apply.

use std::path::Path;
use std::process::Command;

fn samples() -> Vec<std::path::PathBuf> {
    let dir = Path::new(
        &std::env::var("CARGO_MANIFEST_DIR")
            .unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_owned()),
    )
    .join("../config/samples");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(
        files.len() >= 12,
        "expected a sample per self-hosted family and per external adapter"
    );
    files
}

/// The sample a BridgeLink sample's `brokerRef` points at: `render` reads referenced brokers from the same
/// file, so the two are rendered together.
fn referenced_sample(file: &Path) -> Option<std::path::PathBuf> {
    let text = std::fs::read_to_string(file).unwrap();
    let line = text.lines().find(|l| l.contains("brokerRef:"))?;
    let name = line
        .split("name:")
        .nth(1)?
        .trim()
        .trim_end_matches('}')
        .trim();
    samples().into_iter().find(|p| {
        p.as_path() != file
            && std::fs::read_to_string(p)
                .unwrap()
                .contains(&format!("  name: {name}\n"))
    })
}

#[test]
fn render_works_on_every_sample() {
    let tmp = tempfile::tempdir().unwrap();
    for file in samples() {
        let name = file.file_name().unwrap().to_string_lossy().to_string();
        let input = match referenced_sample(&file).filter(|_| name.starts_with("bridgelink")) {
            Some(broker) => {
                let joined = tmp.path().join(&name);
                std::fs::write(
                    &joined,
                    format!(
                        "{}\n---\n{}",
                        std::fs::read_to_string(&broker).unwrap(),
                        std::fs::read_to_string(&file).unwrap()
                    ),
                )
                .unwrap();
                joined
            }
            None => file.clone(),
        };
        let out = Command::new(env!("CARGO_BIN_EXE_edgewire-operator"))
            .args(["render", "-f"])
            .arg(&input)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "render -f {} failed: {stderr}",
            file.display()
        );
        let text = String::from_utf8(out.stdout).unwrap();
        let docs: Vec<serde_norway::Value> = serde_norway::Deserializer::from_str(&text)
            .map(|d| serde::Deserialize::deserialize(d).unwrap())
            .filter(|v: &serde_norway::Value| !v.is_null())
            .collect();
        if name.starts_with("bridgelink") {
            // Only the BridgeLink's objects (a referenced broker's are rendered before its header).
            let own = &text[text.find("# BridgeLink ").expect("a BridgeLink header")..];
            let docs: Vec<serde_norway::Value> = serde_norway::Deserializer::from_str(own)
                .map(|d| serde::Deserialize::deserialize(d).unwrap())
                .filter(|v: &serde_norway::Value| !v.is_null())
                .collect();
            let kinds: Vec<&str> = docs.iter().filter_map(|d| d["kind"].as_str()).collect();
            assert_eq!(
                kinds,
                [
                    "Secret",
                    "ServiceAccount",
                    "Role",
                    "RoleBinding",
                    "Service",
                    "StatefulSet"
                ],
                "{name}"
            );
            let sts = docs.iter().find(|d| d["kind"] == "StatefulSet").unwrap();
            assert_eq!(
                sts["spec"]["template"]["spec"]["containers"][0]["args"][0],
                "bridge"
            );
            assert_eq!(
                sts["spec"]["volumeClaimTemplates"][0]["metadata"]["name"], "spool",
                "{name}"
            );
            for d in &docs {
                assert!(
                    d["metadata"]["ownerReferences"][0]["kind"] == "BridgeLink",
                    "{name}: {d:?}"
                );
            }
            // The config holds references, never the sample's Secret values.
            let sample = std::fs::read_to_string(&file).unwrap();
            let rendered = serde_norway::to_string(&docs).unwrap();
            let config = docs[0]["data"]["bridge.yaml"].as_str().unwrap();
            use base64::Engine;
            let config = String::from_utf8(
                base64::engine::general_purpose::STANDARD
                    .decode(config)
                    .unwrap(),
            )
            .unwrap();
            for line in sample.lines().filter(|l| {
                l.trim_start().starts_with("password:") || l.trim_start().starts_with("token:")
            }) {
                let value = line.split_once(':').unwrap().1.trim().trim_matches('"');
                if value.len() > 6 && !value.starts_with('{') {
                    assert!(
                        !rendered.contains(value) && !config.contains(value),
                        "{name}: {value} leaked"
                    );
                }
            }
            continue;
        }
        let kinds: Vec<&str> = docs.iter().filter_map(|d| d["kind"].as_str()).collect();
        if name.starts_with("mqttbroker-iotcore") {
            // IoT Core runs nothing in the cluster: no objects, the operator's IAM policy as comments.
            assert!(docs.is_empty(), "{name}: {kinds:?}");
            for needed in [
                "\"iot:DescribeEndpoint\"",
                "\"iot:CreateTopicRule\"",
                "\"iot:ReplaceTopicRule\"",
                "\"iot:GetTopicRule\"",
                "\"iot:DeleteTopicRule\"",
                "\"iam:PassRole\"",
                "arn:aws:iot:us-east-1:<account-id>:rule/workers_to_sqs",
                "arn:aws:iam::123456789012:role/edgewire-iot-to-sqs",
            ] {
                assert!(text.contains(needed), "{name}: no {needed} in\n{text}");
            }
            assert!(
                !text.contains("example-secret-access-key"),
                "{name}: a credential was printed"
            );
            continue;
        }
        if name.starts_with("mqttbroker") {
            // A builtin MQTT broker: Mosquitto's StatefulSet (with the sidecar), config Secret, Services.
            assert!(kinds.contains(&"StatefulSet"), "{name}: {kinds:?}");
            assert!(!kinds.contains(&"Deployment"), "{name}: {kinds:?}");
            let sts = docs.iter().find(|d| d["kind"] == "StatefulSet").unwrap();
            let containers = sts["spec"]["template"]["spec"]["containers"]
                .as_sequence()
                .unwrap();
            assert!(
                containers.iter().any(|c| c["args"][0] == "mqtt-sidecar"),
                "{name}: no sidecar"
            );
            for d in &docs {
                assert!(
                    d["metadata"]["ownerReferences"][0]["kind"] == "MqttBroker",
                    "{name}: {d:?}"
                );
            }
            continue;
        }
        assert!(
            kinds.contains(&"Deployment"),
            "{}: no publisher Deployment in {kinds:?}",
            file.display()
        );
        assert!(kinds.contains(&"Service"), "{}: {kinds:?}", file.display());
        if name.starts_with("eventbroker-aws-sns") {
            // The least-privilege policies, as comments: sns:Publish on the four ARNs for the publisher,
            // the provisioning actions for the operator only when it provisions.
            let prefix = if name.contains("provisioned") {
                "arn:aws:sns:us-east-1:123456789012:prod-"
            } else {
                "arn:aws:sns:us-east-1:123456789012:"
            };
            for topic in [
                "edge-nodes-events",
                "edge-commands-events",
                "edge-self-updates-events",
                "edge-ssh-events",
            ] {
                assert!(
                    text.contains(&format!("\"{prefix}{topic}\"")),
                    "{name}: {topic}"
                );
            }
            assert!(text.contains("\"sns:Publish\""), "{name}");
            let operator_actions = [
                "\"sns:CreateTopic\"",
                "\"sns:TagResource\"",
                "\"sns:ListTagsForResource\"",
                "\"sns:DeleteTopic\"",
            ];
            for a in operator_actions {
                assert_eq!(
                    text.contains(a),
                    name.contains("provisioned"),
                    "{name}: {a}"
                );
            }
            assert!(
                !text.contains("example-secret-access-key"),
                "{name}: a credential was printed"
            );
        }
        let name = file.file_name().unwrap().to_string_lossy();
        if name.contains("deployed") {
            assert!(
                kinds.contains(&"StatefulSet"),
                "{name}: a deployed broker renders a StatefulSet: {kinds:?}"
            );
        } else {
            assert!(
                !kinds.contains(&"StatefulSet"),
                "{name}: an external broker renders no StatefulSet"
            );
        }
        for d in &docs {
            assert!(
                d["metadata"]["ownerReferences"][0]["kind"] == "EventBroker",
                "{name}: {d:?} has no owner"
            );
        }
        // Values of the sample's Secrets appear only inside Secrets the operator renders.
        let sample: String = std::fs::read_to_string(&file).unwrap();
        for d in docs.iter().filter(|d| d["kind"] != "Secret") {
            let dump = serde_norway::to_string(d).unwrap();
            for line in sample.lines().filter(|l| {
                l.trim_start().starts_with("password:") || l.trim_start().starts_with("token:")
            }) {
                let value = line.split_once(':').unwrap().1.trim().trim_matches('"');
                if value.len() > 6 {
                    assert!(
                        !dump.contains(value),
                        "{name}: a Secret value leaked into a {:?}",
                        d["kind"]
                    );
                }
            }
        }
    }
}

#[test]
fn render_names_the_problem_in_an_invalid_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.yaml");
    std::fs::write(
        &file,
        "apiVersion: edgewire.dev/v1alpha1\nkind: EventBroker\nmetadata: {name: x, namespace: y}\nspec:\n  adapter: nats\n  deployBroker: {kind: redis}\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_edgewire-operator"))
        .args(["render", "-f"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("spec.deployBroker.kind"), "{err}");
}
