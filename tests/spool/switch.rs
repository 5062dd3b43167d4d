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
    assert!(
        !spool.path().join(&pair.slot).exists(),
        "cleanup removes the slot's spool directory"
    );
    std::fs::create_dir_all(spool.path().join(&pair.slot)).unwrap();
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

/// Runs `cmd` until its log announces the switch from the spool to the
/// live slot, and SIGKILLs it on that line; returns its stderr.
fn kill_at_the_switch(mut cmd: std::process::Command) -> String {
    use std::io::BufRead;
    let mut child = cmd
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("walrelay starts");
    let stderr = child.stderr.take().expect("stderr piped");
    let mut seen = String::new();
    for line in std::io::BufReader::new(stderr).lines() {
        let Ok(line) = line else { break };
        seen.push_str(&line);
        seen.push('\n');
        if line.contains("spool applied; going live") {
            // SAFETY: kill(2) of our own child, not yet reaped.
            unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGKILL) };
        }
    }
    let status = child.wait().expect("wait for walrelay");
    assert!(
        seen.contains("spool applied; going live"),
        "walrelay never switched from the spool to live ({status}):\n{seen}"
    );
    seen
}

#[tokio::test]
async fn sigkill_at_the_switch_from_spool_to_live_loses_and_repeats_nothing() {
    let pair = pair("spool_switch_kill").await;
    slow_copy_tables(&pair, 1000, 2).await;
    // Key-less: a change applied twice would show as a duplicate row.
    let log = "CREATE TABLE log (n int, pad text); ALTER TABLE log REPLICA IDENTITY FULL";
    harness::exec(&pair.source().await, log).await;
    harness::exec(&pair.target().await, log).await;
    let spool = tempfile::tempdir().unwrap();
    let tables = ["--table", "public.items", "--table", "public.log"];
    let mut cmd = pair.walrelay();
    cmd.args(tables)
        .args([
            "snapshot",
            "--schema",
            "skip",
            "--jobs",
            "1",
            "--chunk-pages",
            "2",
        ])
        .arg("--spool-dir")
        .arg(spool.path());
    let snapshot = harness::spawn(cmd);
    harness::wait_for(std::time::Duration::from_secs(60), "the spool", || {
        let found = !segments(spool.path(), &pair.slot).is_empty();
        async move { found.then_some(()) }
    })
    .await;
    let source = pair.source().await;
    for k in 1..=3 {
        change_items(&source, k).await;
        let insert =
            format!("INSERT INTO log SELECT {k}, md5(g::text) FROM generate_series(1, 50) g");
        harness::exec(&source, &insert).await;
    }
    snapshot
        .finish(harness::COMMAND_TIMEOUT)
        .await
        .assert_success();

    // `stream` without --spool-dir applies the spool the target's state
    // records, then goes live: killed exactly then.
    let mut cmd = pair.walrelay();
    cmd.args(tables).args(["stream", "--stop-after", "120s"]);
    let killed = tokio::task::spawn_blocking(move || kill_at_the_switch(cmd))
        .await
        .unwrap();
    assert!(killed.contains("applying the spool"), "{killed}");

    let mut stream = Stream::start(&pair, &tables);
    for k in 4..=5 {
        change_items(&source, k).await;
        let insert =
            format!("INSERT INTO log SELECT {k}, md5(g::text) FROM generate_series(1, 50) g");
        harness::exec(&source, &insert).await;
    }
    catch_up(&pair, &mut stream).await;
    assert_same(&pair, "items", "id", 1000).await;
    crate::stream_support::assert_same_multiset(&pair, "log", 250).await;
    stream.stop().await;
    assert!(
        segments(spool.path(), &pair.slot).is_empty(),
        "the applied spool is deleted after the switch"
    );
    drop_slot(&pair).await;
}
