//! The database edge: connection strings, connecting (TLS, SCRAM), catalog
//! queries and PostgreSQL's client programs (walrelay's own state on the
//! target is [`crate::state`]).

pub(crate) mod bin;
pub(crate) mod catalog;
pub mod connect;
pub mod conninfo;
pub(crate) mod error;
pub mod matview;
pub(crate) mod publication;
pub mod selection;
pub(crate) mod widening;
