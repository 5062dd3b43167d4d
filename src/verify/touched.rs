//! Verification of what changed since a clean pass: the rows with given
//! keys, or whole tables, instead of every chunk of every table.
//!
//! Why it is enough: a row that did not change on the source since a clean
//! pass compared it cannot differ now unless something other than the
//! stream wrote to the target (out of walrelay's reach in any pass but a
//! full one). Every row that did change is named by its key in the change
//! stream, so comparing those rows — and the tables truncated, or without a
//! key, whole — covers the rest. The caller collects the set from the WAL
//! (`cutover`); this module only compares.
//!
//! The set is bounded: past `max_keys` keys a table is compared whole
//! instead, so memory follows configuration, not the write rate.

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use tokio_postgres::types::ToSql;

use crate::config::Config;
use crate::migration::MigrationPlan;
use crate::pg::catalog;

use super::plan::{self, Key, Shape, Side};
use super::report::{Basis, Report, TableReport};
use super::{settle_keys, verify_table, Ctx, Throttle, VerifyError, VerifyOptions};

/// Keys compared per statement (each side, concurrently).
const BATCH: usize = 10_000;

/// What changed in one table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TableChanges {
    /// These keys (in the order of the table's verification key).
    Keys(HashSet<Key>),
    /// Too many keys, a TRUNCATE, or no usable key: compare it whole.
    Whole,
}

/// The tables and rows changed since some point, by `schema.name` (a name
/// with dots could stand for two tables: both are then compared).
#[derive(Debug, Clone, Default)]
pub struct Touched {
    tables: HashMap<String, TableChanges>,
    keys: usize,
    max_keys: usize,
}

impl Touched {
    /// An empty set holding at most `max_keys` keys in all.
    pub fn new(max_keys: usize) -> Self {
        Touched {
            tables: HashMap::new(),
            keys: 0,
            max_keys,
        }
    }

    /// Records a changed row of `table` by its key.
    pub fn add_key(&mut self, table: &str, key: Key) {
        if !self.tables.contains_key(table) {
            self.tables
                .insert(table.to_string(), TableChanges::Keys(HashSet::new()));
        }
        let Some(TableChanges::Keys(keys)) = self.tables.get_mut(table) else {
            return;
        };
        if keys.insert(key) {
            self.keys += 1;
        }
        if self.keys > self.max_keys {
            // The biggest set goes whole: it costs the least per key dropped.
            self.widen_largest();
        }
    }

    /// Records that `table` must be compared whole.
    pub fn add_whole(&mut self, table: &str) {
        if let Some(TableChanges::Keys(keys)) = self.tables.get(table) {
            self.keys -= keys.len();
        }
        self.tables.insert(table.to_string(), TableChanges::Whole);
    }

    fn widen_largest(&mut self) {
        let largest = self
            .tables
            .iter()
            .filter_map(|(t, c)| match c {
                TableChanges::Keys(k) => Some((k.len(), t.clone())),
                TableChanges::Whole => None,
            })
            .max();
        if let Some((_, table)) = largest {
            self.add_whole(&table);
        }
    }

    /// Moves everything of `other` into this set.
    pub fn merge(&mut self, other: Touched) {
        for (table, changes) in other.tables {
            match changes {
                TableChanges::Whole => self.add_whole(&table),
                TableChanges::Keys(keys) => {
                    for key in keys {
                        self.add_key(&table, key);
                    }
                }
            }
        }
    }

    /// Keys held (tables compared whole not counted).
    pub fn keys(&self) -> usize {
        self.keys
    }

    /// Tables to be compared whole.
    pub fn whole_tables(&self) -> usize {
        self.tables
            .values()
            .filter(|c| **c == TableChanges::Whole)
            .count()
    }

    pub fn is_empty(&self) -> bool {
        self.tables.is_empty()
    }

    /// Splits off the tables to be compared whole, leaving the keys.
    pub fn take_whole(&mut self) -> Touched {
        let mut whole = Touched::new(self.max_keys);
        self.tables.retain(|table, changes| {
            if *changes == TableChanges::Whole {
                whole.tables.insert(table.clone(), TableChanges::Whole);
                false
            } else {
                true
            }
        });
        whole
    }

    /// What changed in `table` (`schema.name`), if anything.
    pub fn changes(&self, table: &str) -> Option<&TableChanges> {
        self.tables.get(table)
    }
}

/// Compares the touched rows and tables (and the schema of every selected
/// table). Returns the report and the keys that could not be settled (rows
/// that kept changing while the target did not catch up), for a later
/// round.
pub async fn run(
    config: &Config,
    migration: &MigrationPlan,
    opts: &VerifyOptions,
    touched: &Touched,
) -> Result<(Report, Touched), VerifyError> {
    super::scoped_pass(config, migration, opts, Some(touched)).await
}

/// Compares the rows with `keys` on both sides; differing keys are
/// confirmed like a bisected chunk's (in-flight changes settle).
pub(super) async fn verify_keys(
    ctx: &Ctx<'_>,
    table: &catalog::Table,
    keys: &HashSet<Key>,
) -> Result<(TableReport, Vec<Key>), VerifyError> {
    let started = Instant::now();
    let Some(shape) = plan::shape(&ctx.source, &ctx.target, table, &ctx.map).await? else {
        let basis = Basis::Skipped {
            reason: "missing on target".into(),
        };
        return Ok((TableReport::new(table.display(), basis), Vec::new()));
    };
    if shape.key.is_empty() || keys.iter().any(|k| k.len() != shape.key.len()) {
        // The key the changes were recorded by is not the one compared by.
        let mut throttle = Throttle::new(None);
        return Ok((verify_table(ctx, table, &mut throttle).await?, Vec::new()));
    }
    let columns = shape.key.iter().map(|k| k.name.clone()).collect();
    let mut report = TableReport::new(shape.display.clone(), Basis::Key { columns });
    let keys: Vec<&Key> = keys.iter().collect();
    let mut candidates = Vec::new();
    for batch in keys.chunks(BATCH) {
        let (source, target) = tokio::join!(
            keyed_hashes(&ctx.source, &shape, Side::Source, batch),
            keyed_hashes(&ctx.target, &shape, Side::Target, batch),
        );
        let (source, target) = (source?, target?);
        report.chunks += 1;
        report.source_rows += batch.len() as u64;
        candidates.extend(
            source
                .keys()
                .chain(target.keys())
                .filter(|k| source.get(*k) != target.get(*k))
                .cloned(),
        );
    }
    candidates.sort();
    candidates.dedup();
    let unsettled = if candidates.is_empty() {
        Vec::new()
    } else if let Some(why) = super::behind::check(ctx, &shape, false).await? {
        // Left for a later round, once the stream has applied them.
        report.behind += 1;
        super::note_behind(ctx, &mut report, why.as_deref());
        candidates
    } else {
        report.chunks_rechecked = 1;
        settle_keys(ctx, &shape, candidates, &mut report).await?
    };
    report.seconds = started.elapsed().as_secs_f64();
    report.max_chunk_seconds = report.seconds;
    Ok((report, unsettled))
}

/// Per-row hashes of the rows with `keys` on one side, by key text. The
/// keys travel as one text array per key column (one statement per batch
/// however many keys), cast to the side's key types.
async fn keyed_hashes(
    client: &tokio_postgres::Client,
    shape: &Shape,
    side: Side,
    keys: &[&Key],
) -> Result<HashMap<Key, i64>, VerifyError> {
    let columns: Vec<Vec<&str>> = (0..shape.key.len())
        .map(|i| keys.iter().map(|k| k[i].as_str()).collect())
        .collect();
    let sql = keyed_sql(shape, side);
    let params: Vec<&(dyn ToSql + Sync)> =
        columns.iter().map(|c| c as &(dyn ToSql + Sync)).collect();
    let rows = client
        .query(&sql, &params)
        .await
        .map_err(VerifyError::sql("hashing touched rows by key"))?;
    Ok(rows
        .into_iter()
        .map(|row| {
            let key: Key = (1..=shape.key.len()).map(|i| row.get(i)).collect();
            (key, row.get(0))
        })
        .collect())
}

/// `SELECT hash, k::text… FROM t WHERE (k…) IN (SELECT $1[i]::type… FROM unnest(…))`.
fn keyed_sql(shape: &Shape, side: Side) -> String {
    let names: Vec<String> = (0..shape.key.len()).map(|i| format!("k{i}")).collect();
    let arrays: Vec<String> = (1..=shape.key.len())
        .map(|i| format!("${i}::text[]"))
        .collect();
    let casts: Vec<String> = shape
        .key
        .iter()
        .zip(&names)
        .map(|(k, n)| {
            let ty = match side {
                Side::Source => &k.source_type,
                Side::Target => &k.target_type,
            };
            format!("u.{n}::{ty}")
        })
        .collect();
    format!(
        "SELECT {}, {} FROM {} WHERE ({}) IN (SELECT {} FROM unnest({}) AS u({}))",
        super::hash::row_hash_expr(shape, side),
        shape.key_text_list(),
        shape.relation(side),
        shape.key_list(),
        casts.join(", "),
        arrays.join(", "),
        names.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(name: &str) -> String {
        format!("public.{name}")
    }

    #[test]
    fn the_largest_table_goes_whole_when_keys_exceed_the_bound() {
        let mut touched = Touched::new(3);
        touched.add_key(&t("a"), vec!["1".into()]);
        touched.add_key(&t("a"), vec!["1".into()]);
        touched.add_key(&t("a"), vec!["2".into()]);
        touched.add_key(&t("b"), vec!["1".into()]);
        assert_eq!((touched.keys(), touched.whole_tables()), (3, 0));
        touched.add_key(&t("a"), vec!["3".into()]);
        assert_eq!((touched.keys(), touched.whole_tables()), (1, 1));
        assert_eq!(touched.tables[&t("a")], TableChanges::Whole);
        // A table compared whole takes no more keys.
        touched.add_key(&t("a"), vec!["4".into()]);
        assert_eq!(touched.keys(), 1);
    }

    #[test]
    fn whole_tables_split_off_and_merge_back() {
        let mut touched = Touched::new(100);
        touched.add_key(&t("a"), vec!["1".into()]);
        touched.add_whole(&t("b"));
        let whole = touched.take_whole();
        assert_eq!((touched.keys(), touched.whole_tables()), (1, 0));
        assert_eq!(whole.whole_tables(), 1);
        let mut later = Touched::new(100);
        later.add_key(&t("b"), vec!["9".into()]);
        later.merge(whole);
        assert_eq!((later.keys(), later.whole_tables()), (0, 1));
    }

    #[test]
    fn touched_keys_are_cast_per_side_from_one_array_per_column() {
        let shape = crate::verify::plan::sample_shape();
        let sql = keyed_sql(&shape, Side::Target);
        assert!(
            sql.ends_with(
                "FROM ONLY \"s\".\"t\" WHERE (\"a\", \"b\") IN (SELECT u.k0::bigint, u.k1::text \
                 FROM unnest($1::text[], $2::text[]) AS u(k0, k1))"
            ),
            "{sql}"
        );
    }
}
