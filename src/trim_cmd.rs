//! `plimsoll trim`: reclaim memory from one bloated family, in bounded
//! batches. A dry run unless `--yes`.

use std::time::Duration;

use anyhow::Result;
use clap::{Args, Subcommand, ValueEnum};
use plimsoll::guard::trim::{DEFAULT_TRIM_BATCH, trim};
use plimsoll::{
    BullMqSet, Retention, RqRegistry, Selection, SidekiqSet, TrimOptions, TrimReport, TrimTarget,
};

use crate::util::{RedisArgs, human_bytes, parse_duration};

/// What to trim.
#[derive(Debug, Subcommand)]
pub enum TrimCommand {
    /// A Plimsoll queue, by its own retention rules as its workers (or
    /// `plimsoll serve`) recorded them in Redis; by the defaults (completed
    /// jobs removed, dead jobs capped at 10,000, 7 days, 64 MiB) when none
    /// were recorded.
    Plimsoll {
        #[command(flatten)]
        common: Common,
        /// The queue.
        queue: String,
    },
    /// A BullMQ queue's completed or failed jobs, with their job hashes.
    Bullmq {
        #[command(flatten)]
        common: Common,
        /// The queue.
        queue: String,
        /// Which set.
        #[arg(long, value_enum)]
        set: BullSetArg,
        /// BullMQ's prefix option.
        #[arg(long, default_value = "bull")]
        bullmq_prefix: String,
        #[command(flatten)]
        selection: SelectionArgs,
    },
    /// Sidekiq's dead set (by when jobs died) or retry set (by when they first
    /// failed: --older-than only, the set being ordered by next retry).
    Sidekiq {
        #[command(flatten)]
        common: Common,
        /// Which set.
        #[arg(value_enum)]
        set: SidekiqSetArg,
        /// redis-namespace, if Sidekiq uses one.
        #[arg(long)]
        namespace: Option<String>,
        #[command(flatten)]
        selection: SelectionArgs,
    },
    /// An RQ queue's finished or failed jobs (by when they ended), with
    /// their job hashes and results; jobs requeued meanwhile are kept.
    Rq {
        #[command(flatten)]
        common: Common,
        /// The queue.
        queue: String,
        /// Which registry.
        #[arg(long, value_enum)]
        registry: RqRegistryArg,
        #[command(flatten)]
        selection: SelectionArgs,
    },
    /// Celery's task and group results of finished tasks (SUCCESS,
    /// FAILURE, REVOKED), by date_done; pending and running tasks are kept.
    Celery {
        #[command(flatten)]
        common: Common,
        /// What to trim (results).
        #[arg(value_enum)]
        what: CeleryWhatArg,
        #[command(flatten)]
        selection: SelectionArgs,
    },
    /// Keys of one family from `plimsoll memory`, e.g. 'session:<uuid>'.
    Family {
        #[command(flatten)]
        common: Common,
        /// The family's pattern, as `plimsoll memory` prints it.
        pattern: String,
        #[command(flatten)]
        selection: SelectionArgs,
    },
}

/// Options every target takes.
#[derive(Debug, Args)]
pub struct Common {
    #[command(flatten)]
    redis: RedisArgs,
    /// Remove for real. Without it, only count and estimate.
    #[arg(long)]
    yes: bool,
    /// Members or keys per batch.
    #[arg(long, default_value_t = DEFAULT_TRIM_BATCH)]
    batch: usize,
    /// Commands per second per node.
    #[arg(long, default_value_t = plimsoll::guard::attribute::scan::DEFAULT_COMMAND_BUDGET)]
    budget: u32,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

/// Which jobs or keys go.
#[derive(Debug, Args)]
pub struct SelectionArgs {
    /// Keep the newest (most recently used) N.
    #[arg(long)]
    keep: Option<u64>,
    /// Remove those older than this (generic keys: not touched for this).
    #[arg(long, value_parser = parse_duration)]
    older_than: Option<Duration>,
}

impl SelectionArgs {
    fn selection(&self) -> Selection {
        Selection {
            keep: self.keep,
            older_than: self.older_than,
        }
    }
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum BullSetArg {
    Completed,
    Failed,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum CeleryWhatArg {
    /// celery-task-meta-<id> and celery-taskset-meta-<id>.
    Results,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum RqRegistryArg {
    Finished,
    Failed,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum SidekiqSetArg {
    Dead,
    Retry,
}

pub async fn run(command: TrimCommand) -> Result<()> {
    let (common, target) = match command {
        TrimCommand::Plimsoll { common, queue } => {
            let redis = common.redis.connect().await?;
            let handle = plimsoll::Queue::new(
                redis,
                &queue,
                plimsoll::QueueConfig {
                    prefix: common.redis.prefix.clone(),
                    ..plimsoll::QueueConfig::default()
                },
            )?;
            let retention = match handle.recorded_retention().await? {
                Some(retention) => retention,
                None => {
                    eprintln!(
                        "No retention rules are recorded for queue {queue} (no worker of this \
                         version ran it); trimming by the defaults."
                    );
                    Retention::default()
                }
            };
            let target = TrimTarget::Plimsoll {
                prefix: common.redis.prefix.clone(),
                queue,
                retention,
            };
            (common, target)
        }
        TrimCommand::Bullmq {
            common,
            queue,
            set,
            bullmq_prefix,
            selection,
        } => (
            common,
            TrimTarget::BullMq {
                prefix: bullmq_prefix,
                queue,
                set: match set {
                    BullSetArg::Completed => BullMqSet::Completed,
                    BullSetArg::Failed => BullMqSet::Failed,
                },
                selection: selection.selection(),
            },
        ),
        TrimCommand::Sidekiq {
            common,
            set,
            namespace,
            selection,
        } => (
            common,
            TrimTarget::Sidekiq {
                namespace,
                set: match set {
                    SidekiqSetArg::Dead => SidekiqSet::Dead,
                    SidekiqSetArg::Retry => SidekiqSet::Retry,
                },
                selection: selection.selection(),
            },
        ),
        TrimCommand::Rq {
            common,
            queue,
            registry,
            selection,
        } => (
            common,
            TrimTarget::Rq {
                queue,
                registry: match registry {
                    RqRegistryArg::Finished => RqRegistry::Finished,
                    RqRegistryArg::Failed => RqRegistry::Failed,
                },
                selection: selection.selection(),
            },
        ),
        TrimCommand::Celery {
            common,
            what: CeleryWhatArg::Results,
            selection,
        } => (
            common,
            TrimTarget::CeleryResults {
                selection: selection.selection(),
            },
        ),
        TrimCommand::Family {
            common,
            pattern,
            selection,
        } => (
            common,
            TrimTarget::Family {
                pattern,
                selection: selection.selection(),
            },
        ),
    };
    let redis = common.redis.connect().await?;
    let options = TrimOptions {
        apply: common.yes,
        batch: common.batch,
        budget: common.budget,
        plimsoll_prefix: common.redis.prefix.clone(),
        ..TrimOptions::default()
    };
    let report = trim(&redis, &target, &options).await?;
    if common.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", human(&report));
    }
    Ok(())
}

fn human(report: &TrimReport) -> String {
    let mut out = String::new();
    let what = if report.jobs > 0 && report.keys > 0 {
        format!("{} jobs ({} keys)", report.jobs, report.keys)
    } else if report.jobs > 0 {
        format!("{} jobs", report.jobs)
    } else {
        format!("{} keys", report.keys)
    };
    if report.applied {
        out.push_str(&format!(
            "Removed {what} of {} in {} batches, {:.1} s; about {} freed \
             (used_memory {} -> {}).\n",
            report.target,
            report.batches,
            report.duration_secs,
            human_bytes(report.bytes_estimated),
            human_bytes(report.used_memory_before),
            human_bytes(report.used_memory_after),
        ));
    } else {
        out.push_str(&format!(
            "Dry run: would remove {what} of {}, about {}.\n",
            report.target,
            human_bytes(report.bytes_estimated)
        ));
        if !report.examples.is_empty() {
            out.push_str("For example:\n");
            for example in &report.examples {
                out.push_str(&format!("  {example}\n"));
            }
        }
        out.push_str("Nothing was removed; run again with --yes to remove them.\n");
    }
    if report.skipped > 0 {
        out.push_str(&format!(
            "Skipped {} keys that match the pattern but belong to a queue; they were not \
             touched (trim them with the queue's own target: plimsoll, bullmq, sidekiq):\n",
            report.skipped
        ));
        for example in &report.skipped_examples {
            out.push_str(&format!("  {example}\n"));
        }
    }
    out
}
