//! The root watch of a controller, driven by `controller::run` against the mocked API: one object that does
//! not decode is skipped, and the others are still reconciled (the watch does not stall on it).

#[allow(dead_code)] // the shared mock; this test uses only part of it
mod support;

use edgewire_api::EventBroker;
use edgewire_api::testing::NAMESPACE;
use edgewire_operator::controller;
use serde_json::json;
use std::time::Duration;
use support::ctx;
use support::mock_api::MockApi;

#[tokio::test]
async fn one_undecodable_object_does_not_stall_the_others() {
    let (client, mock) = MockApi::start();
    mock.insert(&EventBroker::test("good").adapter_nats());
    // Written while the schema was off (or by an older version): `adapter` is not an adapter.
    mock.insert_json(json!({
        "apiVersion": "edgewire.dev/v1alpha1",
        "kind": "EventBroker",
        "metadata": {"name": "broken", "namespace": NAMESPACE, "uid": "uid-broken",
                     "generation": 1, "resourceVersion": "1"},
        "spec": {"adapter": 42}
    }));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(controller::run::<EventBroker>(
        ctx(client),
        Some(NAMESPACE.into()),
        async move {
            let _ = stopped.await;
        },
    ));
    let good_status =
        format!("/apis/edgewire.dev/v1alpha1/namespaces/{NAMESPACE}/eventbrokers/good/status");
    tokio::time::timeout(
        Duration::from_secs(60),
        mock.wait_for(|reqs| {
            reqs.iter()
                .any(|r| r.method == "PATCH" && r.path == good_status)
        }),
    )
    .await
    .expect("the decodable EventBroker is reconciled");
    let _ = stop.send(());
    running.await.unwrap();
    assert!(
        !mock
            .requests()
            .iter()
            .any(|r| r.method == "PATCH" && r.path.contains("broken")),
        "nothing is applied for the object that does not decode"
    );
}
