//! `walrelay snapshot`: the publication, the slot, the schema and every
//! selected table's rows, copied from one consistent snapshot.
//!
//! # Consistency
//! The slot is created with an exported snapshot. The snapshot shows exactly
//! the transactions committed before the slot's consistent point C0, and
//! streaming from C0 yields exactly the transactions not in it
//! (docs/ARCHITECTURE.md, Protocol facts). Every copy worker and
//! `pg_dump` import that snapshot, so the copied rows plus the stream from C0
//! are the source, exactly once.
//!
//! # Resuming
//! An exported snapshot lives only as long as the session that exported it,
//! so a run that dies (SIGKILL, a lost pod) cannot reuse it. A resumed run
//! keeps the permanent slot (still at C0: nothing was streamed) and takes a
//! second exported snapshot from a *temporary* slot, at L1 > C0:
//! - tables whose chunks were all copied keep their rows: they are exact as
//!   of their recorded `walrelay.tables.snapshot_lsn` (C0);
//! - every other table is copied as of L1 and records L1; a table copied
//!   only in part is emptied first (see [`plan::reset_unfinished`]: ctid
//!   chunks from two snapshots can duplicate or lose rows that moved).
//!
//! Each table is therefore the source as of one LSN, its `snapshot_lsn`.
//! **Contract with the stream**: it starts at the slot's C0 and, like the
//! native apply worker's per-table sync LSN, skips a change to a table when
//! the change's transaction committed before that table's `snapshot_lsn`
//! (the copy already holds it) and applies it otherwise. Once the stream has
//! passed the largest `snapshot_lsn`, the whole target is the source as of
//! one LSN, and from then on at every commit. Within one run, chunks are
//! claimed and committed one by one (rows and state in one target
//! transaction), so a worker that fails loses only its open chunk.

mod access;
pub(crate) mod added_table;
pub mod build_progress;
mod copy;
pub(crate) mod dump_compat;
mod ends;
mod managed;
mod plan;
mod progress;
mod refusals;
pub(crate) mod schema;
pub(crate) mod slot;
mod slot_watch;
mod summary;

use std::sync::Arc;
use std::time::Instant;

use ends::{open_ends, Ends};
use walrelay_proto::Lsn;

use crate::config::Config;
use crate::migration::MigrationPlan;
use crate::pg::catalog::{self, Table};
use crate::pg::connect::{self, error_text};
use crate::pg::matview;
use crate::state::snapshot::Phase;
use crate::state::{self, StateError};
use crate::stream::capture::{self, Capture};

pub(crate) use copy::copy_whole;
pub use copy::CopyError;
pub use dump_compat::CompatError;
pub use schema::SchemaError;
pub use slot::SlotError;
pub use slot_watch::{Loss, SlotLost};
pub use summary::Summary;

/// How the snapshot runs.
#[derive(Debug, Clone)]
pub struct SnapshotOptions {
    /// Copy workers (connections to each side).
    pub jobs: usize,
    /// Whether the target's schema is created from the source's.
    pub schema: SchemaMode,
    /// Keep owners and grants of the source objects.
    pub keep_owners: bool,
    /// Heap pages per copy chunk.
    pub chunk_pages: u32,
    /// Spool the change stream while copying, so the slot holds no WAL.
    pub spool: Option<crate::spool::SpoolOptions>,
}

impl Default for SnapshotOptions {
    fn default() -> Self {
        SnapshotOptions {
            jobs: 4,
            schema: SchemaMode::Copy,
            keep_owners: false,
            chunk_pages: 16384,
            spool: None,
        }
    }
}

/// How the target's schema is prepared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SchemaMode {
    /// Created on the target from the source's `pg_dump`.
    Copy,
    /// The target already has it; it is checked, not created.
    Skip,
}

/// Why the snapshot stopped. All are definite: re-running resumes.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error(transparent)]
    Connect(#[from] connect::ConnectError),
    #[error("{0}")]
    Refused(String),
    #[error("{what}: {message}")]
    Sql { what: &'static str, message: String },
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Slot(#[from] SlotError),
    #[error(transparent)]
    Schema(#[from] SchemaError),
    #[error(transparent)]
    Copy(#[from] CopyError),
    #[error(transparent)]
    Refresh(#[from] matview::RefreshError),
    #[error("temporary file: {0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    SlotLost(SlotLost),
    /// A recorded snapshot whose slot the source no longer has.
    #[error("the target records a snapshot for slot {0} but the slot is gone from the source (dropped, or invalidated by max_slot_wal_keep_size): the copy cannot be completed consistently; run `walrelay cleanup --yes` (and empty the target) to start over")]
    SlotGone(String),
    /// The change-stream capture failed (`crate::stream::capture`).
    #[error(transparent)]
    Spool(Box<dyn std::error::Error + Send + Sync>),
    #[error("interrupted by a stop signal (pg_dump/pg_restore stopped with it)")]
    Interrupted,
    #[error(transparent)]
    Map(#[from] crate::map::MapError),
    #[error(transparent)]
    Shape(#[from] crate::map::ShapeError),
}

impl SnapshotError {
    /// Whether running the snapshot again continues this one. Not once its
    /// slot is lost or gone (the changes since the consistent point are no
    /// longer on the source) or its spool failed: then only a new snapshot
    /// after `cleanup` can finish, as the error itself says.
    pub fn resumable(&self) -> bool {
        !matches!(
            self,
            SnapshotError::SlotLost(_) | SnapshotError::SlotGone(_) | SnapshotError::Spool(_)
        )
    }

    /// What the command line says when the snapshot stopped on this error.
    pub fn stopped_context(&self) -> &'static str {
        if self.resumable() {
            "snapshot stopped (fix the cause and re-run: a re-run resumes whatever was done)"
        } else {
            "snapshot stopped and cannot be resumed (see below for what to do)"
        }
    }
}

fn sql(what: &'static str) -> impl Fn(tokio_postgres::Error) -> SnapshotError {
    move |err| SnapshotError::Sql {
        what,
        message: error_text(&err),
    }
}

/// Runs (or resumes) the snapshot to completion.
pub async fn run(config: &Config, opts: &SnapshotOptions) -> Result<Summary, SnapshotError> {
    let started = Instant::now();
    let mut ends = open_ends(config, opts).await?;
    let existing = state::snapshot::read(&ends.target, &config.slot).await?;
    let plugin = slot::slot_plugin(&ends.source, &config.slot).await?;
    let phase = match (&existing, &plugin) {
        (Some(row), _) if row.phase == Phase::Done => {
            return Ok(Summary {
                slot: config.slot.clone(),
                consistent_lsn: row.consistent_lsn,
                tables: 0,
                rows_copied: 0,
                seconds: 0.0,
                already_done: true,
                schema_changes: Vec::new(),
            })
        }
        (Some(row), Some(_)) if row.phase != Phase::Slot => Some(row.phase),
        (Some(row), None) if row.phase != Phase::Slot => {
            return Err(SnapshotError::SlotGone(config.slot.clone()))
        }
        (Some(_), _) => {
            // We died between recording the intent and the slot's creation.
            slot::drop_slot(&ends.source, &config.slot).await?;
            state::snapshot::forget(&ends.target, &config.slot).await?;
            None
        }
        (None, Some(_)) => {
            return Err(SnapshotError::Refused(
                slot::slot_taken(&ends.source, &config.slot).await?,
            ))
        }
        (None, None) => None,
    };
    let (tables, rows) = match phase {
        None => fresh(config, opts, &mut ends).await?,
        Some(phase) => {
            let c0 = existing.as_ref().and_then(|r| r.consistent_lsn);
            record_spool(config, opts, &ends).await?;
            let capture = c0.and_then(|c0| spool_capture(config, opts, c0));
            watched(config, capture, resume(config, opts, &mut ends, phase)).await?
        }
    };
    let consistent_lsn = state::snapshot::read(&ends.target, &config.slot)
        .await?
        .and_then(|r| r.consistent_lsn);
    let schema_changes = std::mem::take(
        ends.schema_changes
            .get_mut()
            .unwrap_or_else(|e| e.into_inner()),
    );
    Ok(Summary {
        slot: config.slot.clone(),
        consistent_lsn,
        tables,
        rows_copied: rows,
        seconds: started.elapsed().as_secs_f64(),
        already_done: false,
        schema_changes,
    })
}

/// [`run`] until `stop` turns true: the run is then dropped, and with it
/// any `pg_dump`/`pg_restore` child (they are killed on drop), so none
/// outlives walrelay.
pub async fn run_until_stopped(
    config: &Config,
    opts: &SnapshotOptions,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Result<Summary, SnapshotError> {
    tokio::select! {
        done = run(config, opts) => done,
        _ = stop.wait_for(|s| *s) => Err(SnapshotError::Interrupted),
    }
}

async fn fresh(
    config: &Config,
    opts: &SnapshotOptions,
    ends: &mut Ends,
) -> Result<(usize, u64), SnapshotError> {
    let plan = refusals::resolve_plan(config, &ends.source).await?;
    let copied = plan.copied_tables();
    let tables = &copied;
    match opts.schema {
        SchemaMode::Copy => {
            schema::check_target_free(&ends.target, tables, &plan.map, false).await?
        }
        SchemaMode::Skip => {
            for column in schema::check_target_matches(&ends.target, tables, &plan.map).await? {
                tracing::info!(%column, "target column is wider than the source's: accepted (values keep their text form)");
            }
            schema::check_target_free(&ends.target, tables, &plan.map, true).await?;
        }
    }
    // Unlogged tables cannot be published: their changes are not in the WAL.
    let published = crate::map::published(
        &plan.tables,
        &plan.map,
        ends.major,
        config.allow_unfiltered_stream,
    )?;
    slot::ensure_publication(&ends.source, &plan.publication, &plan.tables, &published).await?;
    state::snapshot::begin(&ends.target, &config.slot, &config.source.dbname).await?;
    let snap = match slot::ExportedSnapshot::create(
        &config.source,
        ends.major,
        &config.slot,
        &config.publication,
        false,
    )
    .await
    {
        Ok(snap) => snap,
        Err(err) => {
            let _ = state::snapshot::forget(&ends.target, &config.slot).await;
            return Err(err.into());
        }
    };
    tracing::info!(slot = %config.slot, consistent_lsn = %snap.consistent_lsn, "slot created with exported snapshot");
    state::snapshot::slot_created(
        &ends.target,
        &config.slot,
        &snap.system_id,
        snap.consistent_lsn,
        &snap.name,
    )
    .await?;
    record_spool(config, opts, ends).await?;
    let capture = spool_capture(config, opts, snap.consistent_lsn);
    let rows = watched(
        config,
        capture,
        schema_and_rows(config, opts, ends, &plan, snap),
    )
    .await?;
    Ok((tables.len(), rows))
}

/// A fresh snapshot once its slot exists: pre-data, the copy, post-data.
async fn schema_and_rows(
    config: &Config,
    opts: &SnapshotOptions,
    ends: &mut Ends,
    plan: &MigrationPlan,
    snap: slot::ExportedSnapshot,
) -> Result<u64, SnapshotError> {
    let dir = tempfile::tempdir()?;
    let dump_path = dir.path().join("schema.dump");
    if opts.schema == SchemaMode::Copy {
        dump_and_store(config, ends, &snap, plan, &dump_path).await?;
        restore_pre_data(config, opts, ends, &dump_path).await?;
        crate::map::prepare_for_copy(&ends.target, &plan.copied_tables(), &plan.map).await?;
        tracing::info!("pre-data schema restored on the target");
    }
    record_plan(config, opts, ends, &plan.copied_tables(), &snap).await?;
    copy_and_finish(config, opts, ends, plan, snap, &dump_path).await
}

/// Runs `work` (everything after the slot exists) until it finishes or the
/// slot is lost; then `work` is dropped at once, and with it the copy
/// workers and any `pg_dump`/`pg_restore` child (killed on drop). A
/// capture into the spool runs beside it and is stopped (synced, its end
/// acknowledged) when `work` ends; its failure stops `work`.
async fn watched<T>(
    config: &Config,
    mut capture: Option<Capture>,
    work: impl std::future::Future<Output = Result<T, SnapshotError>>,
) -> Result<T, SnapshotError> {
    let done = {
        let captured = async {
            match capture.as_mut() {
                Some(c) => c.failed().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            done = work => done,
            lost = slot_watch::until_lost(&config.source, &config.slot) => Err(SnapshotError::SlotLost(lost)),
            failed = captured => Err(SnapshotError::Spool(Box::new(failed))),
        }
    };
    if let Some(capture) = capture {
        let finished = capture.finish().await;
        if done.is_ok() {
            finished.map_err(|e| SnapshotError::Spool(Box::new(e)))?;
        }
    }
    done
}

/// Records where the spool is, when one is configured.
async fn record_spool(
    config: &Config,
    opts: &SnapshotOptions,
    ends: &Ends,
) -> Result<(), SnapshotError> {
    match &opts.spool {
        Some(spool) => capture::record_location(&ends.target, &config.slot, spool)
            .await
            .map_err(|e| SnapshotError::Spool(Box::new(e))),
        None => Ok(()),
    }
}

/// The capture into the spool, when one is configured.
fn spool_capture(config: &Config, opts: &SnapshotOptions, c0: Lsn) -> Option<Capture> {
    opts.spool
        .as_ref()
        .map(|spool| Capture::spawn(config, spool, c0, None))
}

async fn resume(
    config: &Config,
    opts: &SnapshotOptions,
    ends: &mut Ends,
    phase: Phase,
) -> Result<(usize, u64), SnapshotError> {
    let dir = tempfile::tempdir()?;
    let dump_path = dir.path().join("schema.dump");
    let dump = state::snapshot::schema_dump(&ends.target, &config.slot).await?;
    if let Some(dump) = &dump {
        std::fs::write(&dump_path, dump)?;
    }
    let plan = refusals::resolve_plan(config, &ends.source).await?;
    let copied = plan.copied_tables();
    let tables = &copied;
    if phase == Phase::PostData {
        post_data(config, opts, ends, &plan, &dump_path, true).await?;
        return Ok((tables.len(), 0));
    }
    tracing::info!(slot = %config.slot, phase = phase.as_str(), "resuming the snapshot with a new exported snapshot");
    let temp_slot = format!("{}_resume", config.slot);
    let snap = slot::ExportedSnapshot::create(
        &config.source,
        ends.major,
        &temp_slot,
        &config.publication,
        true,
    )
    .await?;
    let recorded = state::snapshot::read(&ends.target, &config.slot)
        .await?
        .map(|row| row.system_id)
        .unwrap_or_default();
    if recorded != snap.system_id {
        return Err(SnapshotError::Refused(format!(
            "the target's walrelay state for slot {} belongs to source system {recorded}, but --source is system {}: wrong --source or --target",
            config.slot, snap.system_id
        )));
    }
    if phase == Phase::Schema {
        if opts.schema == SchemaMode::Copy {
            if dump.is_none() {
                dump_and_store(config, ends, &snap, &plan, &dump_path).await?;
            }
            // pg_restore --single-transaction: either every table exists or none.
            let present = catalog::table_columns(&ends.target, &tables[0].schema, &tables[0].name)
                .await
                .map_err(sql("reading target tables"))?
                .is_some();
            if !present {
                restore_pre_data(config, opts, ends, &dump_path).await?;
            }
            crate::map::prepare_for_copy(&ends.target, tables, &plan.map).await?;
        }
        record_plan(config, opts, ends, tables, &snap).await?;
    }
    let emptied =
        plan::reset_unfinished(&mut ends.target, &config.slot, snap.consistent_lsn).await?;
    for table in &emptied {
        tracing::warn!(table = %table, "table was copied only in part; copying it again under the new snapshot");
    }
    let rows = copy_and_finish(config, opts, ends, &plan, snap, &dump_path).await?;
    Ok((tables.len(), rows))
}

/// Dumps the schema as `snap` sees it and keeps the dump on the target.
async fn dump_and_store(
    config: &Config,
    ends: &Ends,
    snap: &slot::ExportedSnapshot,
    plan: &MigrationPlan,
    dump_path: &std::path::Path,
) -> Result<(), SnapshotError> {
    let excluded: Vec<String> = plan.schema_exclusions().map(Table::qualified).collect();
    let schemas = access::schemas_left_alone(plan, ends).await?;
    let dump = schema::dump(
        &config.source,
        ends.tools()?,
        Some(&snap.name),
        &excluded,
        &schemas,
        dump_path,
    )
    .await?;
    state::snapshot::store_schema_dump(&ends.target, &config.slot, &dump).await?;
    Ok(())
}

/// Records the tables and chunks to copy and enters the copy phase.
async fn record_plan(
    config: &Config,
    opts: &SnapshotOptions,
    ends: &mut Ends,
    tables: &[Table],
    snap: &slot::ExportedSnapshot,
) -> Result<(), SnapshotError> {
    plan::record(
        &mut ends.target,
        &config.slot,
        tables,
        opts.chunk_pages,
        snap.consistent_lsn,
    )
    .await?;
    Ok(state::snapshot::set_phase(&ends.target, &config.slot, Phase::Copy).await?)
}

/// Copies the pending chunks, releases the snapshot, builds the post-data.
async fn copy_and_finish(
    config: &Config,
    opts: &SnapshotOptions,
    ends: &Ends,
    plan: &MigrationPlan,
    snap: slot::ExportedSnapshot,
    dump_path: &std::path::Path,
) -> Result<u64, SnapshotError> {
    let rows = copy_rows(config, opts, ends, plan, &snap.name, snap.consistent_lsn).await?;
    snap.release();
    post_data(config, opts, ends, plan, dump_path, false).await?;
    Ok(rows)
}

async fn copy_rows(
    config: &Config,
    opts: &SnapshotOptions,
    ends: &Ends,
    plan: &MigrationPlan,
    snapshot_name: &str,
    snapshot_lsn: Lsn,
) -> Result<u64, SnapshotError> {
    let tables = &plan.copied_tables();
    let pending = state::copy::pending_chunks(&ends.target, &config.slot).await?;
    progress::publish_table_states(&ends.target, &config.slot).await;
    let progress = progress::Progress::new(pending);
    let skip = opts.schema == SchemaMode::Skip;
    let specs = copy::specs(tables, &plan.map, &ends.target, skip).await?;
    let job = Arc::new(copy::CopyJob {
        source: config.source.clone(),
        target: config.target.clone(),
        slot: config.slot.clone(),
        snapshot_name: snapshot_name.to_string(),
        snapshot_lsn,
        specs,
        progress: progress.clone(),
    });
    tracing::info!(chunks = pending, jobs = opts.jobs, "copying rows");
    let result = copy::run(job, opts.jobs).await;
    progress.finish();
    progress::publish_table_states(&ends.target, &config.slot).await;
    result?;
    Ok(progress.rows())
}

async fn restore_pre_data(
    config: &Config,
    opts: &SnapshotOptions,
    ends: &Ends,
    dump_path: &std::path::Path,
) -> Result<(), SnapshotError> {
    let section = schema::Section::PreData;
    let changes = schema::restore(
        &config.target,
        &ends.target,
        (ends.tools()?, ends.target_major),
        dump_path,
        section,
        opts.keep_owners,
    )
    .await?;
    ends.note_schema_changes(changes);
    Ok(())
}

async fn post_data(
    config: &Config,
    opts: &SnapshotOptions,
    ends: &Ends,
    plan: &MigrationPlan,
    dump_path: &std::path::Path,
    resuming: bool,
) -> Result<(), SnapshotError> {
    state::snapshot::set_phase(&ends.target, &config.slot, Phase::PostData).await?;
    if opts.schema == SchemaMode::Copy && dump_path.exists() {
        tracing::info!("building indexes, constraints and triggers");
        let section = schema::Section::PostData {
            jobs: opts.jobs,
            resuming,
        };
        let restore = schema::restore(
            &config.target,
            &ends.target,
            (ends.tools()?, ends.target_major),
            dump_path,
            section,
            opts.keep_owners,
        );
        let changes = tokio::select! {
            done = restore => done?,
            never = build_progress::watch(&ends.target) => match never {},
        };
        ends.note_schema_changes(changes);
        crate::map::apply_after_post_data(&ends.target, &plan.copied_tables(), &plan.map).await?;
    }
    // The schema copy created them empty (and `--schema skip` ones hold
    // what the operator put there): computed from the copied rows now.
    let refreshed = matview::refresh(&ends.target, &plan.matviews).await?;
    if !refreshed.views.is_empty() {
        tracing::info!(
            views = refreshed.views.len(),
            seconds = refreshed.seconds,
            "materialized views refreshed on the target (refreshed, not replicated)"
        );
    }
    for view in &refreshed.missing {
        tracing::warn!(view = %view, "materialized view missing on the target: not refreshed");
    }
    Ok(state::snapshot::set_phase(&ends.target, &config.slot, Phase::Done).await?)
}
