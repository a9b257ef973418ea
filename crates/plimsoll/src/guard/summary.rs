//! The one line an alert says for people: what happened, the figures,
//! and what is known of the time to full, for each kind of alert.

use super::alerts::{AlertKind, OverheadSignal};
use super::evaluate::OOM_CLEAR_AFTER;
use super::forecast::{self, Forecast};
use super::sampler::NodeSample;
use crate::units::human_bytes;

pub(super) fn summary(
    kind: &AlertKind,
    sample: &NodeSample,
    forecast: Option<&Forecast>,
    pending: Option<&forecast::ForecastPending>,
) -> String {
    let used = format!(
        "{} of {} ({:.1}%)",
        human_bytes(sample.used_memory),
        human_bytes(sample.limit),
        sample.used_ratio() * 100.0
    );
    // What is known of the time to full: a forecast, a shrinking or flat
    // Redis, or the history so far and how much more a forecast needs.
    let outlook = match (forecast, pending) {
        (Some(f), _) => match f.time_to_full_secs {
            Some(secs) => format!("full in {}", crate::units::human_duration(secs)),
            None => format!(
                "not filling: {}",
                crate::units::human_rate_per_hour(f.growth_bytes_per_sec)
            ),
        },
        (None, Some(pending)) => pending.text(),
        (None, None) => "no forecast yet".into(),
    };
    let leeway = |hours: f64| crate::units::human_duration(hours * 3600.0);
    match kind {
        AlertKind::LevelRaised { level } => format!(
            "Redis memory passed {:.0}% of its limit: {used}; {outlook}",
            level * 100.0
        ),
        AlertKind::LevelCleared { level } => {
            format!("Redis memory is back under {:.0}%: {used}", level * 100.0)
        }
        AlertKind::LeewayRaised { hours } => format!(
            "Redis will be {outlook}, less than {} from now, at the current growth: {used}",
            leeway(*hours)
        ),
        AlertKind::LeewayCleared { hours } => format!(
            "Redis has more than {} of leeway again ({outlook}): {used}",
            leeway(*hours)
        ),
        AlertKind::OutOfMemory { rejections } => format!(
            "Redis refused {rejections} command(s) with OOM: it is full and writes fail. {used}"
        ),
        AlertKind::OutOfMemoryCleared {
            rejections,
            lasted_secs,
        } => format!(
            "Redis has refused no write for {} min: the out-of-memory run is over after {} \
             refusal(s) in {}. {used}",
            OOM_CLEAR_AFTER.as_secs() / 60,
            rejections,
            crate::units::human_duration(*lasted_secs)
        ),
        AlertKind::Evictions { evicted } => format!(
            "Redis evicted {evicted} key(s) to stay under maxmemory ({}): {used}",
            sample.maxmemory_policy
        ),
        AlertKind::EvictionDeletesJobs { policy, queues } => format!(
            "Redis evicts keys when full (maxmemory-policy {policy}) and holds job queues ({}): \
             an eviction there deletes jobs or their queue's bookkeeping. Set \
             maxmemory-policy noeviction, or move the queues to a Redis of their own. {used}",
            listed(queues, 5)
        ),
        AlertKind::Overhead { signal, bytes } => {
            let share = *bytes as f64 * 100.0 / sample.limit.max(1) as f64;
            let what = match signal {
                OverheadSignal::Fragmentation => format!(
                    "Redis' process holds {} more than its data ({share:.0}% of the limit): \
                     fragmentation, outside maxmemory but on the machine; \
                     CONFIG SET activedefrag yes, or a restart, gives it back",
                    human_bytes(*bytes)
                ),
                OverheadSignal::ClientBuffers => format!(
                    "clients' buffers hold {} ({share:.0}% of the limit): a subscriber or \
                     a client that does not read its replies (CLIENT LIST: omem)",
                    human_bytes(*bytes)
                ),
                OverheadSignal::ReplicationBacklog => format!(
                    "the replication backlog holds {} ({share:.0}% of the limit)",
                    human_bytes(*bytes)
                ),
            };
            format!("{what}. {used}")
        }
        AlertKind::Unbounded => format!(
            "Redis has no maxmemory: it grows until the machine runs out and the kernel kills it. \
             Measuring against {} ({}). Set maxmemory.",
            human_bytes(sample.limit),
            sample.limit_source.as_str()
        ),
        AlertKind::Unreachable { error } => format!("Redis cannot be read: {error}"),
        // Raised by the server about its spool, not from a Redis reading.
        AlertKind::SpoolFilling { records } => {
            format!("the webhook spool holds {records} webhooks: {used}")
        }
        AlertKind::SpoolCleared => {
            format!("the webhook spool is back under its warning level: {used}")
        }
        AlertKind::SpoolQuarantined { records } => {
            format!("the webhook spool's quarantine holds {records} webhooks Redis refused: {used}")
        }
    }
}

/// The first `n` of `items`, and how many more.
fn listed(items: &[String], n: usize) -> String {
    let mut text = items.iter().take(n).cloned().collect::<Vec<_>>().join(", ");
    if items.len() > n {
        text.push_str(&format!(" and {} more", items.len() - n));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::guard::evaluate::tests::sample;

    fn forecast(growth_bytes_per_sec: f64, time_to_full_secs: Option<f64>) -> Forecast {
        Forecast {
            growth_bytes_per_sec,
            growth_low: growth_bytes_per_sec,
            growth_high: growth_bytes_per_sec,
            level_bytes: 1e6,
            peak_bytes: 1e6,
            limit_bytes: 1e7,
            time_to_full_secs,
            time_to_full_low_secs: time_to_full_secs,
            time_to_full_high_secs: time_to_full_secs,
            points: 10,
            span_secs: 900.0,
        }
    }

    // Alerts read "less than 0 h", "more than 0 h of leeway again" and
    // "full in never" where the figures were minutes or unknown.
    #[test]
    fn summaries_give_figures_people_read() {
        let s = sample(60 << 20, 100 << 20);
        let leeway = AlertKind::LeewayRaised { hours: 0.5 };
        let text = summary(&leeway, &s, Some(&forecast(1e4, Some(1200.0))), None);
        assert!(
            text.contains("full in 20 min, less than 30 min from now"),
            "{text}"
        );
        let cleared = AlertKind::LeewayCleared { hours: 0.5 };
        let text = summary(&cleared, &s, Some(&forecast(-5e5, None)), None);
        assert!(
            text.contains("more than 30 min of leeway again (not filling: shrinking 1.7 GiB/h)"),
            "{text}"
        );
        let level = AlertKind::LevelRaised { level: 0.5 };
        let pending = forecast::ForecastPending {
            history_secs: 120.0,
            needed_secs: 780.0,
            growth_so_far_bytes_per_sec: None,
        };
        let text = summary(&level, &s, None, Some(&pending));
        assert!(!text.contains("never"), "{text}");
        assert!(
            text.contains("the forecast needs 13 min more of history"),
            "{text}"
        );
    }
}
