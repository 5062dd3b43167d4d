//! The switch from the spool to the live slot: a spool found again after
//! it was applied (the process died after the target committed its end,
//! before the segments were deleted) repeats nothing, and the stream goes
//! on live; an earlier migration's spool is never taken for this one's.

use crate::harness::{self, pair, slow_copy_tables};
use crate::stream_support::{assert_same, catch_up, drop_slot, Stream};
use crate::{change_items, segments};

#[tokio::test]
async fn a_spool_found_again_after_it_was_applied_repeats_nothing() {
    let pair = pair("spool_switch").await;
    // About 10 s of copying.
    slow_copy_tables(&pair, 1000, 2).await;
    let spool = tempfile::tempdir().unwrap();
    let spool_arg = spool.path().to_str().unwrap().to_string();
    let mut cmd = pair.walrelay();
    cmd.args(["--table", "public.items", "snapshot", "--schema", "skip"])
        .args([
            "--jobs",
            "1",
            "--chunk-pages",
            "2",
            "--spool-dir",
            &spool_arg,
        ]);
    let snapshot = harness::spawn(cmd);
    harness::wait_for(std::time::Duration::from_secs(60), "the spool", || {
        let found = !segments(spool.path(), &pair.slot).is_empty();
        async move { found.then_some(()) }
    })
    .await;
    let source = pair.source().await;
    for k in 1..=3 {
        change_items(&source, k).await;
    }
    snapshot
        .finish(harness::COMMAND_TIMEOUT)
        .await
        .assert_success();
    // Before the spool is applied the target lacks its changes: behind,
    // never drift (the slot no longer holds them for verify to peek).
    let mut cmd = pair.walrelay();
    cmd.args(["--table", "public.items", "verify", "--json"]);
    let verified = harness::run(cmd).await;
    assert_eq!(verified.code, Some(1), "{verified}");
    let report: serde_json::Value = serde_json::from_str(&verified.stdout)
        .unwrap_or_else(|e| panic!("verify --json: {e}\n{verified}"));
    assert_eq!(report["drift_rows"], 0, "{report:#}");
    assert!(report["behind"].as_u64().unwrap_or(0) >= 1, "{report:#}");

    // Keep the spool as the process that dies after applying it leaves it.
    let kept = tempfile::tempdir().unwrap();
    let spooled = segments(spool.path(), &pair.slot);
    assert!(!spooled.is_empty());
    for seg in &spooled {
        std::fs::copy(seg, kept.path().join(seg.file_name().unwrap())).unwrap();
    }

    let mut stream = Stream::start(&pair, &["--spool-dir", &spool_arg]);
    catch_up(&pair, &mut stream).await;
    assert_same(&pair, "items", "id", 1000).await;
    stream.stop().await;
    assert!(segments(spool.path(), &pair.slot).is_empty());

    for seg in &spooled {
        std::fs::copy(kept.path().join(seg.file_name().unwrap()), seg).unwrap();
    }
    let mut stream = Stream::start(&pair, &["--spool-dir", &spool_arg]);
    change_items(&source, 4).await;
    catch_up(&pair, &mut stream).await;
    assert_same(&pair, "items", "id", 1000).await;
    stream.stop().await;
    assert!(
        segments(spool.path(), &pair.slot).is_empty(),
        "the spool found again is deleted once passed"
    );

    // A new migration with the same slot and spool directory, an earlier
    // migration's spool left in it: the spool predates the new slot and
    // is removed, never taken for changes the slot acknowledged.
    let mut cmd = pair.walrelay();
    cmd.args(["cleanup", "--yes"]);
    harness::run(cmd).await.assert_success();
    harness::exec(&pair.target().await, "TRUNCATE items").await;
    for seg in &spooled {
        std::fs::copy(kept.path().join(seg.file_name().unwrap()), seg).unwrap();
    }
    let mut cmd = pair.walrelay();
    cmd.args(["--table", "public.items", "snapshot", "--schema", "skip"])
        .args(["--spool-dir", &spool_arg]);
    harness::run(cmd).await.assert_success();
    let mut stream = Stream::start(&pair, &["--spool-dir", &spool_arg]);
    change_items(&source, 5).await;
    catch_up(&pair, &mut stream).await;
    assert_same(&pair, "items", "id", 1000).await;
    stream.stop().await;
    drop_slot(&pair).await;
}
