//! Prometheus metrics of the memory guard, from the library's
//! [`GuardStats`] snapshot: [`GuardCollector`] writes them at each scrape
//! into the registry it is registered in (`plimsoll serve` registers it in
//! its one registry, so `/metrics` is one encoding with each family once),
//! [`render`] writes one snapshot as text, and [`app`] serves that on
//! `/metrics` (plus `/stats` as JSON and `/healthz`) for `plimsoll guard`.
//!
//! Kept thin and in the binary: the library only builds the snapshot.
//! Metric names are listed in [`METRIC_NAMES`]; a test checks that
//! `deploy/prometheus/alerts.yml` and the Grafana dashboard use no other
//! `plimsoll_guard_*` name.

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use plimsoll::Guard;
use plimsoll::guard::GuardStats;
use plimsoll::guard::stats::NodeRole;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

/// The prefix every guard metric's name starts with. The registry writes it
/// (see [`GuardCollector`]), so the collector writes the rest of the name.
pub const PREFIX: &str = "plimsoll_guard";

/// Every metric this exporter emits.
pub const METRIC_NAMES: &[&str] = &[
    "plimsoll_guard_up",
    "plimsoll_guard_replica",
    "plimsoll_guard_used_memory_bytes",
    "plimsoll_guard_maxmemory_bytes",
    "plimsoll_guard_memory_limit_bytes",
    "plimsoll_guard_memory_used_ratio",
    "plimsoll_guard_keys",
    "plimsoll_guard_evicted_keys_total",
    "plimsoll_guard_oom_rejections_total",
    "plimsoll_guard_levels_raised",
    "plimsoll_guard_leeway_levels_raised",
    "plimsoll_guard_growth_bytes_per_second",
    "plimsoll_guard_growth_low_bytes_per_second",
    "plimsoll_guard_growth_high_bytes_per_second",
    "plimsoll_guard_time_to_full_seconds",
    "plimsoll_guard_time_to_full_low_seconds",
    "plimsoll_guard_total_used_memory_bytes",
    "plimsoll_guard_total_memory_limit_bytes",
    "plimsoll_guard_total_time_to_full_seconds",
    "plimsoll_guard_samples_total",
    "plimsoll_guard_sample_errors_total",
    "plimsoll_guard_last_sample_timestamp_seconds",
    "plimsoll_guard_alerts_total",
    "plimsoll_guard_alerts_held_back_total",
    "plimsoll_guard_alert_delivery_failures_total",
    "plimsoll_guard_report_timestamp_seconds",
    "plimsoll_guard_report_duration_seconds",
    "plimsoll_guard_report_commands",
    "plimsoll_guard_report_budget_commands_per_second",
    "plimsoll_guard_report_keys",
    "plimsoll_guard_report_keys_scanned",
    "plimsoll_guard_report_errors_total",
    "plimsoll_guard_history_errors_total",
    "plimsoll_guard_family_bytes",
    "plimsoll_guard_family_bytes_error",
    "plimsoll_guard_family_keys",
    "plimsoll_guard_family_no_ttl_ratio",
    "plimsoll_guard_family_growth_bytes",
    "plimsoll_guard_family_suspected_leak",
];

/// Collects the samples of each metric family, then writes them through
/// prometheus-client's encoder, each family once with all its samples
/// together. (Written line by line per node, a cluster's families came out
/// split across the output, against the text format.)
struct Writer {
    families: Vec<MetricFamily>,
}

/// One metric family: its samples in the order written.
struct MetricFamily {
    name: &'static str,
    kind: MetricType,
    help: String,
    samples: Vec<(Vec<(String, String)>, f64)>,
}

impl Writer {
    fn new() -> Self {
        Self {
            families: Vec::new(),
        }
    }

    fn sample(
        &mut self,
        name: &'static str,
        kind: &str,
        help: &str,
        labels: &[(&str, &str)],
        value: f64,
    ) {
        debug_assert!(
            METRIC_NAMES.contains(&name),
            "{name} is not in METRIC_NAMES"
        );
        let labels = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        match self.families.iter_mut().find(|f| f.name == name) {
            Some(family) => family.samples.push((labels, value)),
            None => self.families.push(MetricFamily {
                name,
                kind: if kind == "counter" {
                    MetricType::Counter
                } else {
                    MetricType::Gauge
                },
                help: help.to_string(),
                samples: vec![(labels, value)],
            }),
        }
    }
}

/// The collected families, for the registry.
#[derive(Debug)]
struct Families(Vec<MetricFamily>);

impl std::fmt::Debug for MetricFamily {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetricFamily")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl Collector for Families {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        for family in &self.0 {
            // The registry writes the prefix, and the encoder adds `_total`
            // to a counter's name.
            let name = family
                .name
                .strip_prefix(PREFIX)
                .and_then(|rest| rest.strip_prefix('_'))
                .unwrap_or(family.name);
            let name = match family.kind {
                MetricType::Counter => name.strip_suffix("_total").unwrap_or(name),
                _ => name,
            };
            let mut descriptor =
                encoder.encode_descriptor(name, &family.help, None, family.kind)?;
            for (labels, value) in &family.samples {
                let metric = descriptor.encode_family(labels)?;
                match family.kind {
                    MetricType::Counter => ConstCounter::new(*value).encode(metric)?,
                    _ => ConstGauge::new(*value).encode(metric)?,
                }
            }
        }
        Ok(())
    }
}

/// The guard's metrics, read from its snapshot when the registry is
/// encoded. Register it where the names get [`PREFIX`]: a registry with
/// that prefix, or the `guard` sub-registry of one prefixed `plimsoll`.
#[derive(Debug)]
pub struct GuardCollector(Guard);

impl GuardCollector {
    pub fn new(guard: Guard) -> Self {
        Self(guard)
    }
}

impl Collector for GuardCollector {
    fn encode(&self, encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        Families(families(&self.0.stats())).encode(encoder)
    }
}

/// The snapshot in Prometheus' classic text format (0.0.4), as the
/// server's own metrics are written.
pub fn render(stats: &GuardStats) -> String {
    let mut registry = Registry::with_prefix(PREFIX);
    registry.register_collector(Box::new(Families(families(stats))));
    crate::exposition::encode_classic(&registry)
}

/// The snapshot's metric families, in the order they are written.
fn families(stats: &GuardStats) -> Vec<MetricFamily> {
    let mut w = Writer::new();
    for node in &stats.nodes {
        let n = [("node", node.node.as_str())];
        w.sample(
            "plimsoll_guard_up",
            "gauge",
            "1 when the last reading of the node succeeded (a replica: when its primary lists it online); a node seen before and lost stays at 0 until forgotten.",
            &n,
            f64::from(u8::from(node.up)),
        );
        w.sample(
            "plimsoll_guard_replica",
            "gauge",
            "1 for a replica, 0 for a primary.",
            &n,
            f64::from(u8::from(node.role == NodeRole::Replica)),
        );
        // Only primaries are read; a replica has its up and role only.
        if !node.up || node.role != NodeRole::Primary {
            continue;
        }
        w.sample(
            "plimsoll_guard_used_memory_bytes",
            "gauge",
            "Redis used_memory.",
            &n,
            node.used_bytes as f64,
        );
        w.sample(
            "plimsoll_guard_maxmemory_bytes",
            "gauge",
            "Redis maxmemory (0: unbounded).",
            &n,
            node.maxmemory_bytes as f64,
        );
        w.sample(
            "plimsoll_guard_memory_limit_bytes",
            "gauge",
            "The limit memory is measured against; source is maxmemory, configured, system or guard_host.",
            &[("node", &node.node), ("source", node.limit_source.as_str())],
            node.limit_bytes as f64,
        );
        w.sample(
            "plimsoll_guard_memory_used_ratio",
            "gauge",
            "used_memory / limit.",
            &n,
            node.used_ratio,
        );
        w.sample(
            "plimsoll_guard_keys",
            "gauge",
            "Keys in all databases.",
            &n,
            node.keys as f64,
        );
        w.sample(
            "plimsoll_guard_evicted_keys_total",
            "counter",
            "Keys Redis evicted (evicted_keys).",
            &n,
            node.evicted_keys_total as f64,
        );
        w.sample(
            "plimsoll_guard_oom_rejections_total",
            "counter",
            "Commands Redis refused with OOM (errorstat_OOM).",
            &n,
            node.oom_rejections_total as f64,
        );
        w.sample(
            "plimsoll_guard_levels_raised",
            "gauge",
            "Memory levels (20/50/90%) currently raised.",
            &n,
            node.levels_raised.len() as f64,
        );
        w.sample(
            "plimsoll_guard_leeway_levels_raised",
            "gauge",
            "Leeway levels (72 h, 48 h) currently raised.",
            &n,
            node.leeway_raised_hours.len() as f64,
        );
        if let Some(f) = &node.forecast {
            w.sample(
                "plimsoll_guard_growth_bytes_per_second",
                "gauge",
                "Growth of used_memory (Theil-Sen fit).",
                &n,
                f.growth_bytes_per_sec,
            );
            w.sample(
                "plimsoll_guard_growth_low_bytes_per_second",
                "gauge",
                "Low end of the 95% interval of the growth.",
                &n,
                f.growth_low,
            );
            w.sample(
                "plimsoll_guard_growth_high_bytes_per_second",
                "gauge",
                "High end of the 95% interval of the growth.",
                &n,
                f.growth_high,
            );
            w.sample(
                "plimsoll_guard_time_to_full_seconds",
                "gauge",
                "Forecast time until the limit is reached (+Inf: not growing).",
                &n,
                f.time_to_full_secs.unwrap_or(f64::INFINITY),
            );
            w.sample(
                "plimsoll_guard_time_to_full_low_seconds",
                "gauge",
                "Pessimistic time to full (fast end of the interval).",
                &n,
                f.time_to_full_low_secs.unwrap_or(f64::INFINITY),
            );
        }
    }
    if !stats.nodes.is_empty() {
        w.sample(
            "plimsoll_guard_total_used_memory_bytes",
            "gauge",
            "used_memory summed over the primaries.",
            &[],
            stats.total_used_bytes as f64,
        );
        w.sample(
            "plimsoll_guard_total_memory_limit_bytes",
            "gauge",
            "Limits summed over the primaries.",
            &[],
            stats.total_limit_bytes as f64,
        );
    }
    if let Some(f) = &stats.total_forecast {
        w.sample(
            "plimsoll_guard_total_time_to_full_seconds",
            "gauge",
            "Forecast time until the summed limit is reached.",
            &[],
            f.time_to_full_secs.unwrap_or(f64::INFINITY),
        );
    }
    w.sample(
        "plimsoll_guard_samples_total",
        "counter",
        "Rounds of readings.",
        &[],
        stats.samples_total as f64,
    );
    w.sample(
        "plimsoll_guard_sample_errors_total",
        "counter",
        "Node readings that failed.",
        &[],
        stats.sample_errors_total as f64,
    );
    if let Some(t) = stats.last_sample_ms {
        w.sample(
            "plimsoll_guard_last_sample_timestamp_seconds",
            "gauge",
            "When the last reading was taken.",
            &[],
            t as f64 / 1000.0,
        );
    }
    for (kind, n) in &stats.alerts_sent_total {
        w.sample(
            "plimsoll_guard_alerts_total",
            "counter",
            "Alerts sent, by kind.",
            &[("kind", kind)],
            *n as f64,
        );
    }
    w.sample(
        "plimsoll_guard_alerts_held_back_total",
        "counter",
        "Alerts held back by deduplication or the rate limit.",
        &[],
        stats.alerts_held_back_total as f64,
    );
    w.sample(
        "plimsoll_guard_alert_delivery_failures_total",
        "counter",
        "Alert deliveries that failed.",
        &[],
        stats.alert_failures_total as f64,
    );
    w.sample(
        "plimsoll_guard_report_errors_total",
        "counter",
        "Memory reports that failed.",
        &[],
        stats.report_errors_total as f64,
    );
    w.sample(
        "plimsoll_guard_history_errors_total",
        "counter",
        "Writes of the guard's local history that failed.",
        &[],
        stats.history_errors_total as f64,
    );
    if let Some(r) = &stats.report {
        w.sample(
            "plimsoll_guard_report_timestamp_seconds",
            "gauge",
            "When the latest memory report started.",
            &[],
            r.at_ms as f64 / 1000.0,
        );
        w.sample(
            "plimsoll_guard_report_duration_seconds",
            "gauge",
            "How long the latest memory report took.",
            &[],
            r.duration_secs,
        );
        w.sample(
            "plimsoll_guard_report_commands",
            "gauge",
            "Commands the latest memory report sent.",
            &[],
            r.commands as f64,
        );
        w.sample(
            "plimsoll_guard_report_budget_commands_per_second",
            "gauge",
            "The report's command budget per node.",
            &[],
            f64::from(r.budget_per_node),
        );
        w.sample(
            "plimsoll_guard_report_keys",
            "gauge",
            "Keys in Redis at the latest report.",
            &[],
            r.keys_total as f64,
        );
        w.sample(
            "plimsoll_guard_report_keys_scanned",
            "gauge",
            "Keys the latest report walked.",
            &[],
            r.keys_scanned as f64,
        );
        for f in &r.families {
            let l = [("family", f.pattern.as_str()), ("name", f.name.as_str())];
            w.sample(
                "plimsoll_guard_family_bytes",
                "gauge",
                "Bytes of a key family (keys × the mean MEMORY USAGE of a sample of them).",
                &l,
                f.bytes as f64,
            );
            w.sample(
                "plimsoll_guard_family_bytes_error",
                "gauge",
                "95% error of the family's bytes, +/- bytes.",
                &l,
                f.bytes_error as f64,
            );
            w.sample(
                "plimsoll_guard_family_keys",
                "gauge",
                "Keys of a key family.",
                &l,
                f.keys as f64,
            );
            w.sample(
                "plimsoll_guard_family_no_ttl_ratio",
                "gauge",
                "Share of the family's keys without a TTL.",
                &l,
                f.no_ttl_share,
            );
            if let Some(g) = f.growth_bytes {
                w.sample(
                    "plimsoll_guard_family_growth_bytes",
                    "gauge",
                    "Bytes gained since the report before.",
                    &l,
                    g as f64,
                );
            }
            w.sample(
                "plimsoll_guard_family_suspected_leak",
                "gauge",
                "1 when the family grows steadily and has no TTL.",
                &l,
                f64::from(u8::from(f.suspected_leak)),
            );
        }
    }
    w.families
}

/// `/metrics`, `/stats` (JSON) and `/healthz` (200 once a reading
/// succeeded and every node answered in the last round, else 503).
pub fn app(guard: Guard) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/stats", get(stats_json))
        .route("/healthz", get(health))
        .with_state(guard)
}

async fn metrics(State(guard): State<Guard>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        render(&guard.stats()),
    )
}

async fn stats_json(State(guard): State<Guard>) -> impl IntoResponse {
    axum::Json(guard.stats())
}

async fn health(State(guard): State<Guard>) -> impl IntoResponse {
    let stats = guard.stats();
    if stats.last_sample_ms.is_some() && stats.nodes.iter().all(|n| n.up) {
        (StatusCode::OK, "ok")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "redis not read")
    }
}

#[cfg(test)]
mod tests;
