//! Malformed input: every prefix of every captured message, trailing bytes, bad counts,
//! bad markers and flags. Always an error naming message, field and offset; never a panic.

use bytes::Bytes;
use walrelay_proto::fixture::{parse_fixture, Captured};
use walrelay_proto::*;

const SCENARIOS: &[&str] = &[
    "binary", "identity", "messages", "mix", "stream", "toast", "truncate", "twophase", "types",
];

/// Every captured message with the context it was sent in.
fn all_captured() -> Vec<(Captured, DecodeContext)> {
    let mut out = Vec::new();
    for scenario in SCENARIOS {
        let path = format!("{}/fixtures/{scenario}.hex", env!("CARGO_MANIFEST_DIR"));
        let mut ctx = DecodeContext::default();
        for c in parse_fixture(&std::fs::read_to_string(path).unwrap()) {
            let m = decode(&c.data, ctx).unwrap();
            out.push((c, ctx));
            ctx.observe(&m);
        }
    }
    out
}

fn err(data: &[u8], ctx: DecodeContext) -> DecodeError {
    let data = Bytes::copy_from_slice(data);
    decode(&data, ctx).expect_err("malformed input must not decode")
}

#[test]
fn every_prefix_of_every_fixture_is_an_error() {
    let mut checked = 0usize;
    for (c, ctx) in all_captured() {
        for len in 0..c.data.len() {
            let e = decode(&c.data.slice(..len), ctx).expect_err("a strict prefix must not decode");
            // The bytes present are valid, so the only possible complaint is running out.
            assert!(
                matches!(
                    e.kind,
                    DecodeErrorKind::Truncated { .. }
                        | DecodeErrorKind::BadCount { .. }
                        | DecodeErrorKind::UnterminatedString
                ),
                "{e}"
            );
            assert!(e.offset <= len, "{e}");
            checked += 1;
        }
    }
    assert!(checked > 100_000, "{checked}");
}

#[test]
fn trailing_bytes_are_rejected() {
    for (c, ctx) in all_captured() {
        let mut data = c.data.to_vec();
        data.push(0);
        let e = err(&data, ctx);
        assert_eq!((e.field, e.offset), ("end of message", c.data.len()), "{e}");
        assert_eq!(e.kind, DecodeErrorKind::TrailingBytes(1));
    }
}

#[test]
fn empty_and_unknown_tag() {
    let e = err(b"", DecodeContext::default());
    assert_eq!((e.message, e.field, e.offset), ("unknown", "tag", 0));
    assert_eq!(
        e.kind,
        DecodeErrorKind::Truncated {
            needed: 1,
            remaining: 0
        }
    );
    let e = err(b"Z\0", DecodeContext::default());
    assert_eq!(e.kind, DecodeErrorKind::UnknownTag(b'Z'));
    assert_eq!(
        e.to_string(),
        "pgoutput unknown message: tag at byte 0: unknown message tag 0x5a"
    );
}

/// Insert into relation 1 with a tuple built from `tuple`.
fn insert_with(tuple: &[u8]) -> Vec<u8> {
    [&b"I\0\0\0\x01N"[..], tuple].concat()
}

#[test]
fn counts_are_checked_before_use() {
    let ctx = DecodeContext::default();
    let e = err(&insert_with(b"\xff\xff"), ctx);
    assert_eq!(
        (e.message, e.field, e.offset),
        ("Insert", "column count", 6)
    );
    assert_eq!(
        e.kind,
        DecodeErrorKind::BadCount {
            count: -1,
            remaining: 0
        }
    );
    // 32767 columns announced, two bytes follow: refused before any allocation.
    let e = err(&insert_with(b"\x7f\xffnn"), ctx);
    assert_eq!(
        e.kind,
        DecodeErrorKind::BadCount {
            count: 32767,
            remaining: 2
        }
    );
    let e = err(&insert_with(b"\0\x01t\xff\xff\xff\xfe"), ctx);
    assert_eq!((e.field, e.offset), ("column value", 9));
    assert_eq!(
        e.kind,
        DecodeErrorKind::BadCount {
            count: -2,
            remaining: 0
        }
    );
    let e = err(&insert_with(b"\0\x01b\0\0\0\x05abc"), ctx);
    assert_eq!(
        e.kind,
        DecodeErrorKind::BadCount {
            count: 5,
            remaining: 3
        }
    );
    let e = err(b"T\x80\0\0\0\0", ctx);
    assert_eq!(
        (e.message, e.field, e.offset),
        ("Truncate", "relation count", 1)
    );
    let e = err(b"T\0\0\0\x02\0\0\0\0\x01", ctx);
    assert_eq!(
        e.kind,
        DecodeErrorKind::BadCount {
            count: 2,
            remaining: 4
        }
    );
    let e = err(b"R\0\0\0\x01\0t\0d\x7f\xff", ctx);
    assert_eq!((e.field, e.offset), ("column count", 9));
    let e = err(b"M\x01\0\0\0\0\0\0\0\x01p\0\xff\xff\xff\xff", ctx);
    assert_eq!((e.message, e.field, e.offset), ("Message", "content", 12));
}

#[test]
fn markers_are_dispatched_by_position() {
    let ctx = DecodeContext::default();
    // 'K' and 'O' as first byte are Commit Prepared and Origin ...
    let origin = b"O\0\0\0\0\0\0\0\x07up\0";
    let Ok(Message::Origin(o)) = decode(&Bytes::from_static(origin), ctx) else {
        panic!()
    };
    assert_eq!((o.commit_lsn, o.name.as_str()), (Lsn(7), "up"));
    let cp = b"K\0\0\0\0\0\0\0\0\x01\0\0\0\0\0\0\0\x02\0\0\0\0\0\0\0\x03\0\0\0\x09g\0";
    let Ok(Message::CommitPrepared(c)) = decode(&Bytes::from_static(cp), ctx) else {
        panic!()
    };
    assert_eq!(
        (c.commit_lsn, c.end_lsn, c.commit_time, c.xid),
        (Lsn(1), Lsn(2), 3, 9)
    );
    // ... and after a relation id they are old-tuple markers.
    let upd = b"U\0\0\0\x01O\0\x01uN\0\x01n";
    let Ok(Message::Update(u)) = decode(&Bytes::from_static(upd), ctx) else {
        panic!()
    };
    assert_eq!(
        u.old,
        Some(OldTuple::Full(TupleData {
            cells: vec![Cell::UnchangedToast]
        }))
    );
    let del = b"D\0\0\0\x01K\0\0";
    let Ok(Message::Delete(d)) = decode(&Bytes::from_static(del), ctx) else {
        panic!()
    };
    assert_eq!(d.old, OldTuple::Key(TupleData::default()));
}

#[test]
fn bad_markers_kinds_and_flags() {
    let ctx = DecodeContext::default();
    let cases: &[(&[u8], &str, usize, DecodeErrorKind)] = &[
        (
            b"U\0\0\0\x01X\0\0",
            "tuple marker",
            5,
            DecodeErrorKind::UnexpectedByte(b'X'),
        ),
        (
            b"U\0\0\0\x01K\0\0K\0\0",
            "new tuple marker",
            8,
            DecodeErrorKind::UnexpectedByte(b'K'),
        ),
        (
            b"D\0\0\0\x01N\0\0",
            "old tuple marker",
            5,
            DecodeErrorKind::UnexpectedByte(b'N'),
        ),
        (
            b"I\0\0\0\x01K\0\0",
            "new tuple marker",
            5,
            DecodeErrorKind::UnexpectedByte(b'K'),
        ),
        (
            b"I\0\0\0\x01N\0\x01x",
            "column kind",
            8,
            DecodeErrorKind::UnexpectedByte(b'x'),
        ),
        (
            b"R\0\0\0\x01\0t\0x\0\0",
            "replica identity",
            8,
            DecodeErrorKind::UnexpectedByte(b'x'),
        ),
        (
            b"R\0\0\0\x01\0t\0d\0\x01\x02c\0\0\0\0\x17\xff\xff\xff\xff",
            "column flags",
            11,
            DecodeErrorKind::UnknownFlags(2),
        ),
        (
            b"T\0\0\0\0\x04",
            "options",
            5,
            DecodeErrorKind::UnknownFlags(4),
        ),
        (
            b"S\0\0\0\x01\x02",
            "first segment",
            5,
            DecodeErrorKind::UnknownFlags(2),
        ),
        (
            b"M\x02\0\0\0\0\0\0\0\x01p\0\0\0\0\0",
            "flags",
            1,
            DecodeErrorKind::UnknownFlags(2),
        ),
        (
            b"R\0\0\0\x01\xff\0t\0d\0\0",
            "namespace",
            5,
            DecodeErrorKind::InvalidUtf8,
        ),
        (
            b"Y\0\0\0\x01ns\0nam",
            "type name",
            8,
            DecodeErrorKind::UnterminatedString,
        ),
    ];
    for (data, field, offset, kind) in cases {
        let e = err(data, ctx);
        assert_eq!((e.field, e.offset, &e.kind), (*field, *offset, kind), "{e}");
    }
}

#[test]
fn stream_xid_and_v4_abort_come_from_the_context() {
    let insert = Bytes::from_static(b"I\0\0\x02\x2a\0\0\0\x01N\0\0");
    let in_stream = DecodeContext {
        in_stream: true,
        parallel_abort: false,
    };
    let Ok(Message::Insert(i)) = decode(&insert, in_stream) else {
        panic!()
    };
    assert_eq!((i.xid, i.relation_id), (Some(554), 1));
    // Outside a stream the same bytes are a relation id followed by garbage.
    assert!(decode(&insert, DecodeContext::default()).is_err());

    let v2 = Bytes::from_static(b"A\0\0\0\x05\0\0\0\x06");
    let Ok(Message::StreamAbort(a)) = decode(&v2, DecodeContext::default()) else {
        panic!()
    };
    assert_eq!((a.xid, a.subxid, a.parallel), (5, 6, None));
    let v4 = Bytes::from_static(b"A\0\0\0\x05\0\0\0\x06\0\0\0\x01\0\0\0\x10\0\0\0\0\0\0\0\x20");
    let parallel = DecodeContext {
        in_stream: false,
        parallel_abort: true,
    };
    let Ok(Message::StreamAbort(a)) = decode(&v4, parallel) else {
        panic!()
    };
    let expected = ParallelAbort {
        abort_lsn: "1/10".parse().unwrap(),
        abort_time: 32,
    };
    assert_eq!(a.parallel, Some(expected));
    let e = decode(&v2, parallel).unwrap_err();
    assert_eq!(
        (e.message, e.field, e.offset),
        ("Stream Abort", "abort LSN", 9)
    );
    assert_eq!(
        decode(&v4, DecodeContext::default()).unwrap_err().kind,
        DecodeErrorKind::TrailingBytes(16)
    );
}

#[test]
fn context_tracks_stream_blocks() {
    let mut ctx = DecodeContext::default();
    ctx.observe(&Message::StreamStart(StreamStart {
        xid: 1,
        first_segment: true,
    }));
    assert!(ctx.in_stream);
    ctx.observe(&Message::StreamCommit(StreamCommit {
        xid: 1,
        flags: 0,
        commit_lsn: Lsn(1),
        end_lsn: Lsn(2),
        commit_time: 0,
    }));
    assert!(ctx.in_stream, "only Stream Stop ends a block");
    ctx.observe(&Message::StreamStop);
    assert!(!ctx.in_stream);
}

#[test]
fn cells_are_zero_copy_slices_of_the_input() {
    let data = Bytes::from(insert_with(b"\0\x01t\0\0\0\x03abc"));
    let Ok(Message::Insert(i)) = decode(&data, DecodeContext::default()) else {
        panic!()
    };
    let Cell::Text(v) = &i.new.cells[0] else {
        panic!()
    };
    assert_eq!(v.as_ptr(), data[data.len() - 3..].as_ptr());
}
