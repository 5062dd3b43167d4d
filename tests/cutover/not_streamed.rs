//! What the stream cannot carry is never left behind silently: an unlogged
//! table (its changes are not in the WAL) is copied by the snapshot and
//! again by a fenced cutover, and an unfenced cutover with one is not safe;
//! materialized views are refreshed on the target after the snapshot and
//! at cutover (a view read by another first); `check`, `verify` and the
//! cutover report name both.

use crate::harness::{self, column, exec, value};
use crate::stream_support::{catch_up, drop_slot, snapshot, Stream};
use crate::{cutover, json, unfence};

const SCHEMA: &str = "
CREATE TABLE orders (id int PRIMARY KEY, customer int NOT NULL, amount numeric(10,2) NOT NULL);
CREATE UNLOGGED TABLE sessions (id int PRIMARY KEY, token text);
INSERT INTO orders SELECT g, g % 20, g * 0.5 FROM generate_series(1, 400) g;
INSERT INTO sessions SELECT g, 't' || g FROM generate_series(1, 50) g;
CREATE MATERIALIZED VIEW totals AS
    SELECT customer, count(*) AS n, sum(amount) AS total FROM orders GROUP BY customer;
CREATE VIEW busy AS SELECT customer FROM totals WHERE n >= 20;
CREATE MATERIALIZED VIEW top_customers AS SELECT customer FROM busy;
CREATE MATERIALIZED VIEW never_filled AS SELECT 1 AS x WITH NO DATA;
";

const TOTALS: &str = "SELECT customer || ' ' || n || ' ' || total FROM totals ORDER BY customer";
const TOTALS_NOW: &str = "SELECT customer || ' ' || count(*) || ' ' || sum(amount) \
     FROM orders GROUP BY customer ORDER BY customer";

#[tokio::test]
async fn unlogged_tables_and_materialized_views_are_said_copied_and_refreshed() {
    let pair = harness::pair("cut_unlogged").await;
    exec(&pair.source().await, SCHEMA).await;
    let mut cmd = pair.walrelay();
    cmd.arg("check");
    let check = harness::run(cmd).await;
    let said = check.output().to_lowercase();
    for word in [
        "public.sessions",
        "unlogged",
        "set logged",
        "public.totals",
        "materialized view",
        "refreshed",
        "public.never_filled",
    ] {
        assert!(
            said.contains(word),
            "check should mention {word:?}:\n{check}"
        );
    }

    snapshot(&pair, &[]).await;
    let (source, target) = (pair.source().await, pair.target().await);
    // After the snapshot: the unlogged table's rows, the views computed.
    assert_eq!(value(&target, "SELECT count(*) FROM sessions").await, "50");
    assert_eq!(
        column(&target, TOTALS).await,
        column(&source, TOTALS_NOW).await
    );
    assert_eq!(
        value(&target, "SELECT count(*) FROM top_customers").await,
        "20"
    );
    assert_eq!(
        value(
            &target,
            "SELECT relispopulated FROM pg_class WHERE relname = 'never_filled'"
        )
        .await,
        "f",
        "a view not populated on the source stays so"
    );

    let mut stream = Stream::start(&pair, &[]);
    exec(
        &source,
        "INSERT INTO orders SELECT g, 100 + g % 3, 1 FROM generate_series(401, 460) g;
         DELETE FROM orders WHERE customer = 7;
         INSERT INTO sessions SELECT g, 'late' FROM generate_series(51, 80) g;
         DELETE FROM sessions WHERE id <= 5;",
    )
    .await;
    catch_up(&pair, &mut stream).await;

    let mut cmd = pair.walrelay();
    cmd.arg("verify");
    let verify = harness::run(cmd).await;
    verify.assert_success();
    for word in [
        "not compared",
        "public.sessions",
        "unlogged table",
        "public.totals",
        "materialized view",
    ] {
        assert!(
            verify.stdout.contains(word),
            "verify should mention {word:?}:\n{verify}"
        );
    }

    // Without the fence the unlogged table cannot be proven current.
    let unfenced = harness::run(cutover(&pair, &["--json"])).await;
    let report = json(&unfenced);
    assert_eq!(report["safe"], false, "{unfenced}");
    let reasons = report["reasons"].to_string();
    assert!(
        reasons.contains("public.sessions") && reasons.contains("--fence"),
        "{unfenced}"
    );

    let fenced = harness::run(cutover(&pair, &["--fence", "--json"])).await;
    let report = json(&fenced);
    assert_eq!(report["safe"], true, "{fenced}");
    assert_eq!(
        report["unlogged_copied"],
        serde_json::json!(["public.sessions"]),
        "{fenced}"
    );
    assert_eq!(
        report["matviews_refreshed"],
        serde_json::json!(["public.totals", "public.top_customers"]),
        "{fenced}"
    );
    assert!(report["matview_refresh_seconds"].is_f64(), "{fenced}");
    unfence(&pair).await;

    let (source, target) = (pair.source().await, pair.target().await);
    assert_eq!(
        column(&target, TOTALS).await,
        column(&source, TOTALS_NOW).await
    );
    assert_eq!(
        value(&target, "SELECT count(*) FROM top_customers").await,
        "22"
    );
    let sessions = "SELECT id || ' ' || token FROM sessions ORDER BY id";
    assert_eq!(
        column(&target, sessions).await,
        column(&source, sessions).await
    );
    stream.stop().await.assert_success();
    drop_slot(&pair).await;
}
