//! `walrelay verify`: hash-based comparison of source and target that
//! pinpoints differing rows, safe to run while the stream applies.
//!
//! # What is compared
//! Every selected table is split into chunks of about `chunk_rows` rows by
//! ranges of its primary key (or replica-identity index), boundaries walked
//! on the source and applied to both sides ([`plan`]). Both servers compute
//! each chunk's row count and an order-independent sum of per-row hashes of
//! the row's text form, columns matched by name ([`hash`]). A table without
//! a key is compared by one whole-table aggregate; its differing rows are
//! pinpointed by fingerprint (the same per-row hash) as a multiset
//! difference: counts, never values ([`fingerprint`], [`keyless`]).
//!
//! # Why a clean report can be trusted while replication runs
//! The target holds, at every commit, the source as of its checkpoint
//! `walrelay.progress.applied_lsn` (A): the checkpoint is written in the
//! same transaction as the changes it covers. A comparison is exact when
//! both sides are read at the same source position; a live pass reads them
//! at slightly different positions, so:
//! - a chunk that matches is consistent: rows in flight would have to
//!   change both sides' aggregates identically (a 64-bit hash sum collision);
//! - a chunk that differs is re-checked ([`recheck`]): the source is read
//!   with the WAL insert position in the same statement (see
//!   [`hash::SOURCE_LSN_EXPR`] for why not `pg_current_wal_lsn()`), the target is read
//!   after its checkpoint passed that LSN, then the source again; equality
//!   with either source read settles it. Each source statement is its own
//!   short transaction: no long snapshot is ever held on the source.
//! - what still differs after `retries` rounds is bisected to keys, and each
//!   key is confirmed exactly ([`pinpoint`]): the source rows are locked
//!   `FOR SHARE` for one target catch-up, so source and target are compared
//!   at the same point for those rows. Only confirmed keys are drift; keys
//!   that could not be settled (the target did not catch up in time) are
//!   reported apart and make the pass "not proven", never "drift".
//! - a key-less table that still differs is confirmed under a brief `LOCK
//!   TABLE … IN SHARE MODE` (writers to that table wait for one target
//!   catch-up and the counting; readers do not): the fingerprints whose
//!   counts differ are drift ([`keyless`]); so is a chunk that differs though
//!   no key does (a key held twice on the target), confirmed under the same
//!   lock: it is drift of its key range, never clean.
//!
//! Every table is read with `ONLY`: an inheritance parent's rows are its
//! own, its children are selected tables of their own. Unlogged tables and
//! materialized views are not compared (nothing streams them: one is not in
//! the WAL, the other is refreshed on the target) and the report lists them
//! under `not_compared`, with why.
//!
//! Without a running stream (no checkpoint row, or the slot inactive),
//! nothing moves on the target and sides are compared as they are; a table
//! that still differs while the slot holds committed changes to it past the
//! target's position is "behind", not drift, and is not repaired
//! ([`behind`]).
//!
//! On an idle source the target's checkpoint would pass a freshly read LSN
//! only with the stream's next heartbeat (`--heartbeat-interval`): a wait
//! writes one small logical message first, which the walsender follows with
//! a keepalive the stream checkpoints at once (`recheck::nudge`; 10 s to
//! 0.3 s for one drifted row in the tests).

pub(crate) mod behind;
pub(crate) mod fingerprint;
pub(crate) mod hash;
pub(crate) mod keyless;
pub(crate) mod keyless_repair;
pub(crate) mod pinpoint;
pub(crate) mod plan;
pub(crate) mod recheck;
pub(crate) mod repair;
pub mod report;
pub(crate) mod schema;
pub mod touched;

use std::time::{Duration, Instant};

use tokio_postgres::Client;

use crate::config::Config;
use crate::metrics::{DRIFT_ROWS, VERIFY_CHUNKS};
use crate::migration::MigrationPlan;
use crate::pg::catalog;
use crate::pg::connect::{self, error_text};
use crate::status::StatusBoard;

use plan::{Chunker, Range, Shape, Side};
use recheck::{Sync, Wait};
pub use report::{Basis, ChunkState, Report, TableReport};

/// How a pass runs.
#[derive(Debug, Clone)]
pub struct VerifyOptions {
    /// Rows per chunk (about).
    pub chunk_rows: u64,
    /// Re-checks of a differing chunk or key before the exact round.
    pub retries: u32,
    /// Source rows hashed per second at most (`None`: unthrottled).
    pub max_rows_per_sec: Option<u64>,
    /// Re-copy drifted rows from the source.
    pub repair: bool,
    /// How long to wait for the target to apply past a source LSN.
    pub catchup_timeout: Duration,
}

impl Default for VerifyOptions {
    fn default() -> Self {
        VerifyOptions {
            chunk_rows: 10_000,
            retries: 5,
            max_rows_per_sec: None,
            repair: false,
            catchup_timeout: Duration::from_secs(30),
        }
    }
}

/// Why a pass could not complete.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error(transparent)]
    Connect(#[from] connect::ConnectError),
    #[error(transparent)]
    Map(#[from] crate::map::MapError),
    #[error("{what}: {message}")]
    Sql { what: &'static str, message: String },
    #[error(transparent)]
    State(#[from] crate::state::StateError),
    #[error("the target did not apply past the source position in time (table {0}); is the stream running?")]
    Behind(String),
    #[error("table {table} has a row on the target whose key ({columns}) is NULL, which the source's key never is, so no key can name it; delete that row on the target or make the key NOT NULL there")]
    NullKey { table: String, columns: String },
    #[error(transparent)]
    Selection(#[from] crate::pg::selection::SelectionError),
}

impl VerifyError {
    /// Maps a tokio-postgres error; error texts of data errors keep no values.
    pub(crate) fn sql(what: &'static str) -> impl Fn(tokio_postgres::Error) -> VerifyError {
        move |err| VerifyError::Sql {
            what,
            message: connect::safe_error_text(&err),
        }
    }
}

/// The sessions and settings of one pass.
pub struct Ctx<'a> {
    pub source: Client,
    pub target: Client,
    /// A second source session for explicit transactions (locks, repair).
    pub source_tx: Client,
    pub sync: Sync,
    pub opts: VerifyOptions,
    pub board: Option<&'a StatusBoard>,
    pub repair_replica_role: bool,
    /// The publication the slot decodes (to read its pending changes).
    pub publication: String,
    /// The mapping: the target's forms the source side computes (`--map`).
    pub map: crate::map::Map,
    /// The slot's changes the target has not applied, read once per pass
    /// when no stream runs (see [`behind`]).
    pub(crate) pending: tokio::sync::OnceCell<Option<behind::Pending>>,
}

/// One full verification pass over the selected tables: schema, then data.
/// `board` (from `walrelay run`) lets waits use the stream's own applied
/// position; `None` polls the target's checkpoint only. The selection is
/// resolved at the start of the pass (a pass is its own entry point).
pub async fn run_pass(
    config: &Config,
    opts: &VerifyOptions,
    board: Option<&StatusBoard>,
) -> Result<Report, VerifyError> {
    let started = Instant::now();
    let ctx = Ctx::open(config, opts, board).await?;
    let plan = MigrationPlan::resolve(&ctx.source, config)
        .await
        .map_err(VerifyError::sql("listing the selected tables"))?;
    plan.check_map(&ctx.source).await?;
    // A selection that names no table is a mistake to report, not a clean pass.
    crate::pg::selection::Selection::non_empty(plan.row_tables().collect())?;
    Ok(pass(&ctx, &plan, None, started).await?.0)
}

/// One full pass over the tables of a plan resolved by the caller.
pub async fn planned_pass(
    config: &Config,
    plan: &MigrationPlan,
    opts: &VerifyOptions,
) -> Result<Report, VerifyError> {
    Ok(scoped_pass(config, plan, opts, None).await?.0)
}

/// The schema of every selected table, then the data of every table
/// (`scope` `None`) or only of what `scope` names (see [`touched`]).
/// Returns the report and the keys that could not be settled by key.
pub(crate) async fn scoped_pass(
    config: &Config,
    plan: &MigrationPlan,
    opts: &VerifyOptions,
    scope: Option<&touched::Touched>,
) -> Result<(Report, touched::Touched), VerifyError> {
    let started = Instant::now();
    let ctx = Ctx::open(config, opts, None).await?;
    pass(&ctx, plan, scope, started).await
}

async fn pass(
    ctx: &Ctx<'_>,
    plan: &MigrationPlan,
    scope: Option<&touched::Touched>,
    started: Instant,
) -> Result<(Report, touched::Touched), VerifyError> {
    let streaming = ctx.sync.streaming(&ctx.source).await?;
    let tables: Vec<catalog::Table> = plan.row_tables().cloned().collect();
    let (schema, widened) = schema::compare(&ctx.source, &ctx.target, &tables, &ctx.map).await?;
    let mut throttle = Throttle::new(ctx.opts.max_rows_per_sec);
    let mut reports = Vec::new();
    let mut unsettled = touched::Touched::new(usize::MAX);
    for table in &tables {
        let report = match scope.map(|s| s.changes(&table.display())) {
            None => {
                let report = verify_table(ctx, table, &mut throttle).await?;
                metrics::gauge!(DRIFT_ROWS, "table" => report.table.clone())
                    .set(report.drift_rows as f64);
                report
            }
            Some(None) => continue,
            Some(Some(touched::TableChanges::Whole)) => {
                verify_table(ctx, table, &mut throttle).await?
            }
            Some(Some(touched::TableChanges::Keys(keys))) => {
                let (report, left) = touched::verify_keys(ctx, table, keys).await?;
                for key in left {
                    unsettled.add_key(&table.display(), key);
                }
                report
            }
        };
        reports.push(report);
    }
    let seconds = started.elapsed().as_secs_f64();
    let mut report = Report::finish(reports, schema, seconds, streaming);
    report.widened_columns = widened;
    report.not_compared = not_compared(plan);
    Ok((report, unsettled))
}

/// The unlogged tables and materialized views of the plan, which a pass
/// moves past (see [`report::NotCompared`]).
fn not_compared(plan: &MigrationPlan) -> Vec<report::NotCompared> {
    let tables = plan.unlogged.iter().map(|t| report::NotCompared {
        relation: t.display(),
        kind: "unlogged table",
        why: report::UNLOGGED_NOT_COMPARED,
    });
    let views = plan.matviews.iter().map(|v| report::NotCompared {
        relation: v.display(),
        kind: "materialized view",
        why: if v.populated {
            report::MATVIEW_NOT_COMPARED
        } else {
            report::MATVIEW_UNPOPULATED
        },
    });
    tables.chain(views).collect()
}

impl<'a> Ctx<'a> {
    /// Opens the sessions of a pass.
    pub async fn open(
        config: &Config,
        opts: &VerifyOptions,
        board: Option<&'a StatusBoard>,
    ) -> Result<Ctx<'a>, VerifyError> {
        let (source, target, source_tx) = tokio::try_join!(
            connect::connect(&config.source, "walrelay verify"),
            connect::connect(&config.target, "walrelay verify"),
            connect::connect(&config.source, "walrelay verify"),
        )?;
        let sync = Sync::new(&target, &config.slot, opts.catchup_timeout).await?;
        let repair_replica_role = opts.repair
            && target
                .batch_execute("BEGIN; SET LOCAL session_replication_role = replica; ROLLBACK")
                .await
                .is_ok();
        Ok(Ctx {
            source,
            target,
            source_tx,
            sync,
            opts: opts.clone(),
            board,
            repair_replica_role,
            publication: config.publication.clone(),
            map: config.map.clone(),
            pending: tokio::sync::OnceCell::new(),
        })
    }
}

pub(crate) async fn verify_table(
    ctx: &Ctx<'_>,
    table: &catalog::Table,
    throttle: &mut Throttle,
) -> Result<TableReport, VerifyError> {
    let started = Instant::now();
    if !table.can_select {
        let basis = Basis::Skipped {
            reason: "no SELECT privilege on the source".into(),
        };
        return Ok(TableReport::new(table.display(), basis));
    }
    let Some(shape) = plan::shape(&ctx.source, &ctx.target, table, &ctx.map).await? else {
        let basis = Basis::Skipped {
            reason: "missing on target".into(),
        };
        return Ok(TableReport::new(table.display(), basis));
    };
    let mut report = if shape.key.is_empty() {
        let mut report = TableReport::new(shape.display.clone(), Basis::Fingerprint);
        whole_table(ctx, &shape, &mut report).await?;
        throttle.pace(report.source_rows).await;
        report
    } else {
        by_chunks(ctx, &shape, throttle).await?
    };
    report.seconds = started.elapsed().as_secs_f64();
    if report.drift_rows > 0 {
        tracing::warn!(table = %report.table, drift_rows = report.drift_rows, "drift found");
    }
    Ok(report)
}

/// Chunked comparison of a table with a key, pinpointing and repairing.
async fn by_chunks(
    ctx: &Ctx<'_>,
    shape: &Shape,
    throttle: &mut Throttle,
) -> Result<TableReport, VerifyError> {
    let columns = shape.key.iter().map(|k| k.name.clone()).collect();
    let mut report = TableReport::new(shape.display.clone(), Basis::Key { columns });
    let mut chunker = Chunker::new(ctx.opts.chunk_rows);
    let mut suspects = Vec::new();
    // The next boundary is walked (on the second source session, idle
    // until the re-checks) while the current chunk is hashed.
    let mut next = chunker.next(shape, &ctx.source_tx).await?;
    while let Some(range) = next {
        let chunk_started = Instant::now();
        let (compared, upcoming) = tokio::join!(
            recheck::both(ctx, shape, &range),
            chunker.next(shape, &ctx.source_tx)
        );
        let (source, target, lsn) = compared?;
        next = upcoming?;
        let took = chunk_started.elapsed().as_secs_f64();
        report.max_chunk_seconds = report.max_chunk_seconds.max(took);
        report.chunks += 1;
        report.source_rows += source.rows.max(0) as u64;
        let rows = source.rows.max(0) as u64;
        if source == target {
            metrics::counter!(VERIFY_CHUNKS, "result" => "match").increment(1);
        } else {
            suspects.push(recheck::Suspect { range, source, lsn });
        }
        throttle.pace(rows).await;
    }
    report.chunks_rechecked = suspects.len() as u64;
    let total = suspects.len();
    let remaining = recheck::settle(ctx, shape, suspects).await?;
    tracing::debug!(table = %shape.display, suspects = total, remaining = remaining.len(), "re-checked");
    metrics::counter!(VERIFY_CHUNKS, "result" => "mismatch")
        .increment((total - remaining.len()) as u64);
    if !remaining.is_empty() {
        if let Some(why) = behind::check(ctx, shape, false).await? {
            for suspect in &remaining {
                report.add_chunk(&suspect.range, ChunkState::Behind, 0);
            }
            note_behind(ctx, &mut report, why.as_deref());
            return Ok(report);
        }
    }
    for suspect in remaining {
        pinpoint_chunk(ctx, shape, &suspect.range, &mut report).await?;
    }
    Ok(report)
}

/// Says why a table behind a stopped stream is neither drift nor repaired.
fn note_behind(ctx: &Ctx<'_>, report: &mut TableReport, why: Option<&str>) {
    tracing::warn!(table = %report.table, "the target is behind and no stream runs");
    report.note(behind::note(ctx, why));
    if ctx.opts.repair {
        report.note(NOT_REPAIRED_BEHIND.into());
    }
}

/// Why `--repair` leaves rows the stream has not applied yet.
pub(crate) const NOT_REPAIRED_BEHIND: &str = "not repaired: rows the stream has not applied yet are left to it (a copy ahead of the stream would make its next INSERT or UPDATE of them fail); once it has caught up, run verify --repair again if drift remains";

async fn pinpoint_chunk(
    ctx: &Ctx<'_>,
    shape: &Shape,
    range: &Range,
    report: &mut TableReport,
) -> Result<Vec<plan::Key>, VerifyError> {
    let candidates = pinpoint::candidates(ctx, shape, range).await?;
    tracing::debug!(table = %shape.display, candidates = candidates.len(), "bisected");
    let found = (report.drift_rows, report.unsettled);
    let left = settle_keys(ctx, shape, candidates, report).await?;
    if (report.drift_rows, report.unsettled) == found {
        // The chunk differed through every re-check, yet no key does: per-key
        // hashes cannot show what only counts can (a key held twice).
        exact_chunk(ctx, shape, range, report).await?;
    }
    Ok(left)
}

/// A chunk that differs although no key does, compared exactly: what still
/// differs is drift of its key range, never clean.
async fn exact_chunk(
    ctx: &Ctx<'_>,
    shape: &Shape,
    range: &Range,
    report: &mut TableReport,
) -> Result<(), VerifyError> {
    match exact(ctx, shape, range).await? {
        None => report.add_chunk(range, ChunkState::Unsettled, 0),
        Some((source, target)) if source == target => {}
        Some((source, target)) => {
            tracing::warn!(table = %shape.display, "a chunk differs though no key does");
            report.add_chunk(range, ChunkState::Drift, source.rows.abs_diff(target.rows));
        }
    }
    Ok(())
}

/// Confirms candidate keys, repairs (when asked) and records the drift;
/// returns the keys that could not be settled.
pub(crate) async fn settle_keys(
    ctx: &Ctx<'_>,
    shape: &Shape,
    candidates: Vec<plan::Key>,
    report: &mut TableReport,
) -> Result<Vec<plan::Key>, VerifyError> {
    let verdict = pinpoint::confirm(ctx, shape, candidates).await?;
    tracing::debug!(table = %shape.display, drift = verdict.drift.len(), unsettled = verdict.unsettled.len(), "confirmed");
    let result = if verdict.drift.is_empty() {
        "mismatch"
    } else {
        "drift"
    };
    metrics::counter!(VERIFY_CHUNKS, "result" => result).increment(1);
    report.unsettled += verdict.unsettled.len() as u64;
    if ctx.opts.repair && !verdict.drift.is_empty() {
        let keys: Vec<plan::Key> = verdict.drift.iter().map(|(k, _)| k.clone()).collect();
        let outcome = repair::repair(ctx, shape, &keys).await?;
        report.repaired += outcome.repaired;
        if outcome.refused > 0 {
            report.not_repaired += outcome.refused;
            report.note(NOT_REPAIRED_BEHIND.into());
        }
    }
    report.add_drift(verdict.drift);
    Ok(verdict.unsettled)
}

/// A key-less table: one aggregate, re-checked, then its rows pinpointed by
/// fingerprint under a brief SHARE lock ([`keyless`]).
pub(crate) async fn whole_table(
    ctx: &Ctx<'_>,
    shape: &Shape,
    report: &mut TableReport,
) -> Result<(), VerifyError> {
    let range = Range::default();
    let chunk_started = Instant::now();
    let (source, target, lsn) = recheck::both(ctx, shape, &range).await?;
    report.max_chunk_seconds = chunk_started.elapsed().as_secs_f64();
    report.chunks = 1;
    report.source_rows = source.rows.max(0) as u64;
    if source == target {
        metrics::counter!(VERIFY_CHUNKS, "result" => "match").increment(1);
        return Ok(());
    }
    report.chunks_rechecked = 1;
    let suspect = recheck::Suspect { range, source, lsn };
    if recheck::settle(ctx, shape, vec![suspect]).await?.is_empty() {
        metrics::counter!(VERIFY_CHUNKS, "result" => "mismatch").increment(1);
        return Ok(());
    }
    if let Some(why) = behind::check(ctx, shape, false).await? {
        report.add_chunk(&Range::default(), ChunkState::Behind, 0);
        note_behind(ctx, report, why.as_deref());
        return Ok(());
    }
    keyless::settle(ctx, shape, report).await
}

/// Both sides' aggregates of `range` at one source position: the table is
/// locked `SHARE` on the source (when a stream applies) for one target
/// catch-up. `None` when it could not be locked or the target did not
/// catch up in time.
async fn exact(
    ctx: &Ctx<'_>,
    shape: &Shape,
    range: &Range,
) -> Result<Option<(hash::Aggregate, hash::Aggregate)>, VerifyError> {
    let tx = &ctx.source_tx;
    tx.batch_execute("BEGIN; SET LOCAL lock_timeout = '2s'")
        .await
        .map_err(VerifyError::sql("starting the locked re-check"))?;
    let outcome = locked_range(ctx, shape, range).await;
    let _ = tx.batch_execute("ROLLBACK").await;
    outcome
}

async fn locked_range(
    ctx: &Ctx<'_>,
    shape: &Shape,
    range: &Range,
) -> Result<Option<(hash::Aggregate, hash::Aggregate)>, VerifyError> {
    let tx = &ctx.source_tx;
    if ctx.sync.streaming(&ctx.source).await? {
        if let Err(err) = tx
            .batch_execute(&format!(
                "LOCK TABLE ONLY {} IN SHARE MODE",
                shape.table(Side::Source)
            ))
            .await
        {
            tracing::warn!(table = %shape.display, error = %error_text(&err), "cannot lock the table for the exact re-check");
            return Ok(None);
        }
    }
    let (source, lsn) = hash::aggregate(tx, shape, Side::Source, range).await?;
    if ctx.sync.wait(ctx, lsn).await? == Wait::Behind {
        return Ok(None);
    }
    let (target, _) = hash::aggregate(&ctx.target, shape, Side::Target, range).await?;
    Ok(Some((source, target)))
}

/// Keeps the hashing rate under `--max-rows-per-sec` (averaged over the pass).
pub(crate) struct Throttle {
    limit: Option<u64>,
    started: Instant,
    rows: u64,
}

impl Throttle {
    pub(crate) fn new(limit: Option<u64>) -> Self {
        Throttle {
            limit: limit.filter(|l| *l > 0),
            started: Instant::now(),
            rows: 0,
        }
    }

    async fn pace(&mut self, rows: u64) {
        self.rows += rows;
        let Some(limit) = self.limit else {
            return;
        };
        let due = Duration::from_secs_f64(self.rows as f64 / limit as f64);
        if let Some(wait) = due.checked_sub(self.started.elapsed()) {
            tokio::time::sleep(wait).await;
        }
    }
}
