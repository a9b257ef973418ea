//! Integration tests of the plimsoll library, each against a private
//! `redis-server` (or a local 3-primary cluster) started by the test.

mod support;

mod cache;
mod cluster;
mod cluster_failover;
mod failover;
mod guard;
mod guard_attribute;
mod guard_layouts;
mod guard_trim;
mod lazy_connect;
mod leases;
mod memory;
mod queue;
mod redis_policy;
mod registry;
mod retention;
mod worker;
