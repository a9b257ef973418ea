//! Per-queue rates (jobs per second enqueued, completed, failed) over the
//! last minute, from the queue counters sampled every few seconds.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use plimsoll::queue::QueueTotals;
use serde::Serialize;
use utoipa::ToSchema;

/// Span the rates are averaged over.
pub const RATE_WINDOW: Duration = Duration::from_secs(60);
/// How often the sampler reads the counters.
pub const SAMPLE_INTERVAL: Duration = Duration::from_secs(5);

/// Jobs per second over the last minute.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, serde::Deserialize, ToSchema)]
pub struct QueueRates {
    pub enqueued_per_s: f64,
    pub completed_per_s: f64,
    /// Failed runs (retried or dead) per second.
    pub failed_per_s: f64,
    /// Seconds the rates cover (less than 60 just after start).
    pub window_s: f64,
}

/// Recent counter samples per queue.
#[derive(Debug, Default)]
pub struct Rates {
    samples: Mutex<HashMap<String, VecDeque<(Instant, QueueTotals)>>>,
}

impl Rates {
    /// Records a sample of `queue`'s counters taken now.
    pub fn record(&self, queue: &str, totals: QueueTotals) {
        self.record_at(queue, totals, Instant::now());
    }

    fn record_at(&self, queue: &str, totals: QueueTotals, at: Instant) {
        let mut samples = self.samples.lock().unwrap_or_else(|e| e.into_inner());
        let series = samples.entry(queue.to_string()).or_default();
        series.push_back((at, totals));
        while series
            .front()
            .is_some_and(|(t, _)| at.duration_since(*t) > RATE_WINDOW + SAMPLE_INTERVAL)
        {
            series.pop_front();
        }
    }

    /// Rates of `queue` from its oldest and newest samples.
    pub fn get(&self, queue: &str) -> QueueRates {
        let samples = self.samples.lock().unwrap_or_else(|e| e.into_inner());
        let Some(series) = samples.get(queue) else {
            return QueueRates::default();
        };
        let (Some((t0, a)), Some((t1, b))) = (series.front(), series.back()) else {
            return QueueRates::default();
        };
        let span = t1.duration_since(*t0).as_secs_f64();
        if span <= 0.0 {
            return QueueRates::default();
        }
        let per_s = |x: u64, y: u64| y.saturating_sub(x) as f64 / span;
        QueueRates {
            enqueued_per_s: per_s(a.enqueued, b.enqueued),
            completed_per_s: per_s(a.completed, b.completed),
            failed_per_s: per_s(a.retried + a.dead, b.retried + b.dead),
            window_s: span,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_come_from_the_window_ends() {
        let rates = Rates::default();
        let start = Instant::now();
        let totals = |n: u64| QueueTotals {
            enqueued: n * 10,
            completed: n * 8,
            retried: n,
            ..QueueTotals::default()
        };
        for i in 0..=12 {
            rates.record_at("q", totals(i), start + Duration::from_secs(5 * i));
        }
        let r = rates.get("q");
        assert!((r.enqueued_per_s - 2.0).abs() < 1e-9, "{r:?}");
        assert!((r.completed_per_s - 1.6).abs() < 1e-9);
        assert!((r.failed_per_s - 0.2).abs() < 1e-9);
        assert_eq!(rates.get("other"), QueueRates::default());
    }
}
