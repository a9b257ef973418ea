//! Configuration of `plimsoll serve`: a TOML file, then `PLIMSOLL_…`
//! environment variables, then command-line flags, each overriding the last.
//!
//! Everything is read once, at start, into [`ServerConfig`], whose fields
//! cannot hold an invalid value. An error names the setting and where its
//! value came from (`invalid setting hooks.github.secret (from
//! plimsoll.toml): …`), so a bad deploy fails loudly and says why.
//!
//! Layering uses `figment`, which keeps track of where each value came from;
//! the schema below is strict (`deny_unknown_fields`), so a typo is an error
//! rather than a silently ignored setting.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use plimsoll::keyspace::QueueName;
use serde::{Deserialize, Serialize};

/// Where the API listens unless configured: loopback only.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// Where `/metrics` listens unless configured (a port of its own, so that it
/// can be exposed to Prometheus without exposing the API).
pub const DEFAULT_METRICS_LISTEN: &str = "127.0.0.1:9464";
/// Largest request body the API accepts.
pub const DEFAULT_MAX_BODY: &str = "1MiB";
/// How long shutdown waits for in-flight requests and running deliveries.
pub const DEFAULT_SHUTDOWN_GRACE: &str = "20s";
/// Data folder: the embedded Redis, the webhook spool, the generated token.
pub const DEFAULT_DATA_DIR: &str = ".plimsoll";
/// `maxmemory` of the embedded Redis. Plimsoll never starts an unbounded one.
pub const DEFAULT_EMBEDDED_MAXMEMORY: &str = "512MiB";
/// Largest the webhook spool may grow on disk before intake answers 503.
pub const DEFAULT_SPOOL_MAX_BYTES: &str = "1GiB";
/// Share of the spool's bound at which it is reported as filling up.
pub const DEFAULT_SPOOL_WARN_AT: f64 = 0.8;
/// Header carrying a webhook's HMAC-SHA256 signature (GitHub's).
pub const DEFAULT_SIGNATURE_HEADER: &str = "X-Hub-Signature-256";
/// Prefix before the hex signature (GitHub's).
pub const DEFAULT_SIGNATURE_PREFIX: &str = "sha256=";
/// Header carrying a webhook's delivery id (GitHub's), used to drop duplicates.
pub const DEFAULT_DELIVERY_HEADER: &str = "X-GitHub-Delivery";
/// Time a push delivery may take.
pub const DEFAULT_PUSH_TIMEOUT: &str = "10s";
/// Deliveries to one push target at once.
pub const DEFAULT_PUSH_CONCURRENCY: usize = 8;
/// Time a client has to send a request's headers, counted from when the
/// server starts waiting for them: from the connection's accept, and again
/// after each response on a kept-alive connection (so it is also how long an
/// idle keep-alive connection stays open). Real senders send their headers
/// in milliseconds; GitHub gives up on a webhook after 10 s, so a stalled
/// client must lose its connection well before that.
pub const DEFAULT_HEADER_READ_TIMEOUT: &str = "5s";
/// Time a client has to send a whole request body, counted from the start
/// of the request and never reset by progress (a body dripped one byte at a
/// time is cut off too). 1 MiB in 30 s needs about 280 kbit/s.
pub const DEFAULT_BODY_READ_TIMEOUT: &str = "30s";
/// Open client connections at most, unless the open-file limit leaves room
/// for fewer (see [`FD_RESERVE`]).
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;
/// File descriptors kept back from client connections: Redis connections
/// (queue, cache, guard, one per cluster node), spool segments and the data
/// folder lock, the guard's history, the listeners, the embedded Redis'
/// pipes, and the metrics listener's own connections.
pub const FD_RESERVE: u64 = 64 + crate::listener::METRICS_MAX_CONNECTIONS as u64;
/// Fewer client connections than this is no server: refused at start.
pub const MIN_CONNECTIONS: usize = 16;
/// More client connections than this is refused whatever the open-file
/// limit says (which may be "unlimited").
pub const MAX_CONNECTIONS: usize = 1_000_000;
/// Largest `max_body` (API and hooks): a job is not a file store, and the
/// library's largest payload limit is the same.
pub const MAX_MAX_BODY: u64 = plimsoll::queue::MAX_PAYLOAD_LIMIT as u64;
/// Smallest `max_body`: a webhook envelope alone is a few hundred bytes.
pub const MIN_MAX_BODY: u64 = 1024;
/// Largest `spool.max_bytes`. The spool holds webhooks only while Redis is
/// away; more than this is a typo, not a plan.
pub const MAX_SPOOL_MAX_BYTES: u64 = 1 << 40;
/// Largest `redis.embedded_maxmemory`.
pub const MAX_EMBEDDED_MAXMEMORY: u64 = 1 << 40;
/// Longest `shutdown_grace`: orchestrators kill a process long before.
pub const MAX_SHUTDOWN_GRACE: Duration = Duration::from_secs(10 * 60);
/// Shortest push timeout: a delivery needs at least a round trip.
pub const MIN_PUSH_TIMEOUT: Duration = Duration::from_millis(100);
/// Fastest push rate limit that still means something.
pub const MAX_PUSH_RATE: u32 = 1_000_000;
/// Longest bearer token or secret accepted (a pasted file is a mistake).
pub const MAX_SECRET_LEN: usize = 1024;

/// The file as written, before checking. Every field has a default.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawConfig {
    pub listen: String,
    /// `off`: no metrics listener.
    pub metrics_listen: String,
    pub tokens: Vec<String>,
    pub data_dir: String,
    pub max_body: String,
    pub shutdown_grace: String,
    pub http: RawHttp,
    pub redis: RawRedis,
    pub spool: RawSpool,
    pub queues: BTreeMap<String, RawQueue>,
    pub hooks: BTreeMap<String, RawHook>,
    pub cache: RawCache,
    pub guard: RawGuard,
}

/// The memory guard the server runs on its own Redis.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawGuard {
    /// Turn the guard off (it is on by default).
    pub disabled: bool,
    /// Time between readings; default 10 s.
    pub interval: Option<String>,
    /// The limit to measure against when Redis has no maxmemory.
    pub limit: Option<String>,
    /// Time between memory reports by key family; default 15 min.
    pub report_interval: Option<String>,
    /// Alerts as JSON POSTs to this URL.
    pub webhook: Option<String>,
    /// Alerts to this Slack-compatible incoming webhook.
    pub slack_webhook: Option<String>,
}

/// The HTTP cache (`/v1/cache/{key}`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawCache {
    /// Keys are `<prefix>:cache:<namespace>:<key>`.
    pub namespace: String,
    /// The most one cache call spends waiting on Redis.
    pub timeout: String,
    /// TTL of values written without one.
    pub default_ttl: String,
    /// Keep hot values in the server's memory too (and serve them, stale for
    /// a bounded time, while Redis is down).
    pub local_tier: bool,
}

impl Default for RawCache {
    fn default() -> Self {
        Self {
            namespace: "http".into(),
            timeout: "5ms".into(),
            default_ttl: "5m".into(),
            local_tier: false,
        }
    }
}

impl Default for RawConfig {
    fn default() -> Self {
        Self {
            listen: DEFAULT_LISTEN.into(),
            metrics_listen: DEFAULT_METRICS_LISTEN.into(),
            tokens: Vec::new(),
            data_dir: DEFAULT_DATA_DIR.into(),
            max_body: DEFAULT_MAX_BODY.into(),
            shutdown_grace: DEFAULT_SHUTDOWN_GRACE.into(),
            http: RawHttp::default(),
            redis: RawRedis::default(),
            spool: RawSpool::default(),
            queues: BTreeMap::new(),
            hooks: BTreeMap::new(),
            cache: RawCache::default(),
            guard: RawGuard::default(),
        }
    }
}

/// The API listener's edges: how long clients may take, how many may be
/// connected, and the origin the dashboard is reached at.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawHttp {
    pub header_read_timeout: String,
    pub body_read_timeout: String,
    /// Unset: [`DEFAULT_MAX_CONNECTIONS`], or fewer when the open-file limit
    /// leaves room for fewer.
    pub max_connections: Option<usize>,
    /// The URL browsers reach the dashboard at (behind a proxy that changes
    /// the Host header), e.g. `https://plimsoll.example.com`. Requests made
    /// with the dashboard's cookie must come from this origin or the Host's.
    pub public_url: Option<String>,
}

impl Default for RawHttp {
    fn default() -> Self {
        Self {
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT.into(),
            body_read_timeout: DEFAULT_BODY_READ_TIMEOUT.into(),
            max_connections: None,
            public_url: None,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawRedis {
    /// Unset: use 127.0.0.1:6379 if it answers, else start an embedded one.
    pub url: Option<String>,
    pub prefix: String,
    pub embedded_maxmemory: String,
    /// Run queues on a Redis whose `maxmemory-policy` evicts keys, accepting
    /// that jobs and idempotency keys may vanish under memory pressure.
    pub allow_eviction: bool,
    /// What an enqueue (API or webhook) waits for before it answers, for
    /// queues that set none: `primary` (default), `replicas[:COUNT[:TIMEOUT]]`
    /// or `replicas-aof[:COUNT[:TIMEOUT]]`.
    pub durability: Option<String>,
    /// The most queues the registry may hold (the server's configured
    /// queues and webhook sources' queues are registered beyond it).
    pub max_queues: u64,
}

impl Default for RawRedis {
    fn default() -> Self {
        Self {
            url: None,
            prefix: plimsoll::keyspace::DEFAULT_PREFIX.into(),
            embedded_maxmemory: DEFAULT_EMBEDDED_MAXMEMORY.into(),
            allow_eviction: false,
            durability: None,
            max_queues: plimsoll::queue::DEFAULT_MAX_QUEUES,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawSpool {
    pub max_bytes: String,
    pub warn_at: f64,
}

impl Default for RawSpool {
    fn default() -> Self {
        Self {
            max_bytes: DEFAULT_SPOOL_MAX_BYTES.into(),
            warn_at: DEFAULT_SPOOL_WARN_AT,
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawQueue {
    pub max_attempts: Option<u16>,
    pub timeout: Option<String>,
    /// Largest payload a job may have; default 512KiB.
    pub payload_limit: Option<String>,
    /// How long idempotency keys (webhook identities among them) are
    /// remembered; default 24h.
    pub idempotency_window: Option<String>,
    /// As `redis.durability`, for this queue.
    pub durability: Option<String>,
    /// Deliver this queue's jobs by HTTP POST instead of leaving them for
    /// library workers.
    pub push: Option<RawPush>,
    /// What the queue keeps of finished jobs; unset: the library's defaults
    /// (or the rules its workers recorded).
    pub retention: Option<RawRetention>,
}

/// `[queues.<name>.retention]`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawRetention {
    /// Keep completed jobs within these bounds (all three required); unset:
    /// completed jobs are removed at once.
    pub completed: Option<RawBounds>,
    /// The dead set's caps; a bound left out keeps its default.
    pub dead: Option<RawBounds>,
}

/// Bounds of a retained set: `{ max_count = 1000, max_age = "7d", max_bytes = "64MiB" }`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawBounds {
    pub max_count: Option<u64>,
    pub max_age: Option<String>,
    pub max_bytes: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawPush {
    pub url: String,
    pub secret: Option<String>,
    pub timeout: String,
    pub concurrency: usize,
    /// Deliveries per second at most; unset: no rate limit.
    pub rate_per_second: Option<u32>,
}

impl Default for RawPush {
    fn default() -> Self {
        Self {
            url: String::new(),
            secret: None,
            timeout: DEFAULT_PUSH_TIMEOUT.into(),
            concurrency: DEFAULT_PUSH_CONCURRENCY,
            rate_per_second: None,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawHook {
    /// Queue the webhooks go to; default `hooks.<source>`.
    pub queue: Option<String>,
    /// HMAC-SHA256 secret; with one, unsigned or badly signed webhooks get 401.
    pub secret: Option<String>,
    pub signature_header: String,
    pub signature_prefix: String,
    /// Header whose value makes a delivery unique; empty: no de-duplication.
    pub delivery_header: String,
    /// Largest body accepted from this source; default: `max_body`.
    pub max_body: Option<String>,
}

impl Default for RawHook {
    fn default() -> Self {
        Self {
            queue: None,
            secret: None,
            signature_header: DEFAULT_SIGNATURE_HEADER.into(),
            signature_prefix: DEFAULT_SIGNATURE_PREFIX.into(),
            delivery_header: DEFAULT_DELIVERY_HEADER.into(),
            max_body: None,
        }
    }
}

/// Values given on the command line, which override file and environment.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub listen: Option<String>,
    pub metrics_listen: Option<String>,
    pub redis_url: Option<String>,
    pub data_dir: Option<String>,
    pub tokens: Vec<String>,
}

/// A configuration error: which setting, where it came from, what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub key: String,
    pub origin: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(
                f,
                "invalid configuration ({}): {}",
                self.origin, self.message
            )
        } else {
            write!(
                f,
                "invalid setting `{}` ({}): {}",
                self.key, self.origin, self.message
            )
        }
    }
}

impl std::error::Error for ConfigError {}

/// The checked configuration.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub metrics_listen: Option<SocketAddr>,
    /// Bearer tokens; empty means `serve` generates one into the data folder.
    pub tokens: Vec<String>,
    pub data_dir: PathBuf,
    pub max_body: usize,
    pub shutdown_grace: Duration,
    pub http: HttpSettings,
    pub redis_url: Option<String>,
    /// Queues may run on a Redis that evicts keys (`redis.allow_eviction`).
    pub allow_eviction: bool,
    pub prefix: String,
    pub embedded_maxmemory: u64,
    /// What enqueues wait for, for queues that set none.
    pub durability: plimsoll::Durability,
    /// The cap on queues in the registry (`redis.max_queues`); the queues
    /// named in this configuration are registered beyond it.
    pub max_queues: u64,
    pub spool_max_bytes: u64,
    pub spool_warn_at: f64,
    pub queues: BTreeMap<QueueName, QueueSettings>,
    pub hooks: BTreeMap<String, HookSettings>,
    /// The cache behind `/v1/cache` (checked: its settings are valid).
    pub cache: plimsoll::CacheConfig,
    /// The memory guard (checked), or `None` when it is off.
    pub guard: Option<plimsoll::GuardConfig>,
}

impl ServerConfig {
    /// Whether this configuration names queue `name`: a `[queues.NAME]`
    /// table or a webhook source's queue.
    pub fn names_queue(&self, name: &str) -> bool {
        self.queues.keys().any(|q| q.as_str() == name)
            || self.hooks.values().any(|h| h.queue.as_str() == name)
    }
}

/// The API listener's edges (`[http]`), checked.
#[derive(Debug, Clone)]
pub struct HttpSettings {
    pub header_read_timeout: Duration,
    pub body_read_timeout: Duration,
    /// Resolved against the open-file limit at load.
    pub max_connections: usize,
    /// `scheme://host[:port]` of `public_url`, lower-case, default port left out.
    pub public_origin: Option<String>,
}

impl Default for HttpSettings {
    fn default() -> Self {
        Self {
            header_read_timeout: parse_duration(DEFAULT_HEADER_READ_TIMEOUT)
                .expect("the default is a duration"),
            body_read_timeout: parse_duration(DEFAULT_BODY_READ_TIMEOUT)
                .expect("the default is a duration"),
            max_connections: DEFAULT_MAX_CONNECTIONS,
            public_origin: None,
        }
    }
}

/// Settings of one configured queue.
#[derive(Debug, Clone, Default)]
pub struct QueueSettings {
    pub max_attempts: Option<u16>,
    pub timeout: Option<Duration>,
    pub payload_limit: Option<usize>,
    pub idempotency_window: Option<Duration>,
    pub durability: Option<plimsoll::Durability>,
    pub push: Option<PushSettings>,
    /// Configured retention rules; `None`: not configured here.
    pub retention: Option<plimsoll::Retention>,
}

/// An HTTP target a queue's jobs are delivered to.
#[derive(Debug, Clone)]
pub struct PushSettings {
    pub url: reqwest::Url,
    pub secret: Option<String>,
    pub timeout: Duration,
    pub concurrency: usize,
    pub rate_per_second: Option<std::num::NonZeroU32>,
}

/// One webhook source.
#[derive(Debug, Clone)]
pub struct HookSettings {
    pub queue: QueueName,
    pub secret: Option<String>,
    pub signature_header: String,
    pub signature_prefix: String,
    pub delivery_header: Option<String>,
    pub max_body: usize,
}

impl ServerConfig {
    /// Reads `path` (if given; it must exist then), the environment and the
    /// overrides, and checks the result.
    pub fn load(path: Option<&Path>, overrides: &Overrides) -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(RawConfig::default()));
        if let Some(path) = path {
            if !path.exists() {
                return Err(ConfigError {
                    key: String::new(),
                    origin: "--config".into(),
                    message: format!("the file {} does not exist", path.display()),
                });
            }
            figment = figment.merge(Toml::file(path));
        }
        figment = figment.merge(env_provider());
        let mut set = |key: &str, value: Option<&String>| {
            if let Some(value) = value {
                figment = std::mem::take(&mut figment).merge(Serialized::default(key, value));
            }
        };
        set("listen", overrides.listen.as_ref());
        set("metrics_listen", overrides.metrics_listen.as_ref());
        set("redis.url", overrides.redis_url.as_ref());
        set("data_dir", overrides.data_dir.as_ref());
        if !overrides.tokens.is_empty() {
            figment = figment.merge(Serialized::default("tokens", &overrides.tokens));
        }
        let raw: RawConfig = figment.extract().map_err(|err| from_figment(&err))?;
        Self::check(raw, &figment)
    }

    /// Checks a raw configuration; `figment` says where values came from.
    fn check(raw: RawConfig, figment: &Figment) -> Result<Self, ConfigError> {
        let origin = |key: &str| -> String {
            figment
                .find_metadata(key)
                .map(|m| match &m.source {
                    Some(source) => source.to_string(),
                    None => m.name.to_string(),
                })
                .unwrap_or_else(|| "default".into())
        };
        let bad = |key: &str, message: String| ConfigError {
            key: key.into(),
            origin: origin(key),
            message,
        };

        let listen: SocketAddr = raw.listen.parse().map_err(|_| {
            bad(
                "listen",
                format!("{:?} is not an address like 127.0.0.1:8080", raw.listen),
            )
        })?;
        let metrics_listen =
            parse_listen_or_off(&raw.metrics_listen).map_err(|m| bad("metrics_listen", m))?;
        if metrics_listen == Some(listen) {
            return Err(bad(
                "metrics_listen",
                "must differ from listen: metrics have a port of their own".into(),
            ));
        }
        for (i, token) in raw.tokens.iter().enumerate() {
            if token.len() < 16
                || token.len() > MAX_SECRET_LEN
                || token.chars().any(|c| c.is_whitespace() || c.is_control())
            {
                return Err(bad(
                    "tokens",
                    format!(
                        "token {} must be 16 to {MAX_SECRET_LEN} characters without spaces",
                        i + 1
                    ),
                ));
            }
        }
        let max_body = body_size(&raw.max_body).map_err(|m| bad("max_body", m))?;
        let shutdown_grace = parse_duration(&raw.shutdown_grace)
            .and_then(|d| in_duration_range(d, Duration::from_secs(1), MAX_SHUTDOWN_GRACE))
            .map_err(|m| bad("shutdown_grace", m))?;
        if let Some(url) = &raw.redis.url {
            plimsoll::RedisConfig::new(url)
                .map_err(|e| bad("redis.url", e.message().to_string()))?;
        }
        plimsoll::keyspace::validate_prefix(&raw.redis.prefix)
            .map_err(|e| bad("redis.prefix", e.message().to_string()))?;
        let embedded_maxmemory = parse_bytes(&raw.redis.embedded_maxmemory)
            .and_then(|n| in_byte_range(n, 16 << 20, MAX_EMBEDDED_MAXMEMORY))
            .map_err(|m| bad("redis.embedded_maxmemory", m))?;
        let spool_max_bytes = parse_bytes(&raw.spool.max_bytes)
            .and_then(|n| in_byte_range(n, 1 << 20, MAX_SPOOL_MAX_BYTES))
            .map_err(|m| bad("spool.max_bytes", m))?;
        if !(0.1..=1.0).contains(&raw.spool.warn_at) {
            return Err(bad("spool.warn_at", "must be between 0.1 and 1.0".into()));
        }
        let http = check_http(&raw, &bad)?;

        // Absolute from here on: the embedded redis-server changes into its
        // folder before it opens files named relative to ours, and the
        // guard's history, the spool and the token must not move if the
        // process's working folder does.
        if raw.data_dir.trim().is_empty() {
            return Err(bad("data_dir", "must name a folder".into()));
        }
        let data_dir = std::path::absolute(&raw.data_dir).map_err(|e| {
            bad(
                "data_dir",
                format!("{:?} cannot be made absolute: {e}", raw.data_dir),
            )
        })?;

        let mut queues = BTreeMap::new();
        for (name, q) in &raw.queues {
            let key = |field: &str| format!("queues.{name}.{field}");
            let queue = QueueName::new(name.clone())
                .map_err(|e| bad(&format!("queues.{name}"), e.message().to_string()))?;
            if let Some(attempts) = q.max_attempts {
                in_range(attempts, 1, plimsoll::queue::MAX_ATTEMPTS_LIMIT)
                    .map_err(|m| bad(&key("max_attempts"), m))?;
            }
            let timeout = q
                .timeout
                .as_deref()
                .map(|text| {
                    parse_duration(text).and_then(|d| {
                        in_duration_range(
                            d,
                            Duration::from_millis(1),
                            plimsoll::queue::MAX_JOB_TIMEOUT,
                        )
                    })
                })
                .transpose()
                .map_err(|m| bad(&key("timeout"), m))?;
            let payload_limit = match &q.payload_limit {
                None => None,
                Some(text) => {
                    let limit =
                        parse_bytes(text).map_err(|m| bad(&key("payload_limit"), m))? as usize;
                    if !(1024..=plimsoll::queue::MAX_PAYLOAD_LIMIT).contains(&limit) {
                        return Err(bad(
                            &key("payload_limit"),
                            "must be between 1KiB and 64MiB".into(),
                        ));
                    }
                    Some(limit)
                }
            };
            let idempotency_window = match &q.idempotency_window {
                None => None,
                Some(text) => {
                    let window =
                        parse_duration(text).map_err(|m| bad(&key("idempotency_window"), m))?;
                    if window < Duration::from_secs(1)
                        || window > plimsoll::queue::MAX_IDEMPOTENCY_WINDOW
                    {
                        return Err(bad(
                            &key("idempotency_window"),
                            "must be between 1s and 30 days".into(),
                        ));
                    }
                    Some(window)
                }
            };
            let job_timeout = timeout.unwrap_or(plimsoll::queue::DEFAULT_JOB_TIMEOUT);
            let push = match &q.push {
                None => None,
                Some(p) => {
                    let url = reqwest::Url::parse(&p.url).map_err(|e| {
                        bad(&key("push.url"), format!("{:?} is not a URL: {e}", p.url))
                    })?;
                    if !matches!(url.scheme(), "http" | "https") {
                        return Err(bad(&key("push.url"), "must be http or https".into()));
                    }
                    if !(1..=1000).contains(&p.concurrency) {
                        return Err(bad(&key("push.concurrency"), "must be 1 to 1000".into()));
                    }
                    // A delivery that may outlast the job's lease would run
                    // twice: the lease ends and the job is handed out again.
                    let timeout = parse_duration(&p.timeout)
                        .and_then(|d| in_duration_range(d, MIN_PUSH_TIMEOUT, job_timeout))
                        .map_err(|m| {
                            bad(
                                &key("push.timeout"),
                                format!("{m} (the queue's job timeout)"),
                            )
                        })?;
                    if let Some(secret) = &p.secret
                        && !secret.is_empty()
                        && !(8..=MAX_SECRET_LEN).contains(&secret.len())
                    {
                        return Err(bad(
                            &key("push.secret"),
                            format!("must be 8 to {MAX_SECRET_LEN} characters"),
                        ));
                    }
                    Some(PushSettings {
                        url,
                        secret: p.secret.clone().filter(|s| !s.is_empty()),
                        timeout,
                        concurrency: p.concurrency,
                        rate_per_second: match p.rate_per_second {
                            None => None,
                            Some(n) => Some(
                                in_range(n, 1, MAX_PUSH_RATE)
                                    .ok()
                                    .and_then(std::num::NonZeroU32::new)
                                    .ok_or_else(|| {
                                        bad(
                                            &key("push.rate_per_second"),
                                            format!("must be 1 to {MAX_PUSH_RATE}"),
                                        )
                                    })?,
                            ),
                        },
                    })
                }
            };
            let retention = q
                .retention
                .as_ref()
                .map(|r| check_retention(r, &key("retention")))
                .transpose()
                .map_err(|(field, message)| bad(&field, message))?;
            queues.insert(
                queue,
                QueueSettings {
                    max_attempts: q.max_attempts,
                    timeout,
                    payload_limit,
                    idempotency_window,
                    durability: q
                        .durability
                        .as_deref()
                        .map(str::parse::<plimsoll::Durability>)
                        .transpose()
                        .map_err(|e| bad(&key("durability"), e.message().to_string()))?,
                    push,
                    retention,
                },
            );
        }

        let mut hooks = BTreeMap::new();
        for (source, h) in &raw.hooks {
            let key = |field: &str| format!("hooks.{source}.{field}");
            if source.is_empty()
                || source.len() > 48
                || !source
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                return Err(bad(
                    &format!("hooks.{source}"),
                    "a source name is 1 to 48 characters from A-Z a-z 0-9 - _".into(),
                ));
            }
            let queue_name = h.queue.clone().unwrap_or_else(|| format!("hooks.{source}"));
            let queue = QueueName::new(queue_name)
                .map_err(|e| bad(&key("queue"), e.message().to_string()))?;
            if let Some(secret) = &h.secret
                && !(8..=MAX_SECRET_LEN).contains(&secret.len())
            {
                return Err(bad(
                    &key("secret"),
                    format!("must be 8 to {MAX_SECRET_LEN} characters"),
                ));
            }
            // A name that is not a header name would be looked up in vain on
            // every webhook: each one would be refused.
            if h.secret.is_some()
                && axum::http::HeaderName::try_from(h.signature_header.trim()).is_err()
            {
                return Err(bad(&key("signature_header"), "must name a header".into()));
            }
            if !h.delivery_header.is_empty()
                && axum::http::HeaderName::try_from(h.delivery_header.as_str()).is_err()
            {
                return Err(bad(
                    &key("delivery_header"),
                    format!("{:?} is not a header name", h.delivery_header),
                ));
            }
            // A webhook answered 202 must be enqueueable: its body, in its
            // envelope, must fit the queue's payload limit.
            let payload_limit = queues
                .get(&queue)
                .and_then(|q: &QueueSettings| q.payload_limit)
                .unwrap_or(plimsoll::queue::DEFAULT_PAYLOAD_LIMIT);
            let room = payload_limit.saturating_sub(crate::intake::ENVELOPE_RESERVE);
            if room == 0 {
                return Err(bad(
                    &format!("queues.{queue}.payload_limit"),
                    format!(
                        "{payload_limit} bytes leave no room for webhooks of source {source}: their envelope needs {} bytes beyond the body",
                        crate::intake::ENVELOPE_RESERVE
                    ),
                ));
            }
            let max_body = match &h.max_body {
                Some(text) => {
                    let asked = body_size(text).map_err(|m| bad(&key("max_body"), m))?;
                    if asked > room {
                        return Err(bad(
                            &key("max_body"),
                            format!(
                                "{asked} bytes would let through webhooks queue {queue} refuses: it takes payloads up to {payload_limit} bytes and a webhook's envelope needs up to {} more; set at most {room} bytes, or raise queues.{queue}.payload_limit",
                                crate::intake::ENVELOPE_RESERVE
                            ),
                        ));
                    }
                    asked
                }
                // The server's max_body, within what the queue takes.
                None => max_body.min(room),
            };
            hooks.insert(
                source.clone(),
                HookSettings {
                    queue,
                    secret: h.secret.clone(),
                    signature_header: h.signature_header.clone(),
                    signature_prefix: h.signature_prefix.clone(),
                    delivery_header: Some(h.delivery_header.clone()).filter(|d| !d.is_empty()),
                    max_body,
                },
            );
        }

        let cache = plimsoll::CacheConfig {
            prefix: raw.redis.prefix.clone(),
            namespace: raw.cache.namespace.clone(),
            timeout: parse_duration(&raw.cache.timeout)
                .and_then(|d| {
                    in_duration_range(
                        d,
                        Duration::from_millis(1),
                        plimsoll::cache::config::MAX_TIMEOUT,
                    )
                })
                .map_err(|m| bad("cache.timeout", m))?,
            default_ttl: parse_duration(&raw.cache.default_ttl)
                .and_then(|d| {
                    in_duration_range(d, Duration::from_secs(1), plimsoll::cache::config::MAX_TTL)
                })
                .map_err(|m| bad("cache.default_ttl", m))?,
            local: raw
                .cache
                .local_tier
                .then(plimsoll::cache::LocalConfig::default),
            ..plimsoll::CacheConfig::default()
        };
        cache
            .validate()
            .map_err(|e| bad("cache", e.message().to_string()))?;

        let guard = if raw.guard.disabled {
            None
        } else {
            let g = &raw.guard;
            let mut config = plimsoll::GuardConfig {
                history_dir: Some(data_dir.join("guard")),
                ..plimsoll::GuardConfig::default()
            };
            // The server's own queues and cache are Plimsoll's in the
            // memory report, whatever their prefix.
            config.attribute.plimsoll_prefixes = vec![raw.redis.prefix.clone()];
            if let Some(text) = &g.interval {
                config.interval = parse_duration(text)
                    .and_then(|d| in_duration_range(d, MIN_GUARD_INTERVAL, MAX_GUARD_INTERVAL))
                    .map_err(|m| bad("guard.interval", m))?;
            }
            if let Some(text) = &g.limit {
                config.limit = Some(
                    parse_bytes(text)
                        .and_then(|n| in_byte_range(n, 1 << 20, MAX_GUARD_LIMIT))
                        .map_err(|m| bad("guard.limit", m))?,
                );
            }
            if let Some(text) = &g.report_interval {
                config.attribute_interval = Some(
                    parse_duration(text)
                        .and_then(|d| {
                            in_duration_range(
                                d,
                                MIN_GUARD_REPORT_INTERVAL,
                                MAX_GUARD_REPORT_INTERVAL,
                            )
                        })
                        .map_err(|m| bad("guard.report_interval", m))?,
                );
            }
            if let Some(url) = &g.webhook {
                let sink = plimsoll::WebhookSink::json(url)
                    .map_err(|e| bad("guard.webhook", e.message().to_string()))?;
                config.sinks.push(std::sync::Arc::new(sink));
            }
            if let Some(url) = &g.slack_webhook {
                let sink = plimsoll::WebhookSink::slack(url)
                    .map_err(|e| bad("guard.slack_webhook", e.message().to_string()))?;
                config.sinks.push(std::sync::Arc::new(sink));
            }
            config
                .check()
                .map_err(|e| bad("guard", e.message().to_string()))?;
            Some(config)
        };

        Ok(Self {
            guard,
            cache,
            listen,
            metrics_listen,
            tokens: raw.tokens,
            data_dir,
            max_body,
            shutdown_grace,
            http,
            redis_url: raw.redis.url,
            allow_eviction: raw.redis.allow_eviction,
            max_queues: {
                let n = raw.redis.max_queues;
                if !(1..=plimsoll::queue::MAX_QUEUES_LIMIT).contains(&n) {
                    return Err(bad(
                        "redis.max_queues",
                        format!("{n} must be 1 to {}", plimsoll::queue::MAX_QUEUES_LIMIT),
                    ));
                }
                n
            },
            durability: raw
                .redis
                .durability
                .as_deref()
                .map(str::parse::<plimsoll::Durability>)
                .transpose()
                .map_err(|e| bad("redis.durability", e.message().to_string()))?
                .unwrap_or_default(),
            prefix: raw.redis.prefix,
            embedded_maxmemory,
            spool_max_bytes,
            spool_warn_at: raw.spool.warn_at,
            queues,
            hooks,
        })
    }
}

/// Shortest `guard.interval`: the guard's command budget is per reading.
pub const MIN_GUARD_INTERVAL: Duration = Duration::from_millis(100);
/// Longest `guard.interval`: a Redis can fill in less than an hour.
pub const MAX_GUARD_INTERVAL: Duration = Duration::from_secs(60 * 60);
/// Largest `guard.limit`.
pub const MAX_GUARD_LIMIT: u64 = 1 << 50;
/// Shortest `guard.report_interval`: a report walks the keyspace.
pub const MIN_GUARD_REPORT_INTERVAL: Duration = Duration::from_secs(10);
/// Longest `guard.report_interval`.
pub const MAX_GUARD_REPORT_INTERVAL: Duration = Duration::from_secs(7 * 24 * 60 * 60);

/// The `[http]` section, with `max_connections` resolved against the
/// process's open-file limit.
fn check_http(
    raw: &RawConfig,
    bad: &impl Fn(&str, String) -> ConfigError,
) -> Result<HttpSettings, ConfigError> {
    let h = &raw.http;
    let header_read_timeout = parse_duration(&h.header_read_timeout)
        .and_then(|d| in_duration_range(d, Duration::from_millis(100), Duration::from_secs(120)))
        .map_err(|m| bad("http.header_read_timeout", m))?;
    let body_read_timeout = parse_duration(&h.body_read_timeout)
        .and_then(|d| in_duration_range(d, Duration::from_secs(1), Duration::from_secs(600)))
        .map_err(|m| bad("http.body_read_timeout", m))?;
    let push_connections: u64 = raw
        .queues
        .values()
        .filter_map(|q| q.push.as_ref())
        .map(|p| p.concurrency.min(1000) as u64)
        .sum();
    let open_files = crate::listener::open_file_limit();
    let room = open_files
        .saturating_sub(FD_RESERVE + push_connections)
        .try_into()
        .unwrap_or(usize::MAX);
    let max_connections = match h.max_connections {
        Some(n) if !(MIN_CONNECTIONS..=MAX_CONNECTIONS).contains(&n) => {
            return Err(bad(
                "http.max_connections",
                format!("must be {MIN_CONNECTIONS} to {MAX_CONNECTIONS}"),
            ));
        }
        Some(n) if n > room => {
            return Err(bad(
                "http.max_connections",
                format!(
                    "{n} connections do not fit the open-file limit of {open_files} \
                     ({FD_RESERVE} kept for Redis, the spool and metrics, \
                     {push_connections} for push deliveries): at most {room}; \
                     raise the limit (ulimit -n) or lower the setting"
                ),
            ));
        }
        Some(n) => n,
        None if room < MIN_CONNECTIONS => {
            return Err(bad(
                "http.max_connections",
                format!(
                    "the open-file limit of {open_files} leaves {room} descriptors for \
                     client connections ({FD_RESERVE} kept for Redis, the spool and \
                     metrics, {push_connections} for push deliveries); at least \
                     {MIN_CONNECTIONS} are needed: raise the limit (ulimit -n)"
                ),
            ));
        }
        None => DEFAULT_MAX_CONNECTIONS.min(room),
    };
    let public_origin = match &h.public_url {
        None => None,
        Some(text) => {
            let url = reqwest::Url::parse(text)
                .map_err(|e| bad("http.public_url", format!("{text:?} is not a URL: {e}")))?;
            if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
                return Err(bad(
                    "http.public_url",
                    "must be an http or https URL with a host".into(),
                ));
            }
            Some(url.origin().ascii_serialization())
        }
    };
    Ok(HttpSettings {
        header_read_timeout,
        body_read_timeout,
        max_connections,
        public_origin,
    })
}

/// A body limit: `max_body` of the API or of a hook.
fn body_size(text: &str) -> Result<usize, String> {
    let bytes = parse_bytes(text).and_then(|n| in_byte_range(n, MIN_MAX_BODY, MAX_MAX_BODY))?;
    Ok(bytes as usize)
}

/// `value` when it lies in `low..=high`, else a message that says the range.
fn in_range<T: PartialOrd + fmt::Display>(value: T, low: T, high: T) -> Result<T, String> {
    if value < low || value > high {
        return Err(format!("{value} is out of range: must be {low} to {high}"));
    }
    Ok(value)
}

fn in_duration_range(value: Duration, low: Duration, high: Duration) -> Result<Duration, String> {
    let show = |d: Duration| humantime::format_duration(d).to_string();
    if value < low || value > high {
        return Err(format!(
            "{} is out of range: must be {} to {}",
            show(value),
            show(low),
            show(high)
        ));
    }
    Ok(value)
}

fn in_byte_range(value: u64, low: u64, high: u64) -> Result<u64, String> {
    use plimsoll::units::human_bytes;
    if value < low || value > high {
        return Err(format!(
            "{} is out of range: must be {} to {}",
            human_bytes(value),
            human_bytes(low),
            human_bytes(high)
        ));
    }
    Ok(value)
}

/// `PLIMSOLL_LISTEN`, `PLIMSOLL_REDIS_URL`, `PLIMSOLL_QUEUES__MAIL__…`: a
/// single underscore after the prefix is part of a name, a double one nests.
/// `PLIMSOLL_LOG` belongs to the command and `PLIMSOLL_FAULT_REPS` to the
/// fault tests (which run servers), not to this schema.
fn env_provider() -> Env {
    Env::prefixed("PLIMSOLL_")
        .ignore(&["log", "fault_reps"])
        .map(|key| match key.as_str() {
            "redis_url" => "redis.url".into(),
            "prefix" => "redis.prefix".into(),
            _ => key.as_str().replace("__", ".").into(),
        })
}

fn from_figment(err: &figment::Error) -> ConfigError {
    let key = err.path.join(".");
    let origin = err
        .metadata
        .as_ref()
        .map(|m| match &m.source {
            Some(source) => source.to_string(),
            None => m.name.to_string(),
        })
        .unwrap_or_else(|| "configuration".into());
    ConfigError {
        key,
        origin,
        message: err.kind.to_string(),
    }
}

/// `512MiB`, `1GiB`, `64MB`, `1048576`.
/// Checks `[queues.<name>.retention]` (its key is `key`); an error names
/// the setting.
fn check_retention(raw: &RawRetention, key: &str) -> Result<plimsoll::Retention, (String, String)> {
    use plimsoll::{Bounds, CompletedRetention};
    let bounds = |raw: &RawBounds, set: &str, defaults: Option<Bounds>| {
        let field = |name: &str| format!("{key}.{set}.{name}");
        let missing = |name: &str| {
            (
                field(name),
                "must be set to keep completed jobs".to_string(),
            )
        };
        let max_count = match (raw.max_count, defaults) {
            (Some(n), _) => n,
            (None, Some(d)) => d.max_count(),
            (None, None) => return Err(missing("max_count")),
        };
        let max_age = match (&raw.max_age, defaults) {
            (Some(text), _) => parse_duration(text).map_err(|m| (field("max_age"), m))?,
            (None, Some(d)) => d.max_age(),
            (None, None) => return Err(missing("max_age")),
        };
        let max_bytes = match (&raw.max_bytes, defaults) {
            (Some(text), _) => parse_bytes(text).map_err(|m| (field("max_bytes"), m))?,
            (None, Some(d)) => d.max_bytes(),
            (None, None) => return Err(missing("max_bytes")),
        };
        Bounds::new(max_count, max_age, max_bytes)
            .map_err(|e| (format!("{key}.{set}"), e.message().to_string()))
    };
    let completed = match &raw.completed {
        None => CompletedRetention::Remove,
        Some(b) => CompletedRetention::Keep(bounds(b, "completed", None)?),
    };
    let dead = match &raw.dead {
        None => plimsoll::queue::DEFAULT_DEAD_BOUNDS,
        Some(b) => bounds(b, "dead", Some(plimsoll::queue::DEFAULT_DEAD_BOUNDS))?,
    };
    Ok(plimsoll::Retention { completed, dead })
}

/// `off` (no listener), or an address like 127.0.0.1:9464. An empty value
/// is read as `off` too, as configurations written before `off` say it.
pub fn parse_listen_or_off(text: &str) -> Result<Option<SocketAddr>, String> {
    match text.trim() {
        "off" | "" => Ok(None),
        addr => addr.parse().map(Some).map_err(|_| {
            format!("{addr:?} is not an address like 127.0.0.1:9464 (or off for none)")
        }),
    }
}

/// A size in the one spelling of [`plimsoll::units::parse_bytes`].
pub fn parse_bytes(text: &str) -> Result<u64, String> {
    plimsoll::units::parse_bytes(text).map_err(|e| e.to_string())
}

/// A duration in the one spelling of [`plimsoll::units::parse_duration`].
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    plimsoll::units::parse_duration(text).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_str(toml: &str) -> Result<ServerConfig, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("plimsoll.toml");
        std::fs::write(&path, toml).unwrap();
        ServerConfig::load(Some(&path), &Overrides::default())
    }

    #[test]
    fn the_defaults_are_loopback_and_valid() {
        let config = load_str("").unwrap();
        assert!(config.listen.ip().is_loopback());
        assert_eq!(config.metrics_listen.unwrap().port(), 9464);
        assert_eq!(config.max_body, 1 << 20);
        assert_eq!(config.embedded_maxmemory, 512 << 20);
    }

    #[test]
    fn a_bad_value_names_its_setting_and_file() {
        let err = load_str("listen = \"nowhere\"").unwrap_err();
        assert_eq!(err.key, "listen");
        assert!(err.origin.contains("plimsoll.toml"), "{err}");
        assert!(err.to_string().contains("not an address"), "{err}");

        let err = load_str("[hooks.github]\nsecret = \"short\"").unwrap_err();
        assert_eq!(err.key, "hooks.github.secret");

        let err = load_str("[queues.\"bad name\"]").unwrap_err();
        assert!(err.key.starts_with("queues."), "{err}");
    }

    /// Settings that started a server on which every request then failed
    /// (`max_attempts = 0`, a 0 s push timeout, a 100 GiB `max_body`…) are
    /// refused at start, each naming its key.
    #[test]
    fn every_setting_out_of_its_range_is_refused_naming_it() {
        let push =
            |extra: &str| format!("[queues.out.push]\nurl = \"http://127.0.0.1:1/x\"\n{extra}");
        let cases: Vec<(String, &str)> = vec![
            ("max_body = \"0\"".into(), "max_body"),
            ("max_body = \"100GiB\"".into(), "max_body"),
            ("shutdown_grace = \"0s\"".into(), "shutdown_grace"),
            ("shutdown_grace = \"400days\"".into(), "shutdown_grace"),
            ("tokens = [\"short\"]".into(), "tokens"),
            (format!("tokens = [\"{}\"]", "t".repeat(2000)), "tokens"),
            ("[redis]\nprefix = \"a{b}\"".into(), "redis.prefix"),
            (
                "[redis]\nembedded_maxmemory = \"1MiB\"".into(),
                "redis.embedded_maxmemory",
            ),
            (
                "[redis]\nembedded_maxmemory = \"100TiB\"".into(),
                "redis.embedded_maxmemory",
            ),
            (
                "[redis]\nembedded_maxmemory = \"9000GiB\"".into(),
                "redis.embedded_maxmemory",
            ),
            ("[spool]\nmax_bytes = \"10\"".into(), "spool.max_bytes"),
            ("[spool]\nmax_bytes = \"5000GiB\"".into(), "spool.max_bytes"),
            ("[spool]\nwarn_at = 0.0".into(), "spool.warn_at"),
            (
                "[queues.mail]\nmax_attempts = 0".into(),
                "queues.mail.max_attempts",
            ),
            (
                "[queues.mail]\nmax_attempts = 5000".into(),
                "queues.mail.max_attempts",
            ),
            (
                "[queues.mail]\ntimeout = \"0s\"".into(),
                "queues.mail.timeout",
            ),
            (
                "[queues.mail]\ntimeout = \"400days\"".into(),
                "queues.mail.timeout",
            ),
            (push("timeout = \"0s\""), "queues.out.push.timeout"),
            (push("timeout = \"400days\""), "queues.out.push.timeout"),
            (push("timeout = \"10m\""), "queues.out.push.timeout"),
            (push("concurrency = 0"), "queues.out.push.concurrency"),
            (
                push("rate_per_second = 0"),
                "queues.out.push.rate_per_second",
            ),
            (
                push("rate_per_second = 2000000"),
                "queues.out.push.rate_per_second",
            ),
            (push("secret = \"short\""), "queues.out.push.secret"),
            (
                "[queues.out.push]\nurl = \"ftp://x/\"".into(),
                "queues.out.push.url",
            ),
            ("[hooks.gh]\nmax_body = \"0\"".into(), "hooks.gh.max_body"),
            (
                "[hooks.gh]\nmax_body = \"100GiB\"".into(),
                "hooks.gh.max_body",
            ),
            ("[hooks.gh]\nsecret = \"x\"".into(), "hooks.gh.secret"),
            (
                "[hooks.gh]\nsecret = \"long enough\"\nsignature_header = \"a b\"".into(),
                "hooks.gh.signature_header",
            ),
            (
                "[hooks.gh]\ndelivery_header = \"a:b\"".into(),
                "hooks.gh.delivery_header",
            ),
            ("[hooks.gh]\nqueue = \"..\"".into(), "hooks.gh.queue"),
            ("[cache]\ntimeout = \"0s\"".into(), "cache.timeout"),
            ("[cache]\ntimeout = \"1h\"".into(), "cache.timeout"),
            ("[cache]\ndefault_ttl = \"0s\"".into(), "cache.default_ttl"),
            (
                "[cache]\ndefault_ttl = \"400days\"".into(),
                "cache.default_ttl",
            ),
            ("[guard]\ninterval = \"1ms\"".into(), "guard.interval"),
            ("[guard]\ninterval = \"30days\"".into(), "guard.interval"),
            ("[guard]\nlimit = \"0\"".into(), "guard.limit"),
            (
                "[guard]\nreport_interval = \"1s\"".into(),
                "guard.report_interval",
            ),
            (
                "[http]\nheader_read_timeout = \"0s\"".into(),
                "http.header_read_timeout",
            ),
            (
                "[http]\nheader_read_timeout = \"1h\"".into(),
                "http.header_read_timeout",
            ),
            (
                "[http]\nbody_read_timeout = \"0s\"".into(),
                "http.body_read_timeout",
            ),
            (
                "[http]\nbody_read_timeout = \"1day\"".into(),
                "http.body_read_timeout",
            ),
            ("[http]\nmax_connections = 0".into(), "http.max_connections"),
            (
                "[http]\nmax_connections = 100000000".into(),
                "http.max_connections",
            ),
            (
                "[http]\npublic_url = \"not a url\"".into(),
                "http.public_url",
            ),
            (
                "[http]\npublic_url = \"ftp://host/\"".into(),
                "http.public_url",
            ),
        ];
        for (toml, key) in &cases {
            let err = load_str(toml).expect_err(toml);
            assert_eq!(&err.key, key, "{toml}: {err}");
            assert!(err.to_string().contains(key), "{err}");
        }
        let err = load_str("[queues.mail]\nmax_attempts = 5000").unwrap_err();
        assert!(err.message.contains("1 to 1000"), "{err}");
        let err = load_str("[hooks.gh]\nmax_body = \"100GiB\"").unwrap_err();
        assert!(err.message.contains("64.0 MiB"), "{err}");
    }

    #[test]
    fn the_edge_settings_have_defaults_and_fit_the_open_file_limit() {
        let config = load_str("").unwrap();
        assert_eq!(config.http.header_read_timeout, Duration::from_secs(5));
        assert_eq!(config.http.body_read_timeout, Duration::from_secs(30));
        let room = crate::listener::open_file_limit().saturating_sub(FD_RESERVE);
        assert_eq!(
            config.http.max_connections as u64,
            (DEFAULT_MAX_CONNECTIONS as u64).min(room)
        );
        assert!(!config.allow_eviction);
        let config = load_str("[http]\npublic_url = \"HTTPS://Dash.Example.com:443/x\"").unwrap();
        assert_eq!(
            config.http.public_origin.as_deref(),
            Some("https://dash.example.com")
        );
        let config = load_str("[queues.out]\ntimeout = \"1h\"\n[queues.out.push]\nurl = \"http://h/\"\ntimeout = \"10m\"").unwrap();
        assert_eq!(
            config
                .queues
                .values()
                .next()
                .unwrap()
                .push
                .as_ref()
                .unwrap()
                .timeout,
            Duration::from_secs(600)
        );
    }

    #[test]
    fn unknown_settings_are_errors_not_ignored() {
        let err = load_str("lisen = \"127.0.0.1:1\"").unwrap_err();
        assert!(err.to_string().contains("lisen"), "{err}");
    }

    #[test]
    fn hooks_default_to_github_style_and_their_own_queue() {
        let config = load_str("[hooks.github]\nsecret = \"it's a secret\"").unwrap();
        let hook = &config.hooks["github"];
        assert_eq!(hook.queue.as_str(), "hooks.github");
        assert_eq!(hook.signature_header, "X-Hub-Signature-256");
        assert_eq!(hook.delivery_header.as_deref(), Some("X-GitHub-Delivery"));
    }

    #[test]
    fn a_queues_retention_is_read_and_checked() {
        let config = load_str(
            "[queues.mail.retention]\n\
             completed = { max_count = 500, max_age = \"1h\", max_bytes = \"1MiB\" }\n\
             dead = { max_age = \"1d\" }\n",
        )
        .unwrap();
        let retention = config.queues.values().next().unwrap().retention.unwrap();
        assert_eq!(
            retention.completed,
            plimsoll::CompletedRetention::Keep(
                plimsoll::Bounds::new(500, Duration::from_secs(3600), 1 << 20).unwrap()
            )
        );
        assert_eq!(retention.dead.max_age(), Duration::from_secs(86_400));
        assert_eq!(
            retention.dead.max_count(),
            plimsoll::queue::DEFAULT_DEAD_MAX_COUNT,
            "a bound left out keeps its default"
        );
        let err = load_str("[queues.mail.retention]\ncompleted = { max_count = 5 }").unwrap_err();
        assert_eq!(err.key, "queues.mail.retention.completed.max_age");
        let err = load_str("[queues.mail.retention]\ndead = { max_count = 0 }").unwrap_err();
        assert_eq!(err.key, "queues.mail.retention.dead");
        assert!(
            load_str("[queues.mail]")
                .unwrap()
                .queues
                .values()
                .next()
                .unwrap()
                .retention
                .is_none()
        );
    }

    /// `./scripts/run` exited at once on a fresh machine: the default
    /// `.plimsoll` was handed to redis-server as a relative path.
    #[test]
    fn the_default_data_folder_is_resolved_to_an_absolute_path() {
        let config = load_str("").unwrap();
        assert!(config.data_dir.is_absolute(), "{:?}", config.data_dir);
        assert_eq!(
            config.data_dir,
            std::env::current_dir().unwrap().join(DEFAULT_DATA_DIR)
        );
        let guard_history = config.guard.unwrap().history_dir.unwrap();
        assert_eq!(guard_history, config.data_dir.join("guard"));
    }

    /// A 600 KB webhook passed the hook's default 1 MiB `max_body`, was
    /// answered 202 and spooled, and failed `PayloadTooLarge` forever on
    /// replay against the queue's 512 KiB limit.
    #[test]
    fn a_hook_never_takes_a_body_its_queue_refuses() {
        let config = load_str("[hooks.github]\nsecret = \"it's a secret\"").unwrap();
        let derived = config.hooks["github"].max_body;
        assert_eq!(
            derived,
            plimsoll::queue::DEFAULT_PAYLOAD_LIMIT - crate::intake::ENVELOPE_RESERVE
        );

        let err = load_str("[hooks.github]\nmax_body = \"1MiB\"").unwrap_err();
        assert_eq!(err.key, "hooks.github.max_body");
        assert!(err.to_string().contains("payload_limit"), "{err}");

        let config = load_str(
            "[hooks.github]\nmax_body = \"1MiB\"\n[queues.\"hooks.github\"]\npayload_limit = \"2MiB\"",
        )
        .unwrap();
        assert_eq!(config.hooks["github"].max_body, 1 << 20);

        let err = load_str("[queues.mail]\npayload_limit = \"65MiB\"").unwrap_err();
        assert_eq!(err.key, "queues.mail.payload_limit");
    }

    #[test]
    fn a_queue_s_idempotency_window_is_bounded() {
        let config = load_str("[queues.mail]\nidempotency_window = \"1h\"").unwrap();
        let mail = plimsoll::keyspace::QueueName::new("mail").unwrap();
        assert_eq!(
            config.queues[&mail].idempotency_window,
            Some(Duration::from_secs(3600))
        );
        for bad in ["0s", "31days"] {
            let err =
                load_str(&format!("[queues.mail]\nidempotency_window = \"{bad}\"")).unwrap_err();
            assert_eq!(err.key, "queues.mail.idempotency_window", "{bad}");
        }
    }

    #[test]
    fn overrides_beat_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("plimsoll.toml");
        std::fs::write(&path, "listen = \"127.0.0.1:1000\"").unwrap();
        let config = ServerConfig::load(
            Some(&path),
            &Overrides {
                listen: Some("127.0.0.1:2000".into()),
                ..Overrides::default()
            },
        )
        .unwrap();
        assert_eq!(config.listen.port(), 2000);
    }

    #[test]
    fn sizes_parse_with_units() {
        assert_eq!(parse_bytes("512MiB").unwrap(), 512 << 20);
        assert!(parse_bytes("512m").unwrap_err().contains("ambiguous"));
    }

    #[test]
    fn durability_has_a_server_wide_default_and_a_per_queue_setting() {
        let config = load_str(
            "[redis]\ndurability = \"replicas:1:250ms\"\n[queues.mail]\ndurability = \"primary\"\n[queues.pay]\nmax_attempts = 3",
        )
        .unwrap();
        assert_eq!(
            config.durability,
            plimsoll::Durability::Replicas {
                count: 1,
                timeout: Duration::from_millis(250)
            }
        );
        let mail = QueueName::new("mail").unwrap();
        let pay = QueueName::new("pay").unwrap();
        assert_eq!(
            config.queues[&mail].durability,
            Some(plimsoll::Durability::Primary)
        );
        assert_eq!(config.queues[&pay].durability, None);
        assert_eq!(
            load_str("").unwrap().durability,
            plimsoll::Durability::Primary
        );

        let err = load_str("[queues.mail]\ndurability = \"replicas:0\"").unwrap_err();
        assert_eq!(err.key, "queues.mail.durability", "{err}");
        let err = load_str("[redis]\ndurability = \"always\"").unwrap_err();
        assert_eq!(err.key, "redis.durability", "{err}");
    }
}
