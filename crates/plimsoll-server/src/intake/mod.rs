//! Webhook intake: `POST /hooks/{source}`.
//!
//! A webhook is checked (its source must be configured; its HMAC-SHA256
//! signature must match when the source has a secret), wrapped in an
//! envelope with its source, delivery id and headers, checked against
//! everything its queue's enqueue checks ([`plimsoll::Queue::check`]: a 202
//! must mean the webhook can be enqueued, never a record that waits forever
//! in the spool), and enqueued on the source's queue. The answer is 202.
//!
//! # Identity
//!
//! Every webhook has an identity, its idempotency key in Redis: the delivery
//! id when the source sends one (so a redelivery is dropped), else one minted
//! here, before the first enqueue attempt. The direct enqueue and any later
//! replay of the spooled copy carry the same key, so neither an enqueue that
//! timed out but landed, nor a replay interrupted by a crash or a partial
//! failure, can enqueue a webhook twice. The cost: each such key takes
//! Redis memory, for the queue's idempotency window (24 h by default) when
//! it is a delivery id and for [`MINTED_IDENTITY_WINDOW`] at most when it
//! was minted (see `docs/server.md` for the measured bytes), and an enqueue
//! with a key runs one more `redis.call` per job in `enqueue.lua`.
//!
//! When Redis cannot take the job (down, out of memory, too slow) the webhook
//! goes to the local spool, fsync'd before the 202. While the spool holds
//! anything, new webhooks go to the spool too, behind the older ones, so
//! that the replayer ([`replay`]) hands them to Redis in the order they were
//! accepted. Past the spool's bound the answer is 503 with `Retry-After`, so
//! the sender keeps the webhook and tries again: a 2xx always means kept.

pub mod envelope;
pub mod frame;
pub mod quarantine;
pub mod replay;
pub mod spool;
pub mod spool_view;

pub use envelope::ENVELOPE_RESERVE;

use std::collections::BTreeMap;
use std::time::Duration;

use axum::Json;
use axum::body::Bytes;

use crate::extract::ApiBytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use plimsoll::{Clock, ErrorKind, NewJob, SystemClock};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use utoipa::ToSchema;

use crate::config::HookSettings;
use crate::error::{ApiError, ApiResult};
use crate::signing;
use crate::state::AppState;
use spool::{SpoolError, SpoolRecord};

/// How long the intake waits for Redis before it keeps the webhook in the
/// spool instead: a slow Redis must not make senders time out.
pub const REDIS_BUDGET: Duration = Duration::from_millis(500);
/// `Retry-After` when the spool is full.
const FULL_RETRY_AFTER_S: u64 = 30;
/// Longest delivery id accepted.
const MAX_DELIVERY_ID: usize = 200;
/// Prefix of identities minted for webhooks without a delivery id; the rest
/// is 128 random bits in base64url (22 characters).
const MINTED_IDENTITY_PREFIX: &str = "plim-";
/// How long a minted identity is kept in Redis (the queue's
/// `idempotency_window` when that is shorter). A delivery id is kept for the
/// whole window because the sender may redeliver hours later; a minted one
/// only has to outlive this server's own second tries: a replay after an
/// enqueue that timed out but landed, or after a replay cut short (Redis
/// full part-way, a crash). Those come as soon as Redis takes writes again,
/// so ten minutes covers them while keeping the cost at about 165 bytes ×
/// the webhooks of ten minutes (1,000 a second: about 100 MB) instead of a
/// day's. A second try later than this (Redis unusable for longer right
/// after taking the webhook) may enqueue it twice: at least once, never lost.
pub const MINTED_IDENTITY_WINDOW: Duration = Duration::from_secs(10 * 60);

/// A webhook was kept.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Accepted {
    /// The job's id (absent when the webhook was spooled).
    pub id: Option<u64>,
    /// The delivery id had been seen: nothing new was enqueued.
    pub duplicate: bool,
    /// Redis could not take it now: it is on disk and will be enqueued, in
    /// order, when Redis can.
    pub spooled: bool,
}

/// What a worker receives: the webhook and where it came from.
#[derive(Debug, Serialize)]
struct Envelope<'a> {
    source: &'a str,
    received_at_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    delivery: Option<&'a str>,
    headers: BTreeMap<String, &'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    body: Option<&'a RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    body_text: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    body_base64: Option<String>,
}

/// Receive a webhook.
#[utoipa::path(post, path = "/hooks/{source}", security(()),
    params(("source" = String, Path, description = "A configured webhook source")),
    request_body(content = String, description = "The webhook, as the sender posts it"),
    responses(
        (status = 202, description = "Kept: enqueued, or spooled until Redis can take it", body = Accepted),
        (status = 401, description = "Missing or wrong signature", body = crate::error::ErrorBody),
        (status = 404, description = "Unknown source", body = crate::error::ErrorBody),
        (status = 413, description = "Body too large", body = crate::error::ErrorBody),
        (status = 503, description = "Not kept: spool full or server stopping; retry later", body = crate::error::ErrorBody)))]
pub async fn receive(
    State(state): State<AppState>,
    Path(source): Path<String>,
    headers: HeaderMap,
    ApiBytes(body): ApiBytes,
) -> ApiResult<(StatusCode, Json<Accepted>)> {
    let metrics = state.metrics();
    let Some(hook) = state.config().hooks.get(&source) else {
        return Err(ApiError::not_found(format!(
            "no webhook source {source:?} is configured"
        )));
    };
    let result = accept(&state, &source, hook, &headers, &body).await;
    metrics.intake(
        &source,
        result.as_ref().map(|a| a.1.0.spooled).map_err(|e| e.code()),
    );
    result
}

async fn accept(
    state: &AppState,
    source: &str,
    hook: &HookSettings,
    headers: &HeaderMap,
    body: &Bytes,
) -> ApiResult<(StatusCode, Json<Accepted>)> {
    if state.is_shutting_down() {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting_down",
            "the server is stopping; retry later",
        )
        .retry_after(5));
    }
    if body.len() > hook.max_body {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!(
                "body of {} bytes exceeds {} bytes",
                body.len(),
                hook.max_body
            ),
        ));
    }
    if let Some(secret) = &hook.secret {
        let given = headers
            .get(&hook.signature_header)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| {
                ApiError::unauthorized(format!(
                    "missing signature header {}",
                    hook.signature_header
                ))
            })?;
        if !signing::verify(secret.as_bytes(), body, given, &hook.signature_prefix) {
            return Err(ApiError::unauthorized(
                "the signature does not match the body",
            ));
        }
    }
    let delivery = match &hook.delivery_header {
        Some(name) => match headers.get(name).map(|v| v.to_str()) {
            Some(Ok(id)) if !id.is_empty() && id.len() <= MAX_DELIVERY_ID => Some(id),
            Some(_) => {
                return Err(ApiError::bad_request(format!(
                    "header {name} must be 1 to {MAX_DELIVERY_ID} visible characters"
                )));
            }
            None => None,
        },
        None => None,
    };
    let payload = envelope(source, hook, headers, body, delivery)?;
    let identity = delivery.map_or_else(mint_identity, str::to_string);
    let queue = state.queue(hook.queue.as_str())?;
    let job = identified(NewJob::bytes(payload.clone()), &identity, &queue);
    // Whatever Redis would refuse is refused now, not after a 202.
    queue.check(&job).map_err(|err| match err.kind() {
        ErrorKind::PayloadTooLarge => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!(
                "the webhook's envelope of {} bytes exceeds the {} bytes queue {} takes",
                payload.len(),
                queue.config().payload_limit,
                hook.queue
            ),
        ),
        _ => ApiError::from(err),
    })?;

    // While older webhooks wait in the spool, newer ones queue up behind them.
    if state.spool().is_empty() {
        match tokio::time::timeout(REDIS_BUDGET, queue.enqueue(job)).await {
            Ok(Ok(enqueued)) => {
                return Ok((
                    StatusCode::ACCEPTED,
                    Json(Accepted {
                        id: Some(enqueued.id.0),
                        duplicate: enqueued.duplicate,
                        spooled: false,
                    }),
                ));
            }
            Ok(Err(err)) if !spoolable(&err) => return Err(err.into()),
            Ok(Err(err)) => {
                tracing::warn!(source, error = %err, "Redis cannot take webhooks; spooling them");
            }
            Err(_) => {
                tracing::warn!(source, budget = ?REDIS_BUDGET, "Redis too slow for webhooks; spooling them");
            }
        }
    }
    let record = SpoolRecord {
        queue: hook.queue.as_str().to_string(),
        idempotency_key: Some(identity),
        received_at_ms: SystemClock.now_ms(),
        payload,
    };
    match state.spool().append(&record).await {
        Ok(()) => Ok((
            StatusCode::ACCEPTED,
            Json(Accepted {
                id: None,
                duplicate: false,
                spooled: true,
            }),
        )),
        Err(SpoolError::Full { bytes, max }) => {
            tracing::error!(
                source,
                bytes,
                max,
                "the spool is full; refusing webhooks with 503"
            );
            Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "spool_full",
                "Redis cannot take webhooks and the local spool is full; retry later",
            )
            .retry_after(FULL_RETRY_AFTER_S))
        }
        Err(err) => {
            tracing::error!(source, error = %err, "could not spool a webhook; refusing it with 503");
            Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "spool_unavailable",
                "the webhook could not be kept; retry later",
            )
            .retry_after(5))
        }
    }
}

/// `job` with its identity as idempotency key: a delivery id for the
/// queue's whole idempotency window, a minted identity for
/// [`MINTED_IDENTITY_WINDOW`] at most.
pub(crate) fn identified(job: NewJob, identity: &str, queue: &plimsoll::Queue) -> NewJob {
    if identity.starts_with(MINTED_IDENTITY_PREFIX) {
        let window = queue
            .config()
            .idempotency_window
            .min(MINTED_IDENTITY_WINDOW);
        job.idempotency_key_for(identity, window)
    } else {
        job.idempotency_key(identity)
    }
}

/// A fresh identity for a webhook without a delivery id.
fn mint_identity() -> String {
    use base64::Engine;
    use rand::RngExt;
    let bits: [u8; 16] = rand::rng().random();
    format!(
        "{MINTED_IDENTITY_PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bits)
    )
}

/// Failures that mean "Redis cannot take it now" rather than "bad webhook".
/// `NotReplicated` among them: the job is on the primary but not on the
/// replicas the queue's durability asks for, so a failover may lose it; the
/// spooled copy (fsync'd before the 202, same identity) is replayed until
/// the replicas confirm, and Redis drops it as a duplicate if the first
/// write survived.
fn spoolable(err: &plimsoll::Error) -> bool {
    matches!(
        err.kind(),
        ErrorKind::NotReplicated
            | ErrorKind::OutOfMemory
            | ErrorKind::Connection
            | ErrorKind::Timeout
            | ErrorKind::Unavailable
            | ErrorKind::ShuttingDown
            | ErrorKind::Redis
    )
}

/// The job payload: the webhook in an envelope, as JSON.
fn envelope(
    source: &str,
    hook: &HookSettings,
    headers: &HeaderMap,
    body: &[u8],
    delivery: Option<&str>,
) -> ApiResult<Vec<u8>> {
    let mut kept = BTreeMap::new();
    for (name, value) in headers {
        let name = name.as_str();
        let wanted = name == "content-type" || name == "user-agent" || name.starts_with("x-");
        if wanted
            && !name.eq_ignore_ascii_case(&hook.signature_header)
            && let Ok(value) = value.to_str()
        {
            kept.insert(name.to_string(), value);
        }
    }
    let mut envelope = Envelope {
        source,
        received_at_ms: SystemClock.now_ms(),
        delivery,
        headers: kept,
        body: None,
        body_text: None,
        body_base64: None,
    };
    let parsed: Option<&RawValue> = serde_json::from_slice(body).ok();
    match (parsed, std::str::from_utf8(body)) {
        (Some(json), _) => envelope.body = Some(json),
        (None, Ok(text)) => envelope.body_text = Some(text),
        (None, Err(_)) => {
            use base64::Engine;
            envelope.body_base64 = Some(base64::engine::general_purpose::STANDARD.encode(body));
        }
    }
    serde_json::to_vec(&envelope)
        .map_err(|e| ApiError::bad_request(format!("cannot wrap the webhook: {e}")))
}
