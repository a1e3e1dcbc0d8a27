//! Kubernetes Events (`events.k8s.io/v1`) about the operator's objects, written the way kube's `Recorder`
//! writes them: a new Event, or, when the same Event (type, action, reason) about the same object at the same
//! resourceVersion was recorded less than 6 minutes ago, its series counted up on the Event already there (a
//! reconcile failing over and over on one version of an object makes one Event with a count, not hundreds).
//!
//! kube's recorder remembers every Event it wrote whole for those 6 minutes, whether a series follows or not:
//! ~1.5 KB each, ~6 MB of the operator's heap while 2,200 resources come up (issue 17). This one remembers of
//! each the key and the Event's name and count.

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::{Event as K8sEvent, EventSeries};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Patch, PatchParams, PostParams};
use kube::runtime::events::{Event, EventType, Reporter};
use kube::{Api, Client};
use std::collections::HashMap;
use std::sync::Mutex;

/// How long an Event can still grow a series (kube's and client-go's figure).
const SERIES_TTL: SignedDuration = SignedDuration::from_mins(6);

/// What makes two Events the same: their object (uid and resourceVersion), type, action and reason.
#[derive(Debug, PartialEq, Eq, Hash)]
struct Key {
    object: Box<str>,
    resource_version: Box<str>,
    warning: bool,
    action: Box<str>,
    reason: Box<str>,
}

/// An Event written, as far as its series needs it.
#[derive(Debug)]
struct Written {
    namespace: Box<str>,
    name: Box<str>,
    count: i32,
    last: Timestamp,
}

/// Writes Events, counting up the series of one repeated (see the module).
pub struct Recorder {
    client: Client,
    reporter: Reporter,
    written: Mutex<HashMap<Key, Written>>,
}

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recorder")
            .field("reporter", &self.reporter)
            .finish()
    }
}

impl Recorder {
    pub fn new(client: Client, reporter: Reporter) -> Self {
        Self {
            client,
            reporter,
            written: Mutex::default(),
        }
    }

    /// Records `ev` about `regarding` in the object's namespace: a new Event, or the next of its series.
    pub async fn publish(
        &self,
        ev: &Event,
        regarding: &ObjectReference,
    ) -> Result<(), kube::Error> {
        let now = Timestamp::now();
        let key = Key {
            object: regarding
                .uid
                .clone()
                .unwrap_or_else(|| {
                    format!(
                        "{}/{}",
                        regarding.namespace.as_deref().unwrap_or_default(),
                        regarding.name.as_deref().unwrap_or_default()
                    )
                })
                .into(),
            resource_version: regarding
                .resource_version
                .as_deref()
                .unwrap_or_default()
                .into(),
            warning: matches!(ev.type_, EventType::Warning),
            action: ev.action.as_str().into(),
            reason: ev.reason.as_str().into(),
        };
        let next = {
            let mut written = self.written.lock().unwrap_or_else(|e| e.into_inner());
            written.retain(|_, w| w.last + SERIES_TTL > now);
            written
                .get(&key)
                .map(|w| (w.namespace.clone(), w.name.clone(), w.count + 1))
        };
        if let Some((namespace, name, count)) = next {
            let series = EventSeries {
                count,
                last_observed_time: MicroTime(now),
            };
            let patched = Api::<K8sEvent>::namespaced(self.client.clone(), &namespace)
                .patch(
                    &name,
                    &PatchParams::default(),
                    &Patch::Merge(serde_json::json!({ "series": series })),
                )
                .await;
            match patched {
                Ok(_) => {
                    self.remember(key, namespace, name, count, now);
                    return Ok(());
                }
                // Deleted meanwhile (by hand, or its namespace's Events cleared): a new one.
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => return Err(e),
            }
        }
        let namespace = regarding.namespace.as_deref().unwrap_or("default");
        let name = self.create(namespace, ev, regarding, now).await?;
        self.remember(key, namespace.into(), name.into(), 1, now);
        Ok(())
    }

    fn remember(&self, key: Key, namespace: Box<str>, name: Box<str>, count: i32, last: Timestamp) {
        let mut written = self.written.lock().unwrap_or_else(|e| e.into_inner());
        written.insert(
            key,
            Written {
                namespace,
                name,
                count,
                last,
            },
        );
    }

    /// Creates `ev` about `regarding` in `namespace` (another than the object's), outside any series.
    pub async fn create_in(
        &self,
        namespace: &str,
        ev: &Event,
        regarding: &ObjectReference,
    ) -> Result<(), kube::Error> {
        self.create(namespace, ev, regarding, Timestamp::now())
            .await
            .map(drop)
    }

    /// Creates `ev` as a new Event in `namespace`, named after its object and `now`; returns its name.
    async fn create(
        &self,
        namespace: &str,
        ev: &Event,
        regarding: &ObjectReference,
        now: Timestamp,
    ) -> Result<String, kube::Error> {
        let controller = &self.reporter.controller;
        let event = K8sEvent {
            metadata: ObjectMeta {
                name: Some(format!(
                    "{}.{:x}",
                    regarding.name.as_deref().unwrap_or(controller),
                    now.as_nanosecond()
                )),
                namespace: Some(namespace.into()),
                ..Default::default()
            },
            event_time: Some(MicroTime(now)),
            action: Some(ev.action.clone()),
            reason: Some(ev.reason.clone()),
            note: ev.note.clone(),
            type_: Some(
                match ev.type_ {
                    EventType::Normal => "Normal",
                    EventType::Warning => "Warning",
                }
                .into(),
            ),
            regarding: Some(regarding.clone()),
            related: ev.secondary.clone(),
            reporting_controller: Some(controller.clone()),
            reporting_instance: Some(
                self.reporter
                    .instance
                    .clone()
                    .unwrap_or_else(|| controller.clone()),
            ),
            ..Default::default()
        };
        Api::<K8sEvent>::namespaced(self.client.clone(), namespace)
            .create(&PostParams::default(), &event)
            .await
            .map(|created| created.metadata.name.unwrap_or_default())
    }
}
