//! Golden tests: payloads captured from PostgreSQL 15 by `fixtures/capture.sh`, decoded and
//! checked field by field against the SQL in `fixtures/<scenario>.sql`.
//!
//! Values fixed by the SQL (names, types, typmods, cells, flags, gids) are asserted exactly;
//! values the server picks (OIDs, xids, LSNs, times) are asserted by their relationships.

mod framing;
mod rows;
mod transactions;

use bytes::Bytes;
use walrelay_proto::fixture::{decode_all, parse_fixture, Captured};
use walrelay_proto::*;

pub fn load(scenario: &str) -> (Vec<Captured>, Vec<Message>) {
    let path = format!("{}/fixtures/{scenario}.hex", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let captured = parse_fixture(&text);
    let messages = decode_all(&captured, DecodeContext::default())
        .unwrap_or_else(|e| panic!("{scenario}: {e}"));
    framing::check_framing(&captured, &messages);
    (captured, messages)
}

pub fn t(s: &str) -> Cell {
    Cell::Text(Bytes::copy_from_slice(s.as_bytes()))
}

pub fn b(v: &[u8]) -> Cell {
    Cell::Binary(Bytes::copy_from_slice(v))
}

pub fn row(cells: &[Cell]) -> TupleData {
    TupleData {
        cells: cells.to_vec(),
    }
}

pub fn col(key: bool, name: &str, type_oid: u32, type_modifier: i32) -> Column {
    Column {
        key,
        name: name.into(),
        type_oid,
        type_modifier,
    }
}

/// 2020-01-01 in PostgreSQL microseconds: every capture was made after it.
pub const Y2020: i64 = 631_152_000_000_000;

pub fn relation(m: &Message) -> &Relation {
    match m {
        Message::Relation(r) => r,
        other => panic!("expected Relation, got {other:?}"),
    }
}

pub fn insert(m: &Message, relation_id: u32) -> &TupleData {
    match m {
        Message::Insert(i) if i.relation_id == relation_id => &i.new,
        other => panic!("expected Insert into {relation_id}, got {other:?}"),
    }
}

pub fn update(m: &Message, relation_id: u32) -> (&Option<OldTuple>, &TupleData) {
    match m {
        Message::Update(u) if u.relation_id == relation_id => (&u.old, &u.new),
        other => panic!("expected Update of {relation_id}, got {other:?}"),
    }
}

pub fn delete(m: &Message, relation_id: u32) -> &OldTuple {
    match m {
        Message::Delete(d) if d.relation_id == relation_id => &d.old,
        other => panic!("expected Delete from {relation_id}, got {other:?}"),
    }
}

pub fn tags(messages: &[Message]) -> String {
    messages.iter().map(|m| m.tag() as char).collect()
}
/// Splits a capture into its stream blocks: (StreamStart, messages inside).
pub fn stream_blocks(m: &[Message]) -> Vec<(StreamStart, &[Message])> {
    let mut blocks = Vec::new();
    let mut i = 0;
    while i < m.len() {
        if let Message::StreamStart(s) = &m[i] {
            let len = m[i..]
                .iter()
                .position(|x| matches!(x, Message::StreamStop))
                .unwrap();
            blocks.push((*s, &m[i + 1..i + len]));
            i += len;
        }
        i += 1;
    }
    blocks
}

/// The ids inserted by `xid` in a block, checking each row's value column.
pub fn inserted_ids(block: &[Message], xid: u32, value: &str) -> Vec<i32> {
    block
        .iter()
        .filter_map(|x| match x {
            Message::Insert(i) if i.xid == Some(xid) => Some(&i.new),
            _ => None,
        })
        .map(|new| {
            assert_eq!(new.cells[1], t(value));
            let Cell::Text(id) = &new.cells[0] else {
                panic!()
            };
            std::str::from_utf8(id).unwrap().parse().unwrap()
        })
        .collect()
}

/// The SQL's `string_agg(md5(g::text), '')` over 1..100: its length and both ends.
pub fn assert_body(cell: &Cell) {
    let (Cell::Text(v) | Cell::Binary(v)) = cell else {
        panic!("expected a value, got {cell:?}")
    };
    assert_eq!(v.len(), 3200);
    assert!(
        v.starts_with(b"c4ca4238a0b923820dcc509a6f75849b"),
        "md5('1') first"
    );
    assert!(
        v.ends_with(b"f899139df5e1059396431415e770c6dd"),
        "md5('100') last"
    );
}
