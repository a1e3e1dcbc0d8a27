//! The one retry curve of the agent: every reconnect loop (publisher adapters, bridge sides, the MQTT
//! sidecar), async-nats' own reconnects and the bridge forwarder's resends wait by it.
//!
//! Exponential backoff with jitter, by `backon`'s [`ExponentialBuilder`]: the base wait starts at the
//! policy's `min` and doubles per failed attempt; each wait is the base stretched by a random factor in
//! `[1, 2)` (backon's jitter, from a seeded PRNG, not the clock), so clients that lost the same broker at
//! the same moment do not come back in lockstep. The base is capped at half of `max`, so no wait is longer
//! than `max` — the longest wait of the hand-written curves this replaced.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};

/// A backoff curve: from `min`, doubling, jittered, at most `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    min: Duration,
    max: Duration,
}

/// Publisher adapters and `tail`: a broker that comes back is used again within 5 s.
pub const PUBLISHER: Policy = Policy::new(Duration::from_millis(250), Duration::from_secs(5));

/// Bridge sides and the forwarder's resend after a failed cloud round: at most 10 s.
pub const BRIDGE: Policy = Policy::new(Duration::from_millis(250), Duration::from_secs(10));

/// The MQTT sidecar's connection to its Mosquitto (metrics only; no hurry): at most 30 s.
pub const SIDECAR: Policy = Policy::new(Duration::from_millis(500), Duration::from_secs(30));

/// Attempts beyond this all wait alike (the base reached its cap long before).
const MAX_STEPS: usize = 32;

impl Policy {
    pub const fn new(min: Duration, max: Duration) -> Self {
        Self { min, max }
    }

    fn builder(self) -> ExponentialBuilder {
        // The jitter adds up to one more base wait: a base of at most max/2 keeps every wait under max.
        let cap = (self.max / 2).max(self.min);
        ExponentialBuilder::new()
            .with_min_delay(self.min)
            .with_max_delay(cap)
            .with_factor(2.0)
            .with_jitter()
            .without_max_times()
    }

    /// A fresh sequence of waits.
    pub fn backoff(self) -> Backoff {
        Backoff {
            policy: self,
            waits: self.builder().build(),
        }
    }

    /// The wait before retry `n` (0-based), for clients that count their attempts themselves
    /// (async-nats' `reconnect_delay_callback`).
    pub fn delay(self, n: usize) -> Duration {
        self.backoff().nth(n.min(MAX_STEPS))
    }

    /// The longest wait.
    pub fn max(self) -> Duration {
        self.max
    }
}

/// The waits of one retry loop: [`Backoff::wait`] after a failure, [`Backoff::reset`] after a success.
#[derive(Debug)]
pub struct Backoff {
    policy: Policy,
    waits: ExponentialBackoff,
}

impl Backoff {
    /// The next wait.
    pub fn next_delay(&mut self) -> Duration {
        self.waits
            .next()
            .unwrap_or(self.policy.max)
            .min(self.policy.max)
    }

    /// Sleeps the next wait.
    pub async fn wait(&mut self) {
        tokio::time::sleep(self.next_delay()).await;
    }

    /// Starts again from the shortest wait (after a success).
    pub fn reset(&mut self) {
        self.waits = self.policy.builder().build();
    }

    /// The wait after `n` more failures (0: the next one).
    fn nth(mut self, n: usize) -> Duration {
        for _ in 0..n {
            self.next_delay();
        }
        self.next_delay()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The base wait of retry `n`: `min` doubling, capped at half of `max`.
    fn base(p: Policy, n: u32) -> Duration {
        p.min
            .saturating_mul(1 << n.min(20))
            .min(p.max / 2)
            .max(p.min)
    }

    #[test]
    fn waits_double_from_min_with_jitter_and_never_exceed_max() {
        for p in [PUBLISHER, BRIDGE, SIDECAR] {
            let mut b = p.backoff();
            for n in 0..40 {
                let d = b.next_delay();
                let lo = base(p, n);
                assert!(
                    d >= lo && d < lo * 2 + Duration::from_millis(1),
                    "{p:?} #{n}: {d:?}"
                );
                assert!(d <= p.max(), "{p:?} #{n}: {d:?}");
            }
        }
        // The first wait is about the minimum, a late one near the cap.
        let mut b = BRIDGE.backoff();
        assert!(b.next_delay() < Duration::from_millis(500));
        assert!(BRIDGE.delay(30) >= Duration::from_secs(5));
    }

    #[test]
    fn the_jitter_is_random_not_the_same_for_everybody() {
        let waits: std::collections::HashSet<Duration> =
            (0..50).map(|_| PUBLISHER.delay(3)).collect();
        assert!(waits.len() > 10, "{waits:?}");
    }

    #[test]
    fn reset_starts_from_the_shortest_wait_again() {
        let mut b = BRIDGE.backoff();
        for _ in 0..10 {
            b.next_delay();
        }
        assert!(b.next_delay() >= Duration::from_secs(5));
        b.reset();
        assert!(b.next_delay() < Duration::from_millis(500));
        // Far beyond the cap the callback's value stays bounded.
        assert!(PUBLISHER.delay(usize::MAX) <= PUBLISHER.max());
    }
}
