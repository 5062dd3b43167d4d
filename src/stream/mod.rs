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

mod heartbeat;
mod session;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pgwire_replication::{ReplicationClient, ReplicationEvent};
use tokio::sync::watch;
use walrelay_proto::{decode, DecodeContext, Lsn};

use crate::apply::checkpoint::ResumeError;
use crate::apply::{Applier, ApplyError, Limits};
use crate::config::Config;
use crate::pg::connect;
use crate::status::{Stage, StatusBoard};

/// Why streaming stopped or paused.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error("{0}")]
    Transient(String),
    #[error("{0}")]
    Definite(String),
    #[error(transparent)]
    Apply(#[from] ApplyError),
}

impl StreamError {
    fn is_transient(&self) -> bool {
        match self {
            StreamError::Transient(_) => true,
            StreamError::Definite(_) => false,
            StreamError::Apply(err) => err.is_transient(),
        }
    }
}

const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// How the stream batches, heartbeats and stops.
#[derive(Debug, Clone)]
pub struct StreamOptions {
    /// A target transaction holds at most this many source changes (a
    /// larger source transaction is applied whole, as it arrives).
    pub batch_rows: usize,
    /// A target transaction holds at most this many bytes of change data.
    pub batch_bytes: usize,
    /// A batch commits at the latest this long after its first change.
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
        }
    }
}

/// Streams until `stop` turns true (or a definite error), reconnecting on
/// transient errors with capped exponential backoff.
pub async fn run(
    config: &Config,
    args: &StreamOptions,
    board: Arc<StatusBoard>,
    mut stop: watch::Receiver<bool>,
) -> Result<(), StreamError> {
    let mut backoff = Duration::from_secs(1);
    let deadline = args.stop_after.map(|d| Instant::now() + d);
    loop {
        let started = Instant::now();
        match session(config, args, &board, &mut stop, deadline).await {
            Ok(()) => {
                board.set_stage(Stage::Stopped);
                return Ok(());
            }
            Err(err) if err.is_transient() && !*stop.borrow() => {
                board.connected.store(false, Ordering::Relaxed);
                board.set_stage(Stage::Reconnecting);
                board.set_error(Some(err.to_string()));
                metrics::counter!(crate::metrics::ERRORS, "stage" => "stream").increment(1);
                if started.elapsed() > MAX_BACKOFF {
                    backoff = Duration::from_secs(1);
                }
                tracing::warn!(error = %err, retry_in_ms = backoff.as_millis() as u64, "stream interrupted; reconnecting");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = stop.changed() => {}
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
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

async fn session(
    config: &Config,
    args: &StreamOptions,
    board: &Arc<StatusBoard>,
    stop: &mut watch::Receiver<bool>,
    deadline: Option<Instant>,
) -> Result<(), StreamError> {
    let transient = |e: connect::ConnectError| StreamError::Transient(e.to_string());
    let target = connect::connect(&config.target, "walrelay-apply")
        .await
        .map_err(transient)?;
    let source_sql = connect::connect(&config.source, "walrelay-stream")
        .await
        .map_err(transient)?;
    let resume = crate::apply::checkpoint::load(&target, &config.slot)
        .await
        .map_err(|e| match e {
            ResumeError::State(_) => StreamError::Transient(e.to_string()),
            _ => StreamError::Definite(e.to_string()),
        })?;
    let type_source = if args.auto_add_columns {
        let source = connect::connect(&config.source, "walrelay-types")
            .await
            .map_err(transient)?;
        // Qualified names in format_type and pg_get_expr, for the target.
        source
            .batch_execute("SET search_path = ''")
            .await
            .map_err(|e| StreamError::Transient(connect::error_text(&e)))?;
        Some(source)
    } else {
        None
    };
    let limits = Limits {
        rows: args.batch_rows,
        bytes: args.batch_bytes,
        delay: args.batch_delay,
    };
    let mut applier = Applier::new(
        target,
        type_source,
        &config.slot,
        &resume,
        limits,
        Arc::clone(board),
    )
    .await?;
    let catch_up_to = if args.exit_when_caught_up {
        Some(current_wal_lsn(&source_sql).await?)
    } else {
        None
    };
    let mut client = session::open(
        &config.source,
        &source_sql,
        &config.slot,
        &config.publication,
        resume.lsn,
    )
    .await?;
    tracing::info!(slot = %config.slot, start_lsn = %resume.lsn, "streaming");
    board.connected.store(true, Ordering::Relaxed);
    board.set_stage(Stage::Streaming);
    board.set_error(None);
    let _heartbeat = heartbeat::spawn(source_sql, args.heartbeat_interval);
    let ended = events(
        &mut client,
        &mut applier,
        board,
        stop,
        deadline,
        catch_up_to,
    )
    .await;
    if ended.is_err() {
        applier.rollback().await;
    }
    client.stop();
    ended
}

/// The insert position: under asynchronous commit the write position can
/// trail commits that are already visible.
async fn current_wal_lsn(source: &tokio_postgres::Client) -> Result<Lsn, StreamError> {
    source
        .query_one("SELECT pg_current_wal_insert_lsn()", &[])
        .await
        .map_err(|e| StreamError::Transient(connect::error_text(&e)))?
        .try_get(0)
        .map_err(|e| StreamError::Transient(format!("reading the source's WAL position: {e}")))
}

/// After a stop request the open batch has this long to reach its commit;
/// then it is abandoned (closing the session rolls it back, and the
/// checkpoint still names the last committed batch).
const STOP_GRACE: Duration = Duration::from_secs(10);

/// The event loop of one session.
async fn events(
    client: &mut ReplicationClient,
    applier: &mut Applier,
    board: &StatusBoard,
    stop: &mut watch::Receiver<bool>,
    deadline: Option<Instant>,
    catch_up_to: Option<Lsn>,
) -> Result<(), StreamError> {
    let far = Instant::now() + Duration::from_secs(86_400 * 365);
    let mut give_up: Option<Instant> = None;
    loop {
        let stopping = *stop.borrow()
            || deadline.is_some_and(|d| Instant::now() >= d)
            || catch_up_to.is_some_and(|l| applier.committed() >= l);
        if stopping && give_up.is_none() {
            give_up = Some(Instant::now() + STOP_GRACE);
        }
        let limit = give_up.unwrap_or(far);
        if stopping && !applier.in_transaction() {
            let Ok(flushed) = tokio::time::timeout_at(limit.into(), applier.flush()).await else {
                {
                    abandon(applier);
                    return Ok(());
                }
            };
            if let Some(lsn) = flushed? {
                client.update_applied_lsn(pgwire_replication::Lsn(lsn.0));
            }
            wait_acknowledged(client).await;
            tracing::info!(applied_lsn = %applier.committed(), "stopping cleanly");
            return Ok(());
        }
        let flush_at = applier
            .deadline()
            .unwrap_or(far)
            .min(deadline.unwrap_or(far));
        let event = tokio::select! {
            event = client.recv() => event.map_err(session::classify)?,
            _ = tokio::time::sleep_until(flush_at.into()) => None,
            _ = stop.changed(), if give_up.is_none() => continue,
            _ = tokio::time::sleep_until(limit.into()), if give_up.is_some() => {
                abandon(applier);
                return Ok(());
            }
        };
        // A stop request during a slow apply starts the grace period too.
        let work = async {
            match event {
                Some(event) => handle(event, applier, board).await,
                None if Instant::now() >= flush_at => Ok(applier.flush().await?),
                None => Err(StreamError::Transient(
                    "the replication stream ended".into(),
                )),
            }
        };
        let grace = async {
            match give_up {
                Some(at) => tokio::time::sleep_until(at.into()).await,
                None => {
                    let _ = stop.wait_for(|s| *s).await;
                    tokio::time::sleep(STOP_GRACE).await;
                }
            }
        };
        let done = tokio::select! {
            done = work => done?,
            _ = grace => {
                abandon(applier);
                return Ok(());
            }
        };
        if let Some(lsn) = done {
            client.update_applied_lsn(pgwire_replication::Lsn(lsn.0));
        }
    }
}

/// Gives up on the open batch after a stop request (see [`STOP_GRACE`]).
fn abandon(applier: &Applier) {
    tracing::warn!(applied_lsn = %applier.committed(), "stop requested while the target was busy: the open batch is rolled back, the stream resumes from the checkpoint");
}

/// Gives the transport's worker a moment to tell the slot the last
/// committed position (it sends at most once per status interval), so a
/// clean stop leaves the slot where the target is.
async fn wait_acknowledged(client: &ReplicationClient) {
    let give_up = Instant::now() + Duration::from_secs(3);
    while client.feedback_pending_since().is_some() && Instant::now() < give_up {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Applies one event; returns a position now durable on the target.
async fn handle(
    event: ReplicationEvent,
    applier: &mut Applier,
    board: &StatusBoard,
) -> Result<Option<Lsn>, StreamError> {
    match event {
        ReplicationEvent::Begin { final_lsn, xid, .. } => {
            applier.begin(Lsn(final_lsn.0), xid).await?;
            Ok(None)
        }
        ReplicationEvent::XLogData { data, .. } => {
            let msg = decode(&data, DecodeContext::default())
                .map_err(|e| StreamError::Definite(format!("undecodable pgoutput message: {e}")))?;
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
        ReplicationEvent::StoppedAt { .. } => Err(StreamError::Transient(
            "stream stopped at a stop LSN".into(),
        )),
    }
}
