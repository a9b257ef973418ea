//! What a key family is: its pattern, its name for people, and, for the
//! job queues the guard knows, whose layout it follows, which queue and
//! which part of it. The classifier (`families.rs`) and the known layouts
//! (`layouts.rs`) both make them.

use serde::{Deserialize, Serialize};

/// Whose layout a family follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Layout {
    /// Plimsoll's own queues.
    Plimsoll,
    /// BullMQ (Node.js).
    #[serde(rename = "bullmq")]
    BullMq,
    /// Sidekiq (Ruby).
    Sidekiq,
    /// Celery with the Redis broker or result backend (Python).
    Celery,
    /// RQ (Python).
    Rq,
    /// apalis-redis (Rust).
    Apalis,
    /// Anything else, grouped by the shape of its names.
    Generic,
}

impl Layout {
    /// The library's name as its users write it ("BullMQ", "RQ").
    pub fn name(self) -> &'static str {
        match self {
            Layout::Plimsoll => "Plimsoll",
            Layout::BullMq => "BullMQ",
            Layout::Sidekiq => "Sidekiq",
            Layout::Celery => "Celery",
            Layout::Rq => "RQ",
            Layout::Apalis => "apalis",
            Layout::Generic => "generic",
        }
    }
}

/// What part of a queue a family is, where that matters for attribution
/// and trimming.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// BullMQ's completed set.
    Completed,
    /// BullMQ's failed set.
    Failed,
    /// BullMQ job hashes, whose bytes are apportioned to the job states.
    JobHashes,
    /// BullMQ job logs, apportioned like the hashes.
    JobLogs,
    /// A Plimsoll cache's values: every key has a TTL.
    Cache,
    /// Anything else.
    Other,
}

/// One family: a stable pattern (its identity) and a name for people.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Family {
    /// Whose layout.
    pub layout: Layout,
    /// The collapsed pattern, e.g. `bull:mail:<id>` or `session:<uuid>`.
    pub pattern: String,
    /// For people, e.g. "BullMQ queue mail: completed jobs".
    pub name: String,
    /// The queue, for queue layouts.
    pub queue: Option<String>,
    /// The key prefix of the queue layout (`bull` for BullMQ).
    pub prefix: Option<String>,
    /// What part of a queue it is.
    pub role: Role,
}

impl Family {
    pub(super) fn known(layout: Layout, pattern: String, name: String) -> Self {
        Self {
            layout,
            pattern,
            name,
            queue: None,
            prefix: None,
            role: Role::Other,
        }
    }

    pub(super) fn generic(pattern: String) -> Self {
        Self::known(Layout::Generic, pattern.clone(), pattern)
    }

    pub(super) fn queue(mut self, prefix: &str, queue: &str, role: Role) -> Self {
        self.prefix = Some(prefix.to_string());
        self.queue = Some(queue.to_string());
        self.role = role;
        self
    }
}
