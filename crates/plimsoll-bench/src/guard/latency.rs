//! The GET loop whose p99 tells what a memory report's walk costs the
//! Redis it reads.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::error::{BenchError, Result};
use hdrhistogram::Histogram;
use plimsoll::Redis;

use super::QUIET_WINDOW;

/// What a GET loop saw: every latency, and the p99 of each second.
#[derive(Debug, Clone)]
pub(super) struct Latencies {
    whole: Histogram<u64>,
    /// The 99th percentile of each full second of the loop, in µs.
    per_second_p99: Vec<u64>,
}

impl Latencies {
    pub(super) fn p99(&self) -> f64 {
        self.whole.value_at_quantile(0.99) as f64
    }

    /// The median of the per-second p99s: the loop's typical p99, which a
    /// burst of the machine's noise in a few seconds does not move (the
    /// whole-window p99 is at the mercy of such bursts on a shared VM).
    pub(super) fn median_second_p99(&self) -> f64 {
        let mut v = self.per_second_p99.clone();
        v.sort_unstable();
        v.get(v.len() / 2).copied().unwrap_or(0) as f64
    }

    pub(super) fn merge(&self, other: &Self) -> Result<Self> {
        let mut whole = self.whole.clone();
        whole.add(&other.whole)?;
        let mut per_second_p99 = self.per_second_p99.clone();
        per_second_p99.extend(&other.per_second_p99);
        Ok(Self {
            whole,
            per_second_p99,
        })
    }
}

async fn get_loop(redis: &Redis, stop: Option<Arc<AtomicBool>>) -> Result<Latencies> {
    let new_histogram = || Histogram::<u64>::new_with_bounds(1, 60_000_000, 3);
    let mut whole = new_histogram()?;
    let mut second = new_histogram()?;
    let mut per_second_p99 = Vec::new();
    let started = Instant::now();
    let mut second_started = started;
    let mut i = 0u64;
    loop {
        let done = match &stop {
            Some(stop) => stop.load(Ordering::SeqCst),
            None => started.elapsed() >= QUIET_WINDOW,
        };
        if done {
            return Ok(Latencies {
                whole,
                per_second_p99,
            });
        }
        i += 1;
        let key = format!("cache:page:{:032x}", (i * 7919) % 100_000);
        let sent = Instant::now();
        let _: Option<Vec<u8>> = redis.query(redis::cmd("GET").arg(&key)).await?;
        let micros = sent.elapsed().as_micros() as u64;
        whole.saturating_record(micros);
        second.saturating_record(micros);
        if second_started.elapsed() >= Duration::from_secs(1) {
            per_second_p99.push(second.value_at_quantile(0.99));
            second.reset();
            second_started = Instant::now();
        }
    }
}

/// Runs [`get_loop`] on a thread of its own with a single-threaded runtime,
/// so that its latency is Redis' and the machine's, not that of tasks
/// sharing its runtime.
pub(super) async fn get_loop_thread(
    url: String,
    stop: Option<Arc<AtomicBool>>,
) -> Result<Latencies> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let result = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(BenchError::from)
            .and_then(|runtime| {
                runtime.block_on(async {
                    let redis = Redis::connect_url(&url).await?;
                    get_loop(&redis, stop).await
                })
            });
        let _ = tx.send(result);
    });
    // The sender is dropped unsent only if the thread panicked.
    rx.await
        .map_err(|err| BenchError::Failed(format!("the GET loop thread ended: {err}")))?
}
