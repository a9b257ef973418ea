//! The guard's settings: [`GuardConfig`], its documented defaults, and the
//! one check that turns it into the [`Settings`] a [`Guard`](super::Guard)
//! runs on, so that a bad setting is named before anything runs (STYLE
//! rule 6: validate configuration once, at the edge).

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::thresholds::{Direction, LevelSet};
use super::{
    AlertSink, AttributeConfig, DEFAULT_ATTRIBUTE_INTERVAL, DEFAULT_SAMPLE_INTERVAL,
    ForecastConfig, LogSink, dispatch, history,
};
use crate::clock::{Clock, SystemClock};
use crate::error::{Error, Result};

/// Memory levels alerted on, as shares of the limit.
pub const DEFAULT_LEVELS: [f64; 3] = [0.2, 0.5, 0.9];
/// A raised memory level clears only below `level − this` (a share of the
/// limit: 2 points).
pub const DEFAULT_HYSTERESIS: f64 = 0.02;
/// A raised level clears only after the value stayed clear of its band this
/// long.
pub const DEFAULT_CLEAR_AFTER: Duration = Duration::from_secs(15 * 60);
/// Leeway levels: alert when the forecast time to full falls under these.
pub const DEFAULT_LEEWAY: [Duration; 2] = [
    Duration::from_secs(72 * 60 * 60),
    Duration::from_secs(48 * 60 * 60),
];
/// A raised leeway level clears only above `leeway × (1 + this)`.
pub const DEFAULT_LEEWAY_BAND: f64 = 0.25;

/// Settings of a [`Guard`](super::Guard); checked by
/// [`Guard::new`](super::Guard::new), which names the first bad setting.
#[derive(Clone)]
pub struct GuardConfig {
    /// Time between readings.
    pub interval: Duration,
    /// Memory levels, shares of the limit in (0, 1].
    pub levels: Vec<f64>,
    /// Hysteresis band of the memory levels, a share of the limit (0 to 0.2).
    pub hysteresis: f64,
    /// Dwell before a raised level clears.
    pub clear_after: Duration,
    /// Leeway levels (time to full), at least a minute each.
    pub leeway: Vec<Duration>,
    /// Hysteresis of the leeway levels, a share of the leeway (0 to 1).
    pub leeway_band: f64,
    /// The limit to measure against when Redis has no `maxmemory` (per node).
    pub limit: Option<u64>,
    /// The growth fit.
    pub forecast: ForecastConfig,
    /// Where readings and alert states are kept; `None`: in memory only.
    pub history_dir: Option<PathBuf>,
    /// Readings kept.
    pub history_points: usize,
    /// Age after which readings are dropped.
    pub history_max_age: Duration,
    /// Time between memory reports; `None`: no reports on a schedule.
    pub attribute_interval: Option<Duration>,
    /// How memory reports walk the keyspace.
    pub attribute: AttributeConfig,
    /// Where alerts go.
    pub sinks: Vec<Arc<dyn AlertSink>>,
    /// The same non-escalating alert is not repeated within this time.
    pub dedup_window: Duration,
    /// Non-escalating alerts per `rate_window` at most.
    pub rate_limit: usize,
    /// The window of the rate limit.
    pub rate_window: Duration,
    /// The clock readings are stamped with.
    pub clock: Arc<dyn Clock>,
}

impl fmt::Debug for GuardConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GuardConfig")
            .field("interval", &self.interval)
            .field("levels", &self.levels)
            .field("hysteresis", &self.hysteresis)
            .field("clear_after", &self.clear_after)
            .field("leeway", &self.leeway)
            .field("limit", &self.limit)
            .field("forecast", &self.forecast)
            .field("history_dir", &self.history_dir)
            .field("attribute_interval", &self.attribute_interval)
            .field("sinks", &self.sinks)
            .finish_non_exhaustive()
    }
}

impl Default for GuardConfig {
    fn default() -> Self {
        Self {
            interval: DEFAULT_SAMPLE_INTERVAL,
            levels: DEFAULT_LEVELS.to_vec(),
            hysteresis: DEFAULT_HYSTERESIS,
            clear_after: DEFAULT_CLEAR_AFTER,
            leeway: DEFAULT_LEEWAY.to_vec(),
            leeway_band: DEFAULT_LEEWAY_BAND,
            limit: None,
            forecast: ForecastConfig::default(),
            history_dir: None,
            history_points: history::DEFAULT_HISTORY_POINTS,
            history_max_age: history::DEFAULT_HISTORY_MAX_AGE,
            attribute_interval: Some(DEFAULT_ATTRIBUTE_INTERVAL),
            attribute: AttributeConfig::default(),
            sinks: vec![Arc::new(LogSink)],
            dedup_window: dispatch::DEFAULT_DEDUP_WINDOW,
            rate_limit: dispatch::DEFAULT_RATE_LIMIT,
            rate_window: dispatch::DEFAULT_RATE_WINDOW,
            clock: Arc::new(SystemClock),
        }
    }
}

/// The checked settings: level sets built once.
#[derive(Debug)]
pub(super) struct Settings {
    pub(super) interval: Duration,
    pub(super) memory: LevelSet,
    pub(super) leeway: LevelSet,
    pub(super) limit: Option<u64>,
    pub(super) forecast: ForecastConfig,
    pub(super) attribute_interval: Option<Duration>,
    pub(super) attribute: AttributeConfig,
    pub(super) clock: Arc<dyn Clock>,
}

impl GuardConfig {
    /// Checks every setting, naming the first bad one (what
    /// [`Guard::new`](super::Guard::new) does before anything runs).
    pub fn check(&self) -> Result<()> {
        self.validate().map(|_| ())
    }

    pub(super) fn validate(&self) -> Result<Settings> {
        let bad = |what: String| Err(Error::invalid(what));
        if self.interval < Duration::from_millis(10) {
            return bad(format!(
                "guard interval {:?} must be at least 10 ms",
                self.interval
            ));
        }
        if let Some(level) = self.levels.iter().find(|l| !(**l > 0.0 && **l <= 1.0)) {
            return bad(format!(
                "guard level {level} must be a share of the limit in (0, 1]"
            ));
        }
        if !(0.0..=0.2).contains(&self.hysteresis) {
            return bad(format!(
                "guard hysteresis {} must be 0 to 0.2",
                self.hysteresis
            ));
        }
        if let Some(l) = self.leeway.iter().find(|l| **l < Duration::from_secs(60)) {
            return bad(format!("guard leeway {l:?} must be at least a minute"));
        }
        if !(0.0..=1.0).contains(&self.leeway_band) {
            return bad(format!(
                "guard leeway_band {} must be 0 to 1",
                self.leeway_band
            ));
        }
        if self.limit == Some(0) {
            return bad("guard limit must be positive when given".into());
        }
        if self.history_points < 10 || self.history_max_age < Duration::from_secs(60) {
            return bad(format!(
                "guard history_points {} must be at least 10 and history_max_age {:?} at least a minute",
                self.history_points, self.history_max_age
            ));
        }
        if let Some(i) = self.attribute_interval
            && i < Duration::from_millis(100)
        {
            return bad(format!(
                "guard attribute_interval {i:?} must be at least 100 ms"
            ));
        }
        if self.rate_limit == 0 {
            return bad("guard rate_limit must be at least 1".into());
        }
        self.forecast.validate()?;
        self.attribute.validate()?;
        let hysteresis = self.hysteresis;
        let band = self.leeway_band;
        Ok(Settings {
            interval: self.interval,
            memory: LevelSet::new(
                Direction::Rising,
                self.levels.clone(),
                move |_| hysteresis,
                self.clear_after,
            ),
            leeway: LevelSet::new(
                Direction::Falling,
                self.leeway.iter().map(Duration::as_secs_f64).collect(),
                move |l| l * band,
                self.clear_after,
            ),
            limit: self.limit,
            forecast: self.forecast,
            attribute_interval: self.attribute_interval,
            attribute: self.attribute.clone(),
            clock: self.clock.clone(),
        })
    }
}
