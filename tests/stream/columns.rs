//! Columns added on the source mid-stream: the stream stops naming the
//! column until the target has it, or with `--auto-add-columns` adds it so
//! that existing rows match the source (defaults, typmods, arrays); a
//! volatile default or a type missing on the target never drifts silently.

use std::time::{Duration, Instant};

use crate::harness::exec;
use crate::stream_support::{
    assert_mentions, assert_same, assert_slot_not_ahead, catch_up, drop_slot, prepare, source_lsn,
    target_rows, Stream,
};
use crate::{harness, stream_support};

/// What Relation messages show (`--ddl off`: no event trigger), as on a
/// source where the trigger cannot be installed.
#[tokio::test]
async fn column_added_on_the_source_only_stops_then_resumes_once_the_target_has_it() {
    let pair = prepare(
        "stream_add_column",
        "CREATE TABLE t (id int PRIMARY KEY, v text);",
        "",
    )
    .await;
    let source = pair.source().await;
    let target = pair.target().await;
    let mut stream = Stream::start(&pair, &["--ddl", "off"]);
    exec(&source, "INSERT INTO t VALUES (1, 'before')").await;
    catch_up(&pair, &mut stream).await;
    exec(&source, "ALTER TABLE t ADD COLUMN extra text").await;
    exec(&source, "INSERT INTO t VALUES (2, 'after', 'x2')").await;
    exec(&source, "INSERT INTO t VALUES (3, 'after', 'x3')").await;
    let after = source_lsn(&source).await;
    let run = stream.wait(Duration::from_secs(60)).await;
    assert_eq!(
        run.code,
        Some(1),
        "a column missing on the target must stop the stream:\n{run}"
    );
    assert_mentions(&run, &["public.t", "extra", "--auto-add-columns"]);
    let applied = stream_support::applied_lsn(&target, &pair.slot)
        .await
        .unwrap();
    assert!(
        applied < after,
        "the checkpoint moved past the stopped transaction"
    );
    assert_eq!(
        target_rows(&pair, "SELECT string_agg(id::text, ',') FROM t").await[0][0].as_deref(),
        Some("1"),
        "nothing after the mismatch may be applied"
    );
    assert_slot_not_ahead(&pair, "after the stop").await;

    exec(&target, "ALTER TABLE t ADD COLUMN extra text").await;
    let mut stream = Stream::start(&pair, &["--ddl", "off"]);
    catch_up(&pair, &mut stream).await;
    assert_same(&pair, "t", "id", 3).await;
    stream.stop().await;

    // With --auto-add-columns it adds the column itself and goes on.
    let mut stream = Stream::start(&pair, &["--ddl", "off", "--auto-add-columns"]);
    exec(&source, "ALTER TABLE t ADD COLUMN extra2 numeric(10, 2)").await;
    exec(&source, "INSERT INTO t VALUES (4, 'auto', 'x4', 44.5)").await;
    exec(&source, "UPDATE t SET extra2 = 1.25 WHERE id = 1").await;
    catch_up(&pair, &mut stream).await;
    assert_same(&pair, "t", "id", 4).await;
    assert_eq!(
        harness::value(
            &target,
            "SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = 'public.t'::regclass AND attname = 'extra2'"
        )
        .await,
        "numeric(10,2)"
    );
    assert!(!stream.exited(), "the stream should go on");
    stream.stop().await;
    drop_slot(&pair).await;
}

/// `--auto-add-columns` with a column added with a DEFAULT: the source's
/// existing rows show the default (no change is streamed for them), so the
/// target must get the same default or the existing rows drift silently.
/// Also types with modifiers and arrays.
#[tokio::test]
async fn auto_added_columns_match_the_source_for_existing_rows() {
    let pair = prepare(
        "stream_auto_add_default",
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
        "ALTER TABLE t ADD COLUMN flag boolean NOT NULL DEFAULT true,
                       ADD COLUMN label varchar(20) DEFAULT 'none',
                       ADD COLUMN at timestamptz(3),
                       ADD COLUMN scores numeric(5,1)[];
         INSERT INTO t VALUES (11, 'new', false, 'eleven', '2024-01-02 03:04:05.678+00', '{1.5,2.5}');
         UPDATE t SET v = 'touched' WHERE id = 1;",
    )
    .await;
    catch_up(&pair, &mut stream).await;
    let types = "SELECT string_agg(attname || ' ' || format_type(atttypid, atttypmod), ', ' ORDER BY attnum)
                 FROM pg_attribute WHERE attrelid = 'public.t'::regclass AND attnum > 0 AND NOT attisdropped";
    assert_eq!(
        harness::value(&pair.target().await, types).await,
        harness::value(&source, types).await,
        "auto-added column types"
    );
    // Rows the stream never saw since the ALTER (2..10) must show the default too.
    let untouched = "SELECT flag::text, label FROM t WHERE id = 2";
    assert_eq!(
        harness::rows(&pair.target().await, untouched).await,
        harness::rows(&source, untouched).await,
        "an existing row's auto-added columns (flag, label) on the target vs the source"
    );
    assert_same(&pair, "t", "id", 11).await;
    stream.stop().await;
    drop_slot(&pair).await;
}

/// A column added with a volatile default: the source filled its existing
/// rows with values the target cannot reproduce. `--auto-add-columns` must
/// not leave them drifting: it either stops naming the column or the rows
/// match.
#[tokio::test]
async fn auto_add_columns_with_a_volatile_default_does_not_drift_silently() {
    let pair = prepare(
        "stream_auto_add_volatile",
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
        "ALTER TABLE t ADD COLUMN token text DEFAULT md5(random()::text);
         INSERT INTO t (id, v) VALUES (11, 'new');",
    )
    .await;
    let lsn = source_lsn(&source).await;
    let target = pair.target().await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(run) = stream.if_exited().await {
            assert_eq!(run.code, Some(1), "{run}");
            assert_mentions(&run, &["public.t", "token"]);
            break;
        }
        if stream_support::applied_lsn(&target, &pair.slot)
            .await
            .is_some_and(|a| a >= lsn)
        {
            assert_same(&pair, "t", "id", 11).await;
            stream.stop().await;
            break;
        }
        assert!(
            Instant::now() < deadline,
            "neither applied nor stopped within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop_slot(&pair).await;
}

/// `--auto-add-columns` for a column whose type exists only on the source
/// (an enum created after the snapshot): a clear stop naming the column.
#[tokio::test]
async fn auto_add_columns_with_a_type_missing_on_the_target_stops_clearly() {
    let pair = prepare(
        "stream_auto_add_type",
        "CREATE TABLE t (id int PRIMARY KEY, v text);",
        "",
    )
    .await;
    let source = pair.source().await;
    let stream = Stream::start(&pair, &["--auto-add-columns"]);
    exec(
        &source,
        "CREATE TYPE colour AS ENUM ('red', 'green');
         ALTER TABLE t ADD COLUMN c colour;
         INSERT INTO t VALUES (1, 'x', 'red');",
    )
    .await;
    let run = stream.wait(Duration::from_secs(60)).await;
    assert_eq!(run.code, Some(1), "{run}");
    assert_mentions(&run, &["public.t", "c", "colour"]);
    assert_eq!(
        target_rows(&pair, "SELECT count(*) FROM t").await[0][0].as_deref(),
        Some("0")
    );
    drop_slot(&pair).await;
}
