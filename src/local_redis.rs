//! A `redis-server` that the `plimsoll` command starts for itself: for the
//! demo and the benchmarks (temporary, no persistence), and later as the
//! embedded default of `plimsoll serve` (a data folder, append-only file).
//!
//! It always runs with `maxmemory` set and the `noeviction` policy: Plimsoll
//! never runs a Redis that can grow without bound or silently drop data.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// How long the server may take to answer PING.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// Settings of a local server.
#[derive(Debug, Clone)]
pub struct LocalRedisOptions {
    /// Data folder; a temporary one when `None`.
    pub dir: Option<PathBuf>,
    /// `maxmemory` in bytes; 0 leaves Redis unbounded (benchmarks only, as
    /// BENCH.md asks).
    pub maxmemory: u64,
    /// Append-only persistence (fsync every second).
    pub persist: bool,
}

/// A running local server, stopped when dropped.
#[derive(Debug)]
pub struct LocalRedis {
    child: Child,
    port: u16,
    dir: PathBuf,
    options: LocalRedisOptions,
    _temp: Option<tempfile::TempDir>,
}

impl LocalRedis {
    /// Starts `redis-server` on a free loopback port.
    pub fn start(options: &LocalRedisOptions) -> Result<Self> {
        let (dir, temp) = match &options.dir {
            Some(dir) => {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("creating the Redis data folder {}", dir.display()))?;
                (dir.clone(), None)
            }
            None => {
                let temp = tempfile::Builder::new()
                    .prefix("plimsoll-redis-")
                    .tempdir()?;
                (temp.path().to_path_buf(), Some(temp))
            }
        };
        let port = free_port()?;
        let child = spawn(options, port, &dir)?;
        let mut server = Self {
            child,
            port,
            dir,
            options: options.clone(),
            _temp: temp,
        };
        server.wait_ready()?;
        Ok(server)
    }

    /// Kills the server with SIGKILL, as a crash would (the cache benchmark's
    /// outage). [`restart`](Self::restart) brings it back on the same port.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts the server again on the same port and folder (killing it
    /// first if it runs), and waits until it answers.
    pub fn restart(&mut self) -> Result<()> {
        self.kill();
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            self.child = spawn(&self.options, self.port, &self.dir)?;
            match self.wait_ready() {
                Ok(()) => return Ok(()),
                // The old socket may linger for a moment.
                Err(err) if Instant::now() < deadline && format!("{err:#}").contains("in use") => {
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(err) => return Err(err),
            }
        }
    }

    /// `redis://127.0.0.1:<port>/`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// The data folder.
    #[allow(dead_code)]
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The server's process id (for CPU accounting in the benchmarks).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    fn wait_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait()? {
                let log = std::fs::read_to_string(self.dir.join("redis.log")).unwrap_or_default();
                bail!("redis-server exited with {status}:\n{log}");
            }
            if ping(self.port) {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("redis-server did not answer within {START_TIMEOUT:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for LocalRedis {
    fn drop(&mut self) {
        // SIGTERM lets Redis flush its append-only file; wait briefly, then kill.
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Spawns `redis-server` with Plimsoll's settings on `port`, in `dir`.
fn spawn(options: &LocalRedisOptions, port: u16, dir: &Path) -> Result<Child> {
    let log = dir.join("redis.log");
    let mut command = Command::new("redis-server");
    command
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--dir", &dir.display().to_string()])
        .args(["--logfile", &log.display().to_string()])
        .args(["--save", ""])
        .args(["--appendonly", if options.persist { "yes" } else { "no" }])
        .args(["--maxmemory", &options.maxmemory.to_string()])
        .args(["--maxmemory-policy", "noeviction"])
        .args(["--protected-mode", "yes"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    command.spawn().map_err(|err| {
        if err.kind() == std::io::ErrorKind::NotFound {
            anyhow::anyhow!(
                "redis-server is not installed: install it (Debian/Ubuntu: `sudo apt-get install redis-server`, \
                 or run ./scripts/run which does) or pass --redis URL"
            )
        } else {
            anyhow::anyhow!("could not start redis-server: {err}")
        }
    })
}

fn free_port() -> Result<u16> {
    let listener = TcpListener::bind(("127.0.0.1", 0)).context("finding a free port")?;
    Ok(listener.local_addr()?.port())
}

fn ping(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    if stream.write_all(b"*1\r\n$4\r\nPING\r\n").is_err() {
        return false;
    }
    let mut reply = [0u8; 7];
    stream.read_exact(&mut reply).is_ok() && &reply == b"+PONG\r\n"
}
