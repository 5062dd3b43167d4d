//! Row changes: replica identities, TOAST, TRUNCATE, types, binary mode, the bench mix.

use walrelay_proto::*;

use crate::*;

#[test]
fn identity_default_full_and_index() {
    let (_, m) = load("identity");
    assert_eq!(tags(&m), "BRIIUUDCBRIIUDCBRIUUDC");
    identity_default(&m);
    identity_full(&m);
    identity_index(&m);
}

fn identity_default(m: &[Message]) {
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
}

fn identity_full(m: &[Message]) {
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
}

fn identity_index(m: &[Message]) {
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
