//! `/v1/guard`: the memory guard's status, alerts and latest memory report,
//! or `guard_disabled` when it is switched off.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;

use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::state::AppState;

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
