//! A worker's view of its leases.
//!
//! Each lease is known by its job id *and* its fencing token (see
//! `keyspace::QueueKeys::active`): a job rescued from this worker and
//! leased to it again is two leases, two runs, two cancel tokens. The old
//! run can still be told to stop, and its outcome is dropped by the scripts
//! because its token is no longer the one in Redis.
//!
//! A lease lasts [`WorkerConfig::lease`](super::WorkerConfig::lease) from
//! the moment the request that last set its deadline was sent (the fetch,
//! then each heartbeat), measured here by the monotonic clock: if it cannot
//! be renewed in time (Redis frozen, unreachable, slow), the worker tells
//! its handler to stop before the deadline passes, instead of letting it run
//! on while the rescuer hands the job to someone else.

use std::time::{Duration, Instant};

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::queue::scripts::calls::Call;

/// One lease: a job id and the token of the fetch that leased it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(super) struct LeaseKey {
    pub(super) id: u64,
    pub(super) token: u64,
}

/// A leased job, as the worker tracks it until it is settled.
#[derive(Debug)]
pub(super) struct Lease {
    /// When the handler started (None while the job waits in hand).
    pub(super) started: Option<Instant>,
    /// The run's timeout, known once the record is decoded.
    pub(super) timeout: Duration,
    /// When the request that last renewed the lease in Redis was sent.
    pub(super) renewed_at: Instant,
    /// Signals the handler to stop.
    pub(super) cancel: CancellationToken,
    /// The task running the handler, so that shutdown can abort it and
    /// wait for it to end.
    pub(super) task: Option<JoinHandle<()>>,
}

impl Lease {
    pub(super) fn new(renewed_at: Instant) -> Self {
        Self {
            started: None,
            timeout: Duration::ZERO,
            renewed_at,
            cancel: CancellationToken::new(),
            task: None,
        }
    }

    /// Whether the task that ran the handler has ended (or never started),
    /// so that handing the job back cannot leave a run behind.
    pub(super) fn is_idle(&self) -> bool {
        self.task.as_ref().is_none_or(JoinHandle::is_finished)
    }
}

/// Adds leases as `token, count, ids...` groups, the form `complete.lua`
/// and `hand_back.lua` take: one group per run of equal tokens, so leases
/// sorted by token (the jobs of one fetch share theirs) cost one argument
/// per job plus two per fetch.
pub(super) fn lease_groups(call: &mut Call<'_>, leases: &[LeaseKey]) {
    let mut rest = leases;
    while let Some(first) = rest.first() {
        let run = rest.iter().take_while(|l| l.token == first.token).count();
        call.arg(first.token).arg(run);
        for lease in &rest[..run] {
            call.arg(lease.id);
        }
        rest = &rest[run..];
    }
}
