//! `--schema skip` into target columns the operator made wider: accepted
//! when every value keeps its text form (varchar(20) → text, int → bigint,
//! char(n) → text, numeric(p,s) → numeric(p',s)), copied, streamed and
//! verified clean; narrower or different ones are refused before anything
//! is created, every column named.

use crate::harness::{self, exec, pair};
use crate::stream_support::{assert_same, catch_up, Stream};
use crate::{assert_mentions, assert_nothing_left, assert_snapshot_done, drop_slot, snapshot};

const SOURCE: &str = "
CREATE TABLE widened (id int PRIMARY KEY, name varchar(20), code char(4), n int,
                      amount numeric(8,2), s smallint, tags varchar(10)[]);
INSERT INTO widened SELECT g, 'name ' || g, CASE WHEN g % 7 = 0 THEN NULL ELSE 'c' || (g % 100) END,
    CASE WHEN g % 11 = 0 THEN NULL ELSE g * 1000 END, g * 1.25, (g % 300)::smallint,
    ARRAY['t' || g, 'u']
FROM generate_series(1, 500) g;";

const TARGET: &str = "
CREATE TABLE widened (id bigint PRIMARY KEY, name text, code text, n bigint,
                      amount numeric(12,2), s integer, tags text[]);";

#[tokio::test]
async fn schema_skip_accepts_wider_columns_and_verify_is_clean() {
    let pair = pair("snap_widen").await;
    let source = pair.source().await;
    exec(&source, SOURCE).await;
    let target = pair.target().await;
    exec(&target, TARGET).await;
    let run = snapshot(&pair, &["--schema", "skip", "--chunk-pages", "1"]).await;
    run.assert_success();
    // Which widenings were accepted is said.
    assert_mentions(
        &run,
        &[
            "public.widened.name: character varying(20) → text",
            "public.widened.n: integer → bigint",
            "public.widened.code: character(4) → text",
        ],
    );
    assert_snapshot_done(&pair).await;
    assert_same(&pair, "widened", "id", 500).await;

    // The stream applies into the wider columns.
    let mut stream = Stream::start(&pair, &[]);
    exec(
        &source,
        "INSERT INTO widened SELECT g, 'late ' || g, 'z', 2147483647, 999999.99, 32767, ARRAY['v']
         FROM generate_series(501, 600) g;
         UPDATE widened SET name = 'updated', code = 'ab', n = -5 WHERE id % 10 = 3;
         DELETE FROM widened WHERE id % 25 = 0;",
    )
    .await;
    catch_up(&pair, &mut stream).await;
    assert_same(&pair, "widened", "id", 500).await;

    let mut cmd = pair.walrelay();
    cmd.arg("verify").arg("--json");
    let verify = harness::run(cmd).await;
    let report: serde_json::Value = serde_json::from_str(&verify.stdout)
        .unwrap_or_else(|e| panic!("verify should print JSON ({e}):\n{verify}"));
    assert_eq!(report["clean"], true, "{verify}");
    assert_eq!(verify.code, Some(0), "{verify}");
    let widened = report["widened_columns"].to_string();
    for column in ["widened.name", "widened.n", "widened.code", "widened.tags"] {
        assert!(widened.contains(column), "{column} in {widened}");
    }
    stream.stop().await.assert_success();
    drop_slot(&pair).await;
}

#[tokio::test]
async fn schema_skip_refuses_narrower_and_different_columns_naming_each() {
    let pair = pair("snap_narrow").await;
    let source = pair.source().await;
    exec(
        &source,
        "CREATE TABLE people (id int PRIMARY KEY, name text, big bigint, ok varchar(5));
         CREATE TABLE docs (id int PRIMARY KEY, note varchar(50), body json, ratio real);
         INSERT INTO people VALUES (1, 'a name longer than five', 5000000000, 'x');
         INSERT INTO docs VALUES (1, 'n', '{\"b\": 1, \"a\": 2}', 0.1);",
    )
    .await;
    let target = pair.target().await;
    exec(
        &target,
        "CREATE TABLE people (id int PRIMARY KEY, name varchar(5), big int, ok text);
         CREATE TABLE docs (id int PRIMARY KEY, note varchar(10), body jsonb, ratio double precision);",
    )
    .await;
    let run = snapshot(&pair, &["--schema", "skip"]).await;
    run.assert_failure();
    assert_mentions(
        &run,
        &[
            "public.people.name: text → character varying(5) (narrower",
            "public.people.big: bigint → integer (narrower",
            "public.docs.note: character varying(50) → character varying(10) (narrower",
            "public.docs.body: json → jsonb (different type",
            "public.docs.ratio: real → double precision (different type",
            "alter table",
            "nothing was created",
        ],
    );
    // The accepted widening is not listed as a problem.
    assert!(!run.stderr.contains("people.ok"), "{run}");
    assert_eq!(
        harness::value(&target, "SELECT count(*) FROM people").await,
        "0"
    );
    assert_nothing_left(&pair, &run).await;
}
