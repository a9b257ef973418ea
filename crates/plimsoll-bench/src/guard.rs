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
use hdrhistogram::Histogram;
use plimsoll::guard::attribute::{Classifier, Layout, Role};
use plimsoll::guard::{AttributeConfig, ForecastConfig};
use plimsoll::{AlertKind, Guard, GuardConfig, Redis, SystemClock};
use serde_json::{Map, Value, json};

use super::slots::Placement;
use super::sys::{Nodes, used_memory};
use super::{Figures, Options, Workload};
use plimsoll_server::embedded::{LocalRedis, LocalRedisOptions};

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
        let empty = used_memory(&redis).await?;
        let mut seq = 0u64;
        write_keys(&redis, &mut seq, 10_000).await?;
        let per_key = (used_memory(&redis).await? - empty) as f64 / 10_000.0;
        let room = G2_MAXMEMORY as f64 - used_memory(&redis).await? as f64;
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

/// The exact truth of one node, by family: `MEMORY USAGE key SAMPLES 0`
/// of every key (never a sampled pass). BullMQ job hashes and logs are
/// grouped by the state their id is listed in (`ZSCORE` in the completed
/// and failed sets), as the report names them.
async fn full_pass(redis: &Redis) -> Result<BTreeMap<String, f64>> {
    let classifier = Classifier::default();
    let mut out: BTreeMap<String, f64> = BTreeMap::new();
    let mut cursor = 0u64;
    loop {
        let (next, keys): (u64, Vec<Vec<u8>>) = redis
            .query(redis::cmd("SCAN").arg(cursor).arg("COUNT").arg(5000))
            .await?;
        let mut pipe = redis::pipe();
        // On a cluster a job's sets may sit on another node (without a hash
        // tag): the lookup fails and the key counts under its own pattern.
        pipe.ignore_errors();
        let families: Vec<_> = keys.iter().map(|key| classifier.classify(key)).collect();
        for (key, family) in keys.iter().zip(&families) {
            pipe.cmd("MEMORY")
                .arg("USAGE")
                .arg(key)
                .arg("SAMPLES")
                .arg(0);
            let job = bullmq_job_of(key, family);
            for set in ["completed", "failed"] {
                match &job {
                    Some((base, id)) => pipe.cmd("ZSCORE").arg(format!("{base}:{set}")).arg(id),
                    None => pipe.cmd("ECHO").arg(""),
                };
            }
        }
        let mut conn = redis.clone();
        let replies: Vec<redis::Value> = pipe.query_async(&mut conn).await?;
        for ((key, family), reply) in keys.iter().zip(&families).zip(replies.chunks(3)) {
            let bytes = match reply[0] {
                redis::Value::Int(n) => n as f64,
                _ => 0.0,
            };
            let listed = |v: &redis::Value| {
                matches!(v, redis::Value::BulkString(b) if !b.is_empty())
                    || matches!(v, redis::Value::Double(_))
            };
            let group = match bullmq_job_of(key, family) {
                Some((base, _)) if listed(&reply[1]) => format!("{base}:completed"),
                Some((base, _)) if listed(&reply[2]) => format!("{base}:failed"),
                _ => family.pattern.clone(),
            };
            *out.entry(group).or_default() += bytes;
        }
        cursor = next;
        if cursor == 0 {
            return Ok(out);
        }
    }
}

/// `(bull:<queue>, id)` of a BullMQ job hash or log key.
fn bullmq_job_of(
    key: &[u8],
    family: &plimsoll::guard::attribute::Family,
) -> Option<(String, String)> {
    if family.layout != Layout::BullMq || !matches!(family.role, Role::JobHashes | Role::JobLogs) {
        return None;
    }
    let base = format!("{}:{}", family.prefix.as_deref()?, family.queue.as_deref()?);
    let rest = std::str::from_utf8(key)
        .ok()?
        .strip_prefix(&base)?
        .strip_prefix(':')?;
    let id = rest.strip_suffix(":logs").unwrap_or(rest);
    Some((base, id.to_string()))
}

/// What a GET loop saw: every latency, and the p99 of each second.
#[derive(Debug, Clone)]
struct Latencies {
    whole: Histogram<u64>,
    /// The 99th percentile of each full second of the loop, in µs.
    per_second_p99: Vec<u64>,
}

impl Latencies {
    fn p99(&self) -> f64 {
        self.whole.value_at_quantile(0.99) as f64
    }

    /// The median of the per-second p99s: the loop's typical p99, which a
    /// burst of the machine's noise in a few seconds does not move (the
    /// whole-window p99 is at the mercy of such bursts on a shared VM).
    fn median_second_p99(&self) -> f64 {
        let mut v = self.per_second_p99.clone();
        v.sort_unstable();
        v.get(v.len() / 2).copied().unwrap_or(0) as f64
    }

    fn merge(&self, other: &Self) -> Result<Self> {
        let mut whole = self.whole.clone();
        whole.add(&other.whole)?;
        let mut per_second_p99 = self.per_second_p99.clone();
        per_second_p99.extend(&other.per_second_p99);
        Ok(Self {
            whole,
            per_second_p99,
        })
    }
}

async fn get_loop(redis: &Redis, stop: Option<Arc<AtomicBool>>) -> Result<Latencies> {
    let new_histogram = || Histogram::<u64>::new_with_bounds(1, 60_000_000, 3);
    let mut whole = new_histogram()?;
    let mut second = new_histogram()?;
    let mut per_second_p99 = Vec::new();
    let started = Instant::now();
    let mut second_started = started;
    let mut i = 0u64;
    loop {
        let done = match &stop {
            Some(stop) => stop.load(Ordering::SeqCst),
            None => started.elapsed() >= QUIET_WINDOW,
        };
        if done {
            return Ok(Latencies {
                whole,
                per_second_p99,
            });
        }
        i += 1;
        let key = format!("cache:page:{:032x}", (i * 7919) % 100_000);
        let sent = Instant::now();
        let _: Option<Vec<u8>> = redis.query(redis::cmd("GET").arg(&key)).await?;
        let micros = sent.elapsed().as_micros() as u64;
        whole.saturating_record(micros);
        second.saturating_record(micros);
        if second_started.elapsed() >= Duration::from_secs(1) {
            per_second_p99.push(second.value_at_quantile(0.99));
            second.reset();
            second_started = Instant::now();
        }
    }
}

/// Runs [`get_loop`] on a thread of its own with a single-threaded runtime,
/// so that its latency is Redis' and the machine's, not that of tasks
/// sharing its runtime.
async fn get_loop_thread(url: String, stop: Option<Arc<AtomicBool>>) -> Result<Latencies> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let result = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(BenchError::from)
            .and_then(|runtime| {
                runtime.block_on(async {
                    let redis = Redis::connect_url(&url).await?;
                    get_loop(&redis, stop).await
                })
            });
        let _ = tx.send(result);
    });
    // The sender is dropped unsent only if the thread panicked.
    rx.await
        .map_err(|err| BenchError::Failed(format!("the GET loop thread ended: {err}")))?
}

/// Writes `n` 1 KiB strings `leak:<seq>`.
async fn write_keys(redis: &Redis, seq: &mut u64, n: u64) -> Result<()> {
    if n == 0 {
        return Ok(());
    }
    let value = vec![b'v'; G2_VALUE];
    let mut pipe = redis::pipe();
    for _ in 0..n {
        *seq += 1;
        pipe.cmd("SET")
            .arg(format!("leak:{seq}"))
            .arg(&value)
            .ignore();
    }
    let mut conn = redis.clone();
    pipe.query_async::<()>(&mut conn).await?;
    Ok(())
}

fn uuid(i: u64) -> String {
    let h = i.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let l = h.rotate_left(29) ^ 0x5851_F42D_4C95_7F2D;
    format!(
        "{:08x}-{:04x}-4{:03x}-a{:03x}-{:012x}",
        (h >> 32) as u32,
        (h >> 16) as u16,
        (h & 0xfff) as u16,
        (l & 0xfff) as u16,
        l >> 16
    )
}

fn text(i: u64, len: usize) -> String {
    let mut x = i.wrapping_mul(0x2545_F491_4F6C_DD1D) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (b'a' + (x % 26) as u8) as char
        })
        .collect()
}

/// 1,000,000 keys in 20 families, written by concurrent pipelines (one per
/// primary of a cluster).
async fn populate(nodes: &Nodes, placement: &Placement) -> Result<()> {
    // (family, keys): the counts add up to G1_KEYS.
    let plan: &[(&str, u64)] = &[
        ("bullmq-mail-jobs", 150_000),
        ("bullmq-mail-logs", 15_000),
        ("bullmq-reports-jobs", 50_000),
        ("sidekiq", 340),
        ("celery-results", 120_000),
        ("rq-jobs", 80_000),
        ("rq-results", 30_000),
        ("sessions", 150_000),
        ("user-profiles", 100_000),
        ("user-carts", 50_000),
        ("leaderboards", 2_000),
        ("page-cache", 100_000),
        ("rate-limits", 50_000),
        ("event-streams", 30),
        ("orders", 40_000),
        ("tokens", 40_000),
        ("notifications", 20_000),
        ("apalis", 2),
        ("celery-broker", 6),
        // Large aggregates: hashes past the exact bound (Redis estimates
        // them), sorted sets and streams within it.
        ("big-hashes", 8),
        ("big-zsets", 20),
        ("big-streams", 6),
    ];
    let total: u64 = plan.iter().map(|(_, n)| n).sum();
    // Besides one key per item, the BullMQ jobs add their queues' wait
    // lists and completed / failed sets: five keys.
    let filler = G1_KEYS - total - 5;
    let mut jobs: Vec<(&str, u64, u64)> = Vec::new();
    for (family, n) in plan {
        let n = if *family == "page-cache" {
            n + filler
        } else {
            *n
        };
        let chunk = 5_000;
        let mut start = 0;
        while start < n {
            jobs.push((family, start, (start + chunk).min(n)));
            start += chunk;
        }
    }
    use futures::StreamExt;
    let results: Vec<Result<()>> =
        futures::stream::iter(jobs)
            .map(|(family, from, to)| async move {
                write_family(nodes, placement, family, from, to).await
            })
            .buffer_unordered(4)
            .collect()
            .await;
    for result in results {
        result?;
    }
    Ok(())
}

async fn write_family(
    nodes: &Nodes,
    placement: &Placement,
    family: &str,
    from: u64,
    to: u64,
) -> Result<()> {
    let mut pipe = redis::pipe();
    let now = 1_700_000_000_000u64;
    for i in from..to {
        match family {
            "bullmq-mail-jobs" | "bullmq-reports-jobs" => {
                let queue = if family == "bullmq-mail-jobs" {
                    "mail"
                } else {
                    "reports"
                };
                let key = format!("bull:{queue}:{}", i + 1);
                pipe.cmd("HSET")
                    .arg(&key)
                    .arg("name")
                    .arg("job")
                    .arg("data")
                    .arg(format!(
                        "{{\"payload\":\"{}\"}}",
                        text(i, 900 + (i % 250) as usize)
                    ))
                    .arg("opts")
                    .arg("{\"attempts\":3}")
                    .arg("timestamp")
                    .arg(now + i)
                    .arg("delay")
                    .arg(0)
                    .arg("priority")
                    .arg(0)
                    .arg("atm")
                    .arg(1)
                    .ignore();
                // What BullMQ adds when a job finishes: a return value, or
                // the reason and stack trace of a failure.
                let failed = queue == "reports" && i % 5 == 0 && i % 15 != 0;
                if i % 15 != 0 {
                    pipe.cmd("HSET")
                        .arg(&key)
                        .arg("processedOn")
                        .arg(now + i + 5)
                        .arg("finishedOn")
                        .arg(now + i + 10)
                        .ignore();
                    if failed {
                        pipe.cmd("HSET")
                            .arg(&key)
                            .arg("failedReason")
                            .arg("report renderer timed out")
                            .arg("stacktrace")
                            .arg(format!("[\"Error: timed out\\n{}\"]", text(i, 400)))
                            .ignore();
                    } else {
                        pipe.cmd("HSET")
                            .arg(&key)
                            .arg("returnvalue")
                            .arg(format!("{{\"sent\":true,\"id\":\"{}\"}}", text(i, 24)))
                            .ignore();
                    }
                }
                if i % 15 == 0 {
                    pipe.cmd("LPUSH")
                        .arg(format!("bull:{queue}:wait"))
                        .arg(i + 1)
                        .ignore();
                } else if queue == "reports" && i % 5 == 0 {
                    pipe.cmd("ZADD")
                        .arg(format!("bull:{queue}:failed"))
                        .arg(now + i)
                        .arg(i + 1)
                        .ignore();
                } else {
                    pipe.cmd("ZADD")
                        .arg(format!("bull:{queue}:completed"))
                        .arg(now + i)
                        .arg(i + 1)
                        .ignore();
                }
            }
            "bullmq-mail-logs" => {
                pipe.cmd("RPUSH")
                    .arg(format!("bull:mail:{}:logs", i * 10 + 1))
                    .arg(text(i, 80))
                    .arg(text(i + 1, 80))
                    .ignore();
            }
            "sidekiq" => {
                match i {
                    0 => {
                        for j in 0..50_000u64 {
                            pipe.cmd("LPUSH").arg("queue:default").arg(format!("{{\"class\":\"HardWorker\",\"args\":[{j}],\"jid\":\"{:024x}\"}}", j)).ignore();
                        }
                    }
                    1 => {
                        for j in 0..20_000u64 {
                            pipe.cmd("ZADD").arg("dead").arg(1_700_000_000 + j).arg(format!("{{\"class\":\"HardWorker\",\"args\":[{j}],\"error_message\":\"boom\",\"jid\":\"{:024x}\"}}", j)).ignore();
                        }
                    }
                    2 => {
                        pipe.cmd("SADD").arg("queues").arg("default").ignore();
                    }
                    3 => {
                        pipe.cmd("ZADD").arg("retry").arg(1).arg("{}").ignore();
                    }
                    _ => {
                        pipe.cmd("SET")
                            .arg(format!(
                                "stat:processed:2024-{:02}-{:02}",
                                1 + (i / 28) % 12,
                                1 + i % 28
                            ))
                            .arg(i)
                            .ignore();
                    }
                }
            }
            "celery-results" => {
                pipe.cmd("SET")
                    .arg(format!("celery-task-meta-{}", uuid(i)))
                    .arg(format!(
                        "{{\"status\":\"SUCCESS\",\"result\":\"{}\"}}",
                        text(i, 60)
                    ))
                    .arg("EX")
                    .arg(86_400)
                    .ignore();
            }
            "rq-jobs" => {
                pipe.cmd("HSET")
                    .arg(format!("rq:job:{}", uuid(1_000_000 + i)))
                    .arg("status")
                    .arg("finished")
                    .arg("origin")
                    .arg("default")
                    .arg("data")
                    .arg(text(i, 250))
                    .ignore();
            }
            "rq-results" => {
                pipe.cmd("XADD")
                    .arg(format!("rq:results:{}", uuid(1_000_000 + i)))
                    .arg("*")
                    .arg("type")
                    .arg(1)
                    .arg("return_value")
                    .arg(text(i, 40))
                    .ignore();
            }
            "sessions" => {
                pipe.cmd("SET")
                    .arg(format!("session:{}", uuid(2_000_000 + i)))
                    .arg(text(i, 150 + (i % 100) as usize))
                    .arg("EX")
                    .arg(3600)
                    .ignore();
            }
            "user-profiles" => {
                pipe.cmd("HSET")
                    .arg(format!("user:{i}:profile"))
                    .arg("name")
                    .arg(text(i, 12))
                    .arg("email")
                    .arg(format!("u{i}@example.com"))
                    .arg("bio")
                    .arg(text(i, 60))
                    .ignore();
            }
            "user-carts" => {
                for j in 0..(1 + i % 6) {
                    pipe.cmd("RPUSH")
                        .arg(format!("user:{i}:cart"))
                        .arg(format!("sku-{j}"))
                        .ignore();
                }
            }
            "leaderboards" => {
                for j in 0..100u64 {
                    pipe.cmd("ZADD")
                        .arg(format!("leaderboard:{i}"))
                        .arg(j)
                        .arg(format!("player{j}"))
                        .ignore();
                }
            }
            "page-cache" => {
                pipe.cmd("SET")
                    .arg(format!("cache:page:{i:032x}"))
                    .arg(text(i, 200 + (i % 1500) as usize))
                    .arg("EX")
                    .arg(7200)
                    .ignore();
            }
            "rate-limits" => {
                pipe.cmd("SET")
                    .arg(format!("ratelimit:{i}"))
                    .arg(i % 100)
                    // An hour, not the minute of a real limiter: keys that
                    // expire between the report and the exact pass after it
                    // would read as the report's error (+91% at 60 s).
                    .arg("EX")
                    .arg(3600)
                    .ignore();
            }
            "big-hashes" => {
                for j in 0..40_000u64 {
                    pipe.cmd("HSET")
                        .arg(format!("catalog:{i}:items"))
                        .arg(format!("sku-{j}"))
                        .arg(text(i + j, 20 + (j % 9) as usize * 40))
                        .ignore();
                }
            }
            "big-zsets" => {
                for j in 0..15_000u64 {
                    pipe.cmd("ZADD")
                        .arg(format!("ranking:{i}:scores"))
                        .arg(j)
                        .arg(format!("player-{j}-{}", text(j, (j % 5) as usize * 10)))
                        .ignore();
                }
            }
            "big-streams" => {
                for j in 0..20_000u64 {
                    pipe.cmd("XADD")
                        .arg(format!("audit:{i}:log"))
                        .arg("*")
                        .arg("who")
                        .arg(j % 977)
                        .arg("what")
                        .arg(text(j, 40 + (j % 3) as usize * 30))
                        .ignore();
                }
            }
            "event-streams" => {
                for j in 0..1000u64 {
                    pipe.cmd("XADD")
                        .arg(format!("events:2024-01-{:02}", i + 1))
                        .arg("*")
                        .arg("n")
                        .arg(j)
                        .arg("what")
                        .arg(text(j, 30))
                        .ignore();
                }
            }
            "orders" => {
                pipe.cmd("HSET")
                    .arg(format!("order:{}:details", 5_000_000 + i))
                    .arg("total")
                    .arg(i % 1000)
                    .arg("items")
                    .arg(text(i, 120))
                    .ignore();
            }
            "tokens" => {
                pipe.cmd("SET")
                    .arg(format!(
                        "token:{:040x}",
                        i.wrapping_mul(0x9E37_79B9_7F4A_7C15)
                    ))
                    .arg(text(i, 64))
                    .ignore();
            }
            "notifications" => {
                for j in 0..3u64 {
                    pipe.cmd("LPUSH")
                        .arg(format!("notifications:{i}"))
                        .arg(text(i + j, 90))
                        .ignore();
                }
            }
            "apalis" => {
                let ns = "email_service::Email";
                if i == 0 {
                    for j in 0..10_000u64 {
                        pipe.cmd("HSET")
                            .arg(format!("{ns}:data"))
                            .arg(format!("01HQZ8M9Z5X3K7V2B4N6P8{j:05}"))
                            .arg(text(j, 200))
                            .ignore();
                    }
                } else {
                    for j in 0..10_000u64 {
                        pipe.cmd("ZADD")
                            .arg(format!("{ns}:done"))
                            .arg(j)
                            .arg(format!("01HQZ8M9Z5X3K7V2B4N6P8{j:05}"))
                            .ignore();
                    }
                }
            }
            "celery-broker" => match i {
                0 => {
                    for j in 0..5_000u64 {
                        pipe.cmd("LPUSH")
                            .arg("celery")
                            .arg(format!(
                                "{{\"body\":\"{}\",\"headers\":{{\"id\":\"{}\"}}}}",
                                text(j, 100),
                                uuid(j)
                            ))
                            .ignore();
                    }
                }
                _ => {
                    pipe.cmd("SADD")
                        .arg(format!("_kombu.binding.q{i}"))
                        .arg("celery\x06\x16\x06\x16celery")
                        .ignore();
                }
            },
            _ => {}
        }
    }
    placement.send(nodes, &pipe).await
}
