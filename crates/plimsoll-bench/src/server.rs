//! The server workloads H1 and H2 of shared/BENCH.md: webhooks POSTed to a
//! running `plimsoll serve` (this binary, started as a child process) over
//! 64 keep-alive connections.
//!
//! - H1-intake: 1 KiB signed JSON webhooks for the duration; requests/s,
//!   latency, non-2xx answers, and the server's peak RSS.
//! - H2-intake-redis-down: the same, while Redis is killed for 10 s and
//!   restarted; afterwards, webhooks answered 2xx must equal jobs enqueued.
//!
//! H1 posts with this process's own hyper client by default, or with `wrk`
//! (`--load-generator wrk`, BENCH.md's tool), so that the figures can be
//! checked with a client that is not ours. H2 always uses the built-in
//! client, which counts every 2xx answer exactly.
//!
//! Redis runs with `appendfsync always`, as the embedded Redis of
//! `plimsoll serve` does: a webhook the server acknowledged must survive
//! Redis crashing.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::error::{BenchError, Context, Result};
use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use plimsoll_server::embedded::{LocalRedis, LocalRedisOptions};
use plimsoll_server::signing::sign;
use serde_json::{Map, Value, json};

use super::{Figures, LoadGenerator, Workload};

const SECRET: &str = "bench-webhook-secret";
const TOKEN: &str = "bench-token-0123456789abcdef";

struct Served {
    child: Child,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Peak and current resident memory of a process, from /proc.
fn rss(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .unwrap_or(0)
            * 1024
    };
    (field("VmHWM:"), field("VmRSS:"))
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Runs H1-intake or H2-intake-redis-down once.
pub async fn run(
    workload: Workload,
    duration: Duration,
    connections: usize,
    load_generator: LoadGenerator,
) -> Result<(Figures, Map<String, Value>)> {
    let h2 = workload == Workload::H2IntakeRedisDown;
    let use_wrk = !h2 && load_generator == LoadGenerator::Wrk;
    let work = tempfile::tempdir()?;
    let mut redis = tokio::task::block_in_place(|| {
        LocalRedis::start(&LocalRedisOptions {
            dir: Some(work.path().join("redis")),
            maxmemory: 2 << 30,
            persist: true,
            port: None,
        })
    })?;
    let port = free_port()?;
    let config = work.path().join("plimsoll.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:{port}\"\nmetrics_listen = \"\"\ntokens = [\"{TOKEN}\"]\n\
             [hooks.bench]\nsecret = \"{SECRET}\"\ndelivery_header = \"X-Delivery\"\n\
             [spool]\nmax_bytes = \"4GiB\"\n"
        ),
    )?;
    let child = Command::new(std::env::current_exe()?)
        .args(["serve", "--config", &config.display().to_string()])
        .args(["--redis", &redis.url()])
        .args([
            "--data-dir",
            &work.path().join("data").display().to_string(),
        ])
        .env("PLIMSOLL_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .context("starting plimsoll serve")?;
    let served = Served { child };
    wait_healthy(port).await?;

    let body = super::queue::payload(0, 0.0);
    let posted = if use_wrk {
        wrk(port, duration, connections, &body, work.path()).await?
    } else {
        post_built_in(port, duration, connections, &body, h2.then_some(&mut redis)).await?
    };
    let (peak_rss, _) = rss(served.child.id());
    let accepted = posted.finished - posted.not_ok;

    let mut figures = Figures::new();
    figures.insert("requests_per_s", posted.finished as f64 / posted.seconds);
    figures.insert("p50_ms", posted.p50_ms);
    figures.insert("p99_ms", posted.p99_ms);
    figures.insert("max_ms", posted.max_ms);
    figures.insert("non_2xx", posted.not_ok as f64);
    figures.insert("accepted", accepted as f64);
    figures.insert("server_peak_rss_bytes", peak_rss as f64);
    if h2 {
        // Everything spooled must reach the queue once Redis is back.
        let enqueued = wait_enqueued(&redis.url(), accepted, Duration::from_secs(300)).await?;
        figures.insert("enqueued", enqueued as f64);
        figures.insert("missing", accepted.saturating_sub(enqueued) as f64);
    }
    drop(served);
    drop(redis);
    let details = Map::from_iter([
        ("connections".to_string(), json!(connections)),
        (
            "load_generator".to_string(),
            json!(if use_wrk { "wrk" } else { "built-in" }),
        ),
    ]);
    Ok((figures, details))
}

/// What the load generator saw.
#[derive(Debug, Default)]
struct Posted {
    /// Requests that finished: answered, whatever the status, or failed on
    /// the socket.
    finished: u64,
    /// Those not answered 2xx (wrk: not 2xx or 3xx), socket errors included.
    not_ok: u64,
    seconds: f64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
}

/// Posts webhooks with this process's own client, one task per connection.
/// With `kill_redis` (H2), Redis dies a third in and comes back 10 s later.
async fn post_built_in(
    port: u16,
    duration: Duration,
    connections: usize,
    body: &[u8],
    kill_redis: Option<&mut LocalRedis>,
) -> Result<Posted> {
    let ok = Arc::new(AtomicU64::new(0));
    let not_ok = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + duration;
    let mut tasks = Vec::with_capacity(connections);
    for conn in 0..connections {
        let (ok, not_ok) = (ok.clone(), not_ok.clone());
        let body = body.to_vec();
        tasks.push(tokio::spawn(async move {
            client_loop(port, conn, deadline, body, ok, not_ok).await
        }));
    }
    if let Some(redis) = kill_redis {
        tokio::time::sleep_until((started + duration / 3).into()).await;
        tokio::task::block_in_place(|| redis.kill());
        tokio::time::sleep(Duration::from_secs(10)).await;
        tokio::task::block_in_place(|| redis.restart())?;
    }
    let mut histogram = Histogram::<u64>::new(3)?;
    for task in tasks {
        histogram.add(task.await??)?;
    }
    let seconds = started.elapsed().as_secs_f64();
    let not_ok = not_ok.load(Ordering::Relaxed);
    Ok(Posted {
        finished: ok.load(Ordering::Relaxed) + not_ok,
        not_ok,
        seconds,
        p50_ms: histogram.value_at_quantile(0.5) as f64 / 1000.0,
        p99_ms: histogram.value_at_quantile(0.99) as f64 / 1000.0,
        max_ms: histogram.max() as f64 / 1000.0,
    })
}

/// Posts signed webhooks with `wrk` (one thread: the machine has two cores
/// and the server and Redis need them), each with its own delivery id.
async fn wrk(
    port: u16,
    duration: Duration,
    connections: usize,
    body: &[u8],
    work: &std::path::Path,
) -> Result<Posted> {
    let body = std::str::from_utf8(body)
        .ok()
        .context("the bench payload is UTF-8 JSON")?;
    let signature = sign(SECRET.as_bytes(), body.as_bytes(), "sha256=");
    // `wrk.format` takes the headers as given, so every request builds the
    // whole set; the counter makes each delivery id unique.
    let script = format!(
        r#"wrk.method = "POST"
wrk.body = [==[{body}]==]
local sent = 0
request = function()
  sent = sent + 1
  return wrk.format(nil, nil, {{
    ["Host"] = "127.0.0.1",
    ["Content-Type"] = "application/json",
    ["X-Hub-Signature-256"] = "{signature}",
    ["X-Delivery"] = "w" .. sent,
  }}, nil)
end
"#
    );
    let script_path = work.join("h1.lua");
    std::fs::write(&script_path, script)?;
    let output = tokio::process::Command::new("wrk")
        .args(["-t1", &format!("-c{connections}")])
        .arg(format!("-d{}s", duration.as_secs().max(1)))
        .args(["--timeout", "10s", "--latency", "-s"])
        .arg(&script_path)
        .arg(format!("http://127.0.0.1:{port}/hooks/bench"))
        .output()
        .await
        .context("running wrk (is it installed? apt-get install wrk)")?;
    let text = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        return Err(BenchError::Failed(format!(
            "wrk failed ({}): {text}{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        )));
    }
    parse_wrk(&text).with_context(|| format!("reading wrk's report:\n{text}"))
}

/// Reads the figures out of wrk's `--latency` report.
fn parse_wrk(text: &str) -> Result<Posted> {
    let mut result = Posted::default();
    let mut seen_requests = false;
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["Latency", _avg, _stdev, max, ..] => result.max_ms = wrk_ms(max)?,
            ["50%", value] => result.p50_ms = wrk_ms(value)?,
            ["99%", value] => result.p99_ms = wrk_ms(value)?,
            [requests, "requests", "in", seconds, ..] => {
                result.finished += number::<u64>(requests)?;
                result.seconds = wrk_ms(seconds.trim_end_matches(','))? / 1000.0;
                seen_requests = true;
            }
            ["Non-2xx", "or", "3xx", "responses:", n] => result.not_ok += number::<u64>(n)?,
            ["Socket", "errors:", rest @ ..] => {
                // "connect 0, read 0, write 0, timeout 0"
                for count in rest.iter().skip(1).step_by(2) {
                    let failed = number::<u64>(count.trim_end_matches(','))?;
                    result.not_ok += failed;
                    result.finished += failed;
                }
            }
            _ => {}
        }
    }
    if !seen_requests || result.seconds <= 0.0 {
        return Err(BenchError::Failed("no \"N requests in T\" line".into()));
    }
    Ok(result)
}

/// A number of wrk's report.
fn number<T: std::str::FromStr<Err: std::fmt::Display>>(text: &str) -> Result<T> {
    text.parse()
        .map_err(|err: T::Err| BenchError::Failed(err.to_string()))
}

/// A wrk duration ("850.00us", "1.20ms", "2.00s", "1.00m") in milliseconds.
fn wrk_ms(value: &str) -> Result<f64> {
    let split = value
        .find(|c: char| c.is_ascii_alphabetic())
        .with_context(|| format!("{value:?} has no unit"))?;
    let (number, unit) = value.split_at(split);
    let number: f64 = self::number(number)?;
    let scale = match unit {
        "us" => 0.001,
        "ms" => 1.0,
        "s" => 1000.0,
        "m" => 60_000.0,
        "h" => 3_600_000.0,
        other => {
            return Err(BenchError::Failed(format!(
                "unknown unit {other:?} in {value:?}"
            )));
        }
    };
    Ok(number * scale)
}

async fn wait_healthy(port: u16) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(stream) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
            drop(stream);
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(BenchError::Failed(format!(
                "plimsoll serve did not start listening on {port}"
            )));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Jobs enqueued on the bench queue, once the count stops below `accepted`
/// or reaches it.
async fn wait_enqueued(url: &str, accepted: u64, timeout: Duration) -> Result<u64> {
    let redis = plimsoll::Redis::connect_url(url).await?;
    let queue = plimsoll::Queue::with_defaults(redis, "hooks.bench")?;
    let deadline = Instant::now() + timeout;
    loop {
        let enqueued = queue.counts().await.map(|c| c.totals.enqueued).unwrap_or(0);
        if enqueued >= accepted || Instant::now() > deadline {
            return Ok(enqueued);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// One keep-alive connection posting webhooks until `deadline`; returns its
/// latency histogram (µs). Reconnects if the server closes the connection.
async fn client_loop(
    port: u16,
    conn: usize,
    deadline: Instant,
    body: Vec<u8>,
    ok: Arc<AtomicU64>,
    not_ok: Arc<AtomicU64>,
) -> Result<Histogram<u64>> {
    let mut histogram = Histogram::<u64>::new(3)?;
    let mut seq = 0u64;
    let body = Bytes::from(body);
    let signature = sign(SECRET.as_bytes(), &body, "sha256=");
    'connect: while Instant::now() < deadline {
        let stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        stream.set_nodelay(true)?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(connection);
        while Instant::now() < deadline {
            seq += 1;
            let request = hyper::Request::post("/hooks/bench")
                .header("Host", "127.0.0.1")
                .header("Content-Type", "application/json")
                .header("X-Delivery", format!("c{conn}-{seq}"))
                .header("X-Hub-Signature-256", &signature)
                .body(Full::new(body.clone()))?;
            let sent = Instant::now();
            let response = match sender.send_request(request).await {
                Ok(response) => response,
                Err(_) => {
                    not_ok.fetch_add(1, Ordering::Relaxed);
                    continue 'connect;
                }
            };
            let status = response.status();
            let _ = response.into_body().collect().await;
            histogram.record(sent.elapsed().as_micros() as u64)?;
            if status.is_success() {
                ok.fetch_add(1, Ordering::Relaxed);
            } else {
                not_ok.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    Ok(histogram)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_wrk_latency_report() {
        let report = "Running 30s test @ http://127.0.0.1:4000/hooks/bench
  1 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.90ms    1.01ms  50.20ms   90.00%
    Req/Sec    33.00k     2.00k   40.00k    70.00%
  Latency Distribution
     50%  850.00us
     75%    2.20ms
     90%    2.80ms
     99%    4.50ms
  1000000 requests in 30.00s, 200.00MB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 5
Requests/sec:  33333.33
Transfer/sec:      6.67MB
";
        let result = parse_wrk(report).unwrap();
        assert_eq!(result.finished, 1_000_003);
        assert_eq!(result.seconds, 30.0);
        assert_eq!(result.not_ok, 8);
        assert_eq!(result.p50_ms, 0.85);
        assert_eq!(result.p99_ms, 4.5);
        assert_eq!(result.max_ms, 50.2);
    }

    #[test]
    fn a_report_without_a_request_count_is_an_error() {
        assert!(parse_wrk("Running 30s test @ http://x\n").is_err());
    }
}
