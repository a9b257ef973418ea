//! The fetch loop: leases jobs in batches and starts a task per job while a
//! concurrency slot is free.
//!
//! It keeps `concurrency + prefetch` jobs leased, more while fast handlers
//! would otherwise wait for fetches (see [`Pacing`]; never more than
//! `MAX_IN_HAND`). A fetch starts when the jobs in hand fall to half the
//! surplus over `concurrency`, and runs while handlers keep working, so a
//! finishing handler finds its next job in memory. When a fetch
//! comes back empty, or short (nothing more was waiting) while jobs trickle
//! in slower than one per fetch round trip, the loop waits on the queue's
//! wake-up list (`BLPOP` on a connection of its own) for at most the poll
//! interval: every script that makes a job ready pushes a token there.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::lease::{Lease, LeaseKey};
use super::settler::Settle;
use super::{Handler, MAX_FETCH, MAX_IN_HAND, Shared, run_job};
use crate::clock::ms;
use crate::connection::Redis;
use crate::error::{Error, Result};
use crate::queue::scripts::calls;
use crate::service::error_backoff;

type Fetched = Vec<(LeaseKey, Vec<u8>)>;

/// What one fetch brought back.
struct Fetch {
    /// The leased jobs, with their records.
    jobs: Fetched,
    /// Fewer jobs were leased than asked for: the waiting lists ran dry.
    drained: bool,
    /// When the fetch was sent: its leases last a lease from then.
    sent_at: Instant,
}

/// Fetches of at most this many jobs get their records in the script's
/// reply; larger ones read them with one HMGET after it. On a quiet queue a
/// fetch leases a job or two, and the second round trip was most of the
/// time between enqueue and handler; in a batch, records passed through Lua
/// cost Redis more than HMGET does.
const INLINE_RECORDS: usize = 4;

/// Runs until `stop`; returns the leases of jobs leased but never started,
/// oldest first.
pub(super) async fn run(
    shared: Arc<Shared>,
    handler: Arc<dyn Handler>,
    settle: mpsc::UnboundedSender<Settle>,
    stop: CancellationToken,
) -> Vec<LeaseKey> {
    let mut pacing = Pacing::new(shared.config.concurrency + shared.config.prefetch);
    let mut fetch_started = Instant::now();
    // Jobs buffered or running when the last fetch started.
    let mut in_hand_at_fetch = 0;
    let mut buffer: VecDeque<(LeaseKey, Vec<u8>)> = VecDeque::new();
    let mut tasks: Vec<(LeaseKey, JoinHandle<()>)> = Vec::new();
    let mut fetching: Option<BoxFuture<'static, Result<Fetch>>> = None;
    let mut waiting: Option<BoxFuture<'static, (Option<Redis>, Result<()>)>> = None;
    let mut pause: Option<Pin<Box<tokio::time::Sleep>>> = None;
    let mut waker_conn: Option<Redis> = None;
    let mut idle = false;
    let mut failures = 0u32;

    loop {
        // Start every buffered job a slot is free for.
        while !buffer.is_empty() {
            let Ok(permit) = shared.slots.clone().try_acquire_owned() else {
                break;
            };
            let (key, rec) = buffer.pop_front().expect("checked non-empty");
            let task = tokio::spawn(run_job(
                shared.clone(),
                handler.clone(),
                key,
                rec,
                settle.clone(),
                permit,
            ));
            tasks.push((key, task));
        }
        pacing.started(tasks.len() as u64);
        keep_tasks(&shared, &mut tasks);
        if stop.is_cancelled() {
            break;
        }
        if fetching.is_none() && waiting.is_none() && pause.is_none() {
            if idle {
                waiting = Some(Box::pin(wait_for_work(shared.clone(), waker_conn.take())));
            } else {
                // Jobs whose outcome waits to be written count against the
                // worker's hard bound, not against its concurrency: a handler
                // that finished has made room.
                let running = shared.config.concurrency - shared.slots.available_permits();
                let target = pacing.target();
                let low_water = target.saturating_sub(shared.config.concurrency) / 2;
                let room = target
                    .saturating_sub(buffer.len() + running)
                    .min(MAX_IN_HAND.saturating_sub(shared.leases().len()));
                if buffer.len() <= low_water && room > 0 {
                    fetch_started = Instant::now();
                    in_hand_at_fetch = buffer.len() + running;
                    fetching = Some(Box::pin(fetch(shared.clone(), room.min(MAX_FETCH))));
                }
            }
        }

        tokio::select! {
            biased;
            _ = stop.cancelled() => break,
            result = poll_some(&mut fetching) => {
                fetching = None;
                match result {
                    Ok(Fetch { jobs, drained, sent_at }) => {
                        failures = 0;
                        // Handlers ran out of jobs while a full fetch was
                        // on its way: the worker keeps too little in hand.
                        // (A fetch that started with nothing in hand, as the
                        // first does, says nothing about that.) Plenty left
                        // when it came: it keeps more than it needs.
                        let idle_slots = shared.slots.available_permits() > 0;
                        let ran_dry = in_hand_at_fetch > 0 && buffer.is_empty() && idle_slots;
                        let supply = if ran_dry && !drained {
                            Supply::Starved
                        } else if buffer.len() >= jobs.len() {
                            Supply::Ample
                        } else {
                            Supply::Enough
                        };
                        pacing.fetched(fetch_started.elapsed(), supply);
                        // Fewer jobs than asked for: nothing was left
                        // waiting, and whatever comes next brings a wake-up
                        // token. Wait for it, unless jobs come in fast enough
                        // that the next fetch would find some anyway: the
                        // token would then only add a round trip.
                        idle = jobs.is_empty() || (drained && pacing.per_fetch() < 1.0);
                        accept(&shared, &jobs, sent_at);
                        buffer.extend(jobs);
                    }
                    Err(err) => {
                        pacing.fetched(fetch_started.elapsed(), Supply::Enough);
                        failures += 1;
                        tracing::warn!(worker = %shared.id, error = %err, "fetch failed; backing off");
                        pause = Some(Box::pin(tokio::time::sleep(error_backoff(failures))));
                    }
                }
            }
            (conn, result) = poll_some(&mut waiting) => {
                waiting = None;
                waker_conn = conn;
                idle = false;
                if let Err(err) = result {
                    failures += 1;
                    tracing::warn!(worker = %shared.id, error = %err, "waiting for work failed; backing off");
                    pause = Some(Box::pin(tokio::time::sleep(error_backoff(failures))));
                }
            }
            () = poll_sleep(&mut pause) => pause = None,
            permit = shared.slots.clone().acquire_owned(), if !buffer.is_empty() => {
                let Ok(permit) = permit else { break };
                let (key, rec) = buffer.pop_front().expect("checked non-empty");
                let task = tokio::spawn(run_job(shared.clone(), handler.clone(), key, rec, settle.clone(), permit));
                tasks.push((key, task));
                keep_tasks(&shared, &mut tasks);
                pacing.started(1);
            }
            () = shared.settled.notified(), if buffer.is_empty() && fetching.is_none() && waiting.is_none() => {}
        }
    }

    // A fetch on its way has leased jobs in Redis already: take them, so they
    // are handed back now rather than rescued after their lease.
    if let Some(fetch) = fetching
        && let Ok(Fetch { jobs, sent_at, .. }) = fetch.await
    {
        accept(&shared, &jobs, sent_at);
        buffer.extend(jobs);
    }
    buffer.into_iter().map(|(key, _)| key).collect()
}

/// Files the tasks just started with their leases (one lock for all), so
/// that shutdown can abort a handler that ignores its signal to stop.
fn keep_tasks(shared: &Shared, tasks: &mut Vec<(LeaseKey, JoinHandle<()>)>) {
    if tasks.is_empty() {
        return;
    }
    let mut leases = shared.leases();
    for (key, task) in tasks.drain(..) {
        // Gone already when the job finished (or was dropped) first.
        if let Some(lease) = leases.get_mut(&key) {
            lease.task = Some(task);
        }
    }
}

/// Sizes fetches to the pace handlers start jobs, so that with fast
/// handlers a fetch on its way never leaves them idle: the worker keeps in
/// hand what its handlers start in about three fetch round trips, and never
/// less than `concurrency + prefetch` nor more than [`MAX_IN_HAND`]. With
/// slow handlers the pace is low and the configured amount applies, which
/// keeps jobs for other workers.
///
/// The pace alone adapts slowly when handlers are fast: while the worker
/// keeps little in hand its fetches are small and quick, which makes the
/// pace times the round trip small too, and the handlers idle between
/// fetches hold the measured pace down. So a fetch that finds the handlers
/// idle doubles a floor under the target (as TCP's slow start doubles its
/// window), and a fetch that finds a fetch's worth still in hand lowers it
/// by an eighth.
#[derive(Debug)]
struct Pacing {
    base: usize,
    /// Learnt from idle handlers; at least `base`.
    floor: usize,
    started: u64,
    since: Instant,
    /// Jobs started per second, smoothed.
    rate: f64,
    /// Seconds a fetch takes, smoothed.
    fetch_secs: f64,
}

/// How a fetch found the jobs in hand when it came back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Supply {
    /// Handlers ran out while the fetch was on its way, though the queue had
    /// more.
    Starved,
    /// At least as many left as the fetch brought.
    Ample,
    Enough,
}

/// How often the start rate is re-estimated.
const PACE_PERIOD: Duration = Duration::from_millis(25);
/// Weight of a new estimate in the smoothed rate and fetch time.
const PACE_WEIGHT: f64 = 0.5;
/// Fetch round trips' worth of jobs kept in hand.
const PACE_TRIPS: f64 = 3.0;

impl Pacing {
    fn new(base: usize) -> Self {
        Self {
            base,
            floor: base,
            started: 0,
            since: Instant::now(),
            rate: 0.0,
            fetch_secs: 0.0,
        }
    }

    fn started(&mut self, n: u64) {
        self.started += n;
        let elapsed = self.since.elapsed();
        if elapsed >= PACE_PERIOD {
            let rate = self.started as f64 / elapsed.as_secs_f64();
            self.rate += PACE_WEIGHT * (rate - self.rate);
            self.started = 0;
            self.since = Instant::now();
        }
    }

    fn fetched(&mut self, took: Duration, supply: Supply) {
        self.fetch_secs += PACE_WEIGHT * (took.as_secs_f64() - self.fetch_secs);
        self.floor = match supply {
            Supply::Starved => self.target().saturating_mul(2),
            Supply::Ample => self.floor - self.floor / 8,
            Supply::Enough => self.floor,
        }
        .clamp(self.base, MAX_IN_HAND.max(self.base));
    }

    /// Jobs that start during one fetch round trip at the current pace:
    /// about what a fetch right after one that emptied the queue would find.
    fn per_fetch(&self) -> f64 {
        self.rate * self.fetch_secs
    }

    fn target(&self) -> usize {
        let paced = (self.per_fetch() * PACE_TRIPS).ceil() as usize;
        self.base.max(paced).max(self.floor).min(MAX_IN_HAND)
    }
}

/// Records the leases of fetched jobs.
fn accept(shared: &Shared, jobs: &Fetched, sent_at: Instant) {
    let mut leases = shared.leases();
    for (key, _) in jobs {
        leases.insert(*key, Lease::new(sent_at));
    }
    drop(leases);
    shared
        .counters
        .fetched
        .fetch_add(jobs.len() as u64, std::sync::atomic::Ordering::Relaxed);
}

/// One call of `fetch.lua` (leases), then, for more than [`INLINE_RECORDS`]
/// jobs, the records by a plain HMGET.
///
/// When the reply is lost (the connection broke, the HMGET failed), the
/// leases stay in the worker's `active` hash unknown to it; the heartbeat
/// leaves them unrenewed and scores the worker by them, so the rescuer puts
/// them back once they lapse.
async fn fetch(shared: Arc<Shared>, count: usize) -> Result<Fetch> {
    shared.queue.check_redis().await?;
    shared.queue.ensure_clock().await?;
    let keys = shared.queue.keys();
    // Drawn here, not counted in Redis: see fetch.lua. Never 0, which the
    // script answers when it leased nothing.
    let token: u64 = rand::random_range(1..=u64::MAX);
    let call = calls::fetch(
        keys,
        &shared.active_key,
        shared.now_ms(),
        count,
        &shared.id,
        ms(shared.config.lease),
        INLINE_RECORDS,
        token,
    );
    let mut redis = shared.queue.redis().clone();
    let sent_at = Instant::now();
    let (ids, mut records, _token): (Vec<u64>, Vec<Option<Vec<u8>>>, u64) =
        call.invoke(&redis).await?;
    let drained = ids.len() < count;
    if ids.is_empty() {
        return Ok(Fetch {
            jobs: Vec::new(),
            drained,
            sent_at,
        });
    }
    if records.is_empty() {
        records = redis::cmd("HMGET")
            .arg(keys.jobs())
            .arg(&ids)
            .query_async(&mut redis)
            .await
            .map_err(Error::from)?;
    }
    // A record can only be missing if the job was cancelled in the instant
    // since the lease was taken (the cancel removed the lease too).
    let jobs = ids
        .into_iter()
        .zip(records)
        .filter_map(|(id, rec)| rec.map(|rec| (LeaseKey { id, token }, rec)))
        .collect();
    Ok(Fetch {
        jobs,
        drained,
        sent_at,
    })
}

/// Waits for a wake-up token, or the poll interval. Hands the connection
/// back so the next wait reuses it.
async fn wait_for_work(shared: Arc<Shared>, conn: Option<Redis>) -> (Option<Redis>, Result<()>) {
    let poll = shared.config.poll_interval;
    let conn = match conn {
        Some(conn) => conn,
        // Blocking commands get a connection of their own, with a reply
        // timeout beyond the block.
        None => match shared
            .queue
            .redis()
            .dedicated(Some(poll + Duration::from_secs(5)))
            .await
        {
            Ok(conn) => conn,
            Err(err) => return (None, Err(err)),
        },
    };
    let result: Result<Option<(String, String)>> = conn
        .query(
            redis::cmd("BLPOP")
                .arg(shared.queue.keys().notify())
                .arg(poll.as_secs_f64()),
        )
        .await;
    match result {
        Ok(_) => (Some(conn), Ok(())),
        Err(err) => (None, Err(err)),
    }
}

async fn poll_some<T>(future: &mut Option<BoxFuture<'static, T>>) -> T {
    match future {
        Some(future) => future.await,
        None => std::future::pending().await,
    }
}

async fn poll_sleep(sleep: &mut Option<Pin<Box<tokio::time::Sleep>>>) {
    match sleep {
        Some(sleep) => sleep.as_mut().await,
        None => std::future::pending::<()>().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn running_dry_doubles_the_target_and_a_surplus_lowers_it_to_the_base() {
        let mut pacing = Pacing::new(100);
        let trip = Duration::from_micros(300);
        assert_eq!(pacing.target(), 100);
        pacing.fetched(trip, Supply::Enough);
        assert_eq!(pacing.target(), 100);
        let grown: Vec<usize> = (0..4)
            .map(|_| {
                pacing.fetched(trip, Supply::Starved);
                pacing.target()
            })
            .collect();
        assert_eq!(grown, [200, 400, 800, 1600]);
        for _ in 0..10 {
            pacing.fetched(trip, Supply::Starved);
        }
        assert_eq!(pacing.target(), MAX_IN_HAND, "never past the hard bound");
        pacing.fetched(trip, Supply::Ample);
        assert_eq!(pacing.target(), MAX_IN_HAND - MAX_IN_HAND / 8);
        for _ in 0..100 {
            pacing.fetched(trip, Supply::Ample);
        }
        assert_eq!(pacing.target(), 100, "back to concurrency + prefetch");
    }
}
