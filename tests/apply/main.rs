//! `walrelay stream` applying each kind of change (docs/ARCHITECTURE.md, Dataflow: Apply)
//! against real clusters: snapshot, stream, write on the source, wait until
//! the target's checkpoint passes the source position read after the
//! writes, compare row by row.
//!
//! One test binary, split by behaviour: `keys` (rows found by their key,
//! TRUNCATE), `values` (values arrive unchanged), `tables` (generated
//! columns, partitions, column matching, identifiers), `transactions`
//! (large, prepared, batched), `triggers` (target triggers and the replica
//! role) and `refusals` (changes the target refuses stop the stream).

#[path = "../harness/mod.rs"]
mod harness;
#[path = "../stream_support/mod.rs"]
mod stream_support;

mod keys;
mod refusals;
mod tables;
mod transactions;
mod triggers;
mod values;
