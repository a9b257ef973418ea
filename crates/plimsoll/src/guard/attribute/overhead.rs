//! What Redis holds outside its keys, from `MEMORY STATS`, so that a
//! report adds up to `used_memory`: the keys' bytes (as `MEMORY USAGE`
//! counts them), Redis' own memory, and what neither explains. A report
//! whose families explain half of `used_memory` then says so instead of
//! passing unnoticed.

use redis::Value;
use serde::{Deserialize, Serialize};

use super::usage::text;

/// Bytes of the main key table that `MEMORY USAGE` already counts in each
/// key: its `dictEntry` (24) and its `robj` (16), which Redis 7's
/// `overhead.hashtable.main` counts too. What remains of that figure is
/// the table's bucket array, which no key's figure includes.
pub const KEY_TABLE_BYTES_COUNTED_IN_KEYS: u64 = 40;

/// Redis' memory outside its keys, one node or summed over nodes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutsideKeys {
    /// Allocated when Redis started (`startup.allocated`).
    pub startup: u64,
    /// Client buffers: normal clients and replicas (`clients.*`).
    pub clients: u64,
    /// The replication backlog.
    pub replication_backlog: u64,
    /// The AOF buffer.
    pub aof_buffer: u64,
    /// Lua and function caches.
    pub scripts: u64,
    /// Key tables not counted in any key: the main table's buckets, the
    /// expires table, cluster slot links (`overhead.hashtable.*`, less
    /// what `MEMORY USAGE` counts per key).
    pub key_tables: u64,
    /// `used_memory_rss − used_memory`: memory the process holds beyond
    /// what Redis allocated (fragmentation, freed pages not returned).
    /// Not part of `used_memory`; shown beside it.
    pub rss_beyond_used: i64,
}

impl OutsideKeys {
    /// The part of `used_memory` these figures explain.
    pub fn total(&self) -> u64 {
        self.startup
            + self.clients
            + self.replication_backlog
            + self.aof_buffer
            + self.scripts
            + self.key_tables
    }

    /// Adds another node's figures.
    pub fn add(&mut self, other: &OutsideKeys) {
        self.startup += other.startup;
        self.clients += other.clients;
        self.replication_backlog += other.replication_backlog;
        self.aof_buffer += other.aof_buffer;
        self.scripts += other.scripts;
        self.key_tables += other.key_tables;
        self.rss_beyond_used += other.rss_beyond_used;
    }

    /// From the reply of `MEMORY STATS` and `used_memory` /
    /// `used_memory_rss`. Fields a version does not report count 0.
    pub fn from_memory_stats(stats: &Value, used_memory: u64, used_memory_rss: u64) -> Self {
        let mut out = OutsideKeys {
            rss_beyond_used: used_memory_rss as i64 - used_memory as i64,
            ..OutsideKeys::default()
        };
        let mut tables = 0u64;
        let mut keys = 0u64;
        for (name, value) in pairs(stats) {
            match name.as_str() {
                "startup.allocated" => out.startup = int(value),
                "clients.normal" | "clients.slaves" => out.clients += int(value),
                "replication.backlog" => out.replication_backlog = int(value),
                "aof.buffer" => out.aof_buffer = int(value),
                "lua.caches" | "functions.caches" => out.scripts += int(value),
                "keys.count" => keys = int(value),
                db if db.starts_with("db.") => {
                    for (name, value) in pairs(value) {
                        if name.starts_with("overhead.hashtable.") {
                            tables += int(value);
                        }
                    }
                }
                _ => {}
            }
        }
        out.key_tables = tables.saturating_sub(keys * KEY_TABLE_BYTES_COUNTED_IN_KEYS);
        out
    }
}

/// A `MEMORY STATS` map (RESP3) or flat array of name, value (RESP2).
fn pairs(value: &Value) -> Vec<(String, &Value)> {
    match value {
        Value::Map(map) => map.iter().map(|(k, v)| (text(k), v)).collect(),
        Value::Array(items) => items
            .chunks(2)
            .filter(|c| c.len() == 2)
            .map(|c| (text(&c[0]), &c[1]))
            .collect(),
        _ => Vec::new(),
    }
}

fn int(value: &Value) -> u64 {
    match value {
        Value::Int(n) => (*n).max(0) as u64,
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(text: &str) -> Value {
        Value::BulkString(text.as_bytes().to_vec())
    }

    #[test]
    fn the_key_tables_leave_out_what_each_key_already_counts() {
        // As Redis 7.0 answered for one key (buckets of 4 slots).
        let stats = Value::Array(vec![
            s("startup.allocated"),
            Value::Int(876_008),
            s("clients.normal"),
            Value::Int(20_000),
            s("functions.caches"),
            Value::Int(200),
            s("db.0"),
            Value::Array(vec![
                s("overhead.hashtable.main"),
                Value::Int(72),
                s("overhead.hashtable.expires"),
                Value::Int(0),
            ]),
            s("keys.count"),
            Value::Int(1),
        ]);
        let outside = OutsideKeys::from_memory_stats(&stats, 963_960, 7_233_536);
        assert_eq!(outside.key_tables, 32);
        assert_eq!(outside.total(), 876_008 + 20_000 + 200 + 32);
        assert_eq!(outside.rss_beyond_used, 7_233_536 - 963_960);
    }
}
