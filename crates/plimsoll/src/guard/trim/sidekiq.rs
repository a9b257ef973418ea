//! Trimming Sidekiq's dead set (its members are the jobs, scored by when
//! they died) and its retry set (scored by the next retry, so aged by each
//! job's first failure).

use super::{Selection, TrimOptions, TrimReport, mean_usage, members_to_remove, zset_excess};
use crate::connection::Redis;
use crate::error::{Error, Result};
use crate::guard::attribute::pacer::Pacer;

/// Sidekiq's sorted sets of jobs that are not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SidekiqSet {
    /// `dead`: jobs out of retries.
    Dead,
    /// `retry`: jobs waiting for a retry.
    Retry,
}

pub(super) fn set_name(set: SidekiqSet) -> &'static str {
    match set {
        SidekiqSet::Dead => "dead",
        SidekiqSet::Retry => "retry",
    }
}

pub(super) fn set_key(namespace: Option<&str>, set: SidekiqSet) -> String {
    match namespace {
        Some(ns) => format!("{ns}:{}", set_name(set)),
        None => set_name(set).to_string(),
    }
}

pub(super) async fn trim(
    redis: &Redis,
    key: &str,
    set: SidekiqSet,
    selection: Selection,
    options: &TrimOptions,
    pacer: &mut Pacer,
    report: &mut TrimReport,
) -> Result<()> {
    report.examples = vec![key.to_string()];
    if set == SidekiqSet::Retry {
        return retry_by_age(redis, key, selection, options, pacer, report).await;
    }
    // The dead set is scored by when each job died, epoch seconds.
    let cutoff = selection
        .older_than
        .map(|age| options.clock.now_ms().saturating_sub(crate::clock::ms(age)) as f64 / 1000.0);
    pacer.take(3).await;
    let excess = zset_excess(redis, key, selection, cutoff).await?;
    let to_remove = excess.remove();
    let set_bytes = mean_usage(redis, &[key.to_string()]).await?;
    report.bytes_estimated = share_of(set_bytes, to_remove, excess.card);
    report.jobs = to_remove;
    if !options.apply {
        return Ok(());
    }
    let mut removed = 0u64;
    while removed < to_remove {
        let limit = (to_remove - removed).min(options.batch as u64);
        let jobs = members_to_remove(redis, key, selection, cutoff, limit, pacer).await?;
        if jobs.is_empty() {
            break;
        }
        pacer.take(1).await;
        let gone: u64 = redis.query(redis::cmd("ZREM").arg(key).arg(&jobs)).await?;
        removed += gone;
        report.batches += 1;
        if gone == 0 {
            break;
        }
    }
    report.jobs = removed;
    Ok(())
}

/// `bytes × part / whole` (0 for an empty whole).
fn share_of(bytes: f64, part: u64, whole: u64) -> u64 {
    if whole == 0 {
        0
    } else {
        (bytes * part as f64 / whole as f64) as u64
    }
}

/// Sidekiq's retry set is scored by each job's *next* retry, so neither its
/// order nor its scores say how old a job is: a job is as old as its first
/// failure, `failed_at` in its JSON. The set is walked with `ZSCAN` (safe
/// while members go), and the jobs that first failed before the cutoff are
/// removed in batches; `--keep` has no oldest to pick here and is refused.
async fn retry_by_age(
    redis: &Redis,
    key: &str,
    selection: Selection,
    options: &TrimOptions,
    pacer: &mut Pacer,
    report: &mut TrimReport,
) -> Result<()> {
    if selection.keep.is_some() {
        return Err(Error::invalid(
            "Sidekiq's retry set is ordered by each job's next retry, not by age, so --keep \
             cannot pick the oldest jobs there; use --older-than (by the job's first failure)",
        ));
    }
    let Some(age) = selection.older_than else {
        return Err(Error::invalid("trim sidekiq retry needs --older-than"));
    };
    let cutoff_secs = options.clock.now_ms().saturating_sub(crate::clock::ms(age)) as f64 / 1000.0;
    pacer.take(2).await;
    let card: u64 = redis.query(redis::cmd("ZCARD").arg(key)).await?;
    let set_bytes = mean_usage(redis, &[key.to_string()]).await?;
    let mut cursor = 0u64;
    let mut matched = 0u64;
    let mut removed = 0u64;
    loop {
        pacer.take(1).await;
        let (next, members): (u64, Vec<String>) = redis
            .query(
                redis::cmd("ZSCAN")
                    .arg(key)
                    .arg(cursor)
                    .arg("COUNT")
                    .arg(options.batch),
            )
            .await?;
        // ZSCAN answers member, score, member, score…
        let old: Vec<&String> = members
            .iter()
            .step_by(2)
            .filter(|job| first_failed_at(job).is_some_and(|t| t < cutoff_secs))
            .collect();
        matched += old.len() as u64;
        if options.apply && !old.is_empty() {
            pacer.take(1).await;
            let gone: u64 = redis.query(redis::cmd("ZREM").arg(key).arg(&old)).await?;
            removed += gone;
            report.batches += 1;
        }
        cursor = next;
        if cursor == 0 {
            break;
        }
    }
    // ZSCAN may return a member twice; what was removed is exact.
    report.jobs = if options.apply { removed } else { matched };
    report.bytes_estimated = share_of(set_bytes, report.jobs, card);
    Ok(())
}

/// When a Sidekiq job first failed (`failed_at`, epoch seconds), from its
/// JSON; None for a member that is not a Sidekiq job (it is kept).
fn first_failed_at(job: &str) -> Option<f64> {
    let value: serde_json::Value = serde_json::from_str(job).ok()?;
    value.get("failed_at")?.as_f64()
}
