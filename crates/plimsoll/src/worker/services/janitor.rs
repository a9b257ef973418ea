//! The janitor trims the completed and dead sets to their retention bounds.
//!
//! The transitions that add to those sets trim them in the same script, but
//! only a timer can apply an age bound to a queue nobody touches: that is
//! this service. Each round is one [`Queue::trim_retained`]: at most `budget`
//! jobs per set per call, a few calls while there is more.

use std::time::Duration;

use crate::error::{Error, Result};
use crate::queue::Queue;
use crate::service::Service;

/// Time between rounds.
pub const DEFAULT_JANITOR_INTERVAL: Duration = Duration::from_secs(30);
/// Jobs removed per set per script call.
pub const DEFAULT_JANITOR_BUDGET: usize = 1000;

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
}

impl Service for Janitor {
    const NAME: &'static str = "janitor";

    async fn run_once(&mut self) -> Result<Duration> {
        self.queue.trim_retained(self.config.budget).await?;
        Ok(self.config.interval)
    }
}
