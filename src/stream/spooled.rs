//! Applying the spool before going live.
//!
//! The spool holds the stream from the consistent point (or where its
//! applied segments were deleted) to the position the slot confirmed. Its
//! records go through the same [`handle`](super::handle) as live events, so
//! the checkpoint and per-table snapshot LSN rules decide what is skipped: a
//! restart after a crash re-reads the undeleted segments and skips what the
//! target committed. Once the spool is applied the target's checkpoint is
//! at least its end, which is where the live session starts (the slot was
//! confirmed no further). A segment is deleted once the target committed
//! past its last record.

use std::path::Path;
use std::time::Instant;

use pgwire_replication::{Lsn as WireLsn, ReplicationEvent};
use tokio::sync::watch;
use tokio_postgres::Client;
use walrelay_proto::Lsn;

use super::{capture, handle, StreamError};
use crate::apply::Applier;
use crate::spool;
use crate::spool::read::Reader;
use crate::spool::record::Record;
use crate::state::spool::Recorded;
use crate::status::StatusBoard;

/// How the spool's application ended.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Spooled {
    /// Nothing spooled, or all of it applied: go live.
    Applied,
    /// A stop was requested between transactions: the rest waits on disk.
    Stopped,
}

/// Applies the spool the target's state records for `slot`, if it holds
/// anything the target lacks. One this machine cannot reach is an error
/// only when the slot was acknowledged past the target's checkpoint (the
/// changes in between are only there).
pub(super) async fn apply_recorded(
    slot: &str,
    recorded: &Recorded,
    source_sql: &Client,
    (applier, ddl): (&mut Applier, &mut crate::ddl::Follower),
    board: &StatusBoard,
    stop: &watch::Receiver<bool>,
) -> Result<Spooled, StreamError> {
    // What the slot confirmed is lost only if neither the spool nor the
    // target holds it (a spool left over after it was applied is harmless).
    let acknowledged = capture::confirmed(source_sql, slot)
        .await?
        .filter(|ack| *ack > applier.committed());
    let dir = Path::new(&recorded.dir);
    if !dir.is_dir() {
        return match acknowledged {
            Some(_) => Err(StreamError::SpoolElsewhere {
                slot: slot.into(),
                dir: recorded.dir.clone(),
                host: recorded.host.clone(),
                here: spool::host_name(),
            }),
            None => Ok(Spooled::Applied),
        };
    }
    apply(dir, acknowledged, (applier, ddl), board, stop).await
}

/// Applies the spool in `dir`, if there is one.
async fn apply(
    dir: &Path,
    acknowledged: Option<Lsn>,
    (applier, ddl): (&mut Applier, &mut crate::ddl::Follower),
    board: &StatusBoard,
    stop: &watch::Receiver<bool>,
) -> Result<Spooled, StreamError> {
    let Some(mut reader) = Reader::open(dir, acknowledged)? else {
        return Ok(Spooled::Applied);
    };
    let end = reader.end();
    if end <= applier.committed() {
        tracing::info!(dir = %dir.display(), applied_lsn = %applier.committed(), spool_end = %end, "the target already holds everything the spool holds: spool deleted");
        reader.discard()?;
        spool::report_usage(dir);
        return Ok(Spooled::Applied);
    }
    tracing::info!(dir = %dir.display(), applied_lsn = %applier.committed(), spool_end = %end, "applying the spool");
    let started = Instant::now();
    let (bytes, _) = spool::files::usage(dir)?;
    let (mut records, mut transactions) = (0u64, 0u64);
    while let Some(rec) = reader.next_record()? {
        transactions += u64::from(matches!(rec, Record::Commit { .. }));
        if *stop.borrow() && !applier.in_transaction() {
            applier.flush().await?;
            tracing::info!(applied_lsn = %applier.committed(), "stopped while applying the spool; the next run continues from the checkpoint");
            return Ok(Spooled::Stopped);
        }
        let done = match handle(event(rec), (&mut *applier, &mut *ddl), board).await {
            Err(StreamError::Apply(err)) => Err(applier.first_error(err).await.into()),
            other => other,
        };
        if done?.is_some() {
            reader.release(applier.committed())?;
            spool::report_usage(dir);
        }
        records += 1;
    }
    applier.flush().await?;
    applier.idle_checkpoint(end).await?;
    reader.release(applier.committed())?;
    spool::report_usage(dir);
    tracing::info!(
        records,
        transactions,
        bytes,
        seconds = started.elapsed().as_secs_f64(),
        applied_lsn = %applier.committed(),
        "spool applied; going live"
    );
    Ok(Spooled::Applied)
}

/// The live event a spool record stands for.
pub(super) fn event(rec: Record) -> ReplicationEvent {
    match rec {
        Record::Begin {
            final_lsn,
            xid,
            commit_time,
        } => ReplicationEvent::Begin {
            final_lsn: WireLsn(final_lsn.0),
            xid,
            commit_time_micros: commit_time,
        },
        Record::Change(data) => ReplicationEvent::XLogData {
            wal_start: WireLsn(0),
            wal_end: WireLsn(0),
            server_time_micros: 0,
            data,
        },
        Record::Message {
            transactional,
            lsn,
            prefix,
            content,
        } => ReplicationEvent::Message {
            transactional,
            lsn: WireLsn(lsn.0),
            prefix,
            content,
        },
        Record::Commit {
            lsn,
            end_lsn,
            commit_time,
        } => ReplicationEvent::Commit {
            lsn: WireLsn(lsn.0),
            end_lsn: WireLsn(end_lsn.0),
            commit_time_micros: commit_time,
        },
        Record::Position(lsn) => ReplicationEvent::KeepAlive {
            wal_end: WireLsn(lsn.0),
            reply_requested: false,
            server_time_micros: 0,
        },
    }
}
