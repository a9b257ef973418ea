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
use std::sync::{Arc, LazyLock};
use std::task::Poll;

use futures::future::BoxFuture;
use futures::stream::{FuturesOrdered, FuturesUnordered, StreamExt};
use tokio::sync::{mpsc, oneshot};

use super::Queue;
use super::config::{check_idempotency_window, check_max_attempts, check_priority, check_timeout};
use super::job::{Enqueued, NewJob, RunAt, system_time_ms};
use super::record::{self, Header};
use crate::clock::ms;
use crate::error::{Error, ErrorKind, Result};
use crate::keyspace::PRIORITY_LEVELS;
use crate::queue::config::MAX_IDEMPOTENCY_KEY_LEN;

mod writer;

pub(crate) use writer::Writer;
use writer::{MAX_ID_RESERVATION, WriteError};

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

/// A bulk call's batch on its way: its length and how its write went.
type BatchWritten = (usize, Result<Vec<Enqueued>, WriteError>);

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
