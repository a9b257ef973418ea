//! The rescuer gives jobs whose lease expired to other workers.
//!
//! A worker's score in the `workers` set is the earliest lease deadline in
//! its `active` hash (the heartbeat computes it there, over every lease the
//! hash holds), so one range query finds the workers to look at: crashed
//! ones (no heartbeat), live ones holding a stuck job (a handler past its
//! timeout plus grace, which the heartbeat stopped renewing), and live ones
//! holding leases they do not know of (a fetch whose reply was lost, an
//! earlier process with the same worker id). Deadlines and "now" are on
//! Redis' time (see [`crate::clock`]), so a rescuer on a machine whose clock
//! is ahead does not rescue live leases. `rescue.lua` then moves each
//! expired job back to the front of its waiting list, counting the lost run
//! as an attempt, or to the dead set when attempts are used up.

use std::time::Duration;

use crate::error::{Error, Result};
use crate::queue::Queue;
use crate::queue::scripts::calls;
use crate::service::Service;

/// How often the rescuer looks for expired leases. A crashed worker's job
/// runs again at most the lease plus this long after the crash.
pub const DEFAULT_RESCUE_INTERVAL: Duration = Duration::from_secs(5);
/// Workers looked at per round.
const WORKERS_PER_ROUND: usize = 100;

/// Rescuer settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RescuerConfig {
    /// Time between rounds.
    pub interval: Duration,
}

impl Default for RescuerConfig {
    fn default() -> Self {
        Self {
            interval: DEFAULT_RESCUE_INTERVAL,
        }
    }
}

impl RescuerConfig {
    pub(crate) fn validate(&self) -> Result<()> {
        if self.interval < Duration::from_millis(10) {
            return Err(Error::invalid(format!(
                "rescuer interval {:?} must be at least 10 ms",
                self.interval
            )));
        }
        Ok(())
    }
}

pub(crate) struct Rescuer {
    queue: Queue,
    config: RescuerConfig,
}

impl Rescuer {
    pub(crate) fn new(queue: Queue, config: RescuerConfig) -> Self {
        Self { queue, config }
    }

    /// Rescues the expired leases of every worker due for a look. Returns
    /// (rescued, dead, workers looked at).
    pub(crate) async fn rescue(queue: &Queue) -> Result<(u64, u64, usize)> {
        // A clock minutes ahead would find every live lease expired.
        queue.ensure_clock().await?;
        let keys = queue.keys();
        let now = queue.now_ms();
        let mut redis = queue.redis().clone();
        let due: Vec<String> = redis::cmd("ZRANGEBYSCORE")
            .arg(keys.workers())
            .arg("-inf")
            .arg(format!("({now}"))
            .arg("LIMIT")
            .arg(0)
            .arg(WORKERS_PER_ROUND)
            .query_async(&mut redis)
            .await
            .map_err(Error::from)?;
        let dead_bounds = queue.config().retention.dead_args();
        let (mut rescued, mut dead) = (0, 0);
        for worker in &due {
            let (r, d): (u64, u64) = calls::rescue(keys, worker, now, &dead_bounds)
                .invoke(queue.redis())
                .await?;
            if r + d > 0 {
                tracing::warn!(queue = %queue.name(), worker = %worker, rescued = r, dead = d,
                    "rescued jobs whose lease expired");
            }
            rescued += r;
            dead += d;
        }
        Ok((rescued, dead, due.len()))
    }
}

impl Service for Rescuer {
    const NAME: &'static str = "rescuer";

    async fn run_once(&mut self) -> Result<Duration> {
        let (_, _, looked_at) = Self::rescue(&self.queue).await?;
        Ok(if looked_at >= WORKERS_PER_ROUND {
            Duration::ZERO
        } else {
            self.config.interval
        })
    }
}
