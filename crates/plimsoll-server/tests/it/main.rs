//! Integration tests of `plimsoll serve`'s router, in-process (`app(state)`
//! with `oneshot`), against private redis-servers.

mod support;

mod api;
mod dashboard;
mod edges;
mod fuzz;
mod intake;
mod maintenance;
mod metrics;
mod push;
mod queues;
mod spool_faults;
