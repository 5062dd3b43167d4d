//! walrelay's durable state: the `walrelay` schema on the target, what the
//! snapshot and the stream have durably done, so any run can resume from it.
//!
//! This module owns the schema's DDL and every read and write of its four
//! tables; the stages call its typed functions and never name the tables.
//! Every row is keyed by the slot name, so two migrations into one target
//! database (with different slots) keep apart. LSNs cross the SQL boundary
//! as `pg_lsn` values ([`Lsn`](walrelay_proto::Lsn) implements `ToSql` and
//! `FromSql`), never as text; a NULL LSN column reads as `Option<Lsn>`.
//!
//! # Contracts
//!
//! **`walrelay.snapshot`** ([`snapshot`]), one row per slot:
//! - the row is written (phase `slot`) *before* the slot is created, and
//!   moved to phase `schema` with the source's system id, the slot's
//!   consistent point and the exported snapshot's name once it exists. A row
//!   still in phase `slot` is the only one ever deleted by a run: the slot's
//!   creation was not recorded, so the next run drops the slot if it exists
//!   and starts over;
//! - `system_id` and `consistent_lsn` are written once, with the move to
//!   `schema`, and never change afterwards;
//! - the phase only advances: `slot → schema → copy → post_data → done`.
//!   [`snapshot::set_phase`] does not check this; its callers only move
//!   forward (a resume may set the phase it is already in again). Each
//!   write commits on its own, with `synchronous_commit = on`;
//! - `done` is final: the stream starts only from a `done` row.
//!
//! **`walrelay.tables` and `walrelay.chunks`** ([`copy`]): the copy plan.
//! - All rows of a plan are inserted in one transaction, before the phase
//!   moves to `copy` (`ON CONFLICT DO NOTHING`: a re-recorded plan keeps
//!   what the first recording wrote);
//! - a chunk is claimed (`FOR UPDATE SKIP LOCKED`), copied, marked `copied`
//!   and counted into its table (`rows_copied`, `chunks_done`, the table's
//!   state) in the very target transaction that writes its rows: rows and
//!   the record that they were copied commit together or not at all, and a
//!   dead worker's claim vanishes with its transaction. These commits run
//!   with `synchronous_commit = off`: a target crash may lose the last
//!   chunks, but rows and records together, so the copy redoes them;
//! - a `copied` chunk returns to `pending` in exactly one case: a resumed
//!   snapshot under a new exported snapshot resets every chunk of a table
//!   that is not completely copied, *and empties that table in the same
//!   transaction*. A completely copied table (state `copied`) keeps its
//!   chunks, its rows and its `snapshot_lsn` for good;
//! - a table's `snapshot_lsn` is the one LSN as of which its copy is exact:
//!   set with the plan (the slot's consistent point) and changed only by
//!   that reset (to the new snapshot's LSN), when the table holds no rows
//!   of an earlier copy. A copied chunk records the LSN of the snapshot it
//!   was copied under; the reset clears it with the chunk's other fields;
//! - a table the source gained while streaming is recorded by
//!   [`copy::record_added_table`] in the target transaction that wrote its
//!   rows (state `copied`, no chunks, `snapshot_lsn` = the consistent point
//!   of the temporary slot it was copied under); a record of that name left
//!   by a table dropped since, or by this one under its name before a
//!   rename, is replaced. The stream also copies a table again (a column
//!   added with a volatile default): emptied, copied and recorded with its
//!   new `snapshot_lsn` in the batch's one target transaction, the one
//!   exception to "copied keeps its rows and LSN for good";
//! - marking a table `failed` (with the error text, never a row value) is
//!   written outside the copy's transaction, which was rolled back.
//!
//! **`walrelay.progress`** ([`progress`]), one row per slot: the checkpoint.
//! - `applied_lsn` (read by [`progress::applied`] only) is written in the
//!   same target transaction as the changes it covers (the end LSN of the
//!   last source transaction in the batch), or on its own for an idle
//!   keepalive position when nothing is pending. After a crash at any point
//!   it names exactly what committed;
//! - `applied_lsn` never decreases: the stream writes only the end of
//!   transactions that commit after its checkpoint, or idle keepalive
//!   positions past its last committed one (the upsert itself does not
//!   compare, so this holds as long as one stream writes per slot: the
//!   slot admits one walsender at a time);
//! - `commit_time` keeps the last source commit time when a keepalive
//!   position carries none;
//! - a repair of drifted rows locks the row (`FOR UPDATE`) in its own
//!   target transaction, so no checkpoint commits while it writes.
//!
//! **`walrelay.spool`** ([`spool`]), one row per slot that used a spool:
//! its directory, the host that used it and its size limit, written when a
//! snapshot or a stream opens it (replacing the row), so `status` and
//! `cleanup` find it; it is a pointer, never a position: what the spool
//! holds is read from its files.
//!
//! `walrelay cleanup` drops the whole schema ([`drop_schema`]).

pub(crate) mod copy;
pub(crate) mod progress;
pub(crate) mod snapshot;
pub(crate) mod spool;

use tokio_postgres::Client;

/// Why walrelay's state on the target could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("{what}: {}", crate::pg::error::with_sqlstate(.source))]
    Sql {
        what: &'static str,
        #[source]
        source: tokio_postgres::Error,
    },
    #[error("walrelay.snapshot records the unknown phase {phase:?} for slot {slot}: the state was edited or damaged; run `walrelay cleanup --yes` and migrate again")]
    UnknownPhase { slot: String, phase: String },
}

impl StateError {
    /// Whether the server refused for want of a privilege (SQLSTATE 42501).
    pub(crate) fn is_missing_privilege(&self) -> bool {
        matches!(self, StateError::Sql { source, .. }
            if source.code() == Some(&tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE))
    }

    /// Transient (the connection went away: retry) or definite (a missing
    /// privilege, damaged state: tell the operator), by SQLSTATE.
    pub(crate) fn kind(&self) -> crate::pg::error::Kind {
        match self {
            StateError::Sql { source, .. } => crate::pg::error::kind(source),
            StateError::UnknownPhase { .. } => crate::pg::error::Kind::Definite,
        }
    }
}

/// Maps a tokio-postgres error to a [`StateError`] naming `what` failed.
fn sql(what: &'static str) -> impl Fn(tokio_postgres::Error) -> StateError {
    move |source| StateError::Sql { what, source }
}

/// Creates the schema and its tables if missing (idempotent).
const SCHEMA_DDL: &str = r#"
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
pub(crate) async fn ensure_schema(target: &Client) -> Result<(), StateError> {
    target
        .batch_execute(SCHEMA_DDL)
        .await
        .map_err(sql("creating the walrelay schema on the target"))?;
    target
        .batch_execute(spool::DDL)
        .await
        .map_err(sql("creating the walrelay schema on the target"))
}

/// Drops the `walrelay` schema and everything in it (`walrelay cleanup`).
pub(crate) async fn drop_schema(target: &Client) -> Result<(), StateError> {
    target
        .batch_execute("DROP SCHEMA IF EXISTS walrelay CASCADE")
        .await
        .map_err(sql("dropping the walrelay schema"))
}

/// Whether the target has walrelay's state tables at all (a target that
/// no snapshot ever ran against has none).
pub(crate) async fn exists(target: &Client) -> Result<bool, StateError> {
    Ok(target
        .query_one(
            "SELECT to_regclass('walrelay.snapshot') IS NOT NULL \
                AND to_regclass('walrelay.progress') IS NOT NULL",
            &[],
        )
        .await
        .map_err(sql("looking for the walrelay schema on the target"))?
        .get(0))
}
