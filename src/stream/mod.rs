//! The replication session: reads the slot through pgwire-replication,
//! decodes with `walrelay-proto`, hands changes to [`crate::apply`], and
//! tells the slot a position only after the target committed it.
//!
//! Facts relied on (docs/ARCHITECTURE.md, Protocol facts): the transport
//! speaks protocol version 1, so a transaction arrives whole after its
//! commit, in commit order; Begin, Commit and logical messages arrive as
//! typed events, the rest as payloads to decode; `XLogData.wal_end` belongs
//! to one message and may be 0, so it is never acknowledged; keepalives are
//! answered by the transport's worker even while we wait on a slow target.
//! Errors are split into transient (reconnect with capped backoff, resume
//! from the checkpoint) and definite (stop, tell the operator).

mod backoff;
pub(crate) mod capture;
mod error;
mod heartbeat;
mod session;
mod spooled;
mod spooling;
mod stop;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pgwire_replication::ReplicationEvent;
use tokio::sync::watch;
use walrelay_proto::{decode, DecodeContext, Lsn};

use crate::apply::{Applier, Limits};
use crate::config::Config;
use crate::ddl::{DdlOptions, Follower};
use crate::pg::connect;
use crate::status::{Stage, StatusBoard};
use backoff::Backoff;
pub(crate) use error::StreamError;
use session::{Names, Transport};
use stop::StopPolicy;

/// How the stream batches, heartbeats and stops.
#[derive(Debug, Clone)]
pub struct StreamOptions {
    /// A target transaction holds at most this many source changes (a
    /// larger source transaction is applied whole, as it arrives).
    pub batch_rows: usize,
    /// A target transaction holds at most this many bytes of change data.
    pub batch_bytes: usize,
    /// A batch commits at the latest this long after its first change (it
    /// commits at once when nothing more has been received).
    pub batch_delay: Duration,
    /// How often a heartbeat is written into the source WAL.
    pub heartbeat_interval: Duration,
    /// Add a column the source gained to the target instead of stopping.
    pub auto_add_columns: bool,
    /// Stop after this long (`None`: until `stop`).
    pub stop_after: Option<Duration>,
    /// Stop once the target applied everything up to the source's WAL
    /// position at start.
    pub exit_when_caught_up: bool,
    /// Capture the slot into this spool and apply from it, so the slot is
    /// acknowledged at the spool's pace, not the target's (`None`: stream
    /// live, after applying a spool recorded in the target's state).
    pub spool: Option<crate::spool::SpoolOptions>,
    /// `--ddl`: `None` follows schema changes where the event trigger
    /// could be installed (see [`crate::ddl`]).
    pub ddl: Option<crate::ddl::DdlMode>,
    /// How often the source's catalog is checked for tables it gained.
    pub new_table_interval: Duration,
}

impl Default for StreamOptions {
    fn default() -> Self {
        StreamOptions {
            batch_rows: 10_000,
            batch_bytes: 16 << 20,
            batch_delay: Duration::from_millis(100),
            heartbeat_interval: Duration::from_secs(10),
            auto_add_columns: false,
            stop_after: None,
            exit_when_caught_up: false,
            spool: None,
            ddl: None,
            new_table_interval: Duration::from_secs(10),
        }
    }
}

/// Streams until `stop` turns true (or a definite error), reconnecting on
/// transient errors with capped exponential backoff.
pub(crate) async fn run(
    config: &Config,
    args: &StreamOptions,
    board: Arc<StatusBoard>,
    mut stop: watch::Receiver<bool>,
) -> Result<(), StreamError> {
    if let Some(spool) = &args.spool {
        return spooling::run(config, args, spool, board, stop).await;
    }
    let mut backoff = Backoff::new();
    let deadline = args.stop_after.map(|d| Instant::now() + d);
    loop {
        let started = Instant::now();
        match session(config, args, &board, &mut stop, deadline).await {
            Ok(()) => {
                board.set_stage(Stage::Stopped);
                return Ok(());
            }
            Err(err) if err.is_transient() && !*stop.borrow() => {
                backoff::report_reconnecting(&board, &err);
                backoff.ended_after(started.elapsed());
                tracing::warn!(error = %err, retry_in_ms = backoff.millis(), "stream interrupted; reconnecting");
                if !backoff.wait(&mut stop).await {
                    board.set_stage(Stage::Stopped);
                    return Ok(());
                }
            }
            Err(err) if err.is_transient() => return Ok(()),
            Err(err) => {
                board.set_stage(Stage::Failed);
                board.set_error(Some(err.to_string()));
                return Err(err);
            }
        }
    }
}

/// The apply session on the target, resuming at its checkpoint, and the
/// schema-change follower beside it.
async fn applier(
    config: &Config,
    args: &StreamOptions,
    board: &Arc<StatusBoard>,
    target: tokio_postgres::Client,
) -> Result<(Applier, Follower), StreamError> {
    let resume = crate::apply::checkpoint::load(&target, &config.slot).await?;
    let ddl_options = DdlOptions {
        mode: args.ddl,
        new_table_interval: args.new_table_interval,
    };
    let ddl = Follower::start(config, &ddl_options, &target).await?;
    let type_source = if args.auto_add_columns {
        let source = connect::connect(&config.source, "walrelay-types").await?;
        // Qualified names in format_type and pg_get_expr, and text forms
        // of values that any target reads back the same, for the target.
        source
            .batch_execute(
                "SET search_path = ''; SET DateStyle = ISO; SET IntervalStyle = postgres; \
                 SET extra_float_digits = 3",
            )
            .await
            .map_err(StreamError::source_sql("setting search_path"))?;
        Some(source)
    } else {
        None
    };
    let limits = Limits {
        rows: args.batch_rows,
        bytes: args.batch_bytes,
        delay: args.batch_delay,
    };
    let applier = Applier::new(
        target,
        type_source,
        &config.slot,
        &resume,
        limits,
        Arc::clone(board),
        config.map.clone(),
    )
    .await?;
    Ok((applier, ddl))
}

async fn session(
    config: &Config,
    args: &StreamOptions,
    board: &Arc<StatusBoard>,
    stop: &mut watch::Receiver<bool>,
    deadline: Option<Instant>,
) -> Result<(), StreamError> {
    let target = connect::connect(&config.target, "walrelay-apply").await?;
    let recorded = crate::state::spool::read(&target, &config.slot).await?;
    let (mut applier, mut ddl) = applier(config, args, board, target).await?;
    let source_sql = connect::connect(&config.source, "walrelay-stream").await?;
    // A spool a snapshot (or an earlier `stream --spool-dir`) left: applied
    // first, then the stream goes live where it ends.
    let spooled = match &recorded {
        Some(recorded) => {
            spooled::apply_recorded(
                &config.slot,
                recorded,
                &source_sql,
                (&mut applier, &mut ddl),
                board,
                stop,
            )
            .await
        }
        None => Ok(spooled::Spooled::Applied),
    };
    if spooled.is_err() {
        applier.rollback().await;
    }
    if spooled? == spooled::Spooled::Stopped {
        return Ok(());
    }
    // What the source had written when the live session began: replaying it is
    // a catch-up, whose batches fill up to their limits.
    let start_wal = current_wal_lsn(&source_sql).await?;
    let catch_up_to = args.exit_when_caught_up.then_some(start_wal);
    let names = Names {
        slot: &config.slot,
        publication: &config.publication,
    };
    // After a spool, the checkpoint is past where `resume` started.
    let start = applier.committed();
    let client = session::open(
        &config.source,
        &source_sql,
        names,
        start,
        Duration::from_secs(1),
    )
    .await?;
    tracing::info!(slot = %config.slot, start_lsn = %start, "streaming");
    board.connected.store(true, Ordering::Relaxed);
    board.set_stage(Stage::Streaming);
    board.set_error(None);
    let source_sql = Arc::new(source_sql);
    let _heartbeat = heartbeat::spawn(Arc::clone(&source_sql), args.heartbeat_interval);
    let mut transport = Transport::new(client, &source_sql, names);
    let policy = StopPolicy::new(stop, deadline, catch_up_to);
    let ended = events(
        &mut transport,
        (&mut applier, &mut ddl),
        board,
        policy,
        start_wal,
    )
    .await;
    if ended.is_err() {
        applier.rollback().await;
    }
    transport.stop();
    ended
}

/// The insert position: under asynchronous commit the write position can
/// trail commits that are already visible.
async fn current_wal_lsn(source: &tokio_postgres::Client) -> Result<Lsn, StreamError> {
    source
        .query_one("SELECT pg_current_wal_insert_lsn()", &[])
        .await
        .map_err(StreamError::source_sql("reading the WAL position"))?
        .try_get(0)
        .map_err(StreamError::source_sql("reading the WAL position"))
}

/// What woke the event loop.
enum Wake {
    Event(ReplicationEvent),
    /// The open batch is due (nothing more received, or `--batch-delay`
    /// passed), or `--stop-after` is.
    Due,
}

/// The event loop of one session: the stop policy decides when to end, the
/// transport brings events and takes acknowledgements, the applier applies.
async fn events(
    transport: &mut Transport<'_>,
    (applier, ddl): (&mut Applier, &mut Follower),
    board: &StatusBoard,
    mut policy: StopPolicy<'_>,
    start_wal: Lsn,
) -> Result<(), StreamError> {
    loop {
        if let Some(give_up) = policy.stopping(applier.committed()) {
            if !applier.in_transaction() {
                return stop_cleanly(transport, applier, give_up).await;
            }
        }
        // ddl hook: tables the source gained are brought in between source
        // transactions, with the batch before committed.
        if !applier.in_transaction() && ddl.wants_work() {
            if let Some(lsn) = applier.flush().await? {
                transport.acknowledge(lsn);
            }
            ddl.between_transactions(applier).await?;
        }
        let due = stop::earliest(applier.deadline(), policy.stop_after());
        let grace = policy.grace_ends();
        // Past what the source had written at the start, a batch need not
        // wait for more: the stream is live, not replaying a backlog.
        let live = applier.batch_end().is_some_and(|end| end >= start_wal);
        let wake = match quiet(transport, applier.deadline().is_some() && live).await? {
            Some(wake) => wake,
            None => tokio::select! {
                event = transport.recv() => Wake::Event(event?.ok_or(StreamError::Ended)?),
                _ = stop::at(due) => Wake::Due,
                _ = policy.requested() => continue,
                _ = stop::at(grace) => {
                    abandon(applier);
                    return Ok(());
                }
            },
        };
        let work = async {
            let done = match wake {
                Wake::Event(event) => handle(event, (&mut *applier, &mut *ddl), board).await,
                Wake::Due => applier.flush().await.map_err(StreamError::from),
            };
            match done {
                Err(StreamError::Apply(err)) => Err(applier.first_error(err).await.into()),
                other => other,
            }
        };
        // A stop request during a slow apply starts the grace period too.
        let done = tokio::select! {
            done = work => done?,
            _ = policy.grace_during_work() => {
                abandon(applier);
                return Ok(());
            }
        };
        if let Some(lsn) = done {
            transport.acknowledge(lsn);
        }
    }
}

/// With a batch open between transactions (`open`), what to do without waiting: the
/// next event if one was already received, else commit the batch now. A
/// quiet stream is thus applied within a round trip instead of after
/// `--batch-delay`; under load, what arrives during one commit makes the
/// next batch (bounded by the batch limits). `None`: nothing is open, or the
/// session is still replaying the backlog it started with (the walsender's
/// pauses there would only make batches small): wait.
async fn quiet(transport: &mut Transport<'_>, open: bool) -> Result<Option<Wake>, StreamError> {
    if !open {
        return Ok(None);
    }
    Ok(Some(match transport.try_recv().await {
        Some(event) => Wake::Event(event?.ok_or(StreamError::Ended)?),
        None => Wake::Due,
    }))
}

/// Commits the open batch within the grace period and waits for the slot
/// to hear of it.
async fn stop_cleanly(
    transport: &Transport<'_>,
    applier: &mut Applier,
    give_up: Instant,
) -> Result<(), StreamError> {
    let Ok(flushed) = tokio::time::timeout_at(give_up.into(), applier.flush()).await else {
        abandon(applier);
        return Ok(());
    };
    if let Some(lsn) = flushed? {
        transport.acknowledge(lsn);
    }
    transport.wait_acknowledged().await;
    tracing::info!(applied_lsn = %applier.committed(), "stopping cleanly");
    Ok(())
}

/// Gives up on the open batch after a stop request (see [`stop::STOP_GRACE`]).
fn abandon(applier: &Applier) {
    tracing::warn!(applied_lsn = %applier.committed(), "stop requested while the target was busy: the open batch is rolled back, the stream resumes from the checkpoint");
}

/// Applies one event; returns a position now durable on the target.
async fn handle(
    event: ReplicationEvent,
    (applier, ddl): (&mut Applier, &mut Follower),
    board: &StatusBoard,
) -> Result<Option<Lsn>, StreamError> {
    match event {
        ReplicationEvent::Begin { final_lsn, xid, .. } => {
            applier.begin(Lsn(final_lsn.0), xid).await?;
            Ok(None)
        }
        ReplicationEvent::XLogData { data, .. } => {
            let msg = decode(&data, DecodeContext::default()).map_err(StreamError::Decode)?;
            // ddl hook: a published table the target lacks is brought in first.
            if let walrelay_proto::Message::Relation(rel) = &msg {
                ddl.relation(rel, applier).await?;
            }
            applier.message(msg, data.len()).await?;
            Ok(None)
        }
        ReplicationEvent::Commit {
            end_lsn,
            commit_time_micros,
            ..
        } => {
            // The source is at least here: fresher than the monitor's sample.
            board.source_lsn.fetch_max(end_lsn.0, Ordering::Relaxed);
            Ok(applier.commit(Lsn(end_lsn.0), commit_time_micros).await?)
        }
        // Under load keepalives are frequent: batches commit by size or
        // deadline, a keepalive only moves an idle checkpoint.
        ReplicationEvent::KeepAlive { wal_end, .. } => {
            board.source_lsn.fetch_max(wal_end.0, Ordering::Relaxed);
            Ok(applier.idle_checkpoint(Lsn(wal_end.0)).await?)
        }
        ReplicationEvent::Message {
            prefix,
            content,
            transactional,
            ..
        } => {
            if transactional {
                // The other direction's apply mark makes its transaction
                // an echo (apply/loop_guard.rs).
                applier.logical_message(&prefix, &content);
            }
            // ddl hook: a schema change, applied at its place in the
            // transaction (not in an echo: `Applier::applying`).
            if prefix == crate::ddl::PREFIX && transactional {
                ddl.message(&content, applier).await?;
                return Ok(None);
            }
            // walrelay's transactional messages are cutover markers: the
            // cutover polls for the batch that holds one, so it commits
            // without waiting out --batch-delay.
            if prefix == heartbeat::PREFIX && transactional {
                applier.commit_promptly();
            }
            if prefix == heartbeat::PREFIX && !transactional && applier.idle() {
                if let Some(micros) = heartbeat::emitted_at(&content) {
                    board
                        .applied_time_unix_micros
                        .fetch_max(micros, Ordering::Relaxed);
                }
            }
            Ok(None)
        }
        ReplicationEvent::StoppedAt { .. } => Err(StreamError::StoppedAt),
    }
}
