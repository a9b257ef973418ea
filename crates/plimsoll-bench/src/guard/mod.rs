//! The memory guard workloads G1-attribute and G2-forecast of
//! shared/BENCH.md.
//!
//! - **G1-attribute**: 1,000,000 keys in 20 families (strings, hashes,
//!   lists, sorted sets, streams; BullMQ-, Sidekiq-, Celery-, RQ- and
//!   apalis-shaped among them). Figures: seconds to a report, commands
//!   sent, p99 of a GET loop during the walk ÷ p99 of the same loop without
//!   it (before and after), and each family's bytes against a full
//!   `MEMORY USAGE` pass of every key.
//! - **G2-forecast**: a private Redis with maxmemory 256 MB and a producer
//!   writing 1 KiB values at a constant rate chosen so that Redis fills in
//!   `--fill-time` (10 minutes); the guard reads every second. Figures:
//!   time of each level alert, and forecast time-to-full at each alert ÷
//!   the real time to full (when the first write was refused).
//!
//! The guard runs with its defaults except where the time scale of a
//! 10-minute fill needs otherwise (G2: readings every second, the fit's
//! window 10 minutes, a forecast from 30 s of history; real deployments
//! fill over days and use 10 s / 6 h / 15 min).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::error::{BenchError, Context, Result};
use plimsoll::guard::{AttributeConfig, ForecastConfig};
use plimsoll::{AlertKind, Guard, GuardConfig, Redis, SystemClock};
use serde_json::{Map, Value, json};

use crate::slots::Placement;
use crate::sys::Nodes;
use crate::{Figures, Options, Workload};
use plimsoll_server::embedded::{LocalRedis, LocalRedisOptions};

mod keyspace;
mod latency;
mod truth;

use keyspace::{populate, write_keys};
use latency::get_loop_thread;
use truth::full_pass;

/// G1: keys in the keyspace.
const G1_KEYS: u64 = 1_000_000;
/// G2: the maxmemory BENCH.md sets.
const G2_MAXMEMORY: u64 = 256 << 20;
/// G2: value size.
const G2_VALUE: usize = 1024;
/// GET loop: how long each quiet window lasts.
const QUIET_WINDOW: Duration = Duration::from_secs(10);
/// G1: pause between loading the keys and the first quiet window.
const SETTLE: Duration = Duration::from_secs(5);

pub struct GuardBench {
    redis: Redis,
    /// The primaries of `redis` (G1 reads and walks each).
    nodes: Nodes,
    fill_time: Duration,
}

impl GuardBench {
    pub fn new(redis: Redis, nodes: Nodes, args: &Options) -> Self {
        Self {
            redis,
            nodes,
            fill_time: args.fill_time,
        }
    }

    pub fn n(&self, workload: Workload) -> u64 {
        if workload == Workload::G1Attribute {
            G1_KEYS
        } else {
            0
        }
    }

    pub async fn run(&self, workload: Workload) -> Result<(Figures, Map<String, Value>)> {
        match workload {
            Workload::G1Attribute => self.attribute().await,
            Workload::G2Forecast => self.forecast().await,
            other => unreachable!("{other} is not a guard workload"),
        }
    }

    async fn attribute(&self) -> Result<(Figures, Map<String, Value>)> {
        let redis = &self.redis;
        let nodes = &self.nodes;
        let _: () = redis.query(&redis::cmd("FLUSHALL")).await?;
        let placement = Placement::of(redis, nodes).await?;
        let started = Instant::now();
        populate(nodes, &placement).await?;
        let keys: u64 = redis.query(&redis::cmd("DBSIZE")).await?;
        eprintln!(
            "G1: {keys} keys, used_memory {} MiB, loaded in {:.0} s",
            nodes.used_memory().await? >> 20,
            started.elapsed().as_secs_f64()
        );

        // Loading 668 MiB leaves the kernel and Redis busy for a moment
        // (page faults, freeing): let that pass before the quiet baseline.
        tokio::time::sleep(SETTLE).await;
        // The GET loop: one request at a time on its own connection and its
        // own thread, as another service of the same Redis would be.
        let url = redis.config().redacted_urls()[0].clone();
        let quiet_before = get_loop_thread(url.clone(), None).await?;
        let stop = Arc::new(AtomicBool::new(false));
        let during = tokio::spawn(get_loop_thread(url.clone(), Some(stop.clone())));
        let config = AttributeConfig::default();
        let walk_started = Instant::now();
        let report = plimsoll::guard::attribute(redis, &config, &SystemClock, None).await?;
        let seconds = walk_started.elapsed().as_secs_f64();
        stop.store(true, Ordering::SeqCst);
        let during = during.await??;
        let quiet_after = get_loop_thread(url, None).await?;
        let quiet = quiet_before.merge(&quiet_after)?;
        let p99_quiet = quiet.p99();
        let p99_during = during.p99();

        // The full pass every estimate is checked against.
        let full_started = Instant::now();
        let mut full: BTreeMap<String, f64> = BTreeMap::new();
        for node in nodes.all() {
            for (group, bytes) in full_pass(node).await? {
                *full.entry(group).or_default() += bytes;
            }
        }
        let full_seconds = full_started.elapsed().as_secs_f64();
        let mut errors = Vec::new();
        let mut families = Vec::new();
        let mut held = 0;
        for f in &report.families {
            let actual = full.get(&f.pattern).copied().unwrap_or(0.0);
            if actual == 0.0 {
                continue;
            }
            let (bytes, stated) = (f.bytes as f64, f.bytes_error as f64);
            let error = (bytes - actual) / actual;
            let holds = (bytes - actual).abs() <= stated;
            held += usize::from(holds);
            errors.push(error.abs());
            families.push(json!({
                "family": f.pattern, "name": f.name, "bytes_estimated": bytes,
                "bytes_exact": actual, "error": (error * 10_000.0).round() / 10_000.0,
                "stated_error": (stated / actual * 10_000.0).round() / 10_000.0,
                "interval_holds": holds, "sampled": f.sampled,
                "sampled_estimated": f.sampled_estimated,
            }));
        }
        for (pattern, bytes) in &full {
            if report.family(pattern).is_none() {
                eprintln!("G1: family {pattern} ({bytes} bytes exact) is missing from the report");
            }
        }
        errors.sort_by(f64::total_cmp);
        let mut figures = Figures::new();
        figures.insert("keys", keys as f64);
        figures.insert("families", families.len() as f64);
        figures.insert("families_interval_holds", held as f64);
        let used = report.used_memory.max(1) as f64;
        figures.insert(
            "unexplained_share",
            report.accounting.unexplained_bytes.unwrap_or(0) as f64 / used,
        );
        figures.insert("report_seconds", seconds);
        figures.insert("commands", report.commands as f64);
        figures.insert("commands_per_second", report.commands as f64 / seconds);
        figures.insert("budget_per_node", f64::from(report.budget_per_node));
        figures.insert(
            "backoffs",
            report.nodes.iter().map(|n| n.backoffs).sum::<u64>() as f64,
        );
        let ratio = p99_during / p99_quiet.max(1.0);
        // The noise floor: the same loop, quiet, after ÷ before.
        let noise = quiet_after.p99() / quiet_before.p99().max(1.0);
        // The same ratio of the typical one-second p99s (see Latencies).
        let (quiet_second, during_second) = (quiet.median_second_p99(), during.median_second_p99());
        let ratio_per_second = during_second / quiet_second.max(1.0);
        eprintln!(
            "G1: report in {seconds:.1} s; GET p99 {p99_quiet} -> {p99_during} us (x{ratio:.2}), \
             per second {quiet_second} -> {during_second} us (x{ratio_per_second:.2}); \
             quiet after / before x{noise:.2}"
        );
        figures.insert("get_p99_us_quiet", p99_quiet);
        figures.insert("get_p99_us_during", p99_during);
        figures.insert("get_p99_ratio", ratio);
        figures.insert("get_p99_ratio_quiet_after_before", noise);
        figures.insert("get_p99_us_quiet_per_second", quiet_second);
        figures.insert("get_p99_us_during_per_second", during_second);
        figures.insert("get_p99_ratio_per_second", ratio_per_second);
        figures.insert("family_error_max", errors.last().copied().unwrap_or(0.0));
        figures.insert(
            "family_error_median",
            errors.get(errors.len() / 2).copied().unwrap_or(0.0),
        );
        figures.insert(
            "families_within_10pct",
            errors.iter().filter(|e| **e <= 0.10).count() as f64,
        );
        figures.insert("full_pass_seconds", full_seconds);
        let mut details = Map::new();
        details.insert("family_errors".into(), Value::Array(families));
        Ok((figures, details))
    }

    async fn forecast(&self) -> Result<(Figures, Map<String, Value>)> {
        let local = LocalRedis::start(&LocalRedisOptions {
            dir: None,
            maxmemory: G2_MAXMEMORY,
            persist: false,
            port: None,
        })?;
        let redis = Redis::connect_url(&local.url()).await?;
        // Bytes a 1 KiB key costs, measured, to set the rate.
        let empty = redis.used_memory().await?;
        let mut seq = 0u64;
        write_keys(&redis, &mut seq, 10_000).await?;
        let per_key = (redis.used_memory().await? - empty) as f64 / 10_000.0;
        let room = G2_MAXMEMORY as f64 - redis.used_memory().await? as f64;
        let keys_per_sec = room / per_key / self.fill_time.as_secs_f64();
        eprintln!(
            "G2: {per_key:.0} bytes per key, {keys_per_sec:.0} keys/s to fill {} MiB in {:?}",
            G2_MAXMEMORY >> 20,
            self.fill_time
        );
        let guard = Guard::new(
            redis.clone(),
            GuardConfig {
                interval: Duration::from_secs(1),
                forecast: ForecastConfig {
                    window: Duration::from_secs(600),
                    min_span: Duration::from_secs(30),
                    ..ForecastConfig::default()
                },
                attribute_interval: None,
                sinks: vec![],
                ..GuardConfig::default()
            },
        )?;
        // The producer: a constant rate on an absolute schedule, 10 ticks/s.
        let full_at = Arc::new(std::sync::Mutex::new(None::<Instant>));
        let start = Instant::now();
        let producer = {
            let redis = redis.clone();
            let full_at = full_at.clone();
            tokio::spawn(async move {
                let mut written = 0f64;
                let mut tick = tokio::time::interval(Duration::from_millis(100));
                loop {
                    tick.tick().await;
                    let due = start.elapsed().as_secs_f64() * keys_per_sec;
                    let n = (due - written).floor().max(0.0) as u64;
                    written += n as f64;
                    if let Err(err) = write_keys(&redis, &mut seq, n).await {
                        if err.to_string().contains("OOM") {
                            *full_at.lock().unwrap() = Some(Instant::now());
                            return Ok::<(), BenchError>(());
                        }
                        return Err(err);
                    }
                }
            })
        };
        let mut alerts = Vec::new();
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let deadline = self.fill_time * 2;
        while full_at.lock().unwrap().is_none() && start.elapsed() < deadline {
            tick.tick().await;
            for alert in guard.sample_once().await? {
                alerts.push((start.elapsed().as_secs_f64(), alert));
            }
        }
        producer.await??;
        let full = full_at
            .lock()
            .unwrap()
            .context("Redis did not fill within twice the fill time")?;
        let full_secs = full.duration_since(start).as_secs_f64();
        let mut figures = Figures::new();
        figures.insert("fill_seconds", full_secs);
        figures.insert("bytes_per_key", per_key);
        let mut details = Vec::new();
        for (at, alert) in &alerts {
            let label = match alert.kind {
                AlertKind::LevelRaised { level } => format!("level_{:.0}", level * 100.0),
                AlertKind::LeewayRaised { hours } => format!("leeway_{hours:.0}h"),
                _ => continue,
            };
            let forecast = alert.forecast.and_then(|f| f.time_to_full_secs);
            let actual = full_secs - at;
            details.push(json!({
                "alert": label, "at_seconds": (at * 10.0).round() / 10.0,
                "used_ratio": (alert.used_ratio * 1000.0).round() / 1000.0,
                "forecast_ttf_seconds": forecast.map(|f| f.round()),
                "actual_ttf_seconds": actual.round(),
                "ratio": forecast.map(|f| (f / actual * 1000.0).round() / 1000.0),
            }));
            if label.starts_with("level_") {
                let name = |s: &str| -> &'static str {
                    match (label.as_str(), s) {
                        ("level_20", "at") => "alert_20_at_seconds",
                        ("level_50", "at") => "alert_50_at_seconds",
                        ("level_90", "at") => "alert_90_at_seconds",
                        ("level_20", _) => "forecast_ratio_at_20",
                        ("level_50", _) => "forecast_ratio_at_50",
                        _ => "forecast_ratio_at_90",
                    }
                };
                figures.insert(name("at"), *at);
                if let Some(f) = forecast {
                    figures.insert(name("ratio"), f / actual);
                }
            }
        }
        let mut extra = Map::new();
        extra.insert("alerts".into(), Value::Array(details));
        extra.insert("maxmemory".into(), json!(G2_MAXMEMORY));
        extra.insert(
            "fill_time_target_seconds".into(),
            json!(self.fill_time.as_secs()),
        );
        drop(local);
        Ok((figures, extra))
    }
}
