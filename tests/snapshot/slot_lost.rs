//! A slot that the source's `max_slot_wal_keep_size` invalidates while the
//! snapshot copies makes the copy worthless (the stream can never start at
//! its consistent point): the snapshot stops at once with an error naming
//! the slot, instead of copying on and reporting success.

use std::time::Duration;

use crate::harness::{
    self, capped_source, slow_copy_tables, value, wal_status, write_wal, Cluster, Pair,
};

/// A pair on a dedicated source (its own settings) and the shared target.
pub(crate) async fn pair_on(source: &Cluster, name: &str) -> Pair {
    let target = &harness::shared().target;
    let source_db = source.create_database(name).await;
    let target_db = target.create_database(name).await;
    let n = harness::unique();
    Pair {
        name: name.into(),
        source_url: source.url(&source_db),
        target_url: target.url(&target_db),
        slot: format!("slot_{}_{n}", harness::sanitize(name)),
        publication: format!("pub_{}_{n}", harness::sanitize(name)),
        source_db,
        target_db,
    }
}

#[tokio::test]
async fn a_slot_lost_while_copying_stops_the_snapshot_naming_the_slot() {
    let cluster = capped_source("slot-lost");
    let pair = pair_on(&cluster, "snap_slot_lost").await;
    // 4000 rows, 2000 of them slowed by 20 ms: about 40 s of copying.
    slow_copy_tables(&pair, 4000, 2).await;
    let mut cmd = pair.walrelay();
    cmd.args(["--table", "public.items", "snapshot", "--schema", "skip"])
        .args(["--jobs", "1", "--chunk-pages", "2"]);
    let mut snapshot = harness::spawn(cmd);
    let source = pair.source().await;
    let target = pair.target().await;
    harness::wait_for(Duration::from_secs(60), "the copy to start", || {
        let target = &target;
        let exited = snapshot.exited();
        async move {
            if exited {
                return Some(());
            }
            if value(target, "SELECT to_regclass('walrelay.chunks') IS NOT NULL").await != "t" {
                return None;
            }
            let copying = value(
                target,
                "SELECT EXISTS (SELECT 1 FROM walrelay.snapshot WHERE phase = 'copy')",
            )
            .await;
            (copying == "t").then_some(())
        }
    })
    .await;
    // Write WAL until the cap invalidates the slot.
    let mut status = String::new();
    for _ in 0..40 {
        if snapshot.exited() {
            break;
        }
        write_wal(&source).await;
        status = wal_status(&source, &pair.slot).await;
        if status == "lost" || status == "missing" {
            break;
        }
    }
    assert!(
        status == "lost" || status == "missing",
        "the slot was never invalidated (wal_status {status}): the test does not test anything"
    );
    // The copy had well over 20 s left: it must stop long before that.
    let run = snapshot.finish(Duration::from_secs(20)).await;
    run.assert_failure();
    let stderr = run.stderr.to_lowercase();
    for word in [&pair.slot, "max_slot_wal_keep_size", "cleanup"] {
        assert!(
            stderr.contains(word),
            "stderr should mention {word:?}:\n{run}"
        );
    }
    // A lost slot cannot be resumed: the stop must not promise it.
    assert!(
        !stderr.contains("resumes") && stderr.contains("cannot be resumed"),
        "a lost slot's stop must say it cannot be resumed:\n{run}"
    );
    let copied: i64 = value(&target, "SELECT count(*) FROM items")
        .await
        .parse()
        .unwrap();
    assert!(
        copied < 4000,
        "the copy went on to the end after the slot was lost:\n{run}"
    );
}
