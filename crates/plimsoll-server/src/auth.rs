//! Bearer-token authentication for the API and the dashboard, and the
//! checks that keep another site from acting with the dashboard's cookie.
//!
//! API callers send `Authorization: Bearer <token>` (the scheme in any
//! case, as RFC 9110 says). A browser cannot, so the dashboard's login page
//! (`/login?token=…`) sets the same token as an HttpOnly, SameSite=Strict
//! cookie. Tokens are compared in constant time.
//!
//! SameSite=Strict keeps the cookie off requests from other *sites*, but a
//! page on another port of the same host, or on a sibling subdomain, is the
//! same site: it could post a form to `/v1/queues/x/pause` and the browser
//! would send the cookie. So every state-changing request authenticated by
//! the cookie must also come from the server's own origin: its `Origin`
//! header (or, without one, its `Referer`) must name the Host it was sent to
//! or the configured `http.public_url`; with neither header it is refused.
//! Requests with a bearer token are not checked: a browser never adds one on
//! its own, so they cannot be forged this way.

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
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

/// Where a request's token came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenFrom {
    /// `Authorization: Bearer …`: set by a program, not by a browser.
    Header,
    /// The dashboard's cookie: a browser adds it by itself.
    Cookie,
}

/// The token a request carries, from its Authorization header or cookie.
pub fn request_token(request: &Request) -> Option<String> {
    token_and_source(request.headers()).map(|(token, _)| token)
}

fn token_and_source(headers: &HeaderMap) -> Option<(String, TokenFrom)> {
    if let Some(value) = headers.get(header::AUTHORIZATION)
        && let Ok(value) = value.to_str()
        && let Some(token) = bearer(value)
    {
        return Some((token.to_string(), TokenFrom::Header));
    }
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| (value.to_string(), TokenFrom::Cookie))
}

/// The token of an `Authorization` value whose scheme is `Bearer`, in any
/// case.
fn bearer(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim_start().split_once(char::is_whitespace)?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// Middleware for `/v1`: 401 with a JSON error without a valid token; 403
/// for a state-changing request made with the cookie from another origin.
pub async fn require_token(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    match token_and_source(request.headers()) {
        Some((token, from)) if token_matches(state.tokens(), &token) => {
            if from == TokenFrom::Cookie
                && changes_state(request.method())
                && let Err(why) = same_origin(
                    request.headers(),
                    state.config().http.public_origin.as_deref(),
                )
            {
                tracing::warn!(method = %request.method(), path = request.uri().path(), why, "refused a cross-origin request made with the dashboard's cookie");
                return cross_origin(why).into_response();
            }
            next.run(request).await
        }
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

/// Whether a request with `method` may change something.
pub fn changes_state(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// The 403 of a request from another origin.
pub fn cross_origin(why: &str) -> ApiError {
    ApiError::new(
        StatusCode::FORBIDDEN,
        "cross_origin",
        format!(
            "{why}: requests made with the dashboard's login must come from its own pages \
             (behind a proxy that rewrites Host, set http.public_url)"
        ),
    )
}

/// Checks that a request comes from a page of this server: `Origin` (or,
/// without it, the origin of `Referer`) must be `public_origin` or name the
/// Host the request was sent to. Says why not.
pub fn same_origin(headers: &HeaderMap, public_origin: Option<&str>) -> Result<(), &'static str> {
    let text = |name| {
        headers
            .get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
    };
    let origin = match (text(header::ORIGIN), text(header::REFERER)) {
        (Some(origin), _) => origin_of(origin).ok_or("the Origin header is not an origin")?,
        (None, Some(referer)) => origin_of(referer).ok_or("the Referer header is not a URL")?,
        (None, None) => return Err("the request says neither its Origin nor its Referer"),
    };
    if public_origin.is_some_and(|p| p == origin) {
        return Ok(());
    }
    let host = text(header::HOST).ok_or("the request has no Host header")?;
    let (scheme, authority) = origin
        .split_once("://")
        .ok_or("the Origin header is not an origin")?;
    if without_default_port(scheme, &host.to_ascii_lowercase()) == authority {
        Ok(())
    } else {
        Err("the request comes from another origin")
    }
}

/// `scheme://host[:port]` of a URL, lower-case, the scheme's default port
/// left out (the form `Url::origin` serializes); `None` for `null` or a URL
/// without a host.
fn origin_of(url: &str) -> Option<String> {
    let url = reqwest::Url::parse(url).ok()?;
    url.host_str()?;
    let origin = url.origin();
    origin.is_tuple().then(|| origin.ascii_serialization())
}

fn without_default_port<'a>(scheme: &str, host: &'a str) -> &'a str {
    let default = match scheme {
        "http" => ":80",
        "https" => ":443",
        _ => return host,
    };
    host.strip_suffix(default).unwrap_or(host)
}

/// `Content-Security-Policy` of the dashboard's pages: its own scripts,
/// styles and API only, and never inside a frame (clickjacking).
pub const DASHBOARD_CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
    img-src 'self' data:; connect-src 'self'; form-action 'self'; base-uri 'none'; \
    object-src 'none'; frame-ancestors 'none'";

/// Middleware for every dashboard response: the CSP above, no framing, no
/// content sniffing, no referrer to other sites.
pub async fn dashboard_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(DASHBOARD_CSP),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    response
}

/// Middleware for every response: `X-Content-Type-Options: nosniff`, so a
/// browser never runs a JSON body (which may echo a caller's text) as HTML
/// or script.
pub async fn nosniff(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    response.headers_mut().insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
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

    /// `Authorization: bearer …` was answered 401: the scheme was matched
    /// case-sensitively, though RFC 9110 makes it case-insensitive.
    #[test]
    fn the_bearer_scheme_is_case_insensitive() {
        for value in ["Bearer abc", "bearer abc", "BEARER abc", "BeArEr   abc "] {
            assert_eq!(bearer(value), Some("abc"), "{value:?}");
        }
        for value in ["Basic abc", "Bearer", "Bearer ", "Bearerabc", "abc"] {
            assert_eq!(bearer(value), None, "{value:?}");
        }
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, value.parse().unwrap());
        }
        map
    }

    #[test]
    fn only_the_servers_own_origin_passes() {
        let ok = |pairs: &[(&'static str, &str)], public| same_origin(&headers(pairs), public);
        let host = ("host", "127.0.0.1:8080");
        assert!(ok(&[host, ("origin", "http://127.0.0.1:8080")], None).is_ok());
        assert!(ok(&[host, ("referer", "http://127.0.0.1:8080/queues/a")], None).is_ok());
        assert!(
            ok(
                &[("host", "Example.com"), ("origin", "https://example.com")],
                None
            )
            .is_ok()
        );
        assert!(
            ok(
                &[
                    ("host", "example.com:443"),
                    ("origin", "https://example.com")
                ],
                None
            )
            .is_ok()
        );
        for bad in [
            vec![host, ("origin", "http://127.0.0.1:3000")],
            vec![host, ("origin", "http://evil.example")],
            vec![host, ("origin", "null")],
            vec![host, ("referer", "http://evil.example/page")],
            vec![host],
            vec![("origin", "http://127.0.0.1:8080")],
        ] {
            assert!(ok(&bad, None).is_err(), "{bad:?}");
        }
        let public = Some("https://plimsoll.example.com");
        let proxied = [
            ("host", "10.0.0.5:8080"),
            ("origin", "https://plimsoll.example.com"),
        ];
        assert!(ok(&proxied, None).is_err());
        assert!(ok(&proxied, public).is_ok());
    }
}
