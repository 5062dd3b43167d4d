//! `walrelay verify` against real clusters: drift injected on the target is
//! found with its exact keys (changed value, deleted row, extra row, TOASTed
//! value, NULL versus '', composite key, key-less table), `--repair` makes
//! the next pass clean, servers with different DateStyle/TimeZone/
//! extra_float_digits defaults agree, and three passes while a pgbench-like
//! writer runs at full speed and the stream applies report no drift.
//!
//! One test binary: the edges (inheritance parents, a chunk differing with
//! no differing key, a target behind a stopped stream, encodings) are in
//! `edges`, key-less tables in `keyless`; the report helpers they share are
//! here.

#[path = "../harness/mod.rs"]
mod harness;
#[path = "../stream_support/mod.rs"]
mod stream_support;

mod edges;
mod keyless;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use harness::{exec, Pair, Run};
use serde_json::Value;
use stream_support::{catch_up, drop_slot, prepare, Rng, Stream};

/// `walrelay verify ARGS --json`, its exit code and parsed report.
async fn verify(pair: &Pair, args: &[&str]) -> (Run, Value) {
    let mut cmd = pair.walrelay();
    cmd.arg("verify").arg("--json").args(args);
    let run = harness::run(cmd).await;
    let report: Value = serde_json::from_str(&run.stdout)
        .unwrap_or_else(|e| panic!("verify did not print a JSON report ({e}):\n{run}"));
    (run, report)
}

fn table<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["tables"]
        .as_array()
        .expect("tables")
        .iter()
        .find(|t| t["table"] == name)
        .unwrap_or_else(|| panic!("no table {name} in {report:#}"))
}

/// `(key joined by ',', kind)` of every drifted key of a table, sorted.
fn drift(report: &Value, name: &str) -> Vec<(String, String)> {
    let mut keys: Vec<(String, String)> = table(report, name)["drift"]
        .as_array()
        .expect("drift")
        .iter()
        .map(|d| {
            let key: Vec<&str> = d["key"]
                .as_array()
                .unwrap()
                .iter()
                .map(|k| k.as_str().unwrap())
                .collect();
            (key.join(","), d["kind"].as_str().unwrap().to_string())
        })
        .collect();
    keys.sort();
    keys
}

fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = items
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    v.sort();
    v
}

const DRIFT_SCHEMA: &str = r#"
CREATE TABLE items (id int PRIMARY KEY, v text, n numeric(12,2), t timestamptz, big text);
INSERT INTO items SELECT g, 'v' || g, g * 1.5, '2024-01-01'::timestamptz + g * interval '1 hour',
    CASE WHEN g % 500 = 7 THEN (SELECT string_agg(md5(g::text || i::text), '') FROM generate_series(1, 400) i) END
FROM generate_series(1, 5000) g;
CREATE TABLE comp (a int, b text, v text, PRIMARY KEY (a, b));
INSERT INTO comp SELECT g / 10, 'k' || (g % 10), 'c' || g FROM generate_series(0, 2999) g;
CREATE TABLE nullish (id int PRIMARY KEY, s text);
INSERT INTO nullish VALUES (1, ''), (2, NULL), (3, 'x');
CREATE TABLE nokey (x int, y text);
ALTER TABLE nokey REPLICA IDENTITY FULL;
INSERT INTO nokey SELECT g, 'y' || g FROM generate_series(1, 100) g;
"#;

#[tokio::test]
async fn injected_drift_is_found_by_key_and_repaired() {
    let pair = prepare("verify_drift", DRIFT_SCHEMA, "").await;
    let (run, report) = verify(&pair, &["--chunk-rows", "2000"]).await;
    run.assert_success();
    assert_eq!(report["clean"], true, "{report:#}");
    assert_eq!(table(&report, "public.items")["chunks"], 3, "{report:#}");
    assert_eq!(table(&report, "public.nokey")["basis"]["by"], "fingerprint");

    let target = pair.target().await;
    // Row 4007's `big` is stored out of line (TOAST) on the target.
    let toast = harness::value(
        &target,
        "SELECT reltoastrelid::regclass::text FROM pg_class WHERE oid = 'items'::regclass",
    )
    .await;
    let chunks = harness::value(&target, &format!("SELECT count(*) FROM {toast}")).await;
    assert_ne!(chunks, "0", "items.big should be TOASTed out of line");
    exec(
        &target,
        "UPDATE items SET v = 'secret-changed' WHERE id = 10;
         DELETE FROM items WHERE id = 2020;
         INSERT INTO items VALUES (100000, 'secret-extra', 1, now(), NULL);
         UPDATE items SET big = big || 'x' WHERE id = 4007;
         UPDATE nullish SET s = NULL WHERE id = 1;
         UPDATE nullish SET s = '' WHERE id = 2;
         UPDATE comp SET v = 'secret-z' WHERE a = 3 AND b = 'k3';
         INSERT INTO nokey VALUES (1, 'y1');",
    )
    .await;
    let (run, report) = verify(&pair, &["--chunk-rows", "2000"]).await;
    assert_eq!(run.code, Some(1), "drift must exit 1:\n{run}");
    assert!(!run.output().contains("secret"), "values leaked:\n{run}");
    assert_eq!(
        drift(&report, "public.items"),
        pairs(&[
            ("10", "different"),
            ("2020", "missing_on_target"),
            ("100000", "extra_on_target"),
            ("4007", "different"),
        ])
    );
    assert_eq!(
        drift(&report, "public.nullish"),
        pairs(&[("1", "different"), ("2", "different")])
    );
    assert_eq!(
        drift(&report, "public.comp"),
        pairs(&[("3,k3", "different")])
    );
    assert!(
        table(&report, "public.nokey")["drift_rows"]
            .as_u64()
            .unwrap()
            >= 1
    );

    // The human report names keys, never values.
    let mut cmd = pair.walrelay();
    cmd.args(["verify", "--exclude-table", "public.nokey"]);
    let human = harness::run(cmd).await;
    assert_eq!(human.code, Some(1), "{human}");
    assert!(
        human.stdout.contains("(3, k3)") && !human.output().contains("secret"),
        "{human}"
    );

    let mut cmd = pair.walrelay();
    cmd.args(["verify", "--repair", "--exclude-table", "public.nokey"]);
    let repaired = harness::run(cmd).await;
    assert_eq!(repaired.code, Some(1), "{repaired}");
    let (run, report) = verify(&pair, &["--exclude-table", "public.nokey"]).await;
    run.assert_success();
    assert_eq!(report["drift_rows"], 0, "{report:#}");
    harness::assert_same_rows(&pair.source().await, &target, "items", "id", 5000).await;
    drop_slot(&pair).await;
}

#[tokio::test]
async fn different_server_settings_do_not_look_like_drift() {
    let pair = harness::pair("verify_settings").await;
    exec(
        &pair.source().await,
        &format!(
            "ALTER DATABASE {} SET DateStyle = 'German, DMY'; ALTER DATABASE {} SET TimeZone = 'Asia/Tokyo';
             ALTER DATABASE {} SET extra_float_digits = 0; ALTER DATABASE {} SET IntervalStyle = 'iso_8601';",
            pair.source_db, pair.source_db, pair.source_db, pair.source_db
        ),
    )
    .await;
    exec(
        &pair.target().await,
        &format!(
            "ALTER DATABASE {} SET DateStyle = 'SQL, MDY'; ALTER DATABASE {} SET TimeZone = 'America/New_York';
             ALTER DATABASE {} SET extra_float_digits = -3; ALTER DATABASE {} SET IntervalStyle = 'sql_standard';",
            pair.target_db, pair.target_db, pair.target_db, pair.target_db
        ),
    )
    .await;
    stream_support::setup(
        &pair,
        "CREATE TABLE m (id int PRIMARY KEY, ts timestamptz, d date, t timestamp, f float8, r real, i interval, b bytea,
                         c char(10), v varchar(20), n smallint, j jsonb);
         INSERT INTO m SELECT g, '2024-03-01 12:34:56.789+02'::timestamptz + g * interval '17 minutes',
             '2024-02-28'::date + g, '2024-02-28 01:02:03'::timestamp + g * interval '1 second',
             1.0 / (g + 3), (1.0 / (g + 7))::real, g * interval '1 day 3 hours 7 seconds', int4send(g),
             'c' || g, 'v' || g, g % 300, jsonb_build_object('g', g, 'f', 1.0 / g)
         FROM generate_series(1, 3000) g;",
        "",
    )
    .await;
    // Types that differ but hold the same values: widened integers, varchar
    // become text, char(n) become text (its text form drops the padding).
    exec(
        &pair.target().await,
        "ALTER TABLE m ALTER COLUMN n TYPE bigint, ALTER COLUMN v TYPE text, ALTER COLUMN c TYPE text",
    )
    .await;
    let (run, report) = verify(&pair, &["--chunk-rows", "700"]).await;
    assert_eq!(report["drift_rows"], 0, "{report:#}");
    // The changed types are widenings that keep every value (as
    // `--schema skip` accepts them): listed, neither schema differences nor
    // drift.
    assert_eq!(report["schema"].as_array().unwrap().len(), 0, "{report:#}");
    assert_eq!(
        report["widened_columns"].as_array().unwrap().len(),
        3,
        "{report:#}"
    );
    assert_eq!(run.code, Some(0), "{run}");
    drop_slot(&pair).await;
}

const PGBENCH_SCHEMA: &str = r#"
CREATE TABLE pgbench_branches (bid int PRIMARY KEY, bbalance int, filler char(88));
CREATE TABLE pgbench_tellers (tid int PRIMARY KEY, bid int, tbalance int, filler char(84));
CREATE TABLE pgbench_accounts (aid int PRIMARY KEY, bid int, abalance int, filler char(84));
CREATE TABLE pgbench_history (tid int, bid int, aid int, delta int, mtime timestamp, filler char(22));
ALTER TABLE pgbench_history REPLICA IDENTITY FULL;
INSERT INTO pgbench_branches SELECT g, 0, '' FROM generate_series(1, 2) g;
INSERT INTO pgbench_tellers SELECT g, 1 + (g - 1) / 10, 0, '' FROM generate_series(1, 20) g;
INSERT INTO pgbench_accounts SELECT g, 1 + (g - 1) / 10000, 0, '' FROM generate_series(1, 20000) g;
CREATE TABLE quiet (id int PRIMARY KEY, v text);
INSERT INTO quiet SELECT g, 'q' || g FROM generate_series(1, 100) g;
"#;

/// pgbench's TPC-B-like transaction in a loop until `stop`.
async fn writer(url: String, seed: u64, stop: Arc<AtomicBool>, done: Arc<AtomicU64>) {
    let client = harness::connect(&url).await;
    let mut rng = Rng::new(seed);
    while !stop.load(Ordering::Relaxed) {
        let (aid, tid, bid) = (rng.range(1, 20000), rng.range(1, 20), rng.range(1, 2));
        let delta = rng.range(0, 10000) as i64 - 5000;
        let sql = format!(
            "BEGIN;
             UPDATE pgbench_accounts SET abalance = abalance + {delta} WHERE aid = {aid};
             SELECT abalance FROM pgbench_accounts WHERE aid = {aid};
             UPDATE pgbench_tellers SET tbalance = tbalance + {delta} WHERE tid = {tid};
             UPDATE pgbench_branches SET bbalance = bbalance + {delta} WHERE bid = {bid};
             INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES ({tid}, {bid}, {aid}, {delta}, now());
             COMMIT;"
        );
        if client.batch_execute(&sql).await.is_err() {
            let _ = client.batch_execute("ROLLBACK").await;
            continue;
        }
        done.fetch_add(1, Ordering::Relaxed);
    }
}

#[tokio::test]
async fn no_false_drift_while_a_writer_runs_and_the_stream_applies() {
    let pair = prepare("verify_load", PGBENCH_SCHEMA, "").await;
    let mut stream = Stream::start(&pair, &["--heartbeat-interval", "1s"]);
    catch_up(&pair, &mut stream).await;
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let writers: Vec<_> = (0..1)
        .map(|i| {
            tokio::spawn(writer(
                pair.source_url.clone(),
                stream_support::seed() + i,
                Arc::clone(&stop),
                Arc::clone(&done),
            ))
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    for pass in 1..=3 {
        let before = done.load(Ordering::Relaxed);
        let started = std::time::Instant::now();
        let (run, report) = verify(&pair, &["--chunk-rows", "5000"]).await;
        let during = done.load(Ordering::Relaxed) - before;
        // VERIFY_TEST_DUMP=1 (with WALRELAY_LOG=walrelay::verify=debug) shows where a pass spends its time.
        if std::env::var_os("VERIFY_TEST_DUMP").is_some() {
            eprintln!("{}", run.stderr);
        }
        assert_eq!(
            run.code,
            Some(0),
            "pass {pass} ({during} writer transactions during it):\n{run}"
        );
        assert_eq!(report["drift_rows"], 0, "pass {pass}: {report:#}");
        assert_eq!(report["streaming"], true, "pass {pass}: {report:#}");
        assert!(during > 0, "the writer made no progress during pass {pass}");
        eprintln!(
            "pass {pass}: {:.1}s, {during} writer transactions, {} chunks, {} re-checked chunks",
            started.elapsed().as_secs_f64(),
            report["chunks"],
            report["tables"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t["chunks_rechecked"].as_u64().unwrap())
                .sum::<u64>()
        );
    }

    // Drift on a table the writer leaves alone, found and repaired while
    // the writer and the stream run; later source changes land on top.
    exec(
        &pair.target().await,
        "UPDATE quiet SET v = 'secret' WHERE id = 5; DELETE FROM quiet WHERE id = 6;
         INSERT INTO quiet VALUES (1000, 'secret');",
    )
    .await;
    let (run, report) = verify(&pair, &["--table", "public.quiet", "--repair"]).await;
    assert_eq!(run.code, Some(1), "{run}");
    assert_eq!(
        drift(&report, "public.quiet"),
        pairs(&[
            ("5", "different"),
            ("6", "missing_on_target"),
            ("1000", "extra_on_target")
        ])
    );
    assert_eq!(report["repaired"], 3, "{report:#}");
    exec(
        &pair.source().await,
        "UPDATE quiet SET v = 'after' WHERE id IN (5, 6); DELETE FROM quiet WHERE id = 7;",
    )
    .await;
    let (run, report) = verify(&pair, &["--table", "public.quiet"]).await;
    assert_eq!(run.code, Some(0), "{run}");
    assert_eq!(report["drift_rows"], 0, "{report:#}");

    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.await.unwrap();
    }
    catch_up(&pair, &mut stream).await;
    stream.stop().await;
    drop_slot(&pair).await;
}

#[tokio::test]
async fn drift_is_confirmed_while_the_stream_runs_on_an_idle_source() {
    let pair = prepare(
        "verify_idle",
        "CREATE TABLE t (id int PRIMARY KEY, v text);
         INSERT INTO t SELECT g, 'v' || g FROM generate_series(1, 3000) g;",
        "",
    )
    .await;
    let mut stream = Stream::start(&pair, &[]);
    catch_up(&pair, &mut stream).await;
    exec(
        &pair.target().await,
        "UPDATE t SET v = 'secret' WHERE id = 1234",
    )
    .await;
    let started = std::time::Instant::now();
    let (run, report) = verify(&pair, &[]).await;
    eprintln!("verify with a drifted row took {:?}", started.elapsed());
    if std::env::var_os("VERIFY_TEST_DUMP").is_some() {
        eprintln!("{}", run.stderr);
    }
    assert_eq!(run.code, Some(1), "{run}");
    assert_eq!(report["streaming"], true, "{report:#}");
    assert_eq!(drift(&report, "public.t"), pairs(&[("1234", "different")]));
    stream.stop().await;
    drop_slot(&pair).await;
}

#[tokio::test]
async fn schema_differences_are_listed() {
    let pair = prepare(
        "verify_schema",
        "CREATE TABLE s (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, v text NOT NULL,
                         n int CHECK (n > 0), g int GENERATED ALWAYS AS (n * 2) STORED);
         CREATE INDEX s_v ON s (v);
         INSERT INTO s (v, n) SELECT 'v' || g, g FROM generate_series(1, 50) g;",
        "",
    )
    .await;
    let (run, report) = verify(&pair, &[]).await;
    run.assert_success();
    assert_eq!(report["schema"].as_array().unwrap().len(), 0, "{report:#}");
    exec(
        &pair.target().await,
        "DROP INDEX s_v; ALTER TABLE s ADD COLUMN extra text; ALTER TABLE s DROP CONSTRAINT s_n_check;
         ALTER TABLE s ALTER COLUMN v DROP NOT NULL;",
    )
    .await;
    let (run, report) = verify(&pair, &[]).await;
    assert_eq!(run.code, Some(1), "{run}");
    // Data still matches: a target-only column is left out of the hash.
    assert_eq!(report["drift_rows"], 0, "{report:#}");
    let mut found: Vec<String> = report["schema"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            format!(
                "{} {}",
                d["object"].as_str().unwrap(),
                d["name"].as_str().unwrap()
            )
        })
        .collect();
    found.sort();
    assert_eq!(
        found,
        [
            "column extra",
            "column v",
            "constraint s_n_check",
            "index s_v"
        ],
        "{report:#}"
    );
    drop_slot(&pair).await;
}

#[tokio::test]
async fn a_null_key_on_the_target_is_an_error_not_a_crash() {
    let pair = prepare(
        "verify_null_key",
        "CREATE TABLE k (id int PRIMARY KEY, v text);
         INSERT INTO k SELECT g, 'v' || g FROM generate_series(1, 20) g;",
        "",
    )
    .await;
    // A target without the key's NOT NULL can hold a row no key names.
    exec(
        &pair.target().await,
        "ALTER TABLE k DROP CONSTRAINT k_pkey; ALTER TABLE k ALTER COLUMN id DROP NOT NULL;
         INSERT INTO k VALUES (NULL, 'orphan');",
    )
    .await;
    let mut cmd = pair.walrelay();
    cmd.args(["verify", "--json"]);
    let run = harness::run(cmd).await;
    assert!(
        !run.output().contains("panicked"),
        "verify must not crash:\n{run}"
    );
    assert_ne!(run.code, Some(0), "{run}");
    assert!(
        run.stderr.contains("public.k") && run.stderr.contains("NULL"),
        "the error names the table and the NULL key:\n{run}"
    );
    drop_slot(&pair).await;
}

/// `verify --table` matching no table refuses as `snapshot` does instead of
/// calling nothing "clean"; the quoted form `check`'s fix lines print
/// (`"public"."Items"`) selects exactly that table.
#[tokio::test]
async fn a_selection_matching_nothing_is_refused_and_quoted_names_select() {
    let pair = prepare(
        "verify_selection",
        "CREATE TABLE \"Items\" (id int PRIMARY KEY, v text);
         INSERT INTO \"Items\" SELECT g, 'v' || g FROM generate_series(1, 20) g;",
        "",
    )
    .await;
    let mut cmd = pair.walrelay();
    cmd.args(["verify", "--table", "public.no_such_table"]);
    let run = harness::run(cmd).await;
    run.assert_failure();
    assert!(
        run.stderr.contains("no table matches the selection"),
        "{run}"
    );
    assert!(!run.output().contains("clean"), "{run}");
    let (run, report) = verify(&pair, &["--table", "\"public\".\"Items\""]).await;
    run.assert_success();
    assert_eq!(
        table(&report, "public.Items")["source_rows"],
        20,
        "{report:#}"
    );
    drop_slot(&pair).await;
}
