//! `plimsoll serve`: one process that gives any service, in any language,
//! Plimsoll's queue over HTTP, takes in webhooks without ever losing one,
//! delivers jobs to HTTP targets, and shows an operator what Redis holds.
//!
//! - [`app`] builds the router (`/v1` API, `/hooks/{source}`, dashboard,
//!   health), so tests call it in-process;
//! - [`run`] is the whole server: Redis (configured, local, or embedded),
//!   the spool and its replayer, push workers, the sampler, the API and the
//!   metrics listener, and the shutdown order below.
//!
//! # Shutdown order (SIGTERM or Ctrl-C)
//!
//! 1. Mark the server as stopping: `/readyz` answers 503, new webhooks get
//!    503 with `Retry-After` (they are not accepted, so nothing is lost).
//! 2. Stop accepting connections and let in-flight requests finish, up to
//!    `shutdown_grace`.
//! 3. Stop the push workers (each finishes or hands back its deliveries).
//! 4. Stop the replayer after its current batch, then close the spool (its
//!    writer syncs what it holds).
//! 5. Stop the sampler, the memory guard and the metrics listener.
//! 6. Stop the embedded Redis, if this process started it (SIGTERM, so it
//!    writes its append-only file).

pub mod api;
pub mod auth;
pub mod config;
pub mod dashboard;
pub mod embedded;
pub mod error;
pub mod extract;
pub mod guard_metrics;
pub mod health;
pub mod intake;
pub mod metrics;
pub mod push;
pub mod rates;
pub mod sampler;
pub mod state;

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use plimsoll::{Redis, RedisConfig};
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

use crate::config::ServerConfig;
use crate::embedded::{EmbeddedError, LocalRedis, LocalRedisOptions};
use crate::error::ApiError;
use crate::intake::spool::Spool;
pub use crate::state::AppState;

/// The router: API, webhook intake, dashboard, health.
pub fn app(state: AppState) -> Router {
    let api = Router::new()
        .route("/queues", get(api::list_queues))
        .route(
            "/queues/{queue}",
            get(api::get_queue).delete(api::delete_queue),
        )
        .route(
            "/queues/{queue}/jobs",
            post(api::enqueue).get(api::list_jobs),
        )
        .route("/queues/{queue}/jobs/bulk", post(api::enqueue_bulk))
        .route(
            "/queues/{queue}/jobs/{id}",
            get(api::get_job).delete(api::cancel_job),
        )
        .route("/queues/{queue}/jobs/{id}/retry", post(api::retry_job))
        .route("/queues/{queue}/pause", post(api::pause_queue))
        .route("/queues/{queue}/resume", post(api::resume_queue))
        .route("/queues/{queue}/dead", get(api::list_dead))
        .route("/queues/{queue}/dead/retry", post(api::retry_dead))
        .route("/queues/{queue}/dead/purge", post(api::purge_dead))
        .route("/spool", get(api::spool_status))
        .route("/guard", get(api::guard_status))
        .route("/guard/alerts", get(api::guard_alerts))
        .route("/guard/memory", get(api::guard_memory))
        .route(
            "/cache/{key}",
            get(api::cache_get)
                .put(api::cache_put)
                .delete(api::cache_delete),
        )
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth::require_token,
        ));
    let hooks_limit = state
        .config()
        .hooks
        .values()
        .map(|h| h.max_body)
        .max()
        .unwrap_or(0)
        .max(state.config().max_body);
    Router::new()
        .route("/v1/openapi.json", get(api::openapi))
        .nest("/v1", api)
        .route(
            "/hooks/{source}",
            post(intake::receive).layer(DefaultBodyLimit::max(hooks_limit)),
        )
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .merge(dashboard::routes(state.clone()))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(state.config().max_body))
        .layer(middleware::from_fn_with_state(state.clone(), track))
        .with_state(state)
}

async fn not_found() -> ApiError {
    ApiError::not_found("no such route; the API is described at /v1/openapi.json")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this route does not take that method",
    )
}

/// Counts and times every request by route.
async fn track(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().as_str().to_string();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "(unmatched)".into());
    let response = next.run(request).await;
    state.metrics().http(
        &route,
        &method,
        response.status().as_u16(),
        started.elapsed().as_secs_f64(),
    );
    response
}

/// Why the server could not start or run.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error("Redis: {0}")]
    Redis(#[from] plimsoll::Error),
    #[error("embedded Redis: {0}")]
    Embedded(#[from] EmbeddedError),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> ServeError {
    let what = what.into();
    move |source| ServeError::Io { what, source }
}

/// What `run` tells its caller once listening, for the start-up banner.
#[derive(Debug, Clone)]
pub struct Started {
    pub api: std::net::SocketAddr,
    pub metrics: Option<std::net::SocketAddr>,
    /// Where Redis is, and whether this process started it.
    pub redis: String,
    pub redis_embedded: bool,
    /// The token, when this process generated it (to show once).
    pub generated_token: Option<String>,
    /// One of the accepted tokens, for the dashboard's login link.
    pub token: String,
}

/// Runs the server until `shutdown` resolves, then stops in the documented
/// order. `on_start` is called once listening.
pub async fn run(
    config: ServerConfig,
    shutdown: impl Future<Output = ()> + Send,
    on_start: impl FnOnce(&Started),
) -> Result<(), ServeError> {
    std::fs::create_dir_all(&config.data_dir).map_err(io(format!(
        "creating the data folder {}",
        config.data_dir.display()
    )))?;

    // Redis: configured, or a local one that answers, or our own.
    let mut embedded = None;
    let (redis_url, redis_embedded) = match &config.redis_url {
        Some(url) => (url.clone(), false),
        None if embedded::ping(6379) => ("redis://127.0.0.1:6379/".to_string(), false),
        None => {
            let local = tokio::task::block_in_place(|| {
                LocalRedis::start(&LocalRedisOptions {
                    dir: Some(config.data_dir.join("redis")),
                    maxmemory: config.embedded_maxmemory,
                    persist: true,
                    port: None,
                })
            })?;
            let url = local.url();
            embedded = Some(local);
            (url, true)
        }
    };
    let redis = Redis::connect(RedisConfig::new(&redis_url)?).await?;

    let (tokens, generated_token) = match config.tokens.is_empty() {
        false => (config.tokens.clone(), None),
        true => {
            let (token, fresh) = load_or_generate_token(&config.data_dir)?;
            (vec![token.clone()], fresh.then_some(token))
        }
    };
    let spool = Spool::open(&config.data_dir.join("spool"), config.spool_max_bytes)
        .map_err(io("opening the webhook spool"))?;
    let state = AppState::new(config.clone(), redis, tokens.clone(), spool)?;

    let services = CancellationToken::new();
    let guard_tasks = match state.guard() {
        Some(guard) => guard.start(services.clone()),
        None => Vec::new(),
    };
    let replayer = tokio::spawn(intake::replay::run(state.clone(), services.clone()));
    let push_workers = Arc::new(Mutex::new(Vec::new()));
    for (queue, settings) in &config.queues {
        if let Some(push) = &settings.push {
            let handle = push::start(&state, queue.as_str(), push.clone())?;
            push_workers
                .lock()
                .await
                .push((queue.as_str().to_string(), handle));
        }
    }
    let sampler = tokio::spawn(sampler::run(
        state.clone(),
        push_workers.clone(),
        services.clone(),
    ));

    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(io(format!("listening on {}", config.listen)))?;
    let api_addr = listener
        .local_addr()
        .map_err(io("reading the bound address"))?;
    let metrics_task = match config.metrics_listen {
        None => None,
        Some(addr) => {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(io(format!("listening for metrics on {addr}")))?;
            let bound = listener
                .local_addr()
                .map_err(io("reading the bound address"))?;
            let router = Router::new()
                .route("/metrics", get(serve_metrics))
                .with_state(state.clone());
            let stop = services.clone();
            Some((
                bound,
                tokio::spawn(async move {
                    let _ = axum::serve(listener, router)
                        .with_graceful_shutdown(async move { stop.cancelled().await })
                        .await;
                }),
            ))
        }
    };
    on_start(&Started {
        api: api_addr,
        metrics: metrics_task.as_ref().map(|(a, _)| *a),
        redis: RedisConfig::new(&redis_url)?.redacted_urls().join(","),
        redis_embedded,
        generated_token,
        token: tokens[0].clone(),
    });

    // 1-2: stop taking requests, finish those in flight.
    let stopping = CancellationToken::new();
    let grace = config.shutdown_grace;
    let server_state = state.clone();
    let server = axum::serve(listener, app(state.clone())).with_graceful_shutdown({
        let stopping = stopping.clone();
        async move { stopping.cancelled().await }
    });
    let server = tokio::spawn(server.into_future());
    shutdown.await;
    tracing::info!("shutting down");
    server_state.begin_shutdown();
    state.metrics().stopping();
    stopping.cancel();
    if tokio::time::timeout(grace, server).await.is_err() {
        tracing::warn!(
            ?grace,
            "requests still running after the grace period; dropping them"
        );
    }
    // 3: push workers.
    for (queue, worker) in push_workers.lock().await.drain(..) {
        if let Err(err) = worker.shutdown().await {
            tracing::warn!(queue, error = %err, "push worker stopped with jobs left leased; they run again after their lease");
        }
    }
    // 4: replayer, then the spool.
    services.cancel();
    let _ = replayer.await;
    state.spool().close();
    // 5: sampler, guard and metrics.
    let _ = sampler.await;
    for task in guard_tasks {
        let _ = task.await;
    }
    if let Some((_, task)) = metrics_task {
        let _ = task.await;
    }
    // 6: the embedded Redis.
    if let Some(mut local) = embedded {
        tokio::task::block_in_place(|| local.stop());
    }
    tracing::info!("stopped");
    Ok(())
}

/// The server's metrics, then the guard's (rendered by
/// [`guard_metrics`], the same text `plimsoll guard` serves), in the
/// classic Prometheus text format.
pub fn metrics_text(state: &AppState) -> String {
    let mut text = state.metrics().render();
    if let Some(guard) = state.guard() {
        text.push_str(&guard_metrics::render(&guard.stats()));
    }
    text
}

async fn serve_metrics(State(state): State<AppState>) -> impl IntoResponse {
    let text = metrics_text(&state);
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
}

/// The token in `<data_dir>/token`, made (random, 32 hex characters, file mode
/// 0600) when there is none. Returns whether it was just made.
fn load_or_generate_token(dir: &Path) -> Result<(String, bool), ServeError> {
    let path = dir.join("token");
    if let Ok(text) = std::fs::read_to_string(&path) {
        let token = text.trim().to_string();
        if token.len() >= 16 {
            return Ok((token, false));
        }
    }
    use rand::RngExt;
    let bytes: [u8; 16] = rand::rng().random();
    let token = hex::encode(bytes);
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .mode(0o600)
            .open(&path)
            .map_err(io(format!("writing {}", path.display())))?;
        file.write_all(token.as_bytes())
            .map_err(io(format!("writing {}", path.display())))?;
    }
    Ok((token, true))
}

/// Ready-made pieces for tests: a state over `redis` with `config`; its
/// guard (if on) is made but not started.
pub fn test_state(config: ServerConfig, redis: Redis, token: &str, spool_dir: &Path) -> AppState {
    let spool =
        Spool::open(spool_dir, config.spool_max_bytes).expect("open a spool in a test folder");
    AppState::new(config, redis, vec![token.to_string()], spool)
        .expect("a state from checked settings")
}
