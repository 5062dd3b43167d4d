//! `walrelay status`: where the migration stands, read from both ends.

use serde::Serialize;
use tokio_postgres::Client;

use crate::config::Config;
use crate::monitor::{self, SlotHealth};
use crate::pg::connect;
use crate::state::progress::Applied;
use crate::state::{self, StateError};

/// One table's copy state.
#[derive(Debug, Serialize)]
pub(crate) struct TableState {
    pub table: String,
    pub state: String,
    pub rows_copied: i64,
    pub chunks_done: i32,
    pub chunks_total: i32,
    pub snapshot_lsn: Option<String>,
}

/// The whole status.
#[derive(Debug, Serialize)]
pub(crate) struct Status {
    pub slot: String,
    pub source_lsn: String,
    pub applied_lsn: Option<String>,
    pub lag_bytes: Option<u64>,
    pub lag_seconds: Option<f64>,
    pub snapshot_phase: Option<String>,
    pub slot_health: Option<SlotHealth>,
    pub tables: Vec<TableState>,
}

/// Why the status could not be read.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StatusError {
    #[error(transparent)]
    Connect(#[from] connect::ConnectError),
    #[error("reading {0}")]
    Monitor(#[from] monitor::MonitorError),
    #[error("reading the target's walrelay schema: {0}")]
    State(#[from] StateError),
}

/// Reads the status of `config.slot`.
pub(crate) async fn read(config: &Config) -> Result<Status, StatusError> {
    let source = connect::connect(&config.source, "walrelay-status").await?;
    let target = connect::connect(&config.target, "walrelay-status").await?;
    // The applied position is read before the source's, so that the source's
    // is never older than it: read the other way round, a batch committed
    // in between showed the target ahead of the source.
    let (applied, phase, tables) = if state::exists(&target).await? {
        target_state(&target, &config.slot).await?
    } else {
        (None, None, Vec::new())
    };
    let sample = monitor::sample(&source, &config.slot).await?;
    let lag_bytes = applied.map(|a| sample.source_lsn.bytes_since(a.lsn));
    let lag_seconds = match (lag_bytes, applied.and_then(|a| a.since_commit)) {
        (Some(0), _) => Some(0.0),
        (_, age) => age,
    };
    Ok(Status {
        slot: config.slot.clone(),
        source_lsn: sample.source_lsn.to_string(),
        applied_lsn: applied.map(|a| a.lsn.to_string()),
        lag_bytes,
        lag_seconds,
        snapshot_phase: phase,
        slot_health: sample.slot,
        tables,
    })
}

type TargetState = (Option<Applied>, Option<String>, Vec<TableState>);

async fn target_state(target: &Client, slot: &str) -> Result<TargetState, StateError> {
    let applied = state::progress::applied(target, slot).await?;
    let phase = state::snapshot::read(target, slot)
        .await?
        .map(|row| row.phase.as_str().to_string());
    let tables = state::copy::tables(target, slot)
        .await?
        .into_iter()
        .map(|row| TableState {
            table: row.table,
            state: row.state,
            rows_copied: row.rows_copied,
            chunks_done: row.chunks_done,
            chunks_total: row.chunks_total,
            snapshot_lsn: row.snapshot_lsn.map(|l| l.to_string()),
        })
        .collect();
    Ok((applied, phase, tables))
}

impl Status {
    /// The human form.
    pub(crate) fn render(&self) -> String {
        let or_dash = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
        let mut out = format!(
            "slot {}: snapshot {}, source at {}, applied {}\n",
            self.slot,
            or_dash(&self.snapshot_phase),
            self.source_lsn,
            or_dash(&self.applied_lsn)
        );
        if let Some(bytes) = self.lag_bytes {
            out.push_str(&format!(
                "lag: {bytes} bytes, {:.1} s\n",
                self.lag_seconds.unwrap_or(0.0)
            ));
        }
        match &self.slot_health {
            Some(h) => out.push_str(&format!(
                "slot: {}, wal_status {}, retains {} bytes, safe_wal_size {}\n",
                if h.active { "active" } else { "inactive" },
                h.wal_status.as_deref().unwrap_or("-"),
                h.retained_bytes.unwrap_or(0),
                h.safe_wal_size
                    .map_or("unlimited".to_string(), |s| s.to_string())
            )),
            None => out.push_str("slot: missing on the source\n"),
        }
        for t in &self.tables {
            out.push_str(&format!(
                "  {:<40} {:<8} {:>12} rows  {}/{} chunks\n",
                t.table, t.state, t.rows_copied, t.chunks_done, t.chunks_total
            ));
        }
        out
    }
}
