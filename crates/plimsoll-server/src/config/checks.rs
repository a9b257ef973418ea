//! The checks that turn raw settings into valid ones: ranges of sizes,
//! durations and counts, the `[http]` section, retention bounds, and the
//! parsers of the values a setting may hold.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use figment::providers::Env;

use super::raw::*;
use super::{ConfigError, HttpSettings};

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
pub(super) fn check_http(
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
pub(super) fn body_size(text: &str) -> Result<usize, String> {
    let bytes = parse_bytes(text).and_then(|n| in_byte_range(n, MIN_MAX_BODY, MAX_MAX_BODY))?;
    Ok(bytes as usize)
}

/// `value` when it lies in `low..=high`, else a message that says the range.
pub(super) fn in_range<T: PartialOrd + fmt::Display>(
    value: T,
    low: T,
    high: T,
) -> Result<T, String> {
    if value < low || value > high {
        return Err(format!("{value} is out of range: must be {low} to {high}"));
    }
    Ok(value)
}

pub(super) fn in_duration_range(
    value: Duration,
    low: Duration,
    high: Duration,
) -> Result<Duration, String> {
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

pub(super) fn in_byte_range(value: u64, low: u64, high: u64) -> Result<u64, String> {
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
pub(super) fn env_provider() -> Env {
    Env::prefixed("PLIMSOLL_")
        .ignore(&["log", "fault_reps"])
        .map(|key| match key.as_str() {
            "redis_url" => "redis.url".into(),
            "prefix" => "redis.prefix".into(),
            _ => key.as_str().replace("__", ".").into(),
        })
}

pub(super) fn from_figment(err: &figment::Error) -> ConfigError {
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
pub(super) fn check_retention(
    raw: &RawRetention,
    key: &str,
) -> Result<plimsoll::Retention, (String, String)> {
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
