//! What every child object shares: labels, owner reference, names.

use edgewire_api::labels;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::{Resource, ResourceExt};
use std::collections::BTreeMap;

/// `obj` as `render` shows it: a uid (owner references need one; a rendered object is not in a cluster
/// yet), the `default` namespace and generation 1 unless the file gives them.
pub fn for_render<K: Resource>(obj: &mut K) {
    let name = obj.name_any();
    let meta = obj.meta_mut();
    meta.uid
        .get_or_insert_with(|| format!("00000000-0000-0000-0000-{:0>12}", name.len()));
    meta.namespace.get_or_insert_with(|| "default".into());
    meta.generation.get_or_insert(1);
}

/// Identity of the resource that owns a child.
#[derive(Clone, Debug, PartialEq)]
pub struct Owner {
    pub name: String,
    pub namespace: String,
    /// `eventbroker`, `mqttbroker`, `bridgelink`: the sweep selects on it.
    pub kind_label: &'static str,
    pub owner_ref: OwnerReference,
}

impl Owner {
    /// The owner of children of `obj`. Fails only for objects not read from the API (no uid).
    pub fn of<K: Resource<DynamicType = ()>>(obj: &K, kind_label: &'static str) -> Option<Self> {
        Some(Owner {
            name: obj.name_any(),
            namespace: obj.namespace()?,
            kind_label,
            owner_ref: obj.controller_owner_ref(&())?,
        })
    }

    /// `app.kubernetes.io/{name,instance,component,managed-by}` plus the owner-kind label.
    pub fn labels(&self, app_name: &str, component: &str) -> BTreeMap<String, String> {
        BTreeMap::from([
            (labels::NAME.into(), app_name.into()),
            (labels::INSTANCE.into(), self.name.clone()),
            (labels::COMPONENT.into(), component.into()),
            (labels::MANAGED_BY.into(), labels::MANAGED_BY_VALUE.into()),
            (labels::PART_OF.into(), "edgewire".into()),
            (labels::OWNER_KIND.into(), self.kind_label.into()),
        ])
    }

    /// Labels that select the pods of one component (stable: never change them on a live workload).
    pub fn selector(&self, app_name: &str, component: &str) -> BTreeMap<String, String> {
        BTreeMap::from([
            (labels::NAME.into(), app_name.into()),
            (labels::INSTANCE.into(), self.name.clone()),
            (labels::COMPONENT.into(), component.into()),
        ])
    }

    /// Metadata of a child named `name`.
    pub fn meta(&self, name: impl Into<String>, app_name: &str, component: &str) -> ObjectMeta {
        ObjectMeta {
            name: Some(name.into()),
            namespace: Some(self.namespace.clone()),
            labels: Some(self.labels(app_name, component)),
            owner_references: Some(vec![self.owner_ref.clone()]),
            ..Default::default()
        }
    }

    /// The label selector string matching every child of this owner (for the sweep).
    pub fn sweep_selector(&self) -> String {
        format!(
            "{}={},{}={},{}={}",
            labels::INSTANCE,
            self.name,
            labels::MANAGED_BY,
            labels::MANAGED_BY_VALUE,
            labels::OWNER_KIND,
            self.kind_label
        )
    }
}
