//! Jobs as callers see them: what goes in ([`NewJob`]), what comes back
//! ([`Enqueued`], [`JobInfo`]), and the states of a job's life.

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// A job's id, unique within its queue. Ids start at 1,000,001 (so that each
/// costs Redis the same memory) and are never reused. Each producer reserves
/// them a thousand at a time (more while it is busy), or a bulk call's
/// worth (see `reserve_ids.lua`): one producer's ids
/// rise in the order it enqueues, but several producers' ids interleave, and
/// ids a stopped producer did not use are skipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct JobId(pub u64);

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for JobId {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        s.parse::<u64>()
            .ok()
            .filter(|id| *id > 0)
            .map(JobId)
            .ok_or_else(|| Error::invalid(format!("job id {s:?} is not a positive integer")))
    }
}

/// Where a job is in its life; see `docs/state_machine.md`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Ready to run, in its priority's waiting list.
    Waiting,
    /// Due later: delayed, or a retry waiting out its backoff.
    Scheduled,
    /// Leased to a worker, running or about to.
    Active,
    /// Finished and kept because retention of completed jobs is on.
    Completed,
    /// Failed for good; kept in the capped dead set for inspection and retry.
    Dead,
}

impl JobState {
    /// The state's name, as in the API and the docs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Waiting => "waiting",
            Self::Scheduled => "scheduled",
            Self::Active => "active",
            Self::Completed => "completed",
            Self::Dead => "dead",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "waiting" => Self::Waiting,
            "scheduled" => Self::Scheduled,
            "active" => Self::Active,
            "completed" => Self::Completed,
            "dead" => Self::Dead,
            _ => return None,
        })
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The most urgent priority; jobs at priority 0 run before all others.
pub const HIGHEST_PRIORITY: u8 = 0;
/// The least urgent priority.
pub const LOWEST_PRIORITY: u8 = 9;

/// A job to enqueue: a payload and its options. Options left unset take the
/// queue's defaults ([`QueueConfig`](crate::QueueConfig)).
#[derive(Debug, Clone, Default)]
pub struct NewJob {
    pub(crate) payload: Vec<u8>,
    pub(crate) run_at: Option<RunAt>,
    pub(crate) priority: Option<u8>,
    pub(crate) max_attempts: Option<u16>,
    pub(crate) timeout: Option<Duration>,
    pub(crate) idempotency: Option<(String, Option<Duration>)>,
}

#[derive(Debug, Clone, Copy)]
pub(crate) enum RunAt {
    After(Duration),
    At(SystemTime),
}

impl NewJob {
    /// A job whose payload is `value` serialized as JSON.
    pub fn json<T: Serialize + ?Sized>(value: &T) -> Result<Self> {
        Ok(Self::bytes(serde_json::to_vec(value)?))
    }

    /// A job whose payload is these bytes, as they are.
    pub fn bytes(payload: impl Into<Vec<u8>>) -> Self {
        Self {
            payload: payload.into(),
            ..Self::default()
        }
    }

    /// Runs the job no earlier than `delay` from now.
    pub fn delay(mut self, delay: Duration) -> Self {
        self.run_at = Some(RunAt::After(delay));
        self
    }

    /// Runs the job no earlier than `time`.
    pub fn run_at(mut self, time: SystemTime) -> Self {
        self.run_at = Some(RunAt::At(time));
        self
    }

    /// Sets the priority: 0 (runs first) to 9 (runs last).
    pub fn priority(mut self, priority: u8) -> Self {
        self.priority = Some(priority);
        self
    }

    /// Sets how many times the job may run before it goes to the dead set
    /// (1 to 1,000).
    pub fn max_attempts(mut self, attempts: u16) -> Self {
        self.max_attempts = Some(attempts);
        self
    }

    /// Sets how long one run may take before it counts as failed.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Makes the enqueue idempotent: another job with the same key within the
    /// queue's idempotency window is not enqueued; its enqueue returns this
    /// job's id instead.
    pub fn idempotency_key(mut self, key: impl Into<String>) -> Self {
        self.idempotency = Some((key.into(), None));
        self
    }

    /// Like [`idempotency_key`](Self::idempotency_key) with a window of its own
    /// (1 second to 30 days).
    pub fn idempotency_key_for(mut self, key: impl Into<String>, window: Duration) -> Self {
        self.idempotency = Some((key.into(), Some(window)));
        self
    }

    /// The payload's size in bytes, before compression.
    pub fn payload_len(&self) -> usize {
        self.payload.len()
    }
}

/// The result of enqueueing one job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Enqueued {
    /// The job's id; for a duplicate, the id of the job first enqueued with
    /// the same idempotency key.
    pub id: JobId,
    /// The idempotency key was seen within its window: nothing new was enqueued.
    pub duplicate: bool,
}

/// A snapshot of one job, as an inspector sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct JobInfo {
    /// The job's id.
    pub id: JobId,
    /// Where the job is.
    pub state: JobState,
    /// 0 (runs first) to 9.
    pub priority: u8,
    /// Runs that have ended without success (failed, timed out, lease lost).
    pub attempts: u16,
    /// Runs allowed before the job goes to the dead set.
    pub max_attempts: u16,
    /// Time one run may take, in milliseconds.
    pub timeout_ms: u32,
    /// When it was enqueued (ms since the epoch).
    pub enqueued_at_ms: u64,
    /// Scheduled: when due; dead: when it died; completed: when it finished;
    /// active: when its lease ends (ms since the epoch). None while waiting.
    pub state_time_ms: Option<u64>,
    /// The worker holding an active job.
    pub worker: Option<String>,
    /// The error of the last failed run.
    pub last_error: Option<String>,
    /// The payload, decompressed.
    #[serde(skip)]
    pub payload: Vec<u8>,
    /// Bytes the record takes in Redis (header, stored payload, error).
    pub stored_bytes: usize,
}

impl JobInfo {
    /// The payload parsed as JSON into `T`.
    pub fn payload_json<T: for<'de> Deserialize<'de>>(&self) -> Result<T> {
        Ok(serde_json::from_slice(&self.payload)?)
    }
}

pub(crate) fn system_time_ms(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_ids_parse_and_reject_garbage() {
        assert_eq!("42".parse::<JobId>().unwrap(), JobId(42));
        for bad in ["", "0", "-1", "x1", "1.5"] {
            assert!(bad.parse::<JobId>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn states_round_trip_through_their_names() {
        for state in [
            JobState::Waiting,
            JobState::Scheduled,
            JobState::Active,
            JobState::Completed,
            JobState::Dead,
        ] {
            assert_eq!(JobState::parse(state.as_str()), Some(state));
        }
    }
}
