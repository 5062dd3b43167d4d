//! walrelay: moves a live PostgreSQL database into another PostgreSQL with
//! near-zero downtime (consistent snapshot copy, then a logical replication
//! stream applied in source commit order). The architecture is described in
//! `docs/ARCHITECTURE.md`.

pub mod apply;
pub mod check;
pub mod cleanup;
pub mod cli;
pub mod config;
pub mod cutover;
pub mod demo;
pub mod http;
pub mod local_cluster;
pub mod metrics;
pub mod migration;
pub mod monitor;
pub mod pg;
pub mod snapshot;
mod state;
pub mod status;
pub mod status_report;
pub mod stream;
pub mod verify;
