//! Request bodies are read within a deadline and only up to a cap.
//!
//! - **Deadline.** `tower_http`'s `RequestBodyTimeout` resets its timer on
//!   every frame, so a body dripped a byte at a time never times out. Here
//!   the deadline is fixed when the request starts (`http.body_read_timeout`)
//!   and progress does not move it; past it the body fails with
//!   [`BodyDeadline`], which the extractors answer with 408.
//! - **Cap per webhook source.** The intake route used to take bodies up to
//!   the largest `max_body` of any source, so one source's generous limit
//!   (100 GiB once) let every source's senders make the server buffer that
//!   much. Each source's body is now cut at its own `max_body` while it is
//!   read, before the signature is checked: a `Content-Length` over it is
//!   answered 413 before a byte of the body is read.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use tokio::time::{Instant, Sleep};

use crate::error::ApiError;
use crate::state::AppState;

/// The body was not complete by its deadline.
#[derive(Debug, thiserror::Error)]
#[error("the request body was not received within {0:?}")]
pub struct BodyDeadline(pub Duration);

/// A body that fails once its deadline passes.
struct DeadlineBody {
    body: Body,
    timeout: Duration,
    deadline: Pin<Box<Sleep>>,
}

impl HttpBody for DeadlineBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        // Data already there is taken even at the deadline; only waiting
        // for more is cut off.
        if let Poll::Ready(frame) = Pin::new(&mut self.body).poll_frame(cx) {
            return Poll::Ready(frame);
        }
        match self.deadline.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err(axum::Error::new(BodyDeadline(self.timeout))))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// Middleware: every request body must arrive within
/// `http.body_read_timeout` of the request's start.
pub async fn read_deadline(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let timeout = state.config().http.body_read_timeout;
    let request = request.map(|body| {
        if body.is_end_stream() {
            return body;
        }
        Body::new(DeadlineBody {
            body,
            timeout,
            deadline: Box::pin(tokio::time::sleep_until(Instant::now() + timeout)),
        })
    });
    next.run(request).await
}

/// Middleware of `/hooks/{source}`: the body is read up to the source's own
/// `max_body` (the API's for a source that is not configured, which the
/// handler answers 404).
pub async fn hook_body_cap(
    State(state): State<AppState>,
    Path(source): Path<String>,
    request: Request,
    next: Next,
) -> Response {
    let cap = state
        .config()
        .hooks
        .get(&source)
        .map_or(state.config().max_body, |hook| hook.max_body);
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > cap as u64) {
        return too_large(cap).into_response();
    }
    let request = request.map(|body| Body::new(http_body_util::Limited::new(body, cap)));
    next.run(request).await
}

pub fn too_large(cap: usize) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        format!("the request body is larger than the {cap} bytes this route accepts"),
    )
}

/// Whether `error` (or what caused it) is a [`BodyDeadline`].
pub fn is_deadline(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(error);
    while let Some(error) = current {
        if error.is::<BodyDeadline>() {
            return true;
        }
        current = error.source();
    }
    false
}
