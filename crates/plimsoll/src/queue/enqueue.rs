//! Enqueueing: checking a job, encoding its record, and writing batches.
//!
//! Every batch is one call of `enqueue.lua` and therefore atomic: all of its
//! jobs are written or none (a full Redis refuses the script before it
//! runs). Single enqueues go through a batcher task that coalesces whatever
//! callers are waiting into the next batch; bulk enqueues are cut into
//! batches here, with a few in flight so that encoding the next batch
//! overlaps Redis working on the last.

use std::fmt;
use std::sync::Arc;

use futures::stream::{FuturesOrdered, StreamExt};
use tokio::sync::{Semaphore, mpsc, oneshot};

use super::Queue;
use super::config::{check_idempotency_window, check_max_attempts, check_priority, check_timeout};
use super::job::{Enqueued, JobId, NewJob, RunAt, system_time_ms};
use super::record::{self, Header};
use super::scripts::SCRIPTS;
use crate::clock::ms;
use crate::connection::Redis;
use crate::error::{Error, ErrorKind, Result};
use crate::keyspace::{PRIORITY_LEVELS, QueueKeys};
use crate::queue::config::MAX_IDEMPOTENCY_KEY_LEN;

/// The most jobs in one script call; the scripts refuse more.
pub const MAX_BATCH_JOBS: usize = 1000;
/// The most record bytes in one script call, so that one batch of large
/// payloads does not hold Redis for long.
pub const MAX_BATCH_BYTES: usize = 8 * 1024 * 1024;
/// Batches of one queue on their way to Redis at once. More pipelines better
/// but lets a slow Redis build a longer backlog.
const BATCHES_IN_FLIGHT: usize = 4;
/// Single enqueues that may wait for the batcher before callers wait too.
const BATCHER_CAPACITY: usize = 16 * MAX_BATCH_JOBS;

/// A job checked and encoded, ready for the script.
#[derive(Debug)]
pub(crate) struct Prepared {
    /// When it becomes due, ms; 0 when it is ready now.
    run_at_ms: u64,
    /// Full key name and window (ms) of its idempotency key.
    idempotency: Option<(String, u64)>,
    record: Vec<u8>,
}

/// A single enqueue waiting for its batch.
pub(crate) struct Pending {
    job: Prepared,
    reply: oneshot::Sender<Result<Enqueued>>,
}

/// A bulk enqueue that failed part-way: which jobs were written before the
/// failure, and the failure. Batches are atomic, so each job was either
/// written whole or not at all.
#[derive(Debug)]
pub struct BulkError {
    /// Per input job, in order: its result, or `None` when it was not written.
    pub outcomes: Vec<Option<Enqueued>>,
    /// What stopped the rest.
    pub error: Error,
}

impl BulkError {
    /// How many jobs were written.
    pub fn written(&self) -> usize {
        self.outcomes.iter().filter(|o| o.is_some()).count()
    }
}

impl fmt::Display for BulkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} of {} jobs enqueued, then: {}",
            self.written(),
            self.outcomes.len(),
            self.error
        )
    }
}

impl std::error::Error for BulkError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}

impl From<BulkError> for Error {
    fn from(err: BulkError) -> Self {
        Error::new(err.error.kind(), err.to_string())
    }
}

impl Error {
    /// A copy for each of several callers that share one failed call.
    pub(crate) fn replicate(&self) -> Error {
        Error::new(self.kind(), self.message().to_string())
    }
}

impl Queue {
    /// Enqueues one job. Returns once the job is in Redis.
    ///
    /// Errors: [`PayloadTooLarge`](ErrorKind::PayloadTooLarge) or
    /// [`InvalidInput`](ErrorKind::InvalidInput) for a bad job;
    /// [`OutOfMemory`](ErrorKind::OutOfMemory) when Redis is full (nothing
    /// was written); [`Connection`](ErrorKind::Connection) or
    /// [`Timeout`](ErrorKind::Timeout) when Redis could not be reached.
    pub async fn enqueue(&self, job: NewJob) -> Result<Enqueued> {
        let job = self.prepare(job, self.now_ms())?;
        self.register().await?;
        let (reply, answer) = oneshot::channel();
        let batcher = self.batcher();
        batcher
            .send(Pending { job, reply })
            .await
            .map_err(|_| Error::new(ErrorKind::ShuttingDown, "the enqueue batcher stopped"))?;
        answer
            .await
            .map_err(|_| Error::new(ErrorKind::ShuttingDown, "the enqueue batcher stopped"))?
    }

    /// Enqueues many jobs, in order, in batches of up to 1,000. Every job is
    /// checked before anything is written, so a bad job fails the call with
    /// nothing enqueued. When Redis fails part-way, the [`BulkError`] says
    /// which jobs were written.
    pub async fn enqueue_bulk(&self, jobs: Vec<NewJob>) -> Result<Vec<Enqueued>, BulkError> {
        let total = jobs.len();
        let fail_all = |error: Error| BulkError {
            outcomes: vec![None; total],
            error,
        };
        for (index, job) in jobs.iter().enumerate() {
            self.check(job).map_err(|e| {
                fail_all(Error::new(
                    e.kind(),
                    format!("job {index}: {}", e.message()),
                ))
            })?;
        }
        if jobs.is_empty() {
            return Ok(Vec::new());
        }
        self.register().await.map_err(fail_all)?;

        let now = self.now_ms();
        let mut outcomes: Vec<Option<Enqueued>> = Vec::with_capacity(total);
        let mut first_error: Option<Error> = None;
        let mut in_flight = FuturesOrdered::new();
        let mut jobs = jobs.into_iter().peekable();
        while jobs.peek().is_some() || !in_flight.is_empty() {
            if jobs.peek().is_some() && in_flight.len() < BATCHES_IN_FLIGHT {
                let mut batch = Vec::new();
                let mut bytes = 0;
                while let Some(job) = jobs.next_if(|_| {
                    batch.len() < MAX_BATCH_JOBS && (batch.is_empty() || bytes < MAX_BATCH_BYTES)
                }) {
                    let prepared = self.encode(job, now);
                    bytes += prepared.record.len();
                    batch.push(prepared);
                }
                let (redis, keys) = (self.inner.redis.clone(), self.inner.keys.clone());
                in_flight.push_back(async move {
                    let len = batch.len();
                    (len, write_batch(&redis, &keys, now, &batch).await)
                });
                continue;
            }
            let Some((len, result)) = in_flight.next().await else {
                break;
            };
            match result {
                Ok(done) => outcomes.extend(done.into_iter().map(Some)),
                Err(error) => {
                    outcomes.extend(std::iter::repeat_n(None, len));
                    first_error.get_or_insert(error);
                }
            }
        }
        match first_error {
            None => Ok(outcomes
                .into_iter()
                .map(|o| o.expect("every batch succeeded"))
                .collect()),
            Some(error) => {
                outcomes.resize(total, None);
                Err(BulkError { outcomes, error })
            }
        }
    }

    /// Checks a job against the queue's limits without encoding it.
    fn check(&self, job: &NewJob) -> Result<()> {
        let limit = self.inner.config.payload_limit;
        if job.payload.len() > limit {
            return Err(Error::new(
                ErrorKind::PayloadTooLarge,
                format!(
                    "payload of {} bytes exceeds the queue's limit of {limit} bytes",
                    job.payload.len()
                ),
            ));
        }
        if let Some(priority) = job.priority {
            check_priority(priority)?;
        }
        if let Some(attempts) = job.max_attempts {
            check_max_attempts(attempts)?;
        }
        if let Some(timeout) = job.timeout {
            check_timeout(timeout)?;
        }
        if let Some((key, window)) = &job.idempotency {
            if key.is_empty() || key.len() > MAX_IDEMPOTENCY_KEY_LEN {
                return Err(Error::invalid(format!(
                    "idempotency key must be 1 to {MAX_IDEMPOTENCY_KEY_LEN} bytes, got {}",
                    key.len()
                )));
            }
            if let Some(window) = window {
                check_idempotency_window(*window)?;
            }
        }
        Ok(())
    }

    /// Checks and encodes a job.
    pub(crate) fn prepare(&self, job: NewJob, now: u64) -> Result<Prepared> {
        self.check(&job)?;
        Ok(self.encode(job, now))
    }

    /// Encodes a job that passed [`check`](Self::check).
    fn encode(&self, job: NewJob, now: u64) -> Prepared {
        let config = &self.inner.config;
        let header = Header {
            compressed: false,
            priority: job.priority.unwrap_or(config.default_priority),
            attempts: 0,
            max_attempts: job.max_attempts.unwrap_or(config.default_max_attempts),
            timeout_ms: ms(job.timeout.unwrap_or(config.default_timeout)) as u32,
            enqueued_at_ms: now,
        };
        debug_assert!(usize::from(header.priority) < PRIORITY_LEVELS);
        let run_at_ms = match job.run_at {
            None => 0,
            Some(RunAt::After(delay)) => now.saturating_add(ms(delay)),
            Some(RunAt::At(time)) => system_time_ms(time),
        };
        let idempotency = job.idempotency.as_ref().map(|(key, window)| {
            (
                self.inner.keys.idempotency(key),
                ms(window.unwrap_or(config.idempotency_window)),
            )
        });
        Prepared {
            run_at_ms,
            idempotency,
            record: record::encode(&job.payload, &header, config.compression),
        }
    }

    /// The batcher of single enqueues, started on first use.
    fn batcher(&self) -> &mpsc::Sender<Pending> {
        self.inner.batcher.get_or_init(|| {
            let (tx, rx) = mpsc::channel(BATCHER_CAPACITY);
            // The task holds the connection and keys, not the queue: it ends
            // when the last handle (and with it the sender) is dropped.
            tokio::spawn(run_batcher(
                rx,
                self.inner.redis.clone(),
                self.inner.keys.clone(),
                self.inner.config.clock.clone(),
            ));
            tx
        })
    }
}

/// Gathers waiting single enqueues into batches, at most
/// [`BATCHES_IN_FLIGHT`] on their way at once; while those are out, the next
/// batch grows.
async fn run_batcher(
    mut rx: mpsc::Receiver<Pending>,
    redis: Redis,
    keys: QueueKeys,
    clock: Arc<dyn crate::clock::Clock>,
) {
    let slots = Arc::new(Semaphore::new(BATCHES_IN_FLIGHT));
    while let Some(first) = rx.recv().await {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            break;
        };
        let mut bytes = first.job.record.len();
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH_JOBS && bytes < MAX_BATCH_BYTES {
            match rx.try_recv() {
                Ok(pending) => {
                    bytes += pending.job.record.len();
                    batch.push(pending);
                }
                Err(_) => break,
            }
        }
        let (redis, keys, now) = (redis.clone(), keys.clone(), clock.now_ms());
        tokio::spawn(async move {
            let (jobs, replies): (Vec<Prepared>, Vec<_>) =
                batch.into_iter().map(|p| (p.job, p.reply)).unzip();
            match write_batch(&redis, &keys, now, &jobs).await {
                Ok(done) => {
                    for (reply, enqueued) in replies.into_iter().zip(done) {
                        let _ = reply.send(Ok(enqueued));
                    }
                }
                Err(error) => {
                    for reply in replies {
                        let _ = reply.send(Err(error.replicate()));
                    }
                }
            }
            drop(slot);
        });
    }
}

/// One call of `enqueue.lua`.
async fn write_batch(
    redis: &Redis,
    keys: &QueueKeys,
    now: u64,
    batch: &[Prepared],
) -> Result<Vec<Enqueued>> {
    debug_assert!(!batch.is_empty() && batch.len() <= MAX_BATCH_JOBS);
    let mut invocation = SCRIPTS.enqueue.prepare_invoke();
    invocation
        .key(keys.meta())
        .key(keys.jobs())
        .key(keys.scheduled())
        .key(keys.stats())
        .key(keys.notify());
    for list in keys.waiting_all() {
        invocation.key(list);
    }
    invocation.arg(now).arg(batch.len());
    let mut next_key_index = 5 + PRIORITY_LEVELS;
    for job in batch {
        let (key_index, window) = match &job.idempotency {
            Some((key, window)) => {
                invocation.key(key);
                next_key_index += 1;
                (next_key_index, *window)
            }
            None => (0, 0),
        };
        invocation
            .arg(job.run_at_ms)
            .arg(key_index)
            .arg(window)
            .arg(&job.record[..]);
    }
    let ids: Vec<i64> = invocation.invoke_async(&mut redis.clone()).await?;
    if ids.len() != batch.len() {
        return Err(Error::corrupt(format!(
            "enqueue script returned {} ids for {} jobs",
            ids.len(),
            batch.len()
        )));
    }
    Ok(ids
        .into_iter()
        .map(|id| Enqueued {
            id: JobId(id.unsigned_abs()),
            duplicate: id < 0,
        })
        .collect())
}
