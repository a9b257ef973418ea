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
use figment::providers::{Format, Serialized, Toml};
use plimsoll::keyspace::QueueName;

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
            let room = payload_limit.saturating_sub(crate::intake::envelope::ENVELOPE_RESERVE);
            if room == 0 {
                return Err(bad(
                    &format!("queues.{queue}.payload_limit"),
                    format!(
                        "{payload_limit} bytes leave no room for webhooks of source {source}: their envelope needs {} bytes beyond the body",
                        crate::intake::envelope::ENVELOPE_RESERVE
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
                                crate::intake::envelope::ENVELOPE_RESERVE
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

mod checks;
mod raw;
#[cfg(test)]
mod tests;

pub use checks::*;
pub use raw::*;
