//! The cache against a real Redis that is killed, paused, slowed, frozen,
//! filled and restarted under it: no reader ever sees an error, every read
//! returns within the budget plus the loader's time, and the breaker closes
//! again once Redis is back.
//!
//! Latency bounds carry a generous margin ([`MARGIN`]): these machines are
//! shared and noisy. The bounds stay meaningful because every fault here
//! lasts far longer (seconds) than budget + loader + margin.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use plimsoll::{
    BreakerConfig, BreakerState, Cache, CacheConfig, CacheWrite, ErrorKind, LocalConfig,
    ManualClock, Redis, RedisConfig, Ttl,
};
use plimsoll_test_support::RedisServer;

use crate::support::eventually;

/// The time budget of a cache call in these tests: larger than the default
/// 5 ms so that a busy CI machine does not trip the breaker on a healthy
/// Redis.
const BUDGET: Duration = Duration::from_millis(25);
/// What the test loaders take.
const LOADER: Duration = Duration::from_millis(10);
/// Scheduling noise allowed on top of budget + loader.
const MARGIN: Duration = Duration::from_millis(400);
const MINUTE: Duration = Duration::from_secs(60);
const WAIT: Duration = Duration::from_secs(20);

fn breaker() -> BreakerConfig {
    BreakerConfig {
        failure_rate: 0.5,
        window: Duration::from_secs(1),
        min_calls: 5,
        open_for: Duration::from_millis(100),
        probes: 2,
    }
}

fn config() -> CacheConfig {
    CacheConfig {
        timeout: BUDGET,
        breaker: breaker(),
        ..CacheConfig::default()
    }
}

/// A cache with its own connection to `server`, once Redis has taken a
/// write through it.
async fn cache_on(server: &RedisServer, config: CacheConfig) -> Cache {
    let cache = Cache::connect(RedisConfig::new(&server.url()).unwrap(), config).unwrap();
    eventually(WAIT, "the cache to connect", || async {
        cache.set("warm", &1u8, MINUTE).await.unwrap() == CacheWrite::Applied
    })
    .await;
    cache
}

/// Runs a blocking fault step (kill, restart, a command that blocks) off
/// the runtime's threads, so that readers are not held up by the test.
async fn off_runtime<R: Send + 'static>(
    server: RedisServer,
    step: impl FnOnce(&mut RedisServer) -> R + Send + 'static,
) -> (RedisServer, R) {
    tokio::task::spawn_blocking(move || {
        let mut server = server;
        let out = step(&mut server);
        (server, out)
    })
    .await
    .unwrap()
}

fn value_of(key: &str) -> String {
    format!("value of {key}")
}

/// Reader tasks calling `get_or_compute` over 20 keys until stopped.
struct Readers {
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<(u64, Duration)>>,
}

/// What the readers saw.
#[derive(Debug)]
struct ReadReport {
    reads: u64,
    slowest: Duration,
}

impl Readers {
    fn start(cache: &Cache, readers: usize) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = (0..readers)
            .map(|r| {
                let cache = cache.clone();
                let stop = stop.clone();
                tokio::spawn(async move {
                    let (mut reads, mut slowest) = (0u64, Duration::ZERO);
                    while !stop.load(Ordering::Relaxed) {
                        let key = format!("k{}", (reads as usize * 7 + r) % 20);
                        let started = Instant::now();
                        let value = cache
                            .get_or_compute(&key, MINUTE, || async {
                                tokio::time::sleep(LOADER).await;
                                Ok::<_, Infallible>(value_of(&key))
                            })
                            .await
                            .unwrap();
                        slowest = slowest.max(started.elapsed());
                        assert_eq!(value, value_of(&key));
                        reads += 1;
                    }
                    (reads, slowest)
                })
            })
            .collect();
        Self { stop, tasks }
    }

    async fn stop(self) -> ReadReport {
        self.stop.store(true, Ordering::Relaxed);
        let mut report = ReadReport {
            reads: 0,
            slowest: Duration::ZERO,
        };
        for task in self.tasks {
            let (reads, slowest) = task.await.expect("a reader panicked");
            report.reads += reads;
            report.slowest = report.slowest.max(slowest);
        }
        report
    }
}

/// A cache on `server` with 8 readers that have been reading for 200 ms.
async fn reading(server: &RedisServer, config: CacheConfig) -> (Cache, Readers) {
    let cache = cache_on(server, config).await;
    let readers = Readers::start(&cache, 8);
    tokio::time::sleep(Duration::from_millis(200)).await;
    (cache, readers)
}

fn assert_within_budget(report: &ReadReport) {
    let bound = BUDGET + LOADER + MARGIN;
    assert!(report.reads > 0, "{report:?}");
    assert!(
        report.slowest <= bound,
        "a read took {:?}, more than budget + loader + margin ({bound:?})",
        report.slowest
    );
}

/// Waits until the breaker closed again and Redis takes writes.
async fn wait_for_recovery(cache: &Cache) {
    eventually(WAIT, "the breaker to close after recovery", || async {
        cache.set("after", &1u8, MINUTE).await.unwrap() == CacheWrite::Applied
            && cache.breaker_state() == BreakerState::Closed
    })
    .await;
}

#[tokio::test]
async fn values_round_trip_and_every_key_has_a_ttl() {
    let server = RedisServer::start();
    let cache = cache_on(&server, config()).await;
    #[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
    struct User {
        id: u64,
        name: String,
    }
    let ada = User {
        id: 1,
        name: "Ada".into(),
    };
    assert!(
        cache
            .set("user:1", &ada, Ttl::Default)
            .await
            .unwrap()
            .is_applied()
    );
    assert_eq!(cache.get::<User>("user:1").await.unwrap(), Some(ada));
    assert_eq!(cache.get::<User>("user:2").await.unwrap(), None);

    let loads = AtomicUsize::new(0);
    for _ in 0..2 {
        let name: String = cache
            .get_or_compute("name:2", Duration::from_secs(30), || async {
                loads.fetch_add(1, Ordering::SeqCst);
                Ok::<_, Infallible>("Grace".to_string())
            })
            .await
            .unwrap();
        assert_eq!(name, "Grace");
        // The loaded value is written in the background.
        eventually(WAIT, "the loaded value in Redis", || async {
            server.command(&["EXISTS", "plimsoll:cache:default:name:2"]) == Ok("1".into())
        })
        .await;
    }
    assert_eq!(loads.load(Ordering::SeqCst), 1);

    assert!(cache.delete("user:1").await.unwrap().is_applied());
    assert_eq!(cache.get::<User>("user:1").await.unwrap(), None);

    // Every key is a documented cache key, a string, with an expiry.
    let doc = include_str!("../../../../docs/keyspace.md");
    assert!(doc.contains("| `plimsoll:cache:<namespace>:<key>` | string |"));
    let keys = server.keys();
    // `warm` (from cache_on) and `name:2`; `user:1` was deleted.
    assert_eq!(keys.len(), 2, "{keys:?}");
    for key in keys {
        assert!(key.starts_with("plimsoll:cache:default:"), "{key}");
        assert_eq!(server.cmd(&["TYPE", &key]), "string");
        let ttl: i64 = server.cmd(&["PTTL", &key]).parse().unwrap();
        assert!(ttl > 0 && ttl <= 5 * 60 * 1000, "{key} has PTTL {ttl}");
    }
    let stats = cache.stats();
    assert_eq!(stats.redis_hits, 2, "{stats:?}");
    assert_eq!(stats.loader_calls, 1, "{stats:?}");
}

#[tokio::test]
async fn caller_mistakes_are_typed_errors_and_redis_trouble_is_not() {
    let server = RedisServer::start();
    let cache = cache_on(
        &server,
        CacheConfig {
            max_value_bytes: 1024,
            ..config()
        },
    )
    .await;
    let err = cache
        .set("big", &"x".repeat(2000), MINUTE)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PayloadTooLarge);
    let err = cache.get::<String>("").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    let err = cache.set("k", &1u8, Duration::ZERO).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);

    // get_or_compute returns what it cannot cache.
    let big: String = cache
        .get_or_compute("big", MINUTE, || async {
            Ok::<_, Infallible>("x".repeat(2000))
        })
        .await
        .unwrap();
    assert_eq!(big.len(), 2000);
    assert_eq!(cache.stats().not_cached, 1);

    // A value written by someone else is a miss, not an error.
    server.cmd(&["SET", "plimsoll:cache:default:foreign", "hello"]);
    assert_eq!(cache.get::<String>("foreign").await.unwrap(), None);
    assert_eq!(cache.stats().corrupt, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_and_restarted_under_readers() {
    let server = RedisServer::start();
    let (cache, readers) = reading(&server, config()).await;

    let (server, ()) = off_runtime(server, |s| s.kill()).await;
    eventually(WAIT, "the breaker to open", || async {
        cache.stats().breaker.opened >= 1
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (_server, ()) = off_runtime(server, |s| s.restart()).await;
    wait_for_recovery(&cache).await;
    tokio::time::sleep(Duration::from_millis(200)).await;

    let report = readers.stop().await;
    assert_within_budget(&report);
    let stats = cache.stats();
    assert!(stats.breaker.closed >= 1, "{stats:?}");
    assert!(stats.redis_errors.connection + stats.redis_errors.timeout > 0);
    eprintln!("killed and restarted: {report:?}\n{stats:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_pause_costs_readers_at_most_the_budget() {
    let server = RedisServer::start();
    let (cache, readers) = reading(&server, config()).await;

    server.cmd(&["CLIENT", "PAUSE", "2000", "ALL"]);
    eventually(WAIT, "the breaker to open", || async {
        cache.stats().breaker.opened >= 1
    })
    .await;
    wait_for_recovery(&cache).await;

    let report = readers.stop().await;
    assert_within_budget(&report);
    let stats = cache.stats();
    assert!(stats.redis_errors.timeout > 0, "{stats:?}");
    eprintln!("paused: {report:?}\n{stats:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debug_sleep_slows_redis_not_readers() {
    let server = RedisServer::start();
    let (cache, readers) = reading(&server, config()).await;

    // DEBUG SLEEP blocks the whole server, and the test's command with it.
    let (_server, slept) = off_runtime(server, |s| s.command(&["DEBUG", "SLEEP", "2"])).await;
    slept.unwrap();
    wait_for_recovery(&cache).await;

    let report = readers.stop().await;
    assert_within_budget(&report);
    let stats = cache.stats();
    assert!(stats.breaker.opened >= 1, "{stats:?}");
    eprintln!("slept: {report:?}\n{stats:#?}");
}

/// SIGSTOP: the connection stays open and nothing answers. What limits the
/// pile-up is the in-flight bound (requests whose callers gave up keep
/// their slot until the connection's 1 s response timeout) and then the
/// breaker: a frozen Redis is sent a few dozen calls, not one per read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_redis_is_sent_a_bounded_number_of_calls() {
    const MAX_IN_FLIGHT: u64 = 16;
    let server = RedisServer::start();
    let config = CacheConfig {
        max_in_flight: MAX_IN_FLIGHT as usize,
        ..config()
    };
    let (cache, readers) = reading(&server, config).await;

    server.freeze();
    let before = cache.stats();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let during = cache.stats();
    server.thaw();
    wait_for_recovery(&cache).await;

    let report = readers.stop().await;
    assert_within_budget(&report);
    let sent = during.redis_calls - before.redis_calls;
    let reads = (during.fallbacks + during.local_hits + during.redis_hits)
        - (before.fallbacks + before.local_hits + before.redis_hits);
    // The slots free up once a second (the response timeout), and the
    // breaker lets 2 probes through per 100 ms it is open.
    let bound = 2 * MAX_IN_FLIGHT + 2 * 10;
    assert!(
        sent <= bound,
        "{sent} calls sent to a frozen Redis, bound {bound}"
    );
    assert!(
        during.shed > before.shed || during.breaker.opened > 0,
        "{during:?}"
    );
    assert!(reads > sent, "{reads} reads, {sent} calls to Redis");
    eprintln!("frozen: {sent} calls for {reads} reads; {report:?}");
}

#[tokio::test]
async fn a_full_redis_fails_writes_but_not_reads() {
    let server = RedisServer::builder().maxmemory(8 << 20).start();
    let cache = cache_on(&server, config()).await;
    assert!(
        cache
            .set("kept", &"old value", MINUTE)
            .await
            .unwrap()
            .is_applied()
    );
    // DEBUG POPULATE ignores maxmemory: push used_memory past the limit so
    // that every write is refused (noeviction).
    server.cmd(&["DEBUG", "POPULATE", "30000", "junk", "512"]);
    let refused = server.command(&["SET", "probe", "x"]).unwrap_err();
    assert!(refused.starts_with("OOM"), "{refused}");

    for i in 0..40 {
        let key = format!("new:{i}");
        let value: String = cache
            .get_or_compute(&key, MINUTE, || async {
                Ok::<_, Infallible>(value_of(&key))
            })
            .await
            .unwrap();
        assert_eq!(value, value_of(&key));
    }
    eventually(WAIT, "the refused background writes", || async {
        cache.stats().redis_errors.out_of_memory >= 40
    })
    .await;
    assert_eq!(
        cache.set("kept", &"new value", MINUTE).await.unwrap(),
        CacheWrite::Failed(ErrorKind::OutOfMemory)
    );
    assert_eq!(
        cache.get::<String>("kept").await.unwrap().as_deref(),
        Some("old value")
    );
    let stats = cache.stats();
    assert_eq!(stats.breaker.state, BreakerState::Closed, "{stats:?}");
    assert_eq!(stats.breaker.opened, 0, "OOM must not open the breaker");
    assert_eq!(stats.redis_hits, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_misses_run_the_loader_once() {
    let server = RedisServer::start();
    let cache = cache_on(&server, config()).await;
    let loads = Arc::new(AtomicUsize::new(0));
    let storm = |key: &'static str| {
        let tasks: Vec<_> = (0..50)
            .map(|_| {
                let cache = cache.clone();
                let loads = loads.clone();
                tokio::spawn(async move {
                    cache
                        .get_or_compute(key, MINUTE, || async move {
                            loads.fetch_add(1, Ordering::SeqCst);
                            tokio::time::sleep(Duration::from_millis(200)).await;
                            Ok::<_, Infallible>(value_of(key))
                        })
                        .await
                        .unwrap()
                })
            })
            .collect();
        async move {
            for task in tasks {
                assert_eq!(task.await.unwrap(), value_of(key));
            }
        }
    };
    storm("hot").await;
    assert_eq!(loads.load(Ordering::SeqCst), 1);
    let stats = cache.stats();
    assert_eq!(stats.flight_joins + stats.redis_hits, 49, "{stats:?}");

    // With Redis gone, the loader is what stands between the callers and
    // the database: still once.
    let (_server, ()) = off_runtime(server, |s| s.kill()).await;
    storm("cold").await;
    assert_eq!(loads.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn stale_values_are_served_while_redis_is_down_within_their_bound() {
    let clock = ManualClock::starting_now();
    let mut server = RedisServer::start();
    let redis = Redis::connect_url(&server.url()).await.unwrap();
    let cache = Cache::new(
        redis,
        CacheConfig {
            local: Some(LocalConfig {
                ttl: Duration::from_secs(1),
                stale_if_error: Duration::from_secs(10),
                ..LocalConfig::default()
            }),
            clock: Arc::new(clock.clone()),
            ..config()
        },
    )
    .unwrap();
    assert!(cache.set("k", &"v1", MINUTE).await.unwrap().is_applied());
    assert_eq!(
        cache.get::<String>("k").await.unwrap().as_deref(),
        Some("v1")
    );
    assert_eq!(
        cache.stats().local_hits,
        1,
        "fresh copies are served locally"
    );
    let loads = AtomicUsize::new(0);
    let load = || async {
        loads.fetch_add(1, Ordering::SeqCst);
        Ok::<_, Infallible>("v2".to_string())
    };

    server.kill();
    // Past the local ttl, inside the stale bound: the old value stands in.
    clock.advance(Duration::from_secs(5));
    assert_eq!(
        cache.get::<String>("k").await.unwrap().as_deref(),
        Some("v1")
    );
    assert_eq!(cache.get_or_compute("k", MINUTE, load).await.unwrap(), "v1");
    assert_eq!(loads.load(Ordering::SeqCst), 0);
    assert_eq!(cache.stats().stale_hits, 2);

    // Past ttl + stale_if_error (11 s): never served again.
    clock.advance(Duration::from_secs(6));
    assert_eq!(cache.get::<String>("k").await.unwrap(), None);
    assert_eq!(cache.get_or_compute("k", MINUTE, load).await.unwrap(), "v2");
    assert_eq!(loads.load(Ordering::SeqCst), 1);
    assert_eq!(cache.stats().stale_hits, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cache_made_while_redis_is_down_connects_later() {
    let mut server = RedisServer::start();
    let url = server.url();
    server.kill();
    let cache = Cache::connect(RedisConfig::new(&url).unwrap(), config()).unwrap();
    for _ in 0..20 {
        let started = Instant::now();
        let value: String = cache
            .get_or_compute("k", MINUTE, || async { Ok::<_, Infallible>(value_of("k")) })
            .await
            .unwrap();
        assert_eq!(value, value_of("k"));
        assert!(started.elapsed() <= BUDGET + MARGIN);
    }
    let (_server, ()) = off_runtime(server, |s| s.restart()).await;
    wait_for_recovery(&cache).await;
    assert_eq!(
        cache.get::<String>("after").await.unwrap(),
        None,
        "a u8 under that key does not decode as a String"
    );
    assert_eq!(cache.get::<u8>("after").await.unwrap(), Some(1));
}

#[tokio::test]
async fn the_local_tier_serves_copies_and_checks_their_type() {
    let server = RedisServer::start();
    let cache = cache_on(&server, CacheConfig::with_local_tier()).await;
    let loaded: Vec<String> = cache
        .get_or_compute("list", MINUTE, || async {
            Ok::<_, Infallible>(vec!["a".to_string(), "b".to_string()])
        })
        .await
        .unwrap();
    assert_eq!(loaded, ["a", "b"]);
    // Served from memory, as a copy of the decoded value.
    let again: Option<Vec<String>> = cache.get("list").await.unwrap();
    assert_eq!(again.as_deref(), Some(&loaded[..]));
    assert_eq!(cache.stats().local_hits, 1);
    // Asked as another type, the bytes decide: no panic, no wrong value.
    assert_eq!(cache.get::<u64>("list").await.unwrap(), None);
}

#[tokio::test]
async fn an_arc_value_is_shared_by_the_local_tier_not_copied() {
    let server = RedisServer::start();
    let cache = cache_on(&server, CacheConfig::with_local_tier()).await;
    let text = Arc::new("x".repeat(1024));
    let loaded: Arc<String> = cache
        .get_or_compute("page", MINUTE, || {
            let text = text.clone();
            async move { Ok::<_, Infallible>(text) }
        })
        .await
        .unwrap();
    assert_eq!(loaded, text);
    // In Redis as the text itself: an Arc is encoded as what it holds.
    let plain: Option<String> = cache.get("page").await.unwrap();
    assert_eq!(plain.as_deref(), Some(text.as_str()));
    // Two hits from memory hand out the same allocation.
    let first: Arc<String> = cache.get("page").await.unwrap().unwrap();
    let second: Arc<String> = cache.get("page").await.unwrap().unwrap();
    assert!(Arc::ptr_eq(&first, &second));
    assert_eq!(*first, *text);
}

/// On a cluster, cache keys carry no hash tag and spread over the shards;
/// the breaker covers the cluster as a whole (the endpoint the cache talks
/// to).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cache_spreads_over_a_cluster() {
    let cluster = plimsoll_test_support::RedisCluster::start();
    let cache = Cache::connect(RedisConfig::new(&cluster.urls()[0]).unwrap(), config()).unwrap();
    eventually(WAIT, "the cache to connect", || async {
        cache.set("warm", &1u8, MINUTE).await.unwrap() == CacheWrite::Applied
    })
    .await;
    let mut ports = std::collections::HashSet::new();
    for i in 0..30 {
        let key = format!("user:{i}");
        assert!(
            cache
                .set(&key, &value_of(&key), MINUTE)
                .await
                .unwrap()
                .is_applied()
        );
        assert_eq!(
            cache.get::<String>(&key).await.unwrap(),
            Some(value_of(&key))
        );
        let node = cluster.node_for_key(&format!("plimsoll:cache:default:{key}"));
        ports.insert(node.port());
        let ttl: i64 = node
            .cmd(&["PTTL", &format!("plimsoll:cache:default:{key}")])
            .parse()
            .unwrap();
        assert!(ttl > 0, "{key} has PTTL {ttl}");
    }
    assert!(
        ports.len() >= 2,
        "cache keys landed on {} node(s)",
        ports.len()
    );
}
