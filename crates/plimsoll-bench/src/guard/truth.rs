//! G1's truth: `MEMORY USAGE … SAMPLES 0` of every key, by family, the
//! way the report names families (never the report's own estimator).

use std::collections::BTreeMap;

use crate::error::Result;
use plimsoll::Redis;
use plimsoll::guard::attribute::{Classifier, Layout, Role};

/// The exact truth of one node, by family: `MEMORY USAGE key SAMPLES 0`
/// of every key (never a sampled pass). BullMQ job hashes and logs are
/// grouped by the state their id is listed in (`ZSCORE` in the completed
/// and failed sets), as the report names them.
pub(super) async fn full_pass(redis: &Redis) -> Result<BTreeMap<String, f64>> {
    let classifier = Classifier::default();
    let mut out: BTreeMap<String, f64> = BTreeMap::new();
    let mut cursor = 0u64;
    loop {
        let (next, keys): (u64, Vec<Vec<u8>>) = redis
            .query(redis::cmd("SCAN").arg(cursor).arg("COUNT").arg(5000))
            .await?;
        let mut pipe = redis::pipe();
        // On a cluster a job's sets may sit on another node (without a hash
        // tag): the lookup fails and the key counts under its own pattern.
        pipe.ignore_errors();
        let families: Vec<_> = keys.iter().map(|key| classifier.classify(key)).collect();
        for (key, family) in keys.iter().zip(&families) {
            pipe.cmd("MEMORY")
                .arg("USAGE")
                .arg(key)
                .arg("SAMPLES")
                .arg(0);
            let job = bullmq_job_of(key, family);
            for set in ["completed", "failed"] {
                match &job {
                    Some((base, id)) => pipe.cmd("ZSCORE").arg(format!("{base}:{set}")).arg(id),
                    None => pipe.cmd("ECHO").arg(""),
                };
            }
        }
        let mut conn = redis.clone();
        let replies: Vec<redis::Value> = pipe.query_async(&mut conn).await?;
        for ((key, family), reply) in keys.iter().zip(&families).zip(replies.chunks(3)) {
            let bytes = match reply[0] {
                redis::Value::Int(n) => n as f64,
                _ => 0.0,
            };
            let listed = |v: &redis::Value| {
                matches!(v, redis::Value::BulkString(b) if !b.is_empty())
                    || matches!(v, redis::Value::Double(_))
            };
            let group = match bullmq_job_of(key, family) {
                Some((base, _)) if listed(&reply[1]) => format!("{base}:completed"),
                Some((base, _)) if listed(&reply[2]) => format!("{base}:failed"),
                _ => family.pattern.clone(),
            };
            *out.entry(group).or_default() += bytes;
        }
        cursor = next;
        if cursor == 0 {
            return Ok(out);
        }
    }
}

/// `(bull:<queue>, id)` of a BullMQ job hash or log key.
pub(super) fn bullmq_job_of(
    key: &[u8],
    family: &plimsoll::guard::attribute::Family,
) -> Option<(String, String)> {
    if family.layout != Layout::BullMq || !matches!(family.role, Role::JobHashes | Role::JobLogs) {
        return None;
    }
    let base = format!("{}:{}", family.prefix.as_deref()?, family.queue.as_deref()?);
    let rest = std::str::from_utf8(key)
        .ok()?
        .strip_prefix(&base)?
        .strip_prefix(':')?;
    let id = rest.strip_suffix(":logs").unwrap_or(rest);
    Some((base, id.to_string()))
}
