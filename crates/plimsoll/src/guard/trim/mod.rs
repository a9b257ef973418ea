//! Reclaiming memory from one bloated family, in bounded batches, without
//! blocking Redis and without touching anything outside the family.
//!
//! Targets:
//!
//! - a **Plimsoll queue**, by its retention rules (the janitor's `trim.lua`,
//!   1,000 jobs per call);
//! - a **BullMQ** queue's completed or failed set together with the job
//!   hashes behind it (`bull:<queue>:<id>` and its `:logs`,
//!   `:dependencies`, `:processed`, `:failed`, `:unsuccessful` keys), oldest
//!   first: before each batch the set is asked again (`ZRANGEBYSCORE …
//!   LIMIT` for an age, `ZRANGE` for a count), then one `UNLINK` of the
//!   batch's keys and `ZREM` of its ids;
//! - **Sidekiq**'s dead set the same way (its members are the jobs), and
//!   its retry set by each job's first failure (`ZSCAN`, `failed_at`);
//! - an **RQ** queue's finished or failed registry, by each job's
//!   `ended_at` (`ZSCAN`, `HMGET`), with the job hashes and result streams;
//! - **Celery**'s results of finished tasks, by `date_done` (`SCAN MATCH`,
//!   `GET`);
//! - a **generic family** from the memory report (e.g. `session:<uuid>`):
//!   keys beyond a count, or not touched for longer than an age
//!   (`OBJECT IDLETIME`), found with `SCAN MATCH` on every primary and each
//!   checked against the family's pattern before it is unlinked. Every key
//!   found is also classified on its own: one that belongs to a known queue
//!   layout (a Plimsoll queue's `jobs` hash, a BullMQ job, …) is skipped and
//!   counted in [`TrimReport::skipped`], whatever the pattern looks like —
//!   `plimsoll:<*>:jobs` reads as a generic pattern, but the keys it matches
//!   are every queue's job records.
//!
//! Every command used (reads, `SCAN`/`ZSCAN`, `UNLINK`, `ZREM`, `OBJECT`,
//! `MEMORY USAGE`, and the janitor's script, flagged `allow-oom`) is
//! allowed while Redis refuses writes for lack of memory, so trimming works
//! exactly when it is needed most. `UNLINK` frees big values in a
//! background thread. Batches are paced by the same command budget as the
//! memory report.
//!
//! A dry run (the default) counts what would go and estimates the bytes
//! from a sample of what would go, measured as the memory report measures
//! keys; it changes nothing.
//!
//! Each target has its own file (`plimsoll.rs`, `bullmq.rs`, `sidekiq.rs`,
//! `rq.rs`, `celery.rs`, `family.rs`); this module holds what they share:
//! the options and the report, the dispatch, the sorted-set selection, the
//! `UNLINK` and `MEMORY USAGE` helpers and the reading of `used_memory`.

mod bullmq;
mod celery;
mod command;
mod family;
mod plimsoll;
mod rq;
mod sidekiq;

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::attribute::pacer::Pacer;
use super::attribute::scan::{DEFAULT_BUSY_LATENCY, DEFAULT_COMMAND_BUDGET};
use crate::clock::{Clock, SystemClock};
use crate::connection::Redis;
use crate::error::{Error, Result};
use crate::queue::Retention;

pub use bullmq::BullMqSet;
pub use command::trim_command;
pub use family::{pattern_glob, pattern_matches};
pub use rq::RqRegistry;
pub use sidekiq::SidekiqSet;

/// Set members or keys removed per batch.
pub const DEFAULT_TRIM_BATCH: usize = 500;
/// Keys measured to estimate the bytes a trim frees.
const BYTES_SAMPLE: usize = 200;
/// `SCAN … COUNT` of a generic trim: short calls (SCAN costs Redis about
/// 2 µs per bucket's keys, so 50 holds it ~0.1 ms), paced by keys like the
/// memory walk (see `DEFAULT_KEYS_PER_SECOND`).
const TRIM_SCAN_COUNT: u32 = 50;

/// Which jobs or keys of a target to remove: those beyond the newest
/// `keep`, and those older than `older_than`. At least one must be given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Selection {
    /// Keep at most this many (the newest, or most recently used).
    pub keep: Option<u64>,
    /// Remove those older than this (for generic keys: not touched for).
    pub older_than: Option<Duration>,
}

impl Selection {
    fn check(&self) -> Result<()> {
        if self.keep.is_none() && self.older_than.is_none() {
            return Err(Error::invalid(
                "trim needs a selection: keep N and/or older-than AGE",
            ));
        }
        Ok(())
    }
}

/// What to trim.
#[derive(Debug, Clone)]
pub enum TrimTarget {
    /// A Plimsoll queue, by retention rules.
    Plimsoll {
        /// Key prefix (default `plimsoll`).
        prefix: String,
        /// The queue.
        queue: String,
        /// The rules; [`Retention::default`] removes every completed job and
        /// caps dead jobs.
        retention: Retention,
    },
    /// A BullMQ queue's completed or failed jobs.
    BullMq {
        /// BullMQ's `prefix` option (default `bull`).
        prefix: String,
        /// The queue.
        queue: String,
        /// Which set.
        set: BullMqSet,
        /// Which jobs.
        selection: Selection,
    },
    /// Sidekiq's dead or retry set.
    Sidekiq {
        /// A redis-namespace, if Sidekiq uses one.
        namespace: Option<String>,
        /// Which set.
        set: SidekiqSet,
        /// Which jobs.
        selection: Selection,
    },
    /// An RQ queue's finished or failed jobs: their job hashes, results
    /// and dependency sets, and their ids in the registry.
    Rq {
        /// The queue.
        queue: String,
        /// Which registry.
        registry: RqRegistry,
        /// Which jobs (by when they ended).
        selection: Selection,
    },
    /// Celery's task and group results (`celery-task-meta-<id>`,
    /// `celery-taskset-meta-<id>`) of finished tasks, by `date_done`.
    CeleryResults {
        /// Which results.
        selection: Selection,
    },
    /// A generic family from the memory report, by its pattern.
    Family {
        /// The pattern, e.g. `session:<uuid>` or `cart:<*>:items`.
        pattern: String,
        /// Which keys.
        selection: Selection,
    },
}

impl TrimTarget {
    /// For people.
    pub fn describe(&self) -> String {
        match self {
            Self::Plimsoll { prefix, queue, .. } => {
                format!("Plimsoll queue {queue} ({prefix}:{{{queue}}}) by its retention rules")
            }
            Self::BullMq {
                prefix, queue, set, ..
            } => format!(
                "BullMQ queue {queue}: {} jobs ({prefix}:{queue}:{} and their job hashes)",
                bullmq::set_name(*set),
                bullmq::set_name(*set)
            ),
            Self::Sidekiq { namespace, set, .. } => format!(
                "Sidekiq {} set ({})",
                sidekiq::set_name(*set),
                sidekiq::set_key(namespace.as_deref(), *set)
            ),
            Self::Rq {
                queue, registry, ..
            } => format!(
                "RQ queue {queue}: {} jobs (rq:{}:{queue} and their job hashes)",
                registry.name(),
                registry.name()
            ),
            Self::CeleryResults { .. } => {
                "Celery task results (celery-task-meta-<id>, celery-taskset-meta-<id>)".into()
            }
            Self::Family { pattern, .. } => format!("family {pattern}"),
        }
    }
}

/// How to trim.
#[derive(Debug, Clone)]
pub struct TrimOptions {
    /// `false` (the default): only count and estimate.
    pub apply: bool,
    /// Members or keys per batch (1 to 10,000).
    pub batch: usize,
    /// Commands per second per node.
    pub budget: u32,
    /// "Now", for age selections.
    pub clock: Arc<dyn Clock>,
    /// Plimsoll's key prefix on this Redis, so that a family trim knows
    /// the queue registry and the caches under it (a queue's own keys are
    /// known under any prefix).
    pub plimsoll_prefix: String,
}

impl Default for TrimOptions {
    fn default() -> Self {
        Self {
            apply: false,
            batch: DEFAULT_TRIM_BATCH,
            budget: DEFAULT_COMMAND_BUDGET,
            clock: Arc::new(SystemClock),
            plimsoll_prefix: crate::keyspace::DEFAULT_PREFIX.to_string(),
        }
    }
}

/// What a trim removed (or, in a dry run, would remove).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TrimReport {
    /// The target, for people.
    pub target: String,
    /// Whether anything was removed.
    pub applied: bool,
    /// Jobs (set members) removed.
    pub jobs: u64,
    /// Keys unlinked.
    pub keys: u64,
    /// Bytes freed, estimated from sampled `MEMORY USAGE`.
    pub bytes_estimated: u64,
    /// `used_memory` before, all nodes.
    pub used_memory_before: u64,
    /// `used_memory` after, all nodes.
    pub used_memory_after: u64,
    /// Batches run.
    pub batches: u64,
    /// Commands sent.
    pub commands: u64,
    /// Seconds it took.
    pub duration_secs: f64,
    /// Some of the keys (or job ids) selected.
    pub examples: Vec<String>,
    /// Keys the pattern matched but that belong to a known queue layout
    /// (a generic-family trim leaves them alone; trim their queue instead).
    pub skipped: u64,
    /// Some of the skipped keys, with what they belong to.
    pub skipped_examples: Vec<String>,
}

/// Trims `target` on `redis` (every primary, for a generic family).
pub async fn trim(redis: &Redis, target: &TrimTarget, options: &TrimOptions) -> Result<TrimReport> {
    if !(1..=10_000).contains(&options.batch) {
        return Err(Error::invalid(format!(
            "trim batch {} must be 1 to 10000",
            options.batch
        )));
    }
    if !(10..=1_000_000).contains(&options.budget) {
        return Err(Error::invalid(format!(
            "trim budget {} must be 10 to 1000000 commands per second",
            options.budget
        )));
    }
    let started = Instant::now();
    let before = used_memory(redis).await?;
    let mut report = TrimReport {
        target: target.describe(),
        applied: options.apply,
        jobs: 0,
        keys: 0,
        bytes_estimated: 0,
        used_memory_before: before,
        used_memory_after: before,
        batches: 0,
        commands: 0,
        duration_secs: 0.0,
        examples: Vec::new(),
        skipped: 0,
        skipped_examples: Vec::new(),
    };
    let mut pacer = Pacer::new(options.budget, DEFAULT_BUSY_LATENCY);
    match target {
        TrimTarget::Plimsoll {
            prefix,
            queue,
            retention,
        } => plimsoll::trim(redis, prefix, queue, *retention, options, &mut report).await?,
        TrimTarget::BullMq {
            prefix,
            queue,
            set,
            selection,
        } => {
            selection.check()?;
            bullmq::trim(
                redis,
                prefix,
                queue,
                *set,
                *selection,
                options,
                &mut pacer,
                &mut report,
            )
            .await?
        }
        TrimTarget::Sidekiq {
            namespace,
            set,
            selection,
        } => {
            selection.check()?;
            let key = sidekiq::set_key(namespace.as_deref(), *set);
            sidekiq::trim(
                redis,
                &key,
                *set,
                *selection,
                options,
                &mut pacer,
                &mut report,
            )
            .await?
        }
        TrimTarget::Rq {
            queue,
            registry,
            selection,
        } => {
            selection.check()?;
            rq::trim(
                redis,
                queue,
                *registry,
                *selection,
                options,
                &mut pacer,
                &mut report,
            )
            .await?
        }
        TrimTarget::CeleryResults { selection } => {
            selection.check()?;
            celery::trim(redis, *selection, options, &mut report).await?
        }
        TrimTarget::Family { pattern, selection } => {
            selection.check()?;
            family::trim(redis, pattern, *selection, options, &mut report).await?
        }
    }
    report.commands += pacer.commands;
    report.used_memory_after = used_memory(redis).await?;
    report.duration_secs = started.elapsed().as_secs_f64();
    Ok(report)
}

async fn used_memory(redis: &Redis) -> Result<u64> {
    let mut total = 0;
    for primary in redis.primaries().await? {
        total += primary.redis.info(&["memory"]).await?.count("used_memory");
    }
    Ok(total)
}

/// Runs `cmds`: pipelined on one server; on a cluster, where a pipeline
/// may not cross slots, as concurrent single commands (each routed to its
/// node). Replies in order.
async fn each<T: redis::FromRedisValue>(redis: &Redis, cmds: Vec<redis::Cmd>) -> Result<Vec<T>> {
    if redis.is_cluster() {
        let calls = cmds.iter().map(|cmd| redis.query::<T>(cmd));
        return futures::future::try_join_all(calls).await;
    }
    let mut pipe = redis::pipe();
    for cmd in cmds {
        pipe.add_command(cmd);
    }
    let mut conn = redis.clone();
    Ok(pipe.query_async(&mut conn).await?)
}

/// Mean `MEMORY USAGE` of `keys` (keys gone since count 0), measured as
/// the memory report measures them (`attribute/usage.rs`): exact up to
/// 20,000 elements, so that "would free" and the report's figures are the
/// same numbers. Without `SAMPLES` Redis estimates a hash from five of its
/// fields, and which five its dict order puts first moved the estimate of
/// a BullMQ job by more than half either way.
async fn mean_usage(redis: &Redis, keys: &[String]) -> Result<f64> {
    if keys.is_empty() {
        return Ok(0.0);
    }
    let cmds = keys
        .iter()
        .map(|key| {
            let mut cmd = redis::cmd("MEMORY");
            cmd.arg("USAGE")
                .arg(key)
                .arg("SAMPLES")
                .arg(super::attribute::usage::DEFAULT_EXACT_ELEMENTS);
            cmd
        })
        .collect();
    let sizes: Vec<Option<u64>> = each(redis, cmds).await?;
    Ok(sizes.iter().map(|s| s.unwrap_or(0) as f64).sum::<f64>() / keys.len() as f64)
}

/// How many of a sorted set's oldest members the selection removes.
#[derive(Debug, Clone, Copy)]
struct Excess {
    card: u64,
    /// Beyond `keep` (0 without it).
    beyond_keep: u64,
    /// Scored below the cutoff (0 without one).
    older: u64,
}

impl Excess {
    /// What the selection removes: the oldest of either rule.
    fn remove(&self) -> u64 {
        self.beyond_keep.max(self.older)
    }
}

async fn zset_excess(
    redis: &Redis,
    key: &str,
    selection: Selection,
    cutoff_score: Option<f64>,
) -> Result<Excess> {
    let card: u64 = redis.query(redis::cmd("ZCARD").arg(key)).await?;
    let beyond_keep = selection.keep.map_or(0, |keep| card.saturating_sub(keep));
    let older = match cutoff_score {
        Some(cutoff) => {
            redis
                .query(
                    redis::cmd("ZCOUNT")
                        .arg(key)
                        .arg("-inf")
                        .arg(format!("({cutoff}")),
                )
                .await?
        }
        None => 0,
    };
    Ok(Excess {
        card,
        beyond_keep,
        older,
    })
}

/// The oldest members of sorted set `key` that the selection removes now,
/// at most `limit`. Asked again before every batch: BullMQ and Sidekiq
/// trim their own sets too, and a count worked out once at the start
/// reached, after they had removed some of the oldest, into jobs newer than
/// `--older-than`. Members older than the cutoff come from
/// `ZRANGEBYSCORE`, which cannot return a newer one whatever else changes;
/// a count beyond `--keep` from the set's size now.
async fn members_to_remove(
    redis: &Redis,
    key: &str,
    selection: Selection,
    cutoff_score: Option<f64>,
    limit: u64,
    pacer: &mut Pacer,
) -> Result<Vec<String>> {
    pacer.take(3).await;
    let excess = zset_excess(redis, key, selection, cutoff_score).await?;
    let n = excess.remove().min(limit);
    if n == 0 {
        return Ok(Vec::new());
    }
    let mut cmd;
    match cutoff_score.filter(|_| excess.older >= excess.beyond_keep) {
        Some(cutoff) => {
            cmd = redis::cmd("ZRANGEBYSCORE");
            cmd.arg(key)
                .arg("-inf")
                .arg(format!("({cutoff}"))
                .arg("LIMIT")
                .arg(0)
                .arg(n);
        }
        None => {
            cmd = redis::cmd("ZRANGE");
            cmd.arg(key).arg(0).arg(n as i64 - 1);
        }
    }
    redis.query(&cmd).await
}

/// UNLINKs `keys`: in one command when they are known to share a slot
/// (or Redis is one server), else one command per key (pipelined on one
/// node, routed to each key's node on a cluster: a node's keys are in many
/// slots). Returns how many existed.
async fn unlink<K: AsRef<str>>(redis: &Redis, keys: &[K], one_slot: bool) -> Result<u64> {
    if keys.is_empty() {
        return Ok(0);
    }
    if one_slot {
        let mut cmd = redis::cmd("UNLINK");
        for key in keys {
            cmd.arg(key.as_ref());
        }
        return redis.query(&cmd).await;
    }
    let cmds = keys
        .iter()
        .map(|key| {
            let mut cmd = redis::cmd("UNLINK");
            cmd.arg(key.as_ref());
            cmd
        })
        .collect();
    Ok(each::<u64>(redis, cmds).await?.iter().sum())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_selection_is_required() {
        assert!(Selection::default().check().is_err());
    }
}
