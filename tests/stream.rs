//! `walrelay stream` / `run` as a long-running process: idle keepalives,
//! columns added on the source, reconnecting after the source, the target
//! or the walsender went away, a slow (locked) target, and the lag it
//! reports over HTTP. Every wait is on the target's checkpoint with a
//! deadline; restarts use dedicated clusters, never the shared ones.

mod harness;
mod stream_support;

use std::time::{Duration, Instant};

use harness::{exec, Client, Cluster, Options, Pair};
use stream_support::{
    assert_mentions, assert_same, assert_slot_not_ahead, catch_up, drop_slot, format_lsn, http_get,
    metric, parse_lsn, prepare, source_lsn, target_rows, Stream,
};

/// Inserts rows `from..=to` into `table (id, v)` in transactions of `per_txn` rows.
async fn insert_rows(source: &Client, table: &str, from: i64, to: i64, per_txn: i64) {
    let mut sql = String::new();
    let mut start = from;
    while start <= to {
        let end = (start + per_txn - 1).min(to);
        sql.push_str(&format!(
            "BEGIN; INSERT INTO {table} SELECT g, 'v' || g FROM generate_series({start}, {end}) g; COMMIT;\n"
        ));
        start = end + 1;
    }
    exec(source, &sql).await;
}

/// Some updates and deletes too, in a few transactions.
async fn churn(source: &Client, table: &str, modulo: i64) {
    exec(
        source,
        &format!(
            "BEGIN; UPDATE {table} SET v = v || '+' WHERE id % {modulo} = 1; COMMIT;
             BEGIN; DELETE FROM {table} WHERE id % {modulo} = 2; COMMIT;
             BEGIN; UPDATE {table} SET id = -id WHERE id % {modulo} = 3; COMMIT;"
        ),
    )
    .await;
}

#[tokio::test]
async fn idle_stream_acknowledges_keepalives_past_unpublished_wal() {
    let pair = prepare(
        "stream_idle",
        "CREATE TABLE t (id int PRIMARY KEY, v text);",
        "",
    )
    .await;
    // Created after the snapshot: not in the publication.
    let source = pair.source().await;
    exec(&source, "CREATE TABLE unpublished (id int, pad text)").await;
    let mut stream = Stream::start(&pair, &[]);
    stream_support::wait_applied(
        &pair,
        &mut stream,
        stream_support::resume_lsn(&pair.target().await, &pair.slot).await,
        Duration::from_secs(30),
    )
    .await;
    exec(
        &source,
        "INSERT INTO unpublished SELECT g, repeat('x', 200) FROM generate_series(1, 20000) g",
    )
    .await;
    let lsn = source_lsn(&source).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (confirmed, _) = assert_slot_not_ahead(&pair, "while idle").await;
        if confirmed >= lsn {
            break;
        }
        if let Some(run) = stream.if_exited().await {
            panic!("the stream exited:\n{run}");
        }
        assert!(
            Instant::now() < deadline,
            "the slot's confirmed_flush_lsn stayed at {} below {} (unpublished WAL) for 60 s: \
             idle keepalives are not acknowledged",
            format_lsn(confirmed),
            format_lsn(lsn)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let rows = target_rows(&pair, "SELECT count(*) FROM t").await;
    assert_eq!(rows[0][0].as_deref(), Some("0"));
    stream.stop().await;
    drop_slot(&pair).await;
}

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
    let mut stream = Stream::start(&pair, &[]);
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
    let mut stream = Stream::start(&pair, &[]);
    catch_up(&pair, &mut stream).await;
    assert_same(&pair, "t", "id", 3).await;
    stream.stop().await;

    // With --auto-add-columns it adds the column itself and goes on.
    let mut stream = Stream::start(&pair, &["--auto-add-columns"]);
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

/// The pid of the target backend of walrelay's apply session (only one
/// waiting on a lock, if asked); panics with the stream's output if it
/// exits first.
async fn apply_backend(target: &Client, stream: &mut Stream, waiting_on_lock: bool) -> String {
    let sql = format!(
        "SELECT pid::text FROM pg_stat_activity
         WHERE application_name = 'walrelay-apply' AND datname = current_database() {}",
        if waiting_on_lock {
            "AND wait_event_type = 'Lock'"
        } else {
            ""
        }
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(pid) = harness::rows(target, &sql)
            .await
            .first()
            .and_then(|r| r[0].clone())
        {
            return pid;
        }
        if let Some(run) = stream.if_exited().await {
            panic!("the stream exited:\n{run}");
        }
        assert!(
            Instant::now() < deadline,
            "no apply session on the target after 60 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
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
async fn keepalives_are_answered_while_the_target_is_locked() {
    let pair = prepare(
        "stream_locked",
        "CREATE TABLE t (id int PRIMARY KEY, v text);",
        "",
    )
    .await;
    let source = pair.source().await;
    let mut stream = Stream::start(&pair, &[]);
    insert_rows(&source, "t", 1, 100, 10).await;
    catch_up(&pair, &mut stream).await;

    // 30 s with t locked on the target (wal_sender_timeout is 10 s) while
    // the source writes to t.
    let locker = pair.target().await;
    exec(&locker, "BEGIN; LOCK TABLE t IN ACCESS EXCLUSIVE MODE").await;
    let held = Instant::now();
    let mut next = 101;
    while held.elapsed() < Duration::from_secs(30) {
        insert_rows(&source, "t", next, next + 49, 5).await;
        next += 50;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_slot_not_ahead(&pair, "while the target is locked").await;
    exec(&locker, "COMMIT").await;
    churn(&source, "t", 9).await;
    catch_up(&pair, &mut stream).await;
    assert_same(&pair, "t", "id", 1000).await;
    assert!(!stream.exited(), "the stream should still run");
    stream.stop().await;
    drop_slot(&pair).await;
}

fn status(port: u16) -> serde_json::Value {
    let (code, body) = http_get(port, "/status").expect("GET /status");
    assert_eq!(code, 200, "/status: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("/status is not JSON ({e}): {body}"))
}

fn metrics(port: u16) -> String {
    let (code, body) = http_get(port, "/metrics").expect("GET /metrics");
    assert_eq!(code, 200, "/metrics: {body}");
    body
}

#[tokio::test]
async fn lag_metrics_rise_while_the_target_is_slow_and_return_to_zero() {
    // A quiet source of its own: lag returns to exactly 0 only when nothing
    // else writes WAL.
    let source_cluster = Cluster::start(Options::source().label("lag-source"));
    let pair =
        stream_support::pair_on(&source_cluster, &harness::shared().target, "stream_lag").await;
    let source = pair.source().await;
    exec(
        &source,
        "CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t VALUES (0, 'seed')",
    )
    .await;
    exec(&pair.target().await, "SELECT 1").await;
    let port = harness::free_port();
    let mut cmd = pair.walrelay();
    cmd.args(["run", "--http", &format!("127.0.0.1:{port}")])
        .args(["--stop-after", "300s", "--heartbeat-interval", "2s"]);
    let mut stream = Stream::spawn(cmd);
    let wait_stage = Instant::now();
    loop {
        if let Some(run) = stream.if_exited().await {
            panic!("walrelay run exited:\n{run}");
        }
        if let Some((200, body)) = http_get(port, "/status") {
            if body.contains("\"streaming\"") {
                break;
            }
        }
        assert!(
            wait_stage.elapsed() < Duration::from_secs(90),
            "walrelay run did not reach the streaming stage"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    insert_rows(&source, "t", 1, 10, 5).await;
    catch_up(&pair, &mut stream).await;

    let locker = pair.target().await;
    exec(&locker, "BEGIN; LOCK TABLE t IN ACCESS EXCLUSIVE MODE").await;
    let mut next = 11;
    let rose = Instant::now();
    let lagging = loop {
        insert_rows(&source, "t", next, next + 99, 10).await;
        next += 100;
        let lag = metric(&metrics(port), "walrelay_lag_bytes").unwrap_or(0.0);
        if lag > 0.0 {
            break status(port);
        }
        assert!(
            rose.elapsed() < Duration::from_secs(30),
            "walrelay_lag_bytes stayed 0 for 30 s while the target was held"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    for field in [
        "stage",
        "connected",
        "source_lsn",
        "applied_lsn",
        "lag_bytes",
        "lag_seconds",
        "slot_retained_wal_bytes",
        "transactions_applied",
        "rows_applied",
        "last_error",
    ] {
        assert!(
            lagging.get(field).is_some(),
            "/status lacks {field}: {lagging}"
        );
    }
    let source_at = parse_lsn(lagging["source_lsn"].as_str().expect("source_lsn text"));
    let applied_at = parse_lsn(lagging["applied_lsn"].as_str().expect("applied_lsn text"));
    assert!(
        applied_at <= source_at,
        "/status: applied_lsn > source_lsn: {lagging}"
    );
    assert_eq!(
        lagging["lag_bytes"].as_u64(),
        Some(source_at - applied_at),
        "/status: lag_bytes is not source_lsn - applied_lsn: {lagging}"
    );
    assert_eq!(lagging["stage"], "streaming", "{lagging}");
    assert!(
        lagging["transactions_applied"].as_u64().unwrap_or(0) >= 2,
        "{lagging}"
    );
    assert!(
        lagging["rows_applied"].as_u64().unwrap_or(0) >= 10,
        "{lagging}"
    );
    // The slot's retained WAL comes from the source sampler (every 2 s).
    let sampled = Instant::now();
    loop {
        let now = status(port);
        if now["slot_retained_wal_bytes"].as_u64().unwrap_or(0) > 0 {
            break;
        }
        assert!(
            sampled.elapsed() < Duration::from_secs(10),
            "/status: slot_retained_wal_bytes stayed 0 for 10 s while the target lags: {now}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The target holds back for a few more seconds: lag in seconds grows too.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let later = status(port);
    assert!(
        later["lag_seconds"].as_f64().unwrap_or(0.0) > 0.0,
        "lag_seconds stayed 0 while the target was held: {later}"
    );

    exec(&locker, "COMMIT").await;
    let settled = Instant::now();
    loop {
        let text = metrics(port);
        if metric(&text, "walrelay_lag_bytes") == Some(0.0) {
            break;
        }
        assert!(
            settled.elapsed() < Duration::from_secs(60),
            "walrelay_lag_bytes did not return to 0 within 60 s of releasing the target:\n{}",
            text.lines()
                .filter(|l| l.starts_with("walrelay_lag") || l.contains("lsn"))
                .collect::<Vec<_>>()
                .join("\n")
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let done = status(port);
    assert_eq!(done["lag_bytes"].as_u64(), Some(0), "{done}");
    let source_now = source_lsn(&source).await;
    assert!(
        parse_lsn(done["applied_lsn"].as_str().unwrap()) <= source_now,
        "applied_lsn beyond the source's position: {done}"
    );
    assert_eq!(http_get(port, "/healthz").map(|(c, _)| c), Some(200));
    assert_same(&pair, "t", "id", 100).await;
    // Counters: exactly the source transactions and rows streamed (the
    // seed row came with the snapshot).
    let inserted = (next - 1) as f64;
    let transactions = 2.0 + (inserted - 10.0) / 10.0;
    let text = metrics(port);
    assert_eq!(
        metric(&text, "walrelay_transactions_applied_total"),
        Some(transactions),
        "walrelay_transactions_applied_total"
    );
    let rows_line = text
        .lines()
        .find(|l| {
            l.starts_with("walrelay_rows_applied_total{")
                && l.contains("table=\"public.t\"")
                && l.contains("op=\"insert\"")
        })
        .unwrap_or_else(|| panic!("no rows_applied_total for public.t inserts:\n{text}"));
    assert_eq!(
        rows_line
            .rsplit(' ')
            .next()
            .and_then(|v| v.parse::<f64>().ok()),
        Some(inserted),
        "{rows_line}"
    );
    assert_eq!(
        done["transactions_applied"].as_f64(),
        Some(transactions),
        "{done}"
    );
    assert_eq!(done["rows_applied"].as_f64(), Some(inserted), "{done}");
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
