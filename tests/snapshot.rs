//! `walrelay snapshot` against real clusters: many types, TOAST, partitions,
//! generated columns, constraints; table selection; `--schema skip`; a
//! SIGKILL mid-copy and the resume; bad input that must leave nothing
//! half-done.
//!
//! Each test has its own databases and slot; every target database holds
//! one snapshot, so `walrelay.tables` / `walrelay.chunks` are read whole.

mod harness;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use harness::{
    assert_same_rows, column, exec, pair, rows, schema_fingerprint, value, Client, Pair, Run,
};

/// `walrelay … snapshot ARGS`.
async fn snapshot(pair: &Pair, args: &[&str]) -> Run {
    let mut cmd = pair.walrelay();
    cmd.arg("snapshot").args(args);
    harness::run(cmd).await
}

/// Drops the pair's slot (snapshots leave it for `stream`), so the shared
/// source does not run out of slots.
async fn drop_slot(pair: &Pair) {
    let admin = pair.source_cluster().connect("postgres").await;
    exec(
        &admin,
        &format!(
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = '{}'",
            pair.slot
        ),
    )
    .await;
}

/// Whether the target has a `walrelay.snapshot` row for the pair's slot.
async fn snapshot_recorded(target: &Client, slot: &str) -> bool {
    if value(
        target,
        "SELECT to_regclass('walrelay.snapshot') IS NOT NULL",
    )
    .await
        != "t"
    {
        return false;
    }
    value(
        target,
        &format!("SELECT count(*) FROM walrelay.snapshot WHERE slot_name = '{slot}'"),
    )
    .await
        != "0"
}

/// After a failure before the copy: no slot, no publication, no state.
async fn assert_nothing_left(pair: &Pair, run: &Run) {
    assert!(
        !pair.slot_exists().await,
        "slot {} left on the source after:\n{run}",
        pair.slot
    );
    assert!(
        !pair.publication_exists().await,
        "publication {} left on the source after:\n{run}",
        pair.publication
    );
    assert!(
        !snapshot_recorded(&pair.target().await, &pair.slot).await,
        "a walrelay.snapshot row was recorded on the target after:\n{run}"
    );
}

fn assert_mentions(run: &Run, words: &[&str]) {
    let lower = run.stderr.to_lowercase();
    for word in words {
        assert!(
            lower.contains(&word.to_lowercase()),
            "stderr should mention {word:?}:\n{run}"
        );
    }
}

/// `schema.table` of every table (ordinary or partitioned) outside the
/// system schemas and `walrelay`.
async fn user_tables(client: &Client) -> Vec<String> {
    column(
        client,
        "SELECT n.nspname || '.' || c.relname FROM pg_class c
         JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE c.relkind IN ('r', 'p')
           AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'walrelay', 'pg_toast')
         ORDER BY 1",
    )
    .await
}

/// Row-by-row comparison of every user table of the source.
async fn assert_all_rows_equal(pair: &Pair) {
    let source = pair.source().await;
    let target = pair.target().await;
    for table in user_tables(&source).await {
        assert_same_rows(&source, &target, &table, "t::text", 0).await;
    }
}

/// Checks the state tables after a finished snapshot and returns the
/// consistent LSN: phase done, every table copied under exactly one
/// snapshot LSN (its chunks' too), row counts as on the source.
async fn assert_snapshot_done(pair: &Pair) -> String {
    let target = pair.target().await;
    let source = pair.source().await;
    let snap = rows(
        &target,
        &format!(
            "SELECT phase, consistent_lsn::text, finished_at IS NOT NULL
             FROM walrelay.snapshot WHERE slot_name = '{}'",
            pair.slot
        ),
    )
    .await;
    assert_eq!(snap.len(), 1, "walrelay.snapshot rows: {snap:?}");
    assert_eq!(snap[0][0].as_deref(), Some("done"), "{snap:?}");
    assert_eq!(snap[0][2].as_deref(), Some("t"), "finished_at: {snap:?}");
    let consistent = snap[0][1].clone().expect("consistent_lsn");

    let tables = rows(
        &target,
        "SELECT schema_name, table_name, state, rows_copied::text, chunks_total::text,
                chunks_done::text, snapshot_lsn::text
         FROM walrelay.tables ORDER BY 1, 2",
    )
    .await;
    assert!(!tables.is_empty(), "walrelay.tables is empty");
    for t in &tables {
        let name = format!("{}.{}", t[0].as_deref().unwrap(), t[1].as_deref().unwrap());
        assert_eq!(t[2].as_deref(), Some("copied"), "{name}: {t:?}");
        assert_eq!(t[4], t[5], "{name}: chunks_total vs chunks_done: {t:?}");
        let lsn = t[6]
            .clone()
            .unwrap_or_else(|| panic!("{name} has no snapshot_lsn"));
        let source_rows = value(&source, &format!("SELECT count(*) FROM {name}")).await;
        assert_eq!(
            t[3].as_deref(),
            Some(source_rows.as_str()),
            "{name}: rows_copied vs rows on the source"
        );
        let chunk_lsns = column(
            &target,
            &format!(
                "SELECT DISTINCT coalesce(snapshot_lsn::text, 'NULL') || ' ' || state
                 FROM walrelay.chunks WHERE schema_name = '{}' AND table_name = '{}'",
                t[0].as_deref().unwrap(),
                t[1].as_deref().unwrap()
            ),
        )
        .await;
        assert_eq!(
            chunk_lsns,
            vec![format!("{lsn} copied")],
            "{name}: every chunk copied under the table's snapshot_lsn"
        );
        let n_chunks = value(
            &target,
            &format!(
                "SELECT count(*) FROM walrelay.chunks WHERE schema_name = '{}' AND table_name = '{}'",
                t[0].as_deref().unwrap(),
                t[1].as_deref().unwrap()
            ),
        )
        .await;
        assert_eq!(
            Some(n_chunks.as_str()),
            t[4].as_deref(),
            "{name}: chunk rows"
        );
    }
    consistent
}

/// `schema.table` of the publication's tables on the source.
async fn publication_tables(pair: &Pair) -> BTreeSet<String> {
    column(
        &pair.source().await,
        &format!(
            "SELECT schemaname || '.' || tablename FROM pg_publication_tables WHERE pubname = '{}'",
            pair.publication
        ),
    )
    .await
    .into_iter()
    .collect()
}

/// `schema.table` listed in `walrelay.tables`.
async fn state_tables(target: &Client) -> BTreeSet<String> {
    column(
        target,
        "SELECT schema_name || '.' || table_name FROM walrelay.tables",
    )
    .await
    .into_iter()
    .collect()
}

const MANY_TYPES: &str = r#"
-- Burn type OIDs so that mood's OID on the source differs from the one the
-- target gives it (binary COPY of mood[] embeds the element type OID).
DO $$ BEGIN
    FOR i IN 1..30 LOOP
        EXECUTE format('CREATE TYPE burn_%s AS (a int)', i);
        EXECUTE format('DROP TYPE burn_%s', i);
    END LOOP;
END $$;
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy', 'ünïcode 😀');
CREATE DOMAIN posint AS integer CHECK (VALUE > 0);
CREATE SCHEMA app;
CREATE SEQUENCE app.invoice_no START 1000 INCREMENT 5;
SELECT nextval('app.invoice_no') FROM generate_series(1, 3);

CREATE TABLE app.customers (
    id serial PRIMARY KEY,
    email text NOT NULL UNIQUE,
    name text,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX customers_lower_email ON app.customers (lower(email));
-- Not idempotent: a trigger firing during the copy would change the rows.
CREATE FUNCTION app.mark() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN NEW.name := NEW.name || '!'; RETURN NEW; END $$;
CREATE TRIGGER customers_mark BEFORE INSERT ON app.customers
    FOR EACH ROW EXECUTE FUNCTION app.mark();
INSERT INTO app.customers (email, name, created_at)
SELECT 'user' || g || '@example.com',
       CASE WHEN g % 10 = 0 THEN NULL ELSE 'Name ' || g || ' ünï' END,
       '2024-01-01 00:00:00+00'::timestamptz + g * interval '1 hour'
FROM generate_series(1, 3000) g;

CREATE TABLE app.kinds (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    i int, b bigint, n numeric, f8 double precision, f4 real,
    t text, bt bytea, jb jsonb, js json,
    ia int[], ta text[], m mood, ma mood[], d posint,
    u uuid, ts timestamptz, tsn timestamp, dt date, iv interval,
    bo boolean, vc varchar(20), ch char(4),
    big text, bigb bytea,
    twice bigint GENERATED ALWAYS AS (i::bigint * 2) STORED,
    customer_id int REFERENCES app.customers (id),
    CONSTRAINT kinds_i_range CHECK (i IS NULL OR i > -1000000),
    CONSTRAINT kinds_vc_unique UNIQUE (vc)
);
ALTER TABLE app.kinds ALTER COLUMN big SET STORAGE EXTERNAL;
CREATE INDEX kinds_jb ON app.kinds USING gin (jb);
CREATE INDEX kinds_recent ON app.kinds (ts DESC) WHERE bo;
INSERT INTO app.kinds (i, b, n, f8, f4, t, bt, jb, js, ia, ta, m, ma, d, u, ts, tsn, dt, iv,
                       bo, vc, ch, big, bigb, customer_id)
SELECT g,
       g::bigint * 1000000007,
       CASE g % 5 WHEN 0 THEN 'NaN'::numeric WHEN 1 THEN g / 7.0 WHEN 2 THEN -g * 1e20
                  WHEN 3 THEN 'Infinity'::numeric ELSE '-Infinity'::numeric END,
       CASE g % 6 WHEN 0 THEN 'Infinity'::float8 WHEN 1 THEN '-Infinity'::float8
                  WHEN 2 THEN 'NaN'::float8 WHEN 3 THEN '-0'::float8 ELSE g / 3.0 END,
       (g / 7.0)::real,
       'text ' || g || E' ünïcødé 日本語 🐘 tab\there "quote" back\\slash\nnewline',
       decode(md5(g::text), 'hex') || '\x00ff'::bytea,
       jsonb_build_object('g', g, 'nested', jsonb_build_object('arr', jsonb_build_array(1, 'two', null)), 'ü', 'ñ'),
       ('{"b": 1,  "a": ' || g || ', "a": 2}')::json,
       ARRAY[g, -g, NULL],
       ARRAY['a', NULL, 'c,d', '"q"', 'ü'],
       (ARRAY['sad', 'ok', 'happy', 'ünïcode 😀']::mood[])[1 + g % 4],
       ARRAY['happy', 'sad', NULL]::mood[],
       g,
       md5(g::text)::uuid,
       '2024-03-01 12:00:00+00'::timestamptz + g * interval '17 minutes 3.25 seconds',
       '2024-03-01 12:00:00'::timestamp + g * interval '1 day',
       '2000-01-01'::date + g,
       make_interval(0, g % 13, 0, g % 31, g % 24, 0, g / 3.0),
       g % 2 = 0,
       'vc' || g,
       'ch',
       CASE WHEN g % 50 = 0 THEN repeat(md5(g::text), 400) END,
       CASE WHEN g % 100 = 0 THEN
           (SELECT decode(string_agg(md5(g::text || x), ''), 'hex') FROM generate_series(1, 700) x) END,
       1 + g % 3000
FROM generate_series(1, 1000) g;
INSERT INTO app.kinds (i) VALUES (NULL);
INSERT INTO app.kinds (i, ts, dt, tsn, n, f8) VALUES
    (-5, 'infinity', '-infinity', '0044-03-15 12:00:00 BC', 0.000000000000000000001, 1e308);

CREATE TABLE app.events (
    id bigint NOT NULL,
    at date NOT NULL,
    kind mood,
    payload jsonb,
    PRIMARY KEY (id, at)
) PARTITION BY RANGE (at);
CREATE TABLE app.events_2024 PARTITION OF app.events FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
CREATE TABLE app.events_2025 PARTITION OF app.events FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
CREATE TABLE app.events_other PARTITION OF app.events DEFAULT;
INSERT INTO app.events
SELECT g, '2023-06-01'::date + (g % 1000), (ARRAY['sad', 'happy']::mood[])[1 + g % 2],
       jsonb_build_object('n', g)
FROM generate_series(1, 3000) g;

CREATE TABLE public.plain (id int PRIMARY KEY, note text);
INSERT INTO public.plain SELECT g, 'note ' || g FROM generate_series(1, 10) g;
"#;

#[tokio::test]
async fn snapshot_copies_many_types_and_the_schema() {
    let pair = pair("snap_types").await;
    let source = pair.source().await;
    exec(&source, MANY_TYPES).await;
    // The big values really live in the TOAST table on the source.
    assert_ne!(
        value(
            &source,
            "SELECT pg_relation_size(reltoastrelid) FROM pg_class WHERE oid = 'app.kinds'::regclass"
        )
        .await,
        "0"
    );

    let run = snapshot(&pair, &["--jobs", "3", "--chunk-pages", "2"]).await;
    run.assert_success();

    let target = pair.target().await;
    for (table, order) in [
        ("app.customers", "id"),
        ("app.kinds", "id"),
        ("app.events", "id, at"),
        ("app.events_2024", "id, at"),
        ("app.events_2025", "id, at"),
        ("app.events_other", "id, at"),
        ("public.plain", "id"),
    ] {
        assert_same_rows(&source, &target, table, order, 1).await;
    }
    // The same values read through the text of single columns, in case a
    // row's text form hides a difference.
    for col in [
        "n::text",
        "f8::text",
        "bt::text",
        "js::text",
        "ma::text",
        "iv::text",
        "big",
        "bigb::text",
    ] {
        let sql = format!(
            "SELECT md5(string_agg(coalesce({col}, 'NULL'), ',' ORDER BY id)) FROM app.kinds"
        );
        harness::stable_session(&source).await;
        harness::stable_session(&target).await;
        assert_eq!(
            value(&source, &sql).await,
            value(&target, &sql).await,
            "{col}"
        );
    }
    let oid = "SELECT 'mood'::regtype::oid::text";
    assert_ne!(
        value(&source, oid).await,
        value(&target, oid).await,
        "the enum has the same OID on both sides: mood[] does not test OID independence"
    );
    assert_eq!(
        schema_fingerprint(&source).await,
        schema_fingerprint(&target).await,
        "the target's schema differs from the source's"
    );
    // Generated columns: identity stays GENERATED ALWAYS, the stored column
    // is generated on the target too.
    assert_eq!(
        value(
            &target,
            "SELECT attidentity::text || '/' || (SELECT attgenerated::text FROM pg_attribute
                 WHERE attrelid = 'app.kinds'::regclass AND attname = 'twice')
             FROM pg_attribute WHERE attrelid = 'app.kinds'::regclass AND attname = 'id'"
        )
        .await,
        "a/s"
    );
    // Foreign keys hold on the copied data and are enforced afterwards.
    let violation = target
        .batch_execute("INSERT INTO app.kinds (i, customer_id) VALUES (1, 999999)")
        .await;
    assert!(violation.is_err(), "the foreign key is not enforced");

    let consistent = assert_snapshot_done(&pair).await;
    assert!(!consistent.is_empty());
    let chunked = value(&target, "SELECT max(chunks_total) FROM walrelay.tables").await;
    assert!(
        chunked.parse::<i64>().unwrap() > 1,
        "--chunk-pages 2 should split app.customers/app.kinds into several chunks"
    );
    // Every source table is covered by the state (itself or its partition root).
    let recorded = state_tables(&target).await;
    let ordinary = column(
        &source,
        "SELECT n.nspname || '.' || c.relname FROM pg_class c
         JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE c.relkind = 'r' AND n.nspname IN ('app', 'public')",
    )
    .await;
    assert_eq!(ordinary.len(), 6, "{ordinary:?}");
    for table in ordinary {
        let root = if table.starts_with("app.events") {
            "app.events".to_string()
        } else {
            table.clone()
        };
        assert!(
            recorded.contains(&table) || recorded.contains(&root),
            "{table} is not in walrelay.tables: {recorded:?}"
        );
    }
    // The slot stays for `stream`, on pgoutput.
    let admin = pair.source_cluster().connect("postgres").await;
    assert_eq!(
        value(
            &admin,
            &format!(
                "SELECT plugin || ' ' || slot_type || ' ' || database FROM pg_replication_slots WHERE slot_name = '{}'",
                pair.slot
            )
        )
        .await,
        format!("pgoutput logical {}", pair.source_db)
    );
    drop_slot(&pair).await;
}

#[tokio::test]
async fn table_selection_decides_publication_and_copy() {
    let pair = pair("snap_select").await;
    let source = pair.source().await;
    exec(
        &source,
        "CREATE TABLE keep_a (id int PRIMARY KEY, v text);
         CREATE TABLE keep_b (id int PRIMARY KEY, v text);
         CREATE TABLE skip_me (id int PRIMARY KEY, v text);
         CREATE SCHEMA other;
         CREATE TABLE other.keep_c (id int PRIMARY KEY, v text);
         INSERT INTO keep_a SELECT g, 'a' || g FROM generate_series(1, 500) g;
         INSERT INTO keep_b SELECT g, 'b' || g FROM generate_series(1, 50) g;
         INSERT INTO skip_me SELECT g, 's' || g FROM generate_series(1, 50) g;
         INSERT INTO other.keep_c SELECT g, 'c' || g FROM generate_series(1, 50) g;",
    )
    .await;
    let run = snapshot(
        &pair,
        &[
            "--table",
            "public.*",
            "--exclude-table",
            "public.skip*",
            "--chunk-pages",
            "1",
        ],
    )
    .await;
    run.assert_success();
    let expected: BTreeSet<String> = ["public.keep_a", "public.keep_b"]
        .into_iter()
        .map(String::from)
        .collect();
    assert_eq!(publication_tables(&pair).await, expected);
    let target = pair.target().await;
    assert_eq!(state_tables(&target).await, expected);
    assert_same_rows(&source, &target, "keep_a", "id", 500).await;
    assert_same_rows(&source, &target, "keep_b", "id", 50).await;
    for table in ["public.skip_me", "other.keep_c"] {
        let exists = value(
            &target,
            &format!("SELECT to_regclass('{table}') IS NOT NULL"),
        )
        .await;
        if exists == "t" {
            assert_eq!(
                value(&target, &format!("SELECT count(*) FROM {table}")).await,
                "0",
                "{table} was not selected but its rows were copied"
            );
        }
    }
    assert_snapshot_done(&pair).await;

    // Running it again once done changes nothing (no duplicated rows).
    let again = snapshot(
        &pair,
        &["--table", "public.*", "--exclude-table", "public.skip*"],
    )
    .await;
    again.assert_success();
    assert_same_rows(&source, &target, "keep_a", "id", 500).await;
    assert_same_rows(&source, &target, "keep_b", "id", 50).await;
    drop_slot(&pair).await;
}

const SKIP_SCHEMA: &str =
    "CREATE TABLE accounts (id bigint PRIMARY KEY, name text NOT NULL, balance numeric(12, 2));
     CREATE TABLE notes (id int PRIMARY KEY, account_id bigint, body text);";

#[tokio::test]
async fn schema_skip_uses_matching_empty_target_tables() {
    let pair = pair("snap_skip").await;
    let source = pair.source().await;
    exec(&source, SKIP_SCHEMA).await;
    exec(
        &source,
        "INSERT INTO accounts SELECT g, 'acct ' || g, g * 1.5 FROM generate_series(1, 300) g;
         INSERT INTO notes SELECT g, g % 300 + 1, repeat('x', g % 50) FROM generate_series(1, 300) g;",
    )
    .await;
    let target = pair.target().await;
    exec(&target, SKIP_SCHEMA).await;
    let run = snapshot(&pair, &["--schema", "skip", "--chunk-pages", "1"]).await;
    run.assert_success();
    assert_same_rows(&source, &target, "accounts", "id", 300).await;
    assert_same_rows(&source, &target, "notes", "id", 300).await;
    assert_snapshot_done(&pair).await;
    drop_slot(&pair).await;
}

#[tokio::test]
async fn schema_skip_with_a_mismatching_column_fails_naming_it() {
    let pair = pair("snap_skip_bad").await;
    let source = pair.source().await;
    exec(&source, SKIP_SCHEMA).await;
    exec(
        &source,
        "INSERT INTO accounts SELECT g, 'acct ' || g, g FROM generate_series(1, 10) g;",
    )
    .await;
    let target = pair.target().await;
    exec(
        &target,
        "CREATE TABLE accounts (id bigint PRIMARY KEY, full_name text NOT NULL, balance numeric(12, 2));
         CREATE TABLE notes (id int PRIMARY KEY, account_id bigint, body text);",
    )
    .await;
    let run = snapshot(&pair, &["--schema", "skip"]).await;
    run.assert_failure();
    assert_mentions(&run, &["accounts", "name"]);
    assert_eq!(value(&target, "SELECT count(*) FROM accounts").await, "0");
    assert_nothing_left(&pair, &run).await;
}

#[tokio::test]
async fn sigkill_mid_copy_then_resume() {
    let pair = pair("snap_kill").await;
    let source = pair.source().await;
    exec(
        &source,
        "CREATE TABLE small_a (id int PRIMARY KEY, v text);
         CREATE TABLE small_b (id int PRIMARY KEY, v text);
         CREATE TABLE big_1 (id int PRIMARY KEY, pad text);
         CREATE TABLE big_2 (id int PRIMARY KEY, pad text);
         INSERT INTO small_a SELECT g, 'a' || g FROM generate_series(1, 20) g;
         INSERT INTO small_b SELECT g, 'b' || g FROM generate_series(1, 20) g;
         INSERT INTO big_1 SELECT g, repeat(md5(g::text), 3) FROM generate_series(1, 60000) g;
         INSERT INTO big_2 SELECT g, repeat(md5(g::text), 3) FROM generate_series(1, 60000) g;",
    )
    .await;
    let mut cmd = pair.walrelay();
    cmd.args(["snapshot", "--jobs", "1", "--chunk-pages", "2"]);
    let mut first = harness::spawn(cmd);
    let target = pair.target().await;

    // Kill once at least one table is fully copied and another is partly
    // copied (chunks from the first snapshot exist, but not all).
    let ready = harness::wait_for(
        Duration::from_secs(120),
        "a copied and a partly copied table",
        || {
            let target = &target;
            let exited = first.exited();
            async move {
                if exited {
                    return Some(false);
                }
                if value(target, "SELECT to_regclass('walrelay.tables') IS NOT NULL").await != "t" {
                    return None;
                }
                // Per the contract: `copied` tables, and tables with copied and
            // not yet copied chunks.
            let states = rows(
                target,
                "SELECT (SELECT count(*) FROM walrelay.tables WHERE state = 'copied'),
                        (SELECT count(*) FROM (
                            SELECT schema_name, table_name FROM walrelay.chunks
                            GROUP BY 1, 2
                            HAVING bool_or(state = 'copied') AND NOT bool_and(state = 'copied')) p)",
            )
            .await;
                let copied: i64 = states[0][0].as_deref().unwrap().parse().unwrap();
                let partial: i64 = states[0][1].as_deref().unwrap().parse().unwrap();
                (copied >= 1 && partial >= 1).then_some(true)
            }
        },
    )
    .await;
    let killed = first.kill().await;
    assert!(
        ready,
        "the first snapshot ended before it could be killed mid-copy (make the tables bigger):\n{killed}"
    );
    assert_eq!(killed.code, None, "not killed by a signal:\n{killed}");

    let consistent_before = value(
        &target,
        &format!(
            "SELECT consistent_lsn::text FROM walrelay.snapshot WHERE slot_name = '{}'",
            pair.slot
        ),
    )
    .await;
    let copied_before: BTreeMap<String, String> = rows(
        &target,
        "SELECT schema_name || '.' || table_name, snapshot_lsn::text FROM walrelay.tables
         WHERE state = 'copied'",
    )
    .await
    .into_iter()
    .map(|r| (r[0].clone().unwrap(), r[1].clone().unwrap_or_default()))
    .collect();
    assert!(!copied_before.is_empty());
    for (table, lsn) in &copied_before {
        assert_eq!(
            lsn, &consistent_before,
            "{table} was copied under the slot's snapshot"
        );
    }

    let second = snapshot(&pair, &["--jobs", "2", "--chunk-pages", "2"]).await;
    second.assert_success();
    assert_all_rows_equal(&pair).await;
    let consistent_after = assert_snapshot_done(&pair).await;
    assert_eq!(
        consistent_after, consistent_before,
        "walrelay.snapshot.consistent_lsn is the slot's and must not change on resume"
    );
    let after: BTreeMap<String, String> = rows(
        &target,
        "SELECT schema_name || '.' || table_name, snapshot_lsn::text FROM walrelay.tables",
    )
    .await
    .into_iter()
    .map(|r| (r[0].clone().unwrap(), r[1].clone().unwrap_or_default()))
    .collect();
    for (table, lsn) in &copied_before {
        assert_eq!(
            after.get(table),
            Some(lsn),
            "{table} was fully copied before the kill and must keep its snapshot_lsn"
        );
    }
    drop_slot(&pair).await;
}

#[tokio::test]
async fn unreachable_wrong_password_or_missing_database_leave_nothing() {
    let pair = pair("snap_conn").await;
    exec(
        &pair.source().await,
        "CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1);",
    )
    .await;
    let src = pair.source_cluster();
    let tgt = pair.target_cluster();
    let nobody = harness::free_port();
    let unreachable = |db: &str, password: &str| {
        format!("postgresql://postgres:{password}@127.0.0.1:{nobody}/{db}")
    };
    // Each case: the message must name the end (its word or its address)
    // and the reason.
    let src_end = |db: &str| vec!["source".to_string(), format!("/{db}")];
    let tgt_end = |db: &str| vec!["target".to_string(), format!("/{db}")];
    let refused = vec![nobody.to_string(), "refused".to_string()];
    let auth = vec!["password".to_string(), "authentication".to_string()];
    let missing = vec!["no_such_db".to_string()];
    let cases: Vec<(&str, String, String, Vec<Vec<String>>)> = vec![
        (
            "source unreachable",
            unreachable(&pair.source_db, &src.password),
            pair.target_url.clone(),
            vec![src_end(&pair.source_db), refused.clone()],
        ),
        (
            "source wrong password",
            src.url_as("postgres", "wrong-password", &pair.source_db),
            pair.target_url.clone(),
            vec![src_end(&pair.source_db), auth.clone()],
        ),
        (
            "source missing database",
            src.url("no_such_db"),
            pair.target_url.clone(),
            vec![src_end("no_such_db"), missing.clone()],
        ),
        (
            "target unreachable",
            pair.source_url.clone(),
            unreachable(&pair.target_db, &tgt.password),
            vec![tgt_end(&pair.target_db), refused],
        ),
        (
            "target wrong password",
            pair.source_url.clone(),
            tgt.url_as("postgres", "wrong-password", &pair.target_db),
            vec![tgt_end(&pair.target_db), auth],
        ),
        (
            "target missing database",
            pair.source_url.clone(),
            tgt.url("no_such_db"),
            vec![tgt_end("no_such_db"), missing],
        ),
    ];
    for (case, source_url, target_url, words) in cases {
        let mut cmd = harness::walrelay();
        cmd.args([
            "--source",
            &source_url,
            "--target",
            &target_url,
            "--slot",
            &pair.slot,
            "--publication",
            &pair.publication,
            "snapshot",
        ]);
        let run = harness::run(cmd).await;
        assert!(
            matches!(run.code, Some(c) if c != 0),
            "{case}: expected failure:\n{run}"
        );
        let stderr = run.stderr.to_lowercase();
        for group in &words {
            assert!(
                group.iter().any(|w| stderr.contains(&w.to_lowercase())),
                "{case}: stderr should mention one of {group:?}:\n{run}"
            );
        }
        assert!(
            !run.output().contains("wrong-password"),
            "{case}: the password was printed:\n{run}"
        );
        assert_nothing_left(&pair, &run).await;
    }
}

#[tokio::test]
async fn wal_level_replica_is_refused() {
    // The shared target cluster has wal_level=replica: use it as the source.
    let pair = pair("snap_wal_level").await;
    let tgt = pair.target_cluster();
    let as_source = pair.target().await;
    exec(
        &as_source,
        "CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1);",
    )
    .await;
    let other = tgt.create_database("snap_wal_level_t").await;
    let mut cmd = harness::walrelay();
    cmd.args([
        "--source",
        &pair.target_url,
        "--target",
        &tgt.url(&other),
        "--slot",
        &pair.slot,
        "--publication",
        &pair.publication,
        "snapshot",
    ]);
    let run = harness::run(cmd).await;
    run.assert_failure();
    assert_mentions(&run, &["wal_level", "logical"]);
    assert_eq!(
        value(
            &as_source,
            &format!(
                "SELECT count(*) FROM pg_publication WHERE pubname = '{}'",
                pair.publication
            )
        )
        .await,
        "0",
        "a publication was left behind:\n{run}"
    );
    assert!(!snapshot_recorded(&tgt.connect(&other).await, &pair.slot).await);
}

#[tokio::test]
async fn someone_elses_slot_is_refused_and_kept() {
    let pair = pair("snap_foreign_slot").await;
    let source = pair.source().await;
    exec(
        &source,
        "CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1);",
    )
    .await;
    exec(
        &source,
        &format!(
            "SELECT pg_create_logical_replication_slot('{}', 'pgoutput')",
            pair.slot
        ),
    )
    .await;
    let run = snapshot(&pair, &[]).await;
    run.assert_failure();
    assert_mentions(&run, &[&pair.slot]);
    let lower = run.stderr.to_lowercase();
    assert!(
        lower.contains("pg_drop_replication_slot") || lower.contains("--slot"),
        "the message should say how to clean up (drop the slot or pick another --slot):\n{run}"
    );
    assert!(
        pair.slot_exists().await,
        "walrelay dropped a slot that is not its own"
    );
    assert!(
        !pair.publication_exists().await,
        "publication left behind:\n{run}"
    );
    let target = pair.target().await;
    assert!(!snapshot_recorded(&target, &pair.slot).await);
    if value(&target, "SELECT to_regclass('public.t') IS NOT NULL").await == "t" {
        assert_eq!(
            value(&target, "SELECT count(*) FROM public.t").await,
            "0",
            "rows were copied:\n{run}"
        );
    }
    drop_slot(&pair).await;
}

#[tokio::test]
async fn target_tables_with_rows_are_refused() {
    for mode in ["skip", "copy"] {
        let pair = pair(&format!("snap_rows_{mode}")).await;
        let source = pair.source().await;
        exec(
            &source,
            "CREATE TABLE filled (id int PRIMARY KEY, v text);
             CREATE TABLE empty_one (id int PRIMARY KEY);
             INSERT INTO filled SELECT g, 'source ' || g FROM generate_series(1, 20) g;",
        )
        .await;
        let target = pair.target().await;
        // With --schema copy only `filled` exists on the target, so the
        // refusal has to be about it.
        let empty_one = if mode == "skip" {
            "CREATE TABLE empty_one (id int PRIMARY KEY);"
        } else {
            ""
        };
        exec(
            &target,
            &format!(
                "CREATE TABLE filled (id int PRIMARY KEY, v text); {empty_one}
                 INSERT INTO filled VALUES (1, 'already here');"
            ),
        )
        .await;
        let run = snapshot(&pair, &["--schema", mode]).await;
        assert!(
            matches!(run.code, Some(c) if c != 0),
            "--schema {mode}: expected a refusal:\n{run}"
        );
        assert_mentions(&run, &["filled"]);
        assert_eq!(
            column(&target, "SELECT id || ' ' || v FROM filled ORDER BY id").await,
            vec!["1 already here".to_string()],
            "--schema {mode}: the target's rows were touched:\n{run}"
        );
        assert_nothing_left(&pair, &run).await;
    }
}

/// The post-data step's progress watcher reads the target's index builds:
/// a CREATE INDEX on a few million rows is seen with its table and phase.
#[tokio::test]
async fn index_builds_in_progress_are_read_by_table_and_phase() {
    let pair = harness::pair("build_progress").await;
    let target = pair.target().await;
    exec(
        &target,
        "CREATE TABLE big (id int, note text);
         INSERT INTO big SELECT g, md5(g::text) FROM generate_series(1, 3000000) g;",
    )
    .await;
    let watcher = pair.target().await;
    let seen = tokio::spawn(async move {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while std::time::Instant::now() < deadline {
            let builds = walrelay::snapshot::build_progress::builds(&watcher)
                .await
                .expect("progress query");
            if let Some(b) = builds
                .into_iter()
                .find(|b| b.table == "public.big" && b.phase.starts_with("building index"))
            {
                return Some(b);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        None
    });
    exec(&target, "CREATE INDEX big_note_idx ON big (note)").await;
    let build = seen
        .await
        .unwrap()
        .expect("the index build was never seen in progress");
    assert!(
        build.blocks_total > 0 || build.tuples_total > 0,
        "{build:?}"
    );
    assert_eq!(
        build.index, None,
        "a non-concurrent build has no index OID yet"
    );
    assert!(
        walrelay::snapshot::build_progress::builds(&target)
            .await
            .expect("progress query")
            .is_empty(),
        "nothing is in progress once the build returned"
    );
}
