//! MqttBroker end to end: the real operator binary and kubectl. A builtin MqttBroker reaches Ready once the
//! StatefulSet controller and kwok made its pod ready; rotating one user's Secret changes
//! `status.credentialsRevision` and that user's line of the rendered password file, which a real Mosquitto
//! then accepts with the new password and refuses with the old, but not the pod template: the sidecar
//! reloads Mosquitto in place instead of rolling the pod.

use crate::support::{
    Cluster, Operator, TIMEOUT, at, condition_status, mqtt_connack, status_summary, str_at,
    wait_for,
};
use base64::Engine;
use edgewire_e2e::brokers::{BrokerProcess, Kind};
use std::time::Duration;

/// The `passwd` file of the broker's config Secret.
fn passwd(cluster: &Cluster, ns: &str) -> String {
    let config = cluster.get_json(ns, "secret", "workers-mosquitto");
    let b64 = at(&config, "/data/passwd")
        .as_str()
        .unwrap_or_else(|| panic!("no passwd in Secret workers-mosquitto: {config}"));
    String::from_utf8(
        base64::engine::general_purpose::STANDARD
            .decode(b64)
            .expect("base64"),
    )
    .expect("UTF-8")
}

/// The line of `user` in a Mosquitto password file.
fn passwd_line<'a>(file: &'a str, user: &str) -> &'a str {
    file.lines()
        .find(|l| l.starts_with(&format!("{user}:")))
        .unwrap_or_else(|| panic!("no line for {user} in the password file:\n{file}"))
}

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

    cluster.wait(
        &ns,
        "mqttbroker/workers",
        "condition=Ready",
        TIMEOUT,
        || op.log_tail(),
    );
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
    let passwd_before = passwd(&cluster, &ns);
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
    let passwd_after = passwd(&cluster, &ns);
    assert_ne!(
        passwd_line(&passwd_after, "pool-a"),
        passwd_line(&passwd_before, "pool-a"),
        "pool-a's password changed, its line in the password file did not"
    );
    assert_eq!(
        passwd_line(&passwd_after, "pool-b"),
        passwd_line(&passwd_before, "pool-b"),
        "pool-b's password did not change, its line did"
    );
    // The file the sidecar makes Mosquitto reload takes the new password and refuses the old one.
    let mosquitto = BrokerProcess::start(
        Kind::Mosquitto,
        "listener {port} 127.0.0.1\nallow_anonymous false\npassword_file {dir}/passwd\n",
        &[("passwd", passwd_after.as_bytes())],
    )
    .expect("mosquitto with the rendered password file");
    assert_eq!(
        mqtt_connack(
            mosquitto.port(),
            "new",
            Some(("pool-a", "rotated-password"))
        ),
        Ok(0),
        "the rotated password is refused"
    );
    let old = mqtt_connack(mosquitto.port(), "old", Some(("pool-a", "first-password")));
    assert!(
        matches!(old, Ok(4 | 5)),
        "the old password is not refused: {old:?}"
    );
}
