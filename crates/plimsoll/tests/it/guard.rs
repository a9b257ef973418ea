//! The memory guard's watch, against real Redis with a small maxmemory and
//! a manual clock: a steady leak raises each level once and in order, with
//! a forecast within 15% of the real time to full; a saw-tooth does not
//! flap; state survives a restart; an unbounded Redis is called out; a
//! cluster is watched per node and in total.

use std::sync::Arc;
use std::time::Duration;

use plimsoll::guard::ForecastConfig;
use plimsoll::{Alert, AlertKind, Clock, Guard, GuardConfig, ManualClock, Redis};

use crate::guard_layouts::{blob, run};
use crate::support::{RedisCluster, RedisServer};

const MINUTE: Duration = Duration::from_secs(60);
const MAXMEMORY: u64 = 16 << 20;

/// Settings for a simulated run: one reading per simulated minute.
fn config(clock: &ManualClock) -> GuardConfig {
    GuardConfig {
        interval: MINUTE,
        clear_after: Duration::from_secs(30 * 60),
        forecast: ForecastConfig {
            window: Duration::from_secs(6 * 3600),
            min_span: Duration::from_secs(10 * 60),
            ..ForecastConfig::default()
        },
        attribute_interval: None,
        sinks: vec![],
        clock: Arc::new(clock.clone()),
        ..GuardConfig::default()
    }
}

async fn connect(server: &RedisServer) -> Redis {
    Redis::connect_url(&server.url()).await.unwrap()
}

/// Writes `n` 1 KiB strings `leak:<seq>`; Err(()) when Redis refuses (OOM).
async fn leak(redis: &Redis, seq: &mut u64, n: u64) -> Result<(), ()> {
    let mut pipe = redis::pipe();
    for _ in 0..n {
        *seq += 1;
        pipe.cmd("SET")
            .arg(format!("leak:{seq}"))
            .arg(blob(*seq, 1024))
            .ignore();
    }
    match run(redis, &pipe).await {
        Ok(()) => Ok(()),
        Err(err) if is_oom(&err) => Err(()),
        Err(err) => panic!("unexpected error: {err}"),
    }
}

/// Redis refused a write (alone, or within a pipeline) because it is full.
pub fn is_oom(err: &redis::RedisError) -> bool {
    err.code() == Some("OOM") || err.to_string().contains("OOM")
}

fn kinds(alerts: &[Alert]) -> Vec<String> {
    alerts
        .iter()
        .map(|a| match &a.kind {
            AlertKind::LevelRaised { level } => format!("raised {level}"),
            AlertKind::LevelCleared { level } => format!("cleared {level}"),
            AlertKind::LeewayRaised { hours } => format!("leeway {hours}"),
            AlertKind::LeewayCleared { hours } => format!("leeway cleared {hours}"),
            other => other.name().to_string(),
        })
        .collect()
}

#[tokio::test]
async fn a_steady_leak_raises_each_level_once_in_order_with_a_forecast_within_15_percent() {
    let server = RedisServer::builder().maxmemory(MAXMEMORY).start();
    let redis = connect(&server).await;
    let clock = ManualClock::new(1_700_000_000_000);
    let guard = Guard::new(redis.clone(), config(&clock)).unwrap();
    // 40 KiB of values a simulated minute: full in about six hours.
    let mut seq = 0;
    let mut alerts = guard.sample_once().await.unwrap();
    let full_at = loop {
        clock.advance(MINUTE);
        if leak(&redis, &mut seq, 40).await.is_err() {
            break clock.now_ms();
        }
        alerts.extend(guard.sample_once().await.unwrap());
        assert!(seq < 100_000, "Redis never filled up");
    };
    // The reading after the first refusals reports them.
    clock.advance(MINUTE);
    let after = guard.sample_once().await.unwrap();
    assert!(
        after
            .iter()
            .any(|a| matches!(a.kind, AlertKind::OutOfMemory { rejections } if rejections > 0)),
        "{:?}",
        kinds(&after)
    );
    alerts.extend(after);

    let names = kinds(&alerts);
    let levels: Vec<&String> = names.iter().filter(|n| n.starts_with("raised")).collect();
    assert_eq!(
        levels,
        ["raised 0.2", "raised 0.5", "raised 0.9"],
        "{names:?}"
    );
    assert!(!names.iter().any(|n| n.starts_with("cleared")), "{names:?}");
    // Leeway alerts come first: weeks-ahead warning even far below 20%.
    let leeway: Vec<usize> = names
        .iter()
        .enumerate()
        .filter(|(_, n)| n.starts_with("leeway"))
        .map(|(i, _)| i)
        .collect();
    assert_eq!(leeway.len(), 2, "{names:?}");
    let first_level = names.iter().position(|n| n == "raised 0.2").unwrap();
    assert!(leeway.iter().all(|i| *i < first_level), "{names:?}");
    assert_eq!(names.iter().filter(|n| *n == "leeway 72").count(), 1);
    assert_eq!(names.iter().filter(|n| *n == "leeway 48").count(), 1);

    // The forecast at the 20% alert against what really happened.
    let at_20 = alerts
        .iter()
        .find(|a| matches!(a.kind, AlertKind::LevelRaised { level } if level == 0.2))
        .unwrap();
    let forecast = at_20.forecast.expect("a forecast at the 20% alert");
    let predicted = forecast.time_to_full_secs.unwrap();
    let actual = (full_at - at_20.at_ms) as f64 / 1000.0;
    let error = (predicted - actual).abs() / actual;
    eprintln!(
        "forecast at 20%: {predicted:.0} s, actual {actual:.0} s ({:+.1}%)",
        (predicted / actual - 1.0) * 100.0
    );
    assert!(
        error < 0.15,
        "forecast {predicted:.0} s vs actual {actual:.0} s: {:.1}% off",
        error * 100.0
    );
    // Each alert carries the figures.
    assert_eq!(at_20.limit_bytes, MAXMEMORY);
    assert!(at_20.used_ratio >= 0.2 && at_20.used_ratio < 0.3);
    assert!(at_20.text().contains("full in"), "{}", at_20.text());
    let at_90 = alerts
        .iter()
        .find(|a| matches!(a.kind, AlertKind::LevelRaised { level } if level == 0.9))
        .unwrap();
    assert_eq!(at_90.severity, plimsoll::guard::Severity::Critical);
    let stats = guard.stats();
    assert_eq!(stats.nodes.len(), 1);
    assert_eq!(stats.nodes[0].levels_raised, [0.2, 0.5, 0.9]);
    assert!(stats.nodes[0].oom_rejections_total > 0);
}

#[tokio::test]
async fn a_saw_tooth_across_a_level_alerts_once_and_clears_once() {
    let server = RedisServer::builder().maxmemory(MAXMEMORY).start();
    let redis = connect(&server).await;
    let clock = ManualClock::new(1_700_000_000_000);
    let mut settings = config(&clock);
    // The fit needs to have seen a few teeth before it forecasts.
    settings.forecast.min_span = Duration::from_secs(60 * 60);
    let guard = Guard::new(redis.clone(), settings).unwrap();
    let mut alerts = Vec::new();
    // A queue filling for 20 minutes to ~25% and draining in 2, ten times.
    for cycle in 0..10u64 {
        for step in 0..22u64 {
            let mut pipe = redis::pipe();
            if step < 20 {
                for i in 0..150 {
                    pipe.cmd("LPUSH")
                        .arg("jobs:pending")
                        .arg(blob(cycle * 10_000 + step * 150 + i, 1000))
                        .ignore();
                }
            } else {
                pipe.cmd("LTRIM")
                    .arg("jobs:pending")
                    .arg(0)
                    .arg(1499)
                    .ignore();
                if step == 21 {
                    pipe.cmd("DEL").arg("jobs:pending").ignore();
                }
            }
            run(&redis, &pipe).await.unwrap();
            clock.advance(MINUTE);
            alerts.extend(guard.sample_once().await.unwrap());
        }
    }
    assert_eq!(kinds(&alerts), ["raised 0.2"], "one alert for ten teeth");
    let stats = guard.stats();
    let forecast = stats.nodes[0].forecast.expect("a forecast");
    assert!(
        forecast.growth_bytes_per_sec.abs() * 3600.0 < 1e6,
        "a saw-tooth is not growth: {forecast:?}"
    );
    // The queue stays empty: one clear, after the dwell.
    let mut later = Vec::new();
    for _ in 0..40 {
        clock.advance(MINUTE);
        later.extend(guard.sample_once().await.unwrap());
    }
    assert_eq!(kinds(&later), ["cleared 0.2"]);
}

#[tokio::test]
async fn history_and_alert_state_survive_a_restart_of_the_guard() {
    let server = RedisServer::builder().maxmemory(MAXMEMORY).start();
    let redis = connect(&server).await;
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_700_000_000_000);
    let settings = || GuardConfig {
        history_dir: Some(dir.path().to_path_buf()),
        ..config(&clock)
    };
    let mut seq = 0;
    {
        let guard = Guard::new(redis.clone(), settings()).unwrap();
        let mut raised = false;
        while !raised {
            clock.advance(MINUTE);
            leak(&redis, &mut seq, 40).await.unwrap();
            raised = guard
                .sample_once()
                .await
                .unwrap()
                .iter()
                .any(|a| matches!(a.kind, AlertKind::LevelRaised { .. }));
        }
    }
    // A new guard on the same folder: forecasts at once, no repeated alert.
    let guard = Guard::new(redis.clone(), settings()).unwrap();
    clock.advance(MINUTE);
    leak(&redis, &mut seq, 40).await.unwrap();
    let alerts = guard.sample_once().await.unwrap();
    assert!(alerts.is_empty(), "{:?}", kinds(&alerts));
    let stats = guard.stats();
    assert!(stats.nodes[0].forecast.is_some());
    assert_eq!(stats.nodes[0].levels_raised, [0.2]);
    // Nothing of the guard's is in the watched Redis.
    assert!(server.keys().iter().all(|k| k.starts_with("leak:")));
}

#[tokio::test]
async fn an_unbounded_redis_is_called_out_once_and_measured_against_the_configured_limit() {
    let server = RedisServer::start();
    let redis = connect(&server).await;
    let clock = ManualClock::new(1_700_000_000_000);
    let guard = Guard::new(
        redis,
        GuardConfig {
            limit: Some(64 << 20),
            ..config(&clock)
        },
    )
    .unwrap();
    let first = guard.sample_once().await.unwrap();
    assert_eq!(kinds(&first), ["unbounded"]);
    assert!(
        first[0].summary.contains("no maxmemory"),
        "{}",
        first[0].summary
    );
    clock.advance(MINUTE);
    assert!(guard.sample_once().await.unwrap().is_empty());
    let node = &guard.stats().nodes[0];
    assert_eq!(node.limit_bytes, 64 << 20);
    assert_eq!(node.limit_source, plimsoll::guard::LimitSource::Configured);
    assert_eq!(node.maxmemory_bytes, 0);
}

#[tokio::test]
async fn evictions_are_an_alert_of_their_own() {
    let server = RedisServer::builder()
        .maxmemory(4 << 20)
        .maxmemory_policy("allkeys-lru")
        .start();
    let redis = connect(&server).await;
    let clock = ManualClock::new(1_700_000_000_000);
    let guard = Guard::new(redis.clone(), config(&clock)).unwrap();
    // (An empty Redis is already past 20% of 4 MiB.)
    guard.sample_once().await.unwrap();
    // 8 MiB into 4: Redis evicts instead of refusing.
    let mut seq = 0;
    for _ in 0..200 {
        leak(&redis, &mut seq, 40).await.unwrap();
    }
    clock.advance(MINUTE);
    let alerts = guard.sample_once().await.unwrap();
    let evicted = alerts
        .iter()
        .find_map(|a| match a.kind {
            AlertKind::Evictions { evicted } => Some(evicted),
            _ => None,
        })
        .expect("an evictions alert");
    assert!(evicted > 1000, "{evicted}");
    let summary = &alerts
        .iter()
        .find(|a| a.kind.name() == "evictions")
        .unwrap()
        .summary;
    assert!(summary.contains("allkeys-lru"), "{summary}");
}

#[tokio::test]
async fn an_unreachable_redis_is_an_alert_and_the_guard_recovers() {
    let mut server = RedisServer::builder().maxmemory(MAXMEMORY).start();
    let redis = connect(&server).await;
    let clock = ManualClock::new(1_700_000_000_000);
    let guard = Guard::new(redis, config(&clock)).unwrap();
    guard.sample_once().await.unwrap();
    server.kill();
    clock.advance(MINUTE);
    let alerts = guard.sample_once().await.unwrap();
    assert_eq!(kinds(&alerts), ["unreachable"]);
    assert!(!guard.stats().nodes[0].up);
    server.restart();
    // The connection manager reconnects in the background.
    let mut up = false;
    for _ in 0..100 {
        clock.advance(MINUTE);
        if guard.sample_once().await.is_ok() && guard.stats().nodes.iter().all(|n| n.up) {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(up, "the guard reads Redis again after a restart");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_is_watched_per_node_and_in_total() {
    let cluster = RedisCluster::start();
    let redis = Redis::connect_url(&cluster.urls()[0]).await.unwrap();
    assert!(redis.is_cluster());
    // A cluster routes each command by key: send them one by one.
    for i in 0..600u64 {
        let _: () = redis
            .query(
                redis::cmd("SET")
                    .arg(format!("user:{i}:profile"))
                    .arg(blob(i, 500)),
            )
            .await
            .unwrap();
    }
    let clock = ManualClock::new(1_700_000_000_000);
    let guard = Guard::new(
        redis.clone(),
        GuardConfig {
            limit: Some(256 << 20),
            ..config(&clock)
        },
    )
    .unwrap();
    let alerts = guard.sample_once().await.unwrap();
    // Each node has no maxmemory, and says so.
    assert_eq!(kinds(&alerts), ["unbounded", "unbounded", "unbounded"]);
    let stats = guard.stats();
    assert_eq!(stats.nodes.len(), 3);
    let ports: Vec<String> = cluster
        .nodes()
        .iter()
        .map(|n| n.port().to_string())
        .collect();
    for node in &stats.nodes {
        assert!(
            ports.iter().any(|p| node.node.ends_with(p)),
            "{}",
            node.node
        );
        assert!(node.used_bytes > 0 && node.up);
        assert!(
            node.keys > 100,
            "keys spread over the shards: {}",
            node.keys
        );
    }
    assert_eq!(stats.nodes.iter().map(|n| n.keys).sum::<u64>(), 600);
    assert_eq!(
        stats.total_used_bytes,
        stats.nodes.iter().map(|n| n.used_bytes).sum::<u64>()
    );
    assert_eq!(stats.total_limit_bytes, 3 * (256 << 20));

    // The memory report walks every primary.
    let report = guard.attribute_once().await.unwrap();
    assert_eq!(report.nodes.len(), 3);
    assert_eq!(report.keys_total, 600);
    let users = report.family("user:<n>:profile").unwrap();
    assert_eq!(users.keys, 600);

    // And trim reaches every primary, and only the family.
    let _: () = redis
        .query(redis::cmd("SET").arg("config:flags").arg("{}"))
        .await
        .unwrap();
    let trimmed = plimsoll::guard::trim::trim(
        &redis,
        &plimsoll::TrimTarget::Family {
            pattern: "user:<n>:profile".into(),
            selection: plimsoll::Selection {
                keep: Some(100),
                older_than: None,
            },
        },
        &plimsoll::TrimOptions {
            apply: true,
            ..plimsoll::TrimOptions::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(trimmed.keys, 500);
    let left: u64 = cluster.nodes().iter().map(|n| n.dbsize()).sum();
    assert_eq!(left, 101);
    let flags: Option<String> = redis
        .query(redis::cmd("GET").arg("config:flags"))
        .await
        .unwrap();
    assert_eq!(flags.as_deref(), Some("{}"));
}

/// Waits up to 20 s for `done`.
async fn eventually(mut done: impl FnMut() -> bool) -> bool {
    for _ in 0..200 {
        if done() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

// A guard started shortly before a fast leak named no family before Redis
// was full: its next report was 15 minutes away.
#[tokio::test]
async fn a_level_alert_brings_a_fresh_report_at_once_instead_of_at_the_next_interval() {
    let server = RedisServer::builder().maxmemory(MAXMEMORY).start();
    let redis = connect(&server).await;
    let guard = Guard::new(
        redis.clone(),
        GuardConfig {
            interval: Duration::from_millis(100),
            attribute_interval: Some(Duration::from_secs(3600)),
            sinks: vec![],
            ..GuardConfig::default()
        },
    )
    .unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    let tasks = guard.start(stop.clone());
    assert!(
        eventually(|| guard.latest_report().is_some()).await,
        "the first report runs at start"
    );
    let first = guard.latest_report().unwrap();
    // Past 20% of 16 MiB.
    let mut seq = 0;
    leak(&redis, &mut seq, 4_000).await.unwrap();
    assert!(
        eventually(|| guard.stats().alerts_sent_total.contains_key("level_raised")).await,
        "{:?}",
        guard.stats().alerts_sent_total
    );
    assert!(
        eventually(|| guard.latest_report().unwrap().at_ms > first.at_ms).await,
        "no fresh report after the alert"
    );
    let report = guard.latest_report().unwrap();
    let leak = report
        .family("leak:<n>")
        .expect("the fresh report has the leak");
    assert!(leak.keys >= 3_900, "{}", leak.keys);
    assert!(leak.growth_keys.unwrap_or(0) >= 3_900, "{leak:?}");
    stop.cancel();
    for task in tasks {
        task.await.unwrap();
    }
}

// An eviction policy on a Redis that holds job queues deletes jobs when
// Redis fills up, and nothing said so.
#[tokio::test]
async fn an_evicting_redis_that_holds_queues_is_called_out_once_per_policy() {
    let server = RedisServer::builder().maxmemory(MAXMEMORY).start();
    server.cmd(&["CONFIG", "SET", "maxmemory-policy", "allkeys-lru"]);
    let redis = connect(&server).await;
    let mut pipe = redis::pipe();
    for id in 1..=20 {
        crate::guard_layouts::bullmq_job(
            &mut pipe,
            "mail",
            id,
            crate::guard_layouts::BullState::Completed,
            1_700_000_000_000 + id,
        );
    }
    run(&redis, &pipe).await.unwrap();
    let clock = ManualClock::new(1_700_000_000_000);
    let guard = Guard::new(redis.clone(), config(&clock)).unwrap();
    // Before any report the guard cannot know the queues: nothing yet.
    assert!(!kinds(&guard.sample_once().await.unwrap()).contains(&"eviction_deletes_jobs".into()));
    guard.attribute_once().await.unwrap();
    clock.advance(MINUTE);
    let alerts = guard.sample_once().await.unwrap();
    let alert = alerts
        .iter()
        .find(|a| matches!(a.kind, AlertKind::EvictionDeletesJobs { .. }))
        .unwrap_or_else(|| panic!("{:?}", kinds(&alerts)));
    assert!(alert.summary.contains("allkeys-lru"), "{}", alert.summary);
    assert!(
        alert.summary.contains("BullMQ queue mail"),
        "{}",
        alert.summary
    );
    clock.advance(MINUTE);
    assert!(!kinds(&guard.sample_once().await.unwrap()).contains(&"eviction_deletes_jobs".into()));
    // Fixed, then set to evict again: called out again.
    server.cmd(&["CONFIG", "SET", "maxmemory-policy", "noeviction"]);
    clock.advance(MINUTE);
    guard.sample_once().await.unwrap();
    server.cmd(&["CONFIG", "SET", "maxmemory-policy", "volatile-lru"]);
    clock.advance(2 * 60 * MINUTE);
    assert!(kinds(&guard.sample_once().await.unwrap()).contains(&"eviction_deletes_jobs".into()));
}

// After a failover the guard dropped the dead node from its status at the
// next reading, so `plimsoll_guard_up == 0 for: 2m` could never fire, and
// replicas were not watched at all.
#[tokio::test]
async fn a_replica_is_watched_and_a_dead_one_stays_down_until_forgotten() {
    use plimsoll::guard::stats::NodeRole;
    let primary = RedisServer::builder().maxmemory(MAXMEMORY).start();
    let mut replica = RedisServer::builder().replica_of(primary.port()).start();
    let redis = connect(&primary).await;
    let clock = ManualClock::new(1_700_000_000_000);
    let guard = Guard::new(redis.clone(), config(&clock)).unwrap();
    let replica_node = format!("127.0.0.1:{}", replica.port());
    let role_and_up = |guard: &Guard| {
        guard
            .stats()
            .nodes
            .iter()
            .find(|n| n.node == replica_node)
            .map(|n| (n.role, n.up))
    };
    let mut online = false;
    for _ in 0..100 {
        guard.sample_once().await.unwrap();
        if role_and_up(&guard) == Some((NodeRole::Replica, true)) {
            online = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(online, "{:?}", guard.stats().nodes);

    // The replica dies: its primary stops listing it; the guard keeps it,
    // down.
    replica.kill();
    let mut down = false;
    for _ in 0..100 {
        clock.advance(MINUTE);
        guard.sample_once().await.unwrap();
        if role_and_up(&guard) == Some((NodeRole::Replica, false)) {
            down = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(down, "{:?}", guard.stats().nodes);
    clock.advance(MINUTE);
    guard.sample_once().await.unwrap();
    assert_eq!(
        role_and_up(&guard),
        Some((NodeRole::Replica, false)),
        "still down"
    );

    // The operator forgets it.
    assert!(guard.forget(&replica_node));
    assert_eq!(role_and_up(&guard), None);
    assert!(!guard.forget(&replica_node));
}
