//! The spool's state as everyone shows it — `GET /v1/spool`, `/readyz`, the
//! dashboard, and the sampler's "spool filling" alert: one reading of the
//! spool and its quarantine, measured against the configured bound and
//! warning level, so that all of them agree on when the spool is filling.
//! It sits with the intake, not the API, because the intake's parts and
//! `/readyz` need it too, and the API depends on them.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::state::AppState;

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

/// The spool's state now.
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
