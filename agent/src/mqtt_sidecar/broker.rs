//! The sidecar's own MQTT connection to Mosquitto: subscribe to `$SYS/#`, feed [`super::sys::SysState`],
//! reconnect with [`crate::retry::SIDECAR`].

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{Context, bail};
use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, QoS, SubscribeReasonCode};

use super::Shared;
use super::sys::{SYS_FILTER, Update};
use crate::connect;
use crate::tls::{TlsError, TlsSettings};

/// Port when `--broker` names none.
pub const DEFAULT_PORT: u16 = 1883;

/// `host:port`, `[v6]:port` or `host` (port 1883) → (host, port).
pub fn parse_address(address: &str) -> anyhow::Result<(String, u16)> {
    let address = address.trim();
    let (host, port) = if let Some(rest) = address.strip_prefix('[') {
        let (host, after) = rest
            .split_once(']')
            .with_context(|| format!("--broker {address:?}: missing `]`"))?;
        match after {
            "" => (host, None),
            p => (
                host,
                Some(p.strip_prefix(':').with_context(|| {
                    format!("--broker {address:?}: expected `:port` after `]`")
                })?),
            ),
        }
    } else {
        match address.rsplit_once(':') {
            Some((h, _)) if h.contains(':') => (address, None), // bare IPv6 without brackets
            Some((h, p)) => (h, Some(p)),
            None => (address, None),
        }
    };
    if host.is_empty() {
        bail!("--broker {address:?}: no host");
    }
    let port = match port {
        None => DEFAULT_PORT,
        Some(p) => match p.parse::<u16>() {
            Ok(p) if p > 0 => p,
            _ => bail!("--broker {address:?}: {p:?} is not a port"),
        },
    };
    Ok((host.to_string(), port))
}

/// A client id unique to this process and connection object (several sidecars may share a broker in tests).
fn client_id() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "edgewire-mqtt-sidecar-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Connection options: clean session (the subscription is renewed on every connect), the sidecar's login,
/// plain TCP (Mosquitto in the same pod).
pub fn options(
    host: &str,
    port: u16,
    username: Option<&str>,
    password: Option<&str>,
) -> Result<MqttOptions, TlsError> {
    let credentials = (username.is_some() || password.is_some()).then(|| {
        (
            username.unwrap_or_default().to_string(),
            password.unwrap_or_default().to_string(),
        )
    });
    let mut o = connect::mqtt::options(
        client_id(),
        host,
        port,
        credentials,
        &TlsSettings::default(),
    )?;
    o.set_clean_session(true);
    Ok(o)
}

/// Drives the connection forever: (re)connect, subscribe to `$SYS/#`, store what arrives.
pub(super) async fn watch(shared: Arc<Shared>, client: AsyncClient, mut el: EventLoop) {
    let mut failures = 0u32;
    let mut backoff = crate::retry::SIDECAR.backoff();
    let mut last_error: Option<String> = None;
    loop {
        match el.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                // rumqttc reports a refused CONNACK as an error, so this one is accepted.
                shared.broker_connected();
                if failures > 0 {
                    tracing::info!(broker = %shared.broker_address, "connected to the broker again");
                }
                failures = 0;
                backoff.reset();
                last_error = None;
                if let Err(e) = client.try_subscribe(SYS_FILTER, QoS::AtMostOnce) {
                    tracing::warn!(error = %e, "cannot queue the $SYS/# subscription");
                }
            }
            Ok(Event::Incoming(Packet::SubAck(ack))) => {
                if ack
                    .return_codes
                    .iter()
                    .all(|c| matches!(c, SubscribeReasonCode::Success(_)))
                {
                    shared.broker_subscribed();
                    tracing::info!(broker = %shared.broker_address, "subscribed to {SYS_FILTER}");
                } else {
                    let why = format!(
                        "the broker refused the {SYS_FILTER} subscription (the sidecar's user needs `topic read {SYS_FILTER}`)"
                    );
                    tracing::warn!(broker = %shared.broker_address, "{why}");
                    shared.broker_problem(why);
                }
            }
            Ok(Event::Incoming(Packet::Publish(p))) => {
                if shared.sys_update(&p.topic, &p.payload) == Update::Malformed {
                    tracing::debug!(topic = %p.topic, "unexpected $SYS payload; metric dropped");
                }
            }
            Ok(_) => {}
            Err(e) => {
                let why = connect::mqtt::describe(&e);
                shared.broker_down(why.clone());
                failures = failures.saturating_add(1);
                let delay = backoff.next_delay();
                // Once per distinct problem, then quietly: a broker that stays away must not flood the log.
                if last_error.as_deref() != Some(why.as_str()) {
                    tracing::warn!(broker = %shared.broker_address, error = %why, retry_in = ?delay, "not connected to the broker");
                } else {
                    tracing::debug!(broker = %shared.broker_address, error = %why, retry_in = ?delay, "still not connected");
                }
                last_error = Some(why);
                tokio::time::sleep(delay).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_broker_addresses() {
        let ok = |s: &str| parse_address(s).unwrap();
        assert_eq!(ok("127.0.0.1:1883"), ("127.0.0.1".into(), 1883));
        assert_eq!(ok("mqtt.ns.svc:8883"), ("mqtt.ns.svc".into(), 8883));
        assert_eq!(ok("localhost"), ("localhost".into(), 1883));
        assert_eq!(ok("[::1]:1884"), ("::1".into(), 1884));
        assert_eq!(ok("[::1]"), ("::1".into(), 1883));
        assert_eq!(ok("::1"), ("::1".into(), 1883));
        for bad in [
            "",
            ":1883",
            "host:",
            "host:0",
            "host:70000",
            "host:x",
            "[::1",
            "[::1]x",
        ] {
            assert!(parse_address(bad).is_err(), "{bad:?}");
        }
    }
}
