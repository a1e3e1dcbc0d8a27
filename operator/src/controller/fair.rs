//! The limit on reconciles running at once, taken first come, first served.
//!
//! kube's own limit (`controller::Config::concurrency`) is not used. At that limit its runner parks every due
//! object in a hash set and later takes them back in the set's iteration order, not in the order they became
//! due. While new triggers keep arriving (children being created, StatefulSet status updates), the objects in
//! the set's first buckets are served again and again and the others wait without bound. In the scale bench
//! (1,000 BridgeLinks among 2,200 resources) a BridgeLink had no status at all 609 s after the apply, while 353
//! others were Ready; first come first served halved the reconciles (docs/operator-profile.md).
//!
//! So kube's runner starts every due reconcile at once, one per object as before, and each waits here for a
//! permit of a FIFO semaphore (tokio's is fair): reconciles start in the order they became due. A reconcile
//! that waited reads its object again from the store when it gets its permit, so it never applies a spec that
//! changed while it waited. At shutdown the reconciles still waiting give up ([`Fair::close`]): kube's graceful
//! shutdown waits for every reconcile it started, and a backlog must not hold the process up.

use kube::Resource;
use kube::runtime::reflector::{ObjectRef, Store};
use std::sync::Arc;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Admits reconciles of one kind: at most `limit` at once (0: unbounded), in the order they asked.
pub struct Fair<K: Resource<DynamicType = ()> + 'static> {
    permits: Option<Arc<Semaphore>>,
    store: Store<K>,
}

impl<K: Resource<DynamicType = ()> + 'static> Clone for Fair<K> {
    fn clone(&self) -> Self {
        Self {
            permits: self.permits.clone(),
            store: self.store.clone(),
        }
    }
}

/// A reconcile's turn: hold it for the length of the reconcile.
pub struct Turn<K> {
    pub obj: Arc<K>,
    _permit: Option<OwnedSemaphorePermit>,
}

impl<K: Resource<DynamicType = ()> + Clone + 'static> Fair<K> {
    pub fn new(limit: u16, store: Store<K>) -> Self {
        Self {
            permits: (limit > 0).then(|| Arc::new(Semaphore::new(usize::from(limit)))),
            store,
        }
    }

    /// Waits for the turn of `obj` and returns it as the store has it then; `None` when it left the store
    /// meanwhile (deleted: there is nothing left to reconcile) or when the limiter was closed.
    pub async fn turn(&self, obj: Arc<K>) -> Option<Turn<K>> {
        let permit = match &self.permits {
            Some(p) => Some(p.clone().acquire_owned().await.ok()?),
            None => None,
        };
        let obj = self.store.get(&ObjectRef::from_obj(&*obj))?;
        Some(Turn {
            obj,
            _permit: permit,
        })
    }

    /// Ends every wait for a turn, now and later (shutdown); reconciles already running go on.
    pub fn close(&self) {
        if let Some(p) = &self.permits {
            p.close();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::api::ObjectMeta;
    use kube::runtime::controller::{Action, Config, applier};
    use kube::runtime::reflector::store;
    use kube::runtime::reflector::store::Writer;
    use kube::runtime::watcher::Event;
    use std::collections::BTreeMap;
    use std::convert::Infallible;
    use std::sync::Mutex;
    use std::time::Duration;

    fn cm(name: &str, version: &str) -> ConfigMap {
        ConfigMap {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("ns".into()),
                resource_version: Some(version.into()),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    /// A store that has listed ConfigMaps `names` (namespace `ns`, resourceVersion 1), and its writer.
    fn listed(names: &[String]) -> (Store<ConfigMap>, Writer<ConfigMap>) {
        let (reader, mut writer) = store::<ConfigMap>();
        writer.apply_watcher_event(&Event::Init);
        for name in names {
            writer.apply_watcher_event(&Event::InitApply(cm(name, "1")));
        }
        writer.apply_watcher_event(&Event::InitDone);
        (reader, writer)
    }

    const OBJECTS: usize = 48;
    /// Each reconcile triggers its object again, this many times in all: the events of its children.
    const RETRIGGERS: usize = 6;

    /// The order reconciles started in (object names), under a backlog that kube's own limit serves out of
    /// order: every object due at once, two running at a time, and each reconcile triggering its object again.
    async fn reconcile_order() -> Vec<String> {
        let names: Vec<String> = (0..OBJECTS).map(|i| format!("cm-{i:02}")).collect();
        let (reader, _writer) = listed(&names);
        let (tx, rx) =
            futures::channel::mpsc::unbounded::<Result<ObjectRef<ConfigMap>, Infallible>>();
        for name in &names {
            tx.unbounded_send(Ok(ObjectRef::new(name).within("ns")))
                .unwrap();
        }
        let started = Arc::new(Mutex::new(Vec::<String>::new()));
        let fair = Fair::new(2, reader.clone());
        let reconciles = applier(
            {
                let (started, tx) = (started.clone(), tx.clone());
                move |obj: Arc<ConfigMap>, _ctx: Arc<()>| {
                    let (fair, started, tx) = (fair.clone(), started.clone(), tx.clone());
                    Box::pin(async move {
                        let Some(turn) = fair.turn(obj).await else {
                            return Ok::<_, kube::Error>(Action::await_change());
                        };
                        let name = turn.obj.metadata.name.clone().unwrap_or_default();
                        let times = {
                            let mut s = started.lock().unwrap();
                            s.push(name.clone());
                            s.iter().filter(|n| **n == name).count()
                        };
                        tokio::time::sleep(Duration::from_millis(1)).await;
                        if times < RETRIGGERS {
                            let _ = tx.unbounded_send(Ok(ObjectRef::from_obj(&*turn.obj)));
                        }
                        Ok(Action::await_change())
                    })
                }
            },
            |_, _, _| Action::await_change(),
            Arc::new(()),
            reader,
            rx,
            Config::default(),
        );
        tokio::time::timeout(
            Duration::from_secs(60),
            reconciles.take(OBJECTS * RETRIGGERS).for_each(|_| async {}),
        )
        .await
        .expect("every reconcile ran");
        drop(tx);
        started.lock().unwrap().clone()
    }

    #[tokio::test]
    async fn every_object_is_reconciled_once_before_any_is_reconciled_a_third_time() {
        let order = reconcile_order().await;
        let mut seen = BTreeMap::<&str, usize>::new();
        let mut firsts = 0;
        for (i, name) in order.iter().enumerate() {
            let n = seen.entry(name).or_default();
            *n += 1;
            if *n == 1 {
                firsts += 1;
            }
            assert!(
                *n < 3 || firsts == OBJECTS,
                "reconcile {i}: {name} for the third time while {} object(s) wait for their first: {order:?}",
                OBJECTS - firsts
            );
        }
        assert_eq!(firsts, OBJECTS, "{order:?}");
    }

    #[tokio::test]
    async fn a_reconcile_that_waited_sees_the_object_as_it_is_when_its_turn_comes() {
        let (reader, mut writer) = listed(&["a".into(), "gone".into()]);
        let fair = Fair::new(1, reader.clone());
        let stale = reader.get(&ObjectRef::new("a").within("ns")).unwrap();
        let gone = reader.get(&ObjectRef::new("gone").within("ns")).unwrap();
        let running = fair.turn(stale.clone()).await.expect("a is in the store");
        let waiting = tokio::spawn({
            let fair = fair.clone();
            async move { fair.turn(stale).await.map(|t| t.obj) }
        });
        let waiting_gone = tokio::spawn({
            let fair = fair.clone();
            async move { fair.turn(gone).await.map(|t| t.obj) }
        });
        tokio::task::yield_now().await;
        writer.apply_watcher_event(&Event::Apply(cm("a", "2")));
        writer.apply_watcher_event(&Event::Delete(cm("gone", "1")));
        drop(running);
        let seen = waiting.await.unwrap().expect("a is still in the store");
        assert_eq!(seen.metadata.resource_version.as_deref(), Some("2"));
        assert!(waiting_gone.await.unwrap().is_none());
    }

    #[tokio::test]
    async fn waits_end_at_shutdown_and_the_running_reconcile_keeps_its_turn() {
        let (reader, _writer) = listed(&["a".into()]);
        let fair = Fair::new(1, reader.clone());
        let a = reader.get(&ObjectRef::new("a").within("ns")).unwrap();
        let running = fair.turn(a.clone()).await.expect("a is in the store");
        let waiting = tokio::spawn({
            let (fair, a) = (fair.clone(), a.clone());
            async move { fair.turn(a).await.is_some() }
        });
        tokio::task::yield_now().await;
        fair.close();
        let waited = tokio::time::timeout(Duration::from_secs(10), waiting)
            .await
            .expect("the wait ended at close")
            .unwrap();
        assert!(!waited, "a turn was given after close");
        assert_eq!(running.obj.metadata.name.as_deref(), Some("a"));
        assert!(fair.turn(a).await.is_none());
    }
}
