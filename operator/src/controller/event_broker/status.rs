//! Stage 5: compute conditions from what was applied and write `status` with server-side apply on the
//! status subresource (never merge-patched). A status equal to the current one is not written.

use super::apply::Applied;
use super::build::broker::client_endpoint;
use super::build::publisher::ingress_url;
use super::validate::ValidatedEventBroker;
use crate::reconcile::Invalid;
use crate::rollout::Rollout;
use crate::status::broker_ready;
use edgewire_api::condition::{self, Progress, reasons, types};
use edgewire_api::{EventBroker, EventBrokerStatus};

/// (ready, message) of the publisher Deployment: its controller saw the current generation, every replica is
/// updated to it and available, and its `Available` condition is not False (while a rollout replaces pods,
/// `Reconciling` stays True).
pub fn publisher_ready(d: &Rollout) -> (bool, String) {
    let (want, available, updated) = (d.replicas, d.available, d.updated);
    let current_gen = d.observed();
    let cond = d.available_condition;
    let ok =
        current_gen && (want == 0 || (available >= want && updated >= want && cond != Some(false)));
    let msg = if ok || !current_gen || updated >= want {
        format!("{available}/{want} publisher replicas available")
    } else {
        format!("{available}/{want} publisher replicas available, {updated}/{want} updated")
    };
    (ok, msg)
}

/// The status of a reconciled EventBroker.
pub fn desired(eb: &EventBroker, v: &ValidatedEventBroker, applied: &Applied) -> EventBrokerStatus {
    let generation = eb.metadata.generation;
    let current = eb.status.clone().unwrap_or_default();
    let (broker_ok, broker_msg, broker_reason) = match &applied.broker {
        Some(sts) => {
            let (ok, msg) = broker_ready(sts);
            (
                ok,
                msg,
                if ok {
                    reasons::READY
                } else {
                    reasons::PROGRESSING
                },
            )
        }
        None => (
            true,
            "the broker is external to Edgewire".to_string(),
            reasons::EXTERNAL,
        ),
    };
    let (pub_ok, pub_msg) = publisher_ready(&applied.publisher);
    let ready = broker_ok && pub_ok;
    let ready_msg = match (broker_ok, pub_ok) {
        (true, true) => "broker and publisher are ready".to_string(),
        (false, _) => broker_msg.clone(),
        (true, false) => pub_msg.clone(),
    };
    let conditions = vec![
        condition::new(
            types::BROKER_READY,
            broker_ok,
            broker_reason,
            broker_msg,
            generation,
        ),
        condition::new(
            types::PUBLISHER_READY,
            pub_ok,
            if pub_ok {
                reasons::AVAILABLE
            } else {
                reasons::PROGRESSING
            },
            pub_msg,
            generation,
        ),
        condition::new(
            types::CREDENTIALS_READY,
            true,
            reasons::SECRETS_RESOLVED,
            "every referenced Secret and key exists",
            generation,
        ),
        condition::new(
            types::TOPICS_READY,
            true,
            reasons::NOT_APPLICABLE,
            "no managed-cloud topics for this adapter",
            generation,
        ),
    ];
    let conditions = [
        conditions,
        condition::summary(
            if ready {
                Progress::Ready
            } else {
                Progress::Reconciling(reasons::PROGRESSING)
            },
            if ready {
                reasons::READY
            } else {
                reasons::NOT_READY
            },
            ready_msg,
            generation,
        ),
    ]
    .concat();
    EventBrokerStatus {
        observed_generation: generation,
        conditions: condition::merge(&current.conditions, conditions),
        endpoint: Some(ingress_url(v)),
        broker_endpoint: Some(match &v.broker {
            Some(plan) => client_endpoint(&v.owner, plan.kind).url(),
            None => external_endpoint(eb),
        }),
        topics: current.topics,
        credentials_revision: Some(v.credentials_hash.clone()),
        generated_secret: v
            .broker
            .as_ref()
            .and_then(|b| b.generated.as_ref())
            .map(|g| g.secret_name.clone()),
    }
}

/// Where an external broker is, without credentials (URL Secrets are not read into status).
fn external_endpoint(eb: &EventBroker) -> String {
    let s = &eb.spec;
    match s.adapter.canonical() {
        edgewire_api::Adapter::Nats => s
            .nats
            .as_ref()
            .map(|n| n.urls.join(","))
            .unwrap_or_default(),
        edgewire_api::Adapter::Kafka => s
            .kafka
            .as_ref()
            .map(|k| k.urls.join(","))
            .unwrap_or_default(),
        edgewire_api::Adapter::Mqtt => s
            .mqtt
            .as_ref()
            .and_then(|m| m.url.clone())
            .unwrap_or_default(),
        edgewire_api::Adapter::Amqp091 | edgewire_api::Adapter::Rabbitmq => s
            .amqp091
            .as_ref()
            .and_then(|a| a.url.as_ref())
            .map(|u| format!("secret:{}/{}", u.name, u.key))
            .unwrap_or_default(),
        edgewire_api::Adapter::Redis => s
            .redis
            .as_ref()
            .and_then(|a| a.url.as_ref())
            .map(|u| format!("secret:{}/{}", u.name, u.key))
            .unwrap_or_default(),
        _ => String::new(),
    }
}

/// The status of an EventBroker that cannot be reconciled: `Ready` (and `CredentialsReady`) say why; the
/// other conditions and earlier endpoints stay.
pub fn failed(eb: &EventBroker, err: &Invalid) -> EventBrokerStatus {
    let generation = eb.metadata.generation;
    let current = eb.status.clone().unwrap_or_default();
    EventBrokerStatus {
        observed_generation: generation,
        conditions: condition::update(&current.conditions, err.conditions(generation)),
        ..current
    }
}
