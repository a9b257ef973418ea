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
