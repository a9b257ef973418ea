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
/// Queues whose samples are kept at most. Every page and API call that shows
/// a queue records a sample, also for names a caller makes up; past this,
/// queues with no sample in the window are dropped, and new ones are not
/// recorded (their rates read 0) until room is made.
pub const MAX_RATE_QUEUES: usize = 10_000;
/// Samples closer together than this replace each other, so that a queue
/// shown a thousand times a second keeps a minute of samples, not 60,000.
const MIN_SAMPLE_GAP: Duration = Duration::from_secs(1);

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
        let kept = RATE_WINDOW + SAMPLE_INTERVAL;
        let mut samples = self.samples.lock().unwrap_or_else(|e| e.into_inner());
        if samples.len() >= MAX_RATE_QUEUES && !samples.contains_key(queue) {
            samples.retain(|_, series| {
                series
                    .back()
                    .is_some_and(|(t, _)| at.saturating_duration_since(*t) <= kept)
            });
            if samples.len() >= MAX_RATE_QUEUES {
                return;
            }
        }
        let series = samples.entry(queue.to_string()).or_default();
        // Samples kept are at least MIN_SAMPLE_GAP apart, plus the latest:
        // a last sample that came too soon after the one before it only
        // stood in for "now", and the new one takes its place.
        let n = series.len();
        if n >= 2 && series[n - 1].0.saturating_duration_since(series[n - 2].0) < MIN_SAMPLE_GAP {
            series.pop_back();
        }
        series.push_back((at, totals));
        while series
            .front()
            .is_some_and(|(t, _)| at.saturating_duration_since(*t) > kept)
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

    /// Each GET of a made-up queue name added a map entry for good, and
    /// each view of a queue a sample.
    #[test]
    fn the_samples_are_bounded_by_queue_and_by_time() {
        let rates = Rates::default();
        let start = Instant::now();
        for i in 0..MAX_RATE_QUEUES + 500 {
            rates.record_at(&format!("q{i}"), QueueTotals::default(), start);
        }
        let len = |rates: &Rates| rates.samples.lock().unwrap().len();
        assert_eq!(len(&rates), MAX_RATE_QUEUES);
        // A minute later the stale ones make room.
        let later = start + RATE_WINDOW + SAMPLE_INTERVAL + Duration::from_secs(1);
        rates.record_at("fresh", QueueTotals::default(), later);
        assert_eq!(len(&rates), 1);

        for ms in 0..60_000u64 {
            let totals = QueueTotals {
                enqueued: ms,
                ..QueueTotals::default()
            };
            rates.record_at("busy", totals, start + Duration::from_millis(ms));
        }
        let series = rates.samples.lock().unwrap()["busy"].len();
        assert!((59..=62).contains(&series), "{series} samples for a minute");
        let r = rates.get("busy");
        assert!((r.enqueued_per_s - 1000.0).abs() < 1.0, "{r:?}");
    }
}
