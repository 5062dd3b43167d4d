//! Definite errors stop with exit 1 and say what to do: no snapshot yet, a
//! published table missing on the target, a slot ahead of the checkpoint or
//! gone, a dropped publication, an HTTP port already taken.

use std::time::Duration;

use crate::harness::exec;
use crate::stream_support::{
    assert_mentions, assert_same, assert_slot_not_ahead, catch_up, drop_slot, prepare, target_rows,
    Stream,
};
use crate::{harness, insert_rows};

#[tokio::test]
async fn definite_errors_stop_with_exit_1_and_say_what_to_do() {
    // No snapshot yet.
    let bare = harness::pair("stream_no_snapshot").await;
    exec(&bare.source().await, "CREATE TABLE t (id int PRIMARY KEY)").await;
    let run = Stream::start(&bare, &[])
        .wait(Duration::from_secs(60))
        .await;
    assert_eq!(run.code, Some(1), "{run}");
    assert_mentions(&run, &["walrelay snapshot"]);

    let pair = prepare(
        "stream_definite",
        "CREATE TABLE t (id int PRIMARY KEY, v text);
         CREATE TABLE gone (id int PRIMARY KEY);",
        "",
    )
    .await;
    let source = pair.source().await;
    let target = pair.target().await;

    // A published table missing on the target.
    exec(&target, "DROP TABLE gone").await;
    let stream = Stream::start(&pair, &[]);
    exec(&source, "INSERT INTO gone VALUES (1)").await;
    let run = stream.wait(Duration::from_secs(60)).await;
    assert_eq!(run.code, Some(1), "{run}");
    assert_mentions(&run, &["public.gone", "does not exist on the target"]);
    exec(&target, "CREATE TABLE gone (id int PRIMARY KEY)").await;
    let mut stream = Stream::start(&pair, &[]);
    insert_rows(&source, "t", 1, 100, 10).await;
    catch_up(&pair, &mut stream).await;
    assert_same(&pair, "gone", "id", 1).await;
    stream.stop().await;

    // The slot moved past the target's checkpoint (someone advanced it):
    // streaming on would silently skip changes.
    insert_rows(&source, "t", 101, 200, 10).await;
    exec(
        &source,
        &format!(
            "SELECT pg_replication_slot_advance('{}', pg_current_wal_lsn())",
            pair.slot
        ),
    )
    .await;
    let run = Stream::start(&pair, &[])
        .wait(Duration::from_secs(60))
        .await;
    assert_eq!(
        run.code,
        Some(1),
        "a slot ahead of the checkpoint must stop the stream:\n{run}"
    );
    assert_mentions(&run, &[&pair.slot, "snapshot"]);
    let rows = target_rows(&pair, "SELECT count(*) FROM t").await;
    assert_eq!(rows[0][0].as_deref(), Some("100"));

    // The slot is gone.
    drop_slot(&pair).await;
    let run = Stream::start(&pair, &[])
        .wait(Duration::from_secs(60))
        .await;
    assert_eq!(run.code, Some(1), "{run}");
    assert_mentions(&run, &[&pair.slot, "does not exist", "snapshot"]);
}

#[tokio::test]
async fn a_snapshot_state_without_consistent_point_stops_with_exit_1() {
    // A damaged (hand-edited) state: done, but no consistent point and
    // nothing applied yet. A definite error, not a crash on the NULL.
    let pair = prepare(
        "stream_no_consistent",
        "CREATE TABLE t (id int PRIMARY KEY)",
        "",
    )
    .await;
    exec(
        &pair.target().await,
        &format!(
            "UPDATE walrelay.snapshot SET consistent_lsn = NULL WHERE slot_name = '{0}';
             DELETE FROM walrelay.progress WHERE slot_name = '{0}'",
            pair.slot
        ),
    )
    .await;
    let run = Stream::start(&pair, &[])
        .wait(Duration::from_secs(60))
        .await;
    assert_eq!(run.code, Some(1), "{run}");
    assert_mentions(&run, &["consistent_lsn", "walrelay cleanup"]);
    drop_slot(&pair).await;
}

#[tokio::test]
async fn dropped_publication_stops_with_exit_1_naming_it() {
    let pair = prepare(
        "stream_no_publication",
        "CREATE TABLE t (id int PRIMARY KEY, v text);",
        "",
    )
    .await;
    let source = pair.source().await;
    let mut stream = Stream::start(&pair, &[]);
    insert_rows(&source, "t", 1, 10, 5).await;
    catch_up(&pair, &mut stream).await;
    stream.stop().await;
    exec(&source, &format!("DROP PUBLICATION {}", pair.publication)).await;
    insert_rows(&source, "t", 11, 20, 5).await;
    let run = Stream::start(&pair, &[])
        .wait(Duration::from_secs(60))
        .await;
    assert_eq!(run.code, Some(1), "{run}");
    assert_mentions(&run, &[&pair.publication]);
    assert_slot_not_ahead(&pair, "after the failed start").await;
    drop_slot(&pair).await;
}

#[tokio::test]
async fn run_with_its_http_port_taken_exits_1_saying_so() {
    let pair = prepare(
        "stream_http_busy",
        "CREATE TABLE t (id int PRIMARY KEY);",
        "",
    )
    .await;
    let busy = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = busy.local_addr().expect("addr").port();
    let mut cmd = pair.walrelay();
    cmd.args([
        "run",
        "--http",
        &format!("127.0.0.1:{port}"),
        "--stop-after",
        "60s",
    ]);
    let run = Stream::spawn(cmd).wait(Duration::from_secs(60)).await;
    assert_eq!(run.code, Some(1), "{run}");
    assert_mentions(&run, &[&format!("127.0.0.1:{port}")]);
    drop(busy);
    drop_slot(&pair).await;
}

#[tokio::test]
async fn a_failing_statement_is_reported_with_its_own_sqlstate_not_as_an_aborted_transaction() {
    let pair = prepare(
        "stream_first_error",
        "CREATE TABLE t (id int PRIMARY KEY, v int);
         INSERT INTO t VALUES (10, 1);",
        "",
    )
    .await;
    // Only the target refuses large values.
    exec(
        &pair.target().await,
        "ALTER TABLE t ADD CONSTRAINT t_small CHECK (v < 100)",
    )
    .await;
    let stream = Stream::start(&pair, &[]);
    // The refused INSERT is pipelined; the UPDATE's statement is prepared
    // beside it, in the transaction the INSERT aborted.
    exec(
        &pair.source().await,
        "BEGIN; INSERT INTO t VALUES (1, 500); UPDATE t SET v = 2 WHERE id = 10; COMMIT;",
    )
    .await;
    let run = stream.wait(Duration::from_secs(60)).await;
    assert_eq!(run.code, Some(1), "{run}");
    assert_mentions(&run, &["public.t", "23514", "t_small"]);
    assert!(
        !run.stderr.contains("25P02") && !run.stderr.contains("aborted"),
        "the first error must be reported, not the aborted transaction:\n{run}"
    );
    drop_slot(&pair).await;
}

#[tokio::test]
async fn a_second_stream_on_a_held_slot_exits_1_naming_the_holder_pid() {
    let pair = prepare(
        "stream_slot_held",
        "CREATE TABLE t (id int PRIMARY KEY, v text);",
        "",
    )
    .await;
    let source = pair.source().await;
    let mut first = Stream::start(&pair, &[]);
    insert_rows(&source, "t", 1, 10, 5).await;
    catch_up(&pair, &mut first).await;
    let pid = harness::value(
        &source,
        &format!(
            "SELECT active_pid FROM pg_replication_slots WHERE slot_name = '{}'",
            pair.slot
        ),
    )
    .await;
    let second = Stream::start(&pair, &[])
        .wait(Duration::from_secs(60))
        .await;
    assert_eq!(
        second.code,
        Some(1),
        "a held slot must stop the second stream:\n{second}"
    );
    assert_mentions(
        &second,
        &[&pair.slot, &format!("pid {pid}"), "another consumer"],
    );
    // The first stream was not disturbed.
    insert_rows(&source, "t", 11, 20, 5).await;
    catch_up(&pair, &mut first).await;
    assert_same(&pair, "t", "id", 20).await;
    first.stop().await;
    drop_slot(&pair).await;
}
