//! The janitor trims the completed and dead sets to their retention bounds.
//!
//! The transitions that add to those sets trim them in the same script, but
//! only a timer can apply an age bound to a queue nobody touches: that is
//! this service. Each round removes at most `budget` jobs per set per call,
//! and repeats a few times while there is more, so that a large backlog is
//! worked off without holding Redis for long.

use std::time::Duration;

use super::Service;
use crate::error::{Error, Result};
use crate::queue::Queue;
use crate::queue::scripts::SCRIPTS;

/// Time between rounds.
pub const DEFAULT_JANITOR_INTERVAL: Duration = Duration::from_secs(30);
/// Jobs removed per set per script call.
pub const DEFAULT_JANITOR_BUDGET: usize = 1000;
/// Script calls per round at most, when there is a backlog.
const CALLS_PER_ROUND: usize = 20;

/// Janitor settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JanitorConfig {
    /// Time between rounds.
    pub interval: Duration,
    /// Jobs removed per set per script call (1 to 10,000).
    pub budget: usize,
}

impl Default for JanitorConfig {
    fn default() -> Self {
        Self {
            interval: DEFAULT_JANITOR_INTERVAL,
            budget: DEFAULT_JANITOR_BUDGET,
        }
    }
}

impl JanitorConfig {
    pub(crate) fn validate(&self) -> Result<()> {
        if self.interval < Duration::from_millis(10) || !(1..=10_000).contains(&self.budget) {
            return Err(Error::invalid(format!(
                "janitor interval {:?} must be at least 10 ms and budget {} 1 to 10000",
                self.interval, self.budget
            )));
        }
        Ok(())
    }
}

pub(crate) struct Janitor {
    queue: Queue,
    config: JanitorConfig,
}

impl Janitor {
    pub(crate) fn new(queue: Queue, config: JanitorConfig) -> Self {
        Self { queue, config }
    }

    /// One round: trims both sets until within bounds or the round's calls
    /// are spent. Returns (completed removed, dead removed).
    pub(crate) async fn trim(queue: &Queue, budget: usize) -> Result<(u64, u64)> {
        queue.ensure_clock().await?;
        let keys = queue.keys();
        let retention = queue.config().retention;
        let mut redis = queue.redis().clone();
        let (mut completed, mut dead) = (0, 0);
        for _ in 0..CALLS_PER_ROUND {
            let mut invocation = SCRIPTS.trim.prepare_invoke();
            invocation
                .key(keys.completed())
                .key(keys.dead())
                .key(keys.jobs())
                .key(keys.stats())
                .arg(queue.now_ms())
                .arg(&retention.completed_args()[..])
                .arg(&retention.dead_args()[..])
                .arg(budget);
            let (c, d): (u64, u64) = invocation.invoke_async(&mut redis).await?;
            completed += c;
            dead += d;
            if (c as usize) < budget && (d as usize) < budget {
                break;
            }
        }
        if completed + dead > 0 {
            tracing::debug!(queue = %queue.name(), completed, dead, "janitor trimmed retained jobs");
        }
        Ok((completed, dead))
    }
}

impl Service for Janitor {
    const NAME: &'static str = "janitor";

    async fn run_once(&mut self) -> Result<Duration> {
        Self::trim(&self.queue, self.config.budget).await?;
        Ok(self.config.interval)
    }
}
