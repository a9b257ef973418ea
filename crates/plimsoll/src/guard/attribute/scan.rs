//! Walking a keyspace within a budget.
//!
//! Each primary is walked with `SCAN … COUNT n`, never `KEYS`: one call
//! examines about `n` buckets and returns, so Redis serves other clients in
//! between. Every key is classified into its family; a sample of each
//! family is measured with `MEMORY USAGE` (and `PTTL`, `TYPE`), pipelined.
//!
//! **Sampling.** SCAN visits keys in hash-table order, which is unrelated to
//! their names, so the first keys of a family that the walk meets are a
//! random sample of that family. Each family gets its first
//! `samples_per_family` keys measured, and more (up to
//! `max_samples_per_family`) while the standard error of its mean size is
//! above `target_relative_error`. A family's bytes are its key count times
//! its mean sampled size; the stated error is the 95% interval from the
//! sample variance (with the finite-population correction when the walk is
//! complete). Each key is measured as Redis counts it, exactly up to
//! 20,000 elements (`usage.rs`: `MEMORY USAGE` without `SAMPLES` guesses a
//! hash from five of its fields, the same five in every key). Sampling goes
//! on while the sample is too skewed for a normal interval (Cochran's
//! rule), and BullMQ job hashes are sampled by state (see `report.rs`).
//!
//! **Large keyspaces.** The walk stops after `max_keys` keys or
//! `max_duration` per node; because the walk order is random with respect
//! to names, the keys seen are a sample of the keyspace, and counts are
//! scaled by `DBSIZE / keys seen` (the error then includes the binomial
//! error of the count). 100 million keys are covered by a 5 million key
//! sample in minutes, not hours.
//!
//! **Budget.** Each node's walk is paced by two token buckets: commands per
//! second (`budget`; a SCAN counts as one, each measured key as three) and
//! keys visited per second (`keys_per_sec`), because a SCAN that returns
//! 200 keys costs Redis far more than one small command. Tokens accrue for
//! the time that really passed, so the timer's millisecond rounding does
//! not slow the walk. When a SCAN's round trip exceeds the busy threshold
//! (4× the fastest seen, and at least [`DEFAULT_BUSY_LATENCY`]), both rates
//! halve; they recover by 5% per quick call. The report states the
//! commands sent, the rate kept and the number of back-offs.
//!
//! **Politeness.** Calls are short (`SCAN COUNT 5`, two measured keys per
//! pipeline) so that a request arriving meanwhile waits microseconds, and
//! the walk runs on a thread and a connection of its own at the lowest CPU
//! priority (`scan_node_apart`).

use super::pacer::{Pacer, retry_busy};
pub(crate) use super::tally::{JobState, Moments, Tally};
use std::collections::HashMap;
use std::time::{Duration, Instant};

use redis::Value;

use super::families::{Classifier, DEFAULT_MAX_SIBLINGS, Family, Role};
use super::overhead::OutsideKeys;
use super::usage;
use crate::connection::Primary;
use crate::error::{Error, ErrorKind, Result};

pub use super::config::*;

/// Families beyond this many (after merging) are pooled as `<other>`.
const HARD_FAMILY_CAP: usize = 20_000;

/// The walk of one node.
#[derive(Debug, Clone)]
pub(crate) struct NodeScan {
    pub node: String,
    pub dbsize: u64,
    pub scanned: u64,
    pub complete: bool,
    pub commands: u64,
    pub backoffs: u64,
    pub duration: Duration,
    pub used_memory: u64,
    /// Redis' memory outside its keys (None: `MEMORY STATS` refused).
    pub outside: Option<OutsideKeys>,
    pub tallies: HashMap<String, Tally>,
}

/// Walks one primary on a thread of its own (`plimsoll-walk`), with a
/// single-threaded runtime and a connection of its own, at the lowest CPU
/// priority (`SCHED_IDLE`) when `config.idle_priority` is on.
///
/// Why: the walk spends CPU on every key (reading the reply, classifying
/// the name) for tens of seconds. On a host it shares with Redis or with
/// the application, a runnable walker delays whichever of them wakes next
/// by up to a scheduler slice; a `SCHED_IDLE` thread is preempted at once
/// by any ordinary one, so the walk only uses CPU nobody else wants (and
/// on a host with none to spare, it slows down instead of the service).
/// Its own connection keeps a walk's replies from queueing ahead of the
/// application's on a shared one, and its own runtime answers each round
/// trip on one thread instead of handing it between threads.
///
/// Dropping the returned future stops the walk at its next round trip.
pub(crate) async fn scan_node_apart(
    primary: &Primary,
    config: &AttributeConfig,
) -> Result<NodeScan> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let redis = primary.redis.clone();
    let address = primary.address.clone();
    let config = config.clone();
    std::thread::Builder::new()
        .name("plimsoll-walk".into())
        .spawn(move || {
            if config.idle_priority {
                lower_this_threads_priority();
            }
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime,
                Err(err) => {
                    let _ = tx.send(Err(Error::new(
                        ErrorKind::System,
                        format!("cannot start the walk's runtime: {err}"),
                    )));
                    return;
                }
            };
            runtime.block_on(async move {
                let walk = async {
                    let own = redis.separate().await?;
                    let primary = Primary {
                        address,
                        redis: own,
                    };
                    let mut classifier = Classifier::new(&config.bullmq_prefixes)
                        .with_plimsoll_prefixes(&config.plimsoll_prefixes);
                    scan_node(&primary, &config, &mut classifier).await
                };
                let mut tx = tx;
                tokio::select! {
                    result = walk => { let _ = tx.send(result); }
                    () = tx.closed() => {} // the caller went away
                }
            });
        })
        .map_err(|err| {
            Error::new(
                ErrorKind::System,
                format!("cannot start the walk's thread: {err}"),
            )
        })?;
    rx.await.map_err(|_| {
        Error::new(
            ErrorKind::System,
            "the walk's thread ended without a result (it panicked; see the log)",
        )
    })?
}

/// Puts the calling thread in Linux' `SCHED_IDLE` class (elsewhere: the
/// lowest priority the platform has). A failure is logged, not fatal: the
/// walk is still paced, only less polite to its neighbours.
fn lower_this_threads_priority() {
    use thread_priority::ThreadPriority;
    #[cfg(target_os = "linux")]
    let result = thread_priority::unix::set_thread_priority_and_policy(
        thread_priority::unix::thread_native_id(),
        ThreadPriority::Min,
        thread_priority::unix::ThreadSchedulePolicy::Normal(
            thread_priority::unix::NormalThreadSchedulePolicy::Idle,
        ),
    );
    #[cfg(not(target_os = "linux"))]
    let result = thread_priority::set_current_thread_priority(ThreadPriority::Min);
    if let Err(err) = result {
        tracing::warn!(error = ?err, "the memory walk could not lower its CPU priority");
    }
}

/// Walks one primary.
pub(crate) async fn scan_node(
    primary: &Primary,
    config: &AttributeConfig,
    classifier: &mut Classifier,
) -> Result<NodeScan> {
    let started = Instant::now();
    let redis = &primary.redis;
    let mut pacer = Pacer::new(config.budget, config.busy_latency);
    // Keys visited, paced separately (see DEFAULT_KEYS_PER_SECOND); its
    // back-offs follow the command pacer's.
    let mut walk = Pacer::new(config.keys_per_sec, config.busy_latency);
    pacer.take(3).await;
    let dbsize: u64 = redis.query(&redis::cmd("DBSIZE")).await?;
    let info = redis.info(&["memory"]).await?;
    let used_memory = info.count("used_memory");
    // Best effort: a managed Redis may refuse MEMORY STATS; the report then
    // says it cannot account for memory outside the keys.
    let outside = match redis
        .query::<Value>(redis::cmd("MEMORY").arg("STATS"))
        .await
    {
        Ok(stats) => Some(OutsideKeys::from_memory_stats(
            &stats,
            used_memory,
            info.count("used_memory_rss"),
        )),
        Err(err) => {
            tracing::warn!(node = %primary.address, error = %err, "MEMORY STATS refused");
            None
        }
    };
    let mut tallies: HashMap<String, Tally> = HashMap::new();
    let mut cursor: u64 = 0;
    let mut scanned = 0u64;
    let mut complete = false;
    let mut pending: Vec<(Vec<u8>, String)> = Vec::new();
    let mut pending_per_family: HashMap<String, u64> = HashMap::new();
    loop {
        walk.take(u64::from(config.scan_count)).await;
        pacer.take(1).await;
        let sent = Instant::now();
        let reply: (u64, Vec<Vec<u8>>) = retry_busy(|| async {
            redis
                .query(
                    redis::cmd("SCAN")
                        .arg(cursor)
                        .arg("COUNT")
                        .arg(config.scan_count),
                )
                .await
        })
        .await?;
        let round_trip = sent.elapsed();
        pacer.observe(round_trip);
        walk.observe(round_trip);
        cursor = reply.0;
        for key in reply.1 {
            scanned += 1;
            let family = classifier.classify(&key);
            let full = tallies.len() >= HARD_FAMILY_CAP && !tallies.contains_key(&family.pattern);
            let tally = if full {
                tallies
                    .entry("<other>".into())
                    .or_insert_with(|| Tally::new(other_family()))
            } else {
                tallies
                    .entry(family.pattern.clone())
                    .or_insert_with(|| Tally::new(family))
            };
            tally.keys += 1;
            let pattern = tally.family.pattern.clone();
            let waiting = pending_per_family.get(&pattern).copied().unwrap_or(0);
            if tally.wants_sample(waiting, config) {
                *pending_per_family.entry(pattern.clone()).or_default() += 1;
                pending.push((key, pattern));
            }
            if pending.len() >= config.sample_batch {
                measure(redis, config, &mut pacer, &mut pending, &mut tallies).await?;
                pending_per_family.clear();
            }
        }
        if tallies.len() > config.max_families {
            merge_rare(classifier, &mut tallies);
        }
        // Classifying a batch is CPU work: let other tasks of this process
        // (an application's requests, when the guard runs inside it) go first.
        tokio::task::yield_now().await;
        if cursor == 0 {
            complete = true;
            break;
        }
        if scanned >= config.max_keys || started.elapsed() >= config.max_duration {
            break;
        }
    }
    measure(redis, config, &mut pacer, &mut pending, &mut tallies).await?;
    Ok(NodeScan {
        node: primary.address.clone(),
        dbsize: dbsize.max(if complete { 0 } else { scanned }),
        scanned,
        complete,
        commands: pacer.commands,
        backoffs: pacer.backoffs,
        duration: started.elapsed(),
        used_memory,
        outside,
        tallies,
    })
}

fn other_family() -> Family {
    Classifier::default().classify(b"<other>")
}

/// Merges families that differ by one literal segment into `<*>` families.
fn merge_rare(classifier: &mut Classifier, tallies: &mut HashMap<String, Tally>) {
    let generic: Vec<String> = tallies
        .values()
        .filter(|t| t.family.layout == super::families::Layout::Generic)
        .map(|t| t.family.pattern.clone())
        .collect();
    let merges = classifier.widen(generic.iter().map(String::as_str), DEFAULT_MAX_SIBLINGS);
    for (from, to) in merges {
        if let Some(tally) = tallies.remove(&from) {
            tallies
                .entry(to.clone())
                .or_insert_with(|| Tally::new(classifier.classify(to.as_bytes())))
                .absorb(tally);
        }
    }
}

/// Measures the pending keys (see `usage.rs`) and, for BullMQ job hashes,
/// looks their ids up in the queue's completed and failed sets, at once.
async fn measure(
    redis: &crate::Redis,
    config: &AttributeConfig,
    pacer: &mut Pacer,
    pending: &mut Vec<(Vec<u8>, String)>,
    tallies: &mut HashMap<String, Tally>,
) -> Result<()> {
    if pending.is_empty() {
        return Ok(());
    }
    let keys: Vec<Vec<u8>> = pending.iter().map(|(key, _)| key.clone()).collect();
    let lookups: Vec<Option<JobLookup>> = pending
        .iter()
        .map(|(key, pattern)| {
            tallies
                .get(pattern)
                .and_then(|t| job_state_sets(&t.family, key))
        })
        .collect();
    let lookup_count = lookups.iter().flatten().count() as u64;
    pacer
        .take(usage::COMMANDS_PER_KEY * keys.len() as u64 + 2 * lookup_count)
        .await;
    let (usages, states) = futures::try_join!(
        usage::measure_keys(redis, &keys, config.exact_elements),
        job_states(redis, &lookups),
    )?;
    let mut extra = 0;
    for (((_, pattern), usage), state) in pending.drain(..).zip(usages).zip(states) {
        let (Some(tally), Some(usage)) = (tallies.get_mut(&pattern), usage) else {
            continue; // the key went away between SCAN and now
        };
        extra += usage.extra_cost(config.exact_elements);
        let bytes = usage.bytes as f64;
        tally.sizes.add(bytes);
        if !usage.exact {
            tally.estimated.add(bytes);
        }
        if usage.no_ttl {
            tally.no_ttl += 1;
        }
        if let Some(state) = state {
            tally.by_state[state as usize].add(bytes);
        }
        *tally.types.entry(usage.kind).or_default() += 1;
    }
    // Big keys cost Redis more than a command: the walk pays for them
    // afterwards, slowing down the calls that follow.
    if extra > 0 {
        pacer.take(extra).await;
    }
    Ok(())
}

/// For a BullMQ job hash `<prefix>:<queue>:<id>` or its log
/// `<prefix>:<queue>:<id>:logs`: the job's id and its queue's completed
/// and failed sets. (On a cluster BullMQ needs a hash tag in its prefix,
/// so the sets sit on the same node as the job.)
fn job_state_sets(family: &Family, key: &[u8]) -> Option<JobLookup> {
    if family.layout != super::families::Layout::BullMq
        || !matches!(family.role, Role::JobHashes | Role::JobLogs)
    {
        return None;
    }
    let base = format!(
        "{}:{}:",
        family.prefix.as_deref()?,
        family.queue.as_deref()?
    );
    let rest = std::str::from_utf8(key).ok()?.strip_prefix(&base)?;
    let id = match family.role {
        Role::JobLogs => rest.strip_suffix(":logs")?,
        _ => rest,
    };
    (!id.is_empty()).then(|| JobLookup {
        id: id.to_string(),
        completed: format!("{base}completed"),
        failed: format!("{base}failed"),
    })
}

/// Where to look a sampled job up.
struct JobLookup {
    id: String,
    completed: String,
    failed: String,
}

/// `ZSCORE` of each job id in its completed and failed sets (one pipeline).
async fn job_states(
    redis: &crate::Redis,
    lookups: &[Option<JobLookup>],
) -> Result<Vec<Option<JobState>>> {
    let mut pipe = redis::pipe();
    pipe.ignore_errors();
    let mut asked = false;
    for lookup in lookups.iter().flatten() {
        pipe.cmd("ZSCORE").arg(&lookup.completed).arg(&lookup.id);
        pipe.cmd("ZSCORE").arg(&lookup.failed).arg(&lookup.id);
        asked = true;
    }
    let replies = if asked {
        usage::query_pipe(redis, &pipe).await?
    } else {
        Vec::new()
    };
    let mut replies = replies.chunks(2);
    Ok(lookups
        .iter()
        .map(|lookup| {
            lookup.as_ref()?;
            match replies.next()? {
                // A set that could not be asked (another node, another
                // type): the state is unknown, and the job is left out of
                // the split by state rather than called waiting.
                [Value::ServerError(_), _] | [_, Value::ServerError(_)] => None,
                [Value::Nil, Value::Nil] => Some(JobState::Other),
                [Value::Nil, _] => Some(JobState::Failed),
                _ => Some(JobState::Completed),
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_settings_are_named() {
        let err = AttributeConfig {
            budget: 1,
            ..AttributeConfig::default()
        }
        .validate()
        .unwrap_err();
        assert!(err.to_string().contains("budget"), "{err}");
    }
}
