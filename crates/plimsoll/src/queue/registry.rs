//! The registry of queues (`<prefix>:queues`): registering a queue before
//! it is used, listing the queues, and finding those the registry lost.
//!
//! The registry is one key, so on a cluster it lives on one shard. While that
//! shard fails over, an enqueue to a new queue on a healthy shard must still
//! work, and a registration the failover lost must come back. So:
//!
//! - A handle registers its queue before its first write (`register.lua`,
//!   which also enforces the cap on queues), but waits for the registry at
//!   most [`REGISTER_WAIT`]: when the registry does not answer, the enqueue
//!   goes on, and the handle tries again after [`REGISTER_RETRY`]. Only a
//!   registry that answers "full" stops an enqueue
//!   ([`TooManyQueues`](crate::ErrorKind::TooManyQueues)).
//! - While it enqueues, a handle registers again every
//!   [`REGISTRY_REFRESH`], in the background: one small script a minute.
//! - [`Queue::list`] adds the queues it finds by their `meta` key on every
//!   primary (a bounded `SCAN`) and puts those missing back in the registry,
//!   so a queue nobody enqueues to any more still shows while it holds jobs.
//!
//! Times are read from the queue's clock, so tests move them with a
//! [`ManualClock`](crate::ManualClock).

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use super::Queue;
use super::scripts::{PRODUCER_SOURCES, calls};
use crate::clock::ms;
use crate::connection::{Redis, glob_escape};
use crate::error::{Error, ErrorKind, Result};
use crate::keyspace::{QueueName, queues_registry};

/// How long the first enqueue of a handle waits for the registry before it
/// goes on without it: a registry on a shard that is failing over must not
/// hold up queues on healthy shards for the whole response timeout.
pub const REGISTER_WAIT: Duration = Duration::from_millis(250);
/// After the registry did not answer, how long a handle enqueues without
/// asking it again (each try may cost an enqueue [`REGISTER_WAIT`]).
pub const REGISTER_RETRY: Duration = Duration::from_secs(5);
/// How often a handle that enqueues registers its queue again, so that a
/// registration lost in a failover (or a registry deleted by hand) heals
/// within a minute of the next enqueue.
pub const REGISTRY_REFRESH: Duration = Duration::from_secs(60);
/// SCAN calls (of 1,000 keys each) [`Queue::list`] spends per primary
/// looking for queues the registry lacks: every queue of a keyspace of up to
/// 8,000 keys per primary, a sample of a larger one (whose queues the
/// periodic re-registration covers while they are used).
pub const DISCOVERY_SCAN_CALLS: usize = 8;

/// A handle's registration: when it last succeeded and when it last failed,
/// in ms of the queue's clock (0: never).
#[derive(Debug, Default)]
pub(crate) struct Registration {
    registered_at: AtomicU64,
    failed_at: AtomicU64,
    /// A background refresh is on its way.
    refreshing: AtomicBool,
}

impl Registration {
    /// Forgets the registration (the queue was deleted): the next enqueue
    /// registers again.
    pub(crate) fn reset(&self) {
        self.registered_at.store(0, Ordering::Relaxed);
        self.failed_at.store(0, Ordering::Relaxed);
    }
}

impl Queue {
    /// Makes sure the queue is in the registry before a write, without
    /// letting an unreachable registry stop the write.
    ///
    /// Errors: [`TooManyQueues`](ErrorKind::TooManyQueues) when the registry
    /// answered that it is full and lacks this queue. Every other failure is
    /// logged and the write goes on.
    pub(crate) async fn register(&self) -> Result<()> {
        self.check_redis().await?;
        // Due times are computed on Redis' time too.
        self.ensure_clock().await?;
        let state = &self.inner.registration;
        let now = self.now_ms();
        let registered_at = state.registered_at.load(Ordering::Relaxed);
        if registered_at != 0 {
            if now.saturating_sub(registered_at) >= ms(REGISTRY_REFRESH)
                && !state.refreshing.swap(true, Ordering::AcqRel)
            {
                let queue = self.clone();
                tokio::spawn(async move {
                    queue.register_now(now).await;
                    queue
                        .inner
                        .registration
                        .refreshing
                        .store(false, Ordering::Release);
                });
            }
            return Ok(());
        }
        let failed_at = state.failed_at.load(Ordering::Relaxed);
        if failed_at != 0 && now.saturating_sub(failed_at) < ms(REGISTER_RETRY) {
            return Ok(());
        }
        match tokio::time::timeout(REGISTER_WAIT, self.try_register(now)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(err)) if err.kind() == ErrorKind::TooManyQueues => Err(err),
            Ok(Err(err)) => {
                self.registry_unreachable(now, &err.to_string());
                Ok(())
            }
            Err(_) => {
                self.registry_unreachable(now, &format!("no answer within {REGISTER_WAIT:?}"));
                Ok(())
            }
        }
    }

    /// A background refresh: registers again, logging what goes wrong.
    async fn register_now(&self, now: u64) {
        if let Err(err) = self.try_register(now).await {
            tracing::warn!(
                queue = %self.inner.name,
                error = %err,
                "could not register the queue again; the next refresh tries again"
            );
            // Try again at the next enqueue after REGISTER_RETRY rather
            // than a whole refresh later.
            let state = &self.inner.registration;
            let retry_at = now.saturating_sub(ms(REGISTRY_REFRESH)) + ms(REGISTER_RETRY);
            state
                .registered_at
                .store(retry_at.max(1), Ordering::Relaxed);
        }
    }

    async fn try_register(&self, now: u64) -> Result<()> {
        let config = &self.inner.config;
        let registry = queues_registry(&config.prefix);
        let register = calls::register(
            &registry,
            self.inner.name.as_str(),
            config.max_queues,
            config.exempt_from_max_queues,
        );
        let registered: i64 = self
            .inner
            .redis
            .evalsha(&register, &PRODUCER_SOURCES.register, &registry)
            .await?;
        if registered == 0 {
            return Err(Error::new(
                ErrorKind::TooManyQueues,
                format!(
                    "queue {:?} is new and the registry {} already holds {} queues, its cap \
                     (QueueConfig::max_queues, redis.max_queues in plimsoll serve); delete unused queues \
                     (plimsoll queue delete) or raise the cap",
                    self.inner.name.as_str(),
                    queues_registry(&config.prefix),
                    config.max_queues
                ),
            ));
        }
        let state = &self.inner.registration;
        state.registered_at.store(now.max(1), Ordering::Relaxed);
        state.failed_at.store(0, Ordering::Relaxed);
        Ok(())
    }

    fn registry_unreachable(&self, now: u64, why: &str) {
        tracing::warn!(
            queue = %self.inner.name,
            error = why,
            "the queue registry did not answer; enqueueing without registering, trying again later"
        );
        self.inner
            .registration
            .failed_at
            .store(now.max(1), Ordering::Relaxed);
    }

    /// Names of the queues under `prefix`: those in the registry, and those
    /// found by their `meta` key on every primary (a bounded scan, see
    /// [`DISCOVERY_SCAN_CALLS`]), which are put back in the registry. While
    /// the registry cannot be read (its shard failing over), the queues the
    /// scan finds.
    ///
    /// Errors: when neither the registry nor any primary could be read.
    pub async fn list(redis: &Redis, prefix: &str) -> Result<Vec<QueueName>> {
        let registry = queues_registry(prefix);
        let listed: Result<Vec<String>> = redis.query(redis::cmd("SMEMBERS").arg(&registry)).await;
        let pattern = format!("{}:{{*}}:meta", glob_escape(prefix));
        let found = redis.scan_primaries(&pattern, DISCOVERY_SCAN_CALLS).await;
        let (listed, found) = match (listed, found) {
            (Err(err), Err(_)) => return Err(err),
            (Err(err), Ok((found, _))) => {
                tracing::warn!(error = %err, "the queue registry could not be read; listing the queues found on the primaries");
                (None, found)
            }
            (Ok(listed), Err(err)) => {
                tracing::warn!(error = %err, "no primary could be scanned for queues; listing the registry alone");
                (Some(listed), Vec::new())
            }
            (Ok(listed), Ok((found, _))) => (Some(listed), found),
        };
        let start = format!("{prefix}:{{");
        let discovered: BTreeSet<String> = found
            .iter()
            .filter_map(|key| key.strip_prefix(&start)?.strip_suffix("}:meta"))
            .filter(|name| QueueName::new(*name).is_ok())
            .map(str::to_string)
            .collect();
        let mut names: BTreeSet<String> = listed.iter().flatten().cloned().collect();
        if let Some(listed) = &listed {
            let registered: BTreeSet<&String> = listed.iter().collect();
            let missing: Vec<&String> = discovered
                .iter()
                .filter(|n| !registered.contains(n))
                .collect();
            if !missing.is_empty() {
                // Queues that hold data are put back whatever the cap: the cap
                // keeps new names out, it must not hide queues that exist.
                let healed: Result<u64> = redis
                    .query(redis::cmd("SADD").arg(&registry).arg(&missing))
                    .await;
                match healed {
                    Ok(_) => {
                        tracing::info!(queues = ?missing, "queues missing from the registry were found and registered again")
                    }
                    Err(err) => {
                        tracing::warn!(error = %err, "could not register found queues again")
                    }
                }
            }
        }
        names.extend(discovered);
        Ok(names
            .into_iter()
            .filter_map(|n| QueueName::new(n).ok())
            .collect())
    }
}
