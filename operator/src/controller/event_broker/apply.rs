//! Stage 4 (async): apply the children in dependency order, then sweep the ones this pass did not apply.

use super::build::Children;
use super::build::broker::{BrokerChildren, UiChildren};
use crate::apply::{Kept, ssa, sweep};
use crate::children::Owner;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{Secret, Service, ServiceAccount};
use kube::Client;

/// What the API server returned for the workloads (their status drives the conditions).
#[derive(Clone, Debug)]
pub struct Applied {
    pub publisher: Deployment,
    pub broker: Option<StatefulSet>,
    /// Children deleted by the sweep.
    pub swept: Vec<String>,
}

pub async fn apply(
    client: &Client,
    owner: &Owner,
    children: Children,
) -> Result<Applied, kube::Error> {
    let Children {
        service_account,
        generated_secret,
        broker,
        publisher_service,
        publisher_deployment,
    } = children;
    let mut kept = Kept::default();

    kept.keep(&ssa(client, &service_account).await?);
    if let Some(s) = &generated_secret {
        kept.keep(&ssa(client, s).await?);
    }
    let mut broker_sts = None;
    if let Some(BrokerChildren {
        config,
        headless,
        client: client_svc,
        statefulset,
        ui,
    }) = broker
    {
        kept.keep(&ssa(client, &config).await?);
        kept.keep(&ssa(client, &headless).await?);
        kept.keep(&ssa(client, &client_svc).await?);
        if let Some(UiChildren {
            deployment,
            service,
        }) = &ui
        {
            kept.keep(&ssa(client, service).await?);
            if let Some(d) = deployment {
                kept.keep(&ssa(client, d).await?);
            }
        }
        let sts = ssa(client, &statefulset).await?;
        kept.keep(&sts);
        broker_sts = Some(sts);
    }
    kept.keep(&ssa(client, &publisher_service).await?);
    let publisher = ssa(client, &publisher_deployment).await?;
    kept.keep(&publisher);

    let ns = &owner.namespace;
    let sel = owner.sweep_selector();
    let mut swept = Vec::new();
    swept.extend(sweep::<Deployment>(client, ns, &sel, &kept).await?);
    swept.extend(sweep::<StatefulSet>(client, ns, &sel, &kept).await?);
    swept.extend(sweep::<Service>(client, ns, &sel, &kept).await?);
    swept.extend(sweep::<Secret>(client, ns, &sel, &kept).await?);
    swept.extend(sweep::<ServiceAccount>(client, ns, &sel, &kept).await?);
    Ok(Applied {
        publisher,
        broker: broker_sts,
        swept,
    })
}
