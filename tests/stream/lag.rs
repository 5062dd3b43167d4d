//! Keepalives and lag: an idle stream acknowledges keepalives past WAL it
//! does not publish, one held by a locked target still answers them, and the
//! lag it reports over HTTP (`/status`, `/metrics`) rises while the target is
//! slow and returns to zero, with exact transaction and row counters.

use std::time::{Duration, Instant};

use crate::harness::{exec, Cluster, Options};
use crate::stream_support::{
    assert_same, assert_slot_not_ahead, catch_up, drop_slot, format_lsn, http_get, metric,
    parse_lsn, prepare, source_lsn, target_rows, Stream,
};
use crate::{churn, harness, insert_rows, status, stream_support};

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
