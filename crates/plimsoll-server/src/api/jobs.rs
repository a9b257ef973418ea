//! `/v1/queues/{queue}/jobs`: enqueue one job or many, look one up, list
//! them by state, cancel one, send a dead one back to run.

use std::time::{Duration, UNIX_EPOCH};

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use base64::Engine;
use plimsoll::queue::JobInfo;
use plimsoll::{CancelOutcome, DeadSelection, JobState, NewJob};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use utoipa::{IntoParams, ToSchema};

use super::{CountResponse, parse_id, queue};
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{ApiJson, ApiQuery};
use crate::state::AppState;

/// A job to enqueue.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EnqueueRequest {
    /// The payload as any JSON value; workers receive its JSON text.
    #[schema(value_type = Object)]
    pub payload: Option<Box<RawValue>>,
    /// The payload as raw bytes in base64, instead of `payload`.
    pub payload_base64: Option<String>,
    /// Run no earlier than this many milliseconds from now.
    pub delay_ms: Option<u64>,
    /// Run no earlier than this time (ms since the Unix epoch).
    pub run_at_ms: Option<u64>,
    /// 0 (runs first) to 9; default 5.
    pub priority: Option<u8>,
    /// Runs before the job goes to the dead set (1 to 1000).
    pub max_attempts: Option<u16>,
    /// Time one run may take, in milliseconds.
    pub timeout_ms: Option<u64>,
    /// A duplicate key within its window returns the first job's id.
    pub idempotency_key: Option<String>,
    /// How long the key is remembered, in milliseconds (default 24 h).
    pub idempotency_window_ms: Option<u64>,
}

impl EnqueueRequest {
    fn into_job(self) -> ApiResult<NewJob> {
        let payload = match (self.payload, self.payload_base64) {
            (Some(json), None) => json.get().as_bytes().to_vec(),
            (None, Some(b64)) => base64::engine::general_purpose::STANDARD
                .decode(b64.as_bytes())
                .map_err(|e| ApiError::bad_request(format!("payload_base64 is not base64: {e}")))?,
            (None, None) => return Err(ApiError::bad_request("give payload or payload_base64")),
            (Some(_), Some(_)) => {
                return Err(ApiError::bad_request(
                    "give payload or payload_base64, not both",
                ));
            }
        };
        let mut job = NewJob::bytes(payload);
        match (self.delay_ms, self.run_at_ms) {
            (Some(_), Some(_)) => {
                return Err(ApiError::bad_request(
                    "give delay_ms or run_at_ms, not both",
                ));
            }
            (Some(ms), None) => job = job.delay(Duration::from_millis(ms)),
            (None, Some(ms)) => job = job.run_at(UNIX_EPOCH + Duration::from_millis(ms)),
            (None, None) => {}
        }
        if let Some(p) = self.priority {
            job = job.priority(p);
        }
        if let Some(n) = self.max_attempts {
            job = job.max_attempts(n);
        }
        if let Some(ms) = self.timeout_ms {
            job = job.timeout(Duration::from_millis(ms));
        }
        match (self.idempotency_key, self.idempotency_window_ms) {
            (Some(key), Some(ms)) => job = job.idempotency_key_for(key, Duration::from_millis(ms)),
            (Some(key), None) => job = job.idempotency_key(key),
            (None, Some(_)) => {
                return Err(ApiError::bad_request(
                    "idempotency_window_ms needs idempotency_key",
                ));
            }
            (None, None) => {}
        }
        Ok(job)
    }
}

/// The enqueued job.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct EnqueueResponse {
    pub id: u64,
    /// The idempotency key was seen: nothing new was enqueued; `id` is the
    /// first job's.
    pub duplicate: bool,
}

/// Jobs to enqueue in one call, in order.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BulkRequest {
    pub jobs: Vec<EnqueueRequest>,
}

/// The enqueued jobs, in the order given.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct BulkResponse {
    pub jobs: Vec<EnqueueResponse>,
}

/// The most jobs one bulk call takes.
pub const MAX_BULK_JOBS: usize = 10_000;

/// Enqueue one job.
#[utoipa::path(post, path = "/v1/queues/{queue}/jobs", request_body = EnqueueRequest,
    params(("queue" = String, Path, description = "Queue name")),
    responses(
        (status = 201, description = "Enqueued", body = EnqueueResponse),
        (status = 200, description = "Duplicate idempotency key: the first job's id", body = EnqueueResponse),
        (status = 400, description = "Bad input", body = ErrorBody),
        (status = 413, description = "Payload too large", body = ErrorBody),
        (status = 503, description = "Redis unavailable", body = ErrorBody),
        (status = 507, description = "Redis out of memory", body = ErrorBody)))]
pub async fn enqueue(
    State(state): State<AppState>,
    Path(name): Path<String>,
    ApiJson(request): ApiJson<EnqueueRequest>,
) -> ApiResult<impl IntoResponse> {
    let queue = queue(&state, &name)?;
    let enqueued = queue.enqueue(request.into_job()?).await?;
    let status = if enqueued.duplicate {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((
        status,
        Json(EnqueueResponse {
            id: enqueued.id.0,
            duplicate: enqueued.duplicate,
        }),
    ))
}

/// Enqueue many jobs (up to 10,000), in order.
#[utoipa::path(post, path = "/v1/queues/{queue}/jobs/bulk", request_body = BulkRequest,
    params(("queue" = String, Path, description = "Queue name")),
    responses(
        (status = 201, description = "All enqueued", body = BulkResponse),
        (status = 400, description = "Bad input (nothing enqueued)", body = ErrorBody),
        (status = 503, description = "Redis unavailable part-way; the message says how many were written", body = ErrorBody),
        (status = 507, description = "Redis out of memory part-way", body = ErrorBody)))]
pub async fn enqueue_bulk(
    State(state): State<AppState>,
    Path(name): Path<String>,
    ApiJson(request): ApiJson<BulkRequest>,
) -> ApiResult<impl IntoResponse> {
    if request.jobs.len() > MAX_BULK_JOBS {
        return Err(ApiError::bad_request(format!(
            "at most {MAX_BULK_JOBS} jobs per call, got {}",
            request.jobs.len()
        )));
    }
    let queue = queue(&state, &name)?;
    let jobs = request
        .jobs
        .into_iter()
        .enumerate()
        .map(|(i, r)| {
            r.into_job().map_err(|e| {
                ApiError::new(e.status(), e.code(), format!("job {i}: {}", e.message()))
            })
        })
        .collect::<ApiResult<Vec<_>>>()?;
    let enqueued = queue.enqueue_bulk(jobs).await.map_err(|bulk| {
        let written = bulk.written();
        let total = bulk.outcomes.len();
        let base = ApiError::from(bulk.error);
        ApiError::new(
            base.status(),
            base.code(),
            format!(
                "{written} of {total} jobs were enqueued before: {}",
                base.message()
            ),
        )
    })?;
    Ok((
        StatusCode::CREATED,
        Json(BulkResponse {
            jobs: enqueued
                .into_iter()
                .map(|e| EnqueueResponse {
                    id: e.id.0,
                    duplicate: e.duplicate,
                })
                .collect(),
        }),
    ))
}

/// A job.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct JobView {
    pub id: u64,
    pub queue: String,
    /// waiting, scheduled, active, completed or dead.
    pub state: String,
    pub priority: u8,
    /// Runs that ended without success.
    pub attempts: u16,
    pub max_attempts: u16,
    pub timeout_ms: u32,
    pub enqueued_at_ms: u64,
    /// Due (scheduled), died (dead), finished (completed) or lease end (active).
    pub state_time_ms: Option<u64>,
    pub worker: Option<String>,
    pub last_error: Option<String>,
    /// The payload, when it is JSON.
    #[schema(value_type = Object)]
    pub payload: Option<serde_json::Value>,
    /// The payload in base64, when it is not JSON.
    pub payload_base64: Option<String>,
}

impl JobView {
    pub fn new(queue: &str, job: JobInfo) -> Self {
        let (payload, payload_base64) = match serde_json::from_slice(&job.payload) {
            Ok(value) => (Some(value), None),
            Err(_) => (
                None,
                Some(base64::engine::general_purpose::STANDARD.encode(&job.payload)),
            ),
        };
        Self {
            id: job.id.0,
            queue: queue.to_string(),
            state: job.state.to_string(),
            priority: job.priority,
            attempts: job.attempts,
            max_attempts: job.max_attempts,
            timeout_ms: job.timeout_ms,
            enqueued_at_ms: job.enqueued_at_ms,
            state_time_ms: job.state_time_ms,
            worker: job.worker,
            last_error: job.last_error,
            payload,
            payload_base64,
        }
    }
}

/// One job by id.
#[utoipa::path(get, path = "/v1/queues/{queue}/jobs/{id}",
    params(("queue" = String, Path), ("id" = u64, Path)),
    responses((status = 200, body = JobView), (status = 404, body = ErrorBody)))]
pub async fn get_job(
    State(state): State<AppState>,
    Path((name, id)): Path<(String, String)>,
) -> ApiResult<Json<JobView>> {
    let id = parse_id(&id)?;
    let queue = queue(&state, &name)?;
    match queue.job(id).await? {
        Some(job) => Ok(Json(JobView::new(&name, job))),
        None => Err(ApiError::not_found(format!(
            "no job {id} in queue {name} (it may have finished and been removed)"
        ))),
    }
}

/// Paging through jobs in one state.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    /// waiting (default), scheduled, active, completed or dead.
    pub state: Option<String>,
    #[serde(default)]
    pub offset: usize,
    /// At most 1000; default 50.
    pub limit: Option<usize>,
}

fn parse_state(state: Option<&str>) -> ApiResult<JobState> {
    Ok(match state.unwrap_or("waiting") {
        "waiting" => JobState::Waiting,
        "scheduled" => JobState::Scheduled,
        "active" => JobState::Active,
        "completed" => JobState::Completed,
        "dead" => JobState::Dead,
        other => {
            return Err(ApiError::bad_request(format!(
                "state {other:?} is not one of waiting, scheduled, active, completed, dead"
            )));
        }
    })
}

/// Jobs in one state, in the order they will run (or died).
#[utoipa::path(get, path = "/v1/queues/{queue}/jobs",
    params(("queue" = String, Path), ListParams),
    responses((status = 200, body = Vec<JobView>), (status = 400, body = ErrorBody)))]
pub async fn list_jobs(
    State(state): State<AppState>,
    Path(name): Path<String>,
    ApiQuery(params): ApiQuery<ListParams>,
) -> ApiResult<Json<Vec<JobView>>> {
    let job_state = parse_state(params.state.as_deref())?;
    let queue = queue(&state, &name)?;
    let jobs = queue
        .jobs(
            job_state,
            params.offset,
            params.limit.unwrap_or(50).min(1000),
        )
        .await?;
    Ok(Json(
        jobs.into_iter().map(|j| JobView::new(&name, j)).collect(),
    ))
}

/// What a cancel did.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CancelResponse {
    pub cancelled: bool,
    /// The state the job was in.
    pub state: String,
}

/// Cancel a job that has not finished.
#[utoipa::path(delete, path = "/v1/queues/{queue}/jobs/{id}",
    params(("queue" = String, Path), ("id" = u64, Path)),
    responses(
        (status = 200, description = "Cancelled", body = CancelResponse),
        (status = 404, body = ErrorBody),
        (status = 409, description = "Already finished", body = ErrorBody)))]
pub async fn cancel_job(
    State(state): State<AppState>,
    Path((name, id)): Path<(String, String)>,
) -> ApiResult<Json<CancelResponse>> {
    let id = parse_id(&id)?;
    let queue = queue(&state, &name)?;
    match queue.cancel(id).await? {
        CancelOutcome::Cancelled(was) => Ok(Json(CancelResponse {
            cancelled: true,
            state: was.to_string(),
        })),
        CancelOutcome::AlreadyFinished(was) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "already_finished",
            format!("job {id} already finished ({was}); nothing was cancelled"),
        )),
        CancelOutcome::NotFound => Err(ApiError::not_found(format!("no job {id} in queue {name}"))),
    }
}

/// Send a dead job back to run, with a fresh set of attempts.
#[utoipa::path(post, path = "/v1/queues/{queue}/jobs/{id}/retry",
    params(("queue" = String, Path), ("id" = u64, Path)),
    responses((status = 200, body = CountResponse), (status = 404, description = "Not a dead job", body = ErrorBody)))]
pub async fn retry_job(
    State(state): State<AppState>,
    Path((name, id)): Path<(String, String)>,
) -> ApiResult<Json<CountResponse>> {
    let id = parse_id(&id)?;
    let queue = queue(&state, &name)?;
    let count = queue.retry_dead(DeadSelection::Ids(vec![id])).await?;
    if count == 0 {
        return Err(ApiError::not_found(format!(
            "job {id} is not in the dead set of {name}"
        )));
    }
    Ok(Json(CountResponse { count }))
}
