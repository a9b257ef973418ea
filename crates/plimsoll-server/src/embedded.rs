//! A `redis-server` that Plimsoll starts for itself: the embedded default of
//! `plimsoll serve` (a data folder, append-only file), and the private
//! servers of `plimsoll demo` and `plimsoll bench` (temporary, no
//! persistence).
//!
//! It runs with the `noeviction` policy, so a full Redis refuses writes
//! rather than silently dropping data, and, except for benchmarks that ask for
//! Redis' defaults, with `maxmemory` set: Plimsoll does not start a Redis
//! that can grow without bound.

use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long the server may take to answer PING (loading a large
/// append-only file takes a while).
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a stop waits for Redis to exit after SIGTERM before killing it.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a local server could not be started.
#[derive(Debug, thiserror::Error)]
pub enum EmbeddedError {
    #[error(
        "redis-server is not installed: install it (Debian/Ubuntu: `sudo apt-get install redis-server`, \
         which ./scripts/run does) or configure a Redis URL"
    )]
    NotInstalled,
    #[error("could not start redis-server: {0}")]
    Io(#[from] io::Error),
    #[error("redis-server exited at start ({status}); it said:\n{log}")]
    Exited { status: String, log: String },
    #[error("redis-server did not answer PING within {0:?}")]
    NoAnswer(Duration),
}

type Result<T> = std::result::Result<T, EmbeddedError>;

/// Settings of a local server.
#[derive(Debug, Clone)]
pub struct LocalRedisOptions {
    /// Data folder; a temporary one when `None`.
    pub dir: Option<PathBuf>,
    /// `maxmemory` in bytes; 0 leaves Redis unbounded, which only the
    /// benchmarks ask for (shared/BENCH.md's set-up).
    pub maxmemory: u64,
    /// Append-only persistence with an fsync before every reply
    /// (`appendfsync always`): what Redis acknowledged survives a crash of
    /// Redis or the machine, which is what lets the intake promise that an
    /// accepted webhook is never lost.
    pub persist: bool,
    /// Port; a free one when `None`.
    pub port: Option<u16>,
}

/// When the append-only file is first rewritten: at `maxmemory`, at least
/// Redis' own 64 MB, and 512 MB for an unbounded (benchmark) server.
fn aof_rewrite_min_size(maxmemory: u64) -> u64 {
    const MIB: u64 = 1024 * 1024;
    if maxmemory == 0 {
        512 * MIB
    } else {
        maxmemory.max(64 * MIB)
    }
}

/// A running local server, stopped (SIGTERM, so it can flush its
/// append-only file) when dropped.
#[derive(Debug)]
pub struct LocalRedis {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
    options: LocalRedisOptions,
    _temp: Option<tempfile::TempDir>,
}

impl LocalRedis {
    /// Starts `redis-server` on loopback.
    pub fn start(options: &LocalRedisOptions) -> Result<Self> {
        let (dir, temp) = match &options.dir {
            Some(dir) => {
                std::fs::create_dir_all(dir)?;
                // redis-server changes into `--dir` before it opens
                // `--logfile`, so a relative folder would name a log file
                // inside itself (`.plimsoll/redis/.plimsoll/redis/redis.log`)
                // that does not exist, and the server would exit at once.
                (std::path::absolute(dir)?, None)
            }
            None => {
                let temp = tempfile::Builder::new()
                    .prefix("plimsoll-redis-")
                    .tempdir()?;
                (temp.path().to_path_buf(), Some(temp))
            }
        };
        let port = match options.port {
            Some(port) => port,
            None => TcpListener::bind(("127.0.0.1", 0))?.local_addr()?.port(),
        };
        let mut server = Self {
            child: None,
            port,
            dir,
            options: options.clone(),
            _temp: temp,
        };
        server.spawn()?;
        Ok(server)
    }

    /// `redis://127.0.0.1:<port>/`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// The data folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Kills the server (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port and folder.
    pub fn restart(&mut self) -> Result<()> {
        self.kill();
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            match self.spawn() {
                Ok(()) => return Ok(()),
                Err(EmbeddedError::Exited { log, .. })
                    if log.contains("Address already in use") && Instant::now() < deadline =>
                {
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(err) => return Err(err),
            }
        }
    }

    fn spawn(&mut self) -> Result<()> {
        let log = self.dir.join("redis.log");
        // What redis-server prints before its log file is open (a bad
        // option, a log file it cannot open) goes to its stdout and stderr;
        // keep both, so that an early exit always says why.
        let output = self.dir.join("redis-server.out");
        let out = std::fs::File::create(&output)?;
        let mut command = Command::new("redis-server");
        command
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--dir", &self.dir.display().to_string()])
            .args(["--logfile", &log.display().to_string()])
            .args(["--save", ""])
            .args([
                "--appendonly",
                if self.options.persist { "yes" } else { "no" },
            ])
            .args(["--appendfsync", "always"])
            // A queue's append-only file grows with every job written and
            // removed, not with the data held. At Redis' default (64 MB) a
            // busy intake forks a rewrite every few seconds, and the child
            // competes with Redis and the server for the cores and the
            // disk; from the size of the data Redis may hold (maxmemory)
            // rewrites come far less often, and the file stays within
            // about twice that.
            .args([
                "--auto-aof-rewrite-min-size",
                &aof_rewrite_min_size(self.options.maxmemory).to_string(),
            ])
            .args(["--maxmemory", &self.options.maxmemory.to_string()])
            .args(["--maxmemory-policy", "noeviction"])
            .args(["--protected-mode", "yes"])
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out);
        let child = command.spawn().map_err(|err| {
            if err.kind() == io::ErrorKind::NotFound {
                EmbeddedError::NotInstalled
            } else {
                EmbeddedError::Io(err)
            }
        })?;
        self.child = Some(child);
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(child) = self.child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                self.child = None;
                return Err(EmbeddedError::Exited {
                    status: status.to_string(),
                    log: early_output(&output, &log),
                });
            }
            if ping(self.port) {
                return Ok(());
            }
            if Instant::now() > deadline {
                self.kill();
                return Err(EmbeddedError::NoAnswer(START_TIMEOUT));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the server: SIGTERM (Redis writes its append-only file and
    /// exits), then SIGKILL if it takes too long.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for LocalRedis {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The last lines redis-server wrote to its stdout/stderr and to its log
/// file, with where each came from, or a note that both are empty.
fn early_output(output: &Path, log: &Path) -> String {
    let mut said = Vec::new();
    for (path, what) in [(output, "stdout/stderr"), (log, "log")] {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let text = tail(text.trim(), 20);
        if !text.is_empty() {
            said.push(format!("[{what}: {}]\n{text}", path.display()));
        }
    }
    if said.is_empty() {
        format!(
            "nothing on stdout/stderr ({}) nor in its log ({})",
            output.display(),
            log.display()
        )
    } else {
        said.join("\n")
    }
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Whether something answers PING with PONG on 127.0.0.1:`port`.
pub fn ping(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect_timeout(
        &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_millis(300),
    ) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    if stream.write_all(b"*1\r\n$4\r\nPING\r\n").is_err() {
        return false;
    }
    let mut reply = [0u8; 7];
    stream.read_exact(&mut reply).is_ok() && &reply == b"+PONG\r\n"
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `CONFIG GET name` of a running local server, through redis-cli.
    fn config(redis: &LocalRedis, name: &str) -> String {
        let out = Command::new("redis-cli")
            .args(["-u", &redis.url(), "--raw", "CONFIG", "GET", name])
            .output()
            .expect("redis-cli runs");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.lines().nth(1).unwrap_or_default().to_string()
    }

    #[test]
    fn the_local_server_is_durable_bounded_and_rewrites_its_file_at_maxmemory() {
        let redis = LocalRedis::start(&LocalRedisOptions {
            dir: None,
            maxmemory: 256 << 20,
            persist: true,
            port: None,
        })
        .unwrap();
        assert_eq!(config(&redis, "appendonly"), "yes");
        assert_eq!(config(&redis, "appendfsync"), "always");
        assert_eq!(config(&redis, "maxmemory"), (256u64 << 20).to_string());
        assert_eq!(config(&redis, "maxmemory-policy"), "noeviction");
        assert_eq!(
            config(&redis, "auto-aof-rewrite-min-size"),
            (256u64 << 20).to_string()
        );
    }

    /// The README's first command exited at start: `.plimsoll/redis` is
    /// relative, and redis-server opened its log file relative to the folder
    /// it had changed into.
    #[test]
    fn a_relative_data_folder_starts() {
        let base = tempfile::tempdir_in(".").unwrap();
        let relative = base
            .path()
            .strip_prefix(std::env::current_dir().unwrap())
            .map(Path::to_path_buf)
            .unwrap_or_else(|_| base.path().to_path_buf())
            .join("redis");
        assert!(relative.is_relative(), "{relative:?}");
        let redis = LocalRedis::start(&LocalRedisOptions {
            dir: Some(relative),
            maxmemory: 64 << 20,
            persist: true,
            port: None,
        })
        .unwrap();
        assert!(redis.dir().is_absolute());
        assert!(ping(redis.port));
        assert!(redis.dir().join("redis.log").exists());
    }

    /// An early exit used to say "its log says:" and nothing more when
    /// redis-server could not even open its log file.
    #[test]
    fn an_early_exit_says_what_redis_server_printed() {
        let dir = tempfile::tempdir().unwrap();
        // A folder where the log file should be: redis-server cannot open
        // it and says so on stderr.
        std::fs::create_dir(dir.path().join("redis.log")).unwrap();
        let err = LocalRedis::start(&LocalRedisOptions {
            dir: Some(dir.path().to_path_buf()),
            maxmemory: 64 << 20,
            persist: false,
            port: None,
        })
        .unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, EmbeddedError::Exited { .. }), "{text}");
        assert!(text.contains("log file"), "{text}");
    }

    #[test]
    fn a_small_or_unbounded_server_still_rewrites_at_a_sensible_size() {
        assert_eq!(aof_rewrite_min_size(1 << 20), 64 << 20);
        assert_eq!(aof_rewrite_min_size(0), 512 << 20);
        assert_eq!(aof_rewrite_min_size(2 << 30), 2 << 30);
    }
}
