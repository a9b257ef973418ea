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

mod lazy;

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
    let info: String = probe.query(redis::cmd("INFO").arg("cluster")).await?;
    let cluster = info
        .lines()
        .any(|line| line.trim_end() == "cluster_enabled:1");
    Ok(if cluster {
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

/// One primary of the deployment: its address and a connection to it alone.
///
/// The memory guard and `trim` need every primary individually: `INFO`,
/// `SCAN` and `DBSIZE` answer for one node, and a cluster client would send
/// them to whichever node it picks.
#[derive(Debug, Clone)]
pub struct Primary {
    /// `host:port`, as the cluster announces it (or as configured for one
    /// server).
    pub address: String,
    /// A single-node connection to this primary.
    pub redis: Redis,
}

impl Redis {
    /// Every primary: this handle itself for one server; for a cluster, a
    /// new single-node connection per primary, found with `CLUSTER NODES`
    /// (primaries that are marked failed are skipped). The URLs keep the
    /// scheme, credentials and database of the first configured URL.
    pub async fn primaries(&self) -> Result<Vec<Primary>> {
        if !self.is_cluster() {
            return Ok(vec![Primary {
                address: url_address(&self.config.urls[0]),
                redis: self.clone(),
            }]);
        }
        let nodes: String = self.query(redis::cmd("CLUSTER").arg("NODES")).await?;
        let mut addresses = parse_cluster_primaries(&nodes);
        addresses.sort();
        addresses.dedup();
        if addresses.is_empty() {
            return Err(Error::new(
                crate::ErrorKind::Unavailable,
                "CLUSTER NODES lists no healthy primary",
            ));
        }
        let mut primaries = Vec::with_capacity(addresses.len());
        for address in addresses {
            let redis = self.open_node(&address).await?;
            primaries.push(Primary { address, redis });
        }
        Ok(primaries)
    }

    /// Each primary's address, with a single-node connection to it or the
    /// error that opening one gave (a node that is failing over), each
    /// opened within `wait`: one node that does not answer does not hold up
    /// the others.
    /// The node list comes from the node that serves `key`.
    pub(crate) async fn try_primaries(
        &self,
        key: &str,
        wait: Duration,
    ) -> Result<Vec<(String, Result<Redis>)>> {
        if !self.is_cluster() {
            return Ok(vec![(url_address(&self.config.urls[0]), Ok(self.clone()))]);
        }
        let addresses = sorted_primaries(&self.cluster_nodes_via(key).await?);
        let opened = futures::future::join_all(addresses.iter().map(|address| async move {
            match tokio::time::timeout(wait, self.open_node(address)).await {
                Ok(opened) => opened,
                Err(_) => Err(Error::new(
                    ErrorKind::Timeout,
                    format!("{address} did not answer within {wait:?}"),
                )),
            }
        }))
        .await;
        Ok(addresses.into_iter().zip(opened).collect())
    }

    /// A single-node connection to the cluster node at `address`, with this
    /// handle's scheme, credentials and settings.
    async fn open_node(&self, address: &str) -> Result<Redis> {
        let url = with_address(&self.config.urls[0], address);
        let mut config = (*self.config).clone();
        config.urls = vec![url];
        Self::open(config, Topology::Single, None).await
    }

    /// The address of the primary that serves `key` (the one server's own).
    pub(crate) async fn primary_address_of(&self, key: &str) -> Result<String> {
        if !self.is_cluster() {
            return Ok(url_address(&self.config.urls[0]));
        }
        // Both asked of the node that serves `key`: a keyless command goes
        // to any node, and one that does not answer (a shard failing over)
        // would hold every queue's first enqueue up for a whole response
        // timeout.
        let mut keyslot = redis::cmd("CLUSTER");
        keyslot.arg("KEYSLOT").arg(key);
        let slot: u16 = self.query_via(key, keyslot).await?;
        let nodes = self.cluster_nodes_via(key).await?;
        owner_of_slot(&nodes, slot).ok_or_else(|| {
            Error::new(
                ErrorKind::Unavailable,
                format!("no primary serves slot {slot}"),
            )
        })
    }
}

impl Redis {
    /// The connection behind a lazy handle once it is connected; the handle
    /// itself otherwise.
    fn resolved(&self) -> &Redis {
        match &self.conn {
            Conn::Lazy(lazy) => lazy.get().unwrap_or(self),
            _ => self,
        }
    }

    /// Loads a script (`SCRIPT LOAD source`) on the node that serves `key`
    /// alone (the one server: on it).
    pub(crate) async fn load_script_for(&self, source: &str, key: &str) -> Result<()> {
        let mut load = redis::cmd("SCRIPT");
        load.arg("LOAD").arg(source);
        match &self.resolved().conn {
            // A lazy handle not connected yet answers with its error.
            Conn::Single(_) | Conn::Lazy(_) => {
                let _: String = self.query(&load).await?;
            }
            Conn::Cluster(conn) => {
                use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
                let route = Route::with_key(key, SlotAddr::Master);
                let routing = RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(route));
                conn.clone().route_command(load, routing).await?;
            }
        }
        Ok(())
    }

    /// Loads the script `source` on every primary that answers within
    /// [`SCRIPT_LOAD_WAIT`], skipping the others: for a script that a slot
    /// migration redirects (`ASK`) to the importing node, which may never
    /// have seen it. Best effort: one shard that does not answer (failing
    /// over) must not fail a call on a healthy one.
    /// (The node list is asked of the node that serves `key`.)
    pub(crate) async fn load_script_on_primaries(&self, source: &str, key: &str) {
        let mut load = redis::cmd("SCRIPT");
        load.arg("LOAD").arg(source);
        let Ok(primaries) = self.try_primaries(key, SCRIPT_LOAD_WAIT).await else {
            return;
        };
        for (_, node) in primaries {
            if let Ok(node) = node {
                let _ = tokio::time::timeout(SCRIPT_LOAD_WAIT, node.query::<String>(&load)).await;
            }
        }
    }

    /// Runs `evalsha` (an `EVALSHA` of the script whose source is `source`,
    /// with `key` among its keys); when Redis does not know the script, loads
    /// it on the node that serves `key` (on a cluster, on every primary) and
    /// runs it again.
    pub(crate) async fn evalsha<T: redis::FromRedisValue>(
        &self,
        evalsha: &Cmd,
        source: &str,
        key: &str,
    ) -> std::result::Result<T, RedisError> {
        match evalsha.query_async(&mut self.clone()).await {
            Err(err) if err.kind() == redis::ErrorKind::Server(ServerErrorKind::NoScript) => {
                self.load_script_for(source, key)
                    .await
                    .map_err(|e| unexpected(e.to_string()))?;
                match evalsha.query_async(&mut self.clone()).await {
                    // A slot migrating sent it (ASK) to the importing node,
                    // which never loaded it.
                    Err(err)
                        if self.is_cluster()
                            && err.kind()
                                == redis::ErrorKind::Server(ServerErrorKind::NoScript) =>
                    {
                        self.load_script_on_primaries(source, key).await;
                        evalsha.query_async(&mut self.clone()).await
                    }
                    other => other,
                }
            }
            other => other,
        }
    }
}

/// How long [`Redis::load_script_on_primaries`] waits for each primary.
pub const SCRIPT_LOAD_WAIT: Duration = Duration::from_millis(500);

/// Keys examined per `SCAN` call of the scans below.
const SCAN_COUNT: usize = 1000;

impl Redis {
    /// Runs `cmd` on the node at `address` (`host:port`) of a cluster, or on
    /// the one server.
    async fn on_address(&self, cmd: &Cmd, address: &str) -> std::result::Result<Value, RedisError> {
        use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
        match &self.resolved().conn {
            Conn::Single(_) | Conn::Lazy(_) => cmd.query_async(&mut self.clone()).await,
            Conn::Cluster(conn) => {
                let (host, port) = address.rsplit_once(':').unwrap_or((address, "6379"));
                let routing = RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress {
                    host: host.to_string(),
                    port: port.parse().unwrap_or(6379),
                });
                conn.clone().route_command(cmd.clone(), routing).await
            }
        }
    }

    /// The addresses of the healthy primaries (the one server's own for a
    /// single server), without opening connections to them.
    async fn primary_addresses(&self) -> Result<Vec<String>> {
        if !self.is_cluster() {
            return Ok(vec![url_address(&self.config.urls[0])]);
        }
        let nodes: String = self.query(redis::cmd("CLUSTER").arg("NODES")).await?;
        Ok(sorted_primaries(&nodes))
    }

    /// `CLUSTER NODES` as the node that serves `key` tells it: a keyless
    /// command would go to a random node, which may be the one failing over.
    async fn cluster_nodes_via(&self, key: &str) -> Result<String> {
        let mut nodes = redis::cmd("CLUSTER");
        nodes.arg("NODES");
        self.query_via(key, nodes).await
    }

    /// Runs `cmd` on the primary that serves `key` (on the one server when
    /// this is not a cluster), however keyless the command is.
    async fn query_via<T: redis::FromRedisValue>(&self, key: &str, cmd: Cmd) -> Result<T> {
        use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
        let Conn::Cluster(conn) = &self.resolved().conn else {
            return self.query(&cmd).await;
        };
        let routing = RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(
            Route::with_key(key, SlotAddr::Master),
        ));
        let reply = conn.clone().route_command(cmd, routing).await?;
        Ok(redis::from_redis_value(reply)?)
    }

    /// One `SCAN cursor MATCH pattern COUNT 1000` on the node at `address`:
    /// the next cursor (0 when the scan is done) and the keys.
    async fn scan_once(
        &self,
        address: &str,
        cursor: u64,
        pattern: &str,
    ) -> Result<(u64, Vec<String>)> {
        let mut scan = redis::cmd("SCAN");
        scan.arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(SCAN_COUNT);
        let reply = self.on_address(&scan, address).await?;
        let (cursor, keys): (String, Vec<String>) = redis::from_redis_value(reply)?;
        let cursor = cursor
            .parse()
            .map_err(|_| Error::corrupt(format!("SCAN replied cursor {cursor:?}")))?;
        Ok((cursor, keys))
    }

    /// Keys matching `pattern` on every primary, each scanned with at most
    /// `max_calls` SCAN calls of 1,000 keys: complete on a keyspace of up to
    /// that many thousand keys per primary, a sample beyond. Returns the keys
    /// and whether every scan finished. A primary that does not answer is
    /// skipped (logged); the call fails only when none answers.
    pub(crate) async fn scan_primaries(
        &self,
        pattern: &str,
        max_calls: usize,
    ) -> Result<(Vec<String>, bool)> {
        let mut keys = Vec::new();
        let mut complete = true;
        let mut last_error = None;
        let addresses = self.primary_addresses().await?;
        let mut answered = 0;
        for address in &addresses {
            let mut cursor = 0;
            let mut calls = 0;
            let scanned: Result<()> = async {
                loop {
                    let (next, found) = self.scan_once(address, cursor, pattern).await?;
                    keys.extend(found);
                    calls += 1;
                    cursor = next;
                    if cursor == 0 || calls >= max_calls {
                        return Ok(());
                    }
                }
            }
            .await;
            match scanned {
                Ok(()) => {
                    answered += 1;
                    complete &= cursor == 0;
                }
                Err(err) => {
                    tracing::warn!(node = %address, error = %err, "a primary did not answer SCAN; skipped");
                    complete = false;
                    last_error = Some(err);
                }
            }
        }
        match last_error {
            Some(err) if answered == 0 => Err(err),
            _ => Ok((keys, complete)),
        }
    }

    /// Every key matching `pattern` on the node that serves `key`'s slot (on
    /// one server: the server), found with SCAN, 1,000 keys examined per
    /// call, each batch of matches handed to `each` before the next call.
    /// Returns the sum of what `each` returned.
    pub(crate) async fn scan_node_of<F, Fut>(
        &self,
        key: &str,
        pattern: &str,
        mut each: F,
    ) -> Result<u64>
    where
        F: FnMut(Vec<String>) -> Fut,
        Fut: Future<Output = Result<u64>>,
    {
        let address = if self.is_cluster() {
            let slot: u16 = self
                .query(redis::cmd("CLUSTER").arg("KEYSLOT").arg(key))
                .await?;
            let nodes: String = self.query(redis::cmd("CLUSTER").arg("NODES")).await?;
            owner_of_slot(&nodes, slot).ok_or_else(|| {
                Error::new(
                    ErrorKind::Unavailable,
                    format!("no primary serves slot {slot}"),
                )
            })?
        } else {
            url_address(&self.config.urls[0])
        };
        let (mut cursor, mut total) = (0, 0);
        loop {
            let (next, found) = self.scan_once(&address, cursor, pattern).await?;
            if !found.is_empty() {
                total += each(found).await?;
            }
            if next == 0 {
                return Ok(total);
            }
            cursor = next;
        }
    }
}

/// The healthy primaries of `CLUSTER NODES` output, sorted, once each.
fn sorted_primaries(nodes: &str) -> Vec<String> {
    let mut addresses = parse_cluster_primaries(nodes);
    addresses.sort();
    addresses.dedup();
    addresses
}

/// `text` as a literal in a SCAN / KEYS pattern: `*`, `?`, `[`, `]` and `\`
/// escaped.
pub(crate) fn glob_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The address of the healthy primary that serves `slot`, from `CLUSTER
/// NODES` output.
fn owner_of_slot(nodes: &str, slot: u16) -> Option<String> {
    nodes.lines().find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() < 9 || !fields[2].split(',').any(|f| f == "master") {
            return None;
        }
        let owns = fields[8..].iter().any(|range| {
            let (lo, hi) = range.split_once('-').unwrap_or((range, range));
            matches!((lo.parse::<u16>(), hi.parse::<u16>()), (Ok(lo), Ok(hi)) if (lo..=hi).contains(&slot))
        });
        owns.then(|| fields[1].split(['@', ',']).next().unwrap_or_default().to_string())
    })
}

/// `host:port` of a URL (`redis+unix` URLs give their path).
fn url_address(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
    let host = rest.split(['/', '?']).next().unwrap_or(rest);
    if host.is_empty() {
        rest.to_string()
    } else if host.contains(':') {
        host.to_string()
    } else {
        format!("{host}:6379")
    }
}

/// `url` with its `host:port` replaced by `address`.
fn with_address(url: &str, address: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("redis", url));
    let (userinfo, hostpart) = match rest.rsplit_once('@') {
        Some((user, host)) => (Some(user), host),
        None => (None, rest),
    };
    let tail = hostpart.find(['/', '?']).map_or("", |at| &hostpart[at..]);
    match userinfo {
        Some(user) => format!("{scheme}://{user}@{address}{tail}"),
        None => format!("{scheme}://{address}{tail}"),
    }
}

/// Addresses of the healthy primaries in `CLUSTER NODES` output:
/// `<id> <ip:port@cport[,hostname]> <flags> <primary> <ping> <pong> <epoch> <state> <slots>…`.
fn parse_cluster_primaries(nodes: &str) -> Vec<String> {
    nodes
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() < 8 {
                return None;
            }
            let flags = fields[2];
            let healthy = flags.split(',').any(|f| f == "master")
                && !flags.split(',').any(|f| f == "fail" || f == "noaddr");
            if !healthy || fields[7] != "connected" {
                return None;
            }
            let address = fields[1].split(['@', ',']).next()?;
            (!address.is_empty() && !address.starts_with(':')).then(|| address.to_string())
        })
        .collect()
}

#[cfg(test)]
mod primaries_tests {
    use super::*;

    #[test]
    fn cluster_nodes_output_gives_the_healthy_primaries() {
        let nodes = "\
a1 127.0.0.1:7000@17000 myself,master - 0 0 1 connected 0-5460
b2 127.0.0.1:7001@17001 master - 0 1 2 connected 5461-10922
c3 127.0.0.1:7002@17002 slave b2 0 1 2 connected
d4 127.0.0.1:7003@17003 master,fail - 0 1 3 disconnected 10923-16383
";
        assert_eq!(
            parse_cluster_primaries(nodes),
            ["127.0.0.1:7000", "127.0.0.1:7001"]
        );
    }

    #[test]
    fn globs_are_escaped_and_slots_found() {
        assert_eq!(glob_escape("a*b?[c]\\d"), "a\\*b\\?\\[c\\]\\\\d");
        let nodes = "\
a1 127.0.0.1:7000@17000 myself,master - 0 0 1 connected 0-5460
b2 127.0.0.1:7001@17001 master - 0 1 2 connected 5461-10922 [10923->-c3]
c3 127.0.0.1:7002@17002 slave b2 0 1 2 connected
";
        assert_eq!(
            owner_of_slot(nodes, 5461).as_deref(),
            Some("127.0.0.1:7001")
        );
        assert_eq!(owner_of_slot(nodes, 0).as_deref(), Some("127.0.0.1:7000"));
        assert_eq!(owner_of_slot(nodes, 12000), None);
    }

    #[test]
    fn node_urls_keep_scheme_credentials_and_database() {
        assert_eq!(
            with_address("rediss://u:p@seed:1/2", "10.0.0.5:7001"),
            "rediss://u:p@10.0.0.5:7001/2"
        );
        assert_eq!(with_address("redis://seed:1", "h:2"), "redis://h:2");
        assert_eq!(url_address("redis://u:p@host:7000/0"), "host:7000");
        assert_eq!(url_address("redis://host"), "host:6379");
    }
}
