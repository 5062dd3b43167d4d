//! What the snapshot refuses before it creates anything: tables the
//! source role cannot read in full, and tables that, once published,
//! would make UPDATE and DELETE fail on the source.

use tokio_postgres::Client;

use super::{sql, SnapshotError};
use crate::config::Config;
use crate::migration::MigrationPlan;
use crate::pg::catalog::{quote_ident, Table};

/// Refuses tables that would break the source or the copy.
fn validate_tables(tables: &[Table], bypass_rls: bool, role: &str) -> Result<(), SnapshotError> {
    let role = quote_ident(role);
    if tables.is_empty() {
        return Err(SnapshotError::Refused(
            "no table matches the selection (--table / --exclude-table)".into(),
        ));
    }
    for t in tables {
        if !t.can_select {
            return Err(SnapshotError::Refused(format!(
                "the source role cannot read {}: GRANT SELECT ON {} TO {role};",
                t.display(),
                t.qualified()
            )));
        }
        if t.filtered_by_rls(bypass_rls) {
            return Err(SnapshotError::Refused(format!("{} has row-level security the source role does not bypass; a copy would miss rows: ALTER ROLE {role} BYPASSRLS;", t.display())));
        }
    }
    refuse_without_identity(tables)
}

/// Names every table without a usable replica identity at once, each with
/// its fix, so the operator fixes them all before the next run.
fn refuse_without_identity(tables: &[Table]) -> Result<(), SnapshotError> {
    let lacking: Vec<&Table> = tables
        .iter()
        .filter(|t| t.kind == 'r' && !t.unlogged && !t.has_usable_replica_identity())
        .collect();
    if lacking.is_empty() {
        return Ok(());
    }
    let fixes: String = lacking
        .iter()
        .map(|t| {
            format!(
                "\n  {}: ALTER TABLE {} REPLICA IDENTITY FULL; (or add a primary key), or --exclude-table {}",
                t.display(),
                t.qualified(),
                t.display()
            )
        })
        .collect();
    Err(SnapshotError::Refused(format!(
        "{} table(s) have no usable replica identity: once published, UPDATE and DELETE on them would fail on the source. Fix each, or leave it out:{fixes}",
        lacking.len()
    )))
}

/// The migration plan, resolved once per run; refused when a selected
/// table would break the source or the copy.
pub(super) async fn resolve_plan(
    config: &Config,
    source: &Client,
) -> Result<MigrationPlan, SnapshotError> {
    let plan = MigrationPlan::resolve(source, config)
        .await
        .map_err(sql("listing source tables"))?;
    let bypass: bool = source
        .query_one(
            "SELECT rolsuper OR rolbypassrls FROM pg_roles WHERE rolname = current_user",
            &[],
        )
        .await
        .map_err(sql("reading the source role"))?
        .get(0);
    validate_tables(&plan.copied_tables(), bypass, &config.source.user)?;
    plan.check_map(source).await?;
    for t in &plan.unlogged {
        tracing::warn!(table = %t.display(), "unlogged table: copied as of the snapshot, its later changes are not streamed (they are not in the WAL); `walrelay cutover --fence` copies it again");
    }
    Ok(plan)
}
