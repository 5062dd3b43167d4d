//! `--repair` of a key-less table: exactly the differing rows, by
//! fingerprint. For a fingerprint held `s` times on the source and `t` times
//! on the target, `t − s` of the target's copies are deleted (chosen by
//! `ctid`, so the other copies stay) or `s − t` copies of the source row are
//! inserted: a row held three times on the source is held three times on
//! the target afterwards.
//!
//! Runs inside the caller's source transaction, which holds the table
//! `IN SHARE MODE` and has awaited the target past the locked position (see
//! [`keyless`](super::keyless)): the source counts cannot change, and the
//! stream has applied every change to the table and gets no new one until
//! the lock goes. Each batch is one target transaction that, as keyed
//! repair does, locks the slot's `walrelay.progress` row `FOR UPDATE` (no
//! apply batch commits meanwhile), reads the target's counts again inside
//! it, and deletes and inserts only the difference to the locked source
//! counts; so nothing the stream applied is undone or doubled. Source
//! changes after the lock commit above the target's position and are
//! applied on top: with REPLICA IDENTITY FULL they find their old row,
//! since the target now holds the same rows as the source did. Short
//! `lock_timeout`s make the repair, not the apply, give way on a conflict;
//! the batch is retried.

use std::collections::HashMap;

use tokio_postgres::types::ToSql;

use super::fingerprint::{self, fingerprinted, Differences};
use super::pinpoint::KEY_BATCH;
use super::plan::{Shape, Side};
use super::{repair, Ctx, VerifyError};
use crate::pg::catalog::quote_ident;

/// Rows written by a key-less repair.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Outcome {
    pub inserted: u64,
    pub deleted: u64,
}

/// Repairs the rows of `differences` (source counts read under the lock).
pub(crate) async fn repair(
    ctx: &Ctx<'_>,
    shape: &Shape,
    differences: &Differences,
) -> Result<Outcome, VerifyError> {
    let mut outcome = Outcome::default();
    let all: Vec<(i64, i64)> = differences.iter().map(|(f, c)| (*f, c.source)).collect();
    for batch in all.chunks(KEY_BATCH) {
        let wanted: Vec<i64> = batch
            .iter()
            .filter(|(_, s)| *s > 0)
            .map(|(f, _)| *f)
            .collect();
        let rows = source_rows(ctx, shape, &wanted).await?;
        let done = repair::retried(shape, || attempt_batch(ctx, shape, batch, &rows)).await?;
        outcome.inserted += done.inserted;
        outcome.deleted += done.deleted;
    }
    Ok(outcome)
}

type Row = Vec<Option<String>>;

/// One source row (as text) per fingerprint, read in the locked transaction.
async fn source_rows(
    ctx: &Ctx<'_>,
    shape: &Shape,
    fingerprints: &[i64],
) -> Result<HashMap<i64, Row>, VerifyError> {
    if fingerprints.is_empty() {
        return Ok(HashMap::new());
    }
    let cols: Vec<String> = shape
        .columns
        .iter()
        .enumerate()
        .map(|(i, c)| format!(", {}::text AS c{i}", quote_ident(c)))
        .collect();
    let names: String = (0..cols.len()).map(|i| format!(", c{i}")).collect();
    let sql = format!(
        "SELECT DISTINCT ON (f) f{names} FROM {} WHERE f = ANY($1::int8[])",
        fingerprinted(shape, Side::Source, &cols.concat())
    );
    let rows = ctx
        .source_tx
        .query(&sql, &[&fingerprints])
        .await
        .map_err(VerifyError::sql("reading source rows to repair"))?;
    Ok(rows
        .iter()
        .map(|r| {
            let values = (0..shape.columns.len()).map(|i| r.get(i + 1)).collect();
            (r.get(0), values)
        })
        .collect())
}

async fn attempt_batch(
    ctx: &Ctx<'_>,
    shape: &Shape,
    batch: &[(i64, i64)],
    rows: &HashMap<i64, Row>,
) -> Result<Outcome, VerifyError> {
    super::repair::in_target_transaction(&ctx.target, write(ctx, shape, batch, rows)).await
}

/// Inside the target transaction: fix the applied position, read the
/// target's counts, delete the surplus copies and insert the missing ones.
async fn write(
    ctx: &Ctx<'_>,
    shape: &Shape,
    batch: &[(i64, i64)],
    rows: &HashMap<i64, Row>,
) -> Result<Outcome, VerifyError> {
    let target = &ctx.target;
    if ctx.repair_replica_role {
        target
            .batch_execute("SET LOCAL session_replication_role = replica")
            .await
            .map_err(VerifyError::sql("setting session_replication_role"))?;
    }
    // The rows come from the source: marked as the apply's, so the way
    // back never sends them there again (apply/loop_guard.rs).
    target
        .batch_execute(&crate::apply::loop_guard::mark_sql(&ctx.sync.slot))
        .await
        .map_err(VerifyError::sql("marking the repair as walrelay's"))?;
    if ctx.sync.has_checkpoint {
        crate::state::progress::lock(target, &ctx.sync.slot).await?;
    }
    let fps: Vec<i64> = batch.iter().map(|(f, _)| *f).collect();
    let now = fingerprint::exact_counts(target, shape, Side::Target, &fps).await?;
    let (mut surplus, mut excess) = (Vec::new(), Vec::new());
    let mut inserts = Vec::new();
    for (fp, source) in batch {
        let held = now.get(fp).copied().unwrap_or(0);
        if held > *source {
            surplus.push(*fp);
            excess.push(held - source);
        } else if held < *source {
            inserts.push((*fp, source - held));
        }
    }
    let mut outcome = Outcome::default();
    if !surplus.is_empty() {
        outcome.deleted = target
            .execute(&delete_sql(shape), &[&surplus, &excess])
            .await
            .map_err(VerifyError::sql("deleting surplus rows"))?;
    }
    if inserts.is_empty() {
        return Ok(outcome);
    }
    let statement = target
        .prepare(&insert_sql(shape))
        .await
        .map_err(VerifyError::sql("preparing the repair insert"))?;
    for (fp, copies) in inserts {
        let Some(values) = rows.get(&fp) else {
            continue;
        };
        let params: Vec<&(dyn ToSql + Sync)> =
            values.iter().map(|v| v as &(dyn ToSql + Sync)).collect();
        for _ in 0..copies {
            target
                .execute(&statement, &params)
                .await
                .map_err(VerifyError::sql("re-inserting a row"))?;
            outcome.inserted += 1;
        }
    }
    Ok(outcome)
}

/// Deletes, for each fingerprint `$1[i]`, exactly `$2[i]` of the target's
/// rows holding it, picked by `(tableoid, ctid)` (a partitioned target's
/// ctids are per partition).
fn delete_sql(shape: &Shape) -> String {
    format!(
        "DELETE FROM {} WHERE (tableoid, ctid) IN (\
           SELECT tableoid, ctid FROM (\
             SELECT r.tableoid, r.ctid, d.excess, row_number() OVER (PARTITION BY r.f) AS n \
             FROM {} JOIN unnest($1::int8[], $2::int8[]) AS d(fp, excess) ON r.f = d.fp) x \
           WHERE n <= excess)",
        shape.relation(Side::Target),
        fingerprinted(shape, Side::Target, ", tableoid, ctid")
    )
}

/// The keyed repair's insert; a table with no compared column gets a row
/// of defaults.
fn insert_sql(shape: &Shape) -> String {
    if shape.columns.is_empty() {
        format!("INSERT INTO {} DEFAULT VALUES", shape.target_qualified)
    } else {
        repair::insert_sql(shape)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verify::plan::sample_shape;

    #[test]
    fn surplus_copies_are_deleted_by_ctid_per_fingerprint() {
        let sql = delete_sql(&sample_shape());
        assert!(
            sql.starts_with("DELETE FROM ONLY \"s\".\"t\" WHERE (tableoid, ctid) IN ("),
            "{sql}"
        );
        assert!(
            sql.contains("row_number() OVER (PARTITION BY r.f)")
                && sql.contains("WHERE n <= excess"),
            "{sql}"
        );
    }
}
