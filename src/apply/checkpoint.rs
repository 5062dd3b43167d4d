//! Where the stream resumes, and the checkpoint it writes: the source LSN
//! the target has applied, written in the same target transaction as the
//! changes it covers (`walrelay.progress`, owned by [`crate::state`]).
//!
//! Durability contract: after a crash at any point, the row names exactly
//! the end LSN of the last source transaction whose changes committed on the
//! target (or an idle keepalive position with nothing pending). The stream
//! restarts there and skips every transaction that committed before it, so
//! no change is lost or applied twice.

use std::collections::HashMap;

use tokio_postgres::Client;
use walrelay_proto::Lsn;

use crate::state::{self, StateError};

pub(crate) use crate::state::progress::Checkpoint;

/// Where the stream resumes.
#[derive(Debug, Clone)]
pub(crate) struct Resume {
    pub lsn: Lsn,
    pub system_id: String,
    /// `(schema, table)` → the LSN its snapshot copy reflects.
    pub snapshot_lsns: HashMap<(String, String), Lsn>,
}

/// Why there is nothing to resume from.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ResumeError {
    #[error("no completed snapshot for slot {0} on the target: run `walrelay snapshot` (or `walrelay run`) first")]
    NoSnapshot(String),
    #[error("reading walrelay state on the target: {0}")]
    State(#[from] StateError),
    #[error("the completed snapshot of slot {0} records no consistent point (walrelay.snapshot.consistent_lsn is NULL on the target) and nothing was applied yet: the state was edited or damaged; run `walrelay cleanup --yes` and migrate again")]
    NoConsistentPoint(String),
    #[error("table {table} of slot {slot} records no snapshot LSN (walrelay.tables.snapshot_lsn is NULL on the target), so the stream cannot tell which of its changes the copy holds: the state was edited or damaged; run `walrelay cleanup --yes` and migrate again")]
    NoTableSnapshotLsn { slot: String, table: String },
}

/// Reads the checkpoint (or the snapshot's consistent point on a first start).
pub(crate) async fn load(target: &Client, slot: &str) -> Result<Resume, ResumeError> {
    if !state::exists(target).await? {
        return Err(ResumeError::NoSnapshot(slot.to_string()));
    }
    let snapshot = state::snapshot::completed(target, slot)
        .await?
        .ok_or_else(|| ResumeError::NoSnapshot(slot.to_string()))?;
    let applied = state::progress::applied(target, slot).await?;
    let snapshot_lsns = state::copy::snapshot_lsns(target, slot)
        .await?
        .into_iter()
        .map(|((schema, name), lsn)| match lsn {
            Some(lsn) => Ok(((schema, name), lsn)),
            None => Err(ResumeError::NoTableSnapshotLsn {
                slot: slot.to_string(),
                table: format!("{schema}.{name}"),
            }),
        })
        .collect::<Result<_, _>>()?;
    let lsn = applied
        .map(|a| a.lsn)
        .or(snapshot.consistent_lsn)
        .ok_or_else(|| ResumeError::NoConsistentPoint(slot.to_string()))?;
    Ok(Resume {
        lsn,
        system_id: snapshot.system_id,
        snapshot_lsns,
    })
}

/// A checkpoint that could not be prepared or written fails like any other
/// statement of the apply session (transient or refused by its SQLSTATE).
pub(super) fn apply_error(err: StateError) -> super::ApplyError {
    match err {
        StateError::Sql { source, .. } => super::target_err(source),
        other => super::ApplyError::State(other),
    }
}
