//! Stage 4 (async): apply the children in dependency order (Secrets, Services, the StatefulSet), then sweep
//! the ones this pass did not apply (a removed user's generated Secret, for one).

use super::build::Children;
use crate::apply::{Kept, ssa, sweep};
use crate::children::Owner;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{Secret, Service};
use kube::Client;

/// What the API server returned for the StatefulSet (its status drives `EndpointReady`).
#[derive(Clone, Debug)]
pub struct Applied {
    pub statefulset: StatefulSet,
    /// Children deleted by the sweep.
    pub swept: Vec<String>,
}

pub async fn apply(
    client: &Client,
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
    let mut kept = Kept::default();
    for s in &user_secrets {
        kept.keep(&ssa(client, s).await?);
    }
    kept.keep(&ssa(client, &sidecar_secret).await?);
    kept.keep(&ssa(client, &config).await?);
    kept.keep(&ssa(client, &headless).await?);
    kept.keep(&ssa(client, &service).await?);
    let statefulset = ssa(client, &statefulset).await?;
    kept.keep(&statefulset);

    let ns = &owner.namespace;
    let sel = owner.sweep_selector();
    let mut swept = Vec::new();
    swept.extend(sweep::<StatefulSet>(client, ns, &sel, &kept).await?);
    swept.extend(sweep::<Service>(client, ns, &sel, &kept).await?);
    swept.extend(sweep::<Secret>(client, ns, &sel, &kept).await?);
    Ok(Applied { statefulset, swept })
}
