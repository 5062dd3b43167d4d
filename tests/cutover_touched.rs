//! Cutover's final verification compares what changed since the clean pass
//! before the fence: the change tracker names every changed row by its key
//! (inserts, updates, key changes, deletes; truncated and key-less tables
//! whole), the touched-rows comparison finds drift among them, and drift
//! found before the fence stops the cutover with nothing fenced.

mod harness;
mod stream_support;

use std::collections::HashSet;

use harness::exec;
use stream_support::{catch_up, prepare, Stream};
use walrelay::config::Config;
use walrelay::cutover::track::Tracker;
use walrelay::migration::MigrationPlan;
use walrelay::pg::conninfo::ConnInfo;
use walrelay::pg::selection::Selection;
use walrelay::verify::touched::{self, TableChanges};
use walrelay::verify::VerifyOptions;

const SCHEMA: &str = "
CREATE TABLE t (id int PRIMARY KEY, v text NOT NULL);
CREATE TABLE pairs (a int, b text, v text, PRIMARY KEY (a, b));
CREATE TABLE wiped (id int PRIMARY KEY);
CREATE TABLE log (v text);
ALTER TABLE log REPLICA IDENTITY FULL;
INSERT INTO t SELECT g, 'v' || g FROM generate_series(1, 100) g;
INSERT INTO pairs SELECT g, 'k' || g, 'x' FROM generate_series(1, 10) g;
INSERT INTO wiped SELECT generate_series(1, 10);
";

/// On the target: the apply of `v = 'poison'` lands as `'corrupted'`, a
/// stand-in for an apply bug that only a comparison can catch.
const CORRUPTING_TRIGGER: &str = "
CREATE FUNCTION corrupt() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF NEW.v = 'poison' THEN NEW.v := 'corrupted'; END IF;
  RETURN NEW;
END $$;
CREATE TRIGGER corrupt BEFORE UPDATE ON t FOR EACH ROW EXECUTE FUNCTION corrupt();
ALTER TABLE t ENABLE ALWAYS TRIGGER corrupt;
";

fn config(pair: &harness::Pair) -> Config {
    Config {
        source: ConnInfo::parse(&pair.source_url).unwrap(),
        target: ConnInfo::parse(&pair.target_url).unwrap(),
        slot: pair.slot.clone(),
        publication: pair.publication.clone(),
        selection: Selection::all(),
        pg_bindir: None,
        map: Default::default(),
        allow_unfiltered_stream: false,
    }
}

fn keys(changes: Option<&TableChanges>) -> HashSet<Vec<String>> {
    match changes {
        Some(TableChanges::Keys(keys)) => keys.clone(),
        other => panic!("expected keys, got {other:?}"),
    }
}

fn key(parts: &[&str]) -> Vec<String> {
    parts.iter().map(|p| p.to_string()).collect()
}

#[tokio::test]
async fn changes_since_tracking_began_are_named_by_key_and_drift_among_them_is_found() {
    let pair = prepare("touched_keys", SCHEMA, "").await;
    exec(&pair.target().await, CORRUPTING_TRIGGER).await;
    let mut stream = Stream::start(&pair, &[]);
    catch_up(&pair, &mut stream).await;
    let config = config(&pair);
    let plan = MigrationPlan::resolve(&pair.source().await, &config)
        .await
        .expect("plan");
    let mut tracker = Tracker::start(&config, &plan, 1_000)
        .await
        .expect("tracker");
    let mut bounded = Tracker::start(&config, &plan, 3)
        .await
        .expect("bounded tracker");

    exec(
        &pair.source().await,
        "UPDATE t SET v = 'new' WHERE id = 5;
         UPDATE t SET v = 'poison' WHERE id = 6;
         DELETE FROM t WHERE id = 7;
         INSERT INTO t VALUES (1001, 'n');
         UPDATE t SET id = 2008 WHERE id = 8;
         UPDATE pairs SET v = 'y' WHERE a = 3;
         TRUNCATE wiped;
         INSERT INTO log VALUES ('x');",
    )
    .await;
    catch_up(&pair, &mut stream).await;

    let seen = tracker.drain(None).await.expect("drain");
    let expected: HashSet<Vec<String>> = ["5", "6", "7", "1001", "8", "2008"]
        .iter()
        .map(|k| key(&[k]))
        .collect();
    assert_eq!(keys(seen.changes("public.t")), expected);
    assert_eq!(
        keys(seen.changes("public.pairs")),
        HashSet::from([key(&["3", "k3"])])
    );
    assert_eq!(seen.changes("public.wiped"), Some(&TableChanges::Whole));
    assert_eq!(seen.changes("public.log"), Some(&TableChanges::Whole));
    // Drained means consumed: nothing new since.
    assert!(tracker.drain(None).await.expect("drain").is_empty());

    // Past its bound the set keeps the small tables' keys and compares the
    // largest whole.
    let capped = bounded.drain(None).await.expect("drain");
    assert_eq!(capped.changes("public.t"), Some(&TableChanges::Whole));
    assert_eq!(capped.keys(), 1);

    let (report, unsettled) = touched::run(&config, &plan, &VerifyOptions::default(), &seen)
        .await
        .expect("touched verification");
    assert!(!report.clean, "{}", report.render());
    assert_eq!(report.drift_rows, 1, "{}", report.render());
    let t = report
        .tables
        .iter()
        .find(|r| r.table == "public.t")
        .unwrap();
    assert_eq!(t.drift.len(), 1, "{}", report.render());
    assert_eq!(t.drift[0].key, key(&["6"]));
    assert_eq!(t.source_rows, 6, "only the changed keys are compared");
    let mut compared: Vec<&str> = report.tables.iter().map(|r| r.table.as_str()).collect();
    compared.sort();
    assert_eq!(
        compared,
        ["public.log", "public.pairs", "public.t", "public.wiped"]
    );
    assert_eq!(unsettled.keys(), 0);
    tracker.close().await;
    bounded.close().await;
    stream.stop().await;
}

#[tokio::test]
async fn drift_before_the_fence_stops_cutover_with_nothing_fenced() {
    let pair = prepare("touched_stop", SCHEMA, "").await;
    let mut stream = Stream::start(&pair, &[]);
    catch_up(&pair, &mut stream).await;
    exec(
        &pair.target().await,
        "UPDATE t SET v = 'tampered' WHERE id = 42",
    )
    .await;

    let mut cmd = pair.walrelay();
    cmd.args(["cutover", "--fence", "--json", "--timeout", "20s"]);
    let run = harness::run(cmd).await;
    assert_eq!(run.code, Some(1), "{run}");
    let report: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(report["safe"], false, "{run}");
    assert_eq!(report["fenced"], false, "{run}");
    let reasons = report["reasons"].to_string();
    assert!(
        reasons.contains("before the fence") && reasons.contains("1 drifted row"),
        "{run}"
    );
    // The source still takes writes.
    exec(&pair.source().await, "INSERT INTO t VALUES (5000, 'after')").await;
    let slots = harness::value(
        &pair.source().await,
        &format!(
            "SELECT count(*) FROM pg_replication_slots WHERE slot_name LIKE '{}_cutover_%'",
            pair.slot
        ),
    )
    .await;
    assert_eq!(slots, "0", "the tracking slot should be gone");
    stream.stop().await;
}

#[tokio::test]
async fn untrackable_changes_fall_back_to_a_full_final_verification_and_say_so() {
    let pair = prepare("touched_fallback", SCHEMA, "").await;
    let mut stream = Stream::start(&pair, &[]);
    catch_up(&pair, &mut stream).await;
    // A writer keeps changing rows, so the tracking slot has changes to
    // decode, and decoding them needs the (here missing) publication. The
    // fence ends it: nothing may write after the marker for "safe".
    let writer = pair.source().await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writing = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                n += 1;
                let update = format!("UPDATE t SET v = 'w{n}' WHERE id = 1");
                if writer.batch_execute(&update).await.is_err() {
                    return;
                }
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
        })
    };

    let mut cmd = harness::walrelay();
    cmd.args([
        "--source",
        &pair.source_url,
        "--target",
        &pair.target_url,
        "--slot",
        &pair.slot,
        "--publication",
        "no_such_publication",
        "cutover",
        "--fence",
        "--json",
    ]);
    let run = harness::run(cmd).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    writing.await.unwrap();
    run.assert_success();
    let report: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(report["safe"], true, "{run}");
    assert_eq!(report["final_verify"], "full", "{run}");
    assert!(
        report["warnings"]
            .to_string()
            .contains("tracking changes failed"),
        "{run}"
    );
    assert!(report["rows_verified"].as_u64().unwrap() >= 100, "{run}");
    stream.stop().await;
}
