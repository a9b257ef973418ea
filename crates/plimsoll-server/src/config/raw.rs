//! The configuration file's schema as it is read (strings for sizes and
//! durations, options for what may be left out), with each setting's
//! default and bounds. `ServerConfig::load` turns it into checked values.

use std::collections::BTreeMap;
use std::time::Duration;

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
