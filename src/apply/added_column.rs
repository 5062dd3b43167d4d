//! What the source's existing rows hold in a column it gained, for
//! `--auto-add-columns`.
//!
//! No change is streamed for rows that existed when a column was added, so
//! the target must add the column with the value those rows hold. The
//! catalog is read when the Relation message is applied, which can be long
//! after the ALTER, so the current default proves nothing: it may have been
//! set afterwards, and the stored value may be gone. What does prove it:
//! - `attmissingval`: a non-volatile default given with ADD COLUMN is stored
//!   as the value of every row that existed then (`atthasmissing`), and
//!   later SET/DROP DEFAULT leave it alone. A partitioned table never has it
//!   itself; its leaf partitions do, and must all agree.
//! - The rows themselves: a table rewrite (`VACUUM FULL`, `CLUSTER`) clears
//!   `atthasmissing` and stores the value in every row. When every row the
//!   source has now holds one value, that is what the rows that existed hold
//!   (rows changed since arrive as changes, deleted ones as deletes).
//!
//! Anything else is refused: the operator copies the values.

use tokio_postgres::Client;

use crate::pg::catalog::{quote_ident, quote_literal};

/// How a column the source gained is added on the target.
#[derive(Debug)]
pub(super) enum ColumnDefinition {
    /// Existing rows are reproduced by this addition.
    Reproducible(Addition),
    /// Existing rows hold values no single value reproduces, and the
    /// default is volatile (they got one value each in a rewrite).
    VolatileDefault,
    /// What existing rows hold cannot be proven.
    Unknown,
}

/// Add the column as `ty` holding `existing` in every existing row
/// (`None`: NULL), then give it the source's current `default` expression.
#[derive(Debug)]
pub(super) struct Addition {
    ty: String,
    existing: Option<String>,
    default: Option<String>,
}

impl Addition {
    /// The statements that add `column` to `table` (quoted, qualified).
    pub(super) fn statements(&self, table: &str, column: &str) -> String {
        let Addition {
            ty,
            existing,
            default,
        } = self;
        let column = quote_ident(column);
        let mut sql = format!("ALTER TABLE {table} ADD COLUMN {column} {ty}");
        if let Some(value) = existing {
            // Stored as the existing rows' value (atthasmissing) on the
            // target too: no rewrite.
            sql.push_str(&format!(" DEFAULT {}::{ty}", quote_literal(value)));
        }
        match (existing, default) {
            (_, Some(expr)) => {
                sql.push_str(&format!(
                    "; ALTER TABLE {table} ALTER COLUMN {column} SET DEFAULT {expr}"
                ));
            }
            (Some(_), None) => {
                sql.push_str(&format!(
                    "; ALTER TABLE {table} ALTER COLUMN {column} DROP DEFAULT"
                ));
            }
            (None, None) => {}
        }
        sql
    }
}

/// The column as the source has it now, over the partition tree's root
/// (where the target adds it). Text forms are those of the session the
/// caller set up (empty search_path, ISO dates).
const SOURCE_COLUMN_SQL: &str = r#"
WITH root AS (
    SELECT coalesce(pg_catalog.pg_partition_root(r), r) AS oid
    FROM (SELECT $1::text::regclass AS r) s
), leaves AS (
    SELECT la.atthasmissing,
           CASE WHEN la.atthasmissing THEN pg_catalog.array_to_string(la.attmissingval, '') END AS missing
    FROM root
    JOIN pg_catalog.pg_class rc ON rc.oid = root.oid
    JOIN pg_catalog.pg_class lc ON lc.oid = root.oid
        OR (rc.relkind = 'p' AND lc.relkind = 'r'
            AND lc.oid IN (SELECT relid FROM pg_catalog.pg_partition_tree(root.oid)))
    JOIN pg_catalog.pg_attribute la ON la.attrelid = lc.oid AND la.attname = $2 AND NOT la.attisdropped
    WHERE lc.relkind <> 'p'
)
SELECT pg_catalog.format_type(a.atttypid, a.atttypmod),
       pg_catalog.pg_get_expr(d.adbin, d.adrelid),
       EXISTS (SELECT 1
               FROM pg_catalog.regexp_matches(d.adbin::text, ':(?:op)?funcid (\d+)', 'g') m
               JOIN pg_catalog.pg_proc p ON p.oid = m[1]::oid
               WHERE p.provolatile = 'v'),
       c.relkind = 'p',
       pg_catalog.quote_ident(n.nspname) || '.' || pg_catalog.quote_ident(c.relname),
       (SELECT count(*) FROM leaves),
       (SELECT count(*) FROM leaves WHERE atthasmissing),
       (SELECT count(DISTINCT missing) FROM leaves),
       (SELECT min(missing) FROM leaves)
FROM root
JOIN pg_catalog.pg_class c ON c.oid = root.oid
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attname = $2
LEFT JOIN pg_catalog.pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
WHERE NOT a.attisdropped AND a.attgenerated = ''
"#;

/// Decides how `column` of `relation` (the source's quoted, qualified name
/// of the published table: a leaf, a root or a plain table) is added.
/// `None` when the source has no such plain column or cannot be read.
pub(super) async fn source_column_definition(
    source: &Client,
    relation: &str,
    column: &str,
) -> Option<ColumnDefinition> {
    let row = source
        .query_opt(SOURCE_COLUMN_SQL, &[&relation, &column])
        .await
        .ok()??;
    let ty: String = row.get(0);
    let default: Option<String> = row.get(1);
    let volatile: bool = row.get(2);
    let partitioned: bool = row.get(3);
    let root: String = row.get(4);
    let (leaves, with_missing, distinct): (i64, i64, i64) = (row.get(5), row.get(6), row.get(7));
    let missing: Option<String> = row.get(8);
    if leaves > 0 && with_missing == leaves && distinct == 1 {
        return Some(ColumnDefinition::Reproducible(Addition {
            ty,
            existing: missing,
            default,
        }));
    }
    if default.is_none() && with_missing == 0 {
        // Added without a default: the rows that existed read NULL. (A
        // default given with ADD COLUMN, then stored in every row by a
        // rewrite and dropped, looks the same; the catalog cannot tell them
        // apart, and scanning for it would refuse the common case of new
        // rows holding values.)
        return Some(ColumnDefinition::Reproducible(Addition {
            ty,
            existing: None,
            default,
        }));
    }
    match single_value(source, &root, partitioned, column).await {
        Some(existing) => Some(ColumnDefinition::Reproducible(Addition {
            ty,
            existing,
            default,
        })),
        None if volatile => Some(ColumnDefinition::VolatileDefault),
        None => Some(ColumnDefinition::Unknown),
    }
}

/// `Some(value)` when every row of `table` holds the same value of
/// `column` (`Some(None)`: all NULL, or no rows); one scan that stops at
/// the first row that differs.
async fn single_value(
    source: &Client,
    table: &str,
    partitioned: bool,
    column: &str,
) -> Option<Option<String>> {
    let only = if partitioned { "" } else { "ONLY " };
    let column = quote_ident(column);
    let sql = format!(
        "WITH first AS (SELECT t.{column}::text AS v FROM {only}{table} t LIMIT 1) \
         SELECT (SELECT v FROM first), \
                EXISTS (SELECT 1 FROM {only}{table} t \
                        WHERE t.{column}::text IS DISTINCT FROM (SELECT v FROM first))"
    );
    let row = source.query_one(&sql, &[]).await.ok()?;
    let differs: bool = row.get(1);
    (!differs).then(|| row.get(0))
}
