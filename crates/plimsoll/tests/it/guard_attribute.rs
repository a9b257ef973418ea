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

/// `MEMORY USAGE key SAMPLES 0` of one key: the exact count, never
/// Redis' five-field guess.
fn exact_usage(server: &RedisServer, key: &str) -> u64 {
    server
        .cmd(&["MEMORY", "USAGE", key, "SAMPLES", "0"])
        .parse()
        .unwrap_or(0)
}

/// The exact bytes of every key, grouped by family: the truth a sampled
/// report is checked against.
fn full_pass(server: &RedisServer) -> BTreeMap<String, (u64, u64)> {
    let classifier = Classifier::default();
    let mut families: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for key in server.keys() {
        let bytes = exact_usage(server, &key);
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

    // BullMQ's completed jobs carry their own hashes and logs (ids 1 to 300).
    let completed = report.family("bull:mail:completed").unwrap();
    let expected: u64 = exact_usage(&server, "bull:mail:completed")
        + (1..=300)
            .map(|id| {
                exact_usage(&server, &format!("bull:mail:{id}"))
                    + exact_usage(&server, &format!("bull:mail:{id}:logs"))
            })
            .sum::<u64>();
    let off = (completed.bytes as f64 - expected as f64).abs();
    assert!(
        off / expected as f64 <= 0.03
            && off <= completed.bytes_error as f64 + expected as f64 * 0.01,
        "completed jobs {} ± {} vs exactly {expected}",
        completed.bytes,
        completed.bytes_error
    );
    assert!(completed.keys >= 300, "{}", completed.keys);
    assert!(completed.sampled >= 100, "measured {}", completed.sampled);

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

/// Exact bytes of BullMQ queue `queue`'s jobs in `state` ("completed",
/// "failed"): their set, hashes and logs.
fn exact_bullmq_state(server: &RedisServer, queue: &str, state: &str) -> u64 {
    let set = format!("bull:{queue}:{state}");
    let ids = server.cmd(&["ZRANGE", &set, "0", "-1"]);
    exact_usage(server, &set)
        + ids
            .lines()
            .filter(|id| !id.is_empty())
            .map(|id| {
                exact_usage(server, &format!("bull:{queue}:{id}"))
                    + exact_usage(server, &format!("bull:{queue}:{id}:logs"))
            })
            .sum::<u64>()
}

/// Asserts that `got` ± `stated` holds `exact` (with 1% to spare), and is
/// within 10% of it (the G1 target).
fn assert_holds(what: &str, got: u64, stated: u64, exact: u64) {
    let off = (got as f64 - exact as f64).abs();
    assert!(
        off <= 0.10 * exact as f64 && off <= stated as f64 + 0.01 * exact as f64,
        "{what}: reported {got} ± {stated}, exactly {exact} ({:+.1}%)",
        (got as f64 / exact as f64 - 1.0) * 100.0
    );
}

// The family that caused the outage was reported 57% low in one Redis and
// 70% high in the next: `MEMORY USAGE` without `SAMPLES 0` sizes a hash
// from five fields, the same five in every job hash of one process, so a
// 1 KiB `data` field was either in all of them or in none.
#[tokio::test]
async fn bullmq_job_hashes_are_measured_whole_not_guessed_from_five_of_their_fields() {
    let server = RedisServer::start();
    let redis = Redis::connect_url(&server.url()).await.unwrap();
    let mut pipe = redis::pipe();
    let t = 1_700_000_000_000;
    for id in 1..=3_000 {
        let state = match id % 10 {
            0 => BullState::Failed,
            1 if id > 2_900 => BullState::Waiting,
            _ => BullState::Completed,
        };
        layouts::bullmq_job(&mut pipe, "mail", id, state, t + id);
    }
    layouts::bullmq_queue(&mut pipe, "mail", 3_000);
    run(&redis, &pipe).await.unwrap();
    let report =
        plimsoll::guard::attribute(&redis, &AttributeConfig::default(), &SystemClock, None)
            .await
            .unwrap();
    for state in ["completed", "failed"] {
        let family = report.family(&format!("bull:mail:{state}")).unwrap();
        assert_holds(
            state,
            family.bytes,
            family.bytes_error,
            exact_bullmq_state(&server, "mail", state),
        );
        assert_eq!(family.sampled_estimated, 0);
    }
    // Every key's bytes are accounted for once: the families of the queue
    // add up to the exact total of its keys.
    let all: u64 = server.keys().iter().map(|k| exact_usage(&server, k)).sum();
    let reported: u64 = report.families.iter().map(|f| f.bytes).sum();
    assert_holds(
        "all keys",
        reported,
        report.accounting.keys_bytes_error,
        all,
    );
}

#[tokio::test]
async fn a_key_too_big_to_count_exactly_is_marked_and_allowed_for() {
    let server = RedisServer::start();
    let redis = Redis::connect_url(&server.url()).await.unwrap();
    let mut pipe = redis::pipe();
    // One hash of 5,000 fields whose sizes vary, and a sorted set.
    for i in 0..5_000u64 {
        pipe.cmd("HSET")
            .arg("catalog:items")
            .arg(format!("item{i}"))
            .arg(blob(i, 20 + (i % 7) as usize * 100))
            .ignore();
        pipe.cmd("ZADD")
            .arg("catalog:ranking")
            .arg(i)
            .arg(format!("item{i}"))
            .ignore();
    }
    run(&redis, &pipe).await.unwrap();
    let exact = |key: &str| exact_usage(&server, key);

    let report =
        plimsoll::guard::attribute(&redis, &AttributeConfig::default(), &SystemClock, None)
            .await
            .unwrap();
    let items = report.family("catalog:items").unwrap();
    assert_eq!(
        items.bytes,
        exact("catalog:items"),
        "within the bound: exact"
    );
    assert_eq!(items.sampled_estimated, 0);
    assert_eq!(
        report.family("catalog:ranking").unwrap().bytes,
        exact("catalog:ranking")
    );

    // Past the bound, Redis extrapolates, and the report says so.
    let config = AttributeConfig {
        exact_elements: 500,
        ..AttributeConfig::default()
    };
    let report = plimsoll::guard::attribute(&redis, &config, &SystemClock, None)
        .await
        .unwrap();
    let items = report.family("catalog:items").unwrap();
    assert_eq!(items.sampled_estimated, 1);
    assert!(items.bytes_error > 0);
    assert_holds(
        "an estimated hash",
        items.bytes,
        items.bytes_error,
        exact("catalog:items"),
    );
}

#[tokio::test]
async fn a_few_big_keys_among_many_small_ones_widen_the_sample() {
    let server = RedisServer::start();
    let redis = Redis::connect_url(&server.url()).await.unwrap();
    let mut pipe = redis::pipe();
    // 4,800 small values and 240 of 40 KiB: the big ones hold most bytes.
    // (Rarer than about one in 200, the first 200 keys measured can miss
    // them all; the report's accounting then shows the bytes as not
    // explained.)
    for i in 0..5_040u64 {
        let len = if i % 21 == 0 { 40 << 10 } else { 60 };
        pipe.cmd("SET")
            .arg(format!("blob:{i}"))
            .arg(blob(i, len))
            .ignore();
    }
    run(&redis, &pipe).await.unwrap();
    let report =
        plimsoll::guard::attribute(&redis, &AttributeConfig::default(), &SystemClock, None)
            .await
            .unwrap();
    let family = report.family("blob:<n>").unwrap();
    assert!(
        family.sampled > 400,
        "a skewed sample stops early: {} measured",
        family.sampled
    );
    let exact: u64 = server.keys().iter().map(|k| exact_usage(&server, k)).sum();
    assert_holds("skewed family", family.bytes, family.bytes_error, exact);
}

#[tokio::test]
async fn a_report_adds_up_to_used_memory_with_client_buffers_on_their_own_line() {
    use std::io::{Read, Write};
    let server = RedisServer::start();
    let redis = Redis::connect_url(&server.url()).await.unwrap();
    let mut pipe = redis::pipe();
    for i in 0..20_000u64 {
        pipe.cmd("SET")
            .arg(format!("page:{i}"))
            .arg(blob(i, 300))
            .ignore();
    }
    run(&redis, &pipe).await.unwrap();
    // A subscriber that stops reading: once the kernel's socket buffers
    // are full, Redis keeps the rest of 32 MiB in its output buffer (with
    // no limit on it, so that it is not disconnected).
    server.cmd(&[
        "CONFIG",
        "SET",
        "client-output-buffer-limit",
        "pubsub 0 0 0",
    ]);
    let mut subscriber = std::net::TcpStream::connect(("127.0.0.1", server.port())).unwrap();
    subscriber
        .write_all(b"*2\r\n$9\r\nSUBSCRIBE\r\n$4\r\nnews\r\n")
        .unwrap();
    let mut ack = [0u8; 64];
    let _ = subscriber.read(&mut ack).unwrap();
    let message = String::from_utf8(blob(7, 1 << 20)).unwrap();
    for _ in 0..32 {
        let _: u64 = redis
            .query(redis::cmd("PUBLISH").arg("news").arg(&message))
            .await
            .unwrap();
    }
    // Right after the burst Redis still holds memory of it outside both
    // (freed by its cron within 100 ms): the report would rightly call it
    // unexplained. Let it pass.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let report =
        plimsoll::guard::attribute(&redis, &AttributeConfig::default(), &SystemClock, None)
            .await
            .unwrap();
    let a = &report.accounting;
    let outside = a.outside_keys.expect("MEMORY STATS answered");
    assert!(
        outside.clients >= 12 << 20,
        "client buffers {} of the 32 MiB held for the subscriber",
        outside.clients
    );
    // What is left over after keys and Redis' own memory is small: the
    // buffer was not mistaken for keys nor lost.
    let rest = a.unexplained_bytes.unwrap();
    assert!(
        rest.unsigned_abs() < report.used_memory / 10,
        "{rest} of {} unexplained: {a:?}",
        report.used_memory
    );
    assert!(!a.too_much_unexplained(report.used_memory));
    drop(subscriber);
}

#[tokio::test]
async fn a_redis_that_refuses_memory_commands_gets_a_report_without_them_or_a_clear_error() {
    let server = RedisServer::start();
    let redis = Redis::connect_url(&server.url()).await.unwrap();
    let mut pipe = redis::pipe();
    for i in 0..500u64 {
        pipe.cmd("SET")
            .arg(format!("page:{i}"))
            .arg(blob(i, 300))
            .ignore();
    }
    run(&redis, &pipe).await.unwrap();
    let url_of = |user: &str| {
        server
            .url()
            .replacen("redis://", &format!("redis://{user}:pw@"), 1)
    };

    // A managed Redis that forbids MEMORY STATS: the keys are still
    // measured, and the report says it cannot account for the rest.
    server.cmd(&[
        "ACL",
        "SETUSER",
        "nostats",
        "on",
        ">pw",
        "~*",
        "+@all",
        "-memory|stats",
    ]);
    let limited = Redis::connect_url(&url_of("nostats")).await.unwrap();
    let report =
        plimsoll::guard::attribute(&limited, &AttributeConfig::default(), &SystemClock, None)
            .await
            .unwrap();
    let page = report.family("page:<n>").unwrap();
    let exact: u64 = server.keys().iter().map(|k| exact_usage(&server, k)).sum();
    assert_eq!(page.bytes, exact, "all 500 keys measured exactly");
    assert_eq!(report.accounting.outside_keys, None);
    assert_eq!(report.accounting.unexplained_bytes, None);

    // Without MEMORY USAGE nothing can be measured: an error that says so,
    // not a report of empty families.
    server.cmd(&[
        "ACL", "SETUSER", "nomemory", "on", ">pw", "~*", "+@all", "-memory",
    ]);
    let blind = Redis::connect_url(&url_of("nomemory")).await.unwrap();
    let err = plimsoll::guard::attribute(&blind, &AttributeConfig::default(), &SystemClock, None)
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("NOPERM") && err.to_string().contains("memory|usage"),
        "{err}"
    );
}
