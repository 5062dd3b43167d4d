//! A snapshot is a consistent copy: many types, TOAST, partitions,
//! generated columns and constraints arrive as on the source, under one
//! snapshot LSN; `--table` / `--exclude-table` decide what is published and
//! copied, and a second run once done changes nothing.

use std::collections::BTreeSet;

use crate::harness::{
    self, assert_same_rows, column, exec, pair, schema_fingerprint, value, Client, Pair,
};
use crate::{assert_snapshot_done, drop_slot, snapshot};

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

#[tokio::test]
async fn zero_column_tables_are_copied_with_their_row_count() {
    let pair = pair("snap_zero_cols").await;
    let source = pair.source().await;
    // `nothing` has no column at all; `only_generated` has none the copy
    // writes. Both still have rows, and the target must hold as many.
    exec(
        &source,
        "CREATE TABLE nothing ();
         ALTER TABLE nothing REPLICA IDENTITY FULL;
         INSERT INTO nothing DEFAULT VALUES;
         INSERT INTO nothing DEFAULT VALUES;
         INSERT INTO nothing DEFAULT VALUES;
         CREATE TABLE only_generated (g int GENERATED ALWAYS AS (7) STORED);
         ALTER TABLE only_generated REPLICA IDENTITY FULL;
         INSERT INTO only_generated DEFAULT VALUES;
         INSERT INTO only_generated DEFAULT VALUES;",
    )
    .await;
    let run = snapshot(&pair, &[]).await;
    run.assert_success();
    let target = pair.target().await;
    assert_eq!(value(&target, "SELECT count(*) FROM nothing").await, "3");
    assert_eq!(
        value(
            &target,
            "SELECT count(*) || ' ' || sum(g) FROM only_generated"
        )
        .await,
        "2 14"
    );
    assert_snapshot_done(&pair).await;
    drop_slot(&pair).await;
}
