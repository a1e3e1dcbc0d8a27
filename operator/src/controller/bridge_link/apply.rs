//! Stage 4 (async): apply the children in dependency order (the config Secret, the ServiceAccount and its
//! Role and RoleBinding, the Service, then the StatefulSet), then sweep the ones this pass did not apply.

use super::build::Children;
use crate::apply::{Kept, Memo, sweep, sweep_workload};
use crate::children::Owner;
use crate::rollout::Rollout;
use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::Client;

/// The StatefulSet's rollout as the API server holds it (it drives `Ready`).
#[derive(Clone, Debug)]
pub struct Applied {
    pub statefulset: Rollout,
    /// Children deleted by the sweep.
    pub swept: Vec<String>,
}

pub async fn apply(
    client: &Client,
    memo: &Memo,
    owner: &Owner,
    children: Children,
) -> Result<Applied, kube::Error> {
    let Children {
        config,
        service_account,
        role,
        role_binding,
        service,
        statefulset,
    } = children;
    let mut kept = Kept::new(memo, owner);
    kept.apply(client, &config).await?;
    kept.apply(client, &service_account).await?;
    kept.apply(client, &role).await?;
    kept.apply(client, &role_binding).await?;
    kept.apply(client, &service).await?;
    let statefulset = kept.apply_workload(client, &statefulset).await?;

    let mut swept = Vec::new();
    if kept.must_sweep() {
        swept = sweep_workload(client, owner, &kept).await?;
        swept.extend(sweep::<RoleBinding>(client, owner, &kept).await?);
        swept.extend(sweep::<Role>(client, owner, &kept).await?);
        swept.extend(sweep::<ServiceAccount>(client, owner, &kept).await?);
        kept.swept();
    }
    Ok(Applied { statefulset, swept })
}
