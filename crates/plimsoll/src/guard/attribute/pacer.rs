//! How a walk treats the Redis it reads: a token bucket of commands (or
//! keys) per second that backs off when Redis answers slower than its
//! fastest replies show it can, and patience while Redis is busy or loading.

use std::time::{Duration, Instant};

use crate::error::{ErrorKind, Result};

/// Token bucket with back-off on slow replies.
#[derive(Debug)]
pub(crate) struct Pacer {
    max_rate: f64,
    rate: f64,
    tokens: f64,
    last: Instant,
    fastest: Option<Duration>,
    busy_floor: Duration,
    pub(crate) commands: u64,
    pub(crate) backoffs: u64,
}

impl Pacer {
    pub(crate) fn new(budget: u32, busy_floor: Duration) -> Self {
        let rate = f64::from(budget);
        Self {
            max_rate: rate,
            rate,
            // A small burst: a tenth of a second's worth.
            tokens: (rate / 10.0).max(1.0),
            last: Instant::now(),
            fastest: None,
            busy_floor,
            commands: 0,
            backoffs: 0,
        }
    }

    /// Waits until `n` tokens are there and takes them. Tokens accrue for
    /// the time that really passed, so a sleep that the timer rounds up
    /// (to its millisecond) is not lost: the surplus pays for the next
    /// calls, and the average rate is the configured one even when each
    /// call costs less than a millisecond of budget.
    pub(crate) async fn take(&mut self, n: u64) {
        let n = n as f64;
        let burst = (self.rate / 10.0).max(n);
        self.refill(burst);
        if self.tokens < n {
            let wait = (n - self.tokens) / self.rate;
            tokio::time::sleep(Duration::from_secs_f64(wait)).await;
            self.refill(burst);
        }
        self.tokens -= n;
        self.commands += n as u64;
    }

    fn refill(&mut self, burst: f64) {
        let now = Instant::now();
        self.tokens =
            (self.tokens + now.duration_since(self.last).as_secs_f64() * self.rate).min(burst);
        self.last = now;
    }

    pub(crate) fn observe(&mut self, round_trip: Duration) {
        let fastest = *self.fastest.get_or_insert(round_trip);
        if round_trip < fastest {
            self.fastest = Some(round_trip);
        }
        let busy = round_trip > self.busy_floor.max(fastest * 4);
        if busy {
            self.rate = (self.rate / 2.0).max(self.max_rate / 20.0).max(1.0);
            self.backoffs += 1;
        } else {
            self.rate = (self.rate * 1.05).min(self.max_rate);
        }
    }
}

/// Runs `call`, waiting and trying again (up to 10 times) while Redis says
/// it is busy or loading.
pub(crate) async fn retry_busy<T, F, Fut>(mut call: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    let mut tries = 0;
    loop {
        match call().await {
            Err(err) if err.kind() == ErrorKind::Unavailable && tries < 10 => {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(100 * tries)).await;
            }
            other => return other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::guard::attribute::scan::DEFAULT_BUSY_LATENCY;

    #[tokio::test]
    async fn the_pacer_keeps_its_budget() {
        let mut pacer = Pacer::new(10_000, DEFAULT_BUSY_LATENCY);
        let start = Instant::now();
        for _ in 0..100 {
            pacer.take(30).await;
        }
        // 3,000 commands at 10,000/s: 0.3 s less the initial burst of 0.1 s.
        let elapsed = start.elapsed();
        assert!(elapsed >= Duration::from_millis(180), "{elapsed:?}");
        assert!(elapsed < Duration::from_secs(2), "{elapsed:?}");
        assert_eq!(pacer.commands, 3000);
    }

    #[test]
    fn slow_replies_halve_the_rate_and_quick_ones_restore_it() {
        let mut pacer = Pacer::new(1000, Duration::from_millis(20));
        pacer.observe(Duration::from_micros(200));
        pacer.observe(Duration::from_millis(50));
        assert_eq!(pacer.backoffs, 1);
        assert!((pacer.rate - 500.0).abs() < 1e-6);
        for _ in 0..100 {
            pacer.observe(Duration::from_micros(200));
        }
        assert!((pacer.rate - 1000.0).abs() < 1e-6);
    }
}
