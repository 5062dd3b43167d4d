//! A damaged byte in a spooled record that was acknowledged to the slot: the
//! stream stops with a definite error naming the segment and offset, and
//! applies nothing from that record on.

use crate::harness::{self, pair, slow_copy_tables, value};
use crate::stream_support::assert_mentions;
use crate::{change_items, segments};

/// Flips a byte inside the payload of the first change record (`D`) of
/// `segment`; returns the frame's offset.
fn damage_first_change(segment: &std::path::Path) -> u64 {
    let mut bytes = std::fs::read(segment).unwrap();
    let mut at = 8; // the segment's magic
    while at + 8 < bytes.len() {
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        if bytes[at + 8] == b'D' && len > 4 {
            bytes[at + 8 + len / 2] ^= 0x20;
            std::fs::write(segment, &bytes).unwrap();
            return at as u64;
        }
        at += 8 + len;
    }
    panic!("no change record in {}", segment.display());
}

#[tokio::test]
async fn a_damaged_spool_record_is_a_definite_error_and_nothing_after_it_is_applied() {
    let pair = pair("spool_damage").await;
    // About 10 s of copying.
    slow_copy_tables(&pair, 1000, 2).await;
    let spool = tempfile::tempdir().unwrap();
    let mut cmd = pair.walrelay();
    cmd.args(["--table", "public.items", "snapshot", "--schema", "skip"])
        .args(["--jobs", "1", "--chunk-pages", "2", "--spool-dir"])
        .arg(spool.path());
    let snapshot = harness::spawn(cmd);
    let source = pair.source().await;
    let target = pair.target().await;
    harness::wait_for(std::time::Duration::from_secs(60), "the spool", || {
        let found = !segments(spool.path(), &pair.slot).is_empty();
        async move { found.then_some(()) }
    })
    .await;
    for k in 1..=3 {
        change_items(&source, k).await;
    }
    let done = snapshot.finish(harness::COMMAND_TIMEOUT).await;
    done.assert_success();
    assert_eq!(
        value(&target, "SELECT count(*) FROM items WHERE id > 100000").await,
        "0",
        "the copy must not hold the changes made while it ran (they are spooled)"
    );
    let segs = segments(spool.path(), &pair.slot);
    let offset = damage_first_change(&segs[0]);

    let mut cmd = pair.walrelay();
    cmd.args(["stream", "--stop-after", "60s", "--spool-dir"])
        .arg(spool.path());
    let run = harness::run(cmd).await;
    run.assert_failure();
    let segment = segs[0].display().to_string();
    assert_mentions(&run, &[&segment, &format!("offset {offset}"), "cleanup"]);
    assert_eq!(
        value(&target, "SELECT count(*) FROM items WHERE id > 100000").await,
        "0",
        "changes were applied from a damaged spool:\n{run}"
    );
    assert!(segs[0].exists(), "the damaged segment is kept as evidence");
    crate::stream_support::drop_slot(&pair).await;
}
