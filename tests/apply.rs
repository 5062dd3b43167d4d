//! `walrelay stream` applying each kind of change (DESIGN.md → Apply rules)
//! against real clusters: snapshot, stream, write on the source, wait until
//! the target's checkpoint passes the source position read after the
//! writes, compare row by row.

mod harness;
mod stream_support;

use std::time::Duration;

use harness::exec;
use stream_support::{
    assert_mentions, assert_not_mentioned, assert_same, assert_same_multiset, catch_up, drop_slot,
    prepare, source_lsn, target_rows, Stream,
};

#[tokio::test]
async fn insert_update_delete_and_key_change_with_a_primary_key_or_identity_index() {
    let pair = prepare(
        "apply_pk",
        "CREATE TABLE t (id int PRIMARY KEY, v text, n int);
         INSERT INTO t SELECT g, 'v' || g, g FROM generate_series(1, 100) g;
         CREATE TABLE c (a int, b text, v text, PRIMARY KEY (a, b));
         INSERT INTO c SELECT g % 10, 'k' || g, 'x' FROM generate_series(1, 50) g;
         CREATE TABLE ri (id int, code text NOT NULL, v text);
         CREATE UNIQUE INDEX ri_code ON ri (code);
         ALTER TABLE ri REPLICA IDENTITY USING INDEX ri_code;
         INSERT INTO ri SELECT g, 'code' || g, 'x' FROM generate_series(1, 50) g;",
        "",
    )
    .await;
    let mut stream = Stream::start(&pair, &[]);
    let source = pair.source().await;
    exec(
        &source,
        "INSERT INTO t SELECT g, 'new' || g, g FROM generate_series(101, 200) g;
         UPDATE t SET v = 'changed', n = NULL WHERE id % 7 = 0;
         DELETE FROM t WHERE id % 11 = 0;
         UPDATE t SET id = id + 1000 WHERE id % 10 = 0;
         UPDATE c SET b = b || '-moved', v = 'y' WHERE a = 3;
         DELETE FROM c WHERE a = 4;
         INSERT INTO c VALUES (99, 'new', NULL);
         UPDATE ri SET v = 'y', id = -id WHERE id % 3 = 0;
         UPDATE ri SET code = code || '-renamed' WHERE id % 4 = 0;
         DELETE FROM ri WHERE id % 5 = 0;
         INSERT INTO ri VALUES (100, 'code100', NULL);",
    )
    .await;
    catch_up(&pair, &mut stream).await;
    assert_same(&pair, "t", "id", 150).await;
    assert_same(&pair, "c", "a, b", 40).await;
    assert_same(&pair, "ri", "code", 40).await;
    let moved = target_rows(&pair, "SELECT count(*) FROM t WHERE id > 1000").await;
    assert_eq!(moved[0][0].as_deref(), Some("19"), "rows whose key changed");
    stream.stop().await;
    drop_slot(&pair).await;
}

#[tokio::test]
async fn update_leaving_a_toasted_column_unchanged_keeps_it() {
    // STORAGE EXTERNAL: stored out of line uncompressed, so > 2 kB is
    // TOASTed and an UPDATE not touching it sends 'u' (unchanged).
    let pair = prepare(
        "apply_toast",
        "CREATE TABLE doc (id int PRIMARY KEY, body text, n int);
         ALTER TABLE doc ALTER COLUMN body SET STORAGE EXTERNAL;
         INSERT INTO doc SELECT g, (SELECT string_agg(md5(g::text || '-' || i), '') FROM generate_series(1, 400) i), 0
         FROM generate_series(1, 5) g;
         CREATE TABLE fdoc (body text, n int);
         ALTER TABLE fdoc ALTER COLUMN body SET STORAGE EXTERNAL;
         ALTER TABLE fdoc REPLICA IDENTITY FULL;
         INSERT INTO fdoc SELECT (SELECT string_agg(md5('f' || g || '-' || i), '') FROM generate_series(1, 400) i), g
         FROM generate_series(1, 3) g;",
        "",
    )
    .await;
    // The premise: the values are stored out of line on the source.
    let source = pair.source().await;
    let toast = harness::value(
        &source,
        "SELECT reltoastrelid::regclass::text FROM pg_class WHERE oid = 'doc'::regclass",
    )
    .await;
    let chunks = harness::value(&source, &format!("SELECT count(*) FROM {toast}")).await;
    assert_ne!(chunks, "0", "doc.body should be TOASTed out of line");
    let mut stream = Stream::start(&pair, &[]);
    exec(
        &pair.source().await,
        "INSERT INTO doc SELECT g, (SELECT string_agg(md5(g::text || '+' || i), '') FROM generate_series(1, 400) i), 0
         FROM generate_series(6, 10) g;
         UPDATE doc SET n = n + 1;
         UPDATE doc SET n = n + 1 WHERE id % 2 = 0;
         UPDATE fdoc SET n = n + 10;
         DELETE FROM fdoc WHERE n = 12;",
    )
    .await;
    catch_up(&pair, &mut stream).await;
    assert_same(&pair, "doc", "id", 10).await;
    assert_same_multiset(&pair, "fdoc", 2).await;
    // In one batch: a TOASTed value changed, then an update that leaves it
    // unchanged ('u'); an insert, then such an update; a key change in between.
    exec(
        &pair.source().await,
        "BEGIN;
         UPDATE doc SET body = (SELECT string_agg(md5('changed' || i), '') FROM generate_series(1, 400) i) WHERE id = 1;
         UPDATE doc SET n = n + 100 WHERE id IN (1, 2);
         INSERT INTO doc SELECT 11, (SELECT string_agg(md5('eleven' || i), '') FROM generate_series(1, 400) i), 0;
         UPDATE doc SET n = 11 WHERE id = 11;
         UPDATE doc SET id = 12 WHERE id = 2;
         UPDATE doc SET n = 12 WHERE id = 12;
         COMMIT;
         UPDATE doc SET n = -1 WHERE id IN (1, 11, 12);",
    )
    .await;
    catch_up(&pair, &mut stream).await;
    assert_same(&pair, "doc", "id", 11).await;
    let lengths = target_rows(
        &pair,
        "SELECT min(length(body)), max(length(body)) FROM doc",
    )
    .await;
    assert_eq!(
        lengths[0],
        vec![Some("12800".to_string()), Some("12800".to_string())],
        "the TOASTed values must stay whole on the target"
    );
    stream.stop().await;
    drop_slot(&pair).await;
}

#[tokio::test]
async fn replica_identity_full_without_key_touches_exactly_one_of_identical_rows() {
    // json and point have no `=` operator; NULLs must match NULLs.
    let pair = prepare(
        "apply_full",
        r#"CREATE TABLE f (a int, b text, j json, p point, arr int[]);
         ALTER TABLE f REPLICA IDENTITY FULL;
         INSERT INTO f VALUES
           (1, 'x', '{"k": 1}', '(1,2)', '{1,2}'),
           (1, 'x', '{"k": 1}', '(1,2)', '{1,2}'),
           (2, NULL, NULL, NULL, NULL),
           (2, NULL, NULL, NULL, NULL),
           (3, 'z', '[1, 2]', '(0.5,-1)', '{}');"#,
        "",
    )
    .await;
    let mut stream = Stream::start(&pair, &[]);
    exec(
        &pair.source().await,
        r#"UPDATE f SET b = 'y' WHERE ctid = (SELECT ctid FROM f WHERE a = 1 LIMIT 1);
         DELETE FROM f WHERE ctid = (SELECT ctid FROM f WHERE a = 2 LIMIT 1);
         UPDATE f SET j = '{"k": 2}', p = '(9,9)' WHERE a = 3;
         INSERT INTO f VALUES (4, 'd', '{}', '(0,0)', '{4}'), (4, 'd', '{}', '(0,0)', '{4}'),
                              (4, 'd', '{}', '(0,0)', '{4}');
         DELETE FROM f WHERE ctid = (SELECT ctid FROM f WHERE a = 4 LIMIT 1);
         UPDATE f SET arr = '{5}' WHERE ctid = (SELECT ctid FROM f WHERE a = 4 LIMIT 1);
         UPDATE f SET b = 'was null' WHERE a = 2;"#,
    )
    .await;
    catch_up(&pair, &mut stream).await;
    assert_same_multiset(&pair, "f", 6).await;
    let ones = target_rows(&pair, "SELECT b FROM f WHERE a = 1 ORDER BY b").await;
    assert_eq!(
        ones,
        vec![vec![Some("x".to_string())], vec![Some("y".to_string())]],
        "exactly one of the two identical rows is updated"
    );
    let fours = target_rows(
        &pair,
        "SELECT arr::text, count(*) FROM f WHERE a = 4 GROUP BY 1 ORDER BY 1",
    )
    .await;
    assert_eq!(
        fours,
        vec![
            vec![Some("{4}".to_string()), Some("1".to_string())],
            vec![Some("{5}".to_string()), Some("1".to_string())]
        ],
        "one of three identical rows deleted, one updated"
    );
    stream.stop().await;
    drop_slot(&pair).await;
}

#[tokio::test]
async fn truncate_of_two_tables_restarts_identity_only_when_flagged() {
    // The child references the parent: only one TRUNCATE of both works.
    let pair = prepare(
        "apply_truncate",
        "CREATE TABLE parent (id serial PRIMARY KEY, v text);
         CREATE TABLE child (id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
                             parent_id int REFERENCES parent, v text);
         INSERT INTO parent (v) SELECT 'p' FROM generate_series(1, 10);
         INSERT INTO child (parent_id, v) SELECT g, 'c' FROM generate_series(1, 10) g;",
        "",
    )
    .await;
    let target = pair.target().await;
    exec(
        &target,
        "SELECT setval('public.parent_id_seq', 500); SELECT setval('public.child_id_seq', 700);",
    )
    .await;
    let sequences = "SELECT (SELECT last_value || '/' || is_called FROM public.parent_id_seq),
                            (SELECT last_value || '/' || is_called FROM public.child_id_seq)";
    let mut stream = Stream::start(&pair, &[]);
    let source = pair.source().await;
    exec(
        &source,
        "TRUNCATE parent, child;
         INSERT INTO parent (v) VALUES ('after plain truncate');
         INSERT INTO child (parent_id, v) SELECT max(id), 'c' FROM parent;",
    )
    .await;
    catch_up(&pair, &mut stream).await;
    assert_same(&pair, "parent", "id", 1).await;
    assert_same(&pair, "child", "id", 1).await;
    assert_eq!(
        harness::rows(&target, sequences).await[0],
        vec![Some("500/true".to_string()), Some("700/true".to_string())],
        "TRUNCATE without RESTART IDENTITY must leave the target's sequences alone"
    );

    exec(
        &source,
        "INSERT INTO parent (v) VALUES ('more');
         TRUNCATE parent, child RESTART IDENTITY;
         INSERT INTO parent (v) VALUES ('after restart'), ('second');
         INSERT INTO child (parent_id, v) VALUES (1, 'c');",
    )
    .await;
    catch_up(&pair, &mut stream).await;
    assert_same(&pair, "parent", "id", 2).await;
    assert_same(&pair, "child", "id", 1).await;
    assert_eq!(
        harness::rows(&target, sequences).await[0],
        vec![Some("1/false".to_string()), Some("1/false".to_string())],
        "TRUNCATE … RESTART IDENTITY must restart the target's sequences"
    );

    // Rows written just before a TRUNCATE, in the same source transaction
    // or in one batched with it, must be gone after it.
    for sql in [
        "INSERT INTO parent (v) VALUES ('before truncate, own transaction')",
        "INSERT INTO child (parent_id, v) SELECT max(id), 'c' FROM parent",
        "TRUNCATE parent, child",
        "BEGIN;
         INSERT INTO parent (v) VALUES ('before truncate, same transaction');
         UPDATE parent SET v = 'updated before truncate';
         TRUNCATE parent, child;
         INSERT INTO parent (v) VALUES ('after truncate, same transaction');
         COMMIT;",
    ] {
        exec(&source, sql).await;
    }
    catch_up(&pair, &mut stream).await;
    assert_same(&pair, "parent", "id", 1).await;
    assert_same(&pair, "child", "id", 0).await;
    stream.stop().await;
    drop_slot(&pair).await;
}

#[tokio::test]
async fn identity_always_and_stored_generated_columns() {
    let pair = prepare(
        "apply_generated",
        "CREATE TABLE g (id int GENERATED ALWAYS AS IDENTITY PRIMARY KEY, n int,
                         doubled int GENERATED ALWAYS AS (n * 2) STORED, v text);
         INSERT INTO g (n, v) SELECT g, 'v' FROM generate_series(1, 5) g;",
        "",
    )
    .await;
    let mut stream = Stream::start(&pair, &[]);
    exec(
        &pair.source().await,
        "INSERT INTO g (n, v) SELECT g, 'new' FROM generate_series(10, 20) g;
         UPDATE g SET n = n + 100 WHERE id % 2 = 0;
         UPDATE g SET v = 'only v' WHERE id = 1;
         DELETE FROM g WHERE id = 3;
         INSERT INTO g (id, n, v) OVERRIDING SYSTEM VALUE VALUES (1000, 7, 'explicit id');",
    )
    .await;
    catch_up(&pair, &mut stream).await;
    assert_same(&pair, "g", "id", 16).await;
    let wrong = target_rows(
        &pair,
        "SELECT count(*) FROM g WHERE doubled IS DISTINCT FROM n * 2",
    )
    .await;
    assert_eq!(
        wrong[0][0].as_deref(),
        Some("0"),
        "the target computes doubled"
    );
    stream.stop().await;
    drop_slot(&pair).await;
}

const PARTITIONS: [&str; 4] = ["m", "m_eu", "m_us", "m_other"];

#[tokio::test]
async fn partitioned_table_via_leaves_and_via_root() {
    let pair = prepare(
        "apply_partitions",
        "CREATE TABLE m (id int, region text, v text, PRIMARY KEY (id, region)) PARTITION BY LIST (region);
         CREATE TABLE m_eu PARTITION OF m FOR VALUES IN ('eu');
         CREATE TABLE m_us PARTITION OF m FOR VALUES IN ('us');
         CREATE TABLE m_other PARTITION OF m DEFAULT;
         INSERT INTO m SELECT g, (ARRAY['eu', 'us', 'ap'])[g % 3 + 1], 'v' FROM generate_series(1, 30) g;",
        "",
    )
    .await;
    let mut stream = Stream::start(&pair, &[]);
    let source = pair.source().await;
    // Default publication: changes are published as the leaf partitions';
    // a row moving between partitions is a DELETE and an INSERT.
    exec(
        &source,
        "INSERT INTO m SELECT g, (ARRAY['eu', 'us', 'ap'])[g % 3 + 1], 'new' FROM generate_series(31, 60) g;
         UPDATE m SET v = 'changed' WHERE id % 4 = 0;
         UPDATE m SET region = 'us' WHERE region = 'eu' AND id % 5 = 0;
         UPDATE m SET region = 'eu' WHERE region = 'ap' AND id % 2 = 0;
         DELETE FROM m WHERE id % 7 = 0;
         TRUNCATE m_us;
         INSERT INTO m VALUES (1000, 'us', 'after leaf truncate');",
    )
    .await;
    catch_up(&pair, &mut stream).await;
    for table in PARTITIONS {
        assert_same(&pair, table, "id, region", 1).await;
    }
    // Via the root: changes arrive as the parent's, the target routes them.
    exec(
        &source,
        &format!(
            "ALTER PUBLICATION {} SET (publish_via_partition_root = true)",
            pair.publication
        ),
    )
    .await;
    let published = harness::column(
        &source,
        &format!(
            "SELECT tablename FROM pg_publication_tables WHERE pubname = '{}' ORDER BY 1",
            pair.publication
        ),
    )
    .await;
    assert_eq!(
        published,
        vec!["m"],
        "changes should now be published as the root's"
    );
    exec(
        &source,
        "INSERT INTO m SELECT g, (ARRAY['eu', 'us', 'ap'])[g % 3 + 1], 'root' FROM generate_series(61, 90) g;
         UPDATE m SET v = 'changed via root' WHERE id % 3 = 0;
         UPDATE m SET region = 'ap' WHERE region = 'us' AND id % 4 = 1;
         UPDATE m SET region = 'eu' WHERE region = 'ap' AND id > 60 AND id % 2 = 1;
         DELETE FROM m WHERE id % 11 = 0;
         TRUNCATE m;
         INSERT INTO m SELECT g, (ARRAY['eu', 'us', 'ap'])[g % 3 + 1], 'after root truncate'
         FROM generate_series(1, 20) g;
         UPDATE m SET region = 'us' WHERE id = 3;",
    )
    .await;
    catch_up(&pair, &mut stream).await;
    for table in PARTITIONS {
        assert_same(&pair, table, "id, region", 1).await;
    }
    stream.stop().await;
    drop_slot(&pair).await;
}

#[tokio::test]
async fn enum_domain_and_enum_array_with_different_type_oids_on_the_target() {
    let pair = prepare(
        "apply_types",
        "CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
         CREATE DOMAIN posint AS int CHECK (VALUE > 0);
         CREATE DOMAIN label AS text CHECK (VALUE <> '');
         CREATE TABLE e (id int PRIMARY KEY, m mood, ms mood[], d posint, l label);
         INSERT INTO e VALUES (1, 'ok', '{sad,happy}', 5, 'x'), (2, 'sad', '{}', 1, 'y');
         CREATE TABLE ef (m mood, ms mood[], d posint, l label);
         ALTER TABLE ef REPLICA IDENTITY FULL;
         INSERT INTO ef VALUES ('sad', '{ok,ok}', 1, 'a'), ('sad', '{ok,ok}', 1, 'a'), (NULL, NULL, NULL, NULL);",
        // Unrelated types first, so the target's OIDs for mood etc. differ.
        "CREATE TYPE junk1 AS ENUM ('a', 'b');
         CREATE TYPE junk2 AS (x int, y text);
         CREATE DOMAIN junk3 AS int;
         CREATE TABLE junk4 (x int);
         CREATE TYPE junk5 AS ENUM ('c');",
    )
    .await;
    let oid = "SELECT 'public.mood'::regtype::oid::text";
    let (s, t) = (
        harness::value(&pair.source().await, oid).await,
        harness::value(&pair.target().await, oid).await,
    );
    assert_ne!(s, t, "the test needs different enum OIDs on the two sides");
    let mut stream = Stream::start(&pair, &[]);
    exec(
        &pair.source().await,
        "INSERT INTO e VALUES (3, 'happy', '{happy,sad,ok}', 42, 'z'), (4, NULL, '{NULL,ok}', NULL, NULL);
         UPDATE e SET m = 'happy', ms = ms || 'ok'::mood WHERE id = 1;
         UPDATE e SET d = 7, l = 'changed' WHERE id = 2;
         UPDATE e SET id = 20 WHERE id = 2;
         DELETE FROM e WHERE id = 3;
         UPDATE ef SET ms = '{happy}' WHERE ctid = (SELECT ctid FROM ef WHERE m = 'sad' LIMIT 1);
         DELETE FROM ef WHERE ctid = (SELECT ctid FROM ef WHERE ms = '{ok,ok}' LIMIT 1);
         UPDATE ef SET l = 'was null' WHERE m IS NULL;
         INSERT INTO ef VALUES ('happy', '{sad}', 9, 'n');",
    )
    .await;
    catch_up(&pair, &mut stream).await;
    assert_same(&pair, "e", "id", 3).await;
    assert_same_multiset(&pair, "ef", 3).await;
    stream.stop().await;
    drop_slot(&pair).await;
}

#[tokio::test]
async fn target_triggers_do_not_fire() {
    let pair = prepare(
        "apply_triggers",
        "CREATE TABLE tr (id int PRIMARY KEY, v text);
         INSERT INTO tr VALUES (1, 'a'), (2, 'b');",
        "",
    )
    .await;
    exec(
        &pair.target().await,
        "CREATE TABLE public.fired (op text);
         CREATE FUNCTION public.note() RETURNS trigger LANGUAGE plpgsql AS
           $$BEGIN INSERT INTO public.fired VALUES (TG_OP); RETURN NULL; END$$;
         CREATE TRIGGER tr_note AFTER INSERT OR UPDATE OR DELETE ON public.tr
           FOR EACH ROW EXECUTE FUNCTION public.note();
         CREATE FUNCTION public.refuse() RETURNS trigger LANGUAGE plpgsql AS
           $$BEGIN RAISE EXCEPTION 'trigger fired'; END$$;
         CREATE TRIGGER tr_refuse BEFORE INSERT OR UPDATE OR DELETE ON public.tr
           FOR EACH ROW EXECUTE FUNCTION public.refuse();",
    )
    .await;
    let mut stream = Stream::start(&pair, &[]);
    exec(
        &pair.source().await,
        "INSERT INTO tr VALUES (3, 'c'); UPDATE tr SET v = 'changed' WHERE id = 1; DELETE FROM tr WHERE id = 2;",
    )
    .await;
    catch_up(&pair, &mut stream).await;
    assert_same(&pair, "tr", "id", 2).await;
    let fired = target_rows(&pair, "SELECT count(*) FROM public.fired").await;
    assert_eq!(fired[0][0].as_deref(), Some("0"), "a target trigger fired");
    stream.stop().await;
    drop_slot(&pair).await;
}

#[tokio::test]
async fn update_or_delete_finding_no_row_stops_naming_table_op_and_key_columns_only() {
    let pair = prepare(
        "apply_missing_row",
        "CREATE TABLE acct (id bigint PRIMARY KEY, secret text);
         INSERT INTO acct VALUES (987654321, 'initial-secret-1'), (987654322, 'initial-secret-2'), (5, 'x');",
        "",
    )
    .await;
    let target = pair.target().await;
    let source = pair.source().await;
    exec(&target, "DELETE FROM acct WHERE id = 987654321").await;
    let mut stream = Stream::start(&pair, &[]);
    exec(&source, "INSERT INTO acct VALUES (6, 'fine')").await;
    catch_up(&pair, &mut stream).await;
    exec(
        &source,
        "BEGIN;
         INSERT INTO acct VALUES (7, 'in-the-failing-transaction');
         UPDATE acct SET secret = 'hunter2-topsecret' WHERE id = 987654321;
         COMMIT;",
    )
    .await;
    let run = stream.wait(Duration::from_secs(60)).await;
    assert_eq!(
        run.code,
        Some(1),
        "a missing row must stop the stream:\n{run}"
    );
    assert_mentions(&run, &["acct", "update", "id", "no row"]);
    assert_not_mentioned(
        &run,
        &[
            "987654321",
            "hunter2-topsecret",
            "in-the-failing-transaction",
            "initial-secret",
        ],
    );
    // Nothing of the failing transaction was applied or checkpointed.
    let seven = target_rows(&pair, "SELECT count(*) FROM acct WHERE id = 7").await;
    assert_eq!(
        seven[0][0].as_deref(),
        Some("0"),
        "part of the failing transaction was applied"
    );

    // Repaired on the target, a restart applies the transaction.
    exec(
        &target,
        "INSERT INTO acct VALUES (987654321, 'initial-secret-1')",
    )
    .await;
    let mut stream = Stream::start(&pair, &[]);
    catch_up(&pair, &mut stream).await;
    assert_same(&pair, "acct", "id", 4).await;
    stream.stop().await;

    // The same for a DELETE.
    exec(&target, "DELETE FROM acct WHERE id = 987654322").await;
    let stream = Stream::start(&pair, &[]);
    exec(&source, "DELETE FROM acct WHERE id = 987654322").await;
    let run = stream.wait(Duration::from_secs(60)).await;
    assert_eq!(
        run.code,
        Some(1),
        "a missing row must stop the stream:\n{run}"
    );
    assert_mentions(&run, &["acct", "delete", "id"]);
    assert_not_mentioned(&run, &["987654322", "initial-secret"]);
    drop_slot(&pair).await;
}

#[tokio::test]
async fn one_million_row_transaction_with_bounded_memory() {
    let pair = prepare(
        "apply_million",
        "CREATE TABLE big (id int PRIMARY KEY, v text, n bigint);",
        "",
    )
    .await;
    let mut stream = Stream::start(&pair, &[]);
    let source = pair.source().await;
    exec(
        &source,
        "INSERT INTO big SELECT g, 'row number ' || g, g * 7 FROM generate_series(1, 1000000) g",
    )
    .await;
    let lsn = source_lsn(&source).await;
    let target = pair.target().await;
    // Sample the resident set while it applies; VmHWM is the peak anyway.
    let mut peak_kb = 0;
    let watch = async {
        loop {
            peak_kb = peak_kb.max(stream.peak_rss_kb().unwrap_or(0));
            if stream_support::applied_lsn(&target, &pair.slot)
                .await
                .is_some_and(|a| a >= lsn)
            {
                break;
            }
            if stream.exited() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(400), watch)
        .await
        .expect("the 1,000,000-row transaction was not applied within 400 s");
    stream_support::wait_applied(&pair, &mut stream, lsn, Duration::from_secs(5)).await;
    peak_kb = peak_kb.max(stream.peak_rss_kb().unwrap_or(0));
    eprintln!("walrelay peak RSS (VmHWM) applying a 1,000,000-row transaction: {peak_kb} kB");
    let digest =
        "SELECT count(*) || ' ' || md5(string_agg(md5(t::text), '' ORDER BY id)) FROM big t";
    assert_eq!(
        harness::value(&source, digest).await,
        harness::value(&target, digest).await,
        "the 1,000,000 rows differ"
    );
    assert!(
        peak_kb < 300 * 1024,
        "walrelay's peak RSS was {peak_kb} kB applying one large transaction: it must stream it, not hold it"
    );
    stream.stop().await;
    drop_slot(&pair).await;
}

/// Prepared transactions hold an xid, and slot creation waits for every
/// such transaction: this test has its own source cluster, so a pending one
/// (or one left behind by a failure) never holds up other tests' snapshots.
#[tokio::test]
async fn savepoints_rollbacks_and_prepared_transactions() {
    let source_cluster = harness::Cluster::start(harness::Options::source().label("prepared"));
    let pair = stream_support::pair_on(
        &source_cluster,
        &harness::shared().target,
        "apply_txn_kinds",
    )
    .await;
    stream_support::setup(&pair, "CREATE TABLE sp (id int PRIMARY KEY, v text);", "").await;
    let mut stream = Stream::start(&pair, &[]);
    let source = pair.source().await;
    // One statement per call where it matters: a multi-statement string is
    // one implicit transaction block, and COMMIT PREPARED refuses to run in one.
    for sql in [
        "BEGIN;
         INSERT INTO sp VALUES (1, 'kept');
         SAVEPOINT a;
         INSERT INTO sp VALUES (2, 'rolled back to savepoint');
         UPDATE sp SET v = 'rolled back to savepoint' WHERE id = 1;
         ROLLBACK TO a;
         INSERT INTO sp VALUES (3, 'kept');
         SAVEPOINT b;
         INSERT INTO sp VALUES (4, 'kept, savepoint released');
         SAVEPOINT c;
         DELETE FROM sp WHERE id = 3;
         ROLLBACK TO c;
         RELEASE b;
         COMMIT;",
        "BEGIN; INSERT INTO sp VALUES (5, 'rolled back'); ROLLBACK;",
        "BEGIN; INSERT INTO sp VALUES (6, 'prepared, committed'); PREPARE TRANSACTION 'wr_p1';",
        "COMMIT PREPARED 'wr_p1'",
        "BEGIN; INSERT INTO sp VALUES (7, 'prepared, rolled back'); PREPARE TRANSACTION 'wr_p2';",
        "ROLLBACK PREPARED 'wr_p2'",
        "BEGIN; INSERT INTO sp VALUES (8, 'prepared, committed later');
         UPDATE sp SET v = 'by p3' WHERE id = 1; PREPARE TRANSACTION 'wr_p3';",
        "INSERT INTO sp VALUES (9, 'committed while p3 is pending')",
    ] {
        exec(&source, sql).await;
    }
    catch_up(&pair, &mut stream).await;
    assert_same(&pair, "sp", "id", 5).await;
    let ids = target_rows(
        &pair,
        "SELECT string_agg(id::text, ',' ORDER BY id) FROM sp",
    )
    .await;
    assert_eq!(ids[0][0].as_deref(), Some("1,3,4,6,9"));
    exec(&source, "COMMIT PREPARED 'wr_p3'").await;
    catch_up(&pair, &mut stream).await;
    assert_same(&pair, "sp", "id", 6).await;
    stream.stop().await;
}

#[tokio::test]
async fn small_transactions_share_target_commits_without_splitting_one() {
    let pair = prepare(
        "apply_batching",
        "CREATE TABLE bt (txn int, i int, PRIMARY KEY (txn, i));",
        "",
    )
    .await;
    let mut stream = Stream::start(&pair, &["--batch-rows", "50", "--batch-delay", "500ms"]);
    // 300 source transactions of 5 rows and, among them, one of 200 rows
    // (more than --batch-rows: applied whole).
    let mut sql = String::new();
    for k in 1..=300 {
        // Explicit blocks: a multi-statement string is otherwise one transaction.
        sql.push_str(&format!(
            "BEGIN; INSERT INTO bt SELECT {k}, g FROM generate_series(1, 5) g; COMMIT;\n"
        ));
        if k == 150 {
            sql.push_str(
                "BEGIN; INSERT INTO bt SELECT 1000, g FROM generate_series(1, 200) g; COMMIT;\n",
            );
        }
    }
    exec(&pair.source().await, &sql).await;
    catch_up(&pair, &mut stream).await;
    assert_same(&pair, "bt", "txn, i", 1700).await;
    // Rows inserted by one target transaction share its xmin (the apply
    // uses no subtransactions).
    let split = target_rows(
        &pair,
        "SELECT count(*) FROM (SELECT txn FROM bt GROUP BY txn HAVING count(DISTINCT xmin::text) > 1) s",
    )
    .await;
    assert_eq!(
        split[0][0].as_deref(),
        Some("0"),
        "a source transaction was split across target commits"
    );
    let commits: u64 = target_rows(&pair, "SELECT count(DISTINCT xmin::text) FROM bt").await[0][0]
        .as_deref()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        commits <= 150,
        "301 small source transactions took {commits} target commits: they should be batched"
    );
    // --batch-rows bounds a batch, give or take the transaction that filled it.
    let largest = target_rows(
        &pair,
        "SELECT max(n) FROM (SELECT count(*) AS n FROM bt GROUP BY xmin::text
                             HAVING bool_and(txn <> 1000)) b",
    )
    .await[0][0]
        .clone()
        .unwrap();
    assert!(
        largest.parse::<u64>().unwrap() < 50 + 5,
        "a batch without the large transaction held {largest} rows with --batch-rows 50"
    );
    eprintln!("301 source transactions were applied in {commits} target commits");
    stream.stop().await;
    drop_slot(&pair).await;
}

#[tokio::test]
async fn batched_changes_keep_source_order_semantics() {
    // Many transactions in one target batch, touching the same keys and a
    // unique secondary column in orders that only work one way.
    let pair = prepare(
        "apply_order",
        "CREATE TABLE u (id int PRIMARY KEY, email text UNIQUE, n int);
         INSERT INTO u VALUES (1, 'a', 0), (2, 'b', 0), (5, 'z', 0), (6, 'v', 0);",
        "",
    )
    .await;
    let mut stream = Stream::start(&pair, &["--batch-delay", "1s"]);
    let source = pair.source().await;
    for sql in [
        // Swap two unique values through a temporary one.
        "UPDATE u SET email = 'tmp' WHERE id = 1",
        "UPDATE u SET email = 'a' WHERE id = 2",
        "UPDATE u SET email = 'b' WHERE id = 1",
        // A key deleted, re-inserted, updated, deleted and inserted again.
        "INSERT INTO u VALUES (3, 'c', 1)",
        "DELETE FROM u WHERE id = 3",
        "INSERT INTO u VALUES (3, 'c2', 2)",
        "UPDATE u SET n = n + 10 WHERE id = 3",
        "BEGIN; DELETE FROM u WHERE id = 3; INSERT INTO u VALUES (3, 'c3', 3); COMMIT;",
        // A unique value freed by a DELETE, then taken by an UPDATE.
        "DELETE FROM u WHERE id = 5",
        "UPDATE u SET email = 'z' WHERE id = 6",
        // A unique value freed by an UPDATE, then taken by an INSERT.
        "UPDATE u SET email = 'w' WHERE id = 2",
        "INSERT INTO u VALUES (7, 'a', 7)",
        // Key changes mixed in.
        "UPDATE u SET id = 100 WHERE id = 7",
        "INSERT INTO u VALUES (7, 'seven again', 0)",
        "UPDATE u SET n = -1 WHERE id IN (1, 100)",
    ] {
        exec(&source, sql).await;
    }
    catch_up(&pair, &mut stream).await;
    assert_same(&pair, "u", "id", 6).await;
    stream.stop().await;
    drop_slot(&pair).await;
}

#[tokio::test]
async fn awkward_values_survive_inserts_updates_and_full_identity_matching() {
    let pair = prepare(
        "apply_values",
        "CREATE TYPE pair AS (x int, label text);
         CREATE TABLE val (id int PRIMARY KEY, t text, ta text[], j jsonb, b bytea, n numeric,
                           f float8, ts timestamptz, iv interval, u uuid, ip inet, r int4range,
                           c pair, ch char(3));
         CREATE TABLE valfull (t text, ta text[], j jsonb, b bytea, n numeric, f float8, c pair);
         ALTER TABLE valfull REPLICA IDENTITY FULL;",
        "",
    )
    .await;
    let mut stream = Stream::start(&pair, &[]);
    let source = pair.source().await;
    let rows = r#"
        (1, 'NULL', '{NULL,"NULL","a,b","q\"uote","back\\slash","",x y}', '{"k": [1, "NULL", null]}',
         '\x00ff5c27', 'NaN', 'Infinity', 'infinity', '1 year -2 days 03:04:05.678', '00000000-0000-0000-0000-000000000001',
         '10.1.2.3/8', '[1,5)', '(1,"a ""quoted"", label")', 'ab'),
        (2, E'line\nbreak\ttab \\ back ''single''', '{}', '[]', '', '-0.000000000000000000001', '-0', '-infinity',
         '0', NULL, '::1', 'empty', '(,)', NULL),
        (3, '', NULL, 'null', NULL, '123456789012345678901234567890.123456789', 1e-300, '2024-02-29 23:59:59.999999+05:30',
         NULL, NULL, NULL, NULL, NULL, '  '),
        (4, 'ünïcødé 🚀 ∑', '{"🚀","ü"}', '{"a": "\u00fc"}', '\x', '0', 'NaN', NULL, NULL, NULL, NULL, '(,)', '(,"")', 'x')"#;
    exec(
        &source,
        &format!(
            "INSERT INTO val VALUES {rows};
             INSERT INTO valfull SELECT t, ta, j, b, n, f, c FROM val;
             INSERT INTO valfull SELECT t, ta, j, b, n, f, c FROM val;"
        ),
    )
    .await;
    catch_up(&pair, &mut stream).await;
    assert_same(&pair, "val", "id", 4).await;
    assert_same_multiset(&pair, "valfull", 8).await;
    exec(
        &source,
        "UPDATE val SET t = t || '!', ta = ta || 'NULL'::text, n = n + 1, f = f * 2, id = id + 10 WHERE id IN (1, 3);
         UPDATE val SET t = NULL, j = '{\"NULL\": null}' WHERE id = 2;
         UPDATE val SET ch = 'zz' WHERE id = 4;
         UPDATE valfull SET n = -1 WHERE ctid IN (SELECT min(ctid) FROM valfull GROUP BY t);
         DELETE FROM valfull WHERE ctid IN (SELECT max(ctid) FROM valfull GROUP BY t);",
    )
    .await;
    catch_up(&pair, &mut stream).await;
    assert_same(&pair, "val", "id", 4).await;
    assert_same_multiset(&pair, "valfull", 4).await;
    stream.stop().await;
    drop_slot(&pair).await;
}

#[tokio::test]
async fn columns_are_matched_by_name_and_target_only_columns_take_defaults() {
    let pair = prepare(
        "apply_columns",
        "CREATE TABLE w (id int PRIMARY KEY, a text, b int, c text);
         INSERT INTO w VALUES (1, 'a1', 1, 'c1');",
        "",
    )
    .await;
    // The target's column order differs (b dropped and re-added at the
    // end) and it has a column of its own.
    let target = pair.target().await;
    exec(
        &target,
        "ALTER TABLE w ADD COLUMN b_keep int; UPDATE w SET b_keep = b;
         ALTER TABLE w DROP COLUMN b; ALTER TABLE w ADD COLUMN target_only text DEFAULT 'dflt';
         ALTER TABLE w ADD COLUMN b int; UPDATE w SET b = b_keep; ALTER TABLE w DROP COLUMN b_keep;",
    )
    .await;
    let mut stream = Stream::start(&pair, &[]);
    exec(
        &pair.source().await,
        "INSERT INTO w VALUES (2, 'a2', 2, 'c2'), (3, 'a3', 3, 'c3');
         UPDATE w SET b = b * 10, a = 'changed' WHERE id IN (1, 2);
         DELETE FROM w WHERE id = 3;
         INSERT INTO w VALUES (4, NULL, NULL, NULL);",
    )
    .await;
    catch_up(&pair, &mut stream).await;
    let source_rows = harness::rows(
        &pair.source().await,
        "SELECT id, a, b, c FROM w ORDER BY id",
    )
    .await;
    let target_rows = harness::rows(&target, "SELECT id, a, b, c FROM w ORDER BY id").await;
    assert_eq!(source_rows, target_rows);
    let own = harness::rows(&target, "SELECT id, target_only FROM w ORDER BY id").await;
    assert_eq!(
        own,
        vec![
            vec![Some("1".into()), Some("dflt".into())],
            vec![Some("2".into()), Some("dflt".into())],
            vec![Some("4".into()), Some("dflt".into())],
        ],
        "target-only columns take their defaults and are left alone by updates"
    );
    stream.stop().await;
    drop_slot(&pair).await;
}

#[tokio::test]
async fn quoted_names_keywords_and_mixed_case_identifiers() {
    let pair = prepare(
        "apply_names",
        r#"CREATE SCHEMA "My Schema";
         CREATE TABLE "My Schema"."Weird Table" ("Id" int PRIMARY KEY, "select" text, "a b" int, "Ünï" text);
         INSERT INTO "My Schema"."Weird Table" VALUES (1, 'x', 1, 'u');
         CREATE TABLE "My Schema"."lower" ("user" text, "Group" int);
         ALTER TABLE "My Schema"."lower" REPLICA IDENTITY FULL;
         INSERT INTO "My Schema"."lower" VALUES ('a', 1), ('a', 1);"#,
        "",
    )
    .await;
    let mut stream = Stream::start(&pair, &[]);
    exec(
        &pair.source().await,
        r#"INSERT INTO "My Schema"."Weird Table" VALUES (2, 'y', 2, 'v'), (3, NULL, NULL, NULL);
         UPDATE "My Schema"."Weird Table" SET "select" = 'changed', "a b" = 10 WHERE "Id" = 1;
         UPDATE "My Schema"."Weird Table" SET "Id" = 20 WHERE "Id" = 2;
         DELETE FROM "My Schema"."Weird Table" WHERE "Id" = 3;
         UPDATE "My Schema"."lower" SET "Group" = 2 WHERE ctid = (SELECT ctid FROM "My Schema"."lower" LIMIT 1);
         INSERT INTO "My Schema"."lower" VALUES ('b', 3);
         TRUNCATE "My Schema"."lower";
         INSERT INTO "My Schema"."lower" VALUES ('after', 4);"#,
    )
    .await;
    catch_up(&pair, &mut stream).await;
    assert_same(&pair, r#""My Schema"."Weird Table""#, r#""Id""#, 2).await;
    assert_same_multiset(&pair, r#""My Schema"."lower""#, 1).await;
    stream.stop().await;
    drop_slot(&pair).await;
}

/// Where `session_replication_role = replica` is not permitted (a target
/// role without superuser), changes are applied one by one in source order
/// and target triggers fire (what `check` warns about).
#[tokio::test]
async fn without_replica_role_changes_apply_one_by_one_and_triggers_fire() {
    let pair = prepare(
        "apply_no_replica_role",
        "CREATE TABLE t (id int PRIMARY KEY, v text, n int);
         INSERT INTO t SELECT g, 'v' || g, g FROM generate_series(1, 100) g;
         CREATE TABLE f (a int, b text, j json);
         ALTER TABLE f REPLICA IDENTITY FULL;
         INSERT INTO f VALUES (1, 'x', '{}'), (1, 'x', '{}'), (2, NULL, NULL);",
        "",
    )
    .await;
    let target_cluster = pair.target_cluster();
    let (role, password) = target_cluster.create_role("applier", "NOSUPERUSER").await;
    let target = pair.target().await;
    exec(
        &target,
        &format!(
            "GRANT USAGE ON SCHEMA public, walrelay TO {role};
             GRANT ALL ON ALL TABLES IN SCHEMA public, walrelay TO {role};
             CREATE TABLE public.fired (op text);
             GRANT ALL ON public.fired TO {role};
             CREATE FUNCTION public.note() RETURNS trigger LANGUAGE plpgsql AS
               $$BEGIN INSERT INTO public.fired VALUES (TG_OP); RETURN NULL; END$$;
             CREATE TRIGGER t_note AFTER INSERT OR UPDATE OR DELETE ON public.t
               FOR EACH ROW EXECUTE FUNCTION public.note();"
        ),
    )
    .await;
    let mut cmd = harness::walrelay();
    cmd.arg("--source")
        .arg(&pair.source_url)
        .arg("--target")
        .arg(target_cluster.url_as(&role, &password, &pair.target_db))
        .args(["--slot", &pair.slot, "--publication", &pair.publication])
        .args(["stream", "--stop-after", "300s"]);
    let mut stream = Stream::spawn(cmd);
    exec(
        &pair.source().await,
        "INSERT INTO t SELECT g, 'new', g FROM generate_series(101, 150) g;
         UPDATE t SET v = 'changed' WHERE id % 3 = 0;
         DELETE FROM t WHERE id % 5 = 0;
         UPDATE t SET id = id + 1000 WHERE id % 7 = 0;
         UPDATE f SET b = 'y' WHERE ctid = (SELECT ctid FROM f WHERE a = 1 LIMIT 1);
         DELETE FROM f WHERE a = 2;",
    )
    .await;
    catch_up(&pair, &mut stream).await;
    assert_same(&pair, "t", "id", 100).await;
    assert_same_multiset(&pair, "f", 2).await;
    let fired: u64 = harness::value(&target, "SELECT count(*)::text FROM public.fired")
        .await
        .parse()
        .unwrap();
    assert!(fired > 0, "without the replica role, target triggers fire");
    let run = stream.stop().await;
    assert_mentions(&run, &["session_replication_role"]);
    drop_slot(&pair).await;
}

/// A change the target refuses (a target-only constraint) stops the stream;
/// the report names the table and constraint but never the row's values,
/// whose errors (CHECK, UNIQUE, deferred UNIQUE at COMMIT) carry them in
/// their DETAIL.
#[tokio::test]
async fn target_constraint_errors_do_not_print_row_values() {
    let pair = prepare(
        "apply_no_leak",
        "CREATE TABLE t1 (id int PRIMARY KEY, secret text, n int);
         CREATE TABLE t2 (id int PRIMARY KEY, secret text, n int);
         CREATE TABLE d (id int PRIMARY KEY, secret text);",
        "",
    )
    .await;
    let source = pair.source().await;
    let target = pair.target().await;
    for (table, constraint, add, drop, sql) in [
        (
            "t1",
            "small_n",
            "ALTER TABLE t1 ADD CONSTRAINT small_n CHECK (n < 1000)",
            "ALTER TABLE t1 DROP CONSTRAINT small_n",
            "INSERT INTO t1 VALUES (1, 'check-secret-1', 5000)",
        ),
        (
            "t2",
            "t2_secret",
            "CREATE UNIQUE INDEX t2_secret ON t2 (secret)",
            "DROP INDEX t2_secret",
            "BEGIN; INSERT INTO t2 VALUES (2, 'dup-secret-2', 1), (3, 'dup-secret-2', 2); COMMIT;",
        ),
    ] {
        exec(&target, add).await;
        let stream = Stream::start(&pair, &[]);
        exec(&source, sql).await;
        let run = stream.wait(Duration::from_secs(60)).await;
        assert_eq!(run.code, Some(1), "{run}");
        assert_mentions(&run, &[&format!("public.{table}"), constraint]);
        assert_not_mentioned(&run, &["check-secret-1", "dup-secret-2", "5000"]);
        // Without the target-only constraint the transaction applies.
        exec(&target, drop).await;
        let mut stream = Stream::start(&pair, &[]);
        catch_up(&pair, &mut stream).await;
        assert_same(&pair, table, "id", 1).await;
        stream.stop().await;
    }

    // A deferred constraint fails at COMMIT; it is checked only where the
    // replica role is not permitted (its trigger is an ordinary one).
    let (role, password) = pair
        .target_cluster()
        .create_role("applier", "NOSUPERUSER")
        .await;
    exec(
        &target,
        &format!(
            "ALTER TABLE d ADD CONSTRAINT d_secret UNIQUE (secret) DEFERRABLE INITIALLY DEFERRED;
             GRANT USAGE ON SCHEMA public, walrelay TO {role};
             GRANT ALL ON ALL TABLES IN SCHEMA public, walrelay TO {role};"
        ),
    )
    .await;
    let mut cmd = harness::walrelay();
    cmd.arg("--source")
        .arg(&pair.source_url)
        .arg("--target")
        .arg(
            pair.target_cluster()
                .url_as(&role, &password, &pair.target_db),
        )
        .args(["--slot", &pair.slot, "--publication", &pair.publication])
        .args(["stream", "--stop-after", "300s"]);
    let stream = Stream::spawn(cmd);
    exec(
        &source,
        "BEGIN; INSERT INTO d VALUES (1, 'deferred-secret-3'), (2, 'deferred-secret-3'); COMMIT;",
    )
    .await;
    let run = stream.wait(Duration::from_secs(60)).await;
    assert_eq!(run.code, Some(1), "{run}");
    assert_mentions(&run, &["d_secret"]);
    assert_not_mentioned(&run, &["deferred-secret-3"]);
    drop_slot(&pair).await;
}

/// The target database's own output settings (time zone, DateStyle,
/// IntervalStyle, float digits, bytea output) must not matter, also where
/// REPLICA IDENTITY FULL rows are matched through their text form (arrays
/// and composites have no `=` of their own type).
#[tokio::test]
async fn target_session_defaults_do_not_change_values_or_full_matching() {
    let pair = prepare(
        "apply_target_settings",
        "CREATE TYPE stamp AS (at timestamptz, d date);
         CREATE TABLE k (id int PRIMARY KEY, ts timestamptz, tsa timestamptz[], iv interval[], f float8[],
                         b bytea[], d date[], c stamp);
         CREATE TABLE ff (ts timestamptz, tsa timestamptz[], iv interval[], f float8[], b bytea[], d date[],
                          c stamp, x float8);
         ALTER TABLE ff REPLICA IDENTITY FULL;",
        "",
    )
    .await;
    exec(
        &pair.target().await,
        &format!(
            "ALTER DATABASE {} SET timezone = 'Asia/Kolkata';
             ALTER DATABASE {0} SET DateStyle = 'SQL, DMY';
             ALTER DATABASE {0} SET IntervalStyle = 'sql_standard';
             ALTER DATABASE {0} SET extra_float_digits = 0;
             ALTER DATABASE {0} SET bytea_output = 'escape';",
            pair.target_db
        ),
    )
    .await;
    let mut stream = Stream::start(&pair, &[]);
    let row = "'2024-03-01 10:20:30.123456+00', '{\"2024-03-01 10:20:30.123456+00\",\"1999-12-31 23:59:59+05\"}',
               '{\"1 day 02:03:04.5\",\"-1 mon\"}', '{0.1,1e300,-0}', '{\"\\\\x00ff\",\"\\\\x\"}',
               '{2024-02-29,0001-01-01}', '(\"2024-03-01 10:20:30+00\",2024-03-01)'";
    exec(
        &pair.source().await,
        &format!(
            "INSERT INTO k VALUES (1, {row}), (2, {row});
             INSERT INTO ff VALUES ({row}, 0.1), ({row}, 0.1), ({row}, 1.0 / 3);"
        ),
    )
    .await;
    catch_up(&pair, &mut stream).await;
    assert_same(&pair, "k", "id", 2).await;
    assert_same_multiset(&pair, "ff", 3).await;
    exec(
        &pair.source().await,
        "UPDATE k SET f = f || 2.5::float8, ts = ts + interval '1 hour' WHERE id = 1;
         DELETE FROM k WHERE id = 2;
         UPDATE ff SET x = 7 WHERE ctid = (SELECT ctid FROM ff WHERE x = 0.1 LIMIT 1);
         DELETE FROM ff WHERE ctid = (SELECT ctid FROM ff WHERE x = 0.1 LIMIT 1);
         UPDATE ff SET iv = '{}' WHERE x > 0.3 AND x < 0.4;",
    )
    .await;
    catch_up(&pair, &mut stream).await;
    assert_same(&pair, "k", "id", 1).await;
    assert_same_multiset(&pair, "ff", 2).await;
    stream.stop().await;
    drop_slot(&pair).await;
}

#[tokio::test]
async fn replica_identity_changed_on_the_source_mid_stream() {
    let pair = prepare(
        "apply_identity_change",
        "CREATE TABLE r (id int PRIMARY KEY, v text, n int);
         INSERT INTO r SELECT g, 'v' || g, g FROM generate_series(1, 50) g;",
        "",
    )
    .await;
    let mut stream = Stream::start(&pair, &[]);
    let source = pair.source().await;
    exec(
        &source,
        "UPDATE r SET v = 'default identity' WHERE id <= 10;
         ALTER TABLE r REPLICA IDENTITY FULL;
         UPDATE r SET v = 'full identity' WHERE id > 10 AND id <= 20;
         UPDATE r SET id = id + 100 WHERE id > 20 AND id <= 25;
         DELETE FROM r WHERE id > 25 AND id <= 30;
         ALTER TABLE r REPLICA IDENTITY DEFAULT;
         UPDATE r SET v = 'default again', n = NULL WHERE id > 30 AND id <= 40;
         DELETE FROM r WHERE id > 45;",
    )
    .await;
    catch_up(&pair, &mut stream).await;
    assert_same(&pair, "r", "id", 35).await;
    stream.stop().await;
    drop_slot(&pair).await;
}
