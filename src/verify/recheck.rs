//! Live consistency: waiting for the target to apply past a source LSN, and
//! re-checking a chunk that differs before anything is called drift.
//!
//! A chunk compared while the stream runs can differ only because changes
//! are in flight. The re-check ("sandwich") is: wait until the target's
//! `walrelay.progress.applied_lsn` has passed the LSN read with the source
//! aggregate, read the target, then read the source again. The target at
//! applied position A matches the source at A; if it equals the source as
//! read before or after A, the chunk is consistent. Only a chunk that
//! matches neither after `retries` rounds goes on to pinpointing, where each
//! differing key is confirmed exactly (see `pinpoint`). A table's suspect
//! chunks are re-checked together, so a lagging target costs one wait per
//! round rather than one per chunk.

use std::time::{Duration, Instant};

use tokio_postgres::Client;
use walrelay_proto::Lsn;

use super::hash::{self, Aggregate};
use super::plan::{Range, Shape, Side};
use super::{Ctx, VerifyError};
use crate::state;

/// How far the target is relative to a source LSN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// No stream is applying (no checkpoint row, or the slot is not
    /// active): the target will not move, compare as it is.
    Direct,
    /// The target's checkpoint has reached the LSN.
    CaughtUp,
    /// The stream runs but did not reach the LSN within the time allowed.
    Behind,
}

/// What is known about the stream feeding the target.
pub struct Sync {
    pub slot: String,
    /// `walrelay.progress` exists and has a row for the slot.
    pub has_checkpoint: bool,
    pub timeout: Duration,
}

impl Sync {
    /// Looks for the slot's checkpoint row on the target.
    pub async fn new(target: &Client, slot: &str, timeout: Duration) -> Result<Self, VerifyError> {
        let has_checkpoint =
            state::exists(target).await? && state::progress::applied(target, slot).await?.is_some();
        Ok(Sync {
            slot: slot.to_string(),
            has_checkpoint,
            timeout,
        })
    }

    /// Whether a walsender currently streams the slot (a running
    /// `walrelay stream`/`run`): only then does waiting make sense.
    pub async fn streaming(&self, source: &Client) -> Result<bool, VerifyError> {
        if !self.has_checkpoint {
            return Ok(false);
        }
        let row = source
            .query_opt(
                "SELECT active FROM pg_replication_slots WHERE slot_name = $1",
                &[&self.slot],
            )
            .await
            .map_err(VerifyError::sql("reading the slot"))?;
        Ok(row.is_some_and(|r| r.get::<_, bool>(0)))
    }

    /// Waits (polling with backoff) until the target has applied `lsn`.
    pub async fn wait(&self, ctx: &Ctx<'_>, lsn: Option<Lsn>) -> Result<Wait, VerifyError> {
        let Some(want) = lsn else {
            return Ok(Wait::Direct);
        };
        if !self.streaming(&ctx.source).await? {
            return Ok(Wait::Direct);
        }
        let deadline = Instant::now() + self.timeout;
        let mut pause = Duration::from_millis(10);
        let mut nudged = false;
        loop {
            if let Some(board) = ctx.board {
                // The stream in this process records every commit here.
                let seen = board.applied_lsn.load(std::sync::atomic::Ordering::Relaxed);
                if seen >= want.0 {
                    return Ok(Wait::CaughtUp);
                }
            }
            if state::progress::applied(&ctx.target, &self.slot)
                .await?
                .is_some_and(|a| a.lsn >= want)
            {
                return Ok(Wait::CaughtUp);
            }
            if Instant::now() >= deadline {
                return Ok(Wait::Behind);
            }
            if !nudged {
                nudge(&ctx.source).await;
                nudged = true;
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(250));
            if pause == Duration::from_millis(250) && !self.streaming(&ctx.source).await? {
                return Ok(Wait::Direct);
            }
        }
    }
}

/// Writes a non-transactional logical message with walrelay's heartbeat
/// prefix (ignored by the apply: its content is not a heartbeat time).
/// On an idle source, WAL that decoding does not send on its own (the row
/// locks of the exact round, hint records) would leave the target's
/// checkpoint below our LSN until the next heartbeat; a message that the
/// walsender sends is followed by a keepalive, and the stream moves its idle
/// checkpoint to it at once. Allowed to every role (docs/ARCHITECTURE.md,
/// Protocol facts).
async fn nudge(source: &Client) {
    let sql = "SELECT pg_logical_emit_message(false, 'walrelay', 'verify')";
    if let Err(err) = source.batch_execute(sql).await {
        tracing::debug!(error = %crate::pg::connect::error_text(&err), "verify nudge failed");
    }
}

/// Both sides' aggregates of `range`, read concurrently; the source LSN.
pub(crate) async fn both(
    ctx: &Ctx<'_>,
    shape: &Shape,
    range: &Range,
) -> Result<(Aggregate, Aggregate, Option<Lsn>), VerifyError> {
    let (source, target) = tokio::join!(
        hash::aggregate(&ctx.source, shape, Side::Source, range),
        hash::aggregate(&ctx.target, shape, Side::Target, range),
    );
    let (source, lsn) = source?;
    let (target, _) = target?;
    Ok((source, target, lsn))
}

/// A chunk whose first comparison differed.
#[derive(Debug, Clone)]
pub(crate) struct Suspect {
    pub range: Range,
    /// The source aggregate as last read, and the LSN read with it.
    pub source: Aggregate,
    pub lsn: Option<Lsn>,
}

/// Re-checks the suspects of one table together, up to `retries` rounds:
/// each round waits once for the target to pass the highest source LSN of
/// the round, so a lagging target costs one wait per round, not one per
/// chunk. Returns the suspects that still differ.
pub(crate) async fn settle(
    ctx: &Ctx<'_>,
    shape: &Shape,
    mut suspects: Vec<Suspect>,
) -> Result<Vec<Suspect>, VerifyError> {
    let mut pause = Duration::from_millis(50);
    for _ in 0..ctx.opts.retries {
        if suspects.is_empty() {
            break;
        }
        let highest = suspects.iter().filter_map(|s| s.lsn).max();
        let wait = ctx.sync.wait(ctx, highest).await?;
        if wait != Wait::CaughtUp {
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(2));
        }
        let mut still = Vec::new();
        let mut moved = false;
        for mut suspect in suspects {
            let (target, _) =
                hash::aggregate(&ctx.target, shape, Side::Target, &suspect.range).await?;
            if target == suspect.source {
                continue;
            }
            let (again, lsn) =
                hash::aggregate(&ctx.source, shape, Side::Source, &suspect.range).await?;
            if target == again {
                continue;
            }
            moved |= again != suspect.source;
            suspect.source = again;
            suspect.lsn = lsn;
            still.push(suspect);
        }
        suspects = still;
        if wait == Wait::Direct && !moved {
            // Nothing moves on either side: more rounds cannot change the answer.
            break;
        }
    }
    Ok(suspects)
}
