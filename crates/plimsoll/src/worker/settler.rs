//! The settler writes handler outcomes back to Redis in batches.
//!
//! Outcomes arrive on a channel; whatever arrived while the previous batch
//! was on its way forms the next one, so under load a batch is hundreds of
//! jobs and one round trip, and when idle a single outcome goes out at once.
//! Completions, failures and cancels of one batch go out as separate scripts
//! sent together (pipelined on the shared connection).
//!
//! Each outcome names its lease (job id and fencing token); the scripts
//! write it only while the worker still holds that lease, and report the
//! rest as lost (the job was rescued, and perhaps leased again, or
//! cancelled). A lease is released (removed from the worker's map) only
//! once its outcome is written or found lost. If Redis is unreachable the batch is kept and retried with
//! backoff; if the worker dies first, the leases expire and the jobs run
//! again: at-least-once, never lost.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use futures::future::join_all;
use redis::Value;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::Shared;
use super::lease::{LeaseKey, lease_groups};
use crate::error::{Error, Result};
use crate::queue::scripts::calls;
use crate::service::error_backoff;

/// The most outcomes one flush writes (in script calls of up to 1,000 ids, 100 failures).
const MAX_FLUSH: usize = 5_000;
/// Ids per `complete.lua` call: as many as it takes.
const PER_CALL: usize = calls::COMPLETE_MAX_IDS;
/// Failures per script call: each rewrites its record (attempts, last
/// error) and schedules a retry — five Redis calls from Lua, 13 µs of Redis
/// time on a fast machine and 56 µs on a slow shared one (slow logs of
/// W5 soaks) — so calls of 1,000 blocked Redis for 10–38 ms, and calls of
/// 250 still for 14 ms on the slow machine: long enough for every other
/// client to notice, and each call over Redis' 10 ms slow-log threshold
/// leaves ≈ 5 KB in `used_memory`. 100 keep a call under 6 ms there.
const FAILS_PER_CALL: usize = 100;
const _: () = assert!(FAILS_PER_CALL <= calls::FAIL_MAX_JOBS);
/// How often the final flush at shutdown is tried before the settler gives
/// up (the leases then expire and the jobs run again).
const FINAL_FLUSH_ATTEMPTS: u32 = 5;

/// An outcome to write, for one lease.
#[derive(Debug)]
pub(super) enum Settle {
    Complete(LeaseKey),
    /// `retry_at` in ms; -1 sends the job to the dead set.
    Fail {
        key: LeaseKey,
        retry_at: i64,
        error: String,
    },
    Cancel {
        key: LeaseKey,
        reason: String,
    },
}

#[derive(Debug, Default)]
struct Batch {
    complete: Vec<LeaseKey>,
    fail: Vec<(LeaseKey, i64, String)>,
    cancel: Vec<(LeaseKey, String)>,
}

impl Batch {
    fn len(&self) -> usize {
        self.complete.len() + self.fail.len() + self.cancel.len()
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn push(&mut self, settle: Settle) {
        match settle {
            Settle::Complete(key) => self.complete.push(key),
            Settle::Fail {
                key,
                retry_at,
                error,
            } => self.fail.push((key, retry_at, error)),
            Settle::Cancel { key, reason } => self.cancel.push((key, reason)),
        }
    }
}

/// Runs until `stop`, then writes what is left and returns.
pub(super) async fn run(
    shared: Arc<Shared>,
    mut rx: mpsc::UnboundedReceiver<Settle>,
    stop: CancellationToken,
) {
    let mut batch = Batch::default();
    let mut failures = 0u32;
    loop {
        if batch.is_empty() {
            tokio::select! {
                biased;
                message = rx.recv() => match message {
                    Some(message) => batch.push(message),
                    None => break,
                },
                () = stop.cancelled() => break,
            }
        }
        while batch.len() < MAX_FLUSH {
            match rx.try_recv() {
                Ok(message) => batch.push(message),
                Err(_) => break,
            }
        }
        if flush(&shared, &mut batch).await.is_ok() {
            failures = 0;
            continue;
        }
        failures += 1;
        tokio::select! {
            () = tokio::time::sleep(error_backoff(failures)) => {}
            () = stop.cancelled() => break,
        }
    }

    // Final flush: everything that arrived, a few tries.
    while let Ok(message) = rx.try_recv() {
        batch.push(message);
    }
    for attempt in 1..=FINAL_FLUSH_ATTEMPTS {
        if batch.is_empty() || flush(&shared, &mut batch).await.is_ok() {
            return;
        }
        tokio::time::sleep(error_backoff(attempt)).await;
    }
    tracing::error!(
        worker = %shared.id,
        outcomes = batch.len(),
        "could not write outcomes before stopping; those jobs run again when their leases expire"
    );
}

/// Writes a batch; what fails stays in `batch` for the next try.
async fn flush(shared: &Shared, batch: &mut Batch) -> Result<()> {
    let mut taken = std::mem::take(batch);
    // Grouped by token, completions cost one argument per job and two per
    // fetch they came from.
    taken.complete.sort_unstable_by_key(|k| k.token);
    let now = shared.now_ms();
    let retention = shared.queue.config().retention;
    let keys = shared.queue.keys();

    let completes = taken.complete.chunks(PER_CALL).map(|leases| {
        let mut call = calls::complete(keys, &shared.active_key, now, &retention.completed_args());
        lease_groups(&mut call, leases);
        let redis = shared.queue.redis();
        async move {
            let lost: Result<Vec<u64>> = call.invoke(redis).await;
            (leases, lost)
        }
    });
    let fails = taken.fail.chunks(FAILS_PER_CALL).map(|jobs| {
        let mut call = calls::fail(keys, &shared.active_key, now, &retention.dead_args());
        for (key, retry_at, error) in jobs {
            call.arg(key.id)
                .arg(key.token)
                .arg(retry_at)
                .arg(truncate_error(error));
        }
        let redis = shared.queue.redis();
        async move {
            let reply: Result<Vec<Value>> = call.invoke(redis).await;
            (jobs, reply)
        }
    });
    let cancels = taken.cancel.iter().map(|(key, reason)| {
        // Only this run's own lease: a stale run must not delete a job that
        // was rescued and is waiting, or leased, again.
        let mut call = calls::cancel(keys, [shared.active_key.clone()], key.id);
        call.arg(key.token);
        let redis = shared.queue.redis();
        async move {
            let state: Result<String> = call.invoke(redis).await;
            (*key, reason, state)
        }
    });
    let (completes, fails, cancels) =
        tokio::join!(join_all(completes), join_all(fails), join_all(cancels));

    let mut settled: Vec<LeaseKey> = Vec::with_capacity(taken.len());
    let mut first_error: Option<Error> = None;
    let counters = &shared.counters;
    for (leases, result) in completes {
        match result {
            Ok(lost) => {
                counters
                    .completed
                    .fetch_add((leases.len() - lost.len()) as u64, Ordering::Relaxed);
                note_lost(shared, &lost);
                settled.extend_from_slice(leases);
            }
            Err(err) => {
                batch.complete.extend_from_slice(leases);
                first_error.get_or_insert(err);
            }
        }
    }
    for (jobs, result) in fails {
        match result.and_then(parse_fail_reply) {
            Ok((retried, dead, lost)) => {
                counters.retried.fetch_add(retried, Ordering::Relaxed);
                counters.dead.fetch_add(dead, Ordering::Relaxed);
                note_lost(shared, &lost);
                settled.extend(jobs.iter().map(|(key, _, _)| *key));
            }
            Err(err) => {
                batch.fail.extend_from_slice(jobs);
                first_error.get_or_insert(err);
            }
        }
    }
    for (key, reason, result) in cancels {
        match result {
            Ok(state) if state == "active" => {
                counters.cancelled.fetch_add(1, Ordering::Relaxed);
                tracing::info!(worker = %shared.id, job = key.id, %reason, "job cancelled by its handler");
                settled.push(key);
            }
            Ok(_) => {
                note_lost(shared, &[key.id]);
                settled.push(key);
            }
            Err(err) => {
                batch.cancel.push((key, reason.clone()));
                first_error.get_or_insert(err);
            }
        }
    }

    {
        let mut leases = shared.leases();
        for key in &settled {
            leases.remove(key);
        }
    }
    shared.settled.notify_one();
    match first_error {
        None => Ok(()),
        Some(err) => {
            tracing::warn!(worker = %shared.id, error = %err, pending = batch.len(),
                "could not write job outcomes; will retry");
            Err(err)
        }
    }
}

fn parse_fail_reply(reply: Vec<Value>) -> Result<(u64, u64, Vec<u64>)> {
    let mut values = reply.into_iter();
    let retried: u64 = redis::from_redis_value(values.next().unwrap_or(Value::Nil))?;
    let dead: u64 = redis::from_redis_value(values.next().unwrap_or(Value::Nil))?;
    let lost = values
        .map(redis::from_redis_value::<u64>)
        .collect::<std::result::Result<Vec<_>, _>>()?;
    Ok((retried, dead, lost))
}

fn note_lost(shared: &Shared, lost: &[u64]) {
    if lost.is_empty() {
        return;
    }
    shared
        .counters
        .lost
        .fetch_add(lost.len() as u64, Ordering::Relaxed);
    tracing::warn!(
        worker = %shared.id,
        jobs = ?lost,
        "outcome dropped: the lease was gone (the job was cancelled, or rescued after the lease expired)"
    );
}

/// The longest error text kept with a job.
pub(crate) const MAX_ERROR_LEN: usize = 1024;

/// Cuts an error message to [`MAX_ERROR_LEN`] bytes at a character boundary.
fn truncate_error(error: &str) -> &str {
    if error.len() <= MAX_ERROR_LEN {
        return error;
    }
    let mut end = MAX_ERROR_LEN;
    while !error.is_char_boundary(end) {
        end -= 1;
    }
    &error[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_errors_are_cut_at_a_character_boundary() {
        let error = "é".repeat(MAX_ERROR_LEN);
        let cut = truncate_error(&error);
        assert!(cut.len() <= MAX_ERROR_LEN);
        assert!(cut.chars().all(|c| c == 'é'));
        assert_eq!(truncate_error("short"), "short");
    }
}
