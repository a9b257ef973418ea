//! The `plimsoll` binary, run as a process against private redis-servers.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use plimsoll_test_support::RedisServer;

fn plimsoll() -> Command {
    Command::new(env!("CARGO_BIN_EXE_plimsoll"))
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
    token: String,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve(redis: &RedisServer, data: &std::path::Path, extra: &[&str]) -> Served {
    serve_with(plimsoll(), redis, data, extra)
}

/// `plimsoll serve` run by `command` (the binary, or a shell that sets
/// limits and then execs it).
fn serve_with(
    mut command: Command,
    redis: &RedisServer,
    data: &std::path::Path,
    extra: &[&str],
) -> Served {
    let port = free_port();
    let mut child = command
        .args([
            "serve",
            "--redis",
            &redis.url(),
            "--listen",
            &format!("127.0.0.1:{port}"),
        ])
        .args(["--metrics-listen", &format!("127.0.0.1:{}", free_port())])
        .args(["--data-dir", &data.display().to_string()])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut token = String::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    for line in lines.by_ref() {
        let line = line.unwrap();
        if let Some(rest) = line.trim().strip_prefix("Token") {
            token = rest.split_whitespace().next().unwrap().to_string();
        }
        if line.starts_with("Stop with") {
            break;
        }
        assert!(Instant::now() < deadline, "serve did not start");
    }
    assert!(!token.is_empty(), "serve printed its generated token");
    // Keep reading stdout so the child never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    Served {
        child,
        api: format!("http://127.0.0.1:{port}"),
        token,
    }
}

#[test]
fn the_help_lists_the_subcommands() {
    let out = plimsoll().arg("--help").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    for sub in ["serve", "demo", "queue", "enqueue", "bench"] {
        assert!(text.contains(sub), "{sub} in {text}");
    }
}

/// Queue names and job ids are checked by the flag parser, before any
/// connection: a bad one is refused with the rule it breaks, not with a
/// Redis error (or none) later.
#[test]
fn queue_names_and_job_ids_are_refused_before_connecting() {
    let unreachable = "redis://127.0.0.1:1/";
    let bad_name = plimsoll()
        .args(["queue", "stats", "a:b", "--redis", unreachable])
        .output()
        .unwrap();
    assert_eq!(bad_name.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&bad_name.stderr);
    assert!(
        stderr.contains("queue name") && stderr.contains("':'"),
        "{stderr}"
    );
    let bad_id = plimsoll()
        .args(["queue", "job", "mail", "forty-two", "--redis", unreachable])
        .output()
        .unwrap();
    assert_eq!(bad_id.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad_id.stderr).contains("forty-two"));
}

#[test]
fn serve_refuses_a_bad_configuration_and_names_the_setting() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("plimsoll.toml");
    std::fs::write(&config, "[hooks.github]\nsecret = \"short\"\n").unwrap();
    let out = plimsoll()
        .args(["serve", "--config", &config.display().to_string()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("hooks.github.secret"), "{err}");

    let out = plimsoll()
        .args(["serve", "--config", "/nonexistent/plimsoll.toml"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not exist"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_answers_over_http_and_stops_cleanly_on_sigterm() {
    let redis = RedisServer::start();
    let data = tempfile::tempdir().unwrap();
    let mut served = serve(&redis, data.path(), &[]);
    let client = reqwest::Client::new();
    let health = client
        .get(format!("{}/healthz", served.api))
        .send()
        .await
        .unwrap();
    assert!(health.status().is_success());

    let created = client
        .post(format!("{}/v1/queues/mail/jobs", served.api))
        .bearer_auth(&served.token)
        .json(&serde_json::json!({"payload": {"to": "x@example.com"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let counts = client
        .get(format!("{}/v1/queues/mail", served.api))
        .bearer_auth(&served.token)
        .send()
        .await
        .unwrap()
        .json::<serde_json::Value>()
        .await
        .unwrap();
    assert_eq!(counts["counts"]["waiting"], 1);
    // The dashboard logs in with the printed token.
    let login = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .get(format!("{}/login?token={}", served.api, served.token))
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), 303);
    assert!(
        login.headers()["set-cookie"]
            .to_str()
            .unwrap()
            .contains("HttpOnly")
    );

    let status = Command::new("kill")
        .args(["-TERM", &served.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(30);
    let exit = loop {
        if let Some(exit) = served.child.try_wait().unwrap() {
            break exit;
        }
        assert!(
            Instant::now() < deadline,
            "serve did not stop after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(exit.success(), "clean exit: {exit}");
    // The token persists for the next start.
    assert_eq!(
        std::fs::read_to_string(data.path().join("token"))
            .unwrap()
            .trim(),
        served.token
    );
}

#[test]
fn the_demo_leaves_nothing_but_the_queue_counters() {
    let redis = RedisServer::start();
    let out = plimsoll()
        .args(["demo", "--redis", &redis.url(), "--jobs", "500"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("Processed 500 webhooks"), "{text}");
    // meta, stats and id_runs: the queue's bounded bookkeeping, and the
    // demo producer's run of ids, which expires.
    assert!(
        text.contains("Keys of the queue left in Redis: 4"),
        "{text}"
    );
    assert!(
        text.contains("id_run, which expires within 10 min"),
        "{text}"
    );
    let mut keys = redis.keys();
    keys.retain(|k| k.contains("webhooks.demo"));
    let runs: Vec<&String> = keys.iter().filter(|k| k.contains(":id_run:")).collect();
    assert_eq!((keys.len(), runs.len()), (4, 1), "{keys:?}");
    let ttl: i64 = redis.cmd(&["PTTL", runs[0]]).parse().unwrap();
    assert!(ttl > 0 && ttl <= 600_000, "{} expires in {ttl} ms", runs[0]);
}

#[test]
fn enqueue_and_queue_stats_work_from_the_command_line() {
    let redis = RedisServer::start();
    let url = redis.url();
    let out = plimsoll()
        .args([
            "enqueue",
            "--redis",
            &url,
            "reports",
            "{\"week\":47}",
            "--priority",
            "1",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The first id of a queue (ids start at 1,000,001).
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "1000001");

    let out = plimsoll()
        .args(["queue", "stats", "--redis", &url, "reports", "--json"])
        .output()
        .unwrap();
    let stats: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(stats["counts"]["waiting"], 1);
    assert_eq!(stats["counts"]["waiting_by_priority"][1], 1);

    let out = plimsoll()
        .args([
            "enqueue",
            "--redis",
            &url,
            "reports",
            "x",
            "--priority",
            "12",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("priority 12"));
}

#[test]
fn queue_delete_shows_what_it_would_delete_until_yes() {
    let redis = RedisServer::start();
    let url = redis.url();
    for payload in ["a", "b"] {
        run_ok(&["enqueue", "--redis", &url, "gone", payload]);
    }
    let out = run_ok(&["queue", "delete", "--redis", &url, "gone"]);
    assert!(out.contains("would delete queue gone: 2 waiting"), "{out}");
    assert!(redis.keys().iter().any(|k| k.contains("{gone}")));
    let out = run_ok(&["queue", "delete", "--redis", &url, "gone", "--yes"]);
    assert!(out.contains("deleted queue gone: 2 jobs"), "{out}");
    assert!(
        redis.keys().iter().all(|k| !k.contains("{gone}")),
        "{:?}",
        redis.keys()
    );
}

// ---- memory guard: `plimsoll memory`, `plimsoll trim`, `plimsoll guard --once` ----

/// Completed BullMQ jobs `bull:mail:<id>` (hash + completed-set entry) and
/// a few session strings.
fn bullmq_and_sessions(redis: &RedisServer, jobs: u64) {
    for id in 1..=jobs {
        let key = format!("bull:mail:{id}");
        redis.cmd(&[
            "HSET",
            &key,
            "name",
            "send",
            "data",
            &"x".repeat(500),
            "finishedOn",
            &id.to_string(),
        ]);
        redis.cmd(&[
            "ZADD",
            "bull:mail:completed",
            &id.to_string(),
            &id.to_string(),
        ]);
    }
    for i in 0..20 {
        redis.cmd(&[
            "SET",
            &format!("session:{i:08}-aaaa-4bbb-8ccc-dddddddddddd"),
            "v",
            "EX",
            "600",
        ]);
    }
}

fn run_ok(args: &[&str]) -> String {
    let output = plimsoll().args(args).output().unwrap();
    assert!(
        output.status.success(),
        "plimsoll {args:?} failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

#[test]
fn memory_names_the_families_as_json_and_writes_nothing() {
    let redis = RedisServer::start();
    bullmq_and_sessions(&redis, 50);
    let before = redis.keys();
    let out = run_ok(&["memory", "--redis", &redis.url(), "--json", "--no-state"]);
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    let names: Vec<&str> = report["families"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"BullMQ queue mail: completed jobs"),
        "{names:?}"
    );
    assert!(names.contains(&"session:<uuid>"), "{names:?}");
    assert_eq!(report["keys_total"], 71);
    assert_eq!(redis.keys(), before);
}

#[test]
fn trim_is_a_dry_run_until_yes() {
    let redis = RedisServer::start();
    bullmq_and_sessions(&redis, 30);
    let args = [
        "trim",
        "bullmq",
        "mail",
        "--set",
        "completed",
        "--keep",
        "10",
        "--redis",
        &redis.url(),
    ];
    let dry = run_ok(&args);
    assert!(dry.contains("Dry run: would remove 20 jobs"), "{dry}");
    assert_eq!(redis.cmd(&["ZCARD", "bull:mail:completed"]), "30");
    let done = run_ok(&[&args[..], &["--yes"]].concat());
    assert!(done.contains("Removed 20 jobs"), "{done}");
    assert_eq!(redis.cmd(&["ZCARD", "bull:mail:completed"]), "10");
    assert_eq!(redis.cmd(&["EXISTS", "bull:mail:20"]), "0");
    assert_eq!(redis.cmd(&["EXISTS", "bull:mail:21"]), "1");
    assert_eq!(redis.dbsize(), 31);
}

/// `plimsoll trim plimsoll` trimmed every queue by the default rules: it
/// removed the completed jobs a queue keeps for a week and kept dead jobs
/// the queue's own rules drop after a day.
#[test]
fn trim_plimsoll_honours_the_retention_a_queues_workers_recorded() {
    use plimsoll::{
        Bounds, CompletedRetention, Job, ManualClock, NewJob, Outcome, Queue, QueueConfig, Redis,
        Retention, SystemClock, Worker,
    };
    const DAY: Duration = Duration::from_secs(86_400);
    let redis = RedisServer::start();
    let rules = Retention {
        completed: CompletedRetention::Keep(Bounds::new(1000, 7 * DAY, 1 << 20).unwrap()),
        dead: Bounds::new(1000, DAY, 1 << 20).unwrap(),
    };
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        // Three completed and four dead jobs, finished two days ago by a
        // worker with these rules (which it records).
        let clock =
            ManualClock::new(plimsoll::Clock::now_ms(&SystemClock) - 2 * DAY.as_millis() as u64);
        let queue = Queue::new(
            Redis::connect_url(&redis.url()).await.unwrap(),
            "kept",
            QueueConfig {
                clock: std::sync::Arc::new(clock),
                retention: rules,
                ..QueueConfig::default()
            },
        )
        .unwrap();
        let jobs = ["ok", "ok", "ok", "bad", "bad", "bad", "bad"]
            .into_iter()
            .map(|p| NewJob::bytes(p).max_attempts(1))
            .collect();
        queue.enqueue_bulk(jobs).await.unwrap();
        let worker = Worker::builder(queue.clone())
            .maintenance(false)
            .poll_interval(Duration::from_millis(50))
            .start(|job: Job| async move {
                if job.payload() == b"ok" {
                    Outcome::Done
                } else {
                    Outcome::fail("bad input")
                }
            })
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let counts = queue.counts().await.unwrap();
            let recorded = queue.recorded_retention().await.unwrap();
            if counts.completed == 3 && counts.dead == 4 && recorded == Some(rules) {
                break;
            }
            assert!(Instant::now() < deadline, "jobs not settled: {counts:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        worker.shutdown().await.unwrap();
    });
    let out = run_ok(&["trim", "plimsoll", "kept", "--yes", "--redis", &redis.url()]);
    assert!(out.contains("Removed 4 jobs"), "{out}");
    assert_eq!(redis.cmd(&["ZCARD", "plimsoll:{kept}:completed"]), "3");
    assert_eq!(redis.cmd(&["ZCARD", "plimsoll:{kept}:dead"]), "0");
}

#[test]
fn guard_once_prints_the_figures() {
    let redis = RedisServer::builder().maxmemory(64 << 20).start();
    bullmq_and_sessions(&redis, 10);
    let out = run_ok(&[
        "guard",
        "--redis",
        &redis.url(),
        "--once",
        "--json",
        "--no-history",
    ]);
    let stats: serde_json::Value = serde_json::from_str(&out).unwrap();
    let node = &stats["nodes"][0];
    assert_eq!(node["maxmemory_bytes"], 64 << 20);
    assert_eq!(node["limit_source"], "maxmemory");
    assert_eq!(node["up"], true);
    assert!(stats["report"]["families"].as_array().unwrap().len() >= 2);
    let human = run_ok(&[
        "guard",
        "--redis",
        &redis.url(),
        "--once",
        "--no-history",
        "--attribute-every",
        "off",
    ]);
    assert!(human.contains("of 64.0 MiB"), "{human}");
}

// `--attribute-every none` was taken for a duration by the service and
// for "on" by `--once`, which ran a report anyway: "off" is now the one
// spelling, checked by clap, and anything else that is not a duration is
// refused before Redis is touched.
#[test]
fn guard_once_with_attribute_every_off_runs_no_report_and_none_is_refused() {
    let redis = RedisServer::builder().maxmemory(64 << 20).start();
    bullmq_and_sessions(&redis, 10);
    let out = run_ok(&[
        "guard",
        "--redis",
        &redis.url(),
        "--once",
        "--json",
        "--no-history",
        "--attribute-every",
        "off",
    ]);
    let stats: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(stats["report"].is_null(), "{stats}");
    let refused = plimsoll()
        .args(["guard", "--redis", &redis.url(), "--once", "--no-history"])
        .args(["--attribute-every", "none"])
        .output()
        .unwrap();
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("--attribute-every") && stderr.contains("off"),
        "{stderr}"
    );
}

// `plimsoll guard` waited for Ctrl-C only: a service manager's SIGTERM
// killed it without stopping its services.
#[test]
fn guard_stops_cleanly_on_sigterm() {
    use std::io::{BufRead, BufReader};
    let redis = RedisServer::builder().maxmemory(64 << 20).start();
    let mut child = plimsoll()
        .args([
            "guard",
            "--redis",
            &redis.url(),
            "--no-history",
            "--metrics-listen",
            "off",
            "--interval",
            "1s",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    loop {
        line.clear();
        assert!(
            stderr.read_line(&mut line).unwrap() > 0,
            "guard exited early"
        );
        if line.contains("plimsoll guard: watching") {
            break;
        }
    }
    assert!(line.contains("SIGTERM stops"), "{line}");
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(30);
    let exit = loop {
        if let Some(exit) = child.try_wait().unwrap() {
            break exit;
        }
        assert!(
            Instant::now() < deadline,
            "guard did not stop after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(exit.success(), "clean exit: {exit}");
}

// ---- `plimsoll bench` on a Redis Cluster ----

#[test]
fn bench_runs_its_workloads_on_a_cluster() {
    let cluster = plimsoll_test_support::RedisCluster::start();
    let url = cluster.urls()[0].clone();
    let out = plimsoll()
        .args([
            "bench", "--redis", &url, "--flush", "--reps", "1", "--n", "300",
        ])
        .args([
            "--workload",
            "W1-single,W1-bulk,W2-drain,W3-waiting,W3-retained,W4-latency,C1-hit",
        ])
        .args(["--rate", "200", "--duration", "1s", "--concurrency", "4"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "bench on a cluster failed:\n{stderr}");
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    let workloads: Vec<&str> = lines
        .iter()
        .map(|l| l["workload"].as_str().unwrap())
        .collect();
    assert_eq!(
        workloads,
        [
            "W1-single",
            "W1-bulk",
            "W2-drain",
            "W3-waiting",
            "W3-retained",
            "W4-latency",
            "C1-hit"
        ]
    );
    for line in &lines {
        assert!(
            line["redis_version"]
                .as_str()
                .is_some_and(|v| !v.is_empty()),
            "{line}"
        );
    }
    assert!(lines[1]["jobs_per_s"].as_f64().unwrap() > 0.0);
    // Memory summed over the primaries: a waiting job costs some bytes.
    assert!(
        lines[3]["bytes_per_job"].as_f64().unwrap() > 100.0,
        "{}",
        lines[3]
    );
}

// ---- the server's edges, against the binary ----

/// 300 connections sending headers slowly kept all four real webhooks from
/// being answered by a server at 256 open files. Run as a user would: the
/// binary under `ulimit -n 256`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_clients_at_256_open_files_never_keep_webhooks_from_being_answered() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let redis = RedisServer::start();
    let data = tempfile::tempdir().unwrap();
    let config = data.path().join("plimsoll.toml");
    std::fs::write(
        &config,
        "[http]\nheader_read_timeout = \"2s\"\n[hooks.plain]\ndelivery_header = \"X-Delivery\"\n",
    )
    .unwrap();
    let mut shell = Command::new("sh");
    shell.args([
        "-c",
        "ulimit -n 256 && exec \"$0\" \"$@\"",
        env!("CARGO_BIN_EXE_plimsoll"),
    ]);
    let served = serve_with(
        shell,
        &redis,
        &data.path().join("data"),
        &["--config", &config.display().to_string()],
    );
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", served.child.id())).unwrap();
    assert!(
        limits
            .lines()
            .any(|l| l.starts_with("Max open files") && l.contains(" 256 ")),
        "{limits}"
    );
    let addr = served.api.trim_start_matches("http://").to_string();
    let mut stalled = Vec::new();
    for _ in 0..300 {
        let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
        stream.write_all(b"POST /hooks/pl").await.unwrap();
        stalled.push(stream);
    }
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    let mut slowest = Duration::ZERO;
    for i in 0..4 {
        let started = Instant::now();
        let response = client
            .post(format!("{}/hooks/plain", served.api))
            .header("X-Delivery", format!("real-{i}"))
            .body(format!("{{\"n\":{i}}}"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 202, "webhook {i}");
        slowest = slowest.max(started.elapsed());
    }
    assert!(
        slowest < Duration::from_secs(2),
        "slowest webhook took {slowest:?}"
    );
    // Truth from Redis: four jobs waiting.
    assert_eq!(
        redis.cmd(&["LLEN", "plimsoll:{hooks.plain}:waiting:5"]),
        "4"
    );
    let started = Instant::now();
    let mut closed = 0;
    for mut stream in stalled {
        let mut buf = [0u8; 256];
        loop {
            match tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => {
                    closed += 1;
                    break;
                }
                Ok(Ok(_)) => continue,
                Err(_) => break,
            }
        }
    }
    assert_eq!(closed, 300, "stalled connections still open");
    eprintln!(
        "binary at ulimit -n 256: 300 stalled connections, 4 of 4 webhooks answered 202 \
         (slowest {slowest:?}), 4 in Redis, {closed} of 300 stalled closed ({:?} after the webhooks)",
        started.elapsed()
    );
}

/// On a Redis with an evicting policy, `serve` used to start and lose jobs
/// silently under memory pressure.
#[test]
fn serve_refuses_a_redis_that_evicts_unless_told_to_accept_it() {
    let redis = RedisServer::builder()
        .maxmemory_policy("allkeys-lru")
        .start();
    let data = tempfile::tempdir().unwrap();
    let out = plimsoll()
        .args(["serve", "--redis", &redis.url(), "--listen", "127.0.0.1:0"])
        .args(["--metrics-listen", ""])
        .args(["--data-dir", &data.path().display().to_string()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("maxmemory-policy allkeys-lru"), "{err}");
    assert!(err.contains("redis.allow_eviction"), "{err}");

    let mut accepting = plimsoll();
    accepting.env("PLIMSOLL_REDIS__ALLOW_EVICTION", "true");
    let served = serve_with(accepting, &redis, data.path(), &[]);
    drop(served);
}
