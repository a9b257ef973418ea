//! A producer and a worker on one queue: webhook-like jobs, a few of which
//! fail once and are retried, then a graceful shutdown and a look at what the
//! queue left in Redis.
//!
//! ```sh
//! cargo run -p plimsoll --example queue                        # Redis on 127.0.0.1:6379
//! cargo run -p plimsoll --example queue -- redis://host:6379/
//! ```

use std::time::Duration;

use plimsoll::{Backoff, Job, NewJob, Outcome, Queue, Redis, Worker};
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize)]
struct Delivery {
    id: u64,
    event: String,
}

#[tokio::main]
async fn main() -> plimsoll::Result<()> {
    let url = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "redis://127.0.0.1:6379/".to_string());
    let redis = Redis::connect_url(&url).await?;
    let queue = Queue::with_defaults(redis, "example.deliveries")?;

    // A thousand jobs in one call; one of them only runs in a minute.
    let mut jobs: Vec<NewJob> = (0..1000)
        .map(|id| {
            NewJob::json(&Delivery {
                id,
                event: "push".into(),
            })
        })
        .collect::<plimsoll::Result<_>>()?;
    jobs.push(
        NewJob::json(&Delivery {
            id: 1000,
            event: "reminder".into(),
        })?
        .delay(Duration::from_secs(60)),
    );
    queue.enqueue_bulk(jobs).await?;

    let worker = Worker::builder(queue.clone())
        .concurrency(20)
        .backoff(Backoff::new(
            Duration::from_millis(10),
            Duration::from_millis(100),
            0.2,
        )?)
        .start(|job: Job| async move {
            let delivery: Delivery = match job.json() {
                Ok(d) => d,
                // A payload that cannot be read will never work: dead set.
                Err(err) => return Outcome::fail(err),
            };
            // Every hundredth delivery fails once, as a flaky endpoint would.
            if delivery.id.is_multiple_of(100) && job.attempt() == 1 {
                return Outcome::retry("endpoint answered 503");
            }
            Outcome::Done
        })?;

    while queue.counts().await?.totals.completed < 1000 {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    worker.shutdown().await?;

    let counts = queue.counts().await?;
    println!(
        "completed {}, retried {}, still scheduled {} (the delayed reminder), dead {}",
        counts.totals.completed, counts.totals.retried, counts.scheduled, counts.dead
    );
    println!(
        "the queue takes {} bytes in Redis: completed jobs were removed",
        queue.memory_bytes().await?
    );
    // Leave nothing behind: cancel the reminder.
    for job in queue.jobs(plimsoll::JobState::Scheduled, 0, 10).await? {
        queue.cancel(job.id).await?;
    }
    Ok(())
}
