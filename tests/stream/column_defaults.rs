//! `--auto-add-columns` when the catalog read at apply time no longer shows
//! what existing rows hold: a default changed after ADD COLUMN, a
//! partitioned root (which never stores the value itself), a table
//! rewritten by VACUUM FULL, a publication of leaf partitions (the target
//! takes the column only on its root). The target ends equal to the source
//! row by row, or the stream stops naming the table and column.

use std::time::Duration;

use crate::harness::{self, exec};
use crate::stream_support::{
    assert_mentions, assert_same, catch_up, drop_slot, prepare, target_rows, Stream,
};

const PARTITIONED: &str = "CREATE TABLE m (id int, region text, v text, PRIMARY KEY (id, region)) PARTITION BY LIST (region);
     CREATE TABLE m_eu PARTITION OF m FOR VALUES IN ('eu');
     CREATE TABLE m_us PARTITION OF m FOR VALUES IN ('us');
     INSERT INTO m SELECT g, (ARRAY['eu', 'us'])[g % 2 + 1], 'v' FROM generate_series(1, 20) g;";

/// The default of `table.column` on one side (the current one, not the
/// existing rows' value).
async fn default_of(client: &harness::Client, table: &str, column: &str) -> String {
    harness::value(
        client,
        &format!(
            "SELECT coalesce(pg_get_expr(d.adbin, d.adrelid), 'none') FROM pg_attribute a
             LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
             WHERE a.attrelid = '{table}'::regclass AND a.attname = '{column}'"
        ),
    )
    .await
}

/// ADD COLUMN … DEFAULT 'v' then SET DEFAULT 'w': rows that existed read
/// `v` on the source (attmissingval), new ones `w`.
#[tokio::test]
async fn a_default_changed_after_the_column_was_added_keeps_existing_rows_value() {
    let pair = prepare(
        "stream_default_changed",
        "CREATE TABLE t (id int PRIMARY KEY, v text);
         INSERT INTO t SELECT g, 'v' || g FROM generate_series(1, 10) g;",
        "",
    )
    .await;
    let source = pair.source().await;
    let mut stream = Stream::start(&pair, &["--auto-add-columns"]);
    catch_up(&pair, &mut stream).await;
    exec(
        &source,
        "ALTER TABLE t ADD COLUMN c text DEFAULT 'v', ADD COLUMN n int DEFAULT 7;
         ALTER TABLE t ALTER COLUMN c SET DEFAULT 'w';
         ALTER TABLE t ALTER COLUMN n DROP DEFAULT;
         INSERT INTO t (id, v) VALUES (11, 'new');",
    )
    .await;
    catch_up(&pair, &mut stream).await;
    assert_same(&pair, "t", "id", 11).await;
    let target = pair.target().await;
    for column in ["c", "n"] {
        assert_eq!(
            default_of(&target, "t", column).await,
            default_of(&source, "t", column).await,
            "the target's current default of {column}"
        );
    }
    // Rows inserted on the target side of the stream now take the current default.
    exec(&source, "INSERT INTO t (id, v) VALUES (12, 'newer')").await;
    catch_up(&pair, &mut stream).await;
    assert_same(&pair, "t", "id", 12).await;
    stream.stop().await;
    drop_slot(&pair).await;
}

/// A constant default added on a partitioned root published via the root:
/// the leaves hold the value (the root never does).
#[tokio::test]
async fn a_constant_default_on_a_partitioned_root_is_followed() {
    let pair = prepare("stream_default_root", PARTITIONED, "").await;
    let source = pair.source().await;
    exec(
        &source,
        &format!(
            "ALTER PUBLICATION {} SET (publish_via_partition_root = true)",
            pair.publication
        ),
    )
    .await;
    let mut stream = Stream::start(&pair, &["--auto-add-columns"]);
    catch_up(&pair, &mut stream).await;
    exec(
        &source,
        "ALTER TABLE m ADD COLUMN c text DEFAULT 'v';
         ALTER TABLE m ALTER COLUMN c SET DEFAULT 'w';
         INSERT INTO m (id, region, v) VALUES (21, 'eu', 'new');",
    )
    .await;
    catch_up(&pair, &mut stream).await;
    assert_same(&pair, "m", "id, region", 21).await;
    stream.stop().await;
    drop_slot(&pair).await;
}

/// VACUUM FULL after ADD COLUMN … DEFAULT: atthasmissing is cleared, every
/// row holds the value. Followed when the rows prove it; a stop naming the
/// column when they hold different values (a default set after the add).
/// Relation messages only (`--ddl off`): the event trigger's message carries
/// the stored value itself, and follows even the second case.
#[tokio::test]
async fn a_rewritten_table_is_followed_when_its_rows_prove_the_value() {
    let pair = prepare(
        "stream_default_rewritten",
        "CREATE TABLE t (id int PRIMARY KEY, v text);
         INSERT INTO t SELECT g, 'v' || g FROM generate_series(1, 10) g;
         CREATE TABLE u (id int PRIMARY KEY, v text);
         INSERT INTO u SELECT g, 'v' || g FROM generate_series(1, 10) g;",
        "",
    )
    .await;
    let source = pair.source().await;
    let mut stream = Stream::start(&pair, &["--ddl", "off", "--auto-add-columns"]);
    catch_up(&pair, &mut stream).await;
    exec(&source, "ALTER TABLE t ADD COLUMN c text DEFAULT 'v'").await;
    exec(&source, "VACUUM FULL t").await;
    exec(&source, "INSERT INTO t (id, v) VALUES (11, 'new')").await;
    catch_up(&pair, &mut stream).await;
    assert_same(&pair, "t", "id", 11).await;

    // A default changed, then a rewrite: old rows 'v', new rows 'w', and
    // nothing in the catalog says which is which.
    exec(
        &source,
        "ALTER TABLE u ADD COLUMN c text DEFAULT 'v';
         ALTER TABLE u ALTER COLUMN c SET DEFAULT 'w';",
    )
    .await;
    exec(&source, "VACUUM FULL u").await;
    exec(&source, "INSERT INTO u (id, v) VALUES (11, 'new')").await;
    let run = stream.wait(Duration::from_secs(60)).await;
    assert_eq!(run.code, Some(1), "{run}");
    assert_mentions(&run, &["public.u", "c", "ADD COLUMN"]);
    assert_eq!(
        target_rows(&pair, "SELECT count(*) FROM u").await[0][0].as_deref(),
        Some("10"),
        "nothing after the stop may be applied"
    );
    drop_slot(&pair).await;
}

/// Leaf partitions published as themselves: the target takes the column on
/// its partitioned root, and the advice without the flag says so.
#[tokio::test]
async fn a_column_added_under_a_leaf_publication_is_added_on_the_target_root() {
    let pair = prepare("stream_default_leaves", PARTITIONED, "").await;
    let source = pair.source().await;
    exec(&source, "ALTER TABLE m ADD COLUMN c text DEFAULT 'v'").await;
    exec(
        &source,
        "INSERT INTO m (id, region, v) VALUES (21, 'eu', 'new')",
    )
    .await;
    let run = Stream::start(&pair, &[])
        .wait(Duration::from_secs(60))
        .await;
    assert_eq!(run.code, Some(1), "{run}");
    assert_mentions(
        &run,
        &["public.m_eu", "ALTER TABLE public.m ADD COLUMN", "root"],
    );

    let mut stream = Stream::start(&pair, &["--auto-add-columns"]);
    exec(
        &source,
        "INSERT INTO m (id, region, v) VALUES (22, 'us', 'new')",
    )
    .await;
    catch_up(&pair, &mut stream).await;
    for table in ["m_eu", "m_us"] {
        assert_same(&pair, table, "id, region", 10).await;
    }
    stream.stop().await;
    drop_slot(&pair).await;
}
