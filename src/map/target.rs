//! The schema copy through the map. pg_dump's pre-data creates each table
//! as the source has it and its post-data (indexes, constraints) names the
//! source's tables and columns, so the map is applied to the target in two
//! steps around the copy: before it, excluded and null-masked columns lose
//! NOT NULL (the copy leaves the first empty and writes NULLs into the
//! second); after post-data, excluded columns are dropped, columns renamed
//! and the table moved to its target name, in one transaction.

use tokio_postgres::Client;

use super::{Map, MappedTable, Mask, TableMap};
use crate::pg::catalog::{self, quote_ident, Table};
use crate::pg::connect::error_text;

/// Why the target could not be given the mapped shape.
#[derive(Debug, thiserror::Error)]
#[error("giving {table} its mapped shape on the target: {message}")]
pub struct ShapeError {
    table: String,
    message: String,
}

fn shape_err(table: &TableMap) -> impl Fn(tokio_postgres::Error) -> ShapeError + '_ {
    move |e| ShapeError {
        table: table.display(),
        message: error_text(&e),
    }
}

/// After pre-data: the columns the copy leaves empty (excluded) or fills
/// with NULL (mask "null") accept NULL.
pub(crate) async fn prepare_for_copy(
    target: &Client,
    tables: &[Table],
    map: &Map,
) -> Result<(), ShapeError> {
    for table in tables {
        let Some(m) = map.table(&table.schema, &table.name) else {
            continue;
        };
        let nulled = m
            .mask
            .iter()
            .filter(|(_, mask)| **mask == Mask::Null)
            .map(|(c, _)| c)
            .chain(&m.exclude);
        let statements: Vec<String> = nulled
            .map(|c| {
                format!(
                    "ALTER TABLE {} ALTER COLUMN {} DROP NOT NULL;",
                    table.qualified(),
                    quote_ident(c)
                )
            })
            .collect();
        if !statements.is_empty() {
            target
                .batch_execute(&statements.concat())
                .await
                .map_err(shape_err(m))?;
        }
    }
    Ok(())
}

/// After post-data: drops excluded columns, renames columns, moves the
/// table to its target name. A table already under its target name (a
/// resumed run) is left as it is.
pub(crate) async fn apply_after_post_data(
    target: &Client,
    tables: &[Table],
    map: &Map,
) -> Result<(), ShapeError> {
    for table in tables {
        let mapped = MappedTable::new(table, map);
        let Some(m) = mapped.map else {
            continue;
        };
        let exists = catalog::table_columns(target, &table.schema, &table.name)
            .await
            .map_err(shape_err(m))?
            .is_some();
        if !exists {
            continue;
        }
        let mut sql = vec!["BEGIN;".to_string()];
        let qualified = table.qualified();
        for column in &m.exclude {
            sql.push(format!(
                "ALTER TABLE {qualified} DROP COLUMN {};",
                quote_ident(column)
            ));
        }
        for (from, to) in &m.rename {
            sql.push(format!(
                "ALTER TABLE {qualified} RENAME COLUMN {} TO {};",
                quote_ident(from),
                quote_ident(to)
            ));
        }
        let (schema, name) = mapped.target_name();
        if schema != table.schema {
            sql.push(format!(
                "CREATE SCHEMA IF NOT EXISTS {0}; ALTER TABLE {qualified} SET SCHEMA {0};",
                quote_ident(schema)
            ));
        }
        if name != table.name {
            sql.push(format!(
                "ALTER TABLE {}.{} RENAME TO {};",
                quote_ident(schema),
                quote_ident(&table.name),
                quote_ident(name)
            ));
        }
        sql.push("COMMIT;".into());
        if let Err(err) = target.batch_execute(&sql.concat()).await {
            let _ = target.batch_execute("ROLLBACK").await;
            return Err(shape_err(m)(err));
        }
        tracing::info!(table = %table.display(), mapped = %mapped.summary(), "target table given its mapped shape");
    }
    Ok(())
}
