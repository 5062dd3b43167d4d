//! Streaming through the spool (`stream`/`run` with `--spool-dir`): the
//! capture ([`super::capture`]) reads the slot into the spool and
//! acknowledges what is fsync'd there, whatever the target does; the apply
//! follows the spool ([`Tail`]) and commits with the usual checkpoint.
//!
//! The two halves meet only in the spool's files: the slot is acknowledged
//! at the spool's pace, so a target that is slow or unreachable for hours
//! holds no WAL on the source (until `--spool-max-bytes`, when the capture
//! stops reading and the source holds WAL again). Crash safety is the
//! spool's and the checkpoint's: the capture acknowledges only synced
//! boundaries, the apply skips what the checkpoint covers, and a segment is
//! deleted only once the target committed past it. There is no switch to a
//! live session: every change goes through the spool.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::watch;
use walrelay_proto::Lsn;

use super::capture::{self, Capture};
use super::stop;
use super::{applier, current_wal_lsn, handle, heartbeat, spooled, StreamError, StreamOptions};
use crate::apply::Applier;
use crate::config::Config;
use crate::pg::connect;
use crate::spool::files::Extent;
use crate::spool::read::Tail;
use crate::spool::{self, SpoolOptions};
use crate::status::{Stage, StatusBoard};

/// Captures into the spool and applies from it until `stop` (or a definite
/// error); the apply reconnects to the target with capped backoff while
/// the capture goes on.
pub(super) async fn run(
    config: &Config,
    args: &StreamOptions,
    opts: &SpoolOptions,
    board: Arc<StatusBoard>,
    mut stop: watch::Receiver<bool>,
) -> Result<(), StreamError> {
    let deadline = args.stop_after.map(|d| Instant::now() + d);
    let Some(start) = first_checkpoint(config, opts, &board, &mut stop).await? else {
        board.set_stage(Stage::Stopped);
        return Ok(());
    };
    let catch_up_to = match args.exit_when_caught_up {
        true => {
            let source = connect::connect(&config.source, "walrelay-stream").await?;
            Some(current_wal_lsn(&source).await?)
        }
        false => None,
    };
    let capture = Capture::spawn(config, opts, start, Some(Arc::clone(&board)));
    // On a stop request the capture stops first (a final sync and
    // acknowledgement), then the apply applies what it synced.
    capture.stop_on(stop.clone());
    let mut capture = capture;
    let limits = Limits {
        deadline,
        catch_up_to,
    };
    let outcome = applying(config, args, opts, &board, &mut stop, &mut capture, limits).await;
    // Stopped with everything synced and acknowledged (a failed apply
    // leaves the capture's work intact: the spool is the stream's record).
    let extent = capture.extent();
    let finished = capture.finish().await;
    let outcome = outcome.and(finished);
    if outcome.is_ok() {
        drop_applied(opts, &config.slot, &board, &extent)?;
    }
    match &outcome {
        Ok(()) => board.set_stage(Stage::Stopped),
        Err(err) => {
            board.set_stage(Stage::Failed);
            board.set_error(Some(err.to_string()));
        }
    }
    outcome
}

/// When the apply ends by itself.
#[derive(Clone, Copy)]
struct Limits {
    deadline: Option<Instant>,
    catch_up_to: Option<Lsn>,
}

/// Where the capture starts when the spool is empty: the target's
/// checkpoint (waited for while the target is unreachable). Records the
/// spool's location on the way. `None`: stopped meanwhile.
async fn first_checkpoint(
    config: &Config,
    opts: &SpoolOptions,
    board: &StatusBoard,
    stop: &mut watch::Receiver<bool>,
) -> Result<Option<Lsn>, StreamError> {
    let mut backoff = super::backoff::Backoff::new();
    loop {
        let attempt = async {
            let target = connect::connect(&config.target, "walrelay-apply").await?;
            capture::record_location(&target, &config.slot, opts).await?;
            Ok::<_, StreamError>(
                crate::apply::checkpoint::load(&target, &config.slot)
                    .await?
                    .lsn,
            )
        };
        match attempt.await {
            Ok(lsn) => return Ok(Some(lsn)),
            Err(err) if err.is_transient() => {
                board.set_stage(Stage::Reconnecting);
                board.set_error(Some(err.to_string()));
                tracing::warn!(error = %err, retry_in_ms = backoff.millis(), "target unreachable before the spool capture started; retrying");
                if !backoff.wait(stop).await {
                    return Ok(None);
                }
            }
            Err(err) => return Err(err),
        }
    }
}

/// Apply sessions, one after the other while the target comes and goes;
/// a capture that fails for good ends them.
async fn applying(
    config: &Config,
    args: &StreamOptions,
    opts: &SpoolOptions,
    board: &Arc<StatusBoard>,
    stop: &mut watch::Receiver<bool>,
    capture: &mut Capture,
    limits: Limits,
) -> Result<(), StreamError> {
    let mut backoff = super::backoff::Backoff::new();
    loop {
        let started = Instant::now();
        let extent = capture.extent();
        let attempt = tokio::select! {
            done = session(config, args, opts, board, stop, extent, limits) => done,
            failed = capture.failed() => Err(failed),
        };
        match attempt {
            Ok(()) => return Ok(()),
            Err(err) if err.is_transient() && !*stop.borrow() => {
                super::backoff::report_reconnecting(board, &err);
                backoff.ended_after(started.elapsed());
                tracing::warn!(error = %err, retry_in_ms = backoff.millis(), "apply from the spool interrupted (the capture goes on); reconnecting");
                if !backoff.wait(stop).await {
                    return Ok(());
                }
            }
            Err(err) if err.is_transient() => return Ok(()),
            Err(err) => return Err(err),
        }
    }
}

/// One apply session: follows the spool from its oldest segment (the
/// checkpoint skips what the target holds) and commits batches.
async fn session(
    config: &Config,
    args: &StreamOptions,
    opts: &SpoolOptions,
    board: &Arc<StatusBoard>,
    stop: &mut watch::Receiver<bool>,
    extent: watch::Receiver<Option<Extent>>,
    limits: Limits,
) -> Result<(), StreamError> {
    let target = connect::connect(&config.target, "walrelay-apply").await?;
    let (mut applier, mut ddl) = applier(config, args, board, target).await?;
    let source_sql = Arc::new(connect::connect(&config.source, "walrelay-stream").await?);
    let _heartbeat = heartbeat::spawn(Arc::clone(&source_sql), args.heartbeat_interval);
    let dir = opts.slot_dir(&config.slot);
    tracing::info!(slot = %config.slot, applied_lsn = %applier.committed(), dir = %dir.display(), "streaming through the spool");
    board.connected.store(true, Ordering::Relaxed);
    board.set_stage(Stage::Streaming);
    board.set_error(None);
    let mut tail = Tail::new(&dir, extent);
    let ending = Ending {
        limits,
        requested: stop,
        give_up: None,
    };
    let ended = follow(&mut tail, (&mut applier, &mut ddl), board, ending).await;
    if ended.is_err() {
        applier.rollback().await;
    }
    ended
}

/// How an apply session ends: `--stop-after`, `--exit-when-caught-up`, or
/// a stop request, after which it applies what the capture synced before
/// it stopped (within [`stop::STOP_GRACE`]).
struct Ending<'a> {
    limits: Limits,
    requested: &'a mut watch::Receiver<bool>,
    give_up: Option<Instant>,
}

impl Ending<'_> {
    /// A limit is reached: stop at the next transaction boundary.
    fn limit_reached(&self, committed: Lsn) -> bool {
        self.limits.deadline.is_some_and(|d| Instant::now() >= d)
            || self.limits.catch_up_to.is_some_and(|l| committed >= l)
    }

    /// Starts the grace period once a stop is requested; `true` once it is over.
    fn grace_over(&mut self) -> bool {
        if self.give_up.is_none() && *self.requested.borrow() {
            self.give_up = Some(Instant::now() + stop::STOP_GRACE);
        }
        self.give_up.is_some_and(|g| Instant::now() >= g)
    }
}

/// The apply loop: the next synced record, or, with none, the open batch
/// committed (nothing more is there to join it) or a wait for the capture.
async fn follow(
    tail: &mut Tail,
    (applier, ddl): (&mut Applier, &mut crate::ddl::Follower),
    board: &StatusBoard,
    mut ending: Ending<'_>,
) -> Result<(), StreamError> {
    loop {
        // ddl hook: tables the source gained are brought in between source
        // transactions, with the batch before committed.
        if !applier.in_transaction() && ddl.wants_work() {
            applier.flush().await?;
            release(tail, applier)?;
            ddl.between_transactions(applier).await?;
        }
        if ending.limit_reached(applier.committed()) && !applier.in_transaction() {
            applier.flush().await?;
            return stopped(tail, applier);
        }
        if ending.grace_over() {
            abandon(applier);
            return Ok(());
        }
        let Some(rec) = tail.try_next()? else {
            // At a synced boundary: no source transaction is open.
            if applier.deadline().is_some() {
                applier.flush().await?;
                release(tail, applier)?;
                continue;
            }
            if tail.closed() {
                // The capture stopped (on the stop request) and all it
                // synced is applied: its end (a transaction boundary) is
                // the checkpoint, so records after the last commit (a
                // heartbeat) do not keep their segment.
                if let Some(end) = tail.end() {
                    applier.idle_checkpoint(end).await?;
                }
                return stopped(tail, applier);
            }
            let requested = *ending.requested.borrow();
            tokio::select! {
                _ = tail.synced() => {}
                _ = stop::at(ending.limits.deadline) => {}
                _ = stop::at(ending.give_up) => {}
                _ = ending.requested.changed(), if !requested => {}
            }
            continue;
        };
        let give_up = ending.give_up;
        let work = async {
            match handle(spooled::event(rec), (&mut *applier, &mut *ddl), board).await {
                Err(StreamError::Apply(err)) => Err(applier.first_error(err).await.into()),
                other => other,
            }
        };
        let done = tokio::select! {
            done = work => done?,
            _ = stop::at(give_up), if give_up.is_some() => {
                abandon(applier);
                return Ok(());
            }
        };
        if done.is_some() {
            release(tail, applier)?;
        }
    }
}

fn abandon(applier: &Applier) {
    tracing::warn!(applied_lsn = %applier.committed(), "stop requested while the target was busy: the open batch is rolled back, the next run resumes from the checkpoint (the spool keeps the rest)");
}

fn stopped(tail: &mut Tail, applier: &Applier) -> Result<(), StreamError> {
    release(tail, applier)?;
    tracing::info!(applied_lsn = %applier.committed(), spooled_lsn = ?tail.end().map(|l| l.to_string()), "stopping cleanly");
    Ok(())
}

/// Deletes the segments the target committed past.
fn release(tail: &mut Tail, applier: &Applier) -> Result<(), StreamError> {
    tail.release(applier.committed())?;
    spool::report_usage(tail.dir());
    Ok(())
}

/// After a clean stop, deletes a spool the target applied to its end: the
/// next run's capture then starts at the target's checkpoint (nothing the
/// slot confirmed is past it).
fn drop_applied(
    opts: &SpoolOptions,
    slot: &str,
    board: &StatusBoard,
    extent: &watch::Receiver<Option<Extent>>,
) -> Result<(), StreamError> {
    let applied = Lsn(board.applied_lsn.load(Ordering::Relaxed));
    let end = extent.borrow().and_then(|e| e.end);
    if end.is_some_and(|end| end <= applied) {
        let dir = opts.slot_dir(slot);
        spool::files::remove_all(&dir)?;
        spool::report_usage(&dir);
        tracing::info!(dir = %dir.display(), applied_lsn = %applied, "the target applied the whole spool: its segments are deleted");
    }
    Ok(())
}
