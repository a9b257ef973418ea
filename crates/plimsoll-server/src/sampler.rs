//! The sampler reads the figures the dashboard, the rates and `/metrics`
//! show, every few seconds, so that none of them has to ask Redis while a
//! page renders or Prometheus scrapes.

use std::sync::Arc;

use plimsoll::WorkerHandle;
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

use crate::rates::SAMPLE_INTERVAL;
use crate::state::AppState;

/// Runs until `stop`.
pub async fn run(
    state: AppState,
    push_workers: Arc<Mutex<Vec<(String, WorkerHandle)>>>,
    stop: CancellationToken,
) {
    loop {
        if let Err(err) = sample(&state, &push_workers).await {
            tracing::debug!(error = ?err, "sampling queue figures failed; trying again next round");
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(SAMPLE_INTERVAL) => {}
        }
    }
}

async fn sample(
    state: &AppState,
    push_workers: &Mutex<Vec<(String, WorkerHandle)>>,
) -> Result<(), crate::error::ApiError> {
    if let Ok(memory) = crate::api::redis_memory(state).await {
        state.record_memory(crate::api::now_ms(), memory.used_memory);
    }
    let spool = state.spool().stats();
    let max = state.config().spool_max_bytes;
    state.metrics().update(|s| {
        s.spool_records = spool.records;
        s.spool_bytes = spool.bytes;
        s.spool_max_bytes = max;
    });
    let workers: Vec<_> = push_workers
        .lock()
        .await
        .iter()
        .map(|(q, w)| (q.clone(), w.stats()))
        .collect();
    state
        .metrics()
        .update(|s| s.push_workers = workers.into_iter().collect());
    for name in crate::api::queue_names(state).await? {
        let queue = state.queue(&name)?;
        let counts = queue.counts().await?;
        let memory = queue.memory_bytes().await?;
        state.rates().record(&name, counts.totals.clone());
        state.metrics().update(|s| {
            s.queues.insert(name.clone(), counts);
            s.queue_memory.insert(name.clone(), memory);
        });
    }
    Ok(())
}
