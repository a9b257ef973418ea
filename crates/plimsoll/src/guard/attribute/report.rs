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

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::families::{Layout, Role};
use super::scan::{NodeScan, Tally};
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
    /// Keys measured.
    pub sampled: u64,
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
        });
    }
    apportion_bullmq(redis, &mut estimates).await?;
    let mut families: Vec<FamilyReport> = estimates.into_values().map(Estimate::report).collect();
    families.sort_by(|a, b| b.bytes.cmp(&a.bytes).then(a.pattern.cmp(&b.pattern)));
    nodes.sort_by(|a, b| a.node.cmp(&b.node));
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
    })
}

/// A family's estimate, summed over nodes.
#[derive(Debug, Clone)]
struct Estimate {
    tally: Tally,
    keys: f64,
    bytes: f64,
    variance: f64,
}

impl Estimate {
    fn of(tally: &Tally, p: f64, complete: bool) -> Self {
        let n = tally.sampled as f64;
        let seen = tally.keys as f64;
        let keys = seen / p;
        let (mean, var_mean) = if n > 0.0 {
            let mean = tally.sum / n;
            let var = if n > 1.0 {
                ((tally.sum_sq / n - mean * mean) * n / (n - 1.0)).max(0.0)
            } else {
                0.0
            };
            let fpc = if complete && seen > 0.0 {
                (1.0 - n / seen).max(0.0)
            } else {
                1.0
            };
            (mean, var / n * fpc)
        } else {
            (0.0, 0.0)
        };
        // Var(keys) of a binomial sample scaled by 1/p.
        let var_keys = if p < 1.0 {
            seen * (1.0 - p) / (p * p)
        } else {
            0.0
        };
        Self {
            tally: tally.clone(),
            keys,
            bytes: mean * keys,
            variance: keys * keys * var_mean + mean * mean * var_keys,
        }
    }

    fn add(&mut self, other: &Estimate) {
        self.keys += other.keys;
        self.bytes += other.bytes;
        self.variance += other.variance;
        let mut t = other.tally.clone();
        t.family = self.tally.family.clone();
        self.tally.sampled += t.sampled;
        self.tally.no_ttl += t.no_ttl;
        for (k, v) in t.types {
            *self.tally.types.entry(k).or_default() += v;
        }
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
        // The moved keys are measured by the hashes' sample.
        if into.tally.sampled == 0 {
            into.tally.no_ttl = self.tally.no_ttl;
            into.tally.sampled = self.tally.sampled;
        }
        for (k, v) in &self.tally.types {
            into.tally.types.entry(k.clone()).or_insert(*v);
        }
    }

    fn report(self) -> FamilyReport {
        let f = self.tally.family;
        FamilyReport {
            pattern: f.pattern,
            name: f.name,
            layout: f.layout,
            queue: f.queue,
            keys: self.keys.round() as u64,
            bytes: self.bytes.round().max(0.0) as u64,
            bytes_error: (Z_95 * self.variance.sqrt()).round() as u64,
            sampled: self.tally.sampled,
            no_ttl_share: if self.tally.sampled > 0 {
                self.tally.no_ttl as f64 / self.tally.sampled as f64
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

/// Splits BullMQ job hashes and logs into completed, failed and the rest.
async fn apportion_bullmq(redis: &Redis, estimates: &mut HashMap<String, Estimate>) -> Result<()> {
    let hash_families: Vec<String> = estimates
        .values()
        .filter(|e| {
            e.tally.family.layout == Layout::BullMq
                && matches!(e.tally.family.role, Role::JobHashes | Role::JobLogs)
        })
        .map(|e| e.tally.family.pattern.clone())
        .collect();
    for pattern in hash_families {
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
        let jobs = source.keys.max(1.0);
        let (c, f) = (completed as f64, failed as f64);
        let scale = if c + f > jobs { jobs / (c + f) } else { 1.0 };
        let total_keys = source.keys;
        let classifier = super::families::Classifier::new(std::slice::from_ref(&prefix));
        for (set, count) in [("completed", c), ("failed", f)] {
            if count == 0.0 {
                continue;
            }
            let target = classifier.classify(format!("{base}:{set}").as_bytes());
            let share = (count * scale / total_keys.max(1.0)).min(1.0);
            let into = estimates
                .entry(target.pattern.clone())
                .or_insert_with(|| Estimate {
                    tally: Tally {
                        family: target,
                        keys: 0,
                        sampled: 0,
                        sum: 0.0,
                        sum_sq: 0.0,
                        no_ttl: 0,
                        types: BTreeMap::new(),
                    },
                    keys: 0.0,
                    bytes: 0.0,
                    variance: 0.0,
                });
            // Each remaining share is of what is left, hence the rescaling.
            let remaining = source.keys / total_keys.max(1.0);
            source.give(share / remaining.max(1e-12), into);
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

/// Family totals of one report, for growth and leak detection.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ReportSnapshot {
    /// When the report was made.
    pub at_ms: u64,
    /// Pattern → (keys, bytes, bytes error).
    pub families: BTreeMap<String, (u64, u64, u64)>,
}

/// The last reports' totals, bounded, optionally kept in a local file
/// (JSON lines) so that growth and leaks are seen across runs of
/// `plimsoll memory` and restarts of the guard.
#[derive(Debug, Clone)]
pub struct ReportHistory {
    snapshots: VecDeque<ReportSnapshot>,
    limit: usize,
    path: Option<PathBuf>,
    file_lines: usize,
}

impl ReportHistory {
    /// An empty history in memory.
    pub fn in_memory(limit: usize) -> Self {
        Self {
            snapshots: VecDeque::new(),
            limit: limit.max(1),
            path: None,
            file_lines: 0,
        }
    }

    /// The history kept in `path`; lines that do not parse (a write cut
    /// short) are skipped.
    pub fn open(path: impl Into<PathBuf>, limit: usize) -> Result<Self> {
        let path = path.into();
        let mut history = Self::in_memory(limit);
        if let Ok(file) = std::fs::File::open(&path) {
            for line in std::io::BufReader::new(file).lines() {
                let Ok(line) = line else { break };
                if let Ok(snapshot) = serde_json::from_str::<ReportSnapshot>(&line) {
                    history.push_bounded(snapshot);
                }
            }
        }
        history.file_lines = count_lines(&path);
        history.path = Some(path);
        Ok(history)
    }

    /// Where the history is kept.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Reports remembered.
    pub fn len(&self) -> usize {
        self.snapshots.len()
    }

    /// No report remembered.
    pub fn is_empty(&self) -> bool {
        self.snapshots.is_empty()
    }

    fn push_bounded(&mut self, snapshot: ReportSnapshot) {
        self.snapshots.push_back(snapshot);
        while self.snapshots.len() > self.limit {
            self.snapshots.pop_front();
        }
    }

    /// Fills in the growth and leak fields of `report` from the history,
    /// then remembers the report (and appends it to the file).
    pub fn record(&mut self, report: &mut MemoryReport) -> Result<()> {
        if let Some(previous) = self.snapshots.back() {
            let interval = report.at_ms.saturating_sub(previous.at_ms) as f64 / 1000.0;
            for family in &mut report.families {
                let (keys, bytes, _) = previous
                    .families
                    .get(&family.pattern)
                    .copied()
                    .unwrap_or((0, 0, 0));
                family.growth_bytes = Some(family.bytes as i64 - bytes as i64);
                family.growth_keys = Some(family.keys as i64 - keys as i64);
                family.growth_interval_secs = Some(interval);
            }
        }
        let recent: Vec<&ReportSnapshot> =
            self.snapshots.iter().rev().take(LEAK_MIN_STEPS).collect();
        if recent.len() == LEAK_MIN_STEPS {
            for family in &mut report.families {
                let mut series: Vec<(u64, u64, u64)> = recent
                    .iter()
                    .rev()
                    .map(|s| {
                        s.families
                            .get(&family.pattern)
                            .copied()
                            .unwrap_or((0, 0, 0))
                    })
                    .collect();
                series.push((family.keys, family.bytes, family.bytes_error));
                let steady = series.windows(2).all(|w| {
                    let (k0, b0, e0) = w[0];
                    let (k1, b1, e1) = w[1];
                    k1 > k0 || b1 > b0 + e0.max(e1)
                });
                family.suspected_leak = steady && family.no_ttl_share >= LEAK_MIN_NO_TTL;
            }
        }
        let snapshot = ReportSnapshot {
            at_ms: report.at_ms,
            families: report
                .families
                .iter()
                .map(|f| (f.pattern.clone(), (f.keys, f.bytes, f.bytes_error)))
                .collect(),
        };
        if let Some(path) = &self.path {
            append_line(path, &snapshot, &mut self.file_lines, self.limit, || {
                self.snapshots
                    .iter()
                    .cloned()
                    .chain([snapshot.clone()])
                    .collect()
            })?;
        }
        self.push_bounded(snapshot);
        Ok(())
    }
}

/// Appends `item` as a JSON line to the file that holds `*lines` lines;
/// when it would hold more than twice `limit`, rewrites it with the last
/// `limit` of `all()` instead (write + rename, so a crash leaves the old
/// file or the new, never half of one).
pub(crate) fn append_line<T: Serialize>(
    path: &Path,
    item: &T,
    lines: &mut usize,
    limit: usize,
    all: impl FnOnce() -> Vec<T>,
) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| io_error(path, e))?;
    }
    if *lines + 1 > 2 * limit.max(1) {
        let items = all();
        let skip = items.len().saturating_sub(limit);
        let tmp = path.with_extension("tmp");
        let mut out = std::fs::File::create(&tmp).map_err(|e| io_error(&tmp, e))?;
        for item in &items[skip..] {
            writeln!(out, "{}", serde_json::to_string(item)?).map_err(|e| io_error(&tmp, e))?;
        }
        out.sync_all().map_err(|e| io_error(&tmp, e))?;
        std::fs::rename(&tmp, path).map_err(|e| io_error(path, e))?;
        *lines = items.len() - skip;
        return Ok(());
    }
    let mut out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| io_error(path, e))?;
    writeln!(out, "{}", serde_json::to_string(item)?).map_err(|e| io_error(path, e))?;
    *lines += 1;
    Ok(())
}

pub(crate) fn count_lines(path: &Path) -> usize {
    std::fs::File::open(path)
        .map(|f| std::io::BufReader::new(f).lines().count())
        .unwrap_or(0)
}

pub(crate) fn io_error(path: &Path, err: std::io::Error) -> crate::Error {
    crate::Error::new(
        crate::ErrorKind::InvalidInput,
        format!("guard history file {}: {err}", path.display()),
    )
    .with_source(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(at_ms: u64, keys: u64) -> MemoryReport {
        MemoryReport {
            at_ms,
            duration_secs: 0.0,
            nodes: vec![],
            keys_total: keys,
            keys_scanned: keys,
            complete: true,
            commands: 0,
            budget_per_node: 0,
            used_memory: 0,
            families: vec![FamilyReport {
                pattern: "audit:<uuid>".into(),
                name: "audit:<uuid>".into(),
                layout: Layout::Generic,
                queue: None,
                keys,
                bytes: keys * 100,
                bytes_error: 10,
                sampled: 10,
                no_ttl_share: 1.0,
                types: BTreeMap::new(),
                growth_bytes: None,
                growth_keys: None,
                growth_interval_secs: None,
                suspected_leak: false,
            }],
        }
    }

    #[test]
    fn steady_growth_without_ttl_is_a_suspected_leak() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("reports.jsonl");
        let mut history = ReportHistory::open(&path, 10).unwrap();
        for i in 0..4 {
            let mut r = report(i * 1000, 100 + i * 50);
            history.record(&mut r).unwrap();
            assert_eq!(r.families[0].suspected_leak, i == 3, "report {i}");
            if i > 0 {
                assert_eq!(r.families[0].growth_keys, Some(50));
                assert_eq!(r.growing().len(), 1);
            }
        }
        // Kept across runs.
        let reopened = ReportHistory::open(&path, 10).unwrap();
        assert_eq!(reopened.len(), 4);
    }

    #[test]
    fn the_file_stays_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("reports.jsonl");
        let mut history = ReportHistory::open(&path, 3).unwrap();
        for i in 0..20 {
            history.record(&mut report(i, i)).unwrap();
        }
        assert!(count_lines(&path) <= 6, "{}", count_lines(&path));
        assert_eq!(ReportHistory::open(&path, 3).unwrap().len(), 3);
    }
}
