//! The workloads, by the names of shared/BENCH.md and docs/benchmarks.md.
//!
//! One enum rather than strings: `--workload` is parsed into it once (clap
//! lists the valid names when one is wrong), [`Workload::part`] is the one
//! place that says which module runs each, and a new workload does not
//! compile until that is said. The names are the ones printed in every
//! JSON line, which `bench/compare` and the tables in docs/benchmarks.md
//! match on.

use std::fmt;

use clap::ValueEnum;

/// A workload of shared/BENCH.md. The order of the variants is the order
/// clap lists them in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, ValueEnum)]
pub enum Workload {
    /// Enqueue, one call per job, `--concurrency` calls in flight.
    #[value(name = "W1-single")]
    W1Single,
    /// Enqueue, 1,000 jobs per call.
    #[value(name = "W1-bulk")]
    W1Bulk,
    /// A worker drains the waiting jobs.
    #[value(name = "W2-drain")]
    W2Drain,
    /// Redis' bytes per waiting job.
    #[value(name = "W3-waiting")]
    W3Waiting,
    /// Redis' bytes per job once completed and retained.
    #[value(name = "W3-retained")]
    W3Retained,
    /// Latency from enqueue to the handler at `--rate` jobs/s.
    #[value(name = "W4-latency")]
    W4Latency,
    /// Jobs through to completion (10,000,000 unless `--n`), half retried
    /// once and 1% failed; Redis' memory at checkpoints.
    #[value(name = "W5-soak")]
    W5Soak,
    /// Cache reads of cached keys, against plain GETs.
    #[value(name = "C1-hit")]
    C1Hit,
    /// Cache reads while Redis is killed, restarted and paused.
    #[value(name = "C2-down")]
    C2Down,
    /// The guard's attribution of 1,000,000 keys in 20 families.
    #[value(name = "G1-attribute")]
    G1Attribute,
    /// The guard's alerts and forecast while Redis fills.
    #[value(name = "G2-forecast")]
    G2Forecast,
    /// Webhooks posted to `plimsoll serve`.
    #[value(name = "H1-intake")]
    H1Intake,
    /// Webhooks posted while Redis is down for 10 s.
    #[value(name = "H2-intake-redis-down")]
    H2IntakeRedisDown,
}

/// Which module runs a workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Part {
    /// [`crate::queue`]: W1–W5.
    Queue,
    /// [`crate::cache`]: C1, C2.
    Cache,
    /// [`crate::guard`]: G1, G2.
    Guard,
    /// [`crate::server`]: H1, H2.
    Server,
}

impl Workload {
    pub(crate) fn part(self) -> Part {
        match self {
            Self::W1Single
            | Self::W1Bulk
            | Self::W2Drain
            | Self::W3Waiting
            | Self::W3Retained
            | Self::W4Latency
            | Self::W5Soak => Part::Queue,
            Self::C1Hit | Self::C2Down => Part::Cache,
            Self::G1Attribute | Self::G2Forecast => Part::Guard,
            Self::H1Intake | Self::H2IntakeRedisDown => Part::Server,
        }
    }
}

/// The workload's name, as `--workload` takes it and every line prints it.
impl fmt::Display for Workload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let value = self.to_possible_value().expect("no workload is skipped");
        f.write_str(value.get_name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_names_are_those_of_the_benchmark_table() {
        let names: Vec<String> = Workload::value_variants()
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            names,
            [
                "W1-single",
                "W1-bulk",
                "W2-drain",
                "W3-waiting",
                "W3-retained",
                "W4-latency",
                "W5-soak",
                "C1-hit",
                "C2-down",
                "G1-attribute",
                "G2-forecast",
                "H1-intake",
                "H2-intake-redis-down",
            ]
        );
    }

    #[test]
    fn names_are_read_exactly() {
        assert_eq!(Workload::from_str("W2-drain", false), Ok(Workload::W2Drain));
        assert!(Workload::from_str("w2-drain", false).is_err());
        assert!(Workload::from_str("W2", false).is_err());
    }
}
