//! Helpers shared by the integration tests.

use std::future::Future;
use std::time::{Duration, Instant};

use plimsoll::worker::{JanitorConfig, PromoterConfig, RescuerConfig, WorkerConfig};
use plimsoll::{Queue, QueueConfig, Redis};
pub use plimsoll_test_support::{RedisCluster, RedisServer};

/// A private server and a connection to it.
pub async fn redis() -> (RedisServer, Redis) {
    let server = RedisServer::start();
    let redis = Redis::connect_url(&server.url()).await.expect("connect");
    (server, redis)
}

/// A queue with default settings on a private server.
pub async fn queue(name: &str) -> (RedisServer, Queue) {
    let (server, redis) = redis().await;
    let queue = Queue::with_defaults(redis, name).expect("queue");
    (server, queue)
}

/// A queue with custom settings on a private server.
pub async fn queue_with(name: &str, config: QueueConfig) -> (RedisServer, Queue) {
    let (server, redis) = redis().await;
    let queue = Queue::new(redis, name, config).expect("queue");
    (server, queue)
}

/// Worker settings scaled down so tests take milliseconds, not minutes.
pub fn fast_worker() -> WorkerConfig {
    WorkerConfig {
        concurrency: 8,
        prefetch: 8,
        lease: Duration::from_millis(600),
        poll_interval: Duration::from_millis(50),
        shutdown_grace: Duration::from_secs(5),
        stuck_grace: Duration::from_millis(300),
        backoff: plimsoll::Backoff::new(Duration::from_millis(20), Duration::from_millis(100), 0.0)
            .unwrap(),
        maintenance: true,
        promoter: PromoterConfig {
            interval: Duration::from_millis(20),
            batch: 1000,
        },
        rescuer: RescuerConfig {
            interval: Duration::from_millis(50),
        },
        janitor: JanitorConfig {
            interval: Duration::from_millis(50),
            budget: 1000,
        },
    }
}

/// Polls `condition` until it holds or `timeout` passes; panics with `what`.
pub async fn eventually<F, Fut>(timeout: Duration, what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if condition().await {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Keys in the server that belong to `queue` (tests only: uses KEYS).
pub fn queue_keys(server: &RedisServer, queue: &str) -> Vec<String> {
    server
        .keys()
        .into_iter()
        .filter(|k| k.starts_with(&format!("plimsoll:{{{queue}}}")))
        .collect()
}

/// [`queue_keys`] without the producers' id run keys, after checking that
/// each of those expires within [`plimsoll::keyspace::ID_RUN_KEY_TTL`]: the
/// keys a queue keeps once the run keys of its stopped producers are gone.
pub fn lasting_queue_keys(server: &RedisServer, queue: &str) -> Vec<String> {
    let ttl_ms = plimsoll::keyspace::ID_RUN_KEY_TTL.as_millis() as i64;
    let (runs, lasting): (Vec<String>, Vec<String>) = queue_keys(server, queue)
        .into_iter()
        .partition(|k| k.contains(":id_run:"));
    for run in runs {
        let left: i64 = server.cmd(&["PTTL", &run]).parse().unwrap();
        assert!(
            left > 0 && left <= ttl_ms,
            "{run} must expire within {ttl_ms} ms, has {left}"
        );
    }
    lasting
}
