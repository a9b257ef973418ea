//! Attribution: which key families hold the memory, and which grow.
//!
//! - [`families`]: grouping keys by the shape of their names, with the
//!   layouts of Plimsoll, BullMQ, Sidekiq, Celery, RQ and apalis built in;
//! - [`scan`]: the walk of each primary within a command budget, sampling
//!   keys of each family;
//! - [`usage`]: measuring a key as Redis counts it (`MEMORY USAGE`, exact
//!   up to a bound);
//! - [`overhead`]: Redis' memory outside its keys, so that a report adds
//!   up to `used_memory`;
//! - [`report`]: the estimates, their errors, growth and suspected leaks.
//!
//! [`attribute`](fn@attribute) runs one report; `plimsoll memory` calls it once, the
//! [`Guard`](crate::guard::Guard) on a schedule. It only reads: nothing is
//! written into the Redis it walks.

mod config;
pub mod families;
mod family;
mod layouts;
pub mod overhead;
pub(crate) mod pacer;
pub mod report;
mod report_history;
pub mod scan;
pub mod segments;
mod tally;
pub mod usage;

use std::time::Instant;

pub use families::{Classifier, Family, Layout, Role};
pub use overhead::OutsideKeys;
pub use report::{Accounting, FamilyReport, MemoryReport, NodeScanStats};
pub use report_history::{ReportHistory, ReportSnapshot};
pub use scan::AttributeConfig;

use crate::clock::Clock;
use crate::connection::Redis;
use crate::error::Result;

/// Walks every primary of `redis` (at once, each within its own budget) and
/// reports memory per family. With a `history`, growth since the previous
/// report and suspected leaks are filled in, and the report is remembered.
pub async fn attribute(
    redis: &Redis,
    config: &AttributeConfig,
    clock: &dyn Clock,
    history: Option<&mut ReportHistory>,
) -> Result<MemoryReport> {
    config.validate()?;
    let at_ms = clock.now_ms();
    let started = Instant::now();
    let primaries = redis.primaries().await?;
    let walks = primaries
        .iter()
        .map(|primary| scan::scan_node_apart(primary, config));
    let scans = futures::future::try_join_all(walks).await?;
    let mut report = report::assemble(
        redis,
        at_ms,
        started.elapsed().as_secs_f64(),
        config.budget,
        scans,
    )
    .await?;
    report.duration_secs = started.elapsed().as_secs_f64();
    if let Some(history) = history {
        history.record(&mut report)?;
    }
    Ok(report)
}
