//! `walrelay cutover --fence --reverse`, its last step: the reverse
//! direction set up at the point where the target holds every source
//! change and the application has not written to it yet.
//!
//! Why the reverse slot's consistent point is exact: this runs only after
//! the fenced forward cutover said "safe to switch", i.e. the source is
//! fenced and the target applied everything the source committed (the
//! marker). Until the operator opens the target to the application, the
//! only transactions committing on the target are the forward apply's
//! (each marked, [`crate::apply::loop_guard`]) and its checkpoints
//! (`walrelay.*`, never published). So every transaction that commits on
//! the target after the slot's consistent point is the application's (to
//! be sent back) or a forward echo (skipped), and every one before it is
//! on the old source already: nothing is missed, nothing is sent back
//! twice. Each step is idempotent; the slot is created once and its
//! consistent point recorded from `pg_replication_slots`, so a re-run
//! (even after the application started writing) keeps the first point.

use tokio_postgres::Client;
use walrelay_proto::Lsn;

use crate::config::Config;
use crate::migration::MigrationPlan;
use crate::pg::catalog::session_names;
use crate::pg::connect::{self, error_text};
use crate::pg::error::grant_hint;
use crate::snapshot::slot::{ensure_publication, slot_owner};
use crate::state::{self, snapshot::Phase};

use super::{config, sql, ReverseError};

const APPLICATION: &str = "walrelay reverse";

/// What the reverse direction starts from.
#[derive(Debug, Clone)]
pub(crate) struct Prepared {
    pub slot: String,
    pub publication: String,
    /// The reverse slot's consistent point on the target.
    pub consistent_lsn: Lsn,
    /// Whether this run created the slot (else it existed).
    pub created_slot: bool,
    pub tables: usize,
    /// The sequences copied back at the switch back.
    pub sequences: usize,
}

/// Sets up (or finds set up) the reverse direction of `forward`.
pub(crate) async fn prepare(forward: &Config) -> Result<Prepared, ReverseError> {
    let reverse = config(forward)?;
    let (target, old_source) = tokio::try_join!(
        connect::connect(&reverse.source, APPLICATION),
        connect::connect(&reverse.target, APPLICATION),
    )?;
    let wal_level: String = target
        .query_one("SELECT current_setting('wal_level')", &[])
        .await
        .map_err(sql("reading the target's wal_level"))?
        .get(0);
    if wal_level != "logical" {
        return Err(ReverseError::WalLevel(wal_level));
    }
    let plan = MigrationPlan::resolve(&target, &reverse)
        .await
        .map_err(sql("listing the selected tables on the target"))?;
    // walrelay's own schema first: a refusal there leaves the target as it was.
    state::ensure_schema(&old_source).await?;
    ensure_publication(
        &target,
        &reverse.publication,
        &plan.tables,
        &crate::map::unmapped(&plan.tables),
    )
    .await?;
    let recorded = state::snapshot::read(&old_source, &reverse.slot).await?;
    let (consistent_lsn, created_slot) = match slot_point(&target, &reverse.slot).await? {
        Some(lsn) => (lsn, false),
        None if recorded.is_some() => return Err(ReverseError::SlotGone { slot: reverse.slot }),
        None => (create_slot(&target, &reverse.slot).await?, true),
    };
    match recorded {
        Some(row) if row.phase == Phase::Done => {}
        _ => {
            // Every table is on the old source as of the consistent point:
            // recorded so, its per-table snapshot LSN is that point and the
            // stream's schema-change follower knows it is not a new table.
            for table in &plan.tables {
                state::copy::record_added_table(
                    &old_source,
                    &reverse.slot,
                    table,
                    0,
                    consistent_lsn,
                )
                .await?;
            }
            let (system_id, db) = identity(&target).await?;
            state::snapshot::record_reverse(
                &old_source,
                &reverse.slot,
                &system_id,
                &db,
                consistent_lsn,
            )
            .await?;
        }
    }
    tracing::info!(slot = %reverse.slot, consistent_lsn = %consistent_lsn, created = created_slot, "reverse direction prepared");
    Ok(Prepared {
        slot: reverse.slot,
        publication: reverse.publication,
        consistent_lsn,
        created_slot,
        tables: plan.tables.len(),
        sequences: plan.sequences.len(),
    })
}

/// The consistent point of an existing reverse slot of this database (its
/// confirmed position: nothing consumed it before the state was recorded).
async fn slot_point(target: &Client, slot: &str) -> Result<Option<Lsn>, ReverseError> {
    let Some(owner) = slot_owner(target, slot)
        .await
        .map_err(sql("reading the target's replication slots"))?
    else {
        return Ok(None);
    };
    if !owner.is_here() {
        return Err(ReverseError::SlotElsewhere {
            slot: slot.to_string(),
            whose: owner.whose(),
        });
    }
    let lsn: Option<Lsn> = target
        .query_one(
            "SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = $1",
            &[&slot],
        )
        .await
        .map_err(sql("reading the reverse slot's position"))?
        .try_get(0)
        .map_err(sql("reading the reverse slot's position"))?;
    Ok(lsn)
}

/// Creates the reverse slot; its consistent point comes after every
/// transaction that was running when it was created.
async fn create_slot(target: &Client, slot: &str) -> Result<Lsn, ReverseError> {
    let created = target
        .query_one(
            "SELECT lsn FROM pg_create_logical_replication_slot($1, 'pgoutput')",
            &[&slot],
        )
        .await;
    match created {
        Ok(row) => row
            .try_get(0)
            .map_err(sql("reading the reverse slot's consistent point")),
        Err(err) => {
            let (role, _) = session_names(target).await;
            let hint = grant_hint(&err, || format!("ALTER ROLE {role} REPLICATION;"));
            Err(ReverseError::Sql {
                what: "creating the reverse slot on the target",
                message: format!("{}{hint}", error_text(&err)),
            })
        }
    }
}

/// The target's system identifier (informational in the checkpoint row;
/// empty where the role may not read it) and database name.
async fn identity(target: &Client) -> Result<(String, String), ReverseError> {
    let db: String = target
        .query_one("SELECT current_database()::text", &[])
        .await
        .map_err(sql("reading the target's database name"))?
        .get(0);
    let system_id = match target
        .query_one(
            "SELECT system_identifier::text FROM pg_control_system()",
            &[],
        )
        .await
    {
        Ok(row) => row.get(0),
        Err(err) => {
            tracing::debug!(error = %error_text(&err), "the target's system identifier is not readable");
            String::new()
        }
    };
    Ok((system_id, db))
}
