//! Golden tests: payloads captured from PostgreSQL 15 by `fixtures/capture.sh`, decoded and
//! checked field by field against the SQL in `fixtures/<scenario>.sql`.
//!
//! Values fixed by the SQL (names, types, typmods, cells, flags, gids) are asserted exactly;
//! values the server picks (OIDs, xids, LSNs, times) are asserted by their relationships.

use std::collections::HashMap;

use bytes::Bytes;
use walrelay_proto::fixture::{decode_all, parse_fixture, Captured};
use walrelay_proto::*;

fn load(scenario: &str) -> (Vec<Captured>, Vec<Message>) {
    let path = format!("{}/fixtures/{scenario}.hex", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let captured = parse_fixture(&text);
    let messages = decode_all(&captured, DecodeContext::default())
        .unwrap_or_else(|e| panic!("{scenario}: {e}"));
    check_framing(&captured, &messages);
    (captured, messages)
}

fn t(s: &str) -> Cell {
    Cell::Text(Bytes::copy_from_slice(s.as_bytes()))
}

fn b(v: &[u8]) -> Cell {
    Cell::Binary(Bytes::copy_from_slice(v))
}

fn row(cells: &[Cell]) -> TupleData {
    TupleData {
        cells: cells.to_vec(),
    }
}

fn col(key: bool, name: &str, type_oid: u32, type_modifier: i32) -> Column {
    Column {
        key,
        name: name.into(),
        type_oid,
        type_modifier,
    }
}

/// 2020-01-01 in PostgreSQL microseconds: every capture was made after it.
const Y2020: i64 = 631_152_000_000_000;

#[derive(Debug)]
enum State {
    Idle,
    Txn(Begin),
    Prepared(BeginPrepare),
    Stream(u32),
}

/// Protocol invariants every capture must satisfy: transaction framing, Begin/Commit LSN
/// and time agreement, xids exactly inside stream blocks, and rows that match the
/// Relation they reference.
fn check_framing(captured: &[Captured], messages: &[Message]) {
    let mut state = State::Idle;
    let mut relations: HashMap<u32, usize> = HashMap::new();
    for (c, m) in captured.iter().zip(messages) {
        let in_stream = matches!(state, State::Stream(_));
        if let Some(xid) = data_xid(m) {
            assert!(
                !matches!(state, State::Idle),
                "data outside a transaction: {m:?}"
            );
            assert_eq!(
                xid.is_some(),
                in_stream,
                "xid present iff inside a stream: {m:?}"
            );
            if let (State::Stream(top), Some(xid)) = (&state, xid) {
                assert!(
                    xid >= *top,
                    "a subtransaction's xid follows its parent's: {m:?}"
                );
            }
        }
        check_row_widths(m, &mut relations);
        state = match (state, m) {
            (State::Idle, Message::Begin(b)) => {
                assert!(b.commit_time > Y2020, "{b:?}");
                State::Txn(*b)
            }
            (State::Txn(b), Message::Commit(cm)) => {
                assert_eq!(
                    b.final_lsn, cm.commit_lsn,
                    "Begin.final_lsn == Commit.commit_lsn"
                );
                assert_eq!(b.commit_time, cm.commit_time);
                assert!(cm.end_lsn > cm.commit_lsn);
                assert_eq!(cm.flags, 0);
                assert_eq!(c.lsn, cm.end_lsn, "peek reports a commit at its end LSN");
                State::Idle
            }
            (State::Idle, Message::BeginPrepare(bp)) => State::Prepared(bp.clone()),
            (State::Prepared(bp), Message::Prepare(p)) => {
                assert_eq!(
                    (bp.prepare_lsn, bp.end_lsn, bp.prepare_time, bp.xid, &bp.gid),
                    (p.prepare_lsn, p.end_lsn, p.prepare_time, p.xid, &p.gid)
                );
                State::Idle
            }
            (State::Idle, Message::StreamStart(s)) => State::Stream(s.xid),
            (State::Stream(_), Message::StreamStop) => State::Idle,
            (
                State::Idle,
                Message::StreamCommit(_)
                | Message::StreamAbort(_)
                | Message::StreamPrepare(_)
                | Message::CommitPrepared(_)
                | Message::RollbackPrepared(_),
            ) => State::Idle,
            (State::Idle, Message::Message(lm)) if !lm.transactional => State::Idle,
            (s @ (State::Txn(_) | State::Prepared(_) | State::Stream(_)), m)
                if data_xid(m).is_some() =>
            {
                s
            }
            (State::Txn(b), Message::Origin(_)) => State::Txn(b),
            (s, m) => panic!("{m:?} unexpected in state {s:?}"),
        };
    }
    assert!(
        matches!(state, State::Idle),
        "capture ends inside {state:?}"
    );
}

/// `Some(xid)` for the messages that carry a stream xid, `None` for the others.
fn data_xid(m: &Message) -> Option<Option<u32>> {
    Some(match m {
        Message::Relation(r) => r.xid,
        Message::Type(t) => t.xid,
        Message::Insert(i) => i.xid,
        Message::Update(u) => u.xid,
        Message::Delete(d) => d.xid,
        Message::Truncate(t) => t.xid,
        Message::Message(lm) if lm.transactional => lm.xid,
        _ => return None,
    })
}

fn check_row_widths(m: &Message, relations: &mut HashMap<u32, usize>) {
    let width = |id: u32| {
        *relations
            .get(&id)
            .unwrap_or_else(|| panic!("relation {id} unknown"))
    };
    match m {
        Message::Relation(r) => {
            relations.insert(r.id, r.columns.len());
        }
        Message::Insert(i) => assert_eq!(i.new.cells.len(), width(i.relation_id)),
        Message::Update(u) => {
            assert_eq!(u.new.cells.len(), width(u.relation_id));
            if let Some(old) = &u.old {
                assert_eq!(old.tuple().cells.len(), width(u.relation_id));
            }
        }
        Message::Delete(d) => assert_eq!(d.old.tuple().cells.len(), width(d.relation_id)),
        Message::Truncate(tr) => {
            assert!(
                tr.relation_ids.iter().all(|id| relations.contains_key(id)),
                "{tr:?}"
            )
        }
        _ => {}
    }
}

fn relation(m: &Message) -> &Relation {
    match m {
        Message::Relation(r) => r,
        other => panic!("expected Relation, got {other:?}"),
    }
}

fn insert(m: &Message, relation_id: u32) -> &TupleData {
    match m {
        Message::Insert(i) if i.relation_id == relation_id => &i.new,
        other => panic!("expected Insert into {relation_id}, got {other:?}"),
    }
}

fn update(m: &Message, relation_id: u32) -> (&Option<OldTuple>, &TupleData) {
    match m {
        Message::Update(u) if u.relation_id == relation_id => (&u.old, &u.new),
        other => panic!("expected Update of {relation_id}, got {other:?}"),
    }
}

fn delete(m: &Message, relation_id: u32) -> &OldTuple {
    match m {
        Message::Delete(d) if d.relation_id == relation_id => &d.old,
        other => panic!("expected Delete from {relation_id}, got {other:?}"),
    }
}

fn tags(messages: &[Message]) -> String {
    messages.iter().map(|m| m.tag() as char).collect()
}

#[test]
fn identity_default_full_and_index() {
    let (_, m) = load("identity");
    assert_eq!(tags(&m), "BRIIUUDCBRIIUDCBRIUUDC");

    let r = relation(&m[1]);
    assert_eq!(
        (r.namespace.as_str(), r.name.as_str()),
        ("public", "rid_default")
    );
    assert_eq!(r.replica_identity, ReplicaIdentity::Default);
    assert_eq!(
        r.columns,
        [
            col(true, "id", 23, -1),
            col(false, "name", 25, -1),
            col(false, "qty", 23, -1)
        ]
    );
    let id = r.id;
    assert_eq!(insert(&m[2], id), &row(&[t("1"), t("one"), t("10")]));
    assert_eq!(insert(&m[3], id), &row(&[t("2"), Cell::Null, t("20")]));
    // Key unchanged: no old tuple.
    assert_eq!(
        update(&m[4], id),
        (&None, &row(&[t("1"), t("one"), t("11")]))
    );
    // Key changed: 'K' with the old key, non-key columns as 'n'.
    let old = Some(OldTuple::Key(row(&[t("2"), Cell::Null, Cell::Null])));
    assert_eq!(
        update(&m[5], id),
        (&old, &row(&[t("3"), Cell::Null, t("20")]))
    );
    assert_eq!(
        delete(&m[6], id),
        &OldTuple::Key(row(&[t("3"), Cell::Null, Cell::Null]))
    );

    let r = relation(&m[9]);
    assert_eq!(
        (r.name.as_str(), r.replica_identity),
        ("rid_full", ReplicaIdentity::Full)
    );
    // Under FULL every column is flagged as key.
    assert_eq!(
        r.columns,
        [
            col(true, "id", 23, -1),
            col(true, "name", 25, -1),
            col(true, "qty", 23, -1)
        ]
    );
    let id = r.id;
    assert_eq!(insert(&m[10], id), &row(&[t("1"), t("a"), t("1")]));
    assert_eq!(insert(&m[11], id), &row(&[t("2"), Cell::Null, t("2")]));
    let old = Some(OldTuple::Full(row(&[t("1"), t("a"), t("1")])));
    assert_eq!(update(&m[12], id), (&old, &row(&[t("1"), t("a"), t("5")])));
    assert_eq!(
        delete(&m[13], id),
        &OldTuple::Full(row(&[t("2"), Cell::Null, t("2")]))
    );

    let r = relation(&m[16]);
    assert_eq!(
        (r.name.as_str(), r.replica_identity),
        ("rid_index", ReplicaIdentity::Index)
    );
    // The index column, not the primary key, is the key.
    assert_eq!(
        r.columns,
        [
            col(false, "id", 23, -1),
            col(true, "code", 25, -1),
            col(false, "note", 25, -1)
        ]
    );
    let id = r.id;
    assert_eq!(insert(&m[17], id), &row(&[t("1"), t("c1"), t("n")]));
    assert_eq!(
        update(&m[18], id),
        (&None, &row(&[t("1"), t("c1"), t("m")]))
    );
    let old = Some(OldTuple::Key(row(&[Cell::Null, t("c1"), Cell::Null])));
    assert_eq!(update(&m[19], id), (&old, &row(&[t("1"), t("c2"), t("m")])));
    assert_eq!(
        delete(&m[20], id),
        &OldTuple::Key(row(&[Cell::Null, t("c2"), Cell::Null]))
    );
}

/// The SQL's `string_agg(md5(g::text), '')` over 1..100: its length and both ends.
fn assert_body(cell: &Cell) {
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

#[test]
fn toast_unchanged_under_default_and_full() {
    let (_, m) = load("toast");
    assert_eq!(tags(&m), "BRICBUCBRICBUC");
    let r = relation(&m[1]);
    assert_eq!(r.name, "toasty");
    let id = r.id;
    let new = insert(&m[2], id);
    assert_eq!(new.cells[..2], [t("1"), t("0")]);
    assert_body(&new.cells[2]);
    // The TOASTed column did not change: 'u', value not sent.
    assert_eq!(
        update(&m[5], id),
        (&None, &row(&[t("1"), t("1"), Cell::UnchangedToast]))
    );

    let r = relation(&m[8]);
    assert_eq!(
        (r.name.as_str(), r.replica_identity),
        ("toasty_full", ReplicaIdentity::Full)
    );
    let (old, new) = update(&m[12], r.id);
    // Under FULL the old row carries the value while the new row says 'u'.
    let Some(OldTuple::Full(old)) = old else {
        panic!("expected O, got {old:?}")
    };
    assert_eq!(old.cells[..2], [t("1"), t("0")]);
    assert_body(&old.cells[2]);
    assert_eq!(new, &row(&[t("1"), t("1"), Cell::UnchangedToast]));
}

#[test]
fn truncate_restart_identity_and_cascade() {
    let (_, m) = load("truncate");
    assert_eq!(tags(&m), "BRICBRICBRRTCBRICBRICBRRTC");
    let (a, b) = (relation(&m[1]).id, relation(&m[5]).id);
    assert_eq!(relation(&m[5]).columns[0], col(true, "id", 20, -1));
    let Message::Truncate(tr) = &m[11] else {
        panic!("{:?}", m[11])
    };
    assert_eq!(tr.xid, None);
    assert_eq!(
        tr.options,
        TruncateOptions {
            cascade: false,
            restart_identity: true
        }
    );
    assert_eq!(tr.relation_ids, [a, b]);

    let (parent, child) = (relation(&m[14]).id, relation(&m[18]).id);
    assert_eq!(relation(&m[18]).name, "trunc_child");
    assert_eq!(insert(&m[19], child), &row(&[t("1"), t("1")]));
    let Message::Truncate(tr) = &m[24] else {
        panic!("{:?}", m[24])
    };
    assert_eq!(
        tr.options,
        TruncateOptions {
            cascade: true,
            restart_identity: false
        }
    );
    let mut ids = tr.relation_ids.clone();
    ids.sort_unstable();
    let mut expected = vec![parent, child];
    expected.sort_unstable();
    assert_eq!(ids, expected);
}

#[test]
fn enum_and_domain_types() {
    let (_, m) = load("types");
    assert_eq!(tags(&m), "BYYRIC");
    let Message::Type(mood) = &m[1] else { panic!() };
    assert_eq!(
        (mood.xid, mood.namespace.as_str(), mood.name.as_str()),
        (None, "app", "mood")
    );
    // A domain's Type message keeps the domain's OID but names its base type (int4, in
    // pg_catalog, which is sent as the empty namespace).
    let Message::Type(domain) = &m[2] else {
        panic!()
    };
    assert_eq!(
        (domain.namespace.as_str(), domain.name.as_str()),
        ("", "int4")
    );

    let r = relation(&m[3]);
    assert_eq!((r.namespace.as_str(), r.name.as_str()), ("app", "typed"));
    assert_eq!(
        r.columns,
        [
            col(true, "id", 23, -1),
            col(false, "m", mood.id, -1),
            col(false, "p", domain.id, -1),
            col(false, "v", 1043, 20 + 4), // varchar(20): n + VARHDRSZ
            col(false, "n", 1700, ((10 << 16) | 2) + 4), // numeric(10,2)
            col(false, "ts", 1184, -1),
            col(false, "arr", 1007, -1),
        ]
    );
    assert_eq!(
        insert(&m[4], r.id),
        &row(&[
            t("1"),
            t("happy"),
            t("42"),
            t("héllo"),
            t("12.50"),
            t("2024-01-02 03:04:05.123456+00"),
            t("{1,NULL,3}"),
        ])
    );
}

#[test]
fn logical_messages_and_origin() {
    let (captured, m) = load("messages");
    assert_eq!(tags(&m), "MBMRICBOIC");
    let Message::Message(hb) = &m[0] else {
        panic!()
    };
    assert_eq!((hb.xid, hb.transactional), (None, false));
    assert_eq!(
        (hb.prefix.as_str(), &hb.content[..]),
        ("walrelay", &b"heartbeat"[..])
    );
    assert_eq!(hb.lsn, captured[0].lsn);

    let Message::Begin(begin) = &m[1] else {
        panic!()
    };
    let Message::Message(tx) = &m[2] else {
        panic!()
    };
    assert_eq!((tx.xid, tx.transactional), (None, true));
    assert_eq!(
        (tx.prefix.as_str(), &tx.content[..]),
        ("app", &[0x00, 0xff, 0x01][..])
    );
    assert!(tx.lsn > hb.lsn && tx.lsn < begin.final_lsn);
    assert_eq!(insert(&m[4], relation(&m[3]).id), &row(&[t("1")]));

    // Origin follows Begin and carries what pg_replication_origin_xact_setup was given.
    let Message::Begin(begin) = &m[6] else {
        panic!()
    };
    let Message::Origin(origin) = &m[7] else {
        panic!()
    };
    assert_eq!(
        (origin.commit_lsn, origin.name.as_str()),
        (Lsn(0xAB_CDEF), "upstream")
    );
    assert_eq!(origin.commit_lsn.to_string(), "0/ABCDEF");
    // 2024-01-02 03:04:05 UTC, the origin timestamp, becomes the commit time.
    assert_eq!(begin.commit_time, 757_479_845_000_000);
    assert_eq!(insert(&m[8], relation(&m[3]).id), &row(&[t("2")]));
}

/// Splits a capture into its stream blocks: (StreamStart, messages inside).
fn stream_blocks(m: &[Message]) -> Vec<(StreamStart, &[Message])> {
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

fn inserted_ids(block: &[Message], xid: u32, value: &str) -> Vec<i32> {
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

#[test]
fn v2_streamed_transactions_with_subtransaction_abort() {
    let (_, m) = load("stream");
    let Message::Commit(first) = &m[3] else {
        panic!()
    };
    let blocks = stream_blocks(&m);
    let top = blocks[0].0.xid;
    assert!(blocks[0].0.first_segment);
    let top_blocks: Vec<_> = blocks.iter().filter(|(s, _)| s.xid == top).collect();
    assert!(
        top_blocks.len() >= 3,
        "64kB of work mem splits the transaction"
    );
    assert!(top_blocks[1..].iter().all(|(s, _)| !s.first_segment));
    let every = |xid, value| -> Vec<i32> {
        top_blocks
            .iter()
            .flat_map(|(_, b)| inserted_ids(b, xid, value))
            .collect()
    };
    assert_eq!(every(top, "kept"), (1..=600).collect::<Vec<_>>());

    // The rolled-back savepoint streamed under its own subxid, then a Stream Abort for it.
    let aborts: Vec<_> = m
        .iter()
        .filter_map(|x| match x {
            Message::StreamAbort(a) => Some(*a),
            _ => None,
        })
        .collect();
    assert_eq!(aborts.len(), 2);
    let sub = aborts[0];
    assert_eq!((sub.xid, sub.parallel), (top, None));
    assert!(sub.subxid > top);
    let rolled_back = every(sub.subxid, "rolled back");
    assert!(!rolled_back.is_empty() && rolled_back.iter().all(|id| (1001..=1800).contains(id)));
    // Rows after the rollback belong to a new subtransaction.
    let after_xid = sub.subxid + 1;
    assert_eq!(every(after_xid, "after"), (2001..=2010).collect::<Vec<_>>());

    let commit = m
        .iter()
        .find_map(|x| match x {
            Message::StreamCommit(c) => Some(*c),
            _ => None,
        })
        .unwrap();
    assert_eq!((commit.xid, commit.flags), (top, 0));
    assert!(commit.commit_lsn > first.end_lsn && commit.end_lsn > commit.commit_lsn);
    assert!(commit.commit_time >= first.commit_time);

    // The whole-transaction abort: subxid == xid, and it never commits.
    let whole = aborts[1];
    assert_eq!(whole.xid, whole.subxid);
    assert!(blocks
        .iter()
        .any(|(s, _)| s.xid == whole.xid && s.first_segment));
    let ids: Vec<i32> = blocks
        .iter()
        .filter(|(s, _)| s.xid == whole.xid)
        .flat_map(|(_, b)| inserted_ids(b, whole.xid, "aborted"))
        .collect();
    assert!(!ids.is_empty() && ids.iter().all(|id| (3001..=3800).contains(id)));

    // Relation messages inside a block carry the xid of the (sub)transaction using them.
    let Message::Relation(r) = &blocks[0].1[0] else {
        panic!()
    };
    assert_eq!((r.xid, r.name.as_str()), (Some(top), "big"));
    assert_eq!(tags(&m[m.len() - 3..]), "BIC");
}

#[test]
fn v3_two_phase_commit_rollback_and_stream_prepare() {
    let (captured, m) = load("twophase");
    let Message::BeginPrepare(bp) = &m[0] else {
        panic!()
    };
    assert_eq!(bp.gid, "walrelay-commit");
    assert!(bp.end_lsn > bp.prepare_lsn && bp.prepare_time > Y2020);
    let r = relation(&m[1]);
    assert_eq!(insert(&m[2], r.id), &row(&[t("1"), t("committed")]));
    let Message::CommitPrepared(cp) = &m[4] else {
        panic!()
    };
    assert_eq!(
        (cp.flags, cp.xid, cp.gid.as_str()),
        (0, bp.xid, "walrelay-commit")
    );
    assert!(cp.commit_lsn >= bp.end_lsn && cp.end_lsn > cp.commit_lsn);
    assert!(cp.commit_time >= bp.prepare_time);
    assert_eq!(captured[4].lsn, cp.end_lsn);

    let Message::BeginPrepare(bp) = &m[5] else {
        panic!()
    };
    assert_eq!(bp.gid, "walrelay-rollback");
    assert_eq!(insert(&m[6], r.id), &row(&[t("2"), t("rolled back")]));
    let Message::RollbackPrepared(rp) = &m[8] else {
        panic!()
    };
    assert_eq!(
        (rp.flags, rp.xid, rp.gid.as_str()),
        (0, bp.xid, "walrelay-rollback")
    );
    assert_eq!(
        (rp.prepare_end_lsn, rp.prepare_time),
        (bp.end_lsn, bp.prepare_time)
    );
    assert!(rp.rollback_end_lsn > rp.prepare_end_lsn && rp.rollback_time >= rp.prepare_time);

    let blocks = stream_blocks(&m);
    let xid = blocks[0].0.xid;
    let ids: Vec<i32> = blocks
        .iter()
        .flat_map(|(_, b)| inserted_ids(b, xid, "streamed"))
        .collect();
    assert_eq!(ids, (10..=1000).collect::<Vec<_>>());
    let [.., Message::StreamPrepare(sp), Message::CommitPrepared(cp)] = &m[..] else {
        panic!()
    };
    assert_eq!(
        (sp.flags, sp.xid, sp.gid.as_str()),
        (0, xid, "walrelay-streamed")
    );
    assert!(sp.end_lsn > sp.prepare_lsn);
    assert_eq!((cp.xid, cp.gid.as_str()), (xid, "walrelay-streamed"));
    assert!(cp.commit_lsn >= sp.end_lsn);
}

#[test]
fn binary_mode_cells() {
    let (_, m) = load("binary");
    assert_eq!(tags(&m), "BRICBUCBDC");
    let r = relation(&m[1]);
    let types: Vec<u32> = r.columns.iter().map(|c| c.type_oid).collect();
    assert_eq!(types, [23, 20, 16, 701, 25, 17, 2950, 1184, 25]);
    let new = insert(&m[2], r.id);
    assert_eq!(
        new.cells[..8],
        [
            b(&1i32.to_be_bytes()),
            b(&(-2i64).to_be_bytes()),
            b(&[1]),
            b(&1.5f64.to_be_bytes()),
            b(b"text"),
            b(&[0xde, 0xad, 0xbe, 0xef]),
            b(&[
                0xa0, 0xee, 0xbc, 0x99, 0x9c, 0x0b, 0x4e, 0xf8, 0xbb, 0x6d, 0x6b, 0xb9, 0xbd, 0x38,
                0x0a, 0x11
            ]),
            // 2000-01-01 00:00:01 UTC: one second after the PostgreSQL epoch, in µs.
            b(&1_000_000i64.to_be_bytes()),
        ]
    );
    assert_body(&new.cells[8]);
    let (old, new) = update(&m[5], r.id);
    assert_eq!(old, &None);
    assert_eq!(new.cells[1], b(&7i64.to_be_bytes()));
    assert_eq!(
        (&new.cells[5], &new.cells[8]),
        (&Cell::Null, &Cell::UnchangedToast)
    );
    let mut key = vec![Cell::Null; 9];
    key[0] = b(&1i32.to_be_bytes());
    assert_eq!(
        delete(&m[8], r.id),
        &OldTuple::Key(TupleData { cells: key })
    );
}

#[test]
fn benchmark_mix_is_pgbench_shaped() {
    let (_, m) = load("mix");
    let count = |tag: u8| m.iter().filter(|x| x.tag() == tag).count();
    assert_eq!((count(b'B'), count(b'C')), (520, 520));
    assert_eq!((count(b'U'), count(b'I')), (1500 + 100, 500 + 100));
    let names: Vec<&str> = m
        .iter()
        .filter_map(|x| match x {
            Message::Relation(r) => Some(r.name.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(
        names,
        [
            "pgbench_accounts",
            "pgbench_tellers",
            "pgbench_branches",
            "pgbench_history",
            "wide"
        ]
    );
    let filler = " ".repeat(84);
    let Message::Update(u) = &m[2] else { panic!() };
    assert_eq!(u.new.cells[3], t(&filler), "char(84) arrives blank-padded");
}
