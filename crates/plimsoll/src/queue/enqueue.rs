//! Enqueueing: checking a job, encoding its record, and writing batches.
//!
//! Every batch is one MULTI/EXEC transaction: an HSET of the batch's records
//! under ids reserved beforehand (`reserve_ids.lua`), then `enqueue.lua`,
//! which files the ids as waiting or scheduled, claims idempotency keys and
//! counts. The records thus never pass through Lua, which costs Redis more
//! than everything else about a kilobyte job (see `enqueue.lua`). The
//! transaction is atomic: all of a batch's jobs are written or none (a full
//! Redis refuses it whole). Single enqueues go through a batcher task that
//! coalesces whatever callers are waiting into the next batch; bulk enqueues
//! are cut into batches here, with a few in flight so that encoding the next
//! batch (and, from an iterator, making its jobs) overlaps Redis working on
//! the last. A bulk call sends no batch once one has failed (the few already
//! on their way still land or fail on their own; `BulkError` says which).

use std::fmt;
use std::iter::{Enumerate, Peekable};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock};
use std::task::Poll;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use futures::stream::{FuturesOrdered, FuturesUnordered, StreamExt};
use redis::{Cmd, ServerErrorKind, Value};
use tokio::sync::{Mutex, OnceCell, mpsc, oneshot};

use super::Queue;
use super::config::{
    Durability, check_idempotency_window, check_max_attempts, check_priority, check_timeout,
};
use super::job::{Enqueued, JobId, NewJob, RunAt, system_time_ms};
use super::record::{self, Header};
use super::scripts::{PRODUCER_SOURCES, SCRIPTS};
use crate::clock::ms;
use crate::connection::Redis;
use crate::error::{Error, ErrorKind, Result};
use crate::keyspace::{
    ID_RUN_KEY_TTL, LOST_RUN_MARKER_TTL, MAX_ID_RUNS, PRIORITY_LEVELS, QueueKeys,
};
use crate::queue::config::MAX_IDEMPOTENCY_KEY_LEN;

/// The most jobs in one enqueue transaction; `enqueue.lua` refuses more.
pub const MAX_BATCH_JOBS: usize = 1000;
/// The most record bytes in one enqueue transaction, so that one batch of large
/// payloads does not hold Redis for long.
pub const MAX_BATCH_BYTES: usize = 8 * 1024 * 1024;
/// Batches of one bulk enqueue on their way to Redis at once. More
/// pipelines better but lets a slow Redis build a longer backlog.
const BATCHES_IN_FLIGHT: usize = 4;
/// Batches of single enqueues on their way at once. Fewer than a bulk call:
/// while they are out the next batch gathers, and with 50 callers two
/// batches of ~25 cost Redis less per job than four of ~12 (W1-single,
/// alternating runs: 173k–177k jobs/s with 2, 162k–170k with 4, 177k–179k
/// with 1). Two keep one write overlapping Redis working on the other.
const BATCHER_IN_FLIGHT: usize = 2;
/// Jobs per transaction within a bulk enqueue: small enough that encoding
/// the next batch overlaps Redis writing the last, and that Redis has work
/// soon after a call starts; large enough that the per-transaction cost
/// stays small. Since the records skip Lua, Redis writes a batch faster
/// than the producer encodes one; 100 measured a few per cent above 250 in
/// alternating W1-bulk runs (within the machines' noise).
const PIPELINED_BATCH_JOBS: usize = 100;
/// A batch whose payloads come to at most this many bytes is encoded on the
/// calling task (a few hundred microseconds of zstd at most); a larger one
/// is split over the blocking pool, so that compressing megabytes does not
/// hold up the runtime's other tasks. On the 2-core machine the benchmarks
/// run on, where Redis needs one of the cores, handing each 100-job batch to
/// two pool threads cost more in wake-ups and contention than it saved:
/// W1-bulk, alternating runs, medians of 8: 314k jobs/s split, 346k
/// encoded on the calling task.
const INLINE_ENCODE_MAX_BYTES: usize = 256 * 1024;
/// Threads a batch's encoding is split over. Read once: the standard
/// library answers `available_parallelism` by reading the cgroup files on
/// every call, about 2% of a bulk enqueue's CPU when it was asked per
/// batch.
static ENCODE_THREADS: LazyLock<usize> =
    LazyLock::new(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
/// Single enqueues that may wait for the batcher before callers wait too.
const BATCHER_CAPACITY: usize = 16 * MAX_BATCH_JOBS;
/// KEYS of `enqueue.lua` before the idempotency keys: jobs, scheduled,
/// stats, notify, the waiting lists and the batch's id run key.
const ENQUEUE_FIXED_KEYS: usize = 4 + PRIORITY_LEVELS + 1;
/// How often one batch may find its fresh ids lost again before it gives
/// up: each time is a failover or restart that lost writes.
const MAX_LOST_RUNS_PER_BATCH: usize = 3;
/// Run keys a producer keeps (`reserve_ids.lua` deletes the one this many
/// reservations back): more than the batches that can be on their way at
/// once, each of one run, so a batch in flight never finds its own run's
/// key deleted by its producer.
const ID_RUN_KEYS_KEPT: u64 = BATCHES_IN_FLIGHT as u64 + 2;
/// How often one batch's transaction may find its watched run key changed
/// by someone else (it expired, or a reservation removed it) before the
/// batch gives up; each such try is paused like a refused one.
const MAX_ABORTS_PER_BATCH: usize = 10;
/// First pause after an aborted try, doubling up to [`ABORT_MAX_WAIT`].
const ABORT_FIRST_WAIT: Duration = Duration::from_millis(10);
const ABORT_MAX_WAIT: Duration = Duration::from_millis(100);
/// Ids a producer reserves at least at a time: one round trip per thousand
/// single enqueues. A bulk call of known length reserves all it needs at
/// once; ids reserved and not used (the rest of a run, or of a bulk call
/// that stopped early, which later enqueues use first) are skipped when the
/// producer stops.
const ID_RUN: u64 = 1000;
/// A producer that uses up its run within [`ID_RUN_GROWTH_WINDOW`] takes
/// twice as many next time, up to this many: a busy producer then reserves
/// a few times a second instead of once per thousand jobs. Back-to-back bulk
/// calls of a thousand each paid a round trip before their first write, on
/// the critical path (W1-bulk, alternating runs, medians of 6: 297k → 320k
/// jobs/s). The at most 64,000 ids a stopped producer skips are nothing
/// against the 10^14 ids of 7 to 14 digits (`reserve_ids.lua`).
const MAX_ID_RUN: u64 = 64_000;
/// See [`MAX_ID_RUN`]; a run that lasts longer than this resets the size to
/// [`ID_RUN`], so a slow producer keeps reserving a thousand at a time.
const ID_RUN_GROWTH_WINDOW: Duration = Duration::from_secs(1);
/// The most ids one reservation takes (`reserve_ids.lua` refuses more).
const MAX_ID_RESERVATION: u64 = 1_000_000;

/// A job checked and encoded, ready to be written.
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
    /// Per input job, in order: its result, or `None` when it was not
    /// written. When the error is [`NotReplicated`](ErrorKind::NotReplicated),
    /// the jobs of the batch that was not confirmed are `Some`: they are on
    /// the primary, and a failover may lose them.
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

impl Queue {
    /// Enqueues one job. Returns once the job is in Redis.
    ///
    /// Errors: [`PayloadTooLarge`](ErrorKind::PayloadTooLarge) or
    /// [`InvalidInput`](ErrorKind::InvalidInput) for a bad job;
    /// [`OutOfMemory`](ErrorKind::OutOfMemory) when Redis is full (nothing
    /// was written); [`TooManyQueues`](ErrorKind::TooManyQueues) for a new
    /// queue beyond the registry's cap; [`Unavailable`](ErrorKind::Unavailable)
    /// when Redis kept refusing the write for the response timeout (a slot
    /// migrating, a failover; the message names the cause; nothing was
    /// written); [`NotReplicated`](ErrorKind::NotReplicated) when the
    /// queue's [`Durability`] waits for replicas and they did not confirm in
    /// time (the job is on the primary: the message says its id);
    /// [`Connection`](ErrorKind::Connection) or [`Timeout`](ErrorKind::Timeout)
    /// when Redis could not be reached.
    pub async fn enqueue(&self, job: NewJob) -> Result<Enqueued> {
        // A bad job is refused before Redis is asked anything; its due time
        // is taken only after `register`, which puts the queue's clock on
        // Redis' time on first use.
        self.check(&job)?;
        self.register().await?;
        let job = self.encode(job, self.now_ms());
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

    /// Enqueues many jobs, in order, in transactions of up to 100 jobs with a
    /// few on their way at once (any number of jobs per call). Every job is
    /// checked before anything is written, so a bad job fails the call with
    /// nothing enqueued. When Redis fails part-way, the [`BulkError`] says
    /// which jobs were written.
    pub async fn enqueue_bulk(&self, jobs: Vec<NewJob>) -> Result<Vec<Enqueued>, BulkError> {
        let total = jobs.len();
        for (index, job) in jobs.iter().enumerate() {
            self.check(job).map_err(|e| BulkError {
                outcomes: vec![None; total],
                error: at_job(index, &e),
            })?;
        }
        self.enqueue_iter(jobs).await.map_err(|mut err| {
            err.outcomes.resize(total, None);
            err
        })
    }

    /// Enqueues the jobs an iterator yields, in order, taking them from it
    /// as the pipeline to Redis has room: building the next jobs overlaps
    /// writing the last ones, and a million jobs never sit in memory at
    /// once. Writes are batched as in [`enqueue_bulk`](Self::enqueue_bulk).
    ///
    /// Each job is checked when it is taken. A bad job stops the call: the
    /// batches before its own are written (the [`BulkError`] lists them),
    /// its batch and the rest are not, and the iterator is not advanced
    /// past it. [`BulkError::outcomes`] covers the jobs taken, the bad one
    /// last.
    pub async fn enqueue_iter<I>(&self, jobs: I) -> Result<Vec<Enqueued>, BulkError>
    where
        I: IntoIterator<Item = NewJob>,
    {
        let mut jobs = jobs.into_iter().enumerate().peekable();
        if jobs.peek().is_none() {
            return Ok(Vec::new());
        }
        // Before the first batch, only the job peeked at was taken.
        let fail = |error: Error| BulkError {
            outcomes: vec![None],
            error,
        };
        self.register().await.map_err(fail)?;
        let writer = &self.inner.writer;
        writer.ensure_script().await.map_err(fail)?;
        let now = self.now_ms();
        // An iterator's size hint is trusted for sizing, within reason.
        let mut outcomes: Vec<Option<Enqueued>> =
            Vec::with_capacity(jobs.size_hint().0.min(MAX_ID_RESERVATION as usize));
        let mut first_error: Option<Error> = None;
        // Jobs taken but not written because the call stopped before their
        // batch was sent; they follow every batch sent.
        let mut unsent = 0;
        let mut in_flight: FuturesOrdered<BoxFuture<'static, BatchWritten>> = FuturesOrdered::new();
        // The batch being encoded, and whether the iterator is used up.
        let mut encoding: Option<Encoding> = None;
        let mut exhausted = false;
        loop {
            if first_error.is_some()
                && let Some(dropped) = encoding.take()
            {
                unsent += dropped.len;
            }
            let more = first_error.is_none() && !exhausted;
            if (more || encoding.is_some()) && in_flight.len() < BATCHES_IN_FLIGHT {
                // Take the next batch (making its jobs, for an iterator that
                // makes them) before writing the last: while the last one
                // encodes on other threads when it is large, and, when it was
                // encoded here, while Redis still works on the one before
                // (writing it first measured 3–5% slower in W1-bulk).
                let next = if more {
                    match self.take_batch(&mut jobs) {
                        Ok(next) => {
                            exhausted = next.is_none();
                            next
                        }
                        Err((taken, error)) => {
                            unsent += taken;
                            first_error = Some(error);
                            None
                        }
                    }
                } else {
                    None
                };
                // Queue the encoded batch's write on the connection before
                // the next batch's, so Redis runs them in input order.
                if let Some(Encoding { len, prepared }) = encoding.take() {
                    let prepared = prepared.await;
                    // Reserve for the whole call at once when its length is
                    // known (one round trip, not one per thousand).
                    let ahead = len
                        .saturating_add(next.as_ref().map_or(0, Vec::len))
                        .saturating_add(jobs.size_hint().0);
                    match writer.take_ids(len, ahead, now).await {
                        Ok(ids) => {
                            let writer = Arc::clone(writer);
                            let write: BoxFuture<'static, _> = Box::pin(async move {
                                let result = writer.write(now, &prepared, ids).await;
                                (prepared.len(), result)
                            });
                            in_flight.push_back(queued(write).await);
                        }
                        Err(error) => {
                            unsent += len;
                            first_error.get_or_insert(error);
                        }
                    }
                }
                if let Some(batch) = next {
                    if first_error.is_none() {
                        encoding = Some(self.start_encoding(batch, now));
                    } else {
                        unsent += batch.len();
                    }
                }
                continue;
            }
            let Some((len, result)) = in_flight.next().await else {
                break;
            };
            match result {
                Ok(done) => outcomes.extend(done.into_iter().map(Some)),
                Err(WriteError { error, written }) => {
                    match written {
                        // On the primary, not confirmed by its replicas.
                        Some(done) => outcomes.extend(done.into_iter().map(Some)),
                        None => outcomes.extend(std::iter::repeat_n(None, len)),
                    }
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
                outcomes.extend(std::iter::repeat_n(None, unsent));
                Err(BulkError { outcomes, error })
            }
        }
    }

    /// Takes the next batch of a bulk enqueue: up to
    /// [`PIPELINED_BATCH_JOBS`] jobs and, past the first, [`MAX_BATCH_BYTES`]
    /// of payload, each checked. `None` when the jobs are all taken; on a
    /// bad job, how many jobs this batch took (the bad one included) and
    /// the error.
    fn take_batch(
        &self,
        jobs: &mut Peekable<Enumerate<impl Iterator<Item = NewJob>>>,
    ) -> Result<Option<Vec<NewJob>>, (usize, Error)> {
        let mut batch = Vec::new();
        let mut bytes = 0;
        while let Some((index, job)) = jobs.next_if(|_| {
            batch.len() < PIPELINED_BATCH_JOBS && (batch.is_empty() || bytes < MAX_BATCH_BYTES)
        }) {
            if let Err(error) = self.check(&job) {
                return Err((batch.len() + 1, at_job(index, &error)));
            }
            bytes += job.payload.len();
            batch.push(job);
        }
        Ok((!batch.is_empty()).then_some(batch))
    }

    /// Encodes checked jobs on this task when their payloads are small
    /// ([`INLINE_ENCODE_MAX_BYTES`]); otherwise starts encoding them on the
    /// blocking pool, split over [`ENCODE_THREADS`] (the threads start now,
    /// not when the result is awaited).
    fn start_encoding(&self, jobs: Vec<NewJob>, now: u64) -> Encoding {
        let len = jobs.len();
        let bytes: usize = jobs.iter().map(|job| job.payload.len()).sum();
        if bytes <= INLINE_ENCODE_MAX_BYTES {
            let prepared = jobs.into_iter().map(|job| self.encode(job, now)).collect();
            return Encoding {
                len,
                prepared: Box::pin(std::future::ready(prepared)),
            };
        }
        let threads = *ENCODE_THREADS;
        let per_thread = len.div_ceil(threads);
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
        let prepared = Box::pin(async move {
            let mut prepared = Vec::with_capacity(len);
            for part in parts {
                // Encoding cannot fail or panic on checked jobs; a panic here
                // is a bug worth surfacing.
                prepared.extend(part.await.expect("encoding a checked job does not panic"));
            }
            prepared
        });
        Encoding { len, prepared }
    }

    /// Checks a job against everything an enqueue checks before it writes
    /// (payload size, priority, attempts, timeout, idempotency key and
    /// window), without encoding or writing it: a caller that must promise
    /// a job will be accepted later (the server's webhook spool) checks it
    /// before it promises. Errors as [`enqueue`](Self::enqueue)'s for a bad
    /// job.
    pub fn check(&self, job: &NewJob) -> Result<()> {
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
        if let Some(run_at) = job.run_at {
            super::config::check_run_at(run_at, self.now_ms())?;
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
            // The task holds the writer, not the queue: it ends when the
            // last handle (and with it the sender) is dropped.
            tokio::spawn(run_batcher(
                rx,
                Arc::clone(&self.inner.writer),
                self.inner.config.clock.clone(),
            ));
            tx
        })
    }
}

/// Gathers waiting single enqueues into batches, at most
/// [`BATCHER_IN_FLIGHT`] on their way at once; while those are out, the next
/// batch grows.
async fn run_batcher(
    mut rx: mpsc::Receiver<Pending>,
    writer: Arc<Writer>,
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
            first = rx.recv(), if open && in_flight.len() < BATCHER_IN_FLIGHT => {
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
                let (writer, now) = (Arc::clone(&writer), clock.now_ms());
                in_flight.push(async move {
                    let (jobs, replies): (Vec<Prepared>, Vec<_>) =
                        batch.into_iter().map(|p| (p.job, p.reply)).unzip();
                    let written = match writer.take_ids(jobs.len(), 0, now).await {
                        Ok(ids) => writer.write(now, &jobs, ids).await,
                        Err(error) => Err(error.into()),
                    };
                    match written {
                        Ok(done) => {
                            for (reply, enqueued) in replies.into_iter().zip(done) {
                                let _ = reply.send(Ok(enqueued));
                            }
                        }
                        // On the primary, not confirmed by its replicas:
                        // each caller learns its job's id from the error.
                        Err(WriteError { error, written: Some(done) }) => {
                            for (reply, enqueued) in replies.into_iter().zip(done) {
                                let _ = reply.send(Err(Error::new(
                                    error.kind(),
                                    format!("job {}: {}", enqueued.id, error.message()),
                                )));
                            }
                        }
                        Err(WriteError { error, written: None }) => {
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

/// The ids a producer has reserved and not yet given out: `next..end`.
#[derive(Debug, Default)]
struct IdRun {
    next: u64,
    end: u64,
    /// The run size in force when this run was reserved (0 before the
    /// first); a bulk call may have reserved more than that.
    size: u64,
    /// When this run was reserved; `None` before the first.
    reserved_at: Option<Instant>,
    /// Counts the reservations, so that a batch that finds its run lost
    /// drops it only if no newer one replaced it meanwhile.
    generation: u64,
}

impl IdRun {
    /// The size of the next reservation, the run being used up now: double
    /// the last when it lasted less than [`ID_RUN_GROWTH_WINDOW`].
    fn next_size(&self) -> u64 {
        match self.reserved_at {
            Some(at) if at.elapsed() < ID_RUN_GROWTH_WINDOW => {
                (self.size * 2).clamp(ID_RUN, MAX_ID_RUN)
            }
            _ => ID_RUN,
        }
    }
}

/// Ids taken for one batch, and the reservation the last of them came from.
#[derive(Debug)]
pub(crate) struct Ids {
    ids: Vec<u64>,
    generation: u64,
}

/// A bulk call's batch on its way: its length and how its write went.
type BatchWritten = (usize, Result<Vec<Enqueued>, WriteError>);

/// A batch that failed, and its jobs when they were written all the same
/// (to the primary, not confirmed by its replicas).
#[derive(Debug)]
pub(crate) struct WriteError {
    error: Error,
    written: Option<Vec<Enqueued>>,
}

impl From<Error> for WriteError {
    fn from(error: Error) -> Self {
        Self {
            error,
            written: None,
        }
    }
}

/// What single and bulk enqueues of one queue share: the connection, the
/// keys, the ids this producer has reserved, and whether `enqueue.lua` is
/// known to be loaded.
pub(crate) struct Writer {
    redis: Redis,
    keys: QueueKeys,
    /// Names this producer's id runs (in `id_runs`, and with the run's
    /// generation in each run's key): random, so that no two producers (nor
    /// two handles in one process) share one.
    token: String,
    /// Reserved ids not yet given to a job, and how the next run is sized.
    ids: Mutex<IdRun>,
    /// Set once the script is loaded; cleared when Redis says it is not
    /// (a restart or `SCRIPT FLUSH`).
    script_loaded: AtomicBool,
    durability: Durability,
    /// With a durability that waits for replicas: the producer's own
    /// connection, because `WAIT` blocks the connection it is sent on (and
    /// waits for that connection's writes), and the command that waits.
    replicated: OnceCell<(Redis, Cmd)>,
}

impl Writer {
    pub(crate) fn new(redis: Redis, keys: QueueKeys, durability: Durability) -> Self {
        let token: u64 = rand::random();
        Self {
            redis,
            keys,
            token: format!("{token:016x}"),
            ids: Mutex::new(IdRun::default()),
            script_loaded: AtomicBool::new(false),
            durability,
            replicated: OnceCell::new(),
        }
    }

    /// `n` fresh ids, from the reserved run or from new reservations. A new
    /// reservation takes `ahead` ids when more than `n` are known to follow
    /// (a bulk call), and at least the run size ([`ID_RUN`], growing to
    /// [`MAX_ID_RUN`] while runs are used up quickly).
    async fn take_ids(&self, n: usize, ahead: usize, now: u64) -> Result<Ids> {
        debug_assert!(n <= MAX_BATCH_JOBS, "a run always holds a whole batch");
        let mut run = self.ids.lock().await;
        loop {
            // All of a batch's ids come from one run, whose key is the one
            // its write checks: a batch that took the tail of a run and the
            // start of the next would have the tail's ids checked against
            // the wrong run's key, and a failover that lost only the older
            // run would go unseen. A tail too short for the batch is skipped
            // (ids are never given out again either way).
            if run.end - run.next >= n as u64 {
                let ids = (run.next..run.next + n as u64).collect();
                run.next += n as u64;
                return Ok(Ids {
                    ids,
                    generation: run.generation,
                });
            }
            run.next = run.end;
            let size = run.next_size();
            let want = (n.max(ahead) as u64).max(size).min(MAX_ID_RESERVATION);
            let generation = run.generation + 1;
            let run_key = self.keys.id_run(&self.token, generation);
            // The key of an older run whose batches were all sent: each
            // batch is one run's, and at most BATCHES_IN_FLIGHT are on their
            // way at once.
            let old_run_key = self
                .keys
                .id_run(&self.token, generation.saturating_sub(ID_RUN_KEYS_KEPT));
            let last: u64 = self
                .redis
                .retry_refused("the id reservation", || {
                    let mut reserve = redis::cmd("EVALSHA");
                    reserve
                        .arg(SCRIPTS.reserve_ids.get_hash())
                        .arg(4)
                        .arg(self.keys.meta())
                        .arg(self.keys.id_runs())
                        .arg(&run_key)
                        .arg(&old_run_key)
                        .arg(want)
                        .arg(&self.token)
                        .arg(MAX_ID_RUNS)
                        .arg(now)
                        .arg(ms(ID_RUN_KEY_TTL));
                    async move {
                        self.redis
                            .evalsha(&reserve, &PRODUCER_SOURCES.reserve_ids, self.keys.meta())
                            .await
                    }
                })
                .await?;
            *run = IdRun {
                next: last + 1 - want,
                end: last + 1,
                size,
                reserved_at: Some(Instant::now()),
                generation,
            };
        }
    }

    /// Drops the rest of the run a batch found lost, unless a newer run has
    /// replaced it already: the next ids come from a fresh reservation.
    async fn forget_run(&self, generation: u64) {
        let mut run = self.ids.lock().await;
        if run.generation == generation {
            run.next = run.end;
        }
    }

    /// Loads `enqueue.lua` unless it is known to be loaded: a transaction
    /// cannot fall back from EVALSHA to EVAL the way a lone call can.
    async fn ensure_script(&self) -> Result<()> {
        if !self.script_loaded.load(Ordering::Acquire) {
            self.redis
                .load_script_for(&PRODUCER_SOURCES.enqueue, self.keys.jobs())
                .await?;
            self.script_loaded.store(true, Ordering::Release);
        }
        Ok(())
    }

    /// The connection batches are written on, and the command that waits
    /// for replicas after each, by the queue's durability.
    async fn connection(&self) -> Result<(&Redis, Option<&Cmd>)> {
        let Some((count, timeout)) = self.durability.wait() else {
            return Ok((&self.redis, None));
        };
        let (redis, wait) = self
            .replicated
            .get_or_try_init(|| async {
                let wait = match self.durability {
                    Durability::ReplicasAof { .. } => {
                        crate::redis_policy::refuse_durability(&self.redis, self.durability)
                            .await?;
                        let mut cmd = redis::cmd("WAITAOF");
                        cmd.arg(0).arg(count).arg(ms(timeout));
                        cmd
                    }
                    _ => {
                        let mut cmd = redis::cmd("WAIT");
                        cmd.arg(count).arg(ms(timeout));
                        cmd
                    }
                };
                let response_timeout = self.redis.config().reply_budget() + timeout;
                let redis = self.redis.dedicated(Some(response_timeout)).await?;
                Ok::<_, Error>((redis, wait))
            })
            .await?;
        Ok((redis, Some(wait)))
    }

    /// Writes one batch: `WATCH` of its id run's key, `SET key 1 NX`, then
    /// one MULTI/EXEC of the records' HSET and `enqueue.lua`, then the wait
    /// for replicas if the durability asks for it. A batch whose id run was
    /// lost (a failover or restart that lost the reservation, and with it
    /// the run's key) makes the key with its `SET`, which changes the
    /// watched key, so Redis does not run the transaction: no record is
    /// written over. It is sent again under ids from a fresh reservation,
    /// so its jobs may get ids other than those taken for it. Plain
    /// commands, no script: a replica promoted in a failover has an empty
    /// script cache, and that is when the check matters.
    async fn write(
        &self,
        now: u64,
        batch: &[Prepared],
        ids: Ids,
    ) -> Result<Vec<Enqueued>, WriteError> {
        debug_assert!(!batch.is_empty() && batch.len() <= MAX_BATCH_JOBS);
        debug_assert_eq!(batch.len(), ids.ids.len());
        self.ensure_script().await?;
        let (redis, wait) = self.connection().await?;
        let Ids {
            mut ids,
            mut generation,
        } = ids;
        // NOSCRIPT answers so far: the first reloads the script on the
        // slot's owner, the second on every primary (see below).
        let mut script_reloads = 0;
        let mut runs_lost = 0;
        let mut aborts = 0;
        let mut pause = ABORT_FIRST_WAIT;
        loop {
            let run_key = self.keys.id_run(&self.token, generation);
            let guarded = redis
                .retry_refused("the batch", || {
                    let mut claim = redis::cmd("SET");
                    claim
                        .arg(&run_key)
                        .arg(1)
                        .arg("NX")
                        .arg("PX")
                        .arg(ms(LOST_RUN_MARKER_TTL));
                    redis.guarded_transaction(
                        &run_key,
                        vec![claim],
                        vec![
                            self.hset_records(batch, &ids),
                            self.enqueue_call(now, batch, &ids, &run_key),
                        ],
                        wait.into_iter().cloned().collect(),
                    )
                })
                .await?;
            let checked = guarded.before.into_iter().next();
            let Some(replies) = guarded.exec else {
                // Redis did not run the transaction: the run's key changed
                // after the WATCH. Either this batch's SET made it (the run
                // was lost), or it expired or was removed meanwhile (the
                // next try's SET tells).
                if checked == Some(Value::Okay) {
                    runs_lost += 1;
                    if runs_lost > MAX_LOST_RUNS_PER_BATCH {
                        return Err(Error::new(
                            ErrorKind::Unavailable,
                            format!(
                                "the ids reserved for this batch were lost {runs_lost} times in a row \
                                 (failovers or restarts that lost writes); nothing was written"
                            ),
                        )
                        .into());
                    }
                    tracing::warn!(
                        queue = self.keys.jobs(),
                        first_id = ids[0],
                        jobs = ids.len(),
                        "this producer's id run is gone from Redis (a failover or restart lost \
                         writes, or the run outlived its key's TTL); the batch goes again under new ids"
                    );
                    self.forget_run(generation).await;
                    let fresh = self.take_ids(batch.len(), 0, now).await?;
                    (ids, generation) = (fresh.ids, fresh.generation);
                } else {
                    aborts += 1;
                    if aborts > MAX_ABORTS_PER_BATCH {
                        return Err(Error::new(
                            ErrorKind::Unavailable,
                            format!(
                                "the batch's transaction was aborted {aborts} times in a row \
                                 (its id run's key kept changing); nothing was written"
                            ),
                        )
                        .into());
                    }
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(ABORT_MAX_WAIT);
                }
                continue;
            };
            if let Some(Value::ServerError(error)) = &checked {
                // The records went in unchecked (an ACL that denies SET on
                // the run's key): say so loudly, as it is unsafe after a
                // failover.
                tracing::error!(
                    queue = self.keys.jobs(),
                    error = ?error,
                    "the id run's key could not be checked before a batch was written; ids are not protected against a lost reservation"
                );
            }
            let [written, filed] = <[Value; 2]>::try_from(replies)
                .expect("a transaction returns one reply per command");
            match filed {
                // Redis lost the script (a restart or SCRIPT FLUSH) after it
                // was loaded. The records are in, nothing else is: load it
                // and run the transaction again, which writes the same
                // records under the same ids. (In a bulk call, a batch
                // pipelined behind this one may land first: a flush in the
                // middle of a call can reorder its batches, never lose or
                // double a job.)
                Value::ServerError(error)
                    if error.kind() == Some(ServerErrorKind::NoScript) && script_reloads < 2 =>
                {
                    if script_reloads == 0 {
                        self.script_loaded.store(false, Ordering::Release);
                        self.ensure_script().await?;
                    } else {
                        // Still unknown after loading it on the slot's owner:
                        // a slot migration redirected the transaction to the
                        // importing node, which never loaded it.
                        self.redis
                            .load_script_on_primaries(&PRODUCER_SOURCES.enqueue, self.keys.jobs())
                            .await;
                    }
                    script_reloads += 1;
                }
                Value::ServerError(error) => {
                    // The script refused the batch: take the records out
                    // again, so that none is left without its job.
                    let error = Error::from(redis::RedisError::from(error));
                    let removed: Result<u64> = self
                        .redis
                        .query(redis::cmd("HDEL").arg(self.keys.jobs()).arg(&ids))
                        .await;
                    if let Err(cleanup) = removed {
                        tracing::warn!(
                            queue = self.keys.jobs(),
                            first_id = ids[0],
                            jobs = ids.len(),
                            error = %cleanup,
                            "a refused batch's records could not be removed; they stay in `jobs` without a job"
                        );
                    }
                    return Err(error.into());
                }
                filed => {
                    if script_reloads == 0 && written != Value::Int(ids.len() as i64) {
                        // The run key's check makes this impossible short of
                        // a hand-edited next_id, id_runs or run key.
                        tracing::error!(
                            queue = self.keys.jobs(),
                            ?written,
                            jobs = ids.len(),
                            "enqueue wrote over existing records: was the queue's next_id or id_runs edited?"
                        );
                    }
                    let done = enqueued(&ids, filed)?;
                    return match self.replicas_missing(guarded.after.first()) {
                        None => Ok(done),
                        Some(error) => Err(WriteError {
                            error,
                            written: Some(done),
                        }),
                    };
                }
            }
        }
    }

    /// The error to give when the replicas did not confirm the batch: `None`
    /// when the durability asks for none or they did.
    fn replicas_missing(&self, reply: Option<&Value>) -> Option<Error> {
        let (count, timeout) = self.durability.wait()?;
        let confirmed = match reply {
            Some(Value::Int(n)) => *n,
            // WAITAOF: [local fsyncs, replica fsyncs].
            Some(Value::Array(counts)) => match counts.get(1) {
                Some(Value::Int(n)) => *n,
                _ => 0,
            },
            Some(Value::ServerError(error)) => {
                return Some(Error::new(
                    ErrorKind::NotReplicated,
                    format!(
                        "written to the primary; waiting for {count} replica(s) failed: {}",
                        Error::from(redis::RedisError::from(error.clone())).message()
                    ),
                ));
            }
            _ => 0,
        };
        (confirmed < i64::from(count)).then(|| {
            Error::new(
                ErrorKind::NotReplicated,
                format!(
                    "written to the primary, but {confirmed} of the {count} replica(s) asked for \
                     confirmed it within {timeout:?} ({}); a failover now may lose it",
                    self.durability
                ),
            )
        })
    }

    /// `HSET jobs id record …` for the whole batch.
    fn hset_records(&self, batch: &[Prepared], ids: &[u64]) -> Cmd {
        let mut hset = redis::cmd("HSET");
        hset.arg(self.keys.jobs());
        for (job, id) in batch.iter().zip(ids) {
            hset.arg(*id).arg(&job.record[..]);
        }
        hset
    }

    /// `EVALSHA enqueue.lua …` for the batch, its jobs in groups.
    fn enqueue_call(&self, now: u64, batch: &[Prepared], ids: &[u64], run_key: &str) -> Cmd {
        let keys = &self.keys;
        // The idempotency keys follow the fixed ones, in the batch's order.
        let idempotency_keys: Vec<&str> = batch
            .iter()
            .filter_map(|job| job.idempotency.as_ref().map(|(key, _)| key.as_str()))
            .collect();
        let mut call = redis::cmd("EVALSHA");
        call.arg(SCRIPTS.enqueue.get_hash())
            .arg(ENQUEUE_FIXED_KEYS + idempotency_keys.len())
            .arg(keys.jobs())
            .arg(keys.scheduled())
            .arg(keys.stats())
            .arg(keys.notify())
            .arg(&keys.waiting_all()[..])
            .arg(run_key)
            .arg(idempotency_keys)
            .arg(now)
            .arg(batch.len());
        let mut start = 0;
        let mut next_key_index = ENQUEUE_FIXED_KEYS;
        for group in group_batch(batch, now) {
            match group {
                Group::Ready { priority, jobs } => {
                    call.arg("R").arg(jobs.len()).arg(priority);
                    call.arg(&ids[start..start + jobs.len()]);
                    start += jobs.len();
                }
                Group::Scheduled(jobs) => {
                    call.arg("S").arg(jobs.len());
                    for job in jobs {
                        call.arg(job.run_at_ms).arg(ids[start]);
                        start += 1;
                    }
                }
                Group::Idempotent(jobs) => {
                    call.arg("I").arg(jobs.len());
                    for job in jobs {
                        let (_, window) = job.idempotency.as_ref().expect("grouped by key");
                        next_key_index += 1;
                        call.arg(job.run_at_ms)
                            .arg(next_key_index)
                            .arg(*window)
                            .arg(job.priority)
                            .arg(ids[start]);
                        start += 1;
                    }
                }
            }
        }
        call
    }
}

/// Each job's result from its id and `enqueue.lua`'s list of duplicates
/// (position from 1, first job's id).
fn enqueued(ids: &[u64], duplicates: Value) -> Result<Vec<Enqueued>> {
    let mut done: Vec<Enqueued> = ids
        .iter()
        .map(|&id| Enqueued {
            id: JobId(id),
            duplicate: false,
        })
        .collect();
    let pairs: Vec<u64> = redis::from_redis_value(duplicates)
        .map_err(|e| Error::corrupt(format!("enqueue script replied oddly: {e}")))?;
    for pair in pairs.chunks(2) {
        let &[position, first] = pair else {
            return Err(Error::corrupt("enqueue script replied an odd count"));
        };
        let slot = position
            .checked_sub(1)
            .and_then(|i| done.get_mut(i as usize))
            .ok_or_else(|| Error::corrupt(format!("enqueue script named job {position}")))?;
        *slot = Enqueued {
            id: JobId(first),
            duplicate: true,
        };
    }
    Ok(done)
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

/// A batch of a bulk enqueue: already encoded on the calling task (a ready
/// future), or being encoded on the blocking pool.
struct Encoding {
    len: usize,
    prepared: BoxFuture<'static, Vec<Prepared>>,
}

/// `error`, saying which job of a bulk call it was about.
fn at_job(index: usize, error: &Error) -> Error {
    Error::new(error.kind(), format!("job {index}: {}", error.message()))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn run(size: u64, age: Option<Duration>) -> IdRun {
        IdRun {
            size,
            reserved_at: age.map(|age| Instant::now().checked_sub(age).expect("uptime")),
            ..IdRun::default()
        }
    }

    #[test]
    fn a_run_used_up_within_the_window_doubles_the_next_up_to_the_cap() {
        assert_eq!(run(0, None).next_size(), ID_RUN);
        assert_eq!(run(ID_RUN, Some(Duration::ZERO)).next_size(), 2 * ID_RUN);
        assert_eq!(
            run(MAX_ID_RUN, Some(Duration::ZERO)).next_size(),
            MAX_ID_RUN
        );
        // A slow producer goes back to a thousand.
        let slow = ID_RUN_GROWTH_WINDOW + Duration::from_millis(1);
        assert_eq!(run(MAX_ID_RUN, Some(slow)).next_size(), ID_RUN);
    }

    /// Review B1: a batch sent (or sent again) under ids of a run whose
    /// reservation was lost, after the same producer had reserved again and
    /// been handed the same ids (next_id had gone back), passed a check that
    /// asked only for the producer's latest run and wrote over the job the
    /// new run had put under one of those ids.
    #[tokio::test]
    async fn a_batch_of_a_lost_run_never_writes_over_the_run_after_it() {
        let server = plimsoll_test_support::RedisServer::start();
        let redis = Redis::connect_url(&server.url()).await.unwrap();
        let queue = Queue::with_defaults(redis, "b1").unwrap();
        queue.register().await.unwrap();
        let writer = &queue.inner.writer;
        let now = queue.now_ms();
        let job = |text: &str| queue.encode(NewJob::bytes(text.to_string()), now);

        // A run reserved (generation 1), then lost as a failover or a
        // restart would lose it: its key, its id_runs entry and next_id.
        let stale = writer.take_ids(1, 0, now).await.unwrap();
        assert_eq!(stale.generation, 1);
        let meta = queue.keys().meta().to_string();
        server.cmd(&["DEL", &queue.keys().id_run(&writer.token, 1)]);
        server.cmd(&["DEL", queue.keys().id_runs()]);
        server.cmd(&["HSET", &meta, "next_id", "1000000"]);
        // The producer reserves again and is handed the same first id.
        writer.forget_run(1).await;
        let fresh = writer.take_ids(1, 0, now).await.unwrap();
        assert_eq!(fresh.generation, 2);
        assert_eq!(fresh.ids, stale.ids, "next_id went back: the same id again");
        let written = writer.write(now, &[job("fresh")], fresh).await.unwrap();
        let fresh_id = written[0].id.0;

        // Now the batch of the lost run goes (a retry, or one that was on
        // its way): it must not land under its old id.
        let late = writer.write(now, &[job("late")], stale).await.unwrap();
        assert_ne!(late[0].id.0, fresh_id, "the late batch took new ids");
        for (id, payload) in [(fresh_id, "fresh"), (late[0].id.0, "late")] {
            let job = queue.job(JobId(id)).await.unwrap().unwrap();
            assert_eq!(job.payload, payload.as_bytes(), "job {id}'s record");
        }
        let waiting = server.cmd(&["LRANGE", queue.keys().waiting(5), "0", "-1"]);
        let ids: Vec<&str> = waiting.split_whitespace().collect();
        let unique: std::collections::HashSet<&&str> = ids.iter().collect();
        assert_eq!(ids.len(), 2, "{waiting}");
        assert_eq!(unique.len(), 2, "no id listed twice: {waiting}");
    }

    /// A batch could take the tail of one run and the start of the next,
    /// and its write then checked only the newer run's key: a failover that
    /// lost only the older run would have let the tail's ids, perhaps
    /// another producer's by then, be written over.
    #[tokio::test]
    async fn a_batch_never_takes_ids_from_two_runs() {
        let server = plimsoll_test_support::RedisServer::start();
        let redis = Redis::connect_url(&server.url()).await.unwrap();
        let queue = Queue::with_defaults(redis, "one-run").unwrap();
        queue.register().await.unwrap();
        let writer = &queue.inner.writer;
        let now = queue.now_ms();
        let first = writer.take_ids(1, 0, now).await.unwrap();
        let run_end = {
            let run = writer.ids.lock().await;
            run.end
        };
        // All but one id of the run taken.
        let rest = (run_end - first.ids[0] - 2) as usize;
        let most = writer.take_ids(rest, 0, now).await.unwrap();
        assert_eq!(most.generation, first.generation);
        let two = writer.take_ids(2, 0, now).await.unwrap();
        assert_eq!(two.generation, first.generation + 1, "a new run");
        assert!(
            two.ids.iter().all(|id| *id >= run_end),
            "{:?}, run ended at {run_end}",
            two.ids
        );
        assert_eq!(two.ids[1], two.ids[0] + 1);
    }
}
