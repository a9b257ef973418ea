//! Read-through caching that keeps working when Redis does not.
//!
//! ```sh
//! cargo run -p plimsoll --example cache                        # Redis on 127.0.0.1:6379, or none
//! cargo run -p plimsoll --example cache -- redis://host:6379/
//! ```
//!
//! With Redis up, the second round is served from the cache; with no Redis
//! at the URL, every round is served by the loader, within the 5 ms budget
//! per call, and the breaker opens — the program never fails because of
//! the cache.

use std::convert::Infallible;
use std::time::{Duration, Instant};

use plimsoll::{Cache, CacheConfig, RedisConfig};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
struct User {
    id: u64,
    name: String,
}

/// Stands in for a database query.
async fn load_user(id: u64) -> Result<User, Infallible> {
    tokio::time::sleep(Duration::from_millis(20)).await;
    Ok(User {
        id,
        name: format!("user {id}"),
    })
}

#[tokio::main]
async fn main() -> plimsoll::Result<()> {
    let url = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "redis://127.0.0.1:6379/".to_string());
    let cache = Cache::connect(
        RedisConfig::new(&url)?,
        CacheConfig {
            namespace: "example".into(),
            ..CacheConfig::with_local_tier()
        },
    )?;
    // Give the background connection a moment (calls never wait for it).
    tokio::time::sleep(Duration::from_millis(200)).await;

    for round in 1..=2 {
        let started = Instant::now();
        for id in 1..=5 {
            let user = cache
                .get_or_compute(&format!("user:{id}"), Duration::from_secs(60), || {
                    load_user(id)
                })
                .await
                .unwrap_or_else(|never| match never {});
            assert_eq!(user.id, id);
        }
        println!("round {round}: 5 users in {:?}", started.elapsed());
    }
    let stats = cache.stats();
    println!(
        "local hits {}, Redis hits {}, loader calls {}, Redis errors {:?}, breaker {}",
        stats.local_hits,
        stats.redis_hits,
        stats.loader_calls,
        stats.redis_errors,
        stats.breaker.state.as_str()
    );
    for id in 1..=5 {
        let _ = cache.delete(&format!("user:{id}")).await?;
    }
    Ok(())
}
