//! The cache workloads C1-hit and C2-down of shared/BENCH.md.
//!
//! Values are BENCH.md's 1 KiB JSON payload, cached as its text (a
//! `String`), as a service caches a rendered response; C1 also reads the
//! same issue as a typed record (a struct of five fields, about 930 bytes
//! stored), as a service caches a row it loaded, because decoding a record
//! costs a client more than taking a string. Keys are spread over the
//! 10,000 hot keys by a fixed stride, so every run reads the same sequence.
//!
//! - C1-hit: every key is cached; `n` reads (default 1,000,000),
//!   `concurrency` (50) in flight, in one repetition: plain `GET`s of the
//!   payload keys on the bench's connection; `Cache::get_or_compute` on that
//!   same connection with the in-process tier off, and with it on; and the
//!   same two for the typed records. The ratios compare throughputs within
//!   the repetition.
//! - C2-down: the same readers, with the cache on a connection of its own
//!   (`Cache::connect`, default settings: 5 ms budget), while the private
//!   redis-server is killed, restarted, paused with `CLIENT PAUSE` and
//!   released. Figures per phase; `failed_reads` counts reads whose caller
//!   got an error or a wrong value (must be 0). `open_p99_us` is the p99 of
//!   reads that started and ended with the breaker open, and
//!   `open_overhead_p99_us` the p99 of the same reads less the time their
//!   loader took: the cache's own cost. The loader yields once (as an I/O
//!   loader does) and builds the value in memory; with 50 readers on two
//!   cores, the yield alone puts it behind the other readers, which is why
//!   loader time is measured per read rather than assumed.

use std::borrow::Borrow;
use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::error::{BenchError, Context, Result};
use futures::StreamExt;
use hdrhistogram::Histogram;
use plimsoll::{BreakerState, Cache, CacheConfig, Redis, RedisConfig};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::queue::BODY;
use super::{Figures, Workload};
use plimsoll_server::embedded::LocalRedis;

/// Reads of C1 unless `--n` says otherwise.
const DEFAULT_READS: u64 = 1_000_000;
/// Keys the reads spread over.
const HOT_KEYS: u64 = 10_000;
/// TTL of the cached values: longer than any run.
const TTL: Duration = Duration::from_secs(3600);
/// How long C2 reads in each fault phase.
const PHASE: Duration = Duration::from_secs(3);

/// Reads in a run of `workload`.
pub fn reads(workload: Workload, n: Option<u64>) -> Option<u64> {
    match workload {
        Workload::C1Hit => Some(n.unwrap_or(DEFAULT_READS)),
        _ => None,
    }
}

/// The cached record: BENCH.md's payload issue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Issue {
    id: u64,
    repo: String,
    title: String,
    labels: Vec<String>,
    body: String,
}

fn issue(id: u64) -> Issue {
    Issue {
        id,
        repo: "acme/widgets".into(),
        title: "Crash when opening settings panel on startup".into(),
        labels: vec!["bug".into(), "triage".into()],
        body: BODY.into(),
    }
}

/// The key of read `i`: a stride that is coprime with the key count walks
/// every key before repeating one.
fn key_id(i: u64) -> u64 {
    (i * 7919) % HOT_KEYS
}

/// Key of the typed record `id`.
fn key(id: u64) -> String {
    format!("issue:{id}")
}

/// Key of the payload text `id`.
fn payload_key(id: u64) -> String {
    format!("payload:{id}")
}

/// BENCH.md's 1 KiB JSON payload for each hot key, as text.
fn payloads() -> Arc<Vec<String>> {
    Arc::new(
        (0..HOT_KEYS)
            .map(|id| String::from_utf8(super::queue::payload(id, 0.0)).expect("JSON is UTF-8"))
            .collect(),
    )
}

/// The loader: yields once, as any loader that does I/O does, and builds
/// the record in memory (C1 never calls it). A loader that never yields
/// would let C2's readers spin on a saturated runtime that then polls its
/// I/O and timers late, and time Redis out for that reason.
async fn load(id: u64) -> Result<Issue, Infallible> {
    tokio::task::yield_now().await;
    Ok(issue(id))
}

/// One repetition of `workload`.
pub async fn run(
    workload: Workload,
    url: &str,
    local: Option<&mut LocalRedis>,
    n: Option<u64>,
    concurrency: usize,
) -> Result<(Figures, Map<String, Value>)> {
    // A fresh connection per repetition: C2 kills the server under the
    // bench's own.
    let redis = &Redis::connect_url(url).await?;
    let _: () = redis.query(&redis::cmd("FLUSHALL")).await?;
    match workload {
        Workload::C1Hit => hit(redis, n.unwrap_or(DEFAULT_READS), concurrency).await,
        Workload::C2Down => {
            let Some(local) = local else {
                return Err(BenchError::Usage("C2-down stops and restarts Redis: run it on the private redis-server (without --redis)".into()));
            };
            down(redis, url, local, concurrency).await
        }
        other => unreachable!("{other} is not a cache workload"),
    }
}

/// Caches every hot key, as a record and as payload text (50 writes in
/// flight), through a cache with a generous budget: the fill is not
/// measured.
async fn fill(redis: &Redis, payloads: &Arc<Vec<String>>) -> Result<()> {
    let cache = Cache::new(
        redis.clone(),
        CacheConfig {
            timeout: Duration::from_secs(1),
            ..CacheConfig::default()
        },
    )?;
    let cache = &cache;
    let results: Vec<_> = futures::stream::iter(0..HOT_KEYS * 2)
        .map(|i| {
            let (cache, id) = (cache.clone(), i / 2);
            async move {
                if i % 2 == 0 {
                    cache.set(&key(id), &issue(id), TTL).await
                } else {
                    let text = &payloads[id as usize];
                    cache.set(&payload_key(id), text, TTL).await
                }
            }
        })
        .buffer_unordered(50)
        .collect()
        .await;
    let applied = results
        .into_iter()
        .filter(|r| matches!(r, Ok(w) if w.is_applied()))
        .count();
    if applied as u64 != HOT_KEYS * 2 {
        return Err(BenchError::Failed(format!(
            "only {applied} of {} values were cached",
            HOT_KEYS * 2
        )));
    }
    Ok(())
}

/// What a run of reads measured.
struct Reads {
    reads: u64,
    seconds: f64,
    failed: u64,
    latency_ns: Histogram<u64>,
}

impl Reads {
    fn per_second(&self) -> f64 {
        self.reads as f64 / self.seconds
    }
}

/// Something that reads key `i` and says whether it got the right value.
trait Reader: Clone + Send + Sync + 'static {
    fn read(&self, i: u64) -> impl Future<Output = bool> + Send;
}

/// Every this many reads, a reader checks the whole value it got; the
/// others check its length. The plain GETs and the cached text check the
/// same way, so that neither pays for a check the other skips (comparing
/// 1 KiB each read was 16% of a tier-on read's time in a profile).
const VERIFY_EVERY: u64 = 16;

/// Plain `GET`s of the cache's keys on the bench's connection.
#[derive(Clone)]
struct PlainGet {
    redis: Redis,
    keys: Arc<Vec<String>>,
    payloads: Arc<Vec<String>>,
}

impl Reader for PlainGet {
    async fn read(&self, i: u64) -> bool {
        let id = key_id(i) as usize;
        let cmd = redis::cmd("GET").arg(&self.keys[id]).to_owned();
        let expected = self.payloads[id].as_bytes();
        // The stored value is the text behind the cache codec's header.
        match self.redis.query::<Option<Vec<u8>>>(&cmd).await {
            Ok(Some(bytes)) if i.is_multiple_of(VERIFY_EVERY) => bytes.ends_with(expected),
            Ok(Some(bytes)) => bytes.len() > expected.len(),
            _ => false,
        }
    }
}

/// `get_or_compute` of the payload text.
#[derive(Clone)]
struct CachedText {
    cache: Cache,
    payloads: Arc<Vec<String>>,
    /// The cache keys, made once, as the plain GETs' keys are: the two
    /// readers differ only in the call they make.
    keys: Arc<Vec<String>>,
}

impl CachedText {
    /// Reads key `i` as the `T` that `wrap` makes of the text (the text
    /// itself, or an `Arc` of it), checked as the plain GETs are checked.
    async fn read_as<T: plimsoll::cache::Value + Borrow<String>>(
        &self,
        i: u64,
        wrap: fn(String) -> T,
    ) -> bool {
        let id = key_id(i);
        let expected = &self.payloads[id as usize];
        let loader = || async { Ok::<_, Infallible>(wrap(expected.clone())) };
        match self
            .cache
            .get_or_compute(&self.keys[id as usize], TTL, loader)
            .await
        {
            Ok(value) => {
                let text: &String = value.borrow();
                if i.is_multiple_of(VERIFY_EVERY) {
                    text == expected
                } else {
                    text.len() == expected.len()
                }
            }
            Err(never) => match never {},
        }
    }
}

impl Reader for CachedText {
    async fn read(&self, i: u64) -> bool {
        self.read_as(i, |text| text).await
    }
}

/// `get_or_compute` of the payload text as an `Arc<String>`: the tier
/// hands out the value it holds instead of a copy of it.
#[derive(Clone)]
struct CachedSharedText(CachedText);

impl Reader for CachedSharedText {
    async fn read(&self, i: u64) -> bool {
        self.0.read_as(i, Arc::new).await
    }
}

/// `get_or_compute` of the typed record.
#[derive(Clone)]
struct CachedRecord(Cache);

impl Reader for CachedRecord {
    async fn read(&self, i: u64) -> bool {
        cached_read(&self.0, i).await
    }
}

/// `n` reads, `concurrency` in flight: task `t` reads `t`, `t + concurrency`,
/// … (no shared counter between tasks, nothing shared but the reader).
async fn timed_reads<R: Reader>(n: u64, concurrency: usize, reader: &R) -> Result<Reads> {
    let started = Instant::now();
    let tasks: Vec<_> = (0..concurrency as u64)
        .map(|first| {
            let reader = reader.clone();
            let step = concurrency as u64;
            tokio::spawn(async move {
                let mut latency = latency_histogram();
                let mut failed = 0u64;
                let mut i = first;
                while i < n {
                    let t = Instant::now();
                    if !reader.read(i).await {
                        failed += 1;
                    }
                    latency.saturating_record(t.elapsed().as_nanos() as u64);
                    i += step;
                    // Reads served from memory never wait on anything; let
                    // other tasks (and the timer) run now and then.
                    tokio::task::consume_budget().await;
                }
                (latency, failed)
            })
        })
        .collect();
    let mut latency_ns = latency_histogram();
    let mut failed = 0;
    for task in tasks {
        let (h, f) = task.await?;
        latency_ns.add(h)?;
        failed += f;
    }
    Ok(Reads {
        reads: n,
        seconds: started.elapsed().as_secs_f64(),
        failed,
        latency_ns,
    })
}

fn us(ns: u64) -> f64 {
    ns as f64 / 1000.0
}

/// C1-hit.
async fn hit(redis: &Redis, n: u64, concurrency: usize) -> Result<(Figures, Map<String, Value>)> {
    let off = Cache::new(redis.clone(), CacheConfig::default())?;
    let on = Cache::new(redis.clone(), CacheConfig::with_local_tier())?;
    // A tier of its own for the records: the payloads' 10,000 entries fill
    // the first one, and its eviction policy rightly keeps them over a scan
    // of new keys.
    let typed_on = Cache::new(redis.clone(), CacheConfig::with_local_tier())?;
    let shared_on = Cache::new(redis.clone(), CacheConfig::with_local_tier())?;
    let payloads = payloads();
    fill(redis, &payloads).await?;
    // The same keys the cache reads, as plain GETs return them.
    let raw_keys: Arc<Vec<String>> = Arc::new(
        (0..HOT_KEYS)
            .map(|id| {
                format!(
                    "{}:cache:default:{}",
                    plimsoll::keyspace::DEFAULT_PREFIX,
                    payload_key(id)
                )
            })
            .collect(),
    );
    let cache_keys: Arc<Vec<String>> = Arc::new((0..HOT_KEYS).map(payload_key).collect());
    let text = |cache: &Cache| CachedText {
        cache: cache.clone(),
        payloads: payloads.clone(),
        keys: cache_keys.clone(),
    };
    let plain = PlainGet {
        redis: redis.clone(),
        keys: raw_keys.clone(),
        payloads: payloads.clone(),
    };
    let mut runs = Vec::new();
    runs.push(("get", timed_reads(n, concurrency, &plain).await?));
    runs.push(("off", timed_reads(n, concurrency, &text(&off)).await?));
    runs.push((
        "typed_off",
        timed_reads(n, concurrency, &CachedRecord(off.clone())).await?,
    ));
    // Warm the in-process tier with one pass (not measured), just before
    // each run: local copies are fresh for 5 s (`DEFAULT_LOCAL_TTL`).
    timed_reads(HOT_KEYS, concurrency, &text(&on)).await?;
    runs.push(("on", timed_reads(n, concurrency, &text(&on)).await?));
    timed_reads(HOT_KEYS, concurrency, &CachedRecord(typed_on.clone())).await?;
    runs.push((
        "typed_on",
        timed_reads(n, concurrency, &CachedRecord(typed_on.clone())).await?,
    ));
    let shared = CachedSharedText(text(&shared_on));
    timed_reads(HOT_KEYS, concurrency, &shared).await?;
    runs.push(("shared_on", timed_reads(n, concurrency, &shared).await?));

    let mut figures = Figures::new();
    let get_rate = runs[0].1.per_second();
    for (name, reads) in &runs {
        let (rate, p99, failed, ratio) = match *name {
            "get" => ("get_reads_per_s", "get_p99_us", "get_failed", ""),
            "off" => ("off_reads_per_s", "off_p99_us", "off_failed", "off_vs_get"),
            "on" => ("on_reads_per_s", "on_p99_us", "on_failed", "on_vs_get"),
            "typed_off" => (
                "typed_off_reads_per_s",
                "typed_off_p99_us",
                "typed_off_failed",
                "typed_off_vs_get",
            ),
            "shared_on" => (
                "shared_on_reads_per_s",
                "shared_on_p99_us",
                "shared_on_failed",
                "shared_on_vs_get",
            ),
            _ => (
                "typed_on_reads_per_s",
                "typed_on_p99_us",
                "typed_on_failed",
                "typed_on_vs_get",
            ),
        };
        figures.insert(rate, reads.per_second());
        figures.insert(p99, us(reads.latency_ns.value_at_quantile(0.99)));
        figures.insert(failed, reads.failed as f64);
        if !ratio.is_empty() {
            figures.insert(ratio, reads.per_second() / get_rate);
        }
    }
    let (off_stats, on_stats) = (off.stats(), on.stats());
    figures.insert(
        "loader_calls",
        (off_stats.loader_calls
            + on_stats.loader_calls
            + typed_on.stats().loader_calls
            + shared_on.stats().loader_calls) as f64,
    );
    let mut details = Map::new();
    details.insert("hot_keys".into(), json!(HOT_KEYS));
    details.insert("concurrency".into(), json!(concurrency));
    let stored: u64 = redis.query(redis::cmd("STRLEN").arg(&raw_keys[0])).await?;
    details.insert("value_bytes".into(), json!(stored));
    let record_key = format!(
        "{}:cache:default:{}",
        plimsoll::keyspace::DEFAULT_PREFIX,
        key(0)
    );
    let stored: u64 = redis.query(redis::cmd("STRLEN").arg(&record_key)).await?;
    details.insert("typed_value_bytes".into(), json!(stored));
    details.insert("cache_off_stats".into(), serde_json::to_value(off_stats)?);
    details.insert("cache_on_stats".into(), serde_json::to_value(on_stats)?);
    Ok((figures, details))
}

/// One `get_or_compute` read; true when it served the right record.
async fn cached_read(cache: &Cache, i: u64) -> bool {
    let id = key_id(i);
    match cache.get_or_compute(&key(id), TTL, || load(id)).await {
        Ok(value) => value.id == id,
        Err(never) => match never {},
    }
}

/// Like [`cached_read`], and how long the loader took if it ran (ns).
async fn cached_read_timing_loader(cache: &Cache, i: u64) -> (bool, u64) {
    let id = key_id(i);
    let loader_ns = AtomicU64::new(0);
    let loader = || async {
        let started = Instant::now();
        let value = load(id).await;
        loader_ns.store(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
        value
    };
    let ok = match cache.get_or_compute(&key(id), TTL, loader).await {
        Ok(value) => value.id == id,
        Err(never) => match never {},
    };
    (ok, loader_ns.load(Ordering::Relaxed))
}

/// Histograms of C2 beyond the phases: reads made with the breaker open,
/// and the same reads less their loader's time (the cache's own cost).
const OPEN: usize = PHASES.len();
const OPEN_OVERHEAD: usize = PHASES.len() + 1;

/// The phases of C2, in order.
const PHASES: [&str; 5] = ["up", "stopped", "restarted", "paused", "resumed"];

/// C2-down.
async fn down(
    redis: &Redis,
    url: &str,
    local: &mut LocalRedis,
    concurrency: usize,
) -> Result<(Figures, Map<String, Value>)> {
    let config = CacheConfig::default();
    let budget = config.timeout;
    let cache = Cache::connect(RedisConfig::new(url)?, config)?;
    let deadline = Instant::now() + Duration::from_secs(20);
    while !cache.set("warm", &1u8, TTL).await?.is_applied() {
        if Instant::now() > deadline {
            return Err(BenchError::Failed(format!(
                "the cache did not connect to {url}"
            )));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    fill(redis, &payloads()).await?;

    let phase = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..concurrency)
        .map(|r| {
            let (cache, phase, stop) = (cache.clone(), phase.clone(), stop.clone());
            tokio::spawn(async move {
                let mut latency: Vec<Histogram<u64>> =
                    (0..=OPEN_OVERHEAD).map(|_| latency_histogram()).collect();
                let mut failed = vec![0u64; PHASES.len()];
                let mut i = r as u64;
                while !stop.load(Ordering::Relaxed) {
                    let p = phase.load(Ordering::Relaxed);
                    let open_before = cache.breaker_state() == BreakerState::Open;
                    let t = Instant::now();
                    let (ok, loader_ns) = cached_read_timing_loader(&cache, i).await;
                    let ns = t.elapsed().as_nanos() as u64;
                    latency[p].saturating_record(ns);
                    if open_before && cache.breaker_state() == BreakerState::Open {
                        latency[OPEN].saturating_record(ns);
                        latency[OPEN_OVERHEAD].saturating_record(ns.saturating_sub(loader_ns));
                    }
                    if !ok {
                        failed[p] += 1;
                    }
                    i += concurrency as u64;
                    tokio::task::consume_budget().await;
                }
                (latency, failed)
            })
        })
        .collect();

    let mut timeline = Map::new();
    let started = Instant::now();
    let mark = |timeline: &mut Map<String, Value>, what: &str| {
        timeline.insert(what.into(), json!(started.elapsed().as_millis() as u64));
    };
    tokio::time::sleep(Duration::from_secs(1)).await;

    phase.store(1, Ordering::Relaxed);
    mark(&mut timeline, "killed_ms");
    tokio::task::block_in_place(|| local.kill());
    tokio::time::sleep(PHASE).await;

    phase.store(2, Ordering::Relaxed);
    tokio::task::block_in_place(|| local.restart()).context("restarting redis-server")?;
    mark(&mut timeline, "restarted_ms");
    wait_closed(&cache).await?;
    mark(&mut timeline, "closed_after_restart_ms");
    tokio::time::sleep(Duration::from_secs(1)).await;

    phase.store(3, Ordering::Relaxed);
    let pause_ms = PHASE.as_millis().to_string();
    // A connection of its own: the other one was broken by the kill.
    let admin = Redis::connect_url(url).await?;
    let _: () = admin
        .query(redis::cmd("CLIENT").arg("PAUSE").arg(&pause_ms).arg("ALL"))
        .await
        .context("CLIENT PAUSE")?;
    mark(&mut timeline, "paused_ms");
    tokio::time::sleep(PHASE).await;

    phase.store(4, Ordering::Relaxed);
    wait_closed(&cache).await?;
    mark(&mut timeline, "closed_after_pause_ms");
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);

    let mut latency: Vec<Histogram<u64>> = (0..=OPEN_OVERHEAD)
        .map(|_| Ok::<_, BenchError>(latency_histogram()))
        .collect::<Result<_, _>>()?;
    let mut failed = vec![0u64; PHASES.len()];
    for reader in readers {
        let (h, f) = reader.await?;
        for (total, part) in latency.iter_mut().zip(h) {
            total.add(part)?;
        }
        for (total, part) in failed.iter_mut().zip(f) {
            *total += part;
        }
    }

    let mut figures = Figures::new();
    let mut details = Map::new();
    let mut phases = Map::new();
    for (p, name) in PHASES.iter().enumerate() {
        let h = &latency[p];
        phases.insert(
            (*name).into(),
            json!({
                "reads": h.len(),
                "p99_us": us(h.value_at_quantile(0.99)),
                "max_us": us(h.max()),
                "failed": failed[p],
            }),
        );
    }
    let down = |p: usize| &latency[p];
    figures.insert("failed_reads", failed.iter().sum::<u64>() as f64);
    figures.insert("stopped_p99_us", us(down(1).value_at_quantile(0.99)));
    figures.insert("stopped_max_us", us(down(1).max()));
    figures.insert("paused_p99_us", us(down(3).value_at_quantile(0.99)));
    figures.insert("paused_max_us", us(down(3).max()));
    figures.insert("budget_us", budget.as_micros() as f64);
    let open = &latency[OPEN];
    figures.insert("open_reads", open.len() as f64);
    figures.insert("open_p99_us", us(open.value_at_quantile(0.99)));
    let overhead = &latency[OPEN_OVERHEAD];
    figures.insert("open_overhead_p99_us", us(overhead.value_at_quantile(0.99)));
    let stats = cache.stats();
    let loader_mean_us = stats.loader_time_us as f64 / stats.loader_calls.max(1) as f64;
    figures.insert("loader_mean_us", loader_mean_us);
    details.insert("phases".into(), Value::Object(phases));
    details.insert("timeline".into(), Value::Object(timeline));
    details.insert("cache_stats".into(), serde_json::to_value(stats)?);
    Ok((figures, details))
}

/// Waits until the breaker closed and Redis takes a write again.
async fn wait_closed(cache: &Cache) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if cache.breaker_state() == BreakerState::Closed
            && cache.set("warm", &1u8, TTL).await?.is_applied()
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(BenchError::Failed(
                "the breaker did not close within 30 s of Redis coming back".into(),
            ));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Nanoseconds from 1 ns to a minute, 3 significant digits; a longer read
/// is recorded as a minute.
fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("valid histogram bounds")
}
