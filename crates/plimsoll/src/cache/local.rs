//! The in-process tier: hot keys from memory, stale values while Redis is
//! unavailable.
//!
//! Built on `quick_cache` (its `sync::Cache`): a concurrent, sharded,
//! weight-bounded map with an S3-FIFO eviction policy, well kept and small.
//! `moka` was the first choice and is what this tier ran on before; on the
//! C1-hit benchmark (10,000 hot 1 KiB records) its read bookkeeping —
//! access-order deques, a read buffer drained on the caller's thread, a
//! frequency sketch — was over half of the time of a hit, and paired runs
//! of the same hit loop took about 15–20% less time per hit on quick_cache.
//! moka's time-to-live and eviction listeners are not needed here: the
//! cache keeps its own times (below). A hit costs a hash, a probe and one
//! reference count.
//!
//! Entries hold the *encoded* value, exactly as Redis holds it (so a value
//! moves between the tiers without re-encoding, and a caller asking for
//! another type still gets an answer), and beside it the decoded value when
//! the cache had one at hand: a hit then costs a clone instead of a decode
//! — about 30% fewer instructions per hit for a 1 KiB record, most of the
//! saving UTF-8 validation. The decoded copy is weighed at its encoded size.
//!
//! Two bounds, one weigher: the table bounds the total *weight* of its
//! entries, on every insert. Each entry weighs its key and value bytes, but
//! never less than `max_bytes / max_entries`. The total weight stays under
//! `max_bytes`, so bytes are bounded; and since no entry weighs less than
//! that floor, at most `max_entries` fit.
//!
//! Freshness follows the cache's injected clock: an entry is *fresh* for
//! `min(ttl of the value, local ttl)` after it was written or read from
//! Redis, and may be served *stale* for `stale_if_error` after that — but
//! only when Redis cannot answer. An entry found past both is dropped; the
//! others leave as the eviction policy makes room.

use std::any::Any;
use std::sync::Arc;

use bytes::Bytes;
use quick_cache::Weighter;
use quick_cache::sync::Cache as Table;

use super::config::LocalSettings;
use crate::clock::Clock;

/// Bytes added to each entry's weight for the table's own bookkeeping.
const ENTRY_OVERHEAD: u64 = 64;

/// A decoded value, of whatever type the caller asked for.
pub(crate) type Decoded = Arc<dyn Any + Send + Sync>;

/// One local copy.
pub(crate) struct Entry {
    pub(crate) bytes: Bytes,
    /// The decoded value, when the cache had one at hand.
    pub(crate) decoded: Option<Decoded>,
    /// Served without asking Redis until then (ms).
    fresh_until: u64,
    /// Served while Redis is unavailable until then (ms).
    stale_until: u64,
}

impl std::fmt::Debug for Entry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Entry")
            .field("bytes", &self.bytes.len())
            .field("decoded", &self.decoded.is_some())
            .field("fresh_until", &self.fresh_until)
            .field("stale_until", &self.stale_until)
            .finish()
    }
}

impl Entry {
    pub(crate) fn is_fresh(&self, now_ms: u64) -> bool {
        now_ms < self.fresh_until
    }

    pub(crate) fn is_servable_stale(&self, now_ms: u64) -> bool {
        now_ms < self.stale_until
    }
}

/// Weighs an entry: key and bytes (twice when a decoded copy sits beside
/// them) plus bookkeeping, never less than the floor that makes the byte
/// bound an entry bound too.
#[derive(Debug, Clone, Copy)]
struct Weigh {
    floor: u64,
}

impl Weighter<String, Arc<Entry>> for Weigh {
    fn weight(&self, key: &String, entry: &Arc<Entry>) -> u64 {
        let copies = if entry.decoded.is_some() { 2 } else { 1 };
        let bytes = key.len() as u64 + copies * entry.bytes.len() as u64 + ENTRY_OVERHEAD;
        bytes.max(self.floor)
    }
}

/// The in-process tier of one cache.
pub(crate) struct Local {
    /// Entries behind an `Arc`: a hit costs one reference count.
    entries: Table<String, Arc<Entry>, Weigh>,
    settings: LocalSettings,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for Local {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Local")
            .field("settings", &self.settings)
            .field("entries", &self.entries.len())
            .finish()
    }
}

impl Local {
    pub(crate) fn new(settings: LocalSettings, clock: Arc<dyn Clock>) -> Self {
        let floor = settings.max_bytes.div_ceil(settings.max_entries);
        let entries = Table::with_weighter(
            usize::try_from(settings.max_entries).unwrap_or(usize::MAX),
            settings.max_bytes,
            Weigh { floor },
        );
        Self {
            entries,
            settings,
            clock,
        }
    }

    /// The local copy of `key`, fresh or stale but still servable; a copy
    /// past both is dropped here, so that it does not hold memory until
    /// evicted.
    pub(crate) fn get(&self, key: &str) -> Option<Arc<Entry>> {
        let entry = self.entries.get(key)?;
        if !entry.is_servable_stale(self.clock.now_ms()) {
            self.entries.remove(key);
            return None;
        }
        Some(entry)
    }

    /// Keeps `bytes` (and its decoded value, if at hand) as the value of
    /// `key`, fresh for `min(ttl_ms, local ttl)` from now.
    pub(crate) fn insert(&self, key: &str, bytes: Bytes, decoded: Option<Decoded>, ttl_ms: u64) {
        let now = self.clock.now_ms();
        let fresh_until = now.saturating_add(ttl_ms.min(self.settings.ttl_ms));
        let entry = Entry {
            bytes,
            decoded,
            fresh_until,
            stale_until: fresh_until.saturating_add(self.settings.stale_ms),
        };
        self.entries.insert(key.to_string(), Arc::new(entry));
    }

    /// Keeps `decoded` beside the bytes of `entry` (read from `key`), with
    /// the same freshness, so that later hits clone instead of decoding.
    pub(crate) fn remember(&self, key: &str, entry: &Entry, decoded: Decoded) {
        let entry = Entry {
            bytes: entry.bytes.clone(),
            decoded: Some(decoded),
            fresh_until: entry.fresh_until,
            stale_until: entry.stale_until,
        };
        self.entries.insert(key.to_string(), Arc::new(entry));
    }

    pub(crate) fn remove(&self, key: &str) {
        self.entries.remove(key);
    }

    /// Entries and their total weight now.
    pub(crate) fn usage(&self) -> (u64, u64) {
        (self.entries.len() as u64, self.entries.weight())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use std::time::Duration;

    fn tier(clock: &ManualClock, max_entries: u64, max_bytes: u64) -> Local {
        Local::new(
            LocalSettings {
                max_entries,
                max_bytes,
                ttl_ms: 1000,
                stale_ms: 5000,
            },
            Arc::new(clock.clone()),
        )
    }

    #[test]
    fn entries_go_fresh_then_stale_then_unservable() {
        let clock = ManualClock::new(1_000_000);
        let local = tier(&clock, 100, 1 << 20);
        local.insert("k", Bytes::from_static(b"v"), None, 60_000);
        let entry = local.get("k").unwrap();
        assert!(entry.is_fresh(clock.now_ms()));
        clock.advance(Duration::from_millis(1000));
        assert!(
            !entry.is_fresh(clock.now_ms()),
            "the local ttl caps freshness"
        );
        assert!(entry.is_servable_stale(clock.now_ms()));
        clock.advance(Duration::from_millis(5000));
        assert!(!entry.is_servable_stale(clock.now_ms()));
        assert!(local.get("k").is_none(), "dropped once past both");
        assert_eq!(local.usage().0, 0);
    }

    #[test]
    fn a_short_value_ttl_caps_freshness() {
        let clock = ManualClock::new(1_000_000);
        let local = tier(&clock, 100, 1 << 20);
        local.insert("k", Bytes::from_static(b"v"), None, 10);
        clock.advance(Duration::from_millis(10));
        assert!(!local.get("k").unwrap().is_fresh(clock.now_ms()));
    }

    #[test]
    fn both_bounds_hold() {
        let clock = ManualClock::new(1_000_000);
        // Small values: the entry bound applies.
        let local = tier(&clock, 10, 1 << 20);
        for i in 0..100 {
            local.insert(&format!("k{i}"), Bytes::from_static(b"v"), None, 60_000);
        }
        assert!(local.usage().0 <= 10, "{:?}", local.usage());
        // Large values: the byte bound applies.
        let local = tier(&clock, 1000, 64 * 1024);
        let value = Bytes::from(vec![0u8; 8 * 1024]);
        for i in 0..100 {
            local.insert(&format!("k{i}"), value.clone(), None, 60_000);
        }
        let (entries, bytes) = local.usage();
        assert!(bytes <= 64 * 1024 && entries <= 8, "{entries} {bytes}");
    }
}
