//! MqttBroker end to end: the real operator binary and kubectl. A builtin MqttBroker reaches Ready once its
//! StatefulSet is (stood in as) ready; rotating one user's Secret changes `status.credentialsRevision` but
//! not the pod template: the sidecar reloads Mosquitto in place instead of rolling the pod.

mod support;

use std::time::Duration;
use support::{Cluster, Operator, at, condition_status, status_summary, str_at, wait_for};

fn manifest(ns: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: pool-a-creds, namespace: {ns}}}\nstringData: {{password: first-password}}\n---\n\
         apiVersion: edgewire.dev/v1alpha1\nkind: MqttBroker\nmetadata: {{name: workers, namespace: {ns}}}\n\
         spec:\n  type: builtin\n  builtin:\n    users:\n      - {{name: pool-a, password: {{name: pool-a-creds, key: password}}}}\n      - {{name: pool-b}}\n"
    )
}

#[test]
fn builtin_mqttbroker_becomes_ready_and_rotation_reloads_instead_of_rolling() {
    let cluster = Cluster::start();
    let ns = cluster.create_namespace("mqb");
    let op = Operator::start(&cluster, &ns, "op");
    cluster.apply_yaml(&manifest(&ns));

    let sts = wait_for("the Mosquitto StatefulSet", Duration::from_secs(60), || {
        cluster
            .get(&ns, "statefulset", "workers")
            .ok_or_else(|| "absent".to_string())
    })
    .unwrap();
    let owner = at(&sts, "/metadata/ownerReferences/0");
    assert_eq!(str_at(owner, "/kind"), "MqttBroker");
    let containers = at(&sts, "/spec/template/spec/containers")
        .as_array()
        .unwrap()
        .clone();
    assert!(
        containers
            .iter()
            .any(|c| at(c, "/args/0") == "mqtt-sidecar"),
        "no sidecar: {containers:?}"
    );
    // pool-b got a generated password Secret, named in status.
    let generated = wait_for(
        "the generated password Secret",
        Duration::from_secs(30),
        || {
            cluster
                .get(&ns, "secret", "workers-user-pool-b")
                .ok_or_else(|| "absent".to_string())
        },
    )
    .unwrap();
    assert!(at(&generated, "/data/password").is_string());

    cluster.stand_in_statefulset_ready(&ns, "workers");
    let out = cluster.kubectl_ok(&[
        "-n",
        &ns,
        "wait",
        "--for=condition=Ready",
        "mqttbroker/workers",
        "--timeout=60s",
    ]);
    assert!(out.contains("condition met"), "{out}");
    let table = cluster.kubectl_ok(&["-n", &ns, "get", "mqb"]);
    assert!(
        table.contains("builtin") && table.contains(&format!("workers.{ns}.svc:1883")),
        "{table}"
    );
    let mqb = cluster.get_json(&ns, "mqttbroker", "workers");
    let users = at(&mqb, "/status/users").to_string();
    assert!(
        users.contains("pool-a-creds") && users.contains("workers-user-pool-b"),
        "{users}"
    );
    let revision = str_at(&mqb, "/status/credentialsRevision").to_string();
    let template = at(
        &cluster.get_json(&ns, "statefulset", "workers"),
        "/spec/template",
    )
    .clone();

    // Rotate pool-a's password.
    cluster.kubectl_ok(&[
        "-n",
        &ns,
        "patch",
        "secret",
        "pool-a-creds",
        "--type=merge",
        "-p",
        r#"{"stringData":{"password":"rotated-password"}}"#,
    ]);
    let rotated = op.wait("a new credentials revision", || {
        let m = cluster.get(&ns, "mqttbroker", "workers").ok_or("absent")?;
        let r = str_at(&m, "/status/credentialsRevision").to_string();
        if r != revision && !r.is_empty() {
            Ok(m)
        } else {
            Err(status_summary(&m))
        }
    });
    assert_eq!(
        condition_status(&rotated, "Ready"),
        "True",
        "{}",
        status_summary(&rotated)
    );
    // The password file changed (the sidecar reloads it), the pod template did not (no roll).
    let after = at(
        &cluster.get_json(&ns, "statefulset", "workers"),
        "/spec/template",
    )
    .clone();
    assert_eq!(
        template, after,
        "rotating a user's password rolled the broker pod"
    );
    let config = cluster.get_json(&ns, "secret", "workers-mosquitto");
    assert!(at(&config, "/data/passwd").is_string());
}
