//! Queue settings and retention rules, each default a named constant.
//!
//! Retention is the reason Plimsoll exists: in the outage behind it, finished
//! jobs piled up for three weeks because a flag that deletes them was lost.
//! Here completed jobs are removed unless retention is switched on, and then
//! always within a count, an age and a byte budget; dead jobs are always
//! capped. There is no value that means "forever": every bound is finite and
//! checked when the queue is created.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use crate::clock::{Clock, SystemClock};
use crate::error::{Error, Result};
use crate::keyspace::{DEFAULT_PREFIX, validate_prefix};
use crate::queue::record::{Compression, DEFAULT_COMPRESSION};

/// Largest payload accepted by default: 512 KiB.
pub const DEFAULT_PAYLOAD_LIMIT: usize = 512 * 1024;
/// The highest payload limit a queue may set: 64 MiB (a job is not a file store).
pub const MAX_PAYLOAD_LIMIT: usize = 64 * 1024 * 1024;
/// Priority of jobs that do not set one: the middle of 0..=9, so a job can be
/// made both more and less urgent than the rest.
pub const DEFAULT_PRIORITY: u8 = 5;
/// Runs a job gets before it goes to the dead set. With the default backoff
/// the last retry comes about 8.5 minutes after the first failure.
pub const DEFAULT_MAX_ATTEMPTS: u16 = 10;
/// The most attempts a job may ask for.
pub const MAX_ATTEMPTS_LIMIT: u16 = 1000;
/// Time one run may take before it counts as failed.
pub const DEFAULT_JOB_TIMEOUT: Duration = Duration::from_secs(5 * 60);
/// The longest timeout a job may ask for (the record holds it in u32 ms).
pub const MAX_JOB_TIMEOUT: Duration = Duration::from_secs(24 * 60 * 60);
/// The furthest ahead a job may be scheduled (`NewJob::delay`,
/// `NewJob::run_at`): ten years. Further is a mistake, not a plan — a delay
/// of 2^64 - 1 ms was once taken and then broke every page that showed the
/// job's due time.
pub const MAX_SCHEDULE_AHEAD: Duration = Duration::from_secs(10 * 365 * 24 * 60 * 60);
/// How long an idempotency key is remembered.
pub const DEFAULT_IDEMPOTENCY_WINDOW: Duration = Duration::from_secs(24 * 60 * 60);
/// The longest idempotency window.
pub const MAX_IDEMPOTENCY_WINDOW: Duration = Duration::from_secs(30 * 24 * 60 * 60);
/// Longest idempotency key, in bytes.
pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 256;
/// Dead jobs kept per queue, at most.
pub const DEFAULT_DEAD_MAX_COUNT: u64 = 10_000;
/// Age after which a dead job is removed.
pub const DEFAULT_DEAD_MAX_AGE: Duration = Duration::from_secs(7 * 24 * 60 * 60);
/// Record bytes of dead jobs kept per queue, at most: 64 MiB.
pub const DEFAULT_DEAD_MAX_BYTES: u64 = 64 * 1024 * 1024;
/// The longest any retention may keep a job: a year. Finite on purpose.
pub const MAX_RETENTION_AGE: Duration = Duration::from_secs(365 * 24 * 60 * 60);
/// The most jobs a retention set may hold.
pub const MAX_RETENTION_COUNT: u64 = 100_000_000;
/// The most record bytes a retention set may hold: 64 GiB.
pub const MAX_RETENTION_BYTES: u64 = 64 * 1024 * 1024 * 1024;

/// How long an enqueue waits for replicas when its durability asks for
/// them and gives no time: long enough for a replica across a region's zones
/// (a few ms) under load, short enough that a dead replica makes enqueues
/// fail in a second rather than hang.
pub const DEFAULT_REPLICA_TIMEOUT: Duration = Duration::from_secs(1);
/// The longest time an enqueue may wait for its replicas.
pub const MAX_REPLICA_TIMEOUT: Duration = Duration::from_secs(60);
/// The most replicas an enqueue may wait for.
pub const MAX_DURABILITY_REPLICAS: u8 = 16;
/// The most queues a prefix may hold by default (the registry's cap): real
/// deployments use tens, and every known queue costs `plimsoll serve` its
/// maintenance and the dashboard a row, so a thousand leaves room while an
/// API caller that invents names cannot grow the registry without limit.
pub const DEFAULT_MAX_QUEUES: u64 = 1000;
/// The highest cap on queues a configuration may set.
pub const MAX_QUEUES_LIMIT: u64 = 100_000;

/// What an enqueue waits for before it returns Ok, on a Redis whose
/// primary has replicas (asynchronous replication: a failover promotes a
/// replica that may lack the last writes).
///
/// The text forms (`FromStr`, `Display`, the server's `durability`
/// setting) are `primary`, `replicas[:COUNT[:TIMEOUT]]` and
/// `replicas-aof[:COUNT[:TIMEOUT]]`, with TIMEOUT like `500ms` or `2s`
/// (default count 1, default timeout [`DEFAULT_REPLICA_TIMEOUT`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// Ok once the primary has the job (the default). A failover that
    /// promotes a replica before the job reached it loses the job, although
    /// the enqueue returned Ok; so does a crash of a primary without
    /// persistence (or with `appendfsync everysec`, up to a second).
    #[default]
    Primary,
    /// Ok once `count` replicas have the job in memory (`WAIT count
    /// timeout` after each batch): a failover that promotes one of them
    /// keeps it. When they do not confirm within `timeout`, the enqueue
    /// fails with [`NotReplicated`](crate::ErrorKind::NotReplicated): the job
    /// *is* on the primary and will run unless a failover loses it. Costs one
    /// round trip to the replicas per batch, on a connection of the
    /// producer's own (`WAIT` blocks the connection it is sent on).
    Replicas {
        /// Replicas that must confirm (1 to 16).
        count: u8,
        /// How long to wait for them (1 ms to 60 s).
        timeout: Duration,
    },
    /// As [`Replicas`](Self::Replicas), and the replicas have written the
    /// job to their append-only file and fsynced it (`WAITAOF 0 count
    /// timeout`), so it survives them crashing too. Needs Redis 7.2 or
    /// later (checked at the first enqueue) and `appendonly yes` on the
    /// replicas, which otherwise never confirm.
    ReplicasAof {
        /// Replicas that must confirm (1 to 16).
        count: u8,
        /// How long to wait for them (1 ms to 60 s).
        timeout: Duration,
    },
}

impl Durability {
    /// Waits for `count` replicas, [`DEFAULT_REPLICA_TIMEOUT`] at most.
    pub fn replicas(count: u8) -> Self {
        Self::Replicas {
            count,
            timeout: DEFAULT_REPLICA_TIMEOUT,
        }
    }

    /// The replicas to wait for and how long, unless only the primary counts.
    pub(crate) fn wait(&self) -> Option<(u8, Duration)> {
        match *self {
            Self::Primary => None,
            Self::Replicas { count, timeout } | Self::ReplicasAof { count, timeout } => {
                Some((count, timeout))
            }
        }
    }

    /// Checks the count and the timeout.
    pub fn validate(&self) -> Result<()> {
        if let Some((count, timeout)) = self.wait() {
            if !(1..=MAX_DURABILITY_REPLICAS).contains(&count) {
                return Err(Error::invalid(format!(
                    "durability: replica count {count} must be 1 to {MAX_DURABILITY_REPLICAS}"
                )));
            }
            if timeout < Duration::from_millis(1) || timeout > MAX_REPLICA_TIMEOUT {
                return Err(Error::invalid(format!(
                    "durability: replica timeout {timeout:?} must be 1 ms to 60 s"
                )));
            }
        }
        Ok(())
    }
}

impl fmt::Display for Durability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Primary => f.write_str("primary"),
            Self::Replicas { count, timeout } => {
                write!(f, "replicas:{count}:{}ms", timeout.as_millis())
            }
            Self::ReplicasAof { count, timeout } => {
                write!(f, "replicas-aof:{count}:{}ms", timeout.as_millis())
            }
        }
    }
}

impl FromStr for Durability {
    type Err = Error;

    /// `primary`, `replicas[:COUNT[:TIMEOUT]]` or
    /// `replicas-aof[:COUNT[:TIMEOUT]]`; checked as by [`validate`](Self::validate).
    fn from_str(text: &str) -> Result<Self> {
        let bad = |why: &str| {
            Error::invalid(format!(
                "durability {text:?} {why}; use primary, replicas[:COUNT[:TIMEOUT]] or replicas-aof[:COUNT[:TIMEOUT]], e.g. replicas:1:500ms"
            ))
        };
        let mut parts = text.trim().split(':');
        let kind = parts.next().unwrap_or_default();
        let (count, timeout) = (parts.next(), parts.next());
        if parts.next().is_some() {
            return Err(bad("has too many parts"));
        }
        if kind == "primary" {
            return match count {
                None => Ok(Self::Primary),
                Some(_) => Err(bad("takes no count or timeout")),
            };
        }
        let count = match count {
            None => 1,
            Some(count) => count
                .parse::<u8>()
                .map_err(|_| bad("has a replica count that is not a number from 1 to 16"))?,
        };
        let timeout = match timeout {
            None => DEFAULT_REPLICA_TIMEOUT,
            Some(timeout) => parse_timeout(timeout)
                .ok_or_else(|| bad("has a timeout that is not like 500ms or 2s"))?,
        };
        let durability = match kind {
            "replicas" => Self::Replicas { count, timeout },
            "replicas-aof" => Self::ReplicasAof { count, timeout },
            _ => return Err(bad("is not known")),
        };
        durability.validate()?;
        Ok(durability)
    }
}

/// `500ms`, `2s`.
fn parse_timeout(text: &str) -> Option<Duration> {
    if let Some(ms) = text.strip_suffix("ms") {
        return ms.parse().ok().map(Duration::from_millis);
    }
    text.strip_suffix('s')?
        .parse()
        .ok()
        .map(Duration::from_secs)
}

/// Limits on a set of finished jobs; whichever is reached first applies,
/// oldest jobs first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Bounds {
    max_count: u64,
    #[serde(rename = "max_age_ms", serialize_with = "serialize_ms")]
    max_age: Duration,
    max_bytes: u64,
}

fn serialize_ms<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(crate::clock::ms(*d))
}

impl Bounds {
    /// Keeps at most `max_count` jobs, none older than `max_age`, and at most
    /// `max_bytes` of their records. Every bound must be positive and finite
    /// (at most 100 million jobs, a year, 64 GiB).
    pub fn new(max_count: u64, max_age: Duration, max_bytes: u64) -> Result<Self> {
        if !(1..=MAX_RETENTION_COUNT).contains(&max_count) {
            return Err(Error::invalid(format!(
                "retention max_count {max_count} must be 1 to {MAX_RETENTION_COUNT}"
            )));
        }
        if max_age < Duration::from_secs(1) || max_age > MAX_RETENTION_AGE {
            return Err(Error::invalid(format!(
                "retention max_age {max_age:?} must be 1 s to 365 days"
            )));
        }
        if !(1..=MAX_RETENTION_BYTES).contains(&max_bytes) {
            return Err(Error::invalid(format!(
                "retention max_bytes {max_bytes} must be 1 to {MAX_RETENTION_BYTES}"
            )));
        }
        Ok(Self {
            max_count,
            max_age,
            max_bytes,
        })
    }

    /// The count bound.
    pub fn max_count(&self) -> u64 {
        self.max_count
    }

    /// The age bound.
    pub fn max_age(&self) -> Duration {
        self.max_age
    }

    /// The byte bound (record bytes: header, stored payload, last error).
    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }
}

/// The dead-set caps every queue has unless it sets its own.
pub const DEFAULT_DEAD_BOUNDS: Bounds = Bounds {
    max_count: DEFAULT_DEAD_MAX_COUNT,
    max_age: DEFAULT_DEAD_MAX_AGE,
    max_bytes: DEFAULT_DEAD_MAX_BYTES,
};

/// What happens to a job that completed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "snake_case", tag = "mode")]
pub enum CompletedRetention {
    /// Removed in the same script that completes it (the default).
    #[default]
    Remove,
    /// Kept for inspection within these bounds.
    Keep(Bounds),
}

/// Retention rules of a queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Retention {
    /// Completed jobs: removed by default.
    pub completed: CompletedRetention,
    /// Dead jobs: always bounded; [`DEFAULT_DEAD_BOUNDS`] by default.
    pub dead: Bounds,
}

impl Default for Retention {
    fn default() -> Self {
        Self {
            completed: CompletedRetention::Remove,
            dead: DEFAULT_DEAD_BOUNDS,
        }
    }
}

impl Retention {
    /// The completed bounds as script arguments: count (0 = remove), age ms, bytes.
    pub(crate) fn completed_args(&self) -> [u64; 3] {
        match self.completed {
            CompletedRetention::Remove => [0, 0, 0],
            CompletedRetention::Keep(b) => bounds_args(&b),
        }
    }

    /// The dead bounds as script arguments: count, age ms, bytes.
    pub(crate) fn dead_args(&self) -> [u64; 3] {
        bounds_args(&self.dead)
    }

    /// The rules as the queue's `meta` hash records them: a format version
    /// (1), then the completed bounds (count 0: removed) and the dead bounds
    /// as script arguments, space-separated.
    pub(crate) fn to_record(self) -> String {
        let [cc, ca, cb] = self.completed_args();
        let [dc, da, db] = self.dead_args();
        format!("{RECORD_VERSION} {cc} {ca} {cb} {dc} {da} {db}")
    }

    /// Reads [`to_record`](Self::to_record)'s text, checking every bound.
    pub(crate) fn from_record(text: &str) -> Result<Self> {
        let corrupt = |why: &str| {
            Error::corrupt(format!("recorded retention {text:?} cannot be read: {why}"))
        };
        let values: Vec<u64> = text
            .split_ascii_whitespace()
            .map(str::parse)
            .collect::<std::result::Result<_, _>>()
            .map_err(|_| corrupt("not numbers"))?;
        let [version, cc, ca, cb, dc, da, db] = values[..] else {
            return Err(corrupt("not seven numbers"));
        };
        if version != RECORD_VERSION {
            return Err(corrupt("written by another version of Plimsoll"));
        }
        let bounds = |count, age, bytes| {
            Bounds::new(count, Duration::from_millis(age), bytes).map_err(|e| corrupt(e.message()))
        };
        let completed = match cc {
            0 => CompletedRetention::Remove,
            _ => CompletedRetention::Keep(bounds(cc, ca, cb)?),
        };
        Ok(Self {
            completed,
            dead: bounds(dc, da, db)?,
        })
    }
}

/// The format of [`Retention::to_record`].
const RECORD_VERSION: u64 = 1;

fn bounds_args(b: &Bounds) -> [u64; 3] {
    [b.max_count, crate::clock::ms(b.max_age), b.max_bytes]
}

/// Settings of one queue, shared by its producers and workers. Checked by
/// [`Queue::new`](crate::Queue::new).
#[derive(Debug, Clone)]
pub struct QueueConfig {
    /// Prefix of every key (default `plimsoll`).
    pub prefix: String,
    /// Largest payload accepted, in bytes before compression.
    pub payload_limit: usize,
    /// How payloads are stored.
    pub compression: Compression,
    /// Priority of jobs that set none (0..=9).
    pub default_priority: u8,
    /// Runs a job gets unless it sets its own number.
    pub default_max_attempts: u16,
    /// Time a run may take unless the job sets its own.
    pub default_timeout: Duration,
    /// How long idempotency keys are remembered unless a job sets its own.
    pub idempotency_window: Duration,
    /// What to keep of finished jobs, and how much.
    pub retention: Retention,
    /// What an enqueue waits for before it returns Ok: the primary alone
    /// (the default) or replicas too.
    pub durability: Durability,
    /// The most queues the registry (`<prefix>:queues`) may hold: the first
    /// enqueue to a queue beyond it fails with
    /// [`TooManyQueues`](crate::ErrorKind::TooManyQueues).
    pub max_queues: u64,
    /// The queue is registered even when the registry holds `max_queues`
    /// already. For the queues an application names itself (`plimsoll
    /// serve` sets it for its configured queues and the queues of its
    /// webhook sources), so that queues invented by callers of an API that
    /// takes a queue name cannot fill the registry and lock them out. Their
    /// number is bounded by the configuration. Off by default.
    pub exempt_from_max_queues: bool,
    /// The clock of the time passed to scripts. A queue keeps it on Redis'
    /// time (see [`crate::clock`]) unless it is a
    /// [`ManualClock`](crate::ManualClock), which is used as it is.
    pub clock: Arc<dyn Clock>,
    /// Run on a Redis whose `maxmemory-policy` may evict keys, accepting that
    /// jobs and idempotency keys may vanish under memory pressure. Off by
    /// default: such a Redis is refused (see [`crate::redis_policy`]).
    pub allow_evicting_redis: bool,
}

impl Default for QueueConfig {
    fn default() -> Self {
        Self {
            prefix: DEFAULT_PREFIX.to_string(),
            payload_limit: DEFAULT_PAYLOAD_LIMIT,
            compression: DEFAULT_COMPRESSION,
            default_priority: DEFAULT_PRIORITY,
            default_max_attempts: DEFAULT_MAX_ATTEMPTS,
            default_timeout: DEFAULT_JOB_TIMEOUT,
            idempotency_window: DEFAULT_IDEMPOTENCY_WINDOW,
            retention: Retention::default(),
            durability: Durability::Primary,
            max_queues: DEFAULT_MAX_QUEUES,
            exempt_from_max_queues: false,
            clock: Arc::new(SystemClock),
            allow_evicting_redis: false,
        }
    }
}

/// The fastest zstd level a queue may use (zstd's negative levels trade
/// size for speed; 0, zstd's "default level", is refused as ambiguous).
pub const MIN_ZSTD_LEVEL: i32 = -7;
/// The strongest zstd level a queue may use.
pub const MAX_ZSTD_LEVEL: i32 = 19;

impl QueueConfig {
    /// Checks every setting, naming the first bad one.
    pub fn validate(&self) -> Result<()> {
        validate_prefix(&self.prefix)?;
        if self.payload_limit == 0 || self.payload_limit > MAX_PAYLOAD_LIMIT {
            return Err(Error::invalid(format!(
                "payload_limit {} must be 1 to {MAX_PAYLOAD_LIMIT} bytes",
                self.payload_limit
            )));
        }
        if let Compression::Zstd { level } = self.compression
            && (!(MIN_ZSTD_LEVEL..=MAX_ZSTD_LEVEL).contains(&level) || level == 0)
        {
            return Err(Error::invalid(format!(
                "compression level {level} must be {MIN_ZSTD_LEVEL} to -1 or 1 to {MAX_ZSTD_LEVEL}"
            )));
        }
        check_priority(self.default_priority)?;
        check_max_attempts(self.default_max_attempts)?;
        check_timeout(self.default_timeout)?;
        check_idempotency_window(self.idempotency_window)?;
        self.durability.validate()?;
        if !(1..=MAX_QUEUES_LIMIT).contains(&self.max_queues) {
            return Err(Error::invalid(format!(
                "max_queues {} must be 1 to {MAX_QUEUES_LIMIT}",
                self.max_queues
            )));
        }
        Ok(())
    }
}

pub(crate) fn check_priority(priority: u8) -> Result<()> {
    if priority > crate::queue::job::LOWEST_PRIORITY {
        return Err(Error::invalid(format!(
            "priority {priority} must be 0 (runs first) to 9"
        )));
    }
    Ok(())
}

pub(crate) fn check_max_attempts(attempts: u16) -> Result<()> {
    if !(1..=MAX_ATTEMPTS_LIMIT).contains(&attempts) {
        return Err(Error::invalid(format!(
            "max_attempts {attempts} must be 1 to {MAX_ATTEMPTS_LIMIT}"
        )));
    }
    Ok(())
}

pub(crate) fn check_timeout(timeout: Duration) -> Result<()> {
    if timeout < Duration::from_millis(1) || timeout > MAX_JOB_TIMEOUT {
        return Err(Error::invalid(format!(
            "timeout {timeout:?} must be 1 ms to 24 h"
        )));
    }
    Ok(())
}

/// Checks that a job is due at most [`MAX_SCHEDULE_AHEAD`] from `now_ms`.
pub(crate) fn check_run_at(run_at: crate::queue::job::RunAt, now_ms: u64) -> Result<()> {
    use crate::queue::job::RunAt;
    let limit_ms = crate::clock::ms(MAX_SCHEDULE_AHEAD);
    let ahead_ms = match run_at {
        RunAt::After(delay) => crate::clock::ms(delay),
        RunAt::At(time) => crate::queue::job::system_time_ms(time).saturating_sub(now_ms),
    };
    if ahead_ms > limit_ms {
        return Err(Error::invalid(format!(
            "a job may be scheduled at most 10 years ahead ({limit_ms} ms); \
             this one is {ahead_ms} ms ahead"
        )));
    }
    Ok(())
}

pub(crate) fn check_idempotency_window(window: Duration) -> Result<()> {
    if window < Duration::from_secs(1) || window > MAX_IDEMPOTENCY_WINDOW {
        return Err(Error::invalid(format!(
            "idempotency window {window:?} must be 1 s to 30 days"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recorded_retention_reads_back_as_written() {
        let kept = Retention {
            completed: CompletedRetention::Keep(
                Bounds::new(500, Duration::from_secs(3600), 1 << 20).unwrap(),
            ),
            dead: Bounds::new(7, Duration::from_secs(86_400), 4096).unwrap(),
        };
        for retention in [Retention::default(), kept] {
            let text = retention.to_record();
            assert_eq!(Retention::from_record(&text).unwrap(), retention, "{text}");
        }
        for bad in [
            "",
            "1 0 0 0",
            "2 0 0 0 10 1000 10",
            "1 0 0 0 0 1000 10",
            "x",
        ] {
            let err = Retention::from_record(bad).unwrap_err();
            assert_eq!(err.kind(), crate::ErrorKind::Corrupt, "{bad:?}");
        }
    }

    #[test]
    fn the_defaults_are_valid_and_remove_completed_jobs() {
        let config = QueueConfig::default();
        config.validate().unwrap();
        assert_eq!(config.retention.completed, CompletedRetention::Remove);
        assert_eq!(config.retention.completed_args(), [0, 0, 0]);
        assert_eq!(
            config.retention.dead_args(),
            [10_000, 7 * 24 * 3600 * 1000, 64 * 1024 * 1024]
        );
    }

    #[test]
    fn there_is_no_unbounded_retention() {
        assert!(Bounds::new(0, Duration::from_secs(60), 1024).is_err());
        assert!(Bounds::new(10, Duration::ZERO, 1024).is_err());
        assert!(Bounds::new(10, Duration::from_secs(60), 0).is_err());
        assert!(Bounds::new(u64::MAX, Duration::from_secs(60), 1024).is_err());
        assert!(Bounds::new(10, Duration::MAX, 1024).is_err());
        assert!(Bounds::new(10, Duration::from_secs(60), u64::MAX).is_err());
        assert!(Bounds::new(10, Duration::from_secs(60), 1024).is_ok());
    }

    #[test]
    fn durability_reads_its_text_forms_and_refuses_the_rest() {
        let parse = |text: &str| text.parse::<Durability>();
        assert_eq!(parse("primary").unwrap(), Durability::Primary);
        assert_eq!(parse("replicas").unwrap(), Durability::replicas(1));
        assert_eq!(
            parse("replicas:2:500ms").unwrap(),
            Durability::Replicas {
                count: 2,
                timeout: Duration::from_millis(500)
            }
        );
        assert_eq!(
            parse("replicas-aof:1:2s").unwrap(),
            Durability::ReplicasAof {
                count: 1,
                timeout: Duration::from_secs(2)
            }
        );
        for durability in [Durability::Primary, parse("replicas:3:250ms").unwrap()] {
            assert_eq!(parse(&durability.to_string()).unwrap(), durability);
        }
        for bad in [
            "",
            "all",
            "primary:1",
            "replicas:0",
            "replicas:17",
            "replicas:x",
            "replicas:1:0ms",
            "replicas:1:61s",
            "replicas:1:5m",
            "replicas:1:1s:x",
        ] {
            let err = parse(bad).unwrap_err();
            assert_eq!(err.kind(), crate::ErrorKind::InvalidInput, "{bad:?}");
            assert!(err.to_string().contains("durability"), "{err}");
        }
    }

    #[test]
    fn bad_settings_are_named() {
        let config = QueueConfig {
            default_priority: 12,
            ..QueueConfig::default()
        };
        assert!(
            config
                .validate()
                .unwrap_err()
                .to_string()
                .contains("priority 12")
        );
        let config = QueueConfig {
            payload_limit: 0,
            ..QueueConfig::default()
        };
        assert!(
            config
                .validate()
                .unwrap_err()
                .to_string()
                .contains("payload_limit")
        );
        for level in [MIN_ZSTD_LEVEL - 1, 0, MAX_ZSTD_LEVEL + 1] {
            let config = QueueConfig {
                compression: Compression::Zstd { level },
                ..QueueConfig::default()
            };
            let err = config.validate().unwrap_err().to_string();
            assert!(err.contains(&format!("compression level {level}")), "{err}");
        }
        for level in [MIN_ZSTD_LEVEL, -1, 1, MAX_ZSTD_LEVEL] {
            let config = QueueConfig {
                compression: Compression::Zstd { level },
                ..QueueConfig::default()
            };
            config.validate().unwrap();
        }
    }
}
