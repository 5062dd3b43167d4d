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
pub mod build_progress;
mod copy;
mod managed;
mod plan;
mod progress;
mod schema;
pub(crate) mod slot;

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Instant;

use tokio_postgres::Client;
use walrelay_proto::Lsn;

use crate::config::Config;
use crate::migration::MigrationPlan;
use crate::pg::catalog::{self, quote_ident, Table, RDS_REPLICATION};
use crate::pg::connect::{self, error_text};
use crate::state::snapshot::Phase;
use crate::state::{self, StateError};

pub use copy::CopyError;
pub use schema::SchemaError;
pub use slot::SlotError;

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
}

impl Default for SnapshotOptions {
    fn default() -> Self {
        SnapshotOptions {
            jobs: 4,
            schema: SchemaMode::Copy,
            keep_owners: false,
            chunk_pages: 16384,
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
    #[error("temporary file: {0}")]
    Io(#[from] std::io::Error),
    #[error("interrupted by a stop signal (pg_dump/pg_restore stopped with it)")]
    Interrupted,
}

fn sql(what: &'static str) -> impl Fn(tokio_postgres::Error) -> SnapshotError {
    move |err| SnapshotError::Sql {
        what,
        message: error_text(&err),
    }
}

/// What a finished snapshot reports.
#[derive(Debug)]
pub struct Summary {
    pub slot: String,
    /// `None` only for a state edited by hand (the column is NULL).
    pub consistent_lsn: Option<Lsn>,
    pub tables: usize,
    pub rows_copied: u64,
    pub seconds: f64,
    pub already_done: bool,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.already_done {
            return write!(f, "snapshot for slot {} was already complete (consistent point {}); run `walrelay stream`", self.slot, Point(self.consistent_lsn));
        }
        write!(
            f,
            "snapshot complete: {} tables, {} rows copied in this run in {:.1} s; slot {} streams from {}",
            self.tables, self.rows_copied, self.seconds, self.slot, Point(self.consistent_lsn)
        )
    }
}

/// A consistent point as the summary shows it: `X/Y`, or `-` when unknown.
struct Point(Option<Lsn>);

impl fmt::Display for Point {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(lsn) => write!(f, "{lsn}"),
            None => f.write_str("-"),
        }
    }
}

/// The two SQL sessions of the coordinator and facts read once.
struct Ends {
    source: Client,
    target: Client,
    major: u32,
}

/// Runs (or resumes) the snapshot to completion.
pub async fn run(config: &Config, opts: &SnapshotOptions) -> Result<Summary, SnapshotError> {
    let started = Instant::now();
    let mut ends = open_ends(config).await?;
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
            })
        }
        (Some(row), Some(_)) if row.phase != Phase::Slot => Some(row.phase),
        (Some(row), None) if row.phase != Phase::Slot => {
            return Err(SnapshotError::Refused(format!(
                "the target records a snapshot for slot {} but the slot is gone from the source (dropped, or invalidated by max_slot_wal_keep_size): the copy cannot be completed consistently; run `walrelay cleanup --yes` (and empty the target) to start over",
                config.slot
            )))
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
        Some(phase) => resume(config, opts, &mut ends, phase).await?,
    };
    let consistent_lsn = state::snapshot::read(&ends.target, &config.slot)
        .await?
        .and_then(|r| r.consistent_lsn);
    Ok(Summary {
        slot: config.slot.clone(),
        consistent_lsn,
        tables,
        rows_copied: rows,
        seconds: started.elapsed().as_secs_f64(),
        already_done: false,
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

async fn open_ends(config: &Config) -> Result<Ends, SnapshotError> {
    let source = connect::connect(&config.source, "walrelay-snapshot").await?;
    let target = connect::connect(&config.target, "walrelay-snapshot").await?;
    let row = source
        .query_one(
            &format!(
                "SELECT current_setting('wal_level'), current_setting('server_version_num')::int, \
                    rolsuper OR rolreplication OR {RDS_REPLICATION} \
             FROM pg_roles WHERE rolname = current_user"
            ),
            &[],
        )
        .await
        .map_err(sql("reading source settings"))?;
    let (wal_level, version, replication): (String, i32, bool) =
        (row.get(0), row.get(1), row.get(2));
    if wal_level != "logical" {
        return Err(SnapshotError::Refused(format!(
            "the source's wal_level is {wal_level}; logical replication needs wal_level = logical (ALTER SYSTEM SET wal_level = logical; then restart the source)"
        )));
    }
    if !replication {
        return Err(access::no_replication(config));
    }
    // The phase records must survive a target crash even where the server
    // defaults to asynchronous commit.
    target
        .batch_execute("SET synchronous_commit = on")
        .await
        .map_err(sql("configuring the target session"))?;
    state::ensure_schema(&target)
        .await
        .map_err(|err| access::state_schema(config, err))?;
    let locked: bool = target
        .query_one(
            "SELECT pg_try_advisory_lock(hashtext('walrelay snapshot ' || $1))",
            &[&config.slot],
        )
        .await
        .map_err(sql("locking the snapshot"))?
        .get(0);
    if !locked {
        return Err(SnapshotError::Refused(format!(
            "another walrelay snapshot for slot {} is running against this target",
            config.slot
        )));
    }
    Ok(Ends {
        source,
        target,
        major: (version / 10000) as u32,
    })
}

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
        .filter(|t| t.kind == 'r' && !t.has_usable_replica_identity())
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
async fn resolve_plan(config: &Config, source: &Client) -> Result<MigrationPlan, SnapshotError> {
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
    validate_tables(&plan.tables, bypass, &config.source.user)?;
    Ok(plan)
}

async fn fresh(
    config: &Config,
    opts: &SnapshotOptions,
    ends: &mut Ends,
) -> Result<(usize, u64), SnapshotError> {
    let plan = resolve_plan(config, &ends.source).await?;
    let tables = &plan.tables;
    match opts.schema {
        SchemaMode::Copy => schema::check_target_free(&ends.target, tables, false).await?,
        SchemaMode::Skip => {
            schema::check_target_matches(&ends.target, tables).await?;
            schema::check_target_free(&ends.target, tables, true).await?;
        }
    }
    slot::ensure_publication(&ends.source, &plan.publication, tables).await?;
    state::snapshot::begin(&ends.target, &config.slot, &config.source.dbname).await?;
    let snap = match slot::ExportedSnapshot::create(
        &config.source,
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
    let dir = tempfile::tempdir()?;
    let dump_path = dir.path().join("schema.dump");
    if opts.schema == SchemaMode::Copy {
        dump_and_store(config, ends, &snap, &plan, &dump_path).await?;
        restore_pre_data(config, opts, ends, &dump_path).await?;
        tracing::info!("pre-data schema restored on the target");
    }
    record_plan(config, opts, ends, tables, &snap).await?;
    let rows = copy_and_finish(config, opts, ends, tables, snap, &dump_path).await?;
    Ok((tables.len(), rows))
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
    let plan = resolve_plan(config, &ends.source).await?;
    let tables = &plan.tables;
    if phase == Phase::PostData {
        post_data(config, opts, ends, &dump_path, true).await?;
        return Ok((tables.len(), 0));
    }
    tracing::info!(slot = %config.slot, phase = phase.as_str(), "resuming the snapshot with a new exported snapshot");
    let temp_slot = format!("{}_resume", config.slot);
    let snap =
        slot::ExportedSnapshot::create(&config.source, &temp_slot, &config.publication, true)
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
        }
        record_plan(config, opts, ends, tables, &snap).await?;
    }
    let emptied =
        plan::reset_unfinished(&mut ends.target, &config.slot, snap.consistent_lsn).await?;
    for table in &emptied {
        tracing::warn!(table = %table, "table was copied only in part; copying it again under the new snapshot");
    }
    let rows = copy_and_finish(config, opts, ends, tables, snap, &dump_path).await?;
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
        ends.major,
        &snap.name,
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
    tables: &[Table],
    snap: slot::ExportedSnapshot,
    dump_path: &std::path::Path,
) -> Result<u64, SnapshotError> {
    let rows = copy_rows(config, opts, ends, tables, &snap.name, snap.consistent_lsn).await?;
    snap.release();
    post_data(config, opts, ends, dump_path, false).await?;
    Ok(rows)
}

async fn copy_rows(
    config: &Config,
    opts: &SnapshotOptions,
    ends: &Ends,
    tables: &[Table],
    snapshot_name: &str,
    snapshot_lsn: Lsn,
) -> Result<u64, SnapshotError> {
    let pending = state::copy::pending_chunks(&ends.target, &config.slot).await?;
    progress::publish_table_states(&ends.target, &config.slot).await;
    let progress = progress::Progress::new(pending);
    let specs: HashMap<_, _> = tables
        .iter()
        .map(|t| {
            (
                (t.schema.clone(), t.name.clone()),
                Arc::new(copy::CopySpec::new(t)),
            )
        })
        .collect();
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
    schema::restore(
        &config.target,
        &ends.target,
        ends.major,
        dump_path,
        section,
        opts.keep_owners,
    )
    .await?;
    Ok(())
}

async fn post_data(
    config: &Config,
    opts: &SnapshotOptions,
    ends: &Ends,
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
            ends.major,
            dump_path,
            section,
            opts.keep_owners,
        );
        tokio::select! {
            done = restore => done?,
            never = build_progress::watch(&ends.target) => match never {},
        }
    }
    Ok(state::snapshot::set_phase(&ends.target, &config.slot, Phase::Done).await?)
}
