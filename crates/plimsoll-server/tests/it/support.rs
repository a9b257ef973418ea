//! A router over a private Redis, and request helpers.

use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use plimsoll::Redis;
use plimsoll_server::config::{Overrides, ServerConfig};
use plimsoll_server::{AppState, app, test_state};
pub use plimsoll_test_support::{RedisCluster, RedisServer};
use serde_json::Value;
use tower::ServiceExt;

pub const TOKEN: &str = "test-token-0123456789";

/// A server's pieces for one test; the temp folders live as long as it.
pub struct TestServer {
    pub redis_server: RedisServer,
    pub state: AppState,
    pub router: Router,
    pub _dir: tempfile::TempDir,
}

/// A router configured by `toml` (plus the test token) over a fresh Redis.
pub async fn server(toml: &str) -> TestServer {
    let redis_server = RedisServer::start();
    server_on(redis_server, toml).await
}

pub async fn server_on(redis_server: RedisServer, toml: &str) -> TestServer {
    server_adjusted(redis_server, toml, |_| {}).await
}

/// Like [`server_on`], with a last change to the checked configuration
/// (settings a file cannot give, such as a manual clock).
pub async fn server_adjusted(
    redis_server: RedisServer,
    toml: &str,
    adjust: impl FnOnce(&mut ServerConfig),
) -> TestServer {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config_in(dir.path(), toml, &redis_server.url());
    adjust(&mut config);
    let redis = Redis::connect_url(&redis_server.url()).await.unwrap();
    let state = test_state(config, redis, TOKEN, &dir.path().join("spool"));
    let router = app(state.clone());
    TestServer {
        redis_server,
        state,
        router,
        _dir: dir,
    }
}

/// The configuration `toml` gives (plus the test token) with its data in
/// `dir`, over the Redis at `redis_url`.
fn config_in(dir: &std::path::Path, toml: &str, redis_url: &str) -> ServerConfig {
    let path = dir.join("plimsoll.toml");
    std::fs::write(&path, toml).unwrap();
    ServerConfig::load(
        Some(&path),
        &Overrides {
            tokens: vec![TOKEN.into()],
            data_dir: Some(dir.join("data").display().to_string()),
            redis_url: Some(redis_url.to_string()),
            ..Overrides::default()
        },
    )
    .unwrap()
}

/// A server's state over a running cluster (reached through its first node;
/// the client finds the others), and the temp folder it keeps its files in.
pub async fn state_on_cluster(cluster: &RedisCluster, toml: &str) -> (AppState, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let url = &cluster.urls()[0];
    let config = config_in(dir.path(), toml, url);
    let redis = Redis::connect_url(url).await.unwrap();
    assert!(redis.is_cluster());
    let state = test_state(config, redis, TOKEN, &dir.path().join("spool"));
    (state, dir)
}

/// A response: status, headers and body parsed as JSON (Null when empty or
/// not JSON).
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: axum::http::HeaderMap,
    pub json: Value,
    pub text: String,
}

impl TestServer {
    pub async fn send(&self, request: Request<Body>) -> Reply {
        let response = self.router.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Reply {
            status,
            headers,
            json,
            text,
        }
    }

    /// An authorized API call with an optional JSON body.
    pub async fn call(&self, method: &str, uri: &str, body: Option<Value>) -> Reply {
        let builder = Request::builder()
            .method(method)
            .uri(uri)
            .header("Authorization", format!("Bearer {TOKEN}"));
        let request = match body {
            Some(body) => builder
                .header("Content-Type", "application/json")
                .body(Body::from(body.to_string()))
                .unwrap(),
            None => builder.body(Body::empty()).unwrap(),
        };
        self.send(request).await
    }
}

/// Polls `condition` until it holds or `timeout` passes.
pub async fn eventually<F, Fut>(timeout: Duration, what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while !condition().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Asserts the JSON error shape and returns the code.
pub fn error_code(reply: &Reply) -> String {
    let code = reply.json["error"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("not a JSON error body ({}): {}", reply.status, reply.text));
    assert!(
        reply.json["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "error without a message: {}",
        reply.text
    );
    code.to_string()
}
