//! Edgewire's custom resource types, `edgewire.dev/v1alpha1`.
//!
//! This crate holds only types and pure functions over them (no I/O): the operator, the agent and the
//! end-to-end suite all read the same definitions.

pub mod condition;
pub mod domain;
pub mod endpoint;
pub mod env;
pub mod quantity;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod v1alpha1;

pub use v1alpha1::*;

/// API group of every Edgewire kind.
pub const GROUP: &str = "edgewire.dev";
/// The one server-side-apply field manager of the operator.
pub const FIELD_MANAGER: &str = "edgewire-operator";
/// The field manager the bridge agent (`edgewire-agent bridge`) uses for `status.runtime` (separate from the
/// operator's, so neither overwrites the other's fields).
pub const BRIDGE_FIELD_MANAGER: &str = "edgewire-bridge";

/// Pod-template annotation holding the hash of every referenced Secret's data.
pub const CREDENTIALS_HASH_ANNOTATION: &str = "edgewire.dev/credentials-hash";
/// Pod-template annotation with a digest of a workload's rendered configuration: a config change that is not a
/// credentials change (more replicas, so more cluster routes; a new operator version) rolls the workload too.
pub const CONFIG_HASH_ANNOTATION: &str = "edgewire.dev/config-hash";
/// Label/tag put on external resources (cloud topics, IoT rules) the operator created.
pub const OWNER_TAG: &str = "edgewire.dev/owner";

/// Standard labels put on every child object.
pub mod labels {
    pub const NAME: &str = "app.kubernetes.io/name";
    pub const INSTANCE: &str = "app.kubernetes.io/instance";
    pub const COMPONENT: &str = "app.kubernetes.io/component";
    pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
    pub const PART_OF: &str = "app.kubernetes.io/part-of";
    /// Value of `app.kubernetes.io/managed-by` on children.
    pub const MANAGED_BY_VALUE: &str = "edgewire-operator";
    /// Which kind owns a child (`eventbroker`, `mqttbroker`, `bridgelink`): the sweep of unwanted
    /// children selects on it, so two kinds with the same name never delete each other's objects.
    pub const OWNER_KIND: &str = "edgewire.dev/owner-kind";
}
