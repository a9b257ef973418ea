//! Inspecting and operating a queue: counts, bytes, jobs by id or state, the
//! dead set, cancel, pause and resume.
//!
//! Reads that must agree with each other (counts, one job's state) are one
//! read-only script, so they see one moment of the queue. Active jobs live in
//! one hash per worker; the worker list is read first and its hashes passed
//! to the script.

use std::collections::HashMap;

use redis::Value;
use serde::Serialize;

use super::Queue;
use super::job::{JobId, JobInfo, JobState};
use super::record;
use super::scripts::calls;
use crate::connection::glob_escape;
use crate::error::{Error, ErrorKind, Result};
use crate::keyspace::{PRIORITY_LEVELS, lease_deadline, queues_registry};

/// The most workers whose active jobs one call looks at.
const MAX_LISTED_WORKERS: isize = 1000;
/// The most jobs one listing returns.
pub const MAX_LIST_LIMIT: usize = 1000;
/// The largest offset a listing takes. Past it is a mistake (an offset of
/// 2^64 - 1 once reached Redis as an out-of-range index): no queue holds
/// that many jobs in one state, and paging so deep costs Redis O(offset).
/// Within it, an offset past the end gives an empty page, as a list that
/// shrinks while it is paged through must.
pub const MAX_LIST_OFFSET: usize = 100_000_000;
/// How often a cancel retries when a worker it did not know of leased the job.
const CANCEL_ATTEMPTS: usize = 3;
/// Keys one `UNLINK` of [`Queue::delete`] removes at most: the call stays
/// short (UNLINK frees large values on a background thread) however many
/// idempotency keys a queue has.
pub const DELETE_BATCH_KEYS: usize = 100;

/// What [`Queue::delete`] removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Deleted {
    /// Keys removed.
    pub keys: u64,
    /// Jobs whose records were removed, whatever their state.
    pub jobs: u64,
}

/// Sizes and counters of a queue at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct QueueCounts {
    /// Jobs ready to run.
    pub waiting: u64,
    /// Jobs ready to run, per priority 0..=9.
    pub waiting_by_priority: [u64; PRIORITY_LEVELS],
    /// Jobs due later (delayed, or retries in backoff).
    pub scheduled: u64,
    /// Jobs leased to workers.
    pub active: u64,
    /// Jobs in the dead set.
    pub dead: u64,
    /// Completed jobs retained (0 unless retention of completed jobs is on).
    pub completed: u64,
    /// Workers registered on the queue.
    pub workers: u64,
    /// Whether fetching is paused.
    pub paused: bool,
    /// Record bytes held by the dead set.
    pub dead_bytes: u64,
    /// Record bytes held by retained completed jobs.
    pub completed_bytes: u64,
    /// Counters since the queue was created.
    pub totals: QueueTotals,
}

/// Counters since a queue was created.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct QueueTotals {
    /// Jobs enqueued (duplicates not counted).
    pub enqueued: u64,
    /// Jobs completed.
    pub completed: u64,
    /// Failed runs that were scheduled to run again.
    pub retried: u64,
    /// Jobs that went to the dead set.
    pub dead: u64,
    /// Jobs cancelled.
    pub cancelled: u64,
    /// Jobs whose lease expired and were put back to run again.
    pub rescued: u64,
}

/// A worker registered on a queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WorkerInfo {
    /// The worker's id (`host-pid-random`).
    pub id: String,
    /// The earliest lease deadline among its jobs, or when it must next show
    /// it is alive (ms since the epoch).
    pub deadline_ms: u64,
}

/// What [`Queue::cancel`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "outcome", content = "state")]
pub enum CancelOutcome {
    /// The job was removed; it was in this state.
    Cancelled(JobState),
    /// The job had already finished (dead or retained as completed); it was
    /// left alone.
    AlreadyFinished(JobState),
    /// There is no such job (never was, or finished and removed).
    NotFound,
}

/// Which dead jobs an operation applies to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeadSelection {
    /// These jobs (those not dead are skipped).
    Ids(Vec<JobId>),
    /// Up to this many, oldest first.
    Oldest(usize),
    /// All of them.
    All,
}

impl Queue {
    /// The workers registered on this queue.
    pub async fn workers(&self) -> Result<Vec<WorkerInfo>> {
        let entries: Vec<(String, f64)> = self
            .redis()
            .query(
                redis::cmd("ZRANGE")
                    .arg(self.keys().workers())
                    .arg(0)
                    .arg(MAX_LISTED_WORKERS - 1)
                    .arg("WITHSCORES"),
            )
            .await?;
        Ok(entries
            .into_iter()
            .map(|(id, score)| WorkerInfo {
                id,
                deadline_ms: score as u64,
            })
            .collect())
    }

    async fn worker_ids(&self) -> Result<Vec<String>> {
        Ok(self.workers().await?.into_iter().map(|w| w.id).collect())
    }

    /// Counts per state, counters, and bytes of the retained sets.
    pub async fn counts(&self) -> Result<QueueCounts> {
        let workers = self.worker_ids().await?;
        let keys = self.keys();
        let reply: Vec<Value> = calls::counts(keys, &workers).invoke(self.redis()).await?;
        if reply.len() != PRIORITY_LEVELS + 7 {
            return Err(Error::corrupt("counts script returned an unexpected reply"));
        }
        let int = |v: &Value| -> Result<u64> { Ok(redis::from_redis_value_ref::<u64>(v)?) };
        let mut counts = QueueCounts::default();
        for (slot, value) in counts.waiting_by_priority.iter_mut().zip(&reply) {
            *slot = int(value)?;
        }
        counts.waiting = counts.waiting_by_priority.iter().sum();
        let rest = &reply[PRIORITY_LEVELS..];
        counts.scheduled = int(&rest[0])?;
        counts.active = int(&rest[1])?;
        counts.dead = int(&rest[2])?;
        counts.completed = int(&rest[3])?;
        counts.workers = int(&rest[4])?;
        counts.paused = int(&rest[5])? == 1;
        let stats: HashMap<String, i64> = redis::from_redis_value_ref(&rest[6])?;
        let stat = |name: &str| stats.get(name).copied().unwrap_or(0).max(0) as u64;
        counts.dead_bytes = stat("dead_bytes");
        counts.completed_bytes = stat("completed_bytes");
        counts.totals = QueueTotals {
            enqueued: stat("enqueued"),
            completed: stat("completed"),
            retried: stat("retried"),
            dead: stat("dead"),
            cancelled: stat("cancelled"),
            rescued: stat("rescued"),
        };
        Ok(counts)
    }

    /// Bytes the queue's keys take in Redis, as `MEMORY USAGE` reports them
    /// (sampled for large hashes and lists, so an estimate).
    pub async fn memory_bytes(&self) -> Result<u64> {
        let workers = self.worker_ids().await?;
        let keys = self.keys();
        let mut names: Vec<String> = keys.fixed().map(str::to_string).collect();
        names.extend(workers.iter().map(|w| keys.active(w)));
        let mut pipe = redis::pipe();
        for name in &names {
            pipe.cmd("MEMORY").arg("USAGE").arg(name);
        }
        let sizes: Vec<Option<u64>> = pipe.query_async(&mut self.redis().clone()).await?;
        Ok(sizes.into_iter().flatten().sum())
    }

    /// One job by id, or `None` when there is no such job (it never existed,
    /// or it finished and was removed, or it was cancelled).
    pub async fn job(&self, id: JobId) -> Result<Option<JobInfo>> {
        let workers = self.worker_ids().await?;
        let keys = self.keys();
        let reply: Vec<Value> = calls::inspect_job(keys, id.0, &workers)
            .invoke(self.redis())
            .await?;
        if reply.is_empty() {
            return Ok(None);
        }
        let (state, rec, time, worker): (String, Vec<u8>, String, String) =
            redis::from_redis_value(Value::Array(reply))?;
        let state = JobState::parse(&state)
            .ok_or_else(|| Error::corrupt(format!("unknown job state {state:?}")))?;
        let time = time
            .parse::<f64>()
            .ok()
            .map(|t| t as u64)
            .filter(|t| *t > 0);
        let worker = (!worker.is_empty()).then_some(worker);
        Ok(Some(job_info(id, state, &rec, time, worker)?))
    }

    /// Jobs in `state`, in the order they will be handled (waiting: priority,
    /// then FIFO; scheduled: due time) or, for the dead and completed sets,
    /// oldest first. At most 1,000 (`MAX_LIST_LIMIT`) per call. An offset
    /// past the end gives no jobs; one above [`MAX_LIST_OFFSET`] is
    /// [`InvalidInput`](crate::ErrorKind::InvalidInput).
    pub async fn jobs(&self, state: JobState, offset: usize, limit: usize) -> Result<Vec<JobInfo>> {
        if offset > MAX_LIST_OFFSET {
            return Err(Error::invalid(format!(
                "offset {offset} is above the largest, {MAX_LIST_OFFSET}"
            )));
        }
        let limit = limit.min(MAX_LIST_LIMIT);
        if limit == 0 {
            return Ok(Vec::new());
        }
        let keys = self.keys();
        let mut redis = self.redis().clone();
        let (ids, times, workers): (Vec<u64>, Vec<Option<u64>>, Vec<Option<String>>) = match state {
            JobState::Waiting => {
                let mut pipe = redis::pipe();
                for list in keys.waiting_all() {
                    pipe.cmd("LLEN").arg(list);
                }
                let lens: Vec<usize> = pipe.query_async(&mut redis).await?;
                let (mut skip, mut ids) = (offset, Vec::new());
                for (p, len) in lens.into_iter().enumerate() {
                    if ids.len() >= limit {
                        break;
                    }
                    if skip >= len {
                        skip -= len;
                        continue;
                    }
                    let want = limit - ids.len();
                    let page: Vec<u64> = redis::cmd("LRANGE")
                        .arg(keys.waiting(p))
                        .arg(skip)
                        .arg(skip + want - 1)
                        .query_async(&mut redis)
                        .await?;
                    skip = 0;
                    ids.extend(page);
                }
                let n = ids.len();
                (ids, vec![None; n], vec![None; n])
            }
            JobState::Scheduled | JobState::Dead | JobState::Completed => {
                let set = match state {
                    JobState::Scheduled => keys.scheduled(),
                    JobState::Dead => keys.dead(),
                    _ => keys.completed(),
                };
                let page: Vec<(u64, f64)> = redis::cmd("ZRANGE")
                    .arg(set)
                    .arg(offset)
                    .arg(offset + limit - 1)
                    .arg("WITHSCORES")
                    .query_async(&mut redis)
                    .await?;
                let n = page.len();
                let (ids, times) = page.into_iter().map(|(id, t)| (id, Some(t as u64))).unzip();
                (ids, times, vec![None; n])
            }
            JobState::Active => {
                let mut rows = Vec::new();
                for worker in self.worker_ids().await? {
                    let leases: Vec<(u64, String)> = redis::cmd("HGETALL")
                        .arg(keys.active(&worker))
                        .query_async(&mut redis)
                        .await?;
                    rows.extend(leases.into_iter().map(|(id, lease)| {
                        let deadline = lease_deadline(&lease).unwrap_or(0);
                        (id, deadline, worker.clone())
                    }));
                }
                rows.sort_unstable();
                let rows: Vec<_> = rows.into_iter().skip(offset).take(limit).collect();
                let mut out = (Vec::new(), Vec::new(), Vec::new());
                for (id, lease, worker) in rows {
                    out.0.push(id);
                    out.1.push(Some(lease));
                    out.2.push(Some(worker));
                }
                out
            }
        };
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let records: Vec<Option<Vec<u8>>> = redis::cmd("HMGET")
            .arg(keys.jobs())
            .arg(&ids)
            .query_async(&mut redis)
            .await?;
        let mut out = Vec::with_capacity(ids.len());
        for (((id, rec), time), worker) in ids.into_iter().zip(records).zip(times).zip(workers) {
            // A job may finish between the two reads; leave it out.
            if let Some(rec) = rec {
                out.push(job_info(JobId(id), state, &rec, time, worker)?);
            }
        }
        Ok(out)
    }

    /// Cancels a job that has not finished: a waiting or scheduled job is
    /// removed; an active job is removed and its worker stops the handler at
    /// its next heartbeat.
    pub async fn cancel(&self, id: JobId) -> Result<CancelOutcome> {
        let keys = self.keys();
        for _ in 0..CANCEL_ATTEMPTS {
            let workers = self.worker_ids().await?;
            let call = calls::cancel(keys, workers.iter().map(|w| keys.active(w)), id.0);
            let state: String = call.invoke(self.redis()).await?;
            return Ok(match state.as_str() {
                "missing" => CancelOutcome::NotFound,
                "unknown" => continue,
                other => {
                    let state = JobState::parse(other)
                        .ok_or_else(|| Error::corrupt(format!("cancel returned {other:?}")))?;
                    match state {
                        JobState::Dead | JobState::Completed => {
                            CancelOutcome::AlreadyFinished(state)
                        }
                        _ => CancelOutcome::Cancelled(state),
                    }
                }
            });
        }
        Err(Error::new(
            crate::ErrorKind::Unavailable,
            format!("job {id} kept moving between workers; try the cancel again"),
        ))
    }

    /// Sends dead jobs back to their waiting list with a fresh set of
    /// attempts. Returns how many were sent back.
    pub async fn retry_dead(&self, selection: DeadSelection) -> Result<u64> {
        let keys = self.keys();
        self.dead_operation(selection, |ids: &[u64], limit| {
            calls::retry_dead(keys, limit, ids)
        })
        .await
    }

    /// Deletes dead jobs for good. Returns how many were deleted.
    pub async fn purge_dead(&self, selection: DeadSelection) -> Result<u64> {
        let keys = self.keys();
        self.dead_operation(selection, |ids: &[u64], limit| {
            calls::purge_dead(keys, limit, ids)
        })
        .await
    }

    /// Runs a dead-set script over a selection, 1,000 jobs per call.
    async fn dead_operation<'a>(
        &self,
        selection: DeadSelection,
        call: impl Fn(&[u64], usize) -> calls::Call<'a>,
    ) -> Result<u64> {
        const PER_CALL: usize = calls::DEAD_MAX_IDS;
        let redis = self.redis();
        let mut total = 0u64;
        let mut left = match selection {
            DeadSelection::Ids(ids) => {
                let ids: Vec<u64> = ids.iter().map(|id| id.0).collect();
                for chunk in ids.chunks(PER_CALL) {
                    let n: u64 = call(chunk, PER_CALL).invoke(redis).await?;
                    total += n;
                }
                return Ok(total);
            }
            DeadSelection::Oldest(n) => n,
            DeadSelection::All => usize::MAX,
        };
        while left > 0 {
            let want = left.min(PER_CALL);
            let n: u64 = call(&[], want).invoke(redis).await?;
            total += n;
            left -= n as usize;
            if (n as usize) < want {
                break;
            }
        }
        Ok(total)
    }

    /// Deletes the queue: every key under its hash tag (its jobs in every
    /// state, idempotency keys, counters, settings) in batches of
    /// [`DELETE_BATCH_KEYS`], then its entry in the registry. Its settings
    /// and id runs go last, so a delete cut short leaves a queue whose ids
    /// still only grow.
    ///
    /// Refused while jobs are active (leased to workers) unless `force`:
    /// stop the queue's workers first; with `force`, the outcomes of those
    /// runs find nothing to settle. A producer that enqueues meanwhile makes
    /// the queue again (its first batch after the delete takes fresh ids).
    ///
    /// Errors: [`InvalidInput`](ErrorKind::InvalidInput) when jobs are
    /// active and `force` is not set (nothing was deleted).
    pub async fn delete(&self, force: bool) -> Result<Deleted> {
        let counts = self.counts().await?;
        if counts.active > 0 && !force {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                format!(
                    "queue {} has {} active jobs (leased by its {} workers); stop its workers first, or delete with force",
                    self.name(),
                    counts.active,
                    counts.workers
                ),
            ));
        }
        let keys = self.keys();
        let redis = self.redis();
        let jobs: u64 = redis.query(redis::cmd("HLEN").arg(keys.jobs())).await?;
        let last = [keys.meta(), keys.id_runs(), keys.stats()];
        let unlink = |batch: Vec<String>| async move {
            let mut removed = 0;
            for chunk in batch.chunks(DELETE_BATCH_KEYS) {
                let n: u64 = redis.query(redis::cmd("UNLINK").arg(chunk)).await?;
                removed += n;
            }
            Ok(removed)
        };
        let pattern = format!("{}:*", glob_escape(keys.base()));
        let mut removed = redis
            .scan_node_of(keys.jobs(), &pattern, |found| {
                unlink(
                    found
                        .into_iter()
                        .filter(|key| !last.contains(&key.as_str()))
                        .collect(),
                )
            })
            .await?;
        // Keys written while the scan ran, then the settings and id runs.
        let mut fixed: Vec<String> = vec![
            keys.jobs().into(),
            keys.scheduled().into(),
            keys.dead().into(),
            keys.completed().into(),
            keys.workers().into(),
            keys.notify().into(),
        ];
        fixed.extend(keys.waiting_all().iter().cloned());
        removed += unlink(fixed).await?;
        removed += unlink(last.iter().map(|key| key.to_string()).collect()).await?;
        let _: u64 = redis
            .query(
                redis::cmd("SREM")
                    .arg(queues_registry(&self.config().prefix))
                    .arg(self.name().as_str()),
            )
            .await?;
        self.inner.registration.reset();
        Ok(Deleted {
            keys: removed,
            jobs,
        })
    }

    /// Stops workers from fetching jobs of this queue; running jobs finish.
    pub async fn pause(&self) -> Result<()> {
        let _: () = self
            .redis()
            .query(
                redis::cmd("HSET")
                    .arg(self.keys().meta())
                    .arg("paused")
                    .arg(1),
            )
            .await?;
        Ok(())
    }

    /// Lets workers fetch again, and wakes idle ones.
    pub async fn resume(&self) -> Result<()> {
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("HDEL")
            .arg(self.keys().meta())
            .arg("paused")
            .ignore()
            .cmd("LPUSH")
            .arg(self.keys().notify())
            .arg(1)
            .ignore()
            .cmd("LTRIM")
            .arg(self.keys().notify())
            .arg(0)
            .arg(0)
            .ignore();
        let _: () = pipe.query_async(&mut self.redis().clone()).await?;
        Ok(())
    }
}

fn job_info(
    id: JobId,
    state: JobState,
    rec: &[u8],
    state_time_ms: Option<u64>,
    worker: Option<String>,
) -> Result<JobInfo> {
    let decoded = record::decode(rec)?;
    Ok(JobInfo {
        id,
        state,
        priority: decoded.header.priority,
        attempts: decoded.header.attempts,
        max_attempts: decoded.header.max_attempts,
        timeout_ms: decoded.header.timeout_ms,
        enqueued_at_ms: decoded.header.enqueued_at_ms,
        state_time_ms,
        worker,
        last_error: decoded.last_error,
        payload: decoded.payload,
        stored_bytes: rec.len(),
    })
}
