//! Producer and inspector API: enqueue, options, idempotency, limits,
//! listing, cancel, pause.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use plimsoll::{CancelOutcome, ErrorKind, JobState, NewJob, Queue, QueueConfig};
use serde_json::json;

use crate::support::{self, queue_keys};

#[tokio::test]
async fn an_enqueued_job_waits_with_its_payload_and_defaults() {
    let (_server, queue) = support::queue("mail").await;
    let enqueued = queue
        .enqueue(NewJob::json(&json!({"to": "a@example.com"})).unwrap())
        .await
        .unwrap();
    assert!(!enqueued.duplicate);

    let job = queue.job(enqueued.id).await.unwrap().expect("job exists");
    assert_eq!(job.state, JobState::Waiting);
    assert_eq!(
        job.payload_json::<serde_json::Value>().unwrap(),
        json!({"to": "a@example.com"})
    );
    assert_eq!(job.priority, plimsoll::queue::DEFAULT_PRIORITY);
    assert_eq!(job.max_attempts, plimsoll::queue::DEFAULT_MAX_ATTEMPTS);
    assert_eq!(job.attempts, 0);

    let counts = queue.counts().await.unwrap();
    assert_eq!(counts.waiting, 1);
    assert_eq!(counts.waiting_by_priority[5], 1);
    assert_eq!(counts.totals.enqueued, 1);
    assert!(queue.memory_bytes().await.unwrap() > 0);

    let names = Queue::list(queue.redis(), "plimsoll").await.unwrap();
    assert_eq!(
        names.iter().map(|n| n.as_str()).collect::<Vec<_>>(),
        ["mail"]
    );
}

#[tokio::test]
async fn ids_start_at_1_000_001_and_an_older_queue_jumps_there_once() {
    // Every id from 1,000,001 on has 7 to 14 digits, which Redis stores in
    // one 16-byte allocation: a job costs the same memory all the way.
    let (server, queue) = support::queue("ids").await;
    let first = queue.enqueue(NewJob::bytes(b"a".to_vec())).await.unwrap();
    assert_eq!(first.id.0, 1_000_001);
    // A handle reserves ids a thousand at a time and uses them up in order.
    let bulk = queue
        .enqueue_bulk(vec![NewJob::bytes(b"b".to_vec()); 3])
        .await
        .unwrap();
    let ids: Vec<u64> = bulk.iter().map(|e| e.id.0).collect();
    assert_eq!(ids, [1_000_002, 1_000_003, 1_000_004]);
    assert_eq!(
        server.cmd(&["HGET", "plimsoll:{ids}:meta", "next_id"]),
        "1001000"
    );
    // Another producer gets the next run: ids never collide.
    let redis = plimsoll::Redis::connect_url(&server.url()).await.unwrap();
    let other_producer = Queue::with_defaults(redis.clone(), "ids").unwrap();
    let next = other_producer
        .enqueue(NewJob::bytes(b"c".to_vec()))
        .await
        .unwrap();
    assert_eq!(next.id.0, 1_001_001);
    // A bulk larger than a run reserves all it needs at once.
    let big = other_producer
        .enqueue_bulk(vec![NewJob::bytes(b"d".to_vec()); 2500])
        .await
        .unwrap();
    assert_eq!(big[0].id.0, 1_001_002);
    assert!(big.windows(2).all(|w| w[1].id.0 > w[0].id.0));
    let mut all: Vec<u64> = big.iter().map(|e| e.id.0).chain(ids).collect();
    all.extend([first.id.0, next.id.0]);
    all.sort_unstable();
    all.dedup();
    assert_eq!(all.len(), 2500 + 5);
    assert_eq!(queue.counts().await.unwrap().waiting, 2500 + 5);

    // A queue that counted from 1 before ids had a floor: its next id jumps
    // to the floor, never back onto an id in use.
    let (other, older) = support::queue("older").await;
    let meta = "plimsoll:{older}:meta";
    other.cmd(&["HSET", meta, "next_id", "41"]);
    let next = older.enqueue(NewJob::bytes(b"c".to_vec())).await.unwrap();
    assert_eq!(next.id.0, 1_000_001);
    assert_eq!(other.cmd(&["HGET", meta, "next_id"]), "1001000");
    // A queue already past the floor just counts on.
    server.cmd(&["HSET", "plimsoll:{ids}:meta", "next_id", "5000000"]);
    let later = Queue::with_defaults(redis, "ids")
        .unwrap()
        .enqueue(NewJob::bytes(b"e".to_vec()))
        .await
        .unwrap();
    assert_eq!(later.id.0, 5_000_001);
}

#[tokio::test]
async fn a_payload_over_the_limit_is_refused_and_nothing_is_written() {
    let (server, queue) = support::queue("big").await;
    let err = queue
        .enqueue(NewJob::bytes(vec![b'x'; 512 * 1024 + 1]))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PayloadTooLarge);
    assert!(err.to_string().contains("524289 bytes"), "{err}");
    assert!(queue_keys(&server, "big").is_empty());

    // Exactly at the limit is fine.
    queue
        .enqueue(NewJob::bytes(vec![b'x'; 512 * 1024]))
        .await
        .unwrap();
}

#[tokio::test]
async fn bad_options_are_refused_with_what_was_wrong() {
    let (_server, queue) = support::queue("opts").await;
    let cases = [
        (NewJob::bytes("x").priority(10), "priority 10"),
        (NewJob::bytes("x").max_attempts(0), "max_attempts 0"),
        (NewJob::bytes("x").timeout(Duration::ZERO), "timeout"),
        (NewJob::bytes("x").idempotency_key(""), "idempotency key"),
        (
            NewJob::bytes("x").idempotency_key_for("k", Duration::from_secs(90 * 86_400)),
            "idempotency window",
        ),
    ];
    for (job, expected) in cases {
        let err = queue.enqueue(job).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
        assert!(
            err.to_string().contains(expected),
            "{err} lacks {expected:?}"
        );
    }
    assert_eq!(queue.counts().await.unwrap().totals.enqueued, 0);

    let err = Queue::with_defaults(queue.redis().clone(), "no{braces}").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
}

#[tokio::test]
async fn a_duplicate_idempotency_key_returns_the_first_id_within_its_window() {
    let (server, queue) = support::queue("idem").await;
    let first = queue
        .enqueue(NewJob::bytes("a").idempotency_key_for("order-7", Duration::from_secs(1)))
        .await
        .unwrap();
    let second = queue
        .enqueue(NewJob::bytes("b").idempotency_key_for("order-7", Duration::from_secs(1)))
        .await
        .unwrap();
    assert_eq!(second.id, first.id);
    assert!(second.duplicate);
    assert_eq!(queue.counts().await.unwrap().waiting, 1);

    // Duplicates inside one bulk call are caught too.
    let bulk = queue
        .enqueue_bulk(vec![
            NewJob::bytes("c").idempotency_key("order-8"),
            NewJob::bytes("d").idempotency_key("order-8"),
        ])
        .await
        .unwrap();
    assert_eq!(bulk[1].id, bulk[0].id);
    assert!(!bulk[0].duplicate && bulk[1].duplicate);
    // A duplicate leaves no record behind: one per job that was enqueued.
    assert_eq!(server.cmd(&["HLEN", queue.keys().jobs()]), "2");
    assert_eq!(queue.counts().await.unwrap().totals.enqueued, 2);

    // Once the window has passed, the key is free again.
    let key = queue.keys().idempotency("order-7");
    let ttl: i64 = server.cmd(&["PTTL", &key]).parse().unwrap();
    assert!(
        ttl > 0 && ttl <= 1000,
        "the key lives for its window, got {ttl} ms"
    );
    support::eventually(
        Duration::from_secs(3),
        "the idempotency key to expire",
        || async { server.cmd(&["EXISTS", &key]) == "0" },
    )
    .await;
    let third = queue
        .enqueue(NewJob::bytes("e").idempotency_key_for("order-7", Duration::from_secs(1)))
        .await
        .unwrap();
    assert_ne!(third.id, first.id);
    assert!(!third.duplicate);
}

#[tokio::test]
async fn a_script_flush_between_enqueues_loses_and_doubles_nothing() {
    // A batch is one MULTI/EXEC of the records' HSET and enqueue.lua by
    // SHA. When Redis has lost the script (restart, SCRIPT FLUSH), the HSET
    // lands and the script does not; the producer loads the script and runs
    // the transaction again.
    let (server, queue) = support::queue("flushed").await;
    queue.enqueue(NewJob::bytes("a")).await.unwrap();
    server.cmd(&["SCRIPT", "FLUSH"]);
    let single = queue.enqueue(NewJob::bytes("b")).await.unwrap();
    server.cmd(&["SCRIPT", "FLUSH"]);
    let bulk = queue
        .enqueue_bulk(vec![NewJob::bytes("c"); 600])
        .await
        .unwrap();
    assert!(!single.duplicate && bulk.iter().all(|e| !e.duplicate));
    let counts = queue.counts().await.unwrap();
    assert_eq!(counts.waiting, 602);
    assert_eq!(counts.totals.enqueued, 602);
    assert_eq!(server.cmd(&["HLEN", queue.keys().jobs()]), "602");
    let waiting: Vec<u64> = server
        .cmd(&["LRANGE", queue.keys().waiting(5), "0", "-1"])
        .lines()
        .map(|id| id.parse().unwrap())
        .collect();
    assert_eq!(&waiting[1..2], [single.id.0]);
    assert_eq!(
        &waiting[2..],
        bulk.iter().map(|e| e.id.0).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn a_batch_the_script_refuses_leaves_no_record_behind() {
    // The records go in by HSET before enqueue.lua runs in the same
    // MULTI/EXEC, and Redis does not roll a transaction back. When the
    // script fails (here: someone turned `scheduled` into a string), the
    // producer takes the records out again and says what happened.
    let (server, queue) = support::queue("clobbered").await;
    queue.enqueue(NewJob::bytes("first")).await.unwrap();
    server.cmd(&["SET", queue.keys().scheduled(), "not a sorted set"]);
    let err = queue
        .enqueue(NewJob::bytes("later").delay(Duration::from_secs(60)))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Redis, "{err}");
    assert!(err.to_string().contains("WRONGTYPE"), "{err}");
    assert_eq!(server.cmd(&["HLEN", queue.keys().jobs()]), "1");
    assert_eq!(server.cmd(&["HGET", queue.keys().stats(), "enqueued"]), "1");
}

#[tokio::test]
async fn a_hundred_thousand_jobs_go_in_one_bulk_call() {
    let (_server, queue) = support::queue("bulk").await;
    let jobs: Vec<NewJob> = (0..100_000)
        .map(|i| NewJob::json(&json!({"seq": i})).unwrap())
        .collect();
    let enqueued = queue.enqueue_bulk(jobs).await.unwrap();
    assert_eq!(enqueued.len(), 100_000);
    assert!(
        enqueued.windows(2).all(|w| w[0].id < w[1].id),
        "ids rise in input order"
    );
    let counts = queue.counts().await.unwrap();
    assert_eq!(counts.waiting, 100_000);
    assert_eq!(counts.totals.enqueued, 100_000);
    let last = queue.job(enqueued[99_999].id).await.unwrap().unwrap();
    assert_eq!(
        last.payload_json::<serde_json::Value>().unwrap(),
        json!({"seq": 99_999})
    );
}

#[tokio::test]
async fn a_bulk_call_with_one_bad_job_writes_nothing() {
    let (server, queue) = support::queue("bulkbad").await;
    let mut jobs: Vec<NewJob> = (0..10).map(|_| NewJob::bytes("ok")).collect();
    jobs.push(NewJob::bytes("bad").priority(42));
    let err = queue.enqueue_bulk(jobs).await.unwrap_err();
    assert_eq!(err.written(), 0);
    assert_eq!(err.error.kind(), ErrorKind::InvalidInput);
    assert!(err.error.to_string().contains("job 10"), "{}", err.error);
    assert!(queue_keys(&server, "bulkbad").is_empty());
}

#[tokio::test]
async fn jobs_from_an_iterator_go_in_in_input_order() {
    let (_server, queue) = support::queue("stream").await;
    let taken = AtomicUsize::new(0);
    let jobs = (0..2_500).map(|i| {
        taken.fetch_add(1, Ordering::Relaxed);
        NewJob::json(&json!({"seq": i})).unwrap()
    });
    let enqueued = queue.enqueue_iter(jobs).await.unwrap();
    assert_eq!(taken.load(Ordering::Relaxed), 2_500);
    assert_eq!(enqueued.len(), 2_500);
    assert!(
        enqueued.windows(2).all(|w| w[0].id < w[1].id),
        "ids rise in input order"
    );
    let counts = queue.counts().await.unwrap();
    assert_eq!((counts.waiting, counts.totals.enqueued), (2_500, 2_500));
    let listed = queue.jobs(JobState::Waiting, 0, 3).await.unwrap();
    let seqs: Vec<_> = listed
        .iter()
        .map(|j| j.payload_json::<serde_json::Value>().unwrap()["seq"].clone())
        .collect();
    assert_eq!(
        seqs,
        [json!(0), json!(1), json!(2)],
        "waiting in input order"
    );
    assert!(
        queue
            .enqueue_iter(std::iter::empty())
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn large_payloads_in_a_bulk_call_come_back_whole_and_in_order() {
    // 100 jobs of 8 KiB make a batch too large to encode on the calling
    // task: it is split over the blocking pool and put back together.
    let (_server, queue) = support::queue("bulklarge").await;
    let payload = |i: usize| format!("{i:08}|").repeat(8 * 1024 / 9).into_bytes();
    let enqueued = queue
        .enqueue_bulk((0..300).map(|i| NewJob::bytes(payload(i))).collect())
        .await
        .unwrap();
    assert_eq!(enqueued.len(), 300);
    let listed = queue.jobs(JobState::Waiting, 0, 300).await.unwrap();
    assert_eq!(listed.len(), 300);
    for (i, (job, sent)) in listed.iter().zip(&enqueued).enumerate() {
        assert_eq!(job.id, sent.id, "job {i} waits in input order");
        assert!(
            job.payload == payload(i),
            "job {i}'s payload came back changed"
        );
    }
}

#[tokio::test]
async fn an_iterator_with_a_bad_job_writes_the_batches_before_it_and_stops_there() {
    let (_server, queue) = support::queue("streambad").await;
    let taken = AtomicUsize::new(0);
    let jobs = (0..400).map(|i| {
        taken.fetch_add(1, Ordering::Relaxed);
        let job = NewJob::json(&json!({"seq": i})).unwrap();
        if i == 250 { job.priority(42) } else { job }
    });
    let err = queue.enqueue_iter(jobs).await.unwrap_err();
    assert_eq!(err.error.kind(), ErrorKind::InvalidInput);
    assert!(err.error.to_string().contains("job 250"), "{}", err.error);
    // Batches of 100: jobs 0-199 went out before job 250 was taken; the
    // batch it was in (200-250) did not, and nothing after it was taken.
    assert_eq!(taken.load(Ordering::Relaxed), 251);
    assert_eq!(err.outcomes.len(), 251);
    assert_eq!(err.written(), 200);
    assert!(err.outcomes[..200].iter().all(Option::is_some));
    assert!(err.outcomes[200..].iter().all(Option::is_none));
    let counts = queue.counts().await.unwrap();
    assert_eq!((counts.waiting, counts.totals.enqueued), (200, 200));
}

#[tokio::test]
async fn delayed_jobs_are_scheduled_and_listed_by_due_time() {
    let (_server, queue) = support::queue("later").await;
    let late = queue
        .enqueue(NewJob::bytes("late").delay(Duration::from_secs(7200)))
        .await
        .unwrap();
    let soon = queue
        .enqueue(NewJob::bytes("soon").delay(Duration::from_secs(3600)))
        .await
        .unwrap();
    let counts = queue.counts().await.unwrap();
    assert_eq!((counts.waiting, counts.scheduled), (0, 2));
    let listed = queue.jobs(JobState::Scheduled, 0, 10).await.unwrap();
    assert_eq!(
        listed.iter().map(|j| j.id).collect::<Vec<_>>(),
        [soon.id, late.id]
    );
    let info = &listed[0];
    let due = info.state_time_ms.unwrap();
    assert!(due >= info.enqueued_at_ms + 3_600_000 && due < info.enqueued_at_ms + 3_601_000);
}

#[tokio::test]
async fn waiting_jobs_are_listed_by_priority_then_in_order() {
    let (_server, queue) = support::queue("prio").await;
    let low = queue
        .enqueue(NewJob::bytes("low").priority(9))
        .await
        .unwrap();
    let mid1 = queue.enqueue(NewJob::bytes("mid1")).await.unwrap();
    let mid2 = queue.enqueue(NewJob::bytes("mid2")).await.unwrap();
    let high = queue
        .enqueue(NewJob::bytes("high").priority(0))
        .await
        .unwrap();
    let order: Vec<_> = queue
        .jobs(JobState::Waiting, 0, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|j| j.id)
        .collect();
    assert_eq!(order, [high.id, mid1.id, mid2.id, low.id]);
    let page: Vec<_> = queue
        .jobs(JobState::Waiting, 1, 2)
        .await
        .unwrap()
        .into_iter()
        .map(|j| j.id)
        .collect();
    assert_eq!(page, [mid1.id, mid2.id]);
}

#[tokio::test]
async fn cancel_removes_waiting_and_scheduled_jobs() {
    let (server, queue) = support::queue("cancel").await;
    let waiting = queue.enqueue(NewJob::bytes("w")).await.unwrap();
    let keep = queue.enqueue(NewJob::bytes("k")).await.unwrap();
    let scheduled = queue
        .enqueue(NewJob::bytes("s").delay(Duration::from_secs(60)))
        .await
        .unwrap();

    assert_eq!(
        queue.cancel(waiting.id).await.unwrap(),
        CancelOutcome::Cancelled(JobState::Waiting)
    );
    assert_eq!(
        queue.cancel(scheduled.id).await.unwrap(),
        CancelOutcome::Cancelled(JobState::Scheduled)
    );
    assert_eq!(
        queue.cancel(waiting.id).await.unwrap(),
        CancelOutcome::NotFound
    );
    assert_eq!(
        queue.cancel(plimsoll::JobId(999)).await.unwrap(),
        CancelOutcome::NotFound
    );
    assert!(queue.job(waiting.id).await.unwrap().is_none());

    let counts = queue.counts().await.unwrap();
    assert_eq!((counts.waiting, counts.scheduled), (1, 0));
    assert_eq!(counts.totals.cancelled, 2);
    assert_eq!(
        queue.jobs(JobState::Waiting, 0, 10).await.unwrap()[0].id,
        keep.id
    );
    let jobs: String = server.cmd(&["HLEN", queue.keys().jobs()]);
    assert_eq!(jobs, "1", "the cancelled records are gone");
}

#[tokio::test]
async fn pause_is_visible_and_resume_clears_it() {
    let (_server, queue) = support::queue("pause").await;
    queue.pause().await.unwrap();
    assert!(queue.counts().await.unwrap().paused);
    queue.resume().await.unwrap();
    assert!(!queue.counts().await.unwrap().paused);
}

#[tokio::test]
async fn an_unreachable_redis_is_a_connection_error() {
    let (mut server, queue) = support::queue("down").await;
    server.kill();
    let err = queue.enqueue(NewJob::bytes("x")).await.unwrap_err();
    assert!(
        matches!(err.kind(), ErrorKind::Connection | ErrorKind::Timeout),
        "{err:?}"
    );
    assert!(err.is_transient());
}

#[tokio::test]
async fn a_custom_prefix_names_every_key() {
    let (server, redis) = support::redis().await;
    let config = QueueConfig {
        prefix: "acme".into(),
        ..QueueConfig::default()
    };
    let queue = Queue::new(redis, "jobs", config).unwrap();
    queue.enqueue(NewJob::bytes("x")).await.unwrap();
    assert!(
        server.keys().iter().all(|k| k.starts_with("acme:")),
        "{:?}",
        server.keys()
    );
}

#[tokio::test]
async fn a_meta_hash_deleted_by_hand_does_not_send_ids_back_onto_a_live_run() {
    let (server, first) = support::queue("gone-meta").await;
    let early = first.enqueue(NewJob::bytes("first")).await.unwrap();
    // next_id goes, the producers' runs stay recorded in id_runs.
    server.cmd(&["DEL", first.keys().meta()]);
    let second = Queue::with_defaults(first.redis().clone(), "gone-meta").unwrap();
    let later = second.enqueue(NewJob::bytes("second")).await.unwrap();
    assert!(
        later.id.0 > early.id.0 + 999,
        "the new run {} overlaps the first producer's run from {}",
        later.id,
        early.id
    );
    let mine = first.enqueue(NewJob::bytes("first again")).await.unwrap();
    assert_eq!(mine.id.0, early.id.0 + 1);
    assert_eq!(first.counts().await.unwrap().waiting, 3);
}
