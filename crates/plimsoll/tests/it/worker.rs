//! Workers: every transition a handler can cause, crash recovery, stuck
//! handlers, cancellation and graceful shutdown.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use plimsoll::worker::WorkerConfig;
use plimsoll::{
    CancelOutcome, DeadSelection, Job, JobId, JobState, NewJob, Outcome, Queue, Worker,
};
use tokio::sync::{Notify, mpsc};

use crate::support::{self, eventually, fast_worker, lasting_queue_keys};

const WAIT: Duration = Duration::from_secs(10);

/// A worker that sends every job it finishes (id, attempt) to a channel.
fn recording_worker(
    queue: &Queue,
    config: WorkerConfig,
    outcome: impl Fn(&Job) -> Outcome + Send + Sync + 'static,
) -> (
    plimsoll::WorkerHandle,
    mpsc::UnboundedReceiver<(JobId, u16)>,
) {
    let (tx, rx) = mpsc::unbounded_channel();
    let outcome = Arc::new(outcome);
    let worker = Worker::builder(queue.clone())
        .config(config)
        .start(move |job: Job| {
            let tx = tx.clone();
            let outcome = outcome.clone();
            async move {
                let result = outcome(&job);
                let _ = tx.send((job.id(), job.attempt()));
                result
            }
        })
        .unwrap();
    (worker, rx)
}

#[tokio::test]
async fn completed_jobs_are_removed_and_nothing_is_left_behind() {
    let (server, queue) = support::queue("done").await;
    let jobs: Vec<NewJob> = (0..500).map(|i| NewJob::json(&i).unwrap()).collect();
    queue.enqueue_bulk(jobs).await.unwrap();
    let (worker, mut rx) = recording_worker(&queue, fast_worker(), |_| Outcome::Done);
    for _ in 0..500 {
        rx.recv().await.unwrap();
    }
    eventually(WAIT, "500 completions", || async {
        queue.counts().await.unwrap().totals.completed == 500
    })
    .await;
    assert_eq!(worker.stats().completed, 500);
    worker.shutdown().await.unwrap();

    let counts = queue.counts().await.unwrap();
    assert_eq!((counts.waiting, counts.active, counts.completed), (0, 0, 0));
    let mut keys = lasting_queue_keys(&server, "done");
    keys.sort();
    let base = "plimsoll:{done}";
    assert_eq!(
        keys,
        [
            format!("{base}:id_runs"),
            format!("{base}:meta"),
            format!("{base}:stats")
        ]
    );
}

#[tokio::test]
async fn jobs_run_by_priority_then_in_order() {
    let (_server, queue) = support::queue("order").await;
    let mut expected = Vec::new();
    for (payload, priority) in [("low", 9), ("mid-a", 5), ("high", 0), ("mid-b", 5)] {
        let id = queue
            .enqueue(NewJob::bytes(payload).priority(priority))
            .await
            .unwrap()
            .id;
        expected.push((priority, id));
    }
    expected.sort();
    let config = WorkerConfig {
        concurrency: 1,
        prefetch: 0,
        ..fast_worker()
    };
    let (worker, mut rx) = recording_worker(&queue, config, |_| Outcome::Done);
    let mut seen = Vec::new();
    for _ in 0..4 {
        seen.push(rx.recv().await.unwrap().0);
    }
    worker.shutdown().await.unwrap();
    assert_eq!(
        seen,
        expected.into_iter().map(|(_, id)| id).collect::<Vec<_>>()
    );
}

/// A worker that sends every job's (id, payload) to a channel, with a poll
/// interval long enough that only wake-up tokens can explain a prompt start.
fn payload_worker(
    queue: &Queue,
    config: WorkerConfig,
) -> (
    plimsoll::WorkerHandle,
    mpsc::UnboundedReceiver<(JobId, Vec<u8>)>,
) {
    let (tx, rx) = mpsc::unbounded_channel();
    let worker = Worker::builder(queue.clone())
        .config(WorkerConfig {
            poll_interval: Duration::from_secs(60),
            ..config
        })
        .start(move |job: Job| {
            let _ = tx.send((job.id(), job.payload().to_vec()));
            async { Outcome::Done }
        })
        .unwrap();
    (worker, rx)
}

#[tokio::test]
async fn one_fetch_takes_jobs_of_every_priority_in_order_with_their_payloads() {
    let (_server, queue) = support::queue("one-fetch").await;
    // More jobs than a fetch gets inline, over three priorities.
    let jobs: Vec<(&str, u8)> = vec![
        ("p5-a", 5),
        ("p9-a", 9),
        ("p0-a", 0),
        ("p5-b", 5),
        ("p9-b", 9),
        ("p0-b", 0),
        ("p5-c", 5),
    ];
    let enqueued = queue
        .enqueue_bulk(
            jobs.iter()
                .map(|(payload, priority)| NewJob::bytes(*payload).priority(*priority))
                .collect(),
        )
        .await
        .unwrap();
    let mut expected: Vec<(u8, JobId, &str)> = jobs
        .iter()
        .zip(&enqueued)
        .map(|((payload, priority), e)| (*priority, e.id, *payload))
        .collect();
    expected.sort();
    let config = WorkerConfig {
        concurrency: 1,
        prefetch: 20,
        ..fast_worker()
    };
    let (worker, mut rx) = payload_worker(&queue, config);
    for (_, id, payload) in expected {
        let (seen, seen_payload) = tokio::time::timeout(WAIT, rx.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!((seen, seen_payload.as_slice()), (id, payload.as_bytes()));
    }
    worker.shutdown().await.unwrap();
}

#[tokio::test]
async fn an_idle_worker_is_woken_by_new_jobs_without_waiting_for_its_poll() {
    let (_server, queue) = support::queue("wake").await;
    let (worker, mut rx) = payload_worker(&queue, fast_worker());
    // Each fetch below comes back short, after which the worker waits on the
    // wake-up list only; the poll interval is a minute.
    for round in 0..3 {
        let payloads: Vec<String> = (0..=round).map(|i| format!("r{round}-{i}")).collect();
        let ids: Vec<JobId> = queue
            .enqueue_bulk(payloads.iter().map(|p| NewJob::bytes(p.clone())).collect())
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.id)
            .collect();
        let mut seen = Vec::new();
        for _ in 0..ids.len() {
            let (id, payload) = tokio::time::timeout(WAIT, rx.recv())
                .await
                .expect("a new job must wake the idle worker")
                .unwrap();
            seen.push((id, String::from_utf8(payload).unwrap()));
        }
        seen.sort();
        assert_eq!(seen, ids.into_iter().zip(payloads).collect::<Vec<_>>());
        // Let the worker go idle again before the next round.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    worker.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_failed_run_is_retried_after_backoff_and_then_completes() {
    let (_server, queue) = support::queue("retry").await;
    let id = queue.enqueue(NewJob::bytes("flaky")).await.unwrap().id;
    let (worker, mut rx) = recording_worker(&queue, fast_worker(), |job| {
        if job.attempt() == 1 {
            Outcome::retry("upstream returned 503")
        } else {
            assert_eq!(job.last_error(), Some("upstream returned 503"));
            Outcome::Done
        }
    });
    assert_eq!(rx.recv().await.unwrap(), (id, 1));
    assert_eq!(rx.recv().await.unwrap(), (id, 2));
    eventually(WAIT, "the completion", || async {
        queue.counts().await.unwrap().totals.completed == 1
    })
    .await;
    let totals = queue.counts().await.unwrap().totals;
    assert_eq!((totals.retried, totals.dead), (1, 0));
    worker.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_job_that_uses_up_its_attempts_goes_dead_and_can_be_retried() {
    let (_server, queue) = support::queue("dead").await;
    let id = queue
        .enqueue(NewJob::bytes("doomed").max_attempts(3))
        .await
        .unwrap()
        .id;
    let fail = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let fail_in_handler = fail.clone();
    let (worker, mut rx) = recording_worker(&queue, fast_worker(), move |job| {
        if fail_in_handler.load(Ordering::SeqCst) {
            Outcome::retry(format!("attempt {} failed", job.attempt()))
        } else {
            Outcome::Done
        }
    });
    for attempt in 1..=3 {
        assert_eq!(rx.recv().await.unwrap(), (id, attempt));
    }
    eventually(WAIT, "the job to die", || async {
        queue.counts().await.unwrap().dead == 1
    })
    .await;
    let dead = queue.job(id).await.unwrap().unwrap();
    assert_eq!(dead.state, JobState::Dead);
    assert_eq!(dead.attempts, 3);
    assert_eq!(dead.last_error.as_deref(), Some("attempt 3 failed"));
    let listed = queue.jobs(JobState::Dead, 0, 10).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert!(queue.counts().await.unwrap().dead_bytes > 0);

    // Sent back, it gets a fresh set of attempts.
    fail.store(false, Ordering::SeqCst);
    assert_eq!(
        queue
            .retry_dead(DeadSelection::Ids(vec![id]))
            .await
            .unwrap(),
        1
    );
    assert_eq!(rx.recv().await.unwrap(), (id, 1));
    eventually(WAIT, "the completion", || async {
        queue.counts().await.unwrap().totals.completed == 1
    })
    .await;
    let counts = queue.counts().await.unwrap();
    assert_eq!((counts.dead, counts.dead_bytes), (0, 0));
    worker.shutdown().await.unwrap();
}

#[tokio::test]
async fn fail_for_good_skips_the_remaining_attempts_and_purge_removes_it() {
    let (server, queue) = support::queue("fatal").await;
    let id = queue.enqueue(NewJob::bytes("bad input")).await.unwrap().id;
    let (worker, mut rx) = recording_worker(&queue, fast_worker(), |_| Outcome::fail("malformed"));
    assert_eq!(rx.recv().await.unwrap(), (id, 1));
    eventually(WAIT, "the job to die", || async {
        queue.counts().await.unwrap().dead == 1
    })
    .await;
    worker.shutdown().await.unwrap();
    assert_eq!(queue.job(id).await.unwrap().unwrap().attempts, 1);
    assert_eq!(queue.purge_dead(DeadSelection::All).await.unwrap(), 1);
    assert!(queue.job(id).await.unwrap().is_none());
    let counts = queue.counts().await.unwrap();
    assert_eq!((counts.dead, counts.dead_bytes), (0, 0));
    assert_eq!(server.cmd(&["EXISTS", queue.keys().jobs()]), "0");
}

#[tokio::test]
async fn a_handler_can_cancel_its_job() {
    let (_server, queue) = support::queue("selfcancel").await;
    let id = queue.enqueue(NewJob::bytes("obsolete")).await.unwrap().id;
    let (worker, mut rx) =
        recording_worker(&queue, fast_worker(), |_| Outcome::cancel("superseded"));
    assert_eq!(rx.recv().await.unwrap(), (id, 1));
    eventually(WAIT, "the cancel", || async {
        queue.counts().await.unwrap().totals.cancelled == 1
    })
    .await;
    assert!(queue.job(id).await.unwrap().is_none());
    assert_eq!(worker.stats().cancelled, 1);
    worker.shutdown().await.unwrap();
}

#[tokio::test]
async fn timeouts_and_panics_count_as_failed_attempts() {
    let (_server, queue) = support::queue("faults").await;
    let slow = queue
        .enqueue(
            NewJob::bytes("slow")
                .timeout(Duration::from_millis(50))
                .max_attempts(1),
        )
        .await
        .unwrap()
        .id;
    let panicky = queue
        .enqueue(NewJob::bytes("panic").max_attempts(1))
        .await
        .unwrap()
        .id;
    let worker = Worker::builder(queue.clone())
        .config(fast_worker())
        .start(|job: Job| async move {
            if job.payload() == b"slow" {
                tokio::time::sleep(Duration::from_secs(60)).await;
            } else {
                panic!("bad state in handler");
            }
            Outcome::Done
        })
        .unwrap();
    eventually(WAIT, "both jobs to die", || async {
        queue.counts().await.unwrap().dead == 2
    })
    .await;
    worker.shutdown().await.unwrap();
    let slow = queue.job(slow).await.unwrap().unwrap();
    assert!(slow.last_error.unwrap().contains("timed out after 50ms"));
    let panicky = queue.job(panicky).await.unwrap().unwrap();
    assert!(
        panicky
            .last_error
            .unwrap()
            .contains("handler panicked: bad state in handler")
    );
}

#[tokio::test]
async fn delayed_jobs_run_when_due() {
    let clock = plimsoll::ManualClock::starting_now();
    let config = plimsoll::QueueConfig {
        clock: Arc::new(clock.clone()),
        ..Default::default()
    };
    let (_server, queue) = support::queue_with("delayed", config).await;
    let id = queue
        .enqueue(NewJob::bytes("later").delay(Duration::from_secs(3600)))
        .await
        .unwrap()
        .id;
    let (worker, mut rx) = recording_worker(&queue, fast_worker(), |_| Outcome::Done);
    // Not due: a few promoter rounds pass and nothing runs.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(rx.try_recv().is_err());
    assert_eq!(
        queue.job(id).await.unwrap().unwrap().state,
        JobState::Scheduled
    );
    clock.advance(Duration::from_secs(3601));
    assert_eq!(rx.recv().await.unwrap(), (id, 1));
    worker.shutdown().await.unwrap();
}

#[tokio::test]
async fn paused_queues_are_not_fetched_until_resumed() {
    let (_server, queue) = support::queue("paused").await;
    queue.pause().await.unwrap();
    let id = queue.enqueue(NewJob::bytes("x")).await.unwrap().id;
    let (worker, mut rx) = recording_worker(&queue, fast_worker(), |_| Outcome::Done);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(rx.try_recv().is_err(), "a paused queue must not run jobs");
    queue.resume().await.unwrap();
    assert_eq!(rx.recv().await.unwrap(), (id, 1));
    worker.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_worker_killed_mid_job_has_its_job_run_again_and_completed_once() {
    let (server, queue) = support::queue("crash").await;
    let id = queue.enqueue(NewJob::bytes("important")).await.unwrap().id;

    // The first worker runs on a runtime of its own; dropping that runtime
    // ends its tasks and closes its connections, as a killed process would.
    let started = Arc::new(Notify::new());
    let doomed = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    {
        let queue = queue.clone();
        let started = started.clone();
        let config = WorkerConfig {
            maintenance: false,
            ..fast_worker()
        };
        doomed.spawn(async move {
            let redis = plimsoll::Redis::connect_url(&queue.redis().config().redacted_urls()[0])
                .await
                .unwrap();
            let queue = Queue::with_defaults(redis, "crash").unwrap();
            let handle = Worker::builder(queue)
                .config(config)
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
    assert_eq!(
        queue.job(id).await.unwrap().unwrap().state,
        JobState::Active
    );
    doomed.shutdown_background();

    let runs = Arc::new(AtomicUsize::new(0));
    let (worker, mut rx) = {
        let runs = runs.clone();
        recording_worker(&queue, fast_worker(), move |_| {
            runs.fetch_add(1, Ordering::SeqCst);
            Outcome::Done
        })
    };
    assert_eq!(
        rx.recv().await.unwrap(),
        (id, 2),
        "the lost run counts as an attempt"
    );
    eventually(WAIT, "the completion", || async {
        queue.counts().await.unwrap().totals.completed == 1
    })
    .await;
    let totals = queue.counts().await.unwrap().totals;
    assert_eq!((totals.rescued, totals.completed), (1, 1));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        runs.load(Ordering::SeqCst),
        1,
        "completed exactly once after the rescue"
    );
    worker.shutdown().await.unwrap();
    // The dead worker's registration and active hash are gone.
    let workers = queue.workers().await.unwrap();
    assert!(workers.is_empty(), "{workers:?}");
    // meta, stats and id_runs.
    assert_eq!(
        lasting_queue_keys(&server, "crash").len(),
        3,
        "{:?}",
        lasting_queue_keys(&server, "crash")
    );
}

// Two runtime threads: the stuck handler blocks one, the heartbeat and the
// rescuer keep running on the other, as in any real deployment.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_stuck_past_its_timeout_loses_its_lease_to_another_worker() {
    let (_server, queue) = support::queue("stuck").await;
    let id = queue
        .enqueue(NewJob::bytes("x").timeout(Duration::from_millis(100)))
        .await
        .unwrap()
        .id;
    let runs = Arc::new(AtomicUsize::new(0));
    let seen = runs.clone();
    let worker = Worker::builder(queue.clone())
        .config(fast_worker())
        .start(move |job: Job| {
            let runs = seen.clone();
            async move {
                if runs.fetch_add(1, Ordering::SeqCst) == 0 {
                    // Blocks its thread: the timeout cannot fire, only the
                    // lease can lapse.
                    std::thread::sleep(Duration::from_millis(2500));
                }
                let _ = job;
                Outcome::Done
            }
        })
        .unwrap();
    eventually(WAIT, "a second run", || async {
        runs.load(Ordering::SeqCst) >= 2
    })
    .await;
    eventually(WAIT, "the completion", || async {
        queue.counts().await.unwrap().totals.completed == 1
    })
    .await;
    assert_eq!(queue.counts().await.unwrap().totals.rescued, 1);
    let _ = id;
    worker.shutdown().await.unwrap();
}

#[tokio::test]
async fn cancelling_an_active_job_stops_its_handler() {
    let (_server, queue) = support::queue("stopme").await;
    let id = queue.enqueue(NewJob::bytes("long")).await.unwrap().id;
    let started = Arc::new(Notify::new());
    let stopped = Arc::new(Notify::new());
    let (s1, s2) = (started.clone(), stopped.clone());
    let worker = Worker::builder(queue.clone())
        .config(fast_worker())
        .start(move |job: Job| {
            let (started, stopped) = (s1.clone(), s2.clone());
            async move {
                started.notify_one();
                job.cancelled().await;
                stopped.notify_one();
                Outcome::Done
            }
        })
        .unwrap();
    started.notified().await;
    assert_eq!(
        queue.cancel(id).await.unwrap(),
        CancelOutcome::Cancelled(JobState::Active)
    );
    tokio::time::timeout(WAIT, stopped.notified())
        .await
        .expect("handler told to stop");
    eventually(WAIT, "the dropped outcome", || async {
        worker.stats().lost == 1
    })
    .await;
    let totals = queue.counts().await.unwrap().totals;
    assert_eq!((totals.cancelled, totals.completed), (1, 0));
    worker.shutdown().await.unwrap();
}

#[tokio::test]
async fn shutdown_lets_handlers_finish_and_hands_back_unstarted_jobs() {
    let (_server, queue) = support::queue("graceful").await;
    let jobs: Vec<NewJob> = (0..20).map(|i| NewJob::json(&i).unwrap()).collect();
    queue.enqueue_bulk(jobs).await.unwrap();
    let started = Arc::new(AtomicUsize::new(0));
    let finished = Arc::new(AtomicUsize::new(0));
    let release = Arc::new(Notify::new());
    let (s, f, r) = (started.clone(), finished.clone(), release.clone());
    let config = WorkerConfig {
        concurrency: 2,
        prefetch: 6,
        ..fast_worker()
    };
    let worker = Worker::builder(queue.clone())
        .config(config)
        .start(move |_job: Job| {
            let (s, f, r) = (s.clone(), f.clone(), r.clone());
            async move {
                s.fetch_add(1, Ordering::SeqCst);
                r.notified().await;
                f.fetch_add(1, Ordering::SeqCst);
                Outcome::Done
            }
        })
        .unwrap();
    eventually(WAIT, "two running handlers", || async {
        started.load(Ordering::SeqCst) == 2
    })
    .await;
    eventually(WAIT, "8 jobs in hand", || async {
        queue.counts().await.unwrap().active == 8
    })
    .await;

    let shutdown = tokio::spawn(worker.shutdown());
    // Let the two running handlers finish during the grace period.
    tokio::time::sleep(Duration::from_millis(100)).await;
    release.notify_waiters();
    shutdown.await.unwrap().unwrap();

    assert_eq!(finished.load(Ordering::SeqCst), 2);
    let counts = queue.counts().await.unwrap();
    assert_eq!(counts.totals.completed, 2);
    assert_eq!((counts.waiting, counts.active, counts.workers), (18, 0, 0));
    // Handed back without counting an attempt, and in their original order.
    let waiting = queue.jobs(JobState::Waiting, 0, 100).await.unwrap();
    assert!(waiting.iter().all(|j| j.attempts == 0));
    assert!(waiting.windows(2).all(|w| w[0].id < w[1].id), "order kept");
}

#[tokio::test]
async fn shutdown_signals_handlers_that_outlive_the_grace_and_hands_their_jobs_back() {
    let (_server, queue) = support::queue("overtime").await;
    let id = queue.enqueue(NewJob::bytes("endless")).await.unwrap().id;
    let signalled = Arc::new(Mutex::new(false));
    let started = Arc::new(Notify::new());
    let (sig, st) = (signalled.clone(), started.clone());
    let config = WorkerConfig {
        shutdown_grace: Duration::from_millis(100),
        ..fast_worker()
    };
    let worker = Worker::builder(queue.clone())
        .config(config)
        .start(move |job: Job| {
            let (sig, st) = (sig.clone(), st.clone());
            async move {
                st.notify_one();
                job.cancelled().await;
                *sig.lock().unwrap() = true;
                // Ignores the signal and keeps running.
                std::future::pending::<()>().await;
                Outcome::Done
            }
        })
        .unwrap();
    started.notified().await;
    worker.shutdown().await.unwrap();
    assert!(*signalled.lock().unwrap(), "the handler was told to stop");
    let job = queue.job(id).await.unwrap().unwrap();
    assert_eq!(
        job.state,
        JobState::Waiting,
        "handed back for another worker"
    );
    assert_eq!(job.attempts, 0);
}

#[tokio::test]
async fn many_workers_share_a_queue_and_each_job_completes_once() {
    let (_server, queue) = support::queue("shared").await;
    let jobs: Vec<NewJob> = (0..2000).map(|i| NewJob::json(&i).unwrap()).collect();
    queue.enqueue_bulk(jobs).await.unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let mut workers = Vec::new();
    for _ in 0..3 {
        let seen = seen.clone();
        workers.push(
            Worker::builder(queue.clone())
                .config(fast_worker())
                .start(move |job: Job| {
                    let seen = seen.clone();
                    async move {
                        seen.lock().unwrap().push(job.id());
                        Outcome::Done
                    }
                })
                .unwrap(),
        );
    }
    eventually(WAIT, "2000 completions", || async {
        queue.counts().await.unwrap().totals.completed == 2000
    })
    .await;
    for worker in workers {
        worker.shutdown().await.unwrap();
    }
    let mut seen = seen.lock().unwrap().clone();
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 2000);
}
