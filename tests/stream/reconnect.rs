//! Reconnecting without losing or repeating a change: after an immediate
//! restart of the source or the target (dedicated clusters), a terminated
//! apply session or walsender, and with a doubling backoff (shown on
//! `/status`) while the target is down.

use std::time::{Duration, Instant};

use crate::harness::{exec, Cluster, Options, Pair};
use crate::stream_support::{
    assert_same, assert_slot_not_ahead, catch_up, drop_slot, format_lsn, prepare, Stream,
};
use crate::{apply_backend, churn, harness, insert_rows, status, stream_support};

/// A pair whose source or target is a dedicated cluster that the test may restart.
async fn dedicated_pair(source: &Cluster, target: &Cluster, name: &str) -> Pair {
    let pair = stream_support::pair_on(source, target, name).await;
    stream_support::setup(
        &pair,
        "CREATE TABLE t (id int PRIMARY KEY, v text);
         INSERT INTO t SELECT g, 'v' || g FROM generate_series(1, 100) g;",
        "",
    )
    .await;
    pair
}

#[tokio::test]
async fn reconnects_after_an_immediate_source_restart() {
    // synchronous_commit on: what the writer saw committed survives the crash.
    let source_cluster = Cluster::start(
        Options::source()
            .label("restart-source")
            .set("synchronous_commit", "on"),
    );
    let pair = dedicated_pair(
        &source_cluster,
        &harness::shared().target,
        "stream_src_restart",
    )
    .await;
    let mut stream = Stream::start(&pair, &[]);
    insert_rows(&pair.source().await, "t", 101, 200, 10).await;
    catch_up(&pair, &mut stream).await;
    // Mid-stream: the burst is being sent and applied.
    insert_rows(&pair.source().await, "t", 201, 3000, 10).await;
    stream_support::restart_immediate(&source_cluster);
    assert_slot_not_ahead(&pair, "after the source restart").await;
    let source = pair.source().await;
    insert_rows(&source, "t", 3001, 3500, 10).await;
    churn(&source, "t", 7).await;
    catch_up(&pair, &mut stream).await;
    assert_same(&pair, "t", "id", 3000).await;
    assert_slot_not_ahead(&pair, "after catching up").await;

    // Restart once everything is applied and acknowledged: the slot's
    // confirmed_flush is saved only at checkpoints, so after the crash it
    // can go back and transactions are sent again; they must be skipped
    // (the updates below are not idempotent, the inserts would collide).
    let source = pair.source().await;
    insert_rows(&source, "t", 3501, 4000, 10).await;
    churn(&source, "t", 3).await;
    let applied = catch_up(&pair, &mut stream).await;
    let acknowledged = Instant::now();
    while stream_support::confirmed_flush(&source, &pair.slot).await < applied {
        assert!(
            acknowledged.elapsed() < Duration::from_secs(30),
            "the slot was not acknowledged up to the checkpoint within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let confirmed_before = stream_support::confirmed_flush(&source, &pair.slot).await;
    stream_support::restart_immediate(&source_cluster);
    let source = pair.source().await;
    let confirmed_after = stream_support::confirmed_flush(&source, &pair.slot).await;
    eprintln!(
        "slot confirmed_flush before the crash {}, after {}{}",
        format_lsn(confirmed_before),
        format_lsn(confirmed_after),
        if confirmed_after < confirmed_before {
            " (went back: transactions are sent again)"
        } else {
            ""
        }
    );
    insert_rows(&source, "t", 4001, 4100, 10).await;
    catch_up(&pair, &mut stream).await;
    assert_same(&pair, "t", "id", 2500).await;
    assert_slot_not_ahead(&pair, "after the second restart").await;
    stream.stop().await;
    drop_slot(&pair).await;
}

#[tokio::test]
async fn reconnects_after_an_immediate_target_restart() {
    // synchronous_commit on (PostgreSQL's default; the harness turns it
    // off): the snapshot's own state survives the crash.
    let target_cluster = Cluster::start(
        Options::target()
            .label("restart-target")
            .set("synchronous_commit", "on"),
    );
    let pair = dedicated_pair(
        &harness::shared().source,
        &target_cluster,
        "stream_tgt_restart",
    )
    .await;
    let source = pair.source().await;
    // The target restarts while the new stream is still starting up
    // (connecting, reading its checkpoint) or applying its first changes.
    let mut stream = Stream::start(&pair, &[]);
    insert_rows(&source, "t", 101, 3000, 10).await;
    stream_support::restart_immediate(&target_cluster);
    assert_slot_not_ahead(&pair, "after the first target restart").await;
    insert_rows(&source, "t", 3001, 3500, 10).await;
    catch_up(&pair, &mut stream).await;
    assert_same(&pair, "t", "id", 3000).await;

    // Mid-stream: a burst is being applied.
    insert_rows(&source, "t", 3501, 6500, 10).await;
    stream_support::restart_immediate(&target_cluster);
    assert_slot_not_ahead(&pair, "after the second target restart").await;
    insert_rows(&source, "t", 6501, 7000, 10).await;
    churn(&source, "t", 7).await;
    catch_up(&pair, &mut stream).await;
    assert_same(&pair, "t", "id", 6000).await;
    assert_slot_not_ahead(&pair, "after catching up").await;
    stream.stop().await;
    drop_slot(&pair).await;
}

#[tokio::test]
async fn reconnects_when_its_target_session_is_terminated() {
    let pair = prepare(
        "stream_target_kill",
        "CREATE TABLE t (id int PRIMARY KEY, v text);",
        "",
    )
    .await;
    let source = pair.source().await;
    let target = pair.target().await;

    // Killed while reading its checkpoint at start-up (held there by a lock).
    let locker = pair.target().await;
    exec(
        &locker,
        "BEGIN; LOCK TABLE walrelay.snapshot IN ACCESS EXCLUSIVE MODE",
    )
    .await;
    let mut stream = Stream::start(&pair, &[]);
    let pid = apply_backend(&target, &mut stream, true).await;
    exec(&target, &format!("SELECT pg_terminate_backend({pid})")).await;
    exec(&locker, "COMMIT").await;
    insert_rows(&source, "t", 1, 500, 10).await;
    catch_up(&pair, &mut stream).await;

    // Killed while applying.
    for round in 0..3 {
        // Streaming (not starting up) when the burst arrives.
        catch_up(&pair, &mut stream).await;
        let from = 501 + round * 1000;
        insert_rows(&source, "t", from, from + 999, 10).await;
        let pid = apply_backend(&target, &mut stream, false).await;
        exec(&target, &format!("SELECT pg_terminate_backend({pid})")).await;
        assert_slot_not_ahead(&pair, "after terminating the apply session").await;
    }
    churn(&source, "t", 5).await;
    catch_up(&pair, &mut stream).await;
    assert_same(&pair, "t", "id", 2500).await;
    stream.stop().await;
    drop_slot(&pair).await;
}

#[tokio::test]
async fn reconnects_after_the_walsender_is_terminated() {
    let pair = prepare(
        "stream_walsender",
        "CREATE TABLE t (id int PRIMARY KEY, v text);",
        "",
    )
    .await;
    let source = pair.source().await;
    let mut stream = Stream::start(&pair, &[]);
    let mut next = 1;
    for round in 0..3 {
        insert_rows(&source, "t", next, next + 999, 10).await;
        next += 1000;
        // The slot's walsender, once the stream has (re)connected.
        let pid = harness::wait_for(Duration::from_secs(60), "the slot's walsender", || {
            let source = &source;
            let slot = pair.slot.clone();
            async move {
                let found = harness::rows(
                    source,
                    &format!(
                        "SELECT a.pid::text FROM pg_replication_slots s
                         JOIN pg_stat_activity a ON a.pid = s.active_pid
                         WHERE s.slot_name = '{slot}' AND a.backend_type = 'walsender'"
                    ),
                )
                .await;
                found.first().and_then(|r| r[0].clone())
            }
        })
        .await;
        exec(&source, &format!("SELECT pg_terminate_backend({pid})")).await;
        assert_slot_not_ahead(&pair, &format!("after terminating the walsender ({round})")).await;
    }
    churn(&source, "t", 5).await;
    catch_up(&pair, &mut stream).await;
    assert_same(&pair, "t", "id", 2000).await;
    stream.stop().await;
    drop_slot(&pair).await;
}

#[tokio::test]
async fn reconnect_backoff_doubles_while_the_target_is_down() {
    let target_cluster = Cluster::start(
        Options::target()
            .label("down-target")
            .set("synchronous_commit", "on"),
    );
    let pair = dedicated_pair(&harness::shared().source, &target_cluster, "stream_backoff").await;
    let source = pair.source().await;
    let port = harness::free_port();
    let mut cmd = pair.walrelay();
    cmd.args([
        "--log-format",
        "json",
        "run",
        "--http",
        &format!("127.0.0.1:{port}"),
    ])
    .args(["--stop-after", "300s"]);
    let mut stream = Stream::spawn(cmd);
    insert_rows(&source, "t", 101, 200, 10).await;
    catch_up(&pair, &mut stream).await;
    stream_support::stop_immediate(&target_cluster);
    let down = Instant::now();
    insert_rows(&source, "t", 201, 1000, 10).await;
    // /status while the target is down: reconnecting, not connected, the
    // error without the password.
    let reconnecting = loop {
        let now = status(port);
        if now["stage"] == "reconnecting" {
            break now;
        }
        assert!(
            down.elapsed() < Duration::from_secs(8),
            "/status never showed the reconnecting stage: {now}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(reconnecting["connected"], false, "{reconnecting}");
    let error = reconnecting["last_error"].as_str().unwrap_or_default();
    assert!(!error.is_empty(), "{reconnecting}");
    assert!(
        !error.contains(&target_cluster.password),
        "/status last_error shows the password: {reconnecting}"
    );
    // Down long enough for attempts after 1, 2 and 4 s (and one at 8 s).
    tokio::time::sleep(Duration::from_secs(9).saturating_sub(down.elapsed())).await;
    stream_support::start_again(&target_cluster);
    insert_rows(&source, "t", 1001, 1200, 10).await;
    catch_up(&pair, &mut stream).await;
    assert_same(&pair, "t", "id", 1200).await;
    assert_slot_not_ahead(&pair, "after the target came back").await;
    let back = status(port);
    assert_eq!(back["stage"], "streaming", "{back}");
    assert_eq!(back["connected"], true, "{back}");
    let run = stream.stop().await;
    let delays: Vec<u64> = run
        .stderr
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["fields"]["retry_in_ms"].as_u64())
        .collect();
    assert!(
        delays.len() >= 3,
        "expected several reconnect attempts while the target was down:\n{run}"
    );
    assert_eq!(
        &delays[..3],
        &[1000, 2000, 4000],
        "backoff 1 s, doubling:\n{run}"
    );
    assert!(
        delays.windows(2).all(|w| w[1] == (w[0] * 2).min(30_000)),
        "backoff doubles up to 30 s: {delays:?}"
    );
    drop_slot(&pair).await;
}
