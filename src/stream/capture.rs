//! The capture: reads the slot into the spool while the target cannot take
//! changes yet (the snapshot copies), so the slot need not hold the WAL.
//!
//! It starts where the durable spool ends (the consistent point the first
//! time), appends every record of the stream, and acknowledges a position
//! to the slot only once the spool holds everything before it on disk
//! (`crate::spool`'s contract). A transaction re-sent after a restart
//! (its commit before the spool's end) is dropped, as the apply drops one
//! before its checkpoint. With `--spool-max-bytes` reached it stops reading:
//! the transport still answers keepalives, the slot is no longer
//! acknowledged and holds WAL again, and nothing is dropped.

use std::path::Path;
use std::time::{Duration, Instant};

use pgwire_replication::{ReplicationClient, ReplicationEvent};
use tokio::sync::watch;
use tokio_postgres::Client;
use walrelay_proto::Lsn;

use super::session::{self, Names};
use super::StreamError;
use crate::config::Config;
use crate::metrics as m;
use crate::pg::connect;
use crate::spool::files::Writer;
use crate::spool::record::Record;
use crate::spool::{self, SpoolError, SpoolOptions};

/// At most this long between a commit reaching the spool and its fsync.
const SYNC_EVERY: Duration = Duration::from_millis(200);

/// Unsynced bytes that make the capture sync at once.
const SYNC_BYTES: u64 = 8 << 20;

/// How often the slot hears the spool's end: the server moves the slot's
/// `restart_lsn` (and frees WAL) by at most one step per status update, so
/// a busy source needs them often.
const STATUS_EVERY: Duration = Duration::from_millis(100);

const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// A running capture; [`Capture::finish`] stops it with everything synced.
pub(crate) struct Capture {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<Result<(), StreamError>>,
    /// The task ended (and was awaited) before [`Capture::finish`].
    ended: Option<Result<(), StreamError>>,
}

impl Capture {
    /// Starts capturing `config.slot` into the spool, from its end or from
    /// `start` (the slot's consistent point) when it is empty.
    pub(crate) fn spawn(config: &Config, opts: &SpoolOptions, start: Lsn) -> Capture {
        let (stop, stopped) = watch::channel(false);
        let config = config.clone();
        let opts = opts.clone();
        let task = tokio::spawn(async move { run(&config, &opts, start, stopped).await });
        Capture {
            stop,
            task,
            ended: None,
        }
    }

    /// Resolves only when the capture failed for good.
    /// Cancel-safe.
    pub(crate) async fn failed(&mut self) -> StreamError {
        if self.ended.is_none() {
            let outcome = (&mut self.task).await;
            // Reported here (an error) or nothing to report: `finish` must
            // not await the finished task again.
            self.ended = Some(Ok(()));
            match outcome {
                Ok(Err(err)) => return err,
                Ok(Ok(())) => {}
                Err(join) => return joined(join),
            }
        }
        std::future::pending().await
    }

    /// Stops the capture after a final sync and acknowledgement.
    pub(crate) async fn finish(self) -> Result<(), StreamError> {
        let _ = self.stop.send(true);
        if let Some(done) = self.ended {
            return done;
        }
        self.task.await.unwrap_or_else(|join| Err(joined(join)))
    }
}

/// A capture task that panicked or was cancelled.
fn joined(join: tokio::task::JoinError) -> StreamError {
    StreamError::Spool(SpoolError::Io {
        path: Default::default(),
        source: std::io::Error::other(format!("spool capture task ended: {join}")),
    })
}

async fn run(
    config: &Config,
    opts: &SpoolOptions,
    start: Lsn,
    mut stop: watch::Receiver<bool>,
) -> Result<(), StreamError> {
    let mut backoff = Duration::from_secs(1);
    loop {
        match session(config, opts, start, &mut stop).await {
            Ok(()) => return Ok(()),
            Err(err) if err.is_transient() && !*stop.borrow() => {
                tracing::warn!(error = %err, retry_in_ms = backoff.as_millis() as u64, "spool capture interrupted; reconnecting");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = stop.wait_for(|s| *s) => return Ok(()),
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
            Err(err) if err.is_transient() => return Ok(()),
            Err(err) => return Err(err),
        }
    }
}

/// The slot's confirmed position (`None` before it confirmed anything).
pub(super) async fn confirmed(source: &Client, slot: &str) -> Result<Option<Lsn>, StreamError> {
    let row = source
        .query_opt(
            "SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = $1",
            &[&slot],
        )
        .await
        .map_err(StreamError::source_sql("reading the slot"))?
        .ok_or_else(|| StreamError::SlotMissing { slot: slot.into() })?;
    row.try_get(0).map_err(StreamError::source_sql(
        "reading the slot's confirmed position",
    ))
}

/// Opens the spool and checks it holds everything the slot confirmed.
async fn open_writer(
    dir: &Path,
    opts: &SpoolOptions,
    start: Lsn,
    acknowledged: Option<Lsn>,
) -> Result<Writer, StreamError> {
    // A new slot confirms its consistent point: nothing was acknowledged
    // from a spool until the slot moved past it.
    let acknowledged = acknowledged.filter(|ack| *ack > start);
    let mut writer = Writer::open(dir, opts.segment_bytes, acknowledged)?;
    if writer.durable().is_some_and(|end| end < start) {
        // Every transaction in it committed before this slot's consistent
        // point: a spool of an earlier migration, held by the copy.
        tracing::warn!(dir = %dir.display(), "the spool predates this slot's consistent point (an earlier migration's): removed");
        drop(writer);
        spool::files::remove_all(dir)?;
        writer = Writer::open(dir, opts.segment_bytes, acknowledged)?;
    }
    if let (None, Some(ack)) = (writer.durable(), acknowledged) {
        return Err(SpoolError::Short {
            segment: dir.to_path_buf(),
            offset: 0,
            end: None,
            acknowledged: ack,
        }
        .into());
    }
    Ok(writer)
}

async fn session(
    config: &Config,
    opts: &SpoolOptions,
    start: Lsn,
    stop: &mut watch::Receiver<bool>,
) -> Result<(), StreamError> {
    let dir = opts.slot_dir(&config.slot);
    let source_sql = connect::connect(&config.source, "walrelay-spool").await?;
    let acknowledged = confirmed(&source_sql, &config.slot).await?;
    let mut writer = open_writer(&dir, opts, start, acknowledged).await?;
    let from = writer.durable().unwrap_or(start).max(start);
    let names = Names {
        slot: &config.slot,
        publication: &config.publication,
    };
    let mut client = session::open(&config.source, &source_sql, names, from, STATUS_EVERY).await?;
    tracing::info!(slot = %config.slot, start_lsn = %from, dir = %dir.display(), "spooling the change stream");
    let mut spooler = Spooler {
        writer: &mut writer,
        dir: &dir,
        max_bytes: opts.max_bytes,
        from,
        in_txn: false,
        skipping: false,
        unsynced: 0,
        last_sync: Instant::now(),
        full: false,
    };
    let ended = spooler.events(&mut client, &source_sql, names, stop).await;
    let synced = spooler.sync(&client);
    if ended.is_ok() && synced.is_ok() {
        let give_up = Instant::now() + Duration::from_secs(3);
        while client.feedback_pending_since().is_some() && Instant::now() < give_up {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    client.stop();
    ended.and(synced)
}

struct Spooler<'a> {
    writer: &'a mut Writer,
    dir: &'a Path,
    max_bytes: u64,
    /// Where this session started: re-sent transactions before it are dropped.
    from: Lsn,
    in_txn: bool,
    skipping: bool,
    unsynced: u64,
    last_sync: Instant,
    full: bool,
}

impl Spooler<'_> {
    async fn events(
        &mut self,
        client: &mut ReplicationClient,
        source_sql: &Client,
        names: Names<'_>,
        stop: &mut watch::Receiver<bool>,
    ) -> Result<(), StreamError> {
        let mut tick = tokio::time::interval(SYNC_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let wake = tokio::select! {
                _ = stop.wait_for(|s| *s) => return Ok(()),
                _ = tick.tick() => None,
                event = client.recv(), if !self.full => Some(event),
            };
            let Some(event) = wake else {
                if self.unsynced > 0 {
                    self.sync(client)?;
                }
                self.check_full()?;
                continue;
            };
            let event = match event {
                Ok(Some(event)) => event,
                Ok(None) => return Err(StreamError::Ended),
                Err(err) => return Err(session::diagnose(source_sql, names, err, false).await),
            };
            self.event(event)?;
            if self.unsynced >= SYNC_BYTES
                || (self.unsynced > 0 && self.last_sync.elapsed() >= SYNC_EVERY)
            {
                self.sync(client)?;
                self.check_full()?;
            }
        }
    }

    fn append(&mut self, rec: Record) -> Result<(), StreamError> {
        self.unsynced += 1;
        if let Record::Change(data) = &rec {
            self.unsynced += data.len() as u64;
        }
        Ok(self.writer.append(&rec)?)
    }

    fn event(&mut self, event: ReplicationEvent) -> Result<(), StreamError> {
        match event {
            ReplicationEvent::Begin {
                final_lsn,
                xid,
                commit_time_micros,
            } => {
                self.in_txn = true;
                self.skipping = Lsn(final_lsn.0) < self.from;
                if !self.skipping {
                    self.append(Record::Begin {
                        final_lsn: Lsn(final_lsn.0),
                        xid,
                        commit_time: commit_time_micros,
                    })?;
                }
            }
            ReplicationEvent::XLogData { data, .. } if !self.skipping => {
                self.append(Record::Change(data))?;
            }
            ReplicationEvent::Message {
                transactional: true,
                lsn,
                prefix,
                content,
            } if !self.skipping => {
                self.append(Record::Message {
                    transactional: true,
                    lsn: Lsn(lsn.0),
                    prefix,
                    content,
                })?;
            }
            ReplicationEvent::Commit {
                lsn,
                end_lsn,
                commit_time_micros,
            } => {
                if !self.skipping {
                    self.append(Record::Commit {
                        lsn: Lsn(lsn.0),
                        end_lsn: Lsn(end_lsn.0),
                        commit_time: commit_time_micros,
                    })?;
                }
                self.in_txn = false;
                self.skipping = false;
            }
            // Between transactions, everything committed before the
            // server's WAL end has been sent (as `apply::idle_checkpoint`).
            ReplicationEvent::KeepAlive { wal_end, .. }
                if !self.in_txn && Some(Lsn(wal_end.0)) > self.writer.pending() =>
            {
                tracing::trace!(wal_end = %Lsn(wal_end.0), "keepalive between transactions");
                self.append(Record::Position(Lsn(wal_end.0)))?;
            }
            ReplicationEvent::StoppedAt { .. } => return Err(StreamError::StoppedAt),
            _ => {}
        }
        Ok(())
    }

    /// Makes the spool durable and acknowledges its end to the slot.
    fn sync(&mut self, client: &ReplicationClient) -> Result<(), StreamError> {
        let durable = self.writer.sync()?;
        self.unsynced = 0;
        self.last_sync = Instant::now();
        if let Some(lsn) = durable {
            tracing::debug!(spooled_lsn = %lsn, "spool synced; acknowledged to the slot");
            client.update_applied_lsn(pgwire_replication::Lsn(lsn.0));
            metrics::gauge!(m::SPOOLED_LSN).set(lsn.0 as f64);
        }
        Ok(())
    }

    /// Stops reading while the spool is at `--spool-max-bytes`.
    fn check_full(&mut self) -> Result<(), StreamError> {
        let (bytes, _) = spool::files::usage(self.dir)?;
        spool::report_usage(self.dir);
        let full = bytes >= self.max_bytes;
        if full != self.full {
            if full {
                tracing::warn!(bytes, max_bytes = self.max_bytes, "spool full (--spool-max-bytes): no longer reading or acknowledging the slot; the source holds WAL again until the spool drains");
            } else {
                tracing::info!(
                    bytes,
                    "spool below --spool-max-bytes again: reading the slot"
                );
            }
            metrics::gauge!(m::SPOOL_FULL).set(f64::from(u8::from(full)));
            self.full = full;
        }
        Ok(())
    }
}
