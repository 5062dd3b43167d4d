//! The database edge: connection strings, connecting (TLS, SCRAM), catalog
//! queries and the `walrelay` state schema on the target.

pub mod conninfo;
pub mod selection;
