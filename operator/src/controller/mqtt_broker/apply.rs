//! Stage 4 (async): apply the children in dependency order (Secrets, Services, the StatefulSet), then sweep
//! the ones this pass did not apply (a removed user's generated Secret, for one).

use super::build::Children;
use crate::apply::{Kept, Memo, sweep_workload};
use crate::children::Owner;
use crate::rollout::Rollout;
use kube::Client;

/// The StatefulSet's rollout as the API server holds it (it drives `EndpointReady`).
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
        user_secrets,
        sidecar_secret,
        config,
        headless,
        service,
        statefulset,
    } = children;
    let mut kept = Kept::new(memo, owner);
    for s in &user_secrets {
        kept.apply(client, s).await?;
    }
    kept.apply(client, &sidecar_secret).await?;
    kept.apply(client, &config).await?;
    kept.apply(client, &headless).await?;
    kept.apply(client, &service).await?;
    let statefulset = kept.apply_workload(client, &statefulset).await?;
    let mut swept = Vec::new();
    if kept.must_sweep() {
        swept = sweep_workload(client, owner, &kept).await?;
        kept.swept();
    }
    Ok(Applied { statefulset, swept })
}
