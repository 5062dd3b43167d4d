//! An encoder for every [`Message`], the inverse of [`crate::decode`] (feature `test-util`).
//!
//! It exists for round-trip tests, benchmarks and fuzzing; walrelay never sends these
//! messages. It writes what the message holds: an xid when `Some`, the v4 abort fields when
//! `Some`, so decoding needs the matching [`crate::DecodeContext`].

use bytes::{BufMut, BytesMut};

use crate::message::*;
use crate::tuple::{Cell, OldTuple, TupleData};

/// Encodes `message` as pgoutput would send it.
pub fn encode(message: &Message) -> BytesMut {
    let mut b = BytesMut::with_capacity(64);
    b.put_u8(message.tag());
    match message {
        Message::Relation(m) => relation(&mut b, m),
        Message::Type(m) => {
            put_xid(&mut b, m.xid);
            b.put_u32(m.id);
            put_str(&mut b, &m.namespace);
            put_str(&mut b, &m.name);
        }
        Message::Insert(_) | Message::Update(_) | Message::Delete(_) => row_change(&mut b, message),
        Message::Truncate(m) => truncate(&mut b, m),
        Message::Message(m) => {
            put_xid(&mut b, m.xid);
            b.put_u8(u8::from(m.transactional));
            b.put_u64(m.lsn.0);
            put_str(&mut b, &m.prefix);
            put_len(&mut b, m.content.len());
            b.put_slice(&m.content);
        }
        Message::BeginPrepare(_)
        | Message::Prepare(_)
        | Message::StreamPrepare(_)
        | Message::CommitPrepared(_)
        | Message::RollbackPrepared(_) => two_phase(&mut b, message),
        _ => transaction(&mut b, message),
    }
    b
}

/// Begin, Commit, Origin and the v2 stream messages.
fn transaction(b: &mut BytesMut, message: &Message) {
    match message {
        Message::Begin(m) => {
            b.put_u64(m.final_lsn.0);
            b.put_i64(m.commit_time);
            b.put_u32(m.xid);
        }
        Message::Commit(m) => {
            b.put_u8(m.flags);
            b.put_u64(m.commit_lsn.0);
            b.put_u64(m.end_lsn.0);
            b.put_i64(m.commit_time);
        }
        Message::Origin(m) => {
            b.put_u64(m.commit_lsn.0);
            put_str(b, &m.name);
        }
        Message::StreamStart(m) => {
            b.put_u32(m.xid);
            b.put_u8(u8::from(m.first_segment));
        }
        Message::StreamCommit(m) => {
            b.put_u32(m.xid);
            b.put_u8(m.flags);
            b.put_u64(m.commit_lsn.0);
            b.put_u64(m.end_lsn.0);
            b.put_i64(m.commit_time);
        }
        Message::StreamAbort(m) => {
            b.put_u32(m.xid);
            b.put_u32(m.subxid);
            if let Some(p) = m.parallel {
                b.put_u64(p.abort_lsn.0);
                b.put_i64(p.abort_time);
            }
        }
        _ => {} // Stream Stop has no fields; the other kinds are encoded by encode().
    }
}

fn row_change(b: &mut BytesMut, message: &Message) {
    match message {
        Message::Insert(m) => {
            put_xid(b, m.xid);
            b.put_u32(m.relation_id);
            b.put_u8(b'N');
            put_tuple(b, &m.new);
        }
        Message::Update(m) => {
            put_xid(b, m.xid);
            b.put_u32(m.relation_id);
            if let Some(old) = &m.old {
                put_old(b, old);
            }
            b.put_u8(b'N');
            put_tuple(b, &m.new);
        }
        Message::Delete(m) => {
            put_xid(b, m.xid);
            b.put_u32(m.relation_id);
            put_old(b, &m.old);
        }
        _ => {}
    }
}

/// The v3 two-phase messages.
fn two_phase(b: &mut BytesMut, message: &Message) {
    match message {
        Message::BeginPrepare(m) => {
            b.put_u64(m.prepare_lsn.0);
            b.put_u64(m.end_lsn.0);
            b.put_i64(m.prepare_time);
            b.put_u32(m.xid);
            put_str(b, &m.gid);
        }
        Message::Prepare(m) | Message::StreamPrepare(m) => prepare(b, m),
        Message::CommitPrepared(m) => {
            b.put_u8(m.flags);
            b.put_u64(m.commit_lsn.0);
            b.put_u64(m.end_lsn.0);
            b.put_i64(m.commit_time);
            b.put_u32(m.xid);
            put_str(b, &m.gid);
        }
        Message::RollbackPrepared(m) => {
            b.put_u8(m.flags);
            b.put_u64(m.prepare_end_lsn.0);
            b.put_u64(m.rollback_end_lsn.0);
            b.put_i64(m.prepare_time);
            b.put_i64(m.rollback_time);
            b.put_u32(m.xid);
            put_str(b, &m.gid);
        }
        _ => {}
    }
}

fn relation(b: &mut BytesMut, m: &Relation) {
    put_xid(b, m.xid);
    b.put_u32(m.id);
    put_str(b, &m.namespace);
    put_str(b, &m.name);
    b.put_u8(match m.replica_identity {
        ReplicaIdentity::Default => b'd',
        ReplicaIdentity::Nothing => b'n',
        ReplicaIdentity::Full => b'f',
        ReplicaIdentity::Index => b'i',
    });
    put_i16_count(b, m.columns.len());
    for c in &m.columns {
        b.put_u8(u8::from(c.key));
        put_str(b, &c.name);
        b.put_u32(c.type_oid);
        b.put_i32(c.type_modifier);
    }
}

fn truncate(b: &mut BytesMut, m: &Truncate) {
    put_xid(b, m.xid);
    put_len(b, m.relation_ids.len());
    b.put_u8(u8::from(m.options.cascade) | (u8::from(m.options.restart_identity) << 1));
    for id in &m.relation_ids {
        b.put_u32(*id);
    }
}

fn prepare(b: &mut BytesMut, m: &Prepare) {
    b.put_u8(m.flags);
    b.put_u64(m.prepare_lsn.0);
    b.put_u64(m.end_lsn.0);
    b.put_i64(m.prepare_time);
    b.put_u32(m.xid);
    put_str(b, &m.gid);
}

fn put_xid(b: &mut BytesMut, xid: Option<u32>) {
    if let Some(xid) = xid {
        b.put_u32(xid);
    }
}

/// Strings must not contain NUL: the wire format cannot carry it.
fn put_str(b: &mut BytesMut, s: &str) {
    debug_assert!(!s.contains('\0'), "pgoutput strings cannot contain NUL");
    b.put_slice(s.as_bytes());
    b.put_u8(0);
}

/// Panics on lengths over i32::MAX, which the wire format cannot carry (test-only code).
fn put_len(b: &mut BytesMut, len: usize) {
    b.put_i32(i32::try_from(len).expect("length fits the wire's Int32"));
}

/// Panics on counts over i16::MAX, which the wire format cannot carry (test-only code).
fn put_i16_count(b: &mut BytesMut, len: usize) {
    b.put_i16(i16::try_from(len).expect("count fits the wire's Int16"));
}

fn put_old(b: &mut BytesMut, old: &OldTuple) {
    b.put_u8(match old {
        OldTuple::Key(_) => b'K',
        OldTuple::Full(_) => b'O',
    });
    put_tuple(b, old.tuple());
}

fn put_tuple(b: &mut BytesMut, t: &TupleData) {
    put_i16_count(b, t.cells.len());
    for cell in &t.cells {
        match cell {
            Cell::Null => b.put_u8(b'n'),
            Cell::UnchangedToast => b.put_u8(b'u'),
            Cell::Text(v) | Cell::Binary(v) => {
                b.put_u8(if matches!(cell, Cell::Text(_)) {
                    b't'
                } else {
                    b'b'
                });
                put_len(b, v.len());
                b.put_slice(v);
            }
        }
    }
}
