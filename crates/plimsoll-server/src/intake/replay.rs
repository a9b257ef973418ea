//! The replayer: hands spooled webhooks to Redis, in the order they were
//! accepted, once Redis takes writes again.
//!
//! It reads a batch from the spool's cursor, enqueues each run of records for
//! one queue with one bulk call (their delivery ids as idempotency keys, so a
//! record enqueued twice — a crash between enqueue and commit — is dropped
//! the second time), and commits the cursor after every run that Redis
//! took. When Redis refuses, it waits and tries the same records again.

use std::time::Duration;

use plimsoll::NewJob;
use tokio_util::sync::CancellationToken;

use crate::state::AppState;

/// Records read per round.
pub const REPLAY_BATCH: usize = 1000;
/// Wait after Redis refused, doubling up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How often an empty spool is looked at even without a wake-up.
const IDLE_CHECK: Duration = Duration::from_secs(1);

/// Runs until `stop`.
pub async fn run(state: AppState, stop: CancellationToken) {
    let spool = state.spool().clone();
    let mut backoff = FIRST_BACKOFF;
    loop {
        if spool.is_empty() {
            tokio::select! {
                () = stop.cancelled() => return,
                () = spool.appended() => {}
                () = tokio::time::sleep(IDLE_CHECK) => {}
            }
            continue;
        }
        let batch = match spool.read_batch(REPLAY_BATCH).await {
            Ok(batch) => batch,
            Err(err) => {
                tracing::error!(error = %err, "cannot read the spool");
                if sleep_or_stop(&stop, MAX_BACKOFF).await {
                    return;
                }
                continue;
            }
        };
        if batch.records.is_empty() {
            // Counted but not yet readable: an append is being written.
            if sleep_or_stop(&stop, Duration::from_millis(20)).await {
                return;
            }
            continue;
        }
        let mut done = 0;
        let mut refused = None;
        while done < batch.records.len() {
            let queue_name = &batch.records[done].queue;
            let run = batch.records[done..]
                .iter()
                .take_while(|r| &r.queue == queue_name)
                .count();
            let queue = match state.queue(queue_name) {
                Ok(queue) => queue,
                Err(err) => {
                    tracing::error!(queue = %queue_name, error = ?err, "spooled webhooks name a bad queue; dropping them");
                    done += run;
                    continue;
                }
            };
            let jobs: Vec<NewJob> = batch.records[done..done + run]
                .iter()
                .map(|r| {
                    let job = NewJob::bytes(r.payload.clone());
                    match &r.idempotency_key {
                        Some(key) => job.idempotency_key(key.clone()),
                        None => job,
                    }
                })
                .collect();
            match queue.enqueue_bulk(jobs).await {
                Ok(_) => done += run,
                Err(err) => {
                    // Batches are atomic: what was written is a prefix.
                    done += err.outcomes.iter().take_while(|o| o.is_some()).count();
                    refused = Some(err.error);
                    break;
                }
            }
        }
        if let Err(err) = spool.commit(&batch, done).await {
            tracing::error!(error = %err, "cannot record replay progress; records may be enqueued twice (duplicates with a delivery id are dropped)");
        }
        if done > 0 {
            state.metrics().replayed(done as u64);
            tracing::info!(
                replayed = done,
                left = spool.stats().records,
                "replayed spooled webhooks into Redis"
            );
        }
        match refused {
            None => backoff = FIRST_BACKOFF,
            Some(err) => {
                tracing::warn!(error = %err, left = spool.stats().records, ?backoff,
                    "Redis still refuses spooled webhooks; will retry");
                if sleep_or_stop(&stop, backoff).await {
                    return;
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

/// Sleeps; returns true when told to stop first.
async fn sleep_or_stop(stop: &CancellationToken, wait: Duration) -> bool {
    tokio::select! {
        () = stop.cancelled() => true,
        () = tokio::time::sleep(wait) => false,
    }
}
