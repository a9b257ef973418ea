//! The shape every background service of Plimsoll takes — the queue's
//! promoter, rescuer and janitor, a worker's heartbeat, the guard's watch
//! and report, the server's sampler and replayer: a value whose
//! [`Service::run_once`] does one round of work and says how long to wait
//! before the next, run by [`spawn`] until its shutdown token fires.
//!
//! One shape for all of them (River's maintenance services are the model)
//! keeps what is easy to get wrong in one place: a round in progress always
//! finishes before shutdown (each is one or a few script calls, so nothing
//! is left half-done), an error backs off instead of spinning on a Redis
//! that refuses, and a service that can be woken early (the guard's report
//! after an alert, the replayer when a webhook is spooled) says so through
//! [`Service::woken`] rather than with a loop of its own.

use std::future::Future;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::error::Result;

/// One background service.
pub trait Service: Send + 'static {
    /// For logs.
    const NAME: &'static str;

    /// Does one round of work; returns how long to wait before the next.
    /// After an error the next round comes after [`error_backoff`].
    fn run_once(&mut self) -> impl Future<Output = Result<Duration>> + Send;

    /// Resolves when the service should start its next round before its
    /// wait is over. Never, unless the service says otherwise.
    fn woken(&self) -> impl Future<Output = ()> + Send {
        std::future::pending()
    }
}

/// Runs `service` until `shutdown` fires. A round in progress finishes
/// first.
pub fn spawn<S: Service>(mut service: S, shutdown: CancellationToken) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut failures = 0u32;
        loop {
            let wait = match service.run_once().await {
                Ok(wait) => {
                    failures = 0;
                    wait
                }
                Err(err) => {
                    failures += 1;
                    tracing::warn!(service = S::NAME, error = %err, failures, "service round failed");
                    error_backoff(failures)
                }
            };
            tokio::select! {
                biased;
                () = shutdown.cancelled() => break,
                () = tokio::time::sleep(wait) => {}
                () = service.woken() => {}
            }
        }
    })
}

/// Wait after the n-th failure in a row: 100 ms doubling to 5 s. Also used
/// by the loops that are not services (the fetcher, the settler, the
/// cache's reconnect) so that every retry of Plimsoll's paces alike.
pub fn error_backoff(failures: u32) -> Duration {
    let exponent = failures.saturating_sub(1).min(6);
    Duration::from_millis(100 << exponent).min(Duration::from_secs(5))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_backoff_grows_and_caps() {
        assert_eq!(error_backoff(1), Duration::from_millis(100));
        assert_eq!(error_backoff(2), Duration::from_millis(200));
        assert_eq!(error_backoff(50), Duration::from_secs(5));
    }
}
