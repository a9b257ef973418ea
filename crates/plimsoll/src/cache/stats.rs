//! What a cache did: counters, and the snapshot [`CacheStats`] that
//! `plimsoll serve` exports as Prometheus metrics.
//!
//! A local hit costs about a microsecond, so its counter must not be a
//! cache line that every core writes: each counter is spread over a few
//! cache-line-padded slots, one per thread (round robin), and summed when
//! read. The library only counts; it does not depend on a metrics exporter.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use serde::Serialize;

use super::breaker::BreakerStats;
use crate::error::ErrorKind;

/// Redis errors a cache met, by kind. None of them reached a caller of
/// `get` or `get_or_compute`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct RedisErrors {
    /// Calls that ran out of their time budget.
    pub timeout: u64,
    /// Calls that found no connection or lost it.
    pub connection: u64,
    /// "Loading", "try again", cluster down and similar replies.
    pub unavailable: u64,
    /// `OOM command not allowed` replies (to SETs). Counted apart and not
    /// as breaker failures: a full Redis still serves reads.
    pub out_of_memory: u64,
    /// Any other error reply (ACL, wrong type, …).
    pub other: u64,
}

/// The in-process tier's size.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct LocalUsage {
    /// Entries held.
    pub entries: u64,
    /// Their weight, the measure the byte bound applies to: each entry's
    /// key and encoded value plus 64 bytes, but at least `max_bytes /
    /// max_entries` (the floor that lets one weigher enforce both bounds).
    pub weight: u64,
}

/// A snapshot of a cache's counters since it was made (shared by clones).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CacheStats {
    /// Reads served fresh from the in-process tier.
    pub local_hits: u64,
    /// Reads served from Redis.
    pub redis_hits: u64,
    /// Reads served from a stale local copy because Redis could not answer.
    pub stale_hits: u64,
    /// Reads Redis answered with "no such key" (or with a value that did not
    /// decode, counted in `corrupt` too).
    pub misses: u64,
    /// Reads that went without Redis (breaker open, Redis failed or shed)
    /// and without a stale copy.
    pub fallbacks: u64,
    /// Times a loader ran.
    pub loader_calls: u64,
    /// Times a loader returned an error (passed to its caller).
    pub loader_errors: u64,
    /// Callers that waited for another caller's loader instead of running
    /// their own (single-flight).
    pub flight_joins: u64,
    /// Writes (SET, DEL) Redis applied.
    pub redis_writes: u64,
    /// Calls that skipped Redis because the breaker was open.
    pub breaker_skips: u64,
    /// Calls that skipped Redis because `max_in_flight` requests were out.
    pub shed: u64,
    /// Values in Redis that did not decode (foreign, or another type).
    pub corrupt: u64,
    /// Loaded values that were returned but not cached: over the size
    /// limit, not encodable, or under an invalid key or TTL.
    pub not_cached: u64,
    /// Redis errors, by kind.
    pub redis_errors: RedisErrors,
    /// Calls sent to Redis.
    pub redis_calls: u64,
    /// Time spent waiting on Redis, summed over calls, in microseconds.
    pub redis_time_us: u64,
    /// Time spent in loaders, summed, in microseconds.
    pub loader_time_us: u64,
    /// The circuit breaker of the cache's endpoint.
    pub breaker: BreakerStats,
    /// The in-process tier's size, when it is on.
    pub local: Option<LocalUsage>,
}

/// Slots per counter.
const SLOTS: usize = 8;

#[derive(Debug, Default)]
#[repr(align(128))]
struct Slot(AtomicU64);

/// A counter that threads add to without sharing a cache line.
#[derive(Debug, Default)]
pub(crate) struct Counter([Slot; SLOTS]);

impl Counter {
    fn add(&self, n: u64) {
        self.0[slot()].0.fetch_add(n, Ordering::Relaxed);
    }

    fn get(&self) -> u64 {
        self.0.iter().map(|s| s.0.load(Ordering::Relaxed)).sum()
    }
}

/// This thread's slot.
fn slot() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static SLOT: usize = NEXT.fetch_add(1, Ordering::Relaxed) % SLOTS;
    }
    SLOT.with(|s| *s)
}

/// The counters behind [`CacheStats`].
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) local_hits: Counter,
    pub(crate) redis_hits: Counter,
    pub(crate) stale_hits: Counter,
    pub(crate) misses: Counter,
    pub(crate) fallbacks: Counter,
    pub(crate) loader_calls: Counter,
    pub(crate) loader_errors: Counter,
    pub(crate) flight_joins: Counter,
    pub(crate) redis_writes: Counter,
    pub(crate) breaker_skips: Counter,
    pub(crate) shed: Counter,
    pub(crate) corrupt: Counter,
    pub(crate) not_cached: Counter,
    timeout: Counter,
    connection: Counter,
    unavailable: Counter,
    out_of_memory: Counter,
    other: Counter,
    pub(crate) redis_calls: Counter,
    redis_time_us: Counter,
    loader_time_us: Counter,
}

/// Adds one.
pub(crate) fn bump(counter: &Counter) {
    counter.add(1);
}

impl Counters {
    pub(crate) fn redis_error(&self, kind: ErrorKind) {
        bump(match kind {
            ErrorKind::Timeout => &self.timeout,
            ErrorKind::Connection => &self.connection,
            ErrorKind::Unavailable => &self.unavailable,
            ErrorKind::OutOfMemory => &self.out_of_memory,
            _ => &self.other,
        });
    }

    pub(crate) fn redis_time(&self, spent: Duration) {
        self.redis_time_us.add(micros(spent));
    }

    pub(crate) fn loader_time(&self, spent: Duration) {
        self.loader_time_us.add(micros(spent));
    }

    pub(crate) fn snapshot(&self, breaker: BreakerStats, local: Option<LocalUsage>) -> CacheStats {
        let get = Counter::get;
        CacheStats {
            local_hits: get(&self.local_hits),
            redis_hits: get(&self.redis_hits),
            stale_hits: get(&self.stale_hits),
            misses: get(&self.misses),
            fallbacks: get(&self.fallbacks),
            loader_calls: get(&self.loader_calls),
            loader_errors: get(&self.loader_errors),
            flight_joins: get(&self.flight_joins),
            redis_writes: get(&self.redis_writes),
            breaker_skips: get(&self.breaker_skips),
            shed: get(&self.shed),
            corrupt: get(&self.corrupt),
            not_cached: get(&self.not_cached),
            redis_errors: RedisErrors {
                timeout: get(&self.timeout),
                connection: get(&self.connection),
                unavailable: get(&self.unavailable),
                out_of_memory: get(&self.out_of_memory),
                other: get(&self.other),
            },
            redis_calls: get(&self.redis_calls),
            redis_time_us: get(&self.redis_time_us),
            loader_time_us: get(&self.loader_time_us),
            breaker,
            local,
        }
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}
