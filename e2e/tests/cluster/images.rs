//! The images on the real control plane (issue 16): the operator Deployment the chart installs and every
//! workload the operator creates — their pod templates and the Pods the ReplicaSet and StatefulSet
//! controllers made from them — reference exactly the image names and tags `make image` produces.
//!
//! Those names come from `hack/image/build.sh` itself: `--print-names` runs the naming the build uses
//! (`<prefix>/<binary>:<workspace version>`) without building, and an `images.env` a build left in the
//! target directory must agree with it. The operator runs as the chart's Deployment runs it: with the
//! `--agent-image` and `--agent-image-pull-policy` arguments the chart rendered.

use crate::support::manifests::{nats_deployed, token_secret};
use crate::support::operator::OperatorOpts;
use crate::support::{Cluster, Operator, TIMEOUT, at, str_at, workspace_root};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;

/// `KEY=VALUE` lines (comments and blank lines skipped).
fn parse_env(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The names and tags `make image` gives the images: `hack/image/build.sh --print-names` with the default
/// repository prefix (the chart's), checked against any `images.env` a build of this version left.
fn image_names() -> BTreeMap<String, String> {
    let script = workspace_root().join("hack/image/build.sh");
    let out = Command::new("bash")
        .arg(&script)
        .arg("--print-names")
        .env_remove("IMAGE_REPOSITORY_PREFIX")
        .output()
        .unwrap_or_else(|e| panic!("run {}: {e}", script.display()));
    assert!(
        out.status.success(),
        "{} --print-names: {}",
        script.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let names = parse_env(&String::from_utf8_lossy(&out.stdout));
    for key in ["EDGEWIRE_OPERATOR_IMAGE", "EDGEWIRE_AGENT_IMAGE"] {
        assert!(
            names.contains_key(key),
            "--print-names printed no {key}: {names:?}"
        );
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .filter(|t| !t.is_empty())
        .map(|t| workspace_root().join(PathBuf::from(t)))
        .unwrap_or_else(|| workspace_root().join("target"));
    for dir in ["images", "images-debug"] {
        let env = target.join(dir).join("images.env");
        let Ok(text) = std::fs::read_to_string(&env) else {
            continue;
        };
        let built = parse_env(&text);
        if built.get("EDGEWIRE_IMAGE_VERSION") != names.get("EDGEWIRE_IMAGE_VERSION") {
            eprintln!(
                "{} is from version {:?}, not this one: not compared",
                env.display(),
                built.get("EDGEWIRE_IMAGE_VERSION")
            );
            continue;
        }
        for (k, v) in &names {
            assert_eq!(
                built.get(k),
                Some(v),
                "{} and build.sh --print-names disagree on {k}",
                env.display()
            );
        }
        eprintln!("{} agrees with build.sh --print-names", env.display());
    }
    names
}

/// Every container image of a pod spec (init containers too): (container, image).
fn images_of(spec: &Value) -> Vec<(String, String)> {
    ["/initContainers", "/containers"]
        .iter()
        .flat_map(|p| at(spec, p).as_array().cloned().unwrap_or_default())
        .map(|c| {
            (
                str_at(&c, "/name").to_string(),
                str_at(&c, "/image").to_string(),
            )
        })
        .collect()
}

#[test]
fn the_chart_and_the_operators_workloads_reference_the_images_make_image_builds() {
    let names = image_names();
    let operator_image = &names["EDGEWIRE_OPERATOR_IMAGE"];
    let agent_image = &names["EDGEWIRE_AGENT_IMAGE"];
    let ours = |image: &str| {
        image.starts_with(&names["EDGEWIRE_OPERATOR_REPOSITORY"])
            || image.starts_with(&names["EDGEWIRE_AGENT_REPOSITORY"])
    };

    let cluster = Cluster::start();
    let cp = cluster.control_plane();
    // The chart's operator Deployment, and the Pods its ReplicaSet made (kwok: they run no code).
    cluster.wait(
        cp.release_namespace(),
        &format!("deployment/{}", cp.release_name()),
        "condition=Available",
        TIMEOUT,
        || cp.log_tails(20),
    );
    let deployment = cluster.get_json(cp.release_namespace(), "deployment.apps", cp.release_name());
    let spec = at(&deployment, "/spec/template/spec");
    assert_eq!(
        images_of(spec),
        [("operator".to_string(), operator_image.clone())],
        "the chart's Deployment"
    );
    let args: Vec<String> = at(spec, "/containers/0/args")
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| a.as_str().map(str::to_string))
        .collect();
    let agent_args: Vec<String> = args
        .iter()
        .filter(|a| a.starts_with("--agent-image"))
        .cloned()
        .collect();
    assert!(
        agent_args.contains(&format!("--agent-image={agent_image}")),
        "the chart hands the operator another agent image: {args:?}"
    );
    let pods = cluster.list(
        cp.release_namespace(),
        "pods",
        &format!("app.kubernetes.io/instance={}", cp.release_name()),
    );
    assert!(!pods.is_empty(), "the chart's Deployment has no pods");
    for p in &pods {
        assert_eq!(
            images_of(at(p, "/spec")),
            [("operator".to_string(), operator_image.clone())],
            "pod {}",
            str_at(p, "/metadata/name")
        );
    }

    // The operator as the chart runs it, and one workload of each kind it makes.
    let ns = cluster.create_namespace("e2e-images");
    let op = Operator::start_with(
        &cluster,
        OperatorOpts {
            args: agent_args,
            ..OperatorOpts::new(&ns, "op-images")
        },
    );
    cluster.apply_yaml(&token_secret(&ns, "nats-auth", "first-token"));
    cluster.apply_yaml(&nats_deployed(&ns, "events", "nats-auth", 1));
    cluster.apply_yaml(&format!(
        "apiVersion: edgewire.dev/v1alpha1\nkind: MqttBroker\nmetadata: {{name: workers, namespace: {ns}}}\n\
         spec:\n  type: builtin\n  builtin:\n    users: [{{name: pool-a}}]\n---\n\
         apiVersion: edgewire.dev/v1alpha1\nkind: BridgeLink\nmetadata: {{name: site-a, namespace: {ns}}}\n\
         spec:\n  siteId: site-a\n  edge: {{endpoint: {{protocol: mqtt, url: 'mqtt.site-a.svc:1883'}}}}\n  \
         cloud: {{endpoint: {{protocol: nats, url: 'nats://nats.cloud.example.com:4222'}}}}\n  \
         rules: [{{direction: EdgeToCloud, from: 'a.#', to: 'b.#'}}]\n"
    ));
    // Workload → the container that must run the agent image.
    let agent_containers = [
        ("Deployment", "events-publisher"),
        ("StatefulSet", "workers"),
        ("StatefulSet", "site-a-bridge"),
    ];
    let workloads = op.wait(
        "the publisher, MQTT broker and bridge workloads with pods",
        || {
            let ws = cluster.list(&ns, "deployments.apps,statefulsets.apps", "");
            for (kind, name) in agent_containers {
                let w = ws
                    .iter()
                    .find(|w| w["kind"] == kind && str_at(w, "/metadata/name") == name)
                    .ok_or_else(|| format!("no {kind} {name}"))?;
                if at(w, "/status/readyReplicas").as_i64().unwrap_or(0) < 1 {
                    return Err(format!("{kind} {name}: {}", at(w, "/status")));
                }
            }
            Ok(ws)
        },
    );
    let mut checked = Vec::new();
    for w in &workloads {
        let id = format!("{}/{}", str_at(w, "/kind"), str_at(w, "/metadata/name"));
        let template = images_of(at(w, "/spec/template/spec"));
        let runs_agent = template.iter().any(|(_, i)| i == agent_image);
        if agent_containers
            .iter()
            .any(|(k, n)| id == format!("{k}/{n}"))
        {
            assert!(runs_agent, "{id} does not run {agent_image}: {template:?}");
        }
        for (c, image) in &template {
            if ours(image) {
                assert_eq!(image, agent_image, "{id} container {c}");
            }
        }
        // The Pods its controller made from the template carry the same references.
        let selector: Vec<String> = at(w, "/spec/selector/matchLabels")
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
            .collect();
        let pods = cluster.list(&ns, "pods", &selector.join(","));
        assert!(!pods.is_empty(), "{id} has no pods");
        for p in &pods {
            assert_eq!(
                images_of(at(p, "/spec")),
                template,
                "pod {} of {id}",
                str_at(p, "/metadata/name")
            );
        }
        checked.push(format!("{id} ({} pods)", pods.len()));
    }
    eprintln!(
        "images: chart Deployment {operator_image}; {agent_image} in {}",
        checked.join(", ")
    );
}
