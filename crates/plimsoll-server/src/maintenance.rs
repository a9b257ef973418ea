//! Maintenance for every queue the server knows: the promoter, rescuer and
//! janitor ([`plimsoll::worker::Maintenance`]) of each configured queue and
//! of each queue in the registry (`<prefix>:queues`, read again every
//! [`REFRESH_INTERVAL`]), at most [`MAX_MAINTAINED_QUEUES`].
//!
//! Library workers run these services for their own queues, but a queue may
//! have no worker running (an HTTP producer and workers that come and go, or
//! workers started with maintenance off): its age bounds must still fire
//! (invariant 1: bounded by construction, on idle queues too), its delayed
//! jobs still become waiting, and the leases of a worker that crashed still
//! come back. Running them twice is safe (every step is one script).
//!
//! Each queue's janitor applies that queue's own rules, never blindly the
//! defaults: the rules configured here (`[queues.<name>.retention]`), else
//! those its workers recorded in Redis ([`plimsoll::Queue::recorded_retention`]),
//! else the defaults (nothing recorded: no worker of this version ever ran
//! it, so the defaults are what its settles applied). A queue that keeps
//! completed jobs for a week in a library worker's settings keeps them here
//! too. Rules configured here are recorded for the queue when its services
//! start, so `plimsoll trim plimsoll` and other servers apply them as well.
//! When the rules of a queue change, its services restart with the new ones.
//!
//! Queues with a push worker are left out: the push worker runs its own.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use plimsoll::worker::{Maintenance, MaintenanceConfig, PromoterConfig};
use plimsoll::{Queue, QueueConfig, Retention};
use tokio_util::sync::CancellationToken;

use crate::state::AppState;

/// How often the registry and the queues' recorded rules are read again.
pub const REFRESH_INTERVAL: Duration = Duration::from_secs(30);

/// The most queues whose services one server runs; the rest (by name) are
/// left out with a warning. Each idle queue costs Redis about 1.2 script
/// calls a second (promoter every second, rescuer every 5 s, janitor every
/// 30 s), so 1,000 queues cost about 1,200 calls a second.
pub const MAX_MAINTAINED_QUEUES: usize = 1_000;

/// The promoter's longest sleep here. Library workers promote every 250 ms
/// (`plimsoll::worker::services::promoter::DEFAULT_PROMOTE_INTERVAL`) for
/// their own queues; here the promoter is a backstop for queues whose
/// workers do not run one, and a second per queue keeps the load of
/// hundreds of idle queues small. A delayed job is then at most a second
/// late when nothing else promotes it.
pub const PROMOTE_INTERVAL: Duration = Duration::from_secs(1);

struct Running {
    retention: Retention,
    services: Maintenance,
}

/// Runs the services of every known queue except those in `skip` (queues
/// with a push worker) until `stop`, then stops them all. The registry is
/// read again every `refresh_every` ([`REFRESH_INTERVAL`] in the server).
pub async fn run(
    state: AppState,
    skip: BTreeSet<String>,
    stop: CancellationToken,
    refresh_every: Duration,
) {
    let mut running: BTreeMap<String, Running> = BTreeMap::new();
    let mut warned_of_too_many = false;
    loop {
        refresh(&state, &skip, &mut running, &mut warned_of_too_many).await;
        tokio::select! {
            () = stop.cancelled() => break,
            () = tokio::time::sleep(refresh_every) => {}
        }
    }
    for (_, queue) in running {
        queue.services.stop().await;
    }
}

/// Starts the services of queues not yet maintained, restarts those whose
/// rules changed, and stops those that were deleted. When Redis cannot be
/// read, what runs keeps running.
///
/// A queue missing from the list is stopped only when its `meta` key is
/// gone too (`Queue::delete` removes it): the list is the registry plus
/// what a bounded `SCAN` finds, so a queue whose registration a failover
/// lost, on a keyspace too large for the scan to reach it, is missing from
/// it while it still holds jobs, and its age bounds must go on firing.
async fn refresh(
    state: &AppState,
    skip: &BTreeSet<String>,
    running: &mut BTreeMap<String, Running>,
    warned_of_too_many: &mut bool,
) {
    let config = state.config();
    let mut names: BTreeSet<String> = config
        .queues
        .keys()
        .map(|q| q.as_str().to_string())
        .collect();
    match Queue::list(state.redis(), &config.prefix).await {
        Ok(registered) => names.extend(registered.into_iter().map(|q| q.as_str().to_string())),
        Err(err) => {
            tracing::warn!(error = %err, "could not read the queue registry; maintenance goes on for the queues known");
            names.extend(running.keys().cloned());
        }
    }
    names.retain(|name| !skip.contains(name));
    for name in running.keys() {
        if !names.contains(name) && still_there(state, name).await {
            names.insert(name.clone());
        }
    }
    if names.len() > MAX_MAINTAINED_QUEUES {
        if !*warned_of_too_many {
            tracing::warn!(
                queues = names.len(),
                max = MAX_MAINTAINED_QUEUES,
                "more queues than this server maintains; the rest (by name) get no promoter, rescuer or janitor here"
            );
            *warned_of_too_many = true;
        }
        // Configured queues first, then the rest by name.
        let configured: BTreeSet<String> = names
            .iter()
            .filter(|n| config.queues.keys().any(|q| q.as_str() == n.as_str()))
            .cloned()
            .collect();
        let rest: Vec<String> = names
            .difference(&configured)
            .take(MAX_MAINTAINED_QUEUES.saturating_sub(configured.len()))
            .cloned()
            .collect();
        names = configured.into_iter().chain(rest).collect();
    }

    let gone: Vec<String> = running
        .keys()
        .filter(|name| !names.contains(*name))
        .cloned()
        .collect();
    for name in gone {
        if let Some(queue) = running.remove(&name) {
            tracing::info!(queue = %name, "queue deleted (or past the cap); stopping its maintenance");
            queue.services.stop().await;
        }
    }

    for name in names {
        if let Err(err) = maintain(state, &name, running).await {
            tracing::warn!(queue = %name, error = %err, "could not start the queue's maintenance; trying again later");
        }
    }
}

/// Whether queue `name` still has its `meta` key; also when that cannot be
/// told (Redis not answering: what runs keeps running).
async fn still_there(state: &AppState, name: &str) -> bool {
    let Ok(queue) = state.queue(name) else {
        return false;
    };
    let exists: plimsoll::Result<bool> = state
        .redis()
        .query(redis::cmd("EXISTS").arg(queue.keys().meta()))
        .await;
    exists.unwrap_or(true)
}

/// Starts (or restarts, when its rules changed) the services of one queue.
async fn maintain(
    state: &AppState,
    name: &str,
    running: &mut BTreeMap<String, Running>,
) -> plimsoll::Result<()> {
    let base = state.queue_config(name);
    let configured = state
        .config()
        .queues
        .iter()
        .find(|(q, _)| q.as_str() == name)
        .and_then(|(_, s)| s.retention);
    let probe = Queue::new(state.redis().clone(), name, base.clone())?;
    let retention = match configured {
        Some(retention) => retention,
        None => match probe.recorded_retention().await {
            Ok(recorded) => recorded.unwrap_or_default(),
            // Redis is out of reach: what runs keeps its rules.
            Err(_) if running.contains_key(name) => return Ok(()),
            Err(err) => return Err(err),
        },
    };
    if running.get(name).is_some_and(|r| r.retention == retention) {
        return Ok(());
    }
    let queue = Queue::new(
        state.redis().clone(),
        name,
        QueueConfig { retention, ..base },
    )?;
    if configured.is_some() {
        queue.record_retention().await?;
    }
    let services = Maintenance::start(
        &queue,
        MaintenanceConfig {
            promoter: PromoterConfig {
                interval: PROMOTE_INTERVAL,
                ..PromoterConfig::default()
            },
            ..MaintenanceConfig::default()
        },
    )?;
    if let Some(previous) = running.insert(
        name.to_string(),
        Running {
            retention,
            services,
        },
    ) {
        tracing::info!(queue = %name, "the queue's retention rules changed; its maintenance restarted with them");
        previous.services.stop().await;
    }
    Ok(())
}
