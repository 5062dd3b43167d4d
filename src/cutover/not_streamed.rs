//! What the stream cannot carry, brought over after the final sync:
//! unlogged tables (their changes are not in the WAL) are copied again
//! while the source is fenced, and materialized views are refreshed on the
//! target, each after the views it reads (`pg::matview`).
//!
//! An unlogged table is current on the target only if nothing can write it
//! after its copy: the fence. Without one no slot sees its writes either
//! (`writers.rs` reads the WAL), so an unfenced cutover with unlogged tables
//! is not safe, and says why.

use std::time::Instant;

use tokio_postgres::Client;

use super::report::CutoverReport;
use super::{sql, CutoverError};
use crate::migration::MigrationPlan;
use crate::pg::connect::safe_error_text;
use crate::pg::matview;
use crate::snapshot::copy_whole;

/// Copies the unlogged tables (fenced only) and refreshes the
/// materialized views, saying what was done and how long it took.
pub(super) async fn bring_over(
    plan: &MigrationPlan,
    source: &Client,
    target: &Client,
    report: &mut CutoverReport,
) -> Result<(), CutoverError> {
    if !plan.unlogged.is_empty() {
        if report.fenced {
            copy_unlogged(plan, source, target, report).await?;
        } else {
            let names: Vec<String> = plan.unlogged.iter().map(|t| t.display()).collect();
            report.reasons.push(format!(
                "{} unlogged table(s) ({}) are not streamed (their changes are not in the WAL) and are copied again only while the source is fenced: run cutover with --fence, or ALTER TABLE … SET LOGGED on the source and take a new snapshot, or leave them out with --exclude-table",
                names.len(),
                names.join(", ")
            ));
        }
    }
    if plan.matviews.iter().any(|v| v.populated) {
        match matview::refresh(target, &plan.matviews).await {
            Ok(done) => {
                for view in &done.missing {
                    report.warnings.push(format!(
                        "materialized view {view} is missing on the target: not refreshed"
                    ));
                }
                if !report.fenced && !done.views.is_empty() {
                    report.warnings.push("not fenced: the materialized views hold the target's rows as of their refresh; refresh them again after the switch if writes went on".into());
                }
                report.matviews_refreshed = done.views;
                report.matview_refresh_seconds = Some(done.seconds);
            }
            Err(err) => report.reasons.push(err.to_string()),
        }
    }
    Ok(())
}

/// Empties the target's unlogged tables and copies them from the fenced
/// source, in one target transaction (all truncated at once: one may
/// reference another).
async fn copy_unlogged(
    plan: &MigrationPlan,
    source: &Client,
    target: &Client,
    report: &mut CutoverReport,
) -> Result<(), CutoverError> {
    let started = Instant::now();
    let names: Vec<String> = plan
        .unlogged
        .iter()
        .map(|t| plan.mapped(t).target_qualified())
        .collect();
    target
        .batch_execute("BEGIN")
        .await
        .map_err(sql("copying the unlogged tables"))?;
    // As the apply does, where permitted: no triggers, no FK checks while
    // tables that reference each other are refilled one by one.
    if target
        .batch_execute(
            "SAVEPOINT role; SET LOCAL session_replication_role = replica; RELEASE SAVEPOINT role",
        )
        .await
        .is_err()
    {
        target
            .batch_execute("ROLLBACK TO SAVEPOINT role")
            .await
            .map_err(sql("copying the unlogged tables"))?;
    }
    let outcome = refill(plan, &names, source, target).await;
    match outcome {
        Ok(rows) => {
            target
                .batch_execute("COMMIT")
                .await
                .map_err(sql("copying the unlogged tables"))?;
            report.unlogged_copied = plan.unlogged.iter().map(|t| t.display()).collect();
            report.unlogged_rows = rows;
            report.unlogged_copy_seconds = Some(started.elapsed().as_secs_f64());
        }
        Err(why) => {
            let _ = target.batch_execute("ROLLBACK").await;
            report.reasons.push(format!(
                "copying the unlogged tables failed, the target's are as the snapshot left them: {why}"
            ));
        }
    }
    Ok(())
}

async fn refill(
    plan: &MigrationPlan,
    names: &[String],
    source: &Client,
    target: &Client,
) -> Result<u64, String> {
    target
        .batch_execute(&format!("TRUNCATE ONLY {}", names.join(", ")))
        .await
        .map_err(|e| safe_error_text(&e))?;
    let mut rows = 0;
    for table in &plan.unlogged {
        rows += copy_whole(table, &plan.map, source, target)
            .await
            .map_err(|e| format!("{}: {e}", table.display()))?;
    }
    Ok(rows)
}
