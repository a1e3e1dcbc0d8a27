//! BridgeLink end to end: the real operator binary and kubectl. A BridgeLink applied with kubectl yields its
//! single-replica StatefulSet with the `spool` volumeClaimTemplate (bound by the volume provisioner, its pod
//! made ready by the StatefulSet controller and kwok), the agent's config Secret (references, no values)
//! and the agent's status RBAC.
//!
//! The real bridge agent then runs the pod's container on the host ([`HostPod`]): the rendered config and
//! the referenced Secrets as the kubelet would mount them, against a real edge Mosquitto and a real cloud
//! NATS, writing `status.runtime` with `--report-status` under the token of the ServiceAccount the
//! operator made for the bridge. Its report shows in `kubectl get bl` (Spooled) and drives `Spooling`,
//! `CloudConnected` and `Ready` through a cloud outage, and the operator's own status writes leave the
//! report alone (separate field managers).

use crate::support::pod::HostPod;
use crate::support::{
    Cluster, Operator, TIMEOUT, agent_bin, at, condition, condition_status, publish_at_edge,
    status_summary, str_at, wait_for,
};
use base64::Engine;
use edgewire_e2e::brokers::{BrokerProcess, Kind};
use std::time::Duration;

const EDGE_TOKEN: &str = "e2e-edge-token-value";
const CLOUD_PASSWORD: &str = "e2e-cloud-password-value";
/// Messages published at the edge while the cloud is away.
const N: usize = 50;

fn manifest(ns: &str, edge_port: u16, cloud_port: u16) -> String {
    format!(
        r#"apiVersion: v1
kind: Secret
metadata: {{name: edge-token, namespace: {ns}}}
stringData: {{token: {EDGE_TOKEN}}}
---
apiVersion: v1
kind: Secret
metadata: {{name: cloud-user, namespace: {ns}}}
stringData: {{username: site-a, password: {CLOUD_PASSWORD}}}
---
apiVersion: edgewire.dev/v1alpha1
kind: BridgeLink
metadata: {{name: site-a, namespace: {ns}}}
spec:
  siteId: site-a
  edge:
    endpoint:
      protocol: mqtt
      url: "127.0.0.1:{edge_port}"
      auth: {{token: {{name: edge-token, key: token}}}}
  cloud:
    endpoint:
      protocol: nats
      url: "nats://127.0.0.1:{cloud_port}"
      jetStream: {{enabled: true}}
      auth: {{userPassword: {{secretName: cloud-user}}}}
  rules:
    - {{direction: EdgeToCloud, from: "local.telemetry.#", to: "edge.site-a.telemetry.#"}}
    - {{direction: CloudToEdge, from: "cloud.commands.site-a", to: "local.commands"}}
  spool: {{size: 2Gi, maxBytes: 1Gi}}
  deletionPolicy: Delete
"#
    )
}

/// The `kubectl get bl` cell of `column` in the row of `name`.
fn table_cell(table: &str, name: &str, column: &str) -> String {
    let mut lines = table.lines();
    let header = lines
        .next()
        .unwrap_or_else(|| panic!("no header in {table:?}"));
    let col = header
        .split_whitespace()
        .position(|h| h == column)
        .unwrap_or_else(|| panic!("no column {column} in {table}"));
    let row = lines
        .find(|l| l.split_whitespace().next() == Some(name))
        .unwrap_or_else(|| panic!("no row {name} in {table}"));
    row.split_whitespace()
        .nth(col)
        .unwrap_or_else(|| panic!("row {name} has no cell {column}: {table}"))
        .to_string()
}

/// Waits until the BridgeLink's `kubectl get bl` Spooled cell and `Spooling` condition say `spooled` and
/// `spooling`.
fn wait_spool(
    cluster: &Cluster,
    op: &Operator,
    agent: &HostPod,
    ns: &str,
    spooled: &str,
    spooling: &str,
) {
    wait_for(
        &format!("Spooled {spooled}, Spooling {spooling}"),
        Duration::from_secs(90),
        || {
            let table = cluster.kubectl_ok(&["-n", ns, "get", "bl"]);
            let bl = cluster.get(ns, "bridgelink", "site-a").ok_or("absent")?;
            let cell = table_cell(&table, "site-a", "SPOOLED");
            if cell == spooled && condition_status(&bl, "Spooling") == spooling {
                Ok(())
            } else {
                Err(format!("{table}\n{}", status_summary(&bl)))
            }
        },
    )
    .unwrap_or_else(|e| panic!("{e}\n{}\n{}", agent.log_tail(), op.log_tail()));
}

/// Publishes `n` QoS 1 messages (`0`, `1`, ...) at the edge and waits for every PUBACK.
fn publish_n_at_edge(port: u16, login: Option<(&str, &str)>, n: usize) {
    let acked = publish_at_edge(
        port,
        "e2e-edge-publisher",
        login,
        (0..n).map(|i| i.to_string()).collect(),
    );
    assert_eq!(acked, n, "PUBACKs from the edge broker");
}

/// Waits for the bridge StatefulSet to be ready (its claim bound, its pod ready on a kwok node) and runs
/// the pod's `bridge` container on the host with the bridge ServiceAccount's token.
fn start_agent(cluster: &Cluster, op: &Operator, ns: &str) -> HostPod {
    cluster.wait(
        ns,
        "statefulset.apps/site-a-bridge",
        "jsonpath={.status.readyReplicas}=1",
        TIMEOUT,
        || op.log_tail(),
    );
    let pvc = cluster.get_json(ns, "pvc", "spool-site-a-bridge-0");
    assert_eq!(str_at(&pvc, "/status/phase"), "Bound", "{pvc}");
    let sts = cluster.get_json(ns, "statefulset.apps", "site-a-bridge");
    HostPod::start(cluster, ns, &sts, "bridge", &agent_bin())
}

/// With edge and cloud credentials from Secrets and JetStream acks: the StatefulSet, its claim template, the
/// config Secret and RBAC; no report yet; the real agent started while the cloud is away spools what the
/// edge publishes (Spooled N, Spooling, CloudConnected False); the cloud back, it forwards everything into
/// the stream and the BridgeLink is Ready; a looping rule set is then InvalidSpec.
#[test]
fn bridgelink_yields_its_statefulset_and_conditions_follow_the_agents_report() {
    let passwd = {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("passwd");
        let out = std::process::Command::new("mosquitto_passwd")
            .arg("-b")
            .arg("-c")
            .arg(&file)
            .args(["site-a", EDGE_TOKEN])
            .output()
            .expect("mosquitto_passwd (Debian package `mosquitto`): run `make deps`");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::read(file).unwrap()
    };
    // The edge takes the token as the site's password (the agent logs in as its siteId).
    let edge = BrokerProcess::start(
        Kind::Mosquitto,
        "listener {port} 127.0.0.1\nallow_anonymous false\npassword_file {dir}/passwd\n",
        &[("passwd", &passwd)],
    )
    .expect("mosquitto");
    let mut cloud = BrokerProcess::start(
        Kind::Nats,
        &format!(
            "listen: 127.0.0.1:{{port}}\njetstream {{ store_dir: \"{{dir}}/js\" }}\n\
             authorization {{ user: site-a, password: \"{CLOUD_PASSWORD}\" }}\n"
        ),
        &[],
    )
    .expect("nats-server");
    let cloud_addr = format!("127.0.0.1:{}", cloud.port());
    let cloud_client = || {
        async_nats::ConnectOptions::with_user_and_password("site-a".into(), CLOUD_PASSWORD.into())
            .connect(cloud_addr.clone())
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let c = cloud_client().await.expect("nats");
        async_nats::jetstream::new(c)
            .get_or_create_stream(async_nats::jetstream::stream::Config {
                name: "EDGE".into(),
                subjects: vec!["edge.>".into()],
                ..Default::default()
            })
            .await
            .expect("stream EDGE");
    });

    let cluster = Cluster::start();
    let ns = cluster.create_namespace("bl");
    let op = Operator::start(&cluster, &ns, "op");
    cluster.apply_yaml(&manifest(&ns, edge.port(), cloud.port()));

    let sts = wait_for("the bridge StatefulSet", TIMEOUT, || {
        cluster
            .get(&ns, "statefulset.apps", "site-a-bridge")
            .ok_or_else(|| "absent".to_string())
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", op.log_tail()));
    assert_eq!(
        str_at(&sts, "/metadata/ownerReferences/0/kind"),
        "BridgeLink"
    );
    assert_eq!(at(&sts, "/spec/replicas"), 1);
    let vct = at(&sts, "/spec/volumeClaimTemplates/0");
    assert_eq!(str_at(vct, "/metadata/name"), "spool");
    assert_eq!(str_at(vct, "/spec/resources/requests/storage"), "2Gi");
    assert_eq!(
        str_at(
            &sts,
            "/spec/persistentVolumeClaimRetentionPolicy/whenDeleted"
        ),
        "Delete"
    );
    let args = at(&sts, "/spec/template/spec/containers/0/args").to_string();
    assert!(
        args.starts_with(r#"["bridge","--config","/etc/edgewire/bridge/bridge.yaml""#)
            && args.contains("--report-status"),
        "{args}"
    );
    assert!(
        str_at(
            &sts,
            "/spec/template/metadata/annotations/edgewire.dev~1credentials-hash"
        )
        .starts_with("sha256:")
    );
    for kind in [
        "serviceaccount",
        "role.rbac.authorization.k8s.io",
        "rolebinding.rbac.authorization.k8s.io",
        "service",
    ] {
        assert!(
            cluster.get(&ns, kind, "site-a-bridge").is_some(),
            "no {kind} site-a-bridge"
        );
    }
    let config = cluster.get_json(&ns, "secret", "site-a-bridge-config");
    let yaml = String::from_utf8(
        base64::engine::general_purpose::STANDARD
            .decode(str_at(&config, "/data/bridge.yaml"))
            .unwrap(),
    )
    .unwrap();
    assert!(
        yaml.contains("kind: BridgeLink") && yaml.contains("secretName: cloud-user"),
        "{yaml}"
    );
    assert!(
        !yaml.contains(EDGE_TOKEN) && !yaml.contains(CLOUD_PASSWORD),
        "{yaml}"
    );

    // No report yet: Spooling is Unknown, credentials are fine, not Ready.
    let bl = wait_for("first status", TIMEOUT, || {
        let bl = cluster.get(&ns, "bridgelink", "site-a").ok_or("absent")?;
        if condition_status(&bl, "CredentialsReady") == "True" {
            Ok(bl)
        } else {
            Err(status_summary(&bl))
        }
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", op.log_tail()));
    assert_eq!(condition_status(&bl, "Spooling"), "Unknown");
    assert_eq!(condition_status(&bl, "Ready"), "False");

    // The cloud is down when the agent starts: what the edge publishes waits in the spool.
    cloud.stop();
    let agent = start_agent(&cluster, &op, &ns);
    wait_for("the agent to report", TIMEOUT, || {
        let bl = cluster.get(&ns, "bridgelink", "site-a").ok_or("absent")?;
        if condition_status(&bl, "EdgeConnected") == "True" {
            Ok(())
        } else {
            Err(status_summary(&bl))
        }
    })
    .unwrap_or_else(|e| panic!("{e}\n{}\n{}", agent.log_tail(), op.log_tail()));
    publish_n_at_edge(edge.port(), Some(("site-a", EDGE_TOKEN)), N);
    wait_spool(&cluster, &op, &agent, &ns, &N.to_string(), "True");
    let table = cluster.kubectl_ok(&["-n", &ns, "get", "bl"]);
    assert_eq!(table_cell(&table, "site-a", "SITE"), "site-a", "{table}");
    let bl = cluster.get_json(&ns, "bridgelink", "site-a");
    assert_eq!(
        condition_status(&bl, "CloudConnected"),
        "False",
        "{}",
        agent.log_tail()
    );
    assert_eq!(condition_status(&bl, "EdgeConnected"), "True");
    assert_eq!(condition_status(&bl, "Ready"), "False");
    // The operator's status write (Spooling) left the agent's report in place, under its own manager.
    assert_eq!(at(&bl, "/status/runtime/spoolMessages"), N as u64);
    let full: serde_json::Value = serde_json::from_str(&cluster.kubectl_ok(&[
        "get",
        "bridgelink",
        "site-a",
        "-n",
        &ns,
        "-o",
        "json",
        "--show-managed-fields",
    ]))
    .unwrap();
    let managed = at(&full, "/metadata/managedFields")
        .as_array()
        .unwrap_or_else(|| panic!("no managedFields: {full}"));
    let owners = |field: &str| -> Vec<&str> {
        managed
            .iter()
            .filter(|m| m["subresource"] == "status" && m["operation"] == "Apply")
            .filter(|m| m.pointer(&format!("/fieldsV1/f:status/{field}")).is_some())
            .map(|m| m["manager"].as_str().unwrap_or("?"))
            .collect()
    };
    assert_eq!(owners("f:runtime"), ["edgewire-bridge"], "{managed:#?}");
    assert_eq!(
        owners("f:conditions"),
        ["edgewire-operator"],
        "{managed:#?}"
    );

    // The cloud is back: the spool drains into the stream and the BridgeLink is Ready.
    cloud.restart().expect("restart nats-server");
    cluster.wait(
        &ns,
        "bridgelink/site-a",
        "condition=Ready",
        Duration::from_secs(90),
        || format!("{}\n{}", agent.log_tail(), op.log_tail()),
    );
    wait_spool(&cluster, &op, &agent, &ns, "0", "False");
    let bl = cluster.get_json(&ns, "bridgelink", "site-a");
    assert_eq!(condition_status(&bl, "CloudConnected"), "True");
    assert_eq!(at(&bl, "/status/runtime/forwarded"), N as u64);
    let table = cluster.kubectl_ok(&["-n", &ns, "get", "bl"]);
    assert_eq!(table_cell(&table, "site-a", "SPOOLED"), "0", "{table}");
    assert_eq!(table_cell(&table, "site-a", "READY"), "True", "{table}");
    let stored = rt.block_on(async {
        let c = cloud_client().await.expect("nats");
        let mut stream = async_nats::jetstream::new(c)
            .get_stream("EDGE")
            .await
            .expect("stream EDGE");
        stream.info().await.expect("stream info").state.messages
    });
    assert_eq!(stored, N as u64, "messages in the cloud stream");

    // A looping rule set is rejected with both rules named, and the children stay as they were.
    let looping = manifest(&ns, edge.port(), cloud.port()).replace(
        r#"{direction: CloudToEdge, from: "cloud.commands.site-a", to: "local.commands"}"#,
        r#"{direction: CloudToEdge, from: "cloud.commands.#", to: "local.telemetry.cmd.#"}"#,
    );
    cluster.apply_yaml(&looping);
    let ready = wait_for("InvalidSpec", Duration::from_secs(60), || {
        let bl = cluster.get(&ns, "bridgelink", "site-a").ok_or("absent")?;
        let ready = condition(&bl, "Ready").ok_or_else(|| status_summary(&bl))?;
        if ready["reason"] == "InvalidSpec" {
            Ok(ready.clone())
        } else {
            Err(status_summary(&bl))
        }
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", op.log_tail()));
    assert_eq!(
        ready["message"],
        r#"spec.rules[1] (CloudToEdge to "local.telemetry.cmd.#") feeds spec.rules[0] (EdgeToCloud from "local.telemetry.#"): a loop"#
    );
}

/// The real bridge agent, run from the config the operator rendered, against a real edge Mosquitto and a
/// real cloud NATS, reporting to the API with `--report-status`: its report shows in `kubectl get bl` and
/// drives the conditions through a cloud outage (spool fills, `Spooling` True; cloud back, spool drains,
/// `Spooling` False).
#[test]
fn the_real_agent_reports_its_spool_through_a_cloud_outage() {
    let edge = BrokerProcess::start_default(Kind::Mosquitto).expect("start mosquitto");
    let mut cloud = BrokerProcess::start_default(Kind::Nats).expect("start nats-server");
    let cluster = Cluster::start();
    let ns = cluster.create_namespace("bl-agent");
    let op = Operator::start(&cluster, &ns, "op");
    cluster.apply_yaml(&format!(
        r#"apiVersion: edgewire.dev/v1alpha1
kind: BridgeLink
metadata: {{name: site-a, namespace: {ns}}}
spec:
  siteId: site-a
  edge: {{endpoint: {{protocol: mqtt, url: "{}"}}}}
  cloud: {{endpoint: {{protocol: nats, url: "{}"}}}}
  rules:
    - {{direction: EdgeToCloud, from: "local.telemetry.#", to: "edge.site-a.telemetry.#", qos: 1}}
  spool: {{size: 1Gi, maxBytes: 512Mi}}
"#,
        edge.url(),
        cloud.url()
    ));
    wait_for("the bridge StatefulSet", TIMEOUT, || {
        cluster
            .get(&ns, "statefulset.apps", "site-a-bridge")
            .ok_or_else(|| "absent".to_string())
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", op.log_tail()));
    let agent = start_agent(&cluster, &op, &ns);

    cluster.wait(
        &ns,
        "bridgelink/site-a",
        "condition=Ready",
        Duration::from_secs(90),
        || format!("{}\n{}", agent.log_tail(), op.log_tail()),
    );
    wait_spool(&cluster, &op, &agent, &ns, "0", "False");

    // Cloud outage: what the edge publishes waits in the spool.
    cloud.stop();
    publish_n_at_edge(edge.port(), None, N);
    wait_spool(&cluster, &op, &agent, &ns, &N.to_string(), "True");
    let bl = cluster.get_json(&ns, "bridgelink", "site-a");
    assert_eq!(
        condition_status(&bl, "CloudConnected"),
        "False",
        "{}",
        agent.log_tail()
    );

    // The cloud returns: the spool drains and Spooling goes False.
    cloud.restart().expect("restart nats-server");
    wait_spool(&cluster, &op, &agent, &ns, "0", "False");
}
