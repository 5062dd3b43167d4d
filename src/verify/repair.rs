//! `--repair`: re-copies the rows of drifted keys from the source, safely
//! while the stream applies.
//!
//! Why this is safe with the apply running (which inserts, updates and
//! deletes by key, and fails on a missing row or a duplicate key):
//! 1. On the source, the rows of the keys are read as text `FOR SHARE`: from
//!    then until our transaction ends, no UPDATE or DELETE of them can
//!    commit. The source LSN X is read after the lock, so every earlier
//!    change to them lies below X.
//! 2. We wait until the target's checkpoint has passed X: every change to
//!    those rows is applied (or, being drift, was lost), nothing newer exists.
//! 3. In one target transaction we lock the slot's `walrelay.progress` row
//!    `FOR UPDATE`: the apply cannot commit a batch (it updates that row in
//!    every batch) until we are done, so the target's committed position A
//!    is fixed. Keys absent on the source are re-read now: one that appeared
//!    (an insert at or below A) is left alone; one still absent can only be
//!    inserted above A, and that insert will find no row after our delete.
//! 4. DELETE the keys, INSERT the source rows (text through the target's
//!    input functions, `OVERRIDING SYSTEM VALUE`, `session_replication_role
//!    = replica` when permitted, like the apply), COMMIT, then end the
//!    source transaction. Later source changes to these rows commit after
//!    our lock, above A, and land on top of the repaired rows.
//!
//! An apply batch that already wrote one of these rows holds its row lock
//! while it waits for our progress-row lock: our statements run with a short
//! `lock_timeout` (below the default `deadlock_timeout` of 1 s), so we are
//! the one that gives way, and we retry.

use std::collections::HashMap;
use std::time::Duration;

use tokio_postgres::Client;

use super::hash::{self, params};
use super::plan::{Key, Shape, Side};
use super::recheck::Wait;
use super::{Ctx, VerifyError};

const ATTEMPTS: u32 = 5;

/// What a repair did with the keys it was given.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Outcome {
    /// Keys re-copied.
    pub repaired: u64,
    /// Keys left alone because the target has not applied the source up to
    /// the position their rows were read at (no stream running, or it did
    /// not catch up in time): copied now, they would be ahead of the stream.
    pub refused: u64,
}

/// Re-copies `keys` of one table.
pub(crate) async fn repair(
    ctx: &Ctx<'_>,
    shape: &Shape,
    keys: &[Key],
) -> Result<Outcome, VerifyError> {
    let mut outcome = Outcome::default();
    for batch in keys.chunks(super::pinpoint::KEY_BATCH) {
        match retried(shape, || attempt_batch(ctx, shape, batch)).await? {
            Some(n) => outcome.repaired += n,
            None => {
                tracing::warn!(table = %shape.display, keys = batch.len(), "repair refused: the target has not applied the source up to the rows' position");
                outcome.refused += batch.len() as u64;
            }
        }
    }
    Ok(outcome)
}

/// Runs one repair batch, again after a pause (doubling from 100 ms) when it
/// fails, e.g. giving way to the stream's lock, up to `ATTEMPTS` times.
pub(super) async fn retried<T, F, Fut>(shape: &Shape, mut attempt: F) -> Result<T, VerifyError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, VerifyError>>,
{
    let mut pause = Duration::from_millis(100);
    for _ in 1..ATTEMPTS {
        match attempt().await {
            Ok(done) => return Ok(done),
            Err(err) => {
                tracing::info!(table = %shape.display, error = %err, "repair batch retried");
                tokio::time::sleep(pause).await;
                pause *= 2;
            }
        }
    }
    attempt().await
}

/// One batch: `None` when refused (see [`Outcome::refused`]).
async fn attempt_batch(
    ctx: &Ctx<'_>,
    shape: &Shape,
    keys: &[Key],
) -> Result<Option<u64>, VerifyError> {
    let src = &ctx.source_tx;
    src.batch_execute("BEGIN; SET LOCAL lock_timeout = '2s'")
        .await
        .map_err(VerifyError::sql("starting the repair on the source"))?;
    let outcome = locked_copy(ctx, shape, keys).await;
    let end = if outcome.is_ok() {
        "COMMIT"
    } else {
        "ROLLBACK"
    };
    // The target has committed (or not) by now: only then the lock goes.
    let _ = src.batch_execute(end).await;
    outcome
}

async fn locked_copy(
    ctx: &Ctx<'_>,
    shape: &Shape,
    keys: &[Key],
) -> Result<Option<u64>, VerifyError> {
    let src = &ctx.source_tx;
    let rows = source_rows(src, shape, keys).await?;
    let lsn = hash::source_lsn(src).await?;
    let wait = ctx.sync.wait(ctx, Some(lsn)).await?;
    // Without a stream the target reached X only if the slot holds no
    // change to the table committed past its position (read after the lock).
    if wait == Wait::Behind
        || (wait == Wait::Direct && super::behind::check(ctx, shape, true).await?.is_some())
    {
        return Ok(None);
    }
    in_target_transaction(&ctx.target, write(ctx, shape, keys, rows))
        .await
        .map(Some)
}

/// Runs `work` in one target transaction that gives way to the stream
/// (`lock_timeout`): committed when it succeeds, rolled back otherwise.
pub(super) async fn in_target_transaction<T>(
    target: &Client,
    work: impl std::future::Future<Output = Result<T, VerifyError>>,
) -> Result<T, VerifyError> {
    target
        .batch_execute("BEGIN; SET LOCAL lock_timeout = '100ms'")
        .await
        .map_err(VerifyError::sql("starting the repair on the target"))?;
    let outcome = work.await;
    let end = if outcome.is_ok() {
        "COMMIT"
    } else {
        "ROLLBACK"
    };
    target
        .batch_execute(end)
        .await
        .map_err(VerifyError::sql("committing the repair"))?;
    outcome
}

/// The source rows of `keys` as text, locked `FOR SHARE`, by key.
async fn source_rows(
    src: &Client,
    shape: &Shape,
    keys: &[Key],
) -> Result<HashMap<Key, Vec<Option<String>>>, VerifyError> {
    let (list, values) = hash::key_list(shape, Side::Source, keys);
    let cols: Vec<String> = shape
        .columns
        .iter()
        .map(|c| format!("{}::text", crate::pg::catalog::quote_ident(c)))
        .collect();
    let sql = format!(
        "SELECT {}, {} FROM {} WHERE ({}) IN ({list}) FOR SHARE",
        shape.key_text_list(),
        cols.join(", "),
        shape.relation(Side::Source),
        shape.key_list()
    );
    let rows = src
        .query(&sql, &params(&values))
        .await
        .map_err(VerifyError::sql("reading source rows to repair"))?;
    let width = shape.key.len();
    Ok(rows
        .into_iter()
        .map(|row| {
            let key: Key = (0..width).map(|i| row.get(i)).collect();
            let vals = (0..shape.columns.len())
                .map(|i| row.get(width + i))
                .collect();
            (key, vals)
        })
        .collect())
}

/// Inside the target transaction: fix the applied position, drop keys that
/// appeared on the source, delete and re-insert.
async fn write(
    ctx: &Ctx<'_>,
    shape: &Shape,
    keys: &[Key],
    rows: HashMap<Key, Vec<Option<String>>>,
) -> Result<u64, VerifyError> {
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
    let absent: Vec<Key> = keys
        .iter()
        .filter(|k| !rows.contains_key(*k))
        .cloned()
        .collect();
    let appeared = hash::key_hashes(&ctx.source_tx, shape, Side::Source, &absent, false).await?;
    let keys: Vec<Key> = keys
        .iter()
        .filter(|k| !appeared.contains_key(*k))
        .cloned()
        .collect();
    if keys.is_empty() {
        return Ok(0);
    }
    let (list, values) = hash::key_list(shape, Side::Target, &keys);
    let delete = format!(
        "DELETE FROM {} WHERE ({}) IN ({list})",
        shape.relation(Side::Target),
        shape.key_list()
    );
    target
        .execute(&delete, &params(&values))
        .await
        .map_err(VerifyError::sql("deleting drifted rows"))?;
    let insert = insert_sql(shape);
    let statement = target
        .prepare(&insert)
        .await
        .map_err(VerifyError::sql("preparing the repair insert"))?;
    for key in &keys {
        if let Some(vals) = rows.get(key) {
            let refs: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = vals
                .iter()
                .map(|v| v as &(dyn tokio_postgres::types::ToSql + Sync))
                .collect();
            target
                .execute(&statement, &refs)
                .await
                .map_err(VerifyError::sql("re-inserting a row"))?;
        }
    }
    Ok(keys.len() as u64)
}

/// `INSERT INTO t (c…) OVERRIDING SYSTEM VALUE VALUES ($1::text::type, …)`.
pub(crate) fn insert_sql(shape: &Shape) -> String {
    let cols: Vec<String> = shape
        .columns
        .iter()
        .map(|c| crate::pg::catalog::quote_ident(c))
        .collect();
    let vals: Vec<String> = shape
        .target_types
        .iter()
        .enumerate()
        .map(|(i, ty)| format!("${}::text::{ty}", i + 1))
        .collect();
    format!(
        "INSERT INTO {} ({}) OVERRIDING SYSTEM VALUE VALUES ({})",
        shape.target_qualified,
        cols.join(", "),
        vals.join(", ")
    )
}
