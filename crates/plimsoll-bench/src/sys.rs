//! CPU time of this process and of Redis, and Redis' memory, for the
//! benchmarks' figures. On a Redis Cluster `INFO` describes one node, so the
//! figures are read from every primary and summed ([`Nodes`]).

use std::sync::Arc;

use crate::error::{Context, Result};
use plimsoll::Redis;
use plimsoll::connection::Info;

/// The primaries a benchmark reads its Redis figures from: the server
/// itself, or a connection to each primary of a cluster (opened once).
#[derive(Debug, Clone)]
pub struct Nodes(Arc<(Vec<Redis>, Vec<String>)>);

impl Nodes {
    /// The primaries behind `redis`.
    pub async fn of(redis: &Redis) -> Result<Self> {
        let primaries = redis.primaries().await?;
        let addresses = primaries.iter().map(|p| p.address.clone()).collect();
        let nodes = primaries.into_iter().map(|p| p.redis).collect();
        Ok(Self(Arc::new((nodes, addresses))))
    }

    /// The primaries, each a single-node connection.
    pub fn all(&self) -> &[Redis] {
        &self.0.0
    }

    /// The primaries' `host:port`, in the order of [`all`](Self::all).
    pub fn addresses(&self) -> &[String] {
        &self.0.1
    }

    /// `INFO section` of every primary.
    pub async fn info(&self, section: &str) -> Result<Vec<Info>> {
        let mut all = Vec::with_capacity(self.all().len());
        for node in self.all() {
            all.push(node.info(&[section]).await?);
        }
        Ok(all)
    }

    /// A numeric field of `INFO section`, summed over the primaries.
    async fn sum(&self, section: &str, fields: &[&str]) -> Result<f64> {
        let mut total = 0.0;
        for info in self.info(section).await? {
            for field in fields {
                total += info
                    .get(field)
                    .and_then(|v| v.parse::<f64>().ok())
                    .with_context(|| format!("INFO {section} lacks {field}"))?;
            }
        }
        Ok(total)
    }

    /// `used_memory` in bytes, summed over the primaries.
    pub async fn used_memory(&self) -> Result<u64> {
        Ok(self.sum("memory", &["used_memory"]).await? as u64)
    }

    /// CPU seconds (user + system) the primaries report having used.
    pub async fn cpu_seconds(&self) -> Result<f64> {
        self.sum("cpu", &["used_cpu_user", "used_cpu_sys"]).await
    }
}

/// Clock ticks per second of `/proc/<pid>/stat` times (USER_HZ, 100 on every
/// Linux architecture this runs on).
const TICKS_PER_SECOND: f64 = 100.0;

/// CPU seconds (user + system) this process has used.
pub fn self_cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    // Fields after the command name (which may hold spaces) in parentheses.
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return 0.0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line: 11 and 12 after ')'.
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / TICKS_PER_SECOND
}

/// CPU use over an interval, as percentages of one core.
#[derive(Debug, Clone, Copy)]
pub struct CpuMeter {
    client: f64,
    redis: f64,
    started: std::time::Instant,
}

impl CpuMeter {
    pub async fn start(nodes: &Nodes) -> Result<Self> {
        Ok(Self {
            client: self_cpu_seconds(),
            redis: nodes.cpu_seconds().await?,
            started: std::time::Instant::now(),
        })
    }

    /// (client %, redis %) since `start`; Redis' is the primaries' sum.
    pub async fn stop(&self, nodes: &Nodes) -> Result<(f64, f64)> {
        let wall = self.started.elapsed().as_secs_f64().max(1e-9);
        let client = (self_cpu_seconds() - self.client) / wall * 100.0;
        let redis = (nodes.cpu_seconds().await? - self.redis) / wall * 100.0;
        Ok((client, redis))
    }
}
