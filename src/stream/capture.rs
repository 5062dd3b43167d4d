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
use std::sync::Arc;
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
use crate::spool::files::{Extent, Writer};
use crate::spool::record::Record;
use crate::spool::{self, SpoolError, SpoolOptions};
use crate::status::{SpoolState, StatusBoard};

/// At most this long between a commit reaching the spool and its fsync.
const SYNC_EVERY: Duration = Duration::from_millis(200);

/// Unsynced bytes that make the capture sync at once.
const SYNC_BYTES: u64 = 8 << 20;

/// How often the slot hears the spool's end: the server moves the slot's
/// `restart_lsn` (and frees WAL) by at most one step per status update, so
/// a busy source needs them often.
const STATUS_EVERY: Duration = Duration::from_millis(100);

/// A running capture; [`Capture::finish`] stops it with everything synced.
pub(crate) struct Capture {
    stop: Arc<watch::Sender<bool>>,
    task: tokio::task::JoinHandle<Result<(), StreamError>>,
    /// The task ended (and was awaited) before [`Capture::finish`].
    ended: Option<Result<(), StreamError>>,
    extent: watch::Receiver<Option<Extent>>,
}

/// Where the capture reports: readers of the spool, and the status board.
struct Outlets {
    extent: watch::Sender<Option<Extent>>,
    board: Option<Arc<StatusBoard>>,
}

impl Capture {
    /// Starts capturing `config.slot` into the spool, from its end or from
    /// `start` (the slot's consistent point, or the target's checkpoint)
    /// when it is empty; `board` shows the spool's state on `/status`.
    pub(crate) fn spawn(
        config: &Config,
        opts: &SpoolOptions,
        start: Lsn,
        board: Option<Arc<StatusBoard>>,
    ) -> Capture {
        let (stop, stopped) = watch::channel(false);
        let stop = Arc::new(stop);
        let (extent, extent_rx) = watch::channel(None);
        let config = config.clone();
        let opts = opts.clone();
        let outlets = Outlets { extent, board };
        let task = tokio::spawn(async move { run(&config, &opts, start, stopped, &outlets).await });
        Capture {
            stop,
            task,
            ended: None,
            extent: extent_rx,
        }
    }

    /// Stops the capture (a final sync and acknowledgement) once `signal`
    /// turns true, without waiting for [`Capture::finish`]: its readers
    /// then see it end ([`crate::spool::read::Tail::closed`]).
    pub(crate) fn stop_on(&self, mut signal: watch::Receiver<bool>) {
        let stop = Arc::clone(&self.stop);
        tokio::spawn(async move {
            if signal.wait_for(|s| *s).await.is_ok() {
                let _ = stop.send(true);
            }
        });
    }

    /// How far the spool is synced, for a reader following it.
    pub(crate) fn extent(&self) -> watch::Receiver<Option<Extent>> {
        self.extent.clone()
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
    outlets: &Outlets,
) -> Result<(), StreamError> {
    let mut backoff = super::backoff::Backoff::new();
    // Opened (and recovered) once: a reader may follow it, so a reconnect
    // only rewinds what was appended after the last synced boundary.
    let mut writer = None;
    loop {
        match session(config, opts, start, &mut writer, &mut stop, outlets).await {
            Ok(()) => return Ok(()),
            Err(err) if err.is_transient() && !*stop.borrow() => {
                if let Some(writer) = writer.as_mut() {
                    writer.rewind()?;
                }
                tracing::warn!(error = %err, retry_in_ms = backoff.millis(), "spool capture interrupted; reconnecting");
                if !backoff.wait(&mut stop).await {
                    return Ok(());
                }
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
        // Every transaction in it committed before where this capture
        // starts (the slot's consistent point, or the target's
        // checkpoint): an earlier migration's, or one applied already.
        tracing::warn!(dir = %dir.display(), start_lsn = %start, "the spool ends before where the capture starts (applied already, or an earlier migration's): removed");
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
    writer: &mut Option<Writer>,
    stop: &mut watch::Receiver<bool>,
    outlets: &Outlets,
) -> Result<(), StreamError> {
    let dir = opts.slot_dir(&config.slot);
    let source_sql = connect::connect(&config.source, "walrelay-spool").await?;
    let writer = match writer {
        Some(writer) => writer,
        None => {
            let acknowledged = confirmed(&source_sql, &config.slot).await?;
            let opened = open_writer(&dir, opts, start, acknowledged).await?;
            writer.insert(opened)
        }
    };
    outlets.extent.send_replace(Some(writer.extent()));
    let from = writer.durable().unwrap_or(start).max(start);
    let names = Names {
        slot: &config.slot,
        publication: &config.publication,
    };
    let mut client = session::open(&config.source, &source_sql, names, from, STATUS_EVERY).await?;
    tracing::info!(slot = %config.slot, start_lsn = %from, dir = %dir.display(), "spooling the change stream");
    let mut spooler = Spooler {
        writer,
        outlets,
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
    outlets: &'a Outlets,
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
                || self.writer.segment_full()
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
            // Heartbeats between transactions: the apply measures lag in
            // seconds by them.
            ReplicationEvent::Message {
                transactional: false,
                lsn,
                prefix,
                content,
            } if !self.in_txn && prefix == super::heartbeat::PREFIX => {
                self.append(Record::Message {
                    transactional: false,
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
        self.outlets.extent.send_replace(Some(self.writer.extent()));
        Ok(())
    }

    /// Stops reading while the spool is at `--spool-max-bytes`.
    fn check_full(&mut self) -> Result<(), StreamError> {
        let (bytes, segments) = spool::files::usage(self.dir)?;
        spool::report_usage(self.dir);
        let full = bytes >= self.max_bytes;
        if full {
            // The apply deletes only segments the capture moved past.
            self.writer.seal()?;
            self.outlets.extent.send_replace(Some(self.writer.extent()));
        }
        if let Some(board) = &self.outlets.board {
            board.set_spool(Some(SpoolState {
                dir: self.dir.display().to_string(),
                bytes,
                segments,
                max_bytes: self.max_bytes,
                spooled_lsn: self.writer.durable().map(|l| l.to_string()),
                full,
            }));
        }
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

/// Records where `slot` spools in the target's state (`walrelay status`
/// and `cleanup` read it), creating the directory.
pub(crate) async fn record_location(
    target: &Client,
    slot: &str,
    opts: &SpoolOptions,
) -> Result<(), StreamError> {
    let dir = opts.absolute_slot_dir(slot)?;
    let recorded = crate::state::spool::Recorded {
        dir: dir.display().to_string(),
        host: spool::host_name(),
        max_bytes: opts.max_bytes,
    };
    Ok(crate::state::spool::record(target, slot, &recorded).await?)
}
