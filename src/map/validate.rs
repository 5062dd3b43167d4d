//! The map checked against the source catalog, before anything is created:
//! every error names its entry and says how to fix it.

use std::collections::BTreeSet;

use tokio_postgres::Client;

use super::{Map, Mask, TableMap};
use crate::pg::catalog::{quote_ident, Table};
use crate::pg::connect::error_text;

/// Why the map cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum MapError {
    #[error("cannot read map file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} is not a valid walrelay map: {message}")]
    Parse { path: String, message: String },
    #[error("map entry {entry}: {problem}")]
    Entry { entry: String, problem: String },
    #[error("map entries {entry} and {other} name the same source or target table; keep one entry per table")]
    Duplicate { entry: String, other: String },
    #[error("a PostgreSQL {major} source cannot keep excluded columns on the source (publication column lists need 15+): {columns} would reach walrelay over the wire; pass --allow-unfiltered-stream to accept that (walrelay drops them before the target), or upgrade the source")]
    Unfiltered { major: u32, columns: String },
    #[error("map entry {entry}: reading the source catalog: {message}")]
    Catalog { entry: String, message: String },
}

impl MapError {
    fn entry(table: &TableMap, problem: String) -> MapError {
        MapError::Entry {
            entry: table.display(),
            problem,
        }
    }
}

/// The replica identity columns of a table (with FULL, its primary key's,
/// which verify compares by) and whether it is a partition.
const IDENTITY_SQL: &str = "\
SELECT c.relispartition,
       ARRAY(SELECT a.attname::text FROM pg_catalog.pg_index i
             JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)
             WHERE i.indrelid = c.oid
               AND ((c.relreplident IN ('d', 'f') AND i.indisprimary) OR (c.relreplident = 'i' AND i.indisreplident)))
FROM pg_catalog.pg_class c WHERE c.oid = $1";

impl Map {
    /// Checks every entry against `tables` (the selected ones, as the
    /// source has them) and the source: the table is selected, every column
    /// it names exists, no key column is excluded or masked, no rename or
    /// table rename lands on a name already taken, a hash lands in a text
    /// column, and the row filter is a valid expression over the table.
    pub(crate) async fn validate(&self, tables: &[Table], source: &Client) -> Result<(), MapError> {
        for entry in &self.tables {
            let Some(table) = tables
                .iter()
                .find(|t| t.schema == entry.source.0 && t.name == entry.source.1)
            else {
                return Err(MapError::entry(entry, "no such table among the selected ones: it does not exist on the source or --table/--exclude-table leave it out".into()));
            };
            let taken = tables.iter().find(|t| {
                entry.renames_table() && t.schema == entry.target.0 && t.name == entry.target.1
            });
            if let Some(taken) = taken {
                return Err(MapError::entry(entry, format!("target {} is the name of another selected table; choose another target name or leave that table out", taken.display())));
            }
            let catalog = |e: tokio_postgres::Error| MapError::Catalog {
                entry: entry.display(),
                message: error_text(&e),
            };
            let row = source
                .query_one(IDENTITY_SQL, &[&table.oid])
                .await
                .map_err(catalog)?;
            let (partition, identity): (bool, Vec<String>) = (row.get(0), row.get(1));
            if table.kind == 'p' || partition {
                return Err(MapError::entry(entry, "partitioned tables and partitions cannot be mapped yet; leave it out of the map".into()));
            }
            check_columns(entry, table, &identity)?;
            if let Some(filter) = &entry.filter {
                check_filter(entry, table, filter, &identity, source).await?;
            }
        }
        Ok(())
    }
}

fn check_columns(entry: &TableMap, table: &Table, identity: &[String]) -> Result<(), MapError> {
    let exists = |c: &str| table.columns.iter().any(|col| col.name == c);
    let named = entry
        .rename
        .keys()
        .map(|c| ("rename", c))
        .chain(entry.exclude.iter().map(|c| ("exclude", c)))
        .chain(entry.mask.keys().map(|c| ("mask", c)));
    for (what, column) in named {
        if !exists(column) {
            return Err(MapError::entry(
                entry,
                format!("{what} names column {column}, which the source table does not have"),
            ));
        }
    }
    let full = table.replica_identity == 'f';
    for column in &entry.exclude {
        if identity.contains(column) {
            return Err(MapError::entry(entry, format!("column {column} is part of the key (primary key or replica identity) and cannot be excluded: the target could not tell rows apart")));
        }
        if full {
            return Err(MapError::entry(entry, format!("column {column} cannot be excluded from a table with REPLICA IDENTITY FULL: PostgreSQL refuses UPDATE and DELETE on the source when a publication's column list leaves out an identity column; give the table a primary key or REPLICA IDENTITY USING INDEX")));
        }
    }
    for (column, mask) in &entry.mask {
        if identity.contains(column) {
            return Err(MapError::entry(entry, format!("column {column} is part of the key (primary key or replica identity) and cannot be masked: rows would be matched by masked values")));
        }
        let col = table.columns.iter().find(|c| &c.name == column);
        if col.is_some_and(|c| c.generated) {
            return Err(MapError::entry(entry, format!("column {column} is generated: the target computes it, so it cannot be masked; exclude the columns it is computed from instead")));
        }
        if *mask == Mask::Hash && !col.is_some_and(|c| hashable(&c.type_name)) {
            let type_name = col.map_or("", |c| c.type_name.as_str());
            return Err(MapError::entry(entry, format!("column {column} is {type_name}: a hash mask (64 hex characters) needs a text, varchar (of at least 64) or citext column; use mask \"null\" or exclude it")));
        }
    }
    // Target names: what the target table will have.
    let mut names = BTreeSet::new();
    for col in &table.columns {
        if let Some(name) = entry.target_column(&col.name) {
            if !names.insert(name) {
                return Err(MapError::entry(entry, format!("column {} is renamed to {name}, which another column of the table keeps; rename that one too or choose another name", entry.source_of(name))));
            }
        }
    }
    Ok(())
}

/// Types whose text form is the value itself, and wide enough for 64 hex characters.
fn hashable(type_name: &str) -> bool {
    match type_name {
        "text" | "character varying" | "citext" => true,
        _ => type_name
            .strip_prefix("character varying(")
            .and_then(|rest| rest.strip_suffix(')'))
            .and_then(|n| n.parse::<u32>().ok())
            .is_some_and(|n| n >= 64),
    }
}

async fn check_filter(
    entry: &TableMap,
    table: &Table,
    filter: &str,
    identity: &[String],
    source: &Client,
) -> Result<(), MapError> {
    // The server parses it: a syntax error or an unknown column shows here,
    // before anything is created. LIMIT 0 reads nothing.
    let trial = format!(
        "SELECT 1 FROM ONLY {} WHERE ({filter}) LIMIT 0",
        table.qualified()
    );
    if let Err(err) = source.query(&trial, &[]).await {
        return Err(MapError::entry(
            entry,
            format!(
                "where {filter:?} is not a valid filter on the table: {}",
                error_text(&err)
            ),
        ));
    }
    if table.replica_identity == 'f' {
        return Ok(());
    }
    let columns: Vec<&str> = table.columns.iter().map(|c| c.name.as_str()).collect();
    let outside: Vec<&str> = referenced_columns(filter, &columns)
        .into_iter()
        .filter(|c| !identity.iter().any(|k| k == c))
        .collect();
    if let Some(column) = outside.first() {
        let fix = if entry.exclude.is_empty() {
            format!(
                "ALTER TABLE {} REPLICA IDENTITY FULL on the source",
                table.qualified()
            )
        } else {
            "drop the exclusions of this table (REPLICA IDENTITY FULL forbids them) and set ALTER TABLE … REPLICA IDENTITY FULL on the source".into()
        };
        return Err(MapError::entry(entry, format!("where uses column {}, which is not part of the replica identity: PostgreSQL would then refuse UPDATE and DELETE on the source (a publication's row filter may use only identity columns); filter on key columns only, or {fix}", quote_ident(column))));
    }
    Ok(())
}

/// The columns of `columns` an SQL expression names, as identifiers
/// outside string literals (unquoted ones folded to lowercase, as the
/// server does). An over-approximation for a function named like a column,
/// which errs on the side of refusing.
pub(super) fn referenced_columns<'a>(expr: &str, columns: &[&'a str]) -> BTreeSet<&'a str> {
    let mut found = BTreeSet::new();
    let mut chars = expr.chars().peekable();
    let mut note = |word: &str| {
        if let Some(c) = columns.iter().find(|c| **c == word) {
            found.insert(*c);
        }
    };
    while let Some(ch) = chars.next() {
        match ch {
            '\'' => {
                // A literal ends at a quote not doubled.
                while let Some(c) = chars.next() {
                    if c == '\'' && chars.next_if_eq(&'\'').is_none() {
                        break;
                    }
                }
            }
            '"' => {
                let mut word = String::new();
                while let Some(c) = chars.next() {
                    if c == '"' && chars.next_if_eq(&'"').is_none() {
                        break;
                    }
                    word.push(c);
                }
                note(&word);
            }
            c if c.is_alphabetic() || c == '_' => {
                let mut word = c.to_lowercase().to_string();
                while let Some(c) = chars.next_if(|c| c.is_alphanumeric() || *c == '_' || *c == '$')
                {
                    word.extend(c.to_lowercase());
                }
                note(&word);
            }
            c if c.is_ascii_digit() => {
                while chars
                    .next_if(|c| c.is_alphanumeric() || *c == '.')
                    .is_some()
                {}
            }
            _ => {}
        }
    }
    found
}
