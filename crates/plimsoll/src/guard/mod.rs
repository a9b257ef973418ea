//! The memory guard: watches any Redis, forecasts when it fills, alerts at
//! 20/50/90% and when less than 72 h / 48 h of leeway are left, names the key
//! families that grow, and trims them safely.
//!
//! In the outage behind Plimsoll, Redis filled for three weeks and nobody
//! was told. The guard is the warning that was missing; it works on any
//! Redis (BullMQ, Sidekiq, Celery, RQ, apalis or plain application keys),
//! not only on Plimsoll's own.
//!
//! The pieces:
//!
//! - [`sampler`]: one `INFO` reading per primary, and the limit to measure
//!   against when `maxmemory` is not set;
//! - [`thresholds`]: levels with hysteresis (a band and a dwell);
//! - [`forecast`]: growth rate by a Theil–Sen fit that resists spikes and
//!   saw-tooth, and time-to-full with its interval;
//! - [`history`]: readings and alert states on the guard's own disk, bounded;
//! - [`alerts`]: what an alert says;
//! - [`dispatch`]: deduplication, rate limits and fan-out to the sinks;
//! - [`sinks`]: log / JSON webhook / Slack delivery;
//! - [`attribute`](fn@attribute): memory per key family within a command budget;
//! - [`trim`]: bounded, family-confined deletion;
//! - [`stats`]: the snapshot the metrics exporter renders.
//!
//! Inside the guard, `config.rs` checks the settings once into the form the
//! guard runs on, `evaluate.rs` turns a round of readings into alerts (levels,
//! leeway, out-of-memory runs, evictions, overhead), and `summary.rs` writes
//! each alert's line for people; this file keeps the [`Guard`] and its round.
//!
//! A [`Guard`] runs two background services ([`watch`]: sample and alert
//! every [`DEFAULT_SAMPLE_INTERVAL`]; [`refresh`]: a memory report every
//! [`DEFAULT_ATTRIBUTE_INTERVAL`]) that stop when its shutdown token fires:
//! a round in progress finishes, then each service returns. Both can also be
//! driven by hand ([`Guard::sample_once`], [`Guard::attribute_once`]), with
//! an injected clock, which is how the tests run hours in milliseconds.
//!
//! By default the guard writes nothing into the Redis it watches.
//!
//! The example posts alerts to Slack with `WebhookSink`, which needs the
//! `webhook-sink` cargo feature (on by default; see the crate docs).
//!
//! ```no_run
//! # #[cfg(feature = "webhook-sink")]
//! # mod example {
//! use std::sync::Arc;
//!
//! use plimsoll::{Guard, GuardConfig, LogSink, Redis, WebhookSink};
//! use tokio_util::sync::CancellationToken;
//!
//! # async fn demo() -> plimsoll::Result<()> {
//! let redis = Redis::connect_url("redis://127.0.0.1:6379/").await?;
//! let guard = Guard::new(
//!     redis,
//!     GuardConfig {
//!         sinks: vec![
//!             Arc::new(LogSink),
//!             Arc::new(WebhookSink::slack("https://hooks.slack.com/services/T0/B0/XXXX")?),
//!         ],
//!         history_dir: Some(".plimsoll/guard/cache".into()),
//!         ..GuardConfig::default()
//!     },
//! )?;
//! let shutdown = CancellationToken::new();
//! let tasks = guard.start(shutdown.clone());
//! // guard.stats() is the snapshot a metrics exporter renders.
//! let used = guard.stats().total_used_bytes;
//! shutdown.cancel();
//! for task in tasks {
//!     let _ = task.await;
//! }
//! # let _ = used;
//! # Ok(())
//! # }
//! # }
//! ```

pub mod alerts;
pub mod attribute;
mod config;
pub mod dispatch;
mod evaluate;
pub mod forecast;
pub mod history;
mod jsonl;
pub mod refresh;
pub mod sampler;
pub mod sinks;
pub mod stats;
mod summary;
pub mod thresholds;
pub mod trim;
pub mod watch;

use std::collections::VecDeque;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use alerts::{Alert, AlertKind, FamilyGrowth, Severity};
pub use attribute::{AttributeConfig, FamilyReport, MemoryReport, ReportHistory, attribute};
pub use config::{
    DEFAULT_CLEAR_AFTER, DEFAULT_HYSTERESIS, DEFAULT_LEEWAY, DEFAULT_LEEWAY_BAND, DEFAULT_LEVELS,
    GuardConfig,
};
pub use evaluate::{
    FRAGMENTATION_FLOOR, OOM_CLEAR_AFTER, OOM_RATE_ESCALATION, OOM_REMINDER, OVERHEAD_ALERT_SHARE,
};
pub use forecast::{Forecast, ForecastConfig};
pub use refresh::DEFAULT_ATTRIBUTE_INTERVAL;
pub use sampler::{LimitSource, NodeSample};
#[cfg(feature = "webhook-sink")]
pub use sinks::WebhookSink;
pub use sinks::{AlertSink, LogSink};
pub use stats::GuardStats;
pub use watch::DEFAULT_SAMPLE_INTERVAL;

use self::alerts::ALERT_TOP_FAMILIES;
use self::config::Settings;
use self::dispatch::{Dispatch, Dispatcher};
use self::evaluate::{node_changes, queues_of, total_limit};
use self::history::{GuardState, History, HistoryPoint};
use self::summary::summary;
use crate::connection::{Primary, Redis};
use crate::error::{Error, Result};

/// How often the list of a cluster's primaries is refreshed.
pub const PRIMARIES_REFRESH: Duration = Duration::from_secs(5 * 60);
/// Alerts kept in the stats snapshot for dashboards.
const RECENT_ALERTS: usize = 50;

/// Watches one Redis (every primary of a cluster). Cheap to clone.
#[derive(Clone)]
pub struct Guard {
    inner: Arc<Inner>,
}

struct Inner {
    redis: Redis,
    settings: Settings,
    core: Mutex<Core>,
    dispatcher: tokio::sync::Mutex<Dispatcher>,
    reports: tokio::sync::Mutex<ReportHistory>,
    primaries: tokio::sync::Mutex<Option<(Vec<Primary>, u64)>>,
    /// Wakes the report service early: an escalation wants a report that
    /// names what grows now, not up to 15 minutes later.
    report_wanted: Arc<tokio::sync::Notify>,
}

/// The mutable state, behind one std mutex held only for bookkeeping.
#[derive(Debug)]
struct Core {
    history: History,
    state: GuardState,
    last: Vec<NodeSample>,
    unreachable: Vec<(String, String)>,
    forecasts: Vec<(String, Option<Forecast>)>,
    total_forecast: Option<Forecast>,
    samples: u64,
    sample_errors: u64,
    last_sample_ms: Option<u64>,
    alerts_sent: std::collections::BTreeMap<&'static str, u64>,
    alerts_held_back: u64,
    alert_failures: u64,
    recent_alerts: VecDeque<Alert>,
    report: Option<Arc<MemoryReport>>,
    report_errors: u64,
    history_errors: u64,
}

impl fmt::Debug for Guard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Guard")
            .field("redis", &self.inner.redis)
            .field("settings", &self.inner.settings)
            .finish_non_exhaustive()
    }
}

impl Guard {
    /// A guard over `redis`, with its settings checked and its history
    /// loaded. Nothing runs until [`start`](Self::start) or a `*_once` call.
    pub fn new(redis: Redis, config: GuardConfig) -> Result<Self> {
        let settings = config.validate()?;
        let history = History::open(
            config.history_dir.as_deref(),
            config.history_points,
            config.history_max_age,
        )?;
        let state = history.load_state();
        let reports = match &config.history_dir {
            Some(dir) => ReportHistory::open(
                dir.join("reports.jsonl"),
                attribute::report::DEFAULT_REPORT_HISTORY,
            )?,
            None => ReportHistory::in_memory(attribute::report::DEFAULT_REPORT_HISTORY),
        };
        Ok(Self {
            inner: Arc::new(Inner {
                redis,
                settings,
                core: Mutex::new(Core {
                    history,
                    state,
                    last: Vec::new(),
                    unreachable: Vec::new(),
                    forecasts: Vec::new(),
                    total_forecast: None,
                    samples: 0,
                    sample_errors: 0,
                    last_sample_ms: None,
                    alerts_sent: Default::default(),
                    alerts_held_back: 0,
                    alert_failures: 0,
                    recent_alerts: VecDeque::new(),
                    report: None,
                    report_errors: 0,
                    history_errors: 0,
                }),
                dispatcher: tokio::sync::Mutex::new(Dispatcher::new(
                    config.sinks.clone(),
                    config.dedup_window,
                    config.rate_limit,
                    config.rate_window,
                )),
                reports: tokio::sync::Mutex::new(reports),
                primaries: tokio::sync::Mutex::new(None),
                report_wanted: Arc::new(tokio::sync::Notify::new()),
            }),
        })
    }

    /// Starts the watch and report services; they stop when `shutdown`
    /// fires (see the module docs for the order).
    pub fn start(&self, shutdown: CancellationToken) -> Vec<JoinHandle<()>> {
        let mut tasks = vec![crate::service::spawn(
            watch::Watch::new(self.clone()),
            shutdown.clone(),
        )];
        if self.inner.settings.attribute_interval.is_some() {
            tasks.push(crate::service::spawn(
                refresh::Refresh::new(self.clone()),
                shutdown,
            ));
        }
        tasks
    }

    /// Forgets a node that is gone for good (decommissioned, replaced):
    /// the guard keeps every primary and replica it has seen, showing a
    /// lost one as down, until told this. Returns whether it knew the node.
    pub fn forget(&self, node: &str) -> bool {
        let mut core = self.lock();
        let known =
            core.state.nodes.remove(node).is_some() | core.state.replicas.remove(node).is_some();
        let state = core.state.clone();
        if let Err(err) = core.history.save_state(&state) {
            core.history_errors += 1;
            tracing::warn!(error = %err, "guard alert state not written");
        }
        known
    }

    /// The connection the guard watches.
    pub fn redis(&self) -> &Redis {
        &self.inner.redis
    }

    pub(crate) fn interval(&self) -> Duration {
        self.inner.settings.interval
    }

    pub(crate) fn attribute_interval(&self) -> Option<Duration> {
        self.inner.settings.attribute_interval
    }

    async fn primaries(&self, now_ms: u64) -> Result<Vec<Primary>> {
        let mut cached = self.inner.primaries.lock().await;
        if let Some((primaries, at)) = cached.as_ref()
            && now_ms.saturating_sub(*at) < crate::clock::ms(PRIMARIES_REFRESH)
        {
            return Ok(primaries.clone());
        }
        let primaries = self.inner.redis.primaries().await?;
        *cached = Some((primaries.clone(), now_ms));
        Ok(primaries)
    }

    /// One round: reads every primary, updates history and forecasts,
    /// evaluates levels, leeway, OOM refusals and evictions, and sends the
    /// alerts that are due. Returns the alerts sent.
    pub async fn sample_once(&self) -> Result<Vec<Alert>> {
        let settings = &self.inner.settings;
        let now = settings.clock.now_ms();
        let primaries = match self.primaries(now).await {
            Ok(p) => p,
            Err(err) => {
                let alert = self.unreachable_alert(now, "all", &err);
                self.lock().sample_errors += 1;
                return Ok(self.dispatch(vec![alert]).await);
            }
        };
        let readings = futures::future::join_all(
            primaries
                .iter()
                .map(|p| sampler::sample_node(p, settings.limit)),
        )
        .await;
        let mut samples = Vec::new();
        let mut pending = Vec::new();
        let mut failed = Vec::new();
        for (primary, reading) in primaries.iter().zip(readings) {
            match reading {
                Ok(sample) => samples.push(sample),
                Err(err) => {
                    failed.push((primary.address.clone(), err.to_string()));
                    pending.push(self.unreachable_alert(now, &primary.address, &err));
                }
            }
        }
        if !failed.is_empty() {
            // The topology may have changed: ask again next round.
            *self.inner.primaries.lock().await = None;
        }
        pending.extend(self.evaluate(now, samples, failed)?);
        Ok(self.dispatch(pending).await)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Core> {
        self.inner.core.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn unreachable_alert(&self, now: u64, node: &str, err: &Error) -> Alert {
        let mut alert = self.blank_alert(
            now,
            node,
            AlertKind::Unreachable {
                error: err.to_string(),
            },
        );
        alert.severity = Severity::Critical;
        alert.summary = format!("Redis {node} cannot be read: {err}");
        alert
    }

    fn blank_alert(&self, now: u64, node: &str, kind: AlertKind) -> Alert {
        Alert {
            kind,
            severity: Severity::Warning,
            node: node.to_string(),
            at_ms: now,
            summary: String::new(),
            used_bytes: 0,
            limit_bytes: 0,
            limit_source: LimitSource::Maxmemory,
            used_ratio: 0.0,
            maxmemory_bytes: 0,
            total_used_bytes: 0,
            total_limit_bytes: 0,
            forecast: None,
            forecast_pending: None,
            top_growing: self.top_growing(),
        }
    }

    fn top_growing(&self) -> Vec<FamilyGrowth> {
        let core = self.lock();
        let Some(report) = core.report.as_ref() else {
            return Vec::new();
        };
        report
            .growing()
            .into_iter()
            .take(ALERT_TOP_FAMILIES)
            .map(|f| FamilyGrowth {
                name: f.name.clone(),
                pattern: f.pattern.clone(),
                bytes: f.bytes,
                keys: f.keys,
                growth_bytes: f.growth_bytes.unwrap_or(0),
                suspected_leak: f.suspected_leak,
                trim_command: trim::trim_command(f),
            })
            .collect()
    }

    /// Bookkeeping of one round; returns the alerts it calls for.
    fn evaluate(
        &self,
        now: u64,
        samples: Vec<NodeSample>,
        failed: Vec<(String, String)>,
    ) -> Result<Vec<Alert>> {
        let settings = &self.inner.settings;
        let top = self.top_growing();
        let mut core = self.lock();
        core.samples += 1;
        core.sample_errors += failed.len() as u64;
        core.unreachable = failed;
        if samples.is_empty() {
            return Ok(Vec::new());
        }
        core.last_sample_ms = Some(now);
        // The history file is a convenience: a full or read-only disk must
        // not stop the alerts. The reading is kept in memory either way.
        let point = HistoryPoint {
            t: now,
            n: samples
                .iter()
                .map(|s| (s.node.clone(), s.used_memory, s.limit))
                .collect(),
        };
        if let Err(err) = core.history.push(point) {
            core.history_errors += 1;
            tracing::warn!(error = %err, "guard history not written");
        }
        let total_used: u64 = samples.iter().map(|s| s.used_memory).sum();
        let total_limit = total_limit(&samples);
        let queues = core.report.as_deref().map(queues_of).unwrap_or_default();
        let mut alerts = Vec::new();
        let mut forecasts = Vec::new();
        for sample in &samples {
            let series = core.history.series(&sample.node);
            let forecast = forecast::fit(&settings.forecast, &series, now, sample.limit as f64);
            let pending = forecast
                .is_none()
                .then(|| forecast::pending(&settings.forecast, &series, now, sample.limit as f64));
            forecasts.push((sample.node.clone(), forecast));
            let node_state = core.state.nodes.entry(sample.node.clone()).or_default();
            let kinds = node_changes(
                settings,
                node_state,
                now,
                sample,
                forecast.as_ref(),
                &queues,
            );
            for (kind, severity) in kinds {
                let mut alert = Alert {
                    summary: summary(&kind, sample, forecast.as_ref(), pending.as_ref()),
                    kind,
                    severity,
                    node: sample.node.clone(),
                    at_ms: now,
                    used_bytes: sample.used_memory,
                    limit_bytes: sample.limit,
                    limit_source: sample.limit_source,
                    used_ratio: sample.used_ratio(),
                    maxmemory_bytes: sample.maxmemory,
                    total_used_bytes: total_used,
                    total_limit_bytes: total_limit,
                    forecast,
                    forecast_pending: pending.clone(),
                    top_growing: top.clone(),
                };
                if samples.len() > 1 {
                    alert.summary = format!("{} (cluster node {})", alert.summary, sample.node);
                }
                alerts.push(alert);
            }
        }
        // Replicas each primary lists are remembered; a node that is a
        // primary now is no longer anyone's replica.
        for sample in &samples {
            core.state.replicas.remove(&sample.node);
            for (replica, _) in &sample.replicas {
                core.state
                    .replicas
                    .insert(replica.clone(), sample.node.clone());
            }
        }
        let total_series = core.history.total_series();
        core.total_forecast =
            forecast::fit(&settings.forecast, &total_series, now, total_limit as f64);
        core.forecasts = forecasts;
        core.last = samples;
        let state = core.state.clone();
        if let Err(err) = core.history.save_state(&state) {
            core.history_errors += 1;
            tracing::warn!(error = %err, "guard alert state not written");
        }
        Ok(alerts)
    }

    async fn dispatch(&self, alerts: Vec<Alert>) -> Vec<Alert> {
        let mut sent = Vec::new();
        let mut dispatcher = self.inner.dispatcher.lock().await;
        for alert in alerts {
            match dispatcher.admit(&alert) {
                Dispatch::Sent => {
                    dispatcher.send(&alert).await;
                    sent.push(alert);
                }
                Dispatch::Duplicate | Dispatch::RateLimited => {
                    self.lock().alerts_held_back += 1;
                }
            }
        }
        let failures = dispatcher.failures;
        drop(dispatcher);
        // A level, leeway or out-of-memory alert: a fresh report, so that
        // the alerts after it name the families that grew since the last
        // one (a guard started shortly before a fast leak otherwise named
        // none before Redis was full). One wake-up is kept, not queued.
        if sent.iter().any(|a| {
            matches!(
                a.kind,
                AlertKind::LevelRaised { .. }
                    | AlertKind::LeewayRaised { .. }
                    | AlertKind::OutOfMemory { .. }
            )
        }) {
            self.inner.report_wanted.notify_one();
        }
        let mut core = self.lock();
        core.alert_failures = failures;
        for alert in &sent {
            *core.alerts_sent.entry(alert.kind.name()).or_default() += 1;
            core.recent_alerts.push_back(alert.clone());
            while core.recent_alerts.len() > RECENT_ALERTS {
                core.recent_alerts.pop_front();
            }
        }
        sent
    }

    /// Runs one memory report now, remembers it (growth, leaks, and the
    /// families named in alerts) and returns it.
    pub async fn attribute_once(&self) -> Result<Arc<MemoryReport>> {
        let settings = &self.inner.settings;
        let mut reports = self.inner.reports.lock().await;
        let result = attribute::attribute(
            &self.inner.redis,
            &settings.attribute,
            settings.clock.as_ref(),
            Some(&mut reports),
        )
        .await;
        drop(reports);
        match result {
            Ok(report) => {
                let report = Arc::new(report);
                self.lock().report = Some(report.clone());
                Ok(report)
            }
            Err(err) => {
                self.lock().report_errors += 1;
                Err(err)
            }
        }
    }

    /// `used_memory` summed over the nodes, as (ms since the epoch, bytes),
    /// oldest first: the history the forecast is fitted to.
    pub fn memory_series(&self) -> Vec<(u64, f64)> {
        self.lock().history.total_series()
    }

    /// Sends an alert raised outside the guard's own rounds (the server's
    /// spool) the way the guard's go: through deduplication and the rate
    /// limit to the sinks, and into the recent alerts. Returns whether it
    /// was sent (not held back).
    pub async fn raise(&self, alert: Alert) -> bool {
        !self.dispatch(vec![alert]).await.is_empty()
    }

    /// The latest memory report, if one ran.
    pub fn latest_report(&self) -> Option<Arc<MemoryReport>> {
        self.lock().report.clone()
    }

    /// A snapshot of everything the guard knows, for metrics and dashboards.
    pub fn stats(&self) -> GuardStats {
        let core = self.lock();
        stats::snapshot(&core, &self.inner.settings)
    }
}
