//! Transactions: a million-row transaction with bounded memory,
//! savepoints, rollbacks and prepared transactions, small transactions
//! sharing target commits without splitting one, and batched changes keeping
//! the source's order semantics.

use std::time::Duration;

use crate::harness::exec;
use crate::stream_support::{
    assert_same, catch_up, drop_slot, prepare, source_lsn, target_rows, Stream,
};
use crate::{harness, stream_support};

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
