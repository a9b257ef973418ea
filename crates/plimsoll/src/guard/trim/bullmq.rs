//! Trimming a BullMQ queue's completed or failed set together with the
//! job keys behind each id, oldest first, in batches that ask the set
//! again each time (BullMQ trims it too).

use super::{
    BYTES_SAMPLE, Selection, TrimOptions, TrimReport, mean_usage, members_to_remove, unlink,
    zset_excess,
};
use crate::connection::Redis;
use crate::error::Result;
use crate::guard::attribute::pacer::Pacer;

/// The keys of a BullMQ job besides its hash.
const BULLMQ_JOB_SUFFIXES: [&str; 5] = [
    ":logs",
    ":dependencies",
    ":processed",
    ":failed",
    ":unsuccessful",
];

/// BullMQ's sets of finished jobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BullMqSet {
    /// `bull:<queue>:completed`.
    Completed,
    /// `bull:<queue>:failed`.
    Failed,
}

pub(super) fn set_name(set: BullMqSet) -> &'static str {
    match set {
        BullMqSet::Completed => "completed",
        BullMqSet::Failed => "failed",
    }
}

#[allow(clippy::too_many_arguments)]
pub(super) async fn trim(
    redis: &Redis,
    prefix: &str,
    queue: &str,
    set: BullMqSet,
    selection: Selection,
    options: &TrimOptions,
    pacer: &mut Pacer,
    report: &mut TrimReport,
) -> Result<()> {
    let base = format!("{prefix}:{queue}");
    let zkey = format!("{base}:{}", set_name(set));
    // Scores are finishedOn, ms since the epoch.
    let cutoff = selection
        .older_than
        .map(|age| options.clock.now_ms().saturating_sub(crate::clock::ms(age)) as f64);
    pacer.take(2).await;
    let excess = zset_excess(redis, &zkey, selection, cutoff).await?;
    let (card, to_remove) = (excess.card, excess.remove());
    // Estimate from the oldest jobs, which are the ones that go.
    let sample: Vec<String> = redis
        .query(
            redis::cmd("ZRANGE")
                .arg(&zkey)
                .arg(0)
                .arg(to_remove.min(BYTES_SAMPLE as u64) as i64 - 1),
        )
        .await?;
    report.examples = sample
        .iter()
        .take(10)
        .map(|id| format!("{base}:{id}"))
        .collect();
    let job_keys: Vec<String> = sample.iter().map(|id| format!("{base}:{id}")).collect();
    let log_keys: Vec<String> = sample
        .iter()
        .map(|id| format!("{base}:{id}:logs"))
        .collect();
    pacer.take(2 * sample.len() as u64 + 2).await;
    let per_job = mean_usage(redis, &job_keys).await? + mean_usage(redis, &log_keys).await?;
    let set_bytes = mean_usage(redis, std::slice::from_ref(&zkey)).await?;
    let set_share = if card > 0 {
        set_bytes * to_remove as f64 / card as f64
    } else {
        0.0
    };
    report.bytes_estimated = (per_job * to_remove as f64 + set_share) as u64;
    report.jobs = to_remove;
    if !options.apply {
        return Ok(());
    }
    // On a cluster BullMQ's keys of one queue share a slot only through a
    // hash tag in its prefix (which BullMQ needs there): then one UNLINK
    // takes a whole batch, else one per key.
    let one_slot = !redis.is_cluster() || (prefix.contains('{') && prefix.contains('}'));
    let mut removed = 0u64;
    // At most what the dry run counted: jobs that age past the cutoff
    // while the trim runs are left for the next one.
    while removed < to_remove {
        let limit = (to_remove - removed).min(options.batch as u64);
        let ids = members_to_remove(redis, &zkey, selection, cutoff, limit, pacer).await?;
        if ids.is_empty() {
            break;
        }
        let keys: Vec<String> = ids
            .iter()
            .flat_map(|id| {
                let job = format!("{base}:{id}");
                [""].into_iter()
                    .chain(BULLMQ_JOB_SUFFIXES)
                    .map(move |suffix| format!("{job}{suffix}"))
            })
            .collect();
        // A job's six keys cost Redis about one command (a lookup each,
        // most of them absent): the budget is charged per job.
        pacer.take(ids.len() as u64 + 1).await;
        // Keys first, then the ids: a crash in between leaves ids whose
        // hashes are gone, which BullMQ tolerates, never hashes nobody lists.
        report.keys += unlink(redis, &keys, one_slot).await?;
        let gone: u64 = redis.query(redis::cmd("ZREM").arg(&zkey).arg(&ids)).await?;
        removed += gone;
        report.batches += 1;
        if gone == 0 {
            break;
        }
    }
    report.jobs = removed;
    Ok(())
}
