//! A 64 MB `max_slot_wal_keep_size`, a copy made slow by the target and a
//! writer producing far more WAL (with checkpoints) while it runs: with the
//! spool the slot is never lost and the target ends equal, also after
//! SIGKILL while spooling and while applying the spool.

use std::time::Duration;

use crate::harness::{self, capped_source, shared, slow_copy_tables, value, Client};
use crate::stream_support::{assert_same, catch_up, pair_on};
use crate::{
    assert_slot_kept, change_items, phase, segments, start_run, wait_phase, wait_slot_read,
};

/// About 8 MB of WAL and a checkpoint, then a wait (at most 30 s) until
/// the slot confirmed all of it. Logical decoding is slower than a writer
/// that only fills WAL: without the wait the source writes past any small
/// cap before its walsender even decoded the WAL, whoever consumes the
/// slot. The wait paces the writer to the decoder, never to the target:
/// without the spool nothing confirms and the slot is lost
/// (`tests/snapshot/slot_lost.rs`).
pub(crate) async fn write_wal(source: &Client, slot: &str) {
    harness::write_wal_rows(source, 6000).await;
    let written = value(source, "SELECT pg_current_wal_lsn()::text").await;
    let sql = format!(
        "SELECT coalesce(confirmed_flush_lsn >= '{written}', false) FROM pg_replication_slots
         WHERE slot_name = '{slot}'"
    );
    harness::wait_for(
        Duration::from_secs(30),
        "the slot to confirm the WAL written",
        || {
            let sql = &sql;
            async move { (value(source, sql).await == "t").then_some(()) }
        },
    )
    .await;
}

#[tokio::test]
async fn a_capped_slot_is_never_lost_while_the_copy_spools() {
    let cluster = capped_source("spool-cap");
    let pair = pair_on(&cluster, &shared().target, "spool_cap").await;
    // About 40 s of copying.
    slow_copy_tables(&pair, 4000, 2).await;
    let spool = tempfile::tempdir().unwrap();
    let mut run = start_run(&pair, spool.path());
    wait_phase(&pair, &mut run, &["copy"]).await;
    let source = pair.source().await;
    // About 300 MB of WAL while the copy runs, a checkpoint after each 8
    // (the slot frees WAL one checkpoint's running-transactions record at
    // a time: steps far larger than the cap would outrun any consumer).
    for k in 1..=40 {
        if k % 5 == 0 {
            change_items(&source, k / 5).await;
        }
        write_wal(&source, &pair.slot).await;
        let mut watched = Some(run);
        assert_slot_kept(
            &source,
            &pair.slot,
            &mut watched,
            &format!("after {k} rounds of writes"),
        )
        .await;
        run = watched.unwrap();
    }
    let target = pair.target().await;
    assert_eq!(
        phase(&target, &pair.slot).await,
        "copy",
        "the copy ended before the writes: make it slower"
    );
    assert!(
        !segments(spool.path(), &pair.slot).is_empty(),
        "nothing was spooled"
    );
    wait_phase(&pair, &mut run, &["done"]).await;
    catch_up(&pair, &mut run).await;
    let mut watched = Some(run);
    assert_slot_kept(&source, &pair.slot, &mut watched, "at the end").await;
    let run = watched.unwrap();
    assert_same(&pair, "items", "id", 4000).await;
    run.stop().await;
    assert!(
        segments(spool.path(), &pair.slot).is_empty(),
        "applied segments are deleted"
    );
}

#[tokio::test]
async fn sigkill_while_spooling_and_while_applying_the_spool_loses_nothing() {
    let cluster = capped_source("spool-kill");
    let pair = pair_on(&cluster, &shared().target, "spool_kill").await;
    slow_copy_tables(&pair, 4000, 2).await;
    let spool = tempfile::tempdir().unwrap();
    let source = pair.source().await;
    let target = pair.target().await;

    // 1. Killed while the copy spools.
    let mut run = start_run(&pair, spool.path());
    wait_phase(&pair, &mut run, &["copy"]).await;
    for k in 1..=10 {
        if k % 5 == 0 {
            change_items(&source, k / 5).await;
        }
        write_wal(&source, &pair.slot).await;
    }
    assert_eq!(phase(&target, &pair.slot).await, "copy");
    run.kill().await;
    assert_slot_kept(&source, &pair.slot, &mut None, "after the first kill").await;

    // 2. Killed while the spool is applied (the target trigger slows the
    //    updates of even ids, so it takes seconds).
    let mut run = start_run(&pair, spool.path());
    wait_slot_read(&pair, &mut run).await;
    for k in 11..=20 {
        if k % 5 == 0 {
            change_items(&source, k / 5).await;
        }
        write_wal(&source, &pair.slot).await;
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
    wait_phase(&pair, &mut run, &["done"]).await;
    // The first batches from the spool are committed, the spool not done.
    let applying = harness::wait_for(Duration::from_secs(60), "a batch from the spool", || {
        let (target, slot) = (&target, &pair.slot);
        let spooled = !segments(spool.path(), slot).is_empty();
        async move {
            if !spooled {
                return Some(false);
            }
            let sql = format!("SELECT count(*) FROM walrelay.progress WHERE slot_name = '{slot}'");
            (value(target, &sql).await == "1").then_some(true)
        }
    })
    .await;
    let killed = run.kill().await;
    assert!(
        applying && killed.stderr.contains("streaming through the spool"),
        "not killed while applying from the spool:\n{killed}"
    );

    // 3. The next run applies the rest and streams on.
    let mut run = start_run(&pair, spool.path());
    for k in 5..=6 {
        change_items(&source, k).await;
    }
    catch_up(&pair, &mut run).await;
    assert_same(&pair, "items", "id", 4000).await;
    let mut watched = Some(run);
    assert_slot_kept(&source, &pair.slot, &mut watched, "at the end").await;
    watched.unwrap().stop().await;
}
