//! A primary and its replica, for faults that need asynchronous replication
//! on one server: a replica that falls behind and is promoted, losing the
//! writes it never received.

use std::thread::sleep;
use std::time::{Duration, Instant};

use crate::server::RedisServer;

/// How long a fresh replica may take to finish its first sync.
const SYNC_TIMEOUT: Duration = Duration::from_secs(20);

/// A primary with one replica that follows it, both killed on drop.
#[derive(Debug)]
pub struct RedisPair {
    /// The server clients write to.
    pub primary: RedisServer,
    /// Its replica (`replicaof` the primary).
    pub replica: RedisServer,
}

impl RedisPair {
    /// Starts a primary and a replica of it and waits until the replica is
    /// in sync.
    pub fn start() -> Self {
        // No 5 s wait before the first full sync.
        let primary = RedisServer::builder()
            .config("repl-diskless-sync-delay", "0")
            .start();
        let replica = RedisServer::builder().replica_of(primary.port()).start();
        let pair = Self { primary, replica };
        pair.wait_in_sync();
        pair
    }

    /// Waits until the replica's link is up, it has applied everything the
    /// primary wrote so far, and the primary counts it as online (so that
    /// `WAIT` counts it).
    pub fn wait_in_sync(&self) {
        let deadline = Instant::now() + SYNC_TIMEOUT;
        loop {
            let primary = self.primary.replication();
            let replica = self.replica.replication();
            let up = replica.get("master_link_status").map(String::as_str) == Some("up");
            let offset = |info: &std::collections::HashMap<String, String>, field: &str| {
                info.get(field).and_then(|v| v.parse::<u64>().ok())
            };
            let written = offset(&primary, "master_repl_offset");
            let applied = offset(&replica, "slave_repl_offset");
            if up
                && written.is_some()
                && written == applied
                && self.primary.replica_online(self.replica.port())
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "replica not in sync within {SYNC_TIMEOUT:?}: {replica:?}"
            );
            sleep(Duration::from_millis(20));
        }
    }

    /// The replica stops following the primary (`REPLICAOF NO ONE`):
    /// writes from now on reach the primary only, as with a replica that
    /// lags and is promoted before it catches up. Deterministic where a
    /// stopped replica is not: a replica resumed after SIGSTOP still reads
    /// whatever its socket buffer holds.
    pub fn detach_replica(&self) {
        self.replica.cmd(&["REPLICAOF", "NO", "ONE"]);
    }

    /// Fails over: kills the primary with SIGKILL and lets the replica take
    /// over its address, so clients that reconnect reach the replica with
    /// whatever it had. Call [`detach_replica`](Self::detach_replica) first
    /// to lose the writes since then.
    pub fn fail_over(&mut self) {
        let port = self.primary.port();
        self.primary.kill();
        if self.replica.replication().get("role").map(String::as_str) != Some("master") {
            self.detach_replica();
        }
        self.replica.take_over_port(port);
    }
}
