//! The memory report: families with keys, bytes and their error, share
//! without TTL, growth since the previous report, and suspected leaks.
//!
//! BullMQ keeps one hash per job (`bull:<queue>:<id>`) whose name does not
//! say the job's state; the sets that do (`:completed`, `:failed`) hold only
//! ids. So that "BullMQ queue mail: completed jobs" carries the bytes of the
//! completed jobs, the job hashes (and logs) are apportioned to completed,
//! failed and the rest by the sizes of those sets (`ZCARD`, two commands per
//! queue), on the assumption that jobs in different states are of similar
//! size.
//!
//! A **suspected leak** is a family whose keys (or bytes, by more than the
//! error) grew in each of the last [`LEAK_MIN_STEPS`] intervals between
//! reports, and whose keys have no TTL (at least [`LEAK_MIN_NO_TTL`] of the
//! sample).

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use super::families::{Layout, Role};
use super::overhead::OutsideKeys;
use super::scan::{JobState, Moments, NodeScan, Tally};
use crate::connection::Redis;
use crate::error::Result;

/// Consecutive growing intervals that make a leak suspect.
pub const LEAK_MIN_STEPS: usize = 3;
/// Share of keys without TTL that makes a growing family a leak suspect.
pub const LEAK_MIN_NO_TTL: f64 = 0.9;
/// Reports remembered for growth and leak detection.
pub const DEFAULT_REPORT_HISTORY: usize = 48;
/// 95% two-sided.
const Z_95: f64 = 1.96;

/// One node's part of the walk.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct NodeScanStats {
    /// `host:port`.
    pub node: String,
    /// `DBSIZE` at the start.
    pub keys_total: u64,
    /// Keys the walk visited.
    pub keys_scanned: u64,
    /// Whether the walk covered the whole keyspace (else counts are scaled).
    pub complete: bool,
    /// Commands sent to this node.
    pub commands: u64,
    /// Commands per second, on average, over the walk.
    pub commands_per_sec: f64,
    /// Times the walk slowed down because Redis answered slowly.
    pub backoffs: u64,
    /// Seconds the walk took.
    pub duration_secs: f64,
    /// `used_memory` at the start.
    pub used_memory: u64,
    /// Redis' memory outside its keys at the start (None: `MEMORY STATS`
    /// refused).
    #[serde(default)]
    pub outside_keys: Option<OutsideKeys>,
}

/// One family in the report.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FamilyReport {
    /// The collapsed pattern (the family's identity).
    pub pattern: String,
    /// For people.
    pub name: String,
    /// Whose layout.
    pub layout: Layout,
    /// The queue, for queue layouts.
    pub queue: Option<String>,
    /// Keys (estimated when the walk was partial).
    pub keys: u64,
    /// Bytes, estimated from the sampled `MEMORY USAGE`.
    pub bytes: u64,
    /// 95% error of `bytes`, ± bytes.
    pub bytes_error: u64,
    /// Keys measured (each as Redis counts it: `usage.rs`).
    pub sampled: u64,
    /// Of those, keys too big to count exactly, which Redis estimated from
    /// their first elements; the error includes an allowance for them.
    #[serde(default)]
    pub sampled_estimated: u64,
    /// Share of measured keys without a TTL.
    pub no_ttl_share: f64,
    /// Redis types among the measured keys.
    pub types: BTreeMap<String, u64>,
    /// Bytes gained since the previous report (None: no previous report).
    pub growth_bytes: Option<i64>,
    /// Keys gained since the previous report.
    pub growth_keys: Option<i64>,
    /// Seconds since the previous report.
    pub growth_interval_secs: Option<f64>,
    /// Grows steadily and has no TTL.
    pub suspected_leak: bool,
}

/// A memory report.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct MemoryReport {
    /// When the walk started (ms since the epoch).
    pub at_ms: u64,
    /// Seconds from start to report.
    pub duration_secs: f64,
    /// Per node.
    pub nodes: Vec<NodeScanStats>,
    /// Keys in all nodes.
    pub keys_total: u64,
    /// Keys visited.
    pub keys_scanned: u64,
    /// Whether every node was walked completely.
    pub complete: bool,
    /// Commands sent, all nodes.
    pub commands: u64,
    /// The budget, commands per second per node.
    pub budget_per_node: u32,
    /// `used_memory`, all nodes.
    pub used_memory: u64,
    /// Families, largest first.
    pub families: Vec<FamilyReport>,
    /// Where `used_memory` goes: keys, Redis outside its keys, and the
    /// rest.
    #[serde(default)]
    pub accounting: Accounting,
}

/// `used_memory` = the keys + Redis outside its keys + what neither
/// explains.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Accounting {
    /// All families' bytes.
    pub keys_bytes: u64,
    /// 95% error of `keys_bytes` (families' errors combined).
    pub keys_bytes_error: u64,
    /// Summed over nodes (None when a node refused `MEMORY STATS`).
    pub outside_keys: Option<OutsideKeys>,
    /// `used_memory − keys − outside_keys`: memory nobody accounted for
    /// (None without `outside_keys`). Beyond the keys' error it means
    /// families were missed or mismeasured, or memory moved during the
    /// walk.
    pub unexplained_bytes: Option<i64>,
}

impl Accounting {
    /// Whether the unexplained rest is larger than the keys' error and a
    /// twentieth of `used_memory`: too much for the report to be trusted.
    pub fn too_much_unexplained(&self, used_memory: u64) -> bool {
        self.unexplained_bytes
            .is_some_and(|rest| rest.unsigned_abs() > self.keys_bytes_error.max(used_memory / 20))
    }
}

impl MemoryReport {
    /// Families that grew since the previous report, fastest first.
    pub fn growing(&self) -> Vec<&FamilyReport> {
        let mut growing: Vec<&FamilyReport> = self
            .families
            .iter()
            .filter(|f| f.growth_bytes.unwrap_or(0) > 0 || f.growth_keys.unwrap_or(0) > 0)
            .collect();
        growing.sort_by(|a, b| {
            b.suspected_leak.cmp(&a.suspected_leak).then(
                b.growth_bytes
                    .unwrap_or(0)
                    .cmp(&a.growth_bytes.unwrap_or(0)),
            )
        });
        growing
    }

    /// Families suspected of leaking, fastest growing first.
    pub fn suspected_leaks(&self) -> Vec<&FamilyReport> {
        self.growing()
            .into_iter()
            .filter(|f| f.suspected_leak)
            .collect()
    }

    /// The family with this pattern.
    pub fn family(&self, pattern: &str) -> Option<&FamilyReport> {
        self.families.iter().find(|f| f.pattern == pattern)
    }
}

/// Builds the report from the node walks. `redis` is used for the BullMQ
/// state counts (`ZCARD`, routed to the right node on a cluster).
pub(crate) async fn assemble(
    redis: &Redis,
    at_ms: u64,
    duration_secs: f64,
    budget: u32,
    scans: Vec<NodeScan>,
) -> Result<MemoryReport> {
    let mut estimates: HashMap<String, Estimate> = HashMap::new();
    let mut nodes = Vec::new();
    for scan in scans {
        let p = if scan.complete || scan.dbsize == 0 {
            1.0
        } else {
            (scan.scanned as f64 / scan.dbsize as f64).min(1.0)
        };
        for (pattern, tally) in scan.tallies {
            let e = Estimate::of(&tally, p, scan.complete);
            estimates
                .entry(pattern)
                .and_modify(|x| x.add(&e))
                .or_insert(e);
        }
        let secs = scan.duration.as_secs_f64();
        nodes.push(NodeScanStats {
            node: scan.node,
            keys_total: scan.dbsize,
            keys_scanned: scan.scanned,
            complete: scan.complete,
            commands: scan.commands,
            commands_per_sec: if secs > 0.0 {
                scan.commands as f64 / secs
            } else {
                0.0
            },
            backoffs: scan.backoffs,
            duration_secs: secs,
            used_memory: scan.used_memory,
            outside_keys: scan.outside,
        });
    }
    apportion_bullmq(redis, &mut estimates).await?;
    let mut families: Vec<FamilyReport> = estimates.into_values().map(Estimate::report).collect();
    families.sort_by(|a, b| b.bytes.cmp(&a.bytes).then(a.pattern.cmp(&b.pattern)));
    nodes.sort_by(|a, b| a.node.cmp(&b.node));
    let accounting = account(&families, &nodes);
    Ok(MemoryReport {
        at_ms,
        duration_secs,
        keys_total: nodes.iter().map(|n| n.keys_total).sum(),
        keys_scanned: nodes.iter().map(|n| n.keys_scanned).sum(),
        complete: nodes.iter().all(|n| n.complete),
        commands: nodes.iter().map(|n| n.commands).sum(),
        used_memory: nodes.iter().map(|n| n.used_memory).sum(),
        budget_per_node: budget,
        nodes,
        families,
        accounting,
    })
}

fn account(families: &[FamilyReport], nodes: &[NodeScanStats]) -> Accounting {
    let keys_bytes: u64 = families.iter().map(|f| f.bytes).sum();
    // Families are independent samples: their variances add.
    let variance: f64 = families
        .iter()
        .map(|f| (f.bytes_error as f64 / Z_95).powi(2))
        .sum();
    let outside_keys = nodes.iter().try_fold(OutsideKeys::default(), |mut sum, n| {
        sum.add(n.outside_keys.as_ref()?);
        Some(sum)
    });
    let used: u64 = nodes.iter().map(|n| n.used_memory).sum();
    Accounting {
        keys_bytes,
        keys_bytes_error: (Z_95 * variance.sqrt()).round() as u64,
        unexplained_bytes: outside_keys.map(|o| used as i64 - keys_bytes as i64 - o.total() as i64),
        outside_keys,
    }
}

/// A family's estimate, summed over nodes.
#[derive(Debug, Clone)]
struct Estimate {
    tally: Tally,
    keys: f64,
    bytes: f64,
    variance: f64,
    /// Every key of the family was walked (the sample's finite population
    /// correction applies).
    complete: bool,
}

/// The allowance, as a share of their bytes, for keys too big to measure
/// exactly (Redis extrapolated them from their first 20,000 elements).
/// Not a statistical bound: an extrapolation over elements in dict order
/// is close for keys whose elements are alike, and the report says how
/// many keys it rests on.
pub const ESTIMATED_KEY_ALLOWANCE: f64 = 0.10;

impl Estimate {
    fn empty(tally: Tally) -> Self {
        Self {
            tally,
            keys: 0.0,
            bytes: 0.0,
            variance: 0.0,
            complete: true,
        }
    }

    /// Keys × mean size, from the walk of one node that saw a share `p` of
    /// its keys. The variance is that of the mean (with the finite
    /// population correction on a complete walk), that of the key count
    /// when the walk was partial, and the allowance for estimated keys.
    fn of(tally: &Tally, p: f64, complete: bool) -> Self {
        let seen = tally.keys as f64;
        let keys = seen / p;
        let (mean, var_mean) = mean_and_its_variance(&tally.sizes, seen, complete);
        // Var(keys) of a binomial sample scaled by 1/p.
        let var_keys = if p < 1.0 {
            seen * (1.0 - p) / (p * p)
        } else {
            0.0
        };
        let bytes = mean * keys;
        let allowance = if tally.sizes.sum > 0.0 {
            ESTIMATED_KEY_ALLOWANCE * bytes * tally.estimated.sum / tally.sizes.sum / Z_95
        } else {
            0.0
        };
        Self {
            tally: tally.clone(),
            keys,
            bytes,
            variance: keys * keys * var_mean + mean * mean * var_keys + allowance * allowance,
            complete,
        }
    }

    fn add(&mut self, other: &Estimate) {
        self.keys += other.keys;
        self.bytes += other.bytes;
        self.variance += other.variance;
        self.complete &= other.complete;
        let mut t = other.tally.clone();
        t.family = self.tally.family.clone();
        t.keys = 0;
        self.tally.absorb(t);
    }

    /// Moves `share` of this estimate's keys and bytes into `into`.
    fn give(&mut self, share: f64, into: &mut Estimate) {
        let share = share.clamp(0.0, 1.0);
        let (keys, bytes) = (self.keys * share, self.bytes * share);
        self.keys -= keys;
        self.bytes -= bytes;
        into.keys += keys;
        into.bytes += bytes;
        into.variance += self.variance * share * share;
        self.variance *= (1.0 - share) * (1.0 - share);
        into.inherit_measurements(&self.tally, share);
    }

    /// `into` now stands on `share` of the keys this tally measured: it
    /// states their TTLs and types.
    fn inherit_measurements(&mut self, from: &Tally, share: f64) {
        let part = |n: u64| (n as f64 * share).round() as u64;
        self.tally.no_ttl += part(from.no_ttl);
        self.tally.sizes.n += part(from.sizes.n);
        self.tally.estimated.n += part(from.estimated.n);
        for (k, v) in &from.types {
            *self.tally.types.entry(k.clone()).or_default() += part(*v);
        }
    }

    fn report(self) -> FamilyReport {
        let f = self.tally.family;
        let sampled = self.tally.sizes.n;
        FamilyReport {
            pattern: f.pattern,
            name: f.name,
            layout: f.layout,
            queue: f.queue,
            keys: self.keys.round() as u64,
            bytes: self.bytes.round().max(0.0) as u64,
            bytes_error: (Z_95 * self.variance.sqrt()).round() as u64,
            sampled,
            sampled_estimated: self.tally.estimated.n,
            no_ttl_share: if sampled > 0 {
                (self.tally.no_ttl as f64 / sampled as f64).min(1.0)
            } else {
                0.0
            },
            types: self.tally.types,
            growth_bytes: None,
            growth_keys: None,
            growth_interval_secs: None,
            suspected_leak: false,
        }
    }
}

/// The mean of a sample of `population` keys and the variance of that
/// mean (finite population correction when the walk saw them all).
fn mean_and_its_variance(sizes: &Moments, population: f64, complete: bool) -> (f64, f64) {
    let Some(mean) = sizes.mean() else {
        return (0.0, 0.0);
    };
    let n = sizes.n as f64;
    let fpc = if complete && population > 0.0 {
        (1.0 - n / population).max(0.0)
    } else {
        1.0
    };
    // Keys of one shape often measure exactly alike (Redis allocates in
    // size classes), so a sample can show no spread while a few keys of
    // the rest differ. With none seen among n, up to 3/n of the rest may
    // differ (95%, the rule of three), by up to a size class (25%): the
    // interval is never narrower than that.
    let floor = (mean * 0.25 * 3.0 / n / Z_95).powi(2);
    (mean, (sizes.variance() / n).max(floor) * fpc)
}

/// Splits BullMQ job hashes and logs into completed, failed and the rest.
///
/// Each sampled hash or log was looked up in its queue's completed and
/// failed sets (`scan.rs`), so each state has a mean size of its own.
/// Completed jobs carry their return value and failed ones a stack trace
/// (and often the logs), so their sizes differ from each other and from
/// waiting jobs. For hashes, one per job, each state's count is exact
/// (`ZCARD`); logs exist for some jobs only, so each state gets the share
/// of the log keys that its share of the sample says.
async fn apportion_bullmq(redis: &Redis, estimates: &mut HashMap<String, Estimate>) -> Result<()> {
    let queue_families: Vec<String> = estimates
        .values()
        .filter(|e| {
            e.tally.family.layout == Layout::BullMq
                && matches!(e.tally.family.role, Role::JobHashes | Role::JobLogs)
        })
        .map(|e| e.tally.family.pattern.clone())
        .collect();
    for pattern in queue_families {
        let Some(mut source) = estimates.remove(&pattern) else {
            continue;
        };
        let family = source.tally.family.clone();
        let (Some(prefix), Some(queue)) = (family.prefix.clone(), family.queue.clone()) else {
            estimates.insert(pattern, source);
            continue;
        };
        let base = format!("{prefix}:{queue}");
        let completed: u64 = redis
            .query(redis::cmd("ZCARD").arg(format!("{base}:completed")))
            .await?;
        let failed: u64 = redis
            .query(redis::cmd("ZCARD").arg(format!("{base}:failed")))
            .await?;
        let classifier = super::families::Classifier::new(std::slice::from_ref(&prefix));
        let target = |set: &str| classifier.classify(format!("{base}:{set}").as_bytes());
        let by_state = source.tally.by_state.iter().any(|s| s.n > 0);
        if by_state {
            let counts = (family.role == Role::JobHashes).then_some((completed, failed));
            split_by_state(&mut source, counts, estimates, &target);
        } else {
            split_by_counts(&mut source, completed, failed, estimates, &target);
        }
        if source.keys > 0.5 {
            let what = if family.role == Role::JobLogs {
                "logs of waiting, active and delayed jobs"
            } else {
                "hashes of waiting, active and delayed jobs"
            };
            source.tally.family.name = format!("BullMQ queue {queue}: {what}");
            estimates.insert(pattern, source);
        }
    }
    Ok(())
}

/// Splits `source` by the states its sample was found in. With `counts`
/// (job hashes: one per job, so each state's count is its set's `ZCARD`):
/// each state's count times its own mean. Without (logs, which only some
/// jobs have): each state's total estimated from the sample as a domain
/// (keys × the mean of sizes counted only where the state matches).
fn split_by_state(
    source: &mut Estimate,
    counts: Option<(u64, u64)>,
    estimates: &mut HashMap<String, Estimate>,
    target: &dyn Fn(&str) -> super::families::Family,
) {
    let all = source.tally.sizes;
    let keys = source.keys;
    let complete = source.complete;
    let state_total = |state: JobState, count: Option<f64>| -> (f64, f64, f64) {
        let stratum = source.tally.by_state[state as usize];
        match count {
            Some(count) => {
                let sizes = if stratum.n > 0 { stratum } else { all };
                let (mean, var_mean) = mean_and_its_variance(&sizes, count, complete);
                (count, count * mean, count * count * var_mean)
            }
            None => {
                let domain = Moments {
                    n: all.n,
                    ..stratum
                };
                let (mean, var_mean) = mean_and_its_variance(&domain, keys, complete);
                let share = stratum.n as f64 / all.n.max(1) as f64;
                (keys * share, keys * mean, keys * keys * var_mean)
            }
        }
    };
    let counts = counts.map(|(c, f)| {
        let (c, f) = (c as f64, f as f64);
        // The sets may list ids whose hashes are gone (BullMQ tolerates
        // that); never count more jobs than there are hashes.
        let scale = if c + f > keys {
            keys / (c + f).max(1.0)
        } else {
            1.0
        };
        (c * scale, f * scale)
    });
    let mut moved_keys = 0.0;
    for (set, state, count) in [
        ("completed", JobState::Completed, counts.map(|c| c.0)),
        ("failed", JobState::Failed, counts.map(|c| c.1)),
    ] {
        let stratum = source.tally.by_state[state as usize];
        let (n, bytes, variance) = state_total(state, count);
        if n <= 0.0 {
            continue;
        }
        let into = estimates
            .entry(target(set).pattern.clone())
            .or_insert_with(|| Estimate::empty(Tally::new(target(set))));
        into.keys += n;
        into.bytes += bytes;
        into.variance += variance;
        into.inherit_measurements(&source.tally, stratum.n as f64 / all.n.max(1) as f64);
        moved_keys += n;
    }
    let rest = (keys - moved_keys).max(0.0);
    let other = source.tally.by_state[JobState::Other as usize];
    let (_, bytes, variance) = match counts {
        Some(_) => state_total(JobState::Other, Some(rest)),
        None => state_total(JobState::Other, None),
    };
    source.keys = rest;
    source.bytes = bytes;
    source.variance = variance;
    source.tally.sizes = other;
}

/// Logs (and hashes not sampled by state): shares by the sets' counts, on
/// the assumption that jobs in every state are alike.
fn split_by_counts(
    source: &mut Estimate,
    completed: u64,
    failed: u64,
    estimates: &mut HashMap<String, Estimate>,
    target: &dyn Fn(&str) -> super::families::Family,
) {
    let jobs = source.keys.max(1.0);
    let (c, f) = (completed as f64, failed as f64);
    let scale = if c + f > jobs { jobs / (c + f) } else { 1.0 };
    let total_keys = source.keys;
    for (set, count) in [("completed", c), ("failed", f)] {
        if count == 0.0 {
            continue;
        }
        let share = (count * scale / total_keys.max(1.0)).min(1.0);
        let into = estimates
            .entry(target(set).pattern.clone())
            .or_insert_with(|| Estimate::empty(Tally::new(target(set))));
        // Each remaining share is of what is left, hence the rescaling.
        let remaining = source.keys / total_keys.max(1.0);
        source.give(share / remaining.max(1e-12), into);
    }
}
