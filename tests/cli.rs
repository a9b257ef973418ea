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
    let port = free_port();
    let mut child = plimsoll()
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
    // meta, stats and id_runs: the queue's bounded bookkeeping.
    assert!(
        text.contains("Keys of the queue left in Redis: 3"),
        "{text}"
    );
    let mut keys = redis.keys();
    keys.retain(|k| k.contains("webhooks.demo"));
    assert_eq!(keys.len(), 3, "{keys:?}");
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
