//! `plimsoll queue …` and `plimsoll enqueue`: inspect and operate queues.

use std::io::Read;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand, ValueEnum};
use plimsoll::keyspace::QueueName;
use plimsoll::{
    CancelOutcome, DeadSelection, JobId, JobInfo, JobState, NewJob, Queue, QueueConfig,
};

use crate::util::{RedisArgs, human_bytes, parse_duration};

#[derive(Debug, Subcommand)]
pub enum QueueCommand {
    /// List the queues with their counts.
    List {
        #[command(flatten)]
        redis: RedisArgs,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Counts per state, counters, and bytes of one queue.
    Stats {
        #[command(flatten)]
        redis: RedisArgs,
        queue: QueueName,
        #[arg(long)]
        json: bool,
    },
    /// List jobs in one state.
    Jobs {
        #[command(flatten)]
        redis: RedisArgs,
        queue: QueueName,
        #[arg(long, value_enum, default_value = "waiting")]
        state: StateArg,
        #[arg(long, default_value_t = 0)]
        offset: usize,
        #[arg(long, default_value_t = 20)]
        limit: usize,
        #[arg(long)]
        json: bool,
    },
    /// Show one job, with its payload.
    Job {
        #[command(flatten)]
        redis: RedisArgs,
        queue: QueueName,
        id: JobId,
    },
    /// Cancel a job that has not finished.
    Cancel {
        #[command(flatten)]
        redis: RedisArgs,
        queue: QueueName,
        id: JobId,
    },
    /// Send dead jobs back to run (given ids, or --all).
    RetryDead {
        #[command(flatten)]
        redis: RedisArgs,
        queue: QueueName,
        ids: Vec<JobId>,
        #[arg(long, conflicts_with = "ids")]
        all: bool,
    },
    /// Delete dead jobs for good (given ids, or --all).
    PurgeDead {
        #[command(flatten)]
        redis: RedisArgs,
        queue: QueueName,
        ids: Vec<JobId>,
        #[arg(long, conflicts_with = "ids")]
        all: bool,
    },
    /// Stop workers from fetching jobs of a queue.
    Pause {
        #[command(flatten)]
        redis: RedisArgs,
        queue: QueueName,
    },
    /// Let workers fetch jobs of a queue again.
    Resume {
        #[command(flatten)]
        redis: RedisArgs,
        queue: QueueName,
    },
    /// Delete a queue: its jobs in every state, counters, settings and its
    /// registry entry. Shows what it would delete unless --yes.
    Delete {
        #[command(flatten)]
        redis: RedisArgs,
        queue: QueueName,
        /// Delete even while jobs are active (leased to workers).
        #[arg(long)]
        force: bool,
        /// Really delete.
        #[arg(long)]
        yes: bool,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum StateArg {
    Waiting,
    Scheduled,
    Active,
    Completed,
    Dead,
}

impl From<StateArg> for JobState {
    fn from(state: StateArg) -> Self {
        match state {
            StateArg::Waiting => JobState::Waiting,
            StateArg::Scheduled => JobState::Scheduled,
            StateArg::Active => JobState::Active,
            StateArg::Completed => JobState::Completed,
            StateArg::Dead => JobState::Dead,
        }
    }
}

/// `plimsoll enqueue`.
#[derive(Debug, Args)]
pub struct EnqueueArgs {
    #[command(flatten)]
    redis: RedisArgs,
    /// The queue.
    queue: QueueName,
    /// The payload; `-` or nothing reads it from stdin.
    payload: Option<String>,
    /// Run no earlier than this from now (e.g. 30s, 5m).
    #[arg(long, value_parser = parse_duration)]
    delay: Option<Duration>,
    /// 0 (runs first) to 9.
    #[arg(long)]
    priority: Option<u8>,
    /// Runs before the job goes to the dead set.
    #[arg(long)]
    max_attempts: Option<u16>,
    /// Time one run may take (e.g. 30s).
    #[arg(long, value_parser = parse_duration)]
    timeout: Option<Duration>,
    /// Idempotency key: a duplicate within 24 h returns the first job's id.
    #[arg(long)]
    idempotency_key: Option<String>,
}

fn queue(redis: plimsoll::Redis, prefix: &str, name: &str) -> Result<Queue> {
    let config = QueueConfig {
        prefix: prefix.to_string(),
        ..QueueConfig::default()
    };
    Ok(Queue::new(redis, name, config)?)
}

pub async fn run(command: QueueCommand) -> Result<()> {
    match command {
        QueueCommand::List { redis, json } => {
            let conn = redis.connect().await?;
            let names = Queue::list(&conn, &redis.prefix).await?;
            let mut rows = Vec::new();
            for name in names {
                let q = queue(conn.clone(), &redis.prefix, name.as_str())?;
                rows.push((name, q.counts().await?, q.memory_bytes().await?));
            }
            if json {
                let value: Vec<_> = rows
                    .iter()
                    .map(|(name, counts, bytes)| {
                        serde_json::json!({"queue": name.as_str(), "counts": counts, "memory_bytes": bytes})
                    })
                    .collect();
                println!("{}", serde_json::to_string_pretty(&value)?);
            } else {
                println!(
                    "{:<24} {:>10} {:>10} {:>8} {:>8} {:>10} {:>10}",
                    "QUEUE", "WAITING", "SCHEDULED", "ACTIVE", "DEAD", "COMPLETED", "MEMORY"
                );
                for (name, c, bytes) in rows {
                    println!(
                        "{:<24} {:>10} {:>10} {:>8} {:>8} {:>10} {:>10}{}",
                        name.as_str(),
                        c.waiting,
                        c.scheduled,
                        c.active,
                        c.dead,
                        c.totals.completed,
                        human_bytes(bytes),
                        if c.paused { "  (paused)" } else { "" }
                    );
                }
            }
        }
        QueueCommand::Stats {
            redis,
            queue: name,
            json,
        } => {
            let q = queue(redis.connect().await?, &redis.prefix, name.as_str())?;
            let counts = q.counts().await?;
            let memory = q.memory_bytes().await?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(
                        &serde_json::json!({"queue": name.as_str(), "counts": counts, "memory_bytes": memory})
                    )?
                );
            } else {
                println!(
                    "queue {name}{}",
                    if counts.paused { " (paused)" } else { "" }
                );
                println!("  waiting     {}", counts.waiting);
                println!("  scheduled   {}", counts.scheduled);
                println!(
                    "  active      {} (workers: {})",
                    counts.active, counts.workers
                );
                println!(
                    "  dead        {} ({})",
                    counts.dead,
                    human_bytes(counts.dead_bytes)
                );
                println!(
                    "  completed   {} retained ({})",
                    counts.completed,
                    human_bytes(counts.completed_bytes)
                );
                println!("  memory      {}", human_bytes(memory));
                let t = &counts.totals;
                println!(
                    "  totals      enqueued {} · completed {} · retried {} · dead {} · cancelled {} · rescued {}",
                    t.enqueued, t.completed, t.retried, t.dead, t.cancelled, t.rescued
                );
            }
        }
        QueueCommand::Jobs {
            redis,
            queue: name,
            state,
            offset,
            limit,
            json,
        } => {
            let q = queue(redis.connect().await?, &redis.prefix, name.as_str())?;
            let jobs = q.jobs(state.into(), offset, limit).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&jobs)?);
            } else {
                for job in jobs {
                    print_job_line(&job);
                }
            }
        }
        QueueCommand::Job {
            redis,
            queue: name,
            id,
        } => {
            let q = queue(redis.connect().await?, &redis.prefix, name.as_str())?;
            let Some(job) = q.job(id).await? else {
                bail!("no job {id} in queue {name} (it may have finished and been removed)");
            };
            let mut value = serde_json::to_value(&job)?;
            value["payload"] = match serde_json::from_slice::<serde_json::Value>(&job.payload) {
                Ok(json) => json,
                Err(_) => serde_json::Value::String(String::from_utf8_lossy(&job.payload).into()),
            };
            println!("{}", serde_json::to_string_pretty(&value)?);
        }
        QueueCommand::Cancel {
            redis,
            queue: name,
            id,
        } => {
            let q = queue(redis.connect().await?, &redis.prefix, name.as_str())?;
            match q.cancel(id).await? {
                CancelOutcome::Cancelled(state) => println!("cancelled job {id} (was {state})"),
                CancelOutcome::AlreadyFinished(state) => {
                    bail!("job {id} already finished ({state}); nothing cancelled")
                }
                CancelOutcome::NotFound => bail!("no job {id} in queue {name}"),
            }
        }
        QueueCommand::RetryDead {
            redis,
            queue: name,
            ids,
            all,
        } => {
            let q = queue(redis.connect().await?, &redis.prefix, name.as_str())?;
            let selection = dead_selection(&ids, all)?;
            println!(
                "sent {} dead jobs back to run",
                q.retry_dead(selection).await?
            );
        }
        QueueCommand::PurgeDead {
            redis,
            queue: name,
            ids,
            all,
        } => {
            let q = queue(redis.connect().await?, &redis.prefix, name.as_str())?;
            let selection = dead_selection(&ids, all)?;
            println!("deleted {} dead jobs", q.purge_dead(selection).await?);
        }
        QueueCommand::Pause { redis, queue: name } => {
            queue(redis.connect().await?, &redis.prefix, name.as_str())?
                .pause()
                .await?;
            println!("paused {name}");
        }
        QueueCommand::Resume { redis, queue: name } => {
            queue(redis.connect().await?, &redis.prefix, name.as_str())?
                .resume()
                .await?;
            println!("resumed {name}");
        }
        QueueCommand::Delete {
            redis,
            queue: name,
            force,
            yes,
        } => {
            let q = queue(redis.connect().await?, &redis.prefix, name.as_str())?;
            if !yes {
                let c = q.counts().await?;
                println!(
                    "would delete queue {name}: {} waiting, {} scheduled, {} active, {} dead, {} completed retained, and its counters; pass --yes to delete",
                    c.waiting, c.scheduled, c.active, c.dead, c.completed
                );
                return Ok(());
            }
            let deleted = q.delete(force).await?;
            println!(
                "deleted queue {name}: {} jobs, {} keys",
                deleted.jobs, deleted.keys
            );
        }
    }
    Ok(())
}

fn dead_selection(ids: &[JobId], all: bool) -> Result<DeadSelection> {
    if all {
        return Ok(DeadSelection::All);
    }
    if ids.is_empty() {
        bail!("name the dead jobs by id, or pass --all");
    }
    Ok(DeadSelection::Ids(ids.to_vec()))
}

fn print_job_line(job: &JobInfo) {
    println!(
        "{:>10}  {:<9}  p{}  attempts {}/{}  {}{}",
        job.id,
        job.state,
        job.priority,
        job.attempts,
        job.max_attempts,
        human_bytes(job.stored_bytes as u64),
        job.last_error
            .as_deref()
            .map(|e| format!("  last error: {e}"))
            .unwrap_or_default()
    );
}

pub async fn enqueue(args: EnqueueArgs) -> Result<()> {
    let payload = match args.payload.as_deref() {
        Some("-") | None => {
            let mut buf = Vec::new();
            std::io::stdin()
                .read_to_end(&mut buf)
                .context("reading the payload from stdin")?;
            buf
        }
        Some(text) => text.as_bytes().to_vec(),
    };
    let mut job = NewJob::bytes(payload);
    if let Some(delay) = args.delay {
        job = job.delay(delay);
    }
    if let Some(priority) = args.priority {
        job = job.priority(priority);
    }
    if let Some(attempts) = args.max_attempts {
        job = job.max_attempts(attempts);
    }
    if let Some(timeout) = args.timeout {
        job = job.timeout(timeout);
    }
    if let Some(key) = args.idempotency_key {
        job = job.idempotency_key(key);
    }
    let q = queue(
        args.redis.connect().await?,
        &args.redis.prefix,
        args.queue.as_str(),
    )?;
    let enqueued = q.enqueue(job).await?;
    if enqueued.duplicate {
        println!(
            "{} (duplicate: the idempotency key was seen; nothing new enqueued)",
            enqueued.id
        );
    } else {
        println!("{}", enqueued.id);
    }
    Ok(())
}
