//! Every Redis key Plimsoll writes is named here, and only here.
//!
//! Each key's doc comment states its type and its bound: the promise that
//! nothing Plimsoll writes grows without limit (`docs/keyspace.md` is the same
//! table for operators, and a test compares a long run's keyspace with it).
//!
//! All keys of one queue share the hash tag `{<queue>}`, so on a Redis
//! Cluster they live in one slot and every Lua script of that queue can reach
//! all of them; different queues spread over the shards.
//!
//! Layout choices that keep a waiting job small (see `docs/keyspace.md`):
//! there is no key per job. A job is one field of the queue's `jobs` hash
//! (its record: a 24-byte header and the payload, compressed when that pays),
//! plus an integer entry in one waiting list. Integer ids keep list entries
//! at a few bytes inside Redis' listpacks.

use std::fmt;

use crate::error::{Error, Result};

/// The prefix of every key, so that Plimsoll's keys are easy to find and to
/// tell apart from an application's.
pub const DEFAULT_PREFIX: &str = "plimsoll";

/// Longest queue name accepted; names appear in every key of the queue.
pub const MAX_QUEUE_NAME_LEN: usize = 64;

/// Number of priority levels; each level is one waiting list.
pub const PRIORITY_LEVELS: usize = 10;

/// The most producers' id runs a queue's `id_runs` keeps. A live producer
/// holds one; a stopped one leaves its entry until a thousand newer runs push
/// it out. Real queues have tens of producers, and up to 128 members a sorted
/// set stays in Redis' compact encoding.
pub const MAX_ID_RUNS: u64 = 1000;

/// How long the key of a producer's id run (`…:id_run:…`) lives. A batch
/// whose run key is gone is not written but sent again under a fresh run, so
/// this bounds the keys of stopped producers and costs a producer that takes
/// longer than this to use up a run one more reservation.
pub const ID_RUN_KEY_TTL: std::time::Duration = std::time::Duration::from_secs(10 * 60);

/// How long the key a batch's `SET … NX` makes when its run's key is gone
/// lives: a millisecond. Making it is what stops the transaction (the
/// watched key changed); it must be gone again before the batch's next try
/// (at least 10 ms later, when Redis refused the first), or that try's
/// `SET … NX` would find a key, change nothing, and let the batch through
/// under ids that are no longer its own.
pub const LOST_RUN_MARKER_TTL: std::time::Duration = std::time::Duration::from_millis(1);

/// A validated queue name: 1 to 64 characters from `A-Z a-z 0-9 _ - .`,
/// not dots alone.
///
/// Braces would break the hash tag and colons would blur key families in
/// the memory report, so neither is allowed. `.` and `..` (and any name of
/// dots only) are path segments every HTTP client and browser resolves
/// away, so such a queue could be made through the API but never reached
/// again by its URL.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct QueueName(String);

impl QueueName {
    /// Checks `name` and wraps it.
    pub fn new(name: impl Into<String>) -> Result<Self> {
        let name = name.into();
        check_name("queue name", &name, MAX_QUEUE_NAME_LEN)?;
        if name.chars().all(|c| c == '.') {
            return Err(Error::invalid(format!(
                "queue name {name:?} is only dots, which URLs resolve away; add a letter or digit"
            )));
        }
        Ok(Self(name))
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::str::FromStr for QueueName {
    type Err = Error;

    fn from_str(name: &str) -> Result<Self> {
        Self::new(name)
    }
}

impl fmt::Display for QueueName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Checks a name that becomes part of keys: 1 to `max_len` characters from
/// `A-Z a-z 0-9 _ - .`; `what` names it in the error.
fn check_name(what: &str, name: &str, max_len: usize) -> Result<()> {
    if name.is_empty() || name.len() > max_len {
        return Err(Error::invalid(format!(
            "{what} {name:?} must be 1 to {max_len} characters long"
        )));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')))
    {
        return Err(Error::invalid(format!(
            "{what} {name:?} contains {bad:?}; use letters, digits, '_', '-' and '.'"
        )));
    }
    Ok(())
}

/// Checks a key prefix: non-empty, no braces, no whitespace.
pub fn validate_prefix(prefix: &str) -> Result<()> {
    if prefix.is_empty()
        || prefix.len() > 64
        || prefix
            .chars()
            .any(|c| c == '{' || c == '}' || c.is_whitespace())
    {
        return Err(Error::invalid(format!(
            "key prefix {prefix:?} must be 1 to 64 characters without braces or spaces"
        )));
    }
    Ok(())
}

/// The set of all queue names: `<prefix>:queues`.
///
/// Type: set of queue names. Bound: one member per queue, at most
/// `QueueConfig::max_queues` (default 1,000) for new queues; removed by
/// `Queue::delete` (`plimsoll queue delete`). It is the one key outside any
/// queue's hash tag, so only `register.lua` (which touches it alone) and
/// plain commands write it; it is best effort (see `queue/registry.rs`): an
/// enqueue never waits for it long nor fails because it cannot be reached,
/// and `Queue::list` puts back the queues it lost.
pub fn queues_registry(prefix: &str) -> String {
    format!("{prefix}:queues")
}

/// Longest cache namespace accepted; it appears in every key of the cache.
pub const MAX_CACHE_NAMESPACE_LEN: usize = 64;

/// Longest cache key accepted, in bytes (the caller's part, before the
/// prefix and namespace are added). Keys are sent with every call; a cache
/// keyed by kilobytes of text wants a hash of it instead.
pub const MAX_CACHE_KEY_LEN: usize = 1024;

/// A validated cache namespace: 1 to 64 characters from `A-Z a-z 0-9 _ - .`,
/// so that the memory report can attribute a cache's keys to it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CacheNamespace(String);

impl CacheNamespace {
    /// Checks `name` and wraps it.
    pub fn new(name: impl Into<String>) -> Result<Self> {
        let name = name.into();
        check_name("cache namespace", &name, MAX_CACHE_NAMESPACE_LEN)?;
        Ok(Self(name))
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for CacheNamespace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The start of every key of one cache: `<prefix>:cache:<namespace>:`. A
/// cache key is this followed by the caller's key (1 to
/// [`MAX_CACHE_KEY_LEN`] bytes, any bytes).
///
/// `…:cache:<namespace>:<key>` — string, one encoded value (a format byte
/// and the postcard-encoded value, zstd-compressed when large). Bound: its
/// TTL. The cache writes every key with `SET … PX <ttl>` in one command, so
/// no cache key ever exists without an expiry; the TTL is at most 30 days
/// (`cache::MAX_TTL`) and each value at most its size limit (1 MiB by
/// default). Keys have no hash tag: each cache command touches one key, so
/// on a cluster they spread over all shards.
pub fn cache_base(prefix: &str, namespace: &CacheNamespace) -> String {
    format!("{prefix}:cache:{namespace}:")
}

/// The keys of one queue, computed once.
#[derive(Debug, Clone)]
pub struct QueueKeys {
    base: String,
    jobs: String,
    waiting: [String; PRIORITY_LEVELS],
    scheduled: String,
    workers: String,
    completed: String,
    dead: String,
    meta: String,
    id_runs: String,
    stats: String,
    notify: String,
}

impl QueueKeys {
    /// Keys of `queue` under `prefix`.
    pub fn new(prefix: &str, queue: &QueueName) -> Self {
        let base = format!("{prefix}:{{{queue}}}");
        Self {
            jobs: format!("{base}:jobs"),
            waiting: std::array::from_fn(|p| format!("{base}:waiting:{p}")),
            scheduled: format!("{base}:scheduled"),
            workers: format!("{base}:workers"),
            completed: format!("{base}:completed"),
            dead: format!("{base}:dead"),
            meta: format!("{base}:meta"),
            id_runs: format!("{base}:id_runs"),
            stats: format!("{base}:stats"),
            notify: format!("{base}:notify"),
            base,
        }
    }

    /// `<prefix>:{<queue>}`: the start every key of the queue shares; also the
    /// pattern the memory report and `trim` use to recognise a queue.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// `…:jobs` — hash, job id → job record (header, payload, last error).
    ///
    /// Bound: one field per job that is waiting, scheduled, active, dead
    /// (dead-set caps) or retained as completed (retention caps). Completed
    /// jobs are removed by default.
    pub fn jobs(&self) -> &str {
        &self.jobs
    }

    /// `…:waiting:<p>` — list of job ids ready to run at priority `p`
    /// (0 runs first). Bound: the jobs enqueued and not yet fetched; each has a
    /// record in `jobs`, which the payload limit bounds in bytes.
    pub fn waiting(&self, priority: usize) -> &str {
        &self.waiting[priority]
    }

    /// All waiting lists, priority 0 first.
    pub fn waiting_all(&self) -> &[String; PRIORITY_LEVELS] {
        &self.waiting
    }

    /// `…:scheduled` — sorted set, job id scored by the time (ms) it becomes
    /// due: delayed jobs and retries waiting for their backoff. Bound: those
    /// jobs; the promoter moves due ones to `waiting`.
    pub fn scheduled(&self) -> &str {
        &self.scheduled
    }

    /// `…:workers` — sorted set, worker id scored by the earliest lease
    /// deadline (ms) in its `active` hash, every lease there counted (or its
    /// own liveness deadline when it holds none).
    /// Bound: live workers; the rescuer removes a worker whose leases expired.
    pub fn workers(&self) -> &str {
        &self.workers
    }

    /// `…:active:<worker>` — hash, job id → `<token>:<deadline>`: the lease
    /// of each job that `worker` has fetched and not yet settled, as its
    /// fencing token (a random 64-bit number the worker draws for each fetch
    /// call, so every lease of a job has a token of its own, also across a
    /// failover that lost writes) and its
    /// deadline in ms, on Redis' time. Settling, renewing, handing back and
    /// a handler's cancel act only on a lease that still carries the run's
    /// token. Bound: the worker's concurrency plus prefetch, more
    /// while fast handlers outpace its fetches (at most 10,000); removed when
    /// it is empty, by the worker at shutdown or by the rescuer once the
    /// worker's leases expired.
    pub fn active(&self, worker: &str) -> String {
        format!("{}:active:{worker}", self.base)
    }

    /// `…:completed` — sorted set, job id scored by completion time (ms). Only
    /// written when retention of completed jobs is switched on, and then bound
    /// by its count, age and byte limits.
    pub fn completed(&self) -> &str {
        &self.completed
    }

    /// `…:dead` — sorted set, job id scored by the time (ms) it died. Bound by
    /// the dead-set caps (default 10,000 jobs, 7 days, 64 MiB).
    pub fn dead(&self) -> &str {
        &self.dead
    }

    /// `…:meta` — hash of queue settings: `next_id` (the last id reserved;
    /// ids start at 1,000,001, see `reserve_ids.lua`), `paused`, `created_at`
    /// and `retention` (the queue's retention rules as its workers and `plimsoll
    /// serve` apply them, so that maintenance run elsewhere applies the same:
    /// see `Queue::recorded_retention`). Bound: a fixed set of fields.
    pub fn meta(&self) -> &str {
        &self.meta
    }

    /// `…:id_runs` — sorted set, producer token → the last id of the run of
    /// ids that producer reserved last (`reserve_ids.lua`): a reservation
    /// never hands out ids at or below its top, so `next_id` stays above
    /// every run a recorded producer may still be writing, even when `meta`
    /// was edited. Which ids a batch may use is each run's own key's
    /// business ([`id_run`](Self::id_run)). Bound: [`MAX_ID_RUNS`] members,
    /// the oldest dropped by `reserve_ids.lua`.
    pub fn id_runs(&self) -> &str {
        &self.id_runs
    }

    /// `…:id_run:<token>:<generation>` — string, the last id of one id run
    /// a producer reserved (`reserve_ids.lua`, in the same step as
    /// `next_id`). A failover or restart that lost the reservation lost this
    /// key too, and every batch is sent as `WATCH` of its run's key,
    /// `SET … NX`, then the MULTI/EXEC: when the key is gone the `SET`
    /// creates it, the watched key has changed, and Redis does not run the
    /// transaction, so a producer never writes ids that another producer may
    /// hold now; it reserves again. Bound: [`ID_RUN_KEY_TTL`] for a run's
    /// key (a producer slower than that reserves again), and
    /// `reserve_ids.lua` deletes the key of the run six reservations back
    /// (more than the batches a producer has on their way at once), so a
    /// producer holds at most six; the key the `SET` makes for a
    /// lost run lives [`LOST_RUN_MARKER_TTL`].
    pub fn id_run(&self, token: &str, generation: u64) -> String {
        format!("{}:id_run:{token}:{generation}", self.base)
    }

    /// `…:stats` — hash of counters (`enqueued`, `completed`, `retried`,
    /// `dead`, `cancelled`, `rescued`) and byte totals of the retained sets
    /// (`completed_bytes`, `dead_bytes`). Bound: a fixed set of fields.
    pub fn stats(&self) -> &str {
        &self.stats
    }

    /// `…:notify` — list holding at most one token, pushed when jobs become
    /// ready, so that idle workers wake from `BLPOP` at once instead of
    /// polling. Bound: one element (pushed only onto an empty list).
    pub fn notify(&self) -> &str {
        &self.notify
    }

    /// `…:idem:<key>` — string, the id of the first job enqueued with this
    /// idempotency key. Bound: its TTL, the idempotency window (default 24 h,
    /// at most 30 days).
    pub fn idempotency(&self, key: &str) -> String {
        format!("{}:idem:{key}", self.base)
    }
}

impl QueueKeys {
    /// Every key of the queue whose name is fixed (not per worker, run or
    /// idempotency key): the keys that exist for as long as the queue does.
    pub fn fixed(&self) -> impl Iterator<Item = &str> {
        [
            self.jobs(),
            self.scheduled(),
            self.workers(),
            self.completed(),
            self.dead(),
            self.meta(),
            self.id_runs(),
            self.stats(),
            self.notify(),
        ]
        .into_iter()
        .chain(self.waiting.iter().map(String::as_str))
    }
}

/// What a key Plimsoll wrote is, read back from its name by [`parse`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParsedKey<'a> {
    /// [`queues_registry`].
    QueueRegistry,
    /// One of a queue's keys ([`QueueKeys`]).
    Queue {
        /// The queue's name (between the braces of the hash tag).
        queue: &'a str,
        /// Which of its keys.
        key: QueueKey,
    },
    /// A cache value ([`cache_base`]).
    Cache {
        /// The cache's namespace.
        namespace: &'a str,
    },
}

/// Which of a queue's keys a name is, as [`QueueKeys`] names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueKey {
    /// [`QueueKeys::jobs`].
    Jobs,
    /// [`QueueKeys::waiting`] of this priority.
    Waiting(usize),
    /// [`QueueKeys::scheduled`].
    Scheduled,
    /// [`QueueKeys::workers`].
    Workers,
    /// [`QueueKeys::active`] of one worker.
    Active,
    /// [`QueueKeys::completed`].
    Completed,
    /// [`QueueKeys::dead`].
    Dead,
    /// [`QueueKeys::meta`].
    Meta,
    /// [`QueueKeys::id_runs`].
    IdRuns,
    /// [`QueueKeys::id_run`] of one producer's run.
    IdRun,
    /// [`QueueKeys::stats`].
    Stats,
    /// [`QueueKeys::notify`].
    Notify,
    /// [`QueueKeys::idempotency`] of one key.
    Idempotency,
}

/// Reads a key name back into what this module named it, when it is one of
/// Plimsoll's keys under `prefix`: the inverse of the functions above, so
/// that the memory guard tells Plimsoll's own keys (under any prefix, and
/// the cache's too) by the same rules that made them. `None` for any other
/// key.
pub fn parse<'a>(prefix: &str, key: &'a str) -> Option<ParsedKey<'a>> {
    let rest = key.strip_prefix(prefix)?.strip_prefix(':')?;
    if rest == "queues" {
        return Some(ParsedKey::QueueRegistry);
    }
    if let Some(cache) = rest.strip_prefix("cache:") {
        let (namespace, user_key) = cache.split_once(':')?;
        if CacheNamespace::new(namespace).is_err() || user_key.is_empty() {
            return None;
        }
        return Some(ParsedKey::Cache { namespace });
    }
    let (queue, rest) = rest.strip_prefix('{')?.split_once("}:")?;
    QueueName::new(queue).ok()?;
    let segments: Vec<&str> = rest.splitn(3, ':').collect();
    let key = match segments.as_slice() {
        ["jobs"] => QueueKey::Jobs,
        ["waiting", p] => {
            let p: usize = p.parse().ok().filter(|p| *p < PRIORITY_LEVELS)?;
            QueueKey::Waiting(p)
        }
        ["scheduled"] => QueueKey::Scheduled,
        ["workers"] => QueueKey::Workers,
        ["active", worker] if !worker.is_empty() => QueueKey::Active,
        ["completed"] => QueueKey::Completed,
        ["dead"] => QueueKey::Dead,
        ["meta"] => QueueKey::Meta,
        ["id_runs"] => QueueKey::IdRuns,
        ["id_run", token, generation] if !token.is_empty() && generation.parse::<u64>().is_ok() => {
            QueueKey::IdRun
        }
        ["stats"] => QueueKey::Stats,
        ["notify"] => QueueKey::Notify,
        ["idem", _, ..] => QueueKey::Idempotency,
        _ => return None,
    };
    Some(ParsedKey::Queue { queue, key })
}

/// The deadline (ms) in a value of an `active` hash (`<token>:<deadline>`;
/// values written before fencing tokens hold the deadline alone), or `None`
/// when the value is not one.
pub(crate) fn lease_deadline(value: &str) -> Option<u64> {
    let deadline = value
        .rsplit_once(':')
        .map_or(value, |(_, deadline)| deadline);
    deadline.parse().ok()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Every key a queue makes, with what [`parse`] must read it as: the
    /// one list of a queue's keys that the tests here and the guard's check
    /// against.
    pub(crate) fn every_queue_key(keys: &QueueKeys) -> Vec<(String, QueueKey)> {
        let fixed = [
            QueueKey::Jobs,
            QueueKey::Scheduled,
            QueueKey::Workers,
            QueueKey::Completed,
            QueueKey::Dead,
            QueueKey::Meta,
            QueueKey::IdRuns,
            QueueKey::Stats,
            QueueKey::Notify,
        ]
        .into_iter()
        .chain((0..PRIORITY_LEVELS).map(QueueKey::Waiting));
        let mut all: Vec<(String, QueueKey)> =
            keys.fixed().map(str::to_string).zip(fixed).collect();
        assert_eq!(
            all.len(),
            9 + PRIORITY_LEVELS,
            "fixed() lists every fixed key"
        );
        all.push((keys.active("w1"), QueueKey::Active));
        all.push((keys.id_run("0123456789abcdef", 1), QueueKey::IdRun));
        all.push((keys.idempotency("order:42"), QueueKey::Idempotency));
        all
    }

    #[test]
    fn a_lease_value_gives_its_deadline() {
        assert_eq!(lease_deadline("17:1700000000123"), Some(1_700_000_000_123));
        assert_eq!(lease_deadline("1700000000123"), Some(1_700_000_000_123));
        assert_eq!(lease_deadline("17:"), None);
    }

    #[test]
    fn every_key_carries_the_queue_hash_tag() {
        let keys = QueueKeys::new("plimsoll", &QueueName::new("mail").unwrap());
        for (key, _) in every_queue_key(&keys) {
            assert!(key.starts_with("plimsoll:{mail}:"), "{key}");
        }
    }

    #[test]
    fn every_key_parses_back_into_what_named_it_under_any_prefix() {
        for prefix in ["plimsoll", "acme:jobs", "p.1"] {
            let keys = QueueKeys::new(prefix, &QueueName::new("mail.v2").unwrap());
            for (name, key) in every_queue_key(&keys) {
                assert_eq!(
                    parse(prefix, &name),
                    Some(ParsedKey::Queue {
                        queue: "mail.v2",
                        key
                    }),
                    "{name}"
                );
            }
            let registry = queues_registry(prefix);
            assert_eq!(parse(prefix, &registry), Some(ParsedKey::QueueRegistry));
            let cache = CacheNamespace::new("users").unwrap();
            let value = format!("{}user:42", cache_base(prefix, &cache));
            assert_eq!(
                parse(prefix, &value),
                Some(ParsedKey::Cache { namespace: "users" })
            );
        }
    }

    #[test]
    fn keys_that_plimsoll_did_not_name_are_not_parsed() {
        for key in [
            "plimsoll",
            "plimsoll:{mail}",
            "plimsoll:{mail}:jobs:extra",
            "plimsoll:{mail}:waiting:10",
            "plimsoll:{mail}:active",
            "plimsoll:{ma:il}:jobs",
            "plimsoll:cache:users:",
            "plimsoll:cache:bad ns:k",
            "plimsollx:{mail}:jobs",
            "other:{mail}:jobs",
            "bull:mail:42",
        ] {
            assert_eq!(parse("plimsoll", key), None, "{key}");
        }
        // The prefix is matched whole: a queue of prefix "a" is not one of "a:b".
        assert_eq!(parse("a:b", "a:{mail}:jobs"), None);
    }

    #[test]
    fn cache_keys_are_prefixed_by_namespace() {
        let ns = CacheNamespace::new("users").unwrap();
        assert_eq!(cache_base("plimsoll", &ns), "plimsoll:cache:users:");
        for bad in ["", "a:b", "a{b}", &"x".repeat(65)] {
            let err = CacheNamespace::new(bad).unwrap_err();
            assert!(err.to_string().contains("cache namespace"), "{err}");
        }
    }

    #[test]
    fn queue_names_are_checked() {
        assert!(QueueName::new("webhooks.github-v2_x").is_ok());
        assert!(QueueName::new(".a").is_ok());
        assert!(QueueName::new("a..").is_ok());
        for bad in ["", "a{b}", "a:b", "a b", &"x".repeat(65), ".", "..", "..."] {
            let err = QueueName::new(bad).unwrap_err();
            assert_eq!(err.kind(), crate::ErrorKind::InvalidInput, "{bad:?}");
        }
    }
}
