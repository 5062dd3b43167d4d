//! Change → SQL. Every value is sent as text and cast by the target
//! (`$n::text::<target type>`), so the target's input functions parse it and
//! type OIDs may differ between clusters (enums, domains, arrays of them).
//!
//! A statement depends on the relation's layout and on which columns a
//! change carries (unchanged TOAST values are left out of SET; NULLs in a
//! REPLICA IDENTITY FULL match become `IS NULL`), so statements are cached
//! per (relation, layout generation, operation, column signature).

use std::collections::HashMap;

use bytes::{BufMut, Bytes, BytesMut};
use tokio_postgres::types::{IsNull, ToSql, Type};
use walrelay_proto::{Cell, OldTuple, TupleData};

use super::identity::{self, update_mode, PLAIN};
use super::relations::{RelationInfo, TargetColumn};

/// A text parameter written as raw bytes: pgoutput already produced text in
/// the client encoding, so there is nothing to validate or convert.
#[derive(Debug, Clone)]
pub(super) struct TextParam(pub Option<Bytes>);

impl ToSql for TextParam {
    fn to_sql(
        &self,
        _ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match &self.0 {
            Some(bytes) => {
                out.put_slice(bytes);
                Ok(IsNull::No)
            }
            None => Ok(IsNull::Yes),
        }
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::TEXT
    }

    fn encode_format(&self, _ty: &Type) -> tokio_postgres::types::Format {
        tokio_postgres::types::Format::Text
    }

    tokio_postgres::types::to_sql_checked!();
}

/// The kind of row change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Op {
    Insert,
    Update,
    Delete,
}

impl Op {
    /// Lowercase name for metrics and errors.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Op::Insert => "insert",
            Op::Update => "update",
            Op::Delete => "delete",
        }
    }
}

/// Cache key of a statement.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) struct Key {
    pub relation: u32,
    pub generation: u64,
    pub op: Op,
    /// For an UPDATE first its mode (`U` plain, `M` re-insert, `E` either:
    /// see `identity`); then per column `v` written, `-` not; then `|`
    /// and per column `=` typed match, `t` text match, `n` IS NULL, `-` not
    /// matched.
    pub signature: Vec<u8>,
}

/// A change turned into a statement key and its parameters.
#[derive(Debug)]
pub(super) struct Planned {
    pub key: Key,
    pub params: Vec<TextParam>,
    /// UPDATE and DELETE must find their row; zero rows means drift.
    pub expect_row: bool,
}

/// Why a change cannot be turned into SQL.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PlanError {
    #[error("table {table}: {what} has {got} columns but the relation has {want}")]
    Width {
        table: String,
        what: &'static str,
        got: usize,
        want: usize,
    },
    #[error("table {table}: binary tuple data is not supported (walrelay streams text)")]
    Binary { table: String },
    #[error("table {table}: an {op} carries no value for {columns} and no old key, so its row cannot be told from others (an unchanged TOASTed key, which sources before the November 2022 minor releases send without the old key); update the source to its latest minor release, then take a new snapshot of this table")]
    NoMatch {
        table: String,
        op: &'static str,
        /// The key columns (names only), or "any column" under REPLICA IDENTITY FULL.
        columns: String,
    },
}

fn check_width(rel: &RelationInfo, tuple: &TupleData, what: &'static str) -> Result<(), PlanError> {
    if tuple.cells.len() == rel.columns.len() {
        Ok(())
    } else {
        Err(PlanError::Width {
            table: rel.display.clone(),
            what,
            got: tuple.cells.len(),
            want: rel.columns.len(),
        })
    }
}

fn value(rel: &RelationInfo, cell: &Cell) -> Result<Option<Bytes>, PlanError> {
    match cell {
        Cell::Text(b) => Ok(Some(b.clone())),
        Cell::Null | Cell::UnchangedToast => Ok(None),
        Cell::Binary(_) => Err(PlanError::Binary {
            table: rel.display.clone(),
        }),
    }
}

/// INSERT of a new tuple.
pub(super) fn insert(rel: &RelationInfo, new: &TupleData) -> Result<Planned, PlanError> {
    check_width(rel, new, "new tuple")?;
    let mut signature = Vec::with_capacity(rel.columns.len());
    let mut params = Vec::with_capacity(rel.columns.len());
    for (col, cell) in rel.columns.iter().zip(&new.cells) {
        if col.is_some() && *cell != Cell::UnchangedToast {
            signature.push(b'v');
            params.push(TextParam(value(rel, cell)?));
        } else {
            signature.push(b'-');
        }
    }
    Ok(Planned {
        key: key(rel, Op::Insert, signature),
        params,
        expect_row: false,
    })
}

/// UPDATE: SET the carried columns, locate the row by the old key (K), the
/// old row (O, REPLICA IDENTITY FULL) or the new tuple's key columns.
pub(super) fn update(
    rel: &RelationInfo,
    old: Option<&OldTuple>,
    new: &TupleData,
) -> Result<Planned, PlanError> {
    check_width(rel, new, "new tuple")?;
    let key_changed = matches!(old, Some(OldTuple::Key(_)));
    let mode = update_mode(rel, old, new);
    let mut signature = Vec::with_capacity(rel.columns.len() * 2 + 2);
    signature.push(mode);
    let mut params = Vec::new();
    for (col, cell) in rel.columns.iter().zip(&new.cells) {
        let write = match col {
            None => false,
            Some(_) if *cell == Cell::UnchangedToast => false,
            // A re-inserted row needs every value the source sent.
            Some(_) if mode != PLAIN => true,
            // Without a K tuple the key is unchanged: no need to set it.
            Some(c) if c.key && !rel.full_identity && !key_changed => false,
            // Unchanged (update_mode): UPDATE could not set it anyway.
            Some(c) if c.identity_always => false,
            Some(_) => true,
        };
        signature.push(if write { b'v' } else { b'-' });
        if write {
            params.push(TextParam(value(rel, cell)?));
        }
    }
    signature.push(b'|');
    let matched = old.map(OldTuple::tuple).unwrap_or(new);
    check_width(rel, matched, "old tuple")?;
    push_match(rel, Op::Update, matched, &mut signature, &mut params)?;
    Ok(Planned {
        key: key(rel, Op::Update, signature),
        params,
        expect_row: true,
    })
}

/// DELETE located by the old key or old row.
pub(super) fn delete(rel: &RelationInfo, old: &OldTuple) -> Result<Planned, PlanError> {
    let tuple = old.tuple();
    check_width(rel, tuple, "old tuple")?;
    let mut signature = vec![b'|'];
    let mut params = Vec::new();
    push_match(rel, Op::Delete, tuple, &mut signature, &mut params)?;
    Ok(Planned {
        key: key(rel, Op::Delete, signature),
        params,
        expect_row: true,
    })
}

/// The match part of a statement. A key column without a value would
/// widen the match to other rows (an empty one to every row): refused.
fn push_match(
    rel: &RelationInfo,
    op: Op,
    tuple: &TupleData,
    signature: &mut Vec<u8>,
    params: &mut Vec<TextParam>,
) -> Result<(), PlanError> {
    let mut matched = 0;
    let mut unmatched_key = false;
    for (col, cell) in rel.columns.iter().zip(&tuple.cells) {
        let code = match col {
            Some(c) if rel.full_identity || c.key => match cell {
                Cell::UnchangedToast => {
                    unmatched_key |= c.key && !rel.full_identity;
                    b'-'
                }
                Cell::Null => b'n',
                _ if c.has_eq => b'=',
                _ => b't',
            },
            _ => b'-',
        };
        signature.push(code);
        if code != b'-' {
            matched += 1;
        }
        if code == b'=' || code == b't' {
            params.push(TextParam(value(rel, cell)?));
        }
    }
    if unmatched_key || matched == 0 {
        return Err(PlanError::NoMatch {
            table: rel.display.clone(),
            op: op.as_str(),
            columns: if rel.full_identity || rel.key_names.is_empty() {
                "any column".into()
            } else {
                format!("key column(s) {}", rel.key_names.join(", "))
            },
        });
    }
    Ok(())
}

pub(super) fn key(rel: &RelationInfo, op: Op, signature: Vec<u8>) -> Key {
    Key {
        relation: rel.id,
        generation: rel.generation,
        op,
        signature,
    }
}

/// A statement key's write codes (after an UPDATE's mode byte) and match codes.
pub(super) fn split(key: &Key) -> (&[u8], &[u8]) {
    let sig = match key.op {
        Op::Update => key.signature.get(1..).unwrap_or_default(),
        _ => &key.signature[..],
    };
    match sig.iter().position(|b| *b == b'|') {
        Some(bar) => (&sig[..bar], &sig[bar + 1..]),
        None => (sig, &[][..]),
    }
}

/// The target columns a signature codes other than `-` (generated target
/// columns are `None` and always coded `-`).
pub(super) fn picked<'a>(rel: &'a RelationInfo, codes: &[u8]) -> Vec<(&'a TargetColumn, u8)> {
    rel.columns
        .iter()
        .zip(codes)
        .filter_map(|(c, code)| c.as_ref().map(|c| (c, *code)))
        .filter(|(_, code)| *code != b'-')
        .collect()
}

pub(super) fn only(rel: &RelationInfo) -> &'static str {
    if rel.partitioned {
        ""
    } else {
        "ONLY "
    }
}

/// The SQL text of a statement key. Parameters: the written values in
/// column order, then the matched ones.
pub(super) fn sql(rel: &RelationInfo, key: &Key) -> String {
    let (writes, matches) = split(key);
    let mut n = 0;
    let mut next = || {
        n += 1;
        n
    };
    let only = only(rel);
    match key.op {
        Op::Insert => {
            let written = picked(rel, writes);
            let names = written
                .iter()
                .map(|(c, _)| c.ident.as_str())
                .collect::<Vec<_>>()
                .join(", ");
            let values = written
                .iter()
                .map(|(c, _)| format!("${}::text::{}", next(), c.cast))
                .collect::<Vec<_>>()
                .join(", ");
            let overriding = if written.iter().any(|(c, _)| c.identity_always) {
                " OVERRIDING SYSTEM VALUE"
            } else {
                ""
            };
            format!(
                "INSERT INTO {} ({names}){overriding} VALUES ({values})",
                rel.qualified
            )
        }
        Op::Update if key.signature.first() != Some(&PLAIN) => identity::update_sql(rel, key),
        Op::Update => {
            let sets: Vec<String> = picked(rel, writes)
                .iter()
                .map(|(c, _)| format!("{} = ${}::text::{}", c.ident, next(), c.cast))
                .collect();
            let cond = conditions(rel, &picked(rel, matches), &mut next);
            if sets.is_empty() {
                // Nothing to change (only unchanged TOAST values): still prove the row exists.
                return format!(
                    "SELECT 1 FROM {only}{} WHERE {}",
                    rel.qualified,
                    locate(rel, &cond)
                );
            }
            format!(
                "UPDATE {only}{} SET {} WHERE {}",
                rel.qualified,
                sets.join(", "),
                locate(rel, &cond)
            )
        }
        Op::Delete => {
            let cond = conditions(rel, &picked(rel, matches), &mut next);
            format!(
                "DELETE FROM {only}{} WHERE {}",
                rel.qualified,
                locate(rel, &cond)
            )
        }
    }
}

/// Whether the row an UPDATE or DELETE matches exists (a change that found
/// no row: skipped by a target trigger, or drift). Its parameters are the
/// change's matched ones ([`matched_params`]).
pub(super) fn exists_sql(rel: &RelationInfo, key: &Key) -> String {
    let (_, matches) = split(key);
    let mut n = 0;
    let cond = conditions(rel, &picked(rel, matches), &mut || {
        n += 1;
        n
    });
    format!(
        "SELECT 1 FROM {}{} WHERE {cond} LIMIT 1",
        only(rel),
        rel.qualified
    )
}

/// The matched values among a planned change's parameters.
pub(super) fn matched_params(planned: &Planned) -> Vec<TextParam> {
    let (writes, _) = split(&planned.key);
    let written = writes.iter().filter(|c| **c == b'v').count();
    planned.params.get(written..).unwrap_or_default().to_vec()
}

/// The match of a row. A key (unique) finds its row with the type's `=`.
/// Under REPLICA IDENTITY FULL `=` is not enough: numeric `1.0 = 1.00`,
/// citext ignores case, box `=` compares areas, so the row must also be
/// *identical*: its text form equals the text form of the sent value read
/// by the same type on this session (one output setting for both sides).
/// The `=` stays for index use; types without `=` compare by text only.
pub(super) fn conditions(
    rel: &RelationInfo,
    cols: &[(&TargetColumn, u8)],
    next: &mut impl FnMut() -> usize,
) -> String {
    let parts: Vec<String> = cols
        .iter()
        .map(|(c, m)| {
            let (ident, cast) = (&c.ident, &c.cast);
            match m {
                b'=' if rel.full_identity => {
                    let n = next();
                    format!("{ident} = ${n}::text::{cast} AND {ident}::text = (${n}::text::{cast})::text")
                }
                b'=' => format!("{ident} = ${}::text::{cast}", next()),
                b't' => format!("{ident}::text = (${}::text::{cast})::text", next()),
                _ => format!("{ident} IS NULL"),
            }
        })
        .collect();
    // Never empty (push_match refuses that): an empty match would be a
    // syntax error here, never a match of every row.
    parts.join(" AND ")
}

/// Under REPLICA IDENTITY FULL duplicate rows exist, and a message changes
/// exactly one of them: pick one physical row.
pub(super) fn locate(rel: &RelationInfo, cond: &str) -> String {
    match (rel.full_identity, rel.partitioned) {
        (false, _) => cond.to_string(),
        (true, false) => format!(
            "ctid = (SELECT ctid FROM ONLY {} WHERE {cond} LIMIT 1)",
            rel.qualified
        ),
        (true, true) => format!(
            "(tableoid, ctid) = (SELECT tableoid, ctid FROM {} WHERE {cond} LIMIT 1)",
            rel.qualified
        ),
    }
}

/// Prepared statements by key.
#[derive(Default)]
pub(super) struct StatementCache {
    statements: HashMap<Key, tokio_postgres::Statement>,
    /// Existence checks ([`exists_sql`]) by the key of their change.
    exists: HashMap<Key, tokio_postgres::Statement>,
}

impl StatementCache {
    /// The prepared statement for `key`, preparing it on first use.
    pub(super) async fn get(
        &mut self,
        client: &tokio_postgres::Client,
        rel: &RelationInfo,
        key: &Key,
    ) -> Result<tokio_postgres::Statement, tokio_postgres::Error> {
        if let Some(stmt) = self.statements.get(key) {
            return Ok(stmt.clone());
        }
        let stmt = client.prepare(&sql(rel, key)).await?;
        self.statements.insert(key.clone(), stmt.clone());
        Ok(stmt)
    }

    /// The prepared existence check of the row `key`'s change matches.
    pub(super) async fn get_exists(
        &mut self,
        client: &tokio_postgres::Client,
        rel: &RelationInfo,
        key: &Key,
    ) -> Result<tokio_postgres::Statement, tokio_postgres::Error> {
        if let Some(stmt) = self.exists.get(key) {
            return Ok(stmt.clone());
        }
        let stmt = client.prepare(&exists_sql(rel, key)).await?;
        self.exists.insert(key.clone(), stmt.clone());
        Ok(stmt)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use bytes::Bytes;
    use walrelay_proto::{Cell, OldTuple, TupleData};

    use super::*;
    use crate::apply::relations::{RelationInfo, TargetColumn};

    pub(crate) fn col(name: &str, key: bool, identity_always: bool) -> Option<TargetColumn> {
        Some(TargetColumn {
            ident: format!("\"{name}\""),
            cast: "pg_catalog.text".into(),
            key,
            identity_always,
            has_eq: true,
        })
    }

    pub(crate) fn rel(full_identity: bool, columns: Vec<Option<TargetColumn>>) -> RelationInfo {
        RelationInfo {
            masks: Vec::new(),
            id: 1,
            display: "public.t".into(),
            qualified: "\"public\".\"t\"".into(),
            full_identity,
            partitioned: false,
            key_names: columns
                .iter()
                .flatten()
                .filter(|c| c.key)
                .map(|c| c.ident.trim_matches('"').to_string())
                .collect(),
            columns,
            target_only: vec!["\"note\"".into()],
            suppressible: false,
            cascade_from: Vec::new(),
            snapshot_lsn: Default::default(),
            generation: 1,
        }
    }

    pub(crate) fn t(v: &str) -> Cell {
        Cell::Text(Bytes::copy_from_slice(v.as_bytes()))
    }

    pub(crate) fn row(cells: &[Cell]) -> TupleData {
        TupleData {
            cells: cells.to_vec(),
        }
    }

    #[test]
    fn a_change_without_a_key_value_is_refused_never_matching_every_row() {
        // An unchanged TOASTed key and no old key: what sources before the
        // November 2022 minor releases send.
        let keyed = rel(false, vec![col("id", true, false), col("v", false, false)]);
        let new = row(&[Cell::UnchangedToast, t("secret value")]);
        let err = update(&keyed, None, &new).unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, PlanError::NoMatch { .. }), "{text}");
        assert!(
            text.contains("public.t") && text.contains("key column(s) id"),
            "{text}"
        );
        assert!(!text.contains("secret"), "no values in errors: {text}");
        // One of two key columns missing would match other rows too.
        let pair = rel(false, vec![col("a", true, false), col("b", true, false)]);
        let old = OldTuple::Key(row(&[t("1"), Cell::UnchangedToast]));
        assert!(matches!(
            delete(&pair, &old),
            Err(PlanError::NoMatch { .. })
        ));
        // REPLICA IDENTITY FULL with nothing to match.
        let full = rel(true, vec![col("v", false, false)]);
        let old = OldTuple::Full(row(&[Cell::UnchangedToast]));
        assert!(matches!(
            delete(&full, &old),
            Err(PlanError::NoMatch { .. })
        ));
    }

    #[test]
    fn full_identity_matches_the_identical_value_keys_the_equal_one() {
        let full = rel(true, vec![col("n", false, false)]);
        let planned = delete(&full, &OldTuple::Full(row(&[t("1.00")]))).unwrap();
        assert!(sql(&full, &planned.key).contains(
            "\"n\" = $1::text::pg_catalog.text AND \"n\"::text = ($1::text::pg_catalog.text)::text"
        ));
        let keyed = rel(false, vec![col("id", true, false)]);
        let planned = delete(&keyed, &OldTuple::Key(row(&[t("1")]))).unwrap();
        assert_eq!(
            sql(&keyed, &planned.key),
            "DELETE FROM ONLY \"public\".\"t\" WHERE \"id\" = $1::text::pg_catalog.text"
        );
    }
}
