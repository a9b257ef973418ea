//! The watch service: reads every primary, updates the forecast and sends
//! the alerts that are due, every `interval`.
//!
//! One round is [`Guard::sample_once`]: a handful of `INFO` calls, so the
//! default interval can be short. When Redis cannot be read the round
//! still ends normally, with an "unreachable" alert (deduplicated), so the
//! service keeps its pace and recovers by itself once Redis answers.

use std::time::Duration;

use super::Guard;
use crate::error::Result;
use crate::service::Service;

/// Time between readings. At 10 s, a day of history is 8,640 readings.
pub const DEFAULT_SAMPLE_INTERVAL: Duration = Duration::from_secs(10);

pub(crate) struct Watch {
    guard: Guard,
}

impl Watch {
    pub(crate) fn new(guard: Guard) -> Self {
        Self { guard }
    }
}

impl Service for Watch {
    const NAME: &'static str = "guard-watch";

    async fn run_once(&mut self) -> Result<Duration> {
        self.guard.sample_once().await?;
        Ok(self.guard.interval())
    }
}
