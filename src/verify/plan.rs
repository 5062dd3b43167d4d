//! What is compared and in which pieces: the key a table is chunked by, the
//! columns hashed on both sides, and chunk boundaries walked along the key.
//!
//! Boundaries are taken from the source only and then applied to both sides
//! as the same key ranges (`lower < key <= upper`), so a row that exists on
//! one side only still falls into exactly one chunk. Each boundary is one
//! short index walk (`ORDER BY key LIMIT 1 OFFSET n-1`) in its own statement:
//! no snapshot is held between chunks.

use std::collections::HashMap;

use tokio_postgres::Client;

use crate::map::{Map, MappedTable, Mask};
use crate::pg::catalog::{self, quote_ident, Table};

use super::VerifyError;

/// A key column: its name and, per side, the type its text is cast to.
#[derive(Debug, Clone)]
pub(crate) struct KeyColumn {
    pub name: String,
    pub source_type: String,
    pub target_type: String,
}

/// How one table is compared.
#[derive(Debug, Clone)]
pub(crate) struct Shape {
    /// The source table's OID.
    pub oid: u32,
    /// `"schema"."name"` on the source.
    pub qualified: String,
    /// `"schema"."name"` on the target (the map's name; else `qualified`).
    pub target_qualified: String,
    /// A mapped table's source side as the target has it: a subquery
    /// (aliased `m`) giving the mapped columns under their target names,
    /// masks applied and only the rows the map's filter keeps.
    pub source_mapped: Option<String>,
    /// `schema.name` for reports.
    pub display: String,
    /// Primary key (or replica-identity index) columns in index order; empty
    /// for a table compared by one whole-table aggregate.
    pub key: Vec<KeyColumn>,
    /// Columns hashed on both sides, in source order, by their target
    /// names: present on both, not generated on either.
    pub columns: Vec<String>,
    /// Target column types by hashed column (for repair's casts).
    pub target_types: Vec<String>,
    /// Source column types by hashed column (the hash function is picked
    /// per side and type, see `hash`).
    pub source_types: Vec<String>,
    /// By hashed column: an integer type on both sides (hashed as a number,
    /// not through its text form).
    pub integer: Vec<bool>,
    /// The target's table is partitioned: its rows are its partitions', so
    /// it is read without `ONLY` there (as the apply writes it).
    pub target_partitioned: bool,
    /// The servers' encodings differ: text is hashed as its UTF8 bytes on
    /// both sides (see `hash`), not as the bytes each server stores.
    pub transcode: bool,
}

/// A key value: the text form of each key column. Keys are identifiers, the
/// one part of a row reports may name.
pub(crate) type Key = Vec<String>;

/// One chunk: rows with `lower < key <= upper` (`None`: unbounded).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Range {
    pub lower: Option<Key>,
    pub upper: Option<Key>,
}

/// The key each table is compared by: its primary key, else its
/// replica-identity index; columns in index order. `$1`: table OIDs.
const KEY_SQL: &str = r#"
WITH chosen AS (
    SELECT DISTINCT ON (indrelid) indrelid, indkey FROM pg_index
    WHERE indrelid = ANY($1::oid[]) AND indisvalid AND (indisprimary OR indisreplident)
    ORDER BY indrelid, indisprimary DESC)
SELECT c.indrelid, a.attname::text, format_type(a.atttypid, a.atttypmod)
FROM chosen c
JOIN LATERAL unnest(c.indkey) WITH ORDINALITY AS k(attnum, pos) ON true
JOIN pg_attribute a ON a.attrelid = c.indrelid AND a.attnum = k.attnum
ORDER BY c.indrelid, k.pos
"#;

/// The names of the columns a table is chunked and compared by (primary
/// key, else replica-identity index), in index order; empty without one.
/// Tables without a key are absent.
pub(crate) async fn key_columns(
    source: &Client,
    oids: &[u32],
) -> Result<HashMap<u32, Vec<String>>, VerifyError> {
    let rows = source
        .query(KEY_SQL, &[&oids])
        .await
        .map_err(VerifyError::sql("reading the keys"))?;
    let mut keys: HashMap<u32, Vec<String>> = HashMap::new();
    for row in rows {
        keys.entry(row.get(0)).or_default().push(row.get(1));
    }
    Ok(keys)
}

/// Builds the [`Shape`] of a source table against its target twin;
/// `None` when the target has no such table.
pub(crate) async fn shape(
    source: &Client,
    target: &Client,
    table: &Table,
    map: &Map,
) -> Result<Option<Shape>, VerifyError> {
    let mapped = MappedTable::new(table, map);
    let (target_schema, target_name) = mapped.target_name();
    let Some(target_columns) = catalog::table_columns(target, target_schema, target_name)
        .await
        .map_err(VerifyError::sql("reading target columns"))?
    else {
        return Ok(None);
    };
    let target_partitioned = target
        .query_one(
            "SELECT coalesce((SELECT relkind = 'p' FROM pg_class WHERE oid = to_regclass($1)), false)",
            &[&mapped.target_qualified()],
        )
        .await
        .map_err(VerifyError::sql("reading the target table's kind"))?
        .get(0);
    let transcode = encoding(source).await? != encoding(target).await?;
    let key_rows = source
        .query(KEY_SQL, &[&vec![table.oid]])
        .await
        .map_err(VerifyError::sql("reading the key"))?;
    let mut key = Vec::new();
    for row in key_rows {
        let source_name: String = row.get(1);
        // Key columns are never excluded (the map is refused otherwise).
        let name = match mapped.map {
            Some(m) => m.target_column(&source_name).unwrap_or(&source_name),
            None => &source_name,
        }
        .to_string();
        let Some(target_col) = target_columns.iter().find(|c| c.name == name) else {
            // The target lacks a key column: chunks cannot be matched; the
            // schema report names the column, the data is compared whole.
            key.clear();
            break;
        };
        key.push(KeyColumn {
            source_type: row.get(2),
            target_type: target_col.type_name.clone(),
            name,
        });
    }
    let mut columns = Vec::new();
    let mut target_types = Vec::new();
    let mut integer = Vec::new();
    let mut source_types = Vec::new();
    for form in mapped.columns() {
        match target_columns.iter().find(|c| c.name == form.target) {
            Some(t) if !t.generated => {
                // A hashed value is text, whatever the source type.
                let source_type = match form.mask {
                    Some(Mask::Hash) => "text".to_string(),
                    _ => form.source.type_name.clone(),
                };
                columns.push(form.target.to_string());
                integer.push(is_integer(&source_type) && is_integer(&t.type_name));
                source_types.push(source_type);
                target_types.push(t.type_name.clone());
            }
            Some(_) => {}
            // A source column the target lacks is a schema difference,
            // reported by `schema`; it is not hashed.
            None => {}
        }
    }
    let source_mapped = mapped.is_mapped().then(|| {
        let list: Vec<String> = mapped
            .columns()
            .iter()
            .map(|c| format!("{} AS {}", c.source_expr(), quote_ident(c.target)))
            .collect();
        format!(
            "(SELECT {} FROM ONLY {} WHERE true{})",
            list.join(", "),
            table.qualified(),
            mapped.and_filter()
        )
    });
    let display = if mapped.is_mapped() && mapped.target_name() != (&table.schema, &table.name) {
        format!("{} (as {})", table.display(), mapped.target_display())
    } else {
        table.display()
    };
    Ok(Some(Shape {
        oid: table.oid,
        qualified: table.qualified(),
        target_qualified: mapped.target_qualified(),
        source_mapped,
        display,
        key,
        columns,
        target_types,
        source_types,
        integer,
        target_partitioned,
        transcode,
    }))
}

async fn encoding(client: &Client) -> Result<String, VerifyError> {
    Ok(client
        .query_one("SELECT current_setting('server_encoding')", &[])
        .await
        .map_err(VerifyError::sql("reading the server encoding"))?
        .get(0))
}

/// `smallint`, `integer`, `bigint`: their hash functions agree across the
/// three types for equal values (hashint8 is built to match hashint4), so a
/// column widened on the target still compares equal.
fn is_integer(type_name: &str) -> bool {
    matches!(type_name, "smallint" | "integer" | "bigint")
}

/// Which side a statement runs on (key casts differ per side).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Side {
    Source,
    Target,
}

impl Shape {
    /// The table as read on `side`: `ONLY "schema"."name"`, so an
    /// inheritance parent's rows are its own, never its children's (each
    /// child is a selected table compared by itself, as the snapshot copies
    /// and the apply writes it). The source tables compared are never
    /// partitioned (partitions are compared leaf by leaf); a target table
    /// that is partitioned is read whole.
    pub(crate) fn relation(&self, side: Side) -> String {
        match (side, &self.source_mapped) {
            // A subquery in FROM needs an alias before PostgreSQL 16.
            (Side::Source, Some(_)) => self.relation_as(side, "m"),
            (Side::Source, None) => format!("ONLY {}", self.qualified),
            (Side::Target, _) if self.target_partitioned => self.target_qualified.clone(),
            (Side::Target, _) => format!("ONLY {}", self.target_qualified),
        }
    }

    /// [`Shape::relation`] under the alias `alias`.
    pub(crate) fn relation_as(&self, side: Side, alias: &str) -> String {
        match (side, &self.source_mapped) {
            (Side::Source, Some(mapped)) => format!("{mapped} {alias}"),
            _ => format!("{} {alias}", self.relation(side)),
        }
    }

    /// The table itself on `side`, for `LOCK TABLE`.
    pub(crate) fn table(&self, side: Side) -> &str {
        match side {
            Side::Source => &self.qualified,
            Side::Target => &self.target_qualified,
        }
    }

    /// The key in columns `first..` of `row` (read as text); an error when a
    /// key column is NULL, which only a target without the key's NOT NULL
    /// can hold.
    pub(crate) fn key_of(
        &self,
        row: &tokio_postgres::Row,
        first: usize,
    ) -> Result<Key, VerifyError> {
        (first..first + self.key.len())
            .map(|i| row.get::<_, Option<String>>(i))
            .collect::<Option<Key>>()
            .ok_or_else(|| VerifyError::NullKey {
                table: self.display.clone(),
                columns: self.key_list(),
            })
    }

    /// `"k1", "k2"`.
    pub(crate) fn key_list(&self) -> String {
        self.key
            .iter()
            .map(|k| quote_ident(&k.name))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// `"k1"::text, "k2"::text`.
    pub(crate) fn key_text_list(&self) -> String {
        self.key
            .iter()
            .map(|k| format!("{}::text", quote_ident(&k.name)))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// `($n::text::type, …)` for one key value starting at parameter `first`.
    pub(crate) fn key_params(&self, side: Side, first: usize) -> String {
        let parts: Vec<String> = self
            .key
            .iter()
            .enumerate()
            .map(|(i, k)| {
                let ty = match side {
                    Side::Source => &k.source_type,
                    Side::Target => &k.target_type,
                };
                format!("${}::text::{ty}", first + i)
            })
            .collect();
        format!("({})", parts.join(", "))
    }

    /// The WHERE clause of `range` (parameters from `$first`) and its values.
    pub(crate) fn range_predicate(
        &self,
        side: Side,
        range: &Range,
        first: usize,
    ) -> (String, Vec<String>) {
        let mut parts = Vec::new();
        let mut params = Vec::new();
        let keys = format!("({})", self.key_list());
        if let Some(lower) = &range.lower {
            parts.push(format!(
                "{keys} > {}",
                self.key_params(side, first + params.len())
            ));
            params.extend(lower.iter().cloned());
        }
        if let Some(upper) = &range.upper {
            parts.push(format!(
                "{keys} <= {}",
                self.key_params(side, first + params.len())
            ));
            params.extend(upper.iter().cloned());
        }
        if parts.is_empty() {
            ("true".into(), params)
        } else {
            (parts.join(" AND "), params)
        }
    }

    /// The key `offset` rows past the start of `range` (in key order) on
    /// `side`, or `None` when the range holds fewer rows.
    pub(crate) async fn key_at(
        &self,
        client: &Client,
        side: Side,
        range: &Range,
        offset: u64,
    ) -> Result<Option<Key>, VerifyError> {
        let (predicate, params) = self.range_predicate(side, range, 1);
        // Ordered by the table's columns (`t.k`), not by the text output
        // columns, which carry the same names.
        let order: Vec<String> = self
            .key
            .iter()
            .map(|k| format!("t.{}", quote_ident(&k.name)))
            .collect();
        let sql = format!(
            "SELECT {} FROM {} WHERE {predicate} ORDER BY {} LIMIT 1 OFFSET {offset}",
            self.key_text_list(),
            self.relation_as(side, "t"),
            order.join(", ")
        );
        let row = client
            .query_opt(&sql, &super::hash::params(&params))
            .await
            .map_err(VerifyError::sql("walking the key"))?;
        row.map(|row| self.key_of(&row, 0)).transpose()
    }
}

/// Walks chunk boundaries lazily: each call yields the next range of about
/// `chunk_rows` rows (the last one is open-ended).
pub(crate) struct Chunker {
    next_lower: Option<Key>,
    done: bool,
    chunk_rows: u64,
}

impl Chunker {
    pub(crate) fn new(chunk_rows: u64) -> Self {
        Chunker {
            next_lower: None,
            done: false,
            chunk_rows: chunk_rows.max(1),
        }
    }

    /// The next range, or `None` after the open-ended last one.
    pub(crate) async fn next(
        &mut self,
        shape: &Shape,
        source: &Client,
    ) -> Result<Option<Range>, VerifyError> {
        if self.done {
            return Ok(None);
        }
        let lower = self.next_lower.take();
        let probe = Range {
            lower: lower.clone(),
            upper: None,
        };
        let upper = shape
            .key_at(source, Side::Source, &probe, self.chunk_rows - 1)
            .await?;
        match &upper {
            Some(key) => self.next_lower = Some(key.clone()),
            None => self.done = true,
        }
        Ok(Some(Range { lower, upper }))
    }
}

/// A two-column-key shape whose key and columns differ in type per side,
/// for the SQL-building tests of `hash` and `touched`.
#[cfg(test)]
pub(crate) fn sample_shape() -> Shape {
    Shape {
        oid: 1,
        qualified: "\"s\".\"t\"".into(),
        target_qualified: "\"s\".\"t\"".into(),
        source_mapped: None,
        display: "s.t".into(),
        key: vec![
            KeyColumn {
                name: "a".into(),
                source_type: "integer".into(),
                target_type: "bigint".into(),
            },
            KeyColumn {
                name: "b".into(),
                source_type: "text".into(),
                target_type: "text".into(),
            },
        ],
        columns: vec!["a".into(), "b".into(), "c".into(), "d".into()],
        target_types: vec![
            "bigint".into(),
            "text".into(),
            "text".into(),
            "jsonb".into(),
        ],
        source_types: vec![
            "integer".into(),
            "text".into(),
            "character(4)".into(),
            "jsonb".into(),
        ],
        integer: vec![true, false, false, false],
        target_partitioned: false,
        transcode: false,
    }
}
