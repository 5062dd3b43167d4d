//! A table without a key (REPLICA IDENTITY FULL) that still differs after
//! its re-checks: the differing rows are pinpointed as a multiset difference
//! of row fingerprints ([`fingerprint`]) and, with `--repair`, exactly those
//! rows are deleted or copied ([`keyless_repair`](super::keyless_repair)).
//!
//! Why the counts are exact while the stream applies:
//! 1. Candidate fingerprints are found first without any lock (bisection
//!    reads both sides as they are; a fingerprint in flight may be among
//!    them, a real one may be hidden by a change in flight).
//! 2. On the source the table is locked `IN SHARE MODE`: no write to it can
//!    commit until our transaction ends, and a transaction that wrote to it
//!    and has not committed holds a lock that makes ours wait. The source
//!    aggregate and the WAL insert position X are read after the lock, so
//!    every change to the table lies below X.
//! 3. The target is awaited to X: it then holds every change to the table,
//!    and receives none until the lock goes. Both sides hold still, so the
//!    candidates' counts, read now on both, are exact.
//! 4. The counts must account for the whole difference of the two tables'
//!    aggregates (row count and 128-bit hash sum): if they do not (a
//!    difference the unlocked bisection missed), the table is bisected again
//!    under the lock, which is exact. Only then is anything drift.
//!
//! Without a stream nothing moves on the target and the lock is taken only
//! for a repair (a table the slot owes changes is "behind", left to the
//! stream). Writers to this one table wait for the lock; readers do not.

use super::fingerprint::{self, Differences};
use super::hash::{self, Aggregate};
use super::plan::{Range, Shape, Side};
use super::recheck::Wait;
use super::report::TableReport;
use super::{behind, keyless_repair, Ctx, VerifyError, NOT_REPAIRED_BEHIND};
use crate::metrics::VERIFY_CHUNKS;
use crate::pg::connect::error_text;
use tokio_postgres::error::SqlState;

/// What the exact round found for a table whose aggregates differ.
enum Pinpointed {
    Rows(Differences),
    /// More distinct rows differ than are pinpointed per table.
    TooMany,
    /// Rows kept changing on the target by other means than the stream.
    Unexplained,
}

/// Settles a key-less table whose aggregate still differs: pinpoints its
/// differing rows by fingerprint under the lock, records them and repairs
/// them when asked.
pub(crate) async fn settle(
    ctx: &Ctx<'_>,
    shape: &Shape,
    report: &mut TableReport,
) -> Result<(), VerifyError> {
    let candidates = fingerprint::differing(&ctx.source, &ctx.target, shape).await?;
    tracing::debug!(table = %shape.display, candidates = candidates.as_ref().map(|c| c.len()), "fingerprints bisected");
    let lock = ctx.opts.repair || ctx.sync.streaming(&ctx.source).await?;
    let tx = &ctx.source_tx;
    tx.batch_execute("BEGIN; SET LOCAL lock_timeout = '2s'")
        .await
        .map_err(VerifyError::sql("starting the locked comparison"))?;
    let outcome = locked(ctx, shape, candidates, lock, report).await;
    // Nothing was written on the source. The lock goes only now, after any
    // repair has committed on the target.
    let _ = tx.batch_execute("ROLLBACK").await;
    outcome
}

async fn locked(
    ctx: &Ctx<'_>,
    shape: &Shape,
    candidates: fingerprint::Found,
    lock: bool,
    report: &mut TableReport,
) -> Result<(), VerifyError> {
    let tx = &ctx.source_tx;
    if lock {
        let sql = format!(
            "LOCK TABLE ONLY {} IN SHARE MODE",
            shape.table(Side::Source)
        );
        if let Err(err) = tx.batch_execute(&sql).await {
            tracing::warn!(table = %shape.display, error = %error_text(&err), "cannot lock the table for the exact comparison");
            let why = if err.code() == Some(&SqlState::INSUFFICIENT_PRIVILEGE) {
                NOT_PERMITTED
            } else {
                NOT_LOCKED
            };
            unsettled(ctx, report, why);
            return Ok(());
        }
    }
    let all = Range::default();
    let (source, lsn) = hash::aggregate(tx, shape, Side::Source, &all).await?;
    let wait = ctx.sync.wait(ctx, lsn).await?;
    if wait == Wait::Behind {
        unsettled(ctx, report, NOT_CAUGHT_UP);
        return Ok(());
    }
    let (target, _) = hash::aggregate(&ctx.target, shape, Side::Target, &all).await?;
    if source == target {
        metrics::counter!(VERIFY_CHUNKS, "result" => "mismatch").increment(1);
        return Ok(());
    }
    metrics::counter!(VERIFY_CHUNKS, "result" => "drift").increment(1);
    let differences = match exact(ctx, shape, candidates, &source, &target).await? {
        Pinpointed::Rows(d) => d,
        other => {
            let rows = source.rows.abs_diff(target.rows).max(1);
            report.drift_rows += rows;
            report.note(match other {
                Pinpointed::TooMany => format!(
                    "more than {} distinct rows differ: drift counted by rows, not pinpointed or repaired; take a new snapshot of this table",
                    fingerprint::MAX_FINGERPRINTS
                ),
                _ => UNEXPLAINED.into(),
            });
            if ctx.opts.repair {
                report.not_repaired += rows;
            }
            return Ok(());
        }
    };
    let (missing, extra) = fingerprint::missing_extra(&differences);
    tracing::warn!(table = %shape.display, fingerprints = differences.len(), missing, extra, "rows differ by fingerprint");
    report.add_fingerprints(&differences);
    if !ctx.opts.repair {
        return Ok(());
    }
    // Without a stream the target reached the source only if the slot holds
    // no change to the table past its position (read after the lock).
    if wait == Wait::Direct && behind::check(ctx, shape, true).await?.is_some() {
        report.not_repaired += missing + extra;
        report.note(NOT_REPAIRED_BEHIND.into());
        return Ok(());
    }
    let done = keyless_repair::repair(ctx, shape, &differences).await?;
    report.repaired += done.inserted + done.deleted;
    report.note(format!(
        "repaired by fingerprint: {} rows copied from the source, {} deleted on the target",
        done.inserted, done.deleted
    ));
    Ok(())
}

/// The exact counts of the differing fingerprints, both sides holding still.
async fn exact(
    ctx: &Ctx<'_>,
    shape: &Shape,
    candidates: fingerprint::Found,
    source: &Aggregate,
    target: &Aggregate,
) -> Result<Pinpointed, VerifyError> {
    // Bisecting again under the lock would find as many: writers wait for
    // no answer.
    let Some(candidates) = candidates else {
        return Ok(Pinpointed::TooMany);
    };
    let fps: Vec<i64> = candidates.keys().copied().collect();
    let (s, t) = tokio::join!(
        fingerprint::exact_counts(&ctx.source_tx, shape, Side::Source, &fps),
        fingerprint::exact_counts(&ctx.target, shape, Side::Target, &fps)
    );
    let differences = fingerprint::compare(&s?, &t?);
    if fingerprint::explains(&differences, source, target) {
        return Ok(Pinpointed::Rows(differences));
    }
    tracing::debug!(table = %shape.display, "fingerprints bisected again under the lock");
    Ok(
        match fingerprint::differing(&ctx.source_tx, &ctx.target, shape).await? {
            None => Pinpointed::TooMany,
            Some(d) if fingerprint::explains(&d, source, target) => Pinpointed::Rows(d),
            Some(_) => Pinpointed::Unexplained,
        },
    )
}

/// The table could not be compared exactly: not proven (never drift), and
/// with `--repair` not repaired, saying why.
fn unsettled(ctx: &Ctx<'_>, report: &mut TableReport, why: &str) {
    report.unsettled += 1;
    let what = if ctx.opts.repair {
        "not proven and not repaired"
    } else {
        "not proven"
    };
    report.note(format!("{what}: {why}; run verify again"));
}

const NOT_PERMITTED: &str = "the table could not be locked on the source: the verify role lacks the privilege (LOCK … IN SHARE MODE needs UPDATE, DELETE or TRUNCATE on the table); grant one of them, or run verify as the table's owner";
const NOT_LOCKED: &str =
    "the table could not be locked on the source in time (a long transaction writes to it)";
const NOT_CAUGHT_UP: &str = "the target did not apply the source up to the locked position in time";
const UNEXPLAINED: &str = "the target's rows changed during the exact comparison by something other than the stream: drift counted by rows, not pinpointed or repaired; stop that writer and run verify again";
