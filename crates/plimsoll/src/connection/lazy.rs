//! A handle made before Redis answers.
//!
//! `plimsoll serve` must start while its Redis is down — a deploy during an
//! outage is exactly when its webhook spool is needed — so it needs a
//! [`Redis`] it can hand out at once. [`Redis::connect_lazy`] returns one
//! whose commands fail at once with a [`Connection`](crate::ErrorKind::Connection)
//! error until a background task has connected (detecting a cluster as
//! [`Redis::connect`] does); from then on every clone of it is the connected
//! handle, which reconnects by itself as any other does.
//!
//! Each attempt first opens one plain connection with the configured connect
//! timeout: the connection manager behind [`Redis::connect`] retries for
//! seconds before it gives up, which would make the handle join that much
//! later than Redis came back.

use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use redis::aio::ConnectionLike;
use redis::{AsyncConnectionConfig, Cmd, Pipeline, RedisFuture, Value};
use tokio::sync::watch;

use super::{Conn, Redis, RedisConfig, Topology, connect_error};
use crate::error::{Error, ErrorKind, Result};

/// Wait after the first failed attempt; it doubles up to
/// [`LAZY_RETRY_MAX`].
pub const LAZY_RETRY_FIRST: Duration = Duration::from_millis(100);
/// Longest wait between attempts: how late, at most, the handle joins after
/// Redis starts answering (plus one connect timeout).
pub const LAZY_RETRY_MAX: Duration = Duration::from_secs(1);

/// The state a lazy handle's clones share.
pub(super) struct Lazy {
    /// The handle once connected.
    redis: OnceLock<Redis>,
    connected: watch::Sender<bool>,
    /// Why the last attempt failed: its kind and message.
    last_error: Mutex<Option<(ErrorKind, String)>>,
}

impl Lazy {
    fn not_connected(&self) -> redis::RedisError {
        let last = match &*self.last_error.lock().unwrap_or_else(|e| e.into_inner()) {
            Some((_, message)) => message.clone(),
            None => "no attempt yet".to_string(),
        };
        std::io::Error::new(
            std::io::ErrorKind::NotConnected,
            format!("not connected to Redis yet ({last})"),
        )
        .into()
    }

    /// The connected handle, if there is one yet.
    pub(super) fn get(&self) -> Option<&Redis> {
        self.redis.get()
    }

    pub(super) fn req_packed_command<'a>(&self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self.redis.get() {
            Some(redis) => {
                let mut redis = redis.clone();
                Box::pin(async move { redis.req_packed_command(cmd).await })
            }
            None => Box::pin(std::future::ready(Err(self.not_connected()))),
        }
    }

    pub(super) fn req_packed_commands<'a>(
        &self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self.redis.get() {
            Some(redis) => {
                let mut redis = redis.clone();
                Box::pin(async move { redis.req_packed_commands(pipeline, offset, count).await })
            }
            None => Box::pin(std::future::ready(Err(self.not_connected()))),
        }
    }

    pub(super) fn get_db(&self) -> i64 {
        self.redis.get().map_or(0, ConnectionLike::get_db)
    }

    pub(super) fn not_connected_error(&self) -> Error {
        self.not_connected().into()
    }
}

impl Redis {
    /// A handle usable at once, connected in the background: until Redis
    /// answers, every command fails at once with a
    /// [`Connection`](crate::ErrorKind::Connection) error; then the handle
    /// (and each clone) works as one from [`connect`](Self::connect).
    /// Attempts are spaced from [`LAZY_RETRY_FIRST`] up to
    /// [`LAZY_RETRY_MAX`] and stop when the last clone is dropped. Must be
    /// called inside a Tokio runtime.
    pub fn connect_lazy(config: RedisConfig) -> Result<Self> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
            Error::invalid("Redis::connect_lazy must be called inside a Tokio runtime")
        })?;
        let (connected, _) = watch::channel(false);
        let lazy = Arc::new(Lazy {
            redis: OnceLock::new(),
            connected,
            last_error: Mutex::new(None),
        });
        runtime.spawn(connect_in_background(Arc::downgrade(&lazy), config.clone()));
        Ok(Self {
            conn: Conn::Lazy(lazy),
            config: Arc::new(config),
        })
    }

    /// Whether the handle is connected: always for one from
    /// [`connect`](Self::connect); for one from
    /// [`connect_lazy`](Self::connect_lazy), once Redis has answered.
    pub fn is_connected(&self) -> bool {
        match &self.conn {
            Conn::Lazy(lazy) => lazy.get().is_some(),
            _ => true,
        }
    }

    /// Why the last attempt of a handle from
    /// [`connect_lazy`](Self::connect_lazy) to connect failed, while it is
    /// not connected: a [`Connection`](ErrorKind::Connection) or
    /// [`Timeout`](ErrorKind::Timeout) error while Redis does not answer,
    /// another kind when it answered and refused (a wrong password, say).
    pub fn connect_error(&self) -> Option<Error> {
        match &self.conn {
            Conn::Lazy(lazy) if lazy.get().is_none() => lazy
                .last_error
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .as_ref()
                .map(|(kind, message)| Error::new(*kind, message.clone())),
            _ => None,
        }
    }

    /// Waits until [`is_connected`](Self::is_connected).
    pub async fn connected(&self) {
        if let Conn::Lazy(lazy) = &self.conn {
            let mut connected = lazy.connected.subscribe();
            // The sender lives in `lazy`, which this handle keeps alive.
            let _ = connected.wait_for(|c| *c).await;
        }
    }
}

async fn connect_in_background(lazy: Weak<Lazy>, config: RedisConfig) {
    let mut wait = LAZY_RETRY_FIRST;
    let mut failures = 0u64;
    loop {
        let result = attempt(&config).await;
        let Some(state) = lazy.upgrade() else {
            return;
        };
        match result {
            Ok(redis) => {
                let _ = state.redis.set(redis);
                state.connected.send_replace(true);
                if failures > 0 {
                    tracing::info!(redis = %config.redacted_urls().join(","), failures,
                        "connected to Redis");
                }
                return;
            }
            Err(err) => {
                if failures == 0 {
                    tracing::warn!(redis = %config.redacted_urls().join(","), error = %err,
                        "Redis does not answer yet; connecting in the background");
                } else {
                    tracing::debug!(error = %err, failures, "Redis still does not answer");
                }
                failures += 1;
                *state.last_error.lock().unwrap_or_else(|e| e.into_inner()) =
                    Some((err.kind(), err.message().to_string()));
            }
        }
        drop(state);
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(LAZY_RETRY_MAX);
    }
}

/// One attempt: a quick probe (which also tells a cluster from one
/// server), then the handle proper.
async fn attempt(config: &RedisConfig) -> Result<Redis> {
    let topology = match config.topology {
        Topology::Cluster => Topology::Cluster,
        asked => {
            let client = redis::Client::open(config.urls[0].as_str())
                .map_err(|err| connect_error(config, err))?;
            let probe_config = AsyncConnectionConfig::new()
                .set_connection_timeout(Some(config.connect_timeout))
                .set_response_timeout(Some(config.response_timeout));
            let mut probe = client
                .get_multiplexed_async_connection_with_config(&probe_config)
                .await
                .map_err(|err| connect_error(config, err))?;
            match asked {
                Topology::Auto => {
                    let info: String = super::info::info_command(&["cluster"])
                        .query_async(&mut probe)
                        .await?;
                    if super::Info::parse(&info).cluster_enabled() {
                        Topology::Cluster
                    } else {
                        Topology::Single
                    }
                }
                other => other,
            }
        }
    };
    Redis::open(config.clone(), topology, None).await
}
