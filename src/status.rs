//! The live state of a running walrelay, shared by the stream (which writes
//! it) and the HTTP edge (which reads it for `/status` and `/healthz`).

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;

use serde::Serialize;
use walrelay_proto::Lsn;

/// What walrelay is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    Starting,
    Snapshot,
    Streaming,
    Reconnecting,
    Stopped,
    Failed,
}

/// Shared, lock-light state; one per process.
#[derive(Debug)]
pub struct StatusBoard {
    stage: Mutex<Stage>,
    last_error: Mutex<Option<String>>,
    /// The source's current WAL position, as last read.
    pub source_lsn: AtomicU64,
    /// The last LSN committed to `walrelay.progress` on the target.
    pub applied_lsn: AtomicU64,
    /// Unix micros of the source commit (or heartbeat) the target has caught up to.
    pub applied_time_unix_micros: AtomicI64,
    /// WAL the slot holds back (`pg_current_wal_lsn() - restart_lsn`).
    pub slot_retained_bytes: AtomicU64,
    /// Whether the stream is connected and applying.
    pub connected: AtomicBool,
    /// Source transactions applied since start.
    pub transactions_applied: AtomicU64,
    /// Source changes (rows) applied since start.
    pub rows_applied: AtomicU64,
    spool: Mutex<Option<SpoolState>>,
}

/// The change-stream spool, as its capture last saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SpoolState {
    /// The slot's spool directory.
    pub dir: String,
    pub bytes: u64,
    pub segments: usize,
    /// `--spool-max-bytes`.
    pub max_bytes: u64,
    /// Where the durable spool ends (acknowledged to the slot).
    pub spooled_lsn: Option<String>,
    /// At `--spool-max-bytes`: the slot is no longer read or acknowledged,
    /// the source holds WAL again until the apply drains the spool.
    pub full: bool,
}

impl Default for StatusBoard {
    fn default() -> Self {
        StatusBoard {
            stage: Mutex::new(Stage::Starting),
            last_error: Mutex::new(None),
            source_lsn: AtomicU64::new(0),
            applied_lsn: AtomicU64::new(0),
            applied_time_unix_micros: AtomicI64::new(0),
            slot_retained_bytes: AtomicU64::new(0),
            connected: AtomicBool::new(false),
            transactions_applied: AtomicU64::new(0),
            rows_applied: AtomicU64::new(0),
            spool: Mutex::new(None),
        }
    }
}

/// A point-in-time copy of the board, as `/status` serves it.
#[derive(Debug, Clone, Serialize)]
pub struct StatusSnapshot {
    pub stage: Stage,
    pub connected: bool,
    pub source_lsn: String,
    pub applied_lsn: String,
    pub lag_bytes: u64,
    pub lag_seconds: f64,
    pub slot_retained_wal_bytes: u64,
    pub transactions_applied: u64,
    pub rows_applied: u64,
    pub last_error: Option<String>,
    /// `None` without a spool.
    pub spool: Option<SpoolState>,
}

impl StatusBoard {
    /// Sets the stage.
    pub fn set_stage(&self, stage: Stage) {
        *self.stage.lock().unwrap_or_else(|e| e.into_inner()) = stage;
    }

    /// The current stage.
    pub fn stage(&self) -> Stage {
        *self.stage.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records the spool's state (`None`: no spool).
    pub fn set_spool(&self, spool: Option<SpoolState>) {
        *self.spool.lock().unwrap_or_else(|e| e.into_inner()) = spool;
    }

    /// Records the latest error (already free of row contents).
    pub fn set_error(&self, error: Option<String>) {
        *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = error;
    }

    /// Bytes of source WAL not yet applied (0 when caught up).
    pub fn lag_bytes(&self) -> u64 {
        let source = self.source_lsn.load(Ordering::Relaxed);
        source.saturating_sub(self.applied_lsn.load(Ordering::Relaxed))
    }

    /// Seconds between now and the source time the target has caught up to;
    /// 0 when nothing is pending.
    pub fn lag_seconds(&self) -> f64 {
        if self.lag_bytes() == 0 {
            return 0.0;
        }
        let applied = self.applied_time_unix_micros.load(Ordering::Relaxed);
        if applied == 0 {
            return 0.0;
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_micros() as i64)
            .unwrap_or(applied);
        ((now - applied).max(0) as f64) / 1e6
    }

    /// A consistent-enough copy for reporting.
    pub fn snapshot(&self) -> StatusSnapshot {
        StatusSnapshot {
            stage: self.stage(),
            connected: self.connected.load(Ordering::Relaxed),
            source_lsn: Lsn(self.source_lsn.load(Ordering::Relaxed)).to_string(),
            applied_lsn: Lsn(self.applied_lsn.load(Ordering::Relaxed)).to_string(),
            lag_bytes: self.lag_bytes(),
            lag_seconds: self.lag_seconds(),
            slot_retained_wal_bytes: self.slot_retained_bytes.load(Ordering::Relaxed),
            transactions_applied: self.transactions_applied.load(Ordering::Relaxed),
            rows_applied: self.rows_applied.load(Ordering::Relaxed),
            last_error: self
                .last_error
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
            spool: self.spool.lock().unwrap_or_else(|e| e.into_inner()).clone(),
        }
    }
}
