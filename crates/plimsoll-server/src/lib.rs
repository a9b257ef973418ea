//! `plimsoll serve`: one process that gives any service, in any language,
//! Plimsoll's queue over HTTP, takes in webhooks without ever losing one,
//! delivers jobs to HTTP targets, and shows an operator what Redis holds.
//!
//! - [`app`] builds the router (`/v1` API, `/hooks/{source}`, dashboard,
//!   health), so tests call it in-process;
//! - [`run`] is the whole server: Redis (configured, local, or embedded,
//!   refused when it may evict keys — [`check_redis`]), the spool and its
//!   replayer, push workers, the maintenance services of every queue it
//!   knows ([`maintenance`]), the sampler, the API and the metrics listener
//!   (each behind [`listener::serve`]: header read timeout, connection
//!   limit), and the shutdown order below.
//!
//! # Starting while Redis is down
//!
//! A configured Redis that does not answer does not stop the server: a
//! deploy during a Redis outage is exactly when the spool is needed. `run`
//! locks the data folder ([`lock`]), makes a Redis handle that connects in
//! the background ([`Redis::connect_lazy`]) and waits for it up to
//! [`REDIS_START_WAIT`]. Past that it serves anyway: webhooks go to the
//! spool, the API answers `redis_unavailable`, `/readyz` names what is
//! degraded, and the push workers start once Redis answers (the replayer,
//! the sampler and the guard retry on their own). A Redis that answers but
//! refuses the connection (a wrong password) still fails the start: that is
//! a mistake to fix, not an outage to ride out.
//!
//! # Shutdown order (SIGTERM or Ctrl-C)
//!
//! 1. Mark the server as stopping: `/readyz` answers 503, new webhooks get
//!    503 with `Retry-After` (they are not accepted, so nothing is lost).
//! 2. Stop accepting connections (the listener closes, so new ones are
//!    refused), close those waiting for a request, and let in-flight
//!    requests finish, up to `shutdown_grace` (see [`listener`]).
//! 3. Stop the push workers (each finishes or hands back its deliveries),
//!    then the maintenance services (each finishes its round).
//! 4. Stop the replayer after its current batch, then close the spool (its
//!    writer syncs what it holds).
//! 5. Stop the sampler, the memory guard and the metrics listener.
//! 6. Stop the embedded Redis, if this process started it (SIGTERM, so it
//!    writes its append-only file).

pub mod api;
pub mod auth;
pub mod body;
pub mod config;
pub mod dashboard;
pub mod embedded;
pub mod error;
pub mod exposition;
pub mod extract;
pub mod guard_metrics;
pub mod health;
pub mod intake;
pub mod listener;
pub mod lock;
pub mod maintenance;
pub mod metrics;
pub mod push;
pub mod rates;
pub mod redis_memory;
pub mod sampler;
pub mod signing;
pub mod state;

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

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
    Router::new()
        .route("/v1/openapi.json", get(api::openapi::openapi))
        .nest("/v1", api::routes(state.clone()))
        .route(
            "/hooks/{source}",
            // Each source's own cap, applied while the body is read.
            post(intake::receive)
                .route_layer(middleware::from_fn_with_state(
                    state.clone(),
                    body::hook_body_cap,
                ))
                .route_layer(DefaultBodyLimit::disable()),
        )
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .merge(dashboard::routes(state.clone()))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(state.config().max_body))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            body::read_deadline,
        ))
        .layer(middleware::from_fn(auth::nosniff))
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

/// Counts and times every request by route. Labels come from fixed sets
/// only — the route as matched (not the path sent), the method among the
/// standard ones — so that no caller can add series to `/metrics`.
async fn track(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = metrics::method_label(request.method());
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| metrics::UNMATCHED_ROUTE.into());
    let response = next.run(request).await;
    state.metrics().http(
        &route,
        method,
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
    #[error(transparent)]
    DataDir(#[from] lock::LockError),
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
    /// Whether Redis answered by the time the server started listening
    /// (when not, webhooks are spooled and the rest joins when it answers).
    pub redis_connected: bool,
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
    // Held until this function returns.
    let _data_dir_lock = lock::lock(&config.data_dir)?;

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
    let redis = Redis::connect_lazy(RedisConfig::new(&redis_url)?)?;
    let redis_connected = tokio::time::timeout(REDIS_START_WAIT, redis.connected())
        .await
        .is_ok();
    if let Some(err) = redis.connect_error()
        && !err.is_transient()
    {
        // Redis answered and refused us (a wrong password, a wrong
        // database): a mistake to fix, not an outage to ride out.
        return Err(err.into());
    }
    if !redis_connected {
        tracing::warn!(redis = %RedisConfig::new(&redis_url)?.redacted_urls().join(","),
            wait = ?REDIS_START_WAIT,
            "Redis does not answer; serving without it: webhooks are spooled, the rest joins when it answers");
    }
    // A Redis that is not reachable yet is checked by each queue on its
    // first use.
    let redis_warnings = if redis_connected {
        check_redis(&config, &redis).await?
    } else {
        Vec::new()
    };

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
    state.set_redis_warnings(redis_warnings);

    let services = CancellationToken::new();
    let guard_tasks = match state.guard() {
        Some(guard) => guard.start(services.clone()),
        None => Vec::new(),
    };
    let replayer = plimsoll::service::spawn(
        intake::replay::Replayer::new(state.clone()),
        services.clone(),
    );
    let push_workers = Arc::new(Mutex::new(Vec::new()));
    let push_start = CancellationToken::new();
    let push_starter = if redis_connected {
        // As before: a push target that cannot start fails the start.
        for (queue, handle) in start_push_workers(&state)? {
            push_workers.lock().await.push((queue, handle));
        }
        None
    } else {
        let (state, workers, stop) = (state.clone(), push_workers.clone(), push_start.clone());
        Some(tokio::spawn(async move {
            tokio::select! {
                () = stop.cancelled() => return,
                () = state.redis().connected() => {}
            }
            match start_push_workers(&state) {
                Ok(started) => workers.lock().await.extend(started),
                Err(err) => tracing::error!(error = %err, "cannot start push delivery"),
            }
        }))
    };
    // Queues with a push target get their services from their push worker
    // (which may start only once Redis answers); maintenance runs the rest.
    let push_queues = config
        .queues
        .iter()
        .filter(|(_, settings)| settings.push.is_some())
        .map(|(queue, _)| queue.as_str().to_string())
        .collect();
    let stop_maintenance = CancellationToken::new();
    let maintenance = tokio::spawn(maintenance::run(
        state.clone(),
        push_queues,
        stop_maintenance.clone(),
        maintenance::REFRESH_INTERVAL,
    ));
    let sampler = plimsoll::service::spawn(
        sampler::Sampler::new(state.clone(), push_workers.clone()),
        services.clone(),
    );

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
            let limits = listener::Limits {
                header_read_timeout: config.http.header_read_timeout,
                max_connections: listener::METRICS_MAX_CONNECTIONS,
            };
            Some((
                bound,
                tokio::spawn(listener::serve(
                    listener,
                    router,
                    limits,
                    listener::ConnectionMetrics::default(),
                    services.clone(),
                )),
            ))
        }
    };
    on_start(&Started {
        api: api_addr,
        metrics: metrics_task.as_ref().map(|(a, _)| *a),
        redis: RedisConfig::new(&redis_url)?.redacted_urls().join(","),
        redis_embedded,
        redis_connected,
        generated_token,
        token: tokens[0].clone(),
    });

    // 1-2: stop taking requests, finish those in flight.
    let stopping = CancellationToken::new();
    let grace = config.shutdown_grace;
    let server_state = state.clone();
    let server = tokio::spawn(listener::serve(
        listener,
        app(state.clone()),
        listener::Limits {
            header_read_timeout: config.http.header_read_timeout,
            max_connections: config.http.max_connections,
        },
        state.metrics().connections(config.http.max_connections),
        stopping.clone(),
    ));
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
    // 3: push workers (none start from here on).
    push_start.cancel();
    if let Some(starter) = push_starter {
        let _ = starter.await;
    }
    for (queue, worker) in push_workers.lock().await.drain(..) {
        if let Err(err) = worker.shutdown().await {
            tracing::warn!(queue, error = %err, "push worker stopped with jobs left leased; they run again after their lease");
        }
    }
    stop_maintenance.cancel();
    let _ = maintenance.await;
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

/// How long `run` waits for a configured Redis before it serves without it.
/// Long enough for a Redis that is up to answer, so that a normal start
/// begins with everything connected.
pub const REDIS_START_WAIT: Duration = Duration::from_secs(2);

/// Starts the push worker of every queue with a push target.
fn start_push_workers(
    state: &AppState,
) -> Result<Vec<(String, plimsoll::WorkerHandle)>, plimsoll::Error> {
    let mut started = Vec::new();
    for (queue, settings) in &state.config().queues {
        if let Some(push) = &settings.push {
            started.push((
                queue.as_str().to_string(),
                push::start(state, queue.as_str(), push.clone())?,
            ));
        }
    }
    Ok(started)
}

/// Refuses a Redis that may evict keys (unless `redis.allow_eviction`), and
/// returns what `/readyz` should say about one that does not fsync every
/// write while webhooks come in (an acknowledged webhook is only as durable
/// as that). Every primary of a cluster is asked. A Redis that cannot be
/// asked now is asked again by each queue on its first use.
pub async fn check_redis(config: &ServerConfig, redis: &Redis) -> Result<Vec<String>, ServeError> {
    let policy = match plimsoll::redis_policy::RedisPolicy::inspect(redis).await {
        Ok(policy) => policy,
        Err(err) => {
            tracing::warn!(error = %err, "cannot read Redis' eviction and persistence settings now; each queue asks again on first use");
            return Ok(Vec::new());
        }
    };
    if config.allow_eviction {
        if let Err(err) = policy.refuse_eviction() {
            tracing::warn!(error = %err, "redis.allow_eviction is set: running queues on a Redis that may evict keys");
        }
    } else {
        policy.refuse_eviction()?;
    }
    // A durability this Redis cannot give fails every enqueue of its queue
    // (and every webhook to it, which is answered 4xx): refused here,
    // naming the setting.
    let durabilities = std::iter::once(("redis.durability".to_string(), config.durability)).chain(
        config.queues.iter().filter_map(|(name, q)| {
            q.durability
                .map(|d| (format!("queues.{}.durability", name.as_str()), d))
        }),
    );
    for (setting, durability) in durabilities {
        if let Err(err) = plimsoll::redis_policy::refuse_durability(redis, durability).await {
            if err.kind() == plimsoll::ErrorKind::InvalidInput {
                return Err(ServeError::Config(config::ConfigError {
                    key: setting,
                    origin: "for this Redis".into(),
                    message: format!("{durability}: {}", err.message()),
                }));
            }
            tracing::warn!(setting, error = %err, "cannot check the durability setting now; each queue asks on its first enqueue");
        }
    }
    if config.hooks.is_empty() {
        return Ok(Vec::new());
    }
    let warnings = policy.warnings();
    for warning in &warnings {
        tracing::warn!(
            warning,
            "webhooks are acknowledged before Redis has them on disk"
        );
    }
    Ok(warnings)
}

/// `/metrics`: the server's metrics and the guard's (its collector,
/// [`guard_metrics::GuardCollector`], sits in the server's registry), in the
/// classic Prometheus text format.
pub fn metrics_text(state: &AppState) -> String {
    state.metrics().render()
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
