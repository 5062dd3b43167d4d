//! The spool's record format, from and to bytes (no IO).
//!
//! A frame is `length: u32 LE` (of the payload), `crc32: u32 LE` (crc32fast
//! of the payload), then the payload: a tag byte and the record's fields
//! (integers big-endian, byte strings length-prefixed). The checksum makes a
//! damaged record an error instead of a wrong change applied; the length
//! lets a reader tell a record cut short by a crash (the frame runs past the
//! end of the file) from one that is complete.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use walrelay_proto::Lsn;

/// Bytes before a frame's payload.
pub(crate) const HEADER: usize = 8;

/// No record is this large: a length beyond it is damage, not data (a
/// pgoutput message carries at most a 1 GB value plus its framing).
const MAX_PAYLOAD: u32 = 1 << 31;

/// One entry of the change stream, as received from the slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Record {
    /// A source transaction begins; `final_lsn` is its commit LSN.
    Begin {
        final_lsn: Lsn,
        xid: u32,
        commit_time: i64,
    },
    /// A pgoutput message inside the transaction (Relation, Insert, …),
    /// kept undecoded.
    Change(Bytes),
    /// A logical decoding message (`pg_logical_emit_message`).
    Message {
        transactional: bool,
        lsn: Lsn,
        prefix: String,
        content: Bytes,
    },
    /// The transaction commits; `end_lsn` is where the next one may start.
    Commit {
        lsn: Lsn,
        end_lsn: Lsn,
        commit_time: i64,
    },
    /// A keepalive's WAL end with no transaction open: every transaction
    /// committed before it is in the spool.
    Position(Lsn),
}

impl Record {
    /// The position the spool is complete up to after this record, for
    /// records that end a transaction (or stand between transactions).
    pub(crate) fn boundary(&self) -> Option<Lsn> {
        match self {
            Record::Commit { end_lsn, .. } => Some(*end_lsn),
            Record::Position(lsn) => Some(*lsn),
            _ => None,
        }
    }

    fn tag(&self) -> u8 {
        match self {
            Record::Begin { .. } => b'B',
            Record::Change(_) => b'D',
            Record::Message { .. } => b'M',
            Record::Commit { .. } => b'C',
            Record::Position(_) => b'P',
        }
    }
}

/// Appends `record`'s frame to `out`.
pub(crate) fn encode(record: &Record, out: &mut BytesMut) {
    let mut payload = BytesMut::new();
    payload.put_u8(record.tag());
    match record {
        Record::Begin {
            final_lsn,
            xid,
            commit_time,
        } => {
            payload.put_u64(final_lsn.0);
            payload.put_u32(*xid);
            payload.put_i64(*commit_time);
        }
        Record::Change(data) => payload.put_slice(data),
        Record::Message {
            transactional,
            lsn,
            prefix,
            content,
        } => {
            payload.put_u8(u8::from(*transactional));
            payload.put_u64(lsn.0);
            payload.put_u32(prefix.len() as u32);
            payload.put_slice(prefix.as_bytes());
            payload.put_slice(content);
        }
        Record::Commit {
            lsn,
            end_lsn,
            commit_time,
        } => {
            payload.put_u64(lsn.0);
            payload.put_u64(end_lsn.0);
            payload.put_i64(*commit_time);
        }
        Record::Position(lsn) => payload.put_u64(lsn.0),
    }
    out.put_u32_le(payload.len() as u32);
    out.put_u32_le(crc32fast::hash(&payload));
    out.put_slice(&payload);
}

/// What the bytes at a position hold.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Frame {
    /// A whole, intact record and the bytes its frame took.
    Record(Record, usize),
    /// The frame runs past the end of the bytes: cut short by a crash, or
    /// nothing there at all (zeros a crash left count as this too).
    Incomplete,
    /// A complete frame whose checksum or content is wrong.
    Damaged(&'static str),
}

/// Reads the frame at the start of `buf`.
pub(crate) fn decode(buf: &[u8]) -> Frame {
    if buf.len() < HEADER {
        return Frame::Incomplete;
    }
    let len = u32::from_le_bytes(buf[0..4].try_into().unwrap_or_default());
    let crc = u32::from_le_bytes(buf[4..8].try_into().unwrap_or_default());
    if len == 0 && crc == 0 {
        // A file extended by the crash but never written: zeros.
        return Frame::Incomplete;
    }
    if len == 0 || len > MAX_PAYLOAD {
        return Frame::Damaged("impossible record length");
    }
    let end = HEADER + len as usize;
    if buf.len() < end {
        return Frame::Incomplete;
    }
    let payload = &buf[HEADER..end];
    if crc32fast::hash(payload) != crc {
        return Frame::Damaged("checksum mismatch");
    }
    match parse(payload) {
        Some(record) => Frame::Record(record, end),
        None => Frame::Damaged("unreadable record"),
    }
}

/// The length a frame header announces (payload plus header).
pub(crate) fn frame_len(header: &[u8; HEADER]) -> u64 {
    HEADER as u64
        + u64::from(u32::from_le_bytes([
            header[0], header[1], header[2], header[3],
        ]))
}

fn parse(payload: &[u8]) -> Option<Record> {
    let (&tag, mut rest) = payload.split_first()?;
    let need = |rest: &[u8], n: usize| (rest.remaining() >= n).then_some(());
    let record = match tag {
        b'B' => {
            need(rest, 20)?;
            Record::Begin {
                final_lsn: Lsn(rest.get_u64()),
                xid: rest.get_u32(),
                commit_time: rest.get_i64(),
            }
        }
        b'D' => return Some(Record::Change(Bytes::copy_from_slice(rest))),
        b'M' => {
            need(rest, 13)?;
            let transactional = rest.get_u8() != 0;
            let lsn = Lsn(rest.get_u64());
            let len = rest.get_u32() as usize;
            need(rest, len)?;
            let prefix = String::from_utf8(rest[..len].to_vec()).ok()?;
            rest.advance(len);
            let content = Bytes::copy_from_slice(rest);
            return Some(Record::Message {
                transactional,
                lsn,
                prefix,
                content,
            });
        }
        b'C' => {
            need(rest, 24)?;
            Record::Commit {
                lsn: Lsn(rest.get_u64()),
                end_lsn: Lsn(rest.get_u64()),
                commit_time: rest.get_i64(),
            }
        }
        b'P' => {
            need(rest, 8)?;
            Record::Position(Lsn(rest.get_u64()))
        }
        _ => return None,
    };
    rest.is_empty().then_some(record)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples() -> Vec<Record> {
        vec![
            Record::Begin {
                final_lsn: Lsn(0x1_0000_0040),
                xid: 771,
                commit_time: 123_456,
            },
            Record::Change(Bytes::from_static(
                b"I\x00\x00\x40\x01N\x00\x01t\x00\x00\x00\x011",
            )),
            Record::Message {
                transactional: true,
                lsn: Lsn(0x1_0000_0050),
                prefix: "walrelay".into(),
                content: Bytes::from_static(b"marker"),
            },
            Record::Commit {
                lsn: Lsn(0x1_0000_0060),
                end_lsn: Lsn(0x1_0000_0090),
                commit_time: 123_999,
            },
            Record::Position(Lsn(0x2_0000_0000)),
            Record::Change(Bytes::new()),
        ]
    }

    #[test]
    fn every_record_round_trips_through_its_frame() {
        let mut buf = BytesMut::new();
        for r in samples() {
            encode(&r, &mut buf);
        }
        let mut at = 0;
        for expected in samples() {
            match decode(&buf[at..]) {
                Frame::Record(r, used) => {
                    assert_eq!(r, expected);
                    at += used;
                }
                other => panic!("{other:?} at {at}"),
            }
        }
        assert_eq!(at, buf.len());
        assert_eq!(decode(&buf[at..]), Frame::Incomplete);
    }

    #[test]
    fn a_frame_cut_anywhere_is_incomplete_never_damaged() {
        let mut buf = BytesMut::new();
        encode(&samples()[2], &mut buf);
        for cut in 0..buf.len() {
            assert_eq!(decode(&buf[..cut]), Frame::Incomplete, "cut at {cut}");
        }
    }

    #[test]
    fn any_flipped_byte_is_damage() {
        let mut buf = BytesMut::new();
        encode(&samples()[0], &mut buf);
        for i in 0..buf.len() {
            let mut bad = buf.to_vec();
            bad[i] ^= 0x40;
            match decode(&bad) {
                Frame::Damaged(_) => {}
                // A flipped length byte can also make the frame run past
                // the end: never a wrong record.
                Frame::Incomplete => assert!(i < 4, "byte {i}"),
                Frame::Record(r, _) => panic!("byte {i} flipped decoded as {r:?}"),
            }
        }
    }

    #[test]
    fn zeros_are_the_end_and_boundaries_are_commits_and_positions() {
        assert_eq!(decode(&[0u8; 64]), Frame::Incomplete);
        let bounds: Vec<_> = samples().iter().map(Record::boundary).collect();
        assert_eq!(
            bounds,
            vec![
                None,
                None,
                None,
                Some(Lsn(0x1_0000_0090)),
                Some(Lsn(0x2_0000_0000)),
                None
            ]
        );
    }

    #[test]
    fn frame_len_reads_the_header() {
        let mut buf = BytesMut::new();
        encode(&Record::Position(Lsn(7)), &mut buf);
        let header: [u8; HEADER] = buf[..HEADER].try_into().unwrap();
        assert_eq!(frame_len(&header), buf.len() as u64);
    }
}
