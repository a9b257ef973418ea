//! Redis' own memory figures (`INFO memory`), for the dashboard when the
//! memory guard, which keeps them with their history, is switched off.

use crate::error::ApiResult;
use crate::state::AppState;

/// Redis' memory figures, from `INFO memory`.
#[derive(Debug, Clone, Default)]
pub struct RedisMemory {
    pub used_memory: u64,
    pub maxmemory: u64,
    pub policy: String,
}

/// Reads `INFO memory`.
pub async fn redis_memory(state: &AppState) -> ApiResult<RedisMemory> {
    let info = state.redis().info(&["memory"]).await?;
    Ok(RedisMemory {
        used_memory: info.count("used_memory"),
        maxmemory: info.count("maxmemory"),
        policy: info.get("maxmemory_policy").unwrap_or_default().to_string(),
    })
}
