//! Leases under fault: fencing tokens against stale runs, leases the worker
//! does not know of, renewals that cannot happen, shutdown of handlers that
//! ignore their signal, and clocks that disagree.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use plimsoll::worker::WorkerConfig;
use plimsoll::{
    Clock, Job, JobState, NewJob, Outcome, Queue, QueueConfig, Redis, SystemClock, Worker,
};
use tokio::sync::Notify;

use crate::support::{self, RedisServer, eventually, fast_worker};

const WAIT: Duration = Duration::from_secs(15);

/// The worker's settings for a job whose first run blocks its thread past
/// its timeout (1 s): the heartbeat stops renewing it after 1.3 s, the
/// lease lapses by 1.9 s, and the rescuer puts the job back; the first run
/// returns at 2.6 s, while the second still runs.
fn stuck_first_run() -> WorkerConfig {
    WorkerConfig {
        concurrency: 2,
        prefetch: 0,
        ..fast_worker()
    }
}

/// The outcome of a job's first run, returned after the job was rescued
/// (its handler blocked its thread past timeout and lease), with the
/// second run (if any) still holding the new lease. Returns the queue's
/// totals, the worker's stats and whether the first run was told to stop.
async fn late_first_outcome(
    queue: &Queue,
    stale: Outcome,
    pause_after_lease: bool,
) -> (
    plimsoll::queue::QueueTotals,
    plimsoll::worker::WorkerStats,
    bool,
) {
    let id = queue
        .enqueue(NewJob::bytes("x").timeout(Duration::from_millis(1000)))
        .await
        .unwrap()
        .id;
    let runs = Arc::new(AtomicUsize::new(0));
    let first_done = Arc::new(Notify::new());
    let first_told_to_stop = Arc::new(AtomicBool::new(false));
    let leased = Arc::new(Notify::new());
    let worker = {
        let (runs, first_done, told, leased) = (
            runs.clone(),
            first_done.clone(),
            first_told_to_stop.clone(),
            leased.clone(),
        );
        let stale = Mutex::new(Some(stale));
        Worker::builder(queue.clone())
            .config(stuck_first_run())
            .start(move |job: Job| {
                let run = runs.fetch_add(1, Ordering::SeqCst);
                let first = run == 0;
                let stale = if first {
                    stale.lock().unwrap().take()
                } else {
                    None
                };
                let (first_done, told, leased) = (first_done.clone(), told.clone(), leased.clone());
                async move {
                    if first {
                        leased.notify_one();
                        // Blocks its thread: neither the timeout nor the
                        // lease watch can stop it; the lease lapses.
                        std::thread::sleep(Duration::from_millis(2600));
                        told.store(job.is_cancelled(), Ordering::SeqCst);
                        first_done.notify_one();
                        return stale.expect("the first run's outcome");
                    }
                    // The second run holds the new lease until the first
                    // has written its late outcome.
                    first_done.notified().await;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    Outcome::Done
                }
            })
            .unwrap()
    };
    leased.notified().await;
    if pause_after_lease {
        // The rescued job then waits (nothing fetches it) while the first
        // run's late outcome arrives.
        queue.pause().await.unwrap();
        eventually(WAIT, "the rescue", || async {
            queue.counts().await.unwrap().totals.rescued == 1
        })
        .await;
        eventually(WAIT, "the first run's late outcome", || async {
            worker.stats().lost == 1
        })
        .await;
        assert_eq!(
            queue.job(id).await.unwrap().map(|j| j.state),
            Some(JobState::Waiting),
            "the rescued job is still waiting after the stale outcome"
        );
        queue.resume().await.unwrap();
    }
    eventually(WAIT, "the job to settle", || async {
        let t = queue.counts().await.unwrap().totals;
        t.completed + t.dead + t.cancelled >= 1 && runs.load(Ordering::SeqCst) >= 2
    })
    .await;
    // Both outcomes are in (the second run writes after the first).
    eventually(WAIT, "both outcomes", || async {
        let s = worker.stats();
        s.lost + s.completed + s.dead + s.cancelled >= 2
    })
    .await;
    let totals = queue.counts().await.unwrap().totals;
    let stats = worker.stats();
    worker.shutdown().await.unwrap();
    assert_eq!(runs.load(Ordering::SeqCst), 2, "two runs, no third");
    (totals, stats, first_told_to_stop.load(Ordering::SeqCst))
}

// Two runtime threads: the stuck first run blocks one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rescued_jobs_late_first_run_cannot_settle_the_second_runs_lease() {
    let (_server, queue) = support::queue("stale-fail").await;
    let (totals, stats, told) = late_first_outcome(&queue, Outcome::fail("stale run"), false).await;
    assert_eq!(
        (totals.rescued, totals.completed, totals.dead),
        (1, 1, 0),
        "the second run's outcome counts, the first run's is dropped"
    );
    assert_eq!((stats.completed, stats.dead, stats.lost), (1, 0, 1));
    assert!(
        told,
        "the first run was told to stop once its lease was gone"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_cancel_does_not_delete_a_job_that_was_rescued() {
    let (_server, queue) = support::queue("stale-cancel").await;
    let (totals, stats, _) = late_first_outcome(&queue, Outcome::cancel("stale run"), true).await;
    assert_eq!(
        (totals.rescued, totals.cancelled, totals.completed),
        (1, 0, 1),
        "the rescued job ran again and completed"
    );
    assert_eq!((stats.cancelled, stats.lost, stats.completed), (0, 1, 1));
}

#[tokio::test]
async fn leases_taken_by_a_fetch_whose_reply_was_lost_are_rescued() {
    let server = RedisServer::start();
    // This user may run the fetch script but not the HMGET that reads the
    // records after it: the leases are taken, the reply never arrives.
    server.cmd(&[
        "ACL",
        "SETUSER",
        "leaser",
        "on",
        ">leaser-pw",
        "~*",
        "&*",
        "+@all",
        "-hmget",
    ]);
    let admin = Redis::connect_url(&server.url()).await.unwrap();
    let producer = Queue::with_defaults(admin, "lost-reply").unwrap();
    let url = format!("redis://leaser:leaser-pw@127.0.0.1:{}/", server.port());
    let leaser =
        Queue::with_defaults(Redis::connect_url(&url).await.unwrap(), "lost-reply").unwrap();

    // More jobs than a fetch returns inline, so the records need the HMGET.
    let ids: BTreeSet<u64> = producer
        .enqueue_bulk((0..8).map(|i| NewJob::json(&i).unwrap()).collect())
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.id.0)
        .collect();
    let runs = Arc::new(Mutex::new(Vec::new()));
    let seen = runs.clone();
    let worker = Worker::builder(leaser)
        .config(fast_worker())
        .start(move |job: Job| {
            seen.lock().unwrap().push(job.id().0);
            async { Outcome::Done }
        })
        .unwrap();
    eventually(WAIT, "the leases of the lost fetch", || async {
        producer.counts().await.unwrap().active == 8
    })
    .await;
    assert_eq!(worker.stats().fetched, 0, "the worker never saw the jobs");
    // From now on replies arrive again.
    server.cmd(&["ACL", "SETUSER", "leaser", "+hmget"]);

    eventually(WAIT, "every job to complete", || async {
        producer.counts().await.unwrap().totals.completed == 8
    })
    .await;
    let totals = producer.counts().await.unwrap().totals;
    assert_eq!(totals.rescued, 8, "each orphaned lease was rescued");
    worker.shutdown().await.unwrap();
    let mut runs = runs.lock().unwrap().clone();
    runs.sort_unstable();
    assert_eq!(
        runs,
        ids.into_iter().collect::<Vec<_>>(),
        "each job ran exactly once"
    );
}

#[tokio::test]
async fn a_restarted_worker_with_the_same_id_has_its_predecessors_leases_rescued() {
    let (server, queue) = support::queue("same-id").await;
    let id = queue.enqueue(NewJob::bytes("x")).await.unwrap().id;

    // The first process leases the job and dies without shutting down: its
    // runtime is dropped, as a killed process's tasks would be.
    let started = Arc::new(Notify::new());
    let doomed = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    {
        let url = server.url();
        let started = started.clone();
        doomed.spawn(async move {
            let redis = Redis::connect_url(&url).await.unwrap();
            let queue = Queue::with_defaults(redis, "same-id").unwrap();
            let handle = Worker::builder(queue)
                .config(WorkerConfig {
                    maintenance: false,
                    ..fast_worker()
                })
                .id("fixed-id")
                .start(move |_job: Job| {
                    let started = started.clone();
                    async move {
                        started.notify_one();
                        std::future::pending::<()>().await;
                        Outcome::Done
                    }
                })
                .unwrap();
            std::mem::forget(handle);
        });
    }
    started.notified().await;
    doomed.shutdown_background();

    // Its successor takes the same id at once and heartbeats over the
    // predecessor's active hash.
    let runs = Arc::new(Mutex::new(Vec::new()));
    let seen = runs.clone();
    let worker = Worker::builder(queue.clone())
        .config(fast_worker())
        .id("fixed-id")
        .start(move |job: Job| {
            seen.lock().unwrap().push((job.id(), job.attempt()));
            async { Outcome::Done }
        })
        .unwrap();
    eventually(WAIT, "the predecessor's job to complete", || async {
        queue.counts().await.unwrap().totals.completed == 1
    })
    .await;
    assert_eq!(queue.counts().await.unwrap().totals.rescued, 1);
    assert_eq!(
        *runs.lock().unwrap(),
        [(id, 2)],
        "run once more, as attempt 2"
    );
    worker.shutdown().await.unwrap();
}

fn wall_ms() -> u64 {
    SystemClock.now_ms()
}

// Two runtime threads, so that a heartbeat stuck on the frozen Redis cannot
// hold up the lease watch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_is_told_to_stop_before_its_lease_lapses_while_redis_is_frozen() {
    let (server, queue) = support::queue("frozen").await;
    let id = queue.enqueue(NewJob::bytes("x")).await.unwrap().id;
    let started = Arc::new(Notify::new());
    let stopped_at = Arc::new(Mutex::new(None::<u64>));
    let worker = {
        let (started, stopped_at) = (started.clone(), stopped_at.clone());
        Worker::builder(queue.clone())
            .config(fast_worker())
            .id("frozen-worker")
            .start(move |job: Job| {
                let (started, stopped_at) = (started.clone(), stopped_at.clone());
                async move {
                    if job.attempt() > 1 {
                        return Outcome::Done;
                    }
                    started.notify_one();
                    job.cancelled().await;
                    *stopped_at.lock().unwrap() = Some(wall_ms());
                    Outcome::retry("interrupted: lease could not be renewed")
                }
            })
            .unwrap()
    };
    started.notified().await;

    // Freeze right after a renewal, so that the deadline read is the last
    // one Redis holds.
    let active = queue.keys().active("frozen-worker");
    let lease = |server: &RedisServer| server.cmd(&["HGET", &active, &id.to_string()]);
    let before = lease(&server);
    let deadline_ms = loop {
        let now = lease(&server);
        if now != before {
            break now.rsplit_once(':').unwrap().1.parse::<u64>().unwrap();
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    };
    server.freeze();
    let deadline = Instant::now() + WAIT;
    let stopped = loop {
        if let Some(at) = *stopped_at.lock().unwrap() {
            break at;
        }
        assert!(
            Instant::now() < deadline,
            "the handler was never told to stop"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    // Longer than the lease in all.
    while wall_ms() < deadline_ms + 200 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.thaw();
    assert!(
        stopped < deadline_ms,
        "told to stop at {stopped}, {} ms after the lease deadline {deadline_ms}",
        stopped.saturating_sub(deadline_ms)
    );
    eprintln!(
        "frozen Redis: handler told to stop {} ms before its 600 ms lease's deadline",
        deadline_ms - stopped
    );
    assert!(
        deadline_ms - stopped <= 400,
        "told to stop {} ms before the deadline of a 600 ms lease: too early",
        deadline_ms - stopped
    );

    eventually(
        WAIT,
        "the job to complete after Redis came back",
        || async {
            queue
                .counts()
                .await
                .is_ok_and(|c| c.totals.completed == 1 && c.active == 0)
        },
    )
    .await;
    assert!(worker.stats().unrenewed >= 1);
    worker.shutdown().await.unwrap();
}

/// Records, when dropped, whether the job's lease was still in Redis: a
/// handler future is dropped when its task is aborted.
struct AbortWitness {
    server: Arc<RedisServer>,
    active: String,
    id: String,
    leased_when_dropped: Arc<Mutex<Option<bool>>>,
}

impl Drop for AbortWitness {
    fn drop(&mut self) {
        let held = self.server.cmd(&["HEXISTS", &self.active, &self.id]) == "1";
        *self.leased_when_dropped.lock().unwrap() = Some(held);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_aborts_a_handler_that_ignores_its_signal_before_handing_its_job_back() {
    let server = Arc::new(RedisServer::start());
    let redis = Redis::connect_url(&server.url()).await.unwrap();
    let queue = Queue::with_defaults(redis, "stubborn").unwrap();
    let id = queue.enqueue(NewJob::bytes("x")).await.unwrap().id;
    let runs = Arc::new(AtomicUsize::new(0));
    let leased_when_dropped = Arc::new(Mutex::new(None));
    let signalled = Arc::new(AtomicBool::new(false));
    let started = Arc::new(Notify::new());
    let config = WorkerConfig {
        shutdown_grace: Duration::from_millis(100),
        ..fast_worker()
    };
    let worker = {
        let (runs, witness_slot, signalled, started, server) = (
            runs.clone(),
            leased_when_dropped.clone(),
            signalled.clone(),
            started.clone(),
            server.clone(),
        );
        let active = queue.keys().active("stubborn-worker");
        Worker::builder(queue.clone())
            .config(config)
            .id("stubborn-worker")
            .start(move |job: Job| {
                runs.fetch_add(1, Ordering::SeqCst);
                let witness = AbortWitness {
                    server: server.clone(),
                    active: active.clone(),
                    id: job.id().to_string(),
                    leased_when_dropped: witness_slot.clone(),
                };
                let (signalled, started) = (signalled.clone(), started.clone());
                async move {
                    let _witness = witness;
                    started.notify_one();
                    job.cancelled().await;
                    signalled.store(true, Ordering::SeqCst);
                    // Ignores the signal.
                    std::future::pending::<()>().await;
                    Outcome::Done
                }
            })
            .unwrap()
    };
    started.notified().await;
    worker.shutdown().await.unwrap();

    assert!(signalled.load(Ordering::SeqCst), "told to stop first");
    assert_eq!(
        *leased_when_dropped.lock().unwrap(),
        Some(true),
        "the handler was aborted while its job was still leased, before the hand-back"
    );
    let job = queue.job(id).await.unwrap().unwrap();
    assert_eq!((job.state, job.attempts), (JobState::Waiting, 0));

    let again = runs.clone();
    let next = Worker::builder(queue.clone())
        .config(fast_worker())
        .start(move |_job: Job| {
            again.fetch_add(1, Ordering::SeqCst);
            async { Outcome::Done }
        })
        .unwrap();
    eventually(WAIT, "the run after the hand-back", || async {
        queue.counts().await.unwrap().totals.completed == 1
    })
    .await;
    next.shutdown().await.unwrap();
    assert_eq!(runs.load(Ordering::SeqCst), 2, "it ran exactly once more");
}

// Two runtime threads: the blocked handler holds one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_leaves_a_handler_blocked_in_synchronous_code_leased_rather_than_handing_it_back()
{
    let (_server, queue) = support::queue("blocked").await;
    let id = queue.enqueue(NewJob::bytes("x")).await.unwrap().id;
    let started = Arc::new(Notify::new());
    let still_running = Arc::new(AtomicBool::new(false));
    let config = WorkerConfig {
        shutdown_grace: Duration::from_millis(100),
        ..fast_worker()
    };
    let worker = {
        let (started, still_running) = (started.clone(), still_running.clone());
        Worker::builder(queue.clone())
            .config(config)
            .start(move |_job: Job| {
                let (started, still_running) = (started.clone(), still_running.clone());
                async move {
                    started.notify_one();
                    still_running.store(true, Ordering::SeqCst);
                    // Out of reach of the signal and of the abort.
                    std::thread::sleep(Duration::from_millis(3500));
                    still_running.store(false, Ordering::SeqCst);
                    Outcome::Done
                }
            })
            .unwrap()
    };
    started.notified().await;
    worker.shutdown().await.unwrap();
    assert!(
        still_running.load(Ordering::SeqCst),
        "the handler outlived the shutdown"
    );
    assert_eq!(
        queue.job(id).await.unwrap().unwrap().state,
        JobState::Active,
        "not handed back while its handler runs"
    );
    // Its lease is no longer renewed: another worker gets it after the lease.
    let next = Worker::builder(queue.clone())
        .config(fast_worker())
        .start(|_job: Job| async { Outcome::Done })
        .unwrap();
    eventually(WAIT, "the rescue and the run after it", || async {
        let t = queue.counts().await.unwrap().totals;
        t.rescued == 1 && t.completed == 1
    })
    .await;
    next.shutdown().await.unwrap();
}

/// A clock `ahead` of this machine's.
#[derive(Debug)]
struct AheadClock(Duration);

impl Clock for AheadClock {
    fn now_ms(&self) -> u64 {
        SystemClock.now_ms() + self.0.as_millis() as u64
    }
}

fn ahead_by(skew: Duration) -> QueueConfig {
    QueueConfig {
        clock: Arc::new(AheadClock(skew)),
        ..QueueConfig::default()
    }
}

#[tokio::test]
async fn a_worker_whose_clock_is_ten_minutes_ahead_keeps_to_redis_time() {
    const SKEW: Duration = Duration::from_secs(600);
    const DELAY: Duration = Duration::from_millis(1500);
    let (server, on_time) = support::queue("skew").await;
    let skewed = Queue::new(
        Redis::connect_url(&server.url()).await.unwrap(),
        "skew",
        ahead_by(SKEW),
    )
    .unwrap();

    let ran = Arc::new(Mutex::new(Vec::<(u64, Instant, u16)>::new()));
    let release = Arc::new(Notify::new());
    let handler = |ran: Arc<Mutex<Vec<(u64, Instant, u16)>>>, release: Arc<Notify>| {
        move |job: Job| {
            let (ran, release) = (ran.clone(), release.clone());
            async move {
                ran.lock()
                    .unwrap()
                    .push((job.id().0, Instant::now(), job.attempt()));
                if job.payload() == b"long" {
                    release.notified().await;
                }
                Outcome::Done
            }
        }
    };
    // The on-time worker takes the long job before the skewed one starts.
    let on_time_worker = Worker::builder(on_time.clone())
        .config(fast_worker())
        .start(handler(ran.clone(), release.clone()))
        .unwrap();
    let long = on_time.enqueue(NewJob::bytes("long")).await.unwrap().id.0;
    eventually(WAIT, "the long job to start", || async {
        ran.lock().unwrap().iter().any(|(id, ..)| *id == long)
    })
    .await;
    let skewed_worker = Worker::builder(skewed.clone())
        .config(fast_worker())
        .start(handler(ran.clone(), release.clone()))
        .unwrap();

    // Delayed jobs from both clocks, and from skewed producers that have
    // not been used before: one bulk call and one single enqueue (which
    // used to compute its due time before its first Redis call, on its own
    // clock).
    let fresh_skewed = Queue::new(
        Redis::connect_url(&server.url()).await.unwrap(),
        "skew",
        ahead_by(SKEW),
    )
    .unwrap();
    let fresh_single = Queue::new(
        Redis::connect_url(&server.url()).await.unwrap(),
        "skew",
        ahead_by(SKEW),
    )
    .unwrap();
    eventually(WAIT, "the skewed handle's first reading", || async {
        skewed.clock_offset_ms().is_some()
    })
    .await;
    let enqueued_at = Instant::now();
    let delayed = [
        skewed
            .enqueue(NewJob::bytes("d").delay(DELAY))
            .await
            .unwrap()
            .id
            .0,
        on_time
            .enqueue(NewJob::bytes("d").delay(DELAY))
            .await
            .unwrap()
            .id
            .0,
        fresh_skewed
            .enqueue_bulk(vec![NewJob::bytes("d").delay(DELAY)])
            .await
            .unwrap()[0]
            .id
            .0,
        fresh_single
            .enqueue(NewJob::bytes("d").delay(DELAY))
            .await
            .unwrap()
            .id
            .0,
    ];
    eventually(WAIT, "the delayed jobs", || async {
        on_time.counts().await.unwrap().totals.completed == 4
    })
    .await;
    // The long job has been held for several leases (600 ms each) by now,
    // under the skewed rescuer's eyes.
    let long_started = ran
        .lock()
        .unwrap()
        .iter()
        .find(|(id, ..)| *id == long)
        .unwrap()
        .1;
    let held_for = long_started.elapsed();
    release.notify_one();
    eventually(WAIT, "the long job", || async {
        on_time.counts().await.unwrap().totals.completed == 5
    })
    .await;

    let offset = skewed.clock_offset_ms().expect("measured");
    assert!(
        (offset + 600_000).abs() < 1_000,
        "the skewed handle's offset to Redis' time is about -10 min: {offset}"
    );
    let totals = on_time.counts().await.unwrap().totals;
    eprintln!(
        "clock skew: offset measured {offset} ms; long job held {:?} (600 ms leases), rescued {}",
        held_for, totals.rescued
    );
    assert_eq!(totals.rescued, 0, "no live lease was rescued");
    let ran = ran.lock().unwrap().clone();
    assert_eq!(
        ran.iter().filter(|(id, ..)| *id == long).count(),
        1,
        "the long job ran once"
    );
    for id in delayed {
        let (_, at, attempt) = *ran.iter().find(|(i, ..)| *i == id).unwrap();
        let after = at - enqueued_at;
        eprintln!("clock skew: job {id} delayed {DELAY:?} ran {after:?} after its enqueue");
        assert!(
            after >= DELAY - Duration::from_millis(100) && after <= DELAY + Duration::from_secs(1),
            "job {id} ran {after:?} after it was enqueued with a {DELAY:?} delay"
        );
        assert_eq!(attempt, 1);
    }
    on_time_worker.shutdown().await.unwrap();
    skewed_worker.shutdown().await.unwrap();
}

/// Runs a worker in a child process (this test binary, started again by
/// [`a_worker_killed_with_sigkill_loses_nothing_and_repeats_only_unsettled_jobs`])
/// until it is killed. Does nothing when run on its own.
#[tokio::test]
#[ignore = "the child process of a fault test"]
async fn child_worker_process() {
    let Ok(url) = std::env::var("PLIMSOLL_CHILD_REDIS") else {
        return;
    };
    let redis = Redis::connect_url(&url).await.unwrap();
    let queue = Queue::with_defaults(redis.clone(), KILLED_QUEUE).unwrap();
    let _worker = Worker::builder(queue)
        .config(WorkerConfig {
            maintenance: false,
            ..fast_worker()
        })
        .id(KILLED_WORKER)
        .start(move |job: Job| {
            let redis = redis.clone();
            async move {
                // The side effect whose repetitions are counted.
                let _: i64 = redis
                    .query(redis::cmd("HINCRBY").arg(RUNS_KEY).arg(job.id().0).arg(1))
                    .await
                    .unwrap();
                tokio::time::sleep(Duration::from_millis(2)).await;
                Outcome::Done
            }
        })
        .unwrap();
    std::future::pending::<()>().await;
}

const KILLED_QUEUE: &str = "killed";
const KILLED_WORKER: &str = "doomed-process";
/// Outside the queue's keys: hash, job id -> runs of its handler.
const RUNS_KEY: &str = "test:runs";

/// Repetitions of the kill (`PLIMSOLL_FAULT_REPS`, default 1) and jobs per
/// repetition (`PLIMSOLL_FAULT_JOBS`, default 2,000).
fn fault_scale() -> (usize, usize) {
    let get = |name: &str, default: usize| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    (
        get("PLIMSOLL_FAULT_REPS", 1),
        get("PLIMSOLL_FAULT_JOBS", 2_000),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_with_sigkill_loses_nothing_and_repeats_only_unsettled_jobs() {
    let (reps, jobs) = fault_scale();
    for rep in 0..reps {
        let (server, queue) = support::queue(KILLED_QUEUE).await;
        let ids: Vec<u64> = queue
            .enqueue_bulk((0..jobs).map(|i| NewJob::json(&i).unwrap()).collect())
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.id.0)
            .collect();
        let mut child = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "leases::child_worker_process",
                "--exact",
                "--ignored",
                "--nocapture",
            ])
            .env("PLIMSOLL_CHILD_REDIS", server.url())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        // Kill it mid-stream, with jobs running and outcomes on their way.
        eventually(
            WAIT,
            "the child to complete a third of the jobs",
            || async { queue.counts().await.unwrap().totals.completed >= (jobs / 3) as u64 },
        )
        .await;
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let active = queue.keys().active(KILLED_WORKER);
        let unsettled: BTreeSet<u64> = server
            .cmd(&["HKEYS", &active])
            .lines()
            .map(|l| l.parse().unwrap())
            .collect();
        let settled_by_child = queue.counts().await.unwrap().totals.completed;

        let redis = queue.redis().clone();
        let worker = Worker::builder(queue.clone())
            .config(fast_worker())
            .start(move |job: Job| {
                let redis = redis.clone();
                async move {
                    let _: i64 = redis
                        .query(redis::cmd("HINCRBY").arg(RUNS_KEY).arg(job.id().0).arg(1))
                        .await
                        .unwrap();
                    Outcome::Done
                }
            })
            .unwrap();
        // The child's unsettled jobs run here after their leases lapse.
        eventually(WAIT, "every job to complete", || async {
            let c = queue.counts().await.unwrap();
            c.totals.completed + c.totals.dead == jobs as u64
        })
        .await;
        worker.shutdown().await.unwrap();
        let counts = queue.counts().await.unwrap();
        assert_eq!(
            (
                counts.totals.completed,
                counts.totals.dead,
                counts.waiting,
                counts.active
            ),
            (jobs as u64, 0, 0, 0),
            "every job completed exactly once"
        );
        assert_eq!(
            counts.totals.rescued,
            unsettled.len() as u64,
            "exactly the child's unsettled leases were rescued"
        );
        let runs: std::collections::BTreeMap<u64, u64> = {
            let text = server.cmd(&["HGETALL", RUNS_KEY]);
            let values: Vec<u64> = text.lines().map(|l| l.parse().unwrap()).collect();
            values.chunks(2).map(|p| (p[0], p[1])).collect()
        };
        assert_eq!(
            runs.keys().copied().collect::<Vec<_>>(),
            ids,
            "every job ran"
        );
        let repeated: Vec<u64> = runs
            .iter()
            .filter(|(_, n)| **n > 1)
            .map(|(id, _)| *id)
            .collect();
        assert!(
            repeated.iter().all(|id| unsettled.contains(id)) && runs.values().all(|n| *n <= 2),
            "only jobs whose lease the child never settled ran again, once: {repeated:?}"
        );
        eprintln!(
            "kill -9 fault, repetition {}: {jobs} jobs enqueued; {settled_by_child} completed by \
             the child before SIGKILL; {} of its leases unsettled and rescued, {} of them run \
             twice; {} completed in all, 0 lost, 0 completed twice",
            rep + 1,
            unsettled.len(),
            repeated.len(),
            counts.totals.completed
        );
    }
}

/// A failover that lost a fetch (its lease, and with the old counter the
/// counter's increment) put the job back in waiting; the same worker fetched
/// it again, and the counter handed the new lease the lost lease's token.
/// The first run, still going, then settled the second run's lease: the
/// job completed while its second run was still working on it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fetch_lost_in_a_failover_does_not_hand_its_token_to_the_next_lease() {
    let (server, queue) = support::queue("token-again").await;
    let id = queue.enqueue(NewJob::bytes("x")).await.unwrap().id;
    let runs = Arc::new(AtomicUsize::new(0));
    let started = Arc::new(Notify::new());
    let release_first = Arc::new(Notify::new());
    let release_second = Arc::new(Notify::new());
    let worker = {
        let (runs, started, release_first, release_second) = (
            runs.clone(),
            started.clone(),
            release_first.clone(),
            release_second.clone(),
        );
        Worker::builder(queue.clone())
            .config(WorkerConfig {
                concurrency: 2,
                prefetch: 0,
                ..fast_worker()
            })
            .id("token-worker")
            .start(move |_job: Job| {
                let run = runs.fetch_add(1, Ordering::SeqCst);
                let (started, release) = if run == 0 {
                    (started.clone(), release_first.clone())
                } else {
                    (started.clone(), release_second.clone())
                };
                async move {
                    started.notify_one();
                    // Ignores its cancel: a stale run that finishes anyway.
                    release.notified().await;
                    Outcome::Done
                }
            })
            .unwrap()
    };
    started.notified().await;

    // What a failover to a replica that never saw the fetch leaves: the job
    // waiting again, no lease, and meta as it was before the fetch.
    let active = queue.keys().active("token-worker");
    let first_lease = server.cmd(&["HGET", &active, &id.to_string()]);
    assert!(first_lease.contains(':'), "leased: {first_lease:?}");
    server.cmd(&["HDEL", &active, &id.to_string()]);
    server.cmd(&["HDEL", queue.keys().meta(), "lease_token"]);
    server.cmd(&["RPUSH", queue.keys().waiting(5), &id.to_string()]);
    server.cmd(&["LPUSH", queue.keys().notify(), "1"]);
    started.notified().await;
    let second_lease = server.cmd(&["HGET", &active, &id.to_string()]);
    let token = |lease: &str| lease.split_once(':').unwrap().0.to_string();
    assert_ne!(
        token(&second_lease),
        token(&first_lease),
        "the second lease has a token of its own"
    );

    // The first run ends: its outcome must not settle the second lease.
    release_first.notify_one();
    eventually(WAIT, "the first run's outcome dropped as stale", || async {
        worker.stats().lost == 1
    })
    .await;
    assert_eq!(
        queue.job(id).await.unwrap().map(|j| j.state),
        Some(JobState::Active),
        "the job is still the second run's"
    );
    assert_eq!(
        server.cmd(&["HGET", &active, &id.to_string()]),
        second_lease,
        "the second lease is untouched"
    );
    release_second.notify_one();
    eventually(WAIT, "the second run's outcome", || async {
        queue.counts().await.unwrap().totals.completed == 1
    })
    .await;
    assert_eq!(worker.stats().completed, 1);
    worker.shutdown().await.unwrap();
    assert_eq!(runs.load(Ordering::SeqCst), 2, "two runs, no third");
}
