//! Alert levels with hysteresis: raised once when a value crosses a line,
//! cleared once when it has stayed well clear of it.
//!
//! Two mechanisms keep a value that hovers at a line from flapping:
//!
//! - a **band**: a raised level clears only below `level − band` (for a
//!   falling series such as time-to-full, above `level + band`);
//! - a **dwell**: the value must stay beyond the band for `clear_after`
//!   before the level clears. A queue that fills past 20% and drains to 10%
//!   every few minutes keeps its 20% alert raised, with one alert, instead
//!   of one per tooth.
//!
//! Raising is immediate and never suppressed: an escalation always alerts.
//! A jump past several levels raises each of them, lowest first, so the
//! alerts arrive in order.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Which way is worse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Direction {
    /// Higher is worse (memory used): a level is reached at `value >= level`.
    Rising,
    /// Lower is worse (time to full): a level is reached at `value <= level`.
    Falling,
}

/// A change of one level.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum LevelChange {
    /// The value reached `level` (index into the levels, in order of severity).
    Raised {
        /// Index of the level, 0 the least severe.
        index: usize,
        /// The level.
        level: f64,
    },
    /// The value stayed clear of `level` for the dwell time.
    Cleared {
        /// Index of the level.
        index: usize,
        /// The level.
        level: f64,
    },
}

/// Levels, bands and dwell; checked by the guard's config.
#[derive(Debug, Clone, PartialEq)]
pub struct LevelSet {
    direction: Direction,
    /// In order of severity: ascending for rising, descending for falling.
    levels: Vec<f64>,
    bands: Vec<f64>,
    clear_after_ms: u64,
}

impl LevelSet {
    /// `levels` in any order; `band(level)` gives each level's band.
    pub fn new(
        direction: Direction,
        mut levels: Vec<f64>,
        band: impl Fn(f64) -> f64,
        clear_after: Duration,
    ) -> Self {
        levels.sort_by(f64::total_cmp);
        if direction == Direction::Falling {
            levels.reverse();
        }
        levels.dedup();
        let bands = levels.iter().map(|l| band(*l).abs()).collect();
        Self {
            direction,
            levels,
            bands,
            clear_after_ms: crate::clock::ms(clear_after),
        }
    }

    /// The levels in order of severity.
    pub fn levels(&self) -> &[f64] {
        &self.levels
    }

    fn reached(&self, index: usize, value: f64) -> bool {
        match self.direction {
            Direction::Rising => value >= self.levels[index],
            Direction::Falling => value <= self.levels[index],
        }
    }

    fn clear_of_band(&self, index: usize, value: f64) -> bool {
        match self.direction {
            Direction::Rising => value < self.levels[index] - self.bands[index],
            Direction::Falling => value > self.levels[index] + self.bands[index],
        }
    }
}

/// Which levels are raised, and since when each has been clear of its band.
/// Serializable, so that a restarted guard does not alert again.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LevelState {
    /// Levels raised: the first `raised` of the set.
    pub raised: usize,
    /// Per raised level, when the value went clear of its band (ms).
    pub clear_since: Vec<Option<u64>>,
}

impl LevelState {
    /// Feeds one value; returns the changes, raises lowest first and clears
    /// highest first.
    pub fn observe(&mut self, set: &LevelSet, now_ms: u64, value: f64) -> Vec<LevelChange> {
        let mut changes = Vec::new();
        self.raised = self.raised.min(set.levels.len());
        self.clear_since.resize(self.raised, None);
        if value.is_nan() {
            return changes;
        }
        while self.raised < set.levels.len() && set.reached(self.raised, value) {
            changes.push(LevelChange::Raised {
                index: self.raised,
                level: set.levels[self.raised],
            });
            self.raised += 1;
            self.clear_since.push(None);
        }
        for index in 0..self.raised {
            if set.clear_of_band(index, value) {
                self.clear_since[index].get_or_insert(now_ms);
            } else {
                self.clear_since[index] = None;
            }
        }
        while self.raised > 0 {
            let index = self.raised - 1;
            match self.clear_since[index] {
                Some(since) if now_ms.saturating_sub(since) >= set.clear_after_ms => {
                    changes.push(LevelChange::Cleared {
                        index,
                        level: set.levels[index],
                    });
                    self.raised -= 1;
                    self.clear_since.pop();
                }
                _ => break,
            }
        }
        changes
    }

    /// The raised levels.
    pub fn raised_levels<'a>(&self, set: &'a LevelSet) -> &'a [f64] {
        &set.levels[..self.raised.min(set.levels.len())]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: u64 = 60_000;

    fn memory_levels() -> LevelSet {
        LevelSet::new(
            Direction::Rising,
            vec![0.5, 0.2, 0.9],
            |_| 0.02,
            Duration::from_secs(600),
        )
    }

    #[test]
    fn each_level_is_raised_once_in_order() {
        let set = memory_levels();
        let mut state = LevelState::default();
        let mut raised = Vec::new();
        for step in 0..=100 {
            for change in state.observe(&set, step * MIN, step as f64 / 100.0) {
                match change {
                    LevelChange::Raised { level, .. } => raised.push(level),
                    LevelChange::Cleared { .. } => panic!("nothing clears on the way up"),
                }
            }
        }
        assert_eq!(raised, [0.2, 0.5, 0.9]);
    }

    #[test]
    fn a_jump_raises_every_level_it_passes_lowest_first() {
        let set = memory_levels();
        let mut state = LevelState::default();
        let changes = state.observe(&set, 0, 0.95);
        assert_eq!(
            changes,
            [
                LevelChange::Raised {
                    index: 0,
                    level: 0.2
                },
                LevelChange::Raised {
                    index: 1,
                    level: 0.5
                },
                LevelChange::Raised {
                    index: 2,
                    level: 0.9
                },
            ]
        );
    }

    #[test]
    fn hovering_at_a_line_does_not_flap() {
        let set = memory_levels();
        let mut state = LevelState::default();
        let mut changes = Vec::new();
        // 0.19, 0.21, 0.19, … for ten hours: inside the band.
        for step in 0..600 {
            let value = if step % 2 == 0 { 0.21 } else { 0.19 };
            changes.extend(state.observe(&set, step * MIN, value));
        }
        assert_eq!(changes.len(), 1, "{changes:?}");
    }

    #[test]
    fn a_saw_tooth_below_the_band_clears_only_after_the_dwell() {
        let set = memory_levels();
        let mut state = LevelState::default();
        let mut changes = Vec::new();
        // Fills to 25%, drains to 10%, period 8 minutes; the dwell is 10.
        for step in 0..480 {
            let value = 0.10 + (step % 8) as f64 * 0.15 / 7.0;
            changes.extend(state.observe(&set, step * MIN, value));
        }
        assert_eq!(changes.len(), 1, "{changes:?}");
        // Then it stays low: one clear, after the dwell.
        let mut clears = Vec::new();
        for step in 480..520 {
            for c in state.observe(&set, step * MIN, 0.05) {
                clears.push((step, c));
            }
        }
        assert_eq!(clears.len(), 1, "{clears:?}");
        assert!(clears[0].0 >= 490, "{clears:?}");
    }

    #[test]
    fn falling_levels_fire_as_time_to_full_shrinks() {
        let hours = |h: f64| h * 3600.0;
        let set = LevelSet::new(
            Direction::Falling,
            vec![hours(48.0), hours(72.0)],
            |l| l * 0.25,
            Duration::from_secs(600),
        );
        let mut state = LevelState::default();
        assert!(state.observe(&set, 0, f64::INFINITY).is_empty());
        assert_eq!(
            state.observe(&set, MIN, hours(60.0)),
            [LevelChange::Raised {
                index: 0,
                level: hours(72.0)
            }]
        );
        assert_eq!(state.observe(&set, 2 * MIN, hours(40.0)).len(), 1);
        // Growth stops: both clear after the dwell, the most severe first.
        assert!(state.observe(&set, 3 * MIN, f64::INFINITY).is_empty());
        let cleared = state.observe(&set, 20 * MIN, f64::INFINITY);
        assert_eq!(
            cleared,
            [
                LevelChange::Cleared {
                    index: 1,
                    level: hours(48.0)
                },
                LevelChange::Cleared {
                    index: 0,
                    level: hours(72.0)
                },
            ]
        );
    }
}
