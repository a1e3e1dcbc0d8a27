//! Per-object exponential backoff for the error policy: 5 s doubling to 5 min, reset on success.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

#[derive(Default)]
pub struct Backoff {
    failures: Mutex<HashMap<String, u32>>,
}

impl Backoff {
    pub const BASE: Duration = Duration::from_secs(5);
    pub const MAX: Duration = Duration::from_secs(300);

    /// Records a failure of `key` and returns how long to wait before retrying.
    pub fn fail(&self, key: &str) -> Duration {
        let mut m = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let n = m
            .entry(key.to_string())
            .and_modify(|n| *n = n.saturating_add(1))
            .or_insert(0);
        Self::BASE
            .saturating_mul(2u32.saturating_pow((*n).min(16)))
            .min(Self::MAX)
    }

    /// Forgets the failures of `key`.
    pub fn reset(&self, key: &str) {
        self.failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_per_object_caps_and_resets() {
        let b = Backoff::default();
        assert_eq!(b.fail("a"), Duration::from_secs(5));
        assert_eq!(b.fail("a"), Duration::from_secs(10));
        assert_eq!(
            b.fail("b"),
            Duration::from_secs(5),
            "other objects have their own count"
        );
        for _ in 0..20 {
            b.fail("a");
        }
        assert_eq!(b.fail("a"), Backoff::MAX);
        b.reset("a");
        assert_eq!(b.fail("a"), Duration::from_secs(5));
    }
}
