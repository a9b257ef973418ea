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

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::attribute::families::{Classifier, Layout, collapse_segment};
use super::attribute::scan::{
    DEFAULT_BUSY_LATENCY, DEFAULT_COMMAND_BUDGET, DEFAULT_KEYS_PER_SECOND, Pacer,
};
use crate::clock::{Clock, SystemClock};
use crate::connection::Redis;
use crate::error::{Error, Result};
use crate::queue::{Queue, QueueConfig, Retention};

/// Set members or keys removed per batch.
pub const DEFAULT_TRIM_BATCH: usize = 500;
/// Keys measured to estimate the bytes a trim frees.
const BYTES_SAMPLE: usize = 200;
/// `SCAN … COUNT` of a generic trim: short calls (SCAN costs Redis about
/// 2 µs per bucket's keys, so 50 holds it ~0.1 ms), paced by keys like the
/// memory walk (see `DEFAULT_KEYS_PER_SECOND`).
const TRIM_SCAN_COUNT: u32 = 50;
/// The keys of a BullMQ job besides its hash.
const BULLMQ_JOB_SUFFIXES: [&str; 5] = [
    ":logs",
    ":dependencies",
    ":processed",
    ":failed",
    ":unsuccessful",
];

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

/// BullMQ's sets of finished jobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BullMqSet {
    /// `bull:<queue>:completed`.
    Completed,
    /// `bull:<queue>:failed`.
    Failed,
}

/// Sidekiq's sorted sets of jobs that are not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SidekiqSet {
    /// `dead`: jobs out of retries.
    Dead,
    /// `retry`: jobs waiting for a retry.
    Retry,
}

/// RQ's registries of finished work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RqRegistry {
    /// `rq:finished:<queue>`: jobs that succeeded.
    Finished,
    /// `rq:failed:<queue>`: jobs that failed for good.
    Failed,
}

impl RqRegistry {
    fn name(self) -> &'static str {
        match self {
            RqRegistry::Finished => "finished",
            RqRegistry::Failed => "failed",
        }
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
                bullmq_set_name(*set),
                bullmq_set_name(*set)
            ),
            Self::Sidekiq { namespace, set, .. } => format!(
                "Sidekiq {} set ({})",
                sidekiq_set_name(*set),
                sidekiq_key(namespace.as_deref(), *set)
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

/// The `plimsoll trim` command (a dry run: it changes nothing) that would
/// trim `family` of a memory report, for an alert or a report to print;
/// None for families no target trims (RQ, Celery, apalis, a queue's
/// pending work). The selection is a starting point for the dry run, which
/// shows what it would remove before anyone adds `--yes`.
pub fn trim_command(family: &super::attribute::FamilyReport) -> Option<String> {
    let queue = family.queue.as_deref();
    match family.layout {
        Layout::BullMq => {
            let queue = queue?;
            let (set, arg) = if family.pattern.ends_with(":completed") {
                ("completed", "completed")
            } else if family.pattern.ends_with(":failed") {
                ("failed", "failed")
            } else {
                return None;
            };
            let prefix = family.pattern.strip_suffix(&format!(":{queue}:{set}"))?;
            let prefix_arg = if prefix == "bull" {
                String::new()
            } else {
                format!(" --bullmq-prefix {}", shell_word(prefix))
            };
            Some(format!(
                "plimsoll trim bullmq {} --set {arg}{prefix_arg} --keep 1000",
                shell_word(queue)
            ))
        }
        Layout::Sidekiq => {
            let (namespace, set) = match family.pattern.rsplit_once(':') {
                Some((namespace, set)) => (Some(namespace), set),
                None => (None, family.pattern.as_str()),
            };
            if !matches!(set, "dead" | "retry") {
                return None;
            }
            let namespace_arg = namespace
                .map(|ns| format!(" --namespace {}", shell_word(ns)))
                .unwrap_or_default();
            Some(format!(
                "plimsoll trim sidekiq {set}{namespace_arg} --older-than 7d"
            ))
        }
        Layout::Plimsoll => Some(format!("plimsoll trim plimsoll {}", shell_word(queue?))),
        Layout::Generic => Some(format!(
            "plimsoll trim family {} --older-than 7d",
            shell_word(&family.pattern)
        )),
        Layout::Rq => {
            let rest = family.pattern.strip_prefix("rq:")?;
            let (registry, queue) = rest.split_once(':')?;
            if !matches!(registry, "finished" | "failed") {
                return None;
            }
            Some(format!(
                "plimsoll trim rq {} --registry {registry} --older-than 7d",
                shell_word(queue)
            ))
        }
        Layout::Celery if family.pattern.starts_with("celery-task") => {
            Some("plimsoll trim celery results --older-than 7d".into())
        }
        Layout::Celery | Layout::Apalis => None,
    }
}

/// `word` as one shell word: as is when it is plain, else single-quoted.
fn shell_word(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.:/@%+=,".contains(c));
    if plain {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', "'\\''"))
    }
}

fn bullmq_set_name(set: BullMqSet) -> &'static str {
    match set {
        BullMqSet::Completed => "completed",
        BullMqSet::Failed => "failed",
    }
}

fn sidekiq_set_name(set: SidekiqSet) -> &'static str {
    match set {
        SidekiqSet::Dead => "dead",
        SidekiqSet::Retry => "retry",
    }
}

fn sidekiq_key(namespace: Option<&str>, set: SidekiqSet) -> String {
    match namespace {
        Some(ns) => format!("{ns}:{}", sidekiq_set_name(set)),
        None => sidekiq_set_name(set).to_string(),
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
}

impl Default for TrimOptions {
    fn default() -> Self {
        Self {
            apply: false,
            batch: DEFAULT_TRIM_BATCH,
            budget: DEFAULT_COMMAND_BUDGET,
            clock: Arc::new(SystemClock),
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
        } => plimsoll(redis, prefix, queue, *retention, options, &mut report).await?,
        TrimTarget::BullMq {
            prefix,
            queue,
            set,
            selection,
        } => {
            selection.check()?;
            bullmq(
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
            let key = sidekiq_key(namespace.as_deref(), *set);
            sidekiq(
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
            rq(
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
            celery_results(redis, *selection, options, &mut report).await?
        }
        TrimTarget::Family { pattern, selection } => {
            selection.check()?;
            family(redis, pattern, *selection, options, &mut report).await?
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
        let info: String = primary
            .redis
            .query(redis::cmd("INFO").arg("memory"))
            .await?;
        total += info
            .lines()
            .find_map(|l| l.strip_prefix("used_memory:"))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0);
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

#[allow(clippy::too_many_arguments)]
async fn bullmq(
    redis: &Redis,
    prefix: &str,
    queue: &str,
    set: BullMqSet,
    selection: Selection,
    options: &TrimOptions,
    pacer: &mut Pacer,
    report: &mut TrimReport,
) -> Result<()> {
    let base = format!("{prefix}:{queue}");
    let zkey = format!("{base}:{}", bullmq_set_name(set));
    // Scores are finishedOn, ms since the epoch.
    let cutoff = selection
        .older_than
        .map(|age| options.clock.now_ms().saturating_sub(crate::clock::ms(age)) as f64);
    pacer.take(2).await;
    let excess = zset_excess(redis, &zkey, selection, cutoff).await?;
    let (card, to_remove) = (excess.card, excess.remove());
    // Estimate from the oldest jobs, which are the ones that go.
    let sample: Vec<String> = redis
        .query(
            redis::cmd("ZRANGE")
                .arg(&zkey)
                .arg(0)
                .arg(to_remove.min(BYTES_SAMPLE as u64) as i64 - 1),
        )
        .await?;
    report.examples = sample
        .iter()
        .take(10)
        .map(|id| format!("{base}:{id}"))
        .collect();
    let job_keys: Vec<String> = sample.iter().map(|id| format!("{base}:{id}")).collect();
    let log_keys: Vec<String> = sample
        .iter()
        .map(|id| format!("{base}:{id}:logs"))
        .collect();
    pacer.take(2 * sample.len() as u64 + 2).await;
    let per_job = mean_usage(redis, &job_keys).await? + mean_usage(redis, &log_keys).await?;
    let set_bytes = mean_usage(redis, std::slice::from_ref(&zkey)).await?;
    let set_share = if card > 0 {
        set_bytes * to_remove as f64 / card as f64
    } else {
        0.0
    };
    report.bytes_estimated = (per_job * to_remove as f64 + set_share) as u64;
    report.jobs = to_remove;
    if !options.apply {
        return Ok(());
    }
    // On a cluster BullMQ's keys of one queue share a slot only through a
    // hash tag in its prefix (which BullMQ needs there): then one UNLINK
    // takes a whole batch, else one per key.
    let one_slot = !redis.is_cluster() || (prefix.contains('{') && prefix.contains('}'));
    let mut removed = 0u64;
    // At most what the dry run counted: jobs that age past the cutoff
    // while the trim runs are left for the next one.
    while removed < to_remove {
        let limit = (to_remove - removed).min(options.batch as u64);
        let ids = members_to_remove(redis, &zkey, selection, cutoff, limit, pacer).await?;
        if ids.is_empty() {
            break;
        }
        let keys: Vec<String> = ids
            .iter()
            .flat_map(|id| {
                let job = format!("{base}:{id}");
                [""].into_iter()
                    .chain(BULLMQ_JOB_SUFFIXES)
                    .map(move |suffix| format!("{job}{suffix}"))
            })
            .collect();
        // A job's six keys cost Redis about one command (a lookup each,
        // most of them absent): the budget is charged per job.
        pacer.take(ids.len() as u64 + 1).await;
        // Keys first, then the ids: a crash in between leaves ids whose
        // hashes are gone, which BullMQ tolerates, never hashes nobody lists.
        report.keys += unlink(redis, &keys, one_slot).await?;
        let gone: u64 = redis.query(redis::cmd("ZREM").arg(&zkey).arg(&ids)).await?;
        removed += gone;
        report.batches += 1;
        if gone == 0 {
            break;
        }
    }
    report.jobs = removed;
    Ok(())
}

async fn sidekiq(
    redis: &Redis,
    key: &str,
    set: SidekiqSet,
    selection: Selection,
    options: &TrimOptions,
    pacer: &mut Pacer,
    report: &mut TrimReport,
) -> Result<()> {
    report.examples = vec![key.to_string()];
    if set == SidekiqSet::Retry {
        return sidekiq_retry_by_age(redis, key, selection, options, pacer, report).await;
    }
    // The dead set is scored by when each job died, epoch seconds.
    let cutoff = selection
        .older_than
        .map(|age| options.clock.now_ms().saturating_sub(crate::clock::ms(age)) as f64 / 1000.0);
    pacer.take(3).await;
    let excess = zset_excess(redis, key, selection, cutoff).await?;
    let to_remove = excess.remove();
    let set_bytes = mean_usage(redis, &[key.to_string()]).await?;
    report.bytes_estimated = share_of(set_bytes, to_remove, excess.card);
    report.jobs = to_remove;
    if !options.apply {
        return Ok(());
    }
    let mut removed = 0u64;
    while removed < to_remove {
        let limit = (to_remove - removed).min(options.batch as u64);
        let jobs = members_to_remove(redis, key, selection, cutoff, limit, pacer).await?;
        if jobs.is_empty() {
            break;
        }
        pacer.take(1).await;
        let gone: u64 = redis.query(redis::cmd("ZREM").arg(key).arg(&jobs)).await?;
        removed += gone;
        report.batches += 1;
        if gone == 0 {
            break;
        }
    }
    report.jobs = removed;
    Ok(())
}

/// UNLINKs `keys`: in one command when they are known to share a slot
/// (or Redis is one server), else one command per key, each routed to its
/// node. Returns how many existed.
async fn unlink(redis: &Redis, keys: &[String], one_slot: bool) -> Result<u64> {
    if keys.is_empty() {
        return Ok(0);
    }
    if one_slot {
        return redis.query(redis::cmd("UNLINK").arg(keys)).await;
    }
    let cmds = keys
        .iter()
        .map(|key| {
            let mut cmd = redis::cmd("UNLINK");
            cmd.arg(key);
            cmd
        })
        .collect();
    Ok(each::<u64>(redis, cmds).await?.iter().sum())
}

/// Keys RQ keeps per job besides its hash `rq:job:<id>`.
const RQ_JOB_KEYS: [&str; 3] = [
    "rq:results:{}",
    "rq:job:{}:dependents",
    "rq:job:{}:dependencies",
];

/// An RQ registry of finished or failed jobs. Its scores are when RQ means
/// to expire each entry (`+inf` with `result_ttl=-1`, the setting that
/// leaks), so they say nothing of age: a job is as old as its hash's
/// `ended_at`. The registry is walked with `ZSCAN`; each job's `status` and
/// `ended_at` are read (`HMGET`, pipelined), and only jobs whose status is
/// still the registry's are candidates, so a job requeued from the failed
/// registry is never touched; a job without `ended_at` is kept and counted
/// as skipped. Before each batch is removed its status is
/// read again. A job goes with its hash, result stream and dependency
/// sets, then its id leaves the registry.
#[allow(clippy::too_many_arguments)]
async fn rq(
    redis: &Redis,
    queue: &str,
    registry: RqRegistry,
    selection: Selection,
    options: &TrimOptions,
    pacer: &mut Pacer,
    report: &mut TrimReport,
) -> Result<()> {
    let key = format!("rq:{}:{queue}", registry.name());
    let status = registry.name();
    let cutoff_secs = selection
        .older_than
        .map(|age| options.clock.now_ms().saturating_sub(crate::clock::ms(age)) as f64 / 1000.0);
    // (ended_at, id) of every job of the registry in its state.
    let mut jobs: Vec<(f64, String)> = Vec::new();
    let mut cursor = 0u64;
    loop {
        pacer.take(1).await;
        let (next, members): (u64, Vec<String>) = redis
            .query(
                redis::cmd("ZSCAN")
                    .arg(&key)
                    .arg(cursor)
                    .arg("COUNT")
                    .arg(options.batch),
            )
            .await?;
        let ids: Vec<String> = members.into_iter().step_by(2).collect();
        pacer.take(ids.len() as u64).await;
        let cmds = ids
            .iter()
            .map(|id| {
                let mut cmd = redis::cmd("HMGET");
                cmd.arg(format!("rq:job:{id}"))
                    .arg("status")
                    .arg("ended_at");
                cmd
            })
            .collect();
        let fields: Vec<(Option<String>, Option<String>)> = each(redis, cmds).await?;
        for (id, (job_status, ended_at)) in ids.into_iter().zip(fields) {
            if job_status.as_deref() != Some(status) {
                continue;
            }
            let ended = ended_at
                .as_deref()
                .and_then(|t| humantime::parse_rfc3339_weak(t.trim_end_matches('Z')).ok())
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok());
            match ended {
                Some(ended) => jobs.push((ended.as_secs_f64(), id)),
                // No age to go by: kept, and counted as skipped.
                None => {
                    report.skipped += 1;
                    if report.skipped_examples.len() < 10 {
                        report
                            .skipped_examples
                            .push(format!("rq:job:{id} (no ended_at)"));
                    }
                }
            }
        }
        cursor = next;
        if cursor == 0 {
            break;
        }
    }
    // ZSCAN may return a member twice.
    jobs.sort_by(|a, b| a.0.total_cmp(&b.0).then_with(|| a.1.cmp(&b.1)));
    jobs.dedup_by(|a, b| a.1 == b.1);
    let by_count = selection
        .keep
        .map_or(0, |keep| (jobs.len() as u64).saturating_sub(keep));
    let by_age = cutoff_secs.map_or(0, |cutoff| {
        jobs.iter().take_while(|j| j.0 < cutoff).count() as u64
    });
    let to_remove = by_count.max(by_age) as usize;
    let going: Vec<String> = jobs.into_iter().take(to_remove).map(|(_, id)| id).collect();
    report.examples = going
        .iter()
        .take(10)
        .map(|id| format!("rq:job:{id}"))
        .collect();
    let sample: Vec<String> = going
        .iter()
        .take(BYTES_SAMPLE)
        .map(|id| format!("rq:job:{id}"))
        .collect();
    let results: Vec<String> = going
        .iter()
        .take(BYTES_SAMPLE)
        .map(|id| format!("rq:results:{id}"))
        .collect();
    pacer.take(2 * sample.len() as u64).await;
    let per_job = mean_usage(redis, &sample).await? + mean_usage(redis, &results).await?;
    report.bytes_estimated = (per_job * going.len() as f64) as u64;
    report.jobs = going.len() as u64;
    if !options.apply {
        return Ok(());
    }
    let mut removed = 0u64;
    for batch in going.chunks(options.batch) {
        // Still in the registry's state: RQ may have requeued one meanwhile.
        pacer.take(batch.len() as u64).await;
        let cmds = batch
            .iter()
            .map(|id| {
                let mut cmd = redis::cmd("HGET");
                cmd.arg(format!("rq:job:{id}")).arg("status");
                cmd
            })
            .collect();
        let statuses: Vec<Option<String>> = each(redis, cmds).await?;
        let ids: Vec<&String> = batch
            .iter()
            .zip(statuses)
            .filter(|(_, s)| s.as_deref() == Some(status))
            .map(|(id, _)| id)
            .collect();
        if ids.is_empty() {
            continue;
        }
        let keys: Vec<String> = ids
            .iter()
            .flat_map(|id| {
                std::iter::once(format!("rq:job:{id}"))
                    .chain(RQ_JOB_KEYS.iter().map(move |k| k.replace("{}", id)))
            })
            .collect();
        pacer.take(ids.len() as u64 + 1).await;
        // Keys first, then the ids: a crash in between leaves ids whose jobs
        // are gone, which RQ's own cleanup removes.
        // RQ has no cluster support, so its keys share no hash tag.
        report.keys += unlink(redis, &keys, !redis.is_cluster()).await?;
        let gone: u64 = redis.query(redis::cmd("ZREM").arg(&key).arg(&ids)).await?;
        removed += gone;
        report.batches += 1;
    }
    report.jobs = removed;
    Ok(())
}

/// Celery's result keys (the Redis backend's default key prefixes).
const CELERY_RESULT_GLOBS: [&str; 2] = ["celery-task-meta-*", "celery-taskset-meta-*"];
/// Task states after which a result no longer changes (Celery's
/// `READY_STATES`); PENDING, STARTED and RETRY are work in progress.
const CELERY_READY_STATES: [&str; 3] = ["SUCCESS", "FAILURE", "REVOKED"];

/// Celery's results in the Redis backend: one string of JSON per task (or
/// group), with `status` and `date_done`. They carry a TTL unless
/// `result_expires` is off (the setting that leaks). Each primary is walked
/// with `SCAN MATCH` at the family walk's pace; a result goes when its task
/// is done (`status` in [`CELERY_READY_STATES`]: a pending or running
/// task's entry is never touched) and `date_done` is older than the cutoff,
/// or beyond the newest `keep`. A result whose JSON or date cannot be read
/// is kept and counted as skipped.
async fn celery_results(
    redis: &Redis,
    selection: Selection,
    options: &TrimOptions,
    report: &mut TrimReport,
) -> Result<()> {
    let cutoff_secs = selection
        .older_than
        .map(|age| options.clock.now_ms().saturating_sub(crate::clock::ms(age)) as f64 / 1000.0);
    let primaries = redis.primaries().await?;
    // (date_done, key, node index) of each done task.
    let mut results: Vec<(f64, String, usize)> = Vec::new();
    for (index, primary) in primaries.iter().enumerate() {
        let mut pacer = Pacer::new(options.budget, DEFAULT_BUSY_LATENCY);
        let mut walk = Pacer::new(DEFAULT_KEYS_PER_SECOND, DEFAULT_BUSY_LATENCY);
        for glob in CELERY_RESULT_GLOBS {
            let mut cursor = 0u64;
            loop {
                walk.take(u64::from(TRIM_SCAN_COUNT)).await;
                pacer.take(1).await;
                let (next, keys): (u64, Vec<String>) = primary
                    .redis
                    .query(
                        redis::cmd("SCAN")
                            .arg(cursor)
                            .arg("MATCH")
                            .arg(glob)
                            .arg("COUNT")
                            .arg(TRIM_SCAN_COUNT),
                    )
                    .await?;
                if !keys.is_empty() {
                    pacer.take(keys.len() as u64).await;
                    let mut pipe = redis::pipe();
                    for key in &keys {
                        pipe.cmd("GET").arg(key);
                    }
                    let mut conn = primary.redis.clone();
                    let values: Vec<Option<String>> = pipe.query_async(&mut conn).await?;
                    for (key, value) in keys.into_iter().zip(values) {
                        let Some(value) = value else { continue }; // expired meanwhile
                        match celery_done_at(&value) {
                            Some(done) => results.push((done, key, index)),
                            None => {
                                report.skipped += 1;
                                if report.skipped_examples.len() < 10 {
                                    report.skipped_examples.push(key);
                                }
                            }
                        }
                    }
                }
                cursor = next;
                if cursor == 0 {
                    break;
                }
            }
        }
        report.commands += pacer.commands;
    }
    // Oldest first.
    results.sort_by(|a, b| a.0.total_cmp(&b.0).then_with(|| a.1.cmp(&b.1)));
    let by_count = selection
        .keep
        .map_or(0, |keep| results.len().saturating_sub(keep as usize));
    let by_age = cutoff_secs.map_or(0, |cutoff| {
        results.iter().take_while(|r| r.0 < cutoff).count()
    });
    let going = &results[..by_count.max(by_age)];
    report.keys = going.len() as u64;
    report.examples = going.iter().take(10).map(|r| r.1.clone()).collect();
    // Measured as the memory report measures keys, on their nodes.
    let (mut sampled, mut sampled_bytes) = (0usize, 0.0);
    for (index, primary) in primaries.iter().enumerate() {
        let sample: Vec<String> = going
            .iter()
            .filter(|r| r.2 == index)
            .take(BYTES_SAMPLE)
            .map(|r| r.1.clone())
            .collect();
        sampled_bytes += mean_usage(&primary.redis, &sample).await? * sample.len() as f64;
        sampled += sample.len();
    }
    if sampled > 0 {
        report.bytes_estimated = (sampled_bytes / sampled as f64 * going.len() as f64) as u64;
    }
    if !options.apply {
        return Ok(());
    }
    let mut removed = 0u64;
    for (index, primary) in primaries.iter().enumerate() {
        let mut pacer = Pacer::new(options.budget, DEFAULT_BUSY_LATENCY);
        let keys: Vec<&String> = going
            .iter()
            .filter(|r| r.2 == index)
            .map(|r| &r.1)
            .collect();
        for chunk in keys.chunks(options.batch) {
            pacer.take(chunk.len() as u64).await;
            // One UNLINK per key: a node's keys are in many slots.
            let mut pipe = redis::pipe();
            for key in chunk {
                pipe.cmd("UNLINK").arg(*key);
            }
            let mut conn = primary.redis.clone();
            let unlinked: Vec<u64> = pipe.query_async(&mut conn).await?;
            removed += unlinked.iter().sum::<u64>();
            report.batches += 1;
        }
        report.commands += pacer.commands;
    }
    report.keys = removed;
    Ok(())
}

/// When a Celery result's task finished (`date_done`, UTC, with or
/// without `+00:00`), if its state is final; None otherwise.
fn celery_done_at(value: &str) -> Option<f64> {
    let json: serde_json::Value = serde_json::from_str(value).ok()?;
    let status = json.get("status")?.as_str()?;
    if !CELERY_READY_STATES.contains(&status) {
        return None;
    }
    let date = json.get("date_done")?.as_str()?;
    let date = date
        .strip_suffix("+00:00")
        .or_else(|| date.strip_suffix('Z'))
        .unwrap_or(date);
    let at = humantime::parse_rfc3339_weak(date).ok()?;
    Some(at.duration_since(std::time::UNIX_EPOCH).ok()?.as_secs_f64())
}

/// `bytes × part / whole` (0 for an empty whole).
fn share_of(bytes: f64, part: u64, whole: u64) -> u64 {
    if whole == 0 {
        0
    } else {
        (bytes * part as f64 / whole as f64) as u64
    }
}

/// Sidekiq's retry set is scored by each job's *next* retry, so neither its
/// order nor its scores say how old a job is: a job is as old as its first
/// failure, `failed_at` in its JSON. The set is walked with `ZSCAN` (safe
/// while members go), and the jobs that first failed before the cutoff are
/// removed in batches; `--keep` has no oldest to pick here and is refused.
async fn sidekiq_retry_by_age(
    redis: &Redis,
    key: &str,
    selection: Selection,
    options: &TrimOptions,
    pacer: &mut Pacer,
    report: &mut TrimReport,
) -> Result<()> {
    if selection.keep.is_some() {
        return Err(Error::invalid(
            "Sidekiq's retry set is ordered by each job's next retry, not by age, so --keep \
             cannot pick the oldest jobs there; use --older-than (by the job's first failure)",
        ));
    }
    let Some(age) = selection.older_than else {
        return Err(Error::invalid("trim sidekiq retry needs --older-than"));
    };
    let cutoff_secs = options.clock.now_ms().saturating_sub(crate::clock::ms(age)) as f64 / 1000.0;
    pacer.take(2).await;
    let card: u64 = redis.query(redis::cmd("ZCARD").arg(key)).await?;
    let set_bytes = mean_usage(redis, &[key.to_string()]).await?;
    let mut cursor = 0u64;
    let mut matched = 0u64;
    let mut removed = 0u64;
    loop {
        pacer.take(1).await;
        let (next, members): (u64, Vec<String>) = redis
            .query(
                redis::cmd("ZSCAN")
                    .arg(key)
                    .arg(cursor)
                    .arg("COUNT")
                    .arg(options.batch),
            )
            .await?;
        // ZSCAN answers member, score, member, score…
        let old: Vec<&String> = members
            .iter()
            .step_by(2)
            .filter(|job| first_failed_at(job).is_some_and(|t| t < cutoff_secs))
            .collect();
        matched += old.len() as u64;
        if options.apply && !old.is_empty() {
            pacer.take(1).await;
            let gone: u64 = redis.query(redis::cmd("ZREM").arg(key).arg(&old)).await?;
            removed += gone;
            report.batches += 1;
        }
        cursor = next;
        if cursor == 0 {
            break;
        }
    }
    // ZSCAN may return a member twice; what was removed is exact.
    report.jobs = if options.apply { removed } else { matched };
    report.bytes_estimated = share_of(set_bytes, report.jobs, card);
    Ok(())
}

/// When a Sidekiq job first failed (`failed_at`, epoch seconds), from its
/// JSON; None for a member that is not a Sidekiq job (it is kept).
fn first_failed_at(job: &str) -> Option<f64> {
    let value: serde_json::Value = serde_json::from_str(job).ok()?;
    value.get("failed_at")?.as_f64()
}

async fn plimsoll(
    redis: &Redis,
    prefix: &str,
    queue: &str,
    retention: Retention,
    options: &TrimOptions,
    report: &mut TrimReport,
) -> Result<()> {
    let config = QueueConfig {
        prefix: prefix.to_string(),
        retention,
        clock: options.clock.clone(),
        ..QueueConfig::default()
    };
    let queue = Queue::new(redis.clone(), queue, config)?;
    let keys = queue.keys().clone();
    let now = options.clock.now_ms();
    let stats: BTreeMap<String, u64> = redis.query(redis::cmd("HGETALL").arg(keys.stats())).await?;
    let mut jobs = 0u64;
    let mut bytes = 0u64;
    for (set, bounds, field) in [
        (
            keys.completed(),
            retention.completed_args(),
            "completed_bytes",
        ),
        (keys.dead(), retention.dead_args(), "dead_bytes"),
    ] {
        let card: u64 = redis.query(redis::cmd("ZCARD").arg(set)).await?;
        if card == 0 {
            continue;
        }
        let [max_count, max_age, max_bytes] = bounds;
        let set_bytes = stats.get(field).copied().unwrap_or(0);
        let old: u64 = if max_count == 0 {
            card
        } else {
            redis
                .query(
                    redis::cmd("ZCOUNT")
                        .arg(set)
                        .arg("-inf")
                        .arg(format!("({}", now.saturating_sub(max_age))),
                )
                .await?
        };
        let over_bytes = if max_count == 0 || set_bytes <= max_bytes {
            0
        } else {
            ((set_bytes - max_bytes) as f64 / set_bytes as f64 * card as f64).ceil() as u64
        };
        let n = card
            .saturating_sub(max_count)
            .max(old)
            .max(over_bytes)
            .min(card);
        jobs += n;
        bytes += (set_bytes as f64 * n as f64 / card as f64) as u64;
    }
    report.jobs = jobs;
    report.bytes_estimated = bytes;
    report.examples = vec![keys.completed().to_string(), keys.dead().to_string()];
    if !options.apply {
        return Ok(());
    }
    let mut removed = 0;
    loop {
        let budget = options.batch.min(10_000);
        let trimmed = queue.trim_retained(budget).await?;
        report.batches += 1;
        report.commands += 1;
        removed += trimmed.total();
        if trimmed.total() == 0 {
            break;
        }
    }
    report.jobs = removed;
    Ok(())
}

/// The `limit` keys with the longest idle times offered, kept in a heap.
struct LongestIdle {
    limit: usize,
    heap: std::collections::BinaryHeap<std::cmp::Reverse<(u64, String)>>,
}

impl LongestIdle {
    fn new(limit: usize) -> Self {
        Self {
            limit,
            heap: std::collections::BinaryHeap::new(),
        }
    }

    fn offer(&mut self, idle: u64, key: String) {
        if self.heap.len() < self.limit {
            self.heap.push(std::cmp::Reverse((idle, key)));
        } else if self
            .heap
            .peek()
            .is_some_and(|std::cmp::Reverse((least, _))| idle > *least)
        {
            self.heap.pop();
            self.heap.push(std::cmp::Reverse((idle, key)));
        }
    }

    /// Longest idle first.
    fn into_sorted(self) -> Vec<(u64, String)> {
        let mut keys: Vec<(u64, String)> = self.heap.into_iter().map(|r| r.0).collect();
        keys.sort_by_key(|k| std::cmp::Reverse(k.0));
        keys
    }
}

/// For a pattern written as a glob (`session:*`), which as a family
/// pattern matches nothing: what to write instead. (It used to trim
/// nothing and say nothing.)
fn glob_hint(pattern: &str) -> Option<String> {
    // A glob character outside the `<…>` placeholders.
    let globby = |segment: &str| {
        let mut in_placeholder = false;
        segment.chars().any(|c| match c {
            '<' => {
                in_placeholder = true;
                false
            }
            '>' => {
                in_placeholder = false;
                false
            }
            '*' | '?' | '[' => !in_placeholder,
            _ => false,
        })
    };
    if !pattern.split(':').any(globby) {
        return None;
    }
    let suggestion: Vec<String> = pattern
        .split(':')
        .map(|segment| {
            if globby(segment) {
                "<*>".to_string()
            } else {
                segment.to_string()
            }
        })
        .collect();
    Some(format!(
        "{pattern:?} is a glob, but trim family takes a family pattern as `plimsoll memory` \
         prints it, where identifiers are placeholders: e.g. 'session:<uuid>', or {:?} for any \
         one segment in place of each glob",
        suggestion.join(":")
    ))
}

/// A family pattern turned into a `SCAN MATCH` glob: placeholders become
/// `*`, glob characters in literal parts are escaped.
pub fn pattern_glob(pattern: &str) -> String {
    let mut out = String::new();
    let mut in_placeholder = false;
    for c in pattern.chars() {
        match c {
            '<' => {
                in_placeholder = true;
                out.push('*');
            }
            '>' if in_placeholder => in_placeholder = false,
            _ if in_placeholder => {}
            '*' | '?' | '[' | ']' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            _ => out.push(c),
        }
    }
    out
}

/// Whether `key` belongs to the generic family `pattern`: its collapsed
/// segments equal the pattern's, where `<*>` stands for any one segment.
pub fn pattern_matches(pattern: &str, key: &str) -> bool {
    let wanted: Vec<&str> = pattern.split(':').collect();
    let got: Vec<_> = key.split(':').map(collapse_segment).collect();
    wanted.len() == got.len()
        && wanted
            .iter()
            .zip(&got)
            .all(|(w, g)| *w == "<*>" || *w == g.as_ref())
}

/// A key of the pattern's shape, to tell which layout the pattern is of.
fn example_key(pattern: &str) -> String {
    pattern
        .replace("<uuid>", "3f2a9c1e-8b7d-4e6f-a5b4-c3d2e1f0a9b8")
        .replace("<hash>", "5d41402abc4b2a76b9719d911017c592")
        .replace("<date>", "2024-01-05")
        .replace("<id>", "01HQZ8M9Z5X3K7V2B4N6P8R0TW")
        .replace("<n>", "42")
        .replace("<*>", "x")
}

async fn family(
    redis: &Redis,
    pattern: &str,
    selection: Selection,
    options: &TrimOptions,
    report: &mut TrimReport,
) -> Result<()> {
    let classifier = Classifier::default();
    let family = classifier.classify(example_key(pattern).as_bytes());
    if family.layout != Layout::Generic {
        return Err(Error::invalid(format!(
            "{pattern} is part of a {} queue ({}); trim it with the queue's own target \
             (plimsoll, bullmq, sidekiq), which keeps the queue consistent",
            family.layout.name(),
            family.name
        )));
    }
    if let Some(hint) = glob_hint(pattern) {
        return Err(Error::invalid(hint));
    }
    if pattern.is_empty() || pattern.split(':').all(|s| s == "<*>") {
        return Err(Error::invalid(format!(
            "family pattern {pattern:?} would match every key"
        )));
    }
    let glob = pattern_glob(pattern);
    let primaries = redis.primaries().await?;
    // Pass 1: count the family and how long each key has been idle.
    let mut idle_histogram: BTreeMap<u64, u64> = BTreeMap::new();
    let mut total = 0u64;
    // Per node, the longest idle keys seen: the first to go, whichever
    // rule decides, so the examples and the bytes are of keys that would
    // really go (the first keys walked included hot ones that stay).
    let mut longest_idle: Vec<LongestIdle> = Vec::with_capacity(primaries.len());
    let pass_started = Instant::now();
    let mut skipped = Skipped::default();
    for primary in &primaries {
        let mut pacer = Pacer::new(options.budget, DEFAULT_BUSY_LATENCY);
        let mut walker = Walker::new(&primary.redis, &glob, pattern, &classifier);
        let mut oldest = LongestIdle::new(BYTES_SAMPLE);
        while let Some(batch) = walker.next(&mut pacer).await? {
            for (key, idle) in batch {
                total += 1;
                *idle_histogram.entry(idle).or_default() += 1;
                oldest.offer(idle, key);
            }
        }
        report.commands += pacer.commands;
        longest_idle.push(oldest);
        skipped.add(walker.skipped);
    }
    report.skipped = skipped.count;
    report.skipped_examples = skipped.examples;
    // What goes: every key idle for `older_than` or longer, and the longest
    // idle beyond `keep`.
    let age_secs = selection.older_than.map(|a| a.as_secs());
    let by_age = age_secs.map_or(0, |age| {
        idle_histogram.range(age..).map(|(_, n)| n).sum::<u64>()
    });
    let by_count = selection.keep.map_or(0, |keep| total.saturating_sub(keep));
    let to_remove = by_age.max(by_count);
    // Remove idle > cutoff, and `quota` of the keys at idle == cutoff.
    let (mut cutoff, mut quota) = (u64::MAX, 0);
    if by_count > by_age {
        let mut above = 0;
        for (idle, n) in idle_histogram.iter().rev() {
            if above + n >= by_count {
                (cutoff, quota) = (*idle, by_count - above);
                break;
            }
            above += n;
        }
    } else if let Some(age) = age_secs {
        (cutoff, quota) = (age.saturating_sub(1), 0);
    }
    // Of the longest idle, those the cut-off takes, measured on their node.
    let (mut sampled, mut sampled_bytes) = (0usize, 0.0);
    let mut going: Vec<(u64, String)> = Vec::new();
    for (primary, oldest) in primaries.iter().zip(longest_idle) {
        let keys: Vec<(u64, String)> = oldest
            .into_sorted()
            .into_iter()
            .filter(|(idle, _)| *idle > cutoff || (*idle == cutoff && quota > 0))
            .collect();
        let names: Vec<String> = keys.iter().map(|(_, key)| key.clone()).collect();
        let mut pacer = Pacer::new(options.budget, DEFAULT_BUSY_LATENCY);
        pacer.take(names.len() as u64).await;
        sampled_bytes += mean_usage(&primary.redis, &names).await? * names.len() as f64;
        sampled += names.len();
        report.commands += pacer.commands;
        going.extend(keys);
    }
    going.sort_by_key(|k| std::cmp::Reverse(k.0));
    let mean = if sampled > 0 {
        sampled_bytes / sampled as f64
    } else {
        0.0
    };
    report.bytes_estimated = (mean * to_remove as f64) as u64;
    report.keys = to_remove;
    report.examples = going.into_iter().take(10).map(|(_, key)| key).collect();
    if !options.apply || to_remove == 0 {
        return Ok(());
    }
    // Pass 2. Idle times of keys nobody touched have grown by the time since
    // pass 1; shift the cut-off by as much. Keys touched since are younger
    // and stay.
    let cutoff = cutoff.saturating_add(pass_started.elapsed().as_secs());
    let mut removed = 0u64;
    for primary in &primaries {
        let mut pacer = Pacer::new(options.budget, DEFAULT_BUSY_LATENCY);
        let mut walker = Walker::new(&primary.redis, &glob, pattern, &classifier);
        while removed < to_remove
            && let Some(batch) = walker.next(&mut pacer).await?
        {
            let mut doomed = Vec::new();
            for (key, idle) in batch {
                if removed + doomed.len() as u64 >= to_remove {
                    break;
                }
                if idle > cutoff || (idle == cutoff && quota > 0) {
                    if idle == cutoff {
                        quota -= 1;
                    }
                    doomed.push(key);
                }
            }
            for chunk in doomed.chunks(options.batch) {
                pacer.take(chunk.len() as u64).await;
                let mut pipe = redis::pipe();
                for key in chunk {
                    pipe.cmd("UNLINK").arg(key);
                }
                let mut conn = primary.redis.clone();
                let unlinked: Vec<u64> = pipe.query_async(&mut conn).await?;
                removed += unlinked.iter().sum::<u64>();
                report.batches += 1;
            }
        }
        report.commands += pacer.commands;
    }
    report.keys = removed;
    Ok(())
}

/// Keys a generic trim left alone because they belong to a known layout.
#[derive(Debug, Default)]
struct Skipped {
    count: u64,
    /// `key (what it is)`, the first few.
    examples: Vec<String>,
}

impl Skipped {
    const EXAMPLES: usize = 10;

    fn note(&mut self, key: &str, family: &super::attribute::families::Family) {
        self.count += 1;
        if self.examples.len() < Self::EXAMPLES {
            self.examples.push(format!("{key} ({})", family.name));
        }
    }

    fn add(&mut self, other: Skipped) {
        self.count += other.count;
        let room = Self::EXAMPLES.saturating_sub(self.examples.len());
        self.examples.extend(other.examples.into_iter().take(room));
    }
}

/// Walks one node with `SCAN MATCH glob`, keeps the keys of the family, and
/// asks their idle time (`OBJECT IDLETIME`), one SCAN batch at a time. A key
/// that matches the pattern but belongs to a known layout is left out (and
/// counted in `skipped`), in every batch.
struct Walker<'a> {
    node: &'a Redis,
    glob: &'a str,
    pattern: &'a str,
    classifier: &'a Classifier,
    skipped: Skipped,
    cursor: u64,
    done: bool,
    /// Buckets visited per second: a command budget alone would let the
    /// SCANs keep Redis busy most of the time.
    keys: Pacer,
}

impl<'a> Walker<'a> {
    fn new(node: &'a Redis, glob: &'a str, pattern: &'a str, classifier: &'a Classifier) -> Self {
        Self {
            node,
            glob,
            pattern,
            classifier,
            skipped: Skipped::default(),
            cursor: 0,
            done: false,
            keys: Pacer::new(DEFAULT_KEYS_PER_SECOND, DEFAULT_BUSY_LATENCY),
        }
    }

    /// The next batch of (key, idle seconds); `None` when the walk is over.
    async fn next(&mut self, pacer: &mut Pacer) -> Result<Option<Vec<(String, u64)>>> {
        if self.done {
            return Ok(None);
        }
        self.keys.take(u64::from(TRIM_SCAN_COUNT)).await;
        pacer.take(1).await;
        let sent = Instant::now();
        let (next, keys): (u64, Vec<String>) = self
            .node
            .query(
                redis::cmd("SCAN")
                    .arg(self.cursor)
                    .arg("MATCH")
                    .arg(self.glob)
                    .arg("COUNT")
                    .arg(TRIM_SCAN_COUNT),
            )
            .await?;
        pacer.observe(sent.elapsed());
        self.keys.observe(sent.elapsed());
        self.cursor = next;
        self.done = next == 0;
        let mut members = Vec::with_capacity(keys.len());
        for key in keys {
            if !pattern_matches(self.pattern, &key) {
                continue;
            }
            let family = self.classifier.classify(key.as_bytes());
            if family.layout == Layout::Generic {
                members.push(key);
            } else {
                self.skipped.note(&key, &family);
            }
        }
        if members.is_empty() {
            return Ok(Some(Vec::new()));
        }
        let mut pipe = redis::pipe();
        for key in &members {
            pipe.cmd("OBJECT").arg("IDLETIME").arg(key);
        }
        pacer.take(members.len() as u64).await;
        let mut conn = self.node.clone();
        let idles: Vec<Option<u64>> = match pipe.query_async(&mut conn).await {
            Ok(idles) => idles,
            Err(err) if err.to_string().contains("LFU") => {
                return Err(Error::invalid(
                    "Redis runs an LFU maxmemory-policy, under which OBJECT IDLETIME is not \
                     kept; a generic trim cannot tell old keys from new ones there",
                ));
            }
            Err(err) => return Err(err.into()),
        };
        // A key that vanished since SCAN has no idle time and is skipped.
        Ok(Some(
            members
                .into_iter()
                .zip(idles)
                .filter_map(|(key, idle)| idle.map(|i| (key, i)))
                .collect(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn family(pattern: &str) -> super::super::attribute::FamilyReport {
        let f = Classifier::default().classify(pattern.as_bytes());
        super::super::attribute::FamilyReport {
            pattern: f.pattern,
            name: f.name,
            layout: f.layout,
            queue: f.queue,
            keys: 1,
            bytes: 1,
            bytes_error: 0,
            sampled: 1,
            sampled_estimated: 0,
            no_ttl_share: 1.0,
            types: BTreeMap::new(),
            growth_bytes: None,
            growth_keys: None,
            growth_interval_secs: None,
            suspected_leak: false,
        }
    }

    #[test]
    fn each_trimmable_family_gets_the_dry_run_that_trims_it() {
        let command = |key: &str| trim_command(&family(key));
        assert_eq!(
            command("bull:mail:completed").as_deref(),
            Some("plimsoll trim bullmq mail --set completed --keep 1000")
        );
        assert_eq!(
            command("dead").as_deref(),
            Some("plimsoll trim sidekiq dead --older-than 7d")
        );
        assert_eq!(
            command("session:3f2a5b7c-1d2e-4f60-8a9b-0c1d2e3f4a5b").as_deref(),
            Some("plimsoll trim family 'session:<uuid>' --older-than 7d")
        );
        assert_eq!(command("rq:job:3f2a5b7c-1d2e-4f60-8a9b-0c1d2e3f4a5b"), None);
        assert_eq!(
            command("celery-task-meta-3f2a5b7c-1d2e-4f60-8a9b-0c1d2e3f4a5b").as_deref(),
            Some("plimsoll trim celery results --older-than 7d")
        );
        assert_eq!(
            command("rq:finished:default").as_deref(),
            Some("plimsoll trim rq default --registry finished --older-than 7d")
        );
        assert_eq!(command("bull:mail:wait"), None);
        assert_eq!(shell_word("it's"), "'it'\\''s'");
    }

    // `trim family 'session:*'` matched nothing and said nothing.
    #[test]
    fn a_glob_gets_a_hint_at_the_family_pattern_to_write() {
        let hint = glob_hint("session:*").unwrap();
        assert!(hint.contains("'session:<uuid>'"), "{hint}");
        assert!(hint.contains("\"session:<*>\""), "{hint}");
        assert_eq!(glob_hint("cart:<*>:items"), None);
        assert_eq!(glob_hint("session:<uuid>"), None);
        assert!(glob_hint("user:<n>:c?rt").is_some());
    }

    #[test]
    fn patterns_become_escaped_globs() {
        assert_eq!(pattern_glob("session:<uuid>"), "session:*");
        assert_eq!(pattern_glob("cart:<*>:items"), "cart:*:items");
        assert_eq!(pattern_glob("we[ird]*:<n>"), "we\\[ird\\]\\*:*");
    }

    #[test]
    fn keys_match_their_family_only() {
        let p = "session:<uuid>";
        assert!(pattern_matches(
            p,
            "session:3f2a9c1e-8b7d-4e6f-a5b4-c3d2e1f0a9b8"
        ));
        assert!(!pattern_matches(
            p,
            "session:3f2a9c1e-8b7d-4e6f-a5b4-c3d2e1f0a9b8:extra"
        ));
        assert!(!pattern_matches(p, "session:42"));
        assert!(!pattern_matches(
            p,
            "sessions:3f2a9c1e-8b7d-4e6f-a5b4-c3d2e1f0a9b8"
        ));
        assert!(pattern_matches("cart:<*>:items", "cart:alice:items"));
        assert!(!pattern_matches("cart:<*>:items", "cart:alice:total"));
    }

    #[test]
    fn a_selection_is_required() {
        assert!(Selection::default().check().is_err());
    }
}
