//! Stopping and resuming exactly once: `--exit-when-caught-up` and
//! `--stop-after`, SIGINT/SIGTERM under load or while the target blocks the
//! batch, `run` snapshotting once and then resuming, streaming after a
//! resumed snapshot (per-table snapshot LSNs), and two slots keeping to their
//! own checkpoint rows in one target database.

use std::time::{Duration, Instant};

use crate::harness::{exec, Client, Pair};
use crate::stream_support::{
    assert_same, assert_slot_not_ahead, catch_up, drop_slot, format_lsn, http_get, parse_lsn,
    prepare, Stream,
};
use crate::{apply_backend, churn, harness, insert_rows, status, stream_support};

#[tokio::test]
async fn exit_when_caught_up_and_stop_after() {
    let pair = prepare(
        "stream_exit_flags",
        "CREATE TABLE t (id int PRIMARY KEY, v text);",
        "",
    )
    .await;
    let source = pair.source().await;
    insert_rows(&source, "t", 1, 2000, 20).await;
    churn(&source, "t", 6).await;
    // The contract: the checkpoint reaches pg_current_wal_lsn() as read at
    // the session's start (read here just before, so not later than it).
    let before = parse_lsn(&harness::value(&source, "SELECT pg_current_wal_lsn()::text").await);
    let mut cmd = pair.walrelay();
    cmd.args(["stream", "--exit-when-caught-up", "--stop-after", "120s"]);
    let started = Instant::now();
    let run = Stream::spawn(cmd).wait(Duration::from_secs(150)).await;
    assert_eq!(run.code, Some(0), "{run}");
    assert!(
        started.elapsed() < Duration::from_secs(100),
        "--exit-when-caught-up did not exit when caught up:\n{run}"
    );
    let applied = stream_support::applied_lsn(&pair.target().await, &pair.slot)
        .await
        .expect("a checkpoint");
    assert!(
        applied >= before,
        "exited at {} before reaching {}",
        format_lsn(applied),
        format_lsn(before)
    );
    // What it is for: everything committed before it started is applied.
    let summary =
        "SELECT count(*) || ' rows, id sum ' || sum(id) || ', v sum ' || sum(length(v)) FROM t";
    let (s, t) = (
        harness::value(&source, summary).await,
        harness::value(&pair.target().await, summary).await,
    );
    assert_eq!(
        s,
        t,
        "--exit-when-caught-up exited before applying everything committed before it started \
         (source vs target; checkpoint {}, source write position before start {}):\n{run}",
        format_lsn(applied),
        format_lsn(before)
    );
    assert_same(&pair, "t", "id", 1500).await;
    assert_slot_not_ahead(&pair, "after --exit-when-caught-up").await;

    let mut cmd = pair.walrelay();
    cmd.args(["stream", "--stop-after", "2s"]);
    let started = Instant::now();
    let run = Stream::spawn(cmd).wait(Duration::from_secs(60)).await;
    assert_eq!(run.code, Some(0), "{run}");
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "--stop-after 2s stopped early:\n{run}"
    );
    drop_slot(&pair).await;
}

#[tokio::test]
async fn sigint_and_sigterm_under_load_stop_cleanly_and_resume_exactly() {
    let pair = prepare(
        "stream_signals",
        "CREATE TABLE t (id int PRIMARY KEY, v text);",
        "",
    )
    .await;
    let source = pair.source().await;
    let mut next = 1;
    for (round, signal) in [libc::SIGINT, libc::SIGTERM, libc::SIGINT, libc::SIGTERM]
        .into_iter()
        .enumerate()
    {
        let mut stream = Stream::start(&pair, &[]);
        insert_rows(&source, "t", next, next + 99, 10).await;
        next += 100;
        catch_up(&pair, &mut stream).await;
        // Signalled while a burst is being applied.
        let burst = {
            let from = next;
            next += 1500;
            let source = pair.source().await;
            tokio::spawn(async move { insert_rows(&source, "t", from, from + 1499, 5).await })
        };
        tokio::time::sleep(Duration::from_millis(150 + 100 * round as u64)).await;
        stream.signal(signal);
        let run = stream.wait(stream_support::STOP_TIMEOUT).await;
        assert_eq!(
            run.code,
            Some(0),
            "signal {signal} must stop cleanly:\n{run}"
        );
        burst.await.expect("writer");
        assert_slot_not_ahead(&pair, &format!("after signal {signal}")).await;
    }
    churn(&source, "t", 4).await;
    let mut stream = Stream::start(&pair, &[]);
    catch_up(&pair, &mut stream).await;
    assert_same(&pair, "t", "id", 4000).await;
    stream.stop().await;
    drop_slot(&pair).await;
}

/// Changes to all four tables, in several transactions.
async fn write_everywhere(source: &Client, from: i64) {
    let mut sql = String::new();
    for table in ["small_a", "small_b", "big_1", "big_2"] {
        sql.push_str(&format!(
            "BEGIN; INSERT INTO {table} SELECT g, 'new' FROM generate_series({from}, {}) g; COMMIT;
             BEGIN; UPDATE {table} SET v = v || '+' WHERE id % 5 = 0 AND id < 2000; COMMIT;
             BEGIN; DELETE FROM {table} WHERE id % 7 = 0 AND id < 2000; COMMIT;
             BEGIN; UPDATE {table} SET id = -id WHERE id % 11 = 0 AND id > 0 AND id < 2000; COMMIT;\n",
            from + 49
        ));
    }
    exec(source, &sql).await;
}

/// A snapshot killed mid-copy and resumed leaves tables copied as of two
/// LSNs; the stream must skip, per table, exactly the changes its copy
/// already holds (applying them twice breaks keys and doubles updates).
#[tokio::test]
async fn stream_after_a_resumed_snapshot_honours_each_tables_snapshot_lsn() {
    let pair = harness::pair("stream_resumed_snapshot").await;
    let source = pair.source().await;
    exec(
        &source,
        "CREATE TABLE small_a (id int PRIMARY KEY, v text);
         CREATE TABLE small_b (id int PRIMARY KEY, v text);
         CREATE TABLE big_1 (id int PRIMARY KEY, v text);
         CREATE TABLE big_2 (id int PRIMARY KEY, v text);
         INSERT INTO small_a SELECT g, 'a' || g FROM generate_series(1, 2000) g;
         INSERT INTO small_b SELECT g, 'b' || g FROM generate_series(1, 2000) g;
         INSERT INTO big_1 SELECT g, repeat(md5(g::text), 3) FROM generate_series(1, 60000) g;
         INSERT INTO big_2 SELECT g, repeat(md5(g::text), 3) FROM generate_series(1, 60000) g;",
    )
    .await;
    let mut cmd = pair.walrelay();
    cmd.args(["snapshot", "--jobs", "1", "--chunk-pages", "2"]);
    let mut first = Stream::spawn(cmd);
    let target = pair.target().await;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Some(run) = first.if_exited().await {
            panic!("the first snapshot ended before it could be killed mid-copy:\n{run}");
        }
        if harness::value(&target, "SELECT to_regclass('walrelay.chunks') IS NOT NULL").await == "t"
        {
            let states = harness::rows(
                &target,
                "SELECT (SELECT count(*) FROM walrelay.tables WHERE state = 'copied'),
                        (SELECT count(*) FROM (
                            SELECT 1 FROM walrelay.chunks GROUP BY schema_name, table_name
                            HAVING bool_or(state = 'copied') AND NOT bool_and(state = 'copied')) p)",
            )
            .await;
            if states[0][0].as_deref() != Some("0") && states[0][1].as_deref() != Some("0") {
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "no partly copied table within 120 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    first.kill().await;
    // Between the slot's snapshot and the resumed one.
    write_everywhere(&source, 100_001).await;
    stream_support::snapshot(&pair, &["--jobs", "2", "--chunk-pages", "2"]).await;
    let lsns = harness::column(
        &target,
        "SELECT count(DISTINCT snapshot_lsn)::text FROM walrelay.tables",
    )
    .await;
    assert_eq!(
        lsns,
        vec!["2"],
        "the test needs tables copied as of two LSNs"
    );
    // After both snapshots.
    write_everywhere(&source, 200_001).await;
    let mut stream = Stream::start(&pair, &[]);
    write_everywhere(&source, 300_001).await;
    catch_up(&pair, &mut stream).await;
    for table in ["small_a", "small_b", "big_1", "big_2"] {
        assert_same(&pair, table, "id", 1000).await;
    }
    stream.stop().await;
    drop_slot(&pair).await;
}

#[tokio::test]
async fn run_snapshots_once_then_resumes_streaming_after_a_stop() {
    let pair = harness::pair("stream_run_twice").await;
    let source = pair.source().await;
    exec(
        &source,
        "CREATE TABLE t (id int PRIMARY KEY, v text);
         INSERT INTO t SELECT g, 'v' || g FROM generate_series(1, 1000) g;",
    )
    .await;
    let mut first_finished: Option<String> = None;
    for round in 0..2 {
        let port = harness::free_port();
        let mut cmd = pair.walrelay();
        cmd.args([
            "run",
            "--http",
            &format!("127.0.0.1:{port}"),
            "--stop-after",
            "300s",
        ]);
        let mut stream = Stream::spawn(cmd);
        let from = 1001 + round * 1000;
        insert_rows(&source, "t", from, from + 999, 10).await;
        catch_up(&pair, &mut stream).await;
        assert_eq!(http_get(port, "/healthz").map(|(c, _)| c), Some(200));
        assert_eq!(status(port)["stage"], "streaming");
        assert_same(&pair, "t", "id", 1000 * (round as usize + 2)).await;
        stream.stop().await;
        let finished = harness::value(
            &pair.target().await,
            "SELECT finished_at::text FROM walrelay.snapshot",
        )
        .await;
        // The second run found the snapshot done: no second copy.
        if let Some(first) = &first_finished {
            assert_eq!(&finished, first, "the second run redid the snapshot");
        }
        first_finished = Some(finished);
    }
    drop_slot(&pair).await;
}

/// SIGTERM while the open batch is blocked on the target (a lock held by
/// someone else): the stream rolls the batch back (or finishes it) and
/// exits 0 without waiting for the lock; nothing is lost after a restart.
#[tokio::test]
async fn sigterm_while_the_target_blocks_the_batch_exits_promptly() {
    let pair = prepare(
        "stream_stop_blocked",
        "CREATE TABLE t (id int PRIMARY KEY, v text);",
        "",
    )
    .await;
    let source = pair.source().await;
    let target = pair.target().await;
    let mut stream = Stream::start(&pair, &[]);
    insert_rows(&source, "t", 1, 100, 10).await;
    catch_up(&pair, &mut stream).await;
    let locker = pair.target().await;
    exec(&locker, "BEGIN; LOCK TABLE t IN ACCESS EXCLUSIVE MODE").await;
    insert_rows(&source, "t", 101, 300, 10).await;
    // The apply session waits on the lock.
    apply_backend(&target, &mut stream, true).await;
    stream.signal(libc::SIGTERM);
    let run = stream.wait(Duration::from_secs(30)).await;
    assert_eq!(run.code, Some(0), "SIGTERM must stop cleanly:\n{run}");
    assert_slot_not_ahead(&pair, "after the stop").await;
    exec(&locker, "COMMIT").await;
    let mut stream = Stream::start(&pair, &[]);
    catch_up(&pair, &mut stream).await;
    assert_same(&pair, "t", "id", 300).await;
    stream.stop().await;
    drop_slot(&pair).await;
}

/// Two migrations (two source databases, two slots) into one target
/// database: each stream keeps to its own checkpoint row.
#[tokio::test]
async fn two_slots_into_one_target_database_keep_apart() {
    let a = harness::pair("stream_two_a").await;
    let b_base = harness::pair("stream_two_b").await;
    // b writes into a's target database.
    let b = Pair {
        target_db: a.target_db.clone(),
        target_url: a.target_url.clone(),
        ..b_base
    };
    stream_support::setup(&a, "CREATE TABLE ta (id int PRIMARY KEY, v text);", "").await;
    stream_support::setup(&b, "CREATE TABLE tb (id int PRIMARY KEY, v text);", "").await;
    let mut sa = Stream::start(&a, &[]);
    let mut sb = Stream::start(&b, &[]);
    let (source_a, source_b) = (a.source().await, b.source().await);
    for round in 0..3 {
        let from = 1 + round * 300;
        insert_rows(&source_a, "ta", from, from + 299, 10).await;
        insert_rows(&source_b, "tb", from, from + 149, 10).await;
    }
    churn(&source_a, "ta", 4).await;
    churn(&source_b, "tb", 5).await;
    catch_up(&a, &mut sa).await;
    catch_up(&b, &mut sb).await;
    assert_same(&a, "ta", "id", 500).await;
    assert_same(&b, "tb", "id", 300).await;
    let slots = harness::column(
        &a.target().await,
        "SELECT slot_name FROM walrelay.progress ORDER BY 1",
    )
    .await;
    assert_eq!(slots.len(), 2, "one checkpoint row per slot: {slots:?}");
    assert_slot_not_ahead(&a, "slot a").await;
    assert_slot_not_ahead(&b, "slot b").await;
    sa.stop().await;
    sb.stop().await;
    drop_slot(&a).await;
    drop_slot(&b).await;
}
