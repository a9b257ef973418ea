//! Trimming the completed and dead sets to the queue's retention bounds.
//!
//! The transitions that add to those sets trim them in the same script, but
//! only a timer can apply an age bound to a queue nobody touches: the
//! janitor calls this every round, and `plimsoll trim plimsoll` calls it
//! until nothing is left over. Each script call removes at most `budget`
//! jobs per set, so that a large backlog is worked off without holding
//! Redis for long.

use super::Queue;
use super::scripts::calls;
use crate::error::Result;

/// Script calls per [`Queue::trim_retained`] at most, when there is a
/// backlog: 20 calls of the janitor's default 1,000 keep one round well
/// under a second of Redis time.
const CALLS_PER_TRIM: usize = 20;

/// What one [`Queue::trim_retained`] removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Trimmed {
    /// Jobs removed from the completed set.
    pub completed: u64,
    /// Jobs removed from the dead set.
    pub dead: u64,
}

impl Trimmed {
    /// Jobs removed in all.
    pub fn total(&self) -> u64 {
        self.completed + self.dead
    }
}

impl Queue {
    /// Removes completed and dead jobs beyond this handle's retention (its
    /// count and age bounds), at most `budget` per set per script call and
    /// a few calls in a row while there is more. A result under the calls'
    /// full budget means the sets are within their bounds.
    pub async fn trim_retained(&self, budget: usize) -> Result<Trimmed> {
        self.ensure_clock().await?;
        let keys = self.keys();
        let retention = self.config().retention;
        let mut trimmed = Trimmed::default();
        for _ in 0..CALLS_PER_TRIM {
            let call = calls::trim(
                keys,
                self.now_ms(),
                &retention.completed_args(),
                &retention.dead_args(),
                budget.min(calls::TRIM_MAX_BUDGET),
            );
            let (completed, dead): (u64, u64) = call.invoke(self.redis()).await?;
            trimmed.completed += completed;
            trimmed.dead += dead;
            if (completed as usize) < budget && (dead as usize) < budget {
                break;
            }
        }
        if trimmed.total() > 0 {
            tracing::debug!(queue = %self.name(), completed = trimmed.completed, dead = trimmed.dead, "trimmed retained jobs");
        }
        Ok(trimmed)
    }
}
