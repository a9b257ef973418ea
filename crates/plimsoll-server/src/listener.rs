//! The accept loop: HTTP/1 connections with a header read timeout and a
//! bounded number of connections, shed from the most stalled first.
//!
//! `axum::serve` has neither: a client that opens a connection and sends half
//! a request line holds a file descriptor for as long as it likes, and a few
//! hundred of them (a server at 256 open files) kept every real webhook from
//! being answered. Here:
//!
//! - hyper's **header read timeout** closes a connection whose request head
//!   has not arrived in time. hyper starts it when it begins waiting for a
//!   head — at accept, and again after each response — so it is also the
//!   bound on an idle keep-alive connection;
//! - at most `max_connections` are open (a semaphore, sized below the
//!   open-file limit by [`crate::config::FD_RESERVE`]);
//! - when all slots are taken, a new connection takes the slot of the one
//!   that has waited longest for a request head (never one with a request in
//!   flight, so an accepted webhook is never cut off); if every connection is
//!   busy, the newcomer waits up to [`FULL_WAIT`] for a slot and is then
//!   answered 503 with `Retry-After`.
//!
//! A request runs only on a connection that was not chosen to be shed: the
//! choice and the start of a request are made under one lock, so dropping a
//! shed connection never drops a handler half-way.
//!
//! Graceful shutdown: stop accepting (the listener closes, so new connections
//! are refused), close connections that wait for a request, let requests in
//! flight finish (hyper's graceful shutdown), and return when the last
//! connection is gone.

use std::collections::HashMap;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::http::{Request, Response};
use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

/// How long a new connection waits for a slot when every open connection has
/// a request in flight, before it is answered 503.
pub const FULL_WAIT: Duration = Duration::from_secs(1);
/// How long the accept loop pauses when the process is out of file
/// descriptors (`EMFILE`), so that it does not spin while connections close.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(50);
/// Open connections to the metrics listener at most (Prometheus needs one).
pub const METRICS_MAX_CONNECTIONS: usize = 16;
/// The answer to a connection that found no slot. Sent before its request is
/// read, so it cannot depend on it.
const FULL_RESPONSE: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\n\
Retry-After: 1\r\nContent-Type: application/json\r\nContent-Length: 104\r\n\r\n\
{\"error\":{\"code\":\"too_many_connections\",\"message\":\"the server is at its connection limit; retry later\"}}";

/// How one listener treats its connections.
#[derive(Debug, Clone)]
pub struct Limits {
    pub header_read_timeout: Duration,
    pub max_connections: usize,
}

/// Counters and gauges of one listener (no-ops when not registered).
#[derive(Debug, Clone, Default)]
pub struct ConnectionMetrics {
    /// Connections open now.
    pub open: Gauge,
    /// Connections closed to make room for a new one.
    pub shed: Counter,
    /// Connections answered 503 because every slot was busy.
    pub refused: Counter,
}

/// The soft limit on open files of this process (`RLIMIT_NOFILE`), from
/// `/proc/self/limits`; 1024, the usual default, where that cannot be read.
pub fn open_file_limit() -> u64 {
    std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|text| parse_open_file_limit(&text))
        .unwrap_or(1024)
}

/// `Max open files            1024                 524288               files`
fn parse_open_file_limit(limits: &str) -> Option<u64> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    let soft = line
        .trim_start_matches("Max open files")
        .split_whitespace()
        .next()?;
    if soft == "unlimited" {
        return Some(u64::MAX);
    }
    soft.parse().ok()
}

/// Serves `router` on `listener` until `stop` is cancelled, then shuts down
/// gracefully (see the module docs) and returns when every connection is
/// closed.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    metrics: ConnectionMetrics,
    stop: CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let registry = Arc::new(Registry::default());
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .keep_alive(true);
    let mut next_id = 0u64;
    loop {
        let (stream, _peer) = tokio::select! {
            () = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // EMFILE and friends: connections close by themselves
                    // (timeouts), so wait for that instead of spinning.
                    tracing::warn!(error = %err, "cannot accept a connection; pausing");
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                    continue;
                }
            },
        };
        let slot = match slots.clone().try_acquire_owned() {
            Ok(slot) => slot,
            Err(_) => {
                if registry.shed_longest_waiting() {
                    metrics.shed.inc();
                }
                let waited = tokio::select! {
                    () = stop.cancelled() => break,
                    waited = tokio::time::timeout(FULL_WAIT, slots.clone().acquire_owned()) => waited,
                };
                match waited {
                    Ok(Ok(slot)) => slot,
                    _ => {
                        metrics.refused.inc();
                        tracing::warn!(
                            max_connections = limits.max_connections,
                            "every connection is busy; answering a new one 503"
                        );
                        refuse(stream);
                        continue;
                    }
                }
            }
        };
        let _ = stream.set_nodelay(true);
        next_id += 1;
        let id = next_id;
        let shed = registry.open(id);
        let service = ConnectionService {
            id,
            router: router.clone(),
            registry: registry.clone(),
        };
        let connection = http.serve_connection(TokioIo::new(stream), service);
        let (registry, stop, open) = (registry.clone(), stop.clone(), metrics.open.clone());
        open.inc();
        tokio::spawn(async move {
            let mut connection = std::pin::pin!(connection);
            tokio::select! {
                result = connection.as_mut() => {
                    if let Err(err) = result {
                        tracing::debug!(error = %err, "connection ended with an error");
                    }
                }
                // Waiting for a request head: no request is running, and
                // none will start (see `ConnectionService::call`).
                () = shed.cancelled() => {}
                () = stop.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    tokio::select! {
                        _ = connection.as_mut() => {}
                        () = shed.cancelled() => {}
                    }
                }
            }
            registry.close(id);
            open.dec();
            drop(slot);
        });
    }
    drop(listener);
    registry.shed_all_waiting();
    // Every connection holds a slot until it is gone.
    let _ = slots.acquire_many(limits.max_connections as u32).await;
}

/// Writes the 503 without waiting (a client that does not read it loses
/// nothing: it is closed either way) and closes the connection. What the
/// client already sent is read away first: closing a socket with unread
/// data sends a reset, which can destroy the 503 before the client reads it.
fn refuse(stream: TcpStream) {
    let mut buf = [0u8; 4096];
    for _ in 0..16 {
        match stream.try_read(&mut buf) {
            Ok(n) if n > 0 => continue,
            _ => break,
        }
    }
    let _ = stream.try_write(FULL_RESPONSE);
}

/// The state of every open connection of one listener.
#[derive(Debug, Default)]
struct Registry {
    connections: Mutex<HashMap<u64, Connection>>,
}

#[derive(Debug)]
struct Connection {
    /// Since when the connection has waited for a request head; `None` while
    /// a request is in flight (until its response body is dropped).
    waiting_since: Option<Instant>,
    /// Chosen to be closed; no request may start on it any more.
    shed: CancellationToken,
}

impl Registry {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Connection>> {
        self.connections.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn open(&self, id: u64) -> CancellationToken {
        let shed = CancellationToken::new();
        self.lock().insert(
            id,
            Connection {
                waiting_since: Some(Instant::now()),
                shed: shed.clone(),
            },
        );
        shed
    }

    fn close(&self, id: u64) {
        self.lock().remove(&id);
    }

    /// Marks the connection busy, unless it was shed: then the request must
    /// not run.
    fn begin_request(&self, id: u64) -> bool {
        match self.lock().get_mut(&id) {
            Some(c) if !c.shed.is_cancelled() => {
                c.waiting_since = None;
                true
            }
            _ => false,
        }
    }

    fn end_request(&self, id: u64) {
        if let Some(c) = self.lock().get_mut(&id) {
            c.waiting_since = Some(Instant::now());
        }
    }

    /// Closes the connection that has waited longest for a request head;
    /// whether there was one.
    fn shed_longest_waiting(&self) -> bool {
        let connections = self.lock();
        let longest = connections
            .values()
            .filter(|c| !c.shed.is_cancelled())
            .filter_map(|c| c.waiting_since.map(|since| (since, c)))
            .min_by_key(|(since, _)| *since);
        match longest {
            Some((_, c)) => {
                c.shed.cancel();
                true
            }
            None => false,
        }
    }

    fn shed_all_waiting(&self) {
        for c in self.lock().values() {
            if c.waiting_since.is_some() {
                c.shed.cancel();
            }
        }
    }
}

/// The router, for one connection: keeps the registry told whether a
/// request is in flight.
#[derive(Clone)]
struct ConnectionService {
    id: u64,
    router: Router,
    registry: Arc<Registry>,
}

impl hyper::service::Service<Request<Incoming>> for ConnectionService {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

    fn call(&self, request: Request<Incoming>) -> Self::Future {
        if !self.registry.begin_request(self.id) {
            // Shed between its head arriving and now: the connection is
            // about to close; nothing runs.
            return Box::pin(async {
                let mut response = Response::new(Body::empty());
                *response.status_mut() = axum::http::StatusCode::SERVICE_UNAVAILABLE;
                Ok(response)
            });
        }
        let router = self.router.clone();
        let done = RequestDone {
            id: self.id,
            registry: self.registry.clone(),
        };
        Box::pin(async move {
            let response = router
                .oneshot(request.map(Body::new))
                .await
                .unwrap_or_else(|never| match never {});
            Ok(response.map(|body| Body::new(Tracked { body, _done: done })))
        })
    }
}

/// Marks the request finished when dropped: with its response body, or
/// with the handler if the connection closed first.
struct RequestDone {
    id: u64,
    registry: Arc<Registry>,
}

impl Drop for RequestDone {
    fn drop(&mut self) {
        self.registry.end_request(self.id);
    }
}

/// A response body that holds its request's [`RequestDone`].
struct Tracked {
    body: Body,
    _done: RequestDone,
}

impl HttpBody for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_open_file_limit_is_read_from_proc() {
        let text = "Limit                     Soft Limit           Hard Limit           Units\n\
                    Max processes             63448                63448                processes\n\
                    Max open files            256                  524288               files\n";
        assert_eq!(parse_open_file_limit(text), Some(256));
        assert_eq!(
            parse_open_file_limit(
                "Max open files            unlimited            unlimited            files"
            ),
            Some(u64::MAX)
        );
        assert!(open_file_limit() >= 16);
    }

    #[test]
    fn the_full_answer_is_well_formed() {
        let text = std::str::from_utf8(FULL_RESPONSE).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("Content-Length: "))
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(body.len(), length);
        assert!(serde_json::from_str::<serde_json::Value>(body).is_ok());
    }

    #[test]
    fn the_longest_waiting_connection_is_shed_and_busy_ones_never() {
        let registry = Registry::default();
        let first = registry.open(1);
        let second = registry.open(2);
        assert!(registry.begin_request(1));
        assert!(registry.shed_longest_waiting());
        assert!(!first.is_cancelled(), "a busy connection is never shed");
        assert!(second.is_cancelled());
        assert!(!registry.begin_request(2), "no request starts once shed");
        assert!(!registry.shed_longest_waiting(), "only busy ones are left");
        registry.end_request(1);
        assert!(registry.shed_longest_waiting());
        assert!(first.is_cancelled());
    }
}
