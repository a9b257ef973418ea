//! `trim`: a BullMQ completed set and its job hashes trimmed while every
//! other key stays byte-for-byte the same; trimming a Redis that refuses
//! writes; Sidekiq's dead set; generic families by count and idle time; a
//! known queue layout refused as a generic family.

use std::collections::BTreeMap;
use std::time::Duration;

use plimsoll::{
    BullMqSet, ErrorKind, Redis, Selection, SidekiqSet, TrimOptions, TrimTarget, guard::trim::trim,
};

use crate::guard_layouts::{self as layouts, BullState, blob, run, uuid};
use crate::support::RedisServer;

/// DUMP of every key: what "left alone" is checked against.
fn dump_all(server: &RedisServer) -> BTreeMap<String, String> {
    server
        .keys()
        .into_iter()
        .map(|k| {
            let dump = server.cmd(&["DUMP", &k]);
            (k, dump)
        })
        .collect()
}

fn apply() -> TrimOptions {
    TrimOptions {
        apply: true,
        batch: 100,
        ..TrimOptions::default()
    }
}

#[tokio::test]
async fn trimming_a_bullmq_completed_set_leaves_every_other_key_alone() {
    let server = RedisServer::start();
    let redis = Redis::connect_url(&server.url()).await.unwrap();
    let mut pipe = redis::pipe();
    for id in 1..=1000 {
        layouts::bullmq_job(
            &mut pipe,
            "mail",
            id,
            BullState::Completed,
            1_700_000_000_000 + id,
        );
    }
    for id in 1001..=1100 {
        layouts::bullmq_job(
            &mut pipe,
            "mail",
            id,
            BullState::Failed,
            1_700_000_000_000 + id,
        );
    }
    for id in 1101..=1150 {
        layouts::bullmq_job(
            &mut pipe,
            "mail",
            id,
            BullState::Waiting,
            1_700_000_000_000 + id,
        );
    }
    layouts::bullmq_queue(&mut pipe, "mail", 1150);
    // Another queue's completed jobs, with the same ids.
    for id in 1..=100 {
        layouts::bullmq_job(
            &mut pipe,
            "billing",
            id,
            BullState::Completed,
            1_700_000_000_000 + id,
        );
    }
    layouts::sidekiq(&mut pipe, 10, 10, 1_700_000_000.0);
    layouts::app(&mut pipe, 50, 50);
    run(&redis, &pipe).await.unwrap();
    let before = dump_all(&server);
    let target = TrimTarget::BullMq {
        prefix: "bull".into(),
        queue: "mail".into(),
        set: BullMqSet::Completed,
        selection: Selection {
            keep: Some(100),
            older_than: None,
        },
    };

    // A dry run counts and estimates, and changes nothing.
    let dry = trim(&redis, &target, &TrimOptions::default())
        .await
        .unwrap();
    assert!(!dry.applied);
    assert_eq!(dry.jobs, 900);
    // The estimate against the truth: every removed job's hash and log
    // measured exactly. It used to rest on `MEMORY USAGE` without
    // `SAMPLES 0`, which estimates a hash from five fields, and moved by more
    // than half from run to run (it failed this test's wide range once).
    let mut exact = 0u64;
    for id in 1..=900u64 {
        for key in [format!("bull:mail:{id}"), format!("bull:mail:{id}:logs")] {
            let bytes: Option<u64> = redis
                .query(
                    redis::cmd("MEMORY")
                        .arg("USAGE")
                        .arg(&key)
                        .arg("SAMPLES")
                        .arg(0),
                )
                .await
                .unwrap();
            exact += bytes.unwrap_or(0);
        }
    }
    let error = dry.bytes_estimated as f64 / exact as f64 - 1.0;
    eprintln!(
        "bullmq trim dry run: estimated {} bytes, exact {exact} ({:+.1}%)",
        dry.bytes_estimated,
        error * 100.0
    );
    assert!(
        error.abs() < 0.25,
        "estimated {} bytes, the removed keys hold {exact} (error {:+.1}%)",
        dry.bytes_estimated,
        error * 100.0
    );
    assert_eq!(dump_all(&server), before);

    let done = trim(&redis, &target, &apply()).await.unwrap();
    assert_eq!(done.jobs, 900);
    assert_eq!(
        done.keys,
        900 + 90,
        "job hashes and the logs of every tenth"
    );
    assert!(done.batches >= 9);
    assert!(done.used_memory_after < done.used_memory_before);
    // The newest 100 remain, with their hashes.
    let kept: Vec<String> = redis
        .query(
            redis::cmd("ZRANGE")
                .arg("bull:mail:completed")
                .arg(0)
                .arg(-1),
        )
        .await
        .unwrap();
    let expected: Vec<String> = (901..=1000).map(|i: u64| i.to_string()).collect();
    assert_eq!(kept, expected);
    let after = dump_all(&server);
    for (key, dump) in &before {
        let removed_job = key
            .strip_prefix("bull:mail:")
            .and_then(|rest| rest.split(':').next())
            .and_then(|id| id.parse::<u64>().ok())
            .is_some_and(|id| id <= 900);
        if removed_job {
            assert!(!after.contains_key(key), "{key} should be gone");
        } else if key == "bull:mail:completed" {
            assert_ne!(after.get(key), Some(dump));
        } else {
            assert_eq!(after.get(key), Some(dump), "{key} was touched");
        }
    }
    assert!(
        after.keys().all(|k| before.contains_key(k)),
        "no key was added"
    );
}

#[tokio::test]
async fn trim_works_while_redis_refuses_writes() {
    let server = RedisServer::builder().maxmemory(8 << 20).start();
    let redis = Redis::connect_url(&server.url()).await.unwrap();
    // BullMQ without removeOnComplete fills Redis with completed jobs.
    let mut id = 0;
    loop {
        let mut pipe = redis::pipe();
        for _ in 0..50 {
            id += 1;
            layouts::bullmq_job(
                &mut pipe,
                "mail",
                id,
                BullState::Completed,
                1_700_000_000_000 + id,
            );
        }
        match run(&redis, &pipe).await {
            Ok(()) => assert!(id < 100_000, "Redis never filled up"),
            Err(err) if crate::guard::is_oom(&err) => break,
            Err(err) => panic!("{err}"),
        }
    }
    let refused = server.command(&["SET", "probe", "x"]).unwrap_err();
    assert!(refused.starts_with("OOM"), "{refused}");

    let done = trim(
        &redis,
        &TrimTarget::BullMq {
            prefix: "bull".into(),
            queue: "mail".into(),
            set: BullMqSet::Completed,
            selection: Selection {
                keep: Some(0),
                older_than: None,
            },
        },
        &apply(),
    )
    .await
    .unwrap();
    assert!(done.jobs > 1000, "{}", done.jobs);
    assert!(done.used_memory_after < done.used_memory_before / 2);
    server.cmd(&["SET", "probe", "x"]);
    let card: u64 = server
        .cmd(&["ZCARD", "bull:mail:completed"])
        .parse()
        .unwrap();
    assert_eq!(card, 0);
}

#[tokio::test]
async fn sidekiqs_dead_set_is_trimmed_oldest_first_by_count_and_age() {
    let server = RedisServer::start();
    let redis = Redis::connect_url(&server.url()).await.unwrap();
    let mut pipe = redis::pipe();
    // 200 dead jobs, died one a second until now.
    let now_secs = 1_700_000_000.0;
    layouts::sidekiq(&mut pipe, 10, 200, now_secs);
    run(&redis, &pipe).await.unwrap();
    let before = dump_all(&server);
    let clock = plimsoll::ManualClock::new(1_700_000_000_000);
    let options = TrimOptions {
        clock: std::sync::Arc::new(clock),
        ..apply()
    };
    let target = |keep, older_than| TrimTarget::Sidekiq {
        namespace: None,
        set: SidekiqSet::Dead,
        selection: Selection { keep, older_than },
    };
    // Older than 150 s: the 50 oldest.
    let done = trim(
        &redis,
        &target(None, Some(Duration::from_secs(150))),
        &options,
    )
    .await
    .unwrap();
    assert_eq!(done.jobs, 50);
    let done = trim(&redis, &target(Some(20), None), &options)
        .await
        .unwrap();
    assert_eq!(done.jobs, 130);
    assert_eq!(server.cmd(&["ZCARD", "dead"]), "20");
    let newest = server.cmd(&["ZRANGE", "dead", "-1", "-1", "WITHSCORES"]);
    assert!(newest.ends_with("1699999999"), "{newest}");
    let after = dump_all(&server);
    for (key, dump) in before.iter().filter(|(k, _)| *k != "dead") {
        assert_eq!(after.get(key), Some(dump), "{key} was touched");
    }
}

#[tokio::test]
async fn a_generic_family_is_trimmed_by_count_and_by_idle_time_and_nothing_else() {
    let server = RedisServer::start();
    let redis = Redis::connect_url(&server.url()).await.unwrap();
    let mut pipe = redis::pipe();
    for i in 0..300u64 {
        pipe.cmd("SET")
            .arg(format!("audit:{}", uuid(i)))
            .arg(blob(i, 200))
            .ignore();
    }
    // Look-alikes that are not the family.
    pipe.cmd("SET").arg("audit:summary").arg("x").ignore();
    pipe.cmd("SET")
        .arg(format!("audit:{}:extra", uuid(1)))
        .arg("x")
        .ignore();
    pipe.cmd("SET")
        .arg(format!("audits:{}", uuid(2)))
        .arg("x")
        .ignore();
    layouts::app(&mut pipe, 20, 20);
    run(&redis, &pipe).await.unwrap();
    let family = |keep, older_than| TrimTarget::Family {
        pattern: "audit:<uuid>".into(),
        selection: Selection { keep, older_than },
    };
    let dry = trim(&redis, &family(Some(100), None), &TrimOptions::default())
        .await
        .unwrap();
    assert_eq!(dry.keys, 200);
    assert!(dry.bytes_estimated > 200 * 200);
    let done = trim(&redis, &family(Some(100), None), &apply())
        .await
        .unwrap();
    assert_eq!(done.keys, 200);
    let left = server.keys();
    assert_eq!(left.iter().filter(|k| k.starts_with("audit:")).count(), 102);
    assert!(left.contains(&"audit:summary".to_string()));
    assert!(left.contains(&format!("audits:{}", uuid(2))));

    // Idle time: touch ten keys, wait, trim what was not touched.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let survivors: Vec<String> = left
        .iter()
        .filter(|k| {
            k.starts_with("audit:") && plimsoll::guard::trim::pattern_matches("audit:<uuid>", k)
        })
        .take(10)
        .cloned()
        .collect();
    for key in &survivors {
        server.cmd(&["GET", key]);
    }
    // The dry run shows keys that would go, never the touched ones (it
    // listed the first keys walked, hot ones among them).
    let dry = trim(
        &redis,
        &family(None, Some(Duration::from_secs(2))),
        &TrimOptions::default(),
    )
    .await
    .unwrap();
    assert_eq!(dry.keys, 90);
    assert_eq!(dry.examples.len(), 10);
    for example in &dry.examples {
        assert!(
            !survivors.contains(example),
            "{example} is kept, not trimmed"
        );
    }
    let going_bytes: u64 = dry
        .examples
        .iter()
        .map(|k| {
            server
                .cmd(&["MEMORY", "USAGE", k, "SAMPLES", "0"])
                .parse::<u64>()
                .unwrap()
        })
        .sum::<u64>()
        / 10
        * 90;
    let off = (dry.bytes_estimated as f64 / going_bytes as f64 - 1.0).abs();
    assert!(
        off < 0.2,
        "would free {} for about {going_bytes}",
        dry.bytes_estimated
    );
    let done = trim(
        &redis,
        &family(None, Some(Duration::from_secs(2))),
        &apply(),
    )
    .await
    .unwrap();
    assert_eq!(done.keys, 90);
    for key in &survivors {
        assert_eq!(server.cmd(&["EXISTS", key]), "1");
    }
}

#[tokio::test]
async fn a_queue_layout_is_not_trimmed_as_a_generic_family() {
    let server = RedisServer::start();
    let redis = Redis::connect_url(&server.url()).await.unwrap();
    let err = trim(
        &redis,
        &TrimTarget::Family {
            pattern: "bull:mail:<id>".into(),
            selection: Selection {
                keep: Some(0),
                older_than: None,
            },
        },
        &apply(),
    )
    .await
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    assert!(err.to_string().contains("bullmq"), "{err}");
    let err = trim(
        &redis,
        &TrimTarget::Family {
            pattern: "<*>".into(),
            selection: Selection {
                keep: Some(0),
                older_than: None,
            },
        },
        &apply(),
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("every key"), "{err}");
}

#[tokio::test]
async fn a_plimsoll_queue_is_trimmed_by_retention_rules() {
    use plimsoll::{Bounds, NewJob, Outcome, Queue, Retention, Worker};

    let server = RedisServer::start();
    let redis = Redis::connect_url(&server.url()).await.unwrap();
    let queue = Queue::with_defaults(redis.clone(), "mail").unwrap();
    let jobs = (0..30)
        .map(|i| NewJob::bytes(format!("job-{i}")).max_attempts(1))
        .collect();
    queue.enqueue_bulk(jobs).await.unwrap();
    let worker = Worker::builder(queue.clone())
        .config(crate::support::fast_worker())
        .start(|_job: plimsoll::Job| async { Outcome::fail("no") })
        .unwrap();
    crate::support::eventually(Duration::from_secs(20), "30 dead jobs", || async {
        queue.counts().await.unwrap().dead == 30
    })
    .await;
    worker.shutdown().await.unwrap();
    let target = TrimTarget::Plimsoll {
        prefix: "plimsoll".into(),
        queue: "mail".into(),
        retention: Retention {
            dead: Bounds::new(5, Duration::from_secs(3600), 1 << 30).unwrap(),
            ..Retention::default()
        },
    };
    let dry = trim(&redis, &target, &TrimOptions::default())
        .await
        .unwrap();
    assert_eq!(dry.jobs, 25);
    assert_eq!(queue.counts().await.unwrap().dead, 30);
    let done = trim(&redis, &target, &apply()).await.unwrap();
    assert_eq!(done.jobs, 25);
    assert_eq!(queue.counts().await.unwrap().dead, 5);
}

/// `plimsoll trim family 'plimsoll:<*>:jobs' --keep 0 --yes` unlinked every
/// queue's `jobs` hash: only a key made up from the pattern
/// (`plimsoll:x:jobs`, which looks generic) was classified, never the keys
/// the trim then removed (`plimsoll:{mail}:jobs`).
#[tokio::test]
async fn a_family_pattern_that_matches_queue_keys_leaves_every_queue_alone() {
    use plimsoll::{NewJob, Queue};

    let server = RedisServer::start();
    let redis = Redis::connect_url(&server.url()).await.unwrap();
    let names = ["mail", "billing", "hooks.github"];
    for name in names {
        let queue = Queue::with_defaults(redis.clone(), name).unwrap();
        let jobs = (0..20)
            .map(|i| NewJob::bytes(format!("{name}-{i}")))
            .collect();
        queue.enqueue_bulk(jobs).await.unwrap();
    }
    // Keys of the same shape that belong to no queue do go.
    for i in 0..5 {
        server.cmd(&["SET", &format!("plimsoll:cart{i}:jobs"), "x"]);
    }
    let queue_keys = dump_all(&server)
        .into_iter()
        .filter(|(k, _)| k.contains('{') || k == "plimsoll:queues")
        .collect::<BTreeMap<_, _>>();
    let target = TrimTarget::Family {
        pattern: "plimsoll:<*>:jobs".into(),
        selection: Selection {
            keep: Some(0),
            older_than: None,
        },
    };
    let dry = trim(&redis, &target, &TrimOptions::default())
        .await
        .unwrap();
    assert_eq!(dry.keys, 5, "{dry:?}");
    assert_eq!(dry.skipped, 3, "{dry:?}");
    assert!(
        dry.skipped_examples
            .iter()
            .any(|e| e.starts_with("plimsoll:{mail}:jobs (Plimsoll queue mail")),
        "{:?}",
        dry.skipped_examples
    );
    let done = trim(&redis, &target, &apply()).await.unwrap();
    assert_eq!(done.keys, 5, "{done:?}");
    assert_eq!(done.skipped, 3);
    let after = dump_all(&server);
    for (key, dump) in &queue_keys {
        assert_eq!(after.get(key), Some(dump), "{key} was changed");
    }
    for name in names {
        let queue = Queue::with_defaults(redis.clone(), name).unwrap();
        assert_eq!(queue.counts().await.unwrap().waiting, 20, "{name}");
    }
    assert_eq!(
        server.keys().iter().filter(|k| k.contains("cart")).count(),
        0
    );
}

// The BullMQ trim counted the jobs to remove once, then took that many
// from the oldest end: when BullMQ removed old jobs itself meanwhile, the
// trim went on into jobs newer than --older-than.
#[tokio::test]
async fn a_trim_racing_bullmqs_own_removals_never_takes_jobs_newer_than_the_cutoff() {
    let server = RedisServer::start();
    let redis = Redis::connect_url(&server.url()).await.unwrap();
    let now = 1_700_000_000_000u64;
    let mut pipe = redis::pipe();
    // 400 completed jobs, finished one a second until about now: about
    // half of them are older than 200 s.
    for id in 1..=400u64 {
        layouts::bullmq_job(
            &mut pipe,
            "mail",
            id,
            BullState::Completed,
            now - 410_000 + id * 1000,
        );
    }
    run(&redis, &pipe).await.unwrap();
    let cutoff = (now - 200_000) as f64;
    let newer_before: usize = server
        .cmd(&["ZCOUNT", "bull:mail:completed", &cutoff.to_string(), "+inf"])
        .parse()
        .unwrap();
    assert!(newer_before > 150, "{newer_before}");
    let options = TrimOptions {
        apply: true,
        batch: 10,
        // Slow enough that the removal below happens mid-trim.
        budget: 100,
        clock: std::sync::Arc::new(plimsoll::ManualClock::new(now)),
        ..TrimOptions::default()
    };
    let target = TrimTarget::BullMq {
        prefix: "bull".into(),
        queue: "mail".into(),
        set: BullMqSet::Completed,
        selection: Selection {
            keep: None,
            older_than: Some(Duration::from_secs(200)),
        },
    };
    let library = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        // BullMQ removing its 100 oldest completed jobs meanwhile.
        let popped: Vec<String> = redis
            .query(redis::cmd("ZPOPMIN").arg("bull:mail:completed").arg(100))
            .await
            .unwrap();
        assert_eq!(popped.len(), 200, "member and score each");
    };
    let (done, ()) = tokio::join!(trim(&redis, &target, &options), library);
    let done = done.unwrap();
    // Every job newer than the cutoff is still listed, with its hash.
    let left: Vec<(String, f64)> = {
        let raw = server.cmd(&["ZRANGE", "bull:mail:completed", "0", "-1", "WITHSCORES"]);
        let parts: Vec<&str> = raw.lines().collect();
        parts
            .chunks(2)
            .map(|c| (c[0].to_string(), c[1].parse().unwrap()))
            .collect()
    };
    let newer = left.iter().filter(|(_, s)| *s >= cutoff).count();
    assert_eq!(
        newer, newer_before,
        "jobs newer than the cutoff removed; trim said {done:?}"
    );
    assert!(
        left.iter().all(|(_, s)| *s >= cutoff),
        "old jobs left: {left:?}"
    );
    for (id, _) in &left {
        assert_eq!(server.cmd(&["EXISTS", &format!("bull:mail:{id}")]), "1");
    }
}

// Sidekiq's retry set is ordered by next retry: trimming it "oldest first"
// by rank removed the jobs due soonest, whatever their age.
#[tokio::test]
async fn sidekiqs_retry_set_is_trimmed_by_each_jobs_first_failure_not_its_next_retry() {
    let server = RedisServer::start();
    let redis = Redis::connect_url(&server.url()).await.unwrap();
    let now_secs = 1_700_000_000u64;
    let mut pipe = redis::pipe();
    // 100 jobs: next retry in i minutes; job i first failed (100 - i) days
    // ago for even i, an hour ago for odd i. Age and retry order disagree.
    for i in 0..100u64 {
        let failed_at = if i % 2 == 0 {
            now_secs - (100 - i) * 86_400
        } else {
            now_secs - 3600
        };
        let job = format!(
            "{{\"class\":\"HardWorker\",\"args\":[{i}],\"queue\":\"default\",\"jid\":\"{i:024x}\",\"retry_count\":3,\"failed_at\":{failed_at},\"retried_at\":{now_secs}}}"
        );
        pipe.cmd("ZADD")
            .arg("retry")
            .arg(now_secs + i * 60)
            .arg(job)
            .ignore();
    }
    run(&redis, &pipe).await.unwrap();
    let options = TrimOptions {
        clock: std::sync::Arc::new(plimsoll::ManualClock::new(now_secs * 1000)),
        ..apply()
    };
    let target = |keep, older_than| TrimTarget::Sidekiq {
        namespace: None,
        set: SidekiqSet::Retry,
        selection: Selection { keep, older_than },
    };
    let dry = trim(
        &redis,
        &target(None, Some(Duration::from_secs(30 * 86_400))),
        &TrimOptions {
            apply: false,
            ..options.clone()
        },
    )
    .await
    .unwrap();
    // Even i with 100 - i > 30: i = 0, 2, …, 68: 35 jobs.
    assert_eq!(dry.jobs, 35);
    assert_eq!(
        server.cmd(&["ZCARD", "retry"]),
        "100",
        "a dry run removes nothing"
    );
    let done = trim(
        &redis,
        &target(None, Some(Duration::from_secs(30 * 86_400))),
        &options,
    )
    .await
    .unwrap();
    assert_eq!(done.jobs, 35);
    for member in server.cmd(&["ZRANGE", "retry", "0", "-1"]).lines() {
        let job: serde_json::Value = serde_json::from_str(member).unwrap();
        let failed_at = job["failed_at"].as_u64().unwrap();
        assert!(
            failed_at >= now_secs - 30 * 86_400,
            "an old job was kept: {member}"
        );
    }
    let err = trim(&redis, &target(Some(10), None), &options)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    assert!(err.to_string().contains("next retry"), "{err}");
}

/// RQ's `utcformat`: `2023-11-14T22:13:20.000000Z`.
fn rq_time(epoch_secs: u64) -> String {
    let t = std::time::UNIX_EPOCH + Duration::from_secs(epoch_secs);
    format!(
        "{}.000000Z",
        humantime::format_rfc3339_seconds(t)
            .to_string()
            .trim_end_matches('Z')
    )
}

// RQ results were named by the report and could not be trimmed.
#[tokio::test]
async fn an_rq_registry_is_trimmed_by_when_jobs_ended_and_requeued_or_queued_jobs_stay() {
    let server = RedisServer::start();
    let redis = Redis::connect_url(&server.url()).await.unwrap();
    let now_secs = 1_700_000_000u64;
    let mut pipe = redis::pipe();
    // 60 finished jobs kept forever (result_ttl=-1: scored +inf), ended one
    // a day until now; each with its result stream.
    for i in 0..60u64 {
        let id = uuid(300_000 + i);
        pipe.cmd("HSET")
            .arg(format!("rq:job:{id}"))
            .arg("status")
            .arg("finished")
            .arg("origin")
            .arg("default")
            .arg("ended_at")
            .arg(rq_time(now_secs - (60 - i) * 86_400))
            .arg("data")
            .arg(blob(i, 200))
            .ignore();
        pipe.cmd("ZADD")
            .arg("rq:finished:default")
            .arg("+inf")
            .arg(&id)
            .ignore();
        pipe.cmd("XADD")
            .arg(format!("rq:results:{id}"))
            .arg("*")
            .arg("type")
            .arg(1)
            .arg("return_value")
            .arg("gASVCAAAAAAAAABLKi4=")
            .ignore();
    }
    // Still listed as finished but requeued since (status queued).
    let requeued = uuid(300_000);
    pipe.cmd("HSET")
        .arg(format!("rq:job:{requeued}"))
        .arg("status")
        .arg("queued")
        .ignore();
    pipe.cmd("RPUSH")
        .arg("rq:queue:default")
        .arg(&requeued)
        .ignore();
    // Queued work, not in the registry.
    layouts::rq(&mut pipe, 10);
    run(&redis, &pipe).await.unwrap();
    let before = dump_all(&server);
    let options = TrimOptions {
        clock: std::sync::Arc::new(plimsoll::ManualClock::new(now_secs * 1000)),
        ..apply()
    };
    let target = |keep, older_than| TrimTarget::Rq {
        queue: "default".into(),
        registry: plimsoll::RqRegistry::Finished,
        selection: Selection { keep, older_than },
    };
    // Ended more than 30 days ago: i = 0..29, less the requeued one.
    let dry = trim(
        &redis,
        &target(None, Some(Duration::from_secs(30 * 86_400))),
        &TrimOptions {
            apply: false,
            ..options.clone()
        },
    )
    .await
    .unwrap();
    assert_eq!(dry.jobs, 29);
    assert_eq!(
        dry.skipped, 5,
        "layouts::rq's finished jobs have no ended_at"
    );
    assert_eq!(dump_all(&server), before, "a dry run changes nothing");
    let done = trim(
        &redis,
        &target(None, Some(Duration::from_secs(30 * 86_400))),
        &options,
    )
    .await
    .unwrap();
    assert_eq!(done.jobs, 29);
    assert_eq!(done.keys, 58, "each job's hash and result stream");
    let after = dump_all(&server);
    for (key, dump) in &before {
        let gone = (1..30u64).any(|i| {
            let id = uuid(300_000 + i);
            key == &format!("rq:job:{id}") || key == &format!("rq:results:{id}")
        });
        if gone {
            assert!(!after.contains_key(key), "{key} left");
        } else if key != "rq:finished:default" {
            assert_eq!(after.get(key), Some(dump), "{key} was touched");
        }
    }
    assert_eq!(server.cmd(&["ZCARD", "rq:finished:default"]), "36");
    assert_eq!(
        server.cmd(&["ZSCORE", "rq:finished:default", &requeued]),
        "inf"
    );
    // Keep the newest 5 of those left in the state.
    let done = trim(&redis, &target(Some(5), None), &options)
        .await
        .unwrap();
    assert_eq!(done.jobs, 25);
    assert_eq!(
        server.cmd(&["ZCARD", "rq:finished:default"]),
        "11",
        "5, the requeued one and 5 without ended_at"
    );
}

// Celery results were named by the memory report and nothing could trim
// them.
#[tokio::test]
async fn celery_results_of_finished_tasks_are_trimmed_by_date_done_and_pending_ones_stay() {
    let server = RedisServer::start();
    let redis = Redis::connect_url(&server.url()).await.unwrap();
    let now_secs = 1_700_000_000u64;
    let iso = |secs: u64| {
        humantime::format_rfc3339_micros(std::time::UNIX_EPOCH + Duration::from_secs(secs))
            .to_string()
            .replace('Z', "+00:00")
    };
    let mut pipe = redis::pipe();
    // 40 results kept forever (result_expires=None), finished one a day
    // until now; every fourth failed.
    for i in 0..40u64 {
        let status = if i % 4 == 0 { "FAILURE" } else { "SUCCESS" };
        pipe.cmd("SET")
            .arg(format!("celery-task-meta-{}", uuid(400_000 + i)))
            .arg(format!(
                "{{\"status\":\"{status}\",\"result\":{i},\"traceback\":null,\"children\":[],\"date_done\":\"{}\",\"task_id\":\"{}\"}}",
                iso(now_secs - (40 - i) * 86_400),
                uuid(400_000 + i)
            ))
            .ignore();
    }
    // A task still running, its entry written long ago.
    let running = format!("celery-task-meta-{}", uuid(499_999));
    pipe.cmd("SET")
        .arg(&running)
        .arg("{\"status\":\"STARTED\",\"result\":{\"pid\":42},\"date_done\":null}")
        .ignore();
    // Broker messages and the rest of Celery's keys.
    layouts::celery(&mut pipe, 10, 0);
    run(&redis, &pipe).await.unwrap();
    let before = dump_all(&server);
    let options = TrimOptions {
        clock: std::sync::Arc::new(plimsoll::ManualClock::new(now_secs * 1000)),
        ..apply()
    };
    let target = |keep, older_than| TrimTarget::CeleryResults {
        selection: Selection { keep, older_than },
    };
    let dry = trim(
        &redis,
        &target(None, Some(Duration::from_secs(20 * 86_400))),
        &TrimOptions {
            apply: false,
            ..options.clone()
        },
    )
    .await
    .unwrap();
    // Finished more than 20 days ago: i = 0..=19.
    assert_eq!(dry.keys, 20);
    assert_eq!(dry.skipped, 1, "the running task");
    assert_eq!(dump_all(&server), before);
    let done = trim(
        &redis,
        &target(None, Some(Duration::from_secs(20 * 86_400))),
        &options,
    )
    .await
    .unwrap();
    assert_eq!(done.keys, 20);
    let after = dump_all(&server);
    for (key, dump) in &before {
        let gone = (0..20u64).any(|i| key == &format!("celery-task-meta-{}", uuid(400_000 + i)));
        if gone {
            assert!(!after.contains_key(key), "{key} left");
        } else {
            assert_eq!(after.get(key), Some(dump), "{key} was touched");
        }
    }
    let done = trim(&redis, &target(Some(5), None), &options)
        .await
        .unwrap();
    assert_eq!(done.keys, 15);
    assert_eq!(server.cmd(&["EXISTS", &running]), "1");
    let left = server
        .keys()
        .iter()
        .filter(|k| k.starts_with("celery-task-meta-"))
        .count();
    assert_eq!(left, 6, "the 5 newest and the running task");
}
