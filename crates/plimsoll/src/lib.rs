//! Plimsoll: a Redis job queue, cache client and memory guard that keep Redis
//! from filling up unnoticed and from taking the rest of a system down with it.
//!
//! - [`Queue`] and [`Worker`]: background jobs with retention bounded by
//!   construction (completed jobs are removed by default, dead jobs capped),
//!   at-least-once delivery, retries with backoff, delays, priorities,
//!   idempotency keys and crash recovery; on one Redis or a Redis Cluster.
//! - [`Cache`]: read-through caching on Redis that never fails its caller
//!   because of Redis: a time budget per call, a circuit breaker, an
//!   optional in-process tier with stale-if-error, single-flight loads.
//! - [`Guard`]: the memory guard — watches any Redis, forecasts time to
//!   full, alerts at 20/50/90% and on shrinking leeway, attributes memory to
//!   key families and trims them ([`guard`]).
//! - [`keyspace`]: the one place that names every key and states its bound.
//!
//! ```no_run
//! use plimsoll::{NewJob, Outcome, Queue, Redis, Worker};
//!
//! # async fn demo() -> plimsoll::Result<()> {
//! let redis = Redis::connect_url("redis://127.0.0.1:6379/").await?;
//! let queue = Queue::with_defaults(redis, "webhooks")?;
//! queue.enqueue(NewJob::json(&serde_json::json!({"event": "push"}))?).await?;
//!
//! let worker = Worker::builder(queue.clone())
//!     .concurrency(50)
//!     .start(|job: plimsoll::Job| async move {
//!         println!("job {} says {:?}", job.id(), job.payload_str());
//!         Outcome::Done
//!     })?;
//! worker.shutdown().await;
//! # Ok(())
//! # }
//! ```
//!
//! # Cargo features
//!
//! - `webhook-sink` (on by default): `WebhookSink`, the guard's alert sink
//!   that posts to a JSON or Slack-compatible webhook, with the HTTP client
//!   it needs (reqwest over rustls). Nothing else in the library makes HTTP
//!   calls, so a cache or queue user can build without an HTTP client:
//!   `plimsoll = { version = "…", default-features = false }`. The log sink,
//!   the [`AlertSink`] trait and the webhook bodies
//!   (`guard::sinks::payload`) stay, for a sink of one's own.

pub mod cache;
pub mod clock;
mod compress;
pub mod connection;
pub mod error;
pub mod guard;
pub mod keyspace;
pub mod queue;
pub mod redis_policy;
pub mod service;
pub mod units;
pub mod worker;

pub use cache::{
    BreakerConfig, BreakerState, BreakerStats, Cache, CacheConfig, CacheStats, CacheWrite,
    LocalConfig, Ttl,
};
pub use clock::{Clock, ManualClock, SystemClock};
pub use connection::{Primary, Redis, RedisConfig, Topology};
pub use error::{Error, ErrorKind, Result};
#[cfg(feature = "webhook-sink")]
pub use guard::WebhookSink;
pub use guard::trim::{
    BullMqSet, RqRegistry, Selection, SidekiqSet, TrimOptions, TrimReport, TrimTarget,
};
pub use guard::{
    Alert, AlertKind, AlertSink, AttributeConfig, FamilyReport, Forecast, ForecastConfig, Guard,
    GuardConfig, GuardStats, LogSink, MemoryReport, ReportHistory,
};
pub use queue::{
    Bounds, BulkError, CancelOutcome, CompletedRetention, Compression, DeadSelection, Durability,
    Enqueued, JobId, JobInfo, JobState, NewJob, Queue, QueueConfig, QueueCounts, Retention,
};
pub use worker::{Backoff, Job, Outcome, Worker, WorkerBuilder, WorkerHandle};
