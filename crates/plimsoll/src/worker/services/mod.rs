//! Background services of a queue, one file each, with a common shape: a
//! `Config` with named defaults, and a [`Service`](crate::service::Service)
//! run by [`crate::service::spawn`].
//!
//! - [`promoter`]: scheduled → waiting when due (delays, retry backoff).
//! - [`rescuer`]: active → waiting when a lease expired (crashed or stuck
//!   worker).
//! - [`janitor`]: trims the completed and dead sets to their retention
//!   bounds on a timer, so that age bounds hold on an idle queue too.
//!
//! Several workers of one queue may run them at once: every step is one
//! atomic script, and running it twice does no harm. A queue that no worker
//! with maintenance serves gets them from [`Maintenance`] (which `plimsoll
//! serve` runs for every queue it knows), so that age bounds and expired
//! leases are looked after there too.

pub mod janitor;
pub mod promoter;
pub mod rescuer;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use janitor::JanitorConfig;
pub use promoter::PromoterConfig;
pub use rescuer::RescuerConfig;

use super::WorkerConfig;
use crate::error::Result;
use crate::queue::Queue;
use crate::service::spawn;

/// Settings of the maintenance services run on their own.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MaintenanceConfig {
    /// Promoter settings.
    pub promoter: PromoterConfig,
    /// Rescuer settings.
    pub rescuer: RescuerConfig,
    /// Janitor settings.
    pub janitor: JanitorConfig,
}

impl MaintenanceConfig {
    fn validate(&self) -> Result<()> {
        self.promoter.validate()?;
        self.rescuer.validate()?;
        self.janitor.validate()
    }
}

/// The promoter, rescuer and janitor of one queue, running without a worker
/// (a worker runs its own unless told not to). The janitor applies the
/// retention of the queue handle given, so give it the queue's real rules
/// (see [`Queue::recorded_retention`]).
#[derive(Debug)]
pub struct Maintenance {
    tasks: Vec<JoinHandle<()>>,
    stop: CancellationToken,
}

impl Maintenance {
    /// Checks the settings and starts the services on the current Tokio
    /// runtime.
    pub fn start(queue: &Queue, config: MaintenanceConfig) -> Result<Self> {
        config.validate()?;
        let stop = CancellationToken::new();
        let tasks = spawn_all(queue, &config, &stop);
        Ok(Self { tasks, stop })
    }

    /// Stops the services; a round in progress finishes first.
    pub async fn stop(self) {
        self.stop.cancel();
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

/// The promoter, rescuer and janitor of `queue`.
pub(crate) fn spawn_maintenance(
    queue: &Queue,
    config: &WorkerConfig,
    shutdown: &CancellationToken,
) -> Vec<JoinHandle<()>> {
    let config = MaintenanceConfig {
        promoter: config.promoter,
        rescuer: config.rescuer,
        janitor: config.janitor,
    };
    spawn_all(queue, &config, shutdown)
}

fn spawn_all(
    queue: &Queue,
    config: &MaintenanceConfig,
    shutdown: &CancellationToken,
) -> Vec<JoinHandle<()>> {
    vec![
        spawn(
            promoter::Promoter::new(queue.clone(), config.promoter),
            shutdown.clone(),
        ),
        spawn(
            rescuer::Rescuer::new(queue.clone(), config.rescuer),
            shutdown.clone(),
        ),
        spawn(
            janitor::Janitor::new(queue.clone(), config.janitor),
            shutdown.clone(),
        ),
    ]
}
