//! Push delivery: a queue bound to an HTTP target has its jobs POSTed there by
//! workers inside the server — reliable delivery without writing a worker.
//!
//! Each delivery carries the job's payload as the body, `X-Plimsoll-Queue`,
//! `X-Plimsoll-Job-Id` and `X-Plimsoll-Attempt` headers, and, when the target
//! has a secret, `X-Plimsoll-Signature-256: sha256=<hex HMAC of the body>`.
//! The answer decides the job's fate:
//!
//! | answer | outcome |
//! |---|---|
//! | 2xx | done |
//! | 408, 425, 429, 5xx, timeout, connection error | retry with the queue's backoff (or after `Retry-After`) |
//! | any other 4xx | failed for good (dead set): the target rejects the job itself |
//!
//! Concurrency per target is the worker's concurrency; a rate limit per
//! target (token bucket, `governor`) spaces deliveries out.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use plimsoll::{Job, Outcome, Worker, WorkerHandle};

use crate::config::PushSettings;
use crate::signing;
use crate::state::AppState;

/// Longest `Retry-After` honoured; a longer one falls back to the backoff.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

struct Target {
    queue: String,
    settings: PushSettings,
    client: reqwest::Client,
    limiter: Option<DefaultDirectRateLimiter>,
}

/// Starts the delivery worker of `queue`.
pub fn start(
    state: &AppState,
    queue: &str,
    settings: PushSettings,
) -> plimsoll::Result<WorkerHandle> {
    let client = reqwest::Client::builder()
        .timeout(settings.timeout)
        .user_agent(concat!("plimsoll/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| {
            plimsoll::Error::new(
                plimsoll::ErrorKind::InvalidInput,
                format!("HTTP client: {e}"),
            )
        })?;
    let limiter = settings
        .rate_per_second
        .map(|rate: NonZeroU32| RateLimiter::direct(Quota::per_second(rate)));
    let target = Arc::new(Target {
        queue: queue.to_string(),
        settings: settings.clone(),
        client,
        limiter,
    });
    let handle = state.queue(queue).map_err(|e| {
        plimsoll::Error::new(
            plimsoll::ErrorKind::InvalidInput,
            format!("queue {queue}: {e:?}"),
        )
    })?;
    Worker::builder(handle)
        .concurrency(settings.concurrency)
        .start(move |job: Job| {
            let target = target.clone();
            async move { deliver(&target, &job).await }
        })
}

async fn deliver(target: &Target, job: &Job) -> Outcome {
    if let Some(limiter) = &target.limiter {
        limiter.until_ready().await;
    }
    let body = job.payload().to_vec();
    let content_type = if serde_json::from_slice::<serde::de::IgnoredAny>(&body).is_ok() {
        "application/json"
    } else {
        "application/octet-stream"
    };
    let mut request = target
        .client
        .post(target.settings.url.clone())
        .header("Content-Type", content_type)
        .header("X-Plimsoll-Queue", &target.queue)
        .header("X-Plimsoll-Job-Id", job.id().to_string())
        .header("X-Plimsoll-Attempt", job.attempt().to_string());
    if let Some(secret) = &target.settings.secret {
        request = request.header(
            "X-Plimsoll-Signature-256",
            signing::sign(secret.as_bytes(), &body, "sha256="),
        );
    }
    let response = tokio::select! {
        response = request.body(body).send() => response,
        // Cancelled through the API (the lease is gone, so this outcome is
        // dropped) or the server is stopping: either way, not done.
        () = job.cancelled() => return Outcome::retry("delivery interrupted"),
    };
    match response {
        Err(err) if err.is_timeout() => Outcome::retry(format!(
            "{} did not answer within {:?}",
            target.settings.url, target.settings.timeout
        )),
        Err(err) => Outcome::retry(format!("delivery to {} failed: {err}", target.settings.url)),
        Ok(response) => {
            let status = response.status();
            if status.is_success() {
                return Outcome::Done;
            }
            let retry_after = response
                .headers()
                .get("Retry-After")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_secs)
                .filter(|d| *d <= MAX_RETRY_AFTER);
            let message = format!("{} answered {status}", target.settings.url);
            match status.as_u16() {
                408 | 425 | 429 | 500..=599 => match retry_after {
                    Some(after) => Outcome::retry_after(after, message),
                    None => Outcome::retry(message),
                },
                _ => Outcome::fail(message),
            }
        }
    }
}
