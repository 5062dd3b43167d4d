//! Set-based application: the net effect per key of the buffered changes of
//! one table, applied with one statement per operation and column set
//! (`unnest` over text arrays, one array per column), instead of one
//! statement per change.
//!
//! Reordering changes is safe only where nothing can observe the order:
//! - within a table, changes to *different* keys commute unless a unique
//!   constraint other than the key is involved, so a set statement that
//!   fails, or touches fewer rows than expected, is rolled back to a
//!   savepoint and the table's buffered changes are applied one by one in
//!   source order ([`super::statements`]), which also names the exact change
//!   that fails;
//! - across tables, order only matters to triggers and foreign keys, which
//!   `session_replication_role = replica` turns off; without it walrelay
//!   applies row by row;
//! - key changes are never netted; a REPLICA IDENTITY FULL table (no key)
//!   is netted only while its buffered changes are all inserts, which commute.

use std::collections::HashMap;

use bytes::{BufMut, Bytes, BytesMut};
use tokio_postgres::types::{IsNull, ToSql, Type};
use walrelay_proto::{Cell, TupleData};

use super::relations::RelationInfo;

/// A `text[]` parameter built from raw text values (NULLs allowed).
#[derive(Debug, Default)]
pub(super) struct TextArray(pub Vec<Option<Bytes>>);

impl ToSql for TextArray {
    fn to_sql(
        &self,
        _ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        // Binary array format: ndim, has-nulls flag, element type, then one
        // (length, lower bound) per dimension, then (length, bytes) per element.
        let len = i32::try_from(self.0.len())?;
        out.put_i32(1);
        out.put_i32(i32::from(self.0.iter().any(Option::is_none)));
        out.put_u32(Type::TEXT.oid());
        out.put_i32(len);
        out.put_i32(1);
        for value in &self.0 {
            match value {
                Some(bytes) => {
                    out.put_i32(i32::try_from(bytes.len())?);
                    out.put_slice(bytes);
                }
                None => out.put_i32(-1),
            }
        }
        Ok(IsNull::No)
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::TEXT_ARRAY
    }

    tokio_postgres::types::to_sql_checked!();
}

/// A keyed row change as buffered (values are slices of the received payloads).
#[derive(Debug, Clone)]
pub(super) enum RowChange {
    Insert(TupleData),
    /// An update that keeps the key.
    Update(TupleData),
    /// A delete, by the old key tuple.
    Delete(TupleData),
}

/// What the buffered changes amount to for one key.
#[derive(Debug, Clone)]
enum State {
    Absent,
    /// Every column known.
    Full(Vec<Cell>),
    /// Some columns unchanged (`UnchangedToast` marks the ones to keep).
    Partial(Vec<Cell>),
}

#[derive(Debug)]
struct Entry {
    existed: bool,
    state: State,
}

/// The statements a table's net effect needs.
#[derive(Debug, Default)]
pub(super) struct NetEffect {
    /// Key values (one array per key column) of rows to delete.
    pub deletes: Vec<Vec<Cell>>,
    /// Full rows to insert.
    pub inserts: Vec<Vec<Cell>>,
    /// Partial rows to update, grouped by which columns they set.
    pub updates: HashMap<Vec<bool>, Vec<Vec<Cell>>>,
}

/// Netting is impossible (the changes contradict each other, i.e. drift, or
/// need source order): the caller applies them one by one.
#[derive(Debug)]
pub(super) struct NotNettable;

/// Computes the net effect of `changes` (source order) on `rel`.
pub(super) fn net<'a>(
    rel: &RelationInfo,
    changes: impl IntoIterator<Item = &'a RowChange>,
) -> Result<NetEffect, NotNettable> {
    if rel.full_identity {
        return inserts_only(changes);
    }
    let key_idx: Vec<usize> = rel
        .columns
        .iter()
        .enumerate()
        .filter(|(_, c)| c.as_ref().is_some_and(|c| c.key))
        .map(|(i, _)| i)
        .collect();
    if key_idx.is_empty() {
        return Err(NotNettable);
    }
    let mut order: Vec<Vec<Cell>> = Vec::new();
    let mut entries: HashMap<Vec<Cell>, Entry> = HashMap::new();
    for change in changes {
        let tuple = match change {
            RowChange::Insert(t) | RowChange::Update(t) | RowChange::Delete(t) => t,
        };
        let key: Vec<Cell> = key_idx
            .iter()
            .map(|&i| tuple.cells.get(i).cloned().unwrap_or(Cell::Null))
            .collect();
        if key.iter().any(|c| !matches!(c, Cell::Text(_))) {
            return Err(NotNettable);
        }
        let entry = match entries.get_mut(&key) {
            Some(entry) => entry,
            None => {
                order.push(key.clone());
                let existed = !matches!(change, RowChange::Insert(_));
                entries.entry(key).or_insert(Entry {
                    existed,
                    state: if existed {
                        State::Partial(Vec::new())
                    } else {
                        State::Absent
                    },
                })
            }
        };
        entry.state = step(&entry.state, change)?;
    }
    let mut effect = NetEffect::default();
    for key in order {
        // Taken, not cloned: the buffer may hold many megabytes of rows.
        let Some(entry) = entries.remove(&key) else {
            continue;
        };
        match (entry.state, entry.existed) {
            (State::Absent, false) => {}
            (State::Absent, true) => effect.deletes.push(key),
            (State::Full(row), false) => effect.inserts.push(row),
            (State::Full(row), true) => {
                effect.deletes.push(key);
                effect.inserts.push(row);
            }
            (State::Partial(row), true) => {
                let sets: Vec<bool> = row
                    .iter()
                    .zip(&rel.columns)
                    .map(|(cell, col)| {
                        *cell != Cell::UnchangedToast
                            && col.as_ref().is_some_and(|c| !c.key && !c.identity_always)
                    })
                    .collect();
                effect.updates.entry(sets).or_default().push(row);
            }
            (State::Partial(_), false) => return Err(NotNettable),
        }
    }
    Ok(effect)
}

/// Rows of a table without a key: inserts commute with each other, and
/// nothing else is buffered for such a table.
fn inserts_only<'a>(
    changes: impl IntoIterator<Item = &'a RowChange>,
) -> Result<NetEffect, NotNettable> {
    let mut effect = NetEffect::default();
    for change in changes {
        match change {
            RowChange::Insert(t) if !t.cells.contains(&Cell::UnchangedToast) => {
                effect.inserts.push(t.cells.clone())
            }
            _ => return Err(NotNettable),
        }
    }
    Ok(effect)
}

/// One change applied to a key's state.
fn step(state: &State, change: &RowChange) -> Result<State, NotNettable> {
    match (state, change) {
        // An existing row not touched yet is an empty Partial.
        (State::Partial(row), RowChange::Update(new)) if row.is_empty() => {
            Ok(State::Partial(new.cells.clone()))
        }
        (State::Partial(row), RowChange::Delete(_)) if row.is_empty() => Ok(State::Absent),
        (State::Partial(row), RowChange::Update(new)) => Ok(State::Partial(merge(row, &new.cells))),
        (State::Full(row), RowChange::Update(new)) => Ok(State::Full(merge(row, &new.cells))),
        (State::Partial(_) | State::Full(_), RowChange::Delete(_)) => Ok(State::Absent),
        (State::Absent, RowChange::Insert(new)) if !new.cells.contains(&Cell::UnchangedToast) => {
            Ok(State::Full(new.cells.clone()))
        }
        // Insert over a live row, update or delete of an absent one: drift
        // or something only source order explains.
        _ => Err(NotNettable),
    }
}

/// Newer values over older ones; an unchanged TOAST value keeps the older.
fn merge(old: &[Cell], new: &[Cell]) -> Vec<Cell> {
    new.iter()
        .zip(old)
        .map(|(n, o)| {
            if *n == Cell::UnchangedToast {
                o.clone()
            } else {
                n.clone()
            }
        })
        .collect()
}

/// Column-major text arrays of `rows` for the columns `pick` selects.
pub(super) fn columns(
    rows: &[Vec<Cell>],
    pick: impl Iterator<Item = usize> + Clone,
) -> Vec<TextArray> {
    pick.map(|i| {
        TextArray(
            rows.iter()
                .map(|row| match row.get(i) {
                    Some(Cell::Text(b)) => Some(b.clone()),
                    _ => None,
                })
                .collect(),
        )
    })
    .collect()
}

/// `DELETE … USING unnest(keys)`; expects one row per key.
pub(super) fn delete_sql(rel: &RelationInfo) -> String {
    let keys: Vec<_> = rel.columns.iter().flatten().filter(|c| c.key).collect();
    let arrays = (1..=keys.len())
        .map(|n| format!("${n}::text[]"))
        .collect::<Vec<_>>()
        .join(", ");
    let names = (1..=keys.len())
        .map(|n| format!("k{n}"))
        .collect::<Vec<_>>()
        .join(", ");
    let cond = keys
        .iter()
        .enumerate()
        .map(|(i, c)| format!("t.{} = d.k{}::{}", c.ident, i + 1, c.cast))
        .collect::<Vec<_>>()
        .join(" AND ");
    let only = if rel.partitioned { "" } else { "ONLY " };
    format!(
        "DELETE FROM {only}{} t USING unnest({arrays}) AS d({names}) WHERE {cond}",
        rel.qualified
    )
}

/// `INSERT … SELECT … FROM unnest(columns)` of full rows.
pub(super) fn insert_sql(rel: &RelationInfo) -> String {
    let cols: Vec<_> = rel.columns.iter().flatten().collect();
    let names = cols
        .iter()
        .map(|c| c.ident.as_str())
        .collect::<Vec<_>>()
        .join(", ");
    let arrays = (1..=cols.len())
        .map(|n| format!("${n}::text[]"))
        .collect::<Vec<_>>()
        .join(", ");
    let aliases = (1..=cols.len())
        .map(|n| format!("c{n}"))
        .collect::<Vec<_>>()
        .join(", ");
    let casts = cols
        .iter()
        .enumerate()
        .map(|(i, c)| format!("u.c{}::{}", i + 1, c.cast))
        .collect::<Vec<_>>()
        .join(", ");
    let overriding = if cols.iter().any(|c| c.identity_always) {
        " OVERRIDING SYSTEM VALUE"
    } else {
        ""
    };
    format!(
        "INSERT INTO {} ({names}){overriding} SELECT {casts} FROM unnest({arrays}) AS u({aliases})",
        rel.qualified
    )
}

/// `UPDATE … FROM unnest(keys, columns)` setting the columns `sets` marks;
/// expects one row per entry.
pub(super) fn update_sql(rel: &RelationInfo, sets: &[bool]) -> String {
    let keyed: Vec<_> = rel.columns.iter().flatten().filter(|c| c.key).collect();
    let set_cols: Vec<_> = rel
        .columns
        .iter()
        .zip(sets)
        .filter(|(_, s)| **s)
        .filter_map(|(c, _)| c.as_ref())
        .collect();
    let total = keyed.len() + set_cols.len();
    let arrays = (1..=total)
        .map(|n| format!("${n}::text[]"))
        .collect::<Vec<_>>()
        .join(", ");
    let aliases = (1..=total)
        .map(|n| format!("v{n}"))
        .collect::<Vec<_>>()
        .join(", ");
    let cond = keyed
        .iter()
        .enumerate()
        .map(|(i, c)| format!("t.{} = u.v{}::{}", c.ident, i + 1, c.cast))
        .collect::<Vec<_>>()
        .join(" AND ");
    let assign = set_cols
        .iter()
        .enumerate()
        .map(|(i, c)| format!("{} = u.v{}::{}", c.ident, keyed.len() + i + 1, c.cast))
        .collect::<Vec<_>>()
        .join(", ");
    let only = if rel.partitioned { "" } else { "ONLY " };
    format!(
        "UPDATE {only}{} t SET {assign} FROM unnest({arrays}) AS u({aliases}) WHERE {cond}",
        rel.qualified
    )
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::apply::relations::TargetColumn;

    fn rel() -> RelationInfo {
        let col = |name: &str, key: bool| {
            Some(TargetColumn {
                ident: format!("\"{name}\""),
                cast: "pg_catalog.int4".into(),
                key,
                identity_always: false,
                has_eq: true,
            })
        };
        RelationInfo {
            masks: Vec::new(),
            id: 1,
            display: "public.t".into(),
            qualified: "\"public\".\"t\"".into(),
            full_identity: false,
            partitioned: false,
            columns: vec![col("id", true), col("a", false), col("b", false)],
            key_names: Arc::from(vec!["id".to_string()]),
            target_only: Vec::new(),
            suppressible: false,
            cascade_from: Vec::new(),
            snapshot_lsn: Default::default(),
            generation: 1,
        }
    }

    fn t(v: &str) -> Cell {
        Cell::Text(Bytes::copy_from_slice(v.as_bytes()))
    }

    fn row(cells: &[Cell]) -> TupleData {
        TupleData {
            cells: cells.to_vec(),
        }
    }

    #[test]
    fn insert_then_updates_collapse_into_one_insert() {
        let changes = [
            RowChange::Insert(row(&[t("1"), t("x"), t("y")])),
            RowChange::Update(row(&[t("1"), t("x2"), Cell::UnchangedToast])),
            RowChange::Update(row(&[t("1"), t("x3"), t("y3")])),
        ];
        let e = net(&rel(), &changes).unwrap();
        assert_eq!(e.inserts, vec![vec![t("1"), t("x3"), t("y3")]]);
        assert!(e.deletes.is_empty() && e.updates.is_empty());
    }

    #[test]
    fn insert_then_delete_is_nothing_and_delete_then_insert_replaces() {
        let changes = [
            RowChange::Insert(row(&[t("1"), t("x"), t("y")])),
            RowChange::Delete(row(&[t("1"), Cell::Null, Cell::Null])),
            RowChange::Delete(row(&[t("2"), Cell::Null, Cell::Null])),
            RowChange::Insert(row(&[t("2"), t("p"), t("q")])),
        ];
        let e = net(&rel(), &changes).unwrap();
        assert_eq!(e.deletes, vec![vec![t("2")]]);
        assert_eq!(e.inserts, vec![vec![t("2"), t("p"), t("q")]]);
    }

    #[test]
    fn updates_keep_unchanged_toast_and_group_by_column_set() {
        let changes = [
            RowChange::Update(row(&[t("1"), t("a"), Cell::UnchangedToast])),
            RowChange::Update(row(&[t("2"), t("a"), t("b")])),
            RowChange::Update(row(&[t("3"), t("c"), Cell::UnchangedToast])),
        ];
        let e = net(&rel(), &changes).unwrap();
        assert_eq!(e.updates.len(), 2);
        assert_eq!(e.updates[&vec![false, true, false]].len(), 2);
        assert_eq!(e.updates[&vec![false, true, true]].len(), 1);
    }

    #[test]
    fn contradictions_are_not_netted() {
        let dup_insert = [
            RowChange::Update(row(&[t("1"), t("a"), t("b")])),
            RowChange::Insert(row(&[t("1"), t("a"), t("b")])),
        ];
        assert!(net(&rel(), &dup_insert).is_err());
        let update_after_delete = [
            RowChange::Delete(row(&[t("1"), Cell::Null, Cell::Null])),
            RowChange::Update(row(&[t("1"), t("a"), t("b")])),
        ];
        assert!(net(&rel(), &update_after_delete).is_err());
    }

    #[test]
    fn statements_address_columns_by_position_in_the_arrays() {
        let r = rel();
        assert_eq!(
            update_sql(&r, &[false, true, false]),
            "UPDATE ONLY \"public\".\"t\" t SET \"a\" = u.v2::pg_catalog.int4 FROM unnest($1::text[], $2::text[]) AS u(v1, v2) WHERE t.\"id\" = u.v1::pg_catalog.int4"
        );
        assert!(delete_sql(&r)
            .starts_with("DELETE FROM ONLY \"public\".\"t\" t USING unnest($1::text[]) AS d(k1)"));
        assert!(insert_sql(&r).contains("SELECT u.c1::pg_catalog.int4, u.c2::pg_catalog.int4, u.c3::pg_catalog.int4 FROM unnest($1::text[], $2::text[], $3::text[])"));
    }
}
