//! A worker's settings, their defaults and their checks, validated once
//! when the worker starts.

use std::time::Duration;

use super::{Backoff, JanitorConfig, PromoterConfig, RescuerConfig};
use crate::error::{Error, Result};

/// Handlers running at once, by default.
pub const DEFAULT_CONCURRENCY: usize = 10;
/// The most handlers one worker runs at once.
pub const MAX_CONCURRENCY: usize = 5_000;
/// Leased jobs kept in hand beyond `concurrency`, by default as many again:
/// a handler that finishes finds its next job without a round trip.
pub const DEFAULT_PREFETCH_FACTOR: usize = 1;
/// The most jobs one worker may hold leased (the scripts' bound too).
pub const MAX_IN_HAND: usize = 10_000;
/// How long a lease lasts without a heartbeat. A crashed worker's jobs run
/// again after at most this long (plus the rescuer's interval).
pub const DEFAULT_LEASE: Duration = Duration::from_secs(30);
/// How often an idle worker asks for work even without a wake-up.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(1);
/// How long shutdown waits for running handlers.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(30);
/// How long past its timeout a handler may run before its lease is left to
/// lapse and the job is given to another worker.
pub const DEFAULT_STUCK_GRACE: Duration = Duration::from_secs(60);
/// The last moment given to signalled handlers at shutdown, and again to
/// aborted ones.
pub const HARD_STOP_SLACK: Duration = Duration::from_secs(1);
/// Settings of a worker; see [`WorkerBuilder`].
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Handlers running at once.
    pub concurrency: usize,
    /// Leased jobs kept in hand beyond `concurrency`.
    pub prefetch: usize,
    /// Lease length; heartbeats run every third of it, and a lease not
    /// renewed for five sixths of it is given up (its handler told to stop).
    pub lease: Duration,
    /// Longest idle wait before asking for work again.
    pub poll_interval: Duration,
    /// How long shutdown waits for running handlers.
    pub shutdown_grace: Duration,
    /// How long past its timeout a handler may run before its lease lapses.
    pub stuck_grace: Duration,
    /// Delay between attempts of a failing job.
    pub backoff: Backoff,
    /// Whether this worker also runs the queue's maintenance services
    /// (promoter, rescuer, janitor). Several workers running them is safe.
    pub maintenance: bool,
    /// Promoter settings.
    pub promoter: PromoterConfig,
    /// Rescuer settings.
    pub rescuer: RescuerConfig,
    /// Janitor settings.
    pub janitor: JanitorConfig,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            concurrency: DEFAULT_CONCURRENCY,
            prefetch: DEFAULT_CONCURRENCY * DEFAULT_PREFETCH_FACTOR,
            lease: DEFAULT_LEASE,
            poll_interval: DEFAULT_POLL_INTERVAL,
            shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
            stuck_grace: DEFAULT_STUCK_GRACE,
            backoff: Backoff::default(),
            maintenance: true,
            promoter: PromoterConfig::default(),
            rescuer: RescuerConfig::default(),
            janitor: JanitorConfig::default(),
        }
    }
}

impl WorkerConfig {
    pub(super) fn validate(&self) -> Result<()> {
        if !(1..=MAX_CONCURRENCY).contains(&self.concurrency) {
            return Err(Error::invalid(format!(
                "concurrency {} must be 1 to {MAX_CONCURRENCY}",
                self.concurrency
            )));
        }
        if self.concurrency + self.prefetch > MAX_IN_HAND {
            return Err(Error::invalid(format!(
                "concurrency + prefetch ({}) must be at most {MAX_IN_HAND}",
                self.concurrency + self.prefetch
            )));
        }
        if self.lease < Duration::from_millis(100) || self.lease > Duration::from_secs(3600) {
            return Err(Error::invalid(format!(
                "lease {:?} must be 100 ms to 1 h",
                self.lease
            )));
        }
        if self.poll_interval < Duration::from_millis(10)
            || self.poll_interval > Duration::from_secs(60)
        {
            return Err(Error::invalid(format!(
                "poll_interval {:?} must be 10 ms to 60 s",
                self.poll_interval
            )));
        }
        self.promoter.validate()?;
        self.rescuer.validate()?;
        self.janitor.validate()?;
        Ok(())
    }
}
