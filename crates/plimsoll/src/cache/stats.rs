//! What a cache did: counters kept with relaxed atomics, and the snapshot
//! [`CacheStats`] that `plimsoll serve` exports as Prometheus metrics.
//!
//! The library only counts; it does not depend on a metrics exporter.

use std::sync::atomic::{AtomicU64, Ordering};
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

/// The counters behind [`CacheStats`].
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) local_hits: AtomicU64,
    pub(crate) redis_hits: AtomicU64,
    pub(crate) stale_hits: AtomicU64,
    pub(crate) misses: AtomicU64,
    pub(crate) fallbacks: AtomicU64,
    pub(crate) loader_calls: AtomicU64,
    pub(crate) loader_errors: AtomicU64,
    pub(crate) flight_joins: AtomicU64,
    pub(crate) redis_writes: AtomicU64,
    pub(crate) breaker_skips: AtomicU64,
    pub(crate) shed: AtomicU64,
    pub(crate) corrupt: AtomicU64,
    pub(crate) not_cached: AtomicU64,
    timeout: AtomicU64,
    connection: AtomicU64,
    unavailable: AtomicU64,
    out_of_memory: AtomicU64,
    other: AtomicU64,
    pub(crate) redis_calls: AtomicU64,
    redis_time_us: AtomicU64,
    loader_time_us: AtomicU64,
}

/// Adds one.
pub(crate) fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
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
        self.redis_time_us
            .fetch_add(micros(spent), Ordering::Relaxed);
    }

    pub(crate) fn loader_time(&self, spent: Duration) {
        self.loader_time_us
            .fetch_add(micros(spent), Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self, breaker: BreakerStats, local: Option<LocalUsage>) -> CacheStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
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
