//! `walrelay cutover`: the final sync before traffic moves to the target
//! (docs/ARCHITECTURE.md, Verification and cutover).
//!
//! Steps, each idempotent (running cutover twice is safe):
//! 1. lag gate: wait until the target is close enough to the source;
//! 2. optional fence: the source database is made read-only for new
//!    transactions (`ALTER DATABASE … SET default_transaction_read_only`)
//!    and the sessions of the writer roles are terminated (or only listed),
//!    since sessions keep their setting until they reconnect;
//! 3. a transactional logical message (`walrelay` prefix, ignored by the
//!    apply) is written: its LSN is ordered after every commit before it;
//! 4. wait until the target's checkpoint passed that marker;
//! 5. the sequences the selected tables use are set on the target;
//! 6. the final verification: by default of the rows changed since a clean
//!    pass run before the fence (see [`verification`]), so the fenced
//!    window does not grow with the size of the database;
//! 7. unlogged tables copied again (fenced only: else not safe) and
//!    materialized views refreshed ([`not_streamed`]);
//! 8. a report: "safe to switch" or the reasons it is not, after checking
//!    what could still write: prepared transactions, sessions the fence
//!    left, and writes committed after the marker ([`writers`]).
//!
//! SIGINT or SIGTERM before the verdict undoes a fence this run set
//! ([`interrupt`]); the report's `fenced` is read from the database.
//!
//! walrelay's own source sessions start with `default_transaction_read_only
//! = off` as a startup option (which wins over the database setting), so a
//! fenced source can still be read, locked and marked by cutover and verify.
//! Reports name roles, pids and applications, never query texts or rows.
//! The fence never ends sessions whose application name starts with
//! `walrelay` (the stream's heartbeat, monitor and verify sessions).

use std::time::{Duration, Instant};

use tokio_postgres::Client;
use walrelay_proto::Lsn;

use crate::config::Config;
use crate::migration::MigrationPlan;
use crate::pg::connect::{self, safe_error_text};
use crate::state::{self, StateError};
use crate::verify::VerifyError;

mod fence;
mod http;
mod interrupt;
mod not_streamed;
mod report;
mod sequences;
pub mod track;
mod verification;
mod writers;

pub use fence::{unfence, unfence_on, unfence_session};
pub use http::{routes, CutoverQuery};
pub use report::{CutoverReport, FencedSession};

const APPLICATION: &str = "walrelay cutover";
const MARKER_POLL: Duration = Duration::from_millis(5);
const READ_WRITE_OPTION: &str = "-c default_transaction_read_only=off";

/// How cutover runs.
#[derive(Debug, Clone)]
pub struct CutoverOptions {
    /// The lag gate: at most this many bytes behind the source.
    pub max_lag_bytes: u64,
    /// The lag gate: at most this many seconds behind the source.
    pub max_lag_seconds: f64,
    /// Bounds the lag gate and the wait for the marker (each).
    pub timeout: Duration,
    /// Make the source database read-only and end the writers' sessions.
    pub fence: bool,
    /// Roles whose sessions the fence ends (empty: every role but walrelay's).
    pub fence_roles: Vec<String>,
    /// List the writers' sessions instead of terminating them.
    pub fence_list_only: bool,
    /// What the final verification compares.
    pub final_verify: FinalVerify,
    /// Changed keys held for the final verification, at most (past it the
    /// table with the most is compared whole).
    pub max_touched_keys: usize,
}

/// What the final verification (after the fence) compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FinalVerify {
    /// A full pass before the fence, then only the rows changed since it
    /// began: the fenced window follows the write rate, not the data size.
    #[default]
    Touched,
    /// Every row of every table after the fence (the window grows with the
    /// data: about a minute per few million rows).
    Full,
}

impl Default for CutoverOptions {
    fn default() -> Self {
        CutoverOptions {
            max_lag_bytes: 16 << 20,
            max_lag_seconds: 10.0,
            timeout: Duration::from_secs(60),
            fence: false,
            fence_roles: Vec::new(),
            fence_list_only: false,
            final_verify: FinalVerify::Touched,
            max_touched_keys: 500_000,
        }
    }
}

/// Why cutover could not run to a verdict.
#[derive(Debug, thiserror::Error)]
pub enum CutoverError {
    #[error(transparent)]
    Connect(#[from] connect::ConnectError),
    #[error("{what}: {message}")]
    Sql { what: &'static str, message: String },
    #[error("final verification: {0}")]
    Verify(#[from] VerifyError),
    #[error("walrelay's state on the target: {0}")]
    State(#[from] StateError),
    #[error("the target has no walrelay snapshot and no checkpoint for slot {0}: there is nothing to cut over yet; run `walrelay snapshot` and `walrelay stream` (or `walrelay run`) first")]
    NothingSetUp(String),
    #[error("interrupted by {signal} before the verdict: {fence}")]
    Interrupted { signal: &'static str, fence: String },
}

fn sql(what: &'static str) -> impl Fn(tokio_postgres::Error) -> CutoverError {
    move |err| CutoverError::Sql {
        what,
        message: safe_error_text(&err),
    }
}

/// The config with the source sessions exempt from the fence.
pub(crate) fn unfenced_sessions(config: &Config) -> Config {
    let mut config = config.clone();
    config.source.options = Some(match config.source.options.take() {
        Some(o) if !o.trim().is_empty() => format!("{o} {READ_WRITE_OPTION}"),
        _ => READ_WRITE_OPTION.to_string(),
    });
    config
}

struct Lag {
    bytes: u64,
    seconds: f64,
    applied: Lsn,
}

/// Fails at once when the target records neither a snapshot nor a
/// checkpoint for the slot: no stream can be applying, and the lag gate
/// would wait its whole timeout for nothing.
async fn ensure_set_up(target: &Client, slot: &str) -> Result<(), CutoverError> {
    let set_up = state::exists(target).await?
        && (state::progress::applied(target, slot).await?.is_some()
            || state::snapshot::read(target, slot).await?.is_some());
    if set_up {
        Ok(())
    } else {
        Err(CutoverError::NothingSetUp(slot.to_string()))
    }
}

/// Lag of the target behind the source, `None` when the target has no
/// checkpoint for the slot yet. Seconds: since the last applied source
/// commit, or since the last checkpoint when that is more recent (an idle
/// source whose WAL moves for other reasons is not "behind").
async fn lag(source: &Client, target: &Client, slot: &str) -> Result<Option<Lag>, CutoverError> {
    if !state::exists(target).await? {
        return Ok(None);
    }
    let Some(applied) = state::progress::applied(target, slot).await? else {
        return Ok(None);
    };
    let current: Lsn = source
        .query_one("SELECT pg_current_wal_lsn()", &[])
        .await
        .map_err(sql("reading the source's WAL position"))?
        .try_get(0)
        .map_err(sql("reading the source's WAL position"))?;
    let bytes = current.bytes_since(applied.lsn);
    Ok(Some(Lag {
        bytes,
        seconds: if bytes == 0 {
            0.0
        } else {
            applied.age().max(0.0)
        },
        applied: applied.lsn,
    }))
}

/// Polling delays: 50 ms growing to 1 s.
struct Backoff(Duration);

impl Backoff {
    fn new() -> Self {
        Backoff(Duration::from_millis(50))
    }
    async fn sleep(&mut self) {
        tokio::time::sleep(self.0).await;
        self.0 = (self.0 * 3 / 2).min(Duration::from_secs(1));
    }
}

/// Runs the cutover to a verdict. `Err` only when it could not run (a
/// connection or a statement failed, or SIGINT/SIGTERM came first: then a
/// fence this run set is undone); "not safe" is a report.
pub async fn run(config: &Config, opts: &CutoverOptions) -> Result<CutoverReport, CutoverError> {
    let fencing = interrupt::Fencing::default();
    interrupt::unfence_on_signal(config, &fencing, to_verdict(config, opts, &fencing)).await
}

async fn to_verdict(
    config: &Config,
    opts: &CutoverOptions,
    fencing: &interrupt::Fencing,
) -> Result<CutoverReport, CutoverError> {
    let started = Instant::now();
    let config = unfenced_sessions(config);
    let mut report = CutoverReport::new();
    if opts.final_verify == FinalVerify::Full {
        report.final_verify = "full";
    }
    let (source, target) = tokio::try_join!(
        connect::connect(&config.source, APPLICATION),
        connect::connect(&config.target, APPLICATION),
    )?;
    // One plan for the tracker, both verifications and the sequences.
    let plan = MigrationPlan::resolve(&source, &config)
        .await
        .map_err(sql("listing the selected tables"))?;
    let finish = |mut report: CutoverReport, fenced_at: Option<Instant>| {
        report.safe = report.reasons.is_empty();
        report.fence_to_verdict_seconds = fenced_at.map(|t| t.elapsed().as_secs_f64());
        report.total_seconds = started.elapsed().as_secs_f64();
        Ok(report)
    };
    // The source's real fence state, whoever set it; and a prepared
    // transaction could commit after any fence (writers::stop_on_prepared).
    report.fenced = fence::is_fenced(&source).await?;
    fencing.was_fenced(report.fenced);
    if writers::stop_on_prepared(&source, &mut report).await? {
        return finish(report, None);
    }

    // 1. Lag gate; then, before anything disruptive, a verification pass
    //    and the tracking of what changes after it.
    ensure_set_up(&target, &config.slot).await?;
    if !lag_gate(&config, &source, &target, opts, &mut report, true).await? {
        return finish(report, None);
    }
    let tracked = match opts.final_verify {
        FinalVerify::Full => None,
        FinalVerify::Touched => {
            match verification::before_fence(&config, &plan, &source, opts, &mut report).await? {
                verification::Before::Stop => return finish(report, None),
                verification::Before::Full => None,
                verification::Before::Ready(t) => Some(t),
            }
        }
    };
    if tracked.is_some() && !lag_gate(&config, &source, &target, opts, &mut report, false).await? {
        return finish(report, None);
    }

    // 2. Fence (the session that watches for writes after the marker
    //    connected first, outside the fenced window).
    let watcher = writers::connect(&config, &plan, opts).await?;
    let mut fenced_at = None;
    if opts.fence {
        fenced_at = Some(Instant::now());
        fence::fence(&source, opts, fencing, &mut report).await?;
    }
    // What commits after the marker is seen by this slot (writers::check).
    // Started after the fence: the writers it ended are not decoded, and
    // no transaction of theirs is left open for its creation to wait on.
    let watch = match watcher.start(&config).await {
        Ok(watch) => watch,
        Err(why) => {
            report.reasons.push(why);
            return finish(report, fenced_at);
        }
    };

    // 3. Marker, 4. the target past it.
    let marker: Lsn = source
        .query_one(
            "SELECT pg_logical_emit_message(true, 'walrelay', 'cutover marker')",
            &[],
        )
        .await
        .map_err(sql("writing the cutover marker on the source"))?
        .try_get(0)
        .map_err(sql("writing the cutover marker on the source"))?;
    report.marker_lsn = Some(marker.to_string());
    if !wait_for_marker(&config, &target, marker, opts, &mut report).await? {
        return finish(report, fenced_at);
    }

    // 5. Sequences, 6. the final verification.
    sequences::sync_sequences(&plan, &source, &target, &mut report).await?;
    let verified = verification::after_fence(&config, &plan, tracked, marker, &mut report).await?;
    report.rows_verified = verified.rows;
    report.verify_seconds = verified.seconds;
    if !verified.clean {
        report.reasons.push(format!(
            "the final verification is not clean: {} drifted row(s), {} unsettled, {} schema difference(s) (run `walrelay verify` for the keys)",
            verified.drift_rows,
            verified.unsettled,
            verified.schema.len()
        ));
    }

    // What the stream cannot carry: unlogged tables copied again (fenced
    // only), materialized views refreshed, while writes are fenced.
    not_streamed::bring_over(&plan, &source, &target, &mut report).await?;

    writers::check(&source, watch, marker, opts, &mut report).await?;

    // 7. Verdict.
    finish(report, fenced_at)
}

/// Waits until the target is within the lag limits; `false` (with the
/// reason in the report) when it is not within `--timeout`. `first`
/// records the lag at start.
async fn lag_gate(
    config: &Config,
    source: &Client,
    target: &Client,
    opts: &CutoverOptions,
    report: &mut CutoverReport,
    first: bool,
) -> Result<bool, CutoverError> {
    let started = Instant::now();
    let deadline = started + opts.timeout;
    let mut backoff = Backoff::new();
    let mut first = first;
    let passed = loop {
        let now = lag(source, target, &config.slot).await?;
        if first {
            report.lag_at_start_bytes = now.as_ref().map(|l| l.bytes);
            report.lag_at_start_seconds = now.as_ref().map(|l| l.seconds);
            first = false;
        }
        match &now {
            Some(l) if l.bytes <= opts.max_lag_bytes && l.seconds <= opts.max_lag_seconds => {
                break true
            }
            _ => {}
        }
        if Instant::now() >= deadline {
            report.reasons.push(match now {
                None => format!(
                    "the target has no checkpoint for slot {}: run `walrelay snapshot` and `walrelay stream` first",
                    config.slot
                ),
                Some(l) => format!(
                    "the stream is not running or is behind: still {} bytes, {:.1} s behind after {:?} (applied {}; limits {} bytes, {} s)",
                    l.bytes, l.seconds, opts.timeout, l.applied, opts.max_lag_bytes, opts.max_lag_seconds
                ),
            });
            break false;
        }
        backoff.sleep().await;
    };
    report.lag_gate_seconds += started.elapsed().as_secs_f64();
    Ok(passed)
}

/// Waits until the target's checkpoint passed `marker`; `false` (with the
/// reason in the report) when it did not within `--timeout`.
async fn wait_for_marker(
    config: &Config,
    target: &Client,
    marker: Lsn,
    opts: &CutoverOptions,
    report: &mut CutoverReport,
) -> Result<bool, CutoverError> {
    let waiting = Instant::now();
    let deadline = waiting + opts.timeout;
    let caught_up = loop {
        let applied = state::progress::applied(target, &config.slot).await?;
        let passed = applied.is_some_and(|a| a.lsn >= marker);
        report.applied_lsn = applied.map(|a| a.lsn.to_string());
        if passed {
            break true;
        }
        if Instant::now() >= deadline {
            break false;
        }
        // Writes are fenced while this waits: poll tightly (one index
        // lookup on the target), the stream commits the marker at once.
        tokio::time::sleep(MARKER_POLL).await;
    };
    report.marker_wait_seconds = waiting.elapsed().as_secs_f64();
    if !caught_up {
        report.reasons.push(format!(
            "the stream is not running or is behind: applied {}, marker {marker} (waited {:?})",
            report.applied_lsn.as_deref().unwrap_or("nothing"),
            opts.timeout
        ));
    }
    Ok(caught_up)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pg::conninfo::ConnInfo;
    use crate::pg::selection::Selection;

    fn config(source: &str) -> Config {
        Config {
            source: ConnInfo::parse(source).unwrap(),
            target: ConnInfo::parse("postgresql://u@h/t").unwrap(),
            slot: "walrelay".into(),
            publication: "walrelay".into(),
            selection: Selection::all(),
            pg_bindir: None,
            map: Default::default(),
            allow_unfiltered_stream: false,
        }
    }

    #[test]
    fn cutover_sessions_are_exempt_from_the_fence_keeping_other_options() {
        let plain = unfenced_sessions(&config("postgresql://u@h/s"));
        assert_eq!(plain.source.options.as_deref(), Some(READ_WRITE_OPTION));
        let with = unfenced_sessions(&config(
            "postgresql://u@h/s?options=-c%20statement_timeout%3D5s",
        ));
        assert_eq!(
            with.source.options.as_deref(),
            Some("-c statement_timeout=5s -c default_transaction_read_only=off")
        );
        // The target is left alone.
        assert_eq!(with.target.options, None);
    }

    #[test]
    fn a_report_that_is_not_safe_gives_its_reasons() {
        let mut report = CutoverReport::new();
        report
            .reasons
            .push("the stream is not running or is behind: applied 0/1, marker 0/2".into());
        let text = report.render();
        assert!(text.contains("NOT safe to switch"), "{text}");
        assert!(text.contains("applied 0/1, marker 0/2"), "{text}");
        report.reasons.clear();
        report.safe = true;
        assert!(report
            .render()
            .contains("verdict:             safe to switch"));
    }
}
