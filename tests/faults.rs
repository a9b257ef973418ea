//! Faults made to the `plimsoll serve` binary itself and to its Redis while
//! it takes webhooks: `kill -9` of the server during intake and during
//! replay, `kill -9` of Redis (append-only, `appendfsync always`) during
//! intake. Each test counts the webhooks answered 202 against the jobs in
//! Redis: every one exactly once (with a delivery id or without: every
//! webhook has an identity), and none that was not answered more than once.
//!
//! `PLIMSOLL_FAULT_REPS` repeats each case (default 1, for CI).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use plimsoll::{JobState, Queue, Redis};
use plimsoll_test_support::RedisServer;
use serde_json::{Value, json};

const TOKEN: &str = "fault-test-token-0123456789";
const QUEUES: [&str; 2] = ["hooks.keyed", "hooks.anon"];

fn reps() -> usize {
    std::env::var("PLIMSOLL_FAULT_REPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running `plimsoll serve`, killed on drop if still running.
struct Served {
    child: Child,
    api: String,
}

impl Served {
    fn start(redis: &RedisServer, data: &Path) -> Self {
        let config = data.join("plimsoll.toml");
        std::fs::write(
            &config,
            format!(
                "tokens = [\"{TOKEN}\"]\n\
                 [hooks.keyed]\ndelivery_header = \"X-Delivery\"\n\
                 [hooks.anon]\ndelivery_header = \"\"\n"
            ),
        )
        .unwrap();
        let port = free_port();
        let mut child = Command::new(env!("CARGO_BIN_EXE_plimsoll"))
            .args(["serve", "--config", &config.display().to_string()])
            .args(["--redis", &redis.url()])
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--metrics-listen", ""])
            .args(["--data-dir", &data.join("data").display().to_string()])
            .env("PLIMSOLL_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let deadline = Instant::now() + Duration::from_secs(30);
        for line in lines.by_ref() {
            if line.unwrap().starts_with("Stop with") {
                break;
            }
            assert!(Instant::now() < deadline, "serve did not start");
        }
        std::thread::spawn(move || for _ in lines {});
        Self {
            child,
            api: format!("http://127.0.0.1:{port}"),
        }
    }

    fn kill_9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        self.kill_9();
    }
}

/// What senders saw: webhooks answered 202, and those sent without an
/// answer (cut off by a kill).
#[derive(Debug, Default)]
struct Sent {
    acknowledged: Vec<u64>,
    unanswered: Vec<u64>,
    refused: usize,
}

/// Sends webhooks from `tasks` tasks until `stop`, numbering them from
/// `next`; odd numbers go to the source without a delivery id.
fn send_until(
    api: String,
    tasks: usize,
    next: Arc<AtomicU64>,
    sent: Arc<Mutex<Sent>>,
    stop: Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    (0..tasks)
        .map(|_| {
            let (api, client, next, sent, stop) = (
                api.clone(),
                client.clone(),
                next.clone(),
                sent.clone(),
                stop.clone(),
            );
            tokio::spawn(async move {
                while !stop.load(Ordering::SeqCst) {
                    let n = next.fetch_add(1, Ordering::SeqCst);
                    let source = if n % 2 == 0 { "keyed" } else { "anon" };
                    let reply = client
                        .post(format!("{api}/hooks/{source}"))
                        .header("Content-Type", "application/json")
                        .header("X-Delivery", format!("d-{n}"))
                        .body(json!({"n": n, "pad": "p".repeat(200)}).to_string())
                        .send()
                        .await;
                    let mut sent = sent.lock().unwrap();
                    match reply {
                        Ok(r) if r.status() == 202 => sent.acknowledged.push(n),
                        Ok(_) => sent.refused += 1,
                        Err(_) => sent.unanswered.push(n),
                    }
                }
            })
        })
        .collect()
}

/// How many jobs carry each `n`, over both queues.
async fn jobs_by_n(redis_url: &str) -> BTreeMap<u64, usize> {
    let redis = Redis::connect_url(redis_url).await.unwrap();
    let mut counts = BTreeMap::new();
    for name in QUEUES {
        let queue = Queue::with_defaults(redis.clone(), name).unwrap();
        let mut offset = 0;
        loop {
            let page = queue.jobs(JobState::Waiting, offset, 1000).await.unwrap();
            if page.is_empty() {
                break;
            }
            offset += page.len();
            for job in page {
                let envelope: Value = serde_json::from_slice(&job.payload).unwrap();
                *counts
                    .entry(envelope["body"]["n"].as_u64().unwrap())
                    .or_insert(0) += 1;
            }
        }
    }
    counts
}

/// Waits until the server's spool is empty.
async fn drained(api: &str) {
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let spool: Option<Value> = match client
            .get(format!("{api}/v1/spool"))
            .bearer_auth(TOKEN)
            .send()
            .await
        {
            Ok(r) => r.json().await.ok(),
            Err(_) => None,
        };
        if spool.is_some_and(|s| s["records"] == 0) {
            return;
        }
        assert!(Instant::now() < deadline, "the spool did not drain");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn check(what: &str, sent: &Sent, counts: &BTreeMap<u64, usize>) {
    let lost: Vec<_> = sent
        .acknowledged
        .iter()
        .filter(|n| !counts.contains_key(n))
        .collect();
    let twice: Vec<_> = counts.iter().filter(|(_, c)| **c > 1).collect();
    let unanswered_kept = sent
        .unanswered
        .iter()
        .filter(|n| counts.contains_key(n))
        .count();
    let unknown: Vec<_> = counts
        .keys()
        .filter(|n| !sent.acknowledged.contains(n) && !sent.unanswered.contains(n))
        .collect();
    println!(
        "{what}: {} answered 202, {} refused (503), {} cut off unanswered ({unanswered_kept} of them enqueued); \
         {} jobs in Redis: {} lost, {} duplicated",
        sent.acknowledged.len(),
        sent.refused,
        sent.unanswered.len(),
        counts.values().sum::<usize>(),
        lost.len(),
        twice.len()
    );
    assert!(lost.is_empty(), "{what}: answered 202 but lost: {lost:?}");
    assert!(twice.is_empty(), "{what}: enqueued twice: {twice:?}");
    assert!(unknown.is_empty(), "{what}: never sent: {unknown:?}");
}

/// Waits until `sent` holds `n` more acknowledgements than `from`.
async fn acknowledged_past(sent: &Mutex<Sent>, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while sent.lock().unwrap().acknowledged.len() < n {
        assert!(Instant::now() < deadline, "webhooks are not being answered");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_redis_and_of_the_server_during_intake_loses_no_acknowledged_webhook() {
    for rep in 0..reps() {
        let mut redis = RedisServer::builder()
            .appendonly()
            .config("appendfsync", "always")
            .start();
        let data = tempfile::tempdir().unwrap();
        let mut served = Served::start(&redis, data.path());
        let sent = Arc::new(Mutex::new(Sent::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let senders = send_until(
            served.api.clone(),
            4,
            Arc::new(AtomicU64::new(0)),
            sent.clone(),
            stop.clone(),
        );
        // Into Redis, then Redis killed mid-intake (into the spool), then
        // the server killed mid-intake.
        acknowledged_past(&sent, 300).await;
        redis.kill();
        let at_redis_kill = sent.lock().unwrap().acknowledged.len();
        acknowledged_past(&sent, at_redis_kill + 300).await;
        served.kill_9();
        stop.store(true, Ordering::SeqCst);
        for sender in senders {
            sender.await.unwrap();
        }

        redis.restart();
        let served = Served::start(&redis, data.path());
        drained(&served.api).await;
        let counts = jobs_by_n(&redis.url()).await;
        let sent = sent.lock().unwrap();
        check(
            &format!("kill -9 of Redis, then of the server, during intake (rep {rep})"),
            &sent,
            &counts,
        );
        drop(served);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_the_server_during_replay_enqueues_each_webhook_once() {
    for rep in 0..reps() {
        let mut redis = RedisServer::builder()
            .appendonly()
            .config("appendfsync", "always")
            .start();
        let data = tempfile::tempdir().unwrap();
        let mut served = Served::start(&redis, data.path());
        redis.kill();
        let sent = Arc::new(Mutex::new(Sent::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let senders = send_until(
            served.api.clone(),
            8,
            Arc::new(AtomicU64::new(0)),
            sent.clone(),
            stop.clone(),
        );
        acknowledged_past(&sent, 2000).await;
        stop.store(true, Ordering::SeqCst);
        for sender in senders {
            sender.await.unwrap();
        }
        let spooled = sent.lock().unwrap().acknowledged.len();

        // Redis back: the server replays; it is killed once about a quarter
        // of the records are in.
        redis.restart();
        let keys: Vec<String> = QUEUES
            .iter()
            .map(|q| format!("plimsoll:{{{q}}}:jobs"))
            .collect();
        let deadline = Instant::now() + Duration::from_secs(30);
        let landed = loop {
            let landed: u64 = keys
                .iter()
                .map(|k| redis.command(&["HLEN", k]).unwrap().parse::<u64>().unwrap())
                .sum();
            if landed >= spooled as u64 / 4 {
                break landed;
            }
            assert!(Instant::now() < deadline, "replay did not start");
            std::thread::sleep(Duration::from_millis(1));
        };
        served.kill_9();
        let landed_at_kill: u64 = keys
            .iter()
            .map(|k| redis.command(&["HLEN", k]).unwrap().parse::<u64>().unwrap())
            .sum();

        let served = Served::start(&redis, data.path());
        drained(&served.api).await;
        let counts = jobs_by_n(&redis.url()).await;
        check(
            &format!(
                "kill -9 of the server during replay (rep {rep}: {spooled} spooled, \
                 {landed}..{landed_at_kill} in Redis when killed)"
            ),
            &sent.lock().unwrap(),
            &counts,
        );
        drop(served);
    }
}
