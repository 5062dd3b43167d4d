//! `walrelay verify` at its edges, against real clusters: inheritance
//! parents are compared and repaired by their own rows only; a chunk that
//! differs with no differing key is never clean; a target behind a stopped
//! stream is "behind", never drift, and `--repair` leaves it to the stream;
//! a LATIN1 source compares equal to its UTF8 copy.

use serde_json::Value;

use crate::harness::{self, exec, Pair, Run};
use crate::stream_support::{self, catch_up, drop_slot, prepare, Stream};
use crate::{drift, table, verify};

/// `walrelay verify ARGS` with the human report.
async fn verify_human(pair: &Pair, args: &[&str]) -> Run {
    let mut cmd = pair.walrelay();
    cmd.arg("verify").args(args);
    harness::run(cmd).await
}

fn verdict(run: &Run) -> String {
    run.stdout
        .lines()
        .find(|l| l.starts_with("verdict:"))
        .unwrap_or_else(|| panic!("no verdict line:\n{run}"))
        .to_string()
}

async fn count(client: &harness::Client, sql: &str) -> i64 {
    harness::value(client, sql).await.parse().unwrap()
}

#[tokio::test]
async fn inheritance_parents_are_verified_and_repaired_by_their_own_rows() {
    let pair = prepare(
        "verify_inherit",
        "CREATE TABLE base (id int PRIMARY KEY, v text);
         CREATE TABLE sub (extra int) INHERITS (base);
         ALTER TABLE sub ADD PRIMARY KEY (id);
         INSERT INTO base SELECT g, 'p' || g FROM generate_series(1, 100) g;
         INSERT INTO sub SELECT g, 'c' || g, g FROM generate_series(101, 200) g;",
        "",
    )
    .await;
    let target = pair.target().await;
    exec(
        &target,
        "UPDATE ONLY sub SET v = 'secret' WHERE id = 150; DELETE FROM ONLY sub WHERE id = 160;",
    )
    .await;
    let (run, report) = verify(&pair, &["--repair"]).await;
    assert_eq!(run.code, Some(1), "{run}");
    assert_eq!(drift(&report, "public.base"), vec![], "{report:#}");
    assert_eq!(
        drift(&report, "public.sub"),
        vec![
            ("150".to_string(), "different".to_string()),
            ("160".to_string(), "missing_on_target".to_string())
        ],
        "{report:#}"
    );
    // The parent keeps its own 100 rows: no child row was copied into it.
    assert_eq!(count(&target, "SELECT count(*) FROM ONLY base").await, 100);
    assert_eq!(count(&target, "SELECT count(*) FROM ONLY sub").await, 100);
    let (run, report) = verify(&pair, &[]).await;
    assert_eq!(run.code, Some(0), "{run}");
    assert_eq!(report["clean"], true, "{report:#}");

    // A child's row copied into the parent (what the old repair did) is
    // drift of the parent, by key, and repaired away.
    exec(&target, "INSERT INTO base VALUES (150, 'c150')").await;
    let (run, report) = verify(&pair, &["--repair"]).await;
    assert_eq!(run.code, Some(1), "{run}");
    assert_eq!(
        drift(&report, "public.base"),
        vec![("150".to_string(), "extra_on_target".to_string())],
        "{report:#}"
    );
    assert_eq!(count(&target, "SELECT count(*) FROM ONLY base").await, 100);
    assert_eq!(count(&target, "SELECT count(*) FROM ONLY sub").await, 100);
    let (run, _) = verify(&pair, &[]).await;
    assert_eq!(run.code, Some(0), "{run}");
    drop_slot(&pair).await;
}

#[tokio::test]
async fn a_chunk_that_differs_with_no_differing_key_is_drift_with_its_range() {
    let pair = prepare(
        "verify_dupkey",
        "CREATE TABLE t (id int PRIMARY KEY, v text);
         INSERT INTO t SELECT g, 'v' || g FROM generate_series(1, 300) g;",
        "",
    )
    .await;
    // A duplicate of an identical row: every per-key hash matches, the
    // chunk's count does not.
    exec(
        &pair.target().await,
        "ALTER TABLE t DROP CONSTRAINT t_pkey; INSERT INTO t SELECT * FROM t WHERE id = 7;",
    )
    .await;
    let (run, report) = verify(&pair, &["--chunk-rows", "100"]).await;
    assert_eq!(run.code, Some(1), "{run}");
    assert_eq!(report["clean"], false, "{report:#}");
    let t = table(&report, "public.t");
    assert!(t["drift_rows"].as_u64().unwrap() >= 1, "{report:#}");
    let chunks = t["unresolved_chunks"]
        .as_array()
        .expect("unresolved_chunks");
    assert_eq!(chunks.len(), 1, "{report:#}");
    assert_eq!(chunks[0]["state"], "drift", "{report:#}");
    assert_eq!(chunks[0]["lower"], Value::Null, "{report:#}");
    assert_eq!(chunks[0]["upper"][0], "100", "{report:#}");
    let human = verify_human(&pair, &["--chunk-rows", "100"]).await;
    assert_eq!(human.code, Some(1), "{human}");
    assert!(
        human.stdout.contains("(start, 100]") && verdict(&human).contains("DRIFT"),
        "{human}"
    );
    drop_slot(&pair).await;
}

#[tokio::test]
async fn a_stopped_stream_leaves_the_target_behind_not_drifted() {
    let pair = prepare(
        "verify_behind",
        "CREATE TABLE t (id int PRIMARY KEY, v text);
         INSERT INTO t SELECT g, 'v' || g FROM generate_series(1, 1000) g;
         CREATE TABLE quiet (id int PRIMARY KEY, v text);
         INSERT INTO quiet SELECT g, 'q' || g FROM generate_series(1, 50) g;",
        "",
    )
    .await;
    let mut stream = Stream::start(&pair, &[]);
    catch_up(&pair, &mut stream).await;
    stream.stop().await;
    let source = pair.source().await;
    let target = pair.target().await;
    exec(
        &source,
        "UPDATE t SET v = 'new' WHERE id <= 5; INSERT INTO t VALUES (5000, 'x');
         DELETE FROM t WHERE id = 900;",
    )
    .await;

    let (run, report) = verify(&pair, &[]).await;
    assert_eq!(run.code, Some(1), "{run}");
    assert_eq!(report["clean"], false, "{report:#}");
    assert_eq!(report["drift_rows"], 0, "{report:#}");
    assert_eq!(drift(&report, "public.t"), vec![], "{report:#}");
    assert!(report["behind"].as_u64().unwrap() >= 1, "{report:#}");
    assert_eq!(table(&report, "public.quiet")["behind"], 0, "{report:#}");
    let human = verify_human(&pair, &[]).await;
    assert_eq!(human.code, Some(1), "{human}");
    let line = verdict(&human);
    assert!(
        line.contains("BEHIND") && !line.to_lowercase().contains("drift"),
        "{human}"
    );
    assert!(human.stdout.contains("start the stream"), "{human}");

    // Drift in a table the stream owes nothing is still drift, and is
    // repaired without a stream; the table it owes changes is left to it.
    exec(&target, "UPDATE quiet SET v = 'secret' WHERE id = 3").await;
    let (run, report) = verify(&pair, &["--repair"]).await;
    assert_eq!(run.code, Some(1), "{run}");
    assert_eq!(
        drift(&report, "public.quiet"),
        vec![("3".to_string(), "different".to_string())],
        "{report:#}"
    );
    assert_eq!(report["repaired"], 1, "{report:#}");
    assert_eq!(table(&report, "public.t")["drift_rows"], 0, "{report:#}");
    assert!(
        table(&report, "public.t")["notes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n.as_str().unwrap().contains("not repaired")),
        "{report:#}"
    );
    // Nothing was copied ahead of the stream.
    assert_eq!(
        count(&target, "SELECT count(*) FROM t WHERE id = 5000").await,
        0
    );

    let mut stream = Stream::start(&pair, &[]);
    catch_up(&pair, &mut stream).await;
    let (run, report) = verify(&pair, &[]).await;
    assert_eq!(run.code, Some(0), "{run}");
    assert_eq!(report["clean"], true, "{report:#}");
    assert!(stream.if_exited().await.is_none(), "the stream failed");
    stream.stop().await;
    drop_slot(&pair).await;
}

#[tokio::test]
async fn a_latin1_source_compares_equal_to_its_utf8_copy() {
    let pair = harness::pair("verify_latin1").await;
    let admin = harness::shared().source.connect("postgres").await;
    exec(&admin, &format!("DROP DATABASE {}", pair.source_db)).await;
    exec(
        &admin,
        &format!(
            "CREATE DATABASE {} ENCODING 'LATIN1' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0",
            pair.source_db
        ),
    )
    .await;
    stream_support::setup(
        &pair,
        "CREATE TABLE t (id int PRIMARY KEY, v text, c char(8), vc varchar(20), j jsonb, a text[]);
         INSERT INTO t SELECT g, 'café ' || g, 'naïve', 'Ärger ' || g, jsonb_build_object('k', 'é' || g),
                              ARRAY['ß', 'x' || g]
         FROM generate_series(1, 300) g;
         INSERT INTO t VALUES (1000, 'plain', 'ascii', 'x', '{}', '{}');",
        "",
    )
    .await;
    let target = pair.target().await;
    assert_eq!(
        harness::value(&target, "SHOW server_encoding").await,
        "UTF8"
    );
    let (run, report) = verify(&pair, &["--chunk-rows", "100"]).await;
    assert_eq!(run.code, Some(0), "{run}");
    assert_eq!(report["clean"], true, "{report:#}");

    // Still a comparison: a changed character is found by key.
    exec(&target, "UPDATE t SET v = 'cafe 7' WHERE id = 7").await;
    let (run, report) = verify(&pair, &["--chunk-rows", "100"]).await;
    assert_eq!(run.code, Some(1), "{run}");
    assert_eq!(
        drift(&report, "public.t"),
        vec![("7".to_string(), "different".to_string())],
        "{report:#}"
    );

    let mut cmd = pair.walrelay();
    cmd.arg("check");
    let check = harness::run(cmd).await;
    assert!(
        check.output().contains("LATIN1") && check.output().contains("UTF8"),
        "check names the encodings:\n{check}"
    );
    drop_slot(&pair).await;
}
