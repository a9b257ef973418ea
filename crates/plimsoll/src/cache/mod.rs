//! A cache on Redis that survives Redis.
//!
//! In the outage behind Plimsoll, services that used Redis only as a cache
//! failed when Redis did. A cache is an optimisation; its failure must never
//! fail a request. [`Cache`] is the one shared way to use Redis as a cache
//! that keeps that promise:
//!
//! - **A time budget per call** ([`DEFAULT_TIMEOUT`], 5 ms): a slow, frozen
//!   or unreachable Redis costs a call at most that; then the call goes on
//!   without Redis. The budget wraps the whole Redis step (waiting for a
//!   connection included) in `tokio::time::timeout`, so it holds whatever
//!   the connection below does.
//! - **A circuit breaker per endpoint**: once enough calls failed in a
//!   sliding window, calls skip Redis entirely and cost nothing; a few
//!   probes close it again when Redis is back. A full Redis (`OOM` on SET)
//!   is not a failure: reads go on. The endpoint is what a cache (and its
//!   clones) talks to: one server, or a cluster as a whole — redis-rs routes
//!   each key to its shard out of sight, so one sick shard opens the breaker
//!   for all; per-shard breakers would need the slot map.
//! - **Bounded pile-up**: at most [`DEFAULT_MAX_IN_FLIGHT`] requests of a
//!   cache are out at Redis unanswered — counting those whose callers gave
//!   up, which keep their slot until the client lets go of them or a second
//!   passes — and past that a call skips Redis at once instead of queueing.
//!   Together with the breaker this keeps a frozen Redis from piling up
//!   requests: before the breaker opens, at most that many are out; after,
//!   only a few probes.
//! - **An optional in-process tier** ([`LocalConfig`], on `quick_cache`):
//!   hot keys from memory, and stale values for a bounded time while Redis
//!   cannot answer (stale-if-error).
//! - **Single-flight**: concurrent misses of one key run the loader once.
//! - **Typed values** through serde, stored compactly (postcard, zstd when
//!   large), with a size limit per value; see [`Value`] for the bounds.
//! - **Stats** ([`CacheStats`]): hits per tier, misses, loader calls, Redis
//!   errors by kind, breaker state and transitions, time spent.
//!
//! Every value is written with a TTL (given, or [`DEFAULT_TTL`]) in the same
//! `SET … PX` command: no cache key exists without an expiry.
//!
//! The pieces have one shape each, as tower's layers do: [`config`] turns
//! settings into checked ones, `breaker`, `local`, `flight` and `codec` each
//! own one concern with its own tests, and this module only composes them
//! around one Redis call (`Inner::call`).
//!
//! ```no_run
//! use std::time::Duration;
//! use plimsoll::{Cache, CacheConfig, RedisConfig};
//!
//! # #[derive(Clone, serde::Serialize, serde::Deserialize)] struct User { name: String }
//! # async fn load_user(id: u64) -> Result<User, std::io::Error> { todo!() }
//! # async fn demo() -> plimsoll::Result<()> {
//! let cache = Cache::connect(
//!     RedisConfig::new("redis://127.0.0.1:6379/")?,
//!     CacheConfig::with_local_tier(),
//! )?;
//! // Read-through: Redis when it can help, the loader when it cannot.
//! let user: Result<User, std::io::Error> = cache
//!     .get_or_compute("user:42", Duration::from_secs(60), || load_user(42))
//!     .await;
//! # Ok(())
//! # }
//! ```

mod breaker;
mod codec;
pub mod config;
mod flight;
mod local;
mod stats;

use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use redis::{Cmd, FromRedisValue};
use serde::Serialize;
use serde::de::DeserializeOwned;

pub use breaker::{BreakerState, BreakerStats};
pub use config::{
    BreakerConfig, CacheConfig, DEFAULT_MAX_IN_FLIGHT, DEFAULT_TIMEOUT, DEFAULT_TTL, LocalConfig,
    MAX_TTL,
};
pub use stats::{CacheStats, LocalUsage, RedisErrors};

use self::breaker::Breaker;
use self::codec::Codec;
use self::config::{CONNECTION_RESPONSE_TIMEOUT, Settings, check_ttl};
use self::flight::{Flights, Lead, Role};
use self::local::{Decoded, Entry, Local};
use self::stats::{Counters, bump};
use crate::connection::{Redis, RedisConfig};
use crate::error::{Error, ErrorKind, Result};
use crate::keyspace::MAX_CACHE_KEY_LEN;

/// What a cached value must be: serde both ways (for Redis), and `Clone +
/// Send + Sync + 'static` so that the in-process tier can hand out copies
/// of its decoded value instead of decoding on every hit. Implemented for
/// every such type.
///
/// A hit copies the value; for large values read often, cache an
/// `Arc<T>`: it is stored in Redis as the `T` it holds, and the tier hands
/// out the same allocation to every hit (in C1, 1 KiB texts: 16.7× plain
/// GETs as `Arc<String>` against 10.8× as `String`).
pub trait Value: Serialize + DeserializeOwned + Clone + Send + Sync + 'static {}

impl<T: Serialize + DeserializeOwned + Clone + Send + Sync + 'static> Value for T {}

/// How long a value lives: the cache's default, or a given time (1 ms to
/// [`MAX_TTL`]). A `Duration` converts into it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Ttl {
    /// [`CacheConfig::default_ttl`].
    #[default]
    Default,
    /// This long.
    After(Duration),
}

impl From<Duration> for Ttl {
    fn from(ttl: Duration) -> Self {
        Self::After(ttl)
    }
}

/// What a write ([`Cache::set`], [`Cache::delete`]) did in Redis. Redis
/// trouble is reported as a value, not an error, so that `?` on a cache
/// write cannot fail a request; the in-process tier is updated either way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheWrite {
    /// Redis applied it.
    Applied,
    /// Redis was not asked: the breaker is open, or too many calls are
    /// waiting on it.
    Skipped,
    /// Redis was asked and did not apply it: timed out, unreachable, out of
    /// memory (`ErrorKind::OutOfMemory`), …
    Failed(ErrorKind),
}

impl CacheWrite {
    /// Whether Redis applied the write.
    pub fn is_applied(self) -> bool {
        self == Self::Applied
    }
}

/// A cache client; clones share the connection, breaker, in-process tier,
/// flights and stats.
#[derive(Clone)]
pub struct Cache {
    inner: Arc<Inner>,
}

impl fmt::Debug for Cache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cache")
            .field("keys", &self.inner.settings.key_base)
            .field("timeout", &self.inner.settings.timeout)
            .field("breaker", &self.inner.breaker.state())
            .field("local_tier", &self.inner.local.is_some())
            .finish()
    }
}

impl Cache {
    /// A cache on an existing connection (shared with a queue, say). Calls
    /// still have the cache's own budget; a connection of its own, from
    /// [`connect`](Self::connect), also keeps the cache's waiting requests
    /// apart from the queue's.
    pub fn new(redis: Redis, config: CacheConfig) -> Result<Self> {
        Ok(Self::build(
            Settings::new(&config)?,
            Endpoint::Shared(redis),
        ))
    }

    /// A cache with a connection of its own, made in the background: this
    /// returns at once, also while Redis is down (calls go without Redis
    /// until it is up). Must be called inside a Tokio runtime.
    pub fn connect(redis: RedisConfig, config: CacheConfig) -> Result<Self> {
        let settings = Settings::new(&config)?;
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| Error::invalid("Cache::connect must be called inside a Tokio runtime"))?;
        let connector = Arc::new(Connector {
            redis: OnceLock::new(),
            config: redis
                .connect_timeout(settings.connect_timeout)
                .response_timeout(CONNECTION_RESPONSE_TIMEOUT),
            connect_timeout: settings.connect_timeout,
        });
        runtime.spawn(connect_in_background(Arc::downgrade(&connector)));
        Ok(Self::build(settings, Endpoint::Own(connector)))
    }

    fn build(settings: Settings, endpoint: Endpoint) -> Self {
        let inner = Inner {
            codec: Codec {
                max_value_bytes: settings.max_value_bytes,
                compress_above: settings.compress_above,
            },
            breaker: Breaker::new(settings.breaker, settings.clock.clone()),
            local: settings
                .local
                .map(|local| Local::new(local, settings.clock.clone())),
            flights: Flights::default(),
            counters: Counters::default(),
            in_flight: Arc::new(AtomicUsize::new(0)),
            endpoint,
            settings,
        };
        Self {
            inner: Arc::new(inner),
        }
    }

    /// The value of `key`, or `None` when it is not cached — or when Redis
    /// cannot say within the budget and no stale local copy may stand in.
    /// Redis trouble is never an error here; the only error is an invalid
    /// key (empty, or over [`MAX_CACHE_KEY_LEN`] bytes).
    pub async fn get<T: Value>(&self, key: &str) -> Result<Option<T>> {
        self.inner.check_key(key)?;
        Ok(match self.inner.read(key).await {
            Read::Hit(value) => Some(value),
            Read::Miss | Read::Unavailable => None,
        })
    }

    /// Stores `value` under `key` for `ttl`. Errors are the caller's:
    /// an invalid key or TTL, a value that does not encode
    /// (`Serialization`) or is over the size limit (`PayloadTooLarge`).
    /// What Redis did is the returned [`CacheWrite`].
    pub async fn set<T: Serialize + ?Sized>(
        &self,
        key: &str,
        value: &T,
        ttl: impl Into<Ttl>,
    ) -> Result<CacheWrite> {
        let inner = &self.inner;
        inner.check_key(key)?;
        let ttl_ms = inner.ttl_ms(ttl.into())?;
        let bytes = inner.codec.encode(value)?;
        if let Some(local) = &inner.local {
            local.insert(key, bytes.clone(), None, ttl_ms);
        }
        Ok(inner
            .write(set_command(&inner.redis_key(key), &bytes, ttl_ms))
            .await)
    }

    /// Removes `key` from both tiers. If Redis cannot be reached, its copy
    /// lives until its TTL (the returned [`CacheWrite`] says so).
    pub async fn delete(&self, key: &str) -> Result<CacheWrite> {
        let inner = &self.inner;
        inner.check_key(key)?;
        if let Some(local) = &inner.local {
            local.remove(key);
        }
        Ok(inner.write(single("DEL", &inner.redis_key(key))).await)
    }

    /// Read-through: the cached value of `key`, or the loader's.
    ///
    /// The loader runs when the value is not cached, and whenever Redis
    /// cannot help (down, slow, breaker open) and no stale local copy may
    /// stand in. Its value is returned at once; it is written to Redis in
    /// the background (within the budget) and to the in-process tier.
    /// Concurrent callers that miss the same key share one loader run.
    ///
    /// The only errors are the loader's. Cache-side problems — Redis
    /// errors, an invalid key or TTL, a value over the size limit — are
    /// counted in [`stats`](Self::stats) and logged, and the value is
    /// returned uncached.
    pub async fn get_or_compute<T, E, F, Fut>(
        &self,
        key: &str,
        ttl: impl Into<Ttl>,
        loader: F,
    ) -> Result<T, E>
    where
        T: Value,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let inner = &self.inner;
        let ttl_ms = match (inner.check_key(key), inner.ttl_ms(ttl.into())) {
            (Ok(()), Ok(ttl_ms)) => ttl_ms,
            (Err(err), _) | (_, Err(err)) => {
                tracing::warn!(error = %err, "cache: value loaded and not cached");
                bump(&inner.counters.not_cached);
                return inner.run_loader(loader).await;
            }
        };
        let store = match inner.read(key).await {
            Read::Hit(value) => return Ok(value),
            Read::Miss => true,
            // Redis just failed or is skipped: writing to it now would only
            // add load to a sick server.
            Read::Unavailable => false,
        };
        inner.load(key, ttl_ms, store, loader).await
    }

    /// A snapshot of what this cache (and its clones) did.
    pub fn stats(&self) -> CacheStats {
        let inner = &self.inner;
        let local = inner.local.as_ref().map(|local| {
            let (entries, weight) = local.usage();
            LocalUsage { entries, weight }
        });
        inner.counters.snapshot(inner.breaker.stats(), local)
    }

    /// The state of the breaker now.
    pub fn breaker_state(&self) -> BreakerState {
        self.inner.breaker.state()
    }
}

/// Where the cache's Redis connection comes from.
#[derive(Debug)]
enum Endpoint {
    /// A connection the caller made.
    Shared(Redis),
    /// The cache's own, made in the background.
    Own(Arc<Connector>),
}

impl Endpoint {
    fn redis(&self) -> Option<&Redis> {
        match self {
            Self::Shared(redis) => Some(redis),
            Self::Own(connector) => connector.redis.get(),
        }
    }
}

/// The cache's own connection, once made. Once made, redis-rs'
/// `ConnectionManager` (or cluster client) reconnects by itself.
#[derive(Debug)]
struct Connector {
    redis: OnceLock<Redis>,
    config: RedisConfig,
    connect_timeout: Duration,
}

/// Connects, retrying with backoff (100 ms doubling to 5 s) until it
/// succeeds or the cache is dropped.
async fn connect_in_background(connector: Weak<Connector>) {
    let mut failures = 0;
    loop {
        let Some(this) = connector.upgrade() else {
            return;
        };
        // Topology detection and the connection itself: a few round trips.
        let limit = this.connect_timeout * 3;
        match tokio::time::timeout(limit, Redis::connect(this.config.clone())).await {
            Ok(Ok(redis)) => {
                let _ = this.redis.set(redis);
                tracing::info!("cache connected to Redis");
                return;
            }
            Ok(Err(err)) => tracing::warn!(error = %err, "cache cannot connect to Redis yet"),
            Err(_) => tracing::warn!(?limit, "cache cannot connect to Redis yet: timed out"),
        }
        drop(this);
        failures += 1;
        tokio::time::sleep(crate::service::error_backoff(failures)).await;
    }
}

/// What a read found.
enum Read<T> {
    Hit(T),
    /// Redis answered: no such key (or one that does not decode).
    Miss,
    /// Redis could not answer and no stale copy may stand in.
    Unavailable,
}

/// What one Redis call came to.
enum Reply<T> {
    Done(T),
    Skipped,
    Failed(ErrorKind),
}

/// Everything a cache and its clones share.
#[derive(Debug)]
struct Inner {
    settings: Settings,
    codec: Codec,
    endpoint: Endpoint,
    breaker: Breaker,
    local: Option<Local>,
    flights: Flights,
    counters: Counters,
    /// Requests sent to Redis and not yet let go of; see `Inner::call` and
    /// [`DEFAULT_MAX_IN_FLIGHT`].
    in_flight: Arc<AtomicUsize>,
}

impl Inner {
    fn check_key(&self, key: &str) -> Result<()> {
        if key.is_empty() || key.len() > MAX_CACHE_KEY_LEN {
            return Err(Error::invalid(format!(
                "cache key must be 1 to {MAX_CACHE_KEY_LEN} bytes, not {}",
                key.len()
            )));
        }
        Ok(())
    }

    /// The Redis key of a checked `key`; made only when Redis is asked, so
    /// that a local hit allocates nothing for it.
    fn redis_key(&self, key: &str) -> String {
        let base = &self.settings.key_base;
        let mut redis_key = String::with_capacity(base.len() + key.len());
        redis_key.push_str(base);
        redis_key.push_str(key);
        redis_key
    }

    fn ttl_ms(&self, ttl: Ttl) -> Result<u64> {
        match ttl {
            Ttl::Default => Ok(self.settings.default_ttl_ms),
            Ttl::After(ttl) => check_ttl(ttl),
        }
    }

    /// One command to Redis, within the budget, through the breaker and the
    /// in-flight bound. Counts what happened.
    ///
    /// A request that runs out of budget is not dropped but handed to a
    /// task that holds its in-flight slot until the client lets go of it (a
    /// reply, a broken connection) or the connection's response timeout
    /// ([`CONNECTION_RESPONSE_TIMEOUT`], 1 s) passes. So `max_in_flight`
    /// bounds the requests a frozen Redis has been sent in the last second
    /// and not answered, not only those a caller still waits for; past it,
    /// calls skip Redis at once.
    async fn call<T: FromRedisValue + Send + 'static>(&self, cmd: Cmd) -> Reply<T> {
        let Some(permit) = self.breaker.try_acquire() else {
            bump(&self.counters.breaker_skips);
            return Reply::Skipped;
        };
        let Some(slot) = Slot::take(&self.in_flight, self.settings.max_in_flight) else {
            // Redis is not keeping up: a failure for the breaker too — but
            // a probe that could not be sent proves nothing, and gives its
            // slot back for a later call.
            if permit.is_probe() {
                drop(permit);
            } else {
                permit.failure();
            }
            bump(&self.counters.shed);
            return Reply::Skipped;
        };
        let Some(mut redis) = self.endpoint.redis().cloned() else {
            permit.failure();
            self.counters.redis_error(ErrorKind::Connection);
            return Reply::Failed(ErrorKind::Connection);
        };
        bump(&self.counters.redis_calls);
        let started = Instant::now();
        let mut request =
            Box::pin(async move { cmd.query_async::<T>(&mut redis).await.map_err(Error::from) });
        let result = tokio::time::timeout(self.settings.timeout, &mut request).await;
        self.counters.redis_time(started.elapsed());
        match result {
            Ok(Ok(value)) => {
                permit.success();
                Reply::Done(value)
            }
            Ok(Err(err)) => {
                let kind = err.kind();
                self.counters.redis_error(kind);
                // Only an endpoint that does not answer is unhealthy; an
                // error reply (OOM above all) is Redis answering.
                if matches!(
                    kind,
                    ErrorKind::Timeout | ErrorKind::Connection | ErrorKind::Unavailable
                ) {
                    permit.failure();
                } else {
                    permit.success();
                }
                Reply::Failed(kind)
            }
            Err(_elapsed) => {
                // Keep the slot while the client still holds the request,
                // but no longer than the connection's response timeout: a
                // request waiting for a reconnect is not out at Redis.
                let in_flight = slot.hand_over();
                tokio::spawn(async move {
                    let _ = tokio::time::timeout(CONNECTION_RESPONSE_TIMEOUT, request).await;
                    in_flight.fetch_sub(1, Ordering::Release);
                });
                permit.failure();
                self.counters.redis_error(ErrorKind::Timeout);
                Reply::Failed(ErrorKind::Timeout)
            }
        }
    }

    async fn write(&self, cmd: Cmd) -> CacheWrite {
        match self.call::<redis::Value>(cmd).await {
            Reply::Done(_) => {
                bump(&self.counters.redis_writes);
                CacheWrite::Applied
            }
            Reply::Skipped => CacheWrite::Skipped,
            Reply::Failed(kind) => CacheWrite::Failed(kind),
        }
    }

    /// The value of the local entry of `key`: a clone of the decoded copy
    /// when it is a `T`, else decoded from the bytes (and the decoded copy
    /// kept for next time, when the entry had none).
    fn decode_local<T: Value>(&self, key: &str, entry: &Entry) -> Option<T> {
        if let Some(value) = entry.decoded.as_deref().and_then(|v| v.downcast_ref::<T>()) {
            return Some(value.clone());
        }
        let value: T = self.codec.decode(&entry.bytes).ok()?;
        if entry.decoded.is_none()
            && let Some(local) = &self.local
        {
            local.remember(key, entry, Arc::new(value.clone()));
        }
        Some(value)
    }

    /// Local tier, then Redis, then a stale local copy.
    async fn read<T: Value>(&self, key: &str) -> Read<T> {
        let clock = &self.settings.clock;
        let local_entry = match &self.local {
            Some(local) => local.get(key),
            None => None,
        };
        if let Some(entry) = &local_entry
            && entry.is_fresh(clock.now_ms())
            && let Some(value) = self.decode_local(key, entry)
        {
            bump(&self.counters.local_hits);
            return Read::Hit(value);
        }
        match self
            .call::<Option<Vec<u8>>>(single("GET", &self.redis_key(key)))
            .await
        {
            Reply::Done(Some(bytes)) => match self.codec.decode(&bytes) {
                Ok(value) => {
                    bump(&self.counters.redis_hits);
                    if let Some(local) = &self.local {
                        let decoded: Decoded = Arc::new(T::clone(&value));
                        local.insert(key, Bytes::from(bytes), Some(decoded), u64::MAX);
                    }
                    Read::Hit(value)
                }
                Err(err) => {
                    tracing::debug!(error = %err, "cache: value in Redis does not decode");
                    bump(&self.counters.corrupt);
                    bump(&self.counters.misses);
                    Read::Miss
                }
            },
            Reply::Done(None) => {
                bump(&self.counters.misses);
                Read::Miss
            }
            Reply::Skipped | Reply::Failed(_) => {
                if let Some(entry) = &local_entry
                    && entry.is_servable_stale(clock.now_ms())
                    && let Some(value) = self.decode_local(key, entry)
                {
                    bump(&self.counters.stale_hits);
                    return Read::Hit(value);
                }
                bump(&self.counters.fallbacks);
                Read::Unavailable
            }
        }
    }

    /// Runs the loader once per key at a time; stores its value.
    async fn load<T, E, F, Fut>(
        self: &Arc<Self>,
        key: &str,
        ttl_ms: u64,
        store: bool,
        loader: F,
    ) -> Result<T, E>
    where
        T: Value,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let lead = match self.flights.join(key) {
            Role::Leader(lead) => Some(lead),
            Role::Follower(follow) => {
                bump(&self.counters.flight_joins);
                if let Some(bytes) = follow.value().await
                    && let Ok(value) = self.codec.decode(&bytes)
                {
                    return Ok(value);
                }
                // The leader has nothing to give: load without a flight.
                None
            }
        };
        // A loader error drops `lead`, which sends its followers to their
        // own loaders.
        let value = self.run_loader(loader).await?;
        match self.codec.encode(&value) {
            Ok(bytes) => {
                if let Some(lead) = &lead {
                    lead.land(bytes.clone());
                }
                if let Some(local) = &self.local {
                    let decoded: Decoded = Arc::new(value.clone());
                    local.insert(key, bytes.clone(), Some(decoded), ttl_ms);
                }
                if store {
                    self.store_behind(self.redis_key(key), bytes, ttl_ms, lead);
                }
            }
            Err(err) => {
                tracing::warn!(error = %err, "cache: value loaded and not cached");
                bump(&self.counters.not_cached);
            }
        }
        Ok(value)
    }

    /// Writes a loaded value to Redis without making the caller wait; the
    /// key's flight ends when the write has.
    fn store_behind(
        self: &Arc<Self>,
        redis_key: String,
        bytes: Bytes,
        ttl_ms: u64,
        lead: Option<Lead>,
    ) {
        let inner = self.clone();
        tokio::spawn(async move {
            inner.write(set_command(&redis_key, &bytes, ttl_ms)).await;
            drop(lead);
        });
    }

    async fn run_loader<T, E, F, Fut>(&self, loader: F) -> Result<T, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        bump(&self.counters.loader_calls);
        let started = Instant::now();
        let result = loader().await;
        self.counters.loader_time(started.elapsed());
        if result.is_err() {
            bump(&self.counters.loader_errors);
        }
        result
    }
}

/// One of `max_in_flight` slots for a request out at Redis; given back on
/// drop, or handed to the task that waits out a request its caller gave
/// up on. (A semaphore would do, at the price of an `Arc` clone per call.)
struct Slot<'a>(&'a Arc<AtomicUsize>);

impl<'a> Slot<'a> {
    fn take(in_flight: &'a Arc<AtomicUsize>, max: usize) -> Option<Self> {
        if in_flight.fetch_add(1, Ordering::Acquire) >= max {
            in_flight.fetch_sub(1, Ordering::Release);
            return None;
        }
        Some(Self(in_flight))
    }

    /// The counter to give the slot back to, later.
    fn hand_over(self) -> Arc<AtomicUsize> {
        let in_flight = self.0.clone();
        std::mem::forget(self);
        in_flight
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Release);
    }
}

/// `GET key`, `DEL key`.
fn single(name: &str, redis_key: &str) -> Cmd {
    let mut cmd = redis::cmd(name);
    cmd.arg(redis_key);
    cmd
}

/// `SET key value PX ttl`: the value and its expiry in one command.
fn set_command(redis_key: &str, bytes: &[u8], ttl_ms: u64) -> Cmd {
    let mut cmd = redis::cmd("SET");
    cmd.arg(redis_key).arg(bytes).arg("PX").arg(ttl_ms);
    cmd
}
