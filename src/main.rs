//! `plimsoll`: the command-line face of the Plimsoll library.
//!
//! Flags are parsed once, here, into validated settings; the library's typed
//! errors are turned into messages with `anyhow` only in this binary.

mod bench;
mod demo;
mod guard_cmd;
mod memory_cmd;
mod queue_cmd;
mod serve;
mod trim_cmd;
mod util;

use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};

/// A Redis job queue, cache client and memory guard that keep Redis from
/// filling up unnoticed.
#[derive(Debug, Parser)]
#[command(name = "plimsoll", version, about, long_about = None, propagate_version = true)]
struct Cli {
    /// Log filter (RUST_LOG syntax), e.g. `info` or `plimsoll=debug`.
    #[arg(long, global = true, env = "PLIMSOLL_LOG", default_value = "warn")]
    log: String,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server: HTTP API, webhook intake, push delivery, dashboard,
    /// metrics.
    Serve(serve::ServeArgs),
    /// Enqueue and process webhook-like jobs on a private Redis, then show
    /// that Redis holds nothing left over.
    Demo(demo::DemoArgs),
    /// Inspect and operate queues: counts, jobs, the dead set, pause, cancel.
    #[command(subcommand)]
    Queue(queue_cmd::QueueCommand),
    /// Enqueue one job (payload from an argument or stdin).
    Enqueue(queue_cmd::EnqueueArgs),
    /// Run the benchmark workloads of shared/BENCH.md and print JSON lines.
    Bench(bench::BenchArgs),
    /// Watch Redis memory: alerts at 20/50/90% and on a forecast under
    /// 72 h / 48 h, OOM and evictions; Prometheus metrics.
    Guard(guard_cmd::GuardArgs),
    /// Which key families hold Redis' memory, which grow, which leak.
    Memory(memory_cmd::MemoryArgs),
    /// Reclaim memory from one family in bounded batches (dry run unless --yes).
    #[command(subcommand)]
    Trim(trim_cmd::TrimCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(&cli.log)
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command) -> Result<()> {
    match command {
        Command::Serve(args) => serve::run(args).await,
        Command::Demo(args) => demo::run(args).await,
        Command::Queue(command) => queue_cmd::run(command).await,
        Command::Enqueue(args) => queue_cmd::enqueue(args).await,
        Command::Bench(args) => bench::run(args).await,
        Command::Guard(args) => guard_cmd::run(args).await,
        Command::Memory(args) => memory_cmd::run(args).await,
        Command::Trim(command) => trim_cmd::run(command).await,
    }
}
