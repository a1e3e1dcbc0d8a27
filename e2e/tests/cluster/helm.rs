//! Helm as users run it, on a control plane of this test's own (the shared one's release stays as every
//! other test needs it): `helm upgrade` with the same values changes no object (every resourceVersion of the
//! release's objects stays), `helm upgrade` with one value changed changes only the object that value is in
//! (and the Deployment rolls its pods), `helm install` with a misspelled value fails on `values.schema.json`
//! naming the key and installs nothing, and `helm uninstall` keeps the CRDs (`helm.sh/resource-policy: keep`)
//! and with them every custom resource.

use crate::support::{TIMEOUT, wait_for, workspace_root};
use edgewire_e2e::kube::{ControlPlane, edgewire_crd_names};
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::Write;
use std::process::Stdio;

/// `helm <args>` on `cp`; (success, stdout + stderr).
fn helm(cp: &ControlPlane, args: &[&str]) -> (bool, String) {
    let out = cp.helm(args).unwrap_or_else(|e| panic!("{e:#}"));
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// `Kind namespace/name` → resourceVersion of every object of the release's manifest, read from the API
/// server (`helm get manifest` piped into `kubectl get -f -`).
fn release_objects(cp: &ControlPlane) -> BTreeMap<String, Value> {
    let (ok, manifest) = helm(
        cp,
        &[
            "get",
            "manifest",
            cp.release_name(),
            "-n",
            cp.release_namespace(),
        ],
    );
    assert!(ok, "helm get manifest: {manifest}");
    let mut child = cp
        .kubectl_command(&["get", "-o", "json", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(manifest.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "kubectl get -f (the release's manifest): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let list: Value = serde_json::from_slice(&out.stdout).unwrap();
    let items = match list["items"].as_array() {
        Some(items) => items.clone(),
        None => vec![list],
    };
    items
        .into_iter()
        .map(|o| {
            let key = format!(
                "{} {}/{}",
                o["kind"].as_str().unwrap_or("?"),
                o["metadata"]["namespace"].as_str().unwrap_or(""),
                o["metadata"]["name"].as_str().unwrap_or("?")
            );
            (key, o)
        })
        .collect()
}

fn versions(objects: &BTreeMap<String, Value>) -> BTreeMap<&str, &str> {
    objects
        .iter()
        .map(|(k, o)| {
            (
                k.as_str(),
                o["metadata"]["resourceVersion"].as_str().unwrap_or(""),
            )
        })
        .collect()
}

/// What a write of the object's spec changes: `metadata.generation` where the object has one (a status
/// write by a controller — the PodDisruptionBudget's while pods roll — changes the resourceVersion, not
/// the generation), else the resourceVersion.
fn spec_versions(objects: &BTreeMap<String, Value>) -> BTreeMap<&str, String> {
    objects
        .iter()
        .map(|(k, o)| {
            let m = &o["metadata"];
            let v = match m["generation"].as_i64() {
                Some(g) => format!("generation {g}"),
                None => format!(
                    "resourceVersion {}",
                    m["resourceVersion"].as_str().unwrap_or("")
                ),
            };
            (k.as_str(), v)
        })
        .collect()
}

/// The keys whose value differs between `before` and `after` (or that only one has).
fn changed<V: PartialEq>(before: &BTreeMap<&str, V>, after: &BTreeMap<&str, V>) -> Vec<String> {
    before
        .keys()
        .chain(after.keys())
        .filter(|k| before.get(*k) != after.get(*k))
        .map(|k| k.to_string())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect()
}

#[test]
fn helm_upgrade_uninstall_and_a_misspelled_value_as_users_run_them() {
    if std::env::var_os("KUBECONFIG").is_some_and(|v| !v.is_empty()) {
        // The release of the cluster in KUBECONFIG is the one every other test uses: not this test's to
        // uninstall.
        eprintln!("helm test: needs a control plane of its own; KUBECONFIG is set, not run");
        return;
    }
    let cp = ControlPlane::start().unwrap_or_else(|e| panic!("{e}"));
    let (release, ns) = (cp.release_name(), cp.release_namespace());
    let chart = workspace_root().join("charts/edgewire");
    let chart = chart.to_str().unwrap();
    let installed = release_objects(&cp);
    let deployment_key = installed
        .keys()
        .find(|k| k.starts_with("Deployment "))
        .unwrap_or_else(|| panic!("the release has no Deployment: {:?}", installed.keys()))
        .clone();
    let deployment = format!("deployment/{}", deployment_key.rsplit('/').next().unwrap());
    let rollout = |what: &str| {
        let out = cp
            .kubectl(&[
                "-n",
                ns,
                "rollout",
                "status",
                &deployment,
                &format!("--timeout={}s", TIMEOUT.as_secs()),
            ])
            .unwrap();
        assert!(
            out.status.success(),
            "{what}: kubectl rollout status {deployment}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    };
    rollout("after install");
    // Read once the controllers are done with the new pods (the Deployment rolled out, the
    // PodDisruptionBudget counts them healthy): their status writes are not helm's.
    let installed = wait_for("the release's objects to settle", TIMEOUT, || {
        let objects = release_objects(&cp);
        let unsettled: Vec<&String> = objects
            .iter()
            .filter(|(k, o)| {
                k.starts_with("PodDisruptionBudget ")
                    && (o["status"]["observedGeneration"] != o["metadata"]["generation"]
                        || o["status"]["expectedPods"].as_i64().unwrap_or(0) == 0
                        || o["status"]["currentHealthy"] != o["status"]["expectedPods"])
            })
            .map(|(k, _)| k)
            .collect();
        if unsettled.is_empty() {
            Ok(objects)
        } else {
            Err(format!("not settled: {unsettled:?}"))
        }
    })
    .unwrap_or_else(|e| panic!("{e}"));
    let before = versions(&installed);
    for crd in edgewire_crd_names() {
        assert!(
            before.contains_key(format!("CustomResourceDefinition /{crd}").as_str()),
            "the release has no CRD {crd}: {:?}",
            before.keys()
        );
    }
    println!("release objects: {}", before.len());

    // The same values again: nothing to change, nothing written.
    let (ok, out) = helm(&cp, &["upgrade", release, chart, "-n", ns]);
    assert!(ok, "helm upgrade (same values): {out}");
    let same = release_objects(&cp);
    let after = versions(&same);
    assert_eq!(
        changed(&before, &after),
        Vec::<String>::new(),
        "helm upgrade with unchanged values changed these objects"
    );

    // One value changed: only the Deployment it is in, which rolls its pods.
    let old_generation = installed[&deployment_key]["metadata"]["generation"]
        .as_i64()
        .unwrap();
    let (ok, out) = helm(
        &cp,
        &[
            "upgrade",
            release,
            chart,
            "-n",
            ns,
            "--set",
            "logLevel=debug",
        ],
    );
    assert!(ok, "helm upgrade --set logLevel=debug: {out}");
    rollout("after the logLevel change");
    let upgraded = release_objects(&cp);
    assert_eq!(
        changed(&spec_versions(&same), &spec_versions(&upgraded)),
        vec![deployment_key.clone()],
        "helm upgrade --set logLevel=debug changed other objects than the Deployment"
    );
    let d = &upgraded[&deployment_key];
    assert_eq!(
        d["metadata"]["generation"].as_i64().unwrap(),
        old_generation + 1
    );
    let env = d["spec"]["template"]["spec"]["containers"][0]["env"].to_string();
    assert!(
        env.contains(r#""value":"debug""#),
        "the new log level is not in the pod template: {env}"
    );
    let sets = cp
        .kubectl_ok(&[
            "-n",
            ns,
            "get",
            "replicasets.apps",
            "-l",
            "app.kubernetes.io/name=edgewire",
            "-o",
            "jsonpath={range .items[*]}{.metadata.name}={.spec.replicas}{\"\\n\"}{end}",
        ])
        .unwrap();
    assert_eq!(
        sets.lines().count(),
        2,
        "a new ReplicaSet beside the old one: {sets}"
    );
    println!("after the logLevel change: {sets}");

    // A misspelled value: the schema refuses it by name, nothing is installed.
    for (set, key) in [
        ("replicaCuont=3", "replicaCuont"),
        ("metrics.serviceMonitor.enabeld=true", "enabeld"),
    ] {
        let (ok, out) = helm(
            &cp,
            &["install", "typo", chart, "-n", "typo-ns", "--set", set],
        );
        assert!(!ok, "helm install --set {set} succeeded: {out}");
        assert!(
            out.contains("values don't meet the specifications of the schema") && out.contains(key),
            "helm install --set {set}: the failure does not name {key}: {out}"
        );
        println!("helm install --set {set}: {}", out.trim());
    }
    let (ok, _) = helm(&cp, &["status", "typo", "-n", "typo-ns"]);
    assert!(!ok, "a release typo exists after the refused installs");

    // Uninstall: the CRDs stay, and with them the resources.
    cp.create_restricted_namespace("apps").unwrap();
    cp.apply(
        "apiVersion: edgewire.dev/v1alpha1\nkind: EventBroker\nmetadata: {name: events, namespace: apps}\n\
         spec:\n  adapter: mqtt\n  mqtt: {url: \"mqtt.example.com:1883\"}\n",
    )
    .unwrap();
    let eb_uid = cp
        .kubectl_ok(&[
            "-n",
            "apps",
            "get",
            "eventbroker",
            "events",
            "-o",
            "jsonpath={.metadata.uid}",
        ])
        .unwrap();
    let (ok, out) = helm(&cp, &["uninstall", release, "-n", ns, "--wait"]);
    assert!(ok, "helm uninstall: {out}");
    println!("helm uninstall: {}", out.trim());
    assert!(
        cp.kubectl_ok(&["-n", ns, "get", &deployment, "--ignore-not-found"])
            .unwrap()
            .trim()
            .is_empty(),
        "the operator Deployment outlived helm uninstall"
    );
    for crd in edgewire_crd_names() {
        let uid = cp
            .kubectl_ok(&["get", "crd", crd, "-o", "jsonpath={.metadata.uid}"])
            .unwrap_or_else(|e| panic!("CRD {crd} gone after helm uninstall: {e:#}"));
        let key = format!("CustomResourceDefinition /{crd}");
        assert_eq!(
            uid, installed[&key]["metadata"]["uid"],
            "{crd} was deleted and created again"
        );
    }
    let uid = cp
        .kubectl_ok(&[
            "-n",
            "apps",
            "get",
            "eventbroker",
            "events",
            "-o",
            "jsonpath={.metadata.uid}",
        ])
        .unwrap_or_else(|e| panic!("the EventBroker is gone after helm uninstall: {e:#}"));
    assert_eq!(uid, eb_uid);
}
