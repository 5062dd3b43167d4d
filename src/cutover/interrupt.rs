//! Ctrl-C (SIGINT) or SIGTERM before the verdict: a fence this run set is
//! undone, loudly, so an interrupted cutover never leaves production
//! read-only in silence. A fence that was already there stays (the
//! operator, or an earlier cutover, set it) and the error says so.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::signal::unix::{signal, SignalKind};

use crate::config::Config;

use super::{fence, CutoverError, CutoverReport};

/// Bounds the undo, so a second Ctrl-C is never needed (the handler
/// installed here swallows it).
const UNDO_TIMEOUT: Duration = Duration::from_secs(20);

/// What this run did to the fence so far.
#[derive(Debug, Default)]
pub(super) struct Fencing {
    /// The source was fenced before this run.
    was_fenced: AtomicBool,
    /// This run sent (or is sending) the fence.
    armed: AtomicBool,
}

impl Fencing {
    pub(super) fn was_fenced(&self, fenced: bool) {
        self.was_fenced.store(fenced, Ordering::SeqCst);
    }

    pub(super) fn arm(&self) {
        self.armed.store(true, Ordering::SeqCst);
    }
}

/// Runs `work` to its end, or until SIGINT/SIGTERM: then `work` is dropped
/// (its sessions close, its temporary slots go with them) and the fence it
/// set is undone. The error says what became of the fence.
pub(super) async fn unfence_on_signal<F>(
    config: &Config,
    fencing: &Fencing,
    work: F,
) -> Result<CutoverReport, CutoverError>
where
    F: Future<Output = Result<CutoverReport, CutoverError>>,
{
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        tracing::warn!("cannot listen for SIGINT/SIGTERM: an interrupted cutover leaves its fence (undo it with `walrelay cutover --unfence`)");
        return work.await;
    };
    let signal = tokio::select! {
        result = work => return result,
        _ = int.recv() => "SIGINT",
        _ = term.recv() => "SIGTERM",
    };
    Err(CutoverError::Interrupted {
        signal,
        fence: undo(config, fencing, signal).await,
    })
}

/// Undoes this run's fence; says what became of it.
async fn undo(config: &Config, fencing: &Fencing, signal: &str) -> String {
    if !fencing.armed.load(Ordering::SeqCst) {
        return if fencing.was_fenced.load(Ordering::SeqCst) {
            tracing::warn!(signal, "cutover interrupted: the source was fenced before this run and stays fenced; `walrelay cutover --unfence` makes it writable");
            "the source was fenced before this run and stays fenced (read-only for new sessions; `walrelay cutover --unfence` makes it writable)".into()
        } else {
            "nothing was fenced".into()
        };
    }
    tracing::warn!(
        signal,
        "cutover interrupted after the fence: undoing the fence"
    );
    match tokio::time::timeout(UNDO_TIMEOUT, fence::undo(config)).await {
        Ok(Ok(db)) => {
            tracing::warn!(database = %db, "fence undone: the source database is writable again (for new sessions)");
            format!("the fence was undone: source database {db} is writable again (for new sessions; the sessions the fence ended stay ended)")
        }
        Ok(Err(err)) => still_fenced(&err.to_string()),
        Err(_) => still_fenced(&format!("no answer within {UNDO_TIMEOUT:?}")),
    }
}

fn still_fenced(why: &str) -> String {
    tracing::error!(error = %why, "the source database may STILL BE READ-ONLY: undoing the fence failed; run `walrelay cutover --unfence`");
    format!("the source database may STILL BE READ-ONLY: undoing the fence failed ({why}); run `walrelay cutover --unfence` to make it writable")
}
