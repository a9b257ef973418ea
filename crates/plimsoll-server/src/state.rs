//! What every request handler shares: the configuration, the Redis
//! connection, one [`Queue`] handle per queue (so that single enqueues from
//! many requests share one batcher), the webhook spool and the counters.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Instant;

use plimsoll::{Cache, Guard, Queue, QueueConfig, Redis};

use crate::config::ServerConfig;
use crate::error::{ApiError, ApiResult};
use crate::intake::spool::Spool;
use crate::metrics::Metrics;
use crate::rates::Rates;

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
    cache: Cache,
    guard: Option<Guard>,
    /// Whether the spool's "filling" alert is raised.
    spool_alert: AtomicBool,
    metrics: Metrics,
    rates: Rates,
    shutting_down: AtomicBool,
    started: Instant,
    /// What Redis does not promise (see `plimsoll::durability`), for `/readyz`.
    redis_warnings: RwLock<Vec<String>>,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("listen", &self.inner.config.listen)
            .finish_non_exhaustive()
    }
}

impl AppState {
    /// State over a connected Redis and an opened spool. `tokens` are the
    /// bearer tokens the API accepts (configured or generated). The cache
    /// gets a connection of its own, so that its few-millisecond budget is
    /// not spent behind the queue's batches; the guard (unless switched off)
    /// loads its history. Nothing runs yet. Must be called inside a Tokio
    /// runtime.
    pub fn new(
        config: ServerConfig,
        redis: Redis,
        tokens: Vec<String>,
        spool: Spool,
    ) -> plimsoll::Result<Self> {
        let cache = Cache::connect(redis.config().clone(), config.cache.clone())?;
        let guard = match &config.guard {
            Some(guard) => Some(Guard::new(redis.clone(), guard.clone())?),
            None => None,
        };
        let mut metrics = Metrics::new();
        if let Some(guard) = &guard {
            metrics.register_guard(guard.clone());
        }
        Ok(Self {
            inner: Arc::new(Inner {
                cache,
                guard,
                spool_alert: AtomicBool::new(false),
                config,
                redis,
                tokens,
                queues: RwLock::new(HashMap::new()),
                spool,
                metrics,
                rates: Rates::default(),
                shutting_down: AtomicBool::new(false),
                started: Instant::now(),
                redis_warnings: RwLock::new(Vec::new()),
            }),
        })
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

    pub fn cache(&self) -> &Cache {
        &self.inner.cache
    }

    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    pub fn rates(&self) -> &Rates {
        &self.inner.rates
    }

    /// The memory guard, unless it is switched off.
    pub fn guard(&self) -> Option<&Guard> {
        self.inner.guard.as_ref()
    }

    /// Flips the spool's alert state; returns whether it changed.
    pub fn set_spool_alert(&self, raised: bool) -> bool {
        self.inner.spool_alert.swap(raised, Ordering::Relaxed) != raised
    }

    pub fn uptime(&self) -> std::time::Duration {
        self.inner.started.elapsed()
    }

    /// What Redis does not promise, as `/readyz` lists it.
    pub fn redis_warnings(&self) -> Vec<String> {
        self.inner
            .redis_warnings
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn set_redis_warnings(&self, warnings: Vec<String>) {
        *self
            .inner
            .redis_warnings
            .write()
            .unwrap_or_else(|e| e.into_inner()) = warnings;
    }

    pub fn is_shutting_down(&self) -> bool {
        self.inner.shutting_down.load(Ordering::Relaxed)
    }

    pub fn begin_shutdown(&self) {
        self.inner.shutting_down.store(true, Ordering::Relaxed);
    }

    /// The queue settings for `name`: the configured ones (retention
    /// included: a push worker's settles and janitor apply it), or the
    /// defaults.
    pub fn queue_config(&self, name: &str) -> QueueConfig {
        let mut config = QueueConfig {
            prefix: self.inner.config.prefix.clone(),
            durability: self.inner.config.durability,
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
            if let Some(durability) = settings.durability {
                config.durability = durability;
            }
            if let Some(retention) = settings.retention {
                config.retention = retention;
            }
            if let Some(limit) = settings.payload_limit {
                config.payload_limit = limit;
            }
            if let Some(window) = settings.idempotency_window {
                config.idempotency_window = window;
            }
        }
        config.allow_evicting_redis = self.inner.config.allow_eviction;
        config.max_queues = self.inner.config.max_queues;
        // Queues the operator named are never locked out by queues that API
        // callers invented (there are only as many as the file names).
        config.exempt_from_max_queues = self.inner.config.names_queue(name);
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
    /// Every queue: those used so far (the library's registry in Redis)
    /// and those configured, sorted, each once. The API, the dashboard and
    /// the sampler list the same queues.
    pub async fn queue_names(&self) -> ApiResult<Vec<String>> {
        let mut names: Vec<String> = Queue::list(self.redis(), &self.config().prefix)
            .await?
            .into_iter()
            .map(|n| n.as_str().to_string())
            .collect();
        for configured in self.config().queues.keys() {
            names.push(configured.as_str().to_string());
        }
        names.sort();
        names.dedup();
        Ok(names)
    }
}
