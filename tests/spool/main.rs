//! The change-stream spool (`--spool-dir`) on real clusters: a source whose
//! `max_slot_wal_keep_size` is far smaller than the WAL written while the
//! copy runs keeps its slot, and the target ends equal row by row; SIGKILL
//! while spooling and while applying the spool loses and repeats nothing;
//! a damaged spool record is a definite error that applies nothing after
//! it.
//!
//! One test binary, split by behaviour: `capped` (the cap and the crashes)
//! and `damage`. The copy is slowed by a target trigger (`--schema skip`,
//! `harness::slow_copy_tables`), so writes land while it runs.

#[path = "../harness/mod.rs"]
mod harness;
#[path = "../stream_support/mod.rs"]
mod stream_support;

mod capped;
mod damage;
mod memory;
mod outage;
mod status;
mod switch;

use std::path::Path;
use std::time::Duration;

use harness::{exec, value, Client, Pair};
use stream_support::Stream;

/// `walrelay run` copying `items` (schema skip, one worker, small chunks)
/// with its spool in `spool`.
fn start_run(pair: &Pair, spool: &Path) -> Stream {
    let mut cmd = pair.walrelay();
    cmd.args(["--table", "public.items", "run", "--schema", "skip"])
        .args([
            "--jobs",
            "1",
            "--chunk-pages",
            "2",
            "--verify-interval",
            "0s",
        ])
        .args(["--http", &format!("127.0.0.1:{}", harness::free_port())])
        .args(["--stop-after", "300s", "--spool-dir"])
        .arg(spool);
    Stream::spawn(cmd)
}

/// Changes to `items` in round `k`: updates (half of them to rows the
/// target trigger slows), inserts and a delete.
async fn change_items(source: &Client, k: u32) {
    exec(
        source,
        &format!(
            "UPDATE items SET pad = md5(pad || '{k}') WHERE id % 20 = {k} % 20;
             INSERT INTO items SELECT 100000 + {k} * 100 + g, 'new' FROM generate_series(1, 20) g;
             DELETE FROM items WHERE id = {k} * 7 + 3;"
        ),
    )
    .await;
}

/// The phase of the pair's snapshot (`none` before it is recorded).
async fn phase(target: &Client, slot: &str) -> String {
    if value(
        target,
        "SELECT to_regclass('walrelay.snapshot') IS NOT NULL",
    )
    .await
        != "t"
    {
        return "none".into();
    }
    value(
        target,
        &format!(
            "SELECT coalesce((SELECT phase FROM walrelay.snapshot WHERE slot_name = '{slot}'), 'none')"
        ),
    )
    .await
}

/// Waits until the snapshot is in `want` (or past it, for `copy`).
async fn wait_phase(pair: &Pair, stream: &mut Stream, want: &[&str]) {
    let target = pair.target().await;
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        if want.contains(&phase(&target, &pair.slot).await.as_str()) {
            return;
        }
        if let Some(run) = stream.if_exited().await {
            panic!("walrelay exited before the snapshot reached {want:?}:\n{run}");
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the snapshot did not reach {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until a session reads the slot again (a restarted capture), so
/// writes made meanwhile are not held by a slot nobody reads.
async fn wait_slot_read(pair: &Pair, stream: &mut Stream) {
    let source = pair.source().await;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let sql = format!(
        "SELECT active FROM pg_replication_slots WHERE slot_name = '{}'",
        pair.slot
    );
    while value(&source, &sql).await != "t" {
        if let Some(run) = stream.if_exited().await {
            panic!("walrelay exited before it read the slot:\n{run}");
        }
        assert!(
            std::time::Instant::now() < deadline,
            "nothing read the slot"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The segment files of the pair's spool.
fn segments(spool: &Path, slot: &str) -> Vec<std::path::PathBuf> {
    let Ok(entries) = std::fs::read_dir(spool.join(slot)) else {
        return vec![];
    };
    let mut found: Vec<_> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    found.sort();
    found
}

/// Fails (with walrelay's output) when the slot was invalidated.
async fn assert_slot_kept(source: &Client, slot: &str, run: &mut Option<Stream>, when: &str) {
    let status = harness::wal_status(source, slot).await;
    if status == "lost" || status == "missing" {
        match run.take() {
            Some(run) => run.fail(&format!("the slot was {status} {when}")).await,
            None => panic!("the slot was {status} {when}"),
        }
    }
}
