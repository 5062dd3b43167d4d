//! Sans-IO decoder for PostgreSQL's `pgoutput` logical replication messages.
//!
//! [`decode`] turns one payload (the data of an XLogData message, or a `data` value from
//! `pg_logical_slot_peek_binary_changes`) into a [`Message`], for protocol versions 1–4.
//! It never panics, never allocates from an unchecked wire count, rejects trailing bytes,
//! and its errors name the message, the field and the byte offset ([`DecodeError`]).
//! Tuple values are zero-copy slices of the input [`bytes::Bytes`].
//!
//! # Where the format facts come from
//! - Message layouts, field widths, tags, the tuple kinds `n`/`u`/`t`/`b`, the `K`/`O`/`N`
//!   tuple markers, the Truncate option bits and the v4 Stream Abort fields: the PostgreSQL
//!   documentation, "Logical Replication Message Formats" (protocol chapter), checked
//!   against `src/backend/replication/logical/proto.c`.
//! - That the xid prefix of Relation/Type/Insert/Update/Delete/Truncate/Message exists only
//!   inside a stream block: `pgoutput.c` passes a valid xid to `logicalrep_write_*` only
//!   while streaming ([`DecodeContext::in_stream`]).
//! - That the v4 abort LSN and time are sent only with `streaming = parallel`:
//!   `pgoutput_stream_abort` in `pgoutput.c` ([`DecodeContext::parallel_abort`]).
//! - That a domain's Type message names its base type, and that an empty namespace means
//!   `pg_catalog`: `logicalrep_write_typ` and `logicalrep_write_namespace` in `proto.c`,
//!   confirmed by the fixtures captured from PostgreSQL 15 (`proto/fixtures/`).
//!
//! Names (schemas, tables, columns, types, origins, prefixes, GIDs) are `String`s checked
//! as UTF-8: the server converts them to the client encoding, which walrelay sets to UTF-8.
//! Flags bytes with bits the protocol does not define are refused rather than ignored.
//!
//! ```
//! use bytes::Bytes;
//! use walrelay_proto::{decode, Cell, DecodeContext, Message, OldTuple};
//!
//! // Update of relation 16384: old key (1 text cell "2"), then the new row ("3", NULL).
//! let payload = Bytes::from_static(b"U\0\0\x40\0K\0\x01t\0\0\0\x012N\0\x02t\0\0\0\x013n");
//! let Message::Update(u) = decode(&payload, DecodeContext::default()).unwrap() else { panic!() };
//! assert_eq!(u.relation_id, 16384);
//! let Some(OldTuple::Key(old)) = &u.old else { panic!() };
//! assert_eq!(old.cells, [Cell::Text(Bytes::from_static(b"2"))]);
//! assert_eq!(u.new.cells, [Cell::Text(Bytes::from_static(b"3")), Cell::Null]);
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod decode;
#[cfg(feature = "test-util")]
mod encode;
mod error;
#[cfg(feature = "test-util")]
pub mod fixture;
mod lsn;
mod message;
mod reader;
mod tuple;

pub use decode::{decode, DecodeContext};
#[cfg(feature = "test-util")]
pub use encode::encode;
pub use error::{DecodeError, DecodeErrorKind};
pub use lsn::{Lsn, ParseLsnError};
pub use message::{
    Begin, BeginPrepare, Column, Commit, CommitPrepared, Delete, Insert, LogicalMessage, Message,
    Origin, ParallelAbort, Prepare, Relation, ReplicaIdentity, RollbackPrepared, StreamAbort,
    StreamCommit, StreamStart, Truncate, TruncateOptions, Type, Update, POSTGRES_EPOCH_UNIX_MICROS,
};
pub use tuple::{Cell, OldTuple, TupleData};
