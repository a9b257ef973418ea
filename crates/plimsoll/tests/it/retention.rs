//! Retention: completed jobs removed by default, opt-in retention within its
//! bounds, dead-set caps, age bounds that fire on an idle queue, and a
//! keyspace that matches docs/keyspace.md.

use std::sync::Arc;
use std::time::Duration;

use plimsoll::{
    Bounds, CompletedRetention, JobId, JobState, ManualClock, NewJob, Outcome, Queue, QueueConfig,
    Retention, Worker,
};

use crate::support::{self, eventually, fast_worker, queue_keys};

const WAIT: Duration = Duration::from_secs(10);
const HOUR: Duration = Duration::from_secs(3600);

fn config(retention: Retention, clock: &ManualClock) -> QueueConfig {
    QueueConfig {
        retention,
        clock: Arc::new(clock.clone()),
        ..QueueConfig::default()
    }
}

/// Runs `n` jobs (payload: their index) through a worker whose handler
/// returns `outcome`, and waits until `done` reports them all settled.
async fn run_jobs(
    queue: &Queue,
    n: usize,
    outcome: fn(&[u8]) -> Outcome,
    done: impl Fn(&plimsoll::QueueCounts) -> bool,
) {
    let jobs: Vec<NewJob> = (0..n)
        .map(|i| NewJob::bytes(format!("job-{i:04}")))
        .collect();
    queue.enqueue_bulk(jobs).await.unwrap();
    // One at a time, so jobs settle in the order they were enqueued.
    let worker = Worker::builder(queue.clone())
        .config(plimsoll::worker::WorkerConfig {
            concurrency: 1,
            prefetch: 0,
            ..fast_worker()
        })
        .start(move |job: plimsoll::Job| async move { outcome(job.payload()) })
        .unwrap();
    eventually(WAIT, "the jobs to settle", || async {
        done(&queue.counts().await.unwrap())
    })
    .await;
    worker.shutdown().await.unwrap();
}

#[tokio::test]
async fn retained_completed_jobs_stay_within_their_count_newest_kept() {
    let clock = ManualClock::starting_now();
    let retention = Retention {
        completed: CompletedRetention::Keep(Bounds::new(5, HOUR, 1 << 20).unwrap()),
        ..Retention::default()
    };
    let (_server, queue) = support::queue_with("keep", config(retention, &clock)).await;
    let jobs: Vec<NewJob> = (0..20)
        .map(|i| NewJob::bytes(format!("job-{i:04}")))
        .collect();
    let enqueued: Vec<u64> = queue
        .enqueue_bulk(jobs)
        .await
        .unwrap()
        .iter()
        .map(|e| e.id.0)
        .collect();
    // One at a time, a millisecond apart: completion order is id order.
    let tick = clock.clone();
    let worker = Worker::builder(queue.clone())
        .config(plimsoll::worker::WorkerConfig {
            concurrency: 1,
            prefetch: 0,
            ..fast_worker()
        })
        .start(move |_job: plimsoll::Job| {
            tick.advance(Duration::from_millis(1));
            async { Outcome::Done }
        })
        .unwrap();
    eventually(WAIT, "20 completions", || async {
        queue.counts().await.unwrap().totals.completed == 20
    })
    .await;
    worker.shutdown().await.unwrap();
    let counts = queue.counts().await.unwrap();
    assert_eq!(counts.completed, 5);
    let kept = queue.jobs(JobState::Completed, 0, 100).await.unwrap();
    let ids: Vec<u64> = kept.iter().map(|j| j.id.0).collect();
    assert_eq!(ids, enqueued[15..], "the newest are kept, oldest first");
    let record_bytes: u64 = kept.iter().map(|j| j.stored_bytes as u64).sum();
    assert_eq!(
        counts.completed_bytes, record_bytes,
        "the byte total matches the records"
    );
}

#[tokio::test]
async fn retained_completed_jobs_stay_within_their_byte_budget() {
    let clock = ManualClock::starting_now();
    // Each record is 24 header bytes + 8 payload bytes: 32. Room for 3.
    let retention = Retention {
        completed: CompletedRetention::Keep(Bounds::new(1000, HOUR, 100).unwrap()),
        ..Retention::default()
    };
    let (_server, queue) = support::queue_with("budget", config(retention, &clock)).await;
    run_jobs(&queue, 10, |_| Outcome::Done, |c| c.totals.completed == 10).await;
    let counts = queue.counts().await.unwrap();
    assert_eq!(counts.completed, 3);
    assert_eq!(counts.completed_bytes, 96);
}

#[tokio::test]
async fn age_bounds_fire_on_an_idle_queue() {
    let clock = ManualClock::starting_now();
    let retention = Retention {
        completed: CompletedRetention::Keep(Bounds::new(1000, HOUR, 1 << 20).unwrap()),
        dead: Bounds::new(1000, 2 * HOUR, 1 << 20).unwrap(),
    };
    let (server, queue) = support::queue_with("idle", config(retention, &clock)).await;
    run_jobs(
        &queue,
        6,
        |p| {
            if p.ends_with(b"0") || p.ends_with(b"1") {
                Outcome::fail("no")
            } else {
                Outcome::Done
            }
        },
        |c| c.totals.completed == 4 && c.dead == 2,
    )
    .await;

    // Nothing is enqueued or run from here on; only the janitor works.
    let worker = Worker::builder(queue.clone())
        .config(fast_worker())
        .start(|_job: plimsoll::Job| async { Outcome::Done })
        .unwrap();
    clock.advance(HOUR + Duration::from_secs(1));
    eventually(WAIT, "completed jobs past their age to go", || async {
        queue.counts().await.unwrap().completed == 0
    })
    .await;
    assert_eq!(
        queue.counts().await.unwrap().dead,
        2,
        "dead jobs are kept for 2 h"
    );
    clock.advance(HOUR);
    eventually(WAIT, "dead jobs past their age to go", || async {
        queue.counts().await.unwrap().dead == 0
    })
    .await;
    worker.shutdown().await.unwrap();
    let counts = queue.counts().await.unwrap();
    assert_eq!((counts.completed_bytes, counts.dead_bytes), (0, 0));
    assert_eq!(
        server.cmd(&["EXISTS", queue.keys().jobs()]),
        "0",
        "no records left"
    );
}

#[tokio::test]
async fn the_dead_set_is_capped_by_count_oldest_removed_first() {
    let clock = ManualClock::starting_now();
    let retention = Retention {
        dead: Bounds::new(3, HOUR, 1 << 20).unwrap(),
        ..Retention::default()
    };
    let (server, queue) = support::queue_with("capped", config(retention, &clock)).await;
    let mut expected = Vec::new();
    for i in 0..8 {
        // One at a time, so their times of death are in order.
        clock.advance(Duration::from_secs(1));
        let id = queue
            .enqueue(NewJob::bytes(format!("job-{i}")))
            .await
            .unwrap()
            .id;
        expected.push(id);
    }
    let worker = Worker::builder(queue.clone())
        .config(plimsoll::worker::WorkerConfig {
            concurrency: 1,
            prefetch: 0,
            ..fast_worker()
        })
        .start(|_job: plimsoll::Job| async { Outcome::fail("always") })
        .unwrap();
    eventually(WAIT, "8 deaths", || async {
        queue.counts().await.unwrap().totals.dead == 8
    })
    .await;
    worker.shutdown().await.unwrap();
    let dead: Vec<JobId> = queue
        .jobs(JobState::Dead, 0, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|j| j.id)
        .collect();
    assert_eq!(dead, expected[5..], "the three newest are kept");
    let hlen: u64 = server.cmd(&["HLEN", queue.keys().jobs()]).parse().unwrap();
    assert_eq!(hlen, 3, "the records of removed dead jobs are gone too");
}

#[tokio::test]
async fn the_dead_set_is_capped_by_bytes() {
    let clock = ManualClock::starting_now();
    let retention = Retention {
        dead: Bounds::new(1000, HOUR, 300).unwrap(),
        ..Retention::default()
    };
    let (_server, queue) = support::queue_with("deadbytes", config(retention, &clock)).await;
    run_jobs(
        &queue,
        20,
        |_| Outcome::fail("boom"),
        |c| c.totals.dead == 20,
    )
    .await;
    let counts = queue.counts().await.unwrap();
    assert!(counts.dead_bytes <= 300, "{} bytes", counts.dead_bytes);
    assert!(counts.dead >= 1 && counts.dead < 20);
    let records: u64 = queue
        .jobs(JobState::Dead, 0, 100)
        .await
        .unwrap()
        .iter()
        .map(|j| j.stored_bytes as u64)
        .sum();
    assert_eq!(records, counts.dead_bytes);
}

#[tokio::test]
async fn switching_retention_off_clears_what_was_kept() {
    let clock = ManualClock::starting_now();
    let keep = Retention {
        completed: CompletedRetention::Keep(Bounds::new(100, HOUR, 1 << 20).unwrap()),
        ..Retention::default()
    };
    let (_server, redis) = support::redis().await;
    let queue = Queue::new(redis.clone(), "switch", config(keep, &clock)).unwrap();
    run_jobs(&queue, 10, |_| Outcome::Done, |c| c.totals.completed == 10).await;
    assert_eq!(queue.counts().await.unwrap().completed, 10);

    let queue = Queue::new(redis, "switch", config(Retention::default(), &clock)).unwrap();
    let worker = Worker::builder(queue.clone())
        .config(fast_worker())
        .start(|_job: plimsoll::Job| async { Outcome::Done })
        .unwrap();
    eventually(WAIT, "the janitor to clear retained jobs", || async {
        queue.counts().await.unwrap().completed == 0
    })
    .await;
    worker.shutdown().await.unwrap();
}

/// The documented keyspace: patterns in backticks from the first column of
/// the tables in docs/keyspace.md, with their types.
fn documented_keys() -> Vec<(String, String)> {
    let doc = include_str!("../../../../docs/keyspace.md");
    doc.lines()
        .filter(|line| line.starts_with("| `"))
        .map(|line| {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            (
                cells[1].trim_matches('`').to_string(),
                cells[2].trim_matches('`').to_string(),
            )
        })
        .collect()
}

/// Whether `key` fits `pattern`, where `<name>` stands for any non-empty text.
fn fits(pattern: &str, key: &str) -> bool {
    let parts: Vec<&str> = pattern
        .split('<')
        .flat_map(|chunk| match chunk.split_once('>') {
            Some((_, rest)) => vec!["\u{0}", rest],
            None => vec![chunk],
        })
        .collect();
    fn go(parts: &[&str], key: &str) -> bool {
        match parts.split_first() {
            None => key.is_empty(),
            Some((&"\u{0}", rest)) => (1..=key.len())
                .filter(|i| key.is_char_boundary(*i))
                .any(|i| go(rest, &key[i..])),
            Some((literal, rest)) => key.strip_prefix(literal).is_some_and(|k| go(rest, k)),
        }
    }
    go(&parts, key)
}

#[tokio::test]
async fn the_keyspace_after_a_varied_run_is_the_documented_one() {
    let clock = ManualClock::starting_now();
    let retention = Retention {
        completed: CompletedRetention::Keep(Bounds::new(100, HOUR, 1 << 20).unwrap()),
        ..Retention::default()
    };
    let (server, queue) = support::queue_with("tour", config(retention, &clock)).await;
    let mut jobs: Vec<NewJob> = (0..50)
        .map(|i| NewJob::bytes(format!("job-{i:04}")))
        .collect();
    jobs.push(NewJob::bytes("later").delay(10 * HOUR));
    jobs.push(NewJob::bytes("once").idempotency_key("order-1"));
    jobs.push(NewJob::bytes("urgent").priority(0));
    queue.enqueue_bulk(jobs).await.unwrap();
    let worker = Worker::builder(queue.clone())
        .config(plimsoll::worker::WorkerConfig {
            shutdown_grace: Duration::from_millis(50),
            ..fast_worker()
        })
        .start(|job: plimsoll::Job| async move {
            match job.payload().last() {
                Some(b'1') => Outcome::fail("dead"),
                Some(b'2') if job.attempt() == 1 => Outcome::retry("again"),
                Some(b'3') => std::future::pending().await,
                _ => Outcome::Done,
            }
        })
        .unwrap();
    eventually(WAIT, "the run to settle", || async {
        // Retries are due 20 ms after failing, on the test's clock.
        clock.advance(Duration::from_millis(25));
        let c = queue.counts().await.unwrap();
        c.dead == 5 && c.active == 5 && c.totals.completed == 42
    })
    .await;

    let documented = documented_keys();
    assert!(
        documented.len() >= 10,
        "docs/keyspace.md lists the keys: {documented:?}"
    );
    let keys = server.keys();
    for key in &keys {
        let Some((pattern, kind)) = documented.iter().find(|(pattern, _)| fits(pattern, key))
        else {
            panic!("key {key} is not in docs/keyspace.md");
        };
        let actual = server.cmd(&["TYPE", key]);
        assert_eq!(&actual, kind, "{key} ({pattern}) has type {actual}");
    }
    let base = "plimsoll:{tour}";
    for expected in [
        "jobs",
        "scheduled",
        "dead",
        "completed",
        "workers",
        "meta",
        "stats",
        "idem:order-1",
    ] {
        assert!(
            keys.contains(&format!("{base}:{expected}")),
            "{expected} in {keys:?}"
        );
    }
    worker.shutdown().await.unwrap();
    // Shut down, the worker's keys are gone: its unfinished jobs went back.
    let after = queue_keys(&server, "tour");
    assert!(!after.iter().any(|k| k.contains(":active:")), "{after:?}");
    assert_eq!(queue.counts().await.unwrap().waiting, 5);
}
