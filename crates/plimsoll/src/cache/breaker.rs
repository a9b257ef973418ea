//! The circuit breaker of one Redis endpoint.
//!
//! Closed, open, half-open, as resilience4j defines them: while closed every
//! call goes to Redis and its outcome lands in a sliding *time* window (ten
//! buckets); once the window holds at least `min_calls` calls and the share of
//! failures reaches `failure_rate`, the breaker opens. While open, calls skip
//! Redis entirely and cost nothing. After `open_for` it lets `probes` calls
//! through (half-open): if their failure rate stays under the threshold it
//! closes with an empty window, otherwise it opens again.
//!
//! Only signs that the endpoint is unhealthy count as failures: timeouts,
//! lost connections, "loading"/"try again" replies. An error *reply* means
//! Redis is there and answering — above all `OOM command not allowed` on a
//! SET, which must not take reads down with it — so it counts as a success.
//!
//! # Why not a crate
//!
//! `recloser` (maintained, lock-free) and `failsafe` were the candidates.
//! Neither fits: both let *every* call through while half-open (a frozen
//! Redis would get the full request rate as probes, each costing the budget)
//! and `failsafe` closes on the first success; `recloser` counts the last N
//! calls rather than a time window with a minimum, and `failsafe` uses an
//! exponential moving average; both read `std::time::Instant` directly, so
//! tests could only sleep, not move an injected clock; neither exposes its
//! state or transition counts for the stats without their tracing hooks.
//! The state machine is small enough to own: a mutex-guarded struct for
//! the transitions, an atomic copy of the state so that the closed path
//! decides without the lock, and window buckets of atomics so that a
//! successful call records itself without it too (the lock is taken when a
//! bucket turns over, once per bucket width, and on failures).

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};

use serde::Serialize;

use super::config::{BreakerSettings, WINDOW_BUCKETS};
use crate::clock::Clock;

/// Where a breaker is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    /// Calls go to Redis; outcomes are counted.
    Closed,
    /// Calls skip Redis until the open time has passed.
    Open,
    /// A few probe calls go to Redis; they decide between closed and open.
    HalfOpen,
}

impl BreakerState {
    /// `closed`, `open` or `half_open`, for logs and metrics labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Open => "open",
            Self::HalfOpen => "half_open",
        }
    }

    fn to_u8(self) -> u8 {
        self as u8
    }

    fn from_u8(v: u8) -> Self {
        match v {
            0 => Self::Closed,
            1 => Self::Open,
            _ => Self::HalfOpen,
        }
    }
}

/// A snapshot of a breaker: its state and what moved it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct BreakerStats {
    /// The state now.
    pub state: BreakerState,
    /// Times it opened (from closed or from half-open).
    pub opened: u64,
    /// Times it went half-open.
    pub half_opened: u64,
    /// Times it closed again.
    pub closed: u64,
    /// Calls in the current window (closed state).
    pub window_calls: u64,
    /// Failures among them.
    pub window_failures: u64,
}

#[derive(Debug, Default)]
struct Bucket {
    /// `now_ms / bucket_ms` of the calls counted here.
    id: AtomicU64,
    calls: AtomicU64,
    failures: AtomicU64,
}

#[derive(Debug)]
struct Inner {
    state: BreakerState,
    /// When an open breaker may go half-open (ms).
    open_until: u64,
    /// Probes handed out in this half-open period, and their results.
    probes_out: u32,
    probe_successes: u32,
    probe_failures: u32,
}

/// One breaker; share it with an `Arc` (or inside the cache).
#[derive(Debug)]
pub(crate) struct Breaker {
    settings: BreakerSettings,
    clock: Arc<dyn Clock>,
    /// A copy of `inner.state`, so that the closed path needs no lock.
    state: AtomicU8,
    /// The sliding window; written without the lock, turned over with it.
    buckets: [Bucket; WINDOW_BUCKETS],
    inner: Mutex<Inner>,
    opened: AtomicU64,
    half_opened: AtomicU64,
    closed: AtomicU64,
}

/// Leave to make one call to Redis. Report how it went with
/// [`success`](Self::success) or [`failure`](Self::failure); a permit dropped
/// without a report (the caller was cancelled) gives a probe slot back.
#[derive(Debug)]
#[must_use = "report the call's outcome"]
pub(crate) struct Permit<'a> {
    breaker: &'a Breaker,
    probe: bool,
    reported: bool,
}

impl Permit<'_> {
    /// Whether this is one of a half-open breaker's probes.
    pub(crate) fn is_probe(&self) -> bool {
        self.probe
    }

    /// Redis answered (any reply, error replies included).
    pub(crate) fn success(mut self) {
        self.reported = true;
        self.breaker.record(self.probe, false);
    }

    /// Redis did not answer in time, or could not be reached.
    pub(crate) fn failure(mut self) {
        self.reported = true;
        self.breaker.record(self.probe, true);
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if !self.reported && self.probe {
            self.breaker.return_probe();
        }
    }
}

impl Breaker {
    pub(crate) fn new(settings: BreakerSettings, clock: Arc<dyn Clock>) -> Self {
        Self {
            settings,
            clock,
            state: AtomicU8::new(BreakerState::Closed.to_u8()),
            buckets: Default::default(),
            inner: Mutex::new(Inner {
                state: BreakerState::Closed,
                open_until: 0,
                probes_out: 0,
                probe_successes: 0,
                probe_failures: 0,
            }),
            opened: AtomicU64::new(0),
            half_opened: AtomicU64::new(0),
            closed: AtomicU64::new(0),
        }
    }

    /// Leave for one call, or `None` while the breaker is open (or all
    /// probes of a half-open period are out).
    pub(crate) fn try_acquire(&self) -> Option<Permit<'_>> {
        if self.state.load(Ordering::Acquire) == BreakerState::Closed.to_u8() {
            return Some(self.permit(false));
        }
        let mut inner = self.lock();
        if inner.state == BreakerState::Open {
            if self.clock.now_ms() < inner.open_until {
                return None;
            }
            self.transition(&mut inner, BreakerState::HalfOpen);
        }
        match inner.state {
            BreakerState::Closed => Some(self.permit(false)),
            BreakerState::HalfOpen if inner.probes_out < self.settings.probes => {
                inner.probes_out += 1;
                Some(self.permit(true))
            }
            _ => None,
        }
    }

    /// The state now (an open breaker whose time is up still reads open
    /// until a call asks).
    pub(crate) fn state(&self) -> BreakerState {
        BreakerState::from_u8(self.state.load(Ordering::Acquire))
    }

    pub(crate) fn stats(&self) -> BreakerStats {
        let inner = self.lock();
        let (window_calls, window_failures) = self.window_totals();
        BreakerStats {
            state: inner.state,
            opened: self.opened.load(Ordering::Relaxed),
            half_opened: self.half_opened.load(Ordering::Relaxed),
            closed: self.closed.load(Ordering::Relaxed),
            window_calls,
            window_failures,
        }
    }

    fn permit(&self, probe: bool) -> Permit<'_> {
        Permit {
            breaker: self,
            probe,
            reported: false,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // The state stays consistent under a panic elsewhere: every update
        // is a few plain assignments.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn record(&self, probe: bool, failed: bool) {
        if probe {
            let mut inner = self.lock();
            // A probe from an earlier half-open period no longer decides.
            if inner.state != BreakerState::HalfOpen {
                return;
            }
            if failed {
                inner.probe_failures += 1;
            } else {
                inner.probe_successes += 1;
            }
            let probes = f64::from(self.settings.probes);
            if f64::from(inner.probe_failures) >= self.settings.failure_rate * probes {
                self.transition(&mut inner, BreakerState::Open);
            } else if inner.probe_successes + inner.probe_failures >= self.settings.probes {
                self.transition(&mut inner, BreakerState::Closed);
            }
            return;
        }
        // A call that started while closed and ends after the breaker moved
        // on is not counted: the window restarts when the breaker closes.
        if self.state() != BreakerState::Closed {
            return;
        }
        let id = self.clock.now_ms() / self.settings.bucket_ms;
        let bucket = &self.buckets[(id % WINDOW_BUCKETS as u64) as usize];
        if bucket.id.load(Ordering::Acquire) != id {
            let _turning = self.lock();
            if bucket.id.load(Ordering::Acquire) != id {
                bucket.calls.store(0, Ordering::Relaxed);
                bucket.failures.store(0, Ordering::Relaxed);
                bucket.id.store(id, Ordering::Release);
            }
        }
        bucket.calls.fetch_add(1, Ordering::Relaxed);
        if !failed {
            return;
        }
        bucket.failures.fetch_add(1, Ordering::Relaxed);
        let mut inner = self.lock();
        let (calls, failures) = self.window_totals();
        if inner.state == BreakerState::Closed
            && calls >= self.settings.min_calls
            && failures as f64 >= self.settings.failure_rate * calls as f64
        {
            self.transition(&mut inner, BreakerState::Open);
        }
    }

    fn return_probe(&self) {
        let mut inner = self.lock();
        if inner.state == BreakerState::HalfOpen {
            inner.probes_out = inner.probes_out.saturating_sub(1);
        }
    }

    /// Calls and failures in the buckets of the current window.
    fn window_totals(&self) -> (u64, u64) {
        let now_id = self.clock.now_ms() / self.settings.bucket_ms;
        let oldest = now_id.saturating_sub(WINDOW_BUCKETS as u64 - 1);
        self.buckets
            .iter()
            .filter(|b| (oldest..=now_id).contains(&b.id.load(Ordering::Acquire)))
            .fold((0, 0), |(c, f), b| {
                (
                    c + b.calls.load(Ordering::Relaxed),
                    f + b.failures.load(Ordering::Relaxed),
                )
            })
    }

    fn transition(&self, inner: &mut Inner, to: BreakerState) {
        let from = inner.state;
        inner.state = to;
        match to {
            BreakerState::Open => {
                inner.open_until = self.clock.now_ms() + self.settings.open_ms;
                self.opened.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    from = from.as_str(),
                    open_ms = self.settings.open_ms,
                    "cache circuit breaker opened: skipping Redis"
                );
            }
            BreakerState::HalfOpen => {
                inner.probes_out = 0;
                inner.probe_successes = 0;
                inner.probe_failures = 0;
                self.half_opened.fetch_add(1, Ordering::Relaxed);
                tracing::info!("cache circuit breaker half-open: probing Redis");
            }
            BreakerState::Closed => {
                for bucket in &self.buckets {
                    bucket.id.store(0, Ordering::Relaxed);
                    bucket.calls.store(0, Ordering::Relaxed);
                    bucket.failures.store(0, Ordering::Relaxed);
                }
                self.closed.fetch_add(1, Ordering::Relaxed);
                tracing::info!("cache circuit breaker closed: Redis is back");
            }
        }
        self.state.store(to.to_u8(), Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::cache::config::BreakerConfig;
    use crate::clock::ManualClock;

    fn breaker(clock: &ManualClock) -> Breaker {
        let config = BreakerConfig {
            failure_rate: 0.5,
            window: Duration::from_secs(10),
            min_calls: 10,
            open_for: Duration::from_secs(1),
            probes: 3,
        };
        Breaker::new(
            BreakerSettings::new(&config).unwrap(),
            Arc::new(clock.clone()),
        )
    }

    fn calls(b: &Breaker, successes: u32, failures: u32) {
        for _ in 0..successes {
            b.try_acquire().expect("a permit").success();
        }
        for _ in 0..failures {
            b.try_acquire().expect("a permit").failure();
        }
    }

    #[test]
    fn stays_closed_below_the_minimum_number_of_calls() {
        let clock = ManualClock::new(1_000_000);
        let b = breaker(&clock);
        calls(&b, 0, 9);
        assert_eq!(b.state(), BreakerState::Closed);
        calls(&b, 0, 1);
        assert_eq!(b.state(), BreakerState::Open);
    }

    #[test]
    fn stays_closed_below_the_failure_rate() {
        let clock = ManualClock::new(1_000_000);
        let b = breaker(&clock);
        calls(&b, 11, 10);
        assert_eq!(b.state(), BreakerState::Closed);
        calls(&b, 0, 1);
        assert_eq!(b.state(), BreakerState::Open);
    }

    #[test]
    fn old_calls_slide_out_of_the_window() {
        let clock = ManualClock::new(1_000_000);
        let b = breaker(&clock);
        calls(&b, 0, 9);
        clock.advance(Duration::from_secs(10));
        // The nine failures are older than the window now.
        calls(&b, 5, 4);
        assert_eq!(b.state(), BreakerState::Closed);
        assert_eq!(b.stats().window_calls, 9);
    }

    #[test]
    fn open_rejects_until_its_time_then_probes_close_it() {
        let clock = ManualClock::new(1_000_000);
        let b = breaker(&clock);
        calls(&b, 0, 10);
        assert!(b.try_acquire().is_none());
        clock.advance(Duration::from_millis(999));
        assert!(b.try_acquire().is_none());
        clock.advance(Duration::from_millis(1));
        let probes: Vec<_> = (0..3).map(|_| b.try_acquire().expect("a probe")).collect();
        assert_eq!(b.state(), BreakerState::HalfOpen);
        assert!(b.try_acquire().is_none(), "only three probes at a time");
        for p in probes {
            p.success();
        }
        assert_eq!(b.state(), BreakerState::Closed);
        let stats = b.stats();
        assert_eq!(
            (stats.opened, stats.half_opened, stats.closed),
            (1, 1, 1),
            "{stats:?}"
        );
        assert_eq!(stats.window_calls, 0, "the window restarts empty");
    }

    #[test]
    fn failed_probes_open_it_again() {
        let clock = ManualClock::new(1_000_000);
        let b = breaker(&clock);
        calls(&b, 0, 10);
        clock.advance(Duration::from_secs(1));
        let first = b.try_acquire().expect("a probe");
        let second = b.try_acquire().expect("a probe");
        first.success();
        second.failure();
        // One of three failed: under 50%, the last probe decides.
        assert_eq!(b.state(), BreakerState::HalfOpen);
        b.try_acquire().expect("a probe").failure();
        assert_eq!(b.state(), BreakerState::Open);
        assert!(b.try_acquire().is_none());
        assert_eq!(b.stats().opened, 2);
    }

    #[test]
    fn a_cancelled_probe_gives_its_slot_back() {
        let clock = ManualClock::new(1_000_000);
        let b = breaker(&clock);
        calls(&b, 0, 10);
        clock.advance(Duration::from_secs(1));
        let held: Vec<_> = (0..2).map(|_| b.try_acquire().unwrap()).collect();
        drop(b.try_acquire().expect("the third probe"));
        let third = b.try_acquire().expect("the slot came back");
        assert!(b.try_acquire().is_none());
        for p in held {
            p.success();
        }
        third.success();
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[test]
    fn late_results_of_closed_calls_do_not_move_an_open_breaker() {
        let clock = ManualClock::new(1_000_000);
        let b = breaker(&clock);
        let late = b.try_acquire().unwrap();
        calls(&b, 0, 10);
        late.success();
        assert_eq!(b.state(), BreakerState::Open);
    }
}
