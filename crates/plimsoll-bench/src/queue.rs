//! The queue workloads W1–W5 of shared/BENCH.md.

use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::error::Result;
use hdrhistogram::Histogram;
use plimsoll::{Job, NewJob, Outcome, Queue, Redis, Worker};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::sys::{CpuMeter, Nodes};
use super::{Figures, Options, Workload};

/// The 854 characters of shared/bench/payload_body.txt: random base64, so
/// compression gains only what it honestly can.
pub(super) const BODY: &str = include_str!("../../../bench/payload_body.txt");
const QUEUE: &str = "bench";
const DEFAULT_N: u64 = 100_000;
const DEFAULT_SOAK_N: u64 = 10_000_000;
const BULK_CALL: usize = 1000;

#[derive(Serialize)]
struct Payload<'a> {
    ts: f64,
    seq: u64,
    issue: Issue<'a>,
}

#[derive(Serialize)]
struct Issue<'a> {
    id: u64,
    repo: &'a str,
    title: &'a str,
    labels: [&'a str; 2],
    body: &'a str,
}

/// The benchmark payload for job `seq` created at `ts` (epoch ms).
pub fn payload(seq: u64, ts: f64) -> Vec<u8> {
    serde_json::to_vec(&Payload {
        ts,
        seq,
        issue: Issue {
            id: seq,
            repo: "acme/widgets",
            title: "Crash when opening settings panel on startup",
            labels: ["bug", "triage"],
            body: BODY,
        },
    })
    .expect("the payload serializes")
}

fn now_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64() * 1000.0)
        .unwrap_or(0.0)
}

/// The queue's payload compression as `--compression` names it: `off`,
/// `zstd` (the default level) or `zstd:LEVEL`. The name is kept as given,
/// for every line prints it.
#[derive(Debug, Clone)]
pub struct QueueCompression {
    name: String,
    compression: plimsoll::Compression,
}

impl QueueCompression {
    /// The name it was given.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The setting of the bench's queue.
    pub fn compression(&self) -> plimsoll::Compression {
        self.compression
    }
}

impl FromStr for QueueCompression {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, String> {
        let compression = match value {
            "off" => plimsoll::Compression::Off,
            "zstd" => plimsoll::queue::DEFAULT_COMPRESSION,
            _ => {
                let level = value
                    .strip_prefix("zstd:")
                    .and_then(|level| level.parse().ok())
                    .ok_or_else(|| format!("{value:?} is not off, zstd or zstd:LEVEL"))?;
                plimsoll::Compression::Zstd { level }
            }
        };
        Ok(Self {
            name: value.to_string(),
            compression,
        })
    }
}

pub struct Bench {
    redis: Redis,
    /// The primaries, for memory and CPU figures (summed on a cluster).
    nodes: Nodes,
    compression: plimsoll::Compression,
    n: Option<u64>,
    concurrency: usize,
    rate: u64,
    duration: Duration,
}

impl Bench {
    pub fn new(redis: Redis, nodes: Nodes, args: &Options) -> Self {
        Self {
            redis,
            nodes,
            compression: args.compression.compression(),
            n: args.n,
            concurrency: args.concurrency,
            rate: args.rate,
            duration: args.duration,
        }
    }

    pub fn n(&self, workload: Workload) -> u64 {
        match (self.n, workload) {
            (Some(n), _) => n,
            (None, Workload::W5Soak) => DEFAULT_SOAK_N,
            (None, Workload::W4Latency) => self.rate * self.duration.as_secs(),
            (None, _) => DEFAULT_N,
        }
    }

    /// One repetition of `workload`: its figures, and details that are not
    /// medians (W5's memory series).
    pub async fn run(&self, workload: Workload) -> Result<(Figures, Map<String, Value>)> {
        let empty = self.reset().await?;
        let n = self.n(workload);
        let config = plimsoll::QueueConfig {
            compression: self.compression,
            ..plimsoll::QueueConfig::default()
        };
        let queue = Queue::new(self.redis.clone(), QUEUE, config)?;
        let mut figures = Figures::new();
        let mut details = Map::new();
        match workload {
            Workload::W1Single | Workload::W1Bulk | Workload::W3Waiting => {
                let meter = CpuMeter::start(&self.nodes).await?;
                let started = Instant::now();
                if workload == Workload::W1Single {
                    self.enqueue_singles(&queue, n).await?;
                } else {
                    enqueue_bulk(&queue, 0, n).await?;
                }
                let elapsed = started.elapsed().as_secs_f64();
                let (client, redis) = meter.stop(&self.nodes).await?;
                let bytes = self.nodes.used_memory().await?.saturating_sub(empty);
                let bytes_per_job = bytes as f64 / n as f64;
                if workload == Workload::W3Waiting {
                    figures.insert("bytes_per_job", bytes_per_job);
                } else {
                    figures.insert("jobs_per_s", n as f64 / elapsed);
                    figures.insert("cpu_client_pct", client);
                    figures.insert("cpu_redis_pct", redis);
                    figures.insert("bytes_per_waiting_job", bytes_per_job);
                }
            }
            Workload::W2Drain | Workload::W3Retained => {
                enqueue_bulk(&queue, 0, n).await?;
                let meter = CpuMeter::start(&self.nodes).await?;
                let started = Instant::now();
                let worker = Worker::builder(queue.clone())
                    .concurrency(self.concurrency)
                    .start(|_job: Job| async { Outcome::Done })?;
                while worker.stats().completed < n {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                let elapsed = started.elapsed().as_secs_f64();
                let (client, redis) = meter.stop(&self.nodes).await?;
                worker.shutdown().await?;
                let bytes = self.nodes.used_memory().await?.saturating_sub(empty);
                if workload == Workload::W3Retained {
                    figures.insert("bytes_per_job", bytes as f64 / n as f64);
                } else {
                    figures.insert("jobs_per_s", n as f64 / elapsed);
                    figures.insert("cpu_worker_pct", client);
                    figures.insert("cpu_redis_pct", redis);
                }
            }
            Workload::W4Latency => self.latency(&queue, &mut figures).await?,
            Workload::W5Soak => {
                self.soak(&queue, n, empty, &mut figures, &mut details)
                    .await?
            }
            other => unreachable!("{other} is not a queue workload"),
        }
        Ok((figures, details))
    }

    /// FLUSHALL + SCRIPT FLUSH; returns `used_memory` of the empty instance.
    async fn reset(&self) -> Result<u64> {
        let _: () = self.redis.query(&redis::cmd("FLUSHALL")).await?;
        let _: () = self.redis.query(redis::cmd("SCRIPT").arg("FLUSH")).await?;
        self.nodes.used_memory().await
    }

    /// W1-single: one call per job, `concurrency` calls in flight: as many
    /// tasks (the callers of a service), each making its calls one after the
    /// other.
    async fn enqueue_singles(&self, queue: &Queue, n: u64) -> Result<()> {
        let callers = self.concurrency as u64;
        let mut tasks = Vec::with_capacity(self.concurrency);
        for caller in 0..callers {
            let queue = queue.clone();
            tasks.push(tokio::spawn(async move {
                let mut seq = caller;
                while seq < n {
                    queue.enqueue(NewJob::bytes(payload(seq, now_ms()))).await?;
                    seq += callers;
                }
                Ok::<(), plimsoll::Error>(())
            }));
        }
        for task in tasks {
            task.await??;
        }
        Ok(())
    }

    /// W4: a worker running; single jobs at a fixed rate on an absolute
    /// schedule; latency from the payload's `ts` to the handler's start.
    async fn latency(&self, queue: &Queue, figures: &mut Figures) -> Result<()> {
        #[derive(Deserialize)]
        struct Stamp {
            ts: f64,
        }
        let histogram = Arc::new(Mutex::new(Histogram::<u64>::new(3)?));
        let handled = Arc::new(AtomicU64::new(0));
        let (hist, count) = (histogram.clone(), handled.clone());
        let worker = Worker::builder(queue.clone())
            .concurrency(self.concurrency)
            .start(move |job: Job| {
                let latency_us = job
                    .json::<Stamp>()
                    .map(|s| ((now_ms() - s.ts) * 1000.0).max(0.0) as u64)
                    .unwrap_or(u64::MAX);
                let _ = hist
                    .lock()
                    .expect("histogram lock")
                    .record(latency_us.min(60_000_000));
                count.fetch_add(1, Ordering::Relaxed);
                async { Outcome::Done }
            })?;
        // Let the worker reach its idle wait before the clock starts.
        tokio::time::sleep(Duration::from_millis(200)).await;

        let total = self.rate * self.duration.as_secs();
        let interval = Duration::from_secs_f64(1.0 / self.rate as f64);
        let started = tokio::time::Instant::now();
        let mut producers = Vec::with_capacity(total as usize);
        for seq in 0..total {
            tokio::time::sleep_until(started + interval.mul_f64(seq as f64)).await;
            let queue = queue.clone();
            producers.push(tokio::spawn(async move {
                queue.enqueue(NewJob::bytes(payload(seq, now_ms()))).await
            }));
        }
        let produced_in = started.elapsed().as_secs_f64();
        for producer in producers {
            producer.await??;
        }
        while handled.load(Ordering::Relaxed) < total {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        worker.shutdown().await?;
        let histogram = histogram.lock().expect("histogram lock");
        figures.insert("p50_ms", histogram.value_at_quantile(0.50) as f64 / 1000.0);
        figures.insert("p99_ms", histogram.value_at_quantile(0.99) as f64 / 1000.0);
        figures.insert("max_ms", histogram.max() as f64 / 1000.0);
        figures.insert("achieved_rate", total as f64 / produced_in);
        Ok(())
    }

    /// W5: `n` jobs through enqueue → complete at the highest steady rate with
    /// default settings; half fail once and are retried, 1% fail for good.
    /// At every checkpoint the producer lets the queue settle and
    /// `used_memory` is read.
    async fn soak(
        &self,
        queue: &Queue,
        n: u64,
        empty: u64,
        figures: &mut Figures,
        details: &mut Map<String, Value>,
    ) -> Result<()> {
        let checkpoint = if n >= 2_000_000 {
            1_000_000
        } else {
            (n / 10).max(1)
        };
        let worker = Worker::builder(queue.clone())
            .concurrency(self.concurrency)
            .start(|job: Job| async move {
                // The seq is the job's number in the run: deterministic fates.
                let seq = job.id().0;
                if seq % 100 == 1 {
                    Outcome::fail("fails for good (1%)")
                } else if seq.is_multiple_of(2) && job.attempt() == 1 {
                    Outcome::retry("fails once (50%)")
                } else {
                    Outcome::Done
                }
            })?;
        let mut series = vec![json!({"jobs": 0, "used_memory": self.nodes.used_memory().await?})];
        let started = Instant::now();
        let mut produced = 0u64;
        while produced < n {
            let until = (produced + checkpoint).min(n);
            while produced < until {
                let chunk = (until - produced).min(BULK_CALL as u64 * 10);
                enqueue_bulk(queue, produced, chunk).await?;
                produced += chunk;
                // Backpressure: keep the backlog under 50,000 jobs.
                while queue.counts().await?.waiting > 50_000 {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
            loop {
                let counts = queue.counts().await?;
                if counts.totals.completed + counts.totals.dead >= produced {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let used = self.nodes.used_memory().await?;
            let detail = checkpoint_detail(&self.nodes).await?;
            series.push(json!({"jobs": produced, "used_memory": used, "detail": detail}));
        }
        let elapsed = started.elapsed().as_secs_f64();
        worker.shutdown().await?;
        let end = self.nodes.used_memory().await?;
        let keys: Vec<String> = self.redis.query(redis::cmd("KEYS").arg("*")).await?;
        let mut kinds: std::collections::BTreeMap<String, u64> = Default::default();
        for key in keys {
            let kind = key
                .split_once("}:")
                .map(|(_, rest)| rest.split(':').next().unwrap_or(rest).to_string())
                .unwrap_or(key);
            *kinds.entry(kind).or_default() += 1;
        }
        let first = series
            .get(1)
            .and_then(|p| p["used_memory"].as_u64())
            .unwrap_or(end);
        let max_after_first = series[1..]
            .iter()
            .filter_map(|p| p["used_memory"].as_u64())
            .max()
            .unwrap_or(end);
        let min_after_first = series[1..]
            .iter()
            .filter_map(|p| p["used_memory"].as_u64())
            .min()
            .unwrap_or(end);
        figures.insert("jobs_per_s", n as f64 / elapsed);
        figures.insert(
            "used_memory_start",
            series[0]["used_memory"].as_u64().unwrap_or(0) as f64,
        );
        figures.insert("used_memory_first_checkpoint", first as f64);
        figures.insert("used_memory_end", end as f64);
        figures.insert("empty_used_memory", empty as f64);
        figures.insert(
            "drift_pct_after_first_checkpoint",
            (max_after_first - min_after_first) as f64 / first as f64 * 100.0,
        );
        details.insert("used_memory_series".into(), Value::Array(series));
        details.insert("keys_at_end".into(), json!(kinds));
        Ok(())
    }
}

/// Enqueues `n` benchmark jobs numbered from `first`, 1,000 per call. Each
/// call takes its jobs from an iterator that builds their payloads
/// ([`Queue::enqueue_iter`]), so building overlaps writing, as it would in
/// a producer that makes its jobs as it goes; BullMQ's harness builds each
/// thousand first, as `addBulk` takes an array.
async fn enqueue_bulk(queue: &Queue, first: u64, n: u64) -> Result<()> {
    let mut seq = first;
    while seq < first + n {
        let end = (seq + BULK_CALL as u64).min(first + n);
        let ts = now_ms();
        queue
            .enqueue_iter((seq..end).map(|i| NewJob::bytes(payload(i, ts))))
            .await?;
        seq = end;
    }
    Ok(())
}

/// What makes up `used_memory` at a W5 checkpoint, per primary (one object
/// for one server, an array on a cluster).
async fn checkpoint_detail(nodes: &Nodes) -> Result<Value> {
    let mut details = Vec::with_capacity(nodes.all().len());
    for node in nodes.all() {
        details.push(node_detail(node).await?);
    }
    Ok(match details.len() {
        1 => details.remove(0),
        _ => Value::Array(details),
    })
}

/// What makes up one node's `used_memory`, to name what moves: Redis'
/// overhead and dataset (`MEMORY STATS`), the slow log's length and entries
/// (each is a few KB of used_memory), and each key's bytes (exact `MEMORY
/// USAGE … SAMPLES 0`; a settled queue has a handful of keys).
async fn node_detail(redis: &Redis) -> Result<Value> {
    let stats: Vec<redis::Value> = redis.query(redis::cmd("MEMORY").arg("STATS")).await?;
    let mut fields = serde_json::Map::new();
    for pair in stats.chunks(2) {
        let [redis::Value::BulkString(name), redis::Value::Int(n)] = pair else {
            continue;
        };
        let name = String::from_utf8_lossy(name);
        if matches!(&*name, "overhead.total" | "dataset.bytes" | "keys.count") {
            fields.insert(name.into_owned(), json!(n));
        }
    }
    let slowlog: u64 = redis.query(redis::cmd("SLOWLOG").arg("LEN")).await?;
    fields.insert("slowlog_len".into(), json!(slowlog));
    // What the slow calls were: command, first argument (a script's sha),
    // microseconds.
    let entries: Vec<redis::Value> = redis
        .query(redis::cmd("SLOWLOG").arg("GET").arg(128))
        .await?;
    let slow: Vec<Value> = entries
        .iter()
        .filter_map(|entry| {
            let redis::Value::Array(parts) = entry else {
                return None;
            };
            let micros = match parts.get(2) {
                Some(redis::Value::Int(us)) => *us,
                _ => return None,
            };
            let Some(redis::Value::Array(argv)) = parts.get(3) else {
                return None;
            };
            let word = |i: usize| match argv.get(i) {
                Some(redis::Value::BulkString(b)) => {
                    String::from_utf8_lossy(&b[..b.len().min(12)]).into_owned()
                }
                _ => String::new(),
            };
            Some(json!([word(0), word(1), micros]))
        })
        .collect();
    fields.insert("slowlog".into(), Value::Array(slow));
    let keys: Vec<String> = redis.query(redis::cmd("KEYS").arg("*")).await?;
    let mut sizes = serde_json::Map::new();
    for key in keys {
        let bytes: Option<u64> = redis
            .query(
                redis::cmd("MEMORY")
                    .arg("USAGE")
                    .arg(&key)
                    .arg("SAMPLES")
                    .arg(0),
            )
            .await?;
        sizes.insert(key, json!(bytes));
    }
    fields.insert("key_bytes".into(), Value::Object(sizes));
    Ok(Value::Object(fields))
}
