//! NATS clients for tests: subscriptions the server is known to have before anything is published.

use futures::StreamExt;
use std::time::Duration;

/// Returns once the server has handled everything `client` sent before: a message to a fresh inbox of
/// `client`, published after a subscription to it, comes back. The server handles one connection's
/// protocol in order, so a subscription made before this call is in place when it returns. Returns the
/// inbox it used: a wildcard subscription of `client` that matches it (`>`, `_INBOX.>`) receives the
/// message too.
///
/// `Client::flush` does not do this: it writes the client's buffer to the socket and returns (async-nats
/// 0.51), and a message another connection publishes right after can reach the server before the
/// subscription and go to nobody (seen under load: core NATS keeps nothing for a subscription that does
/// not exist yet).
pub async fn round_trip(client: &async_nats::Client) -> anyhow::Result<String> {
    let inbox = client.new_inbox();
    let mut echo = client.subscribe(inbox.clone()).await?;
    client.publish(inbox.clone(), bytes::Bytes::new()).await?;
    tokio::time::timeout(Duration::from_secs(30), echo.next())
        .await
        .map_err(|_| anyhow::anyhow!("no NATS round trip in 30 s"))?
        .ok_or_else(|| anyhow::anyhow!("the NATS client closed during a round trip"))?;
    Ok(inbox)
}

/// Subscribes `client` to `subject` and returns once the server has the subscription ([`round_trip`]).
pub async fn subscribed(
    client: &async_nats::Client,
    subject: &str,
) -> anyhow::Result<async_nats::Subscriber> {
    let sub = client.subscribe(subject.to_string()).await?;
    round_trip(client).await?;
    Ok(sub)
}
