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
    let text: String = state
        .redis()
        .query(redis::cmd("INFO").arg("memory"))
        .await?;
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .map(|v| v.trim().to_string())
    };
    Ok(RedisMemory {
        used_memory: field("used_memory")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0),
        maxmemory: field("maxmemory").and_then(|v| v.parse().ok()).unwrap_or(0),
        policy: field("maxmemory_policy").unwrap_or_default(),
    })
}
