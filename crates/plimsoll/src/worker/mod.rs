//! Workers: run a queue's jobs with an async handler.
//!
//! A worker leases jobs in batches (one script call fetches up to 1,000),
//! runs up to `concurrency` handlers at once, keeps a few more leased jobs in
//! hand (`prefetch`, and more when handlers finish jobs faster than fetches
//! bring them, up to [`MAX_IN_HAND`]) so that handlers never wait for a
//! round trip, and
//! settles outcomes in batches too: whatever finished while the last batch
//! was on its way goes in the next one.
//!
//! Each leased job has a lease in the worker's `active` hash: a fencing
//! token (one per fetch call) and a deadline. One heartbeat renews all of a
//! worker's leases; a job whose handler runs past its timeout plus a grace
//! is no longer renewed, so the rescuer gives it to another worker even if
//! this one is alive but stuck. A worker that crashes stops renewing, and
//! its jobs run again once their leases expire. Every outcome names its
//! lease (id and token), and the scripts act only on a lease that still
//! carries that token: a run whose lease was rescued (and perhaps leased
//! again, to this very worker) cannot complete, fail, cancel or hand back
//! the new lease; its outcome is dropped and counted as `lost`.
//!
//! A lease that cannot be renewed before its deadline (Redis frozen or out
//! of reach) is given up locally first: once five sixths of the lease passed
//! since the last renewal was sent (by the monotonic clock), its handler is
//! told to stop ([`Job::cancelled`]) and jobs not started are dropped from
//! the hand, so that a run does not go on past the moment the rescuer may
//! give the job to another worker.
//!
//! # Shutdown order
//!
//! [`WorkerHandle::shutdown`] takes these steps, in this order:
//!
//! 1. Stop fetching. Jobs leased but not started are handed back to the
//!    front of their waiting list, without counting an attempt.
//! 2. Wait for running handlers to finish, up to the grace period.
//! 3. Signal handlers still running ([`Job::cancelled`]) and give them a
//!    last moment ([`HARD_STOP_SLACK`]) to return.
//! 4. Abort the tasks of handlers that still run (they ignored the signal)
//!    and give them up to [`HARD_STOP_SLACK`] again to end: an aborted task
//!    stops at its next `.await`.
//! 5. Write every outcome the worker holds (the settler's final flush).
//! 6. Hand back jobs whose handlers did not finish and whose tasks have
//!    ended, so that another worker runs them at once instead of after their
//!    lease. A job is never handed back while its handler may still run.
//! 7. Stop the heartbeat and the maintenance services; leave the worker
//!    registry.
//!
//! A handler blocked in synchronous code (a blocking call that never yields
//! to the runtime) cannot be stopped: neither the signal nor the abort
//! reaches it. Its job is not handed back; its lease is no longer renewed
//! once the heartbeat stops, and the rescuer runs it again after the lease
//! (counting the lost run as an attempt). If the process lives on and the
//! handler returns later, its outcome is dropped. Run blocking work with
//! `tokio::task::spawn_blocking` and check [`Job::is_cancelled`] in it.
//!
//! Nothing leased is lost on the way: a job is settled, handed back, or (if
//! Redis is unreachable throughout, or the handler cannot be stopped) left
//! leased until the rescuer runs it again.

mod backoff;
mod config;
mod fetcher;
mod heartbeat;
mod job;
mod lease;
mod outcome;
pub mod services;
mod settler;

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::FutureExt;
use futures::future::BoxFuture;
use serde::Serialize;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use backoff::{Backoff, DEFAULT_BACKOFF_BASE, DEFAULT_BACKOFF_JITTER, DEFAULT_BACKOFF_MAX};
pub use config::{
    DEFAULT_CONCURRENCY, DEFAULT_LEASE, DEFAULT_POLL_INTERVAL, DEFAULT_PREFETCH_FACTOR,
    DEFAULT_SHUTDOWN_GRACE, DEFAULT_STUCK_GRACE, HARD_STOP_SLACK, MAX_CONCURRENCY, MAX_IN_HAND,
    WorkerConfig,
};
pub use job::Job;
pub use outcome::Outcome;
pub use services::{JanitorConfig, Maintenance, MaintenanceConfig, PromoterConfig, RescuerConfig};

use crate::clock::ms;
use crate::error::{Error, Result};
use crate::keyspace::QueueName;
use crate::queue::record;
use crate::queue::scripts::calls;
use crate::queue::{JobId, Queue};
use lease::{Lease, LeaseKey, lease_groups};
use settler::Settle;

/// Most jobs one fetch asks for (the script's limit).
const MAX_FETCH: usize = calls::FETCH_MAX_JOBS;

/// A job handler: any `Fn(Job) -> impl Future<Output = impl Into<Outcome>>`.
pub trait Handler: Send + Sync + 'static {
    /// Runs one job.
    fn call(&self, job: Job) -> BoxFuture<'static, Outcome>;
}

impl<F, Fut, O> Handler for F
where
    F: Fn(Job) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = O> + Send + 'static,
    O: Into<Outcome>,
{
    fn call(&self, job: Job) -> BoxFuture<'static, Outcome> {
        let future = (self)(job);
        Box::pin(async move { future.await.into() })
    }
}

/// Counters of one worker since it started.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct WorkerStats {
    /// Jobs leased.
    pub fetched: u64,
    /// Jobs completed.
    pub completed: u64,
    /// Failed runs scheduled to run again.
    pub retried: u64,
    /// Jobs sent to the dead set.
    pub dead: u64,
    /// Jobs the handler cancelled.
    pub cancelled: u64,
    /// Outcomes dropped because the lease was gone (job cancelled or rescued).
    pub lost: u64,
    /// Leases given up because they could not be renewed in time: handlers
    /// told to stop, and jobs in hand not started.
    pub unrenewed: u64,
    /// Handlers aborted at shutdown because they ignored the signal to stop.
    pub aborted: u64,
    /// Jobs handed back at shutdown.
    pub handed_back: u64,
    /// Handlers running now.
    pub running: u64,
    /// Jobs leased by this worker and not yet settled.
    pub in_hand: u64,
}

#[derive(Debug, Default)]
struct Counters {
    fetched: AtomicU64,
    completed: AtomicU64,
    retried: AtomicU64,
    dead: AtomicU64,
    cancelled: AtomicU64,
    lost: AtomicU64,
    unrenewed: AtomicU64,
    aborted: AtomicU64,
    handed_back: AtomicU64,
}

/// What every task of one worker shares.
struct Shared {
    queue: Queue,
    queue_name: Arc<QueueName>,
    id: String,
    active_key: String,
    config: WorkerConfig,
    leases: Mutex<HashMap<LeaseKey, Lease>>,
    counters: Counters,
    slots: Arc<Semaphore>,
    /// Woken by the settler after each flush: leases were released, so the
    /// fetcher may have room again.
    settled: Notify,
}

impl Shared {
    fn now_ms(&self) -> u64 {
        self.queue.now_ms()
    }

    fn leases(&self) -> std::sync::MutexGuard<'_, HashMap<LeaseKey, Lease>> {
        // A panic while holding this lock cannot leave the map inconsistent
        // (every update is a single insert or remove), so recover from poison.
        self.leases.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Builds and starts a worker.
#[derive(Debug)]
pub struct WorkerBuilder {
    queue: Queue,
    config: WorkerConfig,
    id: Option<String>,
}

/// Entry point: `Worker::builder(queue)…start(handler)`.
#[derive(Debug)]
pub struct Worker;

impl Worker {
    /// A builder for a worker of `queue`, with the default settings.
    pub fn builder(queue: Queue) -> WorkerBuilder {
        WorkerBuilder {
            queue,
            config: WorkerConfig::default(),
            id: None,
        }
    }
}

impl WorkerBuilder {
    /// Handlers running at once (default 10). Prefetch follows unless set.
    pub fn concurrency(mut self, concurrency: usize) -> Self {
        self.config.concurrency = concurrency;
        self.config.prefetch = concurrency * DEFAULT_PREFETCH_FACTOR;
        self
    }

    /// Leased jobs kept in hand beyond `concurrency` (default: concurrency).
    pub fn prefetch(mut self, prefetch: usize) -> Self {
        self.config.prefetch = prefetch;
        self
    }

    /// Lease length (default 30 s).
    pub fn lease(mut self, lease: Duration) -> Self {
        self.config.lease = lease;
        self
    }

    /// Longest idle wait before asking for work again (default 1 s).
    pub fn poll_interval(mut self, interval: Duration) -> Self {
        self.config.poll_interval = interval;
        self
    }

    /// How long shutdown waits for running handlers (default 30 s).
    pub fn shutdown_grace(mut self, grace: Duration) -> Self {
        self.config.shutdown_grace = grace;
        self
    }

    /// How long past its timeout a handler may run (default 60 s).
    pub fn stuck_grace(mut self, grace: Duration) -> Self {
        self.config.stuck_grace = grace;
        self
    }

    /// Delay between attempts of a failing job.
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.config.backoff = backoff;
        self
    }

    /// Whether to run the maintenance services here (default true).
    pub fn maintenance(mut self, on: bool) -> Self {
        self.config.maintenance = on;
        self
    }

    /// Replaces the whole configuration.
    pub fn config(mut self, config: WorkerConfig) -> Self {
        self.config = config;
        self
    }

    /// Sets the worker's id (default `host-pid-random`); it names the
    /// worker's `active` key, so it must be unique among live workers.
    pub fn id(mut self, id: impl Into<String>) -> Self {
        self.id = Some(id.into());
        self
    }

    /// Checks the settings and starts the worker's tasks on the current
    /// Tokio runtime.
    pub fn start<H: Handler>(self, handler: H) -> Result<WorkerHandle> {
        self.config.validate()?;
        let id = match self.id {
            Some(id) => {
                check_worker_id(&id)?;
                id
            }
            None => default_worker_id(),
        };
        let active_key = self.queue.keys().active(&id);
        let shared = Arc::new(Shared {
            slots: Arc::new(Semaphore::new(self.config.concurrency)),
            queue_name: Arc::new(self.queue.name().clone()),
            queue: self.queue,
            id,
            active_key,
            config: self.config,
            leases: Mutex::new(HashMap::new()),
            counters: Counters::default(),
            settled: Notify::new(),
        });
        let handler: Arc<dyn Handler> = Arc::new(handler);

        let stop_fetching = CancellationToken::new();
        let stop_settler = CancellationToken::new();
        let stop_services = CancellationToken::new();
        let (settle_tx, settle_rx) = mpsc::unbounded_channel();

        let settler = tokio::spawn(settler::run(
            shared.clone(),
            settle_rx,
            stop_settler.clone(),
        ));
        let fetcher = tokio::spawn(fetcher::run(
            shared.clone(),
            handler,
            settle_tx,
            stop_fetching.clone(),
        ));
        let mut services = vec![
            crate::service::spawn(
                heartbeat::Heartbeat::new(shared.clone()),
                stop_services.clone(),
            ),
            crate::service::spawn(
                heartbeat::LeaseWatch::new(shared.clone()),
                stop_services.clone(),
            ),
        ];
        if shared.config.maintenance {
            services.extend(services::spawn_maintenance(
                &shared.queue,
                &shared.config,
                &stop_services,
            ));
        }
        tracing::info!(worker = %shared.id, queue = %shared.queue.name(), "worker started");
        Ok(WorkerHandle {
            shared,
            fetcher,
            settler,
            services,
            stop_fetching,
            stop_settler,
            stop_services,
        })
    }
}

/// A running worker. Dropping it does not stop it; call
/// [`shutdown`](Self::shutdown).
pub struct WorkerHandle {
    shared: Arc<Shared>,
    fetcher: JoinHandle<Vec<LeaseKey>>,
    settler: JoinHandle<()>,
    services: Vec<JoinHandle<()>>,
    stop_fetching: CancellationToken,
    stop_settler: CancellationToken,
    stop_services: CancellationToken,
}

impl fmt::Debug for WorkerHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WorkerHandle")
            .field("id", &self.shared.id)
            .field("queue", self.shared.queue.name())
            .finish_non_exhaustive()
    }
}

impl WorkerHandle {
    /// The worker's id.
    pub fn id(&self) -> &str {
        &self.shared.id
    }

    /// Counters since the worker started.
    pub fn stats(&self) -> WorkerStats {
        let c = &self.shared.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        WorkerStats {
            fetched: get(&c.fetched),
            completed: get(&c.completed),
            retried: get(&c.retried),
            dead: get(&c.dead),
            cancelled: get(&c.cancelled),
            lost: get(&c.lost),
            unrenewed: get(&c.unrenewed),
            aborted: get(&c.aborted),
            handed_back: get(&c.handed_back),
            running: (self.shared.config.concurrency - self.shared.slots.available_permits())
                as u64,
            in_hand: self.shared.leases().len() as u64,
        }
    }

    /// Stops the worker gracefully, in the order given in the module docs.
    /// Returns an error only when jobs could not be handed back because Redis
    /// was unreachable; those jobs run again once their leases expire.
    pub async fn shutdown(self) -> Result<()> {
        let shared = self.shared;
        let grace = shared.config.shutdown_grace;

        // 1. Stop fetching; hand back what was leased but not started.
        self.stop_fetching.cancel();
        let unstarted = self.fetcher.await.unwrap_or_default();
        let mut result = hand_back(&shared, &unstarted).await;

        // 2. Wait for running handlers, up to the grace period.
        let concurrency = shared.config.concurrency as u32;
        let all_slots = shared.slots.clone().acquire_many_owned(concurrency);
        let mut all_slots = Box::pin(all_slots);
        // Handlers that neither the signal nor the abort stopped.
        let mut blocked: Vec<LeaseKey> = Vec::new();
        if tokio::time::timeout(grace, &mut all_slots).await.is_err() {
            // 3. Signal the rest and give them a last moment.
            let still_running = {
                let leases = shared.leases();
                for lease in leases.values() {
                    lease.cancel.cancel();
                }
                leases.len()
            };
            tracing::warn!(
                worker = %shared.id,
                still_running,
                ?grace,
                "handlers still running after the shutdown grace; signalled them to stop"
            );
            if tokio::time::timeout(HARD_STOP_SLACK, &mut all_slots)
                .await
                .is_err()
            {
                // 4. Abort those that ignored the signal, and wait for
                // their tasks to end.
                let (keys, mut tasks): (Vec<LeaseKey>, Vec<JoinHandle<()>>) = shared
                    .leases()
                    .iter_mut()
                    .filter(|(_, lease)| !lease.is_idle())
                    .filter_map(|(key, lease)| lease.task.take().map(|task| (*key, task)))
                    .unzip();
                for task in &tasks {
                    task.abort();
                }
                shared
                    .counters
                    .aborted
                    .fetch_add(tasks.len() as u64, Ordering::Relaxed);
                tracing::warn!(worker = %shared.id, aborted = tasks.len(),
                    "handlers ignored the signal to stop; aborted them");
                let ending = futures::future::join_all(tasks.iter_mut());
                let _ = tokio::time::timeout(HARD_STOP_SLACK, ending).await;
                blocked.extend(
                    keys.into_iter()
                        .zip(&tasks)
                        .filter(|(_, task)| !task.is_finished())
                        .map(|(key, _)| key),
                );
            }
        }

        // 5. Write every outcome held.
        self.stop_settler.cancel();
        let _ = self.settler.await;

        // 6. Hand back jobs whose handlers did not finish, unless a handler
        // still runs (blocked where neither signal nor abort reaches it).
        let mut unfinished: Vec<LeaseKey> = shared
            .leases()
            .iter()
            .filter(|(key, lease)| lease.is_idle() && !blocked.contains(key))
            .map(|(key, _)| *key)
            .collect();
        if !blocked.is_empty() {
            tracing::error!(worker = %shared.id, jobs = ?blocked.iter().map(|k| k.id).collect::<Vec<_>>(),
                "handlers still run after being aborted (blocked outside the runtime); their jobs are \
                 not handed back and run again once their leases lapse");
        }
        if !unfinished.is_empty() {
            unfinished.sort_unstable_by_key(|k| (k.token, k.id));
            let handed = hand_back(&shared, &unfinished).await;
            result = result.and(handed);
        }

        // 7. Stop services; leave the registry.
        self.stop_services.cancel();
        for service in self.services {
            let _ = service.await;
        }
        if let Err(err) = deregister(&shared).await {
            tracing::warn!(worker = %shared.id, error = %err, "could not deregister the worker; the rescuer will");
        }
        tracing::info!(worker = %shared.id, queue = %shared.queue.name(), "worker stopped");
        result
    }
}

/// Returns leased jobs to the front of their waiting lists, in the order
/// given (oldest first).
async fn hand_back(shared: &Shared, leases: &[LeaseKey]) -> Result<()> {
    let keys = shared.queue.keys();
    for chunk in leases.chunks(MAX_FETCH) {
        let mut call = calls::hand_back(keys, &shared.active_key);
        lease_groups(&mut call, chunk);
        let handed: u64 = call.invoke(shared.queue.redis()).await.map_err(|err| {
            tracing::error!(worker = %shared.id, error = %err, jobs = chunk.len(),
                    "could not hand back jobs; they run again when their leases expire");
            err
        })?;
        shared
            .counters
            .handed_back
            .fetch_add(handed, Ordering::Relaxed);
        let mut leases = shared.leases();
        for key in chunk {
            leases.remove(key);
        }
    }
    Ok(())
}

/// Removes the worker from the registry once it holds no leases.
async fn deregister(shared: &Shared) -> Result<()> {
    let redis = shared.queue.redis();
    let held: u64 = redis
        .query(redis::cmd("HLEN").arg(&shared.active_key))
        .await?;
    if held == 0 {
        let _: () = redis
            .query(
                redis::cmd("ZREM")
                    .arg(shared.queue.keys().workers())
                    .arg(&shared.id),
            )
            .await?;
    }
    Ok(())
}

/// Runs one leased job: decode, handler with timeout and panic guard, and
/// hands the outcome to the settler. The permit bounds concurrency.
async fn run_job(
    shared: Arc<Shared>,
    handler: Arc<dyn Handler>,
    key: LeaseKey,
    rec: Vec<u8>,
    settle: mpsc::UnboundedSender<Settle>,
    permit: OwnedSemaphorePermit,
) {
    let (attempt, max_attempts, outcome) = match record::decode(&rec) {
        Err(err) => (
            1,
            1,
            Outcome::fail(format!("the job record cannot be read: {err}")),
        ),
        Ok(decoded) => {
            let header = decoded.header;
            let timeout = Duration::from_millis(u64::from(header.timeout_ms));
            let cancel = match shared.leases().get_mut(&key) {
                Some(lease) => {
                    lease.started = Some(Instant::now());
                    lease.timeout = timeout;
                    lease.cancel.clone()
                }
                // The job was cancelled or rescued while it waited in hand,
                // or its lease could not be renewed: it is no longer ours to
                // run.
                None => return,
            };
            let job = Job {
                id: JobId(key.id),
                queue: shared.queue_name.clone(),
                payload: decoded.payload,
                attempt: header.attempts.saturating_add(1),
                max_attempts: header.max_attempts,
                priority: header.priority,
                timeout,
                enqueued_at_ms: header.enqueued_at_ms,
                last_error: decoded.last_error,
                cancel,
            };
            let attempt = job.attempt;
            let run = AssertUnwindSafe(handler.call(job)).catch_unwind();
            let outcome = match tokio::time::timeout(timeout, run).await {
                Err(_) => Outcome::retry(format!("timed out after {timeout:?}")),
                Ok(Err(panic)) => {
                    Outcome::retry(format!("handler panicked: {}", panic_message(&panic)))
                }
                Ok(Ok(outcome)) => outcome,
            };
            (attempt, header.max_attempts, outcome)
        }
    };
    let message = match outcome {
        Outcome::Done => Settle::Complete(key),
        Outcome::Retry { after, error } => {
            let delay = after.unwrap_or_else(|| shared.config.backoff.delay(attempt));
            let retry_at = if attempt >= max_attempts {
                -1
            } else {
                (shared.now_ms() + ms(delay)) as i64
            };
            Settle::Fail {
                key,
                retry_at,
                error,
            }
        }
        Outcome::Fail { error } => Settle::Fail {
            key,
            retry_at: -1,
            error,
        },
        Outcome::Cancel { reason } => Settle::Cancel { key, reason },
    };
    // The settler outlives every job task except at the very end of a
    // shutdown, when the job has been handed back anyway.
    let _ = settle.send(message);
    drop(permit);
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "(no message)".to_string()
    }
}

fn check_worker_id(id: &str) -> Result<()> {
    if id.is_empty()
        || id.len() > 128
        || !id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
    {
        return Err(Error::invalid(format!(
            "worker id {id:?} must be 1 to 128 characters from A-Z a-z 0-9 _ - ."
        )));
    }
    Ok(())
}

/// `host-pid-random`: readable in the dashboard, unique across restarts.
fn default_worker_id() -> String {
    use rand::RngExt;
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "host".to_string());
    let host: String = host
        .trim()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.'))
        .take(64)
        .collect();
    let suffix: u32 = rand::rng().random();
    format!("{host}-{}-{suffix:08x}", std::process::id())
}
