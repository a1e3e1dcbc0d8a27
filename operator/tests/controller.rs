//! Controller scenario tests: `reconcile` against a mocked API service, asserting the requests it makes.

mod support;

use edgewire_api::testing::NAMESPACE;
use edgewire_api::*;
use edgewire_operator::cache::Children;
use edgewire_operator::context::Context;
use edgewire_operator::controller::event_broker::reconcile;
use edgewire_operator::rollout::Workload;
use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::core::v1::{Service, ServiceAccount};
use kube::api::ObjectMeta;
use kube::core::PartialObjectMeta;
use kube::runtime::watcher::Event;
use serde_json::Value;
use std::sync::Arc;
use support::ctx;
use support::mock_api::{MockApi, Recorded};

const NS_PATH: &str = "/namespaces/factory";

fn secret(name: &str, key: &str, value: &str) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some(NAMESPACE.into()),
            ..Default::default()
        },
        data: Some([(key.to_string(), ByteString(value.as_bytes().to_vec()))].into()),
        ..Default::default()
    }
}

/// The NATS EventBroker of the scenarios: JetStream broker deployed by the operator, token auth.
fn nats_deployed() -> EventBroker {
    EventBroker::test("events")
        .adapter_nats()
        .with_token("nats-creds")
        .with_jetstream()
        .deploy(BrokerKind::Nats)
}

fn writes(reqs: &[Recorded]) -> Vec<&Recorded> {
    reqs.iter().filter(|r| r.method != "GET").collect()
}

fn applied<'a>(reqs: &'a [Recorded], path_suffix: &str) -> &'a Value {
    reqs.iter()
        .find(|r| r.method == "PATCH" && r.path.ends_with(path_suffix))
        .and_then(|r| r.body.as_ref())
        .unwrap_or_else(|| {
            panic!(
                "no apply of {path_suffix} in {:#?}",
                reqs.iter().map(|r| r.line()).collect::<Vec<_>>()
            )
        })
}

fn hash_annotation(obj: &Value) -> String {
    obj["spec"]["template"]["metadata"]["annotations"][CREDENTIALS_HASH_ANNOTATION]
        .as_str()
        .unwrap()
        .to_string()
}

/// Reconciles `eb` as stored in the mock (status included, as the controller would see it).
async fn run(mock: &MockApi, client: &kube::Client, eb: &EventBroker) -> Vec<Recorded> {
    let path = support::mock_api::object_path(&serde_json::to_value(eb).unwrap());
    let stored: EventBroker = serde_json::from_value(mock.object(&path).unwrap()).unwrap();
    mock.clear_requests();
    reconcile(Arc::new(stored), ctx(client.clone()))
        .await
        .expect("reconcile succeeds");
    mock.requests()
}

#[tokio::test]
async fn first_reconcile_of_a_nats_event_broker_with_deploy_broker() {
    let (client, mock) = MockApi::start();
    let eb = nats_deployed();
    mock.insert(&eb);
    mock.insert(&secret("nats-creds", "token", "s3cr3t-token"));
    let reqs = run(&mock, &client, &eb).await;

    // Reads the referenced Secret first.
    assert_eq!(
        reqs[0].line(),
        format!("GET /api/v1{NS_PATH}/secrets/nats-creds")
    );
    // Applies every child with server-side apply, in dependency order, under one field manager.
    let applies: Vec<String> = reqs
        .iter()
        .filter(|r| r.method == "PATCH")
        .map(|r| r.line())
        .collect();
    assert_eq!(
        applies,
        [
            format!("PATCH /api/v1{NS_PATH}/serviceaccounts/events-publisher"),
            format!("PATCH /api/v1{NS_PATH}/secrets/events-nats-config"),
            format!("PATCH /api/v1{NS_PATH}/services/events-nats-headless"),
            format!("PATCH /api/v1{NS_PATH}/services/events-nats"),
            format!("PATCH /apis/apps/v1{NS_PATH}/statefulsets/events-nats"),
            format!("PATCH /api/v1{NS_PATH}/services/events-publisher"),
            format!("PATCH /apis/apps/v1{NS_PATH}/deployments/events-publisher"),
            format!("PATCH /apis/edgewire.dev/v1alpha1{NS_PATH}/eventbrokers/events/status"),
        ]
    );
    for r in reqs.iter().filter(|r| r.method == "PATCH") {
        assert!(
            r.query.contains("fieldManager=edgewire-operator"),
            "{}: {}",
            r.line(),
            r.query
        );
        assert!(r.query.contains("force=true"), "{}: {}", r.line(), r.query);
    }
    // Every child is owned by the EventBroker and labelled for the sweep.
    for r in reqs
        .iter()
        .filter(|r| r.method == "PATCH" && !r.path.ends_with("/status"))
    {
        let meta = &r.body.as_ref().unwrap()["metadata"];
        assert_eq!(
            meta["ownerReferences"][0]["uid"],
            "uid-events",
            "{}",
            r.line()
        );
        assert_eq!(meta["ownerReferences"][0]["controller"], true);
        assert_eq!(meta["labels"]["app.kubernetes.io/instance"], "events");
        assert_eq!(
            meta["labels"]["app.kubernetes.io/managed-by"],
            "edgewire-operator"
        );
    }
    // The publisher points at the deployed broker and reads the token from the Secret, never inline.
    let deploy = applied(&reqs, "/deployments/events-publisher");
    let env = &deploy["spec"]["template"]["spec"]["containers"][0]["env"];
    let find = |n: &str| {
        env.as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == n)
            .cloned()
            .unwrap_or(Value::Null)
    };
    assert_eq!(
        find("EVENT_BROKER_NATS_URLS")["value"],
        "nats://events-nats.factory.svc:4222"
    );
    assert_eq!(
        find("EVENT_BROKER_NATS_TOKEN")["valueFrom"]["secretKeyRef"]["name"],
        "nats-creds"
    );
    assert_eq!(find("EVENT_BROKER_NATS_JETSTREAM")["value"], "true");
    let everything_but_config: String = reqs
        .iter()
        .filter(|r| !r.path.ends_with("/secrets/events-nats-config"))
        .filter_map(|r| r.body.as_ref().map(|b| b.to_string()))
        .collect();
    assert!(
        !everything_but_config.contains("s3cr3t-token"),
        "the token leaked outside the broker's config Secret"
    );
    // The sweep lists each child kind by the owner's labels; nothing is deleted on a first reconcile.
    let lists: Vec<&Recorded> = reqs
        .iter()
        .filter(|r| r.method == "GET" && r.query.contains("labelSelector"))
        .collect();
    assert_eq!(lists.len(), 5, "one sweep list per child kind");
    assert!(reqs.iter().all(|r| r.method != "DELETE"));
    // Status: endpoints, revision, and not Ready yet (no replica is ready).
    let status = &applied(&reqs, "/eventbrokers/events/status")["status"];
    assert_eq!(
        status["endpoint"],
        "http://events-publisher.factory.svc:8080"
    );
    assert_eq!(
        status["brokerEndpoint"],
        "nats://events-nats.factory.svc:4222"
    );
    assert_eq!(status["observedGeneration"], 1);
    assert!(
        status["credentialsRevision"]
            .as_str()
            .unwrap()
            .starts_with("sha256:")
    );
    let cond = |t: &str| {
        status["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == t)
            .cloned()
            .unwrap()
    };
    assert_eq!(cond("Ready")["status"], "False");
    assert_eq!(cond("BrokerReady")["status"], "False");
    assert_eq!(cond("CredentialsReady")["status"], "True");
    // kstatus: the workloads roll out; nothing keeps the operator from proceeding.
    assert_eq!(cond("Reconciling")["status"], "True");
    assert_eq!(cond("Reconciling")["reason"], "Progressing");
    assert_eq!(cond("Reconciling")["message"], cond("Ready")["message"]);
    assert_eq!(cond("Stalled")["status"], "False");
    for t in ["Ready", "Reconciling", "Stalled"] {
        assert_eq!(
            cond(t)["observedGeneration"],
            status["observedGeneration"],
            "{t}"
        );
    }
}

#[tokio::test]
async fn second_reconcile_of_the_same_generation_changes_nothing() {
    let (client, mock) = MockApi::start();
    let eb = nats_deployed();
    mock.insert(&eb);
    mock.insert(&secret("nats-creds", "token", "s3cr3t-token"));
    let first = run(&mock, &client, &eb).await;
    let second = run(&mock, &client, &eb).await;
    // The same objects are applied with the same bodies (server-side apply of an unchanged object is a no-op)…
    let bodies = |reqs: &[Recorded]| -> Vec<(String, Value)> {
        reqs.iter()
            .filter(|r| r.method == "PATCH" && !r.path.ends_with("/status"))
            .map(|r| (r.line(), r.body.clone().unwrap()))
            .collect()
    };
    assert_eq!(bodies(&first), bodies(&second));
    // …and nothing else is written: no status write, no delete.
    let other_writes: Vec<String> = writes(&second)
        .iter()
        .filter(|r| r.method != "PATCH" || r.path.ends_with("/status"))
        .map(|r| r.line())
        .collect();
    assert!(
        other_writes.is_empty(),
        "unexpected writes on an unchanged EventBroker: {other_writes:?}"
    );
}

/// Reconciles `eb` as stored in the mock with `ctx` (one operator process: its memo of applies carries over).
async fn run_in(
    mock: &MockApi,
    ctx: &Arc<edgewire_operator::context::Context>,
    eb: &EventBroker,
) -> Vec<Recorded> {
    let path = support::mock_api::object_path(&serde_json::to_value(eb).unwrap());
    let stored: EventBroker = serde_json::from_value(mock.object(&path).unwrap()).unwrap();
    mock.clear_requests();
    reconcile(Arc::new(stored), ctx.clone())
        .await
        .expect("reconcile succeeds");
    mock.requests()
}

/// A resync of an unchanged EventBroker in the same process (issue 17: zero writes while idle): every child
/// is read back instead of applied, and there is nothing to sweep, so nothing is written and nothing listed.
#[tokio::test]
async fn a_resync_of_an_unchanged_event_broker_writes_nothing() {
    let (client, mock) = MockApi::start();
    let ctx = ctx(client);
    let eb = nats_deployed();
    mock.insert(&eb);
    mock.insert(&secret("nats-creds", "token", "s3cr3t-token"));
    let first = run_in(&mock, &ctx, &eb).await;
    assert!(
        first
            .iter()
            .any(|r| r.method == "GET" && r.query.contains("labelSelector")),
        "the first reconcile sweeps: {:#?}",
        first.iter().map(|r| r.line()).collect::<Vec<_>>()
    );
    let second = run_in(&mock, &ctx, &eb).await;
    let lines = |reqs: &[Recorded]| reqs.iter().map(|r| r.line()).collect::<Vec<_>>();
    assert!(
        writes(&second).is_empty(),
        "writes on a resync of an unchanged EventBroker: {:#?}",
        lines(&second)
    );
    assert!(
        !second.iter().any(|r| r.query.contains("labelSelector")),
        "a sweep on a resync of an unchanged EventBroker: {:#?}",
        lines(&second)
    );
    // Each child the first reconcile applied is read once.
    let applied_paths: Vec<String> = first
        .iter()
        .filter(|r| r.method == "PATCH" && !r.path.ends_with("/status"))
        .map(|r| r.path.clone())
        .collect();
    let read_paths: Vec<String> = second
        .iter()
        .filter(|r| r.method == "GET" && applied_paths.contains(&r.path))
        .map(|r| r.path.clone())
        .collect();
    assert_eq!(read_paths, applied_paths);
}

/// What the memo must not hide: a child changed by someone else since the operator applied it (its
/// resourceVersion moved) is applied again; a deleted one is created again; a new generation whose children
/// differ is applied and swept.
#[tokio::test]
async fn a_resync_still_puts_back_a_changed_or_deleted_child() {
    let (client, mock) = MockApi::start();
    let ctx = ctx(client);
    let eb = nats_deployed();
    mock.insert(&eb);
    mock.insert(&secret("nats-creds", "token", "s3cr3t-token"));
    run_in(&mock, &ctx, &eb).await;

    let deployment = format!("/apis/apps/v1{NS_PATH}/deployments/events-publisher");
    let mut drifted = mock.object(&deployment).unwrap();
    let replicas = drifted["spec"]["replicas"].clone();
    drifted["spec"]["replicas"] = serde_json::json!(7);
    drifted["metadata"]["resourceVersion"] = serde_json::json!("changed-by-someone-else");
    mock.insert_json(drifted);
    let service = format!("/api/v1{NS_PATH}/services/events-publisher");
    mock.remove(&service).unwrap();

    let reqs = run_in(&mock, &ctx, &eb).await;
    let patched: Vec<String> = reqs
        .iter()
        .filter(|r| r.method == "PATCH" && !r.path.ends_with("/status"))
        .map(|r| r.path.clone())
        .collect();
    assert_eq!(patched, [service.clone(), deployment.clone()]);
    assert_eq!(
        mock.object(&deployment).unwrap()["spec"]["replicas"],
        replicas,
        "the operator's replicas are back"
    );

    // A new generation that drops the deployed broker: its children are swept although the others are
    // unchanged.
    let mut external = EventBroker::test("events")
        .adapter_nats()
        .with_token("nats-creds")
        .with_jetstream()
        .generation(2);
    external.metadata.uid = eb.metadata.uid.clone();
    mock.insert(&external);
    let reqs = run_in(&mock, &ctx, &external).await;
    let mut deleted: Vec<String> = reqs
        .iter()
        .filter(|r| r.method == "DELETE")
        .map(|r| r.line())
        .collect();
    deleted.sort();
    assert_eq!(
        deleted,
        [
            format!("DELETE /api/v1{NS_PATH}/secrets/events-nats-config"),
            format!("DELETE /api/v1{NS_PATH}/services/events-nats"),
            format!("DELETE /api/v1{NS_PATH}/services/events-nats-headless"),
            format!("DELETE /apis/apps/v1{NS_PATH}/statefulsets/events-nats"),
        ]
    );
}

#[tokio::test]
async fn a_changed_secret_produces_a_new_hash_annotation() {
    let (client, mock) = MockApi::start();
    let eb = nats_deployed();
    mock.insert(&eb);
    mock.insert(&secret("nats-creds", "token", "first-token"));
    let before = run(&mock, &client, &eb).await;
    mock.insert(&secret("nats-creds", "token", "rotated-token"));
    let after = run(&mock, &client, &eb).await;
    for workload in ["/deployments/events-publisher", "/statefulsets/events-nats"] {
        assert_ne!(
            hash_annotation(applied(&before, workload)),
            hash_annotation(applied(&after, workload)),
            "{workload} keeps its pod template although the Secret changed"
        );
    }
    let rev = |reqs: &[Recorded]| applied(reqs, "/status")["status"]["credentialsRevision"].clone();
    assert_ne!(rev(&before), rev(&after));
    assert_eq!(
        rev(&after).as_str().unwrap(),
        hash_annotation(applied(&after, "/deployments/events-publisher"))
    );
}

#[tokio::test]
async fn an_invalid_spec_writes_only_the_status() {
    let (client, mock) = MockApi::start();
    // deployBroker.kind redis cannot serve the nats adapter.
    let eb = EventBroker::test("events")
        .adapter_nats()
        .deploy(BrokerKind::Redis);
    mock.insert(&eb);
    let reqs = run(&mock, &client, &eb).await;
    let w: Vec<String> = writes(&reqs).iter().map(|r| r.line()).collect();
    assert_eq!(
        w.iter()
            .filter(|l| !l.contains("/events.k8s.io/"))
            .cloned()
            .collect::<Vec<_>>(),
        [format!(
            "PATCH /apis/edgewire.dev/v1alpha1{NS_PATH}/eventbrokers/events/status"
        )],
        "an invalid EventBroker gets a status and no children"
    );
    let status = &applied(&reqs, "/status")["status"];
    let ready = status["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Ready")
        .unwrap();
    assert_eq!(ready["status"], "False");
    assert_eq!(ready["reason"], "InvalidSpec");
    // kstatus: Stalled (Failed) with the same reason and message; not Reconciling.
    let stalled = status["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Stalled")
        .unwrap();
    assert_eq!(
        (&stalled["status"], &stalled["reason"], &stalled["message"]),
        (&"True".into(), &"InvalidSpec".into(), &ready["message"])
    );
    let reconciling = status["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Reconciling")
        .unwrap();
    assert_eq!(reconciling["status"], "False");
    assert!(
        ready["message"]
            .as_str()
            .unwrap()
            .contains("spec.deployBroker.kind"),
        "{ready}"
    );
    // A Warning event says so.
    let event = reqs
        .iter()
        .find(|r| r.method == "POST" && r.path.contains("/events"))
        .expect("an Event is recorded");
    assert_eq!(event.body.as_ref().unwrap()["reason"], "InvalidSpec");
}

#[tokio::test]
async fn a_missing_secret_sets_credentials_ready_false_and_creates_nothing() {
    let (client, mock) = MockApi::start();
    let eb = nats_deployed();
    mock.insert(&eb);
    let reqs = run(&mock, &client, &eb).await;
    assert!(
        reqs.iter()
            .all(|r| r.method != "PATCH" || r.path.ends_with("/status")),
        "children applied without credentials"
    );
    let status = &applied(&reqs, "/status")["status"];
    let cond = |t: &str| {
        status["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == t)
            .cloned()
            .unwrap()
    };
    assert_eq!(cond("CredentialsReady")["status"], "False");
    assert_eq!(cond("CredentialsReady")["reason"], "SecretMissing");
    assert!(
        cond("CredentialsReady")["message"]
            .as_str()
            .unwrap()
            .contains("nats-creds")
    );
    assert!(
        cond("CredentialsReady")["message"]
            .as_str()
            .unwrap()
            .contains("spec.nats.auth.token")
    );
}

#[tokio::test]
async fn switching_adapter_deletes_the_old_brokers_children() {
    let (client, mock) = MockApi::start();
    let eb = nats_deployed();
    mock.insert(&eb);
    mock.insert(&secret("nats-creds", "token", "s3cr3t-token"));
    run(&mock, &client, &eb).await;

    let mut switched = EventBroker::test("events")
        .adapter(Adapter::Redis)
        .deploy(BrokerKind::Redis)
        .generation(2);
    switched.spec.redis.as_mut().unwrap().url = None;
    mock.insert(&switched);
    let reqs = run(&mock, &client, &switched).await;
    let mut deleted: Vec<String> = reqs
        .iter()
        .filter(|r| r.method == "DELETE")
        .map(|r| r.line())
        .collect();
    deleted.sort();
    assert_eq!(
        deleted,
        [
            format!("DELETE /api/v1{NS_PATH}/secrets/events-nats-config"),
            format!("DELETE /api/v1{NS_PATH}/services/events-nats"),
            format!("DELETE /api/v1{NS_PATH}/services/events-nats-headless"),
            format!("DELETE /apis/apps/v1{NS_PATH}/statefulsets/events-nats"),
        ]
    );
    // The redis broker and generated credentials took their place.
    assert!(
        mock.object(&format!("/apis/apps/v1{NS_PATH}/statefulsets/events-redis"))
            .is_some()
    );
    assert!(
        mock.object(&format!(
            "/api/v1{NS_PATH}/secrets/events-broker-credentials"
        ))
        .is_some()
    );
    // The publisher was not deleted: it is the same object with a new configuration.
    assert!(
        mock.object(&format!(
            "/apis/apps/v1{NS_PATH}/deployments/events-publisher"
        ))
        .is_some()
    );
}

#[tokio::test]
async fn generated_credentials_are_created_once_and_never_regenerated() {
    let (client, mock) = MockApi::start();
    let mut eb = EventBroker::test("events")
        .adapter(Adapter::Amqp091)
        .deploy(BrokerKind::Rabbitmq);
    eb.spec.amqp091.as_mut().unwrap().url = None;
    mock.insert(&eb);
    let path = format!("/api/v1{NS_PATH}/secrets/events-broker-credentials");
    run(&mock, &client, &eb).await;
    let first = mock.object(&path).expect("generated Secret applied");
    run(&mock, &client, &eb).await;
    let second = mock.object(&path).unwrap();
    assert_eq!(
        first["data"], second["data"],
        "the generated password changed between reconciles"
    );
    assert!(
        first["data"]["url"].is_string(),
        "amqp091 gets a URL with the credentials"
    );
}

/// The controller's watches, fed by hand: each shows a child as the mock holds it when [`Watches::show`] is
/// called, through the same [`Children`] functions the operator's watches feed.
struct Watches {
    statefulsets: Arc<Children>,
    deployments: Arc<Children>,
    services: Arc<Children>,
    secrets: Arc<Children>,
    accounts: Arc<Children>,
}

impl Watches {
    fn new(ctx: &Context) -> Self {
        let w = &ctx.applied.watched;
        Watches {
            statefulsets: w.children::<StatefulSet>(),
            deployments: w.children::<Deployment>(),
            services: w.children::<Service>(),
            secrets: w.children::<Secret>(),
            accounts: w.children::<ServiceAccount>(),
        }
    }

    /// Each watch has listed (nothing yet): from now on its store shows everything there is.
    fn listed(&mut self) {
        let meta = |c: &Children| {
            c.observe_metadata::<Service>(&Event::Init);
            c.observe_metadata::<Service>(&Event::InitDone);
        };
        meta(&self.statefulsets);
        meta(&self.deployments);
        meta(&self.services);
        meta(&self.secrets);
        meta(&self.accounts);
    }

    fn show(&mut self, mock: &MockApi, path: &str) {
        fn meta<K: kube::Resource<DynamicType = ()>>(c: &Children, v: Value) {
            let m: PartialObjectMeta<K> = serde_json::from_value(v).unwrap();
            c.observe_metadata(&Event::Apply(m));
        }
        fn whole<K: Workload + serde::de::DeserializeOwned>(c: &Children, v: Value) {
            let k: K = serde_json::from_value(v).unwrap();
            c.observe_workload(&Event::Apply(k));
        }
        let v = mock.object(path).unwrap();
        match v["kind"].as_str().unwrap() {
            "StatefulSet" => whole::<StatefulSet>(&self.statefulsets, v),
            "Deployment" => whole::<Deployment>(&self.deployments, v),
            "Service" => meta::<Service>(&self.services, v),
            "Secret" => meta::<Secret>(&self.secrets, v),
            "ServiceAccount" => meta::<ServiceAccount>(&self.accounts, v),
            kind => panic!("no watch of {kind}"),
        }
    }
}

/// Issue 17: with the watches showing the children and the Secret watch running, a resync of an unchanged
/// EventBroker sends no request at all; a status write by a workload's controller is seen without a read
/// and without an apply; a changed spec and a changed Secret are still applied.
#[tokio::test]
async fn a_resync_served_by_the_watches_sends_nothing_and_sees_what_they_show() {
    let (client, mock) = MockApi::start();
    let ctx = ctx(client);
    ctx.secrets.observe(&Event::InitDone);
    let mut watches = Watches::new(&ctx);
    let eb = nats_deployed();
    mock.insert(&eb);
    mock.insert(&secret("nats-creds", "token", "s3cr3t-token"));
    let first = run_in(&mock, &ctx, &eb).await;
    let children: Vec<String> = first
        .iter()
        .filter(|r| r.method == "PATCH" && !r.path.ends_with("/status"))
        .map(|r| r.path.clone())
        .collect();
    for path in &children {
        watches.show(&mock, path);
    }
    let lines = |reqs: &[Recorded]| reqs.iter().map(|r| r.line()).collect::<Vec<_>>();
    let status_path = format!("/apis/edgewire.dev/v1alpha1{NS_PATH}/eventbrokers/events");
    let condition = |t: &str| {
        mock.object(&status_path).unwrap()["status"]["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == t)
            .unwrap()["status"]
            .clone()
    };

    // Nothing changed: the children are as the watches show them, the Secret as it was read.
    let second = run_in(&mock, &ctx, &eb).await;
    assert!(second.is_empty(), "{:#?}", lines(&second));

    // The StatefulSet controller reports the broker ready (a status write: a new resourceVersion, the same
    // generation). Not applied again, not read: the watch's copy carries the status.
    assert_eq!(condition("BrokerReady"), "False");
    let sts_path = format!("/apis/apps/v1{NS_PATH}/statefulsets/events-nats");
    let mut sts = mock.object(&sts_path).unwrap();
    let replicas = sts["spec"]["replicas"].clone();
    sts["status"] = serde_json::json!({
        "observedGeneration": sts["metadata"]["generation"],
        "replicas": replicas, "readyReplicas": replicas, "updatedReplicas": replicas,
    });
    sts["metadata"]["resourceVersion"] = serde_json::json!("written-by-the-statefulset-controller");
    mock.insert_json(sts);
    watches.show(&mock, &sts_path);
    let third = run_in(&mock, &ctx, &eb).await;
    assert_eq!(
        lines(&third),
        [format!("PATCH {status_path}/status")],
        "only the status is written"
    );
    assert_eq!(condition("BrokerReady"), "True");

    // Someone scales the publisher (a new generation): that Deployment alone is applied again.
    let deployment = format!("/apis/apps/v1{NS_PATH}/deployments/events-publisher");
    let mut drifted = mock.object(&deployment).unwrap();
    let old_hash = hash_annotation(&drifted);
    drifted["spec"]["replicas"] = serde_json::json!(7);
    let generation = drifted["metadata"]["generation"].as_i64().unwrap();
    drifted["metadata"]["generation"] = serde_json::json!(generation + 1);
    drifted["metadata"]["resourceVersion"] = serde_json::json!("scaled-by-someone-else");
    mock.insert_json(drifted);
    watches.show(&mock, &deployment);
    let fourth = run_in(&mock, &ctx, &eb).await;
    assert_eq!(
        lines(&fourth),
        [format!("PATCH {deployment}")],
        "the scaled Deployment is put back, nothing else is sent"
    );
    watches.show(&mock, &deployment);

    // The token changes: the Secret watch shows it, so it is read again and its new hash rolls the pods.
    let rotated = secret("nats-creds", "token", "rotated-token");
    mock.insert(&rotated);
    let rotated_meta: PartialObjectMeta<Secret> = serde_json::from_value(
        mock.object(&format!("/api/v1{NS_PATH}/secrets/nats-creds"))
            .unwrap(),
    )
    .unwrap();
    ctx.secrets.observe(&Event::Apply(rotated_meta));
    let fifth = run_in(&mock, &ctx, &eb).await;
    assert!(
        fifth
            .iter()
            .any(|r| r.line() == format!("GET /api/v1{NS_PATH}/secrets/nats-creds")),
        "{:#?}",
        lines(&fifth)
    );
    assert_ne!(
        hash_annotation(applied(&fifth, "/deployments/events-publisher")),
        old_hash
    );
}

/// Issue 17: once the watches have listed, the sweep takes its candidates from them and lists nothing: a
/// fresh process (nothing remembered) deletes the children its watches show and the new generation does not
/// want (not another owner's). A child this process wrote that the watches do not show yet is listed for, so
/// it is not left behind; what the list shows with the labels but not owned is not deleted.
#[tokio::test]
async fn the_sweep_deletes_what_the_watches_show_and_lists_only_for_writes_they_do_not_show_yet() {
    let (client, mock) = MockApi::start();
    let eb = nats_deployed();
    mock.insert(&eb);
    mock.insert(&secret("nats-creds", "token", "s3cr3t-token"));
    let lists = |reqs: &[Recorded]| {
        reqs.iter()
            .filter(|r| r.method == "GET" && r.query.contains("labelSelector"))
            .map(|r| r.line())
            .collect::<Vec<_>>()
    };
    let deletes = |reqs: &[Recorded]| {
        let mut d: Vec<String> = reqs
            .iter()
            .filter(|r| r.method == "DELETE")
            .map(|r| r.line())
            .collect();
        d.sort();
        d
    };
    let broker_children = [
        format!("DELETE /api/v1{NS_PATH}/secrets/events-nats-config"),
        format!("DELETE /api/v1{NS_PATH}/services/events-nats"),
        format!("DELETE /api/v1{NS_PATH}/services/events-nats-headless"),
        format!("DELETE /apis/apps/v1{NS_PATH}/statefulsets/events-nats"),
    ];
    let mut external = EventBroker::test("events")
        .adapter_nats()
        .with_token("nats-creds")
        .with_jetstream()
        .generation(2);
    external.metadata.uid = eb.metadata.uid.clone();

    // A first reconcile with the watches listed and empty: no orphan can exist, nothing is listed.
    let ctx1 = ctx(client.clone());
    Watches::new(&ctx1).listed();
    let first = run_in(&mock, &ctx1, &eb).await;
    assert!(lists(&first).is_empty(), "{:#?}", lists(&first));
    assert!(deletes(&first).is_empty());
    let children: Vec<String> = first
        .iter()
        .filter(|r| r.method == "PATCH" && !r.path.ends_with("/status"))
        .map(|r| r.path.clone())
        .collect();
    assert!(children.len() >= 7, "{children:#?}");

    // A restarted operator whose watches show those children; the new generation drops the deployed broker.
    let ctx2 = ctx(client.clone());
    let mut watches = Watches::new(&ctx2);
    watches.listed();
    for path in &children {
        watches.show(&mock, path);
    }
    // Another EventBroker's child in the same namespace: shown, and not this owner's to delete.
    let other = format!("/api/v1{NS_PATH}/services/other-publisher");
    let mut theirs = mock
        .object(&format!("/api/v1{NS_PATH}/services/events-nats"))
        .unwrap();
    theirs["metadata"]["name"] = serde_json::json!("other-publisher");
    theirs["metadata"]["labels"][edgewire_api::labels::INSTANCE] = serde_json::json!("other");
    theirs["metadata"]["ownerReferences"][0]["uid"] = serde_json::json!("uid-of-other");
    mock.insert_json(theirs);
    watches.show(&mock, &other);
    mock.insert(&external);
    let second = run_in(&mock, &ctx2, &external).await;
    assert!(lists(&second).is_empty(), "{:#?}", lists(&second));
    assert_eq!(deletes(&second), broker_children);

    // Back to the deployed broker, in a process whose watches have not shown its children yet: the sweep of
    // the next generation must list the kinds of what it wrote and not see, and delete them.
    let mut deployed = nats_deployed().generation(3);
    deployed.metadata.uid = eb.metadata.uid.clone();
    mock.insert(&deployed);
    let ctx3 = ctx(client);
    Watches::new(&ctx3).listed();
    run_in(&mock, &ctx3, &deployed).await;
    // A Service with this owner's labels that it does not own (made by hand): listed, not deleted.
    let mut unowned = mock
        .object(&format!("/api/v1{NS_PATH}/services/events-nats"))
        .unwrap();
    unowned["metadata"]["name"] = serde_json::json!("events-by-hand");
    unowned["metadata"]["ownerReferences"] = serde_json::json!([]);
    mock.insert_json(unowned);
    external = external.generation(4);
    mock.insert(&external);
    let fourth = run_in(&mock, &ctx3, &external).await;
    assert_eq!(
        lists(&fourth),
        [
            format!("GET /apis/apps/v1{NS_PATH}/statefulsets"),
            format!("GET /api/v1{NS_PATH}/services"),
            format!("GET /api/v1{NS_PATH}/secrets"),
        ],
        "only the kinds with a written child the watches do not show are listed"
    );
    assert_eq!(deletes(&fourth), broker_children);
}
