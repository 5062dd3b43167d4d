//! `walrelay snapshot` against real clusters: many types, TOAST, partitions,
//! generated columns, constraints; table selection; `--schema skip`; a
//! SIGKILL mid-copy and the resume; bad input that must leave nothing
//! half-done.
//!
//! Each test has its own databases and slot; every target database holds
//! one snapshot, so `walrelay.tables` / `walrelay.chunks` are read whole.
//!
//! One test binary, split by behaviour:
//! * [`copy`]: a consistent copy of data and schema, and table selection;
//! * [`schema`]: `--schema skip` and tables that already exist on the target;
//! * [`widening`]: `--schema skip` into wider columns (snapshot, stream and
//!   verify) and the refusal of narrower or different ones;
//! * [`resume`]: a SIGKILL mid-copy and the resume;
//! * [`refusals`]: bad connections, wal_level and foreign slots leave nothing;
//! * [`progress`]: the post-data step's view of index builds.
//! * [`post_data`]: the post-data step resumes and stops with walrelay;
//!   slot creation names what it waits for.
//!
//! This file holds the helpers several of them share.

#[path = "../harness/mod.rs"]
mod harness;
#[path = "../stream_support/mod.rs"]
mod stream_support;

mod copy;
mod post_data;
mod progress;
mod refusals;
mod resume;
mod schema;
mod slot_lost;
mod widening;

use harness::{column, exec, rows, value, Client, Pair, Run};

/// `walrelay … snapshot ARGS`.
async fn snapshot(pair: &Pair, args: &[&str]) -> Run {
    let mut cmd = pair.walrelay();
    cmd.arg("snapshot").args(args);
    harness::run(cmd).await
}

/// Drops the pair's slot (snapshots leave it for `stream`), so the shared
/// source does not run out of slots.
async fn drop_slot(pair: &Pair) {
    let admin = pair.source_cluster().connect("postgres").await;
    exec(
        &admin,
        &format!(
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = '{}'",
            pair.slot
        ),
    )
    .await;
}

/// Whether the target has a `walrelay.snapshot` row for the pair's slot.
async fn snapshot_recorded(target: &Client, slot: &str) -> bool {
    if value(
        target,
        "SELECT to_regclass('walrelay.snapshot') IS NOT NULL",
    )
    .await
        != "t"
    {
        return false;
    }
    value(
        target,
        &format!("SELECT count(*) FROM walrelay.snapshot WHERE slot_name = '{slot}'"),
    )
    .await
        != "0"
}

/// After a failure before the copy: no slot, no publication, no state.
async fn assert_nothing_left(pair: &Pair, run: &Run) {
    assert!(
        !pair.slot_exists().await,
        "slot {} left on the source after:\n{run}",
        pair.slot
    );
    assert!(
        !pair.publication_exists().await,
        "publication {} left on the source after:\n{run}",
        pair.publication
    );
    assert!(
        !snapshot_recorded(&pair.target().await, &pair.slot).await,
        "a walrelay.snapshot row was recorded on the target after:\n{run}"
    );
}

fn assert_mentions(run: &Run, words: &[&str]) {
    let lower = run.stderr.to_lowercase();
    for word in words {
        assert!(
            lower.contains(&word.to_lowercase()),
            "stderr should mention {word:?}:\n{run}"
        );
    }
}

/// Checks the state tables after a finished snapshot and returns the
/// consistent LSN: phase done, every table copied under exactly one
/// snapshot LSN (its chunks' too), row counts as on the source.
async fn assert_snapshot_done(pair: &Pair) -> String {
    let target = pair.target().await;
    let source = pair.source().await;
    let snap = rows(
        &target,
        &format!(
            "SELECT phase, consistent_lsn::text, finished_at IS NOT NULL
             FROM walrelay.snapshot WHERE slot_name = '{}'",
            pair.slot
        ),
    )
    .await;
    assert_eq!(snap.len(), 1, "walrelay.snapshot rows: {snap:?}");
    assert_eq!(snap[0][0].as_deref(), Some("done"), "{snap:?}");
    assert_eq!(snap[0][2].as_deref(), Some("t"), "finished_at: {snap:?}");
    let consistent = snap[0][1].clone().expect("consistent_lsn");

    let tables = rows(
        &target,
        "SELECT schema_name, table_name, state, rows_copied::text, chunks_total::text,
                chunks_done::text, snapshot_lsn::text
         FROM walrelay.tables ORDER BY 1, 2",
    )
    .await;
    assert!(!tables.is_empty(), "walrelay.tables is empty");
    for t in &tables {
        let name = format!("{}.{}", t[0].as_deref().unwrap(), t[1].as_deref().unwrap());
        assert_eq!(t[2].as_deref(), Some("copied"), "{name}: {t:?}");
        assert_eq!(t[4], t[5], "{name}: chunks_total vs chunks_done: {t:?}");
        let lsn = t[6]
            .clone()
            .unwrap_or_else(|| panic!("{name} has no snapshot_lsn"));
        let source_rows = value(&source, &format!("SELECT count(*) FROM {name}")).await;
        assert_eq!(
            t[3].as_deref(),
            Some(source_rows.as_str()),
            "{name}: rows_copied vs rows on the source"
        );
        let chunk_lsns = column(
            &target,
            &format!(
                "SELECT DISTINCT coalesce(snapshot_lsn::text, 'NULL') || ' ' || state
                 FROM walrelay.chunks WHERE schema_name = '{}' AND table_name = '{}'",
                t[0].as_deref().unwrap(),
                t[1].as_deref().unwrap()
            ),
        )
        .await;
        assert_eq!(
            chunk_lsns,
            vec![format!("{lsn} copied")],
            "{name}: every chunk copied under the table's snapshot_lsn"
        );
        let n_chunks = value(
            &target,
            &format!(
                "SELECT count(*) FROM walrelay.chunks WHERE schema_name = '{}' AND table_name = '{}'",
                t[0].as_deref().unwrap(),
                t[1].as_deref().unwrap()
            ),
        )
        .await;
        assert_eq!(
            Some(n_chunks.as_str()),
            t[4].as_deref(),
            "{name}: chunk rows"
        );
    }
    consistent
}
