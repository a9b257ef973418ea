//! Alerts: what happened, how bad, the figures and what to look at.
//!
//! Every alert says what crossed, the figures now, the forecast, and the
//! key families growing fastest, so that whoever reads it at 3 a.m. knows
//! where to look without opening a console. Deduplication and rate limits
//! are the [`dispatcher`](super::dispatch)'s.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use super::forecast::{Forecast, ForecastPending};
use super::sampler::LimitSource;
use crate::units::{human_bytes, human_signed_bytes};

/// Top growing families named in an alert.
pub const ALERT_TOP_FAMILIES: usize = 5;

/// What happened.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum AlertKind {
    /// Memory reached a level (a share of the limit).
    LevelRaised {
        /// The level, e.g. 0.5.
        level: f64,
    },
    /// Memory stayed below a level (less the hysteresis band) for the dwell.
    LevelCleared {
        /// The level.
        level: f64,
    },
    /// The forecast time to full fell under a leeway.
    LeewayRaised {
        /// The leeway, hours.
        hours: f64,
    },
    /// The forecast time to full rose above a leeway again.
    LeewayCleared {
        /// The leeway, hours.
        hours: f64,
    },
    /// Redis refused commands because it is full (`errorstat_OOM` grew).
    OutOfMemory {
        /// Refusals since the last reading.
        rejections: u64,
    },
    /// Redis has refused nothing for a while after an out-of-memory run.
    OutOfMemoryCleared {
        /// Refusals in the whole run.
        rejections: u64,
        /// How long the run lasted, seconds.
        lasted_secs: f64,
    },
    /// Redis evicts keys when full and holds job queues: evictions there
    /// delete jobs (and their queues' bookkeeping) without a trace.
    EvictionDeletesJobs {
        /// `maxmemory-policy`.
        policy: String,
        /// The queues of the latest memory report, for people.
        queues: Vec<String>,
    },
    /// Memory outside the data took a large share of the limit.
    Overhead {
        /// What holds it.
        signal: OverheadSignal,
        /// Bytes it holds.
        bytes: u64,
    },
    /// Redis evicted keys to stay under `maxmemory`.
    Evictions {
        /// Keys evicted since the last reading.
        evicted: u64,
    },
    /// Redis has no `maxmemory`: it will grow until the machine runs out.
    Unbounded,
    /// The guard cannot read Redis.
    Unreachable {
        /// Why.
        error: String,
    },
    /// `plimsoll serve`'s webhook spool (kept on local disk while Redis
    /// cannot take webhooks) passed its warning level: past its bound,
    /// webhooks are refused with 503. `used_bytes` / `limit_bytes` are the
    /// spool's.
    SpoolFilling {
        /// Webhooks waiting in the spool.
        records: u64,
    },
    /// The spool is back under its warning level.
    SpoolCleared,
    /// Spooled webhooks that Redis refused for good (not for a transient
    /// reason) were moved to the spool's quarantine, so that the others
    /// replay; they reach their queue only when an operator retries them.
    /// `used_bytes` / `limit_bytes` are the quarantine's.
    SpoolQuarantined {
        /// Webhooks in the quarantine.
        records: u64,
    },
}

impl AlertKind {
    /// A short name, for metrics labels and logs.
    pub fn name(&self) -> &'static str {
        match self {
            Self::LevelRaised { .. } => "level_raised",
            Self::LevelCleared { .. } => "level_cleared",
            Self::LeewayRaised { .. } => "leeway_raised",
            Self::LeewayCleared { .. } => "leeway_cleared",
            Self::OutOfMemory { .. } => "out_of_memory",
            Self::OutOfMemoryCleared { .. } => "out_of_memory_cleared",
            Self::Evictions { .. } => "evictions",
            Self::Unbounded => "unbounded",
            Self::EvictionDeletesJobs { .. } => "eviction_deletes_jobs",
            Self::Overhead { signal, .. } => signal.alert_name(),
            Self::Unreachable { .. } => "unreachable",
            Self::SpoolFilling { .. } => "spool_filling",
            Self::SpoolCleared => "spool_cleared",
            Self::SpoolQuarantined { .. } => "spool_quarantined",
        }
    }

    /// Escalations are never held back.
    pub fn is_escalation(&self) -> bool {
        matches!(
            self,
            Self::LevelRaised { .. }
                | Self::LeewayRaised { .. }
                | Self::OutOfMemory { .. }
                | Self::SpoolFilling { .. }
                | Self::SpoolQuarantined { .. }
        )
    }
}

/// Memory a Redis holds outside its data, watched on its own because it
/// fills Redis (or its machine) without any key growing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OverheadSignal {
    /// `used_memory_rss − used_memory`: the allocator holds pages the data
    /// no longer fills (outside `maxmemory`, but on the machine).
    Fragmentation,
    /// Clients' buffers (`mem_clients_normal`): a subscriber or a client
    /// that does not read its replies, a huge pipeline.
    ClientBuffers,
    /// The replication backlog (`mem_replication_backlog`).
    ReplicationBacklog,
}

impl OverheadSignal {
    /// Every signal.
    pub const ALL: [OverheadSignal; 3] = [
        OverheadSignal::Fragmentation,
        OverheadSignal::ClientBuffers,
        OverheadSignal::ReplicationBacklog,
    ];

    /// The alert's name.
    pub fn alert_name(self) -> &'static str {
        match self {
            OverheadSignal::Fragmentation => "fragmentation",
            OverheadSignal::ClientBuffers => "client_buffers",
            OverheadSignal::ReplicationBacklog => "replication_backlog",
        }
    }
}

/// How bad.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Something cleared.
    Info,
    /// Act this week.
    Warning,
    /// Act now.
    Critical,
}

/// A family in an alert.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FamilyGrowth {
    /// For people.
    pub name: String,
    /// The pattern.
    pub pattern: String,
    /// Bytes now.
    pub bytes: u64,
    /// Keys now.
    pub keys: u64,
    /// Bytes gained since the previous report.
    pub growth_bytes: i64,
    /// Suspected of leaking.
    pub suspected_leak: bool,
    /// The `plimsoll trim …` dry run for it (None: no target trims it).
    #[serde(default)]
    pub trim_command: Option<String>,
}

/// One alert.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    /// What happened.
    pub kind: AlertKind,
    /// How bad.
    pub severity: Severity,
    /// The node (`host:port`).
    pub node: String,
    /// When (ms since the epoch).
    pub at_ms: u64,
    /// One line for people.
    pub summary: String,
    /// `used_memory` now.
    pub used_bytes: u64,
    /// The limit measured against.
    pub limit_bytes: u64,
    /// Where the limit comes from.
    pub limit_source: LimitSource,
    /// `used_bytes / limit_bytes`.
    pub used_ratio: f64,
    /// `maxmemory` (0: unbounded).
    pub maxmemory_bytes: u64,
    /// Memory used on all nodes.
    pub total_used_bytes: u64,
    /// The limits of all nodes, summed.
    pub total_limit_bytes: u64,
    /// The node's forecast.
    pub forecast: Option<Forecast>,
    /// Without a forecast: what the history shows so far, and how much
    /// more the forecast needs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forecast_pending: Option<ForecastPending>,
    /// Families growing fastest (from the latest memory report).
    pub top_growing: Vec<FamilyGrowth>,
}

impl Alert {
    /// The key deduplication works on: kind, level and node.
    pub fn dedup_key(&self) -> String {
        let level = match &self.kind {
            AlertKind::LevelRaised { level } | AlertKind::LevelCleared { level } => {
                format!("{level}")
            }
            AlertKind::LeewayRaised { hours } | AlertKind::LeewayCleared { hours } => {
                format!("{hours}")
            }
            _ => String::new(),
        };
        format!("{}:{level}:{}", self.kind.name(), self.node)
    }

    /// A few lines for people: the summary, the figures, the forecast and
    /// the growing families. Used by the log and Slack sinks.
    pub fn text(&self) -> String {
        let mut out = format!("{}\n", self.summary);
        let _ = writeln!(
            out,
            "{}: {} of {} ({:.1}%, limit from {}){}",
            self.node,
            human_bytes(self.used_bytes),
            human_bytes(self.limit_bytes),
            self.used_ratio * 100.0,
            self.limit_source.as_str(),
            if self.maxmemory_bytes == 0 {
                "; no maxmemory set"
            } else {
                ""
            }
        );
        if self.total_limit_bytes != self.limit_bytes {
            let _ = writeln!(
                out,
                "all nodes: {} of {}",
                human_bytes(self.total_used_bytes),
                human_bytes(self.total_limit_bytes)
            );
        }
        match &self.forecast {
            Some(f) => {
                let _ = write!(
                    out,
                    "growth {}/h (95%: {} to {}/h)",
                    human_signed_bytes(f.growth_bytes_per_sec * 3600.0),
                    human_signed_bytes(f.growth_low * 3600.0),
                    human_signed_bytes(f.growth_high * 3600.0),
                );
                match f.time_to_full_secs {
                    Some(ttf) => {
                        let _ = writeln!(
                            out,
                            "; full in {} (between {} and {})",
                            duration(Some(ttf)),
                            duration(f.time_to_full_low_secs),
                            duration(f.time_to_full_high_secs)
                        );
                    }
                    None => out.push_str("; not filling\n"),
                }
            }
            None => match &self.forecast_pending {
                Some(pending) => {
                    let _ = writeln!(out, "{}", pending.text());
                }
                None => out.push_str("forecast: not enough history yet\n"),
            },
        }
        if !self.top_growing.is_empty() {
            out.push_str("growing fastest:\n");
            for f in &self.top_growing {
                let _ = writeln!(
                    out,
                    "  {} — {} in {} keys, {} since the last report{}",
                    f.name,
                    human_bytes(f.bytes),
                    f.keys,
                    human_signed_bytes(f.growth_bytes as f64),
                    if f.suspected_leak {
                        " (suspected leak: grows steadily, no TTL)"
                    } else {
                        ""
                    }
                );
                if let Some(command) = &f.trim_command {
                    let _ = writeln!(out, "    see what trimming it would free: {command}");
                }
            }
        }
        out
    }
}

pub(crate) fn duration(secs: Option<f64>) -> String {
    match secs {
        None => "never".into(),
        Some(s) if s >= 2.0 * 86400.0 => format!("{:.1} days", s / 86400.0),
        Some(s) if s >= 3600.0 => format!("{:.1} h", s / 3600.0),
        Some(s) if s >= 60.0 => format!("{:.0} min", s / 60.0),
        Some(s) => format!("{s:.0} s"),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn alert(kind: AlertKind, at_ms: u64) -> Alert {
        Alert {
            summary: format!("test {}", kind.name()),
            kind,
            severity: Severity::Warning,
            node: "127.0.0.1:6379".into(),
            at_ms,
            used_bytes: 3 << 20,
            limit_bytes: 16 << 20,
            limit_source: LimitSource::Maxmemory,
            used_ratio: 3.0 / 16.0,
            maxmemory_bytes: 16 << 20,
            total_used_bytes: 3 << 20,
            total_limit_bytes: 16 << 20,
            forecast: None,
            forecast_pending: None,
            top_growing: vec![FamilyGrowth {
                name: "BullMQ queue mail: completed jobs".into(),
                pattern: "bull:mail:completed".into(),
                bytes: 2 << 20,
                keys: 1000,
                growth_bytes: 1 << 20,
                suspected_leak: true,
                trim_command: Some("plimsoll trim bullmq mail --set completed --keep 1000".into()),
            }],
        }
    }

    #[test]
    fn the_text_names_figures_forecast_and_families() {
        let mut a = alert(AlertKind::LevelRaised { level: 0.2 }, 0);
        a.forecast = Some(Forecast {
            growth_bytes_per_sec: 100.0,
            growth_low: 90.0,
            growth_high: 110.0,
            level_bytes: 3e6,
            peak_bytes: 3e6,
            limit_bytes: 16e6,
            time_to_full_secs: Some(7200.0),
            time_to_full_low_secs: Some(6000.0),
            time_to_full_high_secs: Some(9000.0),
            points: 20,
            span_secs: 600.0,
        });
        let text = a.text();
        for needle in [
            "3.0 MiB of 16.0 MiB",
            "full in 2.0 h",
            "BullMQ queue mail",
            "suspected leak",
            "plimsoll trim bullmq mail --set completed --keep 1000",
        ] {
            assert!(text.contains(needle), "{needle:?} in {text}");
        }
    }

    // An alert before the forecast had enough history said "full in never".
    #[test]
    fn without_a_forecast_the_text_says_what_history_shows_and_what_it_needs() {
        let mut a = alert(AlertKind::LevelRaised { level: 0.2 }, 0);
        a.forecast_pending = Some(ForecastPending {
            history_secs: 240.0,
            needed_secs: 660.0,
            growth_so_far_bytes_per_sec: Some(2.0 * 1024.0 * 1024.0 / 3600.0),
        });
        let text = a.text();
        assert!(!text.contains("never"), "{text}");
        assert!(
            text.contains("no forecast yet: growing 2.0 MiB/h over the last 4 min; the forecast needs 11 min more of history"),
            "{text}"
        );
    }
}
