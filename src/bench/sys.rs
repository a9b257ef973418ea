//! CPU time of this process and of Redis, for the benchmarks' CPU figures.

use anyhow::{Context, Result};
use plimsoll::Redis;

use crate::util::info;

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

/// CPU seconds Redis reports having used (`INFO cpu`).
pub async fn redis_cpu_seconds(redis: &Redis) -> Result<f64> {
    let cpu = info(redis, "cpu").await?;
    let get = |name: &str| -> Result<f64> {
        cpu.get(name)
            .and_then(|v| v.parse().ok())
            .with_context(|| format!("INFO cpu lacks {name}"))
    };
    Ok(get("used_cpu_user")? + get("used_cpu_sys")?)
}

/// CPU use over an interval, as percentages of one core.
#[derive(Debug, Clone, Copy)]
pub struct CpuMeter {
    client: f64,
    redis: f64,
    started: std::time::Instant,
}

impl CpuMeter {
    pub async fn start(redis: &Redis) -> Result<Self> {
        Ok(Self {
            client: self_cpu_seconds(),
            redis: redis_cpu_seconds(redis).await?,
            started: std::time::Instant::now(),
        })
    }

    /// (client %, redis %) since `start`.
    pub async fn stop(&self, redis: &Redis) -> Result<(f64, f64)> {
        let wall = self.started.elapsed().as_secs_f64().max(1e-9);
        let client = (self_cpu_seconds() - self.client) / wall * 100.0;
        let redis = (redis_cpu_seconds(redis).await? - self.redis) / wall * 100.0;
        Ok((client, redis))
    }
}
