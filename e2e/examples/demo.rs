//! `make demo`: Edgewire on one machine, on a real Kubernetes control plane (etcd, kube-apiserver,
//! kube-controller-manager, kube-scheduler, kwok — built by `make deps`), with the chart installed by helm
//! and the real operator under the chart's ServiceAccount. There is no container runtime: the workloads'
//! pods become Ready on kwok's fake nodes, and their containers run here as host processes from the pod
//! templates the operator rendered (args, env, Secrets as files, the ServiceAccount's token), the way the
//! end-to-end suite runs them (`e2e/tests/cluster/support`, shared by `#[path]`).
//!
//! The tour: an EventBroker publishing CloudEvents into a NATS server (JetStream); a BridgeLink whose agent
//! carries an edge Mosquitto's telemetry into that NATS; a cloud outage in the middle, with
//! `kubectl get bl -w` showing `SPOOLED` rise and fall; then a tally (sent, spooled, delivered, lost) read
//! back from the NATS stream itself. Exits 1 if anything was lost. Everything it starts stops with it (the
//! control plane's guardian takes the rest down when the process ends).

#[path = "../tests/cluster/support/mod.rs"]
mod support;

use std::collections::BTreeSet;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use edgewire_e2e::brokers::{BrokerProcess, Kind, free_port};
use serde_json::Value;
use support::pod::HostPod;
use support::{
    Cluster, Operator, TIMEOUT, agent_bin, at, condition_status, http, publish_at_edge, wait_for,
};

/// Telemetry readings the edge publishes before, during and after the outage.
const BEFORE: usize = 100;
const DURING: usize = 300;
const AFTER: usize = 100;
/// CloudEvents posted to the publisher.
const EVENTS: usize = 20;
const STREAM: &str = "EDGE";

fn say(what: &str) {
    println!("\n\x1b[1m== {what}\x1b[0m");
}

fn main() {
    let started = Instant::now();
    say(
        "Starting a Kubernetes control plane: etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kwok",
    );
    let cluster = Cluster::start();
    println!(
        "control plane up and the chart installed with helm in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    print!("{}", cluster.kubectl_ok(&["get", "nodes"]));
    print!(
        "{}",
        cluster.kubectl_ok(&["get", "crd", "-l", "app.kubernetes.io/managed-by=Helm"])
    );

    say("Brokers on loopback: an edge Mosquitto and a cloud NATS with JetStream");
    let edge = BrokerProcess::start_default(Kind::Mosquitto).expect("start mosquitto");
    let mut cloud = BrokerProcess::start_default(Kind::Nats).expect("start nats-server");
    println!("edge  mqtt://127.0.0.1:{}", edge.port());
    println!("cloud nats://127.0.0.1:{}", cloud.port());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let cloud_addr = format!("127.0.0.1:{}", cloud.port());
    rt.block_on(async {
        let c = async_nats::connect(&cloud_addr)
            .await
            .expect("connect nats");
        async_nats::jetstream::new(c)
            .get_or_create_stream(async_nats::jetstream::stream::Config {
                name: STREAM.into(),
                subjects: vec!["edge.>".into()],
                storage: async_nats::jetstream::stream::StorageType::File,
                ..Default::default()
            })
            .await
            .expect("create stream EDGE");
    });
    println!("stream {STREAM} (subjects edge.>) created");

    let ns = cluster.create_namespace("demo");
    say(&format!(
        "edgewire-operator runs as the chart's ServiceAccount, watching namespace {ns}"
    ));
    let op = Operator::start(&cluster, &ns, "demo");

    say(
        "kubectl apply: an EventBroker (adapter nats, JetStream) and a BridgeLink (edge MQTT -> cloud NATS)",
    );
    let manifests = format!(
        r#"apiVersion: edgewire.dev/v1alpha1
kind: EventBroker
metadata: {{name: events, namespace: {ns}}}
spec:
  coreName: demo
  adapter: nats
  nats:
    urls: ["nats://{cloud_addr}"]
    jetStream: {{enabled: true, stream: {STREAM}}}
  publisher: {{replicas: 1}}
---
apiVersion: edgewire.dev/v1alpha1
kind: BridgeLink
metadata: {{name: site-a, namespace: {ns}}}
spec:
  siteId: site-a
  edge: {{endpoint: {{protocol: mqtt, url: "127.0.0.1:{edge_port}"}}}}
  cloud: {{endpoint: {{protocol: nats, url: "nats://{cloud_addr}", jetStream: {{enabled: true}}}}}}
  rules:
    - {{direction: EdgeToCloud, from: "local.telemetry.#", to: "edge.site-a.telemetry.#", qos: 1}}
  spool: {{size: 1Gi, maxBytes: 512Mi}}
"#,
        edge_port = edge.port()
    );
    print!("{}", cluster.apply_yaml(&manifests));

    say(
        "kubectl wait --for=condition=Ready eventbroker/events (the Deployment controller and kwok make it ready)",
    );
    cluster.wait(
        &ns,
        "eventbroker/events",
        "condition=Ready",
        TIMEOUT,
        || op.log_tail(),
    );
    print!(
        "{}",
        cluster.kubectl_ok(&["-n", &ns, "get", "eventbrokers,deployments,pods"])
    );

    say("The publisher's container runs here from the rendered Deployment");
    let mut deploy = cluster.get_json(&ns, "deployment", "events-publisher");
    let listen = format!("127.0.0.1:{}", free_port());
    move_listen_address(&mut deploy, &listen);
    let publisher = HostPod::start(&cluster, &ns, &deploy, "publisher", &agent_bin());
    wait_for("the publisher's /readyz", TIMEOUT, || {
        match http(&listen, "GET", "/readyz", &[], "") {
            Ok((200, _)) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", publisher.log_tail()));
    let mut accepted = 0;
    for i in 0..EVENTS {
        let (code, body) = post_event(&listen, i).expect("POST a CloudEvent");
        if code == 202 {
            accepted += 1;
        } else {
            println!("event {i}: {code} {body}");
        }
    }
    println!(
        "POSTed {EVENTS} binary-mode CloudEvents of type edge.demo.reading: {accepted} answered 202 Accepted"
    );

    say(
        "The bridge's StatefulSet: its spool claim binds, its agent runs with the bridge's own ServiceAccount",
    );
    let sts = wait_for(
        "the bridge StatefulSet to be ready",
        Duration::from_secs(90),
        || {
            let sts = cluster
                .get(&ns, "statefulset.apps", "site-a-bridge")
                .ok_or("absent")?;
            if at(&sts, "/status/readyReplicas").as_i64() == Some(1) {
                Ok(sts)
            } else {
                Err(format!("{}", at(&sts, "/status")))
            }
        },
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", op.log_tail()));
    print!(
        "{}",
        cluster.kubectl_ok(&["-n", &ns, "get", "statefulsets,pvc,pods"])
    );
    let agent = HostPod::start(&cluster, &ns, &sts, "bridge", &agent_bin());
    cluster.wait(
        &ns,
        "bridgelink/site-a",
        "condition=Ready",
        Duration::from_secs(90),
        || format!("{}\n{}", agent.log_tail(), op.log_tail()),
    );

    say("kubectl get bl -w (in the background from here on)");
    let mut watch = KillOnDrop(
        cluster
            .control_plane()
            .kubectl_command(&["-n", &ns, "get", "bl", "-w"])
            .stdout(Stdio::inherit())
            .stderr(Stdio::null())
            .spawn()
            .expect("kubectl get bl -w"),
    );

    let mut sent = 0;
    println!("\nthe edge publishes {BEFORE} readings (QoS 1) on local/telemetry/line1/temp");
    sent += publish_at_edge(edge.port(), "demo-edge", None, readings(sent, BEFORE));
    wait_spooled(&cluster, &ns, |n| n == 0);

    say("Cloud outage: nats-server stops");
    cloud.stop();
    println!("the edge publishes {DURING} readings while the cloud is away");
    sent += publish_at_edge(edge.port(), "demo-edge", None, readings(sent, DURING));
    let peak = wait_spooled(&cluster, &ns, |n| n == DURING as u64);
    let bl = cluster.get_json(&ns, "bridgelink", "site-a");
    println!(
        "Spooled {peak}: CloudConnected={}, Spooling={}",
        condition_status(&bl, "CloudConnected"),
        condition_status(&bl, "Spooling")
    );
    let (code, body) = post_event(&listen, EVENTS).expect("POST during the outage");
    println!(
        "meanwhile a CloudEvent POSTed to the publisher is answered {code}, not dropped: {body}"
    );

    say("The cloud returns: nats-server starts again on its store");
    cloud.restart().expect("restart nats-server");
    wait_spooled(&cluster, &ns, |n| n == 0);
    println!("the edge publishes {AFTER} more readings");
    sent += publish_at_edge(edge.port(), "demo-edge", None, readings(sent, AFTER));
    wait_spooled(&cluster, &ns, |n| n == 0);
    cluster.wait(
        &ns,
        "bridgelink/site-a",
        "condition=Ready",
        Duration::from_secs(90),
        || agent.log_tail(),
    );
    drop(watch.0.kill());

    say("Tally, read back from the NATS stream");
    let (readings, events) = wait_for(
        "every reading in the stream",
        Duration::from_secs(60),
        || {
            let (r, e) = rt.block_on(stream_contents(&cloud_addr));
            if r.len() >= sent {
                Ok((r, e))
            } else {
                Err(format!("{} of {sent}", r.len()))
            }
        },
    )
    .unwrap_or_else(|_| rt.block_on(stream_contents(&cloud_addr)));
    let unique: BTreeSet<&String> = readings.iter().collect();
    let lost = (0..sent)
        .filter(|i| !unique.contains(&format!("reading-{i}")))
        .count();
    println!("edge readings sent        {sent}");
    println!("spooled during the outage {peak} (peak)");
    println!(
        "delivered to the stream   {} ({} duplicates)",
        unique.len(),
        readings.len() - unique.len()
    );
    println!("lost                      {lost}");
    println!("CloudEvents accepted      {accepted}, in the stream {events}");
    println!(
        "\n(took {:.0} s; everything started here stops now)",
        started.elapsed().as_secs_f64()
    );
    drop((agent, publisher, op));
    if lost > 0 || events < accepted {
        std::process::exit(1);
    }
}

/// Kills a child process when dropped.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Points the publisher container's `EDGEWIRE_LISTEN` at `addr` (the pod's port is the pod's own; here
/// it is the host's).
fn move_listen_address(deploy: &mut Value, addr: &str) {
    let env = deploy
        .pointer_mut("/spec/template/spec/containers/0/env")
        .and_then(Value::as_array_mut)
        .expect("the publisher container has env");
    match env.iter_mut().find(|e| e["name"] == "EDGEWIRE_LISTEN") {
        Some(e) => e["value"] = Value::String(addr.into()),
        None => env.push(serde_json::json!({"name": "EDGEWIRE_LISTEN", "value": addr})),
    }
}

/// `kubectl get bl`'s SPOOLED, polled until `done` says so; returns the value.
fn wait_spooled(cluster: &Cluster, ns: &str, done: impl Fn(u64) -> bool) -> u64 {
    wait_for("SPOOLED", Duration::from_secs(120), || {
        let bl = cluster.get(ns, "bridgelink", "site-a").ok_or("absent")?;
        let n = at(&bl, "/status/runtime/spoolMessages")
            .as_u64()
            .ok_or_else(|| format!("no spoolMessages yet: {}", at(&bl, "/status")))?;
        if done(n) {
            Ok(n)
        } else {
            Err(format!("SPOOLED {n}"))
        }
    })
    .unwrap_or_else(|e| panic!("{e}"))
}

/// Readings `reading-<first..first+n>`.
fn readings(first: usize, n: usize) -> Vec<String> {
    (first..first + n).map(|i| format!("reading-{i}")).collect()
}

/// The readings (payloads of `edge.site-a.telemetry.>`) and the number of CloudEvents in the stream.
async fn stream_contents(addr: &str) -> (Vec<String>, usize) {
    use futures::StreamExt;
    let c = async_nats::connect(addr).await.expect("connect nats");
    let js = async_nats::jetstream::new(c);
    let stream = js.get_stream(STREAM).await.expect("stream EDGE");
    let consumer = stream
        .create_consumer(async_nats::jetstream::consumer::pull::OrderedConfig::default())
        .await
        .expect("ordered consumer");
    let total = stream.cached_info().state.messages as usize;
    let mut messages = consumer.messages().await.expect("messages");
    let (mut readings, mut events) = (Vec::new(), 0);
    for _ in 0..total {
        let Ok(Some(Ok(m))) = tokio::time::timeout(Duration::from_secs(5), messages.next()).await
        else {
            break;
        };
        if m.subject.starts_with("edge.site-a.telemetry.") {
            readings.push(String::from_utf8_lossy(&m.payload).into_owned());
        } else {
            events += 1;
        }
    }
    (readings, events)
}

/// POSTs binary-mode CloudEvent number `i`.
fn post_event(addr: &str, i: usize) -> std::io::Result<(u16, String)> {
    http(
        addr,
        "POST",
        "/",
        &[
            ("ce-specversion", "1.0"),
            ("ce-id", &format!("demo-{i}")),
            ("ce-source", "/edge/demo"),
            ("ce-type", "edge.demo.reading"),
            ("content-type", "application/json"),
        ],
        &format!("{{\"n\":{i}}}"),
    )
}
