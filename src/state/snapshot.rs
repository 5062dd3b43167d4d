//! `walrelay.snapshot`: how far the snapshot of each slot has come (see the
//! contracts in [`crate::state`]).

use tokio_postgres::Client;
use walrelay_proto::Lsn;

use super::{sql, StateError};

/// How far the snapshot of one slot has come.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// The slot is about to be created (it may exist if we died right after).
    Slot,
    /// The slot exists; the pre-data schema is being restored.
    Schema,
    /// Rows are being copied.
    Copy,
    /// Indexes, constraints and triggers are being built.
    PostData,
    /// The snapshot is complete; `stream` takes over.
    Done,
}

impl Phase {
    /// The value stored in `walrelay.snapshot.phase`.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Phase::Slot => "slot",
            Phase::Schema => "schema",
            Phase::Copy => "copy",
            Phase::PostData => "post_data",
            Phase::Done => "done",
        }
    }

    fn parse(s: &str) -> Option<Phase> {
        Some(match s {
            "slot" => Phase::Slot,
            "schema" => Phase::Schema,
            "copy" => Phase::Copy,
            "post_data" => Phase::PostData,
            "done" => Phase::Done,
            _ => return None,
        })
    }
}

/// The `walrelay.snapshot` row of one slot.
#[derive(Debug, Clone)]
pub(crate) struct SnapshotRow {
    /// The source's system identifier (empty while the phase is `slot`).
    pub system_id: String,
    pub phase: Phase,
    /// The slot's consistent point, once the slot exists.
    pub consistent_lsn: Option<Lsn>,
}

/// Reads the snapshot row of `slot`, if any.
pub(crate) async fn read(target: &Client, slot: &str) -> Result<Option<SnapshotRow>, StateError> {
    let Some(row) = target
        .query_opt(
            "SELECT system_id, phase, consistent_lsn \
             FROM walrelay.snapshot WHERE slot_name = $1",
            &[&slot],
        )
        .await
        .map_err(sql("reading walrelay.snapshot"))?
    else {
        return Ok(None);
    };
    let phase: &str = row.get(1);
    let phase = Phase::parse(phase).ok_or_else(|| StateError::UnknownPhase {
        slot: slot.to_string(),
        phase: phase.to_string(),
    })?;
    Ok(Some(SnapshotRow {
        system_id: row.get(0),
        phase,
        consistent_lsn: row.get(2),
    }))
}

/// Records the intent to create `slot` (phase `slot`), before creating it.
pub(crate) async fn begin(target: &Client, slot: &str, source_db: &str) -> Result<(), StateError> {
    target
        .execute(
            "INSERT INTO walrelay.snapshot (slot_name, system_id, source_db, phase) VALUES ($1, '', $2, 'slot')",
            &[&slot, &source_db],
        )
        .await
        .map(drop)
        .map_err(sql("recording the snapshot"))
}

/// Deletes the row of a snapshot whose slot's creation was never recorded
/// (phase `slot`), so the next run starts over.
pub(crate) async fn forget(target: &Client, slot: &str) -> Result<(), StateError> {
    target
        .execute(
            "DELETE FROM walrelay.snapshot WHERE slot_name = $1",
            &[&slot],
        )
        .await
        .map(drop)
        .map_err(sql("clearing an unfinished slot record"))
}

/// Records the created slot: the source system, the slot's consistent point
/// and the exported snapshot's name; the phase moves to `schema`.
pub(crate) async fn slot_created(
    target: &Client,
    slot: &str,
    system_id: &str,
    consistent_lsn: Lsn,
    snapshot_name: &str,
) -> Result<(), StateError> {
    target
        .execute(
            "UPDATE walrelay.snapshot SET phase = 'schema', system_id = $2, consistent_lsn = $3, snapshot_name = $4 WHERE slot_name = $1",
            &[&slot, &system_id, &consistent_lsn, &snapshot_name],
        )
        .await
        .map(drop)
        .map_err(sql("recording the slot"))
}

/// The pre-data schema dump kept for a resumed run, if one was stored.
pub(crate) async fn schema_dump(
    target: &Client,
    slot: &str,
) -> Result<Option<Vec<u8>>, StateError> {
    Ok(target
        .query_opt(
            "SELECT schema_dump FROM walrelay.snapshot WHERE slot_name = $1",
            &[&slot],
        )
        .await
        .map_err(sql("reading the schema dump"))?
        .and_then(|row| row.get(0)))
}

/// Keeps the pre-data schema dump, so a resumed run restores the same schema.
pub(crate) async fn store_schema_dump(
    target: &Client,
    slot: &str,
    dump: &[u8],
) -> Result<(), StateError> {
    target
        .execute(
            "UPDATE walrelay.snapshot SET schema_dump = $2 WHERE slot_name = $1",
            &[&slot, &dump],
        )
        .await
        .map(drop)
        .map_err(sql("storing the schema dump"))
}

/// Moves the snapshot of `slot` to `phase` (callers only move it forward).
pub(crate) async fn set_phase(target: &Client, slot: &str, phase: Phase) -> Result<(), StateError> {
    target
        .execute(
            "UPDATE walrelay.snapshot SET phase = $2, \
             finished_at = CASE WHEN $2 = 'done' THEN now() END WHERE slot_name = $1",
            &[&slot, &phase.as_str()],
        )
        .await
        .map(drop)
        .map_err(sql("recording the phase"))
}

/// A completed (`done`) snapshot: where the stream of its slot starts.
#[derive(Debug, Clone)]
pub(crate) struct Completed {
    pub system_id: String,
    pub consistent_lsn: Option<Lsn>,
}

/// The completed snapshot of `slot`; `None` when there is none (no row, or
/// not `done` yet).
pub(crate) async fn completed(
    target: &Client,
    slot: &str,
) -> Result<Option<Completed>, StateError> {
    Ok(target
        .query_opt(
            "SELECT system_id, consistent_lsn FROM walrelay.snapshot WHERE slot_name = $1 AND phase = 'done'",
            &[&slot],
        )
        .await
        .map_err(sql("reading walrelay.snapshot"))?
        .map(|row| Completed {
            system_id: row.get(0),
            consistent_lsn: row.get(1),
        }))
}

/// Records the reverse direction's starting point (`cutover --fence
/// --reverse`): a completed snapshot of `slot` at the slot's consistent
/// point, the old source already holding everything before it. An existing
/// row is kept as it is (the call is repeated by a re-run).
pub(crate) async fn record_reverse(
    target: &Client,
    slot: &str,
    system_id: &str,
    source_db: &str,
    consistent_lsn: Lsn,
) -> Result<(), StateError> {
    target
        .execute(
            "INSERT INTO walrelay.snapshot (slot_name, system_id, source_db, phase, consistent_lsn, finished_at) \
             VALUES ($1, $2, $3, 'done', $4, now()) ON CONFLICT (slot_name) DO NOTHING",
            &[&slot, &system_id, &source_db, &consistent_lsn],
        )
        .await
        .map(drop)
        .map_err(sql("recording the reverse direction's starting point"))
}
