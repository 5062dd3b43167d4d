//! Property tests: every message kind survives encode → decode unchanged, and no input,
//! arbitrary or a corrupted valid message, makes the decoder panic.

use bytes::Bytes;
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::strategy::Union;
use walrelay_proto::*;

/// Names can hold any character but NUL, which terminates strings on the wire.
fn name() -> impl Strategy<Value = String> {
    "[^\u{0}]{0,12}"
}

fn lsn() -> impl Strategy<Value = Lsn> {
    any::<u64>().prop_map(Lsn)
}

fn bytes() -> impl Strategy<Value = Bytes> {
    vec(any::<u8>(), 0..24).prop_map(Bytes::from)
}

fn tuple() -> impl Strategy<Value = TupleData> {
    let cell = prop_oneof![
        Just(Cell::Null),
        Just(Cell::UnchangedToast),
        bytes().prop_map(Cell::Text),
        bytes().prop_map(Cell::Binary),
    ];
    vec(cell, 0..8).prop_map(|cells| TupleData { cells })
}

fn old_tuple() -> impl Strategy<Value = OldTuple> {
    prop_oneof![
        tuple().prop_map(OldTuple::Key),
        tuple().prop_map(OldTuple::Full)
    ]
}

fn replica_identity() -> impl Strategy<Value = ReplicaIdentity> {
    prop_oneof![
        Just(ReplicaIdentity::Default),
        Just(ReplicaIdentity::Nothing),
        Just(ReplicaIdentity::Full),
        Just(ReplicaIdentity::Index),
    ]
}

fn relation(xid: BoxedStrategy<Option<u32>>) -> impl Strategy<Value = Message> {
    let column = (any::<bool>(), name(), any::<u32>(), any::<i32>()).prop_map(
        |(key, name, type_oid, type_modifier)| Column {
            key,
            name,
            type_oid,
            type_modifier,
        },
    );
    (
        xid,
        any::<u32>(),
        name(),
        name(),
        replica_identity(),
        vec(column, 0..6),
    )
        .prop_map(|(xid, id, namespace, name, replica_identity, columns)| {
            Message::Relation(Relation {
                xid,
                id,
                namespace,
                name,
                replica_identity,
                columns,
            })
        })
}

fn dml(xid: BoxedStrategy<Option<u32>>) -> impl Strategy<Value = Message> {
    let x = || xid.clone();
    prop_oneof![
        (x(), any::<u32>(), tuple()).prop_map(|(xid, relation_id, new)| Message::Insert(Insert {
            xid,
            relation_id,
            new
        })),
        (
            x(),
            any::<u32>(),
            proptest::option::of(old_tuple()),
            tuple()
        )
            .prop_map(|(xid, relation_id, old, new)| Message::Update(Update {
                xid,
                relation_id,
                old,
                new
            })),
        (x(), any::<u32>(), old_tuple()).prop_map(|(xid, relation_id, old)| Message::Delete(
            Delete {
                xid,
                relation_id,
                old
            }
        )),
        (x(), any::<bool>(), any::<bool>(), vec(any::<u32>(), 0..5)).prop_map(
            |(xid, cascade, restart_identity, relation_ids)| {
                let options = TruncateOptions {
                    cascade,
                    restart_identity,
                };
                Message::Truncate(Truncate {
                    xid,
                    options,
                    relation_ids,
                })
            }
        ),
        (x(), any::<bool>(), lsn(), name(), bytes()).prop_map(
            |(xid, transactional, lsn, prefix, content)| {
                Message::Message(LogicalMessage {
                    xid,
                    transactional,
                    lsn,
                    prefix,
                    content,
                })
            }
        ),
        (x(), any::<u32>(), name(), name()).prop_map(|(xid, id, namespace, name)| Message::Type(
            Type {
                xid,
                id,
                namespace,
                name
            }
        )),
    ]
}

fn transaction() -> impl Strategy<Value = Message> {
    prop_oneof![
        (lsn(), any::<i64>(), any::<u32>()).prop_map(|(final_lsn, commit_time, xid)| {
            Message::Begin(Begin {
                final_lsn,
                commit_time,
                xid,
            })
        }),
        (any::<u8>(), lsn(), lsn(), any::<i64>()).prop_map(
            |(flags, commit_lsn, end_lsn, commit_time)| {
                Message::Commit(Commit {
                    flags,
                    commit_lsn,
                    end_lsn,
                    commit_time,
                })
            }
        ),
        (lsn(), name()).prop_map(|(commit_lsn, name)| Message::Origin(Origin { commit_lsn, name })),
        (any::<u32>(), any::<bool>()).prop_map(|(xid, first_segment)| {
            Message::StreamStart(StreamStart { xid, first_segment })
        }),
        Just(Message::StreamStop),
        (any::<u32>(), any::<u8>(), lsn(), lsn(), any::<i64>()).prop_map(
            |(xid, flags, commit_lsn, end_lsn, commit_time)| {
                Message::StreamCommit(StreamCommit {
                    xid,
                    flags,
                    commit_lsn,
                    end_lsn,
                    commit_time,
                })
            }
        ),
    ]
}

fn two_phase() -> impl Strategy<Value = Message> {
    let fields = || {
        (
            any::<u8>(),
            lsn(),
            lsn(),
            any::<i64>(),
            any::<u32>(),
            name(),
        )
    };
    prop_oneof![
        fields().prop_map(|(_, prepare_lsn, end_lsn, prepare_time, xid, gid)| {
            Message::BeginPrepare(BeginPrepare {
                prepare_lsn,
                end_lsn,
                prepare_time,
                xid,
                gid,
            })
        }),
        prepare().prop_map(Message::Prepare),
        prepare().prop_map(Message::StreamPrepare),
        fields().prop_map(|(flags, commit_lsn, end_lsn, commit_time, xid, gid)| {
            Message::CommitPrepared(CommitPrepared {
                flags,
                commit_lsn,
                end_lsn,
                commit_time,
                xid,
                gid,
            })
        }),
        (fields(), any::<i64>()).prop_map(
            |(
                (flags, prepare_end_lsn, rollback_end_lsn, prepare_time, xid, gid),
                rollback_time,
            )| {
                Message::RollbackPrepared(RollbackPrepared {
                    flags,
                    prepare_end_lsn,
                    rollback_end_lsn,
                    prepare_time,
                    rollback_time,
                    xid,
                    gid,
                })
            }
        ),
    ]
}

fn prepare() -> impl Strategy<Value = Prepare> {
    (
        any::<u8>(),
        lsn(),
        lsn(),
        any::<i64>(),
        any::<u32>(),
        name(),
    )
        .prop_map(
            |(flags, prepare_lsn, end_lsn, prepare_time, xid, gid)| Prepare {
                flags,
                prepare_lsn,
                end_lsn,
                prepare_time,
                xid,
                gid,
            },
        )
}

fn stream_abort(parallel_abort: bool) -> BoxedStrategy<Message> {
    let parallel = if parallel_abort {
        (lsn(), any::<i64>())
            .prop_map(|(abort_lsn, abort_time)| {
                Some(ParallelAbort {
                    abort_lsn,
                    abort_time,
                })
            })
            .boxed()
    } else {
        Just(None).boxed()
    };
    (any::<u32>(), any::<u32>(), parallel)
        .prop_map(|(xid, subxid, parallel)| {
            Message::StreamAbort(StreamAbort {
                xid,
                subxid,
                parallel,
            })
        })
        .boxed()
}

/// A context and a message that is valid in it (xids exactly when in a stream block).
fn context_and_message() -> impl Strategy<Value = (DecodeContext, Message)> {
    (any::<bool>(), any::<bool>()).prop_flat_map(|(in_stream, parallel_abort)| {
        let xid = if in_stream {
            any::<u32>().prop_map(Some).boxed()
        } else {
            Just(None).boxed()
        };
        let message = Union::new(vec![
            relation(xid.clone()).boxed(),
            dml(xid).boxed(),
            transaction().boxed(),
            two_phase().boxed(),
            stream_abort(parallel_abort),
        ]);
        (
            Just(DecodeContext {
                in_stream,
                parallel_abort,
            }),
            message,
        )
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4096))]

    #[test]
    fn every_message_round_trips((ctx, message) in context_and_message()) {
        let encoded = encode(&message).freeze();
        let decoded = decode(&encoded, ctx);
        prop_assert_eq!(decoded.as_ref(), Ok(&message));
        prop_assert_eq!(encode(&decoded.unwrap()).freeze(), encoded);
    }

    #[test]
    fn arbitrary_bytes_never_panic(data in vec(any::<u8>(), 0..128), in_stream: bool, parallel_abort: bool) {
        let data = Bytes::from(data);
        if let Ok(m) = decode(&data, DecodeContext { in_stream, parallel_abort }) {
            prop_assert_eq!(encode(&m).freeze(), data);
        }
    }

    #[test]
    fn bytes_after_a_valid_tag_never_panic(
        tag in prop::sample::select(b"BCORYIUDTMSEcAbPKrp".to_vec()),
        body in vec(any::<u8>(), 0..96),
        in_stream: bool,
        parallel_abort: bool,
    ) {
        let data = Bytes::from([&[tag][..], &body].concat());
        if let Ok(m) = decode(&data, DecodeContext { in_stream, parallel_abort }) {
            prop_assert_eq!(m.tag(), tag);
            prop_assert_eq!(encode(&m).freeze(), data);
        }
    }

    #[test]
    fn corrupted_messages_never_panic(
        (ctx, message) in context_and_message(),
        at in any::<prop::sample::Index>(),
        byte: u8,
        cut in any::<prop::sample::Index>(),
    ) {
        let mut data = encode(&message).to_vec();
        let i = at.index(data.len());
        data[i] = byte;
        data.truncate(cut.index(data.len() + 1).max(i + 1));
        let data = Bytes::from(data);
        // Whatever still decodes must be exactly what the bytes say.
        if let Ok(m) = decode(&data, ctx) {
            prop_assert_eq!(encode(&m).freeze(), data);
        }
    }
}
