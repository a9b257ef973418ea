//! A handle made before Redis answers (`Redis::connect_lazy`), for a server
//! that must start during a Redis outage.

use std::time::{Duration, Instant};

use plimsoll::{ErrorKind, NewJob, Queue, Redis, RedisConfig};

use crate::support::RedisServer;

/// `plimsoll serve` exited after ~9.5 s when its Redis did not answer at
/// start: the handle could only be made by a connect that had succeeded.
#[tokio::test]
async fn a_lazy_handle_fails_fast_while_redis_is_down_and_works_once_it_answers() {
    let mut server = RedisServer::start();
    server.kill();
    let redis = Redis::connect_lazy(RedisConfig::new(&server.url()).unwrap()).unwrap();
    assert!(!redis.is_connected());
    let queue = Queue::with_defaults(redis.clone(), "lazy").unwrap();

    let started = Instant::now();
    let err = queue.enqueue(NewJob::bytes("early")).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Connection, "{err}");
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "a command fails at once, not after the connection manager's retries: {:?}",
        started.elapsed()
    );
    assert!(redis.dedicated(None).await.is_err());

    server.restart();
    let joined = Instant::now();
    tokio::time::timeout(Duration::from_secs(10), redis.connected())
        .await
        .expect("the handle connects once Redis answers");
    assert!(
        joined.elapsed() < Duration::from_secs(3),
        "{:?}",
        joined.elapsed()
    );
    assert!(redis.is_connected());
    assert!(!redis.is_cluster());
    let enqueued = queue.enqueue(NewJob::bytes("later")).await.unwrap();
    assert!(!enqueued.duplicate);
    assert_eq!(server.cmd(&["LLEN", &queue.keys().waiting_all()[5]]), "1");
    // Clones made before it connected are connected too.
    assert!(redis.clone().is_connected());
    assert!(redis.dedicated(None).await.is_ok());
}
