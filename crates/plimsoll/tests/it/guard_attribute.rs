//! Memory reports on a Redis shared by Plimsoll, BullMQ, Sidekiq, Celery,
//! RQ, apalis and application keys: each family named, its bytes close to
//! a full `MEMORY USAGE` pass, the leaking family named first, and nothing
//! written into the watched Redis.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use plimsoll::guard::attribute::{Classifier, Layout};
use plimsoll::guard::{AttributeConfig, ForecastConfig, ReportHistory};
use plimsoll::{AlertKind, Guard, GuardConfig, ManualClock, NewJob, Queue, Redis, SystemClock};

use crate::guard_layouts::{self as layouts, BullState, blob, run, uuid};
use crate::support::RedisServer;

/// Every layout at once.
async fn shared_redis(redis: &Redis) {
    let mut pipe = redis::pipe();
    for id in 1..=300 {
        layouts::bullmq_job(
            &mut pipe,
            "mail",
            id,
            BullState::Completed,
            1_700_000_000_000 + id,
        );
    }
    for id in 301..=350 {
        layouts::bullmq_job(
            &mut pipe,
            "mail",
            id,
            BullState::Failed,
            1_700_000_000_000 + id,
        );
    }
    for id in 351..=370 {
        layouts::bullmq_job(
            &mut pipe,
            "mail",
            id,
            BullState::Waiting,
            1_700_000_000_000 + id,
        );
    }
    layouts::bullmq_queue(&mut pipe, "mail", 370);
    layouts::sidekiq(&mut pipe, 100, 200, 1_700_000_000.0);
    layouts::celery(&mut pipe, 50, 300);
    layouts::rq(&mut pipe, 200);
    layouts::apalis(&mut pipe, 100);
    layouts::app(&mut pipe, 500, 400);
    run(redis, &pipe).await.unwrap();
    let queue = Queue::with_defaults(redis.clone(), "webhooks").unwrap();
    let jobs = (0..50).map(|i| NewJob::bytes(blob(i, 500))).collect();
    queue.enqueue_bulk(jobs).await.unwrap();
}

/// MEMORY USAGE of every key, grouped by family: the full pass a sampled
/// report is checked against.
fn full_pass(server: &RedisServer) -> BTreeMap<String, (u64, u64)> {
    let classifier = Classifier::default();
    let mut families: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for key in server.keys() {
        let bytes: u64 = server.cmd(&["MEMORY", "USAGE", &key]).parse().unwrap();
        let family = classifier.classify(key.as_bytes()).pattern;
        let entry = families.entry(family).or_default();
        entry.0 += 1;
        entry.1 += bytes;
    }
    families
}

#[tokio::test]
async fn every_layout_is_named_and_measured_like_a_full_pass() {
    let server = RedisServer::start();
    let redis = Redis::connect_url(&server.url()).await.unwrap();
    shared_redis(&redis).await;
    let keys_before = server.keys();
    let config = AttributeConfig {
        samples_per_family: 150,
        ..AttributeConfig::default()
    };
    let report = plimsoll::guard::attribute(&redis, &config, &SystemClock, None)
        .await
        .unwrap();
    assert_eq!(server.keys(), keys_before, "a report writes nothing");
    assert!(report.complete);
    assert_eq!(report.keys_total, keys_before.len() as u64);
    // The budget is kept: so many commands a second after a burst of a
    // tenth of a second's worth.
    let node = &report.nodes[0];
    let budget = f64::from(config.budget);
    assert!(report.commands > 0);
    assert!(
        node.commands as f64 <= budget * node.duration_secs + budget / 10.0 + 10.0,
        "{} commands in {:.2} s",
        node.commands,
        node.duration_secs
    );

    let name = |pattern: &str| report.family(pattern).map(|f| f.name.clone());
    assert_eq!(
        name("bull:mail:completed").as_deref(),
        Some("BullMQ queue mail: completed jobs")
    );
    assert_eq!(
        name("bull:mail:failed").as_deref(),
        Some("BullMQ queue mail: failed jobs")
    );
    assert_eq!(name("dead").as_deref(), Some("Sidekiq dead set"));
    assert_eq!(
        name("queue:default").as_deref(),
        Some("Sidekiq queue default")
    );
    assert_eq!(
        name("celery-task-meta-<id>").as_deref(),
        Some("Celery task results")
    );
    assert_eq!(name("rq:job:<id>").as_deref(), Some("RQ job hashes"));
    assert_eq!(
        name("rq:finished:default").as_deref(),
        Some("RQ queue default: finished registry")
    );
    assert_eq!(
        name("email_service::Email:data").as_deref(),
        Some("apalis queue email_service::Email: task data")
    );
    assert_eq!(
        name("plimsoll:{webhooks}:jobs").as_deref(),
        Some("Plimsoll queue webhooks: job records")
    );

    // BullMQ's completed jobs carry their hashes: 300 of the 370 job hashes.
    let completed = report.family("bull:mail:completed").unwrap();
    let hashes: u64 = server
        .keys()
        .iter()
        .filter(|k| {
            k.strip_prefix("bull:mail:")
                .is_some_and(|id| id.chars().all(|c| c.is_ascii_digit()))
        })
        .map(|k| server.cmd(&["MEMORY", "USAGE", k]).parse::<u64>().unwrap())
        .sum();
    let set: u64 = server
        .cmd(&["MEMORY", "USAGE", "bull:mail:completed"])
        .parse()
        .unwrap();
    let expected = set as f64 + hashes as f64 * 300.0 / 370.0;
    assert!(
        (completed.bytes as f64 - expected).abs() / expected < 0.1,
        "completed jobs {} vs {expected}",
        completed.bytes
    );
    assert!(completed.keys >= 300, "{}", completed.keys);

    // TTL shares: Celery results and sessions expire, profiles do not.
    assert_eq!(
        report.family("celery-task-meta-<id>").unwrap().no_ttl_share,
        0.0
    );
    assert_eq!(report.family("session:<uuid>").unwrap().no_ttl_share, 0.0);
    assert_eq!(report.family("user:<n>:profile").unwrap().no_ttl_share, 1.0);

    // Generic families against a full MEMORY USAGE pass: within 10%.
    let full = full_pass(&server);
    for family in report
        .families
        .iter()
        .filter(|f| f.layout == Layout::Generic)
    {
        let (keys, bytes) = full[&family.pattern];
        assert_eq!(family.keys, keys, "{}", family.pattern);
        let error = (family.bytes as f64 - bytes as f64).abs() / bytes as f64;
        assert!(
            error < 0.1,
            "{}: {} vs {bytes}",
            family.pattern,
            family.bytes
        );
        // The stated error covers the real one.
        assert!(
            (family.bytes as f64 - bytes as f64).abs() <= family.bytes_error as f64 + 1.0
                || error < 0.02,
            "{}: off by {} with a stated error of {}",
            family.pattern,
            family.bytes as i64 - bytes as i64,
            family.bytes_error
        );
    }
}

#[tokio::test]
async fn the_leaking_family_is_named_first_in_the_report_and_the_alert() {
    let server = RedisServer::builder().maxmemory(24 << 20).start();
    let redis = Redis::connect_url(&server.url()).await.unwrap();
    shared_redis(&redis).await;
    let clock = ManualClock::new(1_700_000_000_000);
    let guard = Guard::new(
        redis.clone(),
        GuardConfig {
            attribute_interval: None,
            sinks: vec![],
            forecast: ForecastConfig {
                min_span: Duration::from_secs(600),
                ..ForecastConfig::default()
            },
            clock: Arc::new(clock.clone()),
            ..GuardConfig::default()
        },
    )
    .unwrap();
    let mut seq = 0u64;
    let mut sessions = 0u64;
    let mut report = guard.attribute_once().await.unwrap();
    for _ in 0..4 {
        // The leak: audit records without a TTL, 300 per interval. Sessions
        // grow too, slower, and expire: churn, not a leak.
        let mut pipe = redis::pipe();
        for _ in 0..300 {
            seq += 1;
            pipe.cmd("SET")
                .arg(format!("audit:{}", uuid(seq)))
                .arg(blob(seq, 800))
                .ignore();
        }
        for _ in 0..50 {
            sessions += 1;
            pipe.cmd("SET")
                .arg(format!("session:{}", uuid(900_000 + sessions)))
                .arg(blob(sessions, 150))
                .arg("EX")
                .arg(3600)
                .ignore();
        }
        run(&redis, &pipe).await.unwrap();
        clock.advance(Duration::from_secs(15 * 60));
        report = guard.attribute_once().await.unwrap();
    }
    let growing = report.growing();
    assert_eq!(growing[0].pattern, "audit:<uuid>", "{growing:?}");
    let leaks: Vec<&str> = report
        .suspected_leaks()
        .iter()
        .map(|f| f.pattern.as_str())
        .collect();
    assert_eq!(leaks, ["audit:<uuid>"]);
    assert!(growing.iter().any(|f| f.pattern == "session:<uuid>"));

    // An alert names it first, with the figures.
    let mut alert = None;
    for _ in 0..600 {
        let mut pipe = redis::pipe();
        for _ in 0..20 {
            seq += 1;
            pipe.cmd("SET")
                .arg(format!("audit:{}", uuid(seq)))
                .arg(blob(seq, 800))
                .ignore();
        }
        run(&redis, &pipe).await.unwrap();
        clock.advance(Duration::from_secs(60));
        if let Some(a) = guard
            .sample_once()
            .await
            .unwrap()
            .into_iter()
            .find(|a| matches!(a.kind, AlertKind::LevelRaised { .. }))
        {
            alert = Some(a);
            break;
        }
    }
    let alert = alert.expect("the 20% level is reached");
    assert_eq!(alert.top_growing[0].pattern, "audit:<uuid>");
    assert!(alert.top_growing[0].suspected_leak);
    assert!(alert.text().contains("audit:<uuid>"), "{}", alert.text());
    // Nothing of the guard's in Redis.
    let prefixes: BTreeSet<String> = server
        .keys()
        .iter()
        .map(|k| k.split([':', '-']).next().unwrap().to_string())
        .collect();
    assert!(
        !prefixes.iter().any(|p| p.contains("guard")),
        "{prefixes:?}"
    );
}

#[tokio::test]
async fn a_partial_walk_estimates_the_whole_keyspace() {
    let server = RedisServer::start();
    let redis = Redis::connect_url(&server.url()).await.unwrap();
    let mut pipe = redis::pipe();
    for i in 0..20_000u64 {
        pipe.cmd("SET")
            .arg(format!("a:{i}"))
            .arg(blob(i, 100))
            .ignore();
    }
    for i in 0..5_000u64 {
        pipe.cmd("SET")
            .arg(format!("b:{i}"))
            .arg(blob(i, 400))
            .ignore();
    }
    run(&redis, &pipe).await.unwrap();
    // Walk only about a fifth of the keys.
    let config = AttributeConfig {
        max_keys: 5_000,
        scan_count: 100,
        ..AttributeConfig::default()
    };
    let mut history = ReportHistory::in_memory(4);
    let report = plimsoll::guard::attribute(&redis, &config, &SystemClock, Some(&mut history))
        .await
        .unwrap();
    assert!(!report.complete);
    assert!(report.keys_scanned < 10_000, "{}", report.keys_scanned);
    let a = report.family("a:<n>").unwrap();
    let b = report.family("b:<n>").unwrap();
    let off = |got: u64, want: f64| (got as f64 - want).abs() / want;
    assert!(off(a.keys, 20_000.0) < 0.1, "a: {}", a.keys);
    assert!(off(b.keys, 5_000.0) < 0.15, "b: {}", b.keys);
    assert!(b.bytes_error > 0);
}

/// Connected clients of `server`, from INFO (redis-cli's own included).
fn connected_clients(server: &RedisServer) -> u64 {
    server.info("clients")["connected_clients"].parse().unwrap()
}

/// The scheduling policy of each of this process' threads named `name`
/// (field 41 of `/proc/self/task/<tid>/stat`; 5 is `SCHED_IDLE`).
#[cfg(target_os = "linux")]
fn policies_of_threads_named(name: &str) -> Vec<u32> {
    let mut policies = Vec::new();
    for task in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if comm.trim_end() != name {
            continue;
        }
        let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
        let Some((_, after_name)) = stat.rsplit_once(')') else {
            continue;
        };
        // Fields after the name start at field 3; the policy is field 41.
        if let Some(policy) = after_name.split_whitespace().nth(41 - 3) {
            policies.push(policy.parse().unwrap());
        }
    }
    policies
}

#[tokio::test]
async fn the_walk_runs_apart_at_idle_priority_and_stops_when_dropped() {
    let server = RedisServer::start();
    let redis = Redis::connect_url(&server.url()).await.unwrap();
    let mut pipe = redis::pipe();
    for i in 0..5_000u64 {
        pipe.cmd("SET").arg(format!("k:{i}")).arg(i).ignore();
    }
    run(&redis, &pipe).await.unwrap();
    let clients_before = connected_clients(&server);
    // 5,000 keys at 100 a second: a walk of 50 s, cut short below.
    let config = AttributeConfig {
        keys_per_sec: 100,
        ..AttributeConfig::default()
    };
    let walk = tokio::spawn(async move {
        plimsoll::guard::attribute(&redis, &config, &SystemClock, None).await
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    // It walks on a connection of its own (not the caller's, whose
    // requests would queue behind its replies) ...
    assert_eq!(connected_clients(&server), clients_before + 1);
    // ... on a thread that any other thread preempts.
    #[cfg(target_os = "linux")]
    {
        let policies = policies_of_threads_named("plimsoll-walk");
        assert!(!policies.is_empty(), "no walk thread");
        assert!(policies.iter().all(|p| *p == 5), "{policies:?}");
    }
    // Dropping the report stops the walk: its connection closes.
    walk.abort();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while connected_clients(&server) > clients_before {
        assert!(
            std::time::Instant::now() < deadline,
            "the walk's connection is still open"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
