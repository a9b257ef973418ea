//! The OpenAPI document at `/v1/openapi.json`, generated from the handlers
//! and types of the other `api` modules and of the health and intake
//! routes.
//!
//! The handlers are brought in by name rather than by path on purpose:
//! utoipa turns a path written in `paths(...)` into the operation's tag, and
//! the API's operations have always had none (the health and intake routes
//! keep theirs, `crate::health` and `crate::intake`).

use axum::Json;
use axum::response::IntoResponse;
use utoipa::OpenApi;

use super::CountResponse;
use super::cache::*;
use super::dead::*;
use super::guard::*;
use super::jobs::*;
use super::queues::*;
use super::spool::*;
use crate::error::ErrorBody;
use crate::intake::spool_view::SpoolView;
use crate::rates::QueueRates;

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
