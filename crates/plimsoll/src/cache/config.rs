//! Cache settings, each default a named constant, checked once.
//!
//! [`CacheConfig`] is what a caller fills in (plain fields, `Default`);
//! `Settings` is what the cache runs on: made by `Settings::new`, which
//! checks every field and names the first bad one, so that nothing past the
//! constructor has to wonder whether a timeout is zero or a rate is 3.
//!
//! The numbers are chosen for a cache that must never cost its caller more
//! than a few milliseconds: a Redis on the same network answers a GET in
//! well under a millisecond, so a budget of 5 ms only runs out when Redis is
//! slow, frozen or gone, and then the breaker stops paying it at all.

use std::sync::Arc;
use std::time::Duration;

use crate::clock::{Clock, SystemClock, ms};
use crate::error::{Error, Result};
use crate::keyspace::{CacheNamespace, DEFAULT_PREFIX, validate_prefix};

/// The most one cache call spends waiting on Redis (a GET, a SET or a DEL).
/// Past it the call goes on without Redis: a read falls back to the
/// in-process tier or the loader.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(5);
/// The longest budget a cache call may have: a cache that waits longer than
/// this for Redis is no longer an optimisation.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(1);
/// TTL of values written without one ([`Ttl::Default`](super::Ttl)).
pub const DEFAULT_TTL: Duration = Duration::from_secs(5 * 60);
/// The longest TTL a value may have. Finite on purpose: every cache key
/// expires (see `docs/keyspace.md`).
pub const MAX_TTL: Duration = Duration::from_secs(30 * 24 * 60 * 60);
/// Namespace of a cache that sets none.
pub const DEFAULT_NAMESPACE: &str = "default";
/// Largest encoded value (before compression): 1 MiB, memcached's limit. A
/// larger value is refused by `set` with `ErrorKind::PayloadTooLarge`, and
/// returned but not cached by `get_or_compute`.
pub const DEFAULT_MAX_VALUE_BYTES: usize = 1024 * 1024;
/// The highest value size limit a cache may set: 64 MiB.
pub const MAX_VALUE_BYTES_LIMIT: usize = 64 * 1024 * 1024;
/// Encoded values at least this large are zstd-compressed when that saves
/// at least 1/16. Smaller ones are stored as they are: compressing a
/// kilobyte costs more time than it saves memory.
pub const DEFAULT_COMPRESS_ABOVE: usize = 4 * 1024;
/// Requests of one cache that may be out at Redis unanswered at once,
/// including those whose callers ran out of budget (they keep their slot
/// until the client lets go of them: a reply, the connection's response
/// timeout, or a broken connection). Past it a call skips Redis at once
/// (counted as `shed`, and as a breaker failure) instead of queueing: when
/// Redis freezes, this caps what piles up while the breaker opens.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 512;
/// How long [`Cache::connect`](super::Cache::connect) waits for one TCP
/// connection attempt. It connects in the background: calls never wait for
/// it.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// The reply timeout of the cache's own connection. Every call has the much
/// shorter [`DEFAULT_TIMEOUT`]; this backstop frees the in-flight slot of a
/// request that its caller gave up on and Redis does not answer.
pub const CONNECTION_RESPONSE_TIMEOUT: Duration = Duration::from_secs(1);

/// Failure rate (0–1] at or above which the breaker opens.
pub const DEFAULT_FAILURE_RATE: f64 = 0.5;
/// Length of the breaker's sliding time window.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(10);
/// Calls the window must hold before a failure rate counts: a handful of
/// timeouts on a quiet service must not open the breaker.
pub const DEFAULT_MIN_CALLS: u32 = 20;
/// How long the breaker stays open before it lets probes through. Short,
/// because a cache wants Redis back soon; while open a call costs nothing.
pub const DEFAULT_OPEN_FOR: Duration = Duration::from_secs(1);
/// Calls let through while half-open; the breaker closes when their failure
/// rate stays under [`DEFAULT_FAILURE_RATE`] and opens again otherwise.
pub const DEFAULT_PROBES: u32 = 3;

/// Entries the in-process tier holds at most.
pub const DEFAULT_LOCAL_MAX_ENTRIES: u64 = 10_000;
/// Bytes (keys and encoded values) the in-process tier holds at most.
pub const DEFAULT_LOCAL_MAX_BYTES: u64 = 64 * 1024 * 1024;
/// How long a local copy is served without asking Redis. It bounds how stale
/// a value can be after another process changed or deleted it in Redis.
pub const DEFAULT_LOCAL_TTL: Duration = Duration::from_secs(5);
/// How long after it stopped being fresh a local copy may still be served
/// while Redis is unavailable (stale-if-error).
pub const DEFAULT_STALE_IF_ERROR: Duration = Duration::from_secs(60);
/// The longest stale-if-error window: a day.
pub const MAX_STALE_IF_ERROR: Duration = Duration::from_secs(24 * 60 * 60);

/// The circuit breaker of one Redis endpoint, as resilience4j has it: a
/// failure rate over a sliding time window with a minimum number of calls;
/// open for a while; then a few probes decide.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BreakerConfig {
    /// Failure rate, in (0, 1], at or above which the breaker opens.
    pub failure_rate: f64,
    /// Length of the sliding window (10 buckets), 100 ms to 10 minutes.
    pub window: Duration,
    /// Calls the window must hold before the rate counts (at least 1).
    pub min_calls: u32,
    /// Time the breaker stays open before probing, 1 ms to 10 minutes.
    pub open_for: Duration,
    /// Calls let through while half-open (1 to 100).
    pub probes: u32,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            failure_rate: DEFAULT_FAILURE_RATE,
            window: DEFAULT_WINDOW,
            min_calls: DEFAULT_MIN_CALLS,
            open_for: DEFAULT_OPEN_FOR,
            probes: DEFAULT_PROBES,
        }
    }
}

/// The optional in-process tier: hot keys served from memory, and stale
/// values served for a bounded time while Redis is unavailable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalConfig {
    /// Entries held at most.
    pub max_entries: u64,
    /// Bytes of keys and encoded values held at most.
    pub max_bytes: u64,
    /// How long a local copy is served without asking Redis (capped by the
    /// value's own TTL), 1 ms to 1 hour.
    pub ttl: Duration,
    /// How long after that a copy may still be served while Redis cannot
    /// answer; zero turns stale serving off. At most a day.
    pub stale_if_error: Duration,
}

impl Default for LocalConfig {
    fn default() -> Self {
        Self {
            max_entries: DEFAULT_LOCAL_MAX_ENTRIES,
            max_bytes: DEFAULT_LOCAL_MAX_BYTES,
            ttl: DEFAULT_LOCAL_TTL,
            stale_if_error: DEFAULT_STALE_IF_ERROR,
        }
    }
}

/// Settings of a [`Cache`](super::Cache). Checked when the cache is made.
#[derive(Debug, Clone)]
pub struct CacheConfig {
    /// Prefix of every key (default `plimsoll`).
    pub prefix: String,
    /// Namespace of this cache's keys: `<prefix>:cache:<namespace>:<key>`.
    pub namespace: String,
    /// The most one call spends waiting on Redis.
    pub timeout: Duration,
    /// TTL of values written with [`Ttl::Default`](super::Ttl).
    pub default_ttl: Duration,
    /// Largest encoded value, in bytes before compression.
    pub max_value_bytes: usize,
    /// Compress encoded values at least this large; `None` never compresses.
    pub compress_above: Option<usize>,
    /// Calls that may wait on Redis at once before further calls skip it.
    pub max_in_flight: usize,
    /// The circuit breaker.
    pub breaker: BreakerConfig,
    /// The in-process tier; off (`None`) by default, because a local copy
    /// may lag a change made by another process by up to its `ttl`.
    pub local: Option<LocalConfig>,
    /// Timeout of one connection attempt of the cache's own connection.
    pub connect_timeout: Duration,
    /// The clock of TTLs, stale bounds and the breaker's window.
    pub clock: Arc<dyn Clock>,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            prefix: DEFAULT_PREFIX.to_string(),
            namespace: DEFAULT_NAMESPACE.to_string(),
            timeout: DEFAULT_TIMEOUT,
            default_ttl: DEFAULT_TTL,
            max_value_bytes: DEFAULT_MAX_VALUE_BYTES,
            compress_above: Some(DEFAULT_COMPRESS_ABOVE),
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            breaker: BreakerConfig::default(),
            local: None,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            clock: Arc::new(SystemClock),
        }
    }
}

impl CacheConfig {
    /// The defaults with the in-process tier switched on (its defaults).
    pub fn with_local_tier() -> Self {
        Self {
            local: Some(LocalConfig::default()),
            ..Self::default()
        }
    }

    /// Checks every setting, naming the first bad one.
    pub fn validate(&self) -> Result<()> {
        Settings::new(self).map(|_| ())
    }
}

/// Checked breaker settings, in milliseconds.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BreakerSettings {
    pub(crate) failure_rate: f64,
    /// Width of one of the window's buckets.
    pub(crate) bucket_ms: u64,
    pub(crate) min_calls: u64,
    pub(crate) open_ms: u64,
    pub(crate) probes: u32,
}

/// Number of buckets of the breaker's sliding window. The window slides by
/// one bucket (a tenth of it) at a time.
pub(crate) const WINDOW_BUCKETS: usize = 10;

impl BreakerSettings {
    pub(crate) fn new(config: &BreakerConfig) -> Result<Self> {
        let rate = config.failure_rate;
        if !(rate > 0.0 && rate <= 1.0) {
            return Err(Error::invalid(format!(
                "breaker.failure_rate {rate} must be above 0 and at most 1"
            )));
        }
        let ten_minutes = Duration::from_secs(600);
        if config.window < Duration::from_millis(100) || config.window > ten_minutes {
            return Err(Error::invalid(format!(
                "breaker.window {:?} must be 100 ms to 10 minutes",
                config.window
            )));
        }
        if config.min_calls == 0 {
            return Err(Error::invalid("breaker.min_calls must be at least 1"));
        }
        if config.open_for < Duration::from_millis(1) || config.open_for > ten_minutes {
            return Err(Error::invalid(format!(
                "breaker.open_for {:?} must be 1 ms to 10 minutes",
                config.open_for
            )));
        }
        if !(1..=100).contains(&config.probes) {
            return Err(Error::invalid(format!(
                "breaker.probes {} must be 1 to 100",
                config.probes
            )));
        }
        Ok(Self {
            failure_rate: rate,
            bucket_ms: ms(config.window) / WINDOW_BUCKETS as u64,
            min_calls: u64::from(config.min_calls),
            open_ms: ms(config.open_for),
            probes: config.probes,
        })
    }
}

/// Checked in-process tier settings.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LocalSettings {
    pub(crate) max_entries: u64,
    pub(crate) max_bytes: u64,
    pub(crate) ttl_ms: u64,
    pub(crate) stale_ms: u64,
}

impl LocalSettings {
    fn new(config: &LocalConfig) -> Result<Self> {
        if config.max_entries == 0 {
            return Err(Error::invalid("local.max_entries must be at least 1"));
        }
        if config.max_bytes < config.max_entries || config.max_bytes > 1 << 40 {
            return Err(Error::invalid(format!(
                "local.max_bytes {} must be at least local.max_entries ({}) and at most 1 TiB",
                config.max_bytes, config.max_entries
            )));
        }
        if config.ttl < Duration::from_millis(1) || config.ttl > Duration::from_secs(3600) {
            return Err(Error::invalid(format!(
                "local.ttl {:?} must be 1 ms to 1 hour",
                config.ttl
            )));
        }
        if config.stale_if_error > MAX_STALE_IF_ERROR {
            return Err(Error::invalid(format!(
                "local.stale_if_error {:?} must be at most 24 hours",
                config.stale_if_error
            )));
        }
        Ok(Self {
            max_entries: config.max_entries,
            max_bytes: config.max_bytes,
            ttl_ms: ms(config.ttl),
            stale_ms: ms(config.stale_if_error),
        })
    }
}

/// A [`CacheConfig`] that passed its checks.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    /// `<prefix>:cache:<namespace>:`.
    pub(crate) key_base: String,
    pub(crate) timeout: Duration,
    pub(crate) default_ttl_ms: u64,
    pub(crate) max_value_bytes: usize,
    pub(crate) compress_above: Option<usize>,
    pub(crate) max_in_flight: usize,
    pub(crate) breaker: BreakerSettings,
    pub(crate) local: Option<LocalSettings>,
    pub(crate) connect_timeout: Duration,
    pub(crate) clock: Arc<dyn Clock>,
}

impl Settings {
    pub(crate) fn new(config: &CacheConfig) -> Result<Self> {
        validate_prefix(&config.prefix)?;
        let namespace = CacheNamespace::new(config.namespace.clone())?;
        if config.timeout < Duration::from_millis(1) || config.timeout > MAX_TIMEOUT {
            return Err(Error::invalid(format!(
                "timeout {:?} must be 1 ms to 1 s",
                config.timeout
            )));
        }
        let default_ttl_ms = check_ttl(config.default_ttl)
            .map_err(|e| Error::invalid(format!("default_ttl: {}", e.message())))?;
        if config.max_value_bytes == 0 || config.max_value_bytes > MAX_VALUE_BYTES_LIMIT {
            return Err(Error::invalid(format!(
                "max_value_bytes {} must be 1 to {MAX_VALUE_BYTES_LIMIT}",
                config.max_value_bytes
            )));
        }
        if config.compress_above == Some(0) {
            return Err(Error::invalid(
                "compress_above must be at least 1 byte (None turns compression off)",
            ));
        }
        if config.max_in_flight == 0 {
            return Err(Error::invalid("max_in_flight must be at least 1"));
        }
        if config.connect_timeout < Duration::from_millis(1)
            || config.connect_timeout > Duration::from_secs(60)
        {
            return Err(Error::invalid(format!(
                "connect_timeout {:?} must be 1 ms to 60 s",
                config.connect_timeout
            )));
        }
        Ok(Self {
            key_base: crate::keyspace::cache_base(&config.prefix, &namespace),
            timeout: config.timeout,
            default_ttl_ms,
            max_value_bytes: config.max_value_bytes,
            compress_above: config.compress_above,
            max_in_flight: config.max_in_flight,
            breaker: BreakerSettings::new(&config.breaker)?,
            local: config.local.as_ref().map(LocalSettings::new).transpose()?,
            connect_timeout: config.connect_timeout,
            clock: config.clock.clone(),
        })
    }
}

/// A TTL in milliseconds, checked: 1 ms to [`MAX_TTL`].
pub(crate) fn check_ttl(ttl: Duration) -> Result<u64> {
    if ttl < Duration::from_millis(1) || ttl > MAX_TTL {
        return Err(Error::invalid(format!(
            "ttl {ttl:?} must be 1 ms to 30 days"
        )));
    }
    Ok(ms(ttl))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error_of(config: CacheConfig) -> String {
        config.validate().unwrap_err().to_string()
    }

    #[test]
    fn the_defaults_are_valid() {
        CacheConfig::default().validate().unwrap();
        CacheConfig::with_local_tier().validate().unwrap();
        let settings = Settings::new(&CacheConfig::default()).unwrap();
        assert_eq!(settings.key_base, "plimsoll:cache:default:");
        assert_eq!(settings.breaker.bucket_ms, 1000);
    }

    #[test]
    fn bad_settings_are_named() {
        let bad = |f: fn(&mut CacheConfig)| {
            let mut config = CacheConfig::with_local_tier();
            f(&mut config);
            error_of(config)
        };
        assert!(bad(|c| c.timeout = Duration::ZERO).contains("timeout"));
        assert!(bad(|c| c.timeout = Duration::from_secs(2)).contains("timeout"));
        assert!(bad(|c| c.default_ttl = Duration::ZERO).contains("default_ttl"));
        assert!(bad(|c| c.default_ttl = Duration::MAX).contains("default_ttl"));
        assert!(bad(|c| c.namespace = "a:b".into()).contains("cache namespace"));
        assert!(bad(|c| c.prefix = String::new()).contains("prefix"));
        assert!(bad(|c| c.max_value_bytes = 0).contains("max_value_bytes"));
        assert!(bad(|c| c.compress_above = Some(0)).contains("compress_above"));
        assert!(bad(|c| c.max_in_flight = 0).contains("max_in_flight"));
        assert!(bad(|c| c.breaker.failure_rate = 0.0).contains("breaker.failure_rate"));
        assert!(bad(|c| c.breaker.failure_rate = f64::NAN).contains("breaker.failure_rate"));
        assert!(bad(|c| c.breaker.failure_rate = 1.5).contains("breaker.failure_rate"));
        assert!(bad(|c| c.breaker.min_calls = 0).contains("breaker.min_calls"));
        assert!(bad(|c| c.breaker.window = Duration::from_millis(5)).contains("breaker.window"));
        assert!(bad(|c| c.breaker.open_for = Duration::ZERO).contains("breaker.open_for"));
        assert!(bad(|c| c.breaker.probes = 0).contains("breaker.probes"));
        assert!(bad(|c| c.local.as_mut().unwrap().max_entries = 0).contains("local.max_entries"));
        assert!(bad(|c| c.local.as_mut().unwrap().max_bytes = 10).contains("local.max_bytes"));
        assert!(bad(|c| c.local.as_mut().unwrap().ttl = Duration::ZERO).contains("local.ttl"));
        assert!(
            bad(|c| c.local.as_mut().unwrap().stale_if_error = Duration::MAX)
                .contains("local.stale_if_error")
        );
    }
}
