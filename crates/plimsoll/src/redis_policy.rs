//! Whether a Redis keeps what Plimsoll writes to it: its eviction policy and
//! its persistence. (The queue's own [`Durability`](crate::Durability)
//! setting, which waits for replicas, is another thing.)
//!
//! Two settings of Redis decide it, and neither can be seen from a reply to
//! a write:
//!
//! - **`maxmemory-policy`.** Anything but `noeviction` lets Redis delete keys
//!   to make room: `allkeys-*` any key, `volatile-*` keys with a TTL — which
//!   idempotency keys have. A job record, a waiting list or an idempotency
//!   key would vanish without an error, and with them the promise that an
//!   acknowledged job runs once. So a [`Queue`](crate::Queue) refuses to
//!   enqueue, and a [`Worker`](crate::Worker) to fetch, on such a Redis
//!   (every primary of a cluster is asked: see `Queue::check_redis` for one
//!   that does not answer), with an
//!   [`EvictingRedis`](crate::ErrorKind::EvictingRedis) error that names the
//!   node and the policy — unless
//!   [`QueueConfig::allow_evicting_redis`](crate::QueueConfig) says the risk
//!   is accepted. The check runs once per queue handle, on its first enqueue
//!   or fetch, and is remembered; a policy changed later is not seen until
//!   a new handle is made. A policy Plimsoll does not know counts as
//!   evicting. The cache is not checked: evicting cache entries is fine.
//! - **`appendonly` and `appendfsync`.** Redis acknowledges a write before it
//!   is on disk unless it runs with `appendfsync always`; a crash of Redis
//!   then loses up to a second of acknowledged writes (`everysec`), or all of
//!   them since the last snapshot (no append-only file). That breaks no
//!   Plimsoll invariant by itself — Redis' durability is Redis' — but an
//!   acknowledged webhook is only as durable as the Redis it went to, so the
//!   server warns about it ([`RedisPolicy::warnings`]).
//!
//! The figures come from `INFO memory` and `INFO persistence`, which managed
//! Redis services answer even where `CONFIG` is switched off; only
//! `appendfsync` needs `CONFIG GET`, and it is reported as unknown when that
//! is refused.

use crate::connection::Redis;
use crate::error::{Error, ErrorKind, Result};

/// The one `maxmemory-policy` under which Redis never deletes keys itself.
pub const NO_EVICTION: &str = "noeviction";

/// What one primary promises.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodePolicy {
    /// `host:port` of the primary.
    pub address: String,
    /// Its `maxmemory-policy`.
    pub maxmemory_policy: String,
    /// Whether the append-only file is on (`None`: not reported).
    pub appendonly: Option<bool>,
    /// Its `appendfsync` (`None`: `CONFIG GET` was refused).
    pub appendfsync: Option<String>,
}

impl NodePolicy {
    /// Whether Redis may delete keys by itself to make room.
    pub fn evicts(&self) -> bool {
        self.maxmemory_policy != NO_EVICTION
    }

    /// Whether every acknowledged write is on disk (`appendonly yes` with
    /// `appendfsync always`); `None` when that cannot be told.
    pub fn fsyncs_every_write(&self) -> Option<bool> {
        match (self.appendonly, self.appendfsync.as_deref()) {
            (Some(false), _) => Some(false),
            (Some(true), Some(fsync)) => Some(fsync == "always"),
            _ => None,
        }
    }
}

/// What every primary of a deployment promises.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisPolicy {
    pub nodes: Vec<NodePolicy>,
}

impl RedisPolicy {
    /// Asks every primary (one for a single server).
    pub async fn inspect(redis: &Redis) -> Result<Self> {
        let mut nodes = Vec::new();
        for primary in redis.primaries().await? {
            nodes.push(inspect_node(&primary.address, &primary.redis).await?);
        }
        Ok(Self { nodes })
    }

    /// An [`EvictingRedis`](ErrorKind::EvictingRedis) error naming every
    /// primary that may evict keys, if any does.
    pub fn refuse_eviction(&self) -> Result<()> {
        let evicting: Vec<String> = self
            .nodes
            .iter()
            .filter(|n| n.evicts())
            .map(|n| format!("{} has maxmemory-policy {}", n.address, n.maxmemory_policy))
            .collect();
        if evicting.is_empty() {
            return Ok(());
        }
        Err(Error::new(
            ErrorKind::EvictingRedis,
            format!(
                "{}: under memory pressure Redis would delete job records and idempotency \
                 keys without an error. Set `maxmemory-policy {NO_EVICTION}` (then a full \
                 Redis refuses writes, which Plimsoll reports), or accept the risk with \
                 QueueConfig::allow_evicting_redis (redis.allow_eviction in plimsoll serve)",
                evicting.join("; ")
            ),
        ))
    }

    /// One line per primary that does not put every acknowledged write on
    /// disk before answering.
    pub fn warnings(&self) -> Vec<String> {
        self.nodes
            .iter()
            .filter_map(|n| match n.fsyncs_every_write() {
                Some(true) => None,
                Some(false) => Some(format!(
                    "{}: appendonly {}, appendfsync {}: a crash of Redis loses writes it \
                     acknowledged (set appendonly yes, appendfsync always)",
                    n.address,
                    if n.appendonly == Some(true) {
                        "yes"
                    } else {
                        "no"
                    },
                    n.appendfsync.as_deref().unwrap_or("unknown"),
                )),
                None => Some(format!(
                    "{}: cannot tell whether Redis fsyncs every write (CONFIG GET appendfsync \
                     was refused); acknowledged writes may not survive a crash of Redis",
                    n.address
                )),
            })
            .collect()
    }
}

/// The first Redis version with `WAITAOF`.
const WAITAOF_SINCE: (u32, u32) = (7, 2);

/// Refuses a [`Durability`](crate::Durability) that `redis` cannot give:
/// [`ReplicasAof`](crate::Durability::ReplicasAof) waits with `WAITAOF`,
/// which Redis 7.2 added; on an older primary every enqueue would fail.
/// Every primary is asked. An [`InvalidInput`](ErrorKind::InvalidInput)
/// error names the node and its version; nothing is written. Producers ask
/// at their first batch; `plimsoll serve` at start, for every queue it is
/// configured with.
pub async fn refuse_durability(redis: &Redis, durability: crate::Durability) -> Result<()> {
    if !matches!(durability, crate::Durability::ReplicasAof { .. }) {
        return Ok(());
    }
    for primary in redis.primaries().await? {
        let info = primary.redis.info(&["server"]).await?;
        let version = info.get("redis_version").unwrap_or("unknown");
        if info.version() < WAITAOF_SINCE {
            return Err(Error::invalid(format!(
                "durability replicas-aof needs Redis 7.2 or later (WAITAOF); {} runs {version}: \
                 use durability replicas, which waits for the replicas' memory",
                primary.address
            )));
        }
    }
    Ok(())
}

/// Refuses a Redis that may evict keys: [`RedisPolicy::inspect`], then
/// [`RedisPolicy::refuse_eviction`].
pub async fn refuse_eviction(redis: &Redis) -> Result<()> {
    RedisPolicy::inspect(redis).await?.refuse_eviction()
}

pub(crate) async fn inspect_node(address: &str, node: &Redis) -> Result<NodePolicy> {
    let memory = node.info(&["memory"]).await?;
    let maxmemory_policy = match memory.get("maxmemory_policy") {
        Some(policy) => policy.to_string(),
        None => config_get(node, "maxmemory-policy").await.ok_or_else(|| {
            Error::new(
                ErrorKind::EvictingRedis,
                format!(
                    "{address} says neither in INFO nor to CONFIG GET which maxmemory-policy it \
                     runs, so Plimsoll cannot tell whether it evicts keys; accept the risk \
                     with QueueConfig::allow_evicting_redis (redis.allow_eviction)"
                ),
            )
        })?,
    };
    let persistence = node.info(&["persistence"]).await?;
    let appendonly = persistence.get("aof_enabled").map(|v| v == "1");
    let appendfsync = config_get(node, "appendfsync").await;
    Ok(NodePolicy {
        address: address.to_string(),
        maxmemory_policy,
        appendonly,
        appendfsync,
    })
}

/// `CONFIG GET name`, or `None` when it is refused (ACL, renamed command,
/// managed Redis).
async fn config_get(node: &Redis, name: &str) -> Option<String> {
    let reply: Vec<String> = node
        .query(redis::cmd("CONFIG").arg("GET").arg(name))
        .await
        .ok()?;
    reply.into_iter().nth(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(policy: &str, appendonly: Option<bool>, fsync: Option<&str>) -> NodePolicy {
        NodePolicy {
            address: "10.0.0.1:6379".into(),
            maxmemory_policy: policy.into(),
            appendonly,
            appendfsync: fsync.map(str::to_string),
        }
    }

    #[test]
    fn only_noeviction_keeps_every_key() {
        assert!(!node("noeviction", None, None).evicts());
        for policy in [
            "allkeys-lru",
            "allkeys-lfu",
            "allkeys-random",
            "volatile-lru",
            "volatile-lfu",
            "volatile-random",
            "volatile-ttl",
            "some-future-policy",
        ] {
            let redis = RedisPolicy {
                nodes: vec![node("noeviction", None, None), node(policy, None, None)],
            };
            let err = redis.refuse_eviction().unwrap_err();
            assert_eq!(err.kind(), ErrorKind::EvictingRedis);
            assert!(err.message().contains(policy), "{err}");
            assert!(err.message().contains("10.0.0.1:6379"), "{err}");
        }
    }

    #[test]
    fn only_appendfsync_always_puts_every_write_on_disk() {
        assert_eq!(
            node("noeviction", Some(true), Some("always")).fsyncs_every_write(),
            Some(true)
        );
        assert_eq!(
            node("noeviction", Some(true), Some("everysec")).fsyncs_every_write(),
            Some(false)
        );
        assert_eq!(
            node("noeviction", Some(false), Some("always")).fsyncs_every_write(),
            Some(false)
        );
        assert_eq!(
            node("noeviction", Some(true), None).fsyncs_every_write(),
            None
        );
        let warnings = RedisPolicy {
            nodes: vec![node("noeviction", Some(false), Some("everysec"))],
        }
        .warnings();
        assert_eq!(warnings.len(), 1);
        assert!(warnings[0].contains("appendonly no"), "{warnings:?}");
    }
}
