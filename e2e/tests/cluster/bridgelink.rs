//! BridgeLink end to end: the real operator binary and kubectl. A BridgeLink applied with kubectl yields its
//! single-replica StatefulSet with the `spool` volumeClaimTemplate, the agent's config Secret (references,
//! no values) and the agent's status RBAC; the agent's `status.runtime` report shows in `kubectl get bl`
//! (Spooled) and drives `Spooling`, `CloudConnected` and `Ready`, and the operator's own status writes leave
//! the report alone (separate field managers).
//!
//! The runtime report is written the way `edgewire-agent bridge --report-status` writes it (server-side
//! apply of `status.runtime` on the status subresource, field manager `edgewire-bridge`), by the test.

mod support;

use base64::Engine;
use serde_json::json;
use std::time::Duration;
use support::{Cluster, Operator, TIMEOUT, at, condition_status, status_summary, str_at, wait_for};

const EDGE_TOKEN: &str = "e2e-edge-token-value";
const CLOUD_PASSWORD: &str = "e2e-cloud-password-value";

fn manifest(ns: &str) -> String {
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
      url: mosquitto.{ns}.svc:1883
      auth: {{token: {{name: edge-token, key: token}}}}
  cloud:
    endpoint:
      protocol: nats
      url: nats://cloud.example.com:4222
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
    let header = lines.next().unwrap_or_default();
    let col = header
        .split_whitespace()
        .position(|h| h == column)
        .unwrap_or_else(|| panic!("no column {column} in {table}"));
    let row = lines
        .find(|l| l.split_whitespace().next() == Some(name))
        .unwrap_or_else(|| panic!("no row {name} in {table}"));
    row.split_whitespace()
        .nth(col)
        .unwrap_or_default()
        .to_string()
}

#[test]
fn bridgelink_yields_its_statefulset_and_conditions_follow_the_agents_report() {
    let cluster = Cluster::start();
    let ns = cluster.create_namespace("bl");
    let op = Operator::start(&cluster, &ns, "op");
    cluster.apply_yaml(&manifest(&ns));

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

    // No report yet: Spooling is Unknown, credentials are fine.
    let bl = wait_for("first status", TIMEOUT, || {
        let bl = cluster.get(&ns, "bridgelink", "site-a").ok_or("absent")?;
        if condition_status(&bl, "CredentialsReady") == "True" {
            Ok(bl)
        } else {
            Err(status_summary(&bl))
        }
    })
    .unwrap();
    assert_eq!(condition_status(&bl, "Spooling"), "Unknown");
    assert_eq!(condition_status(&bl, "Ready"), "False");

    cluster.stand_in_statefulset_ready(&ns, "site-a-bridge");

    // The cloud is down: the agent reports a full spool.
    cluster.report_bridge_runtime(
        &ns,
        "site-a",
        json!({"spoolMessages": 1234, "spoolBytes": 315904, "oldestSpooledAgeSeconds": 42,
               "forwarded": 7, "dropped": 0, "edgeConnected": true, "cloudConnected": false}),
    );
    let table = cluster.kubectl_ok(&["-n", &ns, "get", "bl"]);
    assert_eq!(table_cell(&table, "site-a", "SPOOLED"), "1234", "{table}");
    assert_eq!(table_cell(&table, "site-a", "SITE"), "site-a", "{table}");
    let bl = wait_for("Spooling True", TIMEOUT, || {
        let bl = cluster.get(&ns, "bridgelink", "site-a").ok_or("absent")?;
        if condition_status(&bl, "Spooling") == "True" {
            Ok(bl)
        } else {
            Err(status_summary(&bl))
        }
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", op.log_tail()));
    assert_eq!(condition_status(&bl, "CloudConnected"), "False");
    assert_eq!(condition_status(&bl, "EdgeConnected"), "True");
    assert_eq!(condition_status(&bl, "Ready"), "False");
    // The operator's status write left the agent's report in place.
    assert_eq!(at(&bl, "/status/runtime/spoolMessages"), 1234);

    // The cloud is back and the spool drained.
    cluster.report_bridge_runtime(
        &ns,
        "site-a",
        json!({"spoolMessages": 0, "spoolBytes": 0, "forwarded": 1241, "dropped": 0,
               "edgeConnected": true, "cloudConnected": true}),
    );
    let out = cluster.kubectl_ok(&[
        "-n",
        &ns,
        "wait",
        "--for=condition=Ready",
        "bridgelink/site-a",
        "--timeout=60s",
    ]);
    assert!(out.contains("condition met"), "{out}");
    let bl = cluster.get_json(&ns, "bridgelink", "site-a");
    assert_eq!(condition_status(&bl, "Spooling"), "False");
    assert_eq!(condition_status(&bl, "CloudConnected"), "True");
    assert_eq!(at(&bl, "/status/runtime/forwarded"), 1241);
    let table = cluster.kubectl_ok(&["-n", &ns, "get", "bl"]);
    assert_eq!(table_cell(&table, "site-a", "SPOOLED"), "0", "{table}");
    assert_eq!(table_cell(&table, "site-a", "READY"), "True", "{table}");

    // A looping rule set is rejected with both rules named, and the children stay as they were.
    let looping = manifest(&ns).replace(
        r#"{direction: CloudToEdge, from: "cloud.commands.site-a", to: "local.commands"}"#,
        r#"{direction: CloudToEdge, from: "cloud.commands.#", to: "local.telemetry.cmd.#"}"#,
    );
    cluster.apply_yaml(&looping);
    let bl = wait_for("InvalidSpec", Duration::from_secs(60), || {
        let bl = cluster.get(&ns, "bridgelink", "site-a").ok_or("absent")?;
        let ready = support::condition(&bl, "Ready")
            .cloned()
            .unwrap_or_default();
        if ready["reason"] == "InvalidSpec" {
            Ok(ready)
        } else {
            Err(status_summary(&bl))
        }
    })
    .unwrap();
    assert_eq!(
        bl["message"],
        r#"spec.rules[1] (CloudToEdge to "local.telemetry.cmd.#") feeds spec.rules[0] (EdgeToCloud from "local.telemetry.#"): a loop"#
    );
}

/// The `edgewire-agent` binary (`EDGEWIRE_AGENT_BIN`, else the cargo target directory's debug build).
fn agent_bin() -> std::path::PathBuf {
    if let Some(p) = std::env::var_os("EDGEWIRE_AGENT_BIN").filter(|p| !p.is_empty()) {
        return p.into();
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .filter(|p| !p.is_empty())
        .map(|t| support::workspace_root().join(t))
        .unwrap_or_else(|| support::workspace_root().join("target"));
    let bin = target.join("debug/edgewire-agent");
    assert!(
        bin.exists(),
        "{} missing: run `cargo build -p edgewire-agent`",
        bin.display()
    );
    bin
}

/// Kills the agent when the test ends, however it ends.
struct Agent(std::process::Child);

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits until the BridgeLink's `kubectl get bl` Spooled cell and `Spooling` condition say `spooled` and
/// `spooling`.
fn wait_spool(cluster: &Cluster, op: &Operator, ns: &str, spooled: &str, spooling: &str) {
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
    .unwrap_or_else(|e| panic!("{e}\n{}", op.log_tail()));
}

/// The real bridge agent, run from the config the operator rendered, against a real edge Mosquitto and a
/// real cloud NATS, reporting to the API with `--report-status`: its report shows in `kubectl get bl` and
/// drives the conditions through a cloud outage (spool fills, `Spooling` True; cloud back, spool drains,
/// `Spooling` False).
#[test]
fn the_real_agent_reports_its_spool_through_a_cloud_outage() {
    use edgewire_e2e::brokers::{BrokerProcess, Kind};
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
    let config = wait_for("the bridge config Secret", TIMEOUT, || {
        cluster
            .get(&ns, "secret", "site-a-bridge-config")
            .ok_or_else(|| "absent".to_string())
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", op.log_tail()));
    cluster.stand_in_statefulset_ready(&ns, "site-a-bridge");

    // Run the agent as the pod would, with the files the pod would mount.
    let dir = tempfile::tempdir().unwrap();
    let config_file = dir.path().join("bridge.yaml");
    std::fs::write(
        &config_file,
        base64::engine::general_purpose::STANDARD
            .decode(str_at(&config, "/data/bridge.yaml"))
            .unwrap(),
    )
    .unwrap();
    std::fs::create_dir_all(dir.path().join("secrets")).unwrap();
    let http = format!("127.0.0.1:{}", edgewire_e2e::brokers::free_port());
    let log = std::fs::File::create(dir.path().join("agent.log")).unwrap();
    let _agent = Agent(
        std::process::Command::new(agent_bin())
            .arg("bridge")
            .arg("--config")
            .arg(&config_file)
            .arg("--secrets-dir")
            .arg(dir.path().join("secrets"))
            .arg("--spool-dir")
            .arg(dir.path().join("spool"))
            .args(["--http-addr", &http, "--report-status"])
            .env("KUBECONFIG", cluster.kubeconfig())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start edgewire-agent bridge"),
    );
    let agent_log = || std::fs::read_to_string(dir.path().join("agent.log")).unwrap_or_default();

    let out = cluster.kubectl(&[
        "-n",
        &ns,
        "wait",
        "--for=condition=Ready",
        "bridgelink/site-a",
        "--timeout=90s",
    ]);
    assert!(
        out.status.success(),
        "not Ready: {}\nagent:\n{}\n{}",
        status_summary(&cluster.get_json(&ns, "bridgelink", "site-a")),
        agent_log(),
        op.log_tail()
    );
    wait_spool(&cluster, &op, &ns, "0", "False");

    // Cloud outage: what the edge publishes waits in the spool.
    cloud.stop();
    let (client, mut conn) = rumqttc::Client::new(
        rumqttc::MqttOptions::new("e2e-publisher", "127.0.0.1", edge.port()),
        100,
    );
    const N: usize = 50;
    for i in 0..N {
        client
            .publish(
                "local/telemetry/line1/temp",
                rumqttc::QoS::AtLeastOnce,
                false,
                format!("{i}"),
            )
            .unwrap();
    }
    let mut acked = 0;
    for ev in conn.iter() {
        if let Ok(rumqttc::Event::Incoming(rumqttc::Packet::PubAck(_))) = ev {
            acked += 1;
            if acked == N {
                break;
            }
        }
    }
    let _ = client.disconnect();
    wait_spool(&cluster, &op, &ns, &N.to_string(), "True");
    let bl = cluster.get_json(&ns, "bridgelink", "site-a");
    assert_eq!(
        condition_status(&bl, "CloudConnected"),
        "False",
        "{}",
        agent_log()
    );

    // The cloud returns: the spool drains and Spooling goes False.
    cloud.restart().expect("restart nats-server");
    wait_spool(&cluster, &op, &ns, "0", "False");
}
