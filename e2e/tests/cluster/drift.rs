//! Field ownership with real server-side apply: a second field manager (`kubectl apply --server-side
//! --field-manager=e2e-intruder --force-conflicts`) takes a field the operator applies and adds one the
//! operator does not apply, on the publisher Deployment. The operator takes its field back (the
//! Deployment's change wakes it; its apply forces), and leaves the other field, and the other manager's
//! ownership of it, alone. (Re-applying every sample and restarting the operator changing nothing is in the
//! samples scenario.)

use crate::support::manifests::{nats_external, token_secret};
use crate::support::{Cluster, Operator, at, str_at};
use serde_json::Value;

/// The operator's field manager (`edgewire_api::FIELD_MANAGER`).
const OPERATOR: &str = "edgewire-operator";
const INTRUDER: &str = "e2e-intruder";
const NOTE: &str = "e2e.edgewire.dev/note";

/// The managers that own `field` (a `f:` path such as `["f:spec", "f:replicas"]`) in `managedFields`.
fn owners(obj: &Value, field: &[&str]) -> Vec<String> {
    at(obj, "/metadata/managedFields")
        .as_array()
        .into_iter()
        .flatten()
        .filter(|m| {
            let mut v = &m["fieldsV1"];
            for f in field {
                v = &v[*f];
            }
            !v.is_null()
        })
        .map(|m| format!("{} ({})", str_at(m, "/manager"), str_at(m, "/operation")))
        .collect()
}

/// The publisher Deployment with its `managedFields` (kubectl hides them unless asked).
fn publisher(cluster: &Cluster, ns: &str) -> Option<Value> {
    let out = cluster.kubectl_ok(&[
        "get",
        "deployment.apps",
        "events-publisher",
        "-n",
        ns,
        "-o",
        "json",
        "--show-managed-fields",
        "--ignore-not-found",
    ]);
    (!out.trim().is_empty()).then(|| serde_json::from_str(&out).expect("kubectl get: JSON"))
}

#[test]
fn a_field_the_operator_owns_is_put_back_and_one_it_does_not_own_is_kept() {
    let cluster = Cluster::start();
    let ns = cluster.create_namespace("e2e-fields");
    let op = Operator::start(&cluster, &ns, "op-fields");
    cluster.apply_yaml(&token_secret(&ns, "nats-auth", "first-token"));
    cluster.apply_yaml(&nats_external(&ns, "events", "nats-auth"));
    let deployment = op.wait("the publisher Deployment", || {
        publisher(&cluster, &ns).ok_or_else(|| "absent".to_string())
    });
    let replicas = ["f:spec", "f:replicas"];
    let note_field = format!("f:{NOTE}");
    let note = ["f:metadata", "f:annotations", note_field.as_str()];
    assert_eq!(at(&deployment, "/spec/replicas"), 1);
    assert_eq!(
        owners(&deployment, &replicas),
        [format!("{} (Apply)", OPERATOR)],
        "the operator applies spec.replicas"
    );

    // One apply by another manager: a field the operator owns and one it does not.
    let intrusion = format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: events-publisher\n  namespace: {ns}\n  \
         annotations: {{{NOTE}: kept}}\nspec:\n  replicas: 3\n"
    );
    let out = cluster.kubectl_stdin(
        &[
            "apply",
            "--server-side",
            "--force-conflicts",
            &format!("--field-manager={INTRUDER}"),
            "--show-managed-fields",
            "-o",
            "json",
        ],
        &intrusion,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // What the apply stored (the operator may take its field back at once).
    let taken: Value = serde_json::from_slice(&out.stdout).expect("kubectl apply -o json: JSON");
    assert_eq!(at(&taken, "/spec/replicas"), 3, "the intruder's apply");
    assert_eq!(
        owners(&taken, &replicas),
        [format!("{INTRUDER} (Apply)")],
        "--force-conflicts took spec.replicas"
    );
    let generation = at(&taken, "/metadata/generation").as_i64().unwrap_or(0);

    // The operator takes spec.replicas back.
    let restored = op.wait("the operator to put spec.replicas back to 1", || {
        let d = publisher(&cluster, &ns).ok_or("absent")?;
        let gen_now = at(&d, "/metadata/generation").as_i64().unwrap_or(0);
        if at(&d, "/spec/replicas") == 1 && gen_now > generation {
            Ok(d)
        } else {
            Err(format!(
                "spec.replicas {}, generation {gen_now}, owners {:?}",
                at(&d, "/spec/replicas"),
                owners(&d, &replicas)
            ))
        }
    });
    assert_eq!(
        owners(&restored, &replicas),
        [format!("{} (Apply)", OPERATOR)],
        "spec.replicas is the operator's again"
    );
    // The annotation stays, and stays the other manager's.
    assert_eq!(
        str_at(
            &restored,
            &format!("/metadata/annotations/{}", NOTE.replace('/', "~1"))
        ),
        "kept",
        "the operator removed a field it does not own: {}",
        at(&restored, "/metadata")
    );
    assert_eq!(
        owners(&restored, &note),
        [format!("{INTRUDER} (Apply)")],
        "ownership of the annotation"
    );
    eprintln!(
        "spec.replicas 3 by {INTRUDER} put back to 1 by {}; annotation {NOTE} kept",
        OPERATOR
    );
}
