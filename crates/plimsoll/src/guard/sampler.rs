//! One reading of every primary: `INFO memory stats keyspace errorstats`.
//!
//! The limit memory is measured against is, in order: `maxmemory` when set;
//! else the limit given in the guard's configuration; else the memory of the
//! machine Redis runs on (`total_system_memory`); else the memory of the
//! machine the guard runs on. A Redis without `maxmemory` is reported as a
//! risk of its own: it grows until the kernel's OOM killer stops it, taking
//! every key with it.

use serde::{Deserialize, Serialize};

use crate::connection::info::list_value;
use crate::connection::{Info, Primary};
use crate::error::Result;

/// Where a node's limit comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LimitSource {
    /// Redis' own `maxmemory`.
    Maxmemory,
    /// The guard's configured limit (Redis has no `maxmemory`).
    Configured,
    /// The memory of Redis' machine (`total_system_memory`).
    System,
    /// The memory of the guard's machine (Redis did not say its own).
    GuardHost,
}

impl LimitSource {
    /// For labels and messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Maxmemory => "maxmemory",
            Self::Configured => "configured",
            Self::System => "system",
            Self::GuardHost => "guard_host",
        }
    }
}

/// One node's figures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeSample {
    /// `host:port`.
    pub node: String,
    /// `used_memory`.
    pub used_memory: u64,
    /// `maxmemory` (0: unbounded).
    pub maxmemory: u64,
    /// `maxmemory_policy`.
    pub maxmemory_policy: String,
    /// The limit the guard measures against.
    pub limit: u64,
    /// Where the limit comes from.
    pub limit_source: LimitSource,
    /// Keys in all databases.
    pub keys: u64,
    /// Keys with a TTL, all databases.
    pub expires: u64,
    /// `evicted_keys` since Redis started.
    pub evicted_keys: u64,
    /// Commands refused with `OOM` since Redis started (`errorstat_OOM`).
    pub oom_rejections: u64,
    /// `instantaneous_ops_per_sec`.
    pub ops_per_sec: u64,
    /// Replicas the node lists (`INFO replication`): `host:port` and
    /// whether it says they are online.
    #[serde(default)]
    pub replicas: Vec<(String, bool)>,
    /// `used_memory_rss`: what the process holds, fragmentation included.
    #[serde(default)]
    pub used_memory_rss: u64,
    /// `mem_clients_normal`: clients' query and output buffers.
    #[serde(default)]
    pub client_buffers: u64,
    /// `mem_replication_backlog`.
    #[serde(default)]
    pub replication_backlog: u64,
}

impl NodeSample {
    /// `used_memory / limit`.
    pub fn used_ratio(&self) -> f64 {
        if self.limit == 0 {
            0.0
        } else {
            self.used_memory as f64 / self.limit as f64
        }
    }
}

/// Reads one node.
pub(crate) async fn sample_node(
    primary: &Primary,
    configured_limit: Option<u64>,
) -> Result<NodeSample> {
    let info = primary
        .redis
        .info(&["memory", "stats", "keyspace", "errorstats", "replication"])
        .await?;
    Ok(sample_of(
        &primary.address,
        &info,
        configured_limit,
        guard_host_memory,
    ))
}

/// The sample an `INFO` reply gives.
pub(crate) fn sample_of(
    node: &str,
    info: &Info,
    configured_limit: Option<u64>,
    host_memory: fn() -> u64,
) -> NodeSample {
    let (keys, expires) = info.keyspace();
    let maxmemory = info.count("maxmemory");
    let system = info.count("total_system_memory");
    let (limit, limit_source) = if maxmemory > 0 {
        (maxmemory, LimitSource::Maxmemory)
    } else if let Some(limit) = configured_limit {
        (limit, LimitSource::Configured)
    } else if system > 0 {
        (system, LimitSource::System)
    } else {
        (host_memory(), LimitSource::GuardHost)
    };
    NodeSample {
        node: node.to_string(),
        used_memory: info.count("used_memory"),
        maxmemory,
        maxmemory_policy: info.get("maxmemory_policy").unwrap_or_default().to_string(),
        limit,
        limit_source,
        keys,
        expires,
        evicted_keys: info.count("evicted_keys"),
        oom_rejections: info
            .pair("errorstat_OOM", "count")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0),
        ops_per_sec: info.count("instantaneous_ops_per_sec"),
        replicas: replicas_of(info),
        used_memory_rss: info.count("used_memory_rss"),
        client_buffers: info.count("mem_clients_normal"),
        replication_backlog: info.count("mem_replication_backlog"),
    }
}

/// `slave0:ip=10.0.0.2,port=6380,state=online,offset=…,lag=0` lines.
fn replicas_of(info: &Info) -> Vec<(String, bool)> {
    let mut replicas: Vec<(String, bool)> = info
        .numbered("slave")
        .filter_map(|value| {
            let get = |key: &str| list_value(value, key);
            Some((
                format!("{}:{}", get("ip")?, get("port")?),
                get("state") == Some("online"),
            ))
        })
        .collect();
    replicas.sort();
    replicas
}

/// `MemTotal` of this machine, bytes (0 when unknown).
pub(crate) fn guard_host_memory() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    const INFO: &str = "# Memory\r\nused_memory:1048576\r\nmaxmemory:0\r\nmaxmemory_policy:noeviction\r\ntotal_system_memory:8589934592\r\n# Stats\r\nevicted_keys:7\r\ninstantaneous_ops_per_sec:12\r\n# Errorstats\r\nerrorstat_ERR:count=1\r\nerrorstat_OOM:count=42\r\n# Keyspace\r\ndb0:keys=10,expires=2,avg_ttl=0\r\ndb3:keys=5,expires=0,avg_ttl=0\r\n";

    #[test]
    fn info_replication_gives_the_replicas_and_whether_they_are_online() {
        let info = "# Replication\r\nrole:master\r\nconnected_slaves:2\r\nslave0:ip=10.0.0.2,port=6380,state=online,offset=42,lag=0\r\nslave1:ip=10.0.0.3,port=6380,state=wait_bgsave,offset=0,lag=0\r\nmaster_failover_state:no-failover\r\n";
        let s = sample_of("h:1", &Info::parse(info), None, || 1);
        assert_eq!(
            s.replicas,
            [
                ("10.0.0.2:6380".to_string(), true),
                ("10.0.0.3:6380".to_string(), false)
            ]
        );
    }

    #[test]
    fn info_gives_the_figures() {
        let s = sample_of("h:1", &Info::parse(INFO), None, || 1);
        assert_eq!(s.used_memory, 1 << 20);
        assert_eq!(s.oom_rejections, 42);
        assert_eq!(s.evicted_keys, 7);
        assert_eq!((s.keys, s.expires), (15, 2));
        assert_eq!(s.limit_source, LimitSource::System);
        assert_eq!(s.limit, 8 << 30);
    }

    #[test]
    fn the_limit_prefers_maxmemory_then_configuration() {
        let with_max = INFO.replace("maxmemory:0", "maxmemory:4096");
        assert_eq!(
            sample_of("h", &Info::parse(&with_max), Some(1), || 1).limit_source,
            LimitSource::Maxmemory
        );
        let s = sample_of("h", &Info::parse(INFO), Some(1 << 30), || 1);
        assert_eq!(
            (s.limit, s.limit_source),
            (1 << 30, LimitSource::Configured)
        );
        let bare = INFO.replace("total_system_memory:8589934592", "");
        let s = sample_of("h", &Info::parse(&bare), None, || 99);
        assert_eq!((s.limit, s.limit_source), (99, LimitSource::GuardHost));
    }
}
