//! The server's maintenance of queues no worker serves: age bounds fire by
//! each queue's own retention rules, never by the defaults.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use plimsoll::worker::WorkerConfig;
use plimsoll::{
    Bounds, Clock, CompletedRetention, Job, ManualClock, NewJob, Outcome, Queue, QueueConfig,
    Redis, Retention, SystemClock, Worker,
};
use plimsoll_server::maintenance;
use tokio_util::sync::CancellationToken;

use crate::support::{RedisServer, eventually, server_on};

const DAY: Duration = Duration::from_secs(86_400);
const WAIT: Duration = Duration::from_secs(15);

/// Leaves `done` completed and `dead` dead jobs in `queue` that finished two
/// days ago (by a worker on a clock set two days back, which records its
/// rules), and no worker running.
async fn jobs_finished_two_days_ago(
    url: &str,
    name: &str,
    retention: Retention,
    done: usize,
    dead: usize,
) {
    let clock = ManualClock::new(SystemClock.now_ms() - 2 * DAY.as_millis() as u64);
    let queue = Queue::new(
        Redis::connect_url(url).await.unwrap(),
        name,
        QueueConfig {
            clock: Arc::new(clock),
            retention,
            ..QueueConfig::default()
        },
    )
    .unwrap();
    let jobs = (0..done)
        .map(|_| NewJob::bytes("ok"))
        .chain((0..dead).map(|_| NewJob::bytes("bad")))
        .map(|job| job.max_attempts(1))
        .collect();
    queue.enqueue_bulk(jobs).await.unwrap();
    let worker = Worker::builder(queue.clone())
        .config(WorkerConfig {
            maintenance: false,
            poll_interval: Duration::from_millis(50),
            ..WorkerConfig::default()
        })
        .start(|job: Job| async move {
            if job.payload() == b"ok" {
                Outcome::Done
            } else {
                Outcome::fail("bad input")
            }
        })
        .unwrap();
    eventually(WAIT, "the jobs to finish", || async {
        let t = queue.counts().await.unwrap().totals;
        t.completed == done as u64 && t.dead == dead as u64
    })
    .await;
    eventually(WAIT, "the worker to record its rules", || async {
        queue.recorded_retention().await.unwrap() == Some(retention)
    })
    .await;
    worker.shutdown().await.unwrap();
}

#[tokio::test]
async fn queues_without_a_worker_are_trimmed_by_their_own_retention_not_the_defaults() {
    let redis_server = RedisServer::start();
    let url = redis_server.url();
    // Configured in the server: dead jobs older than a day go. Its worker
    // ran with the defaults (7 days), and recorded them.
    jobs_finished_two_days_ago(&url, "configured", Retention::default(), 0, 10).await;
    // Not configured in the server: its library workers keep completed
    // jobs for a week and dead ones for a day, and recorded that.
    let library_rules = Retention {
        completed: CompletedRetention::Keep(Bounds::new(1000, 7 * DAY, 1 << 20).unwrap()),
        dead: Bounds::new(1000, DAY, 1 << 20).unwrap(),
    };
    jobs_finished_two_days_ago(&url, "library", library_rules, 3, 4).await;

    let s = server_on(
        redis_server,
        "[queues.configured.retention]\ndead = { max_age = \"1d\" }\n",
    )
    .await;
    let stop = CancellationToken::new();
    let task = tokio::spawn(maintenance::run(
        s.state.clone(),
        BTreeSet::new(),
        stop.clone(),
        maintenance::REFRESH_INTERVAL,
    ));
    let configured = s.state.queue("configured").unwrap();
    let library = s.state.queue("library").unwrap();
    eventually(WAIT, "the server's janitor to trim both queues", || async {
        configured.counts().await.unwrap().dead == 0 && library.counts().await.unwrap().dead == 0
    })
    .await;
    let counts = library.counts().await.unwrap();
    assert_eq!(
        counts.completed, 3,
        "completed jobs the queue's own rules keep for a week are kept (the defaults would remove them)"
    );
    let expected = s.state.config().queues.values().next().unwrap().retention;
    assert_eq!(
        configured.recorded_retention().await.unwrap(),
        expected,
        "the server recorded the rules configured for it"
    );
    stop.cancel();
    task.await.unwrap();
}

/// A push worker's janitor trimmed by the default rules, whatever the queue
/// was configured with.
#[tokio::test]
async fn a_push_workers_janitor_applies_the_queues_configured_retention() {
    let redis_server = RedisServer::start();
    jobs_finished_two_days_ago(&redis_server.url(), "outbox", Retention::default(), 0, 5).await;
    let s = server_on(
        redis_server,
        "[queues.outbox.push]\nurl = \"http://127.0.0.1:9/unused\"\n\
         [queues.outbox.retention]\ndead = { max_age = \"1d\" }\n",
    )
    .await;
    let settings = s.state.config().queues.values().next().unwrap().clone();
    let worker = plimsoll_server::push::start(&s.state, "outbox", settings.push.unwrap()).unwrap();
    let outbox = s.state.queue("outbox").unwrap();
    eventually(
        WAIT,
        "the push worker's janitor to trim the dead set",
        || async { outbox.counts().await.unwrap().dead == 0 },
    )
    .await;
    worker.shutdown().await.unwrap();
}

/// The maintenance of a queue missing from the registry was stopped
/// ("queue left the registry"), though the list is the registry plus a
/// bounded `SCAN` for `meta` keys: a queue whose registration a failover
/// lost, on a keyspace larger than the scan reaches, lost its promoter,
/// rescuer and janitor while it still held jobs. Only a deleted queue (its
/// `meta` gone) stops now.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_the_registry_lost_keeps_its_maintenance_until_it_is_deleted() {
    let redis_server = RedisServer::start();
    let s = server_on(redis_server, "").await;
    let queue = s.state.queue("orphan").unwrap();
    let early = queue
        .enqueue(NewJob::bytes("early").delay(Duration::from_millis(300)))
        .await
        .unwrap();
    let late = queue
        .enqueue(NewJob::bytes("late").delay(Duration::from_secs(3)))
        .await
        .unwrap();
    let stop = CancellationToken::new();
    let task = tokio::spawn(maintenance::run(
        s.state.clone(),
        BTreeSet::new(),
        stop.clone(),
        Duration::from_millis(100),
    ));
    let state_of = |id| {
        let queue = queue.clone();
        async move { queue.job(id).await.unwrap().map(|j| j.state) }
    };
    eventually(
        WAIT,
        "the server's promoter to make the early job waiting",
        || async { state_of(early.id).await == Some(plimsoll::JobState::Waiting) },
    )
    .await;

    // The registration is lost, and the keyspace is too large for the
    // discovery scan (8 calls of 1,000 keys) to come upon the queue's meta.
    s.redis_server.cmd(&["SREM", "plimsoll:queues", "orphan"]);
    s.redis_server.cmd(&[
        "EVAL",
        "for i = 1, 300000 do redis.call('SET', 'filler:' .. i, 'x') end",
        "0",
    ]);
    tokio::time::sleep(Duration::from_millis(500)).await;
    eventually(WAIT, "the late job promoted all the same", || async {
        state_of(late.id).await == Some(plimsoll::JobState::Waiting)
    })
    .await;

    // Deleted: its maintenance stops and writes nothing back.
    queue.delete(true).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let left: Vec<String> = s
        .redis_server
        .keys()
        .into_iter()
        .filter(|k| k.contains("{orphan}"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
    stop.cancel();
    task.await.unwrap();
}
