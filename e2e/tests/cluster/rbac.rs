//! The chart's RBAC against what the operator does on the real API server.
//!
//! - An operator whose ClusterRole lacks one of the chart's rules reports the refusal (its log names the
//!   forbidden request, its error metric counts it, and the resource does not become Ready): the "no
//!   `forbidden` in the log" check of the samples scenario can fail. The rule is removed from a copy of
//!   the chart's ClusterRole bound to a ServiceAccount of this test, so the other scenarios, which share
//!   the control plane and the chart's ClusterRole, keep theirs.
//! - [`audit_report`]: every request the chart's ServiceAccount made (the kube-apiserver's audit log) was
//!   granted by the chart's rules, none was refused, and the grants no request used are listed.

use crate::support::manifests::{nats_external, token_secret};
use crate::support::operator::OperatorOpts;
use crate::support::{Cluster, Operator, at, condition_status, str_at};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::io::BufRead;

/// (verb, apiGroup, resource[/subresource]).
type Grant = (String, String, String);

/// Every (verb, group, resource) the rules of a Role or ClusterRole grant (no wildcards in the chart).
fn grants(role: &Value) -> BTreeSet<Grant> {
    let mut out = BTreeSet::new();
    for rule in at(role, "/rules").as_array().into_iter().flatten() {
        for g in rule["apiGroups"].as_array().into_iter().flatten() {
            for r in rule["resources"].as_array().into_iter().flatten() {
                for v in rule["verbs"].as_array().into_iter().flatten() {
                    out.insert((
                        v.as_str().unwrap_or("").into(),
                        g.as_str().unwrap_or("").into(),
                        r.as_str().unwrap_or("").into(),
                    ));
                }
            }
        }
    }
    out
}

/// Requests every authenticated ServiceAccount may make (`system:basic-user`, `system:discovery`): not the
/// chart's business.
fn default_grant(g: &Grant) -> bool {
    g.1 == "authorization.k8s.io" && g.2.starts_with("selfsubject")
        || g.1 == "authentication.k8s.io" && g.2 == "selfsubjectreviews"
}

/// Reads the kube-apiserver's audit log of the chart's ServiceAccount and compares it with the chart's
/// ClusterRole and leader-election Role: fails on a refused request (other than the ones a terminating
/// namespace refuses) and on a request no chart rule grants; prints the grants no request used.
pub fn audit_report(cluster: &Cluster) {
    let cp = cluster.control_plane();
    let Some(path) = cp.audit_log() else {
        eprintln!("audit: the cluster in KUBECONFIG has its own audit configuration; not compared");
        return;
    };
    let user = cp.chart_user();
    let file =
        std::fs::File::open(&path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    let mut used: BTreeMap<Grant, u64> = BTreeMap::new();
    let mut refused: Vec<String> = Vec::new();
    let mut terminating = 0;
    let mut requests = 0;
    for line in std::io::BufReader::new(file).lines() {
        let line = line.unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
        let Ok(ev) = serde_json::from_str::<Value>(&line) else {
            continue;
        };
        if str_at(&ev, "/user/username") != user || ev["stage"] != "ResponseComplete" {
            continue;
        }
        let Some(obj) = ev.get("objectRef") else {
            continue; // discovery (non-resource URLs)
        };
        requests += 1;
        let resource = match str_at(obj, "/subresource") {
            "" => str_at(obj, "/resource").to_string(),
            sub => format!("{}/{sub}", str_at(obj, "/resource")),
        };
        let g: Grant = (
            str_at(&ev, "/verb").into(),
            str_at(obj, "/apiGroup").into(),
            resource,
        );
        let code = at(&ev, "/responseStatus/code").as_i64().unwrap_or(0);
        if code == 403 {
            let message = str_at(&ev, "/responseStatus/message");
            if message.contains("because it is being terminated") {
                terminating += 1;
            } else {
                refused.push(format!(
                    "{g:?} in {:?}: {message}",
                    str_at(obj, "/namespace")
                ));
            }
        }
        // A server-side apply that creates its object is audited as `patch` (201) but authorized for
        // `create` as well.
        if g.0 == "patch" && code == 201 {
            *used
                .entry(("create".into(), g.1.clone(), g.2.clone()))
                .or_default() += 1;
        }
        *used.entry(g).or_default() += 1;
    }
    assert!(
        requests > 0,
        "the audit log {} has no request of {user}",
        path.display()
    );
    let release = cp.release_name();
    let cluster_role = cluster.get_json("", "clusterrole", release);
    let lease_role = cluster.get_json(
        cp.release_namespace(),
        "role",
        &format!("{release}-leader-election"),
    );
    let granted: BTreeSet<Grant> = grants(&cluster_role)
        .union(&grants(&lease_role))
        .cloned()
        .collect();
    let missing: Vec<&Grant> = used
        .keys()
        .filter(|g| !granted.contains(*g) && !default_grant(g))
        .collect();
    let unused: Vec<&Grant> = granted.iter().filter(|g| !used.contains_key(*g)).collect();
    eprintln!(
        "audit: {requests} requests of {user}, {} distinct (verb, group, resource); {terminating} refused \
         only because their namespace was terminating",
        used.len()
    );
    eprintln!(
        "audit: granted by the chart but used by no request in this run ({}):\n{}",
        unused.len(),
        unused
            .iter()
            .map(|(v, g, r)| format!(
                "  {v} {}{r}",
                if g.is_empty() {
                    "".into()
                } else {
                    format!("{g}/")
                }
            ))
            .collect::<Vec<_>>()
            .join("\n")
    );
    eprintln!(
        "audit: (authorized without a request of its own: update of <kind>/finalizers, which the \
         OwnerReferencesPermissionEnforcement admission checks when a child's ownerReference sets \
         blockOwnerDeletion)"
    );
    assert!(
        refused.is_empty(),
        "the API server refused requests of the chart's ServiceAccount:\n{}",
        refused.join("\n")
    );
    assert!(
        missing.is_empty(),
        "requests of the chart's ServiceAccount no chart rule grants: {missing:?}"
    );
}

/// Cluster-scoped objects of one test, deleted when it ends.
struct ClusterScoped<'a> {
    cluster: &'a Cluster,
    objects: Vec<String>,
}

impl Drop for ClusterScoped<'_> {
    fn drop(&mut self) {
        for o in &self.objects {
            let _ = self.cluster.control_plane().kubectl(&[
                "delete",
                o,
                "--ignore-not-found",
                "--wait=false",
            ]);
        }
    }
}

/// The operator under the chart's ClusterRole minus the rule that grants Deployments: the publisher
/// Deployment is refused, and the operator says so — a `forbidden` line in its log naming the request, the
/// `ApplyFailed` error counter — while the EventBroker stays not Ready and gets no Deployment.
#[test]
fn an_operator_missing_one_rule_of_the_clusterrole_reports_forbidden() {
    let cluster = Cluster::start();
    let cp = cluster.control_plane();
    let ns = cluster.create_namespace("rbac-minus");
    let release = cp.release_name();
    let chart_role = cluster.get_json("", "clusterrole", release);
    let mut rules = at(&chart_role, "/rules")
        .as_array()
        .cloned()
        .unwrap_or_default();
    let before = rules.len();
    rules.retain(|r| {
        !(r["apiGroups"] == serde_json::json!(["apps"])
            && r["resources"]
                .as_array()
                .is_some_and(|rs| rs.iter().any(|x| x == "deployments")))
    });
    assert_eq!(
        rules.len(),
        before - 1,
        "the chart's ClusterRole has no single rule for apps/deployments: {chart_role}"
    );

    let name = format!("edgewire-e2e-{ns}");
    let mut scoped = ClusterScoped {
        cluster: &cluster,
        objects: Vec::new(),
    };
    let role = serde_json::json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": name},
        "rules": rules,
    });
    scoped.objects.push(format!("clusterrole/{name}"));
    scoped.objects.push(format!("clusterrolebinding/{name}"));
    cluster.apply_yaml(&role.to_string());
    cluster.apply_yaml(&format!(
        "apiVersion: v1\nkind: ServiceAccount\nmetadata: {{name: operator, namespace: {ns}}}\n---\n\
         apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\nmetadata: {{name: {name}}}\n\
         roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: {name}}}\n\
         subjects: [{{kind: ServiceAccount, name: operator, namespace: {ns}}}]\n---\n\
         apiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\n\
         metadata: {{name: {name}, namespace: {home}}}\n\
         roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: {release}-leader-election}}\n\
         subjects: [{{kind: ServiceAccount, name: operator, namespace: {ns}}}]\n",
        home = cp.release_namespace()
    ));
    let kubeconfig = cluster.service_account_kubeconfig(&ns, "operator");
    let op = Operator::start_with(
        &cluster,
        OperatorOpts {
            kubeconfig: Some(kubeconfig),
            ..OperatorOpts::new(&ns, "op-minus")
        },
    );
    cluster.apply_yaml(&token_secret(&ns, "nats-auth", "first-token"));
    cluster.apply_yaml(&nats_external(&ns, "events", "nats-auth"));

    let line = op.wait("the operator to report the forbidden Deployment", || {
        op.log()
            .lines()
            .find(|l| {
                let l = l.to_lowercase();
                l.contains("reconcile failed")
                    && l.contains("forbidden")
                    && l.contains("deployments")
            })
            .map(str::to_string)
            .ok_or_else(|| "no forbidden in the log yet".to_string())
    });
    let errors = op.wait("the ApplyFailed error counter", || {
        match op.metric(
            r#"edgewire_operator_reconcile_errors_total{kind="eventbroker",reason="ApplyFailed"}"#,
        )? {
            Some(n) if n >= 1.0 => Ok(n),
            other => Err(format!("{other:?}")),
        }
    });
    assert!(
        line.contains(&format!("system:serviceaccount:{ns}:operator")),
        "the log line does not name who was refused: {line}"
    );
    assert!(
        cluster
            .get(&ns, "deployment.apps", "events-publisher")
            .is_none()
    );
    let eb = cluster.get_json(&ns, "eventbroker", "events");
    assert_ne!(condition_status(&eb, "Ready"), "True");
    eprintln!("reported ({errors} ApplyFailed): {line}");
}
