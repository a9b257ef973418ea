//! Time, injected, and kept on Redis' time.
//!
//! Scripts never decide by the server's clock: the caller passes "now" in,
//! as asynq does. That makes every time-based rule (delays, leases, age
//! limits) testable without waiting: tests use a [`ManualClock`] and move it
//! forward.
//!
//! But a lease deadline written by one machine is compared by another (the
//! rescuer), and a due time set by a producer is checked by some worker's
//! promoter: if their clocks disagree, a skew of minutes rescues live jobs or
//! runs delayed jobs early. So a [`Queue`](crate::Queue) keeps its clock on
//! Redis' time: it reads Redis' `TIME` (on the queue's own node, through a
//! script) before its first use and again every
//! [`CLOCK_RESYNC_INTERVAL`], and workers take a reading with every
//! heartbeat at no extra cost; between readings it adds the measured offset
//! to its base clock (the system clock by default). Every machine then
//! passes the same "now" to the scripts, give or take the residual error:
//! half the round trip of the reading (well under a millisecond on a LAN;
//! readings that took longer than [`MAX_SYNC_ROUND_TRIP`] are not used once
//! one good reading exists) plus the base clocks' drift between readings
//! (a quartz clock drifts up to about 100 ppm: 6 ms a minute). Against a
//! lease of seconds (30 s by default) that is noise; a skew of minutes is
//! gone. Redis' own clock may be wrong too, but it is one clock.
//!
//! Any clock that says [`follows_redis`](Clock::follows_redis) (every clock
//! does by default) is corrected that way; a [`ManualClock`] is a test's
//! time and is used as it is.

use std::fmt::Debug;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How often a queue's clock reads Redis' time again (workers also read it
/// with every heartbeat). The drift of a base clock over this is a few ms.
pub const CLOCK_RESYNC_INTERVAL: Duration = Duration::from_secs(60);

/// Readings of Redis' time whose round trip took longer than this are not
/// used once a good one exists: the error of a reading is up to half its
/// round trip (a reply held up by a frozen Redis would otherwise shift every
/// deadline by seconds).
pub const MAX_SYNC_ROUND_TRIP: Duration = Duration::from_millis(100);

/// An offset beyond this is logged when first measured: the machine's clock
/// is off, and Plimsoll uses Redis' time instead.
const NOTABLE_OFFSET_MS: i64 = 1_000;

/// A source of wall-clock time in milliseconds since the Unix epoch.
pub trait Clock: Send + Sync + Debug + 'static {
    /// Now, in milliseconds since the Unix epoch.
    fn now_ms(&self) -> u64;

    /// Whether a queue should keep this clock on Redis' time (see the
    /// module docs). True by default; a [`ManualClock`] says false, because
    /// a test's manual time is the time.
    fn follows_redis(&self) -> bool {
        true
    }
}

/// The system clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)
    }
}

/// A clock that moves only when told to; clones share the same time.
/// Queues use it as it is, never corrected to Redis' time.
#[derive(Debug, Clone)]
pub struct ManualClock(Arc<AtomicU64>);

impl ManualClock {
    /// A clock showing `now_ms`.
    pub fn new(now_ms: u64) -> Self {
        Self(Arc::new(AtomicU64::new(now_ms)))
    }

    /// A clock starting at the current system time.
    pub fn starting_now() -> Self {
        Self::new(SystemClock.now_ms())
    }

    /// Moves the clock forward.
    pub fn advance(&self, by: Duration) {
        self.0.fetch_add(by.as_millis() as u64, Ordering::SeqCst);
    }

    /// Sets the clock.
    pub fn set(&self, now_ms: u64) {
        self.0.store(now_ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }

    fn follows_redis(&self) -> bool {
        false
    }
}

/// A base clock plus the offset last measured against Redis' `TIME`: the
/// clock a queue passes to its scripts (see the module docs).
#[derive(Debug)]
pub(crate) struct RedisClock {
    base: Arc<dyn Clock>,
    offset_ms: AtomicI64,
    /// When the offset was last measured, in ms since `epoch`, plus one;
    /// 0 while it never was.
    synced_at: AtomicU64,
    epoch: Instant,
    /// A background reading is on its way.
    syncing: AtomicBool,
}

impl RedisClock {
    pub(crate) fn new(base: Arc<dyn Clock>) -> Self {
        Self {
            base,
            offset_ms: AtomicI64::new(0),
            synced_at: AtomicU64::new(0),
            epoch: Instant::now(),
            syncing: AtomicBool::new(false),
        }
    }

    /// The base clock, uncorrected: what readings are measured against.
    pub(crate) fn base_now_ms(&self) -> u64 {
        self.base.now_ms()
    }

    /// Takes one reading: the base clock showed `sent_ms` when the request
    /// left and `received_ms` when its answer came; Redis said `redis_ms`
    /// in between. Returns whether the reading was used.
    pub(crate) fn observe(&self, sent_ms: u64, redis_ms: u64, received_ms: u64) -> bool {
        let round_trip = received_ms.saturating_sub(sent_ms);
        let first = !self.is_synced();
        if !first && round_trip > ms(MAX_SYNC_ROUND_TRIP) {
            return false;
        }
        let midpoint = sent_ms + round_trip / 2;
        let offset = redis_ms as i64 - midpoint as i64;
        self.offset_ms.store(offset, Ordering::Relaxed);
        let since_epoch = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.synced_at
            .store(since_epoch.saturating_add(1), Ordering::Relaxed);
        if first && offset.abs() > NOTABLE_OFFSET_MS {
            tracing::warn!(
                offset_ms = offset,
                "this machine's clock differs from Redis' time; leases and due times use Redis' time"
            );
        }
        true
    }

    /// Whether any reading was taken.
    pub(crate) fn is_synced(&self) -> bool {
        self.synced_at.load(Ordering::Relaxed) > 0
    }

    /// Whether the last reading is older than [`CLOCK_RESYNC_INTERVAL`].
    pub(crate) fn is_stale(&self) -> bool {
        let at = self.synced_at.load(Ordering::Relaxed);
        let now = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        at == 0 || now.saturating_add(1).saturating_sub(at) > ms(CLOCK_RESYNC_INTERVAL)
    }

    /// Claims the one background reading allowed at a time.
    pub(crate) fn begin_sync(&self) -> bool {
        !self.syncing.swap(true, Ordering::AcqRel)
    }

    /// Releases the claim taken by [`begin_sync`](Self::begin_sync).
    pub(crate) fn end_sync(&self) {
        self.syncing.store(false, Ordering::Release);
    }

    /// The offset in use, ms (Redis' time minus the base clock's).
    pub(crate) fn offset_ms(&self) -> i64 {
        self.offset_ms.load(Ordering::Relaxed)
    }
}

impl Clock for RedisClock {
    fn now_ms(&self) -> u64 {
        let now = self.base.now_ms() as i64 + self.offset_ms.load(Ordering::Relaxed);
        u64::try_from(now).unwrap_or(0)
    }

    /// Already on Redis' time.
    fn follows_redis(&self) -> bool {
        false
    }
}

/// Milliseconds in a duration, saturating (durations in configs are checked
/// to be far below the limit).
pub(crate) fn ms(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reading_moves_the_base_clock_onto_redis_time() {
        let base = ManualClock::new(1_000_000);
        let clock = RedisClock::new(Arc::new(base.clone()));
        assert!(!clock.is_synced() && clock.is_stale());
        assert_eq!(clock.now_ms(), 1_000_000, "uncorrected until a reading");
        // Sent at 1,000,000, answered at 1,000,010; Redis said 400,005:
        // the base clock is 600,000 ms ahead.
        assert!(clock.observe(1_000_000, 400_005, 1_000_010));
        assert_eq!(clock.offset_ms(), -600_000);
        assert_eq!(clock.now_ms(), 400_000);
        base.advance(Duration::from_millis(250));
        assert_eq!(clock.now_ms(), 400_250, "the base clock's rate is kept");
        assert!(clock.is_synced() && !clock.is_stale());
    }

    #[test]
    fn a_slow_reading_is_not_used_once_a_good_one_exists() {
        let clock = RedisClock::new(Arc::new(ManualClock::new(0)));
        // The first reading is used even when slow: it beats none.
        assert!(clock.observe(10_000, 5_000, 12_000));
        assert_eq!(clock.offset_ms(), -6_000);
        assert!(!clock.observe(20_000, 0, 25_000), "a 5 s round trip");
        assert_eq!(clock.offset_ms(), -6_000);
        assert!(clock.observe(30_000, 24_002, 30_004));
        assert_eq!(clock.offset_ms(), -6_000);
    }

    #[test]
    fn manual_clocks_are_not_corrected_and_others_are() {
        assert!(!ManualClock::new(0).follows_redis());
        assert!(SystemClock.follows_redis());
        assert!(!RedisClock::new(Arc::new(SystemClock)).follows_redis());
    }
}
