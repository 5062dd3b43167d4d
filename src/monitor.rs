//! The source-side sampler: on its own SQL session, every few seconds, reads
//! the source's WAL position and the slot's health into the [`StatusBoard`]
//! and the slot gauges.
//!
//! The stream knows what it applied but not how far the source has moved;
//! this fills in the other half of lag. When the source is idle,
//! `pg_current_wal_lsn()` moves past the applied LSN only by WAL that is not
//! published (checkpoints, other databases); the stream acknowledges idle
//! keepalives, so lag returns to about 0.
//!
//! Shutdown is a `tokio::sync::watch::Receiver<bool>`: `true` (or the sender
//! being dropped) means stop. It avoids a dependency on `tokio-util`, and one
//! sender can stop the monitor, the HTTP edge and the stream together.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::watch;
use tokio_postgres::Client;
use walrelay_proto::Lsn;

use crate::metrics;
use crate::pg::connect::{connect, error_text, ConnectError};
use crate::pg::conninfo::ConnInfo;
use crate::status::StatusBoard;

/// How often the source is sampled unless told otherwise.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(2);

/// A sample that takes longer than this counts as failed, so a hung source
/// shows up as an error instead of frozen gauges.
const QUERY_TIMEOUT: Duration = Duration::from_secs(30);

/// Reconnect delays: 1 s, doubling, at most this.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// The source's position and, in the same statement, the slot's state. On a
/// standby (logical decoding on standby, PostgreSQL 16+) the replayed
/// position stands in for `pg_current_wal_lsn()`, which errors there. The
/// LEFT JOIN returns one row even when the slot does not exist.
const SAMPLE_SQL: &str = "\
WITH pos AS (
    SELECT CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn()
                ELSE pg_current_wal_lsn() END AS lsn
)
SELECT pos.lsn,
       s.slot_name IS NOT NULL,
       coalesce(s.active, false),
       s.wal_status,
       (pos.lsn - s.restart_lsn)::int8,
       s.safe_wal_size
FROM pos LEFT JOIN pg_replication_slots AS s ON s.slot_name = $1";

/// The state of the replication slot, from `pg_replication_slots`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SlotHealth {
    /// A replication session is using the slot right now.
    pub active: bool,
    /// `reserved`, `extended`, `unreserved` or `lost`; `None` before the
    /// slot has reserved WAL.
    pub wal_status: Option<String>,
    /// WAL the slot holds back (`None` when it has no `restart_lsn`).
    pub retained_bytes: Option<u64>,
    /// WAL that can still be written before the slot is lost; `None` when
    /// `max_slot_wal_keep_size` is unlimited. Negative once it is over.
    pub safe_wal_size: Option<i64>,
}

/// One reading of the source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sample {
    /// `pg_current_wal_lsn()` (or the replayed position on a standby).
    pub source_lsn: Lsn,
    /// `None` when the slot does not exist.
    pub slot: Option<SlotHealth>,
}

/// Why a sample could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum MonitorError {
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error("reading the source's WAL position and slot: {}", error_text(.0))]
    Query(#[source] tokio_postgres::Error),
    #[error("the source reported no WAL position")]
    NoPosition,
    #[error("the source reported an unreadable LSN: {}", error_text(.0))]
    Lsn(#[source] tokio_postgres::Error),
    #[error("the source did not answer within {}s", QUERY_TIMEOUT.as_secs())]
    Timeout,
}

/// Reads the source's WAL position and the health of `slot`.
pub async fn sample(client: &Client, slot: &str) -> Result<Sample, MonitorError> {
    let row = client
        .query_one(SAMPLE_SQL, &[&slot])
        .await
        .map_err(MonitorError::Query)?;
    let lsn: Option<Lsn> = row.try_get(0).map_err(MonitorError::Lsn)?;
    let source_lsn = lsn.ok_or(MonitorError::NoPosition)?;
    let exists: bool = row.get(1);
    let slot = exists.then(|| SlotHealth {
        active: row.get(2),
        wal_status: row.get(3),
        retained_bytes: row.get::<_, Option<i64>>(4).map(|b| b.max(0) as u64),
        safe_wal_size: row.get(5),
    });
    Ok(Sample { source_lsn, slot })
}

/// The health of `slot`, for `walrelay status`; `None` when it does not exist.
pub async fn slot_health(client: &Client, slot: &str) -> Result<Option<SlotHealth>, MonitorError> {
    Ok(sample(client, slot).await?.slot)
}

/// Samples the source every `every` until `shutdown` turns true (or its
/// sender is dropped). Never returns an error and never panics: a failed
/// sample drops the session, counts `errors_total{stage="monitor"}` and
/// reconnects with backoff. Logs only transitions.
pub async fn run(
    source: ConnInfo,
    slot: String,
    board: Arc<StatusBoard>,
    every: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut client: Option<Client> = None;
    let mut seen = Seen::default();
    let mut backoff = Backoff::default();
    while !*shutdown.borrow() {
        let attempt = tokio::time::timeout(QUERY_TIMEOUT, tick(&source, &slot, &mut client));
        let outcome = tokio::select! {
            outcome = attempt => outcome.unwrap_or(Err(MonitorError::Timeout)),
            _ = stopped(&mut shutdown) => break,
        };
        let delay = match outcome {
            Ok(sample) => {
                record(&board, &sample);
                seen.sampled(&slot, &sample);
                backoff.reset();
                every
            }
            Err(err) => {
                client = None;
                ::metrics::counter!(metrics::ERRORS, "stage" => "monitor").increment(1);
                seen.failed(&err);
                backoff.next_delay()
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = stopped(&mut shutdown) => break,
        }
    }
    tracing::debug!("source monitor stopped");
}

/// Resolves once shutdown is requested or can no longer be signalled.
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

/// One sample, opening the session first when there is none.
async fn tick(
    source: &ConnInfo,
    slot: &str,
    client: &mut Option<Client>,
) -> Result<Sample, MonitorError> {
    let session = match client {
        Some(session) => session,
        None => client.insert(connect(source, "walrelay-monitor").await?),
    };
    sample(session, slot).await
}

/// Stores a sample in the board and the gauges.
fn record(board: &StatusBoard, sample: &Sample) {
    board
        .source_lsn
        .fetch_max(sample.source_lsn.0, Ordering::Relaxed);
    let retained = sample.slot.as_ref().and_then(|s| s.retained_bytes);
    board
        .slot_retained_bytes
        .store(retained.unwrap_or(0), Ordering::Relaxed);
    metrics::update_from_board(board);
    match &sample.slot {
        Some(slot) => {
            metrics::set_slot_wal_status(slot.wal_status.as_deref());
            metrics::set_slot_safe_wal_size(slot.safe_wal_size);
        }
        None => {
            metrics::set_slot_wal_status(Some("missing"));
            metrics::set_slot_safe_wal_size(None);
        }
    }
}

/// What was last logged, so only changes are logged again.
#[derive(Debug, Default)]
struct Seen {
    /// `Some(true)` after a good sample, `Some(false)` after a failure.
    reachable: Option<bool>,
    /// The slot's last `wal_status`, `Some(None)` for a missing slot.
    slot_status: Option<Option<String>>,
}

impl Seen {
    fn sampled(&mut self, slot: &str, sample: &Sample) {
        if self.reachable != Some(true) {
            tracing::info!(source_lsn = %sample.source_lsn, "source monitor reading the source");
            self.reachable = Some(true);
        }
        let status = sample
            .slot
            .as_ref()
            .map(|s| s.wal_status.clone().unwrap_or_default());
        if self.slot_status.as_ref() == Some(&status) {
            return;
        }
        match &sample.slot {
            // Before the snapshot creates it, a missing slot is expected.
            None if self.slot_status.is_none() => {
                tracing::info!(slot, "replication slot not created yet")
            }
            None => tracing::warn!(slot, "replication slot no longer exists on the source"),
            Some(health) => log_slot_status(slot, health),
        }
        self.slot_status = Some(status);
    }

    fn failed(&mut self, err: &MonitorError) {
        if self.reachable == Some(false) {
            tracing::debug!(error = %err, "source monitor still failing");
            return;
        }
        let hint = match err {
            MonitorError::Connect(connect) => connect.hint(),
            _ => "retrying with backoff",
        };
        tracing::warn!(error = %err, hint, "source monitor cannot read the source");
        self.reachable = Some(false);
    }
}

/// How worrying a `wal_status` is, with what it means for the operator.
fn slot_status_message(status: &str) -> (tracing::Level, &'static str) {
    match status {
        "reserved" => (tracing::Level::INFO, "slot wal within max_wal_size"),
        "extended" => (
            tracing::Level::WARN,
            "slot retains more wal than max_wal_size; walrelay is behind",
        ),
        "unreserved" => (
            tracing::Level::ERROR,
            "slot will lose wal at the next checkpoint unless walrelay catches up",
        ),
        "lost" => (
            tracing::Level::ERROR,
            "slot lost wal it needed; the target must be re-copied (walrelay cleanup, then run)",
        ),
        _ => (tracing::Level::INFO, "slot has not reserved wal yet"),
    }
}

fn log_slot_status(slot: &str, health: &SlotHealth) {
    let status = health.wal_status.as_deref().unwrap_or("none");
    let retained = health.retained_bytes.unwrap_or(0);
    let (level, message) = slot_status_message(status);
    // tracing needs the level at compile time, hence one call per level.
    match level {
        tracing::Level::ERROR => {
            tracing::error!(
                slot,
                wal_status = status,
                retained_bytes = retained,
                "{message}"
            )
        }
        tracing::Level::WARN => {
            tracing::warn!(
                slot,
                wal_status = status,
                retained_bytes = retained,
                "{message}"
            )
        }
        _ => tracing::info!(
            slot,
            wal_status = status,
            retained_bytes = retained,
            "{message}"
        ),
    }
}

/// Reconnect delays: 1 s, 2 s, 4 s … capped at [`MAX_BACKOFF`].
#[derive(Debug, Default)]
struct Backoff {
    failures: u32,
}

impl Backoff {
    fn next_delay(&mut self) -> Duration {
        let delay = Duration::from_secs(1u64 << self.failures.min(5));
        self.failures = self.failures.saturating_add(1);
        delay.min(MAX_BACKOFF)
    }

    fn reset(&mut self) {
        self.failures = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_then_caps_and_resets() {
        let mut backoff = Backoff::default();
        let delays: Vec<u64> = (0..8).map(|_| backoff.next_delay().as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 30, 30, 30]);
        backoff.reset();
        assert_eq!(backoff.next_delay(), Duration::from_secs(1));
    }

    #[test]
    fn losing_wal_is_an_error() {
        assert_eq!(slot_status_message("lost").0, tracing::Level::ERROR);
        assert_eq!(slot_status_message("unreserved").0, tracing::Level::ERROR);
        assert_eq!(slot_status_message("extended").0, tracing::Level::WARN);
        assert_eq!(slot_status_message("reserved").0, tracing::Level::INFO);
    }

    #[test]
    fn a_sample_reaches_the_board() {
        let board = StatusBoard::default();
        let sample = Sample {
            source_lsn: "1/2000".parse().expect("lsn"),
            slot: Some(SlotHealth {
                active: true,
                wal_status: Some("reserved".into()),
                retained_bytes: Some(8192),
                safe_wal_size: None,
            }),
        };
        record(&board, &sample);
        assert_eq!(board.source_lsn.load(Ordering::Relaxed), 0x1_0000_2000);
        assert_eq!(board.slot_retained_bytes.load(Ordering::Relaxed), 8192);
    }

    #[tokio::test]
    async fn run_returns_when_shutdown_is_already_requested() {
        let (tx, rx) = watch::channel(true);
        let info = ConnInfo::parse("host=127.0.0.1 port=1 user=x dbname=x").expect("conninfo");
        let board = Arc::new(StatusBoard::default());
        run(info, "walrelay".into(), board, DEFAULT_INTERVAL, rx).await;
        drop(tx);
    }
}
