//! The database edge: connection strings, connecting (TLS, SCRAM), catalog
//! queries and PostgreSQL's client programs (walrelay's own state on the
//! target is [`crate::state`]).

pub mod bin;
pub mod catalog;
pub mod connect;
pub mod conninfo;
pub mod error;
pub mod selection;
