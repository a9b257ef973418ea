//! The API's one error type: a status, a stable machine-readable code, and a
//! message that says what was wrong, as a JSON body. Internal detail (Redis
//! replies, file paths) is logged, never sent.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use plimsoll::ErrorKind;
use serde::Serialize;
use utoipa::ToSchema;

/// The body of every error response.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// What went wrong.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable code, e.g. `invalid_input`, `not_found`, `redis_out_of_memory`.
    pub code: &'static str,
    /// What was wrong, for a human.
    pub message: String,
}

/// An error answered to an API caller.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_input", message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    /// Asks the caller to retry after `seconds`.
    pub fn retry_after(mut self, seconds: u64) -> Self {
        self.retry_after = Some(seconds);
        self
    }

    pub fn status(&self) -> StatusCode {
        self.status
    }

    pub fn code(&self) -> &'static str {
        self.code
    }

    pub fn message(&self) -> &str {
        &self.message
    }
}

impl From<plimsoll::Error> for ApiError {
    fn from(err: plimsoll::Error) -> Self {
        let (status, code, message) = match err.kind() {
            ErrorKind::InvalidInput => (
                StatusCode::BAD_REQUEST,
                "invalid_input",
                err.message().to_string(),
            ),
            ErrorKind::PayloadTooLarge => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                err.message().to_string(),
            ),
            ErrorKind::Serialization => (
                StatusCode::BAD_REQUEST,
                "invalid_payload",
                err.message().to_string(),
            ),
            ErrorKind::NotFound => (
                StatusCode::NOT_FOUND,
                "not_found",
                err.message().to_string(),
            ),
            ErrorKind::OutOfMemory => (
                StatusCode::INSUFFICIENT_STORAGE,
                "redis_out_of_memory",
                "Redis is out of memory and refused the write; nothing was written".to_string(),
            ),
            ErrorKind::Connection | ErrorKind::Timeout => (
                StatusCode::SERVICE_UNAVAILABLE,
                "redis_unavailable",
                "Redis cannot be reached right now; retry later".to_string(),
            ),
            // Redis answers but refuses for now: a slot migrating, a
            // failover. The cause (`slot migrating (TRYAGAIN)`) leads the
            // library's message; the rest stays in the log.
            ErrorKind::Unavailable => (
                StatusCode::SERVICE_UNAVAILABLE,
                "redis_unavailable",
                match plimsoll::connection::REFUSAL_CAUSES
                    .iter()
                    .find(|cause| err.message().starts_with(**cause))
                {
                    Some(cause) => {
                        format!(
                            "Redis refuses writes right now: {cause}; nothing was written; retry later"
                        )
                    }
                    None => "Redis cannot serve this right now; retry later".to_string(),
                },
            ),
            ErrorKind::NotReplicated => (
                StatusCode::SERVICE_UNAVAILABLE,
                "redis_not_replicated",
                "the job was written to the Redis primary, but its replicas did not confirm it \
                 in time, so a failover may lose it; retrying with the same idempotency key is safe"
                    .to_string(),
            ),
            ErrorKind::TooManyQueues => (
                StatusCode::CONFLICT,
                "too_many_queues",
                err.message().to_string(),
            ),
            ErrorKind::EvictingRedis => {
                tracing::error!(error = %err, "refusing to run a queue on a Redis that may evict keys");
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "redis_evicts",
                    "Redis may evict keys (its maxmemory-policy is not noeviction), so queues \
                     are refused there; the server log names the node and the policy"
                        .to_string(),
                )
            }
            ErrorKind::ShuttingDown => (
                StatusCode::SERVICE_UNAVAILABLE,
                "shutting_down",
                "the server is shutting down".to_string(),
            ),
            _ => {
                tracing::error!(error = %err, "internal error answering an API call");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "internal error; the server log has the details".to_string(),
                )
            }
        };
        let retry_after = (status == StatusCode::SERVICE_UNAVAILABLE).then_some(1);
        Self {
            status,
            code,
            message,
            retry_after,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code,
                message: self.message,
            },
        };
        let mut response = (self.status, Json(body)).into_response();
        if let Some(seconds) = self.retry_after {
            response.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from_str(&seconds.to_string()).expect("digits are a valid header"),
            );
        }
        response
    }
}

/// A `Result` whose error is an [`ApiError`].
pub type ApiResult<T> = Result<T, ApiError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redis_failures_map_to_stable_codes_without_internals() {
        let oom = ApiError::from(plimsoll::Error::new(
            ErrorKind::OutOfMemory,
            "OOM command not allowed when used memory > 'maxmemory'",
        ));
        assert_eq!(oom.status(), StatusCode::INSUFFICIENT_STORAGE);
        assert_eq!(oom.code(), "redis_out_of_memory");
        assert!(!oom.message.contains("maxmemory'"));

        let down = ApiError::from(plimsoll::Error::new(
            ErrorKind::Connection,
            "refused 10.0.0.3",
        ));
        assert_eq!(down.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(
            !down.message.contains("10.0.0.3"),
            "no internal detail leaks"
        );

        let migrating = ApiError::from(plimsoll::Error::new(
            ErrorKind::Unavailable,
            "slot migrating (TRYAGAIN): Redis refused the batch for 5.0 s (TRYAGAIN Multiple keys)",
        ));
        assert_eq!(migrating.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(migrating.code(), "redis_unavailable");
        assert!(
            migrating.message.contains("slot migrating (TRYAGAIN)"),
            "{migrating:?}"
        );
        assert!(
            !migrating.message.contains("cannot be reached"),
            "{migrating:?}"
        );
        let moved = ApiError::from(plimsoll::Error::new(
            ErrorKind::Unavailable,
            "MOVED 3999 10.0.0.3:7001",
        ));
        assert!(!moved.message.contains("10.0.0.3"), "{moved:?}");

        let full = ApiError::from(plimsoll::Error::new(
            ErrorKind::TooManyQueues,
            "the registry holds 1000 queues, its cap",
        ));
        assert_eq!(
            (full.status(), full.code()),
            (StatusCode::CONFLICT, "too_many_queues")
        );
        let unconfirmed = ApiError::from(plimsoll::Error::new(
            ErrorKind::NotReplicated,
            "job 1000001: written to the primary, but 0 of the 1 replica(s)",
        ));
        assert_eq!(
            (unconfirmed.status(), unconfirmed.code()),
            (StatusCode::SERVICE_UNAVAILABLE, "redis_not_replicated")
        );

        let internal = ApiError::from(plimsoll::Error::new(
            ErrorKind::Corrupt,
            "record v9 at key x",
        ));
        assert_eq!(internal.code(), "internal");
        assert!(!internal.message.contains("key x"));
    }
}
