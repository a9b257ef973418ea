//! The server workloads H1 and H2 of shared/BENCH.md: webhooks POSTed to a
//! running `plimsoll serve` (this binary, started as a child process) over
//! 64 keep-alive connections.
//!
//! - H1-intake: 1 KiB signed JSON webhooks for the duration; requests/s,
//!   latency, non-2xx answers, and the server's peak RSS.
//! - H2-intake-redis-down: the same, while Redis is killed for 10 s and
//!   restarted; afterwards, webhooks answered 2xx must equal jobs enqueued.
//!
//! Redis runs with `appendfsync always`, as the embedded Redis of
//! `plimsoll serve` does: a webhook the server acknowledged must survive
//! Redis crashing.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use plimsoll_server::embedded::{LocalRedis, LocalRedisOptions};
use plimsoll_server::intake::signature::sign;
use serde_json::{Map, Value, json};

use super::Figures;

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
    workload: &str,
    duration: Duration,
    connections: usize,
) -> Result<(Figures, Map<String, Value>)> {
    let h2 = workload == "H2-intake-redis-down";
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

    let body_template = super::queue::payload(0, 0.0);
    let ok = Arc::new(AtomicU64::new(0));
    let not_ok = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + duration;
    let mut tasks = Vec::with_capacity(connections);
    for conn in 0..connections {
        let (ok, not_ok) = (ok.clone(), not_ok.clone());
        let body = body_template.clone();
        tasks.push(tokio::spawn(async move {
            client_loop(port, conn, deadline, body, ok, not_ok).await
        }));
    }
    if h2 {
        // Redis dies a third in, and comes back after 10 s.
        tokio::time::sleep_until((started + duration / 3).into()).await;
        tokio::task::block_in_place(|| redis.kill());
        tokio::time::sleep(Duration::from_secs(10)).await;
        tokio::task::block_in_place(|| redis.restart())?;
    }
    let mut histogram = Histogram::<u64>::new(3)?;
    for task in tasks {
        histogram.add(task.await??)?;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let (peak_rss, _) = rss(served.child.id());
    let accepted = ok.load(Ordering::Relaxed);

    let mut figures = Figures::new();
    figures.insert(
        "requests_per_s",
        (accepted + not_ok.load(Ordering::Relaxed)) as f64 / elapsed,
    );
    figures.insert("p50_ms", histogram.value_at_quantile(0.5) as f64 / 1000.0);
    figures.insert("p99_ms", histogram.value_at_quantile(0.99) as f64 / 1000.0);
    figures.insert("max_ms", histogram.max() as f64 / 1000.0);
    figures.insert("non_2xx", not_ok.load(Ordering::Relaxed) as f64);
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
    Ok((
        figures,
        Map::from_iter([("connections".to_string(), json!(connections))]),
    ))
}

async fn wait_healthy(port: u16) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(stream) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
            drop(stream);
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("plimsoll serve did not start listening on {port}");
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
