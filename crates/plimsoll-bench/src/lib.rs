//! The workloads behind Plimsoll's benchmark table (docs/benchmarks.md),
//! as shared/BENCH.md defines them: `plimsoll bench` reads its flags into
//! [`Options`] and calls [`run`], which prints one JSON line per workload.
//! `bench/compare` runs BullMQ's harness and this on the same Redis and
//! prints both sets of lines, so the names ([`Workload`]) and the fields of
//! a line are an interface: they do not change with the code.
//!
//! Without `--redis` it starts a private `redis-server` as BENCH.md sets it
//! up (`--save "" --appendonly no --maxmemory 0`, loopback). Every
//! repetition starts from `FLUSHALL` + `SCRIPT FLUSH`; each figure printed is
//! the median over the repetitions. Because a given Redis is flushed, a
//! `--redis` that holds keys is refused unless `--flush` says that is fine.
//!
//! `--redis` may name a Redis Cluster (any seed node): the queue workloads
//! (W1–W5, one queue, so one shard), C1-hit (keys over every shard) and
//! G1-attribute (written per primary, walked per node) run on it, and
//! memory and CPU figures are read from every primary and summed
//! (`sys::Nodes`). G2, H1, H2 and C2 always use a private server of their
//! own (they fill it, or stop it).
//!
//! What each module measures:
//!
//! - `queue`: W1–W5, the job queue — enqueue throughput one job a call and
//!   1,000 a call (W1), drain throughput (W2), Redis' bytes per waiting and
//!   per retained job (W3), enqueue-to-handler latency at a fixed rate (W4),
//!   and memory that does not drift over a long soak with retries and
//!   failures (W5); with client and Redis CPU.
//! - `cache`: C1-hit, reads of cached keys against plain GETs, with the
//!   in-process tier off and on; C2-down, what readers see while Redis is
//!   killed, restarted and paused (no failed read, the breaker's cost).
//! - `guard`: G1-attribute, the time, commands and GET-latency cost of
//!   attributing 1,000,000 keys to families, and each family's bytes
//!   against an exact pass; G2-forecast, when the level alerts fire and how
//!   good the time-to-full forecast is while Redis fills.
//! - `server`: H1-intake, webhooks/s, latency and memory of `plimsoll
//!   serve`; H2-intake-redis-down, that no acknowledged webhook is lost
//!   while Redis is down.
//! - `sys` (CPU time and Redis memory, summed over a cluster's primaries)
//!   and `slots` (a cluster's slot map, for G1's per-primary pipelines)
//!   measure nothing themselves.
//! - `workload` names the workloads; `error` is [`BenchError`].

mod cache;
mod error;
mod guard;
mod queue;
mod server;
mod slots;
mod sys;
mod workload;

use std::collections::BTreeMap;

use crate::error::{Context, Result};
use clap::ValueEnum;
use plimsoll::Redis;
use serde_json::{Map, Value, json};

pub use error::BenchError;
pub use queue::QueueCompression;
use workload::Part;
pub use workload::Workload;

use plimsoll_server::embedded::{LocalRedis, LocalRedisOptions};

/// Settings of a benchmark run: what `plimsoll bench`'s flags say (the
/// binary's `src/bench.rs` has their defaults).
#[derive(Debug, Clone)]
pub struct Options {
    /// Redis to run against (flushed before each repetition); `None`: a
    /// private redis-server started for the run.
    pub redis: Option<String>,
    /// Allow flushing a `redis` that holds keys.
    pub flush: bool,
    /// The workloads, run in this order.
    pub workloads: Vec<Workload>,
    /// Jobs (or reads) per workload; `None`: each workload's default.
    pub n: Option<u64>,
    /// Repetitions; figures are medians.
    pub reps: usize,
    /// Calls in flight (W1-single, C1, C2) and worker concurrency (W2, W4,
    /// W5).
    pub concurrency: usize,
    /// Payload compression of the queue.
    pub compression: QueueCompression,
    /// H1/H2: concurrent connections posting webhooks.
    pub connections: usize,
    /// H1/H2: how long the webhooks are posted.
    pub http_duration: std::time::Duration,
    /// H1: what posts the webhooks.
    pub load_generator: LoadGenerator,
    /// W4: producer rate, jobs per second.
    pub rate: u64,
    /// W4: how long the producer runs.
    pub duration: std::time::Duration,
    /// G2: the time the producer takes to fill Redis' 256 MB.
    pub fill_time: std::time::Duration,
}

/// What a workload measured in one repetition: named figures.
pub type Figures = BTreeMap<&'static str, f64>;

/// Runs `options.workloads` in order and prints one JSON line per
/// workload on stdout (progress notes go to stderr).
///
/// H1 and H2 start `plimsoll serve` as the current executable
/// (`std::env::current_exe`), so they run only from the `plimsoll` binary.
pub async fn run(args: Options) -> Result<(), BenchError> {
    if args.reps == 0 {
        return Err(BenchError::Usage("--reps must be at least 1".into()));
    }
    let (mut local, url) = match &args.redis {
        Some(url) => (None, url.clone()),
        None => {
            let local = LocalRedis::start(&LocalRedisOptions {
                dir: None,
                maxmemory: 0,
                persist: false,
                port: None,
            })?;
            let url = local.url();
            (Some(local), url)
        }
    };
    let redis = Redis::connect_url(&url)
        .await
        .with_context(|| format!("connecting to {url}"))?;
    let keys: u64 = redis.query(&redis::cmd("DBSIZE")).await?;
    if keys > 0 && args.redis.is_some() && !args.flush {
        return Err(BenchError::Usage(format!(
            "{url} holds {keys} keys and the benchmark flushes it; pass --flush if that is fine"
        )));
    }
    let nodes = sys::Nodes::of(&redis).await?;
    let server = nodes.info("server").await?;
    let redis_version = server
        .first()
        .and_then(|s| s.get("redis_version"))
        .map(str::to_string)
        .unwrap_or_default();
    let guard_bench = guard::GuardBench::new(redis.clone(), nodes.clone(), &args);
    let bench = queue::Bench::new(redis, nodes, &args);

    for &workload in &args.workloads {
        let part = workload.part();
        let mut reps: Vec<Figures> = Vec::new();
        let mut extra = Map::new();
        for _ in 0..args.reps {
            let (figures, details) = match part {
                Part::Guard => guard_bench.run(workload).await?,
                Part::Server => {
                    server::run(
                        workload,
                        args.http_duration,
                        args.connections,
                        args.load_generator,
                    )
                    .await?
                }
                Part::Cache => {
                    let local = local.as_mut();
                    cache::run(workload, &url, local, args.n, args.concurrency).await?
                }
                Part::Queue => bench.run(workload).await?,
            };
            reps.push(figures);
            extra = details;
        }
        let n = match part {
            Part::Guard => guard_bench.n(workload),
            Part::Server => medians(&reps).get("accepted").copied().unwrap_or(0.0) as u64,
            // C2 reads for a time, not a count: its line has the queue's n,
            // as it always had.
            Part::Cache => cache::reads(workload, args.n).unwrap_or_else(|| bench.n(workload)),
            Part::Queue => bench.n(workload),
        };
        let mut line = json!({
            "workload": workload.to_string(),
            "n": n,
            "reps": args.reps,
            "payload_bytes": queue::payload(0, 0.0).len(),
            "plimsoll_version": env!("CARGO_PKG_VERSION"),
            "compression": args.compression.name(),
            "redis_version": redis_version,
        });
        let object = line.as_object_mut().expect("an object");
        for (name, value) in medians(&reps) {
            object.insert(name.to_string(), round(value));
        }
        object.extend(extra);
        println!("{line}");
    }
    Ok(())
}

/// Per figure, the median over repetitions.
fn medians(reps: &[Figures]) -> BTreeMap<&'static str, f64> {
    let mut out = BTreeMap::new();
    for name in reps.iter().flat_map(|r| r.keys()) {
        let mut values: Vec<f64> = reps.iter().filter_map(|r| r.get(name).copied()).collect();
        values.sort_by(f64::total_cmp);
        let mid = values.len() / 2;
        let median = if !values.len().is_multiple_of(2) {
            values[mid]
        } else {
            (values[mid - 1] + values[mid]) / 2.0
        };
        out.insert(*name, median);
    }
    out
}

fn round(value: f64) -> Value {
    let rounded = if value.abs() >= 100.0 {
        value.round()
    } else {
        (value * 1000.0).round() / 1000.0
    };
    json!(rounded)
}

/// What posts H1's webhooks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LoadGenerator {
    /// This process, over hyper.
    BuiltIn,
    /// wrk, which must be on PATH.
    Wrk,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_take_the_middle_value_per_figure() {
        let reps: Vec<Figures> = [3.0, 1.0, 2.0]
            .into_iter()
            .map(|v| Figures::from([("jobs_per_s", v)]))
            .collect();
        assert_eq!(medians(&reps)["jobs_per_s"], 2.0);
        let even: Vec<Figures> = [4.0, 1.0]
            .into_iter()
            .map(|v| Figures::from([("x", v)]))
            .collect();
        assert_eq!(medians(&even)["x"], 2.5);
    }
}
