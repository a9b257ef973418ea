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
//! HSET of the records in one MULTI/EXEC (see `enqueue.rs`).
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
//! `enqueue.rs`).

mod config;
mod enqueue;
mod inspect;
pub(crate) mod job;
pub(crate) mod record;
mod registry;
pub(crate) mod scripts;

use std::fmt;
use std::sync::{Arc, OnceLock};

use tokio::sync::mpsc;

pub use config::{
    Bounds, CompletedRetention, DEFAULT_DEAD_BOUNDS, DEFAULT_DEAD_MAX_AGE, DEFAULT_DEAD_MAX_BYTES,
    DEFAULT_DEAD_MAX_COUNT, DEFAULT_IDEMPOTENCY_WINDOW, DEFAULT_JOB_TIMEOUT, DEFAULT_MAX_ATTEMPTS,
    DEFAULT_MAX_QUEUES, DEFAULT_PAYLOAD_LIMIT, DEFAULT_PRIORITY, DEFAULT_REPLICA_TIMEOUT,
    Durability, MAX_ATTEMPTS_LIMIT, MAX_DURABILITY_REPLICAS, MAX_IDEMPOTENCY_KEY_LEN,
    MAX_IDEMPOTENCY_WINDOW, MAX_JOB_TIMEOUT, MAX_PAYLOAD_LIMIT, MAX_QUEUES_LIMIT,
    MAX_REPLICA_TIMEOUT, MAX_RETENTION_AGE, MAX_RETENTION_BYTES, MAX_RETENTION_COUNT, QueueConfig,
    Retention,
};
pub use enqueue::{BulkError, MAX_BATCH_BYTES, MAX_BATCH_JOBS};
pub use inspect::{CancelOutcome, DeadSelection, Deleted, QueueCounts, QueueTotals, WorkerInfo};
pub use job::{Enqueued, HIGHEST_PRIORITY, JobId, JobInfo, JobState, LOWEST_PRIORITY, NewJob};
pub use record::{Compression, DEFAULT_COMPRESSION};
pub use registry::{DISCOVERY_SCAN_CALLS, REGISTER_RETRY, REGISTER_WAIT, REGISTRY_REFRESH};

use crate::connection::Redis;
use crate::error::Result;
use crate::keyspace::{QueueKeys, QueueName};

/// A handle for one queue; clones share one connection and one batcher.
#[derive(Clone)]
pub struct Queue {
    inner: Arc<Inner>,
}

struct Inner {
    redis: Redis,
    name: QueueName,
    keys: QueueKeys,
    config: QueueConfig,
    batcher: OnceLock<mpsc::Sender<enqueue::Pending>>,
    registration: registry::Registration,
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
    pub fn new(redis: Redis, name: &str, config: QueueConfig) -> Result<Self> {
        let name = QueueName::new(name)?;
        config.validate()?;
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
                batcher: OnceLock::new(),
                registration: registry::Registration::default(),
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
}
