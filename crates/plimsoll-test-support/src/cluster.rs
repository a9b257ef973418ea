//! A local Redis Cluster: cluster-enabled servers joined with
//! `redis-cli --cluster create`, no replicas.

use std::process::Command;
use std::thread::sleep;
use std::time::{Duration, Instant};

use crate::server::{RedisServer, parse_info};

/// How long the nodes may take to agree that the cluster is up.
const CLUSTER_READY_TIMEOUT: Duration = Duration::from_secs(30);

/// A running cluster of primaries, each a [`RedisServer`] killed on drop.
#[derive(Debug)]
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// Starts a cluster of three primaries, the shape the test suite uses.
    pub fn start() -> Self {
        Self::with_primaries(3)
    }

    /// Starts a cluster of `primaries` nodes (at least 3, as `redis-cli` requires)
    /// and waits until every node reports `cluster_state:ok`.
    pub fn with_primaries(primaries: usize) -> Self {
        assert!(
            primaries >= 3,
            "redis-cli --cluster create needs 3 primaries"
        );
        let nodes: Vec<RedisServer> = (0..primaries)
            .map(|_| RedisServer::builder().cluster().start())
            .collect();
        let addresses: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port()))
            .collect();
        let output = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addresses)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .expect("redis-cli is not installed (run ./scripts/test, which installs it)");
        assert!(
            output.status.success(),
            "redis-cli --cluster create failed:\n{}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        let cluster = Self { nodes };
        cluster.wait_ready();
        cluster
    }

    /// The nodes, in the order they were started.
    pub fn nodes(&self) -> &[RedisServer] {
        &self.nodes
    }

    /// A `redis://` URL per node, for a cluster client's seed list.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(RedisServer::url).collect()
    }

    /// The node that serves `key` (asks `CLUSTER KEYSLOT` and the slot map).
    pub fn node_for_key(&self, key: &str) -> &RedisServer {
        let slot: u16 = self.nodes[0]
            .cmd(&["CLUSTER", "KEYSLOT", key])
            .parse()
            .expect("slot number");
        self.nodes
            .iter()
            .find(|node| owns_slot(node, slot))
            .expect("some node owns every slot")
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + CLUSTER_READY_TIMEOUT;
        loop {
            let ready = self.nodes.iter().all(|node| {
                let info = parse_info(&node.cmd(&["CLUSTER", "INFO"]));
                info.get("cluster_state").map(String::as_str) == Some("ok")
                    && info.get("cluster_slots_ok").map(String::as_str) == Some("16384")
                    && info.get("cluster_known_nodes") == Some(&self.nodes.len().to_string())
            });
            if ready {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "cluster not ready within {CLUSTER_READY_TIMEOUT:?}"
            );
            sleep(Duration::from_millis(50));
        }
    }
}

fn owns_slot(node: &RedisServer, slot: u16) -> bool {
    // CLUSTER NODES: "<id> <addr> myself,master - 0 0 1 connected 0-5460"
    let nodes = node.cmd(&["CLUSTER", "NODES"]);
    let Some(line) = nodes.lines().find(|l| l.contains("myself")) else {
        return false;
    };
    line.split_whitespace().skip(8).any(|range| {
        let (lo, hi) = range.split_once('-').unwrap_or((range, range));
        match (lo.parse::<u16>(), hi.parse::<u16>()) {
            (Ok(lo), Ok(hi)) => (lo..=hi).contains(&slot),
            _ => false,
        }
    })
}
