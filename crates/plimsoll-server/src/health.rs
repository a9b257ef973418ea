//! `/healthz` (the process is alive) and `/readyz` (what works and what is
//! degraded). Neither needs a token: load balancers and orchestrators call
//! them, and they reveal nothing beyond the state of the parts.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::state::AppState;

/// How long readiness waits for Redis to answer PING.
const REDIS_PING_BUDGET: Duration = Duration::from_millis(250);

/// Alive.
#[utoipa::path(get, path = "/healthz", security(()),
    responses((status = 200, description = "The process is alive")))]
pub async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({"status": "ok"}))
}

/// What works and what does not.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Readiness {
    /// The server takes requests (webhooks too: with Redis down they go to
    /// the spool, so Redis trouble alone does not make it unready).
    pub ready: bool,
    /// Each degraded part and why, e.g. `redis: unreachable`.
    pub degraded: Vec<String>,
    pub uptime_s: u64,
}

/// Ready, with the degraded parts named.
#[utoipa::path(get, path = "/readyz", security(()),
    responses(
        (status = 200, description = "Ready (perhaps degraded)", body = Readiness),
        (status = 503, description = "Not ready", body = Readiness)))]
pub async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<Readiness>) {
    let mut degraded = Vec::new();
    let mut ready = true;
    if state.is_shutting_down() {
        degraded.push("server: shutting down".to_string());
        ready = false;
    }
    let ping = tokio::time::timeout(
        REDIS_PING_BUDGET,
        state.redis().query::<String>(&redis::cmd("PING")),
    )
    .await;
    let redis_ok = match ping {
        Ok(Ok(_)) => true,
        Ok(Err(_)) if !state.redis().is_connected() => {
            degraded.push(
                "redis: not reached since the server started; webhooks are spooled, \
                 the API, push delivery and the guard join when it answers"
                    .to_string(),
            );
            false
        }
        Ok(Err(err)) => {
            degraded.push(format!("redis: {}", err.kind_name()));
            false
        }
        Err(_) => {
            degraded.push(format!("redis: no answer within {REDIS_PING_BUDGET:?}"));
            false
        }
    };
    degraded.extend(
        state
            .redis_warnings()
            .into_iter()
            .map(|w| format!("redis: {w}")),
    );
    let spool = crate::intake::spool_view::spool_view(&state);
    if spool.records > 0 {
        degraded.push(format!(
            "spool: {} webhooks waiting for Redis ({:.0}% full)",
            spool.records,
            spool.fill * 100.0
        ));
    }
    if spool.quarantined > 0 {
        degraded.push(format!(
            "spool quarantine: {} webhooks Redis refused for good wait for an operator \
             (GET /v1/spool/quarantine){}",
            spool.quarantined,
            if spool.quarantine_full {
                "; it is full, so replay stops at the next one Redis refuses"
            } else {
                ""
            }
        ));
    }
    if spool.filling && !redis_ok {
        ready = spool.fill < 1.0;
    }
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(Readiness {
            ready,
            degraded,
            uptime_s: state.uptime().as_secs(),
        }),
    )
}

trait KindName {
    fn kind_name(&self) -> String;
}

impl KindName for plimsoll::Error {
    fn kind_name(&self) -> String {
        match self.kind() {
            plimsoll::ErrorKind::OutOfMemory => "out of memory".into(),
            plimsoll::ErrorKind::Connection => "unreachable".into(),
            plimsoll::ErrorKind::Timeout => "timing out".into(),
            plimsoll::ErrorKind::Unavailable => "unavailable (loading or failing over)".into(),
            other => format!("{other:?}").to_lowercase(),
        }
    }
}
