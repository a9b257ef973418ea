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
    /// The URL(s) with passwords hidden, for messages.
    pub fn redacted(&self) -> String {
        RedisConfig::new(&self.redis)
            .map(|c| c.redacted_urls().join(","))
            .unwrap_or_else(|_| "Redis".into())
    }

    pub async fn connect(&self) -> Result<Redis> {
        let config = RedisConfig::new(&self.redis)?;
        Redis::connect(config.clone())
            .await
            .with_context(|| format!("connecting to {}", config.redacted_urls().join(",")))
    }
}

/// `.plimsoll/<kind>/<host_port>`: where a command keeps local state about
/// one Redis (its guard history, its previous memory reports).
pub fn state_dir(kind: &str, redis: &Redis) -> std::path::PathBuf {
    let target = redis
        .config()
        .redacted_urls()
        .first()
        .cloned()
        .unwrap_or_default();
    let target = target
        .split_once("://")
        .map_or(target.as_str(), |(_, rest)| rest)
        .rsplit('@')
        .next()
        .unwrap_or_default()
        .trim_end_matches('/');
    let safe: String = target
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    std::path::Path::new(".plimsoll").join(kind).join(safe)
}

pub use plimsoll::units::{human_bytes, parse_bytes, parse_duration};

/// A flag's value or `off`: the one spelling of "none" for every
/// subcommand's flags and the server's configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OrOff<T>(pub Option<T>);

/// `off`, or a duration.
pub fn duration_or_off(text: &str) -> Result<OrOff<Duration>, String> {
    if text.trim() == "off" {
        return Ok(OrOff(None));
    }
    parse_duration(text)
        .map(|d| OrOff(Some(d)))
        .map_err(|e| format!("{e}; or off"))
}

/// `off`, or an address like 127.0.0.1:9464.
pub fn addr_or_off(text: &str) -> Result<OrOff<std::net::SocketAddr>, String> {
    plimsoll_server::config::parse_listen_or_off(text).map(OrOff)
}

/// Resolves on SIGTERM or Ctrl-C: how `serve` and `guard` are told to stop
/// (a service manager sends SIGTERM, a terminal Ctrl-C).
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
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
}
