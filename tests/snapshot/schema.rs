//! Tables that already exist on the target: `--schema skip` copies into
//! matching empty ones, and refuses (leaving nothing) a mismatching column
//! or, in either schema mode, a table that already holds rows.

use crate::harness::{assert_same_rows, column, exec, pair, value};
use crate::{assert_mentions, assert_nothing_left, assert_snapshot_done, drop_slot, snapshot};

const SKIP_SCHEMA: &str =
    "CREATE TABLE accounts (id bigint PRIMARY KEY, name text NOT NULL, balance numeric(12, 2));
     CREATE TABLE notes (id int PRIMARY KEY, account_id bigint, body text);";

#[tokio::test]
async fn schema_skip_uses_matching_empty_target_tables() {
    let pair = pair("snap_skip").await;
    let source = pair.source().await;
    exec(&source, SKIP_SCHEMA).await;
    exec(
        &source,
        "INSERT INTO accounts SELECT g, 'acct ' || g, g * 1.5 FROM generate_series(1, 300) g;
         INSERT INTO notes SELECT g, g % 300 + 1, repeat('x', g % 50) FROM generate_series(1, 300) g;",
    )
    .await;
    let target = pair.target().await;
    exec(&target, SKIP_SCHEMA).await;
    let run = snapshot(&pair, &["--schema", "skip", "--chunk-pages", "1"]).await;
    run.assert_success();
    assert_same_rows(&source, &target, "accounts", "id", 300).await;
    assert_same_rows(&source, &target, "notes", "id", 300).await;
    assert_snapshot_done(&pair).await;
    drop_slot(&pair).await;
}

#[tokio::test]
async fn schema_skip_with_a_mismatching_column_fails_naming_it() {
    let pair = pair("snap_skip_bad").await;
    let source = pair.source().await;
    exec(&source, SKIP_SCHEMA).await;
    exec(
        &source,
        "INSERT INTO accounts SELECT g, 'acct ' || g, g FROM generate_series(1, 10) g;",
    )
    .await;
    let target = pair.target().await;
    exec(
        &target,
        "CREATE TABLE accounts (id bigint PRIMARY KEY, full_name text NOT NULL, balance numeric(12, 2));
         CREATE TABLE notes (id int PRIMARY KEY, account_id bigint, body text);",
    )
    .await;
    let run = snapshot(&pair, &["--schema", "skip"]).await;
    run.assert_failure();
    assert_mentions(&run, &["accounts", "name"]);
    assert_eq!(value(&target, "SELECT count(*) FROM accounts").await, "0");
    assert_nothing_left(&pair, &run).await;
}

#[tokio::test]
async fn target_tables_with_rows_are_refused() {
    for mode in ["skip", "copy"] {
        let pair = pair(&format!("snap_rows_{mode}")).await;
        let source = pair.source().await;
        exec(
            &source,
            "CREATE TABLE filled (id int PRIMARY KEY, v text);
             CREATE TABLE empty_one (id int PRIMARY KEY);
             INSERT INTO filled SELECT g, 'source ' || g FROM generate_series(1, 20) g;",
        )
        .await;
        let target = pair.target().await;
        // With --schema copy only `filled` exists on the target, so the
        // refusal has to be about it.
        let empty_one = if mode == "skip" {
            "CREATE TABLE empty_one (id int PRIMARY KEY);"
        } else {
            ""
        };
        exec(
            &target,
            &format!(
                "CREATE TABLE filled (id int PRIMARY KEY, v text); {empty_one}
                 INSERT INTO filled VALUES (1, 'already here');"
            ),
        )
        .await;
        let run = snapshot(&pair, &["--schema", mode]).await;
        assert!(
            matches!(run.code, Some(c) if c != 0),
            "--schema {mode}: expected a refusal:\n{run}"
        );
        assert_mentions(&run, &["filled"]);
        assert_eq!(
            column(&target, "SELECT id || ' ' || v FROM filled ORDER BY id").await,
            vec!["1 already here".to_string()],
            "--schema {mode}: the target's rows were touched:\n{run}"
        );
        assert_nothing_left(&pair, &run).await;
    }
}
