//! The JSON API under `/v1`, described by the OpenAPI document at
//! `/v1/openapi.json` (generated from these handlers and types, see
//! [`openapi`]).
//!
//! The API's types are its own, not the library's, so that the wire
//! contract changes only on purpose. One module per kind of resource; what
//! several of them need (finding a queue, reading a job id, a count as the
//! answer) is here.

pub mod cache;
pub mod dead;
pub mod guard;
pub mod jobs;
pub mod openapi;
pub mod queues;
pub mod spool;

use axum::Router;
use axum::middleware;
use axum::routing::{get, post};
use plimsoll::{JobId, Queue};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::auth;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

/// The routes under `/v1`, each behind the bearer token. The OpenAPI
/// document ([`openapi::openapi`]) is served without one, outside them.
pub fn routes(state: AppState) -> Router<AppState> {
    Router::new()
        .route("/queues", get(queues::list_queues))
        .route(
            "/queues/{queue}",
            get(queues::get_queue).delete(queues::delete_queue),
        )
        .route(
            "/queues/{queue}/jobs",
            post(jobs::enqueue).get(jobs::list_jobs),
        )
        .route("/queues/{queue}/jobs/bulk", post(jobs::enqueue_bulk))
        .route(
            "/queues/{queue}/jobs/{id}",
            get(jobs::get_job).delete(jobs::cancel_job),
        )
        .route("/queues/{queue}/jobs/{id}/retry", post(jobs::retry_job))
        .route("/queues/{queue}/pause", post(queues::pause_queue))
        .route("/queues/{queue}/resume", post(queues::resume_queue))
        .route("/queues/{queue}/dead", get(dead::list_dead))
        .route("/queues/{queue}/dead/retry", post(dead::retry_dead))
        .route("/queues/{queue}/dead/purge", post(dead::purge_dead))
        .route("/spool", get(spool::spool_status))
        .route("/spool/quarantine", get(spool::list_quarantine))
        .route("/spool/quarantine/retry", post(spool::retry_quarantine))
        .route("/spool/quarantine/purge", post(spool::purge_quarantine))
        .route("/guard", get(guard::guard_status))
        .route("/guard/alerts", get(guard::guard_alerts))
        .route("/guard/memory", get(guard::guard_memory))
        .route(
            "/cache/{key}",
            get(cache::cache_get)
                .put(cache::cache_put)
                .delete(cache::cache_delete),
        )
        .route_layer(middleware::from_fn_with_state(state, auth::require_token))
}

fn queue(state: &AppState, name: &str) -> ApiResult<Queue> {
    state.queue(name)
}

fn parse_id(id: &str) -> ApiResult<JobId> {
    id.parse::<JobId>().map_err(ApiError::from)
}

/// A count of jobs an operation applied to.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CountResponse {
    pub count: u64,
}
