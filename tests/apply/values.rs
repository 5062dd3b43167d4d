//! Values arrive unchanged: TOASTed columns an update leaves alone, enums,
//! domains and enum arrays whose type OIDs differ on the target, awkward
//! values (NULL-looking text, NaN, infinities, unicode, empty arrays), and
//! the target database's own output settings.

use crate::harness::{self, exec};
use crate::stream_support::{
    assert_same, assert_same_multiset, catch_up, drop_slot, prepare, target_rows, Stream,
};

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
