//! The report service: a memory report per key family every `interval`,
//! so that alerts can name what grows and leaks are found between alerts.
//!
//! A report walks the whole keyspace within the command budget
//! ([`AttributeConfig::budget`](super::AttributeConfig)), so it runs far
//! less often than the watch: every 15 minutes by default, which for a
//! leak that takes days to fill Redis gives hundreds of reports to spot it
//! in. (redis_exporter's key-group scan, the usual alternative, walks on
//! every scrape.)
//!
//! The first report runs at start, and a level, leeway or out-of-memory
//! alert wakes the service at once (`Guard::dispatch`), so that a fast leak
//! is named within one walk of the alert instead of at the next interval.

use std::time::Duration;

use super::Guard;
use crate::error::Result;
use crate::service::Service;

/// Time between memory reports.
pub const DEFAULT_ATTRIBUTE_INTERVAL: Duration = Duration::from_secs(15 * 60);

pub(crate) struct Refresh {
    guard: Guard,
}

impl Refresh {
    pub(crate) fn new(guard: Guard) -> Self {
        Self { guard }
    }
}

impl Service for Refresh {
    const NAME: &'static str = "guard-refresh";

    async fn run_once(&mut self) -> Result<Duration> {
        self.guard.attribute_once().await?;
        Ok(self
            .guard
            .attribute_interval()
            .unwrap_or(DEFAULT_ATTRIBUTE_INTERVAL))
    }

    /// A notification sent during a round starts the next one at once.
    async fn woken(&self) {
        self.guard.inner.report_wanted.notified().await
    }
}
