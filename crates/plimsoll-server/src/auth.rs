//! Bearer-token authentication for the API and the dashboard.
//!
//! API callers send `Authorization: Bearer <token>`. A browser cannot, so
//! the dashboard's login page (`/login?token=…`) sets the same token as an
//! HttpOnly, SameSite=Strict cookie. Tokens are compared in constant time.

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};

use crate::error::ApiError;
use crate::state::AppState;

/// The dashboard's cookie.
pub const COOKIE: &str = "plimsoll_token";

/// Whether `candidate` is one of `tokens`, without leaking which prefix
/// matched through timing.
pub fn token_matches(tokens: &[String], candidate: &str) -> bool {
    let mut found = false;
    for token in tokens {
        found |= constant_time_eq(token.as_bytes(), candidate.as_bytes());
    }
    found
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The token a request carries, from its Authorization header or cookie.
pub fn request_token(request: &Request) -> Option<String> {
    let headers = request.headers();
    if let Some(value) = headers.get(header::AUTHORIZATION)
        && let Ok(value) = value.to_str()
        && let Some(token) = value.strip_prefix("Bearer ")
    {
        return Some(token.trim().to_string());
    }
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.to_string())
}

/// Middleware for `/v1`: 401 with a JSON error without a valid token.
pub async fn require_token(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    match request_token(&request) {
        Some(token) if token_matches(state.tokens(), &token) => next.run(request).await,
        Some(_) => ApiError::unauthorized("the bearer token is not valid").into_response(),
        None => ApiError::unauthorized("send Authorization: Bearer <token>").into_response(),
    }
}

/// Middleware for dashboard pages: without a valid token, to the login page.
pub async fn require_login(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    match request_token(&request) {
        Some(token) if token_matches(state.tokens(), &token) => next.run(request).await,
        _ => Redirect::to("/login").into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_configured_tokens_match() {
        let tokens = vec![
            "0123456789abcdef".to_string(),
            "fedcba9876543210".to_string(),
        ];
        assert!(token_matches(&tokens, "fedcba9876543210"));
        assert!(!token_matches(&tokens, "0123456789abcde"));
        assert!(!token_matches(&tokens, ""));
        assert!(!token_matches(&[], "anything"));
    }

    #[test]
    fn the_token_comes_from_the_header_or_the_cookie() {
        let request = Request::builder()
            .header("Authorization", "Bearer abc")
            .body(axum::body::Body::empty())
            .unwrap();
        assert_eq!(request_token(&request).as_deref(), Some("abc"));
        let request = Request::builder()
            .header("Cookie", "a=b; plimsoll_token=xyz")
            .body(axum::body::Body::empty())
            .unwrap();
        assert_eq!(request_token(&request).as_deref(), Some("xyz"));
    }
}
