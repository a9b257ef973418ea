//! Exponential backoff with jitter between the attempts of a failing job.

use std::time::Duration;

use rand::RngExt;

use crate::error::{Error, Result};

/// Delay before the first retry.
pub const DEFAULT_BACKOFF_BASE: Duration = Duration::from_secs(1);
/// Longest delay between two attempts.
pub const DEFAULT_BACKOFF_MAX: Duration = Duration::from_secs(60 * 60);
/// Share of each delay that is random, so that jobs failing together (a
/// downstream outage) do not all retry at the same instant.
pub const DEFAULT_BACKOFF_JITTER: f64 = 0.25;

/// `base × 2^(n−1)` after the n-th failed attempt, capped at `max`, of which
/// a `jitter` share is random: the delay lies in `[(1 − jitter)·d, d]`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    jitter: f64,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            base: DEFAULT_BACKOFF_BASE,
            max: DEFAULT_BACKOFF_MAX,
            jitter: DEFAULT_BACKOFF_JITTER,
        }
    }
}

impl Backoff {
    /// A backoff starting at `base`, doubling, capped at `max`, with a
    /// `jitter` share (0.0 to 1.0) of randomness.
    pub fn new(base: Duration, max: Duration, jitter: f64) -> Result<Self> {
        if base.is_zero() || max < base {
            return Err(Error::invalid(format!(
                "backoff base {base:?} must be positive and at most max {max:?}"
            )));
        }
        if !(0.0..=1.0).contains(&jitter) {
            return Err(Error::invalid(format!(
                "backoff jitter {jitter} must be between 0 and 1"
            )));
        }
        Ok(Self { base, max, jitter })
    }

    /// The delay after `failed` attempts have failed (1 after the first).
    pub fn delay(&self, failed: u16) -> Duration {
        let exponent = u32::from(failed.saturating_sub(1)).min(32);
        let full = self
            .base
            .saturating_mul(1u32 << exponent.min(31))
            .min(self.max);
        if self.jitter == 0.0 {
            return full;
        }
        let keep = 1.0 - self.jitter * rand::rng().random::<f64>();
        full.mul_f64(keep)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_up_to_the_cap() {
        let b = Backoff::new(Duration::from_secs(1), Duration::from_secs(10), 0.0).unwrap();
        let delays: Vec<u64> = (1..=6).map(|n| b.delay(n).as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 8, 10, 10]);
        assert_eq!(b.delay(u16::MAX), Duration::from_secs(10));
    }

    #[test]
    fn jitter_stays_within_its_share() {
        let b = Backoff::new(Duration::from_secs(8), Duration::from_secs(60), 0.25).unwrap();
        for _ in 0..1000 {
            let d = b.delay(1);
            assert!(
                d >= Duration::from_secs(6) && d <= Duration::from_secs(8),
                "{d:?}"
            );
        }
    }

    #[test]
    fn bad_settings_are_refused() {
        assert!(Backoff::new(Duration::ZERO, Duration::from_secs(1), 0.1).is_err());
        assert!(Backoff::new(Duration::from_secs(2), Duration::from_secs(1), 0.1).is_err());
        assert!(Backoff::new(Duration::from_secs(1), Duration::from_secs(2), 1.5).is_err());
    }
}
