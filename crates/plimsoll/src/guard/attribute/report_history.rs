//! The last memory reports' family totals, bounded, optionally in a local
//! file (JSON lines), so that growth and suspected leaks are seen across
//! runs of `plimsoll memory` and restarts of the guard.

use std::collections::{BTreeMap, VecDeque};
use std::io::BufRead;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::report::{LEAK_MIN_NO_TTL, LEAK_MIN_STEPS, MemoryReport};
use crate::error::Result;
use crate::guard::jsonl;

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
        history.file_lines = jsonl::count_lines(&path);
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
            jsonl::append_line(path, &snapshot, &mut self.file_lines, self.limit, || {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::guard::attribute::families::Layout;
    use crate::guard::attribute::report::{Accounting, FamilyReport};

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
            accounting: Accounting::default(),
            families: vec![FamilyReport {
                pattern: "audit:<uuid>".into(),
                name: "audit:<uuid>".into(),
                layout: Layout::Generic,
                queue: None,
                keys,
                bytes: keys * 100,
                bytes_error: 10,
                sampled: 10,
                sampled_estimated: 0,
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
        assert!(
            jsonl::count_lines(&path) <= 6,
            "{}",
            jsonl::count_lines(&path)
        );
        assert_eq!(ReportHistory::open(&path, 3).unwrap().len(), 3);
    }
}
