//! The database edge: connection strings, connecting (TLS, SCRAM), catalog
//! queries, PostgreSQL's client programs and the `walrelay` state schema on
//! the target.

pub mod bin;
pub mod catalog;
pub mod connect;
pub mod conninfo;
pub mod error;
pub mod selection;
pub mod state;
