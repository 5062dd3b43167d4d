//! A target that stops applying for a while (a lock held on its table)
//! while the stream runs with `--spool-dir`: the capture keeps consuming
//! the slot into the spool, so a source with a small
//! `max_slot_wal_keep_size` never loses it; with the spool at
//! `--spool-max-bytes` the slot is no longer acknowledged (on `/metrics`,
//! `/status` and `walrelay status`) and nothing is dropped. Once the target
//! takes changes again the tables equal the source row by row.

use std::time::Duration;

use crate::harness::{
    self, capped_source, exec, pair, shared, slow_copy_tables, value, Client, Pair,
};
use crate::stream_support::{assert_same, catch_up, http_get, metric, pair_on, Stream};
use crate::{assert_slot_kept, change_items, wait_phase};

/// `walrelay run` with its spool in `spool` and HTTP on `port`.
fn start_run(pair: &Pair, spool: &std::path::Path, port: u16, extra: &[&str]) -> Stream {
    let mut cmd = pair.walrelay();
    cmd.args(["--table", "public.items", "run", "--schema", "skip"])
        .args(["--verify-interval", "0s", "--stop-after", "300s"])
        .args(["--http", &format!("127.0.0.1:{port}")])
        .args(extra)
        .arg("--spool-dir")
        .arg(spool);
    Stream::spawn(cmd)
}

/// Holds `ACCESS EXCLUSIVE` on the target's `items` until it commits: the
/// apply waits on it, the capture does not.
async fn lock_items(pair: &Pair) -> Client {
    let held = harness::connect(&pair.target_url).await;
    exec(&held, "BEGIN; LOCK TABLE items IN ACCESS EXCLUSIVE MODE").await;
    held
}

async fn confirmed_flush(source: &Client, slot: &str) -> String {
    value(
        source,
        &format!(
            "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = '{slot}'"
        ),
    )
    .await
}

/// `/status` as JSON.
fn sidecar_status(port: u16) -> serde_json::Value {
    let (code, body) = http_get(port, "/status").expect("GET /status");
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("/status: {e}\n{body}"))
}

#[tokio::test]
async fn a_stalled_target_never_costs_a_capped_slot_while_the_stream_spools() {
    let cluster = capped_source("spool-outage");
    let pair = pair_on(&cluster, &shared().target, "spool_outage").await;
    slow_copy_tables(&pair, 400, 1000).await;
    let spool = tempfile::tempdir().unwrap();
    let port = harness::free_port();
    let mut run = start_run(&pair, spool.path(), port, &[]);
    wait_phase(&pair, &mut run, &["done"]).await;
    catch_up(&pair, &mut run).await;

    let held = lock_items(&pair).await;
    let source = pair.source().await;
    // About 200 MB of WAL (three times the cap) while the target applies
    // nothing; each step waits for the slot to confirm it, which only the
    // spool can do now.
    for k in 1..=24 {
        if k % 3 == 0 {
            change_items(&source, k).await;
        }
        crate::capped::write_wal(&source, &pair.slot).await;
        let mut watched = Some(run);
        assert_slot_kept(
            &source,
            &pair.slot,
            &mut watched,
            &format!("after {k} rounds"),
        )
        .await;
        run = watched.unwrap();
    }
    let target = pair.target().await;
    let applied = value(
        &target,
        &format!(
            "SELECT applied_lsn::text FROM walrelay.progress WHERE slot_name = '{}'",
            pair.slot
        ),
    )
    .await;
    let confirmed = confirmed_flush(&source, &pair.slot).await;
    let behind = value(
        &source,
        &format!("SELECT '{applied}'::pg_lsn < '{confirmed}'::pg_lsn"),
    )
    .await;
    assert_eq!(
        behind, "t",
        "the target was locked: it cannot have applied up to {confirmed}"
    );
    let status = sidecar_status(port);
    assert!(
        status["spool"]["bytes"].as_u64().unwrap_or(0) > 0,
        "{status:#}"
    );
    assert_eq!(status["spool"]["full"], false, "{status:#}");

    exec(&held, "COMMIT").await;
    catch_up(&pair, &mut run).await;
    let mut watched = Some(run);
    assert_slot_kept(&source, &pair.slot, &mut watched, "at the end").await;
    assert_same(&pair, "items", "id", 400).await;
    watched.unwrap().stop().await;
}

#[tokio::test]
async fn a_full_spool_stops_acknowledging_and_drops_nothing() {
    let pair = pair("spool_full").await;
    slow_copy_tables(&pair, 400, 1000).await;
    let spool = tempfile::tempdir().unwrap();
    let port = harness::free_port();
    let mut run = start_run(&pair, spool.path(), port, &["--spool-max-bytes", "1MB"]);
    wait_phase(&pair, &mut run, &["done"]).await;
    catch_up(&pair, &mut run).await;

    let held = lock_items(&pair).await;
    let source = pair.source().await;
    let grow = "UPDATE items SET pad = repeat(md5(pad || clock_timestamp()), 20)";
    harness::wait_for(Duration::from_secs(60), "the spool to fill", || {
        let source = &source;
        async move {
            exec(source, grow).await;
            let metrics = http_get(port, "/metrics").map(|(_, body)| body)?;
            (metric(&metrics, "walrelay_spool_full") == Some(1.0)).then_some(())
        }
    })
    .await;
    // Full: the slot is no longer acknowledged, whatever is written (the
    // acknowledgement of the last sync before it may still be on its way).
    tokio::time::sleep(Duration::from_secs(1)).await;
    let confirmed = confirmed_flush(&source, &pair.slot).await;
    for _ in 0..3 {
        exec(&source, grow).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        confirmed_flush(&source, &pair.slot).await,
        confirmed,
        "a full spool acknowledged the slot"
    );
    let status = sidecar_status(port);
    assert_eq!(status["spool"]["full"], true, "{status:#}");
    let mut cmd = pair.walrelay();
    cmd.args(["status", "--json"]);
    let printed = harness::run(cmd).await;
    printed.assert_success();
    let report: serde_json::Value = serde_json::from_str(&printed.stdout).unwrap();
    assert_eq!(report["spool"]["full"], true, "{report:#}");

    exec(&held, "COMMIT").await;
    catch_up(&pair, &mut run).await;
    assert_same(&pair, "items", "id", 400).await;
    let metrics = http_get(port, "/metrics")
        .map(|(_, body)| body)
        .unwrap_or_default();
    assert_eq!(
        metric(&metrics, "walrelay_spool_full"),
        Some(0.0),
        "{metrics}"
    );
    run.stop().await;
}
