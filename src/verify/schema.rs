//! Schema verification: the selected tables' columns and types, indexes,
//! constraints and owned sequences, present and alike on the target.
//!
//! Objects are compared by name and definition text (`format_type`,
//! `pg_get_indexdef`, `pg_get_constraintdef`), which both servers render
//! from their catalogs the same way for the same definition.

use std::collections::BTreeMap;

use serde::Serialize;
use tokio_postgres::Client;

use crate::map::{Map, MappedTable, Mask, TableMap};
use crate::pg::catalog::Table;
use crate::pg::widening;

use super::VerifyError;

/// One schema difference.
#[derive(Debug, Clone, Serialize)]
pub struct SchemaDiff {
    pub table: String,
    /// `table`, `column`, `index`, `constraint`, `sequence`.
    pub object: &'static str,
    pub name: String,
    pub problem: String,
}

/// `kind → name → definition` for the objects of one table. NOT NULL is
/// compared on the column (`attnotnull`): PostgreSQL 18 also records it as a
/// `pg_constraint` row (contype `n`), 14–17 do not, so those rows are left
/// out to compare servers of different versions.
type Objects = BTreeMap<(&'static str, String), String>;

const OBJECTS_SQL: &str = r#"
SELECT 'column', a.attname::text,
       format_type(a.atttypid, a.atttypmod) || CASE WHEN a.attnotnull THEN ' NOT NULL' ELSE '' END
           || CASE WHEN a.attgenerated <> '' THEN ' GENERATED' ELSE '' END
FROM pg_attribute a WHERE a.attrelid = $1::text::regclass AND a.attnum > 0 AND NOT a.attisdropped
UNION ALL
SELECT 'index', ic.relname::text,
       regexp_replace(pg_get_indexdef(i.indexrelid), '^CREATE (UNIQUE )?INDEX \S+ ', 'CREATE \1INDEX ')
FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid WHERE i.indrelid = $1::text::regclass
UNION ALL
SELECT 'constraint', c.conname::text, pg_get_constraintdef(c.oid)
FROM pg_constraint c WHERE c.conrelid = $1::text::regclass AND c.contype <> 'n'
UNION ALL
SELECT 'sequence', s.relname::text, format_type(q.seqtypid, NULL)
FROM pg_depend d JOIN pg_class s ON s.oid = d.objid AND s.relkind = 'S'
JOIN pg_sequence q ON q.seqrelid = s.oid
WHERE d.refobjid = $1::text::regclass AND d.deptype IN ('a', 'i')
"#;

async fn objects(client: &Client, qualified: &str) -> Result<Option<Objects>, VerifyError> {
    let exists: bool = client
        .query_one("SELECT to_regclass($1) IS NOT NULL", &[&qualified])
        .await
        .map_err(VerifyError::sql("looking up a table"))?
        .get(0);
    if !exists {
        return Ok(None);
    }
    let rows = client
        .query(OBJECTS_SQL, &[&qualified])
        .await
        .map_err(VerifyError::sql("reading table definitions"))?;
    let mut map = Objects::new();
    for row in rows {
        let kind = match row.get::<_, &str>(0) {
            "column" => "column",
            "index" => "index",
            "constraint" => "constraint",
            _ => "sequence",
        };
        // NULL: the index or constraint was dropped while this query ran.
        if let Some(definition) = row.get::<_, Option<String>>(2) {
            map.insert((kind, row.get(1)), definition);
        }
    }
    Ok(Some(map))
}

/// Every difference between the source's and the target's definitions of
/// the selected tables; and the columns whose target type is a wider one
/// that keeps every value's text form (`--schema skip`, [`widening`]), which
/// are not differences: their values compare as equal text.
pub(crate) async fn compare(
    source: &Client,
    target: &Client,
    tables: &[Table],
    map: &Map,
) -> Result<(Vec<SchemaDiff>, Vec<String>), VerifyError> {
    let mut diffs = Vec::new();
    let mut widened = Vec::new();
    for table in tables {
        let qualified = table.qualified();
        let Some(mut src) = objects(source, &qualified).await? else {
            continue;
        };
        let mapping = map.table(&table.schema, &table.name);
        let target_qualified = MappedTable::new(table, map).target_qualified();
        let diff = |object, name: &str, problem: String| SchemaDiff {
            table: table.display(),
            object,
            name: name.to_string(),
            problem,
        };
        let Some(mut tgt) = objects(target, &target_qualified).await? else {
            diffs.push(diff("table", &table.display(), "missing on target".into()));
            continue;
        };
        if let Some(m) = mapping {
            src = mapped_columns(src, m);
            tgt.retain(|(kind, _), _| *kind == "column");
        }
        for ((kind, name), def) in &src {
            match tgt.get(&(*kind, name.clone())) {
                None => diffs.push(diff(kind, name, "missing on target".into())),
                Some(other) if *kind == "column" && widened_column(def, other) => {
                    let (from, to) = (column_type(def).0, column_type(other).0);
                    widened.push(format!("{}.{name}: {from} → {to}", table.display()));
                }
                Some(other) if other != def => {
                    diffs.push(diff(kind, name, format!("source: {def}; target: {other}")))
                }
                Some(_) => {}
            }
        }
        for (kind, name) in tgt.keys() {
            if !src.contains_key(&(*kind, name.clone())) {
                diffs.push(diff(kind, name, "only on target".into()));
            }
        }
    }
    Ok((diffs, widened))
}

/// What the target's columns of a mapped table must be, from the source's:
/// excluded ones absent, renamed ones by their new name, a null mask
/// without NOT NULL, a hashed one `text`. Its indexes and constraints name
/// the source's columns in their definitions and are not compared.
fn mapped_columns(src: Objects, m: &TableMap) -> Objects {
    src.into_iter()
        .filter(|((kind, _), _)| *kind == "column")
        .filter_map(|((kind, name), def)| {
            let target = m.target_column(&name)?.to_string();
            let def = match m.mask.get(&name) {
                Some(Mask::Null) => def.replacen(" NOT NULL", "", 1),
                Some(Mask::Hash) => format!("text{}", column_type(&def).1),
                None => def,
            };
            Some(((kind, target), def))
        })
        .collect()
}

/// A column definition (`type[ NOT NULL][ GENERATED]`) as its type and flags.
fn column_type(def: &str) -> (&str, &str) {
    let flags_at = [" NOT NULL", " GENERATED"]
        .iter()
        .filter_map(|f| def.find(f))
        .min()
        .unwrap_or(def.len());
    def.split_at(flags_at)
}

/// Same flags, and the target's type a widening of the source's.
fn widened_column(source: &str, target: &str) -> bool {
    let ((from, flags), (to, other_flags)) = (column_type(source), column_type(target));
    flags == other_flags && widening::compare(from, to) == widening::TypeChange::Wider
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_widened_column_with_the_same_flags_is_no_difference() {
        assert!(widened_column(
            "character varying(20) NOT NULL",
            "text NOT NULL"
        ));
        assert!(widened_column("integer", "bigint"));
        assert!(!widened_column("integer NOT NULL", "bigint"));
        assert!(!widened_column("bigint", "integer"));
        assert_eq!(
            column_type("integer NOT NULL GENERATED"),
            ("integer", " NOT NULL GENERATED")
        );
    }
}
