//! What a walk keeps per family: key counts, the moments of the sizes it
//! measured (for the mean, its variance and the sample's skewness), and
//! BullMQ's job hashes split by state.

use std::collections::BTreeMap;

use super::config::AttributeConfig;
use super::families::{Family, Role};

/// Sums of measured sizes: enough for a mean, its variance and the
/// sample's skewness.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct Moments {
    pub n: u64,
    pub sum: f64,
    pub sum_sq: f64,
    pub sum_cu: f64,
}

impl Moments {
    pub(crate) fn add(&mut self, x: f64) {
        self.n += 1;
        self.sum += x;
        self.sum_sq += x * x;
        self.sum_cu += x * x * x;
    }

    pub(crate) fn absorb(&mut self, other: &Moments) {
        self.n += other.n;
        self.sum += other.sum;
        self.sum_sq += other.sum_sq;
        self.sum_cu += other.sum_cu;
    }

    pub(crate) fn mean(&self) -> Option<f64> {
        (self.n > 0).then(|| self.sum / self.n as f64)
    }

    /// The sample variance (with Bessel's correction; 0 below two).
    pub(crate) fn variance(&self) -> f64 {
        let n = self.n as f64;
        if self.n < 2 {
            return 0.0;
        }
        let mean = self.sum / n;
        ((self.sum_sq / n - mean * mean) * n / (n - 1.0)).max(0.0)
    }

    /// The standard error of the mean relative to the mean (infinite
    /// without a positive mean or below two).
    pub(crate) fn relative_error_of_mean(&self) -> f64 {
        match self.mean() {
            Some(mean) if mean > 0.0 && self.n > 1 => {
                (self.variance() / self.n as f64).sqrt() / mean
            }
            _ => f64::INFINITY,
        }
    }

    /// The sample's skewness (0 below three or without spread).
    fn skewness(&self) -> f64 {
        if self.n < 3 {
            return 0.0;
        }
        let n = self.n as f64;
        let mean = self.sum / n;
        let m2 = (self.sum_sq / n - mean * mean).max(0.0);
        if m2 <= 0.0 {
            return 0.0;
        }
        let m3 = self.sum_cu / n - 3.0 * mean * self.sum_sq / n + 2.0 * mean * mean * mean;
        m3 / m2.powf(1.5)
    }
}

/// The state of a sampled BullMQ job, from its queue's sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum JobState {
    Completed = 0,
    Failed = 1,
    /// Waiting, active, delayed, prioritized.
    Other = 2,
}

/// What was measured of one family on one node.
#[derive(Debug, Clone)]
pub(crate) struct Tally {
    pub family: Family,
    pub keys: u64,
    /// Sizes of the measured keys.
    pub sizes: Moments,
    /// Of those, the ones Redis could only estimate (too many elements).
    pub estimated: Moments,
    pub no_ttl: u64,
    pub types: BTreeMap<String, u64>,
    /// BullMQ job hashes and logs only: sizes by the job's state, so that
    /// completed jobs are counted at their own size (they carry a return
    /// value, failed ones a stack trace; see `report.rs`).
    pub by_state: [Moments; 3],
}

impl Tally {
    pub(crate) fn new(family: Family) -> Self {
        Self {
            family,
            keys: 0,
            sizes: Moments::default(),
            estimated: Moments::default(),
            no_ttl: 0,
            types: BTreeMap::new(),
            by_state: [Moments::default(); 3],
        }
    }

    pub(crate) fn absorb(&mut self, other: Tally) {
        self.keys += other.keys;
        self.sizes.absorb(&other.sizes);
        self.estimated.absorb(&other.estimated);
        self.no_ttl += other.no_ttl;
        for (t, n) in other.types {
            *self.types.entry(t).or_default() += n;
        }
        for (mine, theirs) in self.by_state.iter_mut().zip(other.by_state.iter()) {
            mine.absorb(theirs);
        }
    }

    /// Whether the next key the walk meets should be measured too:
    /// always up to `samples_per_family`, never beyond
    /// `max_samples_per_family`, and in between while the mean's standard
    /// error is above the target, while the sample is too skewed for its
    /// normal interval to hold (Cochran's rule: n ≥ 25·skewness², so that
    /// a few big keys among many small ones widen the sample rather than
    /// hide behind a tight interval), and for BullMQ jobs while a state
    /// seen so far is known too roughly: job hashes until each state has
    /// [`MIN_SAMPLES_PER_STATE`] keys and its mean is within the target,
    /// logs until each state's total (a domain of the sample: sizes counted
    /// as 0 for the other states' keys) is within [`MAX_STATE_ERROR`].
    pub(super) fn wants_sample(&self, pending: u64, config: &AttributeConfig) -> bool {
        let n = self.sizes.n + pending;
        if n < config.samples_per_family as u64 {
            return true;
        }
        if n >= config.max_samples_per_family as u64 || self.sizes.n < 2 {
            return false;
        }
        let target = config.target_relative_error;
        let error = self.sizes.relative_error_of_mean();
        if error.is_finite() && error > target {
            return true;
        }
        if (self.sizes.n as f64) < 25.0 * self.sizes.skewness().powi(2) {
            return true;
        }
        let seen = self.by_state.iter().filter(|s| s.n > 0);
        match self.family.role {
            // Each state's count is exact (its set's ZCARD): what matters
            // is each state's mean size.
            Role::JobHashes => seen
                .into_iter()
                .any(|s| s.n < MIN_SAMPLES_PER_STATE || s.relative_error_of_mean() > target),
            // Only some jobs have logs: each state's total is a domain of
            // the sample, its share uncertain too.
            Role::JobLogs => seen.into_iter().any(|s| {
                Moments {
                    n: self.sizes.n,
                    ..*s
                }
                .relative_error_of_mean()
                    > MAX_STATE_ERROR
            }),
            _ => false,
        }
    }
}

/// BullMQ job hashes: keys measured per job state seen, at least.
pub(crate) const MIN_SAMPLES_PER_STATE: u64 = 30;
/// BullMQ job logs: the relative standard error of each state's total (a
/// domain of the sample) that stops extra sampling: about ±10% at 95%.
pub(crate) const MAX_STATE_ERROR: f64 = 0.05;
