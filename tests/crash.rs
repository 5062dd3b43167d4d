//! Crash safety of the stream: SIGKILL `walrelay stream` at random moments
//! while a writer changes a keyed table and a key-less REPLICA IDENTITY FULL
//! table in multi-statement transactions; at every restart the slot must
//! not be acknowledged past the target's checkpoint, and at the end both
//! tables must be equal row by row: nothing lost, nothing applied twice.
//!
//! The random moments come from a seeded xorshift; the seed is printed, and
//! `WALRELAY_TEST_SEED=<seed>` replays it.

mod harness;
mod stream_support;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use harness::Client;
use stream_support::{
    assert_same, assert_same_multiset, assert_slot_not_ahead, catch_up, drop_slot, format_lsn,
    prepare, resume_lsn, seed, Rng, Stream,
};

const KILLS: usize = 24;

/// One random transaction of 1–5 statements; one in ten is rolled back.
fn transaction(rng: &mut Rng, next_id: &mut u64) -> String {
    let mut sql = String::from("BEGIN;\n");
    for _ in 0..rng.range(1, 5) {
        let existing = rng.range(1, *next_id - 1);
        let a = rng.range(0, 19);
        let stmt = match rng.range(0, 7) {
            0 | 1 => {
                *next_id += 1;
                format!(
                    "INSERT INTO pk VALUES ({}, {}, 'w{}');",
                    *next_id - 1,
                    rng.range(0, 1000),
                    rng.next_u64() % 1000
                )
            }
            2 => format!("UPDATE pk SET v = v + 1, note = note || '+' WHERE id = {existing};"),
            3 => format!("DELETE FROM pk WHERE id = {existing};"),
            4 => format!("UPDATE pk SET id = id + 100000 WHERE id = {existing};"),
            5 => format!("INSERT INTO nokey VALUES ({a}, 'w'), ({a}, 'w');"),
            6 => format!(
                "UPDATE nokey SET b = b || '+' WHERE ctid = (SELECT ctid FROM nokey WHERE a = {a} LIMIT 1);"
            ),
            _ => format!(
                "DELETE FROM nokey WHERE ctid = (SELECT ctid FROM nokey WHERE a = {a} LIMIT 1);"
            ),
        };
        sql.push_str(&stmt);
        sql.push('\n');
    }
    sql.push_str(if rng.range(0, 9) == 0 {
        "ROLLBACK;"
    } else {
        "COMMIT;"
    });
    sql
}

/// Writes random transactions until `stop`; returns how many it sent.
async fn writer(source: Client, seed: u64, stop: Arc<AtomicBool>, sent: Arc<AtomicU64>) {
    let mut rng = Rng::new(seed);
    let mut next_id = 201;
    while !stop.load(Ordering::Relaxed) {
        let sql = transaction(&mut rng, &mut next_id);
        if let Err(e) = source.batch_execute(&sql).await {
            panic!("writer: {}\nin SQL:\n{sql}", harness::error_text(&e));
        }
        sent.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(rng.range(1, 8))).await;
    }
}

/// Waits until no session uses the slot (the killed stream's walsender
/// has noticed), so the next start does not race it.
async fn wait_slot_released(source: &Client, slot: &str) {
    harness::wait_for(
        Duration::from_secs(30),
        "the slot to be released",
        || async {
            let active = harness::value(
                source,
                &format!(
                    "SELECT active::text FROM pg_replication_slots WHERE slot_name = '{slot}'"
                ),
            )
            .await;
            (active == "false").then_some(())
        },
    )
    .await;
}

/// Waits until the stream holds the slot (START_REPLICATION accepted).
async fn wait_slot_active(source: &Client, slot: &str, stream: &mut Stream) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let active = harness::value(
            source,
            &format!("SELECT active::text FROM pg_replication_slots WHERE slot_name = '{slot}'"),
        )
        .await;
        if active == "true" {
            return;
        }
        if let Some(run) = stream.if_exited().await {
            panic!("the stream exited:\n{run}");
        }
        assert!(
            Instant::now() < deadline,
            "the stream did not take the slot within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn sigkill_at_random_moments_loses_and_duplicates_nothing() {
    let seed = seed();
    eprintln!("crash test seed: {seed} (replay with WALRELAY_TEST_SEED={seed})");
    let pair = prepare(
        "crash",
        "CREATE TABLE pk (id int PRIMARY KEY, v int NOT NULL, note text);
         INSERT INTO pk SELECT g, 0, 'seed' FROM generate_series(1, 200) g;
         CREATE TABLE nokey (a int, b text);
         ALTER TABLE nokey REPLICA IDENTITY FULL;
         INSERT INTO nokey SELECT g % 20, 'seed' FROM generate_series(1, 100) g;",
        "",
    )
    .await;
    let source = pair.source().await;
    let target = pair.target().await;
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let writing = tokio::spawn(writer(
        pair.source().await,
        seed ^ 0x9E37_79B9_7F4A_7C15,
        Arc::clone(&stop),
        Arc::clone(&sent),
    ));

    let mut rng = Rng::new(seed);
    let started = Instant::now();
    let mut advanced = 0;
    let mut last = resume_lsn(&target, &pair.slot).await;
    for kill in 0..KILLS {
        let mut stream = Stream::start(&pair, &[]);
        // Most delays count from the moment the stream holds the slot
        // (streaming, applying); every fourth from the start of the
        // process (connecting, reading the checkpoint).
        let from = if kill % 4 == 3 {
            "start"
        } else {
            wait_slot_active(&source, &pair.slot, &mut stream).await;
            "streaming"
        };
        let delay = Duration::from_millis(rng.range(50, 800));
        tokio::time::sleep(delay).await;
        let run = stream.kill().await;
        assert_eq!(
            run.code, None,
            "the stream ended by itself before the SIGKILL (kill {kill}):\n{run}"
        );
        wait_slot_released(&source, &pair.slot).await;
        let (confirmed, applied) =
            assert_slot_not_ahead(&pair, &format!("after SIGKILL {kill} ({delay:?})")).await;
        if applied > last {
            advanced += 1;
            last = applied;
        }
        eprintln!(
            "kill {kill:2} {delay:>5?} after {from:9}: applied {}, slot confirmed {}",
            format_lsn(applied),
            format_lsn(confirmed)
        );
    }
    stop.store(true, Ordering::Relaxed);
    writing.await.expect("the writer failed");
    assert!(
        advanced >= KILLS / 6,
        "the checkpoint advanced in only {advanced} of {KILLS} runs: the kills did not hit a working stream"
    );

    let mut stream = Stream::start(&pair, &[]);
    catch_up(&pair, &mut stream).await;
    assert_same(&pair, "pk", "id", 200).await;
    assert_same_multiset(&pair, "nokey", 50).await;
    assert_slot_not_ahead(&pair, "after catching up").await;
    stream.stop().await;
    eprintln!(
        "{KILLS} SIGKILLs in {:?}; {} source transactions written; the checkpoint advanced during {advanced} runs",
        started.elapsed(),
        sent.load(Ordering::Relaxed)
    );
    drop_slot(&pair).await;
}

/// SIGKILL while one large source transaction is being applied (it is
/// applied as it arrives, so part of it is on the target uncommitted):
/// after the restart it is applied exactly once.
#[tokio::test]
async fn sigkill_during_a_large_transaction_applies_it_once() {
    let pair = prepare(
        "crash_large",
        "CREATE TABLE big (id int PRIMARY KEY, v text);
         INSERT INTO big SELECT g, 'seed' FROM generate_series(1, 1000) g;",
        "",
    )
    .await;
    let source = pair.source().await;
    let target = pair.target().await;
    // Small batches: the transaction reaches the target in many flushes.
    let mut stream = Stream::start(&pair, &["--batch-bytes", "262144"]);
    catch_up(&pair, &mut stream).await;
    harness::exec(
        &source,
        "BEGIN;
         INSERT INTO big SELECT g, 'large ' || g FROM generate_series(1001, 200000) g;
         UPDATE big SET v = v || ' updated' WHERE id <= 1000;
         DELETE FROM big WHERE id % 100 = 0;
         COMMIT;",
    )
    .await;
    // Kill once the target's apply session writes the transaction's rows
    // (not one of its idle checkpoints, which are transactions of their own).
    harness::wait_for(
        Duration::from_secs(60),
        "the apply session to be writing",
        || async {
            let busy = harness::value(
                &target,
                "SELECT count(*)::text FROM pg_stat_activity
             WHERE application_name = 'walrelay-apply' AND datname = current_database()
               AND backend_xid IS NOT NULL AND query NOT LIKE '%walrelay.progress%'",
            )
            .await;
            (busy != "0").then_some(())
        },
    )
    .await;
    let run = stream.kill().await;
    assert_eq!(
        run.code, None,
        "the stream ended before the SIGKILL:\n{run}"
    );
    wait_slot_released(&source, &pair.slot).await;
    assert_slot_not_ahead(&pair, "after the SIGKILL").await;
    let committed_rows = harness::value(&target, "SELECT count(*)::text FROM big").await;
    assert_eq!(
        committed_rows, "1000",
        "the kill should land before the large transaction committed on the target"
    );
    let mut stream = Stream::start(&pair, &[]);
    catch_up(&pair, &mut stream).await;
    assert_same(&pair, "big", "id", 198_000).await;
    stream.stop().await;
    drop_slot(&pair).await;
}
