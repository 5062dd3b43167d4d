//! The `walrelay` schema on the target: what the snapshot and the stream
//! have durably done, so any run can resume from it.
//!
//! Every row is keyed by the slot name, so two migrations into one target
//! database (with different slots) keep apart.
//! `walrelay.chunks` is shaped for scale-out: one row per chunk, claimed by a
//! copy worker with `FOR UPDATE SKIP LOCKED` inside the very transaction that
//! copies it, so a dead worker's claim vanishes with its transaction.

use tokio_postgres::Client;

/// Creates the schema and its tables if missing (idempotent).
pub const SCHEMA_DDL: &str = r#"
CREATE SCHEMA IF NOT EXISTS walrelay;
CREATE TABLE IF NOT EXISTS walrelay.snapshot (
    slot_name      text PRIMARY KEY,
    system_id      text NOT NULL,
    source_db      text NOT NULL,
    phase          text NOT NULL CHECK (phase IN ('slot', 'schema', 'copy', 'post_data', 'done')),
    consistent_lsn pg_lsn,
    snapshot_name  text,
    schema_dump    bytea,
    started_at     timestamptz NOT NULL DEFAULT now(),
    finished_at    timestamptz
);
CREATE TABLE IF NOT EXISTS walrelay.tables (
    slot_name    text NOT NULL,
    schema_name  text NOT NULL,
    table_name   text NOT NULL,
    source_oid   oid NOT NULL,
    state        text NOT NULL DEFAULT 'pending'
                 CHECK (state IN ('pending', 'copying', 'copied', 'streaming', 'failed')),
    rows_copied  bigint NOT NULL DEFAULT 0,
    chunks_total integer NOT NULL DEFAULT 0,
    chunks_done  integer NOT NULL DEFAULT 0,
    snapshot_lsn pg_lsn,
    last_error   text,
    started_at   timestamptz,
    finished_at  timestamptz,
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (slot_name, schema_name, table_name)
);
CREATE TABLE IF NOT EXISTS walrelay.chunks (
    slot_name    text NOT NULL,
    schema_name  text NOT NULL,
    table_name   text NOT NULL,
    chunk_no     integer NOT NULL,
    priority     bigint NOT NULL DEFAULT 0,
    first_page   bigint NOT NULL,
    end_page     bigint,
    state        text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'copying', 'copied')),
    rows         bigint,
    snapshot_lsn pg_lsn,
    claimed_by   text,
    copied_at    timestamptz,
    PRIMARY KEY (slot_name, schema_name, table_name, chunk_no),
    FOREIGN KEY (slot_name, schema_name, table_name)
        REFERENCES walrelay.tables ON DELETE CASCADE
);
CREATE INDEX IF NOT EXISTS chunks_pending ON walrelay.chunks (slot_name, priority DESC, chunk_no)
    WHERE state = 'pending';
CREATE TABLE IF NOT EXISTS walrelay.progress (
    slot_name   text PRIMARY KEY,
    system_id   text NOT NULL,
    applied_lsn pg_lsn NOT NULL,
    commit_time timestamptz,
    updated_at  timestamptz NOT NULL DEFAULT now()
);
"#;

/// Creates the `walrelay` schema on the target if needed.
pub async fn ensure_schema(target: &Client) -> Result<(), tokio_postgres::Error> {
    target.batch_execute(SCHEMA_DDL).await
}

/// How far the snapshot of one slot has come.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
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
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Slot => "slot",
            Phase::Schema => "schema",
            Phase::Copy => "copy",
            Phase::PostData => "post_data",
            Phase::Done => "done",
        }
    }

    fn parse(s: &str) -> Phase {
        match s {
            "slot" => Phase::Slot,
            "schema" => Phase::Schema,
            "copy" => Phase::Copy,
            "post_data" => Phase::PostData,
            _ => Phase::Done,
        }
    }
}

/// The `walrelay.snapshot` row of one slot.
#[derive(Debug, Clone)]
pub struct SnapshotRow {
    pub system_id: String,
    pub source_db: String,
    pub phase: Phase,
    pub consistent_lsn: Option<String>,
}

/// Reads the snapshot row of `slot`, if any.
pub async fn snapshot_row(
    target: &Client,
    slot: &str,
) -> Result<Option<SnapshotRow>, tokio_postgres::Error> {
    let row = target
        .query_opt(
            "SELECT system_id, source_db, phase, consistent_lsn::text \
             FROM walrelay.snapshot WHERE slot_name = $1",
            &[&slot],
        )
        .await?;
    Ok(row.map(|row| SnapshotRow {
        system_id: row.get(0),
        source_db: row.get(1),
        phase: Phase::parse(row.get(2)),
        consistent_lsn: row.get(3),
    }))
}

/// Moves the snapshot of `slot` to `phase`.
pub async fn set_phase(
    target: &Client,
    slot: &str,
    phase: Phase,
) -> Result<(), tokio_postgres::Error> {
    target
        .execute(
            "UPDATE walrelay.snapshot SET phase = $2, \
             finished_at = CASE WHEN $2 = 'done' THEN now() END WHERE slot_name = $1",
            &[&slot, &phase.as_str()],
        )
        .await
        .map(drop)
}
