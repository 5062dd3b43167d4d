//! Cutover's verification, split around the fence so writes are unavailable
//! only while the rows changed last are compared.
//!
//! Before the fence, while the application still writes:
//! 1. a temporary slot starts tracking changes ([`super::track`]);
//! 2. a full verification pass runs (in-flight changes settle as in any
//!    live pass). Drift, a schema difference or a skipped table stops the
//!    cutover here, before anything is fenced;
//! 3. narrowing rounds: the keys changed during the previous step are
//!    compared, live, while the next step's changes accumulate; each round
//!    is shorter than the one before, so the set shrinks to what a fraction
//!    of a second of writes touches.
//!
//! After the fence and the marker, the final verification compares what the
//! last round left: the keys changed since it began (read up to the marker),
//! keys a round could not settle, and tables to be compared whole (no key,
//! truncated, or past `--max-touched-keys`).
//!
//! Why this proves what a full pass after the fence would: a row that did
//! not change since the full pass began was compared equal by it and has
//! not moved on either side since; a row that changed is compared after its
//! last change, by a round or by the final verification. Writes to the
//! target by anything but the stream, between the pass and the fence, are
//! the one thing only `--final-verify full` would see.

use std::time::Instant;

use tokio_postgres::Client;

use crate::config::Config;
use crate::migration::MigrationPlan;
use crate::verify::report::Basis;
use crate::verify::touched::{self, Touched};
use crate::verify::{self, Report, VerifyOptions};

use super::track::Tracker;
use super::{CutoverError, CutoverOptions, CutoverReport};

/// Rounds before the fence at most.
const MAX_ROUNDS: usize = 4;
/// Below this many changed keys another round would save less than it costs.
const FEW_KEYS: usize = 2_000;

/// What the fence may proceed with.
pub(super) enum Before {
    /// Tracking in place; the final verification compares what it holds.
    Ready(Box<Tracked>),
    /// Changes cannot be tracked (no free slot, say): the final
    /// verification compares every row.
    Full,
    /// The source and the target differ already: not fenced, not safe.
    Stop,
}

/// The tracking slot and what it saw that is not yet compared.
pub(super) struct Tracked {
    tracker: Tracker,
    pending: Touched,
}

/// Steps 1–3 of the module doc.
pub(super) async fn before_fence(
    config: &Config,
    plan: &MigrationPlan,
    source: &Client,
    opts: &CutoverOptions,
    report: &mut CutoverReport,
) -> Result<Before, CutoverError> {
    let started = Instant::now();
    // Without a streamer the target lags by whatever was written since it
    // stopped: a pass would call that lag drift. The marker wait says why.
    let streaming = source
        .query_opt(
            "SELECT active FROM pg_replication_slots WHERE slot_name = $1",
            &[&config.slot],
        )
        .await
        .map_err(super::sql("reading the slot"))?
        .is_some_and(|r| r.get::<_, bool>(0));
    if !streaming {
        report.final_verify = "full";
        return Ok(Before::Full);
    }
    let mut tracker = match Tracker::start(config, plan, opts.max_touched_keys).await {
        Ok(tracker) => tracker,
        Err(err) => {
            report.final_verify = "full";
            report.warnings.push(format!(
                "changes since the last verification cannot be tracked ({err}); the final verification compares every row"
            ));
            return Ok(Before::Full);
        }
    };
    let pass = verify::planned_pass(config, plan, &VerifyOptions::default()).await?;
    report.pre_fence_rows_verified += pass.rows;
    if stop_on(&pass, "the verification before the fence", report) {
        tracker.close().await;
        return Ok(Before::Stop);
    }
    // Tables whose changes kept moving go whole into the final verification.
    let mut pending = Touched::new(opts.max_touched_keys);
    for table in pass.tables.iter().filter(|t| t.unsettled > 0) {
        pending.add_whole(&table.table);
    }
    for round in 1..=MAX_ROUNDS {
        let mut fresh = match tracker.drain(None).await {
            Ok(fresh) => fresh,
            Err(err) => return Ok(untracked(tracker, err, report).await),
        };
        fresh.merge(pending);
        pending = fresh;
        if pending.keys() <= FEW_KEYS {
            break;
        }
        let whole = pending.take_whole();
        let (pass, left) = touched::run(config, plan, &VerifyOptions::default(), &pending).await?;
        tracing::debug!(
            round,
            keys = pending.keys(),
            unsettled = left.keys(),
            seconds = pass.seconds,
            "narrowing round"
        );
        report.pre_fence_rows_verified += pass.rows;
        if stop_on(&pass, "a verification round before the fence", report) {
            tracker.close().await;
            return Ok(Before::Stop);
        }
        pending = left;
        pending.merge(whole);
    }
    report.pre_fence_verify_seconds = Some(started.elapsed().as_secs_f64());
    Ok(Before::Ready(Box::new(Tracked { tracker, pending })))
}

/// The final verification, after the target applied past `marker`.
pub(super) async fn after_fence(
    config: &Config,
    plan: &MigrationPlan,
    tracked: Option<Box<Tracked>>,
    marker: walrelay_proto::Lsn,
    report: &mut CutoverReport,
) -> Result<Report, CutoverError> {
    let opts = VerifyOptions::default();
    let Some(tracked) = tracked else {
        return Ok(verify::planned_pass(config, plan, &opts).await?);
    };
    let Tracked {
        mut tracker,
        mut pending,
    } = *tracked;
    match tracker.drain(Some(marker)).await {
        Ok(last) => pending.merge(last),
        Err(err) => {
            untracked(tracker, err, report).await;
            return Ok(verify::planned_pass(config, plan, &opts).await?);
        }
    }
    tracker.close().await;
    report.touched_keys = pending.keys() as u64;
    report.touched_whole_tables = pending.whole_tables() as u64;
    let (pass, _) = touched::run(config, plan, &opts, &pending).await?;
    Ok(pass)
}

async fn untracked(
    tracker: Tracker,
    err: super::track::TrackError,
    report: &mut CutoverReport,
) -> Before {
    tracker.close().await;
    report.final_verify = "full";
    report.warnings.push(format!(
        "tracking changes failed ({err}); the final verification compares every row"
    ));
    Before::Full
}

/// Whether `pass` found a difference that makes fencing pointless; the
/// reason goes into the report.
fn stop_on(pass: &Report, what: &str, report: &mut CutoverReport) -> bool {
    let skipped: Vec<&str> = pass
        .tables
        .iter()
        .filter(|t| matches!(t.basis, Basis::Skipped { .. }))
        .map(|t| t.table.as_str())
        .collect();
    if pass.drift_rows == 0 && pass.schema.is_empty() && skipped.is_empty() {
        return false;
    }
    report.reasons.push(format!(
        "{what} is not clean: {} drifted row(s), {} schema difference(s), {} table(s) not compared{}; nothing was fenced (run `walrelay verify` for the keys, `--repair` to fix them)",
        pass.drift_rows,
        pass.schema.len(),
        skipped.len(),
        if skipped.is_empty() { String::new() } else { format!(" ({})", skipped.join(", ")) }
    ));
    true
}
