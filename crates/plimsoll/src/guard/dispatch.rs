//! The dispatcher: deduplication, rate limits and fan-out of alerts to the
//! sinks.
//!
//! Escalations (a memory level raised, a leeway level raised, Redis starting
//! to refuse writes) are always sent. Everything else (clears, repeated OOM
//! or eviction reports, "Redis is unreachable", "no maxmemory") is sent at
//! most once per key per [`DEFAULT_DEDUP_WINDOW`] and within a budget of
//! [`DEFAULT_RATE_LIMIT`] alerts per [`DEFAULT_RATE_WINDOW`].
//!
//! It sits apart from [`alerts`](super::alerts) (what an alert says) and
//! [`sinks`](super::sinks) (where it goes) because it needs both, while the
//! sinks need only the alert types.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use super::alerts::Alert;
use super::sinks::AlertSink;

/// The same non-escalating alert is not repeated within this time.
pub const DEFAULT_DEDUP_WINDOW: Duration = Duration::from_secs(60 * 60);
/// Non-escalating alerts sent per [`DEFAULT_RATE_WINDOW`] at most.
pub const DEFAULT_RATE_LIMIT: usize = 10;
/// The window of the rate limit.
pub const DEFAULT_RATE_WINDOW: Duration = Duration::from_secs(60 * 60);

/// What the dispatcher did with an alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dispatch {
    /// Sent to every sink (some may have failed; see the counters).
    Sent,
    /// Held back: the same alert was sent within the dedup window.
    Duplicate,
    /// Held back: the rate limit was reached.
    RateLimited,
}

/// Deduplication, rate limiting and fan-out to the sinks.
#[derive(Debug)]
pub struct Dispatcher {
    sinks: Vec<Arc<dyn AlertSink>>,
    dedup_window_ms: u64,
    rate_limit: usize,
    rate_window_ms: u64,
    last_sent: HashMap<String, u64>,
    recent: VecDeque<u64>,
    /// Deliveries that failed (counted per sink).
    pub failures: u64,
}

impl Dispatcher {
    /// A dispatcher over `sinks`.
    pub fn new(
        sinks: Vec<Arc<dyn AlertSink>>,
        dedup_window: Duration,
        rate_limit: usize,
        rate_window: Duration,
    ) -> Self {
        Self {
            sinks,
            dedup_window_ms: crate::clock::ms(dedup_window),
            rate_limit,
            rate_window_ms: crate::clock::ms(rate_window),
            last_sent: HashMap::new(),
            recent: VecDeque::new(),
            failures: 0,
        }
    }

    /// Decides whether `alert` goes out, without sending it.
    pub fn admit(&mut self, alert: &Alert) -> Dispatch {
        let now = alert.at_ms;
        let key = alert.dedup_key();
        if !alert.kind.is_escalation() {
            if let Some(&last) = self.last_sent.get(&key)
                && now.saturating_sub(last) < self.dedup_window_ms
            {
                return Dispatch::Duplicate;
            }
            while self
                .recent
                .front()
                .is_some_and(|t| now.saturating_sub(*t) >= self.rate_window_ms)
            {
                self.recent.pop_front();
            }
            if self.recent.len() >= self.rate_limit {
                return Dispatch::RateLimited;
            }
            self.recent.push_back(now);
        }
        self.last_sent.insert(key, now);
        Dispatch::Sent
    }

    /// Sends an admitted alert to every sink at once; a sink that fails is
    /// logged and counted, and does not stop the others.
    pub async fn send(&mut self, alert: &Alert) {
        let sends = self.sinks.iter().map(|sink| async move {
            let result = sink.send(alert).await;
            (sink.name().to_string(), result)
        });
        for (sink, result) in futures::future::join_all(sends).await {
            if let Err(err) = result {
                self.failures += 1;
                tracing::warn!(sink, error = %err, alert = alert.kind.name(), "alert delivery failed");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::guard::alerts::AlertKind;
    use crate::guard::alerts::tests::alert;

    #[test]
    fn escalations_always_pass_and_the_rest_is_deduplicated_and_limited() {
        let mut d = Dispatcher::new(vec![], Duration::from_secs(60), 2, Duration::from_secs(600));
        let raised = |t| alert(AlertKind::LevelRaised { level: 0.2 }, t);
        assert_eq!(d.admit(&raised(0)), Dispatch::Sent);
        assert_eq!(d.admit(&raised(1)), Dispatch::Sent);
        let evictions = |t| alert(AlertKind::Evictions { evicted: 5 }, t);
        assert_eq!(d.admit(&evictions(0)), Dispatch::Sent);
        assert_eq!(d.admit(&evictions(30_000)), Dispatch::Duplicate);
        assert_eq!(d.admit(&evictions(61_000)), Dispatch::Sent);
        assert_eq!(
            d.admit(&alert(AlertKind::Unbounded, 62_000)),
            Dispatch::RateLimited
        );
        assert_eq!(
            d.admit(&alert(AlertKind::Unbounded, 700_000)),
            Dispatch::Sent
        );
    }
}
