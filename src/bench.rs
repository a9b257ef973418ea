//! `plimsoll bench`: the flags of the workloads in `crates/plimsoll-bench`,
//! read into its [`Options`] and run there.

use anyhow::Result;
use clap::Args;
use plimsoll_bench::{LoadGenerator, Options, QueueCompression, Workload};

use crate::util::parse_duration;

/// Settings of a benchmark run.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Redis to run against (flushed before each repetition!). Default: a
    /// private redis-server started for the run.
    #[arg(long)]
    redis: Option<String>,

    /// Allow flushing a `--redis` that holds keys.
    #[arg(long)]
    flush: bool,

    /// Comma-separated workloads (see shared/BENCH.md).
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "W1-single,W1-bulk,W2-drain,W3-waiting,W3-retained,W4-latency"
    )]
    workload: Vec<Workload>,

    /// Jobs per workload (default 100,000; W5-soak: 10,000,000).
    #[arg(long)]
    n: Option<u64>,

    /// Repetitions; figures are medians.
    #[arg(long, default_value_t = 3)]
    reps: usize,

    /// Calls in flight (W1-single) and worker concurrency (W2, W4, W5).
    #[arg(long, default_value_t = 50)]
    concurrency: usize,

    /// Payload compression of the queue: `zstd` (the default level), `zstd:LEVEL`
    /// (-7 to 19) or `off`.
    #[arg(long, default_value = "zstd")]
    compression: QueueCompression,

    /// H1/H2: concurrent connections posting webhooks.
    #[arg(long, default_value_t = 64)]
    connections: usize,

    /// H1/H2: how long the webhooks are posted (H2 kills Redis a third in,
    /// for 10 s).
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    http_duration: std::time::Duration,

    /// H1: what posts the webhooks: `built-in` (this process, over hyper) or
    /// `wrk` (BENCH.md's tool, which must be on PATH; `apt-get install wrk`).
    /// H2 always uses the built-in client: it counts every 2xx exactly.
    #[arg(long, value_enum, default_value_t = LoadGenerator::BuiltIn)]
    load_generator: LoadGenerator,

    /// W4: producer rate, jobs per second.
    #[arg(long, default_value_t = 2000)]
    rate: u64,

    /// W4: how long the producer runs.
    #[arg(long, default_value = "20s", value_parser = parse_duration)]
    duration: std::time::Duration,

    /// G2: the time the producer takes to fill Redis' 256 MB.
    #[arg(long, default_value = "10m", value_parser = parse_duration)]
    fill_time: std::time::Duration,
}

pub async fn run(args: BenchArgs) -> Result<()> {
    let options = Options {
        redis: args.redis,
        flush: args.flush,
        workloads: args.workload,
        n: args.n,
        reps: args.reps,
        concurrency: args.concurrency,
        compression: args.compression,
        connections: args.connections,
        http_duration: args.http_duration,
        load_generator: args.load_generator,
        rate: args.rate,
        duration: args.duration,
        fill_time: args.fill_time,
    };
    plimsoll_bench::run(options).await?;
    Ok(())
}
