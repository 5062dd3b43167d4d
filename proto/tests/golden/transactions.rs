//! Transactions: logical messages and origins, v2 streaming, v3 two-phase.

use walrelay_proto::*;

use crate::*;

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

    // Relation messages inside a block carry the xid of the (sub)transaction using them.
    let Message::Relation(r) = &blocks[0].1[0] else {
        panic!()
    };
    assert_eq!((r.xid, r.name.as_str()), (Some(top), "big"));
    assert_eq!(tags(&m[m.len() - 3..]), "BIC");
}

#[test]
fn v2_streamed_transaction_aborted_whole() {
    let (_, m) = load("stream");
    let blocks = stream_blocks(&m);
    let Some(Message::StreamAbort(whole)) = m.iter().rev().find(|x| x.tag() == b'A') else {
        panic!()
    };
    // The whole-transaction abort: subxid == xid, and it never commits.
    assert!(!m
        .iter()
        .any(|x| matches!(x, Message::StreamCommit(c) if c.xid == whole.xid)));
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
