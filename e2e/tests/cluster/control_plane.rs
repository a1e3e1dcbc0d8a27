//! The control plane itself, as users meet it: the chart installed with helm (its CRDs Established), the
//! chart's ServiceAccount token authenticating as that ServiceAccount with the chart's RBAC and no more,
//! the chart's operator Deployment Available (on the harness's control plane: on kwok's fake nodes) under
//! PodSecurity `restricted`, and a claim of the default StorageClass bound to a provisioned volume (there:
//! hostPath) that goes with the claim.

use crate::support::{Cluster, TIMEOUT, at, str_at, wait_for};
use edgewire_e2e::kube::{NODES, STORAGE_CLASS};

#[test]
fn the_chart_is_installed_and_its_service_account_has_the_charts_rbac() {
    let cluster = Cluster::start();
    let cp = cluster.control_plane();
    let release_ns = cp.release_namespace();
    let release = cp.release_name();
    let sa = cp.chart_service_account();

    let out = cp
        .helm(&["status", release, "-n", release_ns, "-o", "json"])
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(str_at(&status, "/info/status"), "deployed", "{status}");
    for crd in edgewire_e2e::kube::edgewire_crd_names() {
        let c = cluster.get_json("", "crd", crd);
        let established = at(&c, "/status/conditions")
            .as_array()
            .unwrap_or_else(|| panic!("{crd} has no conditions: {c}"))
            .iter()
            .any(|c| c["type"] == "Established" && c["status"] == "True");
        assert!(established, "{crd} not Established: {}", at(&c, "/status"));
    }
    let ns = cluster.get_json("", "namespace", release_ns);
    assert_eq!(
        str_at(&ns, "/metadata/labels/pod-security.kubernetes.io~1enforce"),
        "restricted"
    );

    // The operator's kubeconfig authenticates as the chart's ServiceAccount, which may do what the
    // ClusterRole grants and nothing more.
    let kc = cluster.operator_kubeconfig();
    let as_operator = |args: &[&str]| {
        cp.kubectl_command_as(&kc, args)
            .output()
            .expect("run kubectl")
    };
    let who = as_operator(&[
        "auth",
        "whoami",
        "-o",
        "jsonpath={.status.userInfo.username}",
    ]);
    assert_eq!(
        String::from_utf8_lossy(&who.stdout),
        format!("system:serviceaccount:{release_ns}:{sa}"),
        "{}",
        String::from_utf8_lossy(&who.stderr)
    );
    let can = |verb: &str, resource: &str| {
        let out = as_operator(&["auth", "can-i", verb, resource, "-A"]);
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    assert_eq!(can("patch", "statefulsets.apps"), "yes");
    assert_eq!(can("patch", "eventbrokers.edgewire.dev/status"), "yes");
    assert_eq!(can("create", "namespaces"), "no");
    assert_eq!(can("delete", "nodes"), "no");
}

#[test]
fn the_charts_operator_deployment_becomes_available_and_claims_get_volumes() {
    let cluster = Cluster::start();
    let cp = cluster.control_plane();
    let release_ns = cp.release_namespace();
    let release = cp.release_name();
    // The chart's operator Deployment: kwok makes its pods Running and Ready (they run no code; on the
    // cluster in KUBECONFIG they do, from images it must be able to pull).
    cluster.wait(
        release_ns,
        &format!("deployment/{release}"),
        "condition=Available",
        TIMEOUT,
        || cp.log_tails(20),
    );
    let pods = cluster.list(
        release_ns,
        "pods",
        &format!("app.kubernetes.io/instance={release}"),
    );
    assert_eq!(pods.len(), 2, "replicaCount 2");
    for p in &pods {
        assert_eq!(str_at(p, "/status/phase"), "Running", "{p}");
        assert!(
            !cp.is_local() || NODES.contains(&str_at(p, "/spec/nodeName")),
            "not on a kwok node: {p}"
        );
        assert_eq!(
            str_at(p, "/spec/serviceAccountName"),
            cp.chart_service_account()
        );
    }

    // A claim of the default StorageClass binds: the controller-manager provisions a hostPath volume.
    let ns = cluster.create_namespace("cp-pvc");
    cluster.apply_yaml(&format!(
        "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {{name: data, namespace: {ns}}}\n\
         spec: {{accessModes: [ReadWriteOnce], resources: {{requests: {{storage: 1Gi}}}}}}\n"
    ));
    cluster.wait(
        &ns,
        "pvc/data",
        "jsonpath={.status.phase}=Bound",
        TIMEOUT,
        || cp.log_tails(20),
    );
    let pvc = cluster.get_json(&ns, "pvc", "data");
    let pv = cluster.get_json("", "pv", str_at(&pvc, "/spec/volumeName"));
    if cp.is_local() {
        assert_eq!(str_at(&pvc, "/spec/storageClassName"), STORAGE_CLASS);
        assert!(
            str_at(&pv, "/spec/hostPath/path").starts_with("/tmp/"),
            "{pv}"
        );
    }
    // Deleting the claim deletes the volume (reclaimPolicy Delete).
    let pv_name = str_at(&pv, "/metadata/name").to_string();
    cluster.kubectl_ok(&["delete", "pvc", "data", "-n", &ns, "--wait=true"]);
    wait_for(
        "the provisioned volume to be deleted",
        TIMEOUT,
        || match cluster.get("", "pv", &pv_name) {
            None => Ok(()),
            Some(pv) => Err(str_at(&pv, "/status/phase").to_string()),
        },
    )
    .unwrap();
}
