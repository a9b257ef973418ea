//! The job queue: producer and inspector API over the queue's Lua scripts.
//!
//! A [`Queue`] is a cheap-to-clone handle for one named queue. Producers call
//! [`Queue::enqueue`], [`Queue::enqueue_bulk`] or, for jobs made as they go,
//! [`Queue::enqueue_iter`]; operators inspect counts,
//! jobs and the dead set, cancel jobs, pause and resume; a
//! [`Worker`](crate::Worker) built from the same handle runs the jobs.
//!
//! Every state change is one Lua script (`lua/queue/*.lua`, listed in
//! `docs/state_machine.md`), so a job is never half-moved, and every script
//! reaches its keys through `KEYS` under the queue's hash tag, so the same
//! code runs on a Redis Cluster. Enqueueing pairs its script with a plain
//! HSET of the records in one MULTI/EXEC (see `enqueue/`).
//!
//! Single enqueues from many tasks are coalesced: while one batch is on its
//! way to Redis, the next one gathers, and each batch is one transaction.
//! Callers still get their own result, and a batch is atomic, so one caller's
//! Ok means its job is in Redis.
//!
//! # On a replicated Redis
//!
//! Replication is asynchronous. By default ([`Durability::Primary`]) Ok
//! means the primary has the job; a failover that promotes a replica the
//! job had not reached loses it. [`Durability::Replicas`] waits for replicas
//! (`WAIT`) after each batch and fails with
//! [`NotReplicated`](crate::ErrorKind::NotReplicated) when they do not
//! confirm in time, so that Ok survives a failover to one of them.
//! Whatever the setting, a failover that loses writes never makes two jobs
//! share an id: each producer's run of ids is recorded with it, and a batch
//! whose run was lost is not written but sent again under fresh ids (see
//! `enqueue/writer.rs`). (Not to be confused with [`crate::redis_policy`], which
//! checks what Redis itself keeps.)

mod config;
mod enqueue;
mod inspect;
pub(crate) mod job;
pub(crate) mod record;
mod registry;
mod retained;
pub(crate) mod scripts;

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::sync::{OnceCell, mpsc};

pub use config::{
    Bounds, CompletedRetention, DEFAULT_DEAD_BOUNDS, DEFAULT_DEAD_MAX_AGE, DEFAULT_DEAD_MAX_BYTES,
    DEFAULT_DEAD_MAX_COUNT, DEFAULT_IDEMPOTENCY_WINDOW, DEFAULT_JOB_TIMEOUT, DEFAULT_MAX_ATTEMPTS,
    DEFAULT_MAX_QUEUES, DEFAULT_PAYLOAD_LIMIT, DEFAULT_PRIORITY, DEFAULT_REPLICA_TIMEOUT,
    Durability, MAX_ATTEMPTS_LIMIT, MAX_DURABILITY_REPLICAS, MAX_IDEMPOTENCY_KEY_LEN,
    MAX_IDEMPOTENCY_WINDOW, MAX_JOB_TIMEOUT, MAX_PAYLOAD_LIMIT, MAX_QUEUES_LIMIT,
    MAX_REPLICA_TIMEOUT, MAX_RETENTION_AGE, MAX_RETENTION_BYTES, MAX_RETENTION_COUNT,
    MAX_SCHEDULE_AHEAD, QueueConfig, Retention,
};
pub use enqueue::{BulkError, MAX_BATCH_BYTES, MAX_BATCH_JOBS};
pub use inspect::{
    CancelOutcome, DeadSelection, Deleted, MAX_LIST_LIMIT, MAX_LIST_OFFSET, QueueCounts,
    QueueTotals, WorkerInfo,
};
pub use job::{Enqueued, HIGHEST_PRIORITY, JobId, JobInfo, JobState, LOWEST_PRIORITY, NewJob};
pub use record::{Compression, DEFAULT_COMPRESSION};
pub use registry::{DISCOVERY_SCAN_CALLS, REGISTER_RETRY, REGISTER_WAIT, REGISTRY_REFRESH};
pub use retained::Trimmed;

use crate::clock::RedisClock;
use crate::connection::Redis;
use crate::error::Result;
use crate::keyspace::{QueueKeys, QueueName};
use crate::redis_policy::inspect_node;

/// A handle for one queue; clones share one connection and one batcher.
#[derive(Clone)]
pub struct Queue {
    inner: Arc<Inner>,
}

struct Inner {
    redis: Redis,
    name: QueueName,
    keys: QueueKeys,
    /// Its clock is `redis_clock` when that is set.
    config: QueueConfig,
    /// The configured clock kept on Redis' time (`crate::clock`), unless
    /// the configured clock is a manual one.
    redis_clock: Option<Arc<RedisClock>>,
    batcher: OnceLock<mpsc::Sender<enqueue::Pending>>,
    registration: registry::Registration,
    /// Set once Redis was found not to evict keys (or that was allowed).
    redis_checked: OnceCell<()>,
    /// When a check skipped a primary that did not answer (ms of the
    /// queue's clock; 0: never).
    redis_check_skipped_at: AtomicU64,
    /// Writes enqueued batches; shared with the batcher task.
    writer: Arc<enqueue::Writer>,
}

impl fmt::Debug for Queue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Queue")
            .field("name", &self.inner.name)
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

impl Queue {
    /// A handle for the queue `name` with `config`, checked here: an invalid
    /// name or setting is an [`InvalidInput`](crate::ErrorKind::InvalidInput)
    /// error that names it. Nothing is written until the first enqueue.
    ///
    /// The configured clock is kept on Redis' time (see [`crate::clock`]):
    /// `config().clock` is the corrected one.
    ///
    /// Make a handle once per queue and clone it (clones share everything):
    /// each handle is a producer of its own, which reserves its own run of
    /// ids (a thousand or more) at its first enqueue and keeps a key for the
    /// run in Redis for up to ten minutes
    /// ([`ID_RUN_KEY_TTL`](crate::keyspace::ID_RUN_KEY_TTL)). A handle made
    /// per request costs a round trip, a thousand ids and a key per request.
    pub fn new(redis: Redis, name: &str, config: QueueConfig) -> Result<Self> {
        let name = QueueName::new(name)?;
        config.validate()?;
        let mut config = config;
        let redis_clock = config
            .clock
            .follows_redis()
            .then(|| Arc::new(RedisClock::new(config.clock.clone())));
        if let Some(clock) = &redis_clock {
            config.clock = clock.clone();
        }
        let keys = QueueKeys::new(&config.prefix, &name);
        let writer = Arc::new(enqueue::Writer::new(
            redis.clone(),
            keys.clone(),
            config.durability,
        ));
        Ok(Self {
            inner: Arc::new(Inner {
                redis,
                name,
                keys,
                config,
                redis_clock,
                batcher: OnceLock::new(),
                registration: registry::Registration::default(),
                redis_checked: OnceCell::new(),
                redis_check_skipped_at: AtomicU64::new(0),
                writer,
            }),
        })
    }

    /// A handle with the default settings.
    pub fn with_defaults(redis: Redis, name: &str) -> Result<Self> {
        Self::new(redis, name, QueueConfig::default())
    }

    /// The queue's name.
    pub fn name(&self) -> &QueueName {
        &self.inner.name
    }

    /// The queue's keys.
    pub fn keys(&self) -> &QueueKeys {
        &self.inner.keys
    }

    /// The queue's settings.
    pub fn config(&self) -> &QueueConfig {
        &self.inner.config
    }

    /// The connection the queue uses.
    pub fn redis(&self) -> &Redis {
        &self.inner.redis
    }

    pub(crate) fn now_ms(&self) -> u64 {
        self.inner.config.clock.now_ms()
    }

    /// Puts the queue's clock on Redis' time before its first use, and
    /// keeps it there: a reading older than `CLOCK_RESYNC_INTERVAL` is
    /// renewed in the background (the current offset serves meanwhile).
    /// Cheap when nothing is due (two atomic loads).
    pub(crate) async fn ensure_clock(&self) -> Result<()> {
        let Some(clock) = &self.inner.redis_clock else {
            return Ok(());
        };
        if !clock.is_synced() {
            return self.sync_clock().await;
        }
        if clock.is_stale() && clock.begin_sync() {
            let queue = self.clone();
            tokio::spawn(async move {
                if let Err(err) = queue.sync_clock().await {
                    tracing::debug!(queue = %queue.name(), error = %err,
                        "could not read Redis' time; keeping the last offset");
                }
                if let Some(clock) = &queue.inner.redis_clock {
                    clock.end_sync();
                }
            });
        }
        Ok(())
    }

    /// One reading of Redis' time (`time.lua`, on the queue's node).
    async fn sync_clock(&self) -> Result<()> {
        let Some(clock) = &self.inner.redis_clock else {
            return Ok(());
        };
        let sent = clock.base_now_ms();
        let time: (u64, u64) = scripts::calls::time(self.keys())
            .invoke(&self.inner.redis)
            .await?;
        clock.observe(sent, redis_time_ms(time), clock.base_now_ms());
        Ok(())
    }

    /// The base clock's reading now, uncorrected; with
    /// [`observe_redis_time`](Self::observe_redis_time), lets a script that
    /// returns Redis' `TIME` anyway (the heartbeat) serve as a reading.
    pub(crate) fn base_now_ms(&self) -> u64 {
        match &self.inner.redis_clock {
            Some(clock) => clock.base_now_ms(),
            None => self.now_ms(),
        }
    }

    /// How far Redis' time is ahead of this handle's configured clock, in
    /// ms, as last measured; `None` before the first reading, and for a
    /// manual clock (which is used as it is). See [`crate::clock`].
    pub fn clock_offset_ms(&self) -> Option<i64> {
        let clock = self.inner.redis_clock.as_ref()?;
        clock.is_synced().then(|| clock.offset_ms())
    }

    /// A reading of Redis' `TIME` (seconds, microseconds) taken between the
    /// base clock's `sent_ms` and `received_ms`.
    pub(crate) fn observe_redis_time(&self, sent_ms: u64, time: (u64, u64), received_ms: u64) {
        if let Some(clock) = &self.inner.redis_clock {
            clock.observe(sent_ms, redis_time_ms(time), received_ms);
        }
    }

    /// Records this handle's retention rules in the queue's `meta` hash, so
    /// that maintenance run where the queue's settings are not known (the
    /// janitor of `plimsoll serve` for a queue it has no settings for,
    /// `plimsoll trim plimsoll`) applies the same rules instead of the
    /// defaults. Workers record theirs when they start; the last one
    /// recorded wins, so give a queue the same rules everywhere.
    pub async fn record_retention(&self) -> Result<()> {
        let _: () = self
            .inner
            .redis
            .query(
                redis::cmd("HSET")
                    .arg(self.keys().meta())
                    .arg(RETENTION_FIELD)
                    .arg(self.config().retention.to_record()),
            )
            .await?;
        Ok(())
    }

    /// The retention rules last recorded for this queue (by its workers or
    /// by `plimsoll serve`), or `None` when none were. A record this version
    /// cannot read is a [`Corrupt`](crate::ErrorKind::Corrupt) error.
    pub async fn recorded_retention(&self) -> Result<Option<Retention>> {
        let text: Option<String> = self
            .inner
            .redis
            .query(
                redis::cmd("HGET")
                    .arg(self.keys().meta())
                    .arg(RETENTION_FIELD),
            )
            .await?;
        text.map(|text| Retention::from_record(&text)).transpose()
    }

    /// Refuses a Redis that may evict keys, unless the configuration allows
    /// it: asked once per handle, on its first enqueue or fetch, then
    /// remembered (see [`crate::redis_policy`]). A failed check is asked again
    /// next time.
    ///
    /// On a cluster every primary is asked, each within [`CHECK_NODE_WAIT`]:
    /// a primary that does not answer (its shard failing over) is skipped,
    /// unless it holds this queue, and the check is made again after
    /// [`CHECK_RETRY`] — one shard's failover must not stop queues on the
    /// healthy ones (nor hold each of their enqueues up).
    pub(crate) async fn check_redis(&self) -> Result<()> {
        if self.inner.config.allow_evicting_redis || self.inner.redis_checked.get().is_some() {
            return Ok(());
        }
        let now = self.now_ms();
        let skipped_at = self.inner.redis_check_skipped_at.load(Ordering::Relaxed);
        if skipped_at != 0 && now.saturating_sub(skipped_at) < crate::clock::ms(CHECK_RETRY) {
            return Ok(());
        }
        let redis = &self.inner.redis;
        let own = redis.primary_address_of(self.keys().jobs()).await?;
        let mut nodes = Vec::new();
        let mut skipped = Vec::new();
        for (address, node) in redis
            .try_primaries(self.keys().jobs(), CHECK_NODE_WAIT)
            .await?
        {
            let inspected = match node {
                Ok(node) => tokio::time::timeout(CHECK_NODE_WAIT, inspect_node(&address, &node))
                    .await
                    .unwrap_or_else(|_| {
                        Err(crate::Error::new(
                            crate::ErrorKind::Timeout,
                            format!("{address} did not answer within {CHECK_NODE_WAIT:?}"),
                        ))
                    }),
                Err(err) => Err(err),
            };
            match inspected {
                Ok(node) => nodes.push(node),
                Err(err) if address != own => skipped.push((address, err)),
                Err(err) => return Err(err),
            }
        }
        crate::redis_policy::RedisPolicy { nodes }.refuse_eviction()?;
        if skipped.is_empty() {
            let _ = self.inner.redis_checked.set(());
        } else {
            for (address, err) in &skipped {
                tracing::warn!(queue = %self.name(), node = %address, error = %err,
                    "a primary did not say whether it evicts keys; asking again later");
            }
            self.inner
                .redis_check_skipped_at
                .store(now.max(1), Ordering::Relaxed);
        }
        Ok(())
    }
}

/// How long the eviction check waits for one primary of a cluster.
pub const CHECK_NODE_WAIT: Duration = Duration::from_millis(500);
/// After the eviction check skipped a primary that did not answer, how long
/// the handle goes on before it asks again.
pub const CHECK_RETRY: Duration = Duration::from_secs(5);

/// The `meta` field holding the queue's recorded retention rules.
const RETENTION_FIELD: &str = "retention";

/// Redis' `TIME` reply (seconds, microseconds) in ms since the epoch.
fn redis_time_ms((secs, micros): (u64, u64)) -> u64 {
    secs.saturating_mul(1000).saturating_add(micros / 1000)
}
