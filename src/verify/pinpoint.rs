//! From a chunk that differs to the keys that differ, and proof that each
//! one really does.
//!
//! **Bisection**: a range is split at its middle key (on the side with more
//! rows) and each half compared by aggregate; halves that match are dropped.
//! At `LEAF_ROWS` rows, per-row hashes from both sides are compared by key.
//! This finds *candidates*: while the stream runs, a key can differ only
//! because its change is in flight.
//!
//! **Confirmation** of candidates: first up to two optimistic rounds (source,
//! wait for the target to pass the source LSN, target, source again; a key
//! whose target hash equals either source read is consistent). Optimistic
//! rounds only ever clear keys: a row updated and reverted between the two
//! source reads would look stable while the target shows the middle value.
//! What remains is decided exactly: the source rows are locked `FOR SHARE`
//! (no UPDATE/DELETE of those rows can commit), the source LSN X is read,
//! the target is awaited to X and read. Every change to a locked row
//! committed before the lock, so below X, so it is on the target: the target
//! row must equal the locked source row, or it is drift. A key absent on the
//! source cannot be locked: it is drift (extra on target) only if it is
//! still absent when re-read after the target passed X; if it appeared, a
//! concurrent insert is in flight and the key is reported as unsettled,
//! never as drift. The lock lasts one target catch-up; only keys that still
//! differ after the optimistic rounds are locked, in batches.

use std::collections::HashMap;

use serde::Serialize;

use super::hash::{self, row_hashes};
use super::plan::{Key, Range, Shape, Side};
use super::recheck::{self, Wait};
use super::{Ctx, VerifyError};

/// Rows at which bisection stops and rows are compared one by one.
pub(crate) const LEAF_ROWS: i64 = 512;
/// Keys per statement when reading rows by key.
pub(crate) const KEY_BATCH: usize = 500;

/// How a key differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DriftKind {
    MissingOnTarget,
    ExtraOnTarget,
    Different,
}

impl DriftKind {
    pub fn as_str(self) -> &'static str {
        match self {
            DriftKind::MissingOnTarget => "missing on target",
            DriftKind::ExtraOnTarget => "extra on target",
            DriftKind::Different => "different",
        }
    }

    fn of(source: Option<&i64>, target: Option<&i64>) -> Option<DriftKind> {
        match (source, target) {
            (Some(s), Some(t)) if s == t => None,
            (Some(_), Some(_)) => Some(DriftKind::Different),
            (Some(_), None) => Some(DriftKind::MissingOnTarget),
            (None, Some(_)) => Some(DriftKind::ExtraOnTarget),
            (None, None) => None,
        }
    }
}

/// Confirmed drift and keys that could not be settled.
#[derive(Debug, Default)]
pub(crate) struct Verdict {
    pub drift: Vec<(Key, DriftKind)>,
    pub unsettled: Vec<Key>,
}

/// The candidate keys of a differing chunk, by bisection.
pub(crate) async fn candidates(
    ctx: &Ctx<'_>,
    shape: &Shape,
    range: &Range,
) -> Result<Vec<Key>, VerifyError> {
    let mut stack = vec![range.clone()];
    let mut found = Vec::new();
    while let Some(range) = stack.pop() {
        let (source, target, _) = recheck::both(ctx, shape, &range).await?;
        tracing::debug!(?range, ?source, ?target, "bisect");
        if source == target {
            continue;
        }
        let rows = source.rows.max(target.rows);
        if rows <= LEAF_ROWS {
            found.extend(leaf(ctx, shape, &range).await?);
            continue;
        }
        let (side, client) = if source.rows >= target.rows {
            (Side::Source, &ctx.source)
        } else {
            (Side::Target, &ctx.target)
        };
        match shape
            .key_at(client, side, &range, (rows / 2 - 1) as u64)
            .await?
        {
            // A split point on the range's edge would not shrink it.
            Some(mid)
                if Some(&mid) != range.upper.as_ref() && Some(&mid) != range.lower.as_ref() =>
            {
                stack.push(Range {
                    lower: Some(mid.clone()),
                    upper: range.upper.clone(),
                });
                stack.push(Range {
                    lower: range.lower.clone(),
                    upper: Some(mid),
                });
            }
            _ => found.extend(leaf(ctx, shape, &range).await?),
        }
    }
    found.sort();
    found.dedup();
    Ok(found)
}

/// Keys whose per-row hashes differ in a small range.
async fn leaf(ctx: &Ctx<'_>, shape: &Shape, range: &Range) -> Result<Vec<Key>, VerifyError> {
    let (source, target) = tokio::join!(
        row_hashes(&ctx.source, shape, Side::Source, range),
        row_hashes(&ctx.target, shape, Side::Target, range),
    );
    let (source, target) = (source?, target?);
    let mut keys: Vec<Key> = source
        .keys()
        .chain(target.keys())
        .filter(|k| DriftKind::of(source.get(*k), target.get(*k)).is_some())
        .cloned()
        .collect();
    keys.sort();
    keys.dedup();
    Ok(keys)
}

/// Optimistic rounds per key batch before the locked round: the chunk has
/// already been re-checked `retries` times, so what reaches here is either
/// drift or a key that keeps changing; more unlocked rounds rarely settle
/// the latter, and each costs one catch-up wait.
const KEY_ROUNDS: u32 = 2;

/// Confirms candidates: optimistic rounds clear keys in flight, the locked
/// round decides the rest.
pub(crate) async fn confirm(
    ctx: &Ctx<'_>,
    shape: &Shape,
    keys: Vec<Key>,
) -> Result<Verdict, VerifyError> {
    let mut pending = keys;
    for _ in 0..ctx.opts.retries.min(KEY_ROUNDS) {
        if pending.is_empty() {
            break;
        }
        let mut still = Vec::new();
        let mut settled_everywhere = true;
        for batch in pending.chunks(KEY_BATCH) {
            let (left, stable) = optimistic(ctx, shape, batch).await?;
            settled_everywhere &= stable;
            still.extend(left);
        }
        pending = still;
        if settled_everywhere {
            // Nothing in flight for these keys: waiting longer cannot help.
            break;
        }
    }
    let mut verdict = Verdict::default();
    for batch in pending.chunks(KEY_BATCH) {
        locked(ctx, shape, batch, &mut verdict).await?;
    }
    Ok(verdict)
}

/// One optimistic round over `keys`: the keys still differing, and whether
/// they were stable (source unchanged across the round, target caught up).
async fn optimistic(
    ctx: &Ctx<'_>,
    shape: &Shape,
    keys: &[Key],
) -> Result<(Vec<Key>, bool), VerifyError> {
    let before = hash::key_hashes(&ctx.source, shape, Side::Source, keys, false).await?;
    let lsn = super::hash::source_lsn(&ctx.source).await?;
    let wait = ctx.sync.wait(ctx, Some(lsn)).await?;
    let target = hash::key_hashes(&ctx.target, shape, Side::Target, keys, false).await?;
    let after = hash::key_hashes(&ctx.source, shape, Side::Source, keys, false).await?;
    let mut stable = wait != Wait::Behind;
    let left: Vec<Key> = keys
        .iter()
        .filter(|k| {
            let t = target.get(*k);
            let differs = t != before.get(*k) && t != after.get(*k);
            if differs && before.get(*k) != after.get(*k) {
                stable = false;
            }
            differs
        })
        .cloned()
        .collect();
    Ok((left, stable))
}

/// The exact round for `keys` (see the module documentation). Without a
/// running stream nothing moves on the target and no lock is taken; a
/// source role that may not lock (`FOR SHARE` needs UPDATE privilege) gets
/// the same unlocked reading, which can only err towards "unsettled" or, for
/// a row changed and changed back within the round, a false "different".
async fn locked(
    ctx: &Ctx<'_>,
    shape: &Shape,
    keys: &[Key],
    verdict: &mut Verdict,
) -> Result<(), VerifyError> {
    let lock = ctx.sync.streaming(&ctx.source).await?;
    let mut outcome = in_transaction(ctx, shape, keys, lock).await;
    if let (Err(err), true) = (&outcome, lock) {
        tracing::warn!(table = %shape.display, error = %err, "cannot lock source rows for the exact re-check; comparing without the lock");
        outcome = in_transaction(ctx, shape, keys, false).await;
    }
    match outcome? {
        Some((source, target, reread)) => {
            for key in keys {
                match DriftKind::of(source.get(key), target.get(key)) {
                    None => {}
                    Some(DriftKind::ExtraOnTarget) if reread.contains_key(key) => {
                        verdict.unsettled.push(key.clone())
                    }
                    Some(kind) => verdict.drift.push((key.clone(), kind)),
                }
            }
        }
        None => verdict.unsettled.extend(keys.iter().cloned()),
    }
    Ok(())
}

async fn in_transaction(
    ctx: &Ctx<'_>,
    shape: &Shape,
    keys: &[Key],
    lock: bool,
) -> Result<Option<(Hashes, Hashes, Hashes)>, VerifyError> {
    let tx = &ctx.source_tx;
    tx.batch_execute("BEGIN; SET LOCAL lock_timeout = '2s'")
        .await
        .map_err(VerifyError::sql("starting the locked re-check"))?;
    let outcome = locked_inner(ctx, shape, keys, lock).await;
    // Rolling back releases the row locks; nothing was written.
    let _ = tx.batch_execute("ROLLBACK").await;
    outcome
}

type Hashes = HashMap<Key, i64>;

/// Inside the source transaction: lock, read X, await the target, read it,
/// re-read the keys absent on the source. `None` when the target did not
/// catch up in time.
async fn locked_inner(
    ctx: &Ctx<'_>,
    shape: &Shape,
    keys: &[Key],
    lock: bool,
) -> Result<Option<(Hashes, Hashes, Hashes)>, VerifyError> {
    let tx = &ctx.source_tx;
    let source = hash::key_hashes(tx, shape, Side::Source, keys, lock).await?;
    let lsn = super::hash::source_lsn(tx).await?;
    if ctx.sync.wait(ctx, Some(lsn)).await? == Wait::Behind {
        return Ok(None);
    }
    let target = hash::key_hashes(&ctx.target, shape, Side::Target, keys, false).await?;
    let absent: Vec<Key> = keys
        .iter()
        .filter(|k| !source.contains_key(*k))
        .cloned()
        .collect();
    // A new statement in READ COMMITTED: sees every insert the target can
    // have applied by now.
    let reread = hash::key_hashes(tx, shape, Side::Source, &absent, false).await?;
    Ok(Some((source, target, reread)))
}
