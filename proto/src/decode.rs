//! `decode`: one pgoutput payload to one [`Message`].
//!
//! Field order and widths follow "Logical Replication Message Formats" in the PostgreSQL
//! documentation (protocol versions 1–4), checked against `logicalrep_write_*` in
//! `src/backend/replication/logical/proto.c`.

use bytes::Bytes;

use crate::error::{DecodeError, DecodeErrorKind};
use crate::message::*;
use crate::reader::Reader;
use crate::tuple::{read_tuple, OldTuple};

/// What the decoder cannot tell from the bytes alone; the caller tracks it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DecodeContext {
    /// Between Stream Start and Stream Stop: Relation, Type, Insert, Update, Delete,
    /// Truncate and Message then start with the xid of the (sub)transaction.
    pub in_stream: bool,
    /// Stream Abort carries the abort LSN and time: protocol v4 with `streaming = parallel`.
    pub parallel_abort: bool,
}

impl DecodeContext {
    /// Updates `in_stream` from a decoded message: set by Stream Start, cleared by Stream Stop.
    pub fn observe(&mut self, message: &Message) {
        match message {
            Message::StreamStart(_) => self.in_stream = true,
            Message::StreamStop => self.in_stream = false,
            _ => {}
        }
    }
}

/// The documentation's name for a message tag, or `None` if it is not one.
pub(crate) fn message_name(tag: u8) -> Option<&'static str> {
    Some(match tag {
        b'B' => "Begin",
        b'C' => "Commit",
        b'O' => "Origin",
        b'R' => "Relation",
        b'Y' => "Type",
        b'I' => "Insert",
        b'U' => "Update",
        b'D' => "Delete",
        b'T' => "Truncate",
        b'M' => "Message",
        b'S' => "Stream Start",
        b'E' => "Stream Stop",
        b'c' => "Stream Commit",
        b'A' => "Stream Abort",
        b'b' => "Begin Prepare",
        b'P' => "Prepare",
        b'K' => "Commit Prepared",
        b'r' => "Rollback Prepared",
        b'p' => "Stream Prepare",
        _ => return None,
    })
}

/// Decodes one pgoutput message (the payload of an XLogData message, or the `data` column
/// of `pg_logical_slot_peek_binary_changes`). Slices of `data` are shared, not copied.
pub fn decode(data: &Bytes, ctx: DecodeContext) -> Result<Message, DecodeError> {
    let mut r = Reader::new(data, 0, "unknown");
    let tag = r.u8("tag")?;
    let Some(name) = message_name(tag) else {
        return Err(r.error_at(0, "tag", DecodeErrorKind::UnknownTag(tag)));
    };
    let mut r = Reader::new(data, 1, name);
    let message = decode_body(tag, &mut r, ctx)?;
    r.finish()?;
    Ok(message)
}

fn decode_body(tag: u8, r: &mut Reader<'_>, ctx: DecodeContext) -> Result<Message, DecodeError> {
    // 'K' and 'O' are also sub-markers inside Update/Delete; here they are only ever the
    // first byte of a payload, so they mean Commit Prepared and Origin.
    Ok(match tag {
        b'B' => Message::Begin(begin(r)?),
        b'C' => Message::Commit(commit(r)?),
        b'O' => Message::Origin(origin(r)?),
        b'R' => Message::Relation(relation(r, ctx)?),
        b'Y' => Message::Type(type_message(r, ctx)?),
        b'I' => Message::Insert(insert(r, ctx)?),
        b'U' => Message::Update(update(r, ctx)?),
        b'D' => Message::Delete(delete(r, ctx)?),
        b'T' => Message::Truncate(truncate(r, ctx)?),
        b'M' => Message::Message(logical_message(r, ctx)?),
        b'S' => Message::StreamStart(stream_start(r)?),
        b'E' => Message::StreamStop,
        b'c' => Message::StreamCommit(stream_commit(r)?),
        b'A' => Message::StreamAbort(stream_abort(r, ctx)?),
        b'b' => Message::BeginPrepare(begin_prepare(r)?),
        b'P' => Message::Prepare(prepare(r)?),
        b'K' => Message::CommitPrepared(commit_prepared(r)?),
        b'r' => Message::RollbackPrepared(rollback_prepared(r)?),
        // message_name() accepted the tag, so this arm is Stream Prepare.
        _ => Message::StreamPrepare(prepare(r)?),
    })
}

/// The xid that prefixes data messages only inside a stream block (proto.c writes it only
/// when the caller passes a valid xid, which pgoutput does only while streaming).
fn stream_xid(r: &mut Reader<'_>, ctx: DecodeContext) -> Result<Option<u32>, DecodeError> {
    if ctx.in_stream {
        r.u32("xid").map(Some)
    } else {
        Ok(None)
    }
}

fn begin(r: &mut Reader<'_>) -> Result<Begin, DecodeError> {
    Ok(Begin {
        final_lsn: r.lsn("final LSN")?,
        commit_time: r.i64("commit timestamp")?,
        xid: r.u32("xid")?,
    })
}

fn commit(r: &mut Reader<'_>) -> Result<Commit, DecodeError> {
    Ok(Commit {
        flags: r.u8("flags")?,
        commit_lsn: r.lsn("commit LSN")?,
        end_lsn: r.lsn("end LSN")?,
        commit_time: r.i64("commit timestamp")?,
    })
}

fn origin(r: &mut Reader<'_>) -> Result<Origin, DecodeError> {
    Ok(Origin {
        commit_lsn: r.lsn("origin commit LSN")?,
        name: r.string("origin name")?,
    })
}

fn relation(r: &mut Reader<'_>, ctx: DecodeContext) -> Result<Relation, DecodeError> {
    let xid = stream_xid(r, ctx)?;
    let id = r.u32("relation id")?;
    let namespace = r.string("namespace")?;
    let name = r.string("relation name")?;
    let at = r.offset();
    let replica_identity = match r.u8("replica identity")? {
        b'd' => ReplicaIdentity::Default,
        b'n' => ReplicaIdentity::Nothing,
        b'f' => ReplicaIdentity::Full,
        b'i' => ReplicaIdentity::Index,
        other => {
            return Err(r.error_at(
                at,
                "replica identity",
                DecodeErrorKind::UnexpectedByte(other),
            ))
        }
    };
    // flags (1) + name (at least its NUL) + type OID (4) + typmod (4)
    let n = r.count_i16("column count", 10)?;
    let mut columns = Vec::with_capacity(n);
    for _ in 0..n {
        columns.push(column(r)?);
    }
    Ok(Relation {
        xid,
        id,
        namespace,
        name,
        replica_identity,
        columns,
    })
}

fn column(r: &mut Reader<'_>) -> Result<Column, DecodeError> {
    // Only bit 1 (part of the key) is defined; an unknown bit could change meaning, so refuse it.
    let flags = r.flags("column flags", 1)?;
    Ok(Column {
        key: flags & 1 != 0,
        name: r.string("column name")?,
        type_oid: r.u32("column type OID")?,
        type_modifier: r.i32("column type modifier")?,
    })
}

fn type_message(r: &mut Reader<'_>, ctx: DecodeContext) -> Result<Type, DecodeError> {
    Ok(Type {
        xid: stream_xid(r, ctx)?,
        id: r.u32("type OID")?,
        namespace: r.string("namespace")?,
        name: r.string("type name")?,
    })
}

/// Reads a marker byte that must be one of `allowed`.
fn marker(r: &mut Reader<'_>, field: &'static str, allowed: &[u8]) -> Result<u8, DecodeError> {
    let at = r.offset();
    let m = r.u8(field)?;
    if allowed.contains(&m) {
        Ok(m)
    } else {
        Err(r.error_at(at, field, DecodeErrorKind::UnexpectedByte(m)))
    }
}

fn insert(r: &mut Reader<'_>, ctx: DecodeContext) -> Result<Insert, DecodeError> {
    let xid = stream_xid(r, ctx)?;
    let relation_id = r.u32("relation id")?;
    marker(r, "new tuple marker", b"N")?;
    Ok(Insert {
        xid,
        relation_id,
        new: read_tuple(r)?,
    })
}

fn update(r: &mut Reader<'_>, ctx: DecodeContext) -> Result<Update, DecodeError> {
    let xid = stream_xid(r, ctx)?;
    let relation_id = r.u32("relation id")?;
    // Byte 1 after the relation id: 'K' or 'O' introduce an old tuple, 'N' the new one.
    let old = match marker(r, "tuple marker", b"KON")? {
        b'K' => Some(OldTuple::Key(read_tuple(r)?)),
        b'O' => Some(OldTuple::Full(read_tuple(r)?)),
        _ => None,
    };
    if old.is_some() {
        marker(r, "new tuple marker", b"N")?;
    }
    Ok(Update {
        xid,
        relation_id,
        old,
        new: read_tuple(r)?,
    })
}

fn delete(r: &mut Reader<'_>, ctx: DecodeContext) -> Result<Delete, DecodeError> {
    let xid = stream_xid(r, ctx)?;
    let relation_id = r.u32("relation id")?;
    let old = match marker(r, "old tuple marker", b"KO")? {
        b'K' => OldTuple::Key(read_tuple(r)?),
        _ => OldTuple::Full(read_tuple(r)?),
    };
    Ok(Delete {
        xid,
        relation_id,
        old,
    })
}

fn truncate(r: &mut Reader<'_>, ctx: DecodeContext) -> Result<Truncate, DecodeError> {
    let xid = stream_xid(r, ctx)?;
    // The options byte sits between the count and the OIDs: check the count against
    // what is left after it.
    let count_at = r.offset();
    let count = r.i32("relation count")?;
    let flags = r.flags("options", 0b11)?;
    let fits = usize::try_from(count)
        .ok()
        .filter(|&n| n <= r.remaining() / 4);
    let Some(n) = fits else {
        let kind = DecodeErrorKind::BadCount {
            count: count.into(),
            remaining: r.remaining(),
        };
        return Err(r.error_at(count_at, "relation count", kind));
    };
    let mut relation_ids = Vec::with_capacity(n);
    for _ in 0..n {
        relation_ids.push(r.u32("relation id")?);
    }
    let options = TruncateOptions {
        cascade: flags & 1 != 0,
        restart_identity: flags & 2 != 0,
    };
    Ok(Truncate {
        xid,
        options,
        relation_ids,
    })
}

fn logical_message(r: &mut Reader<'_>, ctx: DecodeContext) -> Result<LogicalMessage, DecodeError> {
    Ok(LogicalMessage {
        xid: stream_xid(r, ctx)?,
        transactional: r.flags("flags", 1)? & 1 != 0,
        lsn: r.lsn("message LSN")?,
        prefix: r.string("prefix")?,
        content: r.counted_bytes("content")?,
    })
}

fn stream_start(r: &mut Reader<'_>) -> Result<StreamStart, DecodeError> {
    Ok(StreamStart {
        xid: r.u32("xid")?,
        first_segment: r.flags("first segment", 1)? == 1,
    })
}

fn stream_commit(r: &mut Reader<'_>) -> Result<StreamCommit, DecodeError> {
    Ok(StreamCommit {
        xid: r.u32("xid")?,
        flags: r.u8("flags")?,
        commit_lsn: r.lsn("commit LSN")?,
        end_lsn: r.lsn("end LSN")?,
        commit_time: r.i64("commit timestamp")?,
    })
}

fn stream_abort(r: &mut Reader<'_>, ctx: DecodeContext) -> Result<StreamAbort, DecodeError> {
    let xid = r.u32("xid")?;
    let subxid = r.u32("subxid")?;
    let parallel = if ctx.parallel_abort {
        Some(ParallelAbort {
            abort_lsn: r.lsn("abort LSN")?,
            abort_time: r.i64("abort time")?,
        })
    } else {
        None
    };
    Ok(StreamAbort {
        xid,
        subxid,
        parallel,
    })
}

fn begin_prepare(r: &mut Reader<'_>) -> Result<BeginPrepare, DecodeError> {
    Ok(BeginPrepare {
        prepare_lsn: r.lsn("prepare LSN")?,
        end_lsn: r.lsn("end LSN")?,
        prepare_time: r.i64("prepare timestamp")?,
        xid: r.u32("xid")?,
        gid: r.string("gid")?,
    })
}

fn prepare(r: &mut Reader<'_>) -> Result<Prepare, DecodeError> {
    Ok(Prepare {
        flags: r.u8("flags")?,
        prepare_lsn: r.lsn("prepare LSN")?,
        end_lsn: r.lsn("end LSN")?,
        prepare_time: r.i64("prepare timestamp")?,
        xid: r.u32("xid")?,
        gid: r.string("gid")?,
    })
}

fn commit_prepared(r: &mut Reader<'_>) -> Result<CommitPrepared, DecodeError> {
    Ok(CommitPrepared {
        flags: r.u8("flags")?,
        commit_lsn: r.lsn("commit LSN")?,
        end_lsn: r.lsn("end LSN")?,
        commit_time: r.i64("commit timestamp")?,
        xid: r.u32("xid")?,
        gid: r.string("gid")?,
    })
}

fn rollback_prepared(r: &mut Reader<'_>) -> Result<RollbackPrepared, DecodeError> {
    Ok(RollbackPrepared {
        flags: r.u8("flags")?,
        prepare_end_lsn: r.lsn("prepare end LSN")?,
        rollback_end_lsn: r.lsn("rollback end LSN")?,
        prepare_time: r.i64("prepare timestamp")?,
        rollback_time: r.i64("rollback timestamp")?,
        xid: r.u32("xid")?,
        gid: r.string("gid")?,
    })
}
