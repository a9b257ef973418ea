//! One private `redis-server` process.

use std::collections::HashMap;
use std::fs;
use std::hash::{BuildHasher, Hasher};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::resp::{self, Reply};

/// Ports are drawn from this range so that a cluster node's bus port
/// (`port + 10000`) stays below Linux's ephemeral range (32768 and up), where
/// the kernel hands out client ports that could collide with a bus port.
const PORT_RANGE: std::ops::Range<u16> = 12_000..22_700;
/// How long a server may take to answer PING after it was started.
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// How many ports to try before giving up (another test may win a race for one).
const START_ATTEMPTS: usize = 8;
/// Lines of the server log printed when a test panics.
const LOG_TAIL_LINES: usize = 60;

/// Settings for a private server; see [`RedisServer::builder`].
#[derive(Debug, Clone, Default)]
pub struct RedisServerBuilder {
    maxmemory: Option<u64>,
    policy: Option<String>,
    appendonly: bool,
    cluster: bool,
    /// `cluster-node-timeout` in ms when `cluster` is set.
    node_timeout_ms: Option<u64>,
    /// Port of the primary this server replicates, if any.
    replica_of: Option<u16>,
    extra: Vec<(String, String)>,
}

impl RedisServerBuilder {
    /// Sets `maxmemory` in bytes (default 0: unbounded). The policy defaults to
    /// `noeviction`, so a full server refuses writes instead of dropping data.
    pub fn maxmemory(mut self, bytes: u64) -> Self {
        self.maxmemory = Some(bytes);
        self
    }

    /// Sets `maxmemory-policy`.
    pub fn maxmemory_policy(mut self, policy: &str) -> Self {
        self.policy = Some(policy.to_string());
        self
    }

    /// Persists every write to an append-only file (fsync every second), so a
    /// restart with [`RedisServer::restart`] keeps the data.
    pub fn appendonly(mut self) -> Self {
        self.appendonly = true;
        self
    }

    /// Starts the server with `cluster-enabled yes`.
    pub(crate) fn cluster(mut self) -> Self {
        self.cluster = true;
        self
    }

    /// Sets `cluster-node-timeout` (default 5 s): how long a node may be
    /// unreachable before the cluster fails it over.
    pub(crate) fn node_timeout(mut self, timeout: Duration) -> Self {
        self.node_timeout_ms = Some(timeout.as_millis() as u64);
        self
    }

    /// Starts the server as a replica of the server on `port` (127.0.0.1).
    /// See [`RedisPair`](crate::RedisPair) for a pair that waits until the
    /// replica is in sync.
    pub fn replica_of(mut self, port: u16) -> Self {
        self.replica_of = Some(port);
        self
    }

    /// Adds any other `redis-server` option, e.g. `("hz", "100")`.
    pub fn config(mut self, name: &str, value: &str) -> Self {
        self.extra.push((name.to_string(), value.to_string()));
        self
    }

    /// Starts the server and waits until it answers PING.
    ///
    /// # Panics
    ///
    /// When `redis-server` is not installed or does not start; the panic message
    /// says which, and includes the server's log.
    pub fn start(self) -> RedisServer {
        let dir = tempfile::Builder::new()
            .prefix("plimsoll-redis-")
            .tempdir()
            .expect("create a temporary directory for redis-server");
        let cluster = self.cluster;
        let mut server = RedisServer {
            child: None,
            dir,
            port: free_port(cluster),
            settings: self,
        };
        for _ in 0..START_ATTEMPTS {
            match server.spawn_and_wait() {
                Ok(()) => return server,
                // Another process took the port between our check and the bind.
                Err(log) if log.contains("Address already in use") => {
                    server.port = free_port(cluster);
                }
                Err(log) => panic!("redis-server did not start:\n{log}"),
            }
        }
        panic!("redis-server did not start: no free port after {START_ATTEMPTS} attempts");
    }
}

/// A `redis-server` owned by one test, killed when dropped.
#[derive(Debug)]
pub struct RedisServer {
    child: Option<Child>,
    dir: TempDir,
    port: u16,
    settings: RedisServerBuilder,
}

impl RedisServer {
    /// Starts a server with the defaults: no persistence, no maxmemory.
    pub fn start() -> Self {
        Self::builder().start()
    }

    /// Settings for a server with options.
    pub fn builder() -> RedisServerBuilder {
        RedisServerBuilder::default()
    }

    /// The TCP port the server listens on (on 127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:<port>/`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// The server's working directory (data files and log).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The process id of the running server.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Sends one command and returns its reply as text (arrays joined by
    /// newlines), or the error text the server answered with.
    pub fn command(&self, args: &[&str]) -> Result<String, String> {
        match resp::command(self.port, args, Duration::from_secs(30)) {
            Ok(Reply::Ok(text)) => Ok(text),
            Ok(Reply::Err(text)) => Err(text),
            Err(err) => Err(format!(
                "I/O error talking to redis on {}: {err}",
                self.port
            )),
        }
    }

    /// Like [`command`](Self::command), panicking on an error reply.
    pub fn cmd(&self, args: &[&str]) -> String {
        self.command(args)
            .unwrap_or_else(|err| panic!("redis {args:?} failed: {err}"))
    }

    /// Fields of `INFO <section>` as a map.
    pub fn info(&self, section: &str) -> HashMap<String, String> {
        parse_info(&self.cmd(&["INFO", section]))
    }

    /// `used_memory` in bytes.
    pub fn used_memory(&self) -> u64 {
        self.info("memory")["used_memory"]
            .parse()
            .expect("used_memory is a number")
    }

    /// Number of keys in database 0.
    pub fn dbsize(&self) -> u64 {
        self.cmd(&["DBSIZE"]).parse().expect("DBSIZE is a number")
    }

    /// Every key in the database (tests only: uses KEYS).
    pub fn keys(&self) -> Vec<String> {
        let text = self.cmd(&["KEYS", "*"]);
        let mut keys: Vec<String> = text.lines().map(str::to_string).collect();
        keys.sort();
        keys
    }

    /// Kills the server with SIGKILL, as a crash would. Data that was not
    /// persisted is gone. [`restart`](Self::restart) brings it back.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the process with SIGSTOP: connections stay open, nothing answers.
    pub fn freeze(&self) {
        self.signal("-STOP");
    }

    /// Resumes a process stopped with [`freeze`](Self::freeze).
    pub fn thaw(&self) {
        self.signal("-CONT");
    }

    /// Starts the server again on the same port and directory (after
    /// [`kill`](Self::kill), or kills it first). With
    /// [`appendonly`](RedisServerBuilder::appendonly) the data is reloaded.
    pub fn restart(&mut self) {
        self.kill();
        // The old process released the port on exit; a restart on the same port
        // is what clients reconnecting to the same address expect.
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            match self.spawn_and_wait() {
                Ok(()) => return,
                Err(log) if Instant::now() < deadline && log.contains("Address already in use") => {
                    sleep(Duration::from_millis(100));
                }
                Err(log) => panic!("redis-server did not restart:\n{log}"),
            }
        }
    }

    /// Makes the running server listen on `port` instead of its own
    /// (`CONFIG SET port`): after the server that had `port` died, clients
    /// that reconnect to the same address reach this one, as they would
    /// reach a promoted replica behind a virtual IP or a DNS name.
    pub fn take_over_port(&mut self, port: u16) {
        let deadline = Instant::now() + START_TIMEOUT;
        // The dead server's socket may hold the port a moment longer.
        while let Err(err) = self.command(&["CONFIG", "SET", "port", &port.to_string()]) {
            assert!(
                Instant::now() < deadline,
                "CONFIG SET port {port} failed: {err}"
            );
            sleep(Duration::from_millis(50));
        }
        self.port = port;
    }

    /// Fields of `INFO replication`, as a map.
    pub fn replication(&self) -> HashMap<String, String> {
        self.info("replication")
    }

    /// Whether this server, a primary, counts the replica listening on
    /// `port` as online: `WAIT` counts only those, and a replica says its
    /// link is up a moment before its primary puts it online.
    pub fn replica_online(&self, port: u16) -> bool {
        self.replication()
            .iter()
            .filter(|(field, _)| field.starts_with("slave"))
            .any(|(_, value)| {
                let fields: HashMap<&str, &str> = value
                    .split(',')
                    .filter_map(|kv| kv.split_once('='))
                    .collect();
                fields.get("port") == Some(&port.to_string().as_str())
                    && fields.get("state") == Some(&"online")
            })
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("redis.log")
    }

    fn signal(&self, signal: &str) {
        if let Some(pid) = self.pid() {
            let status = Command::new("kill")
                .args([signal, &pid.to_string()])
                .status()
                .expect("run kill");
            assert!(status.success(), "kill {signal} {pid} failed");
        }
    }

    /// Spawns the process and waits for PING; on failure returns the log.
    fn spawn_and_wait(&mut self) -> Result<(), String> {
        let binary = "redis-server";
        let mut args: Vec<String> = vec![
            "--port".into(),
            self.port.to_string(),
            "--bind".into(),
            "127.0.0.1".into(),
            "--dir".into(),
            self.dir.path().display().to_string(),
            "--logfile".into(),
            self.log_path().display().to_string(),
            "--daemonize".into(),
            "no".into(),
            "--save".into(),
            String::new(),
            "--protected-mode".into(),
            "no".into(),
            // Fault tests use DEBUG SLEEP and friends on their own servers.
            "--enable-debug-command".into(),
            "yes".into(),
            "--maxmemory".into(),
            self.settings.maxmemory.unwrap_or(0).to_string(),
            "--maxmemory-policy".into(),
            self.settings
                .policy
                .clone()
                .unwrap_or_else(|| "noeviction".into()),
            "--appendonly".into(),
            if self.settings.appendonly {
                "yes"
            } else {
                "no"
            }
            .into(),
        ];
        if self.settings.cluster {
            args.extend([
                "--cluster-enabled".into(),
                "yes".into(),
                "--cluster-config-file".into(),
                self.dir.path().join("nodes.conf").display().to_string(),
                "--cluster-node-timeout".into(),
                self.settings.node_timeout_ms.unwrap_or(5000).to_string(),
            ]);
        }
        if let Some(primary) = self.settings.replica_of {
            args.extend(["--replicaof".into(), format!("127.0.0.1 {primary}")]);
        }
        for (name, value) in &self.settings.extra {
            args.push(format!("--{name}"));
            args.push(value.clone());
        }
        let child = Command::new(binary)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn();
        let child = match child {
            Ok(child) => child,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => panic!(
                "redis-server is not installed (run ./scripts/test, which installs it, \
                 or `apt-get install redis-server`)"
            ),
            Err(err) => panic!("could not start redis-server: {err}"),
        };
        self.child = Some(child);
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                let mut stderr = String::new();
                if let Some(mut pipe) = child.stderr.take() {
                    use std::io::Read;
                    let _ = pipe.read_to_string(&mut stderr);
                }
                self.child = None;
                return Err(format!("exited with {status}\n{stderr}\n{}", self.log()));
            }
            if let Ok(Reply::Ok(pong)) = resp::command(self.port, &["PING"], Duration::from_secs(1))
                && pong == "PONG"
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                self.kill();
                return Err(format!("no PONG within {START_TIMEOUT:?}\n{}", self.log()));
            }
            sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if std::thread::panicking() && self.child.is_some() {
            let log = self.log();
            let lines: Vec<&str> = log.lines().collect();
            let tail = &lines[lines.len().saturating_sub(LOG_TAIL_LINES)..];
            eprintln!(
                "---- redis-server on port {} (last {} lines of its log) ----\n{}\n----",
                self.port,
                tail.len(),
                tail.join("\n")
            );
        }
        self.kill();
    }
}

/// Parses `INFO` output into a map of field to value.
pub(crate) fn parse_info(text: &str) -> HashMap<String, String> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| line.trim_end().split_once(':'))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// A port in [`PORT_RANGE`] that is free now (and, for a cluster node, whose
/// bus port is free too). Another process may still take it before the server
/// binds it; `start` retries on another port when that happens.
fn free_port(cluster: bool) -> u16 {
    loop {
        let random = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish();
        let span = u64::from(PORT_RANGE.end - PORT_RANGE.start);
        let port = PORT_RANGE.start + (random % span) as u16;
        let free = |p: u16| TcpListener::bind(("127.0.0.1", p)).is_ok();
        if free(port) && (!cluster || free(port + 10_000)) {
            return port;
        }
    }
}
