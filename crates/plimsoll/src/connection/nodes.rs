//! The nodes behind a handle: every primary of a cluster (the guard and
//! `trim` read and walk each one by itself), the node that owns a key's
//! slot, and scripts loaded where they will run.

use std::time::Duration;

use redis::{Cmd, RedisError, ServerErrorKind, Value};

use super::{Conn, Redis, Topology, unexpected};
use crate::error::{Error, ErrorKind, Result};

/// One primary of the deployment: its address and a connection to it alone.
///
/// The memory guard and `trim` need every primary individually: `INFO`,
/// `SCAN` and `DBSIZE` answer for one node, and a cluster client would send
/// them to whichever node it picks.
#[derive(Debug, Clone)]
pub struct Primary {
    /// `host:port`, as the cluster announces it (or as configured for one
    /// server).
    pub address: String,
    /// A single-node connection to this primary.
    pub redis: Redis,
}

impl Redis {
    /// Every primary: this handle itself for one server; for a cluster, a
    /// new single-node connection per primary, found with `CLUSTER NODES`
    /// (primaries that are marked failed are skipped). The URLs keep the
    /// scheme, credentials and database of the first configured URL.
    pub async fn primaries(&self) -> Result<Vec<Primary>> {
        if !self.is_cluster() {
            return Ok(vec![Primary {
                address: url_address(&self.config.urls[0]),
                redis: self.clone(),
            }]);
        }
        let nodes: String = self.query(redis::cmd("CLUSTER").arg("NODES")).await?;
        let mut addresses = parse_cluster_primaries(&nodes);
        addresses.sort();
        addresses.dedup();
        if addresses.is_empty() {
            return Err(Error::new(
                crate::ErrorKind::Unavailable,
                "CLUSTER NODES lists no healthy primary",
            ));
        }
        let mut primaries = Vec::with_capacity(addresses.len());
        for address in addresses {
            let redis = self.open_node(&address).await?;
            primaries.push(Primary { address, redis });
        }
        Ok(primaries)
    }

    /// Each primary's address, with a single-node connection to it or the
    /// error that opening one gave (a node that is failing over), each
    /// opened within `wait`: one node that does not answer does not hold up
    /// the others.
    /// The node list comes from the node that serves `key`.
    pub(crate) async fn try_primaries(
        &self,
        key: &str,
        wait: Duration,
    ) -> Result<Vec<(String, Result<Redis>)>> {
        if !self.is_cluster() {
            return Ok(vec![(url_address(&self.config.urls[0]), Ok(self.clone()))]);
        }
        let addresses = sorted_primaries(&self.cluster_nodes_via(key).await?);
        let opened = futures::future::join_all(addresses.iter().map(|address| async move {
            match tokio::time::timeout(wait, self.open_node(address)).await {
                Ok(opened) => opened,
                Err(_) => Err(Error::new(
                    ErrorKind::Timeout,
                    format!("{address} did not answer within {wait:?}"),
                )),
            }
        }))
        .await;
        Ok(addresses.into_iter().zip(opened).collect())
    }

    /// A single-node connection to the cluster node at `address`, with this
    /// handle's scheme, credentials and settings.
    async fn open_node(&self, address: &str) -> Result<Redis> {
        let url = with_address(&self.config.urls[0], address);
        let mut config = (*self.config).clone();
        config.urls = vec![url];
        Self::open(config, Topology::Single, None).await
    }

    /// The address of the primary that serves `key` (the one server's own).
    pub(crate) async fn primary_address_of(&self, key: &str) -> Result<String> {
        if !self.is_cluster() {
            return Ok(url_address(&self.config.urls[0]));
        }
        // Both asked of the node that serves `key`: a keyless command goes
        // to any node, and one that does not answer (a shard failing over)
        // would hold every queue's first enqueue up for a whole response
        // timeout.
        let mut keyslot = redis::cmd("CLUSTER");
        keyslot.arg("KEYSLOT").arg(key);
        let slot: u16 = self.query_via(key, keyslot).await?;
        let nodes = self.cluster_nodes_via(key).await?;
        owner_of_slot(&nodes, slot).ok_or_else(|| {
            Error::new(
                ErrorKind::Unavailable,
                format!("no primary serves slot {slot}"),
            )
        })
    }
}

impl Redis {
    /// The connection behind a lazy handle once it is connected; the handle
    /// itself otherwise.
    fn resolved(&self) -> &Redis {
        match &self.conn {
            Conn::Lazy(lazy) => lazy.get().unwrap_or(self),
            _ => self,
        }
    }

    /// Loads a script (`SCRIPT LOAD source`) on the node that serves `key`
    /// alone (the one server: on it).
    pub(crate) async fn load_script_for(&self, source: &str, key: &str) -> Result<()> {
        let mut load = redis::cmd("SCRIPT");
        load.arg("LOAD").arg(source);
        match &self.resolved().conn {
            // A lazy handle not connected yet answers with its error.
            Conn::Single(_) | Conn::Lazy(_) => {
                let _: String = self.query(&load).await?;
            }
            Conn::Cluster(conn) => {
                use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
                let route = Route::with_key(key, SlotAddr::Master);
                let routing = RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(route));
                conn.clone().route_command(load, routing).await?;
            }
        }
        Ok(())
    }

    /// Loads the script `source` on every primary that answers within
    /// [`SCRIPT_LOAD_WAIT`], skipping the others: for a script that a slot
    /// migration redirects (`ASK`) to the importing node, which may never
    /// have seen it. Best effort: one shard that does not answer (failing
    /// over) must not fail a call on a healthy one.
    /// (The node list is asked of the node that serves `key`.)
    pub(crate) async fn load_script_on_primaries(&self, source: &str, key: &str) {
        let mut load = redis::cmd("SCRIPT");
        load.arg("LOAD").arg(source);
        let Ok(primaries) = self.try_primaries(key, SCRIPT_LOAD_WAIT).await else {
            return;
        };
        for (_, node) in primaries {
            if let Ok(node) = node {
                let _ = tokio::time::timeout(SCRIPT_LOAD_WAIT, node.query::<String>(&load)).await;
            }
        }
    }

    /// Runs `evalsha` (an `EVALSHA` of the script whose source is `source`,
    /// with `key` among its keys); when Redis does not know the script, loads
    /// it on the node that serves `key` (on a cluster, on every primary) and
    /// runs it again.
    pub(crate) async fn evalsha<T: redis::FromRedisValue>(
        &self,
        evalsha: &Cmd,
        source: &str,
        key: &str,
    ) -> std::result::Result<T, RedisError> {
        match evalsha.query_async(&mut self.clone()).await {
            Err(err) if err.kind() == redis::ErrorKind::Server(ServerErrorKind::NoScript) => {
                self.load_script_for(source, key)
                    .await
                    .map_err(|e| unexpected(e.to_string()))?;
                match evalsha.query_async(&mut self.clone()).await {
                    // A slot migrating sent it (ASK) to the importing node,
                    // which never loaded it.
                    Err(err)
                        if self.is_cluster()
                            && err.kind()
                                == redis::ErrorKind::Server(ServerErrorKind::NoScript) =>
                    {
                        self.load_script_on_primaries(source, key).await;
                        evalsha.query_async(&mut self.clone()).await
                    }
                    other => other,
                }
            }
            other => other,
        }
    }
}

/// How long [`Redis::load_script_on_primaries`] waits for each primary.
pub const SCRIPT_LOAD_WAIT: Duration = Duration::from_millis(500);

/// Keys examined per `SCAN` call of the scans below.
const SCAN_COUNT: usize = 1000;

impl Redis {
    /// Runs `cmd` on the node at `address` (`host:port`) of a cluster, or on
    /// the one server.
    async fn on_address(&self, cmd: &Cmd, address: &str) -> std::result::Result<Value, RedisError> {
        use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
        match &self.resolved().conn {
            Conn::Single(_) | Conn::Lazy(_) => cmd.query_async(&mut self.clone()).await,
            Conn::Cluster(conn) => {
                let (host, port) = address.rsplit_once(':').unwrap_or((address, "6379"));
                let routing = RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress {
                    host: host.to_string(),
                    port: port.parse().unwrap_or(6379),
                });
                conn.clone().route_command(cmd.clone(), routing).await
            }
        }
    }

    /// The addresses of the healthy primaries (the one server's own for a
    /// single server), without opening connections to them.
    async fn primary_addresses(&self) -> Result<Vec<String>> {
        if !self.is_cluster() {
            return Ok(vec![url_address(&self.config.urls[0])]);
        }
        let nodes: String = self.query(redis::cmd("CLUSTER").arg("NODES")).await?;
        Ok(sorted_primaries(&nodes))
    }

    /// `CLUSTER NODES` as the node that serves `key` tells it: a keyless
    /// command would go to a random node, which may be the one failing over.
    async fn cluster_nodes_via(&self, key: &str) -> Result<String> {
        let mut nodes = redis::cmd("CLUSTER");
        nodes.arg("NODES");
        self.query_via(key, nodes).await
    }

    /// Runs `cmd` on the primary that serves `key` (on the one server when
    /// this is not a cluster), however keyless the command is.
    async fn query_via<T: redis::FromRedisValue>(&self, key: &str, cmd: Cmd) -> Result<T> {
        use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
        let Conn::Cluster(conn) = &self.resolved().conn else {
            return self.query(&cmd).await;
        };
        let routing = RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(
            Route::with_key(key, SlotAddr::Master),
        ));
        let reply = conn.clone().route_command(cmd, routing).await?;
        Ok(redis::from_redis_value(reply)?)
    }

    /// One `SCAN cursor MATCH pattern COUNT 1000` on the node at `address`:
    /// the next cursor (0 when the scan is done) and the keys.
    async fn scan_once(
        &self,
        address: &str,
        cursor: u64,
        pattern: &str,
    ) -> Result<(u64, Vec<String>)> {
        let mut scan = redis::cmd("SCAN");
        scan.arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(SCAN_COUNT);
        let reply = self.on_address(&scan, address).await?;
        let (cursor, keys): (String, Vec<String>) = redis::from_redis_value(reply)?;
        let cursor = cursor
            .parse()
            .map_err(|_| Error::corrupt(format!("SCAN replied cursor {cursor:?}")))?;
        Ok((cursor, keys))
    }

    /// Keys matching `pattern` on every primary, each scanned with at most
    /// `max_calls` SCAN calls of 1,000 keys: complete on a keyspace of up to
    /// that many thousand keys per primary, a sample beyond. Returns the keys
    /// and whether every scan finished. A primary that does not answer is
    /// skipped (logged); the call fails only when none answers.
    pub(crate) async fn scan_primaries(
        &self,
        pattern: &str,
        max_calls: usize,
    ) -> Result<(Vec<String>, bool)> {
        let mut keys = Vec::new();
        let mut complete = true;
        let mut last_error = None;
        let addresses = self.primary_addresses().await?;
        let mut answered = 0;
        for address in &addresses {
            let mut cursor = 0;
            let mut calls = 0;
            let scanned: Result<()> = async {
                loop {
                    let (next, found) = self.scan_once(address, cursor, pattern).await?;
                    keys.extend(found);
                    calls += 1;
                    cursor = next;
                    if cursor == 0 || calls >= max_calls {
                        return Ok(());
                    }
                }
            }
            .await;
            match scanned {
                Ok(()) => {
                    answered += 1;
                    complete &= cursor == 0;
                }
                Err(err) => {
                    tracing::warn!(node = %address, error = %err, "a primary did not answer SCAN; skipped");
                    complete = false;
                    last_error = Some(err);
                }
            }
        }
        match last_error {
            Some(err) if answered == 0 => Err(err),
            _ => Ok((keys, complete)),
        }
    }

    /// Every key matching `pattern` on the node that serves `key`'s slot (on
    /// one server: the server), found with SCAN, 1,000 keys examined per
    /// call, each batch of matches handed to `each` before the next call.
    /// Returns the sum of what `each` returned.
    pub(crate) async fn scan_node_of<F, Fut>(
        &self,
        key: &str,
        pattern: &str,
        mut each: F,
    ) -> Result<u64>
    where
        F: FnMut(Vec<String>) -> Fut,
        Fut: Future<Output = Result<u64>>,
    {
        let address = if self.is_cluster() {
            let slot: u16 = self
                .query(redis::cmd("CLUSTER").arg("KEYSLOT").arg(key))
                .await?;
            let nodes: String = self.query(redis::cmd("CLUSTER").arg("NODES")).await?;
            owner_of_slot(&nodes, slot).ok_or_else(|| {
                Error::new(
                    ErrorKind::Unavailable,
                    format!("no primary serves slot {slot}"),
                )
            })?
        } else {
            url_address(&self.config.urls[0])
        };
        let (mut cursor, mut total) = (0, 0);
        loop {
            let (next, found) = self.scan_once(&address, cursor, pattern).await?;
            if !found.is_empty() {
                total += each(found).await?;
            }
            if next == 0 {
                return Ok(total);
            }
            cursor = next;
        }
    }
}

/// The healthy primaries of `CLUSTER NODES` output, sorted, once each.
fn sorted_primaries(nodes: &str) -> Vec<String> {
    let mut addresses = parse_cluster_primaries(nodes);
    addresses.sort();
    addresses.dedup();
    addresses
}

/// `text` as a literal in a SCAN / KEYS pattern: `*`, `?`, `[`, `]` and `\`
/// escaped.
pub(crate) fn glob_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The address of the healthy primary that serves `slot`, from `CLUSTER
/// NODES` output.
fn owner_of_slot(nodes: &str, slot: u16) -> Option<String> {
    nodes.lines().find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() < 9 || !fields[2].split(',').any(|f| f == "master") {
            return None;
        }
        let owns = fields[8..].iter().any(|range| {
            let (lo, hi) = range.split_once('-').unwrap_or((range, range));
            matches!((lo.parse::<u16>(), hi.parse::<u16>()), (Ok(lo), Ok(hi)) if (lo..=hi).contains(&slot))
        });
        owns.then(|| fields[1].split(['@', ',']).next().unwrap_or_default().to_string())
    })
}

/// `host:port` of a URL (`redis+unix` URLs give their path).
fn url_address(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
    let host = rest.split(['/', '?']).next().unwrap_or(rest);
    if host.is_empty() {
        rest.to_string()
    } else if host.contains(':') {
        host.to_string()
    } else {
        format!("{host}:6379")
    }
}

/// `url` with its `host:port` replaced by `address`.
fn with_address(url: &str, address: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("redis", url));
    let (userinfo, hostpart) = match rest.rsplit_once('@') {
        Some((user, host)) => (Some(user), host),
        None => (None, rest),
    };
    let tail = hostpart.find(['/', '?']).map_or("", |at| &hostpart[at..]);
    match userinfo {
        Some(user) => format!("{scheme}://{user}@{address}{tail}"),
        None => format!("{scheme}://{address}{tail}"),
    }
}

/// Addresses of the healthy primaries in `CLUSTER NODES` output:
/// `<id> <ip:port@cport[,hostname]> <flags> <primary> <ping> <pong> <epoch> <state> <slots>…`.
fn parse_cluster_primaries(nodes: &str) -> Vec<String> {
    nodes
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() < 8 {
                return None;
            }
            let flags = fields[2];
            let healthy = flags.split(',').any(|f| f == "master")
                && !flags.split(',').any(|f| f == "fail" || f == "noaddr");
            if !healthy || fields[7] != "connected" {
                return None;
            }
            let address = fields[1].split(['@', ',']).next()?;
            (!address.is_empty() && !address.starts_with(':')).then(|| address.to_string())
        })
        .collect()
}

#[cfg(test)]
mod primaries_tests {
    use super::*;

    #[test]
    fn cluster_nodes_output_gives_the_healthy_primaries() {
        let nodes = "\
a1 127.0.0.1:7000@17000 myself,master - 0 0 1 connected 0-5460
b2 127.0.0.1:7001@17001 master - 0 1 2 connected 5461-10922
c3 127.0.0.1:7002@17002 slave b2 0 1 2 connected
d4 127.0.0.1:7003@17003 master,fail - 0 1 3 disconnected 10923-16383
";
        assert_eq!(
            parse_cluster_primaries(nodes),
            ["127.0.0.1:7000", "127.0.0.1:7001"]
        );
    }

    #[test]
    fn globs_are_escaped_and_slots_found() {
        assert_eq!(glob_escape("a*b?[c]\\d"), "a\\*b\\?\\[c\\]\\\\d");
        let nodes = "\
a1 127.0.0.1:7000@17000 myself,master - 0 0 1 connected 0-5460
b2 127.0.0.1:7001@17001 master - 0 1 2 connected 5461-10922 [10923->-c3]
c3 127.0.0.1:7002@17002 slave b2 0 1 2 connected
";
        assert_eq!(
            owner_of_slot(nodes, 5461).as_deref(),
            Some("127.0.0.1:7001")
        );
        assert_eq!(owner_of_slot(nodes, 0).as_deref(), Some("127.0.0.1:7000"));
        assert_eq!(owner_of_slot(nodes, 12000), None);
    }

    #[test]
    fn node_urls_keep_scheme_credentials_and_database() {
        assert_eq!(
            with_address("rediss://u:p@seed:1/2", "10.0.0.5:7001"),
            "rediss://u:p@10.0.0.5:7001/2"
        );
        assert_eq!(with_address("redis://seed:1", "h:2"), "redis://h:2");
        assert_eq!(url_address("redis://u:p@host:7000/0"), "host:7000");
        assert_eq!(url_address("redis://host"), "host:6379");
    }
}
