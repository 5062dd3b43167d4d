//! Changes the target refuses stop the stream: an update or delete finding
//! no row, a target-only constraint (CHECK, UNIQUE, deferred UNIQUE at
//! COMMIT). The report names the table, operation, key columns or
//! constraint, never the row's values.

use std::time::Duration;

use crate::harness::{self, exec};
use crate::stream_support::{
    assert_mentions, assert_not_mentioned, assert_same, catch_up, drop_slot, prepare, target_rows,
    Stream,
};

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

/// A batch is sent pipelined (BEGIN, every table's statements, the
/// checkpoint and COMMIT without waiting for each answer): a statement that
/// fails in the middle of it rolls the whole target transaction back, with
/// its checkpoint. Nothing of the failing source transaction is on the
/// target, the checkpoint names exactly what is, and once the target is
/// fixed a restart applies everything exactly once.
#[tokio::test]
async fn a_failure_mid_pipelined_batch_rolls_back_the_batch_and_its_checkpoint() {
    let pair = prepare(
        "apply_pipelined_failure",
        "CREATE TABLE a (id int PRIMARY KEY, n int);
         CREATE TABLE b (id int PRIMARY KEY, n int);
         CREATE TABLE c (id int PRIMARY KEY, n int);
         INSERT INTO a VALUES (1, 1); INSERT INTO b VALUES (1, 1); INSERT INTO c VALUES (1, 1);
         -- b's updates go one by one, its inserts set-wise
         ALTER TABLE b REPLICA IDENTITY FULL;",
        "",
    )
    .await;
    let source = pair.source().await;
    let target = pair.target().await;
    exec(
        &target,
        "ALTER TABLE b ADD CONSTRAINT b_small CHECK (n < 1000)",
    )
    .await;
    let before = crate::stream_support::resume_lsn(&target, &pair.slot).await;
    // Written with nothing streaming, so the stream receives both at once:
    // a good transaction, then one whose middle table the target refuses.
    exec(
        &source,
        "BEGIN;
         INSERT INTO a SELECT g, g FROM generate_series(2, 50) g;
         UPDATE c SET n = 2 WHERE id = 1;
         COMMIT;",
    )
    .await;
    let good_end = crate::stream_support::source_lsn(&source).await;
    exec(
        &source,
        "BEGIN;
         INSERT INTO a SELECT g, g FROM generate_series(100, 150) g;
         INSERT INTO b SELECT g, g * 10 FROM generate_series(100, 150) g;
         UPDATE a SET n = 0 WHERE id = 1;
         INSERT INTO c SELECT g, g FROM generate_series(100, 150) g;
         DELETE FROM c WHERE id = 1;
         COMMIT;",
    )
    .await;
    let failing_end = crate::stream_support::source_lsn(&source).await;
    let stream = Stream::start(&pair, &[]);
    let run = stream.wait(Duration::from_secs(60)).await;
    assert_eq!(
        run.code,
        Some(1),
        "the refused change must stop the stream:\n{run}"
    );
    assert_mentions(&run, &["public.b", "b_small"]);

    // Nothing of the failing transaction, in any table.
    let failing = target_rows(
        &pair,
        "SELECT (SELECT count(*) FROM a WHERE id >= 100 OR n = 0)
              + (SELECT count(*) FROM b WHERE id >= 100)
              + (SELECT count(*) FROM c WHERE id >= 100)
              + (SELECT count(*) FROM c WHERE id = 1) - 1",
    )
    .await;
    assert_eq!(
        failing[0][0].as_deref(),
        Some("0"),
        "part of the failing transaction was applied"
    );
    // The checkpoint names what the target holds: the good transaction
    // (alone in its batch) or nothing new (in the failing one's batch). A
    // keepalive's position before a transaction not applied may be
    // checkpointed (the WAL before it held nothing published), never the
    // end of a transaction the target lacks.
    let applied = crate::stream_support::resume_lsn(&target, &pair.slot).await;
    let good = target_rows(&pair, "SELECT count(*) FROM a WHERE id BETWEEN 2 AND 50").await;
    match good[0][0].as_deref() {
        Some("49") => assert!(
            applied > before && applied < failing_end,
            "the good transaction is applied, so the checkpoint must name it or a position before the failing one's end: {applied:X} (before {before:X}, good end ≤ {good_end:X}, failing end ≤ {failing_end:X})"
        ),
        Some("0") => assert!(
            applied >= before && applied < good_end,
            "nothing was applied, so the checkpoint may only move to a keepalive's position before the good transaction's end: {applied:X} (before {before:X}, good end ≤ {good_end:X})"
        ),
        other => panic!("the good transaction was applied in part: {other:?} of 49 rows"),
    }

    // Fixed on the target, a restart applies everything exactly once.
    exec(&target, "ALTER TABLE b DROP CONSTRAINT b_small").await;
    let mut stream = Stream::start(&pair, &[]);
    catch_up(&pair, &mut stream).await;
    assert_same(&pair, "a", "id", 101).await;
    assert_same(&pair, "b", "id", 52).await;
    assert_same(&pair, "c", "id", 51).await;
    stream.stop().await;

    // A one-by-one change that fails is known only from the answers read
    // after COMMIT was sent: the batch must count as rolled back then too.
    exec(
        &target,
        "ALTER TABLE b ADD CONSTRAINT b_small CHECK (n < 1000) NOT VALID",
    )
    .await;
    let before = crate::stream_support::resume_lsn(&target, &pair.slot).await;
    exec(&source, "UPDATE b SET n = 5000 WHERE id = 1").await;
    let stream = Stream::start(&pair, &[]);
    let run = stream.wait(Duration::from_secs(60)).await;
    assert_eq!(
        run.code,
        Some(1),
        "the refused change must stop the stream:\n{run}"
    );
    assert_mentions(&run, &["public.b", "b_small"]);
    let applied = crate::stream_support::resume_lsn(&target, &pair.slot).await;
    assert_eq!(
        applied, before,
        "the checkpoint moved past a batch that failed"
    );
    let n = target_rows(&pair, "SELECT n FROM b WHERE id = 1").await;
    assert_eq!(n[0][0].as_deref(), Some("1"));
    exec(&target, "ALTER TABLE b DROP CONSTRAINT b_small").await;
    let mut stream = Stream::start(&pair, &[]);
    catch_up(&pair, &mut stream).await;
    assert_same(&pair, "b", "id", 52).await;
    stream.stop().await;
    drop_slot(&pair).await;
}
