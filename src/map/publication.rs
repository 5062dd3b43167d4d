//! What the publication carries for mapped tables: column lists and row
//! filters (PostgreSQL 15+), so excluded columns and filtered rows never
//! leave the source. A PostgreSQL 14 source has neither: the map is then
//! refused, naming what would cross the wire, unless the operator allows
//! an unfiltered stream (exclusions are then dropped in walrelay's process;
//! row filters are not evaluated in process, so they stay refused).

use std::collections::BTreeSet;

use super::{Map, MapError, MappedTable};
use crate::pg::catalog::Table;

/// The publication's table list, with the map's clauses.
#[derive(Debug)]
pub(crate) struct Published {
    /// `"s"."t" (a, b) WHERE (…), …` for `CREATE/ALTER PUBLICATION`.
    pub list: String,
    /// The tables whose column list or row filter comes from the map: an
    /// existing publication's own on them is walrelay's to set.
    pub mapped: BTreeSet<u32>,
}

/// The publication list for `tables` as they are (no map).
pub(crate) fn unmapped(tables: &[Table]) -> Published {
    Published {
        list: tables
            .iter()
            .map(Table::qualified)
            .collect::<Vec<_>>()
            .join(", "),
        mapped: BTreeSet::new(),
    }
}

/// The publication list for `tables` on a source of major version `major`.
pub(crate) fn published(
    tables: &[Table],
    map: &Map,
    major: u32,
    allow_unfiltered: bool,
) -> Result<Published, MapError> {
    let mut list = Vec::with_capacity(tables.len());
    let mut mapped = BTreeSet::new();
    let mut unkept = Vec::new();
    for table in tables {
        let form = MappedTable::new(table, map);
        let Some(m) = form.map else {
            list.push(table.qualified());
            continue;
        };
        if major >= 15 {
            let clause = form.publication_clause();
            if !clause.is_empty() {
                mapped.insert(table.oid);
            }
            list.push(format!("{}{clause}", table.qualified()));
            continue;
        }
        list.push(table.qualified());
        if m.filter.is_some() {
            return Err(MapError::Entry {
                entry: m.display(),
                problem: format!("a PostgreSQL {major} source cannot filter its publication's rows (row filters need 15+), and walrelay does not evaluate row filters in its process: every row of the table would leave the source; remove where from this entry, or upgrade the source"),
            });
        }
        if !m.exclude.is_empty() {
            let columns: Vec<&str> = m.exclude.iter().map(String::as_str).collect();
            unkept.push(format!("{} ({})", m.display(), columns.join(", ")));
        }
    }
    if !unkept.is_empty() {
        let what = unkept.join("; ");
        if !allow_unfiltered {
            return Err(MapError::Unfiltered {
                major,
                columns: what,
            });
        }
        tracing::warn!(columns = %what, "PostgreSQL {major} source (no publication column lists): these excluded columns cross the wire to walrelay, which drops them before the target (--allow-unfiltered-stream)");
    }
    Ok(Published {
        list: list.join(", "),
        mapped,
    })
}
