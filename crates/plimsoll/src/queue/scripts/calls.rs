//! One builder per script call: the KEYS and ARGV each script's header
//! names, in its order, built here and nowhere else, with each script's
//! per-call caps beside it.
//!
//! A builder takes what the call is about (a queue's keys, a worker's
//! active hash, times, bounds) and returns a [`Call`] holding the fixed
//! part of the script's KEYS and ARGV. Scripts whose header ends in an open
//! range (`ARGV[5..]`: the leases of `complete.lua`, the jobs of
//! `fail.lua`) get that tail from the caller through [`Call::arg`], within
//! the cap named here. The tests read every script's header and check each
//! builder against it, so a script and its callers cannot drift apart
//! unnoticed.
//!
//! `enqueue.lua`, `reserve_ids.lua` and `register.lua` are sent as
//! `EVALSHA` commands of their own (inside a transaction, or loaded on one
//! node: see the parent module), so their builders return a [`Cmd`].

use redis::{Cmd, FromRedisValue, Script, ScriptInvocation, ToRedisArgs};

use super::SCRIPTS;
use crate::clock::ms;
use crate::connection::Redis;
use crate::error::Result;
use crate::keyspace::{ID_RUN_KEY_TTL, MAX_ID_RUNS, PRIORITY_LEVELS, QueueKeys};

/// The most ids one `complete.lua` call settles (`lease_groups(5, 1000)`).
pub(crate) const COMPLETE_MAX_IDS: usize = 1000;
/// The most jobs one `fail.lua` call settles.
pub(crate) const FAIL_MAX_JOBS: usize = 1000;
/// The most leases one `heartbeat.lua` call renews.
pub(crate) const HEARTBEAT_MAX_LEASES: usize = 10_000;
/// The most jobs one `fetch.lua` call leases.
pub(crate) const FETCH_MAX_JOBS: usize = 1000;
/// The most jobs one `promote.lua` call moves.
pub(crate) const PROMOTE_MAX_JOBS: usize = 1000;
/// The most ids one `retry_dead.lua` or `purge_dead.lua` call takes.
pub(crate) const DEAD_MAX_IDS: usize = 1000;
/// The largest budget `trim.lua` takes per set.
pub(crate) const TRIM_MAX_BUDGET: usize = 10_000;
/// KEYS of `enqueue.lua` before the idempotency keys: jobs, scheduled,
/// stats, notify, the waiting lists and the batch's id run key.
pub(crate) const ENQUEUE_FIXED_KEYS: usize = 4 + PRIORITY_LEVELS + 1;

/// One call of a queue script, with the count of KEYS and ARGV entries it
/// was given (what the tests check against the script's header).
pub(crate) struct Call<'a> {
    invocation: ScriptInvocation<'a>,
    keys: usize,
    args: usize,
}

impl<'a> Call<'a> {
    fn new(script: &'a Script) -> Self {
        Self {
            invocation: script.prepare_invoke(),
            keys: 0,
            args: 0,
        }
    }

    fn key<T: ToRedisArgs>(&mut self, key: T) -> &mut Self {
        self.keys += key.num_of_args();
        self.invocation.key(key);
        self
    }

    /// The queue's ten waiting lists, priority 0 first: the `waiting` block
    /// most scripts take.
    fn waiting(&mut self, keys: &QueueKeys) -> &mut Self {
        for list in keys.waiting_all() {
            self.key(list);
        }
        self
    }

    /// Adds an ARGV entry (or several, for a slice): the open tail of a
    /// script whose header ends in one.
    pub(crate) fn arg<T: ToRedisArgs>(&mut self, arg: T) -> &mut Self {
        self.args += arg.num_of_args();
        self.invocation.arg(arg);
        self
    }

    /// Runs the call (by SHA; loading the script on `NOSCRIPT`).
    pub(crate) async fn invoke<T: FromRedisValue>(&self, redis: &Redis) -> Result<T> {
        Ok(self.invocation.invoke_async(&mut redis.clone()).await?)
    }
}

/// `fetch.lua`: leases up to `count` jobs (at most [`FETCH_MAX_JOBS`]) to
/// the worker whose active hash is `active`, under fencing `token`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn fetch<'a>(
    keys: &QueueKeys,
    active: &str,
    now: u64,
    count: usize,
    worker: &str,
    lease_ms: u64,
    inline_records: usize,
    token: u64,
) -> Call<'a> {
    debug_assert!(count <= FETCH_MAX_JOBS);
    let mut call = Call::new(&SCRIPTS.fetch);
    call.key(keys.meta())
        .key(keys.workers())
        .key(active)
        .key(keys.notify())
        .waiting(keys)
        .key(keys.jobs())
        .arg(now)
        .arg(count)
        .arg(worker)
        .arg(lease_ms)
        .arg(inline_records)
        .arg(token);
    call
}

/// `complete.lua`, before its lease groups (at most [`COMPLETE_MAX_IDS`]
/// ids in all, added by the caller).
pub(crate) fn complete<'a>(
    keys: &QueueKeys,
    active: &str,
    now: u64,
    completed_bounds: &[u64; 3],
) -> Call<'a> {
    let mut call = Call::new(&SCRIPTS.complete);
    call.key(keys.jobs())
        .key(active)
        .key(keys.stats())
        .key(keys.completed())
        .arg(now)
        .arg(&completed_bounds[..]);
    call
}

/// `fail.lua`, before its jobs (four values each, at most
/// [`FAIL_MAX_JOBS`], added by the caller).
pub(crate) fn fail<'a>(
    keys: &QueueKeys,
    active: &str,
    now: u64,
    dead_bounds: &[u64; 3],
) -> Call<'a> {
    let mut call = Call::new(&SCRIPTS.fail);
    call.key(keys.jobs())
        .key(active)
        .key(keys.stats())
        .key(keys.scheduled())
        .key(keys.dead())
        .key(keys.notify())
        .waiting(keys)
        .arg(now)
        .arg(&dead_bounds[..]);
    call
}

/// `hand_back.lua`, before its lease groups (added by the caller, at most
/// [`FETCH_MAX_JOBS`]: what one fetch can have leased).
pub(crate) fn hand_back<'a>(keys: &QueueKeys, active: &str) -> Call<'a> {
    let mut call = Call::new(&SCRIPTS.hand_back);
    call.key(keys.jobs())
        .key(active)
        .key(keys.notify())
        .waiting(keys);
    call
}

/// `heartbeat.lua`, before its leases (id and token each, at most
/// [`HEARTBEAT_MAX_LEASES`], added by the caller).
pub(crate) fn heartbeat<'a>(
    keys: &QueueKeys,
    active: &str,
    worker: &str,
    deadline: u64,
) -> Call<'a> {
    let mut call = Call::new(&SCRIPTS.heartbeat);
    call.key(keys.workers())
        .key(active)
        .arg(worker)
        .arg(deadline);
    call
}

/// `rescue.lua` for one worker whose leases expired.
pub(crate) fn rescue<'a>(
    keys: &QueueKeys,
    worker: &str,
    now: u64,
    dead_bounds: &[u64; 3],
) -> Call<'a> {
    let mut call = Call::new(&SCRIPTS.rescue);
    call.key(keys.workers())
        .key(keys.active(worker))
        .key(keys.jobs())
        .key(keys.stats())
        .key(keys.dead())
        .key(keys.notify())
        .waiting(keys)
        .arg(now)
        .arg(worker)
        .arg(&dead_bounds[..]);
    call
}

/// `promote.lua`: moves at most `limit` (≤ [`PROMOTE_MAX_JOBS`]) due jobs.
pub(crate) fn promote<'a>(keys: &QueueKeys, now: u64, limit: usize) -> Call<'a> {
    debug_assert!(limit <= PROMOTE_MAX_JOBS);
    let mut call = Call::new(&SCRIPTS.promote);
    call.key(keys.scheduled())
        .key(keys.jobs())
        .key(keys.notify())
        .waiting(keys)
        .arg(now)
        .arg(limit);
    call
}

/// `trim.lua`: at most `budget` (≤ [`TRIM_MAX_BUDGET`]) jobs per set.
pub(crate) fn trim<'a>(
    keys: &QueueKeys,
    now: u64,
    completed_bounds: &[u64; 3],
    dead_bounds: &[u64; 3],
    budget: usize,
) -> Call<'a> {
    debug_assert!(budget <= TRIM_MAX_BUDGET);
    let mut call = Call::new(&SCRIPTS.trim);
    call.key(keys.completed())
        .key(keys.dead())
        .key(keys.jobs())
        .key(keys.stats())
        .arg(now)
        .arg(&completed_bounds[..])
        .arg(&dead_bounds[..])
        .arg(budget);
    call
}

/// `cancel.lua` for job `id`, looking for it in the given active hashes;
/// a handler's own cancel adds its lease token (the one optional ARGV).
pub(crate) fn cancel<'a>(
    keys: &QueueKeys,
    active: impl IntoIterator<Item = String>,
    id: u64,
) -> Call<'a> {
    let mut call = Call::new(&SCRIPTS.cancel);
    call.key(keys.jobs())
        .key(keys.scheduled())
        .key(keys.dead())
        .key(keys.completed())
        .key(keys.stats())
        .waiting(keys);
    for key in active {
        call.key(key);
    }
    call.arg(id);
    call
}

/// `counts.lua`, with the active hashes of the queue's workers.
pub(crate) fn counts<'a>(keys: &QueueKeys, workers: &[String]) -> Call<'a> {
    let mut call = Call::new(&SCRIPTS.counts);
    call.key(keys.meta())
        .key(keys.stats())
        .key(keys.scheduled())
        .key(keys.dead())
        .key(keys.completed())
        .key(keys.workers())
        .waiting(keys);
    for worker in workers {
        call.key(keys.active(worker));
    }
    call
}

/// `inspect_job.lua` for job `id`, with the queue's workers (their active
/// hashes as KEYS, their ids as ARGV, in the same order).
pub(crate) fn inspect_job<'a>(keys: &QueueKeys, id: u64, workers: &[String]) -> Call<'a> {
    let mut call = Call::new(&SCRIPTS.inspect_job);
    call.key(keys.jobs())
        .key(keys.scheduled())
        .key(keys.dead())
        .key(keys.completed());
    for worker in workers {
        call.key(keys.active(worker));
    }
    call.arg(id);
    for worker in workers {
        call.arg(worker);
    }
    call
}

/// `retry_dead.lua`: the given ids, or the oldest `limit` when none
/// (both at most [`DEAD_MAX_IDS`]).
pub(crate) fn retry_dead<'a>(keys: &QueueKeys, limit: usize, ids: &[u64]) -> Call<'a> {
    debug_assert!(limit <= DEAD_MAX_IDS && ids.len() <= DEAD_MAX_IDS);
    let mut call = Call::new(&SCRIPTS.retry_dead);
    call.key(keys.dead())
        .key(keys.jobs())
        .key(keys.stats())
        .key(keys.notify())
        .waiting(keys)
        .arg(limit);
    for id in ids {
        call.arg(*id);
    }
    call
}

/// `purge_dead.lua`: as [`retry_dead`].
pub(crate) fn purge_dead<'a>(keys: &QueueKeys, limit: usize, ids: &[u64]) -> Call<'a> {
    debug_assert!(limit <= DEAD_MAX_IDS && ids.len() <= DEAD_MAX_IDS);
    let mut call = Call::new(&SCRIPTS.purge_dead);
    call.key(keys.dead())
        .key(keys.jobs())
        .key(keys.stats())
        .arg(limit);
    for id in ids {
        call.arg(*id);
    }
    call
}

/// `time.lua`, routed to the queue's node by its `meta` key.
pub(crate) fn time<'a>(keys: &QueueKeys) -> Call<'a> {
    let mut call = Call::new(&SCRIPTS.time);
    call.key(keys.meta());
    call
}

/// `reserve_ids.lua` as an `EVALSHA`: `want` ids for the producer `token`,
/// under the run key `run_key`, dropping the producer's `old_run_key`;
/// `id_runs` keeps [`MAX_ID_RUNS`] runs, each run key lives
/// [`ID_RUN_KEY_TTL`].
pub(crate) fn reserve_ids(
    keys: &QueueKeys,
    run_key: &str,
    old_run_key: &str,
    want: u64,
    token: &str,
    now: u64,
) -> Cmd {
    let mut cmd = redis::cmd("EVALSHA");
    cmd.arg(SCRIPTS.reserve_ids.get_hash())
        .arg(4)
        .arg(keys.meta())
        .arg(keys.id_runs())
        .arg(run_key)
        .arg(old_run_key)
        .arg(want)
        .arg(token)
        .arg(MAX_ID_RUNS)
        .arg(now)
        .arg(ms(ID_RUN_KEY_TTL));
    cmd
}

/// `register.lua` as an `EVALSHA`: adds `queue` to `registry` unless it
/// holds `max_queues` already (or `exempt`).
pub(crate) fn register(registry: &str, queue: &str, max_queues: u64, exempt: bool) -> Cmd {
    let mut cmd = redis::cmd("EVALSHA");
    cmd.arg(SCRIPTS.register.get_hash())
        .arg(1)
        .arg(registry)
        .arg(queue)
        .arg(max_queues)
        .arg(if exempt { "1" } else { "0" });
    cmd
}

/// The fixed head of `enqueue.lua` as an `EVALSHA`: its keys (the
/// idempotency keys after the fixed ones, in the batch's order), `now` and
/// the batch's length; the caller adds the batch's groups.
pub(crate) fn enqueue_head(
    keys: &QueueKeys,
    run_key: &str,
    idempotency_keys: &[&str],
    now: u64,
    jobs: usize,
) -> Cmd {
    let mut cmd = redis::cmd("EVALSHA");
    cmd.arg(SCRIPTS.enqueue.get_hash())
        .arg(ENQUEUE_FIXED_KEYS + idempotency_keys.len())
        .arg(keys.jobs())
        .arg(keys.scheduled())
        .arg(keys.stats())
        .arg(keys.notify())
        .arg(&keys.waiting_all()[..])
        .arg(run_key)
        .arg(idempotency_keys)
        .arg(now)
        .arg(jobs);
    cmd
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keyspace::QueueName;

    /// What a script's header says it takes: KEYS and ARGV entries before
    /// any open range, and whether one ends each list.
    #[derive(Debug, PartialEq, Eq)]
    struct Contract {
        keys: usize,
        open_keys: bool,
        args: usize,
        open_args: bool,
    }

    /// Reads `-- KEYS[1]`, `-- KEYS[7..16]`, `-- KEYS[17..]` (and ARGV)
    /// lines; a "then N values per …" line opens the ARGV list too.
    fn contract(source: &str) -> Contract {
        let mut c = Contract {
            keys: 0,
            open_keys: false,
            args: 0,
            open_args: false,
        };
        for line in source
            .lines()
            .take_while(|l| l.starts_with("--") || l.starts_with("#!"))
        {
            if line.starts_with("-- then ") {
                c.open_args = true;
            }
            for (name, count, open) in [
                ("-- KEYS[", &mut c.keys, &mut c.open_keys),
                ("-- ARGV[", &mut c.args, &mut c.open_args),
            ] {
                let Some(rest) = line.strip_prefix(name) else {
                    continue;
                };
                let range = rest.split(']').next().unwrap();
                match range.split_once("..") {
                    Some((_, "")) => *open = true,
                    Some((_, end)) => *count = (*count).max(end.parse().unwrap()),
                    None => *count = (*count).max(range.parse().unwrap()),
                }
            }
        }
        c
    }

    fn source(file: &str) -> &'static str {
        match file {
            "fetch" => include_str!("../../../lua/queue/fetch.lua"),
            "complete" => include_str!("../../../lua/queue/complete.lua"),
            "fail" => include_str!("../../../lua/queue/fail.lua"),
            "hand_back" => include_str!("../../../lua/queue/hand_back.lua"),
            "heartbeat" => include_str!("../../../lua/queue/heartbeat.lua"),
            "rescue" => include_str!("../../../lua/queue/rescue.lua"),
            "promote" => include_str!("../../../lua/queue/promote.lua"),
            "trim" => include_str!("../../../lua/queue/trim.lua"),
            "cancel" => include_str!("../../../lua/queue/cancel.lua"),
            "counts" => include_str!("../../../lua/queue/counts.lua"),
            "inspect_job" => include_str!("../../../lua/queue/inspect_job.lua"),
            "retry_dead" => include_str!("../../../lua/queue/retry_dead.lua"),
            "purge_dead" => include_str!("../../../lua/queue/purge_dead.lua"),
            "time" => include_str!("../../../lua/queue/time.lua"),
            "reserve_ids" => include_str!("../../../lua/queue/reserve_ids.lua"),
            "register" => include_str!("../../../lua/queue/register.lua"),
            "enqueue" => include_str!("../../../lua/queue/enqueue.lua"),
            other => panic!("no script {other}"),
        }
    }

    /// A builder's call against its script's header: the fixed KEYS and
    /// ARGV exactly, and variable parts only where the header opens a range.
    fn check(file: &str, call: &Call<'_>, extra_keys: usize, extra_args: usize) {
        let c = contract(source(file));
        assert_eq!(call.keys, c.keys + extra_keys, "{file}: KEYS, header {c:?}");
        assert_eq!(call.args, c.args + extra_args, "{file}: ARGV, header {c:?}");
        assert!(
            extra_keys == 0 || c.open_keys,
            "{file}: keys beyond the header"
        );
        assert!(
            extra_args == 0 || c.open_args,
            "{file}: args beyond the header"
        );
    }

    /// An `EVALSHA` command against its script's header: numkeys, then
    /// that many keys, then the fixed arguments.
    fn check_cmd(file: &str, cmd: &Cmd, extra_keys: usize, extra_args: usize) {
        let c = contract(source(file));
        let args: Vec<Vec<u8>> = cmd
            .args_iter()
            .map(|a| match a {
                redis::Arg::Simple(bytes) => bytes.to_vec(),
                _ => Vec::new(),
            })
            .collect();
        assert_eq!(args[0], b"EVALSHA");
        let numkeys: usize = std::str::from_utf8(&args[2]).unwrap().parse().unwrap();
        assert_eq!(
            numkeys,
            c.keys + extra_keys,
            "{file}: numkeys, header {c:?}"
        );
        assert_eq!(
            args.len() - 3 - numkeys,
            c.args + extra_args,
            "{file}: ARGV, header {c:?}"
        );
        assert!(
            extra_keys == 0 || c.open_keys,
            "{file}: keys beyond the header"
        );
    }

    #[test]
    fn every_builder_gives_its_script_what_the_header_names() {
        let keys = QueueKeys::new("plimsoll", &QueueName::new("mail").unwrap());
        let active = keys.active("w1");
        let bounds = [0, 0, 0];
        let workers = ["w1".to_string(), "w2".to_string()];
        check(
            "fetch",
            &fetch(&keys, &active, 1, 10, "w1", 30_000, 4, 7),
            0,
            0,
        );
        check("complete", &complete(&keys, &active, 1, &bounds), 0, 0);
        check("fail", &fail(&keys, &active, 1, &bounds), 0, 0);
        check("hand_back", &hand_back(&keys, &active), 0, 0);
        check("heartbeat", &heartbeat(&keys, &active, "w1", 2), 0, 0);
        check("rescue", &rescue(&keys, "w1", 1, &bounds), 0, 0);
        check("promote", &promote(&keys, 1, 100), 0, 0);
        check("trim", &trim(&keys, 1, &bounds, &bounds, 100), 0, 0);
        // cancel's ARGV[2], a handler's lease token, is its one optional entry.
        let mut c = cancel(&keys, workers.iter().map(|w| keys.active(w)), 42);
        assert_eq!(c.args + 1, contract(source("cancel")).args);
        c.arg(7u64);
        check("cancel", &c, 2, 0);
        check("counts", &counts(&keys, &workers), 2, 0);
        check("inspect_job", &inspect_job(&keys, 42, &workers), 2, 2);
        check("retry_dead", &retry_dead(&keys, 1000, &[1, 2, 3]), 0, 3);
        check("purge_dead", &purge_dead(&keys, 1000, &[1, 2, 3]), 0, 3);
        check("time", &time(&keys), 0, 0);
        check_cmd(
            "reserve_ids",
            &reserve_ids(&keys, "r", "o", 10, "t", 1),
            0,
            0,
        );
        check_cmd(
            "register",
            &register("plimsoll:queues", "mail", 1000, false),
            0,
            0,
        );
        check_cmd(
            "enqueue",
            &enqueue_head(&keys, "r", &["i1", "i2"], 1, 3),
            2,
            0,
        );
    }

    #[test]
    fn headers_are_read_as_written() {
        let c = contract(
            "#!lua\n-- KEYS[1]  a\n-- KEYS[2..11]  b\n-- KEYS[12..]  c\n-- ARGV[1]  d\n-- ARGV[2..4]  e\n-- then 2 values per f\nlocal x = 1\n-- KEYS[99] not the header\n",
        );
        assert_eq!(
            c,
            Contract {
                keys: 11,
                open_keys: true,
                args: 4,
                open_args: true
            }
        );
    }
}
