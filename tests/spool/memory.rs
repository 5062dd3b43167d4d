//! Memory stays bounded by configuration, not by the spool's size: a spool
//! larger than the 150 MB RSS budget is written and applied by a walrelay
//! whose peak RSS stays under it.

use crate::harness::{exec, pair, slow_copy_tables};
use crate::stream_support::{assert_same, catch_up, Stream};
use crate::{segments, wait_phase};

const BUDGET_KB: u64 = 150 * 1024;

#[tokio::test]
async fn a_spool_larger_than_the_memory_budget_keeps_rss_bounded() {
    let pair = pair("spool_memory").await;
    // About 40 s of copying `items`; `blob` is published too, and empty
    // when the copy starts.
    slow_copy_tables(&pair, 4000, 2).await;
    let blob = "CREATE TABLE blob (id bigint PRIMARY KEY, pad text)";
    exec(&pair.source().await, blob).await;
    exec(&pair.target().await, blob).await;
    let spool = tempfile::tempdir().unwrap();
    let mut cmd = pair.walrelay();
    cmd.args(["--table", "public.items", "--table", "public.blob", "run"])
        .args(["--schema", "skip", "--jobs", "1", "--chunk-pages", "2"])
        .args(["--verify-interval", "0s", "--stop-after", "600s"])
        .args([
            "--http",
            &format!("127.0.0.1:{}", crate::harness::free_port()),
        ])
        .arg("--spool-dir")
        .arg(spool.path());
    let mut run = Stream::spawn(cmd);
    wait_phase(&pair, &mut run, &["copy"]).await;
    let source = pair.source().await;
    // 200 transactions of 500 rows of 2 kB: about 200 MB of changes.
    for t in 0..200 {
        exec(
            &source,
            &format!(
                "INSERT INTO blob SELECT {t} * 500 + g,
                    (SELECT string_agg(md5(g::text || '-' || i), '') FROM generate_series(1, 64) i)
                 FROM generate_series(1, 500) g"
            ),
        )
        .await;
    }
    let target = pair.target().await;
    let spooled_bytes: u64 = segments(spool.path(), &pair.slot)
        .iter()
        .filter_map(|p| std::fs::metadata(p).ok())
        .map(|m| m.len())
        .sum();
    let phase = crate::phase(&target, &pair.slot).await;
    assert!(
        phase == "copy" && spooled_bytes > BUDGET_KB * 1024,
        "the spool must outgrow the memory budget during the copy: {spooled_bytes} bytes, phase {phase}"
    );
    catch_up(&pair, &mut run).await;
    let peak = run.peak_rss_kb().expect("VmHWM of walrelay");
    assert_same(&pair, "blob", "id", 100_000).await;
    assert!(
        peak <= BUDGET_KB,
        "peak RSS {peak} kB over the {BUDGET_KB} kB budget with a {spooled_bytes}-byte spool"
    );
    println!("spool {spooled_bytes} bytes during the copy, walrelay peak RSS {peak} kB");
    run.stop().await;
}
