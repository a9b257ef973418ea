//! Growth rate and time-to-full from a robust fit.
//!
//! The slope is a Theil–Sen estimate: the median of the slopes between
//! pairs of points. Two choices make it fit for Redis memory:
//!
//! - **Spikes** (a burst of big values, a fork for a snapshot, a client
//!   buffer that balloons for a moment) move single points. A median of
//!   pairwise slopes ignores them as long as fewer than about 29% of the
//!   points are off (the breakdown point of Theil–Sen), where a least-squares
//!   line would swing towards every one of them. Points are first reduced to
//!   at most [`DEFAULT_FIT_POINTS`] buckets, each the median of its samples,
//!   which removes short spikes before the fit even starts.
//! - **Saw-tooth** (a queue that fills and drains, a cache that expires in
//!   waves) makes neighbouring points rise steeply and then fall steeply.
//!   Slopes between close points measure the tooth, not the trend, and with a
//!   slow fill and a quick drain most of them are positive: a plain Theil–Sen
//!   would see growth where there is none. Only pairs at least
//!   [`DEFAULT_MIN_PAIR_SPAN`] of the window apart are used; for those, the
//!   tooth contributes at most `amplitude / separation` to a slope, which
//!   shrinks as the window holds more teeth, while a real leak contributes
//!   its full rate to every pair.
//!
//! The interval is the rank-based confidence interval of Sen (1968) for the
//! median slope, computed for the *effective* number of points: residuals
//! that follow each other (a saw-tooth, a daily wave) are worth fewer
//! independent points than there are readings, `n (1 − ρ) / (1 + ρ)` with ρ
//! their lag-1 autocorrelation. With only a few teeth in the window the
//! interval is therefore wide and includes zero, and the guard does not
//! raise a leeway alert on it (leeway alerts need growth whose interval is
//! above zero); a clean leak has a tight interval from the start.
//!
//! Time-to-full counts from the fitted level now plus a peak allowance (the
//! 90th percentile of residuals above the line): on a saw-tooth, Redis is
//! full when the peaks reach the limit, not the mid-line.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// How far back the fit looks.
pub const DEFAULT_FIT_WINDOW: Duration = Duration::from_secs(6 * 60 * 60);
/// Fewest points (after bucketing) for a forecast.
pub const DEFAULT_MIN_FIT_POINTS: usize = 10;
/// Shortest span of history for a forecast: less than this and a rate is a
/// guess.
pub const DEFAULT_MIN_FIT_SPAN: Duration = Duration::from_secs(15 * 60);
/// Most points the fit uses: the window is cut into this many buckets, each
/// reduced to its median. Bounds the cost at about 30,000 pairs.
pub const DEFAULT_FIT_POINTS: usize = 240;
/// Pairs closer than this share of the window are left out of the fit (see
/// the module docs: it is what keeps a saw-tooth from reading as growth).
pub const DEFAULT_MIN_PAIR_SPAN: f64 = 0.25;
/// Two-sided confidence of the slope interval: 95%.
const Z_95: f64 = 1.96;
/// Quantile of the residuals above the line taken as the peak allowance.
const PEAK_QUANTILE: f64 = 0.9;

/// Settings of the fit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ForecastConfig {
    /// How far back the fit looks.
    pub window: Duration,
    /// Fewest bucketed points for a forecast (at least 3).
    pub min_points: usize,
    /// Shortest span of history for a forecast.
    pub min_span: Duration,
    /// Most points the fit uses (10 to 2,000).
    pub max_points: usize,
    /// Pairs closer than this share of the window are not used (0 to 0.75).
    pub min_pair_span: f64,
}

impl Default for ForecastConfig {
    fn default() -> Self {
        Self {
            window: DEFAULT_FIT_WINDOW,
            min_points: DEFAULT_MIN_FIT_POINTS,
            min_span: DEFAULT_MIN_FIT_SPAN,
            max_points: DEFAULT_FIT_POINTS,
            min_pair_span: DEFAULT_MIN_PAIR_SPAN,
        }
    }
}

impl ForecastConfig {
    pub(crate) fn validate(&self) -> Result<()> {
        if self.window < Duration::from_secs(1) {
            return Err(Error::invalid(format!(
                "forecast window {:?} must be at least 1 s",
                self.window
            )));
        }
        if self.min_points < 3 {
            return Err(Error::invalid(format!(
                "forecast min_points {} must be at least 3",
                self.min_points
            )));
        }
        if !(10..=2000).contains(&self.max_points) || self.max_points < self.min_points {
            return Err(Error::invalid(format!(
                "forecast max_points {} must be 10 to 2000 and at least min_points",
                self.max_points
            )));
        }
        if self.min_span > self.window {
            return Err(Error::invalid(format!(
                "forecast min_span {:?} must not exceed the window {:?}",
                self.min_span, self.window
            )));
        }
        if !(0.0..=0.75).contains(&self.min_pair_span) {
            return Err(Error::invalid(format!(
                "forecast min_pair_span {} must be 0 to 0.75",
                self.min_pair_span
            )));
        }
        Ok(())
    }
}

/// What the fit says about one series of memory readings.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Forecast {
    /// Growth, bytes per second (negative: shrinking).
    pub growth_bytes_per_sec: f64,
    /// Lower end of the 95% interval of the growth rate.
    pub growth_low: f64,
    /// Upper end of the 95% interval of the growth rate.
    pub growth_high: f64,
    /// The fitted level now, bytes.
    pub level_bytes: f64,
    /// The level plus the peak allowance: what the high points reach now.
    pub peak_bytes: f64,
    /// The limit the forecast is against, bytes.
    pub limit_bytes: f64,
    /// Time until the peaks reach the limit at the estimated rate; `None`
    /// when memory is not growing.
    pub time_to_full_secs: Option<f64>,
    /// Time to full at the fast end of the interval (the pessimistic
    /// figure); `None` when even that is not growth.
    pub time_to_full_low_secs: Option<f64>,
    /// Time to full at the slow end of the interval; `None` when the slow end
    /// is not growth (it may never fill).
    pub time_to_full_high_secs: Option<f64>,
    /// Points the fit used.
    pub points: usize,
    /// Time the fit's points span, seconds.
    pub span_secs: f64,
}

impl Forecast {
    /// Time to full as a duration.
    pub fn time_to_full(&self) -> Option<Duration> {
        self.time_to_full_secs.map(Duration::from_secs_f64)
    }
}

/// What is known before there is a forecast.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ForecastPending {
    /// Seconds of history in the fit's window.
    pub history_secs: f64,
    /// Seconds of history the forecast still needs.
    pub needed_secs: f64,
    /// From the first reading in the window to the last, bytes per second
    /// (None with fewer than two readings). Not a fit: two points.
    pub growth_so_far_bytes_per_sec: Option<f64>,
}

impl ForecastPending {
    /// What history there is, for people: instead of "full in never".
    pub fn text(&self) -> String {
        let growth = match self.growth_so_far_bytes_per_sec {
            Some(g) => format!(
                "{} over the last {}",
                crate::units::human_rate_per_hour(g),
                crate::units::human_duration(self.history_secs)
            ),
            None => "a single reading so far".into(),
        };
        format!(
            "no forecast yet: {growth}; the forecast needs {} more of history",
            crate::units::human_duration(self.needed_secs)
        )
    }
}

/// What history `points` hold for a fit at `now_ms`, when [`fit`] cannot
/// forecast yet.
pub fn pending(
    config: &ForecastConfig,
    points: &[(u64, f64)],
    now_ms: u64,
    limit: f64,
) -> ForecastPending {
    let recent = usable_history(config, points, now_ms, limit);
    let span_ms = match (recent.first(), recent.last()) {
        (Some(a), Some(b)) => b.0 - a.0,
        _ => 0,
    };
    let history_secs = span_ms as f64 / 1000.0;
    ForecastPending {
        history_secs,
        needed_secs: (config.min_span.as_secs_f64() - history_secs).max(0.0),
        growth_so_far_bytes_per_sec: (span_ms > 0).then(|| {
            let (a, b) = (recent[0], recent[recent.len() - 1]);
            (b.1 - a.1) / history_secs
        }),
    }
}

/// Fits `points` (time ms, bytes), oldest first or in any order, and
/// forecasts when the series reaches `limit`. `None` when there is too
/// little history in the window ending at `now_ms`.
pub fn fit(
    config: &ForecastConfig,
    points: &[(u64, f64)],
    now_ms: u64,
    limit: f64,
) -> Option<Forecast> {
    let recent = usable_history(config, points, now_ms, limit);
    let (first, last) = (recent.first()?.0, recent.last()?.0);
    let min_span_ms = crate::clock::ms(config.min_span);
    if last - first >= min_span_ms {
        return fit_readings(config, &recent, now_ms, limit);
    }
    // Less history than min_span: a forecast only when waiting for the rest
    // would be too late — a rise that is steady (its interval within ±25%
    // of the rate) and would fill Redis before min_span of history is in —
    // after at least a fifth of it. A guard started just before a fast leak
    // otherwise had no forecast until Redis was full. (The rising half of a
    // saw-tooth is steady too; it is forecast early only if it would fill
    // Redis that soon, which makes it a danger in its own right.)
    if (last - first) * 5 < min_span_ms {
        return None;
    }
    let early = fit_readings(config, &recent, now_ms, limit)?;
    let steady = early.growth_low > 0.0
        && early.growth_high - early.growth_low <= 0.5 * early.growth_bytes_per_sec;
    let still_needed = (min_span_ms - (last - first)) as f64 / 1000.0;
    let soon = early
        .time_to_full_secs
        .is_some_and(|secs| secs < still_needed);
    (steady && soon).then_some(early)
}

/// The fit of `recent` (in the window, oldest first).
fn fit_readings(
    config: &ForecastConfig,
    recent: &[(u64, f64)],
    now_ms: u64,
    limit: f64,
) -> Option<Forecast> {
    let buckets = bucket(recent, config.max_points);
    if buckets.len() < config.min_points {
        return None;
    }
    // Times in seconds relative to now keep the numbers small.
    let xs: Vec<(f64, f64)> = buckets
        .iter()
        .map(|(t, y)| ((*t as f64 - now_ms as f64) / 1000.0, *y))
        .collect();
    let span = xs.last()?.0 - xs.first()?.0;
    let min_dx = (span * config.min_pair_span).max(1e-9);
    let mut slopes = Vec::with_capacity(xs.len() * xs.len() / 2);
    for (i, a) in xs.iter().enumerate() {
        for b in &xs[i + 1..] {
            let dx = b.0 - a.0;
            if dx >= min_dx {
                slopes.push((b.1 - a.1) / dx);
            }
        }
    }
    if slopes.len() < 3 {
        return None;
    }
    slopes.sort_by(f64::total_cmp);
    let slope = median_sorted(&slopes);
    let in_order: Vec<f64> = xs.iter().map(|(x, y)| y - slope * x).collect();
    let (low, high) = sen_interval(&slopes, effective_points(&in_order));
    let mut residuals = in_order;
    residuals.sort_by(f64::total_cmp);
    let intercept = median_sorted(&residuals);
    let level = intercept; // x = 0 is now
    let allowance = quantile_sorted(&residuals, PEAK_QUANTILE) - intercept;
    let peak = level + allowance.max(0.0);
    let headroom = (limit - peak).max(0.0);
    let ttf = |rate: f64| (rate > 0.0).then(|| headroom / rate);
    Some(Forecast {
        growth_bytes_per_sec: slope,
        growth_low: low,
        growth_high: high,
        level_bytes: level,
        peak_bytes: peak,
        limit_bytes: limit,
        time_to_full_secs: ttf(slope),
        time_to_full_low_secs: ttf(high),
        time_to_full_high_secs: ttf(low),
        points: xs.len(),
        span_secs: span,
    })
}

/// The readings a fit may use: those in the window ending at `now_ms`,
/// oldest first, from the end of the last sudden fall on.
///
/// A trim or a flush drops memory at once; fitted across it, the readings
/// before sat far above the line, their residuals made the "peak" exceed
/// the limit, and the forecast said "full in 0 s" at 15.7%. A fall counts
/// as sudden when it is at least [`SUDDEN_FALL_SHARE`] of the limit, three
/// times any other fall in the window and quick (a tenth of the history at
/// most), so the teeth of a queue that fills and drains (many falls alike)
/// and memory that shrinks steadily are left to the fit.
fn usable_history(
    config: &ForecastConfig,
    points: &[(u64, f64)],
    now_ms: u64,
    limit: f64,
) -> Vec<(u64, f64)> {
    let start = now_ms.saturating_sub(crate::clock::ms(config.window));
    let mut recent: Vec<(u64, f64)> = points
        .iter()
        .copied()
        .filter(|(t, y)| *t >= start && *t <= now_ms && y.is_finite())
        .collect();
    recent.sort_by_key(|(t, _)| *t);
    match end_of_sudden_fall(&recent, limit) {
        Some(from) => recent.split_off(from),
        None => recent,
    }
}

/// A fall of at least this share of the limit may be sudden.
pub const SUDDEN_FALL_SHARE: f64 = 0.05;

/// The index where the largest run of falling readings ends, when that run
/// is a sudden fall (see [`usable_history`]).
fn end_of_sudden_fall(points: &[(u64, f64)], limit: f64) -> Option<usize> {
    // (size, index of its last reading, index of the reading before it)
    // of each run of falling readings.
    let mut falls: Vec<(f64, usize, usize)> = Vec::new();
    let mut run = 0.0;
    let mut run_start = 0;
    for i in 1..points.len() {
        let step = points[i - 1].1 - points[i].1;
        if step > 0.0 {
            if run == 0.0 {
                run_start = i - 1;
            }
            run += step;
        }
        let run_ends = step <= 0.0 || i == points.len() - 1;
        if run_ends && run > 0.0 {
            let end = if step > 0.0 { i } else { i - 1 };
            falls.push((run, end, run_start));
            run = 0.0;
        }
    }
    falls.sort_by(|a, b| b.0.total_cmp(&a.0));
    let (largest, end, start) = *falls.first()?;
    let second = falls.get(1).map_or(0.0, |f| f.0);
    // Quick, too: a tenth of the history at most, so that memory that
    // shrinks steadily is a trend to fit, not a fall to cut at.
    let history = points[points.len() - 1].0 - points[0].0;
    let took = points[end].0 - points[start].0;
    (largest >= SUDDEN_FALL_SHARE * limit && largest >= 3.0 * second && took * 10 <= history)
        .then_some(end)
}

/// Cuts the time range into at most `max` equal buckets and reduces each to
/// (median time, median value); empty buckets are skipped.
fn bucket(points: &[(u64, f64)], max: usize) -> Vec<(u64, f64)> {
    if points.len() <= max {
        return points.to_vec();
    }
    let (first, last) = (points[0].0, points[points.len() - 1].0);
    let width = ((last - first) / max as u64).max(1);
    let mut out = Vec::with_capacity(max);
    let mut i = 0;
    while i < points.len() {
        let index = (points[i].0 - first) / width;
        let mut j = i;
        while j < points.len() && (points[j].0 - first) / width == index {
            j += 1;
        }
        let group = &points[i..j];
        let mut values: Vec<f64> = group.iter().map(|(_, y)| *y).collect();
        values.sort_by(f64::total_cmp);
        out.push((group[group.len() / 2].0, median_sorted(&values)));
        i = j;
    }
    out
}

/// The number of independent points the residuals are worth: a series
/// whose residuals follow each other (a saw-tooth, a slow wave) carries less
/// information than its length, `n (1 − ρ) / (1 + ρ)` with ρ the lag-1
/// autocorrelation (the usual correction for trend tests on serially
/// correlated data). At least 3.
fn effective_points(residuals: &[f64]) -> f64 {
    let n = residuals.len() as f64;
    let mean = residuals.iter().sum::<f64>() / n;
    let var: f64 = residuals.iter().map(|r| (r - mean).powi(2)).sum();
    if var <= f64::EPSILON {
        return n;
    }
    let lag1: f64 = residuals
        .windows(2)
        .map(|w| (w[0] - mean) * (w[1] - mean))
        .sum();
    let rho = (lag1 / var).clamp(0.0, 0.99);
    (n * (1.0 - rho) / (1.0 + rho)).max(3.0)
}

/// Sen's rank interval for the median of `slopes` (sorted), for a series
/// worth `n` independent points. The offset from the median is a share of
/// the slopes, so it carries over to the pairs actually used.
fn sen_interval(slopes: &[f64], n: f64) -> (f64, f64) {
    let total = slopes.len() as f64;
    let all_pairs = n * (n - 1.0) / 2.0;
    let var = n * (n - 1.0) * (2.0 * n + 5.0) / 18.0;
    let share = (Z_95 * var.sqrt() / all_pairs).min(1.0);
    let lo = ((total - share * total) / 2.0).floor().max(0.0) as usize;
    let hi = ((total + share * total) / 2.0).ceil().min(total - 1.0) as usize;
    (slopes[lo.min(slopes.len() - 1)], slopes[hi])
}

fn median_sorted(values: &[f64]) -> f64 {
    let mid = values.len() / 2;
    if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    }
}

fn quantile_sorted(values: &[f64], q: f64) -> f64 {
    let index = ((values.len() - 1) as f64 * q).round() as usize;
    values[index.min(values.len() - 1)]
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: u64 = 60_000;

    fn config() -> ForecastConfig {
        ForecastConfig {
            window: Duration::from_secs(6 * 3600),
            min_span: Duration::from_secs(600),
            ..ForecastConfig::default()
        }
    }

    // A guard started shortly before a fast leak had no forecast until
    // after Redis was full (15 minutes of history first).
    #[test]
    fn a_steep_steady_rise_is_forecast_before_the_usual_history() {
        let config = ForecastConfig {
            min_span: Duration::from_secs(15 * 60),
            ..config()
        };
        let readings = |per_sec: f64, noise: f64| -> Vec<(u64, f64)> {
            (0..=24u64)
                .map(|i| {
                    let wobble = if i % 2 == 0 { noise } else { -noise };
                    (i * 10_000, 100e6 + per_sec * (i * 10) as f64 + wobble)
                })
                .collect()
        };
        // 4 minutes of a leak that fills the other 900 MB in 10 minutes:
        // full 6 minutes from now, before 15 minutes of history are in.
        let fast = readings(1.5e6, 1e5);
        let f = fit(&config, &fast, 240_000, 1000e6).expect("steep and steady");
        let ttf = f.time_to_full_secs.unwrap();
        assert!((ttf - 360.0).abs() < 36.0, "{ttf}");
        // As steady but full in 20 minutes: the usual history comes first.
        assert!(fit(&config, &readings(0.6e6, 1e5), 240_000, 1000e6).is_none());
        assert!(f.growth_low > 0.0);
        // The same 4 minutes of a slow leak (full in days): wait as usual.
        assert!(fit(&config, &readings(1e3, 1e2), 240_000, 1000e6).is_none());
        // A tooth: filled fast for two minutes, drained for two. Wait.
        let tooth: Vec<(u64, f64)> = (0..=24u64)
            .map(|i| {
                let up = if i <= 12 { i } else { 24 - i };
                (i * 10_000, 100e6 + up as f64 * 10e6)
            })
            .collect();
        assert!(fit(&config, &tooth, 240_000, 1000e6).is_none());
        // Two minutes: too little, however steep.
        assert!(fit(&config, &fast[..13], 120_000, 1000e6).is_none());
    }

    // After a trim the forecast said "full in 0 s" at 15.7%.
    #[test]
    fn after_a_sudden_fall_the_fit_starts_again_from_it() {
        // 1 MB a minute from 100 MB to 600 MB (limit 1,000 MB), a trim to
        // 150 MB at minute 100, then 0.5 MB a minute.
        let mut points: Vec<(u64, f64)> = (0..100)
            .map(|m| (m * MIN, 100e6 + m as f64 * 5e6))
            .collect();
        points.extend((100..=140).map(|m| (m * MIN, 150e6 + (m - 100) as f64 * 0.5e6)));
        let f = fit(&config(), &points, 140 * MIN, 1000e6).unwrap();
        assert!(
            (f.growth_bytes_per_sec - 0.5e6 / 60.0).abs() < 100.0,
            "refitted from the fall: {f:?}"
        );
        let ttf = f.time_to_full_secs.unwrap();
        // (1,000 − 170) MB at 0.5 MB a minute: 1,660 minutes.
        assert!((ttf / 60.0 - 1660.0).abs() < 60.0, "{ttf}");
        // Right after the fall, too little history since: no forecast,
        // and the pending figures say how much more is needed.
        assert!(fit(&config(), &points[..103], 102 * MIN, 1000e6).is_none());
        let pending = pending(&config(), &points[..103], 102 * MIN, 1000e6);
        assert!((pending.needed_secs - 480.0).abs() < 1.0, "{pending:?}");
    }

    #[test]
    fn a_saw_tooth_has_no_sudden_fall() {
        // Fills 10 MB a minute for 5 minutes, drains, again and again.
        let points: Vec<(u64, f64)> = (0..=120)
            .map(|m| (m * MIN, 100e6 + (m % 6) as f64 * 10e6))
            .collect();
        assert_eq!(end_of_sudden_fall(&points, 1000e6), None);
    }

    #[test]
    fn a_steady_leak_gives_its_rate_and_time_to_full() {
        // 1 MB a minute from 100 MB; limit 1,000 MB; now at minute 120.
        let points: Vec<(u64, f64)> = (0..=120)
            .map(|m| (m * MIN, 100e6 + m as f64 * 1e6))
            .collect();
        let f = fit(&config(), &points, 120 * MIN, 1000e6).unwrap();
        assert!((f.growth_bytes_per_sec - 1e6 / 60.0).abs() < 1.0, "{f:?}");
        let ttf = f.time_to_full_secs.unwrap();
        assert!((ttf - 780.0 * 60.0).abs() < 60.0, "{ttf}");
        assert!(f.growth_low <= f.growth_bytes_per_sec && f.growth_bytes_per_sec <= f.growth_high);
    }

    #[test]
    fn spikes_do_not_move_the_rate() {
        let points: Vec<(u64, f64)> = (0..=120)
            .map(|m| {
                let spike = if m % 10 == 3 { 400e6 } else { 0.0 };
                (m * MIN, 100e6 + m as f64 * 1e6 + spike)
            })
            .collect();
        let f = fit(&config(), &points, 120 * MIN, 1000e6).unwrap();
        let rate = 1e6 / 60.0;
        assert!((f.growth_bytes_per_sec - rate).abs() / rate < 0.05, "{f:?}");
    }

    #[test]
    fn a_saw_tooth_without_a_trend_is_not_growth() {
        // Fills for 18 minutes, drains in 2: the queue that fills and drains.
        let points: Vec<(u64, f64)> = (0..=360)
            .map(|m| {
                let phase = m % 20;
                let tooth = if phase < 18 { phase as f64 * 5e6 } else { 0.0 };
                (m * MIN, 200e6 + tooth)
            })
            .collect();
        let f = fit(&config(), &points, 360 * MIN, 1000e6).unwrap();
        // A plain Theil–Sen over all pairs reads this as ~2.5 MB/min growth.
        let per_hour = f.growth_bytes_per_sec * 3600.0;
        assert!(per_hour.abs() < 10e6, "{per_hour} bytes/h");
        // Either no time to full, or one so far off that no leeway alert fires.
        if let Some(ttf) = f.time_to_full_secs {
            assert!(ttf > 7.0 * 86400.0, "{ttf}");
        }
        // The peaks, not the mid-line, are what reach the limit.
        assert!(f.peak_bytes > f.level_bytes + 30e6, "{f:?}");
    }

    #[test]
    fn a_leak_under_a_saw_tooth_is_found() {
        let points: Vec<(u64, f64)> = (0..=360)
            .map(|m| {
                let phase = m % 20;
                let tooth = if phase < 18 { phase as f64 * 5e6 } else { 0.0 };
                (m * MIN, 200e6 + tooth + m as f64 * 0.5e6)
            })
            .collect();
        let f = fit(&config(), &points, 360 * MIN, 2000e6).unwrap();
        let per_min = f.growth_bytes_per_sec * 60.0;
        assert!((per_min - 0.5e6).abs() < 0.1e6, "{per_min}");
    }

    #[test]
    fn a_few_teeth_of_a_saw_tooth_are_not_significant_growth() {
        // An hour of history ending near the top of the third tooth.
        let points: Vec<(u64, f64)> = (1..=63)
            .map(|m| {
                let phase = m % 22;
                let tooth = if phase < 20 {
                    phase as f64 * 150e3
                } else {
                    0.0
                };
                (m * MIN, 1e6 + tooth)
            })
            .collect();
        let f = fit(&config(), &points, 63 * MIN, 16e6).unwrap();
        assert!(f.growth_low <= 0.0, "{f:?}");
    }

    #[test]
    fn too_little_history_gives_no_forecast() {
        let points: Vec<(u64, f64)> = (0..5).map(|m| (m * MIN, m as f64)).collect();
        assert!(fit(&config(), &points, 5 * MIN, 100.0).is_none());
    }

    #[test]
    fn shrinking_memory_has_no_time_to_full() {
        let points: Vec<(u64, f64)> = (0..=60)
            .map(|m| (m * MIN, 500e6 - m as f64 * 1e6))
            .collect();
        let f = fit(&config(), &points, 60 * MIN, 1000e6).unwrap();
        assert!(f.growth_bytes_per_sec < 0.0);
        assert_eq!(f.time_to_full_secs, None);
    }

    #[test]
    fn bad_settings_are_named() {
        let err = ForecastConfig {
            min_points: 1,
            ..ForecastConfig::default()
        }
        .validate()
        .unwrap_err();
        assert!(err.to_string().contains("min_points"), "{err}");
    }
}
