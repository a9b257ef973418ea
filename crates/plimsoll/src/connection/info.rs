//! `INFO`, read once: the one parser of its text for every part that asks
//! Redis about itself (the guard's readings, the eviction and durability
//! checks, topology detection, the memory report, the server's dashboard).
//!
//! `INFO` answers `name:value` lines under `# Section` headings; a few
//! values are lists of `key=value` pairs (`db0:keys=10,expires=2`,
//! `errorstat_OOM:count=12`, `slave0:ip=…,port=…,state=online`). [`Info`]
//! keeps the lines by name and reads those lists on demand.

use std::collections::HashMap;

use redis::Cmd;

use super::Redis;
use crate::error::{ErrorKind, Result};

/// One `INFO` reply.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Info {
    fields: HashMap<String, String>,
}

impl Info {
    /// Reads the text of an `INFO` reply; lines that are not `name:value`
    /// (headings, blank lines) are skipped.
    pub fn parse(text: &str) -> Self {
        let fields = text
            .lines()
            .filter(|line| !line.starts_with('#'))
            .filter_map(|line| line.trim_end().split_once(':'))
            .map(|(name, value)| (name.to_string(), value.trim().to_string()))
            .collect();
        Self { fields }
    }

    /// The value of `name`, as Redis wrote it.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.fields.get(name).map(String::as_str)
    }

    /// The value of `name` as a number; `None` when absent or not a number.
    pub fn number(&self, name: &str) -> Option<u64> {
        self.get(name)?.parse().ok()
    }

    /// The value of `name` as a number, 0 when absent: for counters and
    /// sizes a Redis of another version may not report.
    pub fn count(&self, name: &str) -> u64 {
        self.number(name).unwrap_or(0)
    }

    /// One `key=value` of a list-valued field: `pair("errorstat_OOM",
    /// "count")`.
    pub fn pair(&self, name: &str, key: &str) -> Option<&str> {
        list_value(self.get(name)?, key)
    }

    /// Fields whose name is `prefix` followed by digits (`db0`, `slave1`),
    /// with their values, in no particular order.
    pub fn numbered<'a>(&'a self, prefix: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.fields.iter().filter_map(move |(name, value)| {
            let n = name.strip_prefix(prefix)?;
            (!n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())).then_some(value.as_str())
        })
    }

    /// Keys and keys with a TTL over every database (`db0:keys=…,expires=…`).
    pub fn keyspace(&self) -> (u64, u64) {
        self.numbered("db").fold((0, 0), |(keys, expires), db| {
            let read = |key| list_value(db, key).and_then(|v| v.parse::<u64>().ok());
            (
                keys + read("keys").unwrap_or(0),
                expires + read("expires").unwrap_or(0),
            )
        })
    }

    /// Whether the server runs in cluster mode (`cluster_enabled:1`).
    pub fn cluster_enabled(&self) -> bool {
        self.get("cluster_enabled") == Some("1")
    }

    /// `redis_version` as (major, minor); (0, 0) when absent.
    pub fn version(&self) -> (u32, u32) {
        let mut parts = self
            .get("redis_version")
            .unwrap_or_default()
            .split('.')
            .map(|p| p.parse::<u32>().unwrap_or(0));
        (parts.next().unwrap_or(0), parts.next().unwrap_or(0))
    }
}

/// `value` of `key` in `a=1,b=2`.
pub(crate) fn list_value<'a>(list: &'a str, key: &str) -> Option<&'a str> {
    list.split(',')
        .find_map(|pair| pair.strip_prefix(key)?.strip_prefix('='))
}

/// `INFO` with these sections.
pub(crate) fn info_command(sections: &[&str]) -> Cmd {
    let mut cmd = redis::cmd("INFO");
    for section in sections {
        cmd.arg(*section);
    }
    cmd
}

impl Redis {
    /// `INFO` of these sections (all of the default set when empty), read
    /// once into [`Info`]. On a cluster handle the command goes to the node
    /// the client picks: read each node through
    /// [`primaries`](Redis::primaries). A Redis older than 7 takes one
    /// section per call; when it refuses several, the default set (which
    /// holds them all) is asked instead.
    pub async fn info(&self, sections: &[&str]) -> Result<Info> {
        match self.query::<String>(&info_command(sections)).await {
            Ok(text) => Ok(Info::parse(&text)),
            Err(err) if sections.len() > 1 && err.kind() == ErrorKind::Redis => {
                let text: String = self.query(&redis::cmd("INFO")).await?;
                Ok(Info::parse(&text))
            }
            Err(err) => Err(err),
        }
    }

    /// `used_memory` of the node this handle's commands go to (one server;
    /// on a cluster, read each of [`primaries`](Redis::primaries)).
    pub async fn used_memory(&self) -> Result<u64> {
        Ok(self.info(&["memory"]).await?.count("used_memory"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "# Server\r\nredis_version:7.0.15\r\n\r\n# Memory\r\nused_memory:1024\r\n\
        maxmemory_policy:noeviction\r\n# Errorstats\r\nerrorstat_OOM:count=12\r\n\
        # Replication\r\nslave0:ip=10.0.0.2,port=6380,state=online,offset=1,lag=0\r\n\
        # Keyspace\r\ndb0:keys=10,expires=2,avg_ttl=0\r\ndb3:keys=5,expires=5,avg_ttl=9\r\n\
        # Cluster\r\ncluster_enabled:0\r\n";

    #[test]
    fn fields_are_read_by_name_and_lists_by_key() {
        let info = Info::parse(TEXT);
        assert_eq!(info.get("maxmemory_policy"), Some("noeviction"));
        assert_eq!(info.count("used_memory"), 1024);
        assert_eq!(info.count("absent"), 0);
        assert_eq!(info.pair("errorstat_OOM", "count"), Some("12"));
        assert_eq!(info.keyspace(), (15, 7));
        assert_eq!(info.version(), (7, 0));
        assert!(!info.cluster_enabled());
        let replicas: Vec<_> = info.numbered("slave").collect();
        assert_eq!(replicas.len(), 1);
        assert_eq!(list_value(replicas[0], "state"), Some("online"));
        // `slave_read_only:1` is not a numbered replica line.
        assert_eq!(
            Info::parse("slave_read_only:1\r\n")
                .numbered("slave")
                .count(),
            0
        );
    }
}
