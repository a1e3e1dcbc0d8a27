//! Stage 4 (async): apply the children in dependency order, then sweep the ones this pass did not apply.

use super::build::Children;
use super::build::broker::{BrokerChildren, UiChildren};
use crate::apply::{Kept, Memo, sweep, sweep_workload};
use crate::children::Owner;
use crate::rollout::Rollout;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::Client;

/// The rollouts of the workloads as the API server holds them (they drive the conditions).
#[derive(Clone, Debug)]
pub struct Applied {
    pub publisher: Rollout,
    pub broker: Option<Rollout>,
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
        service_account,
        generated_secret,
        broker,
        publisher_service,
        publisher_deployment,
    } = children;
    let mut kept = Kept::new(memo, owner);

    kept.apply(client, &service_account).await?;
    if let Some(s) = &generated_secret {
        kept.apply(client, s).await?;
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
        kept.apply(client, &config).await?;
        kept.apply(client, &headless).await?;
        kept.apply(client, &client_svc).await?;
        if let Some(UiChildren {
            deployment,
            service,
        }) = &ui
        {
            kept.apply(client, service).await?;
            if let Some(d) = deployment {
                kept.apply(client, d).await?;
            }
        }
        broker_sts = Some(kept.apply_workload(client, &statefulset).await?);
    }
    kept.apply(client, &publisher_service).await?;
    let publisher = kept.apply_workload(client, &publisher_deployment).await?;

    let mut swept = Vec::new();
    if kept.must_sweep() {
        swept = sweep::<Deployment>(client, owner, &kept).await?;
        swept.extend(sweep_workload(client, owner, &kept).await?);
        swept.extend(sweep::<ServiceAccount>(client, owner, &kept).await?);
        kept.swept();
    }
    Ok(Applied {
        publisher,
        broker: broker_sts,
        swept,
    })
}
