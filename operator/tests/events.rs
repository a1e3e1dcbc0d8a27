//! The operator's Event recorder against the mocked API: one Event repeated about the same version of an
//! object counts up a series on the Event already written; another reason, another version of the object or
//! an Event deleted meanwhile makes a new one.

#[allow(dead_code)] // the shared mock; this test uses only part of it
mod support;

use edgewire_operator::events::Recorder;
use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType, Reporter};
use support::mock_api::{MockApi, Recorded};

const EVENTS: &str = "/apis/events.k8s.io/v1/namespaces/factory/events";

fn event(reason: &str, note: &str) -> Event {
    Event {
        type_: EventType::Warning,
        reason: reason.into(),
        note: Some(note.into()),
        action: "Reconcile".into(),
        secondary: None,
    }
}

fn regarding(resource_version: &str) -> ObjectReference {
    ObjectReference {
        api_version: Some("edgewire.dev/v1alpha1".into()),
        kind: Some("EventBroker".into()),
        namespace: Some("factory".into()),
        name: Some("orders".into()),
        uid: Some("uid-1".into()),
        resource_version: Some(resource_version.into()),
        ..Default::default()
    }
}

/// The writes to Events since the last call, as (method, event name).
fn writes(mock: &MockApi) -> Vec<(String, String)> {
    let reqs: Vec<Recorded> = mock.requests();
    mock.clear_requests();
    reqs.into_iter()
        .filter(|r| r.path.starts_with(EVENTS))
        .map(|r| {
            let name = match r.method.as_str() {
                "POST" => r.body.unwrap()["metadata"]["name"]
                    .as_str()
                    .unwrap()
                    .to_string(),
                _ => r.path.rsplit('/').next().unwrap().to_string(),
            };
            (r.method, name)
        })
        .collect()
}

#[tokio::test]
async fn a_repeated_event_counts_up_its_series_and_anything_else_is_a_new_event() {
    let (client, mock) = MockApi::start();
    let recorder = Recorder::new(
        client,
        Reporter {
            controller: "edgewire-operator".into(),
            instance: Some("pod-1".into()),
        },
    );
    let failed = event("ReconcileFailed", "broker unreachable");

    recorder.publish(&failed, &regarding("7")).await.unwrap();
    let first = writes(&mock);
    assert_eq!(first.len(), 1, "{first:?}");
    assert_eq!(first[0].0, "POST");
    let name = &first[0].1;
    let path = format!("{EVENTS}/{name}");
    let created = mock.object(&path).unwrap();
    assert_eq!(created["reason"], "ReconcileFailed");
    assert_eq!(created["note"], "broker unreachable");
    assert_eq!(created["type"], "Warning");
    assert_eq!(created["regarding"]["uid"], "uid-1");
    assert_eq!(created["reportingController"], "edgewire-operator");
    assert_eq!(created["reportingInstance"], "pod-1");
    assert!(created["series"].is_null());

    // The same again, twice: the series of the first counts up, no new Event.
    for count in [2, 3] {
        recorder.publish(&failed, &regarding("7")).await.unwrap();
        assert_eq!(writes(&mock), [("PATCH".to_string(), name.clone())]);
        let now = mock.object(&path).unwrap();
        assert_eq!(now["series"]["count"], count);
        assert!(now["series"]["lastObservedTime"].is_string());
        assert_eq!(now["note"], "broker unreachable", "the Event is kept");
    }

    // Another reason, or the object at another version: new Events.
    recorder
        .publish(&event("Ready", "ready"), &regarding("7"))
        .await
        .unwrap();
    recorder.publish(&failed, &regarding("8")).await.unwrap();
    let new = writes(&mock);
    assert_eq!(new.len(), 2, "{new:?}");
    assert!(new.iter().all(|(m, n)| m == "POST" && n != name), "{new:?}");

    // The first Event deleted meanwhile: its series cannot go on, a new Event is written.
    mock.remove(&path).unwrap();
    recorder.publish(&failed, &regarding("7")).await.unwrap();
    let after = writes(&mock);
    assert_eq!(after.len(), 2, "{after:?}");
    assert_eq!(after[0], ("PATCH".to_string(), name.clone()));
    assert_eq!(after[1].0, "POST");
    assert_ne!(&after[1].1, name);
}
