//! Names, labels, paths and fixed settings of a BridgeLink's children: what every stage may know.

use std::time::Duration;

/// Owner-kind label value of BridgeLink children.
pub const KIND_LABEL: &str = "bridgelink";
/// `app.kubernetes.io/name` of the bridge's objects.
pub const APP: &str = "edgewire-bridge";
/// `app.kubernetes.io/component`, and the container's name.
pub const COMPONENT: &str = "bridge";
/// Port of `/metrics`, `/healthz`, `/readyz` (named `metrics`).
pub const METRICS_PORT: i32 = 9464;
/// Key of the config file in `<bl>-bridge-config`.
pub const CONFIG_KEY: &str = "bridge.yaml";
/// Where the config Secret is mounted.
pub const CONFIG_DIR: &str = "/etc/edgewire/bridge";
/// Where each referenced Secret is mounted, as `<dir>/<secret name>/`.
pub const SECRETS_DIR: &str = "/etc/edgewire/secrets";
/// Where the spool PVC is mounted.
pub const SPOOL_DIR: &str = "/var/lib/edgewire/spool";
/// The volumeClaimTemplate of the spool.
pub const SPOOL_VOLUME: &str = "spool";
pub const CONFIG_VOLUME: &str = "config";
/// How often a BridgeLink is looked at again without a change: `status.runtime` turns stale without any
/// event, so this is short.
pub const RESYNC: Duration = Duration::from_secs(30);

/// StatefulSet, headless Service, ServiceAccount, Role and RoleBinding: `<bl>-bridge`.
pub fn bridge_name(bl: &str) -> String {
    format!("{bl}-bridge")
}

/// The agent's config Secret: `<bl>-bridge-config`.
pub fn config_secret_name(bl: &str) -> String {
    format!("{bl}-bridge-config")
}
