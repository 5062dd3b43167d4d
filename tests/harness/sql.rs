//! Connections and queries: connecting with readable errors, running SQL,
//! reading results as text, and comparing rows and schemas between the
//! source and the target.

use super::Client;

/// Connects (no TLS) and drives the connection on the current runtime.
pub async fn connect(url: &str) -> Client {
    try_connect(url)
        .await
        .unwrap_or_else(|e| panic!("connect to {}: {}", redact(url), error_text(&e)))
}

/// Like [`connect`], but returns the error.
pub async fn try_connect(url: &str) -> Result<Client, tokio_postgres::Error> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

/// The URL with its password replaced by `***`.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) => {
            let userinfo = &url[scheme + 3..at];
            match userinfo.find(':') {
                Some(colon) => format!(
                    "{}{}:***{}",
                    &url[..scheme + 3],
                    &userinfo[..colon],
                    &url[at..]
                ),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

/// An error with the server's message and detail, if any.
pub fn error_text(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!(
            "{}: {}{}",
            db.severity(),
            db.message(),
            db.detail().map(|d| format!(" ({d})")).unwrap_or_default()
        ),
        None => e.to_string(),
    }
}

/// Runs `sql` (simple protocol) and panics with the server message on error.
pub async fn exec(client: &Client, sql: &str) {
    client
        .batch_execute(sql)
        .await
        .unwrap_or_else(|e| panic!("{}\nin SQL:\n{sql}", error_text(&e)));
}

/// All rows of `sql` as text (simple protocol); NULL is `None`.
pub async fn rows(client: &Client, sql: &str) -> Vec<Vec<Option<String>>> {
    let messages = client
        .simple_query(sql)
        .await
        .unwrap_or_else(|e| panic!("{}\nin SQL:\n{sql}", error_text(&e)));
    messages
        .into_iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(row) => Some(
                (0..row.len())
                    .map(|i| row.get(i).map(str::to_string))
                    .collect(),
            ),
            _ => None,
        })
        .collect()
}

/// The first column of every row; NULL is `"<NULL>"`.
pub async fn column(client: &Client, sql: &str) -> Vec<String> {
    rows(client, sql)
        .await
        .into_iter()
        .map(|r| {
            r.into_iter()
                .next()
                .flatten()
                .unwrap_or_else(|| "<NULL>".into())
        })
        .collect()
}

/// The single value of a one-row, one-column query (`"<NULL>"` for NULL).
pub async fn value(client: &Client, sql: &str) -> String {
    let all = column(client, sql).await;
    assert_eq!(all.len(), 1, "expected one row from: {sql}\ngot {all:?}");
    all.into_iter().next().unwrap()
}

/// The same text output on both sides whatever the cluster defaults are.
pub async fn stable_session(client: &Client) {
    exec(
        client,
        "SET TimeZone = 'UTC'; SET DateStyle = 'ISO, YMD'; SET IntervalStyle = 'postgres'; \
         SET extra_float_digits = 3; SET bytea_output = 'hex'; SET lc_monetary = 'C'",
    )
    .await;
}

/// `md5(row::text)` of every row of `table`, ordered by `order_by`.
pub async fn row_hashes(client: &Client, table: &str, order_by: &str) -> Vec<String> {
    stable_session(client).await;
    column(
        client,
        &format!("SELECT md5(t::text) FROM {table} t ORDER BY {order_by}"),
    )
    .await
}

/// Asserts that `table` has the same rows on both sides (and at least
/// `min_rows`), comparing row by row.
pub async fn assert_same_rows(
    source: &Client,
    target: &Client,
    table: &str,
    order_by: &str,
    min_rows: usize,
) {
    let s = row_hashes(source, table, order_by).await;
    let t = row_hashes(target, table, order_by).await;
    assert!(
        s.len() >= min_rows,
        "{table}: the source has {} rows, the test expected at least {min_rows}",
        s.len()
    );
    if s != t {
        let first = s
            .iter()
            .zip(&t)
            .position(|(a, b)| a != b)
            .unwrap_or(s.len().min(t.len()));
        panic!(
            "{table}: source has {} rows, target {}; first difference at row {first} (ordered by {order_by})",
            s.len(),
            t.len()
        );
    }
}

/// Lines describing the user schema (outside pg_catalog, information_schema
/// and walrelay): columns, indexes, constraints, sequences, triggers, types.
pub async fn schema_fingerprint(client: &Client) -> Vec<String> {
    const NOT_OURS: &str = "('pg_catalog','information_schema','walrelay','pg_toast')";
    let queries = [
        format!(
            "SELECT format('column %s.%s.%s %s %s null=%s default=%s identity=%s/%s generated=%s/%s',
                table_schema, table_name, column_name, data_type, udt_name, is_nullable,
                column_default, is_identity, identity_generation, is_generated, generation_expression)
             FROM information_schema.columns WHERE table_schema NOT IN {NOT_OURS}
             ORDER BY table_schema, table_name, ordinal_position"
        ),
        format!(
            "SELECT format('index %s.%s %s %s', schemaname, tablename, indexname, indexdef)
             FROM pg_indexes WHERE schemaname NOT IN {NOT_OURS} ORDER BY 1"
        ),
        format!(
            "SELECT format('constraint %s %s %s %s', n.nspname,
                coalesce(c.conrelid::regclass::text, c.contypid::regtype::text), c.conname,
                pg_get_constraintdef(c.oid))
             FROM pg_constraint c JOIN pg_namespace n ON n.oid = c.connamespace
             WHERE n.nspname NOT IN {NOT_OURS} ORDER BY 1"
        ),
        format!(
            "SELECT format('sequence %s.%s %s start=%s min=%s max=%s inc=%s cycle=%s',
                sequence_schema, sequence_name, data_type, start_value, minimum_value,
                maximum_value, increment, cycle_option)
             FROM information_schema.sequences WHERE sequence_schema NOT IN {NOT_OURS} ORDER BY 1"
        ),
        format!(
            "SELECT format('trigger %s %s', tgname, pg_get_triggerdef(t.oid))
             FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
             JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE NOT t.tgisinternal AND n.nspname NOT IN {NOT_OURS} ORDER BY 1"
        ),
        format!(
            "SELECT format('type %s.%s %s %s %s', n.nspname, t.typname, t.typtype,
                (SELECT string_agg(e.enumlabel, ',' ORDER BY e.enumsortorder) FROM pg_enum e WHERE e.enumtypid = t.oid),
                CASE WHEN t.typtype = 'd' THEN format_type(t.typbasetype, t.typtypmod) || ' notnull=' || t.typnotnull END)
             FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
             WHERE t.typtype IN ('e', 'd') AND n.nspname NOT IN {NOT_OURS} ORDER BY 1"
        ),
        format!(
            "SELECT format('partition %s of %s: %s', c.oid::regclass, i.inhparent::regclass,
                pg_get_expr(c.relpartbound, c.oid))
             FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
             JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN {NOT_OURS} ORDER BY 1"
        ),
    ];
    let mut lines = Vec::new();
    for sql in &queries {
        lines.extend(column(client, sql).await);
    }
    lines
}
