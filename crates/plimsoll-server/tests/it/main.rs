//! Integration tests of `plimsoll serve`'s router, in-process (`app(state)`
//! with `oneshot`), against private redis-servers.

mod support;

mod api;
mod dashboard;
mod fuzz;
mod intake;
mod push;
mod queues;
