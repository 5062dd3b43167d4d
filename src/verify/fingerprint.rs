//! Rows of a table without a key, named by fingerprint: the per-row hash
//! verify already computes on each server (see [`hash`](super::hash)), so
//! encodings, collations and server settings behave as in keyed verify.
//!
//! A key-less table is a multiset of rows: it is compared as the multiset of
//! fingerprints with their multiplicities (`GROUP BY fingerprint,
//! count(*)`), never by values. The differing fingerprints are found by
//! bisecting the fingerprint space: level `n` groups the rows by the top
//! `8·n` bits of their fingerprint (`f >> (64 - 8·n)`, the same arithmetic
//! shift on both servers) and compares each group's count and hash sum;
//! only the groups that differ are split further (`WHERE f >> … =
//! ANY(parents)`), and a group of at most [`LEAF_ROWS`] rows is read as
//! fingerprints with their counts. A query splits at most 256 parents (so
//! returns at most 65 536 groups) or reads leaves of at most 65 536 rows;
//! what is kept between queries is the differing groups and fingerprints
//! (at most [`MAX_FINGERPRINTS`]): memory is bounded, never the table's
//! size. Most drift needs one scan per side and level (at most 8).

use std::collections::{BTreeMap, HashMap};

use tokio_postgres::Client;

use super::hash::{row_hash_expr, Aggregate};
use super::plan::{Shape, Side};
use super::VerifyError;

/// Rows in a group at which its fingerprints are read one by one.
const LEAF_ROWS: i64 = 512;
/// Bits of the fingerprint added per bisection level.
const BITS: u32 = 8;
/// Differing fingerprints (or groups) pinpointed per table at most; beyond
/// it the table's drift is reported by count only.
pub(crate) const MAX_FINGERPRINTS: usize = 100_000;

/// A fingerprint and its multiplicity on each side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Counts {
    pub source: i64,
    pub target: i64,
}

/// Differing fingerprints and their counts on both sides.
pub(crate) type Differences = BTreeMap<i64, Counts>;

/// `None` when more than [`MAX_FINGERPRINTS`] groups differ.
pub(crate) type Found = Option<Differences>;

/// The fingerprints whose counts differ between `source` and `target`
/// (both read as they are now; under the caller's lock if it holds one).
pub(crate) async fn differing(
    source: &Client,
    target: &Client,
    shape: &Shape,
) -> Result<Found, VerifyError> {
    let mut found = Differences::new();
    // Level 0: the whole table as one group.
    let (s, t) = tokio::join!(
        groups(source, shape, Side::Source, 0, &[]),
        groups(target, shape, Side::Target, 0, &[])
    );
    let (mut differ, mut leaves) = split(&s?, &t?);
    let mut level = 0;
    loop {
        // Leaves in batches of a bounded number of rows: memory per query.
        for batch in leaf_batches(&leaves) {
            let shift = shift(level);
            let (s, t) = tokio::join!(
                counts(source, shape, Side::Source, shift, batch),
                counts(target, shape, Side::Target, shift, batch)
            );
            found.extend(compare(&s?, &t?));
            if found.len() > MAX_FINGERPRINTS {
                return Ok(None);
            }
        }
        if differ.is_empty() {
            return Ok(Some(found));
        }
        level += 1;
        let (mut next_differ, mut next_leaves) = (Vec::new(), Vec::new());
        // Parents in batches: at most 256 groups each per query.
        for batch in differ.chunks(PARENTS_PER_QUERY) {
            let (s, t) = tokio::join!(
                groups(source, shape, Side::Source, level, batch),
                groups(target, shape, Side::Target, level, batch)
            );
            let (s, t) = (s?, t?);
            if shift(level) == 0 {
                // The prefix is the whole fingerprint: the groups are the counts.
                let rows = |g: &HashMap<i64, Aggregate>| -> HashMap<i64, i64> {
                    g.iter().map(|(fp, a)| (*fp, a.rows)).collect()
                };
                found.extend(compare(&rows(&s), &rows(&t)));
            } else {
                let (d, l) = split(&s, &t);
                next_differ.extend(d);
                next_leaves.extend(l);
            }
            if next_differ.len() + next_leaves.len() + found.len() > MAX_FINGERPRINTS {
                return Ok(None);
            }
        }
        (differ, leaves) = (next_differ, next_leaves);
    }
}

/// Differing groups split per query (each yields at most 256 groups).
const PARENTS_PER_QUERY: usize = 256;
/// Rows (at most, per side) of the leaf groups read in one query.
const LEAF_BATCH_ROWS: usize = 65_536;

/// Leaf prefixes in batches of at most [`LEAF_BATCH_ROWS`] rows per side
/// (each leaf holds at most [`LEAF_ROWS`]).
fn leaf_batches(leaves: &[i64]) -> std::slice::Chunks<'_, i64> {
    leaves.chunks(LEAF_BATCH_ROWS / LEAF_ROWS as usize)
}

/// The right shift that leaves a level's prefix (level 0: one group;
/// level 8: the whole fingerprint).
fn shift(level: u32) -> u32 {
    64 - BITS * level
}

/// The differing groups of one level: those to split further and those
/// small enough (or at the full fingerprint) to read as fingerprints.
fn split(
    source: &HashMap<i64, Aggregate>,
    target: &HashMap<i64, Aggregate>,
) -> (Vec<i64>, Vec<i64>) {
    let (mut differ, mut leaves) = (Vec::new(), Vec::new());
    for prefix in source
        .keys()
        .chain(target.keys().filter(|p| !source.contains_key(p)))
    {
        let (s, t) = (source.get(prefix), target.get(prefix));
        if s == t {
            continue;
        }
        let rows = s.map_or(0, |a| a.rows).max(t.map_or(0, |a| a.rows));
        if rows <= LEAF_ROWS {
            leaves.push(*prefix);
        } else {
            differ.push(*prefix);
        }
    }
    (differ, leaves)
}

/// Fingerprints whose counts differ.
pub(crate) fn compare(source: &HashMap<i64, i64>, target: &HashMap<i64, i64>) -> Differences {
    source
        .keys()
        .chain(target.keys())
        .filter_map(|fp| {
            let counts = Counts {
                source: source.get(fp).copied().unwrap_or(0),
                target: target.get(fp).copied().unwrap_or(0),
            };
            (counts.source != counts.target).then_some((*fp, counts))
        })
        .collect()
}

/// `(SELECT <fingerprint> AS f FROM <table> OFFSET 0)`: `OFFSET 0` keeps
/// the subquery from being flattened, so each row is hashed once although
/// `f` is used twice.
pub(crate) fn fingerprinted(shape: &Shape, side: Side, extra: &str) -> String {
    format!(
        "(SELECT {} AS f{extra} FROM {} OFFSET 0) r",
        row_hash_expr(shape, side),
        shape.relation(side)
    )
}

/// Count and hash sum per prefix of `level`, within `parents` (the
/// differing prefixes of the level above; level 1's parent is the whole
/// table).
async fn groups(
    client: &Client,
    shape: &Shape,
    side: Side,
    level: u32,
    parents: &[i64],
) -> Result<HashMap<i64, Aggregate>, VerifyError> {
    let prefix = if level == 0 {
        "0::bigint".to_string()
    } else {
        format!("f >> {}", shift(level))
    };
    // `>> 64` would not select level 0's one group: the server computes it
    // as `>> 0` (a C shift by the width).
    let filtered = level >= 2;
    let filter = if filtered {
        format!("WHERE f >> {} = ANY($1::int8[])", shift(level - 1))
    } else {
        String::new()
    };
    let sql = format!(
        "SELECT {prefix}, count(*), coalesce(sum(f), 0)::text FROM {} {filter} GROUP BY 1",
        fingerprinted(shape, side, "")
    );
    let what = "hashing rows by fingerprint";
    let rows = if filtered {
        client.query(&sql, &[&parents]).await
    } else {
        client.query(&sql, &[]).await
    }
    .map_err(VerifyError::sql(what))?;
    Ok(rows
        .iter()
        .map(|r| {
            let aggregate = Aggregate {
                rows: r.get(1),
                sum: r.get(2),
            };
            (r.get(0), aggregate)
        })
        .collect())
}

/// Count per fingerprint of the rows whose prefix (`f >> shift`; shift 64
/// means every row) is one of `prefixes`.
async fn counts(
    client: &Client,
    shape: &Shape,
    side: Side,
    shift: u32,
    prefixes: &[i64],
) -> Result<HashMap<i64, i64>, VerifyError> {
    if shift >= 64 {
        let sql = format!(
            "SELECT f, count(*) FROM {} GROUP BY 1",
            fingerprinted(shape, side, "")
        );
        return collect(client.query(&sql, &[]).await);
    }
    let sql = format!(
        "SELECT f, count(*) FROM {} WHERE f >> {shift} = ANY($1::int8[]) GROUP BY 1",
        fingerprinted(shape, side, "")
    );
    collect(client.query(&sql, &[&prefixes]).await)
}

/// The counts of exactly these fingerprints on one side (absent: 0).
pub(crate) async fn exact_counts(
    client: &Client,
    shape: &Shape,
    side: Side,
    fingerprints: &[i64],
) -> Result<HashMap<i64, i64>, VerifyError> {
    if fingerprints.is_empty() {
        return Ok(HashMap::new());
    }
    counts(client, shape, side, 0, fingerprints).await
}

fn collect(
    rows: Result<Vec<tokio_postgres::Row>, tokio_postgres::Error>,
) -> Result<HashMap<i64, i64>, VerifyError> {
    Ok(rows
        .map_err(VerifyError::sql("counting rows by fingerprint"))?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect())
}

/// Whether `differences` account for the whole difference between the two
/// tables' aggregates (count and hash sum): then no other fingerprint
/// differs (barring a 64-bit hash collision), and the table is the
/// pinpointed rows away from equal.
pub(crate) fn explains(differences: &Differences, source: &Aggregate, target: &Aggregate) -> bool {
    let (Ok(s_sum), Ok(t_sum)) = (source.sum.parse::<i128>(), target.sum.parse::<i128>()) else {
        return false;
    };
    let rows: i128 = differences
        .values()
        .map(|c| i128::from(c.source - c.target))
        .sum();
    let sum: i128 = differences
        .iter()
        .map(|(fp, c)| i128::from(*fp) * i128::from(c.source - c.target))
        .sum();
    rows == i128::from(source.rows - target.rows) && sum == s_sum - t_sum
}

/// Rows missing on the target and extra on it.
pub(crate) fn missing_extra(differences: &Differences) -> (u64, u64) {
    differences.values().fold((0, 0), |(m, e), c| {
        let d = c.source - c.target;
        (m + d.max(0) as u64, e + (-d).max(0) as u64)
    })
}

/// A fingerprint as reports show it: 16 hex digits.
pub(crate) fn id(fingerprint: i64) -> String {
    format!("{:016x}", fingerprint as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agg(rows: i64, sum: i128) -> Aggregate {
        Aggregate {
            rows,
            sum: sum.to_string(),
        }
    }

    #[test]
    fn differences_explain_the_aggregates_only_when_complete() {
        // Source {5, 5, 5, 9}, target {5, 5, 7, 9}: fingerprint 5 lacks one
        // copy, 7 is extra.
        let (source, target) = (agg(4, 24), agg(4, 26));
        let mut d = Differences::new();
        d.insert(
            5,
            Counts {
                source: 3,
                target: 2,
            },
        );
        assert!(!explains(&d, &source, &target));
        d.insert(
            7,
            Counts {
                source: 0,
                target: 1,
            },
        );
        assert!(explains(&d, &source, &target));
        assert_eq!(missing_extra(&d), (1, 1));
        // Large fingerprints sum without wrapping.
        let big = i64::MAX;
        let mut d = Differences::new();
        d.insert(
            big,
            Counts {
                source: 3,
                target: 0,
            },
        );
        let s = agg(3, 3 * i128::from(big));
        assert!(explains(&d, &s, &agg(0, 0)));
    }

    #[test]
    fn only_differing_groups_split_and_small_ones_are_leaves() {
        let mut s = HashMap::new();
        let mut t = HashMap::new();
        s.insert(1, agg(1000, 10));
        t.insert(1, agg(1000, 10));
        s.insert(2, agg(1000, 11));
        t.insert(2, agg(999, 11));
        s.insert(3, agg(10, 1));
        t.insert(4, agg(1, 1));
        let (mut differ, mut leaves) = split(&s, &t);
        differ.sort();
        leaves.sort();
        assert_eq!((differ, leaves), (vec![2], vec![3, 4]));
        assert_eq!(shift(0), 64);
        assert_eq!(shift(8), 0);
        assert_eq!(id(-1), "ffffffffffffffff");
    }
}
