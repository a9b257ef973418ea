//! Small helpers shared by the subcommands.

use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use plimsoll::{Redis, RedisConfig};

/// Where Redis is: shared by every subcommand that talks to one.
#[derive(Debug, Clone, Args)]
pub struct RedisArgs {
    /// Redis URL (`redis://[user:pass@]host:port/db`, `rediss://…`), or
    /// several comma-separated seed URLs of a cluster. A cluster is detected
    /// from one URL too.
    #[arg(
        long,
        env = "PLIMSOLL_REDIS_URL",
        default_value = "redis://127.0.0.1:6379/"
    )]
    pub redis: String,

    /// Key prefix of Plimsoll's keys.
    #[arg(long, env = "PLIMSOLL_PREFIX", default_value = plimsoll::keyspace::DEFAULT_PREFIX)]
    pub prefix: String,
}

impl RedisArgs {
    pub async fn connect(&self) -> Result<Redis> {
        let config = RedisConfig::new(&self.redis)?;
        Redis::connect(config.clone())
            .await
            .with_context(|| format!("connecting to {}", config.redacted_urls().join(",")))
    }
}

/// Parses `10s`, `5m`, `250ms`, `2h 30m`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text).map_err(|e| format!("{e} (try e.g. 500ms, 10s, 5m, 2h)"))
}

/// Bytes as `1.5 MiB`.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// `INFO <section>` as (field, value) pairs.
pub async fn info(
    redis: &Redis,
    section: &str,
) -> Result<std::collections::HashMap<String, String>> {
    let text: String = redis.query(redis::cmd("INFO").arg(section)).await?;
    Ok(text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.trim_end().split_once(':'))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect())
}

/// `used_memory` in bytes.
pub async fn used_memory(redis: &Redis) -> Result<u64> {
    info(redis, "memory")
        .await?
        .get("used_memory")
        .and_then(|v| v.parse().ok())
        .context("INFO memory lacks used_memory")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_read_well() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(64 << 20), "64.0 MiB");
    }

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert!(parse_duration("soon").unwrap_err().contains("try e.g."));
    }
}
