//! Protocol invariants that every capture must satisfy.

use std::collections::HashMap;

use walrelay_proto::fixture::Captured;
use walrelay_proto::*;

use crate::Y2020;

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
pub fn check_framing(captured: &[Captured], messages: &[Message]) {
    let mut state = State::Idle;
    let mut relations: HashMap<u32, usize> = HashMap::new();
    for (c, m) in captured.iter().zip(messages) {
        check_xid(&state, m);
        check_row_widths(m, &mut relations);
        state = step(state, c, m);
    }
    assert!(
        matches!(state, State::Idle),
        "capture ends inside {state:?}"
    );
}

/// Data messages only inside a transaction, with an xid exactly inside a stream block.
fn check_xid(state: &State, m: &Message) {
    let Some(xid) = data_xid(m) else { return };
    assert!(
        !matches!(state, State::Idle),
        "data outside a transaction: {m:?}"
    );
    assert_eq!(
        xid.is_some(),
        matches!(state, State::Stream(_)),
        "xid present iff inside a stream: {m:?}"
    );
    if let (State::Stream(top), Some(xid)) = (state, xid) {
        assert!(
            xid >= *top,
            "a subtransaction's xid follows its parent's: {m:?}"
        );
    }
}

/// The framing state machine: which message may follow which, and what must agree.
fn step(state: State, c: &Captured, m: &Message) -> State {
    match (state, m) {
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
    }
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
