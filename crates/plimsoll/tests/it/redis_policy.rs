//! A Redis that may evict keys is refused by producers and workers, with an
//! error naming the policy, unless the risk is accepted; on a cluster every
//! primary is asked. And jobs cannot be scheduled past ten years.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use plimsoll::redis_policy::RedisPolicy;
use plimsoll::{ErrorKind, JobState, NewJob, Outcome, Queue, QueueConfig, Redis, Worker};

use crate::support::{RedisCluster, RedisServer, fast_worker};

const EVICTING: [&str; 7] = [
    "allkeys-lru",
    "allkeys-lfu",
    "allkeys-random",
    "volatile-lru",
    "volatile-lfu",
    "volatile-random",
    "volatile-ttl",
];

fn allowing() -> QueueConfig {
    QueueConfig {
        allow_evicting_redis: true,
        ..QueueConfig::default()
    }
}

/// On a Redis with `maxmemory-policy allkeys-lru` job records and
/// idempotency keys vanished silently under memory pressure; nothing said
/// the promise could not hold there.
#[tokio::test]
async fn an_evicting_redis_is_refused_with_every_policy_named_and_nothing_written() {
    for policy in EVICTING {
        let server = RedisServer::builder().maxmemory_policy(policy).start();
        assert_eq!(
            server.cmd(&["CONFIG", "GET", "maxmemory-policy"]),
            format!("maxmemory-policy\n{policy}")
        );
        let redis = Redis::connect_url(&server.url()).await.unwrap();
        let queue = Queue::with_defaults(redis.clone(), "mail").unwrap();

        let err = queue.enqueue(NewJob::bytes("one")).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::EvictingRedis, "{policy}: {err}");
        assert!(err.message().contains(policy), "{err}");
        assert!(err.message().contains("allow_evicting_redis"), "{err}");
        let bulk = queue
            .enqueue_bulk(vec![NewJob::bytes("a"), NewJob::bytes("b")])
            .await
            .unwrap_err();
        assert_eq!(bulk.error.kind(), ErrorKind::EvictingRedis);
        assert_eq!(bulk.written(), 0);
        assert_eq!(server.dbsize(), 0, "{policy}: nothing was written");

        // Accepted explicitly: it runs.
        let accepted = Queue::new(redis, "mail", allowing()).unwrap();
        accepted.enqueue(NewJob::bytes("one")).await.unwrap();
        assert_eq!(accepted.counts().await.unwrap().waiting, 1);
    }
}

#[tokio::test]
async fn noeviction_is_accepted_and_the_check_is_made_once_per_handle() {
    let server = RedisServer::builder()
        .maxmemory_policy("noeviction")
        .start();
    let redis = Redis::connect_url(&server.url()).await.unwrap();
    let queue = Queue::with_defaults(redis.clone(), "mail").unwrap();
    for i in 0..10 {
        queue.enqueue(NewJob::bytes(format!("{i}"))).await.unwrap();
    }
    // Each check asks `CONFIG GET appendfsync` once; the enqueue path never
    // sends CONFIG otherwise.
    assert_eq!(command_calls(&server, "config|get"), 1);
    let other = Queue::with_defaults(redis, "mail").unwrap();
    other.enqueue(NewJob::bytes("x")).await.unwrap();
    assert_eq!(command_calls(&server, "config|get"), 2);
    assert_eq!(queue.counts().await.unwrap().waiting, 11);
}

fn command_calls(server: &RedisServer, command: &str) -> u64 {
    let stats = server.info("commandstats");
    stats
        .get(&format!("cmdstat_{command}"))
        .and_then(|v| v.split(',').next())
        .and_then(|calls| calls.strip_prefix("calls="))
        .map_or(0, |n| n.parse().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_does_not_lease_jobs_on_an_evicting_redis() {
    let server = RedisServer::builder()
        .maxmemory_policy("allkeys-lru")
        .start();
    let redis = Redis::connect_url(&server.url()).await.unwrap();
    // A producer that accepted the risk; a worker that did not.
    let producer = Queue::new(redis.clone(), "mail", allowing()).unwrap();
    let job = producer.enqueue(NewJob::bytes("x")).await.unwrap();
    let consumer = Queue::with_defaults(redis, "mail").unwrap();
    let (ran_tx, mut ran_rx) = tokio::sync::mpsc::unbounded_channel();
    let worker = Worker::builder(consumer)
        .config(fast_worker())
        .start(move |_job: plimsoll::Job| {
            let ran = ran_tx.clone();
            async move {
                let _ = ran.send(());
                Outcome::Done
            }
        })
        .unwrap();
    let ran = tokio::time::timeout(Duration::from_millis(800), ran_rx.recv()).await;
    assert!(ran.is_err(), "the handler ran on an evicting Redis");
    let info = producer.job(job.id).await.unwrap().unwrap();
    assert_eq!(info.state, JobState::Waiting, "the job was not leased");
    worker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_cluster_every_primary_is_asked() {
    let cluster = RedisCluster::start();
    let redis = Redis::connect_url(&cluster.urls()[0]).await.unwrap();
    let durability = RedisPolicy::inspect(&redis).await.unwrap();
    assert_eq!(durability.nodes.len(), 3);
    durability.refuse_eviction().unwrap();

    // One primary of three evicts: queues on every shard are refused, and
    // the error names that node.
    let evicting = &cluster.nodes()[2];
    evicting.cmd(&["CONFIG", "SET", "maxmemory-policy", "volatile-ttl"]);
    let err = RedisPolicy::inspect(&redis)
        .await
        .unwrap()
        .refuse_eviction()
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::EvictingRedis);
    assert!(
        err.message().contains(&format!(
            "127.0.0.1:{} has maxmemory-policy volatile-ttl",
            evicting.port()
        )),
        "{err}"
    );
    let queue = Queue::with_defaults(redis, "alpha").unwrap();
    let err = queue.enqueue(NewJob::bytes("x")).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::EvictingRedis);
}

#[tokio::test]
async fn durability_warnings_say_when_redis_does_not_fsync_every_write() {
    let plain = RedisServer::start();
    let redis = Redis::connect_url(&plain.url()).await.unwrap();
    let warnings = RedisPolicy::inspect(&redis).await.unwrap().warnings();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].contains("appendonly no"), "{warnings:?}");

    let durable = RedisServer::builder()
        .appendonly()
        .config("appendfsync", "always")
        .start();
    let redis = Redis::connect_url(&durable.url()).await.unwrap();
    let warnings = RedisPolicy::inspect(&redis).await.unwrap().warnings();
    assert!(warnings.is_empty(), "{warnings:?}");
}

/// `delay_ms = 18446744073709551615` was accepted, and every page that
/// listed the job then failed to format its due time.
#[tokio::test]
async fn a_job_cannot_be_scheduled_more_than_ten_years_ahead() {
    let server = RedisServer::start();
    let redis = Redis::connect_url(&server.url()).await.unwrap();
    let queue = Queue::with_defaults(redis, "mail").unwrap();
    let far = [
        NewJob::bytes("x").delay(Duration::from_millis(u64::MAX)),
        NewJob::bytes("x").delay(Duration::MAX),
        NewJob::bytes("x").delay(plimsoll::queue::MAX_SCHEDULE_AHEAD + Duration::from_secs(1)),
        NewJob::bytes("x").run_at(UNIX_EPOCH + Duration::from_millis(u64::MAX)),
        NewJob::bytes("x").run_at(SystemTime::now() + Duration::from_secs(11 * 365 * 86_400)),
    ];
    for job in far {
        let err = queue.enqueue(job.clone()).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
        assert!(err.message().contains("10 years"), "{err}");
        let bulk = queue.enqueue_bulk(vec![job]).await.unwrap_err();
        assert_eq!(bulk.error.kind(), ErrorKind::InvalidInput);
    }
    assert_eq!(server.dbsize(), 0, "nothing was written");
    let near = SystemTime::now() + Duration::from_secs(9 * 365 * 86_400);
    queue
        .enqueue(NewJob::bytes("ok").run_at(near))
        .await
        .unwrap();
    queue
        .enqueue(NewJob::bytes("ok").run_at(UNIX_EPOCH))
        .await
        .unwrap();
    assert_eq!(queue.counts().await.unwrap().scheduled, 1);
}
