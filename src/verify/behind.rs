//! Whether a target that no stream is feeding is behind the source.
//!
//! With the stream stopped (or `run` between reconnects) nothing moves on
//! the target, so a chunk that differs is either drift or source changes
//! the stream has not applied yet, and no re-check can tell them apart by
//! waiting. The slot can: it holds every change not yet acknowledged. Its
//! changes are peeked (decoded, not consumed: the slot does not move) and a
//! table is behind when a transaction that changed it committed past the
//! target's position (`walrelay.progress.applied_lsn`, or before the first
//! checkpoint the snapshot's consistent point). Such a table is reported
//! "behind", never drift, and `--repair` leaves its rows to the stream:
//! copied ahead of it, they would make its INSERT hit a duplicate key and
//! its UPDATE miss the row.
//!
//! The peek decodes the slot's WAL from its restart point, once per pass
//! (and once per repair batch, after the rows are locked), only when a chunk
//! still differs and no stream runs. When it cannot be read (the stream took
//! the slot meanwhile, or the role may not peek), every table counts as
//! behind: a difference is then not proven either way. So does a slot
//! confirmed past the target's position: its changes were spooled
//! (`crate::spool`) and are in no slot to peek.

use std::collections::HashSet;

use bytes::Bytes;
use futures_util::{pin_mut, TryStreamExt};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::Client;
use walrelay_proto::{decode, DecodeContext, Lsn, Message};

use super::plan::Shape;
use super::{Ctx, VerifyError};
use crate::pg::catalog::quote_ident;
use crate::pg::connect::safe_error_text;
use crate::state;

/// The source tables with committed changes the target has not applied.
#[derive(Debug, Default)]
pub(crate) struct Pending {
    relations: HashSet<u32>,
    /// Why the slot's changes could not be read (then every table counts).
    unknown: Option<String>,
}

impl Pending {
    fn covers(&self, oid: u32) -> bool {
        self.unknown.is_some() || self.relations.contains(&oid)
    }
}

/// What the report says about a table behind a stopped stream.
pub(crate) fn note(ctx: &Ctx<'_>, why: Option<&str>) -> String {
    let cause = why.map_or_else(
        || {
            "the source has committed changes to this table that the target has not applied"
                .to_string()
        },
        |why| format!("the slot's pending changes could not be read ({why})"),
    );
    format!(
        "behind (stream not running): slot {} is not being streamed and {cause}; this is not drift: start the stream (`walrelay stream` or `walrelay run`), let it catch up, then re-run verify",
        ctx.sync.slot
    )
}

/// Whether `shape`'s table is behind because no stream runs: `Some(why)`
/// (`why` set when the slot could not be read), `None` when a stream runs
/// or the target holds every committed change to the table. `fresh` reads
/// the slot again instead of the pass's first reading.
pub(crate) async fn check(
    ctx: &Ctx<'_>,
    shape: &Shape,
    fresh: bool,
) -> Result<Option<Option<String>>, VerifyError> {
    if ctx.sync.streaming(&ctx.source).await? {
        return Ok(None);
    }
    let fresh_pending;
    let pending = if fresh {
        fresh_pending = pending(ctx).await?;
        fresh_pending.as_ref()
    } else {
        ctx.pending.get_or_try_init(|| pending(ctx)).await?.as_ref()
    };
    Ok(pending
        .filter(|p| p.covers(shape.oid))
        .map(|p| p.unknown.clone()))
}

/// The tables with changes past the target's position; `None` when the
/// target is not fed by this slot (no position, or no such slot).
async fn pending(ctx: &Ctx<'_>) -> Result<Option<Pending>, VerifyError> {
    let Some(position) = position(ctx).await? else {
        return Ok(None);
    };
    let slot = ctx
        .source
        .query_opt(
            "SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = $1",
            &[&ctx.sync.slot],
        )
        .await
        .map_err(VerifyError::sql("reading the slot"))?;
    let Some(slot) = slot else {
        return Ok(None);
    };
    let mut pending = Pending::default();
    // Acknowledged past the target: those changes left the slot for a
    // change-stream spool, where no peek sees them.
    let confirmed: Option<Lsn> = slot
        .try_get(0)
        .map_err(VerifyError::sql("reading the slot's confirmed position"))?;
    if let Some(confirmed) = confirmed.filter(|c| *c > position) {
        pending.unknown = Some(format!(
            "the slot was acknowledged up to {confirmed} past the target's {position}: those changes wait in the change-stream spool (--spool-dir)"
        ));
        return Ok(Some(pending));
    }
    match peek(ctx, position, &mut pending.relations).await {
        Ok(()) => {}
        Err(Unreadable::Sql(err)) if is_fatal(&err) => {
            return Err(VerifyError::sql("reading the slot's pending changes")(err))
        }
        Err(Unreadable::Sql(err)) => {
            let why = match err.code() {
                Some(code) if *code == SqlState::OBJECT_IN_USE => "a stream took the slot".into(),
                _ => safe_error_text(&err),
            };
            tracing::warn!(slot = %ctx.sync.slot, error = %why, "cannot read the slot's pending changes; differing tables count as behind");
            pending.unknown = Some(why);
        }
        Err(Unreadable::Decode(err)) => {
            tracing::warn!(slot = %ctx.sync.slot, error = %err, "cannot decode the slot's pending changes; differing tables count as behind");
            pending.unknown = Some(format!("undecodable change: {err}"));
        }
    }
    with_partitions(&ctx.source, &mut pending.relations).await?;
    tracing::debug!(slot = %ctx.sync.slot, position = %position, tables = pending.relations.len(), "pending changes read");
    Ok(Some(pending))
}

/// A lost connection ends the pass; anything else only makes the answer
/// unknown.
fn is_fatal(err: &tokio_postgres::Error) -> bool {
    err.is_closed() || err.code().is_none()
}

/// The target's position for the slot: its checkpoint, else the snapshot's
/// consistent point; `None` when walrelay never wrote to this target.
async fn position(ctx: &Ctx<'_>) -> Result<Option<Lsn>, VerifyError> {
    let slot = &ctx.sync.slot;
    if ctx.sync.has_checkpoint {
        return Ok(state::progress::applied(&ctx.target, slot)
            .await?
            .map(|a| a.lsn));
    }
    if !state::exists(&ctx.target).await? {
        return Ok(None);
    }
    Ok(state::snapshot::read(&ctx.target, slot)
        .await?
        .and_then(|r| r.consistent_lsn))
}

enum Unreadable {
    Sql(tokio_postgres::Error),
    Decode(walrelay_proto::DecodeError),
}

/// Adds to `tables` every relation changed by a transaction of the slot
/// that committed past `position`.
async fn peek(ctx: &Ctx<'_>, position: Lsn, tables: &mut HashSet<u32>) -> Result<(), Unreadable> {
    let publications = quote_ident(&ctx.publication);
    let params: [&(dyn ToSql + Sync); 2] = [&ctx.sync.slot, &publications];
    let rows = ctx
        .source
        .query_raw(
            "SELECT data FROM pg_logical_slot_peek_binary_changes($1, NULL, NULL, \
             'proto_version', '1', 'publication_names', $2)",
            params,
        )
        .await
        .map_err(Unreadable::Sql)?;
    pin_mut!(rows);
    let mut changed: Vec<u32> = Vec::new();
    while let Some(row) = rows.try_next().await.map_err(Unreadable::Sql)? {
        let data = Bytes::from(row.get::<_, Vec<u8>>(0));
        match decode(&data, DecodeContext::default()).map_err(Unreadable::Decode)? {
            Message::Begin(_) => changed.clear(),
            Message::Insert(m) => changed.push(m.relation_id),
            Message::Update(m) => changed.push(m.relation_id),
            Message::Delete(m) => changed.push(m.relation_id),
            Message::Truncate(m) => changed.extend(&m.relation_ids),
            Message::Commit(c) if c.end_lsn > position => tables.extend(changed.drain(..)),
            _ => {}
        }
    }
    Ok(())
}

/// Changes of a partitioned table published through its root name the
/// root: its partitions (the tables compared) are behind too.
async fn with_partitions(source: &Client, tables: &mut HashSet<u32>) -> Result<(), VerifyError> {
    if tables.is_empty() {
        return Ok(());
    }
    let oids: Vec<u32> = tables.iter().copied().collect();
    let rows = source
        .query(
            "SELECT t.relid::oid FROM unnest($1::oid[]) AS r(oid), \
             LATERAL pg_partition_tree(r.oid::regclass) AS t",
            &[&oids],
        )
        .await
        .map_err(VerifyError::sql("reading partitions"))?;
    tables.extend(rows.iter().map(|r| r.get::<_, u32>(0)));
    Ok(())
}
