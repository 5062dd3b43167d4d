//! Table and column shapes: identity-always and stored generated columns,
//! partitioned tables published via their leaves and via the root, columns
//! matched by name with target-only columns taking their defaults, and
//! quoted, keyword and mixed-case identifiers.

use crate::harness::{self, exec};
use crate::stream_support::{
    assert_same, assert_same_multiset, catch_up, drop_slot, prepare, target_rows, Stream,
};

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

/// `UPDATE … SET <GENERATED ALWAYS identity> = DEFAULT` reaches the target
/// with the source's new value: as the key (the old key is sent), outside
/// the key (no old row is sent: whether it changed is found on the target),
/// and under REPLICA IDENTITY FULL; unchanged TOAST values and target-only
/// columns survive the row being re-inserted.
#[tokio::test]
async fn update_setting_an_identity_always_column_to_default_is_applied() {
    let pair = prepare(
        "apply_identity_update",
        "CREATE TABLE ia (id int GENERATED ALWAYS AS IDENTITY PRIMARY KEY, v text);
         INSERT INTO ia (v) SELECT 'v' || g FROM generate_series(1, 5) g;
         CREATE TABLE ib (k text PRIMARY KEY, n bigint GENERATED ALWAYS AS IDENTITY, body text, v text);
         ALTER TABLE ib ALTER COLUMN body SET STORAGE EXTERNAL;
         INSERT INTO ib (k, body, v)
         SELECT 'k' || g, (SELECT string_agg(md5(g::text || '-' || i), '') FROM generate_series(1, 400) i), 'v'
         FROM generate_series(1, 6) g;
         CREATE TABLE ic (n int GENERATED ALWAYS AS IDENTITY, v text);
         ALTER TABLE ic REPLICA IDENTITY FULL;
         INSERT INTO ic (v) VALUES ('a'), ('b');",
        "",
    )
    .await;
    let target = pair.target().await;
    exec(
        &target,
        "ALTER TABLE public.ib ADD COLUMN note text; UPDATE public.ib SET note = 'kept';",
    )
    .await;
    let mut stream = Stream::start(&pair, &[]);
    exec(
        &pair.source().await,
        "UPDATE ia SET id = DEFAULT WHERE id = 2;
         UPDATE ia SET id = DEFAULT, v = 'both' WHERE id = 3;
         UPDATE ia SET v = 'plain' WHERE id = 4;
         UPDATE ib SET n = DEFAULT WHERE k = 'k1';
         UPDATE ib SET v = 'plain' WHERE k = 'k2';
         UPDATE ib SET n = DEFAULT, v = 'both' WHERE k = 'k3';
         UPDATE ib SET k = 'k40', n = DEFAULT WHERE k = 'k4';
         UPDATE ib SET k = 'k50' WHERE k = 'k5';
         UPDATE ic SET n = DEFAULT WHERE v = 'a';
         UPDATE ic SET v = 'c' WHERE v = 'b';",
    )
    .await;
    catch_up(&pair, &mut stream).await;
    assert_same(&pair, "ia", "id", 5).await;
    assert_same_multiset(&pair, "ic", 2).await;
    let ib = "SELECT k, n::text, md5(body), v FROM ib ORDER BY k";
    assert_eq!(
        harness::rows(&pair.source().await, ib).await,
        target_rows(&pair, ib).await,
        "ib must hold the source's identity values and bodies"
    );
    let notes = target_rows(&pair, "SELECT count(*) FROM ib WHERE note = 'kept'").await;
    assert_eq!(
        notes[0][0].as_deref(),
        Some("6"),
        "a target-only column keeps its value when the row is re-inserted"
    );
    stream.stop().await;
    drop_slot(&pair).await;
}
