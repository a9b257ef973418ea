//! Trimming Celery's results of finished tasks by `date_done`; pending
//! and running tasks' entries are never touched.

use super::{
    BYTES_SAMPLE, Selection, TRIM_SCAN_COUNT, TrimOptions, TrimReport, mean_usage, unlink,
};
use crate::connection::Redis;
use crate::error::Result;
use crate::guard::attribute::pacer::Pacer;
use crate::guard::attribute::scan::{DEFAULT_BUSY_LATENCY, DEFAULT_KEYS_PER_SECOND};

/// Celery's result keys (the Redis backend's default key prefixes).
const CELERY_RESULT_GLOBS: [&str; 2] = ["celery-task-meta-*", "celery-taskset-meta-*"];
/// Task states after which a result no longer changes (Celery's
/// `READY_STATES`); PENDING, STARTED and RETRY are work in progress.
const CELERY_READY_STATES: [&str; 3] = ["SUCCESS", "FAILURE", "REVOKED"];

/// Celery's results in the Redis backend: one string of JSON per task (or
/// group), with `status` and `date_done`. They carry a TTL unless
/// `result_expires` is off (the setting that leaks). Each primary is walked
/// with `SCAN MATCH` at the family walk's pace; a result goes when its task
/// is done (`status` in [`CELERY_READY_STATES`]: a pending or running
/// task's entry is never touched) and `date_done` is older than the cutoff,
/// or beyond the newest `keep`. A result whose JSON or date cannot be read
/// is kept and counted as skipped.
pub(super) async fn trim(
    redis: &Redis,
    selection: Selection,
    options: &TrimOptions,
    report: &mut TrimReport,
) -> Result<()> {
    let cutoff_secs = selection
        .older_than
        .map(|age| options.clock.now_ms().saturating_sub(crate::clock::ms(age)) as f64 / 1000.0);
    let primaries = redis.primaries().await?;
    // (date_done, key, node index) of each done task.
    let mut results: Vec<(f64, String, usize)> = Vec::new();
    for (index, primary) in primaries.iter().enumerate() {
        let mut pacer = Pacer::new(options.budget, DEFAULT_BUSY_LATENCY);
        let mut walk = Pacer::new(DEFAULT_KEYS_PER_SECOND, DEFAULT_BUSY_LATENCY);
        for glob in CELERY_RESULT_GLOBS {
            let mut cursor = 0u64;
            loop {
                walk.take(u64::from(TRIM_SCAN_COUNT)).await;
                pacer.take(1).await;
                let (next, keys): (u64, Vec<String>) = primary
                    .redis
                    .query(
                        redis::cmd("SCAN")
                            .arg(cursor)
                            .arg("MATCH")
                            .arg(glob)
                            .arg("COUNT")
                            .arg(TRIM_SCAN_COUNT),
                    )
                    .await?;
                if !keys.is_empty() {
                    pacer.take(keys.len() as u64).await;
                    let mut pipe = redis::pipe();
                    for key in &keys {
                        pipe.cmd("GET").arg(key);
                    }
                    let mut conn = primary.redis.clone();
                    let values: Vec<Option<String>> = pipe.query_async(&mut conn).await?;
                    for (key, value) in keys.into_iter().zip(values) {
                        let Some(value) = value else { continue }; // expired meanwhile
                        match celery_done_at(&value) {
                            Some(done) => results.push((done, key, index)),
                            None => {
                                report.skipped += 1;
                                if report.skipped_examples.len() < 10 {
                                    report.skipped_examples.push(key);
                                }
                            }
                        }
                    }
                }
                cursor = next;
                if cursor == 0 {
                    break;
                }
            }
        }
        report.commands += pacer.commands;
    }
    // Oldest first.
    results.sort_by(|a, b| a.0.total_cmp(&b.0).then_with(|| a.1.cmp(&b.1)));
    let by_count = selection
        .keep
        .map_or(0, |keep| results.len().saturating_sub(keep as usize));
    let by_age = cutoff_secs.map_or(0, |cutoff| {
        results.iter().take_while(|r| r.0 < cutoff).count()
    });
    let going = &results[..by_count.max(by_age)];
    report.keys = going.len() as u64;
    report.examples = going.iter().take(10).map(|r| r.1.clone()).collect();
    // Measured as the memory report measures keys, on their nodes.
    let (mut sampled, mut sampled_bytes) = (0usize, 0.0);
    for (index, primary) in primaries.iter().enumerate() {
        let sample: Vec<String> = going
            .iter()
            .filter(|r| r.2 == index)
            .take(BYTES_SAMPLE)
            .map(|r| r.1.clone())
            .collect();
        sampled_bytes += mean_usage(&primary.redis, &sample).await? * sample.len() as f64;
        sampled += sample.len();
    }
    if sampled > 0 {
        report.bytes_estimated = (sampled_bytes / sampled as f64 * going.len() as f64) as u64;
    }
    if !options.apply {
        return Ok(());
    }
    let mut removed = 0u64;
    for (index, primary) in primaries.iter().enumerate() {
        let mut pacer = Pacer::new(options.budget, DEFAULT_BUSY_LATENCY);
        let keys: Vec<&String> = going
            .iter()
            .filter(|r| r.2 == index)
            .map(|r| &r.1)
            .collect();
        for chunk in keys.chunks(options.batch) {
            pacer.take(chunk.len() as u64).await;
            removed += unlink(&primary.redis, chunk, false).await?;
            report.batches += 1;
        }
        report.commands += pacer.commands;
    }
    report.keys = removed;
    Ok(())
}

/// When a Celery result's task finished (`date_done`, UTC, with or
/// without `+00:00`), if its state is final; None otherwise.
fn celery_done_at(value: &str) -> Option<f64> {
    let json: serde_json::Value = serde_json::from_str(value).ok()?;
    let status = json.get("status")?.as_str()?;
    if !CELERY_READY_STATES.contains(&status) {
        return None;
    }
    let date = json.get("date_done")?.as_str()?;
    let date = date
        .strip_suffix("+00:00")
        .or_else(|| date.strip_suffix('Z'))
        .unwrap_or(date);
    let at = humantime::parse_rfc3339_weak(date).ok()?;
    Some(at.duration_since(std::time::UNIX_EPOCH).ok()?.as_secs_f64())
}
