//! The replayer: hands spooled webhooks to Redis, in the order they were
//! accepted, once Redis takes writes again.
//!
//! It reads a batch from the spool's cursor and enqueues each run of records
//! for one queue with one bulk call, each record's identity (its delivery id,
//! or the one minted at intake) as idempotency key. Redis thus drops a
//! record it has already taken — the direct enqueue that timed out but
//! landed, a batch that landed before a crash or before the cursor could be
//! persisted, a batch of a bulk call that landed after an earlier one
//! failed — so a replay never enqueues a webhook twice. The cursor is
//! committed past every record Redis took.
//!
//! What Redis refuses decides what happens next:
//!
//! - transient (unreachable, timing out, loading, failing over), out of
//!   memory, shutting down, or unable to persist (`MISCONF`): the same
//!   records are tried again after a backoff;
//! - anything else — the record can never be enqueued as it is (its queue's
//!   limit was lowered while it waited, a key of its queue holds the wrong
//!   type, an ACL forbids the write): the first record Redis did not take
//!   goes to the [quarantine](super::quarantine), which is visible and
//!   alerted on, and replay moves on. Records are also checked before they
//!   are sent ([`plimsoll::Queue::check`]), so one bad record in a run
//!   never costs the others a round trip.
//!
//! A full quarantine stops replay (nothing is dropped) until an operator
//! empties it.
//!
//! # Its shape
//!
//! It is a [`Service`] like the library's, run by
//! [`plimsoll::service::spawn`] until the server's service token fires: one
//! round is one batch, or one look at an empty spool. It handles every
//! failure itself and tells `spawn` how long to wait: an empty spool is
//! looked at again after [`IDLE_CHECK`], or as soon as a webhook is spooled
//! ([`Service::woken`], only while idle, so that webhooks spooled while Redis
//! refuses do not cut the backoff short); after Redis refused a batch it
//! waits its own backoff, [`FIRST_BACKOFF`] doubling to [`MAX_BACKOFF`],
//! reset by a batch that goes through. A refused batch is an ordinary state
//! of the replayer (the records stay in the spool, and it says so in the
//! log), not a failed round, so it never reaches `spawn`'s error backoff.
//! Because a round is one batch, shutdown stops it after its current batch.

use std::time::Duration;

use plimsoll::service::Service;
use plimsoll::{Clock, ErrorKind, NewJob, Queue, SystemClock};

use super::quarantine::QuarantineError;
use super::spool::SpoolRecord;
use crate::state::AppState;

/// Records read per round.
pub const REPLAY_BATCH: usize = 1000;
/// Wait after Redis refused, doubling up to [`MAX_BACKOFF`].
pub const FIRST_BACKOFF: Duration = Duration::from_millis(200);
/// Longest wait after Redis refused, and the wait after the spool could not
/// be read.
pub const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How often an empty spool is looked at even without a wake-up.
pub const IDLE_CHECK: Duration = Duration::from_secs(1);
/// Wait when the spool counts a record it cannot read yet: an append is
/// being written.
const APPEND_IN_PROGRESS: Duration = Duration::from_millis(20);

/// Hands spooled webhooks to Redis, a batch a round.
#[derive(Debug)]
pub struct Replayer {
    state: AppState,
    /// The wait after the next round Redis refuses.
    backoff: Duration,
    /// The last round found the spool empty, so a spooled webhook starts
    /// the next one.
    idle: bool,
}

impl Replayer {
    pub fn new(state: AppState) -> Self {
        Self {
            state,
            backoff: FIRST_BACKOFF,
            idle: false,
        }
    }
}

impl Service for Replayer {
    const NAME: &'static str = "replayer";

    async fn run_once(&mut self) -> plimsoll::Result<Duration> {
        Ok(self.round().await)
    }

    async fn woken(&self) {
        // Only an idle replayer is woken: one backing off from a Redis that
        // refuses waits its backoff out however many webhooks are spooled.
        if self.idle {
            self.state.spool().appended().await;
        } else {
            std::future::pending::<()>().await;
        }
    }
}

impl Replayer {
    /// One batch, or one look at an empty spool; returns the wait before
    /// the next round.
    async fn round(&mut self) -> Duration {
        let state = &self.state;
        let spool = state.spool();
        self.idle = spool.is_empty();
        if self.idle {
            if spool.cursor_behind()
                && let Err(err) = spool.persist_cursor().await
            {
                tracing::warn!(error = %err, "cannot record replay progress; after a restart the records behind it are replayed again (Redis drops them as duplicates)");
            }
            return IDLE_CHECK;
        }
        let batch = match spool.read_batch(REPLAY_BATCH).await {
            Ok(batch) => batch,
            Err(err) => {
                tracing::error!(error = %err, "cannot read the spool");
                return MAX_BACKOFF;
            }
        };
        if batch.records.is_empty() {
            return APPEND_IN_PROGRESS;
        }
        let round = replay(state, &batch.records).await;
        if let Err(err) = spool.commit(&batch, round.done).await {
            tracing::error!(error = %err, "cannot record replay progress; replay goes on, and after a restart the records behind it are replayed again (Redis drops them as duplicates)");
        }
        if round.done > 0 {
            state
                .metrics()
                .replayed((round.enqueued + round.duplicates) as u64);
            tracing::info!(
                replayed = round.enqueued,
                already_in_redis = round.duplicates,
                quarantined = round.quarantined,
                left = spool.stats().records,
                "replayed spooled webhooks into Redis"
            );
        }
        if round.quarantined > 0 {
            crate::sampler::alert_quarantined(state, round.quarantined).await;
        }
        match round.stopped {
            None => {
                self.backoff = FIRST_BACKOFF;
                Duration::ZERO
            }
            Some(why) => {
                let backoff = self.backoff;
                tracing::warn!(reason = %why, left = spool.stats().records, ?backoff,
                    "spooled webhooks cannot be replayed now; will retry");
                self.backoff = (backoff * 2).min(MAX_BACKOFF);
                backoff
            }
        }
    }
}

/// What one round did with a batch.
#[derive(Debug, Default)]
struct Round {
    /// Records handed over, a prefix of the batch: enqueued, dropped by
    /// Redis as already there, or quarantined.
    done: usize,
    enqueued: usize,
    duplicates: usize,
    quarantined: usize,
    /// Why the round stopped before the end of the batch.
    stopped: Option<String>,
}

async fn replay(state: &AppState, records: &[SpoolRecord]) -> Round {
    let mut round = Round::default();
    while round.done < records.len() {
        let queue_name = &records[round.done].queue;
        let run = records[round.done..]
            .iter()
            .take_while(|r| &r.queue == queue_name)
            .count();
        let queue = match state.queue(queue_name) {
            Ok(queue) => queue,
            Err(err) => {
                let reason = format!("the queue name is not valid: {}", err.message());
                if let Err(stop) = quarantine(state, &records[round.done], &reason).await {
                    round.stopped = Some(stop);
                    return round;
                }
                round.quarantined += 1;
                round.done += 1;
                continue;
            }
        };
        let run = &records[round.done..round.done + run];
        let jobs: Vec<NewJob> = run.iter().map(|record| job(record, &queue)).collect();
        // Send the records up to the first one the queue would refuse.
        let (sendable, refused) = match jobs.iter().position(|j| queue.check(j).is_err()) {
            Some(bad) => (bad, queue.check(&jobs[bad]).err()),
            None => (jobs.len(), None),
        };
        let mut jobs = jobs;
        jobs.truncate(sendable);
        if !jobs.is_empty() {
            match send(&queue, jobs).await {
                Sent::All { duplicates } => {
                    round.done += sendable;
                    round.enqueued += sendable - duplicates;
                    round.duplicates += duplicates;
                }
                Sent::Prefix { error, .. } if error.kind() == ErrorKind::NotReplicated => {
                    // In Redis, but not on the replicas the durability asks
                    // for: a failover may still lose them, so none of the
                    // run counts as done and the spool keeps it all. The
                    // next round sends it again; what did land comes back as
                    // a duplicate.
                    round.stopped = Some(error.to_string());
                    return round;
                }
                Sent::Prefix {
                    written,
                    duplicates,
                    error,
                } => {
                    round.done += written;
                    round.enqueued += written - duplicates;
                    round.duplicates += duplicates;
                    if retry_later(&error) || round.done >= records.len() {
                        round.stopped = Some(error.to_string());
                        return round;
                    }
                    // Refused for good: the first record not taken goes
                    // aside, and the rest are tried again at once.
                    if let Err(stop) =
                        quarantine(state, &records[round.done], &error.to_string()).await
                    {
                        round.stopped = Some(stop);
                        return round;
                    }
                    round.quarantined += 1;
                    round.done += 1;
                    continue;
                }
            }
        }
        if let Some(error) = refused {
            if let Err(stop) = quarantine(state, &records[round.done], &error.to_string()).await {
                round.stopped = Some(stop);
                return round;
            }
            round.quarantined += 1;
            round.done += 1;
        }
    }
    round
}

/// The job a record stands for, with the same identity (and window) as the
/// intake's direct attempt.
fn job(record: &SpoolRecord, queue: &plimsoll::Queue) -> NewJob {
    let job = NewJob::bytes(record.payload.clone());
    match &record.idempotency_key {
        Some(key) => super::identified(job, key, queue),
        None => job,
    }
}

enum Sent {
    All {
        duplicates: usize,
    },
    /// The first `written` records are in Redis (or were there already);
    /// the rest are not, or may be (a later batch of the call can have
    /// landed: their identities make sending them again safe).
    Prefix {
        written: usize,
        duplicates: usize,
        error: plimsoll::Error,
    },
}

async fn send(queue: &Queue, jobs: Vec<NewJob>) -> Sent {
    match queue.enqueue_bulk(jobs).await {
        Ok(done) => Sent::All {
            duplicates: done.iter().filter(|e| e.duplicate).count(),
        },
        Err(err) => {
            let prefix: Vec<_> = err.outcomes.iter().map_while(|o| o.as_ref()).collect();
            Sent::Prefix {
                written: prefix.len(),
                duplicates: prefix.iter().filter(|e| e.duplicate).count(),
                error: err.error,
            }
        }
    }
}

/// Whether a record Redis refused with `err` may be taken later as it is.
/// Besides the kinds the library calls transient, a full Redis (room is
/// made), one shutting down, and one that cannot persist (`MISCONF`, an
/// operator fixes its disk) or lacks replicas (`NOREPLICAS`): these describe
/// Redis, not the record, and quarantining every record while they last
/// would be wrong.
fn retry_later(err: &plimsoll::Error) -> bool {
    err.is_transient()
        || matches!(err.kind(), ErrorKind::OutOfMemory | ErrorKind::ShuttingDown)
        || (err.kind() == ErrorKind::Redis
            && ["MISCONF", "NOREPLICAS"]
                .iter()
                .any(|code| err.message().contains(code)))
}

/// Moves `record` to the quarantine; the error says why replay must stop
/// instead (the quarantine is full or cannot write).
async fn quarantine(state: &AppState, record: &SpoolRecord, reason: &str) -> Result<(), String> {
    let quarantine = state.spool().quarantine().clone();
    let (owned, why) = (record.clone(), reason.to_string());
    let at = SystemClock.now_ms();
    let added = tokio::task::spawn_blocking(move || quarantine.add(&owned, &why, at))
        .await
        .unwrap_or_else(|e| Err(QuarantineError::Io(std::io::Error::other(e.to_string()))));
    match added {
        Ok(fresh) => {
            if fresh {
                state.metrics().quarantined(1);
            }
            tracing::error!(queue = %record.queue, identity = ?record.idempotency_key, reason,
                "Redis refuses a spooled webhook for good; moved it to the quarantine (GET /v1/spool/quarantine) and replaying the rest");
            Ok(())
        }
        Err(err) => {
            tracing::error!(queue = %record.queue, identity = ?record.idempotency_key, reason, error = %err,
                "Redis refuses a spooled webhook for good and it cannot be quarantined; replay waits (nothing is dropped)");
            Err(format!("{err}; the record was refused: {reason}"))
        }
    }
}
