//! `/v1/queues/{queue}/dead`: the dead set, listed, sent back to run or
//! purged.

use axum::Json;
use axum::extract::{Path, State};
use plimsoll::{DeadSelection, JobId, JobState};
use serde::Deserialize;
use utoipa::ToSchema;

use super::jobs::{JobView, ListParams};
use super::{CountResponse, queue};
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, ApiQuery};
use crate::state::AppState;

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
