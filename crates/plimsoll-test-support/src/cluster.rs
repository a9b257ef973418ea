//! A local Redis Cluster: cluster-enabled servers joined with
//! `redis-cli --cluster create`, without replicas or with one per primary,
//! and the faults a replicated cluster meets: a replica that stops (SIGSTOP),
//! a primary killed with SIGKILL, and the promotion that follows.

use std::collections::HashMap;
use std::process::Command;
use std::thread::sleep;
use std::time::{Duration, Instant};

use crate::server::{RedisServer, parse_info};

/// How long the nodes may take to agree that the cluster is up.
const CLUSTER_READY_TIMEOUT: Duration = Duration::from_secs(30);
/// `cluster-node-timeout` of a cluster with replicas: short, so that a
/// failover in a test takes a few seconds (a replica is promoted once its
/// primary has been unreachable this long, plus an election).
const REPLICATED_NODE_TIMEOUT: Duration = Duration::from_millis(2000);
/// How long a failover may take before a test gives up on it.
const FAILOVER_TIMEOUT: Duration = Duration::from_secs(30);

/// A running cluster, each node a [`RedisServer`] killed on drop.
#[derive(Debug)]
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
}

/// What one node's `CLUSTER NODES` says about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Myself {
    id: String,
    primary: bool,
    /// The node id of its primary, for a replica.
    replicates: Option<String>,
}

impl RedisCluster {
    /// Starts a cluster of three primaries, the shape the test suite uses.
    pub fn start() -> Self {
        Self::with_primaries(3)
    }

    /// Starts a cluster of `primaries` nodes (at least 3, as `redis-cli` requires)
    /// and waits until every node reports `cluster_state:ok`.
    pub fn with_primaries(primaries: usize) -> Self {
        Self::create(primaries, 0, None)
    }

    /// Starts three primaries with one replica each (`--cluster-replicas
    /// 1`) and a short node timeout (2 s), and waits until every replica is
    /// in sync.
    pub fn with_replicas() -> Self {
        Self::create(3, 1, Some(REPLICATED_NODE_TIMEOUT))
    }

    fn create(primaries: usize, replicas: usize, node_timeout: Option<Duration>) -> Self {
        assert!(
            primaries >= 3,
            "redis-cli --cluster create needs 3 primaries"
        );
        let nodes: Vec<RedisServer> = (0..primaries * (1 + replicas))
            .map(|_| {
                let mut builder = RedisServer::builder()
                    .cluster()
                    // A replica's full sync starts at once, not 5 s later.
                    .config("repl-diskless-sync-delay", "0");
                if let Some(timeout) = node_timeout {
                    builder = builder.node_timeout(timeout);
                }
                builder.start()
            })
            .collect();
        let addresses: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port()))
            .collect();
        let output = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addresses)
            .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
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

    /// The primary that serves `key` (asks `CLUSTER KEYSLOT` and the slot
    /// map of each live node).
    pub fn node_for_key(&self, key: &str) -> &RedisServer {
        &self.nodes[self.primary_for_key(key)]
    }

    /// The index (into [`nodes`](Self::nodes)) of the primary that serves
    /// `key`. Killed nodes are skipped; a frozen one would stall the call.
    pub fn primary_for_key(&self, key: &str) -> usize {
        let slot = self.slot(key);
        self.live()
            .find(|&i| owns_slot(&self.nodes[i], slot))
            .expect("some node owns every slot")
    }

    /// The hash slot of `key`.
    pub fn slot(&self, key: &str) -> u16 {
        let any = self.live().next().expect("a live node");
        self.nodes[any]
            .cmd(&["CLUSTER", "KEYSLOT", key])
            .parse()
            .expect("slot number")
    }

    /// The index of the replica that follows the primary at `primary`.
    pub fn replica_of(&self, primary: usize) -> usize {
        let id = myself(&self.nodes[primary]).id;
        self.live()
            .find(|&i| myself(&self.nodes[i]).replicates.as_deref() == Some(id.as_str()))
            .unwrap_or_else(|| panic!("node {primary} has no live replica"))
    }

    /// Stops node `index` with SIGSTOP: its connections stay open and it
    /// answers nothing, a replica no longer applies what its primary sends.
    pub fn freeze(&self, index: usize) {
        self.nodes[index].freeze();
    }

    /// Resumes a node stopped with [`freeze`](Self::freeze).
    pub fn thaw(&self, index: usize) {
        self.nodes[index].thaw();
    }

    /// Kills node `index` with SIGKILL, as a crash would.
    pub fn kill(&mut self, index: usize) {
        self.nodes[index].kill();
    }

    /// Starts a killed node again on its port and folder; it rejoins the
    /// cluster from its `nodes.conf` (a primary that was failed over comes
    /// back as a replica of the node that took its slots).
    pub fn restart(&mut self, index: usize) {
        self.nodes[index].restart();
    }

    /// Waits until node `index` is a replica whose link to its primary is up,
    /// whose first sync is done, and which its primary counts as online.
    pub fn wait_replica_in_sync(&self, index: usize) {
        let deadline = Instant::now() + FAILOVER_TIMEOUT;
        loop {
            let info = self.nodes[index].replication();
            if info.get("role").map(String::as_str) == Some("slave") && self.in_sync(index) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "node {index} did not become an in-sync replica within {FAILOVER_TIMEOUT:?}: {info:?}"
            );
            sleep(Duration::from_millis(50));
        }
    }

    /// Waits until the node at `replica` is a primary that owns slots and
    /// every live node says the cluster is ok again.
    pub fn wait_promoted(&self, replica: usize) {
        let deadline = Instant::now() + FAILOVER_TIMEOUT;
        loop {
            let promoted =
                myself(&self.nodes[replica]).primary && owns_any_slot(&self.nodes[replica]);
            let ok = promoted
                && self.live().all(|i| {
                    let info = parse_info(&self.nodes[i].cmd(&["CLUSTER", "INFO"]));
                    info.get("cluster_state").map(String::as_str) == Some("ok")
                });
            if ok {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "node {replica} was not promoted within {FAILOVER_TIMEOUT:?}"
            );
            sleep(Duration::from_millis(50));
        }
    }

    /// Indexes of the nodes whose process is running.
    fn live(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.nodes.len()).filter(|&i| self.nodes[i].pid().is_some())
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + CLUSTER_READY_TIMEOUT;
        loop {
            let ready = (0..self.nodes.len()).all(|i| {
                let info = parse_info(&self.nodes[i].cmd(&["CLUSTER", "INFO"]));
                let clustered = info.get("cluster_state").map(String::as_str) == Some("ok")
                    && info.get("cluster_slots_ok").map(String::as_str) == Some("16384")
                    && info.get("cluster_known_nodes") == Some(&self.nodes.len().to_string());
                clustered && self.in_sync(i)
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

impl RedisCluster {
    /// Node `index` is a primary, or a replica whose link is up, whose sync
    /// is done and which its primary counts as online (`WAIT` counts only
    /// those; a replica says its link is up a moment before).
    fn in_sync(&self, index: usize) -> bool {
        let node = &self.nodes[index];
        let info: HashMap<String, String> = node.replication();
        match info.get("role").map(String::as_str) {
            Some("master") => true,
            Some("slave") => {
                let linked = info.get("master_link_status").map(String::as_str) == Some("up")
                    && info.get("master_sync_in_progress").map(String::as_str) == Some("0");
                let primary = myself(node).replicates;
                linked
                    && self.live().any(|i| {
                        Some(myself(&self.nodes[i]).id) == primary
                            && self.nodes[i].replica_online(node.port())
                    })
            }
            _ => false,
        }
    }
}

fn myself(node: &RedisServer) -> Myself {
    // CLUSTER NODES: "<id> <addr> myself,master - 0 0 1 connected 0-5460"
    // or "<id> <addr> myself,slave <primary id> 0 0 1 connected".
    let nodes = node.cmd(&["CLUSTER", "NODES"]);
    let line = nodes
        .lines()
        .find(|l| {
            l.split_whitespace()
                .nth(2)
                .is_some_and(|f| f.contains("myself"))
        })
        .expect("CLUSTER NODES has a myself line");
    let fields: Vec<&str> = line.split_whitespace().collect();
    let flags = fields[2];
    Myself {
        id: fields[0].to_string(),
        primary: flags.split(',').any(|f| f == "master"),
        replicates: (fields[3] != "-").then(|| fields[3].to_string()),
    }
}

fn slot_ranges(node: &RedisServer) -> Vec<(u16, u16)> {
    let nodes = node.cmd(&["CLUSTER", "NODES"]);
    let Some(line) = nodes.lines().find(|l| {
        l.split_whitespace()
            .nth(2)
            .is_some_and(|f| f.contains("myself"))
    }) else {
        return Vec::new();
    };
    line.split_whitespace()
        .skip(8)
        .filter_map(|range| {
            let (lo, hi) = range.split_once('-').unwrap_or((range, range));
            Some((lo.parse().ok()?, hi.parse().ok()?))
        })
        .collect()
}

fn owns_slot(node: &RedisServer, slot: u16) -> bool {
    slot_ranges(node)
        .iter()
        .any(|&(lo, hi)| (lo..=hi).contains(&slot))
}

fn owns_any_slot(node: &RedisServer) -> bool {
    !slot_ranges(node).is_empty()
}
