//! The sampler reads the figures the dashboard, the rates and `/metrics`
//! show, every few seconds, so that none of them has to ask Redis while a
//! page renders or Prometheus scrapes.
//!
//! It is a [`Service`] like the library's: one round is one reading, run by
//! [`plimsoll::service::spawn`] every [`SAMPLE_INTERVAL`] until the server's
//! service token fires. A round that fails is logged at debug and the next
//! one comes at the same interval: a Redis that is down is reported by
//! `/readyz` and the guard, and the figures simply stay at their last
//! reading meanwhile.

use std::sync::Arc;
use std::time::Duration;

use plimsoll::service::Service;
use plimsoll::{Clock, SystemClock, WorkerHandle};
use tokio::sync::Mutex;

use crate::rates::SAMPLE_INTERVAL;
use crate::state::AppState;

/// The push workers, by queue, as `run` starts them (some only once Redis
/// answers).
pub type PushWorkers = Arc<Mutex<Vec<(String, WorkerHandle)>>>;

/// Reads the figures every [`SAMPLE_INTERVAL`].
#[derive(Debug)]
pub struct Sampler {
    state: AppState,
    push_workers: PushWorkers,
}

impl Sampler {
    pub fn new(state: AppState, push_workers: PushWorkers) -> Self {
        Self {
            state,
            push_workers,
        }
    }
}

impl Service for Sampler {
    const NAME: &'static str = "sampler";

    async fn run_once(&mut self) -> plimsoll::Result<Duration> {
        // Errors stay here: the service's error backoff is for a round to
        // retry soon, and a sample is as good at the next interval.
        if let Err(err) = sample(&self.state, &self.push_workers).await {
            tracing::debug!(error = ?err, "sampling queue figures failed; trying again next round");
        }
        Ok(SAMPLE_INTERVAL)
    }
}

async fn sample(
    state: &AppState,
    push_workers: &Mutex<Vec<(String, WorkerHandle)>>,
) -> Result<(), crate::error::ApiError> {
    watch_spool(state).await;
    let spool = state.spool().stats();
    let quarantine = state.spool().quarantine().stats();
    let max = state.config().spool_max_bytes;
    let cache = state.cache().stats();
    let config = state.config();
    let pinned = config
        .queues
        .keys()
        .map(|q| q.as_str().to_string())
        .chain(config.hooks.values().map(|h| h.queue.as_str().to_string()))
        .collect();
    state.metrics().update(|s| {
        s.pinned_queues = pinned;
        s.cache = Some(cache);
        s.spool_records = spool.records;
        s.spool_bytes = spool.bytes;
        s.spool_max_bytes = max;
        s.spool_quarantine_records = quarantine.records;
        s.spool_quarantine_bytes = quarantine.bytes;
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
    for name in state.queue_names().await? {
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

/// Raises an alert when the spool passes its warning level, and clears it
/// 10 points below (hysteresis), through the guard's sinks when the guard
/// runs, else to the log.
pub async fn watch_spool(state: &AppState) {
    let view = crate::intake::spool_view::spool_view(state);
    let raised = if view.filling {
        true
    } else if view.fill < state.config().spool_warn_at - 0.1 {
        false
    } else {
        return;
    };
    if !state.set_spool_alert(raised) {
        return;
    }
    let kind = if raised {
        plimsoll::guard::AlertKind::SpoolFilling {
            records: view.records,
        }
    } else {
        plimsoll::guard::AlertKind::SpoolCleared
    };
    let summary = if raised {
        format!(
            "The webhook spool is {:.0}% full ({} webhooks waiting for Redis); past its bound webhooks get 503",
            view.fill * 100.0,
            view.records
        )
    } else {
        format!(
            "The webhook spool is back under its warning level ({:.0}% full)",
            view.fill * 100.0
        )
    };
    let severity = if raised {
        plimsoll::guard::Severity::Critical
    } else {
        plimsoll::guard::Severity::Info
    };
    raise_spool_alert(state, severity, kind, summary, view.bytes, view.max_bytes).await;
}

/// Raises an alert about spooled webhooks that were moved to the
/// quarantine: each one is a webhook that was answered 202 and will not
/// reach its queue until an operator acts.
pub async fn alert_quarantined(state: &AppState, moved: usize) {
    let stats = state.spool().quarantine().stats();
    let summary = format!(
        "{moved} spooled webhook(s) were refused by Redis for good and moved to the quarantine,          which holds {} of at most {}; see GET /v1/spool/quarantine, then retry or purge them",
        stats.records, stats.max_records
    );
    raise_spool_alert(
        state,
        plimsoll::guard::Severity::Warning,
        plimsoll::guard::AlertKind::SpoolQuarantined {
            records: stats.records,
        },
        summary,
        stats.bytes,
        stats.max_bytes,
    )
    .await;
}

/// Sends an alert about the spool through the guard's sinks when the guard
/// runs, else to the log.
async fn raise_spool_alert(
    state: &AppState,
    severity: plimsoll::guard::Severity,
    kind: plimsoll::guard::AlertKind,
    summary: String,
    used: u64,
    limit: u64,
) {
    let ratio = if limit == 0 {
        0.0
    } else {
        used as f64 / limit as f64
    };
    let alert = plimsoll::guard::Alert {
        severity,
        kind,
        node: format!("spool:{}", state.spool().dir().display()),
        at_ms: SystemClock.now_ms(),
        summary,
        used_bytes: used,
        limit_bytes: limit,
        limit_source: plimsoll::guard::LimitSource::Configured,
        used_ratio: ratio,
        maxmemory_bytes: limit,
        total_used_bytes: used,
        total_limit_bytes: limit,
        forecast: None,
        forecast_pending: None,
        top_growing: Vec::new(),
    };
    match state.guard() {
        Some(guard) => {
            guard.raise(alert).await;
        }
        None if severity > plimsoll::guard::Severity::Info => {
            tracing::error!(summary = %alert.summary, "webhook spool alert");
        }
        None => tracing::info!(summary = %alert.summary, "webhook spool alert cleared"),
    }
}
