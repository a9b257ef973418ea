//! `/v1/spool`: the webhook spool's state, and its quarantine (the spooled
//! webhooks Redis refused for good) listed, sent back or purged.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::CountResponse;
use crate::error::{ApiError, ApiResult};
use crate::extract::ApiQuery;
use crate::intake::spool_view::{SpoolView, spool_view};
use crate::state::AppState;

/// The webhook spool's state.
#[utoipa::path(get, path = "/v1/spool", responses((status = 200, body = SpoolView)))]
pub async fn spool_status(State(state): State<AppState>) -> Json<SpoolView> {
    Json(spool_view(&state))
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
