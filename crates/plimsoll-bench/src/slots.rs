//! Where a key lives on a Redis Cluster, so that G1 can write a million keys
//! in pipelines per primary (a cluster client refuses a pipeline whose keys
//! span slots) and read them back node by node.

use crate::error::{BenchError, Context, Result};
use plimsoll::Redis;

use super::sys::Nodes;

/// Slots of a Redis Cluster.
const SLOTS: u16 = 16384;

/// The hash slot of `key`: CRC16 (XMODEM) of its hash tag, or of the whole
/// key when it has none, modulo 16384 — as Redis computes it.
pub fn slot(key: &[u8]) -> u16 {
    let tagged = key
        .iter()
        .position(|&b| b == b'{')
        .and_then(|open| {
            let rest = &key[open + 1..];
            let close = rest.iter().position(|&b| b == b'}')?;
            (close > 0).then(|| &rest[..close])
        })
        .unwrap_or(key);
    crc16(tagged) % SLOTS
}

fn crc16(bytes: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &byte in bytes {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// Which of [`Nodes::all`] serves each slot.
#[derive(Debug, Clone)]
pub struct Placement {
    owner: Vec<usize>,
}

impl Placement {
    /// Reads the slot map (`CLUSTER SLOTS`) of the cluster behind `redis`;
    /// one server serves every slot.
    pub async fn of(redis: &Redis, nodes: &Nodes) -> Result<Self> {
        if !redis.is_cluster() {
            return Ok(Self {
                owner: vec![0; usize::from(SLOTS)],
            });
        }
        let ranges: Vec<redis::Value> = redis.query(redis::cmd("CLUSTER").arg("SLOTS")).await?;
        let mut owner = vec![usize::MAX; usize::from(SLOTS)];
        for range in ranges {
            let redis::Value::Array(fields) = range else {
                return Err(BenchError::Failed("CLUSTER SLOTS replied oddly".into()));
            };
            let (start, end): (u16, u16) = (
                redis::from_redis_value_ref(&fields[0])?,
                redis::from_redis_value_ref(&fields[1])?,
            );
            let (host, port): (String, u16) = match &fields[2] {
                redis::Value::Array(node) => (
                    redis::from_redis_value_ref(&node[0])?,
                    redis::from_redis_value_ref(&node[1])?,
                ),
                _ => return Err(BenchError::Failed("CLUSTER SLOTS replied oddly".into())),
            };
            let address = format!("{host}:{port}");
            let index = nodes
                .addresses()
                .iter()
                .position(|a| *a == address)
                .with_context(|| {
                    format!("slots {start}-{end} are on {address}, not a known primary")
                })?;
            for slot in start..=end {
                owner[usize::from(slot)] = index;
            }
        }
        if owner.contains(&usize::MAX) {
            return Err(BenchError::Failed("some slots have no primary".into()));
        }
        Ok(Self { owner })
    }

    /// The index of the primary that serves `key`.
    pub fn node_of(&self, key: &[u8]) -> usize {
        self.owner[usize::from(slot(key))]
    }

    /// Sends `pipe` (commands whose first argument is their key, results
    /// ignored) split into one pipeline per primary.
    pub async fn send(&self, nodes: &Nodes, pipe: &redis::Pipeline) -> Result<()> {
        let mut parts: Vec<redis::Pipeline> = nodes.all().iter().map(|_| redis::pipe()).collect();
        for cmd in pipe.cmd_iter() {
            let key = match cmd.args_iter().nth(1) {
                Some(redis::Arg::Simple(key)) => key,
                _ => return Err(BenchError::Failed("a G1 command without a key".into())),
            };
            parts[self.node_of(key)].add_command(cmd.clone()).ignore();
        }
        for (part, node) in parts.iter().zip(nodes.all()) {
            if part.cmd_iter().next().is_some() {
                part.query_async::<()>(&mut node.clone()).await?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_computed_as_redis_does() {
        // Values from CLUSTER KEYSLOT.
        assert_eq!(slot(b"foo"), 12182);
        assert_eq!(slot(b"bar"), 5061);
        assert_eq!(slot(b"plimsoll:{mail}:jobs"), slot(b"mail"));
        assert_eq!(slot(b"a{}b"), crc16(b"a{}b") % SLOTS);
    }

    #[tokio::test]
    async fn a_pipeline_over_many_slots_is_split_per_primary() {
        let cluster = plimsoll_test_support::RedisCluster::start();
        let redis = Redis::connect_url(&cluster.urls()[0]).await.unwrap();
        let nodes = Nodes::of(&redis).await.unwrap();
        assert_eq!(nodes.all().len(), 3);
        let placement = Placement::of(&redis, &nodes).await.unwrap();
        let mut pipe = redis::pipe();
        for i in 0..1000 {
            pipe.cmd("SET").arg(format!("key:{i}")).arg(i).ignore();
        }
        placement.send(&nodes, &pipe).await.unwrap();
        let keys: u64 = redis.query(&redis::cmd("DBSIZE")).await.unwrap();
        assert_eq!(keys, 1000);
        for node in cluster.nodes() {
            let held: u64 = node.cmd(&["DBSIZE"]).parse().unwrap();
            assert!(held > 200, "each primary holds its share: {held}");
        }
    }
}
