//! The event trigger on the source that puts each DDL command into the
//! change stream: a transactional logical message (prefix
//! [`super::PREFIX`]) emitted at `ddl_command_end` (the object as the
//! catalog holds it after the command) and at `sql_drop` (what the command
//! dropped, which `ddl_command_end` can no longer see). Being transactional,
//! the message is decoded inside its transaction, at its place among the
//! row changes.
//!
//! The functions live in the source's `walrelay` schema (which the schema
//! copy leaves out) and run as whoever runs the DDL: they only read the
//! catalog and call `pg_logical_emit_message`, which any role may. Creating
//! an event trigger needs a superuser on vanilla PostgreSQL (Supabase allows
//! it through supautils, Amazon RDS to `rds_superuser`); without the
//! privilege the stream falls back to comparing Relation messages.
//! A failure to describe a command never fails the user's DDL: an `error`
//! message is emitted instead, which stops the stream naming the command.
//! The message itself is emitted outside that exception block: a message
//! emitted inside a subtransaction is decoded after the transaction's later
//! row changes (observed on PostgreSQL 16), not at its place.

use tokio_postgres::error::SqlState;
use tokio_postgres::Client;

use crate::pg::connect::error_text;

/// The names `cleanup` drops.
pub(crate) const END_TRIGGER: &str = "walrelay_ddl_end";
pub(crate) const DROP_TRIGGER: &str = "walrelay_ddl_drop";

/// The table shape: every column as `format_type`/`pg_get_expr` write them
/// under an empty search_path (qualified names, as the target's session
/// writes its own), and what the rows that existed before an added column
/// hold in it (`attmissingval`; for a partitioned table, its leaves' one
/// common value: a parent never stores it).
const FUNCTIONS: &str = r#"
CREATE SCHEMA IF NOT EXISTS walrelay;
GRANT USAGE ON SCHEMA walrelay TO PUBLIC;
CREATE OR REPLACE FUNCTION walrelay.ddl_describe(tag text, otype text, obj oid, ident text)
RETURNS text LANGUAGE sql STABLE
SET search_path = '' SET DateStyle = 'ISO' SET IntervalStyle = 'postgres' SET extra_float_digits = 3
AS $f$
SELECT json_build_object(
  'event', 'end', 'tag', tag, 'type', otype, 'identity', ident, 'oid', obj::bigint,
  'query', left(current_query(), 2000),
  'table', (
    SELECT json_build_object(
      'schema', n.nspname, 'name', c.relname, 'kind', c.relkind, 'persistence', c.relpersistence,
      'partition', c.relispartition,
      'columns', (
        SELECT coalesce(json_agg(json_build_object(
          'name', a.attname, 'num', a.attnum, 'type', format_type(a.atttypid, a.atttypmod),
          'not_null', a.attnotnull, 'default', pg_get_expr(d.adbin, d.adrelid),
          'generated', a.attgenerated, 'identity', a.attidentity,
          'has_missing', CASE WHEN c.relkind = 'p' THEN lv.n > 0 AND lv.n = lv.with_missing AND lv.distinct_values = 1
                              ELSE a.atthasmissing END,
          'missing', CASE WHEN c.relkind = 'p' THEN lv.value
                          WHEN a.atthasmissing THEN array_to_string(a.attmissingval, '') END
        ) ORDER BY a.attnum), '[]'::json)
        FROM pg_attribute a
        LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
        LEFT JOIN LATERAL (
          SELECT count(*) AS n, count(*) FILTER (WHERE la.atthasmissing) AS with_missing,
                 count(DISTINCT array_to_string(la.attmissingval, '')) AS distinct_values,
                 min(array_to_string(la.attmissingval, '')) AS value
          FROM pg_partition_tree(c.oid) pt
          JOIN pg_class lc ON lc.oid = pt.relid AND lc.relkind = 'r'
          JOIN pg_attribute la ON la.attrelid = lc.oid AND la.attname = a.attname AND NOT la.attisdropped
          WHERE c.relkind = 'p'
        ) lv ON true
        WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped)
    )
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE c.oid = obj AND otype IN ('table', 'table column')),
  'index', (
    SELECT json_build_object(
      'schema', n.nspname, 'name', ic.relname, 'table_schema', tn.nspname, 'table', tc.relname,
      'definition', pg_get_indexdef(i.indexrelid))
    FROM pg_index i
    JOIN pg_class ic ON ic.oid = i.indexrelid JOIN pg_namespace n ON n.oid = ic.relnamespace
    JOIN pg_class tc ON tc.oid = i.indrelid JOIN pg_namespace tn ON tn.oid = tc.relnamespace
    WHERE i.indexrelid = obj AND otype = 'index')
)::text
$f$;
CREATE OR REPLACE FUNCTION walrelay.ddl_command_end() RETURNS event_trigger LANGUAGE plpgsql
SET search_path = ''
AS $f$
DECLARE r record; payload text;
BEGIN
  FOR r IN SELECT * FROM pg_catalog.pg_event_trigger_ddl_commands() LOOP
    CONTINUE WHEN r.in_extension OR r.schema_name LIKE 'pg\_temp%';
    BEGIN
      payload := walrelay.ddl_describe(r.command_tag, r.object_type, r.objid, r.object_identity);
    EXCEPTION WHEN OTHERS THEN
      payload := pg_catalog.json_build_object('event', 'error', 'tag', r.command_tag, 'sqlstate', SQLSTATE)::text;
    END;
    PERFORM pg_catalog.pg_logical_emit_message(true, 'walrelay.ddl', payload);
  END LOOP;
END
$f$;
CREATE OR REPLACE FUNCTION walrelay.ddl_sql_drop() RETURNS event_trigger LANGUAGE plpgsql
SET search_path = ''
AS $f$
DECLARE payload text;
BEGIN
  BEGIN
    SELECT pg_catalog.json_build_object('event', 'drop', 'tag', tg_tag,
      'objects', coalesce(pg_catalog.json_agg(pg_catalog.json_build_object(
        'type', d.object_type, 'identity', d.object_identity, 'oid', d.objid::bigint,
        'address_names', d.address_names)), '[]'::json))::text
    INTO payload
    FROM pg_catalog.pg_event_trigger_dropped_objects() d
    WHERE d.original AND NOT d.is_temporary;
  EXCEPTION WHEN OTHERS THEN
    payload := pg_catalog.json_build_object('event', 'error', 'tag', tg_tag, 'sqlstate', SQLSTATE)::text;
  END;
  PERFORM pg_catalog.pg_logical_emit_message(true, 'walrelay.ddl', payload);
END
$f$;
"#;

/// Whether the trigger is in place after [`install`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Installed {
    Yes,
    /// Why not (the privilege is missing, or the server refused), for the log and `check`.
    No(String),
}

/// Installs (or refreshes) the functions and event triggers, in one
/// transaction: nothing is left half-installed.
pub(crate) async fn install(source: &Client) -> Installed {
    let sql = format!(
        "BEGIN; {FUNCTIONS}
         DO $do$ BEGIN
           IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_event_trigger WHERE evtname = '{END_TRIGGER}') THEN
             CREATE EVENT TRIGGER {END_TRIGGER} ON ddl_command_end EXECUTE FUNCTION walrelay.ddl_command_end();
           END IF;
           IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_event_trigger WHERE evtname = '{DROP_TRIGGER}') THEN
             CREATE EVENT TRIGGER {DROP_TRIGGER} ON sql_drop EXECUTE FUNCTION walrelay.ddl_sql_drop();
           END IF;
         END $do$;
         COMMIT"
    );
    match source.batch_execute(&sql).await {
        Ok(()) => Installed::Yes,
        Err(err) => {
            let _ = source.batch_execute("ROLLBACK").await;
            Installed::No(why_not(&err))
        }
    }
}

fn why_not(err: &tokio_postgres::Error) -> String {
    if err.code() == Some(&SqlState::INSUFFICIENT_PRIVILEGE) {
        "creating an event trigger needs a superuser (on Supabase, supautils allows it to the postgres role; on Amazon RDS, rds_superuser)".into()
    } else {
        error_text(err)
    }
}

/// Whether both event triggers exist and are enabled (for `check`).
pub(crate) async fn present(source: &Client) -> Result<bool, tokio_postgres::Error> {
    let n: i64 = source
        .query_one(
            "SELECT count(*) FROM pg_catalog.pg_event_trigger \
             WHERE evtname IN ($1, $2) AND evtenabled <> 'D'",
            &[&END_TRIGGER, &DROP_TRIGGER],
        )
        .await?
        .get(0);
    Ok(n == 2)
}

/// Whether the connected role may create event triggers: a superuser, or
/// where a managed service lets a role do so (`check` says which).
pub(crate) async fn may_install(source: &Client) -> Result<bool, tokio_postgres::Error> {
    source
        .query_one(
            "SELECT rolsuper OR EXISTS (SELECT 1 FROM pg_catalog.pg_extension WHERE extname = 'supautils') \
                OR EXISTS (SELECT 1 FROM pg_catalog.pg_roles r WHERE r.rolname = 'rds_superuser' \
                           AND pg_has_role(current_user, r.oid, 'member')) \
             FROM pg_catalog.pg_roles WHERE rolname = current_user",
            &[],
        )
        .await
        .map(|row| row.get(0))
}

/// Drops the event triggers, then the functions (`walrelay cleanup`):
/// triggers first, so DDL on the source never finds a trigger without its
/// function.
pub(crate) const UNINSTALL: &str = "DROP EVENT TRIGGER IF EXISTS walrelay_ddl_end; \
     DROP EVENT TRIGGER IF EXISTS walrelay_ddl_drop; \
     DROP FUNCTION IF EXISTS walrelay.ddl_command_end(); \
     DROP FUNCTION IF EXISTS walrelay.ddl_sql_drop(); \
     DROP FUNCTION IF EXISTS walrelay.ddl_describe(text, text, oid, text)";
