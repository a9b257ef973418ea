//! Trimming an RQ queue's finished or failed registry by when each job
//! ended, with the job hashes, result streams and dependency sets.

use super::{BYTES_SAMPLE, Selection, TrimOptions, TrimReport, each, mean_usage, unlink};
use crate::connection::Redis;
use crate::error::Result;
use crate::guard::attribute::pacer::Pacer;

/// RQ's registries of finished work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RqRegistry {
    /// `rq:finished:<queue>`: jobs that succeeded.
    Finished,
    /// `rq:failed:<queue>`: jobs that failed for good.
    Failed,
}

impl RqRegistry {
    pub(super) fn name(self) -> &'static str {
        match self {
            RqRegistry::Finished => "finished",
            RqRegistry::Failed => "failed",
        }
    }
}

/// Keys RQ keeps per job besides its hash `rq:job:<id>`.
const RQ_JOB_KEYS: [&str; 3] = [
    "rq:results:{}",
    "rq:job:{}:dependents",
    "rq:job:{}:dependencies",
];

/// An RQ registry of finished or failed jobs. Its scores are when RQ means
/// to expire each entry (`+inf` with `result_ttl=-1`, the setting that
/// leaks), so they say nothing of age: a job is as old as its hash's
/// `ended_at`. The registry is walked with `ZSCAN`; each job's `status` and
/// `ended_at` are read (`HMGET`, pipelined), and only jobs whose status is
/// still the registry's are candidates, so a job requeued from the failed
/// registry is never touched; a job without `ended_at` is kept and counted
/// as skipped. Before each batch is removed its status is
/// read again. A job goes with its hash, result stream and dependency
/// sets, then its id leaves the registry.
#[allow(clippy::too_many_arguments)]
pub(super) async fn trim(
    redis: &Redis,
    queue: &str,
    registry: RqRegistry,
    selection: Selection,
    options: &TrimOptions,
    pacer: &mut Pacer,
    report: &mut TrimReport,
) -> Result<()> {
    let key = format!("rq:{}:{queue}", registry.name());
    let status = registry.name();
    let cutoff_secs = selection
        .older_than
        .map(|age| options.clock.now_ms().saturating_sub(crate::clock::ms(age)) as f64 / 1000.0);
    // (ended_at, id) of every job of the registry in its state.
    let mut jobs: Vec<(f64, String)> = Vec::new();
    let mut cursor = 0u64;
    loop {
        pacer.take(1).await;
        let (next, members): (u64, Vec<String>) = redis
            .query(
                redis::cmd("ZSCAN")
                    .arg(&key)
                    .arg(cursor)
                    .arg("COUNT")
                    .arg(options.batch),
            )
            .await?;
        let ids: Vec<String> = members.into_iter().step_by(2).collect();
        pacer.take(ids.len() as u64).await;
        let cmds = ids
            .iter()
            .map(|id| {
                let mut cmd = redis::cmd("HMGET");
                cmd.arg(format!("rq:job:{id}"))
                    .arg("status")
                    .arg("ended_at");
                cmd
            })
            .collect();
        let fields: Vec<(Option<String>, Option<String>)> = each(redis, cmds).await?;
        for (id, (job_status, ended_at)) in ids.into_iter().zip(fields) {
            if job_status.as_deref() != Some(status) {
                continue;
            }
            let ended = ended_at
                .as_deref()
                .and_then(|t| humantime::parse_rfc3339_weak(t.trim_end_matches('Z')).ok())
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok());
            match ended {
                Some(ended) => jobs.push((ended.as_secs_f64(), id)),
                // No age to go by: kept, and counted as skipped.
                None => {
                    report.skipped += 1;
                    if report.skipped_examples.len() < 10 {
                        report
                            .skipped_examples
                            .push(format!("rq:job:{id} (no ended_at)"));
                    }
                }
            }
        }
        cursor = next;
        if cursor == 0 {
            break;
        }
    }
    // ZSCAN may return a member twice.
    jobs.sort_by(|a, b| a.0.total_cmp(&b.0).then_with(|| a.1.cmp(&b.1)));
    jobs.dedup_by(|a, b| a.1 == b.1);
    let by_count = selection
        .keep
        .map_or(0, |keep| (jobs.len() as u64).saturating_sub(keep));
    let by_age = cutoff_secs.map_or(0, |cutoff| {
        jobs.iter().take_while(|j| j.0 < cutoff).count() as u64
    });
    let to_remove = by_count.max(by_age) as usize;
    let going: Vec<String> = jobs.into_iter().take(to_remove).map(|(_, id)| id).collect();
    report.examples = going
        .iter()
        .take(10)
        .map(|id| format!("rq:job:{id}"))
        .collect();
    let sample: Vec<String> = going
        .iter()
        .take(BYTES_SAMPLE)
        .map(|id| format!("rq:job:{id}"))
        .collect();
    let results: Vec<String> = going
        .iter()
        .take(BYTES_SAMPLE)
        .map(|id| format!("rq:results:{id}"))
        .collect();
    pacer.take(2 * sample.len() as u64).await;
    let per_job = mean_usage(redis, &sample).await? + mean_usage(redis, &results).await?;
    report.bytes_estimated = (per_job * going.len() as f64) as u64;
    report.jobs = going.len() as u64;
    if !options.apply {
        return Ok(());
    }
    let mut removed = 0u64;
    for batch in going.chunks(options.batch) {
        // Still in the registry's state: RQ may have requeued one meanwhile.
        pacer.take(batch.len() as u64).await;
        let cmds = batch
            .iter()
            .map(|id| {
                let mut cmd = redis::cmd("HGET");
                cmd.arg(format!("rq:job:{id}")).arg("status");
                cmd
            })
            .collect();
        let statuses: Vec<Option<String>> = each(redis, cmds).await?;
        let ids: Vec<&String> = batch
            .iter()
            .zip(statuses)
            .filter(|(_, s)| s.as_deref() == Some(status))
            .map(|(id, _)| id)
            .collect();
        if ids.is_empty() {
            continue;
        }
        let keys: Vec<String> = ids
            .iter()
            .flat_map(|id| {
                std::iter::once(format!("rq:job:{id}"))
                    .chain(RQ_JOB_KEYS.iter().map(move |k| k.replace("{}", id)))
            })
            .collect();
        pacer.take(ids.len() as u64 + 1).await;
        // Keys first, then the ids: a crash in between leaves ids whose jobs
        // are gone, which RQ's own cleanup removes.
        // RQ has no cluster support, so its keys share no hash tag.
        report.keys += unlink(redis, &keys, !redis.is_cluster()).await?;
        let gone: u64 = redis.query(redis::cmd("ZREM").arg(&key).arg(&ids)).await?;
        removed += gone;
        report.batches += 1;
    }
    report.jobs = removed;
    Ok(())
}
