//! Private Redis instances for Plimsoll's tests.
//!
//! Every test starts its own `redis-server` in a temporary directory on a port
//! nobody else uses, and the server is killed when the handle drops. There is
//! no shared instance and no mocked Redis: fault tests really kill, pause,
//! fill and restart the server they own.
//!
//! When a test panics while a server is alive, the tail of that server's log is
//! printed, so a failure in CI shows what Redis was doing.
//!
//! The crate talks to the server with a few lines of RESP over a plain
//! `TcpStream` and with `redis-cli`, so that it does not depend on the client
//! library under test.

mod cluster;
mod pair;
mod promtool;
mod resp;
mod server;

pub use cluster::RedisCluster;
pub use pair::RedisPair;
pub use promtool::assert_promtool_accepts;
pub use server::{RedisServer, RedisServerBuilder};

/// Starts one default private server: no persistence, no maxmemory.
pub fn redis() -> RedisServer {
    RedisServer::start()
}
