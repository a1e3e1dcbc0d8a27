//! The operator as a process: restarts, idleness, leader election. The real `edgewire-operator run` binary
//! against the control plane, under the chart's ServiceAccount, driven with kubectl.

use crate::support::manifests::{
    eventbroker_with_spec, nats_deployed, nats_external, token_secret,
};
use crate::support::operator::OperatorOpts;
use crate::support::{
    ChildRef, Cluster, Operator, condition_status, generations, keys, status_summary, str_at,
};
use std::time::{Duration, Instant};

const SECRET: &str = "nats-auth";

fn wait_observed(cluster: &Cluster, op: &Operator, ns: &str, name: &str) -> serde_json::Value {
    op.wait(
        &format!("EventBroker {name} observed at its generation"),
        || {
            let eb = cluster
                .get(ns, "eventbroker", name)
                .ok_or("EventBroker absent")?;
            let (generation, observed) = generations(&eb);
            if generation > 0 && observed == generation {
                Ok(eb)
            } else {
                Err(status_summary(&eb))
            }
        },
    )
}

fn wait_ready(cluster: &Cluster, op: &Operator, ns: &str, name: &str) -> serde_json::Value {
    op.wait(&format!("EventBroker {name} Ready"), || {
        let eb = cluster
            .get(ns, "eventbroker", name)
            .ok_or("EventBroker absent")?;
        if condition_status(&eb, "Ready") == "True" {
            Ok(eb)
        } else {
            Err(status_summary(&eb))
        }
    })
}

/// Killing the operator (`kill -9`) between apply and readiness and starting it again converges to the same
/// objects: the same children (same uids, nothing recreated), no extra ones, and the EventBroker Ready.
#[test]
fn a_restarted_operator_converges_to_the_same_objects_without_duplicates() {
    let cluster = Cluster::start();
    let ns = cluster.create_namespace("e2e-restart");
    let opts = OperatorOpts {
        lease_seconds: 5,
        ..OperatorOpts::new(&ns, "op-a")
    };
    // No pod may start while the first operator runs, so that it cannot finish (a fast operator on a kwok
    // node is Ready in well under a second): the kill lands before the workloads are ready.
    let quota = format!(
        "apiVersion: v1\nkind: ResourceQuota\nmetadata:\n  name: no-pods\n  namespace: {ns}\nspec:\n  hard:\n    pods: \"0\"\n"
    );
    cluster.apply_yaml(&quota);
    let mut first = Operator::start_with(&cluster, opts.clone());
    cluster.apply_yaml(&token_secret(&ns, SECRET, "first-token"));
    cluster.apply_yaml(&nats_deployed(&ns, "events", SECRET, 1));

    // Kill it as soon as its first pass shows (possibly half done): any child exists.
    first.wait("the first operator to apply a child", || {
        let c = cluster.children(&ns, "events");
        if c.is_empty() {
            Err("no child yet".to_string())
        } else {
            Ok(())
        }
    });
    first.kill9();
    let before: Vec<ChildRef> = cluster.children(&ns, "events");
    let eb = cluster.get_json(&ns, "eventbroker", "events");
    assert_ne!(
        condition_status(&eb, "Ready"),
        "True",
        "Ready before the workloads could be: {}",
        status_summary(&eb)
    );
    // Whatever becomes ready while no operator runs, the restarted one must notice.
    cluster.kubectl_ok(&["delete", "resourcequota", "no-pods", "-n", &ns]);

    // A pod restart keeps its name (identity): the lease is still ours, no waiting for it to expire.
    let second = Operator::start_with(&cluster, opts);
    second.wait("the restarted operator to lead", || {
        match second.leader()? {
            Some(1.0) => Ok(()),
            other => Err(format!("edgewire_operator_leader {other:?}")),
        }
    });
    wait_ready(&cluster, &second, &ns, "events");
    second.wait("the restarted operator to reconcile", || {
        match second.try_reconciles()? {
            0 => Err("no reconcile yet".into()),
            n => Ok(n),
        }
    });

    let after = cluster.children(&ns, "events");
    eprintln!("children when op-a was killed: {:?}", keys(&before));
    for b in &before {
        let now = after.iter().find(|a| a.key() == b.key());
        assert_eq!(
            now.map(|a| a.uid.as_str()),
            Some(b.uid.as_str()),
            "{} was deleted or recreated by the restarted operator (before: {b:?}, after: {now:?})\n{}",
            b.key(),
            second.log_tail()
        );
    }
    let mut expected: Vec<String> = [
        "Deployment/events-publisher",
        "Secret/events-nats-config",
        "Service/events-nats",
        "Service/events-nats-headless",
        "Service/events-publisher",
        "ServiceAccount/events-publisher",
        "StatefulSet/events-nats",
    ]
    .map(String::from)
    .to_vec();
    expected.sort();
    assert_eq!(
        keys(&after),
        expected,
        "one child of each, nothing more\n{}",
        second.log_tail()
    );
}

/// Converged and idle for 10 s, the operator's own reconcile counter stays flat: no reconcile storm from
/// its status writes, its children's events or the Secret watch. Covers a Ready EventBroker, one waiting for
/// its publisher, and an invalid one. A SIGTERM then stops it cleanly and releases the lease.
#[test]
fn an_idle_operator_does_not_reconcile() {
    let cluster = Cluster::start();
    let ns = cluster.create_namespace("e2e-idle");
    let mut op = Operator::start(&cluster, &ns, "op-a");
    cluster.apply_yaml(&token_secret(&ns, SECRET, "first-token"));
    cluster.apply_yaml(&nats_deployed(&ns, "ready", SECRET, 1));
    cluster.apply_yaml(&nats_external(&ns, "waiting", SECRET));
    cluster.apply_yaml(&eventbroker_with_spec(
        &ns,
        "invalid",
        "  adapter: nats\n  nats:\n    auth:\n      token: {name: nats-auth, key: token}\n",
    ));
    wait_observed(&cluster, &op, &ns, "ready");
    wait_ready(&cluster, &op, &ns, "ready");
    wait_observed(&cluster, &op, &ns, "waiting");
    wait_observed(&cluster, &op, &ns, "invalid");

    // Let the last status writes and their watch events settle, then measure.
    std::thread::sleep(Duration::from_secs(2));
    let start = op.reconciles();
    assert!(
        start >= 3,
        "expected at least one reconcile per EventBroker, got {start}"
    );
    std::thread::sleep(Duration::from_secs(10));
    let end = op.reconciles();
    assert_eq!(
        end,
        start,
        "the idle operator reconciled {} times in 10 s (a reconcile storm)\n{}",
        end - start,
        op.log_tail()
    );

    let status = op.stop();
    assert!(
        status.success(),
        "SIGTERM: the operator exited with {status}\n{}",
        op.log_tail()
    );
    assert_eq!(
        op.lease_holder(&cluster),
        "",
        "the stopped operator did not release its lease"
    );
}

/// Two operator processes on one lease (5 s): only the leader reconciles; after `kill -9` of the leader the
/// other takes over within the lease duration (plus slack for a loaded machine) and reconciles an
/// EventBroker applied while nobody led.
#[test]
fn only_the_leader_reconciles_and_the_other_takes_over_after_kill9() {
    const LEASE: u64 = 5;
    let cluster = Cluster::start();
    let ns = cluster.create_namespace("e2e-leader");
    let opts = |id: &str| OperatorOpts {
        lease_seconds: LEASE,
        ..OperatorOpts::new(&ns, id)
    };
    let mut a = Operator::start_with(&cluster, opts("op-a"));
    a.wait("op-a to lead", || match a.leader()? {
        Some(1.0) => Ok(()),
        other => Err(format!("edgewire_operator_leader {other:?}")),
    });
    let b = Operator::start_with(&cluster, opts("op-b"));
    b.wait("op-b to wait for the lease", || {
        if b.log().contains("waiting for leadership") {
            Ok(())
        } else {
            Err("not at the lease yet".into())
        }
    });
    assert_eq!(b.lease_holder(&cluster), "op-a");

    cluster.apply_yaml(&token_secret(&ns, SECRET, "first-token"));
    cluster.apply_yaml(&nats_external(&ns, "first", SECRET));
    wait_observed(&cluster, &a, &ns, "first");
    assert!(a.reconciles() > 0, "the leader did not count its reconcile");

    // Over more than a lease duration the standby neither leads nor reconciles, and the leader keeps leading.
    let until = Instant::now() + Duration::from_secs(LEASE + 2);
    while Instant::now() < until {
        assert_eq!(
            b.leader()
                .unwrap_or_else(|e| panic!("{e}\n{}", b.log_tail())),
            Some(0.0),
            "the standby leads\n{}",
            b.log_tail()
        );
        assert_eq!(
            b.reconciles(),
            0,
            "the standby reconciled\n{}",
            b.log_tail()
        );
        assert_eq!(
            a.leader()
                .unwrap_or_else(|e| panic!("{e}\n{}", a.log_tail())),
            Some(1.0),
            "the leader lost the lease\n{}",
            a.log_tail()
        );
        std::thread::sleep(Duration::from_millis(500));
    }

    // Its Ready Event is op-a's (see the end).
    wait_ready(&cluster, &a, &ns, "first");
    a.kill9();
    let killed = Instant::now();
    cluster.apply_yaml(&nats_external(&ns, "second", SECRET));
    // The lease expires LEASE s after its last renewal; allow 20 s more for a loaded machine.
    b.wait_within(
        "op-b to take over the lease",
        Duration::from_secs(LEASE + 20),
        || match b.leader()? {
            Some(1.0) => Ok(()),
            other => Err(format!("edgewire_operator_leader {other:?}")),
        },
    );
    eprintln!(
        "op-b took over {:.1} s after kill -9 of op-a (lease {LEASE} s)",
        killed.elapsed().as_secs_f64()
    );
    assert_eq!(b.lease_holder(&cluster), "op-b");
    wait_observed(&cluster, &b, &ns, "second");
    assert!(
        b.reconciles() > 0,
        "the new leader did not count its reconciles"
    );
    let children = cluster.children(&ns, "second");
    assert_eq!(
        keys(&children),
        [
            "Deployment/second-publisher",
            "Service/second-publisher",
            "ServiceAccount/second-publisher"
        ],
        "children of the EventBroker reconciled by the new leader"
    );

    // What each leader did is visible to users in `kubectl events`: the Ready Events of both EventBrokers,
    // each reported by the process that led when it happened.
    for (eb, leader) in [("first", "op-a"), ("second", "op-b")] {
        let target = format!("eventbroker/{eb}");
        let row = b.wait(&format!("kubectl events --for {target}"), || {
            let table = cluster.kubectl_ok(&["events", "-n", &ns, "--for", &target]);
            table
                .lines()
                .find(|l| {
                    let cells: Vec<&str> = l.split_whitespace().collect();
                    cells.contains(&"Normal")
                        && cells.contains(&"Ready")
                        && cells.iter().any(|c| c.eq_ignore_ascii_case(&target))
                })
                .map(str::to_string)
                .ok_or(table)
        });
        let events = cluster.list(&ns, "events.events.k8s.io", "");
        let reporters: Vec<&str> = events
            .iter()
            .filter(|e| str_at(e, "/regarding/name") == eb && e["reason"] == "Ready")
            .map(|e| str_at(e, "/reportingInstance"))
            .collect();
        assert_eq!(
            reporters,
            [leader],
            "the Ready Event of {eb} is reported by {reporters:?}"
        );
        eprintln!("kubectl events --for {target}: {row}");
    }
}

/// The operator's Event recorder on the real API server: the same Event again about the same version of an
/// object counts up the series of the first (a merge patch of `series`, which the API server validates),
/// so `kubectl get events` shows one Event with a count; the object at another version gets an Event of its own.
#[test]
fn a_repeated_event_is_one_event_with_a_series_on_the_api_server() {
    use edgewire_operator::events::Recorder;
    use k8s_openapi::api::core::v1::ObjectReference;
    use kube::runtime::events::{Event, EventType, Reporter};

    let cluster = Cluster::start();
    let ns = cluster.create_namespace("events");
    let regarding = |rv: &str| ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("ConfigMap".into()),
        namespace: Some(ns.clone()),
        name: Some("subject".into()),
        uid: Some("6f1d1f5e-0000-4000-8000-000000000001".into()),
        resource_version: Some(rv.into()),
        ..Default::default()
    };
    let ev = Event {
        type_: EventType::Warning,
        reason: "ReconcileFailed".into(),
        note: Some("the broker refused the connection".into()),
        action: "Reconcile".into(),
        secondary: None,
    };
    let _ = rustls::crypto::ring::default_provider().install_default();
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(async {
            let kubeconfig = kube::config::Kubeconfig::read_from(cluster.kubeconfig())?;
            let config =
                kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await?;
            let recorder = Recorder::new(
                kube::Client::try_from(config)?,
                Reporter {
                    controller: "edgewire-operator".into(),
                    instance: Some("e2e".into()),
                },
            );
            for _ in 0..3 {
                recorder.publish(&ev, &regarding("1")).await?;
            }
            recorder.publish(&ev, &regarding("2")).await?;
            anyhow::Ok(())
        })
        .unwrap();

    let mut events: Vec<(String, i64)> = cluster
        .list(&ns, "events.events.k8s.io", "")
        .iter()
        .filter(|e| e["reason"] == "ReconcileFailed")
        .map(|e| {
            assert_eq!(e["note"], "the broker refused the connection");
            assert_eq!(e["reportingInstance"], "e2e");
            (
                str_at(e, "/regarding/resourceVersion").to_string(),
                e["series"]["count"].as_i64().unwrap_or(1),
            )
        })
        .collect();
    events.sort();
    assert_eq!(
        events,
        [("1".to_string(), 3), ("2".to_string(), 1)],
        "one Event per version of the object, the first counted up to 3"
    );
}
