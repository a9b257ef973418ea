//! What a handler says about a job: a value, not an exception or a string to
//! match (as River's snooze and cancel are values).

use std::fmt::Display;
use std::time::Duration;

/// The result of one run of a job.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Outcome {
    /// The job is done; it is removed (or retained, if the queue keeps
    /// completed jobs).
    Done,
    /// The run failed; run it again after `after` (the worker's backoff when
    /// `None`), unless this was the last attempt, in which case the job goes
    /// to the dead set.
    Retry {
        /// Wait this long instead of the backoff.
        after: Option<Duration>,
        /// Why the run failed, kept as the job's last error.
        error: String,
    },
    /// The job failed for good: it goes to the dead set without further
    /// attempts.
    Fail {
        /// Why, kept as the job's last error.
        error: String,
    },
    /// The job should not run at all any more: it is removed and counted as
    /// cancelled.
    Cancel {
        /// Why, for the log.
        reason: String,
    },
}

impl Outcome {
    /// Retry after the worker's backoff.
    pub fn retry(error: impl Display) -> Self {
        Self::Retry {
            after: None,
            error: error.to_string(),
        }
    }

    /// Retry after `delay`.
    pub fn retry_after(delay: Duration, error: impl Display) -> Self {
        Self::Retry {
            after: Some(delay),
            error: error.to_string(),
        }
    }

    /// Fail for good.
    pub fn fail(error: impl Display) -> Self {
        Self::Fail {
            error: error.to_string(),
        }
    }

    /// Cancel the job.
    pub fn cancel(reason: impl Display) -> Self {
        Self::Cancel {
            reason: reason.to_string(),
        }
    }
}

impl From<()> for Outcome {
    fn from((): ()) -> Self {
        Self::Done
    }
}

/// `Ok(())` is done; an error is retried with backoff.
impl<E: Display> From<Result<(), E>> for Outcome {
    fn from(result: Result<(), E>) -> Self {
        match result {
            Ok(()) => Self::Done,
            Err(error) => Self::retry(error),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_map_to_done_and_retry() {
        assert_eq!(Outcome::from(Ok::<(), String>(())), Outcome::Done);
        assert_eq!(
            Outcome::from(Err::<(), _>("boom")),
            Outcome::Retry {
                after: None,
                error: "boom".into()
            }
        );
    }
}
