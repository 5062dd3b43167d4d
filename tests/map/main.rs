//! `--map`: a table renamed with a renamed column, an excluded column, a
//! row filter and masks, through snapshot, the stream under a writer,
//! verify (clean, then drift found by the mapped key and repaired) and
//! cutover; the map's mistakes refused before anything is created; a
//! PostgreSQL 14 source refused, then accepted with
//! `--allow-unfiltered-stream`.

#[path = "../harness/mod.rs"]
mod harness;
#[path = "../stream_support/mod.rs"]
mod stream_support;

mod ddl;
mod pg14;
mod refusals;
mod skip;

use std::path::PathBuf;
use std::time::Duration;

use harness::{exec, rows, Client, Pair};
use serde_json::Value;
use stream_support::{assert_not_mentioned, catch_up, Stream};

/// Emails and notes hold `secret` so that a leak into a log shows.
const SCHEMA: &str = "
CREATE TABLE dispatch_comment (id bigint PRIMARY KEY, text text NOT NULL,
    internal_note text NOT NULL, email text, author text);
INSERT INTO dispatch_comment
    SELECT g, 'comment ' || g, 'secret-note-' || g, 'secret' || g || '@example.com', 'a' || (g % 7)
    FROM generate_series(1, 300) g;
CREATE TABLE profiles (id bigint PRIMARY KEY, status text NOT NULL,
    insurance_info text NOT NULL, ssn text NOT NULL, deleted_at timestamptz);
ALTER TABLE profiles REPLICA IDENTITY FULL;
INSERT INTO profiles
    SELECT g, 's' || (g % 3), 'secret-ins-' || g, 'secret-ssn-' || g,
           CASE WHEN g % 4 = 0 THEN '2024-01-01'::timestamptz END
    FROM generate_series(1, 200) g;
CREATE TABLE plain (id int PRIMARY KEY, v text);
INSERT INTO plain SELECT g, 'p' || g FROM generate_series(1, 50) g;
";

/// Every key of the issue's shape, over two tables: a key-only filter
/// with an exclusion (identity by primary key), and a filter on a non-key
/// column with masks (REPLICA IDENTITY FULL, which PostgreSQL requires for
/// such a filter and which forbids exclusions).
const MAP: &str = r#"
[[table]]
source = "public.dispatch_comment"
target = "public.comments"
rename = { text = "content" }
exclude = ["internal_note"]
where = "id % 10 <> 0"
mask = { email = "hash" }

[[table]]
source = "public.profiles"
target = "archive.people"
rename = { status = "state" }
where = "deleted_at IS NULL"
mask = { ssn = "null", insurance_info = "hash" }
"#;

/// The mapped forms, computed on the source.
const SOURCE_COMMENTS: &str =
    "SELECT id::text, text, encode(sha256(convert_to(email, 'UTF8')), 'hex'), author \
     FROM dispatch_comment WHERE id % 10 <> 0 ORDER BY id";
const TARGET_COMMENTS: &str =
    "SELECT id::text, content, email, author FROM public.comments ORDER BY id";
const SOURCE_PEOPLE: &str = "SELECT id::text, status, encode(sha256(convert_to(insurance_info, 'UTF8')), 'hex'), NULL::text, deleted_at::text \
     FROM profiles WHERE deleted_at IS NULL ORDER BY id";
const TARGET_PEOPLE: &str =
    "SELECT id::text, state, insurance_info, ssn, deleted_at::text FROM archive.people ORDER BY id";

/// Writes `text` to a map file that lives as long as the returned guard.
fn map_file(text: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("map.toml");
    std::fs::write(&path, text).expect("map file");
    (dir, path)
}

fn with_map(pair: &Pair, map: &PathBuf, args: &[&str]) -> std::process::Command {
    let mut cmd = pair.walrelay();
    cmd.args(args).arg("--map").arg(map);
    cmd
}

async fn assert_mapped(source: &Client, target: &Client, when: &str) {
    for (src, tgt, min) in [
        (SOURCE_COMMENTS, TARGET_COMMENTS, 250),
        (SOURCE_PEOPLE, TARGET_PEOPLE, 100),
    ] {
        let want = rows(source, src).await;
        let got = rows(target, tgt).await;
        assert!(want.len() >= min, "{when}: only {} source rows", want.len());
        assert_eq!(got.len(), want.len(), "{when}: row counts differ for {tgt}");
        for (w, g) in want.iter().zip(&got) {
            assert_eq!(w, g, "{when}: {tgt} differs");
        }
    }
}

fn json(run: &harness::Run) -> Value {
    serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("not JSON ({e}):\n{run}"))
}

fn report_table<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["tables"]
        .as_array()
        .expect("tables")
        .iter()
        .find(|t| t["table"] == name)
        .unwrap_or_else(|| panic!("no table {name} in {report:#}"))
}

/// Inserts, updates (into and out of the filter) and deletes on both
/// mapped tables, in small transactions, for `rounds` rounds.
async fn write(source: &Client, rounds: i64) {
    for r in 0..rounds {
        let id = 1000 + r;
        exec(
            source,
            &format!(
                "BEGIN;
                 INSERT INTO dispatch_comment VALUES ({id}, 'new {id}', 'secret-n', 'secret{id}@x', 'w');
                 UPDATE dispatch_comment SET text = text || '+', email = 'secret-upd{r}@x' WHERE id = {};
                 DELETE FROM dispatch_comment WHERE id = {};
                 COMMIT;
                 BEGIN;
                 INSERT INTO profiles VALUES ({id}, 'new', 'secret-i', 'secret-s', NULL);
                 UPDATE profiles SET deleted_at = now() WHERE id = {};
                 UPDATE profiles SET deleted_at = NULL, status = 'back' WHERE id = {};
                 UPDATE profiles SET ssn = 'secret-ssn2', insurance_info = 'secret-ins2' WHERE id = {};
                 COMMIT;",
                1 + r,
                150 + r,
                1 + r * 4 + 1,
                4 + r * 4,
                3 + r * 4,
            ),
        )
        .await;
    }
}

#[tokio::test]
async fn a_map_with_every_key_holds_through_snapshot_stream_verify_and_cutover() {
    let pair = harness::pair("map_e2e").await;
    let source = pair.source().await;
    exec(&source, SCHEMA).await;
    let (_dir, map) = map_file(MAP);

    let snap = harness::run(with_map(&pair, &map, &["snapshot"])).await;
    snap.assert_success();
    assert_not_mentioned(&snap, &["secret"]);
    let target = pair.target().await;
    assert_mapped(&source, &target, "after the snapshot").await;
    let columns = harness::column(
        &target,
        "SELECT attname::text FROM pg_attribute WHERE attrelid = 'public.comments'::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
    )
    .await;
    assert_eq!(columns, ["id", "content", "email", "author"]);
    assert_eq!(
        harness::value(
            &target,
            "SELECT to_regclass('public.dispatch_comment') IS NULL"
        )
        .await,
        "t"
    );
    assert_eq!(
        harness::value(&target, "SELECT count(*) FROM plain").await,
        "50"
    );
    // Excluded columns and filtered rows stay on the source: the
    // publication carries the column list and the row filters.
    let published = rows(
        &source,
        &format!(
            "SELECT tablename::text, array_to_string(attnames, ','), rowfilter FROM pg_publication_tables \
             WHERE pubname = '{}' AND tablename IN ('dispatch_comment', 'profiles') ORDER BY 1",
            pair.publication
        ),
    )
    .await;
    assert_eq!(
        published[0][1].as_deref(),
        Some("id,text,email,author"),
        "{published:?}"
    );
    assert!(
        published[0][2].as_deref().unwrap_or("").contains("10"),
        "{published:?}"
    );
    assert!(
        published[1][2]
            .as_deref()
            .unwrap_or("")
            .contains("deleted_at"),
        "{published:?}"
    );

    let mut stream = Stream::start(&pair, &["--map", map.to_str().unwrap()]);
    let writer = {
        let url = pair.source_url.clone();
        tokio::spawn(async move { write(&harness::connect(&url).await, 30).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    writer.await.expect("writer");
    catch_up(&pair, &mut stream).await;
    assert_mapped(&source, &target, "after the stream").await;
    // A row that left the filter is gone, one that entered it is there.
    assert_eq!(
        harness::value(
            &target,
            "SELECT count(*) FROM archive.people WHERE id IN (2, 4)"
        )
        .await,
        "1"
    );

    let verify = harness::run(with_map(&pair, &map, &["verify", "--json"])).await;
    verify.assert_success();
    assert_eq!(json(&verify)["clean"], true, "{verify}");
    assert_not_mentioned(&verify, &["secret"]);

    // Drift on the target, found by the mapped key and repaired.
    exec(
        &target,
        "UPDATE public.comments SET content = 'drifted' WHERE id = 3;
         UPDATE archive.people SET insurance_info = 'x' WHERE id = 5;",
    )
    .await;
    let drifted = harness::run(with_map(&pair, &map, &["verify", "--json"])).await;
    assert_eq!(drifted.code, Some(1), "{drifted}");
    let report = json(&drifted);
    let keys = |name: &str| -> Vec<String> {
        report_table(&report, name)["drift"]
            .as_array()
            .expect("drift")
            .iter()
            .map(|d| d["key"][0].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(
        keys("public.dispatch_comment (as public.comments)"),
        ["3"],
        "{drifted}"
    );
    assert_eq!(
        keys("public.profiles (as archive.people)"),
        ["5"],
        "{drifted}"
    );
    assert_not_mentioned(&drifted, &["secret"]);
    let repaired = harness::run(with_map(&pair, &map, &["verify", "--repair", "--json"])).await;
    assert_not_mentioned(&repaired, &["secret"]);
    let clean = harness::run(with_map(&pair, &map, &["verify", "--json"])).await;
    clean.assert_success();
    assert_mapped(&source, &target, "after the repair").await;

    let cutover = harness::run(with_map(&pair, &map, &["cutover", "--fence", "--json"])).await;
    cutover.assert_success();
    assert_eq!(json(&cutover)["safe"], true, "{cutover}");
    harness::run(with_map(&pair, &map, &["cutover", "--unfence"]))
        .await
        .assert_success();
    let run = stream.stop().await;
    assert_not_mentioned(&run, &["secret"]);
}
