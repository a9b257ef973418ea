//! The connection layer every part of Plimsoll shares.
//!
//! [`Redis`] is a cheap-to-clone handle over either one Redis server (a
//! redis-rs `ConnectionManager`: one multiplexed connection that reconnects
//! by itself) or a Redis Cluster (redis-rs `ClusterConnection`, which follows
//! slot moves). Commands from many tasks share one socket and are pipelined
//! by the client, so a batch of concurrent calls costs one round trip.
//!
//! Whether a URL points at a cluster is detected at connect time
//! (`INFO cluster`), so the same configuration works for both. The queue
//! keeps all keys of one queue under one hash tag, which is what makes the
//! same Lua scripts valid on a cluster.
//!
//! Blocking commands (`BLPOP`, `WAIT`) must not share the multiplexed socket,
//! or they would stall every other caller behind them; [`Redis::dedicated`]
//! opens a separate connection for them.
//!
//! A command that Redis refuses *before running it*, for a reason that passes
//! by itself — a slot migrating (`TRYAGAIN`, `ASK`), a cluster failing over
//! (`CLUSTERDOWN`), a server loading its data — is tried again within the
//! call's budget (the response timeout), with short waits: the cluster client
//! does a few quick retries itself ([`CLUSTER_RETRIES`]), and writes that go
//! through [`Redis::retry_refused`] keep trying until the budget is spent.
//! When it is, the error names the cause (`slot migrating (TRYAGAIN)`), not a
//! timeout: with the client's default waits (1.28 s and up, 16 times) an
//! enqueue during a slot migration used to wait out the whole response
//! timeout and report that Redis could not be reached, while Redis was
//! answering all along.
//!
//! [`Redis::connect_lazy`] (in `lazy.rs`) makes a handle before Redis
//! answers, for a server that must start during an outage.

pub(crate) mod info;
mod lazy;
mod nodes;

pub use info::Info;
pub(crate) use nodes::glob_escape;
pub use nodes::{Primary, SCRIPT_LOAD_WAIT};

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, IntoConnectionInfo, Pipeline, RedisError, RedisFuture, ServerErrorKind, Value};

use crate::error::{Error, ErrorKind, Result};

/// How long to wait for a TCP connection to Redis.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long to wait for any one reply. Generous, because a batch of 1,000 jobs
/// is one command; the cache uses its own, much shorter, budget on top.
pub const DEFAULT_RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);
/// Times the cluster client retries a command that a node refused with a
/// redirection or a passing condition (`MOVED`, `ASK`, `TRYAGAIN`,
/// `CLUSTERDOWN`) before it gives the error back. Redirections are retried at
/// once; the others after [`CLUSTER_MIN_RETRY_WAIT`] to
/// [`CLUSTER_MAX_RETRY_WAIT`], doubling: a quarter of a second at most in all,
/// well inside any response timeout, so that the client's own retries never
/// use up a call's budget: `Redis::retry_refused`, which knows the budget,
/// goes on from there, and the error that comes back names the cause rather
/// than a timeout (ten retries of up to 200 ms could take 1.5 s, and an
/// enqueue with a 1 s budget during a slot migration then timed out).
pub const CLUSTER_RETRIES: u32 = 5;
/// The shortest wait before the cluster client retries (redis-rs' default,
/// 1.28 s, made a slot migration look like an outage).
pub const CLUSTER_MIN_RETRY_WAIT: Duration = Duration::from_millis(10);
/// The longest wait before the cluster client retries.
pub const CLUSTER_MAX_RETRY_WAIT: Duration = Duration::from_millis(100);
/// The first wait of [`Redis::retry_refused`]; it doubles up to
/// [`REFUSED_MAX_WAIT`].
const REFUSED_FIRST_WAIT: Duration = Duration::from_millis(10);
/// The longest wait of [`Redis::retry_refused`] between two tries.
const REFUSED_MAX_WAIT: Duration = Duration::from_millis(100);

/// Whether the target is one server or a cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Topology {
    /// Ask the server (`INFO cluster`) at connect time.
    Auto,
    /// One server (or a proxy, or a managed endpoint that hides a cluster).
    Single,
    /// A Redis Cluster; the URLs are seed nodes.
    Cluster,
}

/// Where Redis is and how to talk to it; validated when built.
#[derive(Clone)]
pub struct RedisConfig {
    urls: Vec<String>,
    topology: Topology,
    connect_timeout: Duration,
    response_timeout: Duration,
}

impl fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // URLs may hold a password; show where, not how.
        let urls: Vec<String> = self.urls.iter().map(|u| redact(u)).collect();
        f.debug_struct("RedisConfig")
            .field("urls", &urls)
            .field("topology", &self.topology)
            .field("connect_timeout", &self.connect_timeout)
            .field("response_timeout", &self.response_timeout)
            .finish()
    }
}

impl RedisConfig {
    /// One URL (`redis://[user:pass@]host:port/db`, `rediss://…`,
    /// `redis+unix:///path`), or several separated by commas as cluster seeds.
    pub fn new(urls: &str) -> Result<Self> {
        let urls: Vec<String> = urls
            .split(',')
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .map(str::to_string)
            .collect();
        if urls.is_empty() {
            return Err(Error::invalid("Redis URL is empty"));
        }
        for url in &urls {
            url.as_str().into_connection_info().map_err(|err| {
                Error::invalid(format!("Redis URL {:?} is not valid: {err}", redact(url)))
            })?;
        }
        let topology = if urls.len() > 1 {
            Topology::Cluster
        } else {
            Topology::Auto
        };
        Ok(Self {
            urls,
            topology,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            response_timeout: DEFAULT_RESPONSE_TIMEOUT,
        })
    }

    /// Forces one topology instead of asking the server.
    pub fn topology(mut self, topology: Topology) -> Self {
        self.topology = topology;
        self
    }

    /// Sets how long to wait for a TCP connection.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Sets how long to wait for any one reply.
    pub fn response_timeout(mut self, timeout: Duration) -> Self {
        self.response_timeout = timeout;
        self
    }

    /// How long a call waits for a reply: also the budget within which a
    /// refused write is tried again.
    pub(crate) fn reply_budget(&self) -> Duration {
        self.response_timeout
    }

    /// The URLs, with passwords replaced by `***`, for logs and status pages.
    pub fn redacted_urls(&self) -> Vec<String> {
        self.urls.iter().map(|u| redact(u)).collect()
    }
}

/// Replaces the password in a URL with `***`.
fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    match rest.split_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
            None => format!("{scheme}://***@{host}"),
        },
        None => url.to_string(),
    }
}

#[derive(Clone)]
enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
    /// Made by [`Redis::connect_lazy`]: one of the two once connected.
    Lazy(Arc<lazy::Lazy>),
}

/// A shared, pipelining connection to one Redis server or one cluster.
#[derive(Clone)]
pub struct Redis {
    conn: Conn,
    config: Arc<RedisConfig>,
}

impl fmt::Debug for Redis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Redis")
            .field("cluster", &self.is_cluster())
            .field("config", &self.config)
            .finish()
    }
}

impl Redis {
    /// Connects, detecting a cluster when the topology is [`Topology::Auto`].
    pub async fn connect(config: RedisConfig) -> Result<Self> {
        let topology = match config.topology {
            Topology::Auto => detect_topology(&config).await?,
            other => other,
        };
        Self::open(config, topology, None).await
    }

    /// Connects to `url` with the default settings.
    pub async fn connect_url(url: &str) -> Result<Self> {
        Self::connect(RedisConfig::new(url)?).await
    }

    async fn open(
        mut config: RedisConfig,
        topology: Topology,
        response_timeout: Option<Option<Duration>>,
    ) -> Result<Self> {
        config.topology = topology;
        let response_timeout = response_timeout.unwrap_or(Some(config.response_timeout));
        let conn = match topology {
            Topology::Cluster => {
                let mut builder = ClusterClient::builder(config.urls.clone())
                    .connection_timeout(config.connect_timeout)
                    .retries(CLUSTER_RETRIES)
                    .min_retry_wait(CLUSTER_MIN_RETRY_WAIT.as_millis() as u64)
                    .max_retry_wait(CLUSTER_MAX_RETRY_WAIT.as_millis() as u64)
                    // 10 ms × 2^retry, within the bounds above.
                    .retry_wait_formula(10, 2);
                if let Some(timeout) = response_timeout {
                    builder = builder.response_timeout(timeout);
                }
                let client = builder.build().map_err(|err| connect_error(&config, err))?;
                Conn::Cluster(
                    client
                        .get_async_connection()
                        .await
                        .map_err(|err| connect_error(&config, err))?,
                )
            }
            Topology::Single | Topology::Auto => {
                let client = redis::Client::open(config.urls[0].as_str())
                    .map_err(|err| connect_error(&config, err))?;
                let manager_config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(config.connect_timeout))
                    .set_response_timeout(response_timeout)
                    // Batches of scripts are pipelined by many tasks at once.
                    .set_pipeline_buffer_size(1024);
                Conn::Single(
                    client
                        .get_connection_manager_with_config(manager_config)
                        .await
                        .map_err(|err| connect_error(&config, err))?,
                )
            }
        };
        Ok(Self {
            conn,
            config: Arc::new(config),
        })
    }

    /// Opens a separate connection of the same topology, for blocking
    /// commands. `response_timeout` must exceed the longest block.
    pub async fn dedicated(&self, response_timeout: Option<Duration>) -> Result<Self> {
        if let Conn::Lazy(lazy) = &self.conn
            && lazy.get().is_none()
        {
            return Err(lazy.not_connected_error());
        }
        let topology = if self.is_cluster() {
            Topology::Cluster
        } else {
            Topology::Single
        };
        Self::open((*self.config).clone(), topology, Some(response_timeout)).await
    }

    /// Opens a separate connection of the same topology and settings, for
    /// work whose replies must not queue ahead of everyone else's on a
    /// shared one (the memory walk).
    pub(crate) async fn separate(&self) -> Result<Self> {
        self.dedicated(Some(self.config.response_timeout)).await
    }

    /// Whether this handle talks to a Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        match &self.conn {
            Conn::Single(_) => false,
            Conn::Cluster(_) => true,
            Conn::Lazy(lazy) => lazy
                .get()
                .map_or(self.config.topology == Topology::Cluster, Redis::is_cluster),
        }
    }

    /// The configuration this handle was made from.
    pub fn config(&self) -> &RedisConfig {
        &self.config
    }

    /// Runs one command and converts the reply.
    pub async fn query<T: redis::FromRedisValue>(&self, cmd: &Cmd) -> Result<T> {
        let mut conn = self.clone();
        Ok(cmd.query_async(&mut conn).await?)
    }

    /// Runs a transaction guarded by a WATCH: `WATCH watch`, then `before`
    /// (commands that run at once, e.g. a script that checks a condition and,
    /// when it fails, writes the watched key), then `commands` in one
    /// MULTI/EXEC, then `after` (e.g. `WAIT`), all sent in one write.
    /// Returns each command's reply; a reply may be an error (Redis does not
    /// roll back a transaction whose command failed while it ran), and
    /// [`Guarded::exec`] is `None` when the watched key changed and Redis did
    /// not run the transaction.
    ///
    /// Errors: the first error Redis gave while queueing a command (the
    /// transaction then did not run at all; under `maxmemory` this is the
    /// out-of-memory error, as Redis checks every queued command), or the
    /// error of EXEC itself. On a cluster every command must reach the same
    /// slot: the pipeline goes to the node of the first key. A redirection
    /// that the cluster client follows resends the whole pipeline, so
    /// `before` must not touch a key that the transaction does not: a slot
    /// migration that refuses one of them must refuse the transaction too.
    pub(crate) async fn guarded_transaction(
        &self,
        watch: &str,
        before: Vec<Cmd>,
        commands: Vec<Cmd>,
        after: Vec<Cmd>,
    ) -> std::result::Result<Guarded, RedisError> {
        let (n_before, count, n_after) = (before.len(), commands.len(), after.len());
        let mut pipe = redis::pipe();
        pipe.cmd("WATCH").arg(watch);
        for command in before {
            pipe.add_command(command);
        }
        pipe.cmd("MULTI");
        for command in commands {
            pipe.add_command(command);
        }
        pipe.cmd("EXEC");
        for command in after {
            pipe.add_command(command);
        }
        // Errors come back as values, so that the one that explains the
        // EXECABORT (an OOM while queueing) is the one reported.
        pipe.ignore_errors();
        let mut conn = self.clone();
        let replies: Vec<Value> = pipe.query_async(&mut conn).await?;
        let expected = 1 + n_before + 1 + count + 1 + n_after;
        if replies.len() != expected {
            return Err(unexpected(format!(
                "a transaction of {count} commands got {} replies, not {expected}",
                replies.len()
            )));
        }
        let mut replies = replies.into_iter();
        if let Some(Value::ServerError(error)) = replies.next() {
            return Err(error.into());
        }
        let before: Vec<Value> = replies.by_ref().take(n_before).collect();
        // MULTI and the queued commands: an error here means the transaction
        // did not run.
        for reply in replies.by_ref().take(count + 1) {
            if let Value::ServerError(error) = reply {
                return Err(error.into());
            }
        }
        let exec = match replies.next() {
            Some(Value::Array(results)) if results.len() == count => Some(results),
            Some(Value::Nil) => None,
            Some(Value::ServerError(error)) => return Err(error.into()),
            other => {
                return Err(unexpected(format!(
                    "EXEC of {count} commands replied {other:?}"
                )));
            }
        };
        Ok(Guarded {
            before,
            exec,
            after: replies.collect(),
        })
    }

    /// Runs `attempt` until it succeeds, fails for a reason other than a
    /// refusal that passes by itself, or the response timeout (the call's
    /// budget) has passed since the first try; waits 10 ms, doubling up to
    /// 100 ms, between tries. Only for calls that Redis refuses whole
    /// before running them (a script, a transaction whose every key the
    /// refusal covers), never for ones that may have run in part.
    ///
    /// Errors: the last refusal as [`Unavailable`](ErrorKind::Unavailable),
    /// naming its cause and how long it lasted; any other error as is.
    pub(crate) async fn retry_refused<T, F, Fut>(&self, what: &str, mut attempt: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = std::result::Result<T, RedisError>>,
    {
        let started = Instant::now();
        let deadline = started + self.config.response_timeout;
        let mut wait = REFUSED_FIRST_WAIT;
        let mut refused: Option<(&'static str, Error)> = None;
        let unavailable = |cause: &str, detail: &Error| {
            Error::new(
                ErrorKind::Unavailable,
                format!(
                    "{cause}: Redis refused {what} for {:.1} s ({})",
                    started.elapsed().as_secs_f64(),
                    detail.message()
                ),
            )
        };
        loop {
            let err = match attempt().await {
                Ok(value) => return Ok(value),
                Err(err) => err,
            };
            let Some(cause) = refusal_cause(&err) else {
                // The client retries refusals itself before it answers, and
                // a try that ran out of time while Redis kept refusing is
                // still that refusal, not an unreachable Redis.
                return Err(match refused {
                    Some((cause, detail)) if err.is_timeout() => unavailable(cause, &detail),
                    _ => err.into(),
                });
            };
            let detail = Error::from(err);
            if Instant::now() + wait >= deadline {
                return Err(unavailable(cause, &detail));
            }
            refused = Some((cause, detail));
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(REFUSED_MAX_WAIT);
        }
    }
}

/// What a [`Redis::guarded_transaction`] replied.
#[derive(Debug)]
pub(crate) struct Guarded {
    /// The replies of the commands before MULTI.
    pub before: Vec<Value>,
    /// The replies of the transaction's commands, or `None` when Redis did
    /// not run it because the watched key changed.
    pub exec: Option<Vec<Value>>,
    /// The replies of the commands after EXEC.
    pub after: Vec<Value>,
}

fn unexpected(message: String) -> RedisError {
    RedisError::from((
        redis::ErrorKind::UnexpectedReturnType,
        "unexpected reply",
        message,
    ))
}

/// The causes [`Redis::retry_refused`] names when Redis kept refusing a
/// write: the start of such an error's message, before `": "`. Safe to show
/// to an API caller (no addresses, no keys).
pub const REFUSAL_CAUSES: [&str; 6] = [
    "slot migrating (TRYAGAIN)",
    "slot migrating (ASK/MOVED)",
    "cluster down (CLUSTERDOWN)",
    "primary down (MASTERDOWN)",
    "Redis loading its data (LOADING)",
    "node is a read-only replica (READONLY)",
];

/// Why Redis refused a command without running it, when the reason passes
/// by itself: what a caller is told once its budget is spent.
fn refusal_cause(err: &RedisError) -> Option<&'static str> {
    use redis::ErrorKind as K;
    let index = match err.kind() {
        K::Server(ServerErrorKind::TryAgain) => 0,
        K::Server(ServerErrorKind::Ask | ServerErrorKind::Moved) => 1,
        K::Server(ServerErrorKind::ClusterDown) => 2,
        K::Server(ServerErrorKind::MasterDown) => 3,
        K::Server(ServerErrorKind::BusyLoading) => 4,
        K::Server(ServerErrorKind::ReadOnly) => 5,
        _ => return None,
    };
    Some(REFUSAL_CAUSES[index])
}

async fn detect_topology(config: &RedisConfig) -> Result<Topology> {
    let probe = Redis::open(config.clone(), Topology::Single, None).await?;
    Ok(if probe.info(&["cluster"]).await?.cluster_enabled() {
        Topology::Cluster
    } else {
        Topology::Single
    })
}

fn connect_error(config: &RedisConfig, err: redis::RedisError) -> Error {
    let urls = config.redacted_urls().join(",");
    let mut error = Error::from(err);
    error = Error::new(
        error.kind(),
        format!("cannot connect to {urls}: {}", error.message()),
    );
    error
}

impl ConnectionLike for Redis {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match &mut self.conn {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
            Conn::Lazy(lazy) => lazy.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match &mut self.conn {
            Conn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Lazy(lazy) => lazy.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match &self.conn {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
            Conn::Lazy(lazy) => lazy.get_db(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact("redis://user:secret@host:6379/0"),
            "redis://user:***@host:6379/0"
        );
        assert_eq!(redact("redis://secret@host"), "redis://***@host");
        assert_eq!(redact("redis://host:6379"), "redis://host:6379");
    }

    #[test]
    fn bad_urls_name_the_url() {
        let err = RedisConfig::new("http://nope").unwrap_err();
        assert!(err.to_string().contains("http://nope"), "{err}");
        assert!(RedisConfig::new(" ").is_err());
    }

    #[test]
    fn several_urls_mean_a_cluster() {
        let config = RedisConfig::new("redis://a:1,redis://b:2").unwrap();
        assert_eq!(config.topology, Topology::Cluster);
    }
}
