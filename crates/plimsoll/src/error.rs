//! The one error type of the library.
//!
//! An [`Error`] carries an [`ErrorKind`] that tells the caller what to do next:
//! wait and retry (the connection dropped, Redis is loading), make room (Redis
//! is out of memory), or fix the call (a payload too large, a bad name). Redis
//! refusing a write because it reached `maxmemory` is its own kind, distinct
//! from a lost connection and from a timeout, because the remedies differ: an
//! operator has to free memory, not restart a network.
//!
//! The shape follows redis-rs: a small struct with a `#[non_exhaustive]` kind
//! and classifier methods, so that new kinds can be added without breaking
//! callers that match on the ones they handle.

use std::fmt;

/// A `Result` whose error is [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong, in terms of what the caller can do about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// Redis refused a write because `used_memory` reached `maxmemory`
    /// (`OOM command not allowed`). Nothing was written. Reads, deletes and
    /// Plimsoll's completions still work; new jobs need room.
    OutOfMemory,
    /// The connection to Redis could not be made or broke during the call. A
    /// write may or may not have been applied; with an idempotency key a retry
    /// is safe.
    Connection,
    /// Redis did not answer within the configured time. As with
    /// [`Connection`](Self::Connection), a write may have been applied.
    Timeout,
    /// Redis cannot serve right now but will soon: it is loading its dataset, a
    /// cluster is failing over or is down, a slot is migrating, a script is
    /// busy. The message names which. Nothing was written.
    Unavailable,
    /// The write is on the primary, but fewer replicas than the queue's
    /// [`Durability`](crate::queue::Durability) asks for confirmed it in
    /// time: a failover now may lose it. With an idempotency key a retry is
    /// safe; without one it may enqueue the job twice.
    NotReplicated,
    /// The registry of queues holds as many queues as its cap allows
    /// ([`QueueConfig::max_queues`](crate::QueueConfig::max_queues)); a new
    /// queue needs an unused one deleted (`plimsoll queue delete`) or a
    /// higher cap. Nothing was written.
    TooManyQueues,
    /// A payload or value is larger than its configured limit.
    PayloadTooLarge,
    /// An argument is not valid; the message names which and why.
    InvalidInput,
    /// A payload could not be encoded or decoded.
    Serialization,
    /// The job, queue or item asked for does not exist (any more).
    NotFound,
    /// Redis answered with an error Plimsoll does not expect (a bug, an ACL
    /// rule, a wrong Redis version); the message has the server's text.
    Redis,
    /// Data in Redis is not in the form this version of Plimsoll writes.
    Corrupt,
    /// The component is shutting down and no longer accepts work.
    ShuttingDown,
    /// This machine refused something Plimsoll needed (a thread, a
    /// runtime); the message says what.
    System,
    /// A local file could not be read or written (the guard's history, a
    /// spool): the disk is full, a folder is not writable, the device
    /// failed. The message names the file and the operating system's
    /// reason. Not the caller's input: fix the machine, then retry.
    Io,
    /// Redis may evict keys under memory pressure (its `maxmemory-policy`
    /// is not `noeviction`), so jobs and idempotency keys could vanish
    /// without a trace. The message names the node and the policy. Set the
    /// policy to `noeviction`, or accept the risk explicitly
    /// (`QueueConfig::allow_evicting_redis`).
    EvictingRedis,
}

impl ErrorKind {
    fn describe(self) -> &'static str {
        match self {
            Self::OutOfMemory => "Redis is out of memory",
            Self::Connection => "connection to Redis failed",
            Self::Timeout => "Redis did not answer in time",
            Self::Unavailable => "Redis is temporarily unavailable",
            Self::NotReplicated => "written to the Redis primary, not confirmed by its replicas",
            Self::TooManyQueues => "too many queues",
            Self::PayloadTooLarge => "payload too large",
            Self::InvalidInput => "invalid input",
            Self::Serialization => "could not encode or decode a payload",
            Self::NotFound => "not found",
            Self::Redis => "unexpected error from Redis",
            Self::Corrupt => "unexpected data in Redis",
            Self::ShuttingDown => "shutting down",
            Self::System => "the operating system refused a resource",
            Self::EvictingRedis => "Redis may evict keys",
            Self::Io => "a local file could not be read or written",
        }
    }
}

/// An error from Plimsoll: a [`kind`](Self::kind) to act on and a message
/// that says what happened.
pub struct Error {
    kind: ErrorKind,
    message: String,
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl Error {
    /// An error of `kind` with a message that says what happened.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            source: None,
        }
    }

    pub(crate) fn with_source(
        mut self,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        self.source = Some(Box::new(source));
        self
    }

    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidInput, message)
    }

    pub(crate) fn corrupt(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Corrupt, message)
    }

    /// An [`Io`](ErrorKind::Io) error about `path`; `what` names the file
    /// for the reader ("guard history file").
    pub(crate) fn io(what: &str, path: &std::path::Path, err: std::io::Error) -> Self {
        Self::new(ErrorKind::Io, format!("{what} {}: {err}", path.display())).with_source(err)
    }

    /// A copy for each of several callers that share one failed call (a
    /// batch of enqueues written together); the source stays with the
    /// original.
    pub(crate) fn replicate(&self) -> Self {
        Self::new(self.kind, self.message.clone())
    }

    /// What went wrong.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The message, without the kind's description.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Redis refused a write because it is full.
    pub fn is_out_of_memory(&self) -> bool {
        self.kind == ErrorKind::OutOfMemory
    }

    /// The failure is likely to pass by itself (connection, timeout, Redis
    /// loading or failing over, replicas slow to confirm): retrying later
    /// with backoff is reasonable.
    pub fn is_transient(&self) -> bool {
        matches!(
            self.kind,
            ErrorKind::Connection
                | ErrorKind::Timeout
                | ErrorKind::Unavailable
                | ErrorKind::NotReplicated
        )
    }

    /// Redis could not be reached or did not answer: the kinds a cache treats
    /// as "Redis cannot help right now".
    pub fn is_unreachable(&self) -> bool {
        matches!(self.kind, ErrorKind::Connection | ErrorKind::Timeout)
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = f.debug_struct("Error");
        s.field("kind", &self.kind).field("message", &self.message);
        if let Some(source) = &self.source {
            s.field("source", source);
        }
        s.finish()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.message.is_empty() {
            f.write_str(self.kind.describe())
        } else {
            write!(f, "{}: {}", self.kind.describe(), self.message)
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|s| s as &(dyn std::error::Error + 'static))
    }
}

impl From<redis::RedisError> for Error {
    fn from(err: redis::RedisError) -> Self {
        let kind = classify(&err);
        let message = match err.code() {
            Some(code) => format!("{code} {}", err.detail().unwrap_or_default()),
            None => err.to_string(),
        };
        Self::new(kind, message.trim_end().to_string()).with_source(err)
    }
}

impl From<redis::ParsingError> for Error {
    fn from(err: redis::ParsingError) -> Self {
        Self::new(
            ErrorKind::Corrupt,
            format!("unexpected reply from Redis: {err}"),
        )
        .with_source(err)
    }
}

impl From<serde_json::Error> for Error {
    fn from(err: serde_json::Error) -> Self {
        Self::new(ErrorKind::Serialization, err.to_string()).with_source(err)
    }
}

/// Maps a redis-rs error onto the kind a Plimsoll caller acts on.
fn classify(err: &redis::RedisError) -> ErrorKind {
    use redis::{ErrorKind as K, ServerErrorKind as S};
    if err.code() == Some("OOM") {
        return ErrorKind::OutOfMemory;
    }
    // A transaction whose commands were queued while there was room, and
    // whose EXEC found Redis full: Redis discards it whole, and says why.
    if err.code() == Some("EXECABORT") && err.detail().is_some_and(|d| d.contains("OOM")) {
        return ErrorKind::OutOfMemory;
    }
    if err.is_timeout() {
        return ErrorKind::Timeout;
    }
    if err.is_io_error() || err.is_connection_dropped() || err.is_connection_refusal() {
        return ErrorKind::Connection;
    }
    match err.kind() {
        K::Server(
            S::BusyLoading
            | S::TryAgain
            | S::ClusterDown
            | S::MasterDown
            | S::ReadOnly
            | S::Moved
            | S::Ask,
        )
        | K::ClusterConnectionNotFound => ErrorKind::Unavailable,
        K::Extension if err.code() == Some("BUSY") => ErrorKind::Unavailable,
        K::Parse | K::UnexpectedReturnType => ErrorKind::Corrupt,
        K::InvalidClientConfig => ErrorKind::InvalidInput,
        _ => ErrorKind::Redis,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_the_kind_and_the_detail() {
        let err = Error::new(ErrorKind::PayloadTooLarge, "600000 bytes, limit 524288");
        assert_eq!(
            err.to_string(),
            "payload too large: 600000 bytes, limit 524288"
        );
    }

    #[test]
    fn io_errors_are_connection_errors() {
        let io = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        let err = Error::from(redis::RedisError::from(io));
        assert_eq!(err.kind(), ErrorKind::Connection);
        assert!(err.is_transient());
    }

    #[test]
    fn timeouts_are_their_own_kind() {
        let io = std::io::Error::from(std::io::ErrorKind::TimedOut);
        let err = Error::from(redis::RedisError::from(io));
        assert_eq!(err.kind(), ErrorKind::Timeout);
    }
}
