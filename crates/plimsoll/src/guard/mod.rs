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
//! A [`Guard`] runs two background services ([`watch`]: sample and alert
//! every [`DEFAULT_SAMPLE_INTERVAL`]; [`refresh`]: a memory report every
//! [`DEFAULT_ATTRIBUTE_INTERVAL`]) that stop when its shutdown token fires:
//! a round in progress finishes, then each service returns. Both can also be
//! driven by hand ([`Guard::sample_once`], [`Guard::attribute_once`]), with
//! an injected clock, which is how the tests run hours in milliseconds.
//!
//! By default the guard writes nothing into the Redis it watches.
//!
//! ```no_run
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
//! ```

pub mod alerts;
pub mod attribute;
pub mod dispatch;
pub mod forecast;
pub mod history;
mod jsonl;
pub mod refresh;
pub mod sampler;
pub mod sinks;
pub mod stats;
pub mod thresholds;
pub mod trim;
pub mod watch;

use crate::units::human_bytes;
use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use alerts::{Alert, AlertKind, FamilyGrowth, Severity};
pub use attribute::{AttributeConfig, FamilyReport, MemoryReport, ReportHistory, attribute};
pub use forecast::{Forecast, ForecastConfig};
pub use refresh::DEFAULT_ATTRIBUTE_INTERVAL;
pub use sampler::{LimitSource, NodeSample};
pub use sinks::{AlertSink, LogSink, WebhookSink};
pub use stats::GuardStats;
pub use watch::DEFAULT_SAMPLE_INTERVAL;

use self::alerts::ALERT_TOP_FAMILIES;
use self::dispatch::{Dispatch, Dispatcher};
use self::history::{GuardState, History, HistoryPoint, NodeState, OomEpisode};
use self::thresholds::{Direction, LevelChange, LevelSet};
use crate::clock::{Clock, SystemClock};
use crate::connection::{Primary, Redis};
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
/// How often the list of a cluster's primaries is refreshed.
pub const PRIMARIES_REFRESH: Duration = Duration::from_secs(5 * 60);
/// Alerts kept in the stats snapshot for dashboards.
const RECENT_ALERTS: usize = 50;

/// Settings of a [`Guard`]; checked by [`Guard::new`], which names the first
/// bad setting.
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
struct Settings {
    interval: Duration,
    memory: LevelSet,
    leeway: LevelSet,
    limit: Option<u64>,
    forecast: ForecastConfig,
    attribute_interval: Option<Duration>,
    attribute: AttributeConfig,
    clock: Arc<dyn Clock>,
}

impl GuardConfig {
    /// Checks every setting, naming the first bad one (what
    /// [`Guard::new`] does before anything runs).
    pub fn check(&self) -> Result<()> {
        self.validate().map(|_| ())
    }

    fn validate(&self) -> Result<Settings> {
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

/// The limits of all nodes, summed, except that nodes measured against
/// their machine's memory count each machine once: three nodes on one
/// 23.5 GiB box read "all nodes: 70.6 GiB".
fn total_limit(samples: &[NodeSample]) -> u64 {
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
fn queues_of(report: &MemoryReport) -> Vec<String> {
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
fn overhead_changes(state: &mut NodeState, sample: &NodeSample) -> Vec<(AlertKind, Severity)> {
    let mut out = Vec::new();
    let limit = sample.limit.max(1) as f64;
    for signal in alerts::OverheadSignal::ALL {
        let bytes = match signal {
            alerts::OverheadSignal::Fragmentation => {
                sample.used_memory_rss.saturating_sub(sample.used_memory)
            }
            alerts::OverheadSignal::ClientBuffers => sample.client_buffers,
            alerts::OverheadSignal::ReplicationBacklog => sample.replication_backlog,
        };
        let share = bytes as f64 / limit;
        // A small Redis holds a few MiB beyond its data from the start
        // (7 MiB of RSS for 1 MiB of data when empty): fragmentation
        // counts from FRAGMENTATION_FLOOR and half again the data.
        let counts = signal != alerts::OverheadSignal::Fragmentation
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

/// The first `n` of `items`, and how many more.
fn listed(items: &[String], n: usize) -> String {
    let mut text = items.iter().take(n).cloned().collect::<Vec<_>>().join(", ");
    if items.len() > n {
        text.push_str(&format!(" and {} more", items.len() - n));
    }
    text
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
fn oom_changes(
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
fn node_changes(
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

fn summary(
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
                alerts::OverheadSignal::Fragmentation => format!(
                    "Redis' process holds {} more than its data ({share:.0}% of the limit): \
                     fragmentation, outside maxmemory but on the machine; \
                     CONFIG SET activedefrag yes, or a restart, gives it back",
                    human_bytes(*bytes)
                ),
                alerts::OverheadSignal::ClientBuffers => format!(
                    "clients' buffers hold {} ({share:.0}% of the limit): a subscriber or \
                     a client that does not read its replies (CLIENT LIST: omem)",
                    human_bytes(*bytes)
                ),
                alerts::OverheadSignal::ReplicationBacklog => format!(
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

#[cfg(test)]
mod tests {
    use super::*;

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

    fn sample(used: u64, limit: u64) -> NodeSample {
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
