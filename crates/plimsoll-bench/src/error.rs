//! The bench's error: what stopped a run, with the step it stopped.
//!
//! A failed run is read by the person who started it, so the kinds say what
//! they can do: fix the command line ([`BenchError::Usage`]), or look at
//! what a workload met — Redis, the private redis-server, `plimsoll serve`,
//! wrk, or a check of the workload's own ([`BenchError::Failed`]). The
//! library's errors keep their types (and their own kinds) inside, so the
//! binary, which prints the chain with `{:#}`, shows what anyhow showed when
//! the bench was part of it. [`Context`] is the little of anyhow the bench
//! used: a step's description around the error that stopped it.

use std::fmt::Display;

/// A `Result` whose error is [`BenchError`].
pub(crate) type Result<T, E = BenchError> = std::result::Result<T, E>;

/// Why a benchmark run stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BenchError {
    /// The options ask for what the run cannot do (no repetitions, a
    /// `--redis` that holds keys without `--flush`, C2 on a Redis the bench
    /// did not start): fix the command line.
    #[error("{0}")]
    Usage(String),
    /// A workload could not finish, or a check of its own failed (the cache
    /// was not filled, the breaker did not close, wrk's report was not
    /// read).
    #[error("{0}")]
    Failed(String),
    /// The library failed; its kind says why.
    #[error(transparent)]
    Plimsoll(#[from] plimsoll::Error),
    /// A bulk enqueue stopped part-way (its error says why).
    #[error(transparent)]
    Enqueue(#[from] plimsoll::BulkError),
    /// A command the bench sends Redis itself failed.
    #[error(transparent)]
    Redis(#[from] redis::RedisError),
    /// A reply the bench reads itself was not what it expected.
    #[error(transparent)]
    Parsing(#[from] redis::ParsingError),
    /// A private redis-server did not start or restart.
    #[error(transparent)]
    Embedded(#[from] plimsoll_server::embedded::EmbeddedError),
    /// A file, a process or a socket.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// H1/H2: a connection to `plimsoll serve`.
    #[error(transparent)]
    Http(#[from] hyper::Error),
    /// H1/H2: a webhook request that could not be built.
    #[error(transparent)]
    Request(#[from] hyper::http::Error),
    /// Stats that could not be written as JSON.
    #[error(transparent)]
    Json(#[from] serde_json::Error),
    /// A latency histogram that could not be made, filled or merged.
    #[error("{0}")]
    Histogram(String),
    /// A task of the run panicked or was cancelled.
    #[error(transparent)]
    Task(#[from] tokio::task::JoinError),
    /// `source`, met while doing `context`.
    #[error("{context}")]
    Context {
        context: String,
        #[source]
        source: Box<BenchError>,
    },
}

impl From<hdrhistogram::CreationError> for BenchError {
    fn from(err: hdrhistogram::CreationError) -> Self {
        Self::Histogram(err.to_string())
    }
}

impl From<hdrhistogram::AdditionError> for BenchError {
    fn from(err: hdrhistogram::AdditionError) -> Self {
        Self::Histogram(err.to_string())
    }
}

impl From<hdrhistogram::RecordError> for BenchError {
    fn from(err: hdrhistogram::RecordError) -> Self {
        Self::Histogram(err.to_string())
    }
}

/// Names the step an error stopped, as anyhow's `Context` does: on a
/// `Result`, the error becomes the source of a [`BenchError::Context`]; on
/// an `Option`, `None` becomes [`BenchError::Failed`] with the text.
pub(crate) trait Context<T> {
    fn context(self, context: impl Display) -> Result<T>;
    fn with_context<C: Display>(self, context: impl FnOnce() -> C) -> Result<T>;
}

impl<T, E: Into<BenchError>> Context<T> for Result<T, E> {
    fn context(self, context: impl Display) -> Result<T> {
        self.with_context(|| context)
    }

    fn with_context<C: Display>(self, context: impl FnOnce() -> C) -> Result<T> {
        self.map_err(|err| BenchError::Context {
            context: context().to_string(),
            source: Box::new(err.into()),
        })
    }
}

impl<T> Context<T> for Option<T> {
    fn context(self, context: impl Display) -> Result<T> {
        self.with_context(|| context)
    }

    fn with_context<C: Display>(self, context: impl FnOnce() -> C) -> Result<T> {
        self.ok_or_else(|| BenchError::Failed(context().to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_context_prints_before_the_error_it_holds() {
        let err = Err::<(), _>(BenchError::Failed("no reply".into()))
            .context("connecting to redis://127.0.0.1:1/")
            .unwrap_err();
        assert_eq!(err.to_string(), "connecting to redis://127.0.0.1:1/");
        let source = std::error::Error::source(&err).map(ToString::to_string);
        assert_eq!(source.as_deref(), Some("no reply"));
    }
}
