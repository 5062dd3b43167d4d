//! A snapshot killed with SIGKILL mid-copy resumes: the slot's consistent
//! LSN stays, tables copied before the kill keep their snapshot LSN, and the
//! rows end up equal.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::harness::{self, assert_same_rows, column, exec, pair, rows, value, Client, Pair};
use crate::{assert_snapshot_done, drop_slot, snapshot};

/// `schema.table` of every table (ordinary or partitioned) outside the
/// system schemas and `walrelay`.
async fn user_tables(client: &Client) -> Vec<String> {
    column(
        client,
        "SELECT n.nspname || '.' || c.relname FROM pg_class c
         JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE c.relkind IN ('r', 'p')
           AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'walrelay', 'pg_toast')
         ORDER BY 1",
    )
    .await
}

/// Row-by-row comparison of every user table of the source.
async fn assert_all_rows_equal(pair: &Pair) {
    let source = pair.source().await;
    let target = pair.target().await;
    for table in user_tables(&source).await {
        assert_same_rows(&source, &target, &table, "t::text", 0).await;
    }
}

#[tokio::test]
async fn sigkill_mid_copy_then_resume() {
    let pair = pair("snap_kill").await;
    let source = pair.source().await;
    exec(
        &source,
        "CREATE TABLE small_a (id int PRIMARY KEY, v text);
         CREATE TABLE small_b (id int PRIMARY KEY, v text);
         CREATE TABLE big_1 (id int PRIMARY KEY, pad text);
         CREATE TABLE big_2 (id int PRIMARY KEY, pad text);
         INSERT INTO small_a SELECT g, 'a' || g FROM generate_series(1, 20) g;
         INSERT INTO small_b SELECT g, 'b' || g FROM generate_series(1, 20) g;
         INSERT INTO big_1 SELECT g, repeat(md5(g::text), 3) FROM generate_series(1, 60000) g;
         INSERT INTO big_2 SELECT g, repeat(md5(g::text), 3) FROM generate_series(1, 60000) g;",
    )
    .await;
    let mut cmd = pair.walrelay();
    cmd.args(["snapshot", "--jobs", "1", "--chunk-pages", "2"]);
    let mut first = harness::spawn(cmd);
    let target = pair.target().await;

    // Kill once at least one table is fully copied and another is partly
    // copied (chunks from the first snapshot exist, but not all).
    let ready = harness::wait_for(
        Duration::from_secs(120),
        "a copied and a partly copied table",
        || {
            let target = &target;
            let exited = first.exited();
            async move {
                if exited {
                    return Some(false);
                }
                if value(target, "SELECT to_regclass('walrelay.tables') IS NOT NULL").await != "t" {
                    return None;
                }
                // Per the contract: `copied` tables, and tables with copied and
            // not yet copied chunks.
            let states = rows(
                target,
                "SELECT (SELECT count(*) FROM walrelay.tables WHERE state = 'copied'),
                        (SELECT count(*) FROM (
                            SELECT schema_name, table_name FROM walrelay.chunks
                            GROUP BY 1, 2
                            HAVING bool_or(state = 'copied') AND NOT bool_and(state = 'copied')) p)",
            )
            .await;
                let copied: i64 = states[0][0].as_deref().unwrap().parse().unwrap();
                let partial: i64 = states[0][1].as_deref().unwrap().parse().unwrap();
                (copied >= 1 && partial >= 1).then_some(true)
            }
        },
    )
    .await;
    let killed = first.kill().await;
    assert!(
        ready,
        "the first snapshot ended before it could be killed mid-copy (make the tables bigger):\n{killed}"
    );
    assert_eq!(killed.code, None, "not killed by a signal:\n{killed}");

    let consistent_before = value(
        &target,
        &format!(
            "SELECT consistent_lsn::text FROM walrelay.snapshot WHERE slot_name = '{}'",
            pair.slot
        ),
    )
    .await;
    let copied_before: BTreeMap<String, String> = rows(
        &target,
        "SELECT schema_name || '.' || table_name, snapshot_lsn::text FROM walrelay.tables
         WHERE state = 'copied'",
    )
    .await
    .into_iter()
    .map(|r| (r[0].clone().unwrap(), r[1].clone().unwrap_or_default()))
    .collect();
    assert!(!copied_before.is_empty());
    for (table, lsn) in &copied_before {
        assert_eq!(
            lsn, &consistent_before,
            "{table} was copied under the slot's snapshot"
        );
    }

    let second = snapshot(&pair, &["--jobs", "2", "--chunk-pages", "2"]).await;
    second.assert_success();
    assert_all_rows_equal(&pair).await;
    let consistent_after = assert_snapshot_done(&pair).await;
    assert_eq!(
        consistent_after, consistent_before,
        "walrelay.snapshot.consistent_lsn is the slot's and must not change on resume"
    );
    let after: BTreeMap<String, String> = rows(
        &target,
        "SELECT schema_name || '.' || table_name, snapshot_lsn::text FROM walrelay.tables",
    )
    .await
    .into_iter()
    .map(|r| (r[0].clone().unwrap(), r[1].clone().unwrap_or_default()))
    .collect();
    for (table, lsn) in &copied_before {
        assert_eq!(
            after.get(table),
            Some(lsn),
            "{table} was fully copied before the kill and must keep its snapshot_lsn"
        );
    }
    drop_slot(&pair).await;
}
