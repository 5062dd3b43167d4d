//! Key-less tables (REPLICA IDENTITY FULL) against real clusters: drift is
//! pinpointed as a multiset difference of row fingerprints (exact counts of
//! missing and extra rows, no value printed), `--repair` deletes and copies
//! exactly the differing rows (duplicates included), with the stream idle
//! and while it applies a writer's changes to that very table, and refuses,
//! saying why, when it cannot lock the table.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use crate::harness::{self, exec, Client};
use crate::stream_support::{self, catch_up, drop_slot, prepare, Rng, Stream};
use crate::{table, verify};

/// 2000 distinct rows, one row held three times and one held twice.
const LEDGER: &str = "
CREATE TABLE ledger (acct int, amount numeric(12,2), memo text);
ALTER TABLE ledger REPLICA IDENTITY FULL;
INSERT INTO ledger SELECT g % 50, (g % 7) * 1.25, 'm' || (g % 13) FROM generate_series(1, 2000) g;
INSERT INTO ledger SELECT 999, 9.99, 'secret-dup' FROM generate_series(1, 3);
INSERT INTO ledger SELECT 998, 1.00, 'secret-pair' FROM generate_series(1, 2);
";

/// On the target: one of the three copies missing, a third copy of the
/// pair (an extra row), and one row changed (one missing, one extra).
const DRIFT: &str = "
DELETE FROM ledger WHERE ctid = (SELECT ctid FROM ledger WHERE acct = 999 LIMIT 1);
INSERT INTO ledger VALUES (998, 1.00, 'secret-pair');
UPDATE ledger SET memo = 'secret-changed'
    WHERE ctid = (SELECT ctid FROM ledger WHERE acct = 45 AND memo = 'm6' LIMIT 1);
";

/// Every row of both sides in one order, duplicates included.
async fn assert_same_multiset(source: &Client, target: &Client) {
    let sql = "SELECT acct, amount, memo FROM ledger ORDER BY acct, amount, memo";
    let (s, t) = (
        harness::rows(source, sql).await,
        harness::rows(target, sql).await,
    );
    assert!(s.len() > 1900, "{} source rows", s.len());
    assert_eq!(s.len(), t.len(), "row counts differ");
    let differ = s.iter().zip(&t).filter(|(a, b)| a != b).count();
    assert_eq!(differ, 0, "{differ} rows differ in order");
}

/// The counts of the injected drift, exactly.
fn assert_injected_drift(report: &Value) {
    let t = table(report, "public.ledger");
    assert_eq!(t["basis"]["by"], "fingerprint", "{report:#}");
    assert_eq!(t["missing_on_target"], 2, "{report:#}");
    assert_eq!(t["extra_on_target"], 2, "{report:#}");
    assert_eq!(t["differing_fingerprints"], 4, "{report:#}");
    assert_eq!(t["drift_rows"], 4, "{report:#}");
    let mut counts: Vec<(u64, u64)> = t["fingerprints"]
        .as_array()
        .expect("fingerprints")
        .iter()
        .map(|f| (f["source"].as_u64().unwrap(), f["target"].as_u64().unwrap()))
        .collect();
    counts.sort();
    assert_eq!(counts, [(0, 1), (1, 0), (2, 3), (3, 2)], "{report:#}");
}

#[tokio::test]
async fn keyless_drift_is_pinpointed_by_fingerprint_and_repaired_row_by_row() {
    let pair = prepare("verify_keyless", LEDGER, "").await;
    let (source, target) = (pair.source().await, pair.target().await);
    exec(&target, DRIFT).await;

    let (run, report) = verify(&pair, &[]).await;
    assert_eq!(run.code, Some(1), "{run}");
    assert_injected_drift(&report);
    assert!(!run.output().contains("secret"), "values leaked:\n{run}");
    let mut cmd = pair.walrelay();
    cmd.arg("verify");
    let human = harness::run(cmd).await;
    assert_eq!(human.code, Some(1), "{human}");
    assert!(
        human
            .stdout
            .contains("rows pinpointed by fingerprint: 2 missing, 2 extra"),
        "{human}"
    );
    assert!(
        !human.output().contains("secret"),
        "values leaked:\n{human}"
    );

    let (run, report) = verify(&pair, &["--repair"]).await;
    assert_eq!(run.code, Some(1), "{run}");
    assert_injected_drift(&report);
    assert_eq!(table(&report, "public.ledger")["repaired"], 4, "{report:#}");
    assert_eq!(
        table(&report, "public.ledger")["not_repaired"],
        0,
        "{report:#}"
    );
    assert!(!run.output().contains("secret"), "values leaked:\n{run}");
    assert_same_multiset(&source, &target).await;
    let copies = "SELECT acct, count(*) FROM ledger WHERE acct IN (998, 999) GROUP BY 1 ORDER BY 1";
    assert_eq!(
        harness::rows(&target, copies).await,
        harness::rows(&source, copies).await
    );

    let (run, report) = verify(&pair, &[]).await;
    assert_eq!(run.code, Some(0), "{run}");
    assert_eq!(report["clean"], true, "{report:#}");
    drop_slot(&pair).await;
}

/// Duplicates, updates and deletes of single copies of rows with `acct`
/// below 40 (the drift is elsewhere), until `stop`.
async fn writer(url: String, seed: u64, stop: Arc<AtomicBool>, done: Arc<AtomicU64>) {
    let client = harness::connect(&url).await;
    let mut rng = Rng::new(seed);
    while !stop.load(Ordering::Relaxed) {
        let k = rng.range(0, 39);
        let pick = format!("(SELECT ctid FROM ledger WHERE acct = {k} LIMIT 1)");
        let sql = match rng.range(0, 2) {
            0 => format!("INSERT INTO ledger SELECT * FROM ledger WHERE acct = {k} LIMIT 1"),
            1 => format!("UPDATE ledger SET amount = amount + 1 WHERE ctid = {pick}"),
            _ => format!("DELETE FROM ledger WHERE ctid = {pick}"),
        };
        if client.batch_execute(&sql).await.is_ok() {
            done.fetch_add(1, Ordering::Relaxed);
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

#[tokio::test]
async fn keyless_repair_while_the_stream_applies_changes_to_that_table() {
    let pair = prepare("verify_keyless_live", LEDGER, "").await;
    let mut stream = Stream::start(&pair, &["--heartbeat-interval", "1s"]);
    catch_up(&pair, &mut stream).await;
    let (source, target) = (pair.source().await, pair.target().await);
    exec(&target, DRIFT).await;
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let writer = tokio::spawn(writer(
        pair.source_url.clone(),
        stream_support::seed(),
        Arc::clone(&stop),
        Arc::clone(&done),
    ));
    tokio::time::sleep(Duration::from_millis(300)).await;

    let before = done.load(Ordering::Relaxed);
    let (run, report) = verify(&pair, &["--table", "public.ledger", "--repair"]).await;
    let during = done.load(Ordering::Relaxed) - before;
    eprintln!("{during} writer statements during the repair");
    assert_eq!(run.code, Some(1), "{run}");
    assert_eq!(report["streaming"], true, "{report:#}");
    // The writer's changes in flight are not drift: exactly what was injected.
    assert_injected_drift(&report);
    assert_eq!(table(&report, "public.ledger")["repaired"], 4, "{report:#}");
    assert!(!run.output().contains("secret"), "values leaked:\n{run}");
    tokio::time::sleep(Duration::from_millis(300)).await;

    stop.store(true, Ordering::Relaxed);
    writer.await.unwrap();
    assert!(
        done.load(Ordering::Relaxed) > 0,
        "the writer made no progress"
    );
    catch_up(&pair, &mut stream).await;
    assert!(stream.if_exited().await.is_none(), "the stream failed");
    assert_same_multiset(&source, &target).await;
    let (run, report) = verify(&pair, &["--table", "public.ledger"]).await;
    assert_eq!(run.code, Some(0), "{run}");
    assert_eq!(report["clean"], true, "{report:#}");
    stream.stop().await;
    drop_slot(&pair).await;
}

/// A repair that cannot take its lock (a source transaction writing to the
/// table stays open) refuses, says why and writes nothing; once the writer
/// is gone it repairs.
#[tokio::test]
async fn keyless_repair_refuses_and_says_why_when_the_table_cannot_be_locked() {
    let pair = prepare("verify_keyless_locked", LEDGER, "").await;
    let (source, target) = (pair.source().await, pair.target().await);
    exec(&target, DRIFT).await;
    let writer = harness::connect(&pair.source_url).await;
    exec(
        &writer,
        "BEGIN; INSERT INTO ledger VALUES (1, 1.00, 'open')",
    )
    .await;

    let (run, report) = verify(&pair, &["--repair"]).await;
    assert_eq!(run.code, Some(1), "{run}");
    assert_eq!(report["clean"], false, "{report:#}");
    let t = table(&report, "public.ledger");
    assert_eq!(
        (&t["repaired"], &t["unsettled"]),
        (&0.into(), &1.into()),
        "{report:#}"
    );
    let notes = t["notes"].to_string();
    assert!(
        notes.contains("not repaired") && notes.contains("could not be locked"),
        "{report:#}"
    );
    let pair_copies = "SELECT count(*) FROM ledger WHERE acct = 998";
    assert_eq!(harness::value(&target, pair_copies).await, "3");

    exec(&writer, "ROLLBACK").await;
    let (run, report) = verify(&pair, &["--repair"]).await;
    assert_eq!(run.code, Some(1), "{run}");
    assert_eq!(table(&report, "public.ledger")["repaired"], 4, "{report:#}");
    assert_same_multiset(&source, &target).await;
    drop_slot(&pair).await;
}
