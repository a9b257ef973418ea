//! What one round of readings calls for: each node's alerts (memory and
//! leeway levels, out-of-memory runs, evictions, memory outside the data,
//! no `maxmemory`, an evicting Redis that holds queues) with the state they
//! change, and the totals across nodes. Pure functions of a reading and the
//! node's state, so the tests drive them without a Redis.

use std::collections::BTreeMap;
use std::time::Duration;

use super::alerts::{AlertKind, OverheadSignal, Severity};
use super::attribute::{self, MemoryReport};
use super::config::Settings;
use super::forecast::Forecast;
use super::history::{NodeState, OomEpisode};
use super::sampler::{LimitSource, NodeSample};
use super::thresholds::LevelChange;

/// The limits of all nodes, summed, except that nodes measured against
/// their machine's memory count each machine once: three nodes on one
/// 23.5 GiB box read "all nodes: 70.6 GiB".
pub(super) fn total_limit(samples: &[NodeSample]) -> u64 {
    let mut machines: BTreeMap<&str, u64> = BTreeMap::new();
    let mut total = 0;
    for sample in samples {
        match sample.limit_source {
            LimitSource::System | LimitSource::GuardHost => {
                let host = sample
                    .node
                    .rsplit_once(':')
                    .map_or(sample.node.as_str(), |(h, _)| h);
                let machine = machines.entry(host).or_default();
                *machine = (*machine).max(sample.limit);
            }
            _ => total += sample.limit,
        }
    }
    total + machines.values().sum::<u64>()
}

/// The job queues a report found, for people ("BullMQ queue mail"), each
/// once, largest first.
pub(super) fn queues_of(report: &MemoryReport) -> Vec<String> {
    let mut queues: Vec<String> = Vec::new();
    for family in &report.families {
        if family.layout == attribute::Layout::Generic {
            continue;
        }
        let name = match &family.queue {
            Some(queue) => format!("{} queue {queue}", family.layout.name()),
            None => family.layout.name().to_string(),
        };
        if !queues.contains(&name) {
            queues.push(name);
        }
    }
    queues
}

/// Fragmentation below this many bytes never alerts.
pub const FRAGMENTATION_FLOOR: u64 = 100 << 20;

/// Share of the limit that memory outside the data must reach to alert.
pub const OVERHEAD_ALERT_SHARE: f64 = 0.10;

/// Fragmentation, client buffers and the replication backlog: each alerts
/// once when it holds [`OVERHEAD_ALERT_SHARE`] of the limit, and may alert
/// again after it fell below half that.
pub(super) fn overhead_changes(
    state: &mut NodeState,
    sample: &NodeSample,
) -> Vec<(AlertKind, Severity)> {
    let mut out = Vec::new();
    let limit = sample.limit.max(1) as f64;
    for signal in OverheadSignal::ALL {
        let bytes = match signal {
            OverheadSignal::Fragmentation => {
                sample.used_memory_rss.saturating_sub(sample.used_memory)
            }
            OverheadSignal::ClientBuffers => sample.client_buffers,
            OverheadSignal::ReplicationBacklog => sample.replication_backlog,
        };
        let share = bytes as f64 / limit;
        // A small Redis holds a few MiB beyond its data from the start
        // (7 MiB of RSS for 1 MiB of data when empty): fragmentation
        // counts from FRAGMENTATION_FLOOR and half again the data.
        let counts = signal != OverheadSignal::Fragmentation
            || (bytes >= FRAGMENTATION_FLOOR && bytes * 2 >= sample.used_memory);
        if counts && share >= OVERHEAD_ALERT_SHARE {
            if state.overhead_raised.insert(signal) {
                out.push((AlertKind::Overhead { signal, bytes }, Severity::Warning));
            }
        } else if share < OVERHEAD_ALERT_SHARE / 2.0 {
            state.overhead_raised.remove(&signal);
        }
    }
    out
}

/// A run of OOM refusals ends after this long without one.
pub const OOM_CLEAR_AFTER: Duration = Duration::from_secs(5 * 60);
/// While Redis keeps refusing, the alert is repeated this often.
pub const OOM_REMINDER: Duration = Duration::from_secs(30 * 60);
/// Refusals per second this many times those of the last alert alert again.
pub const OOM_RATE_ESCALATION: f64 = 4.0;

/// Out of memory, as runs: one alert when Redis starts refusing writes,
/// again when the refusals per second rise [`OOM_RATE_ESCALATION`]-fold or
/// every [`OOM_REMINDER`] while it goes on, and one when it has refused
/// nothing for [`OOM_CLEAR_AFTER`]. (Before, every reading with a refusal
/// alerted: 48 alerts in 114 s at a 2 s interval.)
///
/// The rate is refusals per second since the reading before: the guard's
/// interval for the first refusal of a run, the time since the run's last
/// refusal after that.
pub(super) fn oom_changes(
    state: &mut NodeState,
    now: u64,
    refused: u64,
    reading_interval: Duration,
) -> Vec<(AlertKind, Severity)> {
    let mut out = Vec::new();
    match (&mut state.oom_episode, refused) {
        (None, 0) => {}
        (None, refused) => {
            state.oom_episode = Some(OomEpisode {
                started_ms: now,
                last_refusal_ms: now,
                last_alert_ms: now,
                alerted_rate: refused as f64 / reading_interval.as_secs_f64().max(0.001),
                rejections: refused,
            });
            out.push((
                AlertKind::OutOfMemory {
                    rejections: refused,
                },
                Severity::Critical,
            ));
        }
        (Some(episode), 0) => {
            if now.saturating_sub(episode.last_refusal_ms) >= crate::clock::ms(OOM_CLEAR_AFTER) {
                out.push((
                    AlertKind::OutOfMemoryCleared {
                        rejections: episode.rejections,
                        lasted_secs: episode.last_refusal_ms.saturating_sub(episode.started_ms)
                            as f64
                            / 1000.0,
                    },
                    Severity::Info,
                ));
                state.oom_episode = None;
            }
        }
        (Some(episode), refused) => {
            let since_last_refusal =
                now.saturating_sub(episode.last_refusal_ms).max(1) as f64 / 1000.0;
            let rate = refused as f64 / since_last_refusal;
            episode.last_refusal_ms = now;
            episode.rejections += refused;
            let reminder =
                now.saturating_sub(episode.last_alert_ms) >= crate::clock::ms(OOM_REMINDER);
            if reminder || rate >= episode.alerted_rate * OOM_RATE_ESCALATION {
                episode.last_alert_ms = now;
                episode.alerted_rate = rate;
                out.push((
                    AlertKind::OutOfMemory {
                        rejections: refused,
                    },
                    Severity::Critical,
                ));
            }
        }
    }
    out
}

/// The alerts one node's reading calls for, updating its state.
/// `queues`: the job queues the latest memory report found (empty before
/// the first report).
pub(super) fn node_changes(
    settings: &Settings,
    state: &mut NodeState,
    now: u64,
    sample: &NodeSample,
    forecast: Option<&Forecast>,
    queues: &[String],
) -> Vec<(AlertKind, Severity)> {
    let mut out = Vec::new();
    if sample.maxmemory == 0 {
        if !state.unbounded_alerted {
            state.unbounded_alerted = true;
            out.push((AlertKind::Unbounded, Severity::Warning));
        }
    } else {
        state.unbounded_alerted = false;
    }
    out.extend(overhead_changes(state, sample));
    // allkeys-* evicts anything, volatile-* keys with a TTL (Plimsoll's
    // completed jobs, BullMQ's locks…): on a Redis that holds queues,
    // either deletes jobs or their bookkeeping.
    let evicts = sample.maxmemory_policy.starts_with("allkeys-")
        || sample.maxmemory_policy.starts_with("volatile-");
    if evicts && !queues.is_empty() {
        if !state.eviction_alerted {
            state.eviction_alerted = true;
            out.push((
                AlertKind::EvictionDeletesJobs {
                    policy: sample.maxmemory_policy.clone(),
                    queues: queues.to_vec(),
                },
                Severity::Critical,
            ));
        }
    } else if !evicts {
        state.eviction_alerted = false;
    }
    let top_level = settings.memory.levels().len().saturating_sub(1);
    for change in state
        .levels
        .observe(&settings.memory, now, sample.used_ratio())
    {
        out.push(match change {
            LevelChange::Raised { index, level } => (
                AlertKind::LevelRaised { level },
                if index == top_level {
                    Severity::Critical
                } else {
                    Severity::Warning
                },
            ),
            LevelChange::Cleared { level, .. } => {
                (AlertKind::LevelCleared { level }, Severity::Info)
            }
        });
    }
    // Leeway alerts need growth the fit is sure of (the low end of its 95%
    // interval above zero): with too few teeth of a saw-tooth in the window,
    // the point estimate can read a fill phase as a trend.
    let ttf = forecast
        .filter(|f| f.growth_low > 0.0)
        .and_then(|f| f.time_to_full_secs)
        .unwrap_or(f64::INFINITY);
    let most_urgent = settings.leeway.levels().len().saturating_sub(1);
    for change in state.leeway.observe(&settings.leeway, now, ttf) {
        out.push(match change {
            LevelChange::Raised { index, level } => (
                AlertKind::LeewayRaised {
                    hours: level / 3600.0,
                },
                if index == most_urgent {
                    Severity::Critical
                } else {
                    Severity::Warning
                },
            ),
            LevelChange::Cleared { level, .. } => (
                AlertKind::LeewayCleared {
                    hours: level / 3600.0,
                },
                Severity::Info,
            ),
        });
    }
    // Counters restart from zero when Redis restarts.
    let refused = match state.oom_rejections {
        Some(before) if sample.oom_rejections > before => sample.oom_rejections - before,
        _ => 0,
    };
    out.extend(oom_changes(state, now, refused, settings.interval));
    state.oom_rejections = Some(sample.oom_rejections);
    if let Some(before) = state.evicted_keys
        && sample.evicted_keys > before
    {
        out.push((
            AlertKind::Evictions {
                evicted: sample.evicted_keys - before,
            },
            Severity::Warning,
        ));
    }
    state.evicted_keys = Some(sample.evicted_keys);
    out
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::guard::summary::summary;

    /// Feeds `oom_changes` one reading every 2 s, as the guard would.
    fn readings(state: &mut NodeState, from_ms: u64, refusals: &[u64]) -> Vec<(u64, AlertKind)> {
        let mut out = Vec::new();
        for (i, refused) in refusals.iter().enumerate() {
            let now = from_ms + i as u64 * 2_000;
            for (kind, _) in oom_changes(state, now, *refused, Duration::from_secs(2)) {
                out.push((now, kind));
            }
        }
        out
    }

    pub(crate) fn sample(used: u64, limit: u64) -> NodeSample {
        NodeSample {
            node: "127.0.0.1:6379".into(),
            used_memory: used,
            maxmemory: limit,
            maxmemory_policy: "noeviction".into(),
            limit,
            limit_source: LimitSource::Maxmemory,
            keys: 1,
            expires: 0,
            evicted_keys: 0,
            oom_rejections: 0,
            ops_per_sec: 0,
            replicas: vec![],
            used_memory_rss: used,
            client_buffers: 0,
            replication_backlog: 0,
        }
    }

    #[test]
    fn fragmentation_client_buffers_and_the_backlog_alert_once_until_they_fall_back() {
        let mut state = NodeState::default();
        let limit = 1000 << 20;
        let mut s = sample(150 << 20, limit);
        s.used_memory_rss = 260 << 20;
        s.client_buffers = 120 << 20;
        let names = |out: Vec<(AlertKind, Severity)>| -> Vec<&'static str> {
            out.into_iter().map(|(k, _)| k.name()).collect()
        };
        assert_eq!(
            names(overhead_changes(&mut state, &s)),
            ["fragmentation", "client_buffers"]
        );
        assert!(overhead_changes(&mut state, &s).is_empty(), "once");
        // Buffers drained to 3%: cleared; back at 12%: again.
        s.client_buffers = 30 << 20;
        assert!(overhead_changes(&mut state, &s).is_empty());
        s.client_buffers = 120 << 20;
        assert_eq!(names(overhead_changes(&mut state, &s)), ["client_buffers"]);
        s.replication_backlog = 200 << 20;
        let out = overhead_changes(&mut state, &s);
        let text = summary(&out[0].0, &s, None, None);
        assert!(
            text.contains("replication backlog holds 200.0 MiB (20% of the limit)"),
            "{text}"
        );
        // A small Redis's few MiB beyond its data are not fragmentation.
        let mut small = NodeState::default();
        let mut tiny = sample(1 << 20, 16 << 20);
        tiny.used_memory_rss = 7 << 20;
        assert!(overhead_changes(&mut small, &tiny).is_empty());
    }

    // Three nodes on one 23.5 GiB machine, none with maxmemory, read
    // "all nodes: 70.6 GiB".
    #[test]
    fn nodes_on_one_machine_count_its_memory_once() {
        let on = |node: &str, limit: u64, source: LimitSource| NodeSample {
            node: node.into(),
            limit_source: source,
            ..sample(0, limit)
        };
        let samples = [
            on("10.0.0.1:7000", 24 << 30, LimitSource::System),
            on("10.0.0.1:7001", 24 << 30, LimitSource::System),
            on("10.0.0.2:7000", 16 << 30, LimitSource::System),
            on("10.0.0.2:7001", 1 << 30, LimitSource::Maxmemory),
        ];
        assert_eq!(total_limit(&samples), (24 << 30) + (16 << 30) + (1 << 30));
    }

    // A guard at a 2 s interval sent 48 out-of-memory alerts in 114 s.
    #[test]
    fn out_of_memory_alerts_once_per_run_not_on_every_reading() {
        let mut state = NodeState::default();
        // 114 s of steady refusals: one alert.
        let alerts = readings(&mut state, 0, &[20; 57]);
        assert_eq!(alerts.len(), 1, "{alerts:?}");
        assert!(matches!(
            alerts[0].1,
            AlertKind::OutOfMemory { rejections: 20 }
        ));
        // Refusals rising fivefold: one more.
        let alerts = readings(&mut state, 114_000, &[100; 10]);
        assert_eq!(alerts.len(), 1, "{alerts:?}");
        // Still going after the reminder interval: reminded once.
        let steady = vec![100; (OOM_REMINDER.as_secs() / 2) as usize + 1];
        let alerts = readings(&mut state, 134_000, &steady);
        assert_eq!(alerts.len(), 1, "{alerts:?}");
        // Quiet for the clearing time: one "cleared", then nothing.
        let start = 134_000 + steady.len() as u64 * 2_000;
        let quiet = vec![0; (OOM_CLEAR_AFTER.as_secs() / 2) as usize + 10];
        let alerts = readings(&mut state, start, &quiet);
        assert_eq!(alerts.len(), 1, "{alerts:?}");
        let AlertKind::OutOfMemoryCleared { rejections, .. } = alerts[0].1 else {
            panic!("{alerts:?}");
        };
        let total = 20 * 57 + 100 * 10 + 100 * steady.len() as u64;
        assert_eq!(rejections, total);
        assert!(state.oom_episode.is_none());
        // A new run alerts again at once.
        let alerts = readings(&mut state, start + 10 * 60_000, &[0, 5, 5]);
        assert_eq!(alerts.len(), 1, "{alerts:?}");
    }
}
