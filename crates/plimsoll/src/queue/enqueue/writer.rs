//! The write of one batch: ids reserved in runs, then one MULTI/EXEC of
//! the records' HSET and `enqueue.lua`.
//!
//! A producer reserves ids in runs (`reserve_ids.lua`), each run under a
//! key of its own that the batch's transaction watches: a batch whose run
//! was lost (a failover or restart that dropped writes) is never written
//! under ids another producer may hold, but sent again under a fresh run.
//! The runs grow while a producer is busy, so that a busy producer
//! reserves a few times a second rather than once per thousand jobs.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use redis::{Cmd, ServerErrorKind, Value};
use tokio::sync::{Mutex, OnceCell};

use super::super::config::Durability;
use super::super::job::{Enqueued, JobId};
use super::super::scripts::{PRODUCER_SOURCES, calls};
use crate::clock::ms;
use crate::connection::Redis;
use crate::error::{Error, ErrorKind, Result};
use crate::keyspace::{LOST_RUN_MARKER_TTL, QueueKeys};

use super::{BATCHES_IN_FLIGHT, MAX_BATCH_JOBS, Prepared};

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
pub(super) const MAX_ID_RESERVATION: u64 = 1_000_000;

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

/// A batch that failed, and its jobs when they were written all the same
/// (to the primary, not confirmed by its replicas).
#[derive(Debug)]
pub(crate) struct WriteError {
    pub(super) error: Error,
    pub(super) written: Option<Vec<Enqueued>>,
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
    pub(super) async fn take_ids(&self, n: usize, ahead: usize, now: u64) -> Result<Ids> {
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
                    let reserve = calls::reserve_ids(
                        &self.keys,
                        &run_key,
                        &old_run_key,
                        want,
                        &self.token,
                        now,
                    );
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
    pub(super) async fn ensure_script(&self) -> Result<()> {
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
    pub(super) async fn write(
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
        let mut call = calls::enqueue_head(keys, run_key, &idempotency_keys, now, batch.len());
        let mut start = 0;
        let mut next_key_index = calls::ENQUEUE_FIXED_KEYS;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::{NewJob, Queue};

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
