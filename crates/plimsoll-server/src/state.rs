//! What every request handler shares: the configuration, the Redis
//! connection, one [`Queue`] handle per queue (so that single enqueues from
//! many requests share one batcher), the webhook spool and the counters.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Instant;

use plimsoll::{Queue, QueueConfig, Redis};

use crate::config::ServerConfig;
use crate::error::{ApiError, ApiResult};
use crate::intake::spool::Spool;
use crate::metrics::Metrics;
use crate::rates::Rates;

/// Memory samples kept for the dashboard's chart: an hour at the sampler's
/// interval.
const MEMORY_HISTORY: usize = 720;

/// Queue handles kept at most; beyond, handles are made per request (an API
/// caller naming endless queues must not grow the server's memory).
const MAX_QUEUE_HANDLES: usize = 10_000;

/// Shared state of the server; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

struct Inner {
    config: ServerConfig,
    redis: Redis,
    tokens: Vec<String>,
    queues: RwLock<HashMap<String, Queue>>,
    spool: Spool,
    metrics: Metrics,
    rates: Rates,
    shutting_down: AtomicBool,
    started: Instant,
    extras: Extras,
    memory: RwLock<VecDeque<(u64, u64)>>,
}

/// Parts that are optional: the memory guard and the cache, when running.
#[derive(Debug, Clone, Default)]
pub struct Extras {}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("listen", &self.inner.config.listen)
            .finish_non_exhaustive()
    }
}

impl AppState {
    /// State over a connected Redis and an opened spool. `tokens` are the
    /// bearer tokens the API accepts (configured or generated).
    pub fn new(config: ServerConfig, redis: Redis, tokens: Vec<String>, spool: Spool) -> Self {
        Self {
            inner: Arc::new(Inner {
                config,
                redis,
                tokens,
                queues: RwLock::new(HashMap::new()),
                spool,
                metrics: Metrics::new(),
                rates: Rates::default(),
                shutting_down: AtomicBool::new(false),
                started: Instant::now(),
                extras: Extras::default(),
                memory: RwLock::new(VecDeque::with_capacity(MEMORY_HISTORY)),
            }),
        }
    }

    pub fn config(&self) -> &ServerConfig {
        &self.inner.config
    }

    pub fn redis(&self) -> &Redis {
        &self.inner.redis
    }

    pub fn tokens(&self) -> &[String] {
        &self.inner.tokens
    }

    pub fn spool(&self) -> &Spool {
        &self.inner.spool
    }

    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    pub fn rates(&self) -> &Rates {
        &self.inner.rates
    }

    #[allow(dead_code)]
    pub fn extras(&self) -> &Extras {
        &self.inner.extras
    }

    /// Records Redis' used memory at `at_ms`.
    pub fn record_memory(&self, at_ms: u64, used: u64) {
        let mut memory = self.inner.memory.write().unwrap_or_else(|e| e.into_inner());
        if memory.len() == MEMORY_HISTORY {
            memory.pop_front();
        }
        memory.push_back((at_ms, used));
    }

    /// Used memory over the last hour: (ms since the epoch, bytes).
    pub fn memory_history(&self) -> Vec<(u64, u64)> {
        self.inner
            .memory
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .copied()
            .collect()
    }

    pub fn uptime(&self) -> std::time::Duration {
        self.inner.started.elapsed()
    }

    pub fn is_shutting_down(&self) -> bool {
        self.inner.shutting_down.load(Ordering::Relaxed)
    }

    pub fn begin_shutdown(&self) {
        self.inner.shutting_down.store(true, Ordering::Relaxed);
    }

    /// The queue settings for `name`: the configured ones, or the defaults.
    pub fn queue_config(&self, name: &str) -> QueueConfig {
        let mut config = QueueConfig {
            prefix: self.inner.config.prefix.clone(),
            ..QueueConfig::default()
        };
        if let Some(settings) = self
            .inner
            .config
            .queues
            .iter()
            .find(|(q, _)| q.as_str() == name)
            .map(|(_, s)| s)
        {
            if let Some(attempts) = settings.max_attempts {
                config.default_max_attempts = attempts;
            }
            if let Some(timeout) = settings.timeout {
                config.default_timeout = timeout;
            }
        }
        config
    }

    /// The handle of queue `name`, made on first use.
    pub fn queue(&self, name: &str) -> ApiResult<Queue> {
        if let Some(queue) = self
            .inner
            .queues
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
        {
            return Ok(queue.clone());
        }
        let queue = Queue::new(self.inner.redis.clone(), name, self.queue_config(name))
            .map_err(ApiError::from)?;
        let mut queues = self.inner.queues.write().unwrap_or_else(|e| e.into_inner());
        if queues.len() < MAX_QUEUE_HANDLES {
            queues
                .entry(name.to_string())
                .or_insert_with(|| queue.clone());
        }
        Ok(queue)
    }
}
