//! Settings of a memory report: its budgets (commands and keys per second
//! per node), how much it samples, when it stops, with each default and
//! the measurement behind it.

use std::time::Duration;

use super::usage;
use crate::error::{Error, Result};

/// Commands per second per node the walk may send: enough for the key
/// pace below at [`DEFAULT_SCAN_COUNT`], each command being short.
pub const DEFAULT_COMMAND_BUDGET: u32 = 10_000;
/// Keys per second per node the walk may visit: a SCAN returning 500 keys
/// costs Redis (and the walker) far more than one small command, so the
/// walk is paced by keys as well as by commands: 1 million keys take 25 s.
///
/// SCAN costs Redis about 2 µs per key returned on a slow 2-core VM
/// (commandstats: 430 µs for `COUNT 200`, 44 µs for `COUNT 20`), so
/// whatever the call size the walk keeps Redis busy roughly 10% of the time
/// at this pace; what the call size decides is how long a request that
/// arrives meanwhile waits.
pub const DEFAULT_KEYS_PER_SECOND: u32 = 40_000;
/// `SCAN … COUNT`: buckets examined per call. Small, so that one call holds
/// Redis for about 10 µs and a request arriving meanwhile barely waits
/// (G1 in docs/benchmarks.md, on a 2-core VM: at `COUNT 200` the p99 of a
/// GET loop on the same Redis rose 6–7×, at 20 about 1.9×; at 5, with the
/// walk at idle priority, about 1.2×).
pub const DEFAULT_SCAN_COUNT: u32 = 5;
/// Keys measured per family at least (all of them when there are fewer).
pub const DEFAULT_SAMPLES_PER_FAMILY: usize = 200;
/// Keys measured per family at most: enough for a family of a few
/// thousand keys whose bytes sit in a few big ones to be measured whole.
pub const DEFAULT_MAX_SAMPLES_PER_FAMILY: usize = 5000;
/// Standard error of a family's mean key size that stops extra sampling.
pub const DEFAULT_TARGET_RELATIVE_ERROR: f64 = 0.02;
/// Keys walked per node before the rest is estimated from the sample.
pub const DEFAULT_MAX_SCAN_KEYS: u64 = 5_000_000;
/// Longest walk per node before the rest is estimated from the sample.
pub const DEFAULT_MAX_SCAN_DURATION: Duration = Duration::from_secs(10 * 60);
/// A round trip at least this slow (and well above the fastest seen) means
/// Redis is busy: the walk slows down.
pub const DEFAULT_BUSY_LATENCY: Duration = Duration::from_millis(20);
/// Families tracked before rare literal names are merged into `<*>`.
pub const DEFAULT_MAX_FAMILIES: usize = 2000;
/// Keys measured per pipeline (four commands each, see `usage.rs`). Redis runs a
/// pipeline's commands back to back, so a short one keeps the wait of
/// other clients short.
pub const DEFAULT_SAMPLE_BATCH: usize = 2;

/// Settings of a walk.
#[derive(Debug, Clone, PartialEq)]
pub struct AttributeConfig {
    /// Commands per second per node (10 to 1,000,000).
    pub budget: u32,
    /// Keys per second per node the walk may visit (100 to 10,000,000).
    pub keys_per_sec: u32,
    /// `SCAN … COUNT` (1 to 10,000).
    pub scan_count: u32,
    /// Keys measured per family at least.
    pub samples_per_family: usize,
    /// Keys measured per family at most.
    pub max_samples_per_family: usize,
    /// Standard error of the mean size that is good enough.
    pub target_relative_error: f64,
    /// Keys walked per node before estimating the rest.
    pub max_keys: u64,
    /// Longest walk per node before estimating the rest.
    pub max_duration: Duration,
    /// The busy threshold's floor.
    pub busy_latency: Duration,
    /// Families tracked before merging rare names.
    pub max_families: usize,
    /// Elements `MEMORY USAGE` may walk per key (1 to 1,000,000): keys up
    /// to this size are measured exactly, larger ones estimated by Redis.
    pub exact_elements: u32,
    /// BullMQ `prefix` options in use (default `bull`).
    pub bullmq_prefixes: Vec<String>,
    /// Plimsoll key prefixes in use (default `plimsoll`, the
    /// [`keyspace::DEFAULT_PREFIX`](crate::keyspace::DEFAULT_PREFIX)): keys
    /// under them are read with [`keyspace::parse`](crate::keyspace::parse).
    pub plimsoll_prefixes: Vec<String>,
    /// Keys measured per pipeline (1 to 100; four commands each).
    pub sample_batch: usize,
    /// Walk at the lowest CPU priority (Linux `SCHED_IDLE`), on a thread
    /// and a connection of its own. On by default.
    pub idle_priority: bool,
}

impl Default for AttributeConfig {
    fn default() -> Self {
        Self {
            budget: DEFAULT_COMMAND_BUDGET,
            keys_per_sec: DEFAULT_KEYS_PER_SECOND,
            scan_count: DEFAULT_SCAN_COUNT,
            samples_per_family: DEFAULT_SAMPLES_PER_FAMILY,
            max_samples_per_family: DEFAULT_MAX_SAMPLES_PER_FAMILY,
            target_relative_error: DEFAULT_TARGET_RELATIVE_ERROR,
            max_keys: DEFAULT_MAX_SCAN_KEYS,
            max_duration: DEFAULT_MAX_SCAN_DURATION,
            busy_latency: DEFAULT_BUSY_LATENCY,
            max_families: DEFAULT_MAX_FAMILIES,
            exact_elements: usage::DEFAULT_EXACT_ELEMENTS,
            bullmq_prefixes: vec!["bull".to_string()],
            plimsoll_prefixes: vec![crate::keyspace::DEFAULT_PREFIX.to_string()],
            sample_batch: DEFAULT_SAMPLE_BATCH,
            idle_priority: true,
        }
    }
}

impl AttributeConfig {
    /// Checks every setting, naming the first bad one.
    pub fn validate(&self) -> Result<()> {
        let bad = |what: String| Err(Error::invalid(what));
        if !(10..=1_000_000).contains(&self.budget) {
            return bad(format!(
                "attribute budget {} must be 10 to 1000000 commands per second",
                self.budget
            ));
        }
        if !(100..=10_000_000).contains(&self.keys_per_sec) {
            return bad(format!(
                "attribute keys_per_sec {} must be 100 to 10000000",
                self.keys_per_sec
            ));
        }
        if !(1..=10_000).contains(&self.scan_count) {
            return bad(format!("scan_count {} must be 1 to 10000", self.scan_count));
        }
        if self.samples_per_family == 0 || self.max_samples_per_family < self.samples_per_family {
            return bad(format!(
                "samples_per_family {} must be at least 1 and at most max_samples_per_family {}",
                self.samples_per_family, self.max_samples_per_family
            ));
        }
        if !(self.target_relative_error > 0.0 && self.target_relative_error < 1.0) {
            return bad(format!(
                "target_relative_error {} must be between 0 and 1",
                self.target_relative_error
            ));
        }
        if self.max_keys == 0 || self.max_duration < Duration::from_millis(100) {
            return bad(format!(
                "max_keys {} must be positive and max_duration {:?} at least 100 ms",
                self.max_keys, self.max_duration
            ));
        }
        if !(1..=100).contains(&self.sample_batch) {
            return bad(format!(
                "sample_batch {} must be 1 to 100 keys per pipeline",
                self.sample_batch
            ));
        }
        if !(1..=1_000_000).contains(&self.exact_elements) {
            return bad(format!(
                "exact_elements {} must be 1 to 1000000",
                self.exact_elements
            ));
        }
        if self.max_families < 10 {
            return bad(format!(
                "max_families {} must be at least 10",
                self.max_families
            ));
        }
        Ok(())
    }
}
