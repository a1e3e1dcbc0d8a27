//! Operator scale benchmark (`cargo bench -p edgewire-e2e --bench scale`; `make bench` runs it): the
//! `edgewire-operator` that ships (the `dist` profile the images are built with) as a host process under the
//! chart's ServiceAccount, on the real control plane the e2e harness starts (etcd, kube-apiserver,
//! kube-controller-manager, kube-scheduler, kwok; the chart installed with helm), with every Edgewire resource
//! applied at once.
//!
//! 1. Unrelated Secrets (`--unrelated-secrets`, 5,000; 2 KiB each, in a namespace of their own) and the Secrets
//!    the resources reference exist before the operator starts; its memory once its watches are up is the
//!    "idle with N unrelated Secrets" figure.
//! 2. `--eventbrokers` EventBrokers (the `nats-external` sample, one publisher replica), `--mqttbrokers`
//!    builtin MqttBrokers (the `mqttbroker-builtin` sample: three users, one generated password, a 1 Gi
//!    persistence claim) and `--bridgelinks` BridgeLinks (the `bridgelink-mqtt-to-mqtt` sample, a 1 Gi spool
//!    claim) over `--namespaces` namespaces, all applied at once (server-side apply, 32 in flight). kwok makes
//!    the pods Ready; the controller-manager provisions hostPath volumes for the claims. The bench plays the
//!    bridge agents: it applies `status.runtime` (both sides connected) to every BridgeLink under the agent's
//!    field manager, and again every 20 s as a real agent does, so the operator can call them Ready.
//! 3. Time until every resource is Ready (condition `Ready=True` at its current generation), the operator's
//!    peak RSS (`VmHWM`; the largest sample is also split into anonymous and file-backed pages), and its API
//!    requests by verb and resource from the kube-apiserver's audit log (every request of the chart's
//!    ServiceAccount), per resource.
//! 4. An idle window (`--idle-seconds`, 600: two of the operator's 300 s resyncs): the operator's writes
//!    (create, update, patch, delete) in it, Lease renewals counted apart.
//!
//! 5. The floor, the reference of the same run: the children the operator created (ServiceAccounts, Roles,
//!    RoleBindings, Secrets, Services, StatefulSets, Deployments), copied into namespaces `floor-NN` and applied
//!    straight by the bench (32 in flight) with the operator stopped, until every copied workload's pods are
//!    ready: what the control plane alone takes for them on this machine. The time to Ready is also printed
//!    over it. The first set stays in place (idle) meanwhile.
//!
//! Aims (issue 17): ≤ 64 MiB RSS and ≤ 60 s to Ready for 1,000 + 1,000 + 200 resources; zero writes while idle.
//! Each is printed as a ratio. Measures; asserts nothing about timing. Smaller runs while developing:
//! `-- --eventbrokers 50 --bridgelinks 50 --mqttbrokers 10 --unrelated-secrets 500 --idle-seconds 60`.
//! `--operator <path>` (or `$EDGEWIRE_OPERATOR_BIN`) runs another operator binary (e.g. an older build, to
//! compare); by default `dist/edgewire-operator` next to this bench's target dir.
//! `EDGEWIRE_E2E_CONTROL_PLANE_QPS=N` lets kube-controller-manager and kube-scheduler call the API server N
//! times a second instead of Kubernetes' defaults (20 and 50): with the defaults, the controller-manager's
//! own ReplicaSets, pods, volume claims and status updates for 2,200 resources take minutes on their own, and
//! the time to Ready measures them more than the operator.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use edgewire_api::{BridgeLink, EventBroker, MqttBroker};
use edgewire_e2e::kube::ControlPlane;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{Secret, Service, ServiceAccount};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::{ListParams, Patch, PatchParams};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

const MIB: f64 = 1024.0 * 1024.0;
const AIM_RSS_MIB: f64 = 64.0;
const AIM_READY_SECS: f64 = 60.0;
/// Requests in flight while the bench applies objects.
const IN_FLIGHT: usize = 32;
/// How often the bench's stand-in agents report.
const REPORT_EVERY: Duration = Duration::from_secs(20);
const MANAGER: &str = "edgewire-scale-bench";
const UNRELATED_NS: &str = "scale-unrelated";

struct Params {
    eventbrokers: usize,
    bridgelinks: usize,
    mqttbrokers: usize,
    unrelated_secrets: usize,
    namespaces: usize,
    idle: Duration,
    ready_timeout: Duration,
    operator: Option<PathBuf>,
}

impl Params {
    fn from_args() -> anyhow::Result<Self> {
        let mut p = Params {
            eventbrokers: 1000,
            bridgelinks: 1000,
            mqttbrokers: 200,
            unrelated_secrets: 5000,
            namespaces: 20,
            idle: Duration::from_secs(600),
            ready_timeout: Duration::from_secs(1800),
            operator: std::env::var_os("EDGEWIRE_OPERATOR_BIN")
                .filter(|v| !v.is_empty())
                .map(PathBuf::from),
        };
        let mut args = std::env::args().skip(1);
        while let Some(a) = args.next() {
            let (flag, inline) = match a.split_once('=') {
                Some((f, v)) => (f.to_string(), Some(v.to_string())),
                None => (a.clone(), None),
            };
            let known = [
                "--eventbrokers",
                "--bridgelinks",
                "--mqttbrokers",
                "--unrelated-secrets",
                "--namespaces",
                "--idle-seconds",
                "--ready-timeout-seconds",
                "--operator",
            ];
            if !known.contains(&flag.as_str()) {
                // `cargo bench` passes `--bench`; other harness flags mean nothing here.
                continue;
            }
            let value = match inline {
                Some(v) => v,
                None => args
                    .next()
                    .with_context(|| format!("{flag} needs a value"))?,
            };
            let n = || -> anyhow::Result<u64> {
                value
                    .parse()
                    .with_context(|| format!("{flag} {value}: not a number"))
            };
            match flag.as_str() {
                "--eventbrokers" => p.eventbrokers = n()? as usize,
                "--bridgelinks" => p.bridgelinks = n()? as usize,
                "--mqttbrokers" => p.mqttbrokers = n()? as usize,
                "--unrelated-secrets" => p.unrelated_secrets = n()? as usize,
                "--namespaces" => p.namespaces = (n()? as usize).max(1),
                "--idle-seconds" => p.idle = Duration::from_secs(n()?),
                "--ready-timeout-seconds" => p.ready_timeout = Duration::from_secs(n()?),
                _ => p.operator = Some(PathBuf::from(value)),
            }
        }
        Ok(p)
    }

    fn total(&self) -> usize {
        self.eventbrokers + self.bridgelinks + self.mqttbrokers
    }
}

/// The operator binary: `--operator`, `$EDGEWIRE_OPERATOR_BIN`, else the shipped build (`dist` profile, as in
/// the images) in this bench's target dir.
fn operator_binary(p: &Params) -> anyhow::Result<PathBuf> {
    let bin = match &p.operator {
        Some(b) => b.clone(),
        None => {
            let exe = std::env::current_exe()?;
            // <target>/release/deps/scale-<hash>
            let target = exe
                .parent()
                .and_then(Path::parent)
                .and_then(Path::parent)
                .context("the bench executable has no target dir")?;
            target.join("dist").join("edgewire-operator")
        }
    };
    if !bin.is_file() {
        bail!(
            "{} not found: build it with `cargo build --profile dist -p edgewire-operator --bin edgewire-operator` \
             (make bench does)",
            bin.display()
        );
    }
    Ok(bin)
}

// --- what is applied --------------------------------------------------------------------------------------

fn ns_of(p: &Params, i: usize) -> String {
    format!("scale-{:02}", i % p.namespaces)
}

fn secret(ns: &str, name: &str, data: &[(&str, &str)]) -> Value {
    let data: serde_json::Map<String, Value> = data
        .iter()
        .map(|(k, v)| ((*k).to_string(), Value::String((*v).to_string())))
        .collect();
    json!({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
           "metadata": {"name": name, "namespace": ns}, "stringData": data})
}

/// `config/samples/eventbroker-nats-external.yaml` with one publisher replica: its two Secrets and itself.
fn eventbroker(ns: &str, name: &str) -> (Vec<Value>, Value) {
    let user = format!("{name}-user");
    let ca = format!("{name}-ca");
    let secrets = vec![
        secret(
            ns,
            &user,
            &[
                ("username", "edgewire-publisher"),
                ("password", "example-nats-password-change-me"),
            ],
        ),
        secret(
            ns,
            &ca,
            &[(
                "ca.crt",
                "-----BEGIN CERTIFICATE-----\nEXAMPLE-ONLY-NOT-A-REAL-CERTIFICATE\n-----END CERTIFICATE-----\n",
            )],
        ),
    ];
    let eb = json!({
        "apiVersion": "edgewire.dev/v1alpha1", "kind": "EventBroker",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "coreName": format!("{name}-core"),
            "adapter": "nats",
            "nats": {
                "urls": ["tls://nats-1.example.com:4222", "tls://nats-2.example.com:4222", "tls://nats-3.example.com:4222"],
                "jetStream": {"enabled": true, "stream": "EDGE_EVENTS", "maxAge": "72h"},
                "auth": {"userPassword": {"secretName": user}},
                "tls": {"enabled": true, "caSecretRef": {"name": ca, "key": "ca.crt"}, "minVersion": "1.2"}
            },
            "publisher": {"replicas": 1}
        }
    });
    (secrets, eb)
}

/// `config/samples/mqttbroker-builtin.yaml`: its Secret and itself.
fn mqttbroker(ns: &str, name: &str) -> (Vec<Value>, Value) {
    let creds = format!("{name}-pool-a");
    let secrets = vec![secret(
        ns,
        &creds,
        &[("password", "example-pool-a-password")],
    )];
    let mb = json!({
        "apiVersion": "edgewire.dev/v1alpha1", "kind": "MqttBroker",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "type": "builtin",
            "topicNamespace": "edgewire",
            "builtin": {
                "logLevel": "error",
                "users": [
                    {"name": "pool-a", "password": {"name": creds, "key": "password"}},
                    {"name": "pool-b"},
                    {"name": "ops", "publish": ["{ns}/readonly/#"], "subscribe": ["{ns}/writeonly/#"]}
                ],
                "persistence": {"size": "1Gi"},
                "metrics": {"port": 9431}
            }
        }
    });
    (secrets, mb)
}

/// `config/samples/bridgelink-mqtt-to-mqtt.yaml`: its two Secrets and itself.
fn bridgelink(ns: &str, name: &str) -> (Vec<Value>, Value) {
    let edge = format!("{name}-edge-user");
    let cloud = format!("{name}-cloud-user");
    let secrets = vec![
        secret(
            ns,
            &edge,
            &[
                ("username", "bridge"),
                ("password", "example-edge-password-change-me"),
            ],
        ),
        secret(
            ns,
            &cloud,
            &[
                ("username", name),
                ("password", "example-cloud-password-change-me"),
            ],
        ),
    ];
    let bl = json!({
        "apiVersion": "edgewire.dev/v1alpha1", "kind": "BridgeLink",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "siteId": name,
            "edge": {"endpoint": {"protocol": "mqtt", "url": format!("mosquitto.{ns}.svc:1883"),
                                  "auth": {"userPassword": {"secretName": edge}}}},
            "cloud": {"endpoint": {"protocol": "mqtt", "url": "mqtt.cloud.example.com:8883",
                                   "auth": {"userPassword": {"secretName": cloud}}, "tls": {"enabled": true}}},
            "rules": [
                {"direction": "EdgeToCloud", "from": "local.telemetry.#", "to": format!("edge.{name}.telemetry.#"), "qos": 1},
                {"direction": "CloudToEdge", "from": format!("cloud.{name}.commands.#"), "to": "local.commands.#", "qos": 1}
            ],
            "spool": {"size": "1Gi", "maxBytes": "768Mi"}
        }
    });
    (secrets, bl)
}

/// A Secret the operator has nothing to do with: ~2 KiB, like a TLS key pair.
fn unrelated_secret(i: usize) -> Value {
    let filler: String = std::iter::repeat_n("0123456789abcdef", 64).collect();
    secret(
        UNRELATED_NS,
        &format!("unrelated-{i:05}"),
        &[("tls.crt", &filler), ("tls.key", &filler)],
    )
}

/// Server-side applies `objects` (each a JSON manifest with apiVersion, kind, metadata), IN_FLIGHT at a time.
async fn apply_all(client: &Client, objects: Vec<Value>) -> anyhow::Result<()> {
    futures::stream::iter(objects.into_iter().map(|obj| {
        let client = client.clone();
        async move { apply_one(&client, &obj).await }
    }))
    .buffer_unordered(IN_FLIGHT)
    .try_collect::<Vec<()>>()
    .await
    .map(drop)
}

async fn apply_one(client: &Client, obj: &Value) -> anyhow::Result<()> {
    let ns = obj["metadata"]["namespace"].as_str().unwrap_or_default();
    let name = obj["metadata"]["name"].as_str().unwrap_or_default();
    let pp = PatchParams::apply(MANAGER).force();
    let patch = Patch::Apply(obj);
    let kind = obj["kind"].as_str().unwrap_or_default();
    let res = match kind {
        "Secret" => patch_as::<Secret>(client, ns, name, &pp, &patch).await,
        "EventBroker" => patch_as::<EventBroker>(client, ns, name, &pp, &patch).await,
        "MqttBroker" => patch_as::<MqttBroker>(client, ns, name, &pp, &patch).await,
        "BridgeLink" => patch_as::<BridgeLink>(client, ns, name, &pp, &patch).await,
        "ServiceAccount" => patch_as::<ServiceAccount>(client, ns, name, &pp, &patch).await,
        "Role" => patch_as::<Role>(client, ns, name, &pp, &patch).await,
        "RoleBinding" => patch_as::<RoleBinding>(client, ns, name, &pp, &patch).await,
        "Service" => patch_as::<Service>(client, ns, name, &pp, &patch).await,
        "StatefulSet" => patch_as::<StatefulSet>(client, ns, name, &pp, &patch).await,
        "Deployment" => patch_as::<Deployment>(client, ns, name, &pp, &patch).await,
        other => bail!("the bench applies no {other}"),
    };
    res.with_context(|| format!("apply {kind} {ns}/{name}"))
}

async fn patch_as<K>(
    client: &Client,
    ns: &str,
    name: &str,
    pp: &PatchParams,
    patch: &Patch<&Value>,
) -> Result<(), kube::Error>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
{
    Api::<K>::namespaced(client.clone(), ns)
        .patch(name, pp, patch)
        .await
        .map(drop)
}

/// What a bridge agent reports when both sides are connected and the spool is empty, applied under the
/// agent's field manager (as `edgewire-agent bridge --report-status` does).
async fn report_runtime(client: &Client, ns: &str, name: &str) -> Result<(), kube::Error> {
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Runtime {
        spool_messages: u64,
        spool_bytes: u64,
        forwarded: u64,
        dropped: u64,
        edge_connected: bool,
        cloud_connected: bool,
        updated: String,
    }
    let now = k8s_openapi::jiff::Timestamp::now();
    let body = json!({
        "apiVersion": "edgewire.dev/v1alpha1", "kind": "BridgeLink",
        "metadata": {"name": name, "namespace": ns},
        "status": {"runtime": Runtime {
            spool_messages: 0, spool_bytes: 0, forwarded: 0, dropped: 0,
            edge_connected: true, cloud_connected: true,
            updated: format!("{:.0}", now),
        }}
    });
    Api::<BridgeLink>::namespaced(client.clone(), ns)
        .patch_status(
            name,
            &PatchParams::apply(edgewire_api::BRIDGE_FIELD_MANAGER).force(),
            &Patch::Apply(&body),
        )
        .await
        .map(drop)
}

// --- the floor: the same children without the operator ---------------------------------------------------

/// Namespace of the floor's copy of the children of namespace `ns`.
fn floor_ns(ns: &str) -> String {
    format!("floor-{}", ns.trim_start_matches("scale-"))
}

/// Every child of kind `K` the operator created, as a manifest for the floor: in its floor namespace, with
/// its labels, annotations and spec (or data, rules, subjects), without what the API server or the owner set
/// (uid, resourceVersion, owner references, status, a Service's cluster IPs).
async fn children_for_floor<K>(client: &Client) -> anyhow::Result<Vec<Value>>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Serialize + std::fmt::Debug,
{
    let selector = format!(
        "{}={}",
        edgewire_api::labels::MANAGED_BY,
        edgewire_api::labels::MANAGED_BY_VALUE
    );
    let list = Api::<K>::all(client.clone())
        .list(&ListParams::default().labels(&selector))
        .await?;
    list.items
        .iter()
        .map(|obj| {
            let mut v = serde_json::to_value(obj)?;
            let m = &v["metadata"];
            let ns = floor_ns(m["namespace"].as_str().unwrap_or_default());
            v["metadata"] = json!({
                "name": m["name"],
                "namespace": ns,
                "labels": m["labels"],
                "annotations": m.get("annotations").cloned().unwrap_or(json!({})),
            });
            v["apiVersion"] = json!(K::api_version(&()));
            v["kind"] = json!(K::kind(&()));
            if let Some(o) = v.as_object_mut() {
                o.remove("status");
            }
            // A Service's allocated cluster IP is allocated again; a headless one stays headless.
            if let Some(spec) = v.get_mut("spec").and_then(Value::as_object_mut)
                && spec.get("clusterIP").and_then(Value::as_str) != Some("None")
            {
                spec.remove("clusterIP");
                spec.remove("clusterIPs");
            }
            // A RoleBinding's subject is the ServiceAccount of the same namespace.
            if let Some(subjects) = v.get_mut("subjects").and_then(Value::as_array_mut) {
                for s in subjects {
                    s["namespace"] = json!(ns);
                }
            }
            Ok(v)
        })
        .collect()
}

/// Deployments and StatefulSets in the floor's namespaces whose pods are all ready at their generation.
fn floor_ready(deployments: &Store<Deployment>, statefulsets: &Store<StatefulSet>) -> usize {
    /// Objects of `store` in a floor namespace whose pods are ready at their generation, given per object
    /// (observed generation, replicas, ready replicas).
    fn done<K: Resource + Clone>(
        store: &Store<K>,
        row: impl Fn(&K) -> (Option<i64>, Option<i32>, Option<i32>),
    ) -> usize
    where
        K::DynamicType: std::hash::Hash + Eq + Clone,
    {
        store
            .state()
            .iter()
            .filter(|obj| {
                let meta = obj.meta();
                let (observed, replicas, ready) = row(obj);
                meta.namespace
                    .as_deref()
                    .is_some_and(|n| n.starts_with("floor-"))
                    && meta.generation.is_some()
                    && observed == meta.generation
                    && ready.unwrap_or(0) >= replicas.unwrap_or(1)
            })
            .count()
    }
    done(deployments, |d| {
        let st = d.status.as_ref();
        (
            st.and_then(|s| s.observed_generation),
            d.spec.as_ref().and_then(|s| s.replicas),
            st.and_then(|s| s.ready_replicas),
        )
    }) + done(statefulsets, |s| {
        let st = s.status.as_ref();
        (
            st.and_then(|s| s.observed_generation),
            s.spec.as_ref().and_then(|s| s.replicas),
            st.and_then(|s| s.ready_replicas),
        )
    })
}

/// The floor of the time to Ready on this control plane: the children the operator created, copied into
/// namespaces of their own and applied straight (32 in flight, the operator stopped), until every copied
/// Deployment and StatefulSet has its pods ready. Returns (objects, workloads, seconds).
async fn floor(
    client: &Client,
    cp: &ControlPlane,
    p: &Params,
) -> anyhow::Result<(usize, usize, Duration)> {
    // Dependency order, as the operator applies them: what the workloads reference first.
    let mut objects = children_for_floor::<ServiceAccount>(client).await?;
    objects.extend(children_for_floor::<Role>(client).await?);
    objects.extend(children_for_floor::<RoleBinding>(client).await?);
    objects.extend(children_for_floor::<Secret>(client).await?);
    objects.extend(children_for_floor::<Service>(client).await?);
    let first_workload = objects.len();
    objects.extend(children_for_floor::<StatefulSet>(client).await?);
    objects.extend(children_for_floor::<Deployment>(client).await?);
    let workloads = objects.len() - first_workload;
    for i in 0..p.namespaces {
        cp.create_restricted_namespace(&floor_ns(&ns_of(p, i)))?;
    }
    let deployments = watch_all::<Deployment>(client);
    let statefulsets = watch_all::<StatefulSet>(client);
    let total = objects.len();
    let t0 = Instant::now();
    apply_all(client, objects).await?;
    let mut last_print = Instant::now();
    loop {
        let ready = floor_ready(&deployments, &statefulsets);
        if ready >= workloads {
            return Ok((total, workloads, t0.elapsed()));
        }
        if last_print.elapsed() >= Duration::from_secs(10) {
            last_print = Instant::now();
            println!(
                "  {:>5.0} s: {ready}/{workloads} workloads ready; load {}",
                t0.elapsed().as_secs_f64(),
                load()
            );
        }
        if t0.elapsed() > p.ready_timeout {
            bail!(
                "floor: {ready} of {workloads} workloads ready within {:?}",
                p.ready_timeout
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

// --- readiness --------------------------------------------------------------------------------------------

fn ready(generation: Option<i64>, observed: Option<i64>, conditions: &[Condition]) -> bool {
    generation.is_some()
        && observed == generation
        && conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True")
}

/// A store of every object of kind `K` (the admin's watch), kept up to date in the background.
fn watch_all<K>(client: &Client) -> Store<K>
where
    K: Resource<DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let (reader, writer) = reflector::store::<K>();
    let stream = watcher(Api::<K>::all(client.clone()), watcher::Config::default())
        .default_backoff()
        .reflect(writer)
        .for_each(|_| std::future::ready(()));
    tokio::spawn(stream);
    reader
}

struct Tracked {
    eb: Store<EventBroker>,
    mb: Store<MqttBroker>,
    bl: Store<BridgeLink>,
}

impl Tracked {
    /// Ready (EventBrokers, MqttBrokers, BridgeLinks).
    fn ready(&self) -> (usize, usize, usize) {
        let eb = self
            .eb
            .state()
            .iter()
            .filter(|o| {
                let s = o.status.as_ref();
                ready(
                    o.metadata.generation,
                    s.and_then(|s| s.observed_generation),
                    s.map(|s| &s.conditions[..]).unwrap_or(&[]),
                )
            })
            .count();
        let mb = self
            .mb
            .state()
            .iter()
            .filter(|o| {
                let s = o.status.as_ref();
                ready(
                    o.metadata.generation,
                    s.and_then(|s| s.observed_generation),
                    s.map(|s| &s.conditions[..]).unwrap_or(&[]),
                )
            })
            .count();
        let bl = self
            .bl
            .state()
            .iter()
            .filter(|o| {
                let s = o.status.as_ref();
                ready(
                    o.metadata.generation,
                    s.and_then(|s| s.observed_generation),
                    s.map(|s| &s.conditions[..]).unwrap_or(&[]),
                )
            })
            .count();
        (eb, mb, bl)
    }

    /// Why some BridgeLink is not Ready (for the progress line), if one is not.
    fn not_ready_example(&self) -> Option<String> {
        let summarize = |name: String, conds: &[Condition]| {
            let c = conds.iter().find(|c| c.type_ == "Ready");
            format!(
                "{name}: Ready={} {}",
                c.map(|c| c.status.as_str()).unwrap_or("absent"),
                c.map(|c| c.message.as_str()).unwrap_or("")
            )
        };
        for o in self.bl.state() {
            let s = o.status.as_ref();
            let conds = s.map(|s| &s.conditions[..]).unwrap_or(&[]);
            if !ready(
                o.metadata.generation,
                s.and_then(|s| s.observed_generation),
                conds,
            ) {
                return Some(summarize(
                    format!("BridgeLink {}", o.metadata.name.clone().unwrap_or_default()),
                    conds,
                ));
            }
        }
        for o in self.mb.state() {
            let s = o.status.as_ref();
            let conds = s.map(|s| &s.conditions[..]).unwrap_or(&[]);
            if !ready(
                o.metadata.generation,
                s.and_then(|s| s.observed_generation),
                conds,
            ) {
                return Some(summarize(
                    format!("MqttBroker {}", o.metadata.name.clone().unwrap_or_default()),
                    conds,
                ));
            }
        }
        for o in self.eb.state() {
            let s = o.status.as_ref();
            let conds = s.map(|s| &s.conditions[..]).unwrap_or(&[]);
            if !ready(
                o.metadata.generation,
                s.and_then(|s| s.observed_generation),
                conds,
            ) {
                return Some(summarize(
                    format!(
                        "EventBroker {}",
                        o.metadata.name.clone().unwrap_or_default()
                    ),
                    conds,
                ));
            }
        }
        None
    }
}

// --- the operator process ---------------------------------------------------------------------------------

struct OperatorProc {
    child: Child,
    log: PathBuf,
    addr: String,
}

impl OperatorProc {
    fn start(cp: &ControlPlane, bin: &Path) -> anyhow::Result<Self> {
        let log = cp.dir().join("tests").join("scale-operator.log");
        let out = File::create(&log)?;
        let mut cmd = Command::new(bin);
        cmd.args([
            "run",
            "--http-addr",
            "127.0.0.1:0",
            "--lease-namespace",
            cp.release_namespace(),
            "--lease-name",
            "edgewire-operator-scale",
            "--identity",
            "scale-bench",
        ])
        .env("KUBECONFIG", cp.operator_kubeconfig()?)
        .env("EDGEWIRE_LOG_FORMAT", "json")
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out);
        cp.adopt(&mut cmd);
        let child = cmd
            .spawn()
            .with_context(|| format!("start {}", bin.display()))?;
        let mut op = OperatorProc {
            child,
            log,
            addr: String::new(),
        };
        let start = Instant::now();
        loop {
            if let Some(a) = op.listen_addr() {
                op.addr = a;
                return Ok(op);
            }
            if let Some(status) = op.child.try_wait()? {
                bail!("the operator exited at start-up ({status}):\n{}", op.tail());
            }
            if start.elapsed() > Duration::from_secs(60) {
                bail!(
                    "the operator did not serve HTTP within 60 s:\n{}",
                    op.tail()
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn listen_addr(&self) -> Option<String> {
        let text = std::fs::read_to_string(&self.log).ok()?;
        text.lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find_map(|v| {
                let serving = v["message"]
                    .as_str()
                    .is_some_and(|m| m.starts_with("serving"));
                v["addr"].as_str().filter(|_| serving).map(str::to_string)
            })
    }

    fn tail(&self) -> String {
        edgewire_e2e::kube::tail(&self.log, 30)
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// (VmRSS, VmHWM) in bytes.
    fn memory(&self) -> (u64, u64) {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        let field = |name| status_bytes(&status, name).unwrap_or(0);
        (field("VmRSS:"), field("VmHWM:"))
    }

    fn metrics(&self) -> String {
        edgewire_e2e_http_get(&self.addr, "/metrics").unwrap_or_default()
    }

    /// A sample of `/metrics` (name with labels, as exposed).
    fn metric(&self, series: &str) -> Option<f64> {
        self.metrics().lines().find_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            (name == series).then(|| value.parse().ok()).flatten()
        })
    }

    fn stop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status();
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(30) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for OperatorProc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn edgewire_e2e_http_get(addr: &str, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut raw = String::new();
    s.read_to_string(&mut raw).ok()?;
    raw.split_once("\r\n\r\n").map(|(_, b)| b.to_string())
}

/// A `kB` field of `/proc/<pid>/status` (`name` with its colon, e.g. `VmRSS:`), in bytes.
fn status_bytes(status: &str, name: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(name))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
}

/// Samples the operator's RSS every second and keeps the largest sample with its parts: anonymous memory (heap,
/// stacks) and file-backed pages (the binary's code and read-only data, which the kernel may drop and read again).
struct RssSampler {
    max: Arc<Mutex<RssSample>>,
    stop: Arc<AtomicBool>,
}

/// One sample of `/proc/<pid>/status`, in bytes.
#[derive(Clone, Copy, Debug, Default)]
struct RssSample {
    rss: u64,
    anon: u64,
    file: u64,
}

impl RssSample {
    fn read(pid: u32) -> Option<Self> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let field = |name| status_bytes(&status, name);
        Some(Self {
            rss: field("VmRSS:")?,
            anon: field("RssAnon:").unwrap_or(0),
            file: field("RssFile:").unwrap_or(0),
        })
    }
}

impl RssSampler {
    fn start(pid: u32) -> Self {
        let max = Arc::new(Mutex::new(RssSample::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (m, s) = (max.clone(), stop.clone());
        std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                if let Some(now) = RssSample::read(pid) {
                    let mut max = m.lock().unwrap_or_else(|e| e.into_inner());
                    if now.rss > max.rss {
                        *max = now;
                    }
                }
                std::thread::sleep(Duration::from_secs(1));
            }
        });
        RssSampler { max, stop }
    }

    fn max(&self) -> RssSample {
        *self.max.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for RssSampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

// --- the audit log ----------------------------------------------------------------------------------------

/// Requests per (verb, resource[/subresource]).
type Counts = BTreeMap<(String, String), u64>;

/// The operator's requests (the chart's ServiceAccount) in the audit log from byte `from` to its end:
/// count per (verb, resource[/subresource]), and the end offset.
fn audit_counts(log: &Path, user: &str, from: u64) -> anyhow::Result<(Counts, u64)> {
    let mut f = File::open(log).with_context(|| format!("open {}", log.display()))?;
    f.seek(SeekFrom::Start(from))?;
    let mut r = BufReader::new(f);
    let mut counts = BTreeMap::new();
    let mut pos = from;
    let mut line = String::new();
    loop {
        line.clear();
        let n = r.read_line(&mut line)?;
        if n == 0 || !line.ends_with('\n') {
            break;
        }
        pos += n as u64;
        let Ok(v) = serde_json::from_str::<Value>(&line) else {
            continue;
        };
        if v["user"]["username"] != user {
            continue;
        }
        let verb = v["verb"].as_str().unwrap_or("");
        let stage = v["stage"].as_str().unwrap_or("");
        // A watch is counted when it starts (it completes when it ends); everything else when it completes.
        let counted = if verb == "watch" {
            stage == "ResponseStarted"
        } else {
            stage == "ResponseComplete"
        };
        if !counted {
            continue;
        }
        let o = &v["objectRef"];
        let mut resource = o["resource"].as_str().unwrap_or("?").to_string();
        if let Some(sub) = o["subresource"].as_str() {
            resource = format!("{resource}/{sub}");
        }
        *counts.entry((verb.to_string(), resource)).or_insert(0) += 1;
    }
    Ok((counts, pos))
}

/// Watches of every Secret (no label selector) the operator has started since byte `from` of the audit log.
fn unselected_secret_watches(log: &Path, user: &str, from: u64) -> anyhow::Result<usize> {
    let mut f = File::open(log).with_context(|| format!("open {}", log.display()))?;
    f.seek(SeekFrom::Start(from))?;
    let mut n = 0;
    for line in BufReader::new(f).lines() {
        let Ok(v) = serde_json::from_str::<Value>(&line?) else {
            continue;
        };
        let uri = v["requestURI"].as_str().unwrap_or("");
        if v["user"]["username"] == user
            && v["verb"] == "watch"
            && v["stage"] == "ResponseStarted"
            && v["objectRef"]["resource"] == "secrets"
            && !uri.contains("labelSelector")
        {
            n += 1;
        }
    }
    Ok(n)
}

fn file_len(p: &Path) -> u64 {
    std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
}

const WRITES: [&str; 5] = ["create", "update", "patch", "delete", "deletecollection"];

fn by_verb(counts: &BTreeMap<(String, String), u64>) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for ((verb, _), n) in counts {
        *out.entry(verb.clone()).or_insert(0) += n;
    }
    out
}

fn print_counts(counts: &BTreeMap<(String, String), u64>, per: usize) {
    let per = per.max(1) as f64;
    let total: u64 = counts.values().sum();
    println!(
        "  all verbs: {total} requests, {:.2} per resource",
        total as f64 / per
    );
    for (verb, n) in by_verb(counts) {
        println!("  {verb:<8} {n:>7}  {:>6.2} per resource", n as f64 / per);
    }
    println!("  by verb and resource:");
    for ((verb, res), n) in counts {
        println!("    {verb:<8} {res:<40} {n:>7}  {:>6.2}", *n as f64 / per);
    }
}

fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn mib(b: u64) -> f64 {
    b as f64 / MIB
}

// --- the run ----------------------------------------------------------------------------------------------

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // Both rustls providers are compiled in (a workspace build): pick ring, as the operator does.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let p = Params::from_args()?;
    let bin = operator_binary(&p)?;
    println!(
        "scale bench: {} EventBrokers, {} BridgeLinks, {} MqttBrokers over {} namespaces; {} unrelated Secrets; \
         idle window {} s; operator {}",
        p.eventbrokers,
        p.bridgelinks,
        p.mqttbrokers,
        p.namespaces,
        p.unrelated_secrets,
        p.idle.as_secs(),
        bin.display()
    );
    println!(
        "control plane: kube-controller-manager and kube-scheduler at {} API requests/s (${})",
        std::env::var(edgewire_e2e::kube::CONTROL_PLANE_QPS_ENV)
            .ok()
            .filter(|v| !v.trim().is_empty())
            .unwrap_or_else(|| "the default 20 and 50".into()),
        edgewire_e2e::kube::CONTROL_PLANE_QPS_ENV
    );
    println!("load before start: {}", load());
    let cp = tokio::task::spawn_blocking(ControlPlane::start)
        .await?
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    println!("control plane in {}: {}", cp.dir().display(), cp.startup());
    let audit = cp
        .audit_log()
        .context("the bench needs the control plane it starts (unset KUBECONFIG)")?;
    let user = cp.chart_user();
    let kc = kube::config::Kubeconfig::read_from(cp.admin_kubeconfig())?;
    let config =
        kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
            .await?;
    let client = Client::try_from(config)?;

    // Namespaces and every Secret first: they are there when the operator starts.
    let t = Instant::now();
    for i in 0..p.namespaces {
        cp.create_restricted_namespace(&format!("scale-{i:02}"))?;
    }
    cp.create_restricted_namespace(UNRELATED_NS)?;
    let mut secrets = Vec::new();
    let (mut ebs, mut mbs, mut bls) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..p.eventbrokers {
        let (s, o) = eventbroker(&ns_of(&p, i), &format!("eb-{i:04}"));
        secrets.extend(s);
        ebs.push(o);
    }
    for i in 0..p.mqttbrokers {
        let (s, o) = mqttbroker(&ns_of(&p, i), &format!("mb-{i:04}"));
        secrets.extend(s);
        mbs.push(o);
    }
    for i in 0..p.bridgelinks {
        let (s, o) = bridgelink(&ns_of(&p, i), &format!("bl-{i:04}"));
        secrets.extend(s);
        bls.push(o);
    }
    let referenced = secrets.len();
    secrets.extend((0..p.unrelated_secrets).map(unrelated_secret));
    apply_all(&client, secrets).await?;
    println!(
        "{referenced} referenced and {} unrelated Secrets in {:.1} s",
        p.unrelated_secrets,
        t.elapsed().as_secs_f64()
    );

    // The operator, idle: every watch up, nothing to reconcile.
    let audit_start = file_len(&audit);
    let mut op = OperatorProc::start(&cp, &bin)?;
    let sampler = RssSampler::start(op.pid());
    let t = Instant::now();
    loop {
        let (counts, _) = audit_counts(&audit, &user, audit_start)?;
        // One per controller: the reverse index from Secrets to the resources that reference them.
        let secret_watches = unselected_secret_watches(&audit, &user, audit_start)?;
        let crd_watches = ["eventbrokers", "mqttbrokers", "bridgelinks"]
            .iter()
            .filter(|r| counts.contains_key(&("watch".to_string(), r.to_string())))
            .count();
        if secret_watches >= 3 && crd_watches == 3 {
            break;
        }
        if t.elapsed() > Duration::from_secs(300) {
            bail!(
                "the operator's watches did not start within 300 s (watch requests so far: {:?})\n{}",
                counts
                    .iter()
                    .filter(|((v, _), _)| v == "watch")
                    .collect::<Vec<_>>(),
                op.tail()
            );
        }
        if let Ok(Some(status)) = op.child.try_wait() {
            bail!("the operator exited ({status}):\n{}", op.tail());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let (idle_rss, idle_hwm) = op.memory();
    println!(
        "operator idle with {} unrelated + {referenced} referenced Secrets, no resources: RSS {:.1} MiB, peak {:.1} MiB \
         (watches up {:.1} s after start)",
        p.unrelated_secrets,
        mib(idle_rss),
        mib(idle_hwm),
        t.elapsed().as_secs_f64()
    );

    // Everything at once.
    let tracked = Tracked {
        eb: watch_all::<EventBroker>(&client),
        mb: watch_all::<MqttBroker>(&client),
        bl: watch_all::<BridgeLink>(&client),
    };
    let bl_names: Vec<(String, String)> = bls
        .iter()
        .map(|b| {
            (
                b["metadata"]["namespace"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                b["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            )
        })
        .collect();
    let audit_apply = file_len(&audit);
    let t0 = Instant::now();
    let mut all = ebs;
    all.extend(mbs);
    all.extend(bls);
    apply_all(&client, all).await?;
    let applied = t0.elapsed();
    println!(
        "applied {} resources in {:.1} s",
        p.total(),
        applied.as_secs_f64()
    );

    // The stand-in bridge agents.
    let agents_stop = Arc::new(AtomicBool::new(false));
    let agents = {
        let (client, stop) = (client.clone(), agents_stop.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let round = Instant::now();
                let reports =
                    futures::stream::iter(bl_names.clone().into_iter().map(|(ns, name)| {
                        let client = client.clone();
                        async move { report_runtime(&client, &ns, &name).await }
                    }))
                    .buffer_unordered(IN_FLIGHT)
                    .filter_map(|r| std::future::ready(r.err()))
                    .collect::<Vec<_>>()
                    .await;
                if let Some(e) = reports.first() {
                    eprintln!(
                        "stand-in agents: {} report(s) failed, e.g. {e}",
                        reports.len()
                    );
                }
                let left = REPORT_EVERY.saturating_sub(round.elapsed());
                tokio::time::sleep(left).await;
            }
        })
    };

    // Until every resource is Ready.
    let want = (p.eventbrokers, p.mqttbrokers, p.bridgelinks);
    let mut kind_ready: [Option<Duration>; 3] = [None; 3];
    let mut last_print = Instant::now();
    let ready_at = loop {
        let now = tracked.ready();
        for (i, (have, want)) in [(now.0, want.0), (now.1, want.1), (now.2, want.2)]
            .into_iter()
            .enumerate()
        {
            if have >= want && kind_ready[i].is_none() {
                kind_ready[i] = Some(t0.elapsed());
            }
        }
        if now.0 >= want.0 && now.1 >= want.1 && now.2 >= want.2 {
            break t0.elapsed();
        }
        if last_print.elapsed() >= Duration::from_secs(10) {
            last_print = Instant::now();
            let (rss, _) = op.memory();
            println!(
                "  {:>5.0} s: Ready {}/{} EventBrokers, {}/{} MqttBrokers, {}/{} BridgeLinks; operator RSS {:.1} MiB; load {}{}",
                t0.elapsed().as_secs_f64(),
                now.0,
                want.0,
                now.1,
                want.1,
                now.2,
                want.2,
                mib(rss),
                load(),
                tracked
                    .not_ready_example()
                    .map(|e| format!("; e.g. {e}"))
                    .unwrap_or_default()
            );
        }
        if t0.elapsed() > p.ready_timeout {
            bail!(
                "not every resource Ready within {:?}: {now:?} of {want:?}\n{}",
                p.ready_timeout,
                op.tail()
            );
        }
        if let Ok(Some(status)) = op.child.try_wait() {
            bail!("the operator exited ({status}):\n{}", op.tail());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let (busy_counts, audit_ready) = audit_counts(&audit, &user, audit_apply)?;
    let (_, hwm_ready) = op.memory();
    let reconciles: Vec<(String, f64)> = ["eventbroker", "mqttbroker", "bridgelink"]
        .iter()
        .map(|k| {
            (
                k.to_string(),
                op.metric(&format!(
                    "edgewire_operator_reconciles_total{{kind=\"{k}\"}}"
                ))
                .unwrap_or(0.0),
            )
        })
        .collect();
    println!(
        "all {} Ready {:.1} s after the apply started (EventBrokers {:.1} s, MqttBrokers {:.1} s, BridgeLinks {:.1} s); load {}",
        p.total(),
        ready_at.as_secs_f64(),
        kind_ready[0].unwrap_or_default().as_secs_f64(),
        kind_ready[1].unwrap_or_default().as_secs_f64(),
        kind_ready[2].unwrap_or_default().as_secs_f64(),
        load()
    );
    println!(
        "reconciles until then: {}",
        reconciles
            .iter()
            .map(|(k, n)| format!("{k} {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "operator API requests from the apply until all Ready (audit log, {}), per resource = / {}:",
        user,
        p.total()
    );
    print_counts(&busy_counts, p.total());

    // Idle.
    println!(
        "idle window: {} s (the stand-in agents keep reporting every {} s)",
        p.idle.as_secs(),
        REPORT_EVERY.as_secs()
    );
    let idle_start = Instant::now();
    while idle_start.elapsed() < p.idle {
        tokio::time::sleep(Duration::from_secs(1).min(p.idle.saturating_sub(idle_start.elapsed())))
            .await;
        if let Ok(Some(status)) = op.child.try_wait() {
            bail!("the operator exited ({status}):\n{}", op.tail());
        }
    }
    let (idle_counts, _) = audit_counts(&audit, &user, audit_ready)?;
    let (rss_end, hwm_end) = op.memory();
    let sampled = sampler.max();
    let sampled_max = sampled.rss;
    agents_stop.store(true, Ordering::Relaxed);
    agents.abort();
    let still_ready = tracked.ready();
    let is_lease = |res: &str| res.starts_with("leases");
    let idle_writes: BTreeMap<(String, String), u64> = idle_counts
        .iter()
        .filter(|((verb, res), _)| WRITES.contains(&verb.as_str()) && !is_lease(res))
        .map(|(k, v)| (k.clone(), *v))
        .collect();
    let lease_writes: u64 = idle_counts
        .iter()
        .filter(|((verb, res), _)| WRITES.contains(&verb.as_str()) && is_lease(res))
        .map(|(_, v)| v)
        .sum();
    let idle_total: u64 = idle_writes.values().sum();
    println!(
        "operator requests in the idle window ({} s), per resource = / {}:",
        p.idle.as_secs(),
        p.total()
    );
    print_counts(&idle_counts, p.total());
    println!(
        "idle writes (create/update/patch/delete, Leases aside): {idle_total} {:?}; Lease renewals: {lease_writes}; \
         still Ready after it: {still_ready:?}",
        idle_writes
    );
    op.stop();
    drop(sampler);

    println!(
        "floor: the children the operator created, copied into namespaces floor-NN and applied straight with the \
         operator stopped ({IN_FLIGHT} in flight), until every copied workload's pods are ready (the first set stays \
         in place, idle)"
    );
    let (floor_objects, floor_workloads, floor_time) = floor(&client, &cp, &p).await?;
    println!(
        "floor: {floor_objects} objects, {floor_workloads} workloads ready {:.1} s after the apply started; load {}",
        floor_time.as_secs_f64(),
        load()
    );

    let secs = ready_at.as_secs_f64();
    let peak = hwm_end.max(hwm_ready).max(sampled_max);
    println!();
    println!(
        "summary ({} resources, {} unrelated Secrets):",
        p.total(),
        p.unrelated_secrets
    );
    let floor_secs = floor_time.as_secs_f64();
    println!(
        "  time to all Ready  {secs:>8.1} s   {:.2}× the aim of {AIM_READY_SECS} s; {:.2}× the floor \
         (the same {floor_workloads} workloads' pods ready without the operator: {floor_secs:.1} s, {:.2}× the aim)",
        secs / AIM_READY_SECS,
        secs / floor_secs.max(f64::EPSILON),
        floor_secs / AIM_READY_SECS
    );
    println!(
        "  operator peak RSS  {:>8.1} MiB {:.2}× the aim of {AIM_RSS_MIB} MiB (idle with the Secrets only: {:.1} MiB; \
         at the end: {:.1} MiB)",
        mib(peak),
        mib(peak) / AIM_RSS_MIB,
        mib(idle_rss),
        mib(rss_end)
    );
    println!(
        "                       largest sample {:.1} MiB: anonymous {:.1} MiB (heap, stacks), file-backed {:.1} MiB \
         (the binary's code and read-only data)",
        mib(sampled.rss),
        mib(sampled.anon),
        mib(sampled.file)
    );
    let busy_total: u64 = busy_counts.values().sum();
    println!(
        "  requests per resource until Ready: {:.2} ({})",
        busy_total as f64 / p.total().max(1) as f64,
        by_verb(&busy_counts)
            .iter()
            .map(|(v, n)| format!("{v} {:.2}", *n as f64 / p.total().max(1) as f64))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "  writes while idle for {} s: {idle_total} (aim 0){}",
        p.idle.as_secs(),
        if idle_total == 0 {
            ""
        } else {
            " — see above"
        }
    );
    println!("  load at the end: {}", load());
    drop(cp);
    Ok(())
}
