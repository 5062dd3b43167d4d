//! Sans-IO decoder for PostgreSQL's `pgoutput` logical replication messages.
#![forbid(unsafe_code)]

mod lsn;

pub use lsn::Lsn;
