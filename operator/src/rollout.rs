//! What the operator keeps of a workload it applies: the few numbers its readiness is computed from.

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use kube::Resource;

/// What a workload's readiness is computed from: its generation, what its controller has observed, and its
/// replica counts. This is all the operator keeps of a workload it watches ([`crate::cache::Children`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Rollout {
    /// `metadata.generation`.
    pub generation: Option<i64>,
    /// `status.observedGeneration`.
    pub observed_generation: Option<i64>,
    /// `spec.replicas` (1 when unset).
    pub replicas: i32,
    pub ready: i32,
    pub updated: i32,
    pub available: i32,
    /// The status of the `Available` condition (Deployments), when there is one.
    pub available_condition: Option<bool>,
}

impl Rollout {
    /// Whether the workload's controller has seen its current generation.
    pub fn observed(&self) -> bool {
        self.observed_generation >= self.generation
    }
}

/// A workload the operator applies and computes readiness from.
pub trait Workload: Resource<DynamicType = ()> {
    fn rollout(&self) -> Rollout;
}

impl Workload for StatefulSet {
    fn rollout(&self) -> Rollout {
        let status = self.status.as_ref();
        Rollout {
            generation: self.metadata.generation,
            observed_generation: status.and_then(|s| s.observed_generation),
            replicas: self.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1),
            ready: status.and_then(|s| s.ready_replicas).unwrap_or(0),
            updated: status.and_then(|s| s.updated_replicas).unwrap_or(0),
            available: status.and_then(|s| s.available_replicas).unwrap_or(0),
            available_condition: None,
        }
    }
}

impl Workload for Deployment {
    fn rollout(&self) -> Rollout {
        let status = self.status.as_ref();
        Rollout {
            generation: self.metadata.generation,
            observed_generation: status.and_then(|s| s.observed_generation),
            replicas: self.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1),
            ready: status.and_then(|s| s.ready_replicas).unwrap_or(0),
            updated: status.and_then(|s| s.updated_replicas).unwrap_or(0),
            available: status.and_then(|s| s.available_replicas).unwrap_or(0),
            available_condition: status
                .and_then(|s| s.conditions.as_ref())
                .and_then(|cs| cs.iter().find(|c| c.type_ == "Available"))
                .map(|c| c.status == "True"),
        }
    }
}
