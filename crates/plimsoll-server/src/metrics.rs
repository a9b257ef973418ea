//! Prometheus metrics, served as text on a port of their own
//! (`metrics_listen`, default 127.0.0.1:9464).
//!
//! Counters the server owns (HTTP requests, intake outcomes, replays) are
//! prometheus-client metrics updated in place. Figures that live in Redis or
//! in the library (queue counts and totals, worker stats) are snapshots: a
//! sampler refreshes them every few seconds and a collector writes the last
//! snapshot at scrape time, so a scrape never waits on Redis. The memory
//! guard's metrics are a collector in the same registry
//! ([`crate::guard_metrics::GuardCollector`]), reading the guard's
//! in-memory snapshot: one registry and one encoding, so `/metrics` is one
//! exposition with each family declared once.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use plimsoll::queue::QueueCounts;
use plimsoll::worker::WorkerStats;

/// The `route` label of a request no route matched: one series for every
/// invented path.
pub const UNMATCHED_ROUTE: &str = "(unmatched)";
/// Queues given series of their own on `/metrics`, at most; the rest are
/// summed under `queue="(other)"`. API callers can name queues at will, and
/// each labelled queue costs a dozen series.
pub const MAX_LABELLED_QUEUES: usize = 200;
/// The `queue` label of the queues beyond [`MAX_LABELLED_QUEUES`].
pub const OTHER_QUEUES: &str = "(other)";

/// The `method` label: the standard methods by name, anything else `other`
/// (hyper accepts any token as a method, so a caller could otherwise add a
/// series per request).
pub fn method_label(method: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HttpLabels {
    route: String,
    method: &'static str,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct IntakeLabels {
    source: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QueueLabels {
    queue: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QueueStateLabels {
    queue: String,
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QueueEventLabels {
    queue: String,
    event: String,
}

/// Snapshots written at scrape time.
#[derive(Debug, Default)]
pub struct Snapshots {
    pub queues: BTreeMap<String, QueueCounts>,
    pub queue_memory: BTreeMap<String, u64>,
    pub push_workers: BTreeMap<String, WorkerStats>,
    pub spool_records: u64,
    pub spool_bytes: u64,
    pub spool_max_bytes: u64,
    pub spool_quarantine_records: u64,
    pub spool_quarantine_bytes: u64,
    pub cache: Option<plimsoll::CacheStats>,
    /// Queues that keep series of their own however many there are (the
    /// configured ones, webhook queues included).
    pub pinned_queues: std::collections::BTreeSet<String>,
}

impl Snapshots {
    /// Whether `queue` gets series of its own: the pinned queues, then the
    /// others in name order, up to [`MAX_LABELLED_QUEUES`] in all.
    fn labelled(&self) -> std::collections::BTreeSet<&str> {
        let mut labelled: std::collections::BTreeSet<&str> =
            self.pinned_queues.iter().map(String::as_str).collect();
        for queue in self.queues.keys() {
            if labelled.len() >= MAX_LABELLED_QUEUES.max(self.pinned_queues.len()) {
                break;
            }
            labelled.insert(queue);
        }
        labelled
    }
}

/// The label a queue's figures go under.
fn queue_label<'a>(labelled: &std::collections::BTreeSet<&str>, queue: &'a str) -> &'a str {
    if labelled.contains(queue) {
        queue
    } else {
        OTHER_QUEUES
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: String,
}

#[derive(Debug, Clone, Default)]
struct SnapshotCollector(Arc<Mutex<Snapshots>>);

/// The server's metrics.
pub struct Metrics {
    registry: Registry,
    http_requests: Family<HttpLabels, Counter>,
    http_seconds: Family<RouteLabels, Histogram>,
    intake: Family<IntakeLabels, Counter>,
    replayed: Counter,
    quarantined: Counter,
    snapshots: Arc<Mutex<Snapshots>>,
    up: Gauge,
    connections: crate::listener::ConnectionMetrics,
    connection_limit: Gauge,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("plimsoll");
        let http_requests = Family::<HttpLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests answered, by route, method and status",
            http_requests.clone(),
        );
        let http_seconds = Family::<RouteLabels, Histogram>::new_with_constructor(|| {
            Histogram::new([
                0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0,
            ])
        });
        registry.register(
            "http_request_duration_seconds",
            "Time to answer an HTTP request, by route",
            http_seconds.clone(),
        );
        let intake = Family::<IntakeLabels, Counter>::default();
        registry.register(
            "intake_webhooks",
            "Webhooks received, by source and outcome (enqueued, spooled, or the error code)",
            intake.clone(),
        );
        let replayed = Counter::default();
        registry.register(
            "spool_replayed",
            "Spooled webhooks handed to Redis",
            replayed.clone(),
        );
        let quarantined = Counter::default();
        registry.register(
            "spool_quarantined",
            "Spooled webhooks Redis refused for good, moved to the quarantine",
            quarantined.clone(),
        );
        let up = Gauge::default();
        up.set(1);
        registry.register("up", "1 while the server runs", up.clone());
        let connections = crate::listener::ConnectionMetrics::default();
        registry.register(
            "http_connections",
            "Client connections open on the API listener",
            connections.open.clone(),
        );
        let connection_limit = Gauge::default();
        registry.register(
            "http_connection_limit",
            "Client connections the API listener keeps open at most (http.max_connections)",
            connection_limit.clone(),
        );
        registry.register(
            "http_connections_shed",
            "Connections closed while waiting for a request, to make room for a new one",
            connections.shed.clone(),
        );
        registry.register(
            "http_connections_refused",
            "New connections answered 503 because every open one had a request in flight",
            connections.refused.clone(),
        );
        let snapshots = Arc::new(Mutex::new(Snapshots::default()));
        registry.register_collector(Box::new(SnapshotCollector(snapshots.clone())));
        Self {
            registry,
            http_requests,
            http_seconds,
            intake,
            replayed,
            quarantined,
            snapshots,
            up,
            connections,
            connection_limit,
        }
    }

    /// The API listener's connection figures, with its limit recorded.
    pub fn connections(&self, limit: usize) -> crate::listener::ConnectionMetrics {
        self.connection_limit.set(limit as i64);
        self.connections.clone()
    }

    /// Records one answered HTTP request.
    pub fn http(&self, route: &str, method: &'static str, status: u16, seconds: f64) {
        self.http_requests
            .get_or_create(&HttpLabels {
                route: route.to_string(),
                method,
                status,
            })
            .inc();
        self.http_seconds
            .get_or_create(&RouteLabels {
                route: route.to_string(),
            })
            .observe(seconds);
    }

    /// Records a webhook's outcome: `Ok(spooled)` or `Err(error code)`.
    pub fn intake(&self, source: &str, outcome: Result<bool, &str>) {
        let outcome = match outcome {
            Ok(true) => "spooled",
            Ok(false) => "enqueued",
            Err(code) => code,
        };
        self.intake
            .get_or_create(&IntakeLabels {
                source: source.to_string(),
                outcome: outcome.to_string(),
            })
            .inc();
    }

    /// Counts spooled webhooks handed to Redis.
    pub fn replayed(&self, n: u64) {
        self.replayed.inc_by(n);
    }

    /// Counts spooled webhooks moved to the quarantine.
    pub fn quarantined(&self, n: u64) {
        self.quarantined.inc_by(n);
    }

    /// Replaces the snapshots with `update`'s changes.
    pub fn update(&self, update: impl FnOnce(&mut Snapshots)) {
        update(&mut self.snapshots.lock().unwrap_or_else(|e| e.into_inner()));
    }

    /// Marks the server as stopping.
    pub fn stopping(&self) {
        self.up.set(0);
    }

    /// Adds the memory guard's metrics to this registry, read from its
    /// snapshot at each scrape, so that `/metrics` is one encoding: each
    /// family written once, the guard's after the server's.
    pub fn register_guard(&mut self, guard: plimsoll::Guard) {
        // `plimsoll` (this registry's prefix) + `guard`: the guard's names.
        self.registry
            .sub_registry_with_prefix("guard")
            .register_collector(Box::new(crate::guard_metrics::GuardCollector::new(guard)));
    }

    /// Every metric, the guard's included once it is registered, in
    /// Prometheus' classic text format (0.0.4).
    pub fn render(&self) -> String {
        crate::exposition::encode_classic(&self.registry)
    }
}

impl Collector for SnapshotCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let snap = self.0.lock().unwrap_or_else(|e| e.into_inner());

        let labelled = snap.labelled();
        // Queues past the cap are summed under one label.
        let mut counts: BTreeMap<&str, [u64; 5]> = BTreeMap::new();
        let mut events: BTreeMap<&str, [u64; 6]> = BTreeMap::new();
        for (queue, c) in &snap.queues {
            let label = queue_label(&labelled, queue);
            let sum = counts.entry(label).or_default();
            for (slot, n) in
                sum.iter_mut()
                    .zip([c.waiting, c.scheduled, c.active, c.dead, c.completed])
            {
                *slot += n;
            }
            let t = &c.totals;
            let sum = events.entry(label).or_default();
            for (slot, n) in sum.iter_mut().zip([
                t.enqueued,
                t.completed,
                t.retried,
                t.dead,
                t.cancelled,
                t.rescued,
            ]) {
                *slot += n;
            }
        }
        let mut bytes: BTreeMap<&str, u64> = BTreeMap::new();
        for (queue, n) in &snap.queue_memory {
            *bytes.entry(queue_label(&labelled, queue)).or_default() += n;
        }
        let mut running: BTreeMap<&str, u64> = BTreeMap::new();
        for (queue, s) in &snap.push_workers {
            *running.entry(queue_label(&labelled, queue)).or_default() += s.running;
        }

        let mut jobs = encoder.encode_descriptor(
            "queue_jobs",
            "Jobs in a queue, by state",
            None,
            MetricType::Gauge,
        )?;
        for (queue, sums) in &counts {
            for (state, n) in ["waiting", "scheduled", "active", "dead", "completed"]
                .into_iter()
                .zip(sums)
            {
                let labels = QueueStateLabels {
                    queue: queue.to_string(),
                    state: state.into(),
                };
                ConstGauge::new(*n as i64).encode(jobs.encode_family(&labels)?)?;
            }
        }

        let mut family = encoder.encode_descriptor(
            "queue_events",
            "Jobs that went through a queue since it was created, by event",
            None,
            MetricType::Counter,
        )?;
        for (queue, sums) in &events {
            for (event, n) in [
                "enqueued",
                "completed",
                "retried",
                "dead",
                "cancelled",
                "rescued",
            ]
            .into_iter()
            .zip(sums)
            {
                let labels = QueueEventLabels {
                    queue: queue.to_string(),
                    event: event.into(),
                };
                ConstCounter::new(*n).encode(family.encode_family(&labels)?)?;
            }
        }

        let mut family = encoder.encode_descriptor(
            "queue_memory_bytes",
            "Bytes a queue's keys take in Redis (MEMORY USAGE, sampled)",
            None,
            MetricType::Gauge,
        )?;
        for (queue, n) in &bytes {
            let labels = QueueLabels {
                queue: queue.to_string(),
            };
            ConstGauge::new(*n as i64).encode(family.encode_family(&labels)?)?;
        }

        let mut family = encoder.encode_descriptor(
            "push_running",
            "Push deliveries in progress, by queue",
            None,
            MetricType::Gauge,
        )?;
        for (queue, n) in &running {
            let labels = QueueLabels {
                queue: queue.to_string(),
            };
            ConstGauge::new(*n as i64).encode(family.encode_family(&labels)?)?;
        }

        if let Some(cache) = &snap.cache {
            encode_cache(&mut encoder, cache)?;
        }

        for (name, help, value) in [
            (
                "spool_records",
                "Webhooks in the local spool, waiting for Redis",
                snap.spool_records,
            ),
            (
                "spool_bytes",
                "Bytes of webhooks in the local spool",
                snap.spool_bytes,
            ),
            (
                "spool_max_bytes",
                "The spool's bound; past it webhooks are refused with 503",
                snap.spool_max_bytes,
            ),
            (
                "spool_quarantine_records",
                "Spooled webhooks Redis refused for good, held in the quarantine",
                snap.spool_quarantine_records,
            ),
            (
                "spool_quarantine_bytes",
                "Bytes of the spool's quarantine",
                snap.spool_quarantine_bytes,
            ),
        ] {
            let gauge = ConstGauge::new(value as i64);
            gauge.encode(encoder.encode_descriptor(name, help, None, gauge.metric_type())?)?;
        }
        Ok(())
    }
}

/// The cache's stats: reads by result, loader calls, Redis errors by kind,
/// the breaker's state and transitions, time spent.
fn encode_cache(
    encoder: &mut DescriptorEncoder,
    cache: &plimsoll::CacheStats,
) -> Result<(), std::fmt::Error> {
    /// A counter family: name, help, and a value per `kind` label.
    type CounterFamily<'a> = (&'a str, &'a str, Vec<(&'a str, u64)>);
    let families: [CounterFamily; 4] = [
        (
            "cache_reads",
            "Cache reads, by what served them",
            vec![
                ("local_hit", cache.local_hits),
                ("redis_hit", cache.redis_hits),
                ("stale_hit", cache.stale_hits),
                ("miss", cache.misses),
                ("fallback", cache.fallbacks),
            ],
        ),
        (
            "cache_redis_errors",
            "Redis errors the cache absorbed, by kind (none reached a reader)",
            vec![
                ("timeout", cache.redis_errors.timeout),
                ("connection", cache.redis_errors.connection),
                ("unavailable", cache.redis_errors.unavailable),
                ("out_of_memory", cache.redis_errors.out_of_memory),
                ("other", cache.redis_errors.other),
            ],
        ),
        (
            "cache_breaker_transitions",
            "Times the cache's circuit breaker moved to a state",
            vec![
                ("open", cache.breaker.opened),
                ("half_open", cache.breaker.half_opened),
                ("closed", cache.breaker.closed),
            ],
        ),
        (
            "cache_calls",
            "Cache calls by what they did besides reading",
            vec![
                ("loader", cache.loader_calls),
                ("loader_error", cache.loader_errors),
                ("flight_join", cache.flight_joins),
                ("redis_write", cache.redis_writes),
                ("breaker_skip", cache.breaker_skips),
                ("shed", cache.shed),
            ],
        ),
    ];
    for (name, help, values) in families {
        let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
        for (kind, value) in values {
            let labels = KindLabels { kind: kind.into() };
            ConstCounter::new(value).encode(family.encode_family(&labels)?)?;
        }
    }
    let mut state = encoder.encode_descriptor(
        "cache_breaker_state",
        "1 for the state the cache's circuit breaker is in",
        None,
        MetricType::Gauge,
    )?;
    for candidate in ["closed", "open", "half_open"] {
        let labels = KindLabels {
            kind: candidate.into(),
        };
        let on = i64::from(cache.breaker.state.as_str() == candidate);
        ConstGauge::new(on).encode(state.encode_family(&labels)?)?;
    }
    let seconds = ConstCounter::new(cache.redis_time_us as f64 / 1e6);
    seconds.encode(encoder.encode_descriptor(
        "cache_redis_seconds",
        "Time the cache spent waiting on Redis",
        None,
        seconds.metric_type(),
    )?)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_text_format_carries_counters_and_snapshots() {
        let metrics = Metrics::new();
        metrics.http("/v1/queues", "GET", 200, 0.003);
        metrics.intake("github", Ok(true));
        metrics.update(|s| {
            s.queues.insert(
                "mail".into(),
                QueueCounts {
                    waiting: 7,
                    ..QueueCounts::default()
                },
            );
            s.spool_records = 3;
        });
        let text = metrics.render();
        assert!(
            text.contains(
                "plimsoll_http_requests_total{route=\"/v1/queues\",method=\"GET\",status=\"200\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "plimsoll_intake_webhooks_total{source=\"github\",outcome=\"spooled\"} 1"
            )
        );
        assert!(text.contains("plimsoll_queue_jobs{queue=\"mail\",state=\"waiting\"} 7"));
        assert!(text.contains("plimsoll_spool_records 3"));
        assert!(
            text.contains("# TYPE plimsoll_http_requests_total counter"),
            "{text}"
        );
        assert!(!text.contains("# EOF"));
    }
}
