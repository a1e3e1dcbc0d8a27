//! `--watch-namespace a,b` (the chart's `watchNamespaces`): one set of controllers per namespace, each
//! listing and watching only its namespace, so Roles in those namespaces are all the operator needs. The
//! controllers run against the mocked API until every list they start with has been seen; then they are
//! stopped and the paths of every request are checked.

#[allow(dead_code)] // the shared mock API; this test uses its request log only
mod support;

use edgewire_operator::runtime::{namespaces, run_controllers};
use futures::FutureExt;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};
use support::ctx;
use support::mock_api::MockApi;

/// The collections each set of controllers lists in namespace `ns` (`None`: cluster-wide).
fn lists(ns: Option<&str>) -> BTreeSet<String> {
    let at = |prefix: &str, plural: &str| match ns {
        Some(ns) => format!("{prefix}/namespaces/{ns}/{plural}"),
        None => format!("{prefix}/{plural}"),
    };
    let mut want = BTreeSet::new();
    for plural in ["eventbrokers", "mqttbrokers", "bridgelinks"] {
        want.insert(at("/apis/edgewire.dev/v1alpha1", plural));
    }
    for plural in ["deployments", "statefulsets"] {
        want.insert(at("/apis/apps/v1", plural));
    }
    for plural in ["services", "secrets"] {
        want.insert(at("/api/v1", plural));
    }
    want
}

/// Runs the controllers for `watch` until every path of `want` was requested (or 60 s passed), then stops
/// them and returns the paths of every GET.
async fn gets_while_starting(watch: &[String], want: &BTreeSet<String>) -> BTreeSet<String> {
    let (client, mock) = MockApi::start();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let until = async move {
        let _ = stop_rx.await;
    }
    .shared();
    let run = tokio::spawn({
        let ctx = ctx(client);
        let watch = watch.to_vec();
        async move { run_controllers(ctx, &watch, until).await }
    });
    let gets = || -> BTreeSet<String> {
        mock.requests()
            .into_iter()
            .filter(|r| r.method == "GET")
            .map(|r| r.path)
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while !want.is_subset(&gets()) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = stop_tx.send(());
    tokio::time::timeout(Duration::from_secs(30), run)
        .await
        .expect("the controllers stop when told")
        .unwrap();
    gets()
}

#[tokio::test]
async fn two_namespaces_get_one_controller_set_each_and_nothing_cluster_wide() {
    let watch = namespaces(vec!["factory,site-a".into()]);
    assert_eq!(watch, ["factory", "site-a"]);
    let want: BTreeSet<String> = lists(Some("factory"))
        .into_iter()
        .chain(lists(Some("site-a")))
        .collect();
    let gets = gets_while_starting(&watch, &want).await;
    let missing: Vec<_> = want.difference(&gets).collect();
    assert!(
        missing.is_empty(),
        "never listed: {missing:?}\nall GETs: {gets:#?}"
    );
    let outside: Vec<_> = gets
        .iter()
        .filter(|p| !p.contains("/namespaces/factory/") && !p.contains("/namespaces/site-a/"))
        .collect();
    assert!(
        outside.is_empty(),
        "requests outside the two namespaces: {outside:?}"
    );
}

#[tokio::test]
async fn no_namespace_watches_the_whole_cluster() {
    let want = lists(None);
    let gets = gets_while_starting(&[], &want).await;
    let missing: Vec<_> = want.difference(&gets).collect();
    assert!(
        missing.is_empty(),
        "never listed: {missing:?}\nall GETs: {gets:#?}"
    );
}

#[test]
fn the_flag_takes_commas_and_repeats_and_drops_blanks_and_duplicates() {
    assert_eq!(
        namespaces(vec!["a, b".into(), "".into(), "b".into(), "c".into()]),
        ["a", "b", "c"]
    );
    assert!(namespaces(vec![String::new()]).is_empty());
}
