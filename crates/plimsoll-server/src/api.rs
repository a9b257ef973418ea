//! The JSON API under `/v1`, described by the OpenAPI document at
//! `/v1/openapi.json` (generated from these handlers and types).
//!
//! The API's types are its own, not the library's, so that the wire
//! contract changes only on purpose.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use base64::Engine;
use plimsoll::queue::{JobInfo, QueueCounts};
use plimsoll::{CancelOutcome, DeadSelection, JobId, JobState, NewJob, Queue};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use utoipa::{IntoParams, OpenApi, ToSchema};

use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{ApiJson, ApiQuery};
use crate::rates::QueueRates;
use crate::state::AppState;

/// The OpenAPI document.
#[derive(Debug, OpenApi)]
#[openapi(
    info(
        title = "Plimsoll",
        description = "Job queue, webhook intake and memory guard for Redis. Every /v1 call needs `Authorization: Bearer <token>`."
    ),
    paths(
        enqueue, enqueue_bulk, get_job, list_jobs, cancel_job, retry_job, list_queues, get_queue,
        delete_queue, pause_queue, resume_queue, list_dead, retry_dead, purge_dead, spool_status,
        list_quarantine, retry_quarantine, purge_quarantine,
        cache_get, cache_put, cache_delete, guard_status, guard_alerts, guard_memory,
        crate::health::healthz, crate::health::readyz, crate::intake::receive
    ),
    components(schemas(
        EnqueueRequest, EnqueueResponse, BulkRequest, BulkResponse, JobView, QueueView, CountsView,
        TotalsView, QueueRates, CancelResponse, DeletedView, DeadRequest, CountResponse, ErrorBody, SpoolView,
        QuarantineView, QuarantinedWebhook,
        CacheValue, CachePut, CacheWriteView,
        crate::health::Readiness, crate::intake::Accepted
    )),
    modifiers(&BearerAuth),
    security(("bearer" = []))
)]
pub struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        openapi
            .components
            .get_or_insert_with(Default::default)
            .add_security_scheme(
                "bearer",
                SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
            );
    }
}

/// `GET /v1/openapi.json`.
pub async fn openapi() -> impl IntoResponse {
    Json(ApiDoc::openapi())
}

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

fn queue(state: &AppState, name: &str) -> ApiResult<Queue> {
    state.queue(name)
}

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

fn parse_id(id: &str) -> ApiResult<JobId> {
    id.parse::<JobId>().map_err(ApiError::from)
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

/// A count of jobs an operation applied to.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CountResponse {
    pub count: u64,
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

/// All queues: those used so far and those configured.
pub async fn queue_names(state: &AppState) -> ApiResult<Vec<String>> {
    let mut names: Vec<String> = Queue::list(state.redis(), &state.config().prefix)
        .await?
        .into_iter()
        .map(|n| n.as_str().to_string())
        .collect();
    for configured in state.config().queues.keys() {
        names.push(configured.as_str().to_string());
    }
    names.sort();
    names.dedup();
    Ok(names)
}

/// Every queue with counts, rates and bytes.
#[utoipa::path(get, path = "/v1/queues", responses((status = 200, body = Vec<QueueView>)))]
pub async fn list_queues(State(state): State<AppState>) -> ApiResult<Json<Vec<QueueView>>> {
    let mut views = Vec::new();
    for name in queue_names(&state).await? {
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

/// Dead jobs, oldest first.
#[utoipa::path(get, path = "/v1/queues/{queue}/dead", params(("queue" = String, Path), ListParams),
    responses((status = 200, body = Vec<JobView>)))]
pub async fn list_dead(
    State(state): State<AppState>,
    Path(name): Path<String>,
    ApiQuery(params): ApiQuery<ListParams>,
) -> ApiResult<Json<Vec<JobView>>> {
    if params.state.is_some() {
        return Err(ApiError::bad_request("state is always dead here"));
    }
    let queue = queue(&state, &name)?;
    let jobs = queue
        .jobs(
            JobState::Dead,
            params.offset,
            params.limit.unwrap_or(50).min(1000),
        )
        .await?;
    Ok(Json(
        jobs.into_iter().map(|j| JobView::new(&name, j)).collect(),
    ))
}

/// Which dead jobs: the ids given, or all.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeadRequest {
    #[serde(default)]
    pub ids: Vec<u64>,
    #[serde(default)]
    pub all: bool,
}

impl DeadRequest {
    fn selection(self) -> ApiResult<DeadSelection> {
        match (self.all, self.ids.is_empty()) {
            (true, true) => Ok(DeadSelection::All),
            (false, false) => Ok(DeadSelection::Ids(
                self.ids.into_iter().map(JobId).collect(),
            )),
            (true, false) => Err(ApiError::bad_request("give ids or all, not both")),
            (false, true) => Err(ApiError::bad_request("give ids, or all: true")),
        }
    }
}

/// Send dead jobs back to run.
#[utoipa::path(post, path = "/v1/queues/{queue}/dead/retry", params(("queue" = String, Path)),
    request_body = DeadRequest, responses((status = 200, body = CountResponse)))]
pub async fn retry_dead(
    State(state): State<AppState>,
    Path(name): Path<String>,
    ApiJson(request): ApiJson<DeadRequest>,
) -> ApiResult<Json<CountResponse>> {
    let selection = request.selection()?;
    let count = queue(&state, &name)?.retry_dead(selection).await?;
    Ok(Json(CountResponse { count }))
}

/// Delete dead jobs for good.
#[utoipa::path(post, path = "/v1/queues/{queue}/dead/purge", params(("queue" = String, Path)),
    request_body = DeadRequest, responses((status = 200, body = CountResponse)))]
pub async fn purge_dead(
    State(state): State<AppState>,
    Path(name): Path<String>,
    ApiJson(request): ApiJson<DeadRequest>,
) -> ApiResult<Json<CountResponse>> {
    let selection = request.selection()?;
    let count = queue(&state, &name)?.purge_dead(selection).await?;
    Ok(Json(CountResponse { count }))
}

/// The webhook spool.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SpoolView {
    /// Webhooks kept on disk, waiting for Redis.
    pub records: u64,
    pub bytes: u64,
    pub max_bytes: u64,
    /// bytes / max_bytes.
    pub fill: f64,
    /// Over the warning level.
    pub filling: bool,
    /// Spooled webhooks Redis refused for good, held in the quarantine
    /// (`GET /v1/spool/quarantine`).
    pub quarantined: u64,
    pub quarantine_bytes: u64,
    pub quarantine_max_records: u64,
    /// The quarantine is at a bound: replay waits behind the next record
    /// Redis refuses.
    pub quarantine_full: bool,
}

/// The webhook spool's state.
#[utoipa::path(get, path = "/v1/spool", responses((status = 200, body = SpoolView)))]
pub async fn spool_status(State(state): State<AppState>) -> Json<SpoolView> {
    Json(spool_view(&state))
}

pub fn spool_view(state: &AppState) -> SpoolView {
    let stats = state.spool().stats();
    let max = state.config().spool_max_bytes;
    let fill = stats.bytes as f64 / max as f64;
    let quarantine = state.spool().quarantine().stats();
    SpoolView {
        records: stats.records,
        bytes: stats.bytes,
        max_bytes: max,
        fill,
        filling: fill >= state.config().spool_warn_at,
        quarantined: quarantine.records,
        quarantine_bytes: quarantine.bytes,
        quarantine_max_records: quarantine.max_records,
        quarantine_full: quarantine.records >= quarantine.max_records
            || quarantine.bytes >= quarantine.max_bytes,
    }
}

/// One webhook in the spool's quarantine.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct QuarantinedWebhook {
    pub queue: String,
    /// Its delivery id, or the identity minted at intake.
    pub identity: Option<String>,
    pub received_at_ms: u64,
    pub quarantined_at_ms: u64,
    /// What Redis answered.
    pub reason: String,
    pub payload_bytes: usize,
    /// The payload's first 256 bytes, as text (invalid UTF-8 replaced).
    pub payload_preview: String,
}

/// The spool's quarantine.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct QuarantineView {
    pub records: u64,
    pub bytes: u64,
    pub max_records: u64,
    pub max_bytes: u64,
    /// Oldest first, from `offset`.
    pub webhooks: Vec<QuarantinedWebhook>,
}

/// Paging of the quarantine.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct QuarantineParams {
    #[serde(default)]
    pub offset: usize,
    /// At most 1000; default 100.
    pub limit: Option<usize>,
}

/// Spooled webhooks Redis refused for good (for a reason other than being
/// down, slow or full), kept aside so that the others replay.
#[utoipa::path(get, path = "/v1/spool/quarantine", params(QuarantineParams),
    responses((status = 200, body = QuarantineView)))]
pub async fn list_quarantine(
    State(state): State<AppState>,
    ApiQuery(params): ApiQuery<QuarantineParams>,
) -> ApiResult<Json<QuarantineView>> {
    let limit = params.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::bad_request("limit must be 1 to 1000"));
    }
    let quarantine = state.spool().quarantine();
    let stats = quarantine.stats();
    let webhooks = quarantine
        .list(params.offset, limit)
        .into_iter()
        .map(|q| QuarantinedWebhook {
            queue: q.queue,
            identity: q.identity,
            received_at_ms: q.received_at_ms,
            quarantined_at_ms: q.quarantined_at_ms,
            reason: q.reason,
            payload_bytes: q.payload_bytes,
            payload_preview: String::from_utf8_lossy(&q.preview).into_owned(),
        })
        .collect();
    Ok(Json(QuarantineView {
        records: stats.records,
        bytes: stats.bytes,
        max_records: stats.max_records,
        max_bytes: stats.max_bytes,
        webhooks,
    }))
}

/// Send every quarantined webhook back to the spool (behind the webhooks
/// waiting there), once the reason Redis refused it is fixed. A webhook
/// Redis still refuses comes back to the quarantine. The count is how many
/// went back.
#[utoipa::path(post, path = "/v1/spool/quarantine/retry",
    responses((status = 200, body = CountResponse)))]
pub async fn retry_quarantine(State(state): State<AppState>) -> ApiResult<Json<CountResponse>> {
    let quarantine = state.spool().quarantine().clone();
    let records = tokio::task::spawn_blocking(move || quarantine.records())
        .await
        .map_err(|e| internal(format!("reading the quarantine: {e}")))?
        .map_err(|e| internal(format!("reading the quarantine: {e}")))?;
    // Back in the spool before out of the quarantine: a failure in between
    // leaves a copy in both, and the identity keeps it one job.
    // Many appends at once share the spool's syncs (group commit).
    use futures::StreamExt;
    let spool = state.spool();
    let appended: Vec<(u64, Result<(), _>)> = futures::stream::iter(records)
        .map(|(token, record)| async move { (token, spool.append(&record).await) })
        .buffered(RETRY_APPENDS_AT_ONCE)
        .collect()
        .await;
    let mut back = Vec::new();
    for (token, result) in appended {
        match result {
            Ok(()) => back.push(token),
            Err(err) => {
                tracing::warn!(error = %err, "could not move a quarantined webhook back to the spool; it stays in the quarantine");
            }
        }
    }
    let quarantine = state.spool().quarantine().clone();
    let count = tokio::task::spawn_blocking(move || quarantine.remove(&back))
        .await
        .map_err(|e| internal(format!("rewriting the quarantine: {e}")))?
        .map_err(|e| internal(format!("rewriting the quarantine: {e}")))?;
    Ok(Json(CountResponse {
        count: count as u64,
    }))
}

/// Quarantined webhooks appended to the spool at once by a retry.
const RETRY_APPENDS_AT_ONCE: usize = 256;

/// Drop every quarantined webhook for good.
#[utoipa::path(post, path = "/v1/spool/quarantine/purge",
    responses((status = 200, body = CountResponse)))]
pub async fn purge_quarantine(State(state): State<AppState>) -> ApiResult<Json<CountResponse>> {
    let quarantine = state.spool().quarantine().clone();
    let count = tokio::task::spawn_blocking(move || {
        let tokens = quarantine.tokens();
        quarantine.remove(&tokens)
    })
    .await
    .map_err(|e| internal(format!("rewriting the quarantine: {e}")))?
    .map_err(|e| internal(format!("rewriting the quarantine: {e}")))?;
    tracing::warn!(count, "purged the spool's quarantine");
    Ok(Json(CountResponse {
        count: count as u64,
    }))
}

/// A 500 whose detail goes to the log only.
fn internal(detail: String) -> ApiError {
    tracing::error!(error = %detail, "internal error answering an API call");
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        "internal error; the server log has the details",
    )
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Redis' memory figures, from `INFO memory`.
#[derive(Debug, Clone, Default)]
pub struct RedisMemory {
    pub used_memory: u64,
    pub maxmemory: u64,
    pub policy: String,
}

/// Reads `INFO memory`.
pub async fn redis_memory(state: &AppState) -> ApiResult<RedisMemory> {
    let text: String = state
        .redis()
        .query(redis::cmd("INFO").arg("memory"))
        .await?;
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .map(|v| v.trim().to_string())
    };
    Ok(RedisMemory {
        used_memory: field("used_memory")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0),
        maxmemory: field("maxmemory").and_then(|v| v.parse().ok()).unwrap_or(0),
        policy: field("maxmemory_policy").unwrap_or_default(),
    })
}

/// A cached value.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CacheValue {
    pub key: String,
    #[schema(value_type = Object)]
    pub value: serde_json::Value,
}

/// A value to cache.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CachePut {
    #[schema(value_type = Object)]
    pub value: serde_json::Value,
    /// Time to live in milliseconds; default: the cache's (5 minutes).
    pub ttl_ms: Option<u64>,
}

/// What a cache write did in Redis: `applied`, `skipped` (the breaker is
/// open or Redis is overloaded) or `failed` (with the reason). The cache
/// never fails a caller because of Redis.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CacheWriteView {
    pub written: String,
    pub reason: Option<String>,
}

impl From<plimsoll::CacheWrite> for CacheWriteView {
    fn from(write: plimsoll::CacheWrite) -> Self {
        match write {
            plimsoll::CacheWrite::Applied => Self {
                written: "applied".into(),
                reason: None,
            },
            plimsoll::CacheWrite::Skipped => Self {
                written: "skipped".into(),
                reason: None,
            },
            plimsoll::CacheWrite::Failed(kind) => Self {
                written: "failed".into(),
                reason: Some(format!("{kind:?}").to_lowercase()),
            },
        }
    }
}

/// Read a cached value. A miss — also when Redis cannot answer — is 404.
#[utoipa::path(get, path = "/v1/cache/{key}", params(("key" = String, Path)),
    responses((status = 200, body = CacheValue), (status = 404, description = "Not cached", body = ErrorBody)))]
pub async fn cache_get(
    State(state): State<AppState>,
    Path(key): Path<String>,
) -> ApiResult<Json<CacheValue>> {
    // Values are kept as their JSON text: the cache's compact encoding is
    // not self-describing, so an arbitrary JSON value travels as a string.
    let text = state.cache().get::<String>(&key).await?;
    match text.and_then(|t| serde_json::from_str(&t).ok()) {
        Some(value) => Ok(Json(CacheValue { key, value })),
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "cache_miss",
            format!("{key:?} is not cached"),
        )),
    }
}

/// Cache a value, with a TTL (always: no cache key lives forever).
#[utoipa::path(put, path = "/v1/cache/{key}", params(("key" = String, Path)), request_body = CachePut,
    responses((status = 200, body = CacheWriteView), (status = 400, body = ErrorBody), (status = 413, body = ErrorBody)))]
pub async fn cache_put(
    State(state): State<AppState>,
    Path(key): Path<String>,
    ApiJson(request): ApiJson<CachePut>,
) -> ApiResult<Json<CacheWriteView>> {
    let ttl = match request.ttl_ms {
        Some(ms) => plimsoll::Ttl::After(Duration::from_millis(ms)),
        None => plimsoll::Ttl::Default,
    };
    let written = state
        .cache()
        .set(&key, &request.value.to_string(), ttl)
        .await?;
    Ok(Json(written.into()))
}

/// Remove a cached value.
#[utoipa::path(delete, path = "/v1/cache/{key}", params(("key" = String, Path)),
    responses((status = 200, body = CacheWriteView)))]
pub async fn cache_delete(
    State(state): State<AppState>,
    Path(key): Path<String>,
) -> ApiResult<Json<CacheWriteView>> {
    Ok(Json(state.cache().delete(&key).await?.into()))
}

fn guard(state: &AppState) -> ApiResult<&plimsoll::Guard> {
    state.guard().ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "guard_disabled",
            "the memory guard is switched off (guard.disabled)",
        )
    })
}

/// The memory guard: memory per node and in total, the limit measured
/// against, the forecast (growth rate, time to full with its 95% interval),
/// the levels raised, and the latest alerts.
#[utoipa::path(get, path = "/v1/guard",
    responses((status = 200, description = "Guard status", body = Object), (status = 404, body = ErrorBody)))]
pub async fn guard_status(State(state): State<AppState>) -> ApiResult<Json<plimsoll::GuardStats>> {
    Ok(Json(guard(&state)?.stats()))
}

/// The latest alerts, oldest first (up to 50).
#[utoipa::path(get, path = "/v1/guard/alerts",
    responses((status = 200, description = "Alerts", body = Vec<Object>), (status = 404, body = ErrorBody)))]
pub async fn guard_alerts(State(state): State<AppState>) -> ApiResult<Json<Vec<plimsoll::Alert>>> {
    Ok(Json(guard(&state)?.stats().recent_alerts))
}

/// The latest memory report: bytes, keys, TTL share and growth per key
/// family (Plimsoll, BullMQ, Sidekiq, Celery, RQ, apalis and other
/// patterns), with suspected leaks named.
#[utoipa::path(get, path = "/v1/guard/memory",
    responses((status = 200, description = "Memory report", body = Object),
              (status = 404, description = "None yet, or the guard is off", body = ErrorBody)))]
pub async fn guard_memory(
    State(state): State<AppState>,
) -> ApiResult<Json<plimsoll::MemoryReport>> {
    match guard(&state)?.latest_report() {
        Some(report) => Ok(Json((*report).clone())),
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "no_report",
            "no memory report yet: the guard makes one on a schedule (guard.report_interval)",
        )),
    }
}
