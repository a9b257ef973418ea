//! Enqueueing: checking a job, encoding its record, and writing batches.
//!
//! Every batch is one call of `enqueue.lua` and therefore atomic: all of its
//! jobs are written or none (a full Redis refuses the script before it
//! runs). Single enqueues go through a batcher task that coalesces whatever
//! callers are waiting into the next batch; bulk enqueues are cut into
//! batches here, with a few in flight so that encoding the next batch
//! overlaps Redis working on the last.

use std::fmt;
use std::sync::{Arc, LazyLock};

use std::sync::atomic::Ordering;
use std::task::Poll;

use futures::future::BoxFuture;
use futures::stream::{FuturesOrdered, FuturesUnordered, StreamExt};
use tokio::sync::{mpsc, oneshot};

use super::Queue;
use super::config::{check_idempotency_window, check_max_attempts, check_priority, check_timeout};
use super::job::{Enqueued, JobId, NewJob, RunAt, system_time_ms};
use super::record::{self, Header};
use super::scripts::{self, SCRIPTS};
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
/// Jobs per script call within a bulk enqueue: small enough that encoding
/// the next batch overlaps Redis running the last, large enough that the
/// per-call cost stays small.
const PIPELINED_BATCH_JOBS: usize = 250;
/// Below this many jobs, encoding on the calling task beats a thread hop.
const PARALLEL_ENCODE_MIN_JOBS: usize = 64;
/// Threads a batch's encoding is split over. Read once: the standard
/// library answers `available_parallelism` by reading the cgroup files on
/// every call, about 2% of a bulk enqueue's CPU when it was asked per
/// batch.
static ENCODE_THREADS: LazyLock<usize> =
    LazyLock::new(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
/// Single enqueues that may wait for the batcher before callers wait too.
const BATCHER_CAPACITY: usize = 16 * MAX_BATCH_JOBS;

/// A job checked and encoded, ready for the script.
#[derive(Debug)]
pub(crate) struct Prepared {
    /// When it becomes due, ms; 0 when it is ready now.
    run_at_ms: u64,
    priority: u8,
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
        let mut in_flight: FuturesOrdered<BoxFuture<'static, (usize, Result<Vec<Enqueued>>)>> =
            FuturesOrdered::new();
        let mut jobs = jobs.into_iter().peekable();
        loop {
            // Encode the next batch while the last ones are on their way, and
            // queue its write on the connection before the next batch's, so
            // Redis runs them in input order. Until a write has succeeded on
            // this handle the scripts may not be loaded; then one batch goes
            // first, so that NOSCRIPT retries cannot overtake each other.
            let room = if self.inner.scripts_loaded.load(Ordering::Relaxed) {
                BATCHES_IN_FLIGHT
            } else {
                1
            };
            if jobs.peek().is_some() && in_flight.len() < room {
                let mut batch = Vec::new();
                let mut bytes = 0;
                while let Some(job) = jobs.next_if(|_| {
                    batch.len() < PIPELINED_BATCH_JOBS
                        && (batch.is_empty() || bytes < MAX_BATCH_BYTES)
                }) {
                    bytes += job.payload.len();
                    batch.push(job);
                }
                let prepared = self.encode_batch(batch, now).await;
                let queue = self.clone();
                let write: BoxFuture<'static, _> = Box::pin(async move {
                    let len = prepared.len();
                    let result =
                        write_batch(&queue.inner.redis, &queue.inner.keys, now, &prepared).await;
                    if result.is_ok() {
                        queue.inner.scripts_loaded.store(true, Ordering::Relaxed);
                    }
                    (len, result)
                });
                in_flight.push_back(queued(write).await);
                continue;
            }
            let Some((len, result)) = in_flight.next().await else {
                break;
            };
            match result {
                Ok(done) => outcomes.extend(done.into_iter().map(Some)),
                Err(error) => {
                    self.inner.scripts_loaded.store(false, Ordering::Relaxed);
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

    /// Encodes checked jobs, compressing on the blocking pool in parallel
    /// when there are enough of them to be worth a thread hop.
    async fn encode_batch(&self, jobs: Vec<NewJob>, now: u64) -> Vec<Prepared> {
        if jobs.len() < PARALLEL_ENCODE_MIN_JOBS {
            return jobs.into_iter().map(|job| self.encode(job, now)).collect();
        }
        let threads = *ENCODE_THREADS;
        let per_thread = jobs.len().div_ceil(threads);
        let mut jobs = jobs.into_iter();
        let mut parts = Vec::with_capacity(threads);
        loop {
            let part: Vec<NewJob> = jobs.by_ref().take(per_thread).collect();
            if part.is_empty() {
                break;
            }
            let queue = self.clone();
            parts.push(tokio::task::spawn_blocking(move || {
                part.into_iter()
                    .map(|job| queue.encode(job, now))
                    .collect::<Vec<_>>()
            }));
        }
        let mut prepared = Vec::new();
        for part in parts {
            // Encoding cannot fail or panic on checked jobs; a panic here is
            // a bug worth surfacing.
            prepared.extend(part.await.expect("encoding a checked job does not panic"));
        }
        prepared
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
            stored: record::Stored::Raw,
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
            priority: header.priority,
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
    // The writes are driven by this task itself rather than spawned: a hop
    // less between a caller's enqueue and its answer.
    let mut in_flight = FuturesUnordered::new();
    let mut open = true;
    while open || !in_flight.is_empty() {
        tokio::select! {
            biased;
            Some(()) = in_flight.next(), if !in_flight.is_empty() => {}
            first = rx.recv(), if open && in_flight.len() < BATCHES_IN_FLIGHT => {
                let Some(first) = first else {
                    open = false;
                    continue;
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
                in_flight.push(async move {
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
                });
            }
        }
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
    scripts::waiting_keys(&mut invocation, keys);
    invocation.arg(now).arg(batch.len());
    let mut next_key_index = 5 + PRIORITY_LEVELS;
    for group in group_batch(batch, now) {
        match group {
            Group::Ready { priority, jobs } => {
                invocation.arg("R").arg(jobs.len()).arg(priority);
                for job in jobs {
                    invocation.arg(&job.record[..]);
                }
            }
            Group::Scheduled(jobs) => {
                invocation.arg("S").arg(jobs.len());
                for job in jobs {
                    invocation.arg(job.run_at_ms).arg(&job.record[..]);
                }
            }
            Group::Idempotent(jobs) => {
                invocation.arg("I").arg(jobs.len());
                for job in jobs {
                    let (key, window) = job.idempotency.as_ref().expect("grouped by key");
                    invocation.key(key);
                    next_key_index += 1;
                    invocation
                        .arg(job.run_at_ms)
                        .arg(next_key_index)
                        .arg(*window)
                        .arg(&job.record[..]);
                }
            }
        }
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

/// A run of consecutive jobs that `enqueue.lua` takes the same way.
#[derive(Debug)]
enum Group<'a> {
    /// Ready now, all at one priority: one argument per job.
    Ready { priority: u8, jobs: &'a [Prepared] },
    /// Due later.
    Scheduled(&'a [Prepared]),
    /// With an idempotency key.
    Idempotent(&'a [Prepared]),
}

/// Splits a batch into groups, keeping the jobs' order (their ids follow it).
fn group_batch(batch: &[Prepared], now: u64) -> Vec<Group<'_>> {
    #[derive(PartialEq)]
    enum Kind {
        Ready(u8),
        Scheduled,
        Idempotent,
    }
    let kind = |job: &Prepared| {
        if job.idempotency.is_some() {
            Kind::Idempotent
        } else if job.run_at_ms > now {
            Kind::Scheduled
        } else {
            Kind::Ready(job.priority)
        }
    };
    let mut groups = Vec::new();
    let mut start = 0;
    while start < batch.len() {
        let first = kind(&batch[start]);
        let len = batch[start..]
            .iter()
            .take_while(|job| kind(job) == first)
            .count();
        let jobs = &batch[start..start + len];
        groups.push(match first {
            Kind::Ready(priority) => Group::Ready { priority, jobs },
            Kind::Scheduled => Group::Scheduled(jobs),
            Kind::Idempotent => Group::Idempotent(jobs),
        });
        start += len;
    }
    groups
}

/// Polls a write once, which puts its command on the connection's queue, and
/// returns it to be awaited later. Writes queued this way reach Redis in the
/// order they were queued.
async fn queued<T: Send + 'static>(mut write: BoxFuture<'static, T>) -> BoxFuture<'static, T> {
    match futures::poll!(&mut write) {
        Poll::Ready(output) => Box::pin(std::future::ready(output)),
        Poll::Pending => write,
    }
}
