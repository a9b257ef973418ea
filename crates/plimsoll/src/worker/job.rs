//! The job as a handler sees it.

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use crate::error::Result;
use crate::keyspace::QueueName;
use crate::queue::JobId;

/// One run of a job, handed to a handler.
#[derive(Debug, Clone)]
pub struct Job {
    pub(crate) id: JobId,
    /// Shared by every job of the worker: no allocation per job.
    pub(crate) queue: Arc<QueueName>,
    pub(crate) payload: Vec<u8>,
    pub(crate) attempt: u16,
    pub(crate) max_attempts: u16,
    pub(crate) priority: u8,
    pub(crate) timeout: Duration,
    pub(crate) enqueued_at_ms: u64,
    pub(crate) last_error: Option<String>,
    pub(crate) cancel: CancellationToken,
}

impl Job {
    /// The job's id.
    pub fn id(&self) -> JobId {
        self.id
    }

    /// The queue the job came from.
    pub fn queue(&self) -> &QueueName {
        &self.queue
    }

    /// The payload as enqueued.
    pub fn payload(&self) -> &[u8] {
        &self.payload
    }

    /// The payload as UTF-8 text, if it is.
    pub fn payload_str(&self) -> Option<&str> {
        std::str::from_utf8(&self.payload).ok()
    }

    /// The payload parsed from JSON into `T`.
    pub fn json<T: for<'de> Deserialize<'de>>(&self) -> Result<T> {
        Ok(serde_json::from_slice(&self.payload)?)
    }

    /// Which run this is: 1 for the first.
    pub fn attempt(&self) -> u16 {
        self.attempt
    }

    /// How many runs the job gets in all.
    pub fn max_attempts(&self) -> u16 {
        self.max_attempts
    }

    /// Whether a failure of this run sends the job to the dead set.
    pub fn is_last_attempt(&self) -> bool {
        self.attempt >= self.max_attempts
    }

    /// The job's priority, 0 (runs first) to 9.
    pub fn priority(&self) -> u8 {
        self.priority
    }

    /// How long this run may take.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// When the job was enqueued (ms since the epoch).
    pub fn enqueued_at_ms(&self) -> u64 {
        self.enqueued_at_ms
    }

    /// The error of the previous failed run.
    pub fn last_error(&self) -> Option<&str> {
        self.last_error.as_deref()
    }

    /// Resolves when the run should stop: the job was cancelled, its lease
    /// was lost or could not be renewed in time (Redis out of reach for most
    /// of a lease), or the worker is shutting down past its grace period
    /// (a handler that does not stop then is aborted at its next `.await`). A
    /// long handler should `select!` on this and return
    /// [`Outcome::retry`](crate::Outcome::retry): after a cancel or a lost
    /// lease the outcome is dropped anyway, and at shutdown the job runs
    /// again. (Returning [`Outcome::Cancel`](crate::Outcome::Cancel) here
    /// would delete a job that was merely interrupted.)
    pub async fn cancelled(&self) {
        self.cancel.cancelled().await;
    }

    /// Whether the run should stop (see [`cancelled`](Self::cancelled)).
    pub fn is_cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }
}
