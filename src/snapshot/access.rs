//! What the snapshot may touch with the roles it is given: refusals that
//! name the missing privilege and the statement granting it, and the
//! schemas it leaves to others.

use super::{sql, Ends, SnapshotError};
use crate::config::Config;
use crate::migration::MigrationPlan;
use crate::pg::catalog::quote_ident;
use crate::state::StateError;

/// The source role may not create a replication slot: said before the
/// publication or anything else exists.
pub(super) fn no_replication(config: &Config) -> SnapshotError {
    SnapshotError::Refused(format!(
        "role {} may not create a replication slot (it has neither REPLICATION nor superuser): as a superuser (or the provider's admin role) run ALTER ROLE {1} REPLICATION; (on Amazon RDS: GRANT rds_replication TO {1};)",
        config.source.user,
        quote_ident(&config.source.user)
    ))
}

/// Creating walrelay's state schema on the target failed; for a missing
/// privilege, with the grant.
pub(super) fn state_schema(config: &Config, err: StateError) -> SnapshotError {
    if !err.is_missing_privilege() {
        return err.into();
    }
    SnapshotError::Refused(format!(
        "role {} cannot create walrelay's state schema on the target ({err}): GRANT CREATE ON DATABASE {} TO {};",
        config.target.user,
        quote_ident(&config.target.dbname),
        quote_ident(&config.target.user)
    ))
}

/// The schemas the dump leaves out, each logged with why.
pub(super) async fn schemas_left_alone(
    plan: &MigrationPlan,
    ends: &Ends,
) -> Result<Vec<String>, SnapshotError> {
    let left_alone = plan
        .schemas_left_alone(&ends.source, &ends.target)
        .await
        .map_err(sql("listing the schemas on both ends"))?;
    for s in &left_alone {
        let why = if s.on_target {
            "the target has it already"
        } else {
            "another role owns it on the source"
        };
        tracing::info!(schema = %s.schema, owner = %s.owner, "the schema copy leaves this schema alone: no selected table is in it and {why}");
    }
    Ok(left_alone.into_iter().map(|s| s.schema).collect())
}
