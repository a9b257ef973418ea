//! Measuring keys as Redis counts them, exactly wherever that is affordable.
//!
//! `MEMORY USAGE key` without `SAMPLES` estimates an aggregate from five of
//! its elements, taken in the order of its dict. For keys with the same
//! field names that is the same five fields in every key of one Redis
//! process: on a Redis of completed BullMQ jobs (a 1 KiB `data` field among
//! ten small ones) the family came out 57% low in one process and 70% high
//! in the next, and no sampling of keys can average that away.
//!
//! Here a key is measured with `MEMORY USAGE key SAMPLES n`, where
//! `n` = [`DEFAULT_EXACT_ELEMENTS`]: Redis walks at most `n` elements (list
//! nodes, stream nodes), stopping early at the end of a smaller key, so the
//! call costs at most `n` element visits (about 1 ms at 20,000) and is
//! exact for every aggregate of up to `n` elements and for every string and
//! compact encoding (listpack, intset: one allocation). Which keys were
//! exact is known from their encoding (`OBJECT ENCODING`) or, for the big
//! encodings (hashtable, skiplist, quicklist, stream), from their length,
//! asked in a second round trip. A larger key is Redis' extrapolation from
//! its first `n` elements; it is marked estimated, and the report carries
//! an allowance for it (see `report.rs`).

use redis::Value;

use crate::connection::Redis;
use crate::error::Result;

/// Elements `MEMORY USAGE` may walk per key: every key of at most this many
/// elements is measured exactly. 20,000 covers the Sidekiq dead set's
/// default cap (10,000) and keeps one call near a millisecond of Redis time.
pub const DEFAULT_EXACT_ELEMENTS: u32 = 20_000;
/// Element visits that cost Redis about as much as one small command: a
/// key of 20,000 elements is charged 200 commands of the walk's budget.
pub const ELEMENTS_PER_COMMAND: u64 = 100;

/// One key, measured.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyUsage {
    /// `MEMORY USAGE … SAMPLES n`.
    pub bytes: u64,
    /// Whether `bytes` is Redis' exact count (else an extrapolation).
    pub exact: bool,
    /// `TYPE`.
    pub kind: String,
    /// `PTTL` said the key never expires.
    pub no_ttl: bool,
    /// Elements, for the big encodings (None for strings and compact ones).
    pub elements: Option<u64>,
}

impl KeyUsage {
    /// Commands' worth of Redis time the measurement cost beyond the calls
    /// themselves: element visits past the first hundred.
    pub fn extra_cost(&self, exact_elements: u32) -> u64 {
        self.elements
            .map(|n| n.min(u64::from(exact_elements)) / ELEMENTS_PER_COMMAND)
            .unwrap_or(0)
    }
}

/// Commands per key in the first round trip.
pub const COMMANDS_PER_KEY: u64 = 4;

/// Measures `keys`, all on the node `redis` talks to (one pipeline per
/// round trip; at most two round trips). `None` for a key that went away.
pub async fn measure_keys(
    redis: &Redis,
    keys: &[Vec<u8>],
    exact_elements: u32,
) -> Result<Vec<Option<KeyUsage>>> {
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    let mut pipe = redis::pipe();
    // A key that changes type between two calls answers WRONGTYPE: that
    // key is skipped, not the batch.
    pipe.ignore_errors();
    for key in keys {
        pipe.cmd("TYPE").arg(key);
        pipe.cmd("PTTL").arg(key);
        pipe.cmd("OBJECT").arg("ENCODING").arg(key);
        pipe.cmd("MEMORY")
            .arg("USAGE")
            .arg(key)
            .arg("SAMPLES")
            .arg(exact_elements);
    }
    let replies: Vec<Value> = query_pipe(redis, &pipe).await?;
    let mut out: Vec<Option<KeyUsage>> = Vec::with_capacity(keys.len());
    // Keys whose exactness depends on their length: (index, length command).
    let mut lengths: Vec<(usize, &'static str)> = Vec::new();
    for (i, chunk) in replies.chunks(COMMANDS_PER_KEY as usize).enumerate() {
        if let Value::ServerError(_) = &chunk[3] {
            // Not a key that went away (that is nil) but a refusal, such as
            // an ACL without MEMORY: say so instead of reporting nothing.
            chunk[3].clone().extract_error()?;
        }
        let Value::Int(bytes) = chunk[3] else {
            out.push(None); // gone between SCAN and now
            continue;
        };
        let kind = text(&chunk[0]);
        let encoding = text(&chunk[2]);
        let length_command = big_encoding_length(&kind, &encoding);
        if let Some(command) = length_command {
            lengths.push((i, command));
        }
        out.push(Some(KeyUsage {
            bytes: bytes.max(0) as u64,
            exact: length_command.is_none(),
            kind,
            no_ttl: matches!(chunk[1], Value::Int(-1)),
            elements: None,
        }));
    }
    if lengths.is_empty() {
        return Ok(out);
    }
    let mut pipe = redis::pipe();
    pipe.ignore_errors();
    for (i, command) in &lengths {
        pipe.cmd(command).arg(&keys[*i]);
    }
    let replies: Vec<Value> = query_pipe(redis, &pipe).await?;
    for ((i, _), reply) in lengths.iter().zip(replies) {
        if let (Some(usage), Value::Int(n)) = (out[*i].as_mut(), reply) {
            let n = n.max(0) as u64;
            usage.elements = Some(n);
            // Lists are walked by node and streams by listpack node, each
            // holding one element or more: a length within the bound is a
            // node count within it.
            usage.exact = n <= u64::from(exact_elements);
        }
    }
    Ok(out)
}

/// The length command of a key held in one of the encodings that
/// `MEMORY USAGE` samples (None: it measures the key whole).
fn big_encoding_length(kind: &str, encoding: &str) -> Option<&'static str> {
    match (kind, encoding) {
        ("hash", "hashtable") => Some("HLEN"),
        ("set", "hashtable") => Some("SCARD"),
        ("zset", "skiplist") => Some("ZCARD"),
        ("list", "quicklist" | "linkedlist") => Some("LLEN"),
        ("stream", _) => Some("XLEN"),
        _ => None,
    }
}

/// Runs `pipe` on the node `redis` talks to, waiting out BUSY / LOADING.
pub(crate) async fn query_pipe(redis: &Redis, pipe: &redis::Pipeline) -> Result<Vec<Value>> {
    super::pacer::retry_busy(|| {
        let mut conn = redis.clone();
        let pipe = pipe.clone();
        async move { Ok(pipe.query_async(&mut conn).await?) }
    })
    .await
}

/// A status or bulk reply as text ("unknown" for anything else).
pub(crate) fn text(value: &Value) -> String {
    match value {
        Value::SimpleString(s) => s.clone(),
        Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
        Value::Okay => "ok".into(),
        _ => "unknown".into(),
    }
}
