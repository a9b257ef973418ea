//! The heartbeat renews the leases of a worker's jobs, one script call for
//! all of them, every third of the lease; the lease watch gives up leases
//! that could not be renewed in time.
//!
//! A job whose handler has run past its timeout plus the stuck grace is not
//! renewed: the handler is presumably blocked beyond the reach of its timeout
//! (a blocking call that never yields), so the lease is left to lapse and the
//! rescuer gives the job to another worker. The worker's score in the
//! `workers` set is computed by the script as the earliest deadline in the
//! worker's whole `active` hash, so the rescuer also finds leases this
//! worker does not know of: taken by a fetch whose reply was lost, or by an
//! earlier process that had the same worker id.
//!
//! The reply names leases that are gone (cancelled through the API, or
//! rescued while this worker was cut off): their handlers are told to stop,
//! and jobs not yet started are dropped from the worker's hand. It also
//! carries Redis' `TIME`, which keeps the worker's clock on Redis' time
//! without a call of its own (see [`crate::clock`]).
//!
//! The lease watch runs beside it on the monotonic clock, so that it works
//! while a heartbeat hangs on a Redis that does not answer: a lease not
//! renewed for five sixths of its length (two renewals missed) is given up
//! before its deadline passes — the handler is told to stop, a job not
//! started is dropped. The rescuer may hand such a job to another worker
//! after the deadline; this one has stopped by then (unless its handler
//! ignores the signal), and whatever outcome it still writes is dropped
//! unless the lease is still its own.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::Shared;
use super::lease::LeaseKey;
use crate::clock::ms;
use crate::error::Result;
use crate::queue::scripts::calls;
use crate::service::Service;

// Every lease a worker holds fits in one heartbeat: `heartbeat.lua` refuses
// more, and a lease left out would lapse while the worker thinks it renewed.
const _: () = assert!(super::MAX_IN_HAND <= calls::HEARTBEAT_MAX_LEASES);

/// Of a lease, the part after its last renewal at which an unrenewed lease
/// is given up: its handler then has the rest (a sixth: 5 s of the default
/// 30 s lease) to stop before the rescuer may give the job away. The
/// heartbeat renews every third, so two renewals were missed by then.
const GIVE_UP_AFTER: (u32, u32) = (5, 6);
/// The lease watch looks at least this often.
const WATCH_FLOOR: Duration = Duration::from_millis(5);

pub(super) struct Heartbeat {
    shared: Arc<Shared>,
    /// Whether the queue's retention rules were recorded yet.
    recorded: bool,
}

impl Heartbeat {
    pub(super) fn new(shared: Arc<Shared>) -> Self {
        Self {
            shared,
            recorded: false,
        }
    }
}

impl Service for Heartbeat {
    const NAME: &'static str = "heartbeat";

    async fn run_once(&mut self) -> Result<Duration> {
        let shared = &self.shared;
        let queue = &shared.queue;
        queue.ensure_clock().await?;
        let interval = shared.config.lease / 3;
        let renew: Vec<LeaseKey> = shared
            .leases()
            .iter()
            .filter(|(_, lease)| {
                // Not stuck: not started, or within timeout plus grace.
                lease
                    .started
                    .is_none_or(|t| t.elapsed() <= lease.timeout + shared.config.stuck_grace)
            })
            .map(|(key, _)| *key)
            .collect();
        let keys = queue.keys();
        let deadline = shared.now_ms() + ms(shared.config.lease);
        let mut call = calls::heartbeat(keys, &shared.active_key, &shared.id, deadline);
        for key in &renew {
            call.arg(key.id).arg(key.token);
        }
        let sent_at = Instant::now();
        let sent_ms = queue.base_now_ms();
        let (lost, _score, time): (Vec<u64>, u64, (u64, u64)) = call.invoke(queue.redis()).await?;
        queue.observe_redis_time(sent_ms, time, queue.base_now_ms());
        let lost: Vec<LeaseKey> = lost
            .chunks_exact(2)
            .map(|pair| LeaseKey {
                id: pair[0],
                token: pair[1],
            })
            .collect();

        {
            let mut leases = shared.leases();
            for key in &renew {
                if let Some(lease) = leases.get_mut(key) {
                    lease.renewed_at = sent_at;
                }
            }
            for key in &lost {
                let started = leases.get(key).map(|l| l.started.is_some());
                match started {
                    // Running: tell the handler; its outcome will be dropped.
                    Some(true) => leases[key].cancel.cancel(),
                    // Not started: it is no longer ours to run.
                    Some(false) => {
                        leases.remove(key);
                    }
                    None => {}
                }
            }
        }
        if !lost.is_empty() {
            tracing::info!(worker = %shared.id, jobs = ?lost.iter().map(|k| k.id).collect::<Vec<_>>(),
                "leases gone (cancelled or rescued); stopping those jobs");
        }
        if !self.recorded {
            match queue.record_retention().await {
                Ok(()) => self.recorded = true,
                Err(err) => tracing::debug!(worker = %shared.id, error = %err,
                    "could not record the queue's retention rules; will try again"),
            }
        }
        Ok(interval)
    }
}

/// Gives up leases that could not be renewed in time (see the module docs).
pub(super) struct LeaseWatch {
    shared: Arc<Shared>,
}

impl LeaseWatch {
    pub(super) fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }
}

impl Service for LeaseWatch {
    const NAME: &'static str = "lease watch";

    async fn run_once(&mut self) -> Result<Duration> {
        let shared = &self.shared;
        let (part, whole) = GIVE_UP_AFTER;
        let give_up_after = shared.config.lease * part / whole;
        let now = Instant::now();
        let mut next = shared.config.lease / 3;
        let mut stopped = Vec::new();
        let mut dropped = Vec::new();
        shared.leases().retain(|key, lease| {
            let due = lease.renewed_at + give_up_after;
            if due > now {
                next = next.min(due - now);
                return true;
            }
            if lease.started.is_none() {
                dropped.push(key.id);
                return false;
            }
            if !lease.cancel.is_cancelled() {
                lease.cancel.cancel();
                stopped.push(key.id);
            }
            true
        });
        if !stopped.is_empty() || !dropped.is_empty() {
            shared
                .counters
                .unrenewed
                .fetch_add((stopped.len() + dropped.len()) as u64, Ordering::Relaxed);
            tracing::warn!(worker = %shared.id, stopped = ?stopped, dropped = ?dropped,
                lease = ?shared.config.lease,
                "leases could not be renewed in time; told their handlers to stop and dropped jobs not started");
        }
        Ok(next.max(WATCH_FLOOR))
    }
}
