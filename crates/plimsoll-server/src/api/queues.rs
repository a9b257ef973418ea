//! `/v1/queues`: every queue or one with its counts, rates and bytes;
//! deleting, pausing and resuming a queue.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use plimsoll::queue::QueueCounts;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::queue;
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::ApiQuery;
use crate::rates::QueueRates;
use crate::state::AppState;

/// Jobs per state.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CountsView {
    pub waiting: u64,
    pub scheduled: u64,
    pub active: u64,
    pub dead: u64,
    pub completed: u64,
}

/// Counters since the queue was created.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TotalsView {
    pub enqueued: u64,
    pub completed: u64,
    pub retried: u64,
    pub dead: u64,
    pub cancelled: u64,
    pub rescued: u64,
}

/// A queue with its counts, rates and bytes.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct QueueView {
    pub name: String,
    pub paused: bool,
    pub workers: u64,
    pub counts: CountsView,
    pub totals: TotalsView,
    pub rates: QueueRates,
    /// Bytes the queue's keys take in Redis (MEMORY USAGE, sampled).
    pub memory_bytes: u64,
    pub dead_bytes: u64,
    /// Push target, when the queue's jobs are delivered over HTTP.
    pub push_url: Option<String>,
}

impl QueueView {
    pub fn new(state: &AppState, name: &str, counts: QueueCounts, memory_bytes: u64) -> Self {
        let push_url = state
            .config()
            .queues
            .iter()
            .find(|(q, _)| q.as_str() == name)
            .and_then(|(_, s)| s.push.as_ref())
            .map(|p| p.url.to_string());
        Self {
            name: name.to_string(),
            paused: counts.paused,
            workers: counts.workers,
            counts: CountsView {
                waiting: counts.waiting,
                scheduled: counts.scheduled,
                active: counts.active,
                dead: counts.dead,
                completed: counts.completed,
            },
            totals: TotalsView {
                enqueued: counts.totals.enqueued,
                completed: counts.totals.completed,
                retried: counts.totals.retried,
                dead: counts.totals.dead,
                cancelled: counts.totals.cancelled,
                rescued: counts.totals.rescued,
            },
            rates: state.rates().get(name),
            memory_bytes,
            dead_bytes: counts.dead_bytes,
            push_url,
        }
    }
}

/// Loads one queue's view.
pub async fn queue_view(state: &AppState, name: &str) -> ApiResult<QueueView> {
    let queue = queue(state, name)?;
    let counts = queue.counts().await?;
    state.rates().record(name, counts.totals.clone());
    let memory = queue.memory_bytes().await?;
    Ok(QueueView::new(state, name, counts, memory))
}

/// Every queue with counts, rates and bytes.
#[utoipa::path(get, path = "/v1/queues", responses((status = 200, body = Vec<QueueView>)))]
pub async fn list_queues(State(state): State<AppState>) -> ApiResult<Json<Vec<QueueView>>> {
    let mut views = Vec::new();
    for name in state.queue_names().await? {
        views.push(queue_view(&state, &name).await?);
    }
    Ok(Json(views))
}

/// One queue with counts, rates and bytes.
#[utoipa::path(get, path = "/v1/queues/{queue}", params(("queue" = String, Path)),
    responses((status = 200, body = QueueView)))]
pub async fn get_queue(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult<Json<QueueView>> {
    Ok(Json(queue_view(&state, &name).await?))
}

/// Options of `DELETE /v1/queues/{queue}`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct DeleteQueueParams {
    /// Delete even while jobs are active (leased to workers); their
    /// outcomes then find nothing to settle.
    #[serde(default)]
    pub force: bool,
}

/// What deleting a queue removed.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DeletedView {
    /// Keys removed.
    pub keys: u64,
    /// Jobs removed, whatever their state.
    pub jobs: u64,
}

/// Delete a queue: its jobs in every state, its counters and settings, and
/// its registry entry.
#[utoipa::path(delete, path = "/v1/queues/{queue}",
    params(("queue" = String, Path), DeleteQueueParams),
    responses(
        (status = 200, description = "Deleted", body = DeletedView),
        (status = 409, description = "Jobs are active; stop the workers or pass force=true", body = ErrorBody)))]
pub async fn delete_queue(
    State(state): State<AppState>,
    Path(name): Path<String>,
    ApiQuery(params): ApiQuery<DeleteQueueParams>,
) -> ApiResult<Json<DeletedView>> {
    let queue = queue(&state, &name)?;
    match queue.delete(params.force).await {
        Ok(deleted) => Ok(Json(DeletedView {
            keys: deleted.keys,
            jobs: deleted.jobs,
        })),
        Err(err) if err.kind() == plimsoll::ErrorKind::InvalidInput => Err(ApiError::new(
            StatusCode::CONFLICT,
            "queue_busy",
            err.message(),
        )),
        Err(err) => Err(err.into()),
    }
}

/// Stop workers fetching from a queue.
#[utoipa::path(post, path = "/v1/queues/{queue}/pause", params(("queue" = String, Path)),
    responses((status = 204, description = "Paused")))]
pub async fn pause_queue(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    queue(&state, &name)?.pause().await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Let workers fetch from a queue again.
#[utoipa::path(post, path = "/v1/queues/{queue}/resume", params(("queue" = String, Path)),
    responses((status = 204, description = "Resumed")))]
pub async fn resume_queue(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    queue(&state, &name)?.resume().await?;
    Ok(StatusCode::NO_CONTENT)
}
