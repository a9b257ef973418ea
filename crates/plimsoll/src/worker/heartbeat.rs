//! The heartbeat renews the leases of a worker's jobs, one script call for
//! all of them, every third of the lease.
//!
//! A job whose handler has run past its timeout plus the stuck grace is not
//! renewed: the handler is presumably blocked beyond the reach of its timeout
//! (a blocking call that never yields), so the lease is left to lapse and the
//! rescuer gives the job to another worker. The worker's score in the
//! `workers` set is the earliest of its lease deadlines, so that the rescuer
//! finds it when that lease lapses.
//!
//! The reply names jobs whose lease is gone (cancelled through the API, or
//! rescued while this worker was cut off): their handlers are told to stop,
//! and jobs not yet started are dropped from the worker's hand.

use std::sync::Arc;
use std::time::Duration;

use super::Shared;
use super::services::Service;
use crate::clock::ms;
use crate::error::Result;
use crate::queue::scripts::SCRIPTS;

pub(super) struct Heartbeat {
    shared: Arc<Shared>,
}

impl Heartbeat {
    pub(super) fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }
}

impl Service for Heartbeat {
    const NAME: &'static str = "heartbeat";

    async fn run_once(&mut self) -> Result<Duration> {
        let shared = &self.shared;
        let interval = shared.config.lease / 3;
        let now = shared.now_ms();
        let deadline = now + ms(shared.config.lease);
        let mut score = deadline;
        let mut renew: Vec<u64> = Vec::new();
        {
            let leases = shared.leases();
            for (id, lease) in leases.iter() {
                let stuck = lease
                    .started
                    .is_some_and(|t| t.elapsed() > lease.timeout + shared.config.stuck_grace);
                if stuck {
                    score = score.min(lease.deadline_ms);
                } else {
                    renew.push(*id);
                }
            }
        }
        let keys = shared.queue.keys();
        let mut invocation = SCRIPTS.heartbeat.prepare_invoke();
        invocation
            .key(keys.workers())
            .key(&shared.active_key)
            .arg(&shared.id)
            .arg(score);
        for id in &renew {
            invocation.arg(id).arg(deadline);
        }
        let lost: Vec<u64> = invocation
            .invoke_async(&mut shared.queue.redis().clone())
            .await?;

        let mut leases = shared.leases();
        for id in &renew {
            if let Some(lease) = leases.get_mut(id) {
                lease.deadline_ms = deadline;
            }
        }
        for id in &lost {
            match leases.get(id).map(|l| l.cancel.clone()) {
                // Running: tell the handler; its outcome will be dropped.
                Some(Some(cancel)) => cancel.cancel(),
                // Not started: it is no longer ours to run.
                Some(None) => {
                    leases.remove(id);
                }
                None => {}
            }
        }
        if !lost.is_empty() {
            tracing::info!(worker = %shared.id, jobs = ?lost, "leases gone (cancelled or rescued); stopping those jobs");
        }
        Ok(interval)
    }
}
