//! The pgoutput messages, one type per message of "Logical Replication Message Formats".
//!
//! Timestamps are kept as sent: microseconds since 2000-01-01 00:00:00 UTC (see
//! [`POSTGRES_EPOCH_UNIX_MICROS`]). Names are `String`s: the server converts them to the
//! client encoding, which a replication client sets to UTF-8.

use bytes::Bytes;

use crate::lsn::Lsn;
use crate::tuple::{OldTuple, TupleData};

/// The PostgreSQL epoch (2000-01-01 00:00:00 UTC) in microseconds since the Unix epoch.
pub const POSTGRES_EPOCH_UNIX_MICROS: i64 = 946_684_800_000_000;

/// One decoded pgoutput message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// `B`: a transaction starts.
    Begin(Begin),
    /// `C`: the transaction commits.
    Commit(Commit),
    /// `O`: the transaction was replicated into this server from elsewhere.
    Origin(Origin),
    /// `R`: a table's schema, sent before its first change and after any schema change.
    Relation(Relation),
    /// `Y`: a non-builtin column type.
    Type(Type),
    /// `I`: a row inserted.
    Insert(Insert),
    /// `U`: a row updated.
    Update(Update),
    /// `D`: a row deleted.
    Delete(Delete),
    /// `T`: tables truncated.
    Truncate(Truncate),
    /// `M`: a message from `pg_logical_emit_message`.
    Message(LogicalMessage),
    /// `S` (v2+): a block of an in-progress transaction starts.
    StreamStart(StreamStart),
    /// `E` (v2+): the current stream block ends.
    StreamStop,
    /// `c` (v2+): a streamed transaction commits.
    StreamCommit(StreamCommit),
    /// `A` (v2+): a streamed (sub)transaction aborts.
    StreamAbort(StreamAbort),
    /// `b` (v3+): a prepared transaction starts.
    BeginPrepare(BeginPrepare),
    /// `P` (v3+): the transaction is prepared.
    Prepare(Prepare),
    /// `K` (v3+): a prepared transaction commits.
    CommitPrepared(CommitPrepared),
    /// `r` (v3+): a prepared transaction rolls back.
    RollbackPrepared(RollbackPrepared),
    /// `p` (v3+): a streamed transaction is prepared.
    StreamPrepare(Prepare),
}

impl Message {
    /// The message's tag byte on the wire.
    pub fn tag(&self) -> u8 {
        match self {
            Message::Begin(_) => b'B',
            Message::Commit(_) => b'C',
            Message::Origin(_) => b'O',
            Message::Relation(_) => b'R',
            Message::Type(_) => b'Y',
            Message::Insert(_) => b'I',
            Message::Update(_) => b'U',
            Message::Delete(_) => b'D',
            Message::Truncate(_) => b'T',
            Message::Message(_) => b'M',
            Message::StreamStart(_) => b'S',
            Message::StreamStop => b'E',
            Message::StreamCommit(_) => b'c',
            Message::StreamAbort(_) => b'A',
            Message::BeginPrepare(_) => b'b',
            Message::Prepare(_) => b'P',
            Message::CommitPrepared(_) => b'K',
            Message::RollbackPrepared(_) => b'r',
            Message::StreamPrepare(_) => b'p',
        }
    }

    /// The message's name as in the protocol documentation, for logs and metrics.
    pub fn name(&self) -> &'static str {
        crate::decode::message_name(self.tag()).unwrap_or("unknown")
    }
}

/// Begin: the start of a (non-streamed) transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Begin {
    /// LSN of the commit record; equals the matching [`Commit::commit_lsn`].
    pub final_lsn: Lsn,
    /// Commit time, µs since 2000-01-01 UTC.
    pub commit_time: i64,
    /// Transaction id.
    pub xid: u32,
}

/// Commit: the end of a (non-streamed) transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Commit {
    /// Flags; currently unused (0).
    pub flags: u8,
    /// LSN of the commit record.
    pub commit_lsn: Lsn,
    /// LSN just past the commit record: the position to acknowledge once applied.
    pub end_lsn: Lsn,
    /// Commit time, µs since 2000-01-01 UTC.
    pub commit_time: i64,
}

/// Origin: the replication origin of the current transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// Commit LSN on the origin server.
    pub commit_lsn: Lsn,
    /// Name of the origin.
    pub name: String,
}

/// A table's replica identity setting (`relreplident`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReplicaIdentity {
    /// `d`: the primary key.
    Default,
    /// `n`: none; UPDATE/DELETE cannot be published.
    Nothing,
    /// `f`: all columns; old rows arrive whole (`O`).
    Full,
    /// `i`: a chosen unique index.
    Index,
}

/// Relation: a table's schema as the following changes use it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relation {
    /// Transaction id; present only inside a stream block.
    pub xid: Option<u32>,
    /// The table's OID, which Insert/Update/Delete/Truncate refer to.
    pub id: u32,
    /// Schema name; an empty string means `pg_catalog`.
    pub namespace: String,
    /// Table name.
    pub name: String,
    /// Which columns identify a row in UPDATE/DELETE.
    pub replica_identity: ReplicaIdentity,
    /// The published columns, in the order tuple cells use.
    pub columns: Vec<Column>,
}

/// One column of a [`Relation`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    /// Part of the replica identity (under FULL every column is flagged).
    pub key: bool,
    /// Column name.
    pub name: String,
    /// Type OID.
    pub type_oid: u32,
    /// Type modifier (`atttypmod`); -1 when there is none.
    pub type_modifier: i32,
}

/// Type: a non-builtin type used by a column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Type {
    /// Transaction id; present only inside a stream block.
    pub xid: Option<u32>,
    /// The type's OID as columns refer to it (for a domain, the domain's OID).
    pub id: u32,
    /// Schema name of the type (for a domain, of its base type); empty means `pg_catalog`.
    pub namespace: String,
    /// Type name (for a domain, its base type's name).
    pub name: String,
}

/// Insert: one new row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Insert {
    /// Transaction id; present only inside a stream block.
    pub xid: Option<u32>,
    /// OID of the table, announced by an earlier [`Relation`].
    pub relation_id: u32,
    /// The new row.
    pub new: TupleData,
}

/// Update: one changed row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Update {
    /// Transaction id; present only inside a stream block.
    pub xid: Option<u32>,
    /// OID of the table, announced by an earlier [`Relation`].
    pub relation_id: u32,
    /// The old key (`K`, when it changed) or old row (`O`, REPLICA IDENTITY FULL), if sent.
    pub old: Option<OldTuple>,
    /// The new row; unchanged TOASTed columns are [`crate::Cell::UnchangedToast`].
    pub new: TupleData,
}

/// Delete: one removed row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delete {
    /// Transaction id; present only inside a stream block.
    pub xid: Option<u32>,
    /// OID of the table, announced by an earlier [`Relation`].
    pub relation_id: u32,
    /// The old key (`K`) or whole old row (`O`, REPLICA IDENTITY FULL).
    pub old: OldTuple,
}

/// The option bits of a TRUNCATE.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TruncateOptions {
    /// Bit 1: `CASCADE` was given (the native apply worker ignores it).
    pub cascade: bool,
    /// Bit 2: `RESTART IDENTITY` was given.
    pub restart_identity: bool,
}

/// Truncate: one TRUNCATE statement, over one or more tables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Truncate {
    /// Transaction id; present only inside a stream block.
    pub xid: Option<u32>,
    /// CASCADE and RESTART IDENTITY.
    pub options: TruncateOptions,
    /// OIDs of the truncated tables.
    pub relation_ids: Vec<u32>,
}

/// Message: a logical decoding message (`pg_logical_emit_message`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogicalMessage {
    /// Transaction id; present only inside a stream block.
    pub xid: Option<u32>,
    /// Sent as part of a transaction (else immediately, outside any Begin/Commit).
    pub transactional: bool,
    /// LSN of the message.
    pub lsn: Lsn,
    /// The prefix given by the writer.
    pub prefix: String,
    /// The content, as a zero-copy slice of the payload.
    pub content: Bytes,
}

/// Stream Start: a block of changes of an in-progress transaction follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamStart {
    /// Transaction id of the streamed transaction.
    pub xid: u32,
    /// The first block of this transaction.
    pub first_segment: bool,
}

/// Stream Commit: a streamed transaction commits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamCommit {
    /// Transaction id.
    pub xid: u32,
    /// Flags; currently unused (0).
    pub flags: u8,
    /// LSN of the commit record.
    pub commit_lsn: Lsn,
    /// LSN just past the commit record: the position to acknowledge once applied.
    pub end_lsn: Lsn,
    /// Commit time, µs since 2000-01-01 UTC.
    pub commit_time: i64,
}

/// Stream Abort: a streamed transaction, or one of its subtransactions, aborts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamAbort {
    /// Transaction id of the top-level transaction.
    pub xid: u32,
    /// The aborted (sub)transaction; equals `xid` when the whole transaction aborts.
    pub subxid: u32,
    /// Abort LSN and time: sent only by protocol v4 with `streaming = parallel`.
    pub parallel: Option<ParallelAbort>,
}

/// The abort position that protocol v4 adds to Stream Abort in parallel streaming mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParallelAbort {
    /// LSN of the abort record.
    pub abort_lsn: Lsn,
    /// Abort time, µs since 2000-01-01 UTC.
    pub abort_time: i64,
}

/// Begin Prepare: the start of a transaction that will be prepared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BeginPrepare {
    /// LSN of the PREPARE record.
    pub prepare_lsn: Lsn,
    /// LSN just past the PREPARE record.
    pub end_lsn: Lsn,
    /// Prepare time, µs since 2000-01-01 UTC.
    pub prepare_time: i64,
    /// Transaction id.
    pub xid: u32,
    /// Global transaction identifier given to PREPARE TRANSACTION.
    pub gid: String,
}

/// Prepare (and Stream Prepare): the transaction is prepared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prepare {
    /// Flags; currently unused (0).
    pub flags: u8,
    /// LSN of the PREPARE record.
    pub prepare_lsn: Lsn,
    /// LSN just past the PREPARE record.
    pub end_lsn: Lsn,
    /// Prepare time, µs since 2000-01-01 UTC.
    pub prepare_time: i64,
    /// Transaction id.
    pub xid: u32,
    /// Global transaction identifier.
    pub gid: String,
}

/// Commit Prepared: a prepared transaction commits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitPrepared {
    /// Flags; currently unused (0).
    pub flags: u8,
    /// LSN of the COMMIT PREPARED record.
    pub commit_lsn: Lsn,
    /// LSN just past the COMMIT PREPARED record.
    pub end_lsn: Lsn,
    /// Commit time, µs since 2000-01-01 UTC.
    pub commit_time: i64,
    /// Transaction id.
    pub xid: u32,
    /// Global transaction identifier.
    pub gid: String,
}

/// Rollback Prepared: a prepared transaction rolls back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RollbackPrepared {
    /// Flags; currently unused (0).
    pub flags: u8,
    /// LSN just past the PREPARE record of the rolled-back transaction.
    pub prepare_end_lsn: Lsn,
    /// LSN just past the ROLLBACK PREPARED record.
    pub rollback_end_lsn: Lsn,
    /// Prepare time, µs since 2000-01-01 UTC.
    pub prepare_time: i64,
    /// Rollback time, µs since 2000-01-01 UTC.
    pub rollback_time: i64,
    /// Transaction id.
    pub xid: u32,
    /// Global transaction identifier.
    pub gid: String,
}
