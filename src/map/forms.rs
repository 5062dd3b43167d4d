//! The mapped forms of a table: what the target table is called, which
//! columns it has under which names, and the source-side SQL that yields
//! the mapped values (the copy and verify's source side both use it, so
//! the two compute the same renames, exclusions, filter and masks).

use super::{Map, Mask, TableMap};
use crate::pg::catalog::{quote_ident, quote_literal, Column, Table};

/// One column as the target has it.
#[derive(Debug, Clone)]
pub(crate) struct ColumnForm<'a> {
    pub source: &'a Column,
    /// The target column's name.
    pub target: &'a str,
    pub mask: Option<Mask>,
}

impl ColumnForm<'_> {
    /// The source-side SQL giving the target's value.
    pub(crate) fn source_expr(&self) -> String {
        let column = quote_ident(&self.source.name);
        match self.mask {
            None => column,
            Some(Mask::Null) => format!("NULL::{}", self.source.type_name),
            Some(Mask::Hash) => {
                format!("encode(sha256(convert_to({column}::text, 'UTF8')), 'hex')")
            }
        }
    }
}

/// A source table and its mapping (none: it moves as it is).
#[derive(Debug, Clone, Copy)]
pub(crate) struct MappedTable<'a> {
    pub table: &'a Table,
    pub map: Option<&'a TableMap>,
}

impl<'a> MappedTable<'a> {
    pub(crate) fn new(table: &'a Table, map: &'a Map) -> Self {
        MappedTable {
            table,
            map: map.table(&table.schema, &table.name),
        }
    }

    /// The target's (schema, table).
    pub(crate) fn target_name(&self) -> (&'a str, &'a str) {
        match self.map {
            Some(m) => (&m.target.0, &m.target.1),
            None => (&self.table.schema, &self.table.name),
        }
    }

    /// `"schema"."table"` of the target.
    pub(crate) fn target_qualified(&self) -> String {
        let (schema, name) = self.target_name();
        format!("{}.{}", quote_ident(schema), quote_ident(name))
    }

    /// `schema.table` of the target, for reports.
    pub(crate) fn target_display(&self) -> String {
        let (schema, name) = self.target_name();
        format!("{schema}.{name}")
    }

    /// The written (not generated) columns that reach the target, in the
    /// source's order.
    pub(crate) fn columns(&self) -> Vec<ColumnForm<'a>> {
        self.table
            .copied_columns()
            .filter_map(|c| self.column(c))
            .collect()
    }

    fn column(&self, c: &'a Column) -> Option<ColumnForm<'a>> {
        let Some(map) = self.map else {
            return Some(ColumnForm {
                source: c,
                target: &c.name,
                mask: None,
            });
        };
        Some(ColumnForm {
            source: c,
            target: map.target_column(&c.name)?,
            mask: map.mask.get(&c.name).copied(),
        })
    }

    /// The row filter, if any.
    pub(crate) fn filter(&self) -> Option<&'a str> {
        self.map.and_then(|m| m.filter.as_deref())
    }

    /// ` AND (filter)` to append to a source-side WHERE, or nothing.
    pub(crate) fn and_filter(&self) -> String {
        self.filter()
            .map(|f| format!(" AND ({f})"))
            .unwrap_or_default()
    }

    /// Whether the source and target forms differ at all.
    pub(crate) fn is_mapped(&self) -> bool {
        self.map.is_some()
    }

    /// The publication's ` (columns) WHERE (filter)` for this table on a
    /// PostgreSQL 15+ source: the column list only when columns are
    /// excluded (generated columns may not be listed before 18, and are
    /// not published anyway).
    pub(crate) fn publication_clause(&self) -> String {
        let mut clause = String::new();
        if self.map.is_some_and(|m| !m.exclude.is_empty()) {
            let list: Vec<String> = self
                .columns()
                .iter()
                .map(|c| quote_ident(&c.source.name))
                .collect();
            clause.push_str(&format!(" ({})", list.join(", ")));
        }
        if let Some(filter) = self.filter() {
            clause.push_str(&format!(" WHERE ({filter})"));
        }
        clause
    }

    /// A comment for logs naming what the map changes (names only).
    pub(crate) fn summary(&self) -> String {
        let Some(m) = self.map else {
            return String::new();
        };
        let mut parts = Vec::new();
        if m.renames_table() {
            parts.push(format!("target {}", self.target_display()));
        }
        if !m.exclude.is_empty() {
            parts.push(format!("{} excluded", m.exclude.len()));
        }
        if !m.rename.is_empty() {
            parts.push(format!("{} renamed", m.rename.len()));
        }
        if !m.mask.is_empty() {
            parts.push(format!("{} masked", m.mask.len()));
        }
        if m.filter.is_some() {
            parts.push("filtered".into());
        }
        quote_literal(&parts.join(", "))
    }
}
