//! Stage 5: compute conditions from what was applied and write `status` with server-side apply on the
//! status subresource (never merge-patched). A status equal to the current one is not written.

use super::apply::Applied;
use super::validate::ValidatedMqttBroker;
use crate::reconcile::Invalid;
use crate::status::broker_ready;
use edgewire_api::condition::{self, Progress, reasons, types};
use edgewire_api::{MqttBroker, MqttBrokerStatus, MqttUserStatus};

/// The status of a reconciled MqttBroker.
pub fn desired(mqb: &MqttBroker, v: &ValidatedMqttBroker, applied: &Applied) -> MqttBrokerStatus {
    let generation = mqb.metadata.generation;
    let current = mqb.status.clone().unwrap_or_default();
    let (endpoint_ok, endpoint_msg) = broker_ready(&applied.statefulset);
    let ready_msg = if endpoint_ok {
        format!("Mosquitto is ready at {}", v.endpoint)
    } else {
        endpoint_msg.clone()
    };
    let conditions = vec![
        condition::new(
            types::ENDPOINT_READY,
            endpoint_ok,
            if endpoint_ok {
                reasons::READY
            } else {
                reasons::PROGRESSING
            },
            endpoint_msg,
            generation,
        ),
        condition::new(
            types::USERS_READY,
            true,
            reasons::SECRETS_RESOLVED,
            format!("{} user(s), every password Secret resolved", v.users.len()),
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
            types::TOPIC_RULE_READY,
            true,
            reasons::NOT_APPLICABLE,
            "a builtin broker has no IoT topic rule",
            generation,
        ),
    ];
    let conditions = [
        conditions,
        condition::summary(
            if endpoint_ok {
                Progress::Ready
            } else {
                Progress::Reconciling(reasons::PROGRESSING)
            },
            if endpoint_ok {
                reasons::READY
            } else {
                reasons::NOT_READY
            },
            ready_msg,
            generation,
        ),
    ]
    .concat();
    MqttBrokerStatus {
        observed_generation: generation,
        conditions: condition::merge(&current.conditions, conditions),
        endpoint: Some(v.endpoint.clone()),
        credentials_revision: Some(v.credentials_hash.clone()),
        users: v
            .users
            .iter()
            .map(|u| MqttUserStatus {
                name: u.name.clone(),
                secret_name: u.secret_name.clone(),
            })
            .collect(),
        topic_rule_arn: None,
    }
}

/// The status of an MqttBroker that cannot be reconciled: `Ready`, `CredentialsReady` and (when a user's
/// password is among the problems) `UsersReady` say why; the others and earlier fields stay (they describe
/// children that still exist).
pub fn failed(mqb: &MqttBroker, err: &Invalid) -> MqttBrokerStatus {
    let generation = mqb.metadata.generation;
    let current = mqb.status.clone().unwrap_or_default();
    let mut conditions = err.conditions(generation);
    if let Invalid::Credentials(problems) = err {
        let users: Vec<&str> = problems
            .iter()
            .filter(|p| p.user.is_some())
            .map(|p| p.message.as_str())
            .collect();
        if !users.is_empty() {
            conditions.push(condition::new(
                types::USERS_READY,
                false,
                err.reason(),
                users.join("; "),
                generation,
            ));
        }
    }
    MqttBrokerStatus {
        observed_generation: generation,
        conditions: condition::update(&current.conditions, conditions),
        ..current
    }
}
