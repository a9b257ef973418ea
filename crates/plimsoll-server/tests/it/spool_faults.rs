//! The spool under fault: a full disk mid-write, a record Redis refuses for
//! good, replays that fail part-way, a Redis slower than the intake's
//! budget, and a server started while Redis is down. Each test counts what
//! was answered 2xx against what is in Redis (and on disk).
//!
//! `PLIMSOLL_FAULT_REPS` repeats the fault loops (default 1, for CI).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use plimsoll::{JobState, Redis, RedisConfig};
use plimsoll_server::config::{Overrides, ServerConfig};
use plimsoll_server::intake::spool::WriteFault;
use plimsoll_server::{app, test_state};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::support::{RedisServer, TOKEN, TestServer, error_code, eventually};

const HOOKS: &str = r#"
[hooks.keyed]
delivery_header = "X-Delivery"

[hooks.anon]
delivery_header = ""
"#;

fn reps() -> usize {
    std::env::var("PLIMSOLL_FAULT_REPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1)
}

/// `len` characters that do not compress (job records are compressed, and a
/// test that fills Redis must not be defeated by zstd).
fn noise(n: u64, len: usize) -> String {
    let mut x = n.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            char::from(b'a' + (x % 26) as u8)
        })
        .collect()
}

/// A webhook to `source` whose body says `n` (padded to `pad` bytes).
fn hook(source: &str, n: u64, pad: usize) -> Request<Body> {
    let mut request = Request::post(format!("/hooks/{source}"))
        .header("Content-Type", "application/json")
        .header("X-Delivery", format!("d-{n}"));
    if source == "anon" {
        request = request.header("X-Unrelated", "1");
    }
    request
        .body(Body::from(
            json!({"n": n, "pad": noise(n, pad)}).to_string(),
        ))
        .unwrap()
}

/// A server over `redis_server` whose spool is in `spool_dir`, its Redis
/// handle made lazily (so that Redis may be down).
async fn server_with_spool(redis_server: RedisServer, toml: &str, spool_dir: &Path) -> TestServer {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("plimsoll.toml");
    std::fs::write(&path, toml).unwrap();
    let config = ServerConfig::load(
        Some(&path),
        &Overrides {
            tokens: vec![TOKEN.into()],
            data_dir: Some(dir.path().join("data").display().to_string()),
            redis_url: Some(redis_server.url()),
            ..Overrides::default()
        },
    )
    .unwrap();
    let redis = Redis::connect_lazy(RedisConfig::new(&redis_server.url()).unwrap()).unwrap();
    // A Redis that is up is connected to before the test goes on.
    let _ = tokio::time::timeout(Duration::from_secs(2), redis.connected()).await;
    let state = test_state(config, redis, TOKEN, spool_dir);
    let router = app(state.clone());
    TestServer {
        redis_server,
        state,
        router,
        _dir: dir,
    }
}

/// The same server "restarted": its spool closed and opened again, a new
/// state over the same Redis.
async fn restart(s: TestServer, toml: &str, spool_dir: &Path) -> TestServer {
    s.state.spool().close();
    let TestServer { redis_server, .. } = s;
    server_with_spool(redis_server, toml, spool_dir).await
}

/// How many jobs of `queue` (waiting) carry each `n`.
async fn jobs_by_n(s: &TestServer, queue: &str) -> BTreeMap<u64, usize> {
    let queue = s.state.queue(queue).unwrap();
    let mut counts = BTreeMap::new();
    let mut offset = 0;
    loop {
        let page = queue.jobs(JobState::Waiting, offset, 1000).await.unwrap();
        if page.is_empty() {
            return counts;
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

/// Asserts each of `acknowledged` is enqueued exactly once, and nothing
/// else is there.
fn assert_exactly_once(what: &str, acknowledged: &[u64], counts: &BTreeMap<u64, usize>) {
    let twice: Vec<_> = counts.iter().filter(|(_, c)| **c > 1).collect();
    let missing: Vec<_> = acknowledged
        .iter()
        .filter(|n| !counts.contains_key(n))
        .collect();
    let extra: Vec<_> = counts
        .keys()
        .filter(|n| !acknowledged.contains(n))
        .collect();
    println!(
        "{what}: {} acknowledged, {} jobs in Redis ({} distinct), {} missing, {} duplicated, {} unacknowledged",
        acknowledged.len(),
        counts.values().sum::<usize>(),
        counts.len(),
        missing.len(),
        twice.len(),
        extra.len()
    );
    assert!(
        missing.is_empty(),
        "{what}: acknowledged but lost: {missing:?}"
    );
    assert!(
        twice.is_empty(),
        "{what}: enqueued more than once: {twice:?}"
    );
    assert!(
        extra.is_empty(),
        "{what}: enqueued but never answered 2xx: {extra:?}"
    );
}

fn start_replayer(s: &TestServer) -> (CancellationToken, tokio::task::JoinHandle<()>) {
    let stop = CancellationToken::new();
    let task = plimsoll::service::spawn(
        plimsoll_server::intake::replay::Replayer::new(s.state.clone()),
        stop.clone(),
    );
    (stop, task)
}

async fn drained(s: &TestServer) {
    eventually(Duration::from_secs(30), "the spool to drain", || async {
        s.state.spool().is_empty()
    })
    .await;
}

/// A tmpfs of its own, unmounted on drop.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    /// Mounts one of `size` (e.g. `3m`), or says why it cannot.
    fn mount(size: &str) -> Result<Self, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
        }
        Ok(Self { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// Fills the file system of `dir` until fewer than `leave` bytes are free.
fn fill(dir: &Path, leave: u64) -> PathBuf {
    use std::io::Write;
    let path = dir.join("filler");
    let mut file = std::fs::File::create(&path).unwrap();
    let chunk = vec![0u8; 16 << 10];
    loop {
        let free = fs_free(dir);
        if free < leave {
            return path;
        }
        let n = ((free - leave) as usize).clamp(1, chunk.len());
        if file.write_all(&chunk[..n]).is_err() {
            return path;
        }
        file.sync_all().unwrap();
    }
}

fn fs_free(dir: &Path) -> u64 {
    let out = Command::new("df")
        .args(["-B1", "--output=avail"])
        .arg(dir)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .nth(1)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// The case as reported: spool folder on a 3 MiB tmpfs, Redis stopped, a
/// 450 KB webhook answered 503 (ENOSPC), space freed, 5 webhooks answered
/// 202 — 0 of them reached Redis after it came back, 0 after a restart: the
/// 5 were appended after the torn frame, replay stopped there and the
/// restart cut the file at it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_refused_for_a_full_disk_never_hides_the_ones_after_it() {
    for restart_before_redis_returns in [false, true] {
        let tmpfs = Tmpfs::mount("3m");
        let (spool_root, _guard, injected) = match tmpfs {
            Ok(tmpfs) => (tmpfs.path().to_path_buf(), Some(tmpfs), false),
            Err(why) => {
                println!(
                    "mounting a 3 MiB tmpfs was refused ({why}); injecting the torn write through the spool's test hook instead"
                );
                let dir = tempfile::tempdir().unwrap().keep();
                (dir, None, true)
            }
        };
        let spool_dir = spool_root.join("spool");
        let redis_server = RedisServer::builder()
            .appendonly()
            .config("appendfsync", "always")
            .start();
        let mut s = server_with_spool(redis_server, HOOKS, &spool_dir).await;
        s.redis_server.kill();

        let filler = if injected {
            s.state
                .spool()
                .inject_write_fault(WriteFault::TornWrite { after: 200_000 });
            None
        } else {
            Some(fill(&spool_root, 200 << 10))
        };
        let big = s.send(hook("anon", 1000, 450_000)).await;
        assert_eq!(big.status, StatusCode::SERVICE_UNAVAILABLE, "{}", big.text);
        assert_eq!(error_code(&big), "spool_unavailable");
        if let Some(filler) = filler {
            std::fs::remove_file(filler).unwrap();
        }

        let mut acknowledged = Vec::new();
        for n in 1..=5 {
            let source = if n % 2 == 0 { "keyed" } else { "anon" };
            let reply = s.send(hook(source, n, 100)).await;
            assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.text);
            assert_eq!(reply.json["spooled"], true);
            acknowledged.push(n);
        }
        if restart_before_redis_returns {
            s = restart(s, HOOKS, &spool_dir).await;
            assert_eq!(
                s.state.spool().stats().records,
                5,
                "the restart keeps all five"
            );
        }
        s.redis_server.restart();
        let (stop, replayer) = start_replayer(&s);
        drained(&s).await;
        let mut counts = jobs_by_n(&s, "hooks.keyed").await;
        for (n, c) in jobs_by_n(&s, "hooks.anon").await {
            *counts.entry(n).or_insert(0) += c;
        }
        assert_exactly_once(
            &format!(
                "full disk (restart before Redis returns: {restart_before_redis_returns}, injected: {injected})"
            ),
            &acknowledged,
            &counts,
        );
        stop.cancel();
        replayer.await.unwrap();

        // And a later restart replays nothing again.
        let s = restart(s, HOOKS, &spool_dir).await;
        assert!(s.state.spool().is_empty());
        s.state.spool().close();
    }
}

/// With Redis refusing writes, a 600 KB webhook (under the hook's 1 MiB
/// `max_body`, over the queue's 512 KiB payload limit) was answered 202 and
/// spooled; on replay it failed `PayloadTooLarge` forever while everything
/// behind it piled up, and `/readyz` said ready.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_its_queue_would_refuse_is_refused_before_it_is_answered() {
    let toml = r#"
[queues."hooks.big"]
payload_limit = "1MiB"

[hooks.big]
max_body = "1000KiB"
delivery_header = ""
"#;
    let spool = tempfile::tempdir().unwrap();
    let mut s = server_with_spool(RedisServer::start(), toml, spool.path()).await;
    s.redis_server.kill();
    // Binary: in the envelope it grows by a third (base64), past 1 MiB.
    let binary = Request::post("/hooks/big")
        .header("Content-Type", "application/octet-stream")
        .body(Body::from(vec![0xffu8; 900_000]))
        .unwrap();
    let reply = s.send(binary).await;
    assert_eq!(
        reply.status,
        StatusCode::PAYLOAD_TOO_LARGE,
        "{}",
        reply.text
    );
    assert_eq!(error_code(&reply), "payload_too_large");
    assert!(reply.text.contains("hooks.big"), "{}", reply.text);
    assert_eq!(s.state.spool().stats().records, 0, "nothing was kept");
    // The same size as JSON fits, and is kept.
    let json = Request::post("/hooks/big")
        .header("Content-Type", "application/json")
        .body(Body::from(
            json!({"n": 1, "pad": "p".repeat(900_000)}).to_string(),
        ))
        .unwrap();
    assert_eq!(s.send(json).await.status, StatusCode::ACCEPTED);
    assert_eq!(s.state.spool().stats().records, 1);
}

/// A record that can never be enqueued (its queue's payload limit was
/// lowered while it waited in the spool) is quarantined, visible, and the
/// records behind it replay; after the limit is raised, a retry enqueues it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_redis_refuses_for_good_is_quarantined_and_the_rest_replay() {
    let roomy =
        "[queues.\"hooks.anon\"]\npayload_limit = \"2MiB\"\n[hooks.anon]\ndelivery_header = \"\"\n";
    let strict = "[hooks.anon]\ndelivery_header = \"\"\n";
    let spool_dir = tempfile::tempdir().unwrap();
    let mut s = server_with_spool(RedisServer::start(), roomy, spool_dir.path()).await;
    s.redis_server.kill();
    let mut acknowledged = Vec::new();
    for n in 0..20 {
        let pad = if n == 5 { 600_000 } else { 100 };
        let reply = s.send(hook("anon", n, pad)).await;
        assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.text);
        acknowledged.push(n);
    }
    // Restarted with the default 512 KiB limit, Redis back.
    s.redis_server.restart();
    let s = restart(s, strict, spool_dir.path()).await;
    let (stop, replayer) = start_replayer(&s);
    drained(&s).await;
    let counts = jobs_by_n(&s, "hooks.anon").await;
    let replayed: Vec<u64> = acknowledged.iter().copied().filter(|n| *n != 5).collect();
    assert_exactly_once("poison record, the others", &replayed, &counts);

    let listed = s.call("GET", "/v1/spool/quarantine", None).await;
    assert_eq!(listed.status, StatusCode::OK, "{}", listed.text);
    assert_eq!(listed.json["records"], 1);
    let entry = &listed.json["webhooks"][0];
    assert_eq!(entry["queue"], "hooks.anon");
    assert!(
        entry["reason"]
            .as_str()
            .unwrap()
            .contains("payload too large"),
        "{entry}"
    );
    assert!(entry["identity"].as_str().unwrap().starts_with("plim-"));
    let ready = s
        .send(Request::get("/readyz").body(Body::empty()).unwrap())
        .await;
    assert_eq!(ready.status, StatusCode::OK);
    assert!(
        ready.json["degraded"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d.as_str().unwrap().starts_with("spool quarantine: 1 ")),
        "{}",
        ready.text
    );
    let alerts = s.call("GET", "/v1/guard/alerts", None).await;
    assert!(
        alerts
            .json
            .as_array()
            .unwrap()
            .iter()
            .any(|a| { a["kind"]["type"] == "spool_quarantined" && a["kind"]["records"] == 1 }),
        "raised through the guard: {}",
        alerts.text
    );
    let metrics = plimsoll_server::metrics_text(&s.state);
    assert!(
        metrics.contains("plimsoll_spool_quarantined_total 1"),
        "{metrics}"
    );
    let page = s
        .send(
            Request::get("/")
                .header("Cookie", format!("plimsoll_token={TOKEN}"))
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(
        page.text.contains("1 webhooks in quarantine"),
        "{}",
        page.text
    );
    stop.cancel();
    replayer.await.unwrap();

    // The operator raises the limit again and sends it back.
    let s = restart(s, roomy, spool_dir.path()).await;
    let (stop, replayer) = start_replayer(&s);
    let retried = s.call("POST", "/v1/spool/quarantine/retry", None).await;
    assert_eq!(retried.json["count"], 1, "{}", retried.text);
    drained(&s).await;
    assert_exactly_once(
        "poison record, after the retry",
        &acknowledged,
        &jobs_by_n(&s, "hooks.anon").await,
    );
    assert_eq!(s.state.spool().quarantine().stats().records, 0);
    stop.cancel();
    replayer.await.unwrap();
}

/// A failed cursor commit made the replayer hand the same batch to Redis
/// again and again: the spool never drained.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_cursor_commit_does_not_replay_the_same_batch_again() {
    let spool_dir = tempfile::tempdir().unwrap();
    let mut s = server_with_spool(RedisServer::start(), HOOKS, spool_dir.path()).await;
    s.redis_server.kill();
    let acknowledged: Vec<u64> = (0..300).collect();
    for &n in &acknowledged {
        assert_eq!(
            s.send(hook("anon", n, 10)).await.status,
            StatusCode::ACCEPTED
        );
    }
    // Where the new cursor is written is a folder: every commit fails.
    std::fs::create_dir(spool_dir.path().join("cursor.tmp")).unwrap();
    s.redis_server.restart();
    let (stop, replayer) = start_replayer(&s);
    drained(&s).await;
    let calls = |s: &TestServer| {
        s.redis_server.info("commandstats")["cmdstat_evalsha"]
            .split(',')
            .next()
            .unwrap()
            .to_string()
    };
    let before = calls(&s);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(calls(&s), before, "no replay after the spool drained");
    assert_exactly_once(
        "failed cursor commit",
        &acknowledged,
        &jobs_by_n(&s, "hooks.anon").await,
    );
    assert_eq!(s.state.spool().stats().replayed, 300);
    stop.cancel();
    replayer.await.unwrap();
    // A restart replays from the old cursor; Redis drops what it has.
    std::fs::remove_dir(spool_dir.path().join("cursor.tmp")).unwrap();
    let s = restart(s, HOOKS, spool_dir.path()).await;
    let (stop, replayer) = start_replayer(&s);
    drained(&s).await;
    assert_exactly_once(
        "failed cursor commit, after a restart",
        &acknowledged,
        &jobs_by_n(&s, "hooks.anon").await,
    );
    stop.cancel();
    replayer.await.unwrap();
}

/// Redis fills up in the middle of a replay: some batches land, the rest
/// are refused; once there is room, the rest land and none twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_that_redis_fills_up_part_way_enqueues_each_webhook_once() {
    for rep in 0..reps() {
        let spool_dir = tempfile::tempdir().unwrap();
        let redis_server = RedisServer::builder().maxmemory(64 << 20).start();
        let mut s = server_with_spool(redis_server, HOOKS, spool_dir.path()).await;
        s.redis_server.kill();
        let acknowledged: Vec<u64> = (0..3000).collect();
        for &n in &acknowledged {
            let source = if n % 3 == 0 { "keyed" } else { "anon" };
            assert_eq!(
                s.send(hook(source, n, 2000)).await.status,
                StatusCode::ACCEPTED
            );
        }
        s.redis_server.restart();
        // Room for roughly a third of them.
        let used = s.redis_server.used_memory();
        s.redis_server.cmd(&[
            "CONFIG",
            "SET",
            "maxmemory",
            &(used + (3 << 20)).to_string(),
        ]);
        let (stop, replayer) = start_replayer(&s);
        eventually(
            Duration::from_secs(20),
            "some batches to land and Redis to fill up",
            || async {
                s.state.spool().stats().replayed > 0
                    && s.redis_server
                        .info("errorstats")
                        .contains_key("errorstat_OOM")
            },
        )
        .await;
        let landed = s.state.spool().stats().replayed;
        assert!(
            landed > 0 && landed < 3000,
            "some but not all replayed: {landed}"
        );
        s.redis_server.cmd(&["CONFIG", "SET", "maxmemory", "0"]);
        drained(&s).await;
        let mut counts = jobs_by_n(&s, "hooks.keyed").await;
        for (n, c) in jobs_by_n(&s, "hooks.anon").await {
            *counts.entry(n).or_insert(0) += c;
        }
        assert_exactly_once(
            &format!("Redis full mid-replay (rep {rep}, {landed} landed before)"),
            &acknowledged,
            &counts,
        );
        stop.cancel();
        replayer.await.unwrap();
    }
}

/// The intake waits 500 ms for Redis, then spools: a Redis that answered
/// later enqueued the webhook too, and the replay of the spooled copy made
/// it two jobs (for webhooks without a delivery id).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_slower_than_the_intake_budget_yields_one_job_not_two() {
    for rep in 0..reps() {
        let spool_dir = tempfile::tempdir().unwrap();
        let s = server_with_spool(RedisServer::start(), HOOKS, spool_dir.path()).await;
        // Warm: the queue registered, the script loaded.
        assert_eq!(s.send(hook("anon", 0, 10)).await.json["spooled"], false);
        s.redis_server.freeze();
        let sends: Vec<_> = (1..=5)
            .map(|n| {
                let router = s.router.clone();
                tokio::spawn(async move {
                    use tower::ServiceExt;
                    router.oneshot(hook("anon", n, 10)).await.unwrap().status()
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(700)).await;
        s.redis_server.thaw();
        for send in sends {
            assert_eq!(send.await.unwrap(), StatusCode::ACCEPTED);
        }
        let spooled = s.state.spool().stats().appended;
        assert!(spooled >= 1, "the frozen Redis sent webhooks to the spool");
        let (stop, replayer) = start_replayer(&s);
        drained(&s).await;
        assert_exactly_once(
            &format!("Redis frozen 700 ms (rep {rep}, {spooled} spooled)"),
            &(0..=5).collect::<Vec<_>>(),
            &jobs_by_n(&s, "hooks.anon").await,
        );
        stop.cancel();
        replayer.await.unwrap();
    }
}

/// A running `plimsoll_server::run`, stopped on drop.
struct Running {
    api: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Result<(), plimsoll_server::ServeError>>>,
}

impl Running {
    async fn start(toml: &str, data: &Path, redis_url: &str) -> Result<Self, String> {
        let config_path = data.join("plimsoll.toml");
        std::fs::write(&config_path, toml).unwrap();
        let config = ServerConfig::load(
            Some(&config_path),
            &Overrides {
                tokens: vec![TOKEN.into()],
                data_dir: Some(data.join("data").display().to_string()),
                redis_url: Some(redis_url.to_string()),
                listen: Some("127.0.0.1:0".into()),
                metrics_listen: Some(String::new()),
            },
        )
        .unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (started_tx, started) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(plimsoll_server::run(
            config,
            async move {
                let _ = stopped.await;
            },
            move |s| {
                let _ = started_tx.send(s.api);
            },
        ));
        match started.await {
            Ok(addr) => Ok(Self {
                api: format!("http://{addr}"),
                stop: Some(stop),
                task: Some(task),
            }),
            Err(_) => Err(task.await.unwrap().unwrap_err().to_string()),
        }
    }

    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.unwrap().unwrap();
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// `plimsoll serve` exited after ~9.5 s when its configured Redis did not
/// answer: a deploy during a Redis outage took no webhooks at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_starts_while_redis_is_down_and_catches_up_when_it_answers() {
    let mut redis_server = RedisServer::builder().appendonly().start();
    redis_server.kill();
    let data = tempfile::tempdir().unwrap();
    let server = Running::start(HOOKS, data.path(), &redis_server.url())
        .await
        .unwrap();
    let client = reqwest::Client::new();
    let post = |source: &'static str, n: u64| {
        client
            .post(format!("{}/hooks/{source}", server.api))
            .header("Content-Type", "application/json")
            .header("X-Delivery", format!("d-{n}"))
            .body(json!({"n": n}).to_string())
            .send()
    };
    let mut acknowledged = Vec::new();
    for n in 0..10 {
        let reply = post(if n % 2 == 0 { "keyed" } else { "anon" }, n)
            .await
            .unwrap();
        assert_eq!(reply.status(), 202);
        let body: Value = reply.json().await.unwrap();
        assert_eq!(body["spooled"], true);
        acknowledged.push(n);
    }
    let ready = client
        .get(format!("{}/readyz", server.api))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200, "webhooks are taken: ready, degraded");
    let ready: Value = ready.json().await.unwrap();
    assert!(
        ready["degraded"][0]
            .as_str()
            .unwrap()
            .starts_with("redis: not reached since the server started"),
        "{ready}"
    );
    let api = client
        .get(format!("{}/v1/queues", server.api))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(api.status(), 503);

    redis_server.restart();
    let url = redis_server.url();
    let redis = Redis::connect_url(&url).await.unwrap();
    let counts = || async {
        let mut counts = BTreeMap::new();
        for queue in ["hooks.keyed", "hooks.anon"] {
            let queue = plimsoll::Queue::with_defaults(redis.clone(), queue).unwrap();
            for job in queue.jobs(JobState::Waiting, 0, 1000).await.unwrap() {
                let envelope: Value = serde_json::from_slice(&job.payload).unwrap();
                *counts
                    .entry(envelope["body"]["n"].as_u64().unwrap())
                    .or_insert(0usize) += 1;
            }
        }
        counts
    };
    eventually(Duration::from_secs(20), "the spooled webhooks", || async {
        counts().await.values().sum::<usize>() >= acknowledged.len()
    })
    .await;
    let queue = client
        .get(format!("{}/v1/queues/hooks.anon", server.api))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(queue.status(), 200, "the API joined");
    // Once more in case a replay was still on its way.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_exactly_once("started without Redis", &acknowledged, &counts().await);
    let reply = post("anon", 10).await.unwrap();
    assert_eq!(reply.status(), 202);
    server.stop().await;
}

/// Two servers on one data folder would share one spool.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_server_on_the_same_data_folder_refuses_to_start() {
    let redis_server = RedisServer::start();
    let data = tempfile::tempdir().unwrap();
    let first = Running::start(HOOKS, data.path(), &redis_server.url())
        .await
        .unwrap();
    let err = Running::start(HOOKS, data.path(), &redis_server.url())
        .await
        .err()
        .expect("the second one refuses");
    assert!(err.contains("is in use by another plimsoll serve"), "{err}");
    assert!(
        err.contains(&data.path().join("data").display().to_string()),
        "{err}"
    );
    assert!(
        err.contains(&format!("pid {}", std::process::id())),
        "{err}"
    );
    first.stop().await;
    // Free again once the first one stopped.
    Running::start(HOOKS, data.path(), &redis_server.url())
        .await
        .unwrap()
        .stop()
        .await;
}

/// Redis reaches `maxmemory` while webhooks come in: those it refuses go to
/// the spool, and once there is room every one is enqueued, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_that_fills_up_during_intake_loses_no_webhook() {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::{Arc, Mutex};
    for rep in 0..reps() {
        let spool_dir = tempfile::tempdir().unwrap();
        let redis_server = RedisServer::builder().maxmemory(16 << 20).start();
        let s = server_with_spool(redis_server, HOOKS, spool_dir.path()).await;
        let (stop_replay, replayer) = start_replayer(&s);
        let acknowledged = Arc::new(Mutex::new(Vec::new()));
        let spooled = Arc::new(AtomicU64::new(0));
        let (next, stop) = (
            Arc::new(AtomicU64::new(0)),
            Arc::new(AtomicBool::new(false)),
        );
        let senders: Vec<_> = (0..4)
            .map(|_| {
                let (router, acknowledged, spooled, next, stop) = (
                    s.router.clone(),
                    acknowledged.clone(),
                    spooled.clone(),
                    next.clone(),
                    stop.clone(),
                );
                tokio::spawn(async move {
                    use http_body_util::BodyExt;
                    use tower::ServiceExt;
                    while !stop.load(Ordering::SeqCst) {
                        let n = next.fetch_add(1, Ordering::SeqCst);
                        let source = if n % 2 == 0 { "keyed" } else { "anon" };
                        let response = router.clone().oneshot(hook(source, n, 500)).await.unwrap();
                        let status = response.status();
                        let body = response.into_body().collect().await.unwrap().to_bytes();
                        assert_eq!(status, StatusCode::ACCEPTED, "{body:?}");
                        let reply: Value = serde_json::from_slice(&body).unwrap();
                        if reply["spooled"] == true {
                            spooled.fetch_add(1, Ordering::SeqCst);
                        }
                        acknowledged.lock().unwrap().push((n, reply));
                    }
                })
            })
            .collect();
        eventually(Duration::from_secs(20), "webhooks into Redis", || async {
            acknowledged.lock().unwrap().len() >= 200
        })
        .await;
        // Fill Redis with something else until it refuses writes.
        tokio::task::block_in_place(|| {
            let mut i = 0;
            while s
                .redis_server
                .command(&["SET", &format!("filler:{i}"), &"x".repeat(10_000)])
                .is_ok()
            {
                i += 1;
            }
        });
        eventually(
            Duration::from_secs(20),
            "webhooks into the spool",
            || async { spooled.load(Ordering::SeqCst) >= 200 },
        )
        .await;
        stop.store(true, Ordering::SeqCst);
        for sender in senders {
            sender.await.unwrap();
        }
        s.redis_server.cmd(&["CONFIG", "SET", "maxmemory", "0"]);
        drained(&s).await;
        let mut counts = jobs_by_n(&s, "hooks.keyed").await;
        for (n, c) in jobs_by_n(&s, "hooks.anon").await {
            *counts.entry(n).or_insert(0) += c;
        }
        let answers = acknowledged.lock().unwrap().clone();
        // What each lost webhook was told, so that a failure says which
        // path lost it (a direct enqueue with its job id, or the spool).
        for (n, reply) in &answers {
            if !counts.contains_key(n) {
                println!("lost webhook {n} had been answered {reply}");
                if n % 2 == 0 {
                    // Its delivery id's idempotency key, and the job it names.
                    let queue = s.state.queue("hooks.keyed").unwrap();
                    let idem = queue.keys().idempotency(&format!("d-{n}"));
                    let id = s.redis_server.cmd(&["GET", &idem]);
                    let record = s.redis_server.cmd(&["HEXISTS", queue.keys().jobs(), &id]);
                    let job = queue.job(plimsoll::JobId(id.parse().unwrap_or(0))).await;
                    println!(
                        "  {idem} -> {id:?}; record there: {record}; job: {:?}",
                        job.map(|j| j.map(|j| j.state))
                    );
                }
            }
        }
        for view in s.state.spool().quarantine().list(0, 100) {
            println!("quarantined: {view:?}");
        }
        let acknowledged: Vec<u64> = answers.iter().map(|(n, _)| *n).collect();
        assert_exactly_once(
            &format!(
                "Redis out of memory during intake (rep {rep}, {} spooled)",
                spooled.load(Ordering::SeqCst)
            ),
            &acknowledged,
            &counts,
        );
        stop_replay.cancel();
        replayer.await.unwrap();
    }
}

/// Starting without Redis must not hide a Redis that answers and refuses
/// the server (a wrong password): that still fails the start, saying why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_that_refuses_the_server_fails_the_start_instead_of_waiting() {
    let redis_server = RedisServer::start();
    redis_server.cmd(&["CONFIG", "SET", "requirepass", "not-the-servers-password"]);
    let data = tempfile::tempdir().unwrap();
    let err = Running::start(HOOKS, data.path(), &redis_server.url())
        .await
        .err()
        .expect("the start fails");
    assert!(err.contains("NOAUTH") || err.contains("auth"), "{err}");
}

/// With `durability = "replicas:…"` a webhook that reached the primary but
/// not its replica was refused at the intake (a failover could lose it, and
/// the spool was not used), and a spooled one that replay wrote to the
/// primary alone was committed out of the spool: answered 202, held only by
/// a primary whose failover would lose it. Now both wait in the spool
/// (fsync'd, so a 202 means kept) until the replica confirms.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_the_replicas_did_not_confirm_stay_in_the_spool_until_they_do() {
    let plimsoll_test_support::RedisPair { primary, replica } =
        plimsoll_test_support::RedisPair::start();
    let primary_port = primary.port().to_string();
    let toml = format!("[redis]\ndurability = \"replicas:1:200ms\"\n{HOOKS}");
    let spool_dir = tempfile::tempdir().unwrap();
    let s = server_with_spool(primary, &toml, spool_dir.path()).await;
    // While the replica follows. (The first enqueue connects, loads the
    // scripts and opens the connection that waits for replicas, which can
    // take longer than the intake's budget: then it is spooled too.)
    let warm = s.send(hook("keyed", 0, 10)).await;
    assert_eq!(warm.status, StatusCode::ACCEPTED, "{:?}", warm.json);
    let warm_spooled = u64::from(warm.json["spooled"] == true);

    // The replica stops following: nothing written from now on is confirmed.
    replica.cmd(&["REPLICAOF", "NO", "ONE"]);
    let mut acknowledged = vec![0];
    for n in 1..=6 {
        let source = if n <= 3 { "keyed" } else { "anon" };
        let reply = s.send(hook(source, n, 10)).await;
        assert_eq!(
            reply.status,
            StatusCode::ACCEPTED,
            "webhook {n}: {:?}",
            reply.json
        );
        assert_eq!(reply.json["spooled"], true, "webhook {n}: {:?}", reply.json);
        acknowledged.push(n);
    }
    let (stop, replayer) = start_replayer(&s);
    // Replay writes them to the primary, which cannot get them confirmed:
    // they stay in the spool.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        s.state.spool().stats().records,
        6 + warm_spooled,
        "records replayed to the primary alone left the spool"
    );

    // The replica follows again; replay gets them confirmed and the spool
    // drains, each webhook enqueued once.
    replica.cmd(&["REPLICAOF", "127.0.0.1", &primary_port]);
    drained(&s).await;
    stop.cancel();
    replayer.await.unwrap();
    let mut counts = jobs_by_n(&s, "hooks.keyed").await;
    counts.extend(jobs_by_n(&s, "hooks.anon").await);
    assert_exactly_once("replicas detached, then back", &acknowledged, &counts);
    // And the replica holds them all.
    let on_replica: u64 = ["hooks.keyed", "hooks.anon"]
        .iter()
        .map(|q| {
            replica
                .cmd(&["HLEN", &format!("plimsoll:{{{q}}}:jobs")])
                .parse::<u64>()
                .unwrap()
        })
        .sum();
    assert_eq!(on_replica, 7);
}

/// `durability = "replicas-aof"` on a Redis older than 7.2 (no `WAITAOF`)
/// started, and then every enqueue failed and every webhook to such a queue
/// was answered 400: refused at start now, naming the setting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_durability_this_redis_cannot_give_fails_the_start_naming_the_setting() {
    let redis_server = RedisServer::start();
    let version = redis_server.info("server")["redis_version"].clone();
    let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap());
    let has_waitaof = (parts.next().unwrap(), parts.next().unwrap()) >= (7, 2);
    let toml = format!("[queues.ledger]\ndurability = \"replicas-aof:1:1s\"\n{HOOKS}");
    let data = tempfile::tempdir().unwrap();
    match Running::start(&toml, data.path(), &redis_server.url()).await {
        Err(err) => {
            assert!(!has_waitaof, "Redis {version} has WAITAOF, yet: {err}");
            assert!(err.contains("queues.ledger.durability"), "{err}");
            assert!(err.contains("7.2") && err.contains(&version), "{err}");
        }
        Ok(running) => {
            assert!(
                has_waitaof,
                "started on Redis {version}, which has no WAITAOF"
            );
            running.stop().await;
        }
    }
}
