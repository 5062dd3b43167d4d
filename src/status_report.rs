//! `walrelay status`: where the migration stands, read from both ends.

use serde::Serialize;
use tokio_postgres::Client;
use walrelay_proto::Lsn;

use crate::config::Config;
use crate::monitor::{self, SlotHealth};
use crate::pg::connect::{self, error_text};

/// One table's copy state.
#[derive(Debug, Serialize)]
pub struct TableState {
    pub table: String,
    pub state: String,
    pub rows_copied: i64,
    pub chunks_done: i32,
    pub chunks_total: i32,
    pub snapshot_lsn: Option<String>,
}

/// The whole status.
#[derive(Debug, Serialize)]
pub struct Status {
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
pub enum StatusError {
    #[error(transparent)]
    Connect(#[from] connect::ConnectError),
    #[error("reading {0}")]
    Monitor(#[from] monitor::MonitorError),
    #[error("reading the target's walrelay schema: {0}")]
    Sql(String),
}

/// Reads the status of `config.slot`.
pub async fn read(config: &Config) -> Result<Status, StatusError> {
    let source = connect::connect(&config.source, "walrelay-status").await?;
    let target = connect::connect(&config.target, "walrelay-status").await?;
    let sample = monitor::sample(&source, &config.slot).await?;
    let sql = |e: tokio_postgres::Error| StatusError::Sql(error_text(&e));
    let has_schema: bool = target
        .query_one("SELECT to_regclass('walrelay.progress') IS NOT NULL", &[])
        .await
        .map_err(sql)?
        .get(0);
    let (progress, phase, tables) = if has_schema {
        target_state(&target, &config.slot).await.map_err(sql)?
    } else {
        (None, None, Vec::new())
    };
    let applied = progress
        .as_ref()
        .and_then(|(lsn, _)| lsn.parse::<Lsn>().ok());
    let lag_bytes = applied.map(|a| sample.source_lsn.0.saturating_sub(a.0));
    let lag_seconds = match (lag_bytes, progress.as_ref().and_then(|(_, age)| *age)) {
        (Some(0), _) => Some(0.0),
        (_, age) => age,
    };
    Ok(Status {
        slot: config.slot.clone(),
        source_lsn: sample.source_lsn.to_string(),
        applied_lsn: applied.map(|a| a.to_string()),
        lag_bytes,
        lag_seconds,
        snapshot_phase: phase,
        slot_health: sample.slot,
        tables,
    })
}

type TargetState = (
    Option<(String, Option<f64>)>,
    Option<String>,
    Vec<TableState>,
);

async fn target_state(target: &Client, slot: &str) -> Result<TargetState, tokio_postgres::Error> {
    let progress = target
        .query_opt(
            "SELECT applied_lsn::text, extract(epoch FROM now() - commit_time)::float8 FROM walrelay.progress WHERE slot_name = $1",
            &[&slot],
        )
        .await?
        .map(|row| (row.get(0), row.get(1)));
    let phase = target
        .query_opt(
            "SELECT phase FROM walrelay.snapshot WHERE slot_name = $1",
            &[&slot],
        )
        .await?
        .map(|row| row.get(0));
    let tables = target
        .query(
            "SELECT schema_name || '.' || table_name, state, rows_copied, chunks_done, chunks_total, snapshot_lsn::text \
             FROM walrelay.tables WHERE slot_name = $1 ORDER BY 1",
            &[&slot],
        )
        .await?
        .iter()
        .map(|row| TableState {
            table: row.get(0),
            state: row.get(1),
            rows_copied: row.get(2),
            chunks_done: row.get(3),
            chunks_total: row.get(4),
            snapshot_lsn: row.get(5),
        })
        .collect();
    Ok((progress, phase, tables))
}

impl Status {
    /// The human form.
    pub fn render(&self) -> String {
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
