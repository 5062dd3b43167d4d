//! walrelay: moves a live PostgreSQL database into another PostgreSQL with
//! near-zero downtime (consistent snapshot copy, then a logical replication
//! stream applied in source commit order). The architecture is described in
//! `docs/ARCHITECTURE.md`.
//!
//! The library's public surface is what the binary and the integration tests
//! use; everything else is `pub(crate)` (`unreachable_pub` keeps it so).
#![warn(unreachable_pub)]

pub(crate) mod apply;
pub(crate) mod check;
pub(crate) mod cleanup;
pub mod cli;
pub mod config;
pub mod cutover;
pub mod ddl;
pub(crate) mod http;
pub mod local_cluster;
pub mod map;
pub(crate) mod metrics;
pub mod migration;
pub mod monitor;
pub mod pg;
pub(crate) mod reverse;
pub mod snapshot;
pub mod spool;
pub(crate) mod state;
pub mod status;
pub(crate) mod status_report;
pub(crate) mod stream;
pub mod verify;
