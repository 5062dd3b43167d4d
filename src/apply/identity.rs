//! UPDATEs of a GENERATED ALWAYS identity column. UPDATE can set such a
//! column only to DEFAULT (the target's own sequence), never to the value
//! the source computed (`UPDATE … SET id = DEFAULT` there), and UPDATE has
//! no OVERRIDING clause; the native apply worker writes the heap directly.
//! So a row whose identity value changes is deleted and inserted anew with
//! OVERRIDING SYSTEM VALUE in one statement, keeping the values the change
//! does not carry (unchanged TOAST, target-only columns) from the old row.

use walrelay_proto::{Cell, OldTuple, TupleData};

use super::relations::RelationInfo;
use super::statements::{conditions, locate, only, picked, split, Key};

/// UPDATE modes (the first byte of an UPDATE's signature): the identity
/// value is unchanged (or there is none), a plain UPDATE.
pub(super) const PLAIN: u8 = b'U';
/// The identity value changed: delete the row and insert it anew.
const MOVE: u8 = b'M';
/// Whether the identity value changed is unknown (a non-key identity column
/// and no old row): one statement updates the row if it holds the sent
/// value and re-inserts it otherwise.
const EITHER: u8 = b'E';

/// How an UPDATE reaches the identity column: by comparing the sent value
/// with the old row's, where the change carries it.
pub(super) fn update_mode(rel: &RelationInfo, old: Option<&OldTuple>, new: &TupleData) -> u8 {
    let mut mode = PLAIN;
    for (i, (col, cell)) in rel.columns.iter().zip(&new.cells).enumerate() {
        let Some(c) = col else { continue };
        if !c.identity_always || *cell == Cell::UnchangedToast {
            continue;
        }
        let before = match old {
            Some(OldTuple::Full(t)) => t.cells.get(i),
            Some(OldTuple::Key(t)) if c.key => t.cells.get(i),
            // No K tuple: the key is unchanged.
            None if c.key => Some(cell),
            _ => None,
        };
        match before {
            Some(v) if v == cell => {}
            Some(_) => return MOVE,
            None => mode = EITHER,
        }
    }
    mode
}

/// An UPDATE that sets a GENERATED ALWAYS identity column to the source's
/// value: the row is deleted and inserted anew (OVERRIDING SYSTEM VALUE),
/// keeping its unchanged TOAST values and target-only columns. In EITHER
/// mode the row is updated in place when it holds the sent identity value.
/// The count is that of rows re-inserted or updated.
pub(super) fn update_sql(rel: &RelationInfo, key: &Key) -> String {
    let (writes, matches) = split(key);
    let mut n = 0;
    let mut next = || {
        n += 1;
        n
    };
    // Per written column, its parameter: values come first, in column order.
    let mut names = Vec::new();
    let mut values = Vec::new();
    let mut sets = Vec::new();
    let mut same_identity = Vec::new();
    for (c, code) in rel
        .columns
        .iter()
        .zip(writes)
        .filter_map(|(c, code)| c.as_ref().map(|c| (c, *code)))
    {
        names.push(c.ident.clone());
        if code != b'v' {
            values.push(format!("d.{}", c.ident));
            continue;
        }
        let value = format!("${}::text::{}", next(), c.cast);
        if c.identity_always {
            same_identity.push(format!("{} = {value}", c.ident));
        } else {
            sets.push(format!("{} = {value}", c.ident));
        }
        values.push(value);
    }
    for ident in &rel.target_only {
        names.push(ident.clone());
        values.push(format!("d.{ident}"));
    }
    let cond = conditions(rel, &picked(rel, matches), &mut next);
    let (only, table) = (only(rel), &rel.qualified);
    let insert = format!(
        "INSERT INTO {table} ({}) OVERRIDING SYSTEM VALUE SELECT {} FROM d",
        names.join(", "),
        values.join(", ")
    );
    if key.signature.first() == Some(&MOVE) {
        let located = locate(rel, &cond);
        return format!(
            "WITH d AS (DELETE FROM {only}{table} WHERE {located} RETURNING *) {insert}"
        );
    }
    let same = same_identity.join(" AND ");
    let in_place = if sets.is_empty() {
        format!("SELECT 1 FROM {only}{table} WHERE {cond} AND {same}")
    } else {
        format!(
            "UPDATE {only}{table} SET {} WHERE {cond} AND {same} RETURNING 1",
            sets.join(", ")
        )
    };
    format!(
        "WITH d AS (DELETE FROM {only}{table} WHERE {cond} AND NOT ({same}) RETURNING *), \
         i AS ({insert} RETURNING 1), u AS ({in_place}) \
         SELECT 1 FROM i UNION ALL SELECT 1 FROM u"
    )
}

#[cfg(test)]
mod tests {
    use walrelay_proto::{Cell, OldTuple};

    use crate::apply::statements::tests::{col, rel, row, t};
    use crate::apply::statements::{matched_params, sql, update};

    #[test]
    fn an_identity_always_value_is_set_by_re_inserting_the_row() {
        let keyed = rel(false, vec![col("id", true, true), col("v", false, false)]);
        // Unchanged key: a plain UPDATE that leaves the identity alone.
        let plain = update(&keyed, None, &row(&[t("1"), t("x")])).unwrap();
        assert!(sql(&keyed, &plain.key).starts_with("UPDATE ONLY"));
        // The key (the identity) changed: delete and insert the new row.
        let old = OldTuple::Key(row(&[t("1"), Cell::Null]));
        let moved = update(&keyed, Some(&old), &row(&[t("7"), Cell::UnchangedToast])).unwrap();
        assert_eq!(
            sql(&keyed, &moved.key),
            "WITH d AS (DELETE FROM ONLY \"public\".\"t\" WHERE \"id\" = $2::text::pg_catalog.text RETURNING *) \
             INSERT INTO \"public\".\"t\" (\"id\", \"v\", \"note\") OVERRIDING SYSTEM VALUE \
             SELECT $1::text::pg_catalog.text, d.\"v\", d.\"note\" FROM d"
        );
        assert_eq!(matched_params(&moved).len(), 1);
        // Outside the key and no old row: decided on the target.
        let other = rel(false, vec![col("k", true, false), col("n", false, true)]);
        let either = update(&other, None, &row(&[t("a"), t("5")])).unwrap();
        let text = sql(&other, &either.key);
        assert!(
            text.contains("NOT (\"n\" = $2::text::pg_catalog.text)"),
            "{text}"
        );
        assert!(
            text.contains("SET \"k\" = $1::text::pg_catalog.text WHERE"),
            "{text}"
        );
    }
}
