//! The guard's memory of past readings and alert states, kept on the
//! guard's own disk, bounded.
//!
//! Readings go to `samples.jsonl` in the history folder, one JSON line
//! each, appended as they are taken; when the file holds twice the bound it
//! is rewritten with the newest readings (write and rename, so a crash
//! leaves one whole file). Which levels are raised, and the last OOM and
//! eviction counters seen, go to `state.json` (write and rename). A guard
//! that restarts therefore forecasts at once and does not repeat alerts
//! it already sent.
//!
//! Nothing is written into the watched Redis: the guard must keep working
//! when Redis is full, and must not be one more thing that fills it.

use std::collections::{BTreeMap, VecDeque};
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::jsonl::{append_line, count_lines, io_error};
use super::thresholds::LevelState;
use crate::error::Result;

/// Readings kept: a day at one every 10 s, a bit more.
pub const DEFAULT_HISTORY_POINTS: usize = 10_000;
/// Readings older than this are dropped.
pub const DEFAULT_HISTORY_MAX_AGE: Duration = Duration::from_secs(7 * 24 * 60 * 60);

/// One reading of all nodes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryPoint {
    /// When (ms since the epoch).
    pub t: u64,
    /// Per node: (`host:port`, used bytes, limit bytes).
    pub n: Vec<(String, u64, u64)>,
}

/// Alert state of one node, kept across restarts.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeState {
    /// Memory levels raised.
    pub levels: LevelState,
    /// Time-to-full levels raised.
    pub leeway: LevelState,
    /// Last `errorstat_OOM` count seen.
    pub oom_rejections: Option<u64>,
    /// The current run of OOM refusals, while there is one.
    #[serde(default)]
    pub oom_episode: Option<OomEpisode>,
    /// Last `evicted_keys` seen.
    pub evicted_keys: Option<u64>,
    /// Whether the "no maxmemory" alert was sent.
    pub unbounded_alerted: bool,
    /// Whether the "evictions delete jobs" alert was sent (for the policy
    /// in force; cleared when it no longer evicts).
    #[serde(default)]
    pub eviction_alerted: bool,
    /// Overhead signals raised (cleared below half their threshold).
    #[serde(default)]
    pub overhead_raised: std::collections::BTreeSet<super::alerts::OverheadSignal>,
}

/// A run of OOM refusals: from the first refusal until none for
/// `OOM_CLEAR_AFTER` (`evaluate.rs`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct OomEpisode {
    /// First refusal seen (ms).
    pub started_ms: u64,
    /// Latest reading with a refusal (ms).
    pub last_refusal_ms: u64,
    /// When the latest alert of this run went out (ms).
    pub last_alert_ms: u64,
    /// Refusals per second at that alert.
    pub alerted_rate: f64,
    /// Refusals in this run so far.
    pub rejections: u64,
}

/// Everything in `state.json`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GuardState {
    /// Per primary ever read: kept, so that a primary lost in a failover
    /// stays visible as down until an operator forgets it.
    pub nodes: BTreeMap<String, NodeState>,
    /// Replicas ever listed by a primary (`host:port` → its primary), kept
    /// for the same reason: a dead replica is lost redundancy.
    #[serde(default)]
    pub replicas: BTreeMap<String, String>,
}

/// Readings, bounded by count and age, optionally backed by a folder.
#[derive(Debug)]
pub struct History {
    dir: Option<PathBuf>,
    max_points: usize,
    max_age_ms: u64,
    points: VecDeque<HistoryPoint>,
    file_lines: usize,
}

impl History {
    /// Opens the history in `dir` (created if missing), or an in-memory one.
    pub fn open(dir: Option<&Path>, max_points: usize, max_age: Duration) -> Result<Self> {
        let mut history = Self {
            dir: dir.map(Path::to_path_buf),
            max_points: max_points.max(10),
            max_age_ms: crate::clock::ms(max_age),
            points: VecDeque::new(),
            file_lines: 0,
        };
        if let Some(dir) = dir {
            std::fs::create_dir_all(dir).map_err(|e| io_error(dir, e))?;
            history.file_lines = count_lines(&dir.join("samples.jsonl"));
            if let Ok(file) = std::fs::File::open(dir.join("samples.jsonl")) {
                for line in std::io::BufReader::new(file).lines() {
                    let Ok(line) = line else { break };
                    // A line cut short by a crash is skipped.
                    if let Ok(point) = serde_json::from_str::<HistoryPoint>(&line) {
                        history.points.push_back(point);
                    }
                }
            }
            history.points.make_contiguous().sort_by_key(|p| p.t);
            history.trim(history.points.back().map_or(0, |p| p.t));
        }
        Ok(history)
    }

    /// The folder, if any.
    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }

    /// Readings held.
    pub fn len(&self) -> usize {
        self.points.len()
    }

    /// No reading held.
    pub fn is_empty(&self) -> bool {
        self.points.is_empty()
    }

    /// Adds a reading, in memory always, and to the file when there is
    /// one (an error writing it is returned after the reading is kept).
    pub fn push(&mut self, point: HistoryPoint) -> Result<()> {
        let now = point.t;
        let mut written = Ok(());
        if let Some(dir) = &self.dir {
            let all = || self.points.iter().cloned().chain([point.clone()]).collect();
            written = append_line(
                &dir.join("samples.jsonl"),
                &point,
                &mut self.file_lines,
                self.max_points,
                all,
            );
        }
        self.points.push_back(point);
        self.trim(now);
        written
    }

    fn trim(&mut self, now: u64) {
        while self.points.len() > self.max_points {
            self.points.pop_front();
        }
        while self
            .points
            .front()
            .is_some_and(|p| now.saturating_sub(p.t) > self.max_age_ms)
        {
            self.points.pop_front();
        }
    }

    /// (time, used bytes) of one node.
    pub fn series(&self, node: &str) -> Vec<(u64, f64)> {
        self.points
            .iter()
            .filter_map(|p| {
                p.n.iter()
                    .find(|(n, _, _)| n == node)
                    .map(|(_, used, _)| (p.t, *used as f64))
            })
            .collect()
    }

    /// (time, used bytes summed over nodes).
    pub fn total_series(&self) -> Vec<(u64, f64)> {
        self.points
            .iter()
            .map(|p| (p.t, p.n.iter().map(|(_, used, _)| *used as f64).sum()))
            .collect()
    }

    /// Loads `state.json` (the default state when there is none).
    pub fn load_state(&self) -> GuardState {
        self.dir
            .as_ref()
            .and_then(|dir| std::fs::read(dir.join("state.json")).ok())
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .unwrap_or_default()
    }

    /// Writes `state.json` (write and rename).
    pub fn save_state(&self, state: &GuardState) -> Result<()> {
        let Some(dir) = &self.dir else {
            return Ok(());
        };
        let path = dir.join("state.json");
        let tmp = dir.join("state.json.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(state)?).map_err(|e| io_error(&tmp, e))?;
        std::fs::rename(&tmp, &path).map_err(|e| io_error(&path, e))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(t: u64, used: u64) -> HistoryPoint {
        HistoryPoint {
            t,
            n: vec![("a:1".into(), used, 1000), ("b:2".into(), used * 2, 1000)],
        }
    }

    #[test]
    fn readings_survive_a_restart_and_stay_bounded() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut h = History::open(Some(dir.path()), 50, Duration::from_secs(3600)).unwrap();
            for i in 0..200 {
                h.push(point(i * 1000, i)).unwrap();
            }
            assert_eq!(h.len(), 50);
        }
        // A torn last line (a crash mid-write) is skipped.
        let path = dir.path().join("samples.jsonl");
        let mut text = std::fs::read_to_string(&path).unwrap();
        assert!(text.lines().count() <= 100);
        text.push_str("{\"t\":99999,\"n\":[[\"a:1\",");
        std::fs::write(&path, text).unwrap();
        let h = History::open(Some(dir.path()), 50, Duration::from_secs(3600)).unwrap();
        assert_eq!(h.len(), 50);
        assert_eq!(h.series("a:1").last(), Some(&(199_000, 199.0)));
        assert_eq!(h.total_series().last(), Some(&(199_000, 597.0)));
    }

    #[test]
    fn old_readings_are_dropped() {
        let mut h = History::open(None, 1000, Duration::from_secs(10)).unwrap();
        for i in 0..30 {
            h.push(point(i * 1000, i)).unwrap();
        }
        assert_eq!(h.len(), 11);
    }

    #[test]
    fn state_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let h = History::open(Some(dir.path()), 50, Duration::from_secs(3600)).unwrap();
        let mut state = GuardState::default();
        state.nodes.entry("a:1".into()).or_default().levels.raised = 2;
        h.save_state(&state).unwrap();
        assert_eq!(h.load_state(), state);
    }
}
