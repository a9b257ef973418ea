//! The registry of queues: registration that neither waits for nor depends
//! on the registry's shard, healing, the cap on queues, and deleting a queue.

use std::sync::Arc;
use std::time::{Duration, Instant};

use plimsoll::{ErrorKind, ManualClock, NewJob, Outcome, Queue, QueueConfig, Redis, Worker};
use tokio::sync::Notify;

use crate::support::{self, RedisCluster, eventually, fast_worker, queue_keys};

const REGISTRY: &str = "plimsoll:queues";

fn with_clock(clock: &ManualClock) -> QueueConfig {
    QueueConfig {
        clock: Arc::new(clock.clone()),
        ..QueueConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_queue_is_enqueued_to_while_the_registry_shard_does_not_answer() {
    let cluster = RedisCluster::start();
    let redis = Redis::connect_url(&cluster.urls()[0]).await.unwrap();
    let registry_node = cluster.primary_for_key(REGISTRY);
    // A queue on another shard than the registry.
    let name = (0..)
        .map(|i| format!("healthy-{i}"))
        .find(|name| cluster.primary_for_key(&format!("plimsoll:{{{name}}}:jobs")) != registry_node)
        .unwrap();
    let clock = ManualClock::starting_now();
    let queue = Queue::new(redis.clone(), &name, with_clock(&clock)).unwrap();

    // The registry's shard stops answering (as while it fails over), for
    // less than the node timeout, so the cluster stays up.
    cluster.freeze(registry_node);
    let started = Instant::now();
    let first = queue.enqueue(NewJob::bytes("first")).await;
    let took = started.elapsed();
    let second = queue.enqueue(NewJob::bytes("second")).await;
    cluster.thaw(registry_node);
    let (first, second) = (first.unwrap(), second.unwrap());
    assert!(
        took < Duration::from_secs(2),
        "the first enqueue waited {took:?} for the registry"
    );
    assert_eq!(second.id.0, first.id.0 + 1);
    let node = &cluster.nodes()[registry_node];
    assert_eq!(node.cmd(&["SISMEMBER", REGISTRY, &name]), "0");

    // Once it answers again, the next try registers the queue.
    clock.advance(plimsoll::queue::REGISTER_RETRY);
    queue.enqueue(NewJob::bytes("third")).await.unwrap();
    assert_eq!(node.cmd(&["SISMEMBER", REGISTRY, &name]), "1");
}

#[tokio::test]
async fn a_registration_a_failover_lost_comes_back() {
    let (server, redis) = support::redis().await;
    let clock = ManualClock::starting_now();
    let queue = Queue::new(redis.clone(), "held", with_clock(&clock)).unwrap();
    queue.enqueue(NewJob::bytes("a")).await.unwrap();
    assert_eq!(server.cmd(&["SISMEMBER", REGISTRY, "held"]), "1");

    // The registration is lost while the queue holds jobs: listing finds
    // the queue by its keys and registers it again.
    server.cmd(&["DEL", REGISTRY]);
    let listed = Queue::list(&redis, "plimsoll").await.unwrap();
    assert_eq!(
        listed.iter().map(|n| n.as_str()).collect::<Vec<_>>(),
        ["held"]
    );
    assert_eq!(server.cmd(&["SISMEMBER", REGISTRY, "held"]), "1");

    // And a producer that goes on enqueueing registers it again itself.
    server.cmd(&["DEL", REGISTRY]);
    clock.advance(plimsoll::queue::REGISTRY_REFRESH);
    queue.enqueue(NewJob::bytes("b")).await.unwrap();
    eventually(
        Duration::from_secs(5),
        "the refresh to register the queue",
        || async { server.cmd(&["SISMEMBER", REGISTRY, "held"]) == "1" },
    )
    .await;
}

#[tokio::test]
async fn the_number_of_queues_is_capped_and_deleting_one_makes_room() {
    let (server, redis) = support::redis().await;
    let config = || QueueConfig {
        max_queues: 3,
        ..QueueConfig::default()
    };
    let queues: Vec<Queue> = (0..4)
        .map(|i| Queue::new(redis.clone(), &format!("q{i}"), config()).unwrap())
        .collect();
    for queue in &queues[..3] {
        queue.enqueue(NewJob::bytes("x")).await.unwrap();
    }
    let err = queues[3].enqueue(NewJob::bytes("x")).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::TooManyQueues, "{err}");
    assert!(err.to_string().contains("3 queues"), "{err}");
    let bulk = queues[3]
        .enqueue_bulk(vec![NewJob::bytes("y"); 10])
        .await
        .unwrap_err();
    assert_eq!(bulk.error.kind(), ErrorKind::TooManyQueues);
    assert!(queue_keys(&server, "q3").is_empty(), "nothing was written");
    assert_eq!(server.cmd(&["SCARD", REGISTRY]), "3");
    // Registered queues go on.
    queues[0].enqueue(NewJob::bytes("more")).await.unwrap();

    let deleted = queues[0].delete(false).await.unwrap();
    assert_eq!(deleted.jobs, 2);
    queues[3].enqueue(NewJob::bytes("x")).await.unwrap();
    assert_eq!(server.cmd(&["SISMEMBER", REGISTRY, "q3"]), "1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_removes_every_key_of_the_queue_and_waits_for_active_jobs_unless_forced() {
    let (server, redis) = support::redis().await;
    let queue = Queue::with_defaults(redis.clone(), "doomed").unwrap();
    let neighbour = Queue::with_defaults(redis.clone(), "doomed2").unwrap();
    neighbour.enqueue(NewJob::bytes("stays")).await.unwrap();
    queue
        .enqueue_bulk((0..2500).map(|i| NewJob::bytes(format!("w{i}"))).collect())
        .await
        .unwrap();
    queue
        .enqueue(NewJob::bytes("later").delay(Duration::from_secs(600)))
        .await
        .unwrap();
    for i in 0..300 {
        queue
            .enqueue(NewJob::bytes("idem").idempotency_key(format!("k{i}")))
            .await
            .unwrap();
    }
    // One job active: its handler waits.
    let release = Arc::new(Notify::new());
    let started = Arc::new(Notify::new());
    let (r, s) = (release.clone(), started.clone());
    let worker = Worker::builder(queue.clone())
        .config(plimsoll::worker::WorkerConfig {
            concurrency: 1,
            prefetch: 0,
            ..fast_worker()
        })
        .start(move |_job: plimsoll::Job| {
            let (r, s) = (r.clone(), s.clone());
            async move {
                s.notify_one();
                r.notified().await;
                Outcome::Done
            }
        })
        .unwrap();
    started.notified().await;

    let err = queue.delete(false).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
    assert!(err.to_string().contains("active"), "{err}");
    assert!(
        queue.counts().await.unwrap().waiting > 0,
        "nothing was deleted"
    );

    let before = queue_keys(&server, "doomed").len() as u64;
    assert!(
        before > 300,
        "idempotency keys and the queue's keys: {before}"
    );
    let deleted = queue.delete(true).await.unwrap();
    assert_eq!(deleted.jobs, 2500 + 1 + 300);
    assert_eq!(deleted.keys, before);
    release.notify_one();
    worker.shutdown().await.unwrap();
    // The worker's shutdown may leave its own bookkeeping; the jobs are gone.
    let left: Vec<String> = queue_keys(&server, "doomed")
        .into_iter()
        .filter(|k| !k.contains(":workers") && !k.contains(":active:") && !k.contains(":stats"))
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
    assert_eq!(server.cmd(&["SISMEMBER", REGISTRY, "doomed"]), "0");
    assert_eq!(neighbour.counts().await.unwrap().waiting, 1);
    let listed = Queue::list(&redis, "plimsoll").await.unwrap();
    assert_eq!(
        listed.iter().map(|n| n.as_str()).collect::<Vec<_>>(),
        ["doomed2"]
    );
}
