//! Trimming a Plimsoll queue by its retention rules, with the janitor's
//! own script, so a trim by hand and the janitor remove the same jobs.

use std::collections::BTreeMap;

use super::{TrimOptions, TrimReport};
use crate::connection::Redis;
use crate::error::Result;
use crate::queue::{Queue, QueueConfig, Retention};

pub(super) async fn trim(
    redis: &Redis,
    prefix: &str,
    queue: &str,
    retention: Retention,
    options: &TrimOptions,
    report: &mut TrimReport,
) -> Result<()> {
    let config = QueueConfig {
        prefix: prefix.to_string(),
        retention,
        clock: options.clock.clone(),
        ..QueueConfig::default()
    };
    let queue = Queue::new(redis.clone(), queue, config)?;
    let keys = queue.keys().clone();
    let now = options.clock.now_ms();
    let stats: BTreeMap<String, u64> = redis.query(redis::cmd("HGETALL").arg(keys.stats())).await?;
    let mut jobs = 0u64;
    let mut bytes = 0u64;
    for (set, bounds, field) in [
        (
            keys.completed(),
            retention.completed_args(),
            "completed_bytes",
        ),
        (keys.dead(), retention.dead_args(), "dead_bytes"),
    ] {
        let card: u64 = redis.query(redis::cmd("ZCARD").arg(set)).await?;
        if card == 0 {
            continue;
        }
        let [max_count, max_age, max_bytes] = bounds;
        let set_bytes = stats.get(field).copied().unwrap_or(0);
        let old: u64 = if max_count == 0 {
            card
        } else {
            redis
                .query(
                    redis::cmd("ZCOUNT")
                        .arg(set)
                        .arg("-inf")
                        .arg(format!("({}", now.saturating_sub(max_age))),
                )
                .await?
        };
        let over_bytes = if max_count == 0 || set_bytes <= max_bytes {
            0
        } else {
            ((set_bytes - max_bytes) as f64 / set_bytes as f64 * card as f64).ceil() as u64
        };
        let n = card
            .saturating_sub(max_count)
            .max(old)
            .max(over_bytes)
            .min(card);
        jobs += n;
        bytes += (set_bytes as f64 * n as f64 / card as f64) as u64;
    }
    report.jobs = jobs;
    report.bytes_estimated = bytes;
    report.examples = vec![keys.completed().to_string(), keys.dead().to_string()];
    if !options.apply {
        return Ok(());
    }
    let mut removed = 0;
    loop {
        let budget = options.batch.min(10_000);
        let trimmed = queue.trim_retained(budget).await?;
        report.batches += 1;
        report.commands += 1;
        removed += trimmed.total();
        if trimmed.total() == 0 {
            break;
        }
    }
    report.jobs = removed;
    Ok(())
}
