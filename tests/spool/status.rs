//! `walrelay status` shows the spool (from the directory the target's state
//! records, or `--spool-dir`), says when the recorded directory is not on
//! this machine, and `walrelay cleanup --yes` removes this slot's spool
//! directory and never another slot's.

use std::time::Duration;

use crate::harness::{self, exec, pair, slow_copy_tables, value, Client, Pair};
use crate::stream_support::{catch_up, drop_slot, Stream};
use crate::{change_items, segments};

/// `walrelay status --json [ARGS]`, parsed.
async fn status_json(pair: &Pair, args: &[&str]) -> serde_json::Value {
    let mut cmd = pair.walrelay();
    cmd.args(["status", "--json"]).args(args);
    let run = harness::run(cmd).await;
    run.assert_success();
    serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("status --json: {e}\n{run}"))
}

/// Holds `ACCESS EXCLUSIVE` on the target's `items` until [`unlock`]: the
/// apply waits, the capture does not.
async fn lock_items(pair: &Pair) -> Client {
    let held = harness::connect(&pair.target_url).await;
    exec(&held, "BEGIN; LOCK TABLE items IN ACCESS EXCLUSIVE MODE").await;
    held
}

async fn unlock(held: Client) {
    exec(&held, "COMMIT").await;
}

#[tokio::test]
async fn status_shows_the_spool_and_cleanup_removes_only_this_slots_spool() {
    let pair = pair("spool_status").await;
    slow_copy_tables(&pair, 200, 1000).await;
    let spool = tempfile::tempdir().unwrap();
    let spool_arg = spool.path().to_str().unwrap().to_string();
    // Another slot's spool beside this one's.
    let other = spool.path().join("another_slot");
    std::fs::create_dir_all(&other).unwrap();
    std::fs::write(other.join("0000000000000001.seg"), b"WRSPOOL1").unwrap();

    let mut cmd = pair.walrelay();
    cmd.args(["--table", "public.items", "snapshot", "--schema", "skip"])
        .args(["--spool-dir", &spool_arg]);
    harness::run(cmd).await.assert_success();
    let held = lock_items(&pair).await;
    let mut stream = Stream::start(
        &pair,
        &["--table", "public.items", "--spool-dir", &spool_arg],
    );
    let source = pair.source().await;
    for k in 1..=3 {
        change_items(&source, k).await;
    }
    let written = value(&source, "SELECT pg_current_wal_lsn()::text").await;
    // Spooled and acknowledged while the target waits on the lock.
    let confirmed = format!(
        "SELECT coalesce(confirmed_flush_lsn >= '{written}', false) FROM pg_replication_slots
         WHERE slot_name = '{}'",
        pair.slot
    );
    harness::wait_for(
        Duration::from_secs(30),
        "the spool to take the changes",
        || {
            let (source, sql) = (&source, &confirmed);
            async move { (value(source, sql).await == "t").then_some(()) }
        },
    )
    .await;

    let status = status_json(&pair, &[]).await;
    let report = &status["spool"];
    let slot_dir = std::fs::canonicalize(spool.path().join(&pair.slot)).unwrap();
    assert_eq!(report["dir"], slot_dir.display().to_string(), "{status:#}");
    assert_eq!(report["reachable"], true, "{status:#}");
    assert!(report["recorded_by"].is_string(), "{status:#}");
    assert!(report["bytes"].as_u64().unwrap_or(0) > 0, "{status:#}");
    assert!(report["segments"].as_u64().unwrap_or(0) >= 1, "{status:#}");
    assert_eq!(report["full"], false, "{status:#}");
    assert!(report["spooled_lsn"].is_string(), "{status:#}");
    assert!(
        report["unapplied_bytes"].as_u64().unwrap_or(0) > 0,
        "the target is locked: the spool holds changes it lacks\n{status:#}"
    );

    unlock(held).await;
    catch_up(&pair, &mut stream).await;
    stream.stop().await;

    let mut cmd = pair.walrelay();
    cmd.arg("status");
    let text = harness::run(cmd).await;
    text.assert_success();
    assert!(
        text.stdout
            .contains(&format!("spool: {}", slot_dir.display())),
        "{text}"
    );

    // The recorded directory as another machine sees it: not there.
    let moved = spool.path().join("moved-away");
    std::fs::rename(&slot_dir, &moved).unwrap();
    let status = status_json(&pair, &[]).await;
    assert_eq!(status["spool"]["reachable"], false, "{status:#}");
    let note = status["spool"]["note"].as_str().unwrap_or_default();
    assert!(
        note.contains("not reachable from this machine") && note.contains("--spool-dir"),
        "{status:#}"
    );
    std::fs::rename(&moved, &slot_dir).unwrap();
    std::fs::write(slot_dir.join("00000000000000ff.seg"), b"WRSPOOL1").unwrap();
    let status = status_json(&pair, &["--spool-dir", &spool_arg]).await;
    assert_eq!(status["spool"]["reachable"], true, "{status:#}");
    assert!(
        status["spool"]["segments"].as_u64().unwrap_or(0) >= 1,
        "{status:#}"
    );

    let mut cmd = pair.walrelay();
    cmd.args(["cleanup", "--yes"]);
    let cleaned = harness::run(cmd).await;
    cleaned.assert_success();
    assert!(
        cleaned.stdout.contains("removed the spool directory"),
        "{cleaned}"
    );
    assert!(!slot_dir.exists(), "{cleaned}");
    assert!(
        other.join("0000000000000001.seg").exists(),
        "cleanup removed another slot's spool:\n{cleaned}"
    );
    assert!(segments(spool.path(), &pair.slot).is_empty());
    drop_slot(&pair).await;
}
