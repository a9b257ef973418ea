//! Faults of a replicated Redis on one primary and its replica: a failover
//! that loses the writes the replica never received. The replica is
//! detached before those writes (so the loss is deterministic), the primary
//! is killed with SIGKILL and the replica takes over its address, as a
//! promoted replica behind a virtual IP would.

use std::collections::{HashMap, HashSet};

use plimsoll::{JobState, NewJob, Queue, Redis};
use plimsoll_test_support::RedisPair;

/// Every waiting job's id and payload, as the queue lists them (an id
/// listed twice appears twice).
pub async fn waiting(queue: &Queue) -> Vec<(u64, Vec<u8>)> {
    let mut all = Vec::new();
    loop {
        let page = queue
            .jobs(JobState::Waiting, all.len(), 1000)
            .await
            .unwrap();
        if page.is_empty() {
            return all;
        }
        all.extend(page.into_iter().map(|job| (job.id.0, job.payload)));
    }
}

/// Waits until `redis` has reconnected after its server went away (the
/// first call on a broken connection fails; the handle reconnects behind it).
pub async fn reconnected(redis: &Redis) {
    crate::support::eventually(
        std::time::Duration::from_secs(10),
        "a reconnect",
        || async { redis.query::<String>(&redis::cmd("PING")).await.is_ok() },
    )
    .await;
}

async fn enqueue_named(
    queue: &Queue,
    names: impl IntoIterator<Item = String>,
) -> Vec<(u64, Vec<u8>)> {
    let mut acked = Vec::new();
    for name in names {
        let done = queue.enqueue(NewJob::bytes(name.clone())).await.unwrap();
        acked.push((done.id.0, name.into_bytes()));
    }
    acked
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ids_are_not_reused_after_a_failover_loses_the_reservation() {
    let mut pair = RedisPair::start();
    let url = pair.primary.url();
    let connect = || async { Redis::connect_url(&url).await.unwrap() };

    // Jobs the replica has: they survive the failover.
    let early = Queue::with_defaults(connect().await, "ids").unwrap();
    let kept = enqueue_named(&early, (0..10).map(|i| format!("early-{i}"))).await;
    pair.wait_in_sync();

    // A producer reserves a run and enqueues on the primary alone: its
    // reservation and its jobs are lost in the failover, its run is not.
    pair.detach_replica();
    let stale = Queue::with_defaults(connect().await, "ids").unwrap();
    let lost = enqueue_named(&stale, (0..5).map(|i| format!("lost-{i}"))).await;
    pair.fail_over();
    reconnected(stale.redis()).await;

    // A fresh producer reserves on the promoted replica, whose next_id is
    // from before the lost reservation; then the stale one goes on.
    let fresh = Queue::with_defaults(connect().await, "ids").unwrap();
    let fresh_acked = enqueue_named(&fresh, (0..20).map(|i| format!("fresh-{i}"))).await;
    let stale_acked = enqueue_named(&stale, (0..20).map(|i| format!("stale-{i}"))).await;

    let listed = waiting(&fresh).await;
    let mut seen = HashSet::new();
    let twice: Vec<u64> = listed
        .iter()
        .filter(|(id, _)| !seen.insert(*id))
        .map(|(id, _)| *id)
        .collect();
    assert!(twice.is_empty(), "ids listed twice in waiting: {twice:?}");
    let records: HashMap<u64, Vec<u8>> = listed.into_iter().collect();
    let acked_after: Vec<_> = kept
        .iter()
        .chain(&fresh_acked)
        .chain(&stale_acked)
        .collect();
    let overwritten: Vec<u64> = acked_after
        .iter()
        .filter(|(id, payload)| records.get(id) != Some(payload))
        .map(|(id, _)| *id)
        .collect();
    assert!(
        overwritten.is_empty(),
        "acknowledged jobs whose record is missing or another job's: {overwritten:?}"
    );
    assert_eq!(
        records.len(),
        kept.len() + fresh_acked.len() + stale_acked.len()
    );
    // The stale producer's first batch after the failover found its run
    // gone and went under a fresh reservation, made after the fresh
    // producer's: none of its ids are from the run it held in memory.
    let fresh_top = fresh_acked.iter().map(|(id, _)| *id).max().unwrap();
    assert!(
        stale_acked.iter().all(|(id, _)| *id > fresh_top),
        "the stale producer wrote under ids of its lost run: {:?} (fresh up to {fresh_top})",
        stale_acked.iter().map(|(id, _)| *id).collect::<Vec<_>>()
    );
    // Durability off: what the primary alone had is gone (the next test
    // shows the setting that prevents it).
    assert!(
        lost.iter()
            .all(|(id, payload)| records.get(id) != Some(payload))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_replica_durability_no_acknowledged_job_is_lost_in_a_failover() {
    use std::time::{Duration, Instant};

    use plimsoll::{Durability, ErrorKind, QueueConfig};

    let mut pair = RedisPair::start();
    let redis = Redis::connect_url(&pair.primary.url()).await.unwrap();
    let durable = Queue::new(
        redis.clone(),
        "durable",
        QueueConfig {
            // Long enough that a replica in sync confirms in time on a
            // loaded machine (200 ms did not, once, beside the cluster
            // fault tests).
            durability: Durability::Replicas {
                count: 1,
                timeout: Duration::from_secs(1),
            },
            ..QueueConfig::default()
        },
    )
    .unwrap();
    let plain = Queue::with_defaults(redis.clone(), "plain").unwrap();

    // In sync: both settings acknowledge, and both keep what they did.
    let durable_acked = enqueue_named(&durable, (0..20).map(|i| format!("d-{i}"))).await;
    let mut plain_acked = enqueue_named(&plain, (0..20).map(|i| format!("p-{i}"))).await;

    // The replica falls behind for good (it will be promoted without what
    // follows).
    pair.detach_replica();
    plain_acked.extend(enqueue_named(&plain, (20..40).map(|i| format!("p-{i}"))).await);
    let started = Instant::now();
    let err = durable
        .enqueue(NewJob::bytes("d-unconfirmed"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotReplicated, "{err}");
    assert!(err.is_transient());
    let message = err.to_string();
    assert!(
        message.contains("written to the primary") && message.contains("0 of the 1 replica"),
        "{message}"
    );
    assert!(
        message.contains("job 1"),
        "the error names the job: {message}"
    );
    assert!(started.elapsed() >= Duration::from_secs(1));
    // A bulk call says which jobs are on the primary all the same.
    let bulk = durable
        .enqueue_bulk(
            (0..150)
                .map(|i| NewJob::bytes(format!("d-bulk-{i}")))
                .collect(),
        )
        .await
        .unwrap_err();
    assert_eq!(bulk.error.kind(), ErrorKind::NotReplicated);
    assert_eq!(bulk.written(), 150, "{bulk}");

    pair.fail_over();
    reconnected(&redis).await;
    let kept = |listed: Vec<(u64, Vec<u8>)>, acked: &[(u64, Vec<u8>)]| {
        let records: HashMap<u64, Vec<u8>> = listed.into_iter().collect();
        acked
            .iter()
            .filter(|(id, payload)| records.get(id) == Some(payload))
            .count()
    };
    let durable_kept = kept(waiting(&durable).await, &durable_acked);
    let plain_kept = kept(waiting(&plain).await, &plain_acked);
    assert_eq!(
        durable_kept,
        durable_acked.len(),
        "durable: acknowledged jobs lost"
    );
    // Durability primary: the 20 acknowledged after the replica fell behind
    // are gone.
    assert_eq!((plain_acked.len(), plain_kept), (40, 20));
}

#[tokio::test]
async fn replicas_aof_durability_needs_a_redis_with_waitaof() {
    use plimsoll::{Durability, ErrorKind, QueueConfig};

    let (server, redis) = crate::support::redis().await;
    let version = server.info("server")["redis_version"].clone();
    let queue = Queue::new(
        redis,
        "aof",
        QueueConfig {
            durability: "replicas-aof:1:50ms".parse::<Durability>().unwrap(),
            ..QueueConfig::default()
        },
    )
    .unwrap();
    let err = queue.enqueue(NewJob::bytes("x")).await.unwrap_err();
    let major_minor: Vec<u32> = version
        .split('.')
        .take(2)
        .map(|p| p.parse().unwrap())
        .collect();
    if major_minor < vec![7, 2] {
        assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
        assert!(
            err.to_string().contains("7.2") && err.to_string().contains(&version),
            "{err}"
        );
        assert_eq!(queue.counts().await.unwrap().totals.enqueued, 0);
    } else {
        // A server without replicas never confirms.
        assert_eq!(err.kind(), ErrorKind::NotReplicated, "{err}");
    }
}
