//! The queue suite on a local 3-primary Redis Cluster: the same scripts, with
//! queues spread over the shards.

use std::collections::HashSet;
use std::time::Duration;

use plimsoll::{CancelOutcome, DeadSelection, JobState, NewJob, Outcome, Queue, Redis, Worker};

use crate::support::{RedisCluster, eventually, fast_worker};

const WAIT: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queues_spread_over_the_shards_and_run_every_transition() {
    let cluster = RedisCluster::start();
    // One seed is enough: the client detects the cluster and learns the rest.
    let redis = Redis::connect_url(&cluster.urls()[0]).await.unwrap();
    assert!(redis.is_cluster());

    let names = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot"];
    let mut nodes = HashSet::new();
    for name in names {
        let queue = Queue::with_defaults(redis.clone(), name).unwrap();
        nodes.insert(cluster.node_for_key(queue.keys().jobs()).port());
        run_every_transition(&queue).await;
    }
    assert!(nodes.len() >= 2, "queues landed on {} node(s)", nodes.len());
    let listed = Queue::list(&redis, "plimsoll").await.unwrap();
    assert_eq!(listed.len(), names.len());

    // A registry lost in a failover: listing finds the queues on every
    // primary by their keys, and registers them again.
    let registry = cluster.node_for_key("plimsoll:queues");
    registry.cmd(&["DEL", "plimsoll:queues"]);
    let listed = Queue::list(&redis, "plimsoll").await.unwrap();
    assert_eq!(listed.len(), names.len());
    assert_eq!(registry.cmd(&["SCARD", "plimsoll:queues"]), "6");

    // Deleting a queue removes its keys from its shard and its entry.
    let alpha = Queue::with_defaults(redis.clone(), "alpha").unwrap();
    let deleted = alpha.delete(false).await.unwrap();
    assert!(deleted.keys > 0);
    let node = cluster.node_for_key(alpha.keys().jobs());
    assert!(
        node.keys().iter().all(|k| !k.contains("{alpha}")),
        "{:?}",
        node.keys()
    );
    let listed = Queue::list(&redis, "plimsoll").await.unwrap();
    assert_eq!(listed.len(), names.len() - 1);
}

async fn run_every_transition(queue: &Queue) {
    // waiting, scheduled, cancelled
    let bulk: Vec<NewJob> = (0..200)
        .map(|i| NewJob::bytes(format!("job-{i:03}")))
        .collect();
    queue.enqueue_bulk(bulk).await.unwrap();
    let later = queue
        .enqueue(NewJob::bytes("later").delay(Duration::from_millis(300)))
        .await
        .unwrap();
    let cancelled = queue
        .enqueue(NewJob::bytes("never").delay(Duration::from_secs(60)))
        .await
        .unwrap();
    assert_eq!(
        queue.cancel(cancelled.id).await.unwrap(),
        CancelOutcome::Cancelled(JobState::Scheduled)
    );
    let dup = queue
        .enqueue(NewJob::bytes("x").idempotency_key("k"))
        .await
        .unwrap();
    assert!(
        queue
            .enqueue(NewJob::bytes("y").idempotency_key("k"))
            .await
            .unwrap()
            .duplicate
    );

    // active -> completed, retry, dead; scheduled -> waiting
    let worker = Worker::builder(queue.clone())
        .config(fast_worker())
        .start(|job: plimsoll::Job| async move {
            match job.payload().last() {
                Some(b'7') => Outcome::fail("poison"),
                Some(b'3') if job.attempt() == 1 => Outcome::retry("flaky"),
                _ => Outcome::Done,
            }
        })
        .unwrap();
    eventually(WAIT, "the queue to settle", || async {
        let c = queue.counts().await.unwrap();
        c.totals.completed == 182 && c.dead == 20 && c.scheduled == 0
    })
    .await;
    let totals = queue.counts().await.unwrap().totals;
    assert_eq!(totals.retried, 20);
    assert!(
        queue.job(later.id).await.unwrap().is_none(),
        "the delayed job ran"
    );
    assert!(queue.job(dup.id).await.unwrap().is_none());

    // dead -> waiting (they fail for good again) and dead -> removed
    assert_eq!(queue.retry_dead(DeadSelection::Oldest(5)).await.unwrap(), 5);
    eventually(WAIT, "the retried jobs to die again", || async {
        queue.counts().await.unwrap().totals.dead == 25
    })
    .await;
    assert_eq!(queue.purge_dead(DeadSelection::Oldest(5)).await.unwrap(), 5);
    assert_eq!(queue.counts().await.unwrap().dead, 15);
    worker.shutdown().await.unwrap();
    assert_eq!(queue.counts().await.unwrap().workers, 0);
}

/// Moves `slot` from node `from` to node `to` as `redis-cli --cluster
/// reshard` does (IMPORTING, MIGRATING, MIGRATE key by key, NODE), one key
/// per `pace` so that the migration lasts while producers write.
fn migrate_slot(cluster: &RedisCluster, slot: u16, from: usize, to: usize, pace: Duration) {
    let nodes = cluster.nodes();
    let id = |i: usize| nodes[i].cmd(&["CLUSTER", "MYID"]);
    let (from_id, to_id, slot) = (id(from), id(to), slot.to_string());
    nodes[to].cmd(&["CLUSTER", "SETSLOT", &slot, "IMPORTING", &from_id]);
    nodes[from].cmd(&["CLUSTER", "SETSLOT", &slot, "MIGRATING", &to_id]);
    migrate_keys(cluster, &slot, from, to, usize::MAX, pace);
    for node in nodes {
        node.cmd(&["CLUSTER", "SETSLOT", &slot, "NODE", &to_id]);
    }
}

/// Moves up to `max` keys of `slot` from `from` to `to`, one per `pace`.
fn migrate_keys(
    cluster: &RedisCluster,
    slot: &str,
    from: usize,
    to: usize,
    max: usize,
    pace: Duration,
) {
    let nodes = cluster.nodes();
    let port = nodes[to].port().to_string();
    for _ in 0..max {
        let key = nodes[from].cmd(&["CLUSTER", "GETKEYSINSLOT", slot, "1"]);
        if key.is_empty() {
            return;
        }
        nodes[from].cmd(&["MIGRATE", "127.0.0.1", &port, "", "0", "5000", "KEYS", &key]);
        std::thread::sleep(pace);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enqueues_during_a_live_slot_migration_wait_it_out_and_lose_or_double_nothing() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Instant;

    let cluster = RedisCluster::start();
    let redis = Redis::connect_url(&cluster.urls()[0]).await.unwrap();
    let queue = Queue::with_defaults(redis, "moving").unwrap();
    // Keys to move: the queue's jobs, lists, meta and id runs.
    queue
        .enqueue_bulk(
            (0..50)
                .map(|i| NewJob::bytes(format!("first-{i}")))
                .collect(),
        )
        .await
        .unwrap();
    let key = queue.keys().jobs().to_string();
    let (slot, from) = (cluster.slot(&key), cluster.primary_for_key(&key));
    let to = (from + 1) % cluster.nodes().len();

    let stop = Arc::new(AtomicBool::new(false));
    let mut producers = Vec::new();
    for producer in 0..4 {
        let (queue, stop) = (queue.clone(), Arc::clone(&stop));
        producers.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            let mut slowest = Duration::ZERO;
            let mut seq = 0;
            while !stop.load(Ordering::Relaxed) {
                let payload = format!("p{producer}-{seq}");
                seq += 1;
                let started = Instant::now();
                let done = queue.enqueue(NewJob::bytes(payload.clone())).await;
                slowest = slowest.max(started.elapsed());
                let done = done.unwrap_or_else(|e| panic!("enqueue during the migration: {e}"));
                acked.push((done.id.0, payload.into_bytes()));
            }
            (acked, slowest)
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let cluster = tokio::task::spawn_blocking(move || {
        migrate_slot(&cluster, slot, from, to, Duration::from_millis(60));
        cluster
    })
    .await
    .unwrap();
    assert_eq!(cluster.primary_for_key(&key), to, "the slot moved");
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    let mut acked = Vec::new();
    let mut slowest = Duration::ZERO;
    for producer in producers {
        let (mine, slow) = producer.await.unwrap();
        acked.extend(mine);
        slowest = slowest.max(slow);
    }

    let listed = crate::failover::waiting(&queue).await;
    let mut ids: Vec<u64> = listed.iter().map(|(id, _)| *id).collect();
    ids.sort_unstable();
    let before_dedup = ids.len();
    ids.dedup();
    assert_eq!(before_dedup, ids.len(), "ids listed twice in waiting");
    let records: std::collections::HashMap<u64, Vec<u8>> = listed.into_iter().collect();
    for (id, payload) in &acked {
        assert_eq!(records.get(id), Some(payload), "acknowledged job {id}");
    }
    assert_eq!(
        records.len(),
        acked.len() + 50,
        "jobs that were never acknowledged"
    );
    eprintln!(
        "slot migration under load: {} jobs acknowledged and kept, slowest enqueue {slowest:?}",
        acked.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_enqueue_to_a_slot_stuck_migrating_fails_within_its_budget_naming_the_cause() {
    use std::time::Instant;

    use plimsoll::{ErrorKind, RedisConfig};

    let cluster = RedisCluster::start();
    let config = RedisConfig::new(&cluster.urls()[0])
        .unwrap()
        .response_timeout(Duration::from_secs(1));
    let redis = Redis::connect(config).await.unwrap();
    let queue = Queue::with_defaults(redis, "stuck").unwrap();
    queue.enqueue(NewJob::bytes("before")).await.unwrap();
    let key = queue.keys().jobs().to_string();
    let (slot, from) = (cluster.slot(&key), cluster.primary_for_key(&key));
    let to = (from + 1) % cluster.nodes().len();
    let nodes = cluster.nodes();
    let id = |i: usize| nodes[i].cmd(&["CLUSTER", "MYID"]);
    nodes[to].cmd(&[
        "CLUSTER",
        "SETSLOT",
        &slot.to_string(),
        "IMPORTING",
        &id(from),
    ]);
    nodes[from].cmd(&[
        "CLUSTER",
        "SETSLOT",
        &slot.to_string(),
        "MIGRATING",
        &id(to),
    ]);
    // One key moved, the rest not: Redis refuses the queue's multi-key
    // commands until the migration ends.
    migrate_keys(&cluster, &slot.to_string(), from, to, 1, Duration::ZERO);

    let started = Instant::now();
    let err = queue.enqueue(NewJob::bytes("during")).await.unwrap_err();
    let took = started.elapsed();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    let message = err.to_string();
    assert!(message.contains("slot migrating"), "{message}");
    assert!(!message.contains("cannot be reached"), "{message}");
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(4),
        "gave up after {took:?}, the budget is 1 s"
    );

    // Once the slot has moved, enqueues go on; the refused one left nothing.
    migrate_keys(
        &cluster,
        &slot.to_string(),
        from,
        to,
        usize::MAX,
        Duration::ZERO,
    );
    for node in nodes {
        node.cmd(&["CLUSTER", "SETSLOT", &slot.to_string(), "NODE", &id(to)]);
    }
    queue.enqueue(NewJob::bytes("after")).await.unwrap();
    let payloads: Vec<Vec<u8>> = crate::failover::waiting(&queue)
        .await
        .into_iter()
        .map(|(_, payload)| payload)
        .collect();
    assert_eq!(payloads, [b"before".to_vec(), b"after".to_vec()]);
}
