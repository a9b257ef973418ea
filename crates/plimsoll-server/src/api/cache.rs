//! `/v1/cache/{key}`: the cache over HTTP. Values travel as JSON; a miss,
//! also when Redis cannot answer, is a 404, never an error.

use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::ApiJson;
use crate::state::AppState;

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
