//! The hash queries, run server-side on both sides.
//!
//! Per row: the XOR of one 64-bit hash per column, each seeded with the
//! column's position (so equal values in swapped columns differ) and a
//! per-position constant for NULL (so NULL and '' differ):
//! - integer columns (smallint/integer/bigint on both sides):
//!   `hashint8extended(c::bigint, i)`, which agrees across the three types;
//! - `text`/`varchar`: `hashtextextended(c COLLATE "C", i)`, and `char(n)`:
//!   `hashbpcharextended(c COLLATE "C", i)`, which hashes the same bytes as
//!   the text form without the padding (and ~4x faster than casting);
//! - every other column: `hashtextextended(c::text COLLATE "C", i)`, a hash
//!   of the value's text form. The text goes through the type's output
//!   function under the pinned session settings (`connect::SESSION_SETTINGS`),
//!   so types that differ only in OID (enums, domains) and servers with
//!   different DateStyle/TimeZone/extra_float_digits defaults agree.
//!   `COLLATE "C"` keeps a nondeterministic collation from hashing
//!   case-insensitively.
//!
//! When the servers' encodings differ (a LATIN1 source, a UTF8 target),
//! every column but the integers is hashed as the UTF8 bytes of its text
//! form (`convert_to`), so equal characters hash equal on both.
//!
//! Hashing column by column rather than `ROW(c…)::text` avoids record_out,
//! which copies and escapes every character of every value: on a table with
//! TOASTed text it is ~5x slower (benches/verify). The hash functions are
//! the ones hash partitioning relies on, so their values are stable across
//! PostgreSQL versions (not across byte orders: both servers are assumed
//! little-endian).
//!
//! Per chunk: `count(*)` plus `sum(row hash)`, order-independent. `sum` of
//! `bigint` accumulates in 128 bits (as `numeric` result), so it does not
//! wrap, and unlike `bit_xor` two identical rows (possible in a table
//! without a key) do not cancel out.

use std::collections::HashMap;

use tokio_postgres::types::ToSql;
use tokio_postgres::Client;
use walrelay_proto::Lsn;

use super::plan::{Key, Range, Shape, Side};
use super::VerifyError;

/// The source position compared with the target's checkpoint. The insert
/// position, not `pg_current_wal_lsn()` (the *write* position): with
/// `synchronous_commit = off` a commit can be visible while its record is
/// not yet written, so the write position can lie below a change we have
/// already seen, and the target would look "caught up" without it.
pub(crate) const SOURCE_LSN_EXPR: &str = "pg_current_wal_insert_lsn()";

/// The source's [`SOURCE_LSN_EXPR`] on its own, inside the caller's
/// transaction if one is open.
pub(crate) async fn source_lsn(client: &Client) -> Result<Lsn, VerifyError> {
    let what = "reading the source WAL position";
    client
        .query_one(&format!("SELECT {SOURCE_LSN_EXPR}"), &[])
        .await
        .map_err(VerifyError::sql(what))?
        .try_get(0)
        .map_err(VerifyError::sql(what))
}

/// Parameters for tokio-postgres from text values.
pub(crate) fn params(values: &[String]) -> Vec<&(dyn ToSql + Sync)> {
    values.iter().map(|v| v as &(dyn ToSql + Sync)).collect()
}

/// One side's aggregate over a range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Aggregate {
    pub rows: i64,
    pub sum: String,
}

/// The per-row hash expression over the shape's columns, for one side.
pub(crate) fn row_hash_expr(shape: &Shape, side: Side) -> String {
    if shape.columns.is_empty() {
        return "0::bigint".into();
    }
    let types = match side {
        Side::Source => &shape.source_types,
        Side::Target => &shape.target_types,
    };
    let parts: Vec<String> = shape
        .columns
        .iter()
        .zip(types)
        .zip(&shape.integer)
        .enumerate()
        .map(|(i, ((name, ty), integer))| {
            let mut col = crate::pg::catalog::quote_ident(name);
            let mut ty = ty.as_str();
            if side == Side::Target && padded_into_text(shape, i) {
                // A text column holding a character(n) column's values holds
                // them padded (copied, streamed) or not (ALTER … TYPE text
                // strips): either way, trailing blanks are insignificant to
                // the source type, as its hash (hashbpcharextended) says.
                col = format!("rtrim({col}, ' ')");
                ty = "text";
            }
            let hash = if shape.transcode && !integer {
                transcoded_hash(&col, i + 1)
            } else {
                column_hash(&col, ty, *integer, i + 1)
            };
            // A NULL constant per position: NULL differs from every value.
            format!("coalesce({hash}, {})", -((i + 1) as i64) * 7_919)
        })
        .collect();
    parts.join(" # ")
}

/// A `character(n)` source column whose target column is a wider text type
/// (`--schema skip`): hashed on the target without trailing blanks.
fn padded_into_text(shape: &Shape, i: usize) -> bool {
    use crate::pg::widening::is_blank_padded;
    is_blank_padded(&shape.source_types[i]) && !is_blank_padded(&shape.target_types[i])
}

/// The hash of one column on one side; equal values (by text form) give
/// equal hashes whichever of the forms each side uses.
fn column_hash(col: &str, ty: &str, integer: bool, seed: usize) -> String {
    if integer {
        format!("hashint8extended({col}::bigint, {seed})")
    } else if ty.ends_with("[]") {
        // Arrays (`character varying(10)[]` too) by their text form.
        format!("hashtextextended({col}::text COLLATE \"C\", {seed})")
    } else if ty == "text" || ty.starts_with("character varying") {
        format!("hashtextextended({col} COLLATE \"C\", {seed})")
    } else if ty == "character" || ty.starts_with("character(") {
        format!("hashbpcharextended({col} COLLATE \"C\", {seed})")
    } else {
        format!("hashtextextended({col}::text COLLATE \"C\", {seed})")
    }
}

/// The hash of a column's text form as UTF8 bytes, for servers whose
/// encodings differ: the same characters are different bytes in LATIN1 and
/// UTF8, and `hashtextextended` hashes bytes. `convert_to` gives the UTF8
/// bytes on either server, and their `escape` text form is ASCII, the same
/// bytes on both.
fn transcoded_hash(col: &str, seed: usize) -> String {
    format!(
        "hashtextextended(encode(convert_to({col}::text, 'UTF8'), 'escape') COLLATE \"C\", {seed})"
    )
}

/// The aggregate of `range` on one side, plus (source) the WAL insert
/// position read after the scan in the same statement.
pub(crate) async fn aggregate(
    client: &Client,
    shape: &Shape,
    side: Side,
    range: &Range,
) -> Result<(Aggregate, Option<Lsn>), VerifyError> {
    let (predicate, values) = if shape.key.is_empty() {
        ("true".to_string(), Vec::new())
    } else {
        shape.range_predicate(side, range, 1)
    };
    let position = match side {
        Side::Source => SOURCE_LSN_EXPR,
        Side::Target => "NULL::pg_lsn",
    };
    let sql = format!(
        "SELECT count(*), coalesce(sum({}), 0)::text, {position} FROM {} WHERE {predicate}",
        row_hash_expr(shape, side),
        shape.relation(side)
    );
    let what = "hashing a chunk";
    let row = client
        .query_one(&sql, &params(&values))
        .await
        .map_err(VerifyError::sql(what))?;
    let lsn = row.try_get(2).map_err(VerifyError::sql(what))?;
    Ok((
        Aggregate {
            rows: row.get(0),
            sum: row.get(1),
        },
        lsn,
    ))
}

/// Per-row hashes of `range` on one side, by key.
pub(crate) async fn row_hashes(
    client: &Client,
    shape: &Shape,
    side: Side,
    range: &Range,
) -> Result<HashMap<Key, i64>, VerifyError> {
    let (predicate, values) = shape.range_predicate(side, range, 1);
    let sql = format!(
        "SELECT {}, {} FROM {} WHERE {predicate}",
        row_hash_expr(shape, side),
        shape.key_text_list(),
        shape.relation(side)
    );
    let rows = client
        .query(&sql, &params(&values))
        .await
        .map_err(VerifyError::sql("hashing rows"))?;
    collect(shape, rows)
}

/// Per-row hashes of the rows with the given keys (at most ~1000 per call).
/// `lock` adds `FOR SHARE` (source only): the rows cannot change until the
/// caller's transaction ends.
pub(crate) async fn key_hashes(
    client: &impl tokio_postgres::GenericClient,
    shape: &Shape,
    side: Side,
    keys: &[Key],
    lock: bool,
) -> Result<HashMap<Key, i64>, VerifyError> {
    if keys.is_empty() {
        return Ok(HashMap::new());
    }
    let (list, values) = key_list(shape, side, keys);
    let sql = format!(
        "SELECT {}, {} FROM {} WHERE ({}) IN ({list}){}",
        row_hash_expr(shape, side),
        shape.key_text_list(),
        shape.relation(side),
        shape.key_list(),
        if lock { " FOR SHARE" } else { "" }
    );
    let rows = client
        .query(&sql, &params(&values))
        .await
        .map_err(VerifyError::sql("hashing rows by key"))?;
    collect(shape, rows)
}

/// `($1::t, $2::t), ($3::t, $4::t)` for `keys`, and the flattened values.
pub(crate) fn key_list(shape: &Shape, side: Side, keys: &[Key]) -> (String, Vec<String>) {
    let width = shape.key.len();
    let list: Vec<String> = (0..keys.len())
        .map(|i| shape.key_params(side, 1 + i * width))
        .collect();
    let values = keys.iter().flat_map(|k| k.iter().cloned()).collect();
    (list.join(", "), values)
}

fn collect(
    shape: &Shape,
    rows: Vec<tokio_postgres::Row>,
) -> Result<HashMap<Key, i64>, VerifyError> {
    rows.into_iter()
        .map(|row| Ok((shape.key_of(&row, 1)?, row.get(0))))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verify::plan::sample_shape as shape;

    #[test]
    fn composite_ranges_compare_rows_with_per_side_casts() {
        let range = Range {
            lower: Some(vec!["1".into(), "x".into()]),
            upper: Some(vec!["9".into(), "y".into()]),
        };
        let (sql, values) = shape().range_predicate(Side::Target, &range, 1);
        assert_eq!(
            sql,
            "(\"a\", \"b\") > ($1::text::bigint, $2::text::text) AND (\"a\", \"b\") <= ($3::text::bigint, $4::text::text)"
        );
        assert_eq!(values, ["1", "x", "9", "y"]);
        let (sql, values) = shape().range_predicate(Side::Source, &Range::default(), 1);
        assert_eq!((sql.as_str(), values.len()), ("true", 0));
    }

    #[test]
    fn each_column_hashed_by_position_with_a_null_constant() {
        let source = row_hash_expr(&shape(), Side::Source);
        assert_eq!(
            source,
            "coalesce(hashint8extended(\"a\"::bigint, 1), -7919) # \
             coalesce(hashtextextended(\"b\" COLLATE \"C\", 2), -15838) # \
             coalesce(hashbpcharextended(\"c\" COLLATE \"C\", 3), -23757) # \
             coalesce(hashtextextended(\"d\"::text COLLATE \"C\", 4), -31676)"
        );
        // The target's text column c (wider than the source's character(4))
        // is hashed without trailing blanks, as the source's hash drops them.
        let target = row_hash_expr(&shape(), Side::Target);
        assert!(
            target.contains("hashtextextended(rtrim(\"c\", ' ') COLLATE \"C\", 3)"),
            "{target}"
        );
        let mut transcoded = shape();
        transcoded.transcode = true;
        let both = row_hash_expr(&transcoded, Side::Source);
        assert!(
            both.starts_with("coalesce(hashint8extended(\"a\"::bigint, 1), -7919) # ")
                && both.contains("hashtextextended(encode(convert_to(\"c\"::text, 'UTF8'), 'escape') COLLATE \"C\", 3)"),
            "{both}"
        );
        assert_eq!(
            both,
            row_hash_expr(&transcoded, Side::Target).replace("rtrim(\"c\", ' ')", "\"c\"")
        );
        let mut same = shape();
        same.target_types[2] = "character(4)".into();
        assert!(row_hash_expr(&same, Side::Target)
            .contains("hashbpcharextended(\"c\" COLLATE \"C\", 3)"));
    }
}
