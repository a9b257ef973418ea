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

/// The file as written, before checking. Every field has a default.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawConfig {
    pub listen: String,
    /// Empty string: no metrics listener.
    pub metrics_listen: String,
    pub tokens: Vec<String>,
    pub data_dir: String,
    pub max_body: String,
    pub shutdown_grace: String,
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
            redis: RawRedis::default(),
            spool: RawSpool::default(),
            queues: BTreeMap::new(),
            hooks: BTreeMap::new(),
            cache: RawCache::default(),
            guard: RawGuard::default(),
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
    /// What an enqueue (API or webhook) waits for before it answers, for
    /// queues that set none: `primary` (default), `replicas[:COUNT[:TIMEOUT]]`
    /// or `replicas-aof[:COUNT[:TIMEOUT]]`.
    pub durability: Option<String>,
}

impl Default for RawRedis {
    fn default() -> Self {
        Self {
            url: None,
            prefix: plimsoll::keyspace::DEFAULT_PREFIX.into(),
            embedded_maxmemory: DEFAULT_EMBEDDED_MAXMEMORY.into(),
            durability: None,
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
    /// As `redis.durability`, for this queue.
    pub durability: Option<String>,
    /// Deliver this queue's jobs by HTTP POST instead of leaving them for
    /// library workers.
    pub push: Option<RawPush>,
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
    pub redis_url: Option<String>,
    pub prefix: String,
    pub embedded_maxmemory: u64,
    /// What enqueues wait for, for queues that set none.
    pub durability: plimsoll::Durability,
    pub spool_max_bytes: u64,
    pub spool_warn_at: f64,
    pub queues: BTreeMap<QueueName, QueueSettings>,
    pub hooks: BTreeMap<String, HookSettings>,
    /// The cache behind `/v1/cache` (checked: its settings are valid).
    pub cache: plimsoll::CacheConfig,
    /// The memory guard (checked), or `None` when it is off.
    pub guard: Option<plimsoll::GuardConfig>,
}

/// Settings of one configured queue.
#[derive(Debug, Clone, Default)]
pub struct QueueSettings {
    pub max_attempts: Option<u16>,
    pub timeout: Option<Duration>,
    pub durability: Option<plimsoll::Durability>,
    pub push: Option<PushSettings>,
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
        let metrics_listen = if raw.metrics_listen.is_empty() {
            None
        } else {
            Some(raw.metrics_listen.parse::<SocketAddr>().map_err(|_| {
                bad(
                    "metrics_listen",
                    format!(
                        "{:?} is not an address like 127.0.0.1:9464",
                        raw.metrics_listen
                    ),
                )
            })?)
        };
        if metrics_listen == Some(listen) {
            return Err(bad(
                "metrics_listen",
                "must differ from listen: metrics have a port of their own".into(),
            ));
        }
        for (i, token) in raw.tokens.iter().enumerate() {
            if token.len() < 16 || token.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(bad(
                    "tokens",
                    format!(
                        "token {} must be at least 16 characters without spaces",
                        i + 1
                    ),
                ));
            }
        }
        let max_body = parse_bytes(&raw.max_body).map_err(|m| bad("max_body", m))? as usize;
        if !(1024..=64 << 20).contains(&max_body) {
            return Err(bad("max_body", "must be between 1KiB and 64MiB".into()));
        }
        let shutdown_grace =
            parse_duration(&raw.shutdown_grace).map_err(|m| bad("shutdown_grace", m))?;
        if let Some(url) = &raw.redis.url {
            plimsoll::RedisConfig::new(url)
                .map_err(|e| bad("redis.url", e.message().to_string()))?;
        }
        let embedded_maxmemory = parse_bytes(&raw.redis.embedded_maxmemory)
            .map_err(|m| bad("redis.embedded_maxmemory", m))?;
        if embedded_maxmemory < 16 << 20 {
            return Err(bad(
                "redis.embedded_maxmemory",
                "must be at least 16MiB".into(),
            ));
        }
        let spool_max_bytes =
            parse_bytes(&raw.spool.max_bytes).map_err(|m| bad("spool.max_bytes", m))?;
        if spool_max_bytes < 1 << 20 {
            return Err(bad("spool.max_bytes", "must be at least 1MiB".into()));
        }
        if !(0.1..=1.0).contains(&raw.spool.warn_at) {
            return Err(bad("spool.warn_at", "must be between 0.1 and 1.0".into()));
        }

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
            let timeout = q
                .timeout
                .as_deref()
                .map(parse_duration)
                .transpose()
                .map_err(|m| bad(&key("timeout"), m))?;
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
                    let timeout =
                        parse_duration(&p.timeout).map_err(|m| bad(&key("push.timeout"), m))?;
                    Some(PushSettings {
                        url,
                        secret: p.secret.clone().filter(|s| !s.is_empty()),
                        timeout,
                        concurrency: p.concurrency,
                        rate_per_second: match p.rate_per_second {
                            None => None,
                            Some(n) => Some(std::num::NonZeroU32::new(n).ok_or_else(|| {
                                bad(&key("push.rate_per_second"), "must be at least 1".into())
                            })?),
                        },
                    })
                }
            };
            queues.insert(
                queue,
                QueueSettings {
                    max_attempts: q.max_attempts,
                    timeout,
                    durability: q
                        .durability
                        .as_deref()
                        .map(str::parse::<plimsoll::Durability>)
                        .transpose()
                        .map_err(|e| bad(&key("durability"), e.message().to_string()))?,
                    push,
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
                && secret.len() < 8
            {
                return Err(bad(&key("secret"), "must be at least 8 characters".into()));
            }
            if h.secret.is_some() && h.signature_header.trim().is_empty() {
                return Err(bad(&key("signature_header"), "must name a header".into()));
            }
            let max_body = match &h.max_body {
                Some(text) => parse_bytes(text).map_err(|m| bad(&key("max_body"), m))? as usize,
                None => max_body,
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
            timeout: parse_duration(&raw.cache.timeout).map_err(|m| bad("cache.timeout", m))?,
            default_ttl: parse_duration(&raw.cache.default_ttl)
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
            if let Some(text) = &g.interval {
                config.interval = parse_duration(text).map_err(|m| bad("guard.interval", m))?;
            }
            if let Some(text) = &g.limit {
                config.limit = Some(parse_bytes(text).map_err(|m| bad("guard.limit", m))?);
            }
            if let Some(text) = &g.report_interval {
                config.attribute_interval =
                    Some(parse_duration(text).map_err(|m| bad("guard.report_interval", m))?);
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
            redis_url: raw.redis.url,
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

/// `PLIMSOLL_LISTEN`, `PLIMSOLL_REDIS_URL`, `PLIMSOLL_QUEUES__MAIL__…`: a
/// single underscore after the prefix is part of a name, a double one nests.
/// `PLIMSOLL_LOG` belongs to the command, not to this schema.
fn env_provider() -> Env {
    Env::prefixed("PLIMSOLL_")
        .ignore(&["log"])
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
pub fn parse_bytes(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a size like 512MiB or 1GiB"))?;
    let factor: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1000,
        "kib" | "k" => 1 << 10,
        "mb" => 1000 * 1000,
        "mib" | "m" => 1 << 20,
        "gb" => 1000 * 1000 * 1000,
        "gib" | "g" => 1 << 30,
        other => return Err(format!("unknown size unit {other:?} in {text:?}")),
    };
    Ok((number * factor as f64) as u64)
}

/// `10s`, `250ms`, `5m`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim())
        .map_err(|e| format!("{text:?} is not a duration like 10s or 250ms: {e}"))
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
        assert_eq!(parse_bytes("1 GiB").unwrap(), 1 << 30);
        assert_eq!(parse_bytes("2048").unwrap(), 2048);
        assert!(parse_bytes("lots").is_err());
        assert!(parse_bytes("5 parsecs").is_err());
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
