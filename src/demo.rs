//! `plimsoll demo`: enqueue and process webhook-like jobs, then show that
//! Redis holds nothing left over. The short version of why Plimsoll exists.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Args;
use plimsoll::{Job, NewJob, Outcome, Queue, Redis, Worker};
use serde::{Deserialize, Serialize};

use crate::util::human_bytes;
use plimsoll_server::embedded::{LocalRedis, LocalRedisOptions};

/// Settings of the demo.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Use this Redis instead of starting a private one. The demo only
    /// touches the keys of its own queue.
    #[arg(long, env = "PLIMSOLL_REDIS_URL")]
    redis: Option<String>,

    /// How many webhooks to enqueue.
    #[arg(long, default_value_t = 20_000)]
    jobs: u64,
}

#[derive(Debug, Serialize, Deserialize)]
struct Webhook {
    delivery: String,
    event: String,
    repository: String,
    action: String,
    sender: String,
}

const QUEUE: &str = "webhooks.demo";

pub async fn run(args: DemoArgs) -> Result<()> {
    let (_local, url) = match &args.redis {
        Some(url) => (None, url.clone()),
        None => {
            let local = LocalRedis::start(&LocalRedisOptions {
                dir: None,
                maxmemory: 256 << 20,
                persist: false,
                port: None,
            })?;
            let url = local.url();
            println!("Started a private redis-server at {url} (maxmemory 256 MiB, noeviction).");
            (Some(local), url)
        }
    };
    let redis = Redis::connect_url(&url)
        .await
        .context("connecting to Redis")?;
    let before = redis.used_memory().await?;
    println!("Redis used_memory before: {}", human_bytes(before));

    let queue = Queue::with_defaults(redis.clone(), QUEUE)?;
    let started = Instant::now();
    let jobs: Vec<NewJob> = (0..args.jobs)
        .map(|i| {
            let hook = Webhook {
                delivery: format!("d-{i:08}"),
                event: ["push", "pull_request", "issues", "installation"][i as usize % 4].into(),
                repository: format!("acme/repo-{}", i % 50),
                action: "opened".into(),
                sender: format!("user-{}", i % 997),
            };
            NewJob::json(&hook)
        })
        .collect::<plimsoll::Result<_>>()?;
    let enqueued = queue.enqueue_bulk(jobs).await?;
    println!(
        "Enqueued {} webhooks in {:.0} ms.",
        enqueued.len(),
        started.elapsed().as_secs_f64() * 1000.0
    );
    let peak = redis.used_memory().await?;
    println!(
        "Redis used_memory with them waiting: {} ({} per job).",
        human_bytes(peak),
        human_bytes((peak.saturating_sub(before)) / args.jobs.max(1))
    );

    // One in ten deliveries fails on its first try and is retried with backoff.
    let handled = Arc::new(AtomicU64::new(0));
    let counter = handled.clone();
    let worker = Worker::builder(queue.clone())
        .concurrency(32)
        .backoff(plimsoll::Backoff::new(
            Duration::from_millis(50),
            Duration::from_secs(1),
            0.25,
        )?)
        .start(move |job: Job| {
            let counter = counter.clone();
            async move {
                let hook: Webhook = match job.json() {
                    Ok(hook) => hook,
                    Err(err) => return Outcome::fail(err),
                };
                counter.fetch_add(1, Ordering::Relaxed);
                if job.attempt() == 1 && hook.delivery.ends_with('7') {
                    return Outcome::retry("downstream answered 503");
                }
                Outcome::Done
            }
        })?;
    loop {
        let counts = queue.counts().await?;
        if counts.totals.completed >= args.jobs {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    worker.shutdown().await?;
    let counts = queue.counts().await?;
    println!(
        "Processed {} webhooks ({} handler runs, {} retried after a failure) in {:.1} s.",
        counts.totals.completed,
        handled.load(Ordering::Relaxed),
        counts.totals.retried,
        started.elapsed().as_secs_f64()
    );

    let after = redis.used_memory().await?;
    let keys: Vec<String> = redis
        .query(redis::cmd("KEYS").arg(format!("{}*", queue.keys().base())))
        .await?;
    println!(
        "Redis used_memory after: {} ({} more than before: the queue's counters and the \
         loaded Lua scripts).",
        human_bytes(after),
        human_bytes(after.saturating_sub(before))
    );
    println!(
        "Keys of the queue left in Redis: {} ({}).",
        keys.len(),
        keys.iter()
            .map(|k| {
                let name = k
                    .strip_prefix(queue.keys().base())
                    .and_then(|k| k.strip_prefix(':'))
                    .unwrap_or(k);
                if name.starts_with("id_run:") {
                    // A producer's run of ids, kept while it may still use it.
                    format!(
                        "id_run, which expires within {} min",
                        plimsoll::keyspace::ID_RUN_KEY_TTL.as_secs() / 60
                    )
                } else {
                    name.to_string()
                }
            })
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "No completed job stays in Redis: completed jobs are removed by default, and everything \
         Plimsoll keeps has a bound (see docs/keyspace.md)."
    );
    Ok(())
}
