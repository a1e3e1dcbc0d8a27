pub mod mock_api;

use edgewire_operator::context::Context;
use edgewire_operator::context::Settings;
use edgewire_operator::metrics::Metrics;
use std::sync::Arc;

/// The operator's own namespace in these tests.
pub const HOME_NAMESPACE: &str = "edgewire-system";

/// The controllers' context over `client` (a [`mock_api::MockApi`] client), with a fixed agent image, the
/// operator's namespace [`HOME_NAMESPACE`].
pub fn ctx(client: kube::Client) -> Arc<Context> {
    let settings = Settings {
        agent: "ghcr.io/edgewire/edgewire-agent:test".into(),
        agent_pull_policy: None,
        ..Settings::default()
    };
    Arc::new(
        Context::new(
            client,
            settings,
            Arc::new(Metrics::default()),
            Some("test".into()),
        )
        .with_home_namespace(HOME_NAMESPACE),
    )
}
