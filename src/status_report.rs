//! `walrelay status`: where the migration stands, read from both ends.

use std::path::Path;

use serde::Serialize;
use tokio_postgres::Client;
use walrelay_proto::Lsn;

use crate::config::Config;
use crate::monitor::{self, SlotHealth};
use crate::pg::connect;
use crate::spool;
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
    /// `None`: no spool recorded or given.
    pub spool: Option<SpoolReport>,
}

/// The slot's change-stream spool, read from its files.
#[derive(Debug, Serialize)]
pub(crate) struct SpoolReport {
    /// The slot's spool directory.
    pub dir: String,
    /// The host that recorded it (`None`: given by --spool-dir, not recorded).
    pub recorded_by: Option<String>,
    /// Whether this machine can read it.
    pub reachable: bool,
    pub bytes: Option<u64>,
    pub segments: Option<usize>,
    pub max_bytes: Option<u64>,
    /// Where the spool ends: what the slot was acknowledged up to.
    pub spooled_lsn: Option<String>,
    /// Spooled but not yet applied on the target.
    pub unapplied_bytes: Option<u64>,
    /// At `--spool-max-bytes`: the capture no longer reads or acknowledges
    /// the slot, and the source holds WAL again.
    pub full: Option<bool>,
    /// What the operator should know (not reachable, unreadable).
    pub note: Option<String>,
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

/// Reads the status of `config.slot`; `spool_dir` (`--spool-dir`) stands in
/// for the directory the target's state records.
pub(crate) async fn read(config: &Config, spool_dir: Option<&Path>) -> Result<Status, StatusError> {
    let source = connect::connect(&config.source, "walrelay-status").await?;
    let target = connect::connect(&config.target, "walrelay-status").await?;
    // The applied position is read before the source's, so that the source's
    // is never older than it: read the other way round, a batch committed
    // in between showed the target ahead of the source.
    let (applied, phase, consistent, tables) = if state::exists(&target).await? {
        target_state(&target, &config.slot).await?
    } else {
        (None, None, None, Vec::new())
    };
    let recorded = state::spool::read(&target, &config.slot).await?;
    // Before its first checkpoint the target holds the stream up to the
    // snapshot's consistent point.
    let target_at = applied.map(|a| a.lsn).or(consistent);
    let spool = spool_report(&config.slot, spool_dir, recorded, target_at);
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
        spool,
    })
}

/// What the spool holds, from its files (never changed here: a capture may
/// be appending).
fn spool_report(
    slot: &str,
    flag: Option<&Path>,
    recorded: Option<state::spool::Recorded>,
    applied: Option<Lsn>,
) -> Option<SpoolReport> {
    let (dir, recorded_by) = match (flag, &recorded) {
        (Some(root), _) => (root.join(slot).display().to_string(), None),
        (None, Some(r)) => (r.dir.clone(), Some(r.host.clone())),
        (None, None) => return None,
    };
    let mut report = SpoolReport {
        dir,
        recorded_by,
        reachable: false,
        bytes: None,
        segments: None,
        max_bytes: recorded.as_ref().map(|r| r.max_bytes),
        spooled_lsn: None,
        unapplied_bytes: None,
        full: None,
        note: None,
    };
    let path = Path::new(&report.dir);
    if !path.is_dir() {
        let here = spool::host_name();
        report.note = Some(match &report.recorded_by {
            Some(host) => format!("not reachable from this machine ({here}); it was recorded by host {host}: run status there, or mount the spool here and pass its parent directory as --spool-dir"),
            None => "no such directory on this machine".into(),
        });
        return Some(report);
    }
    report.reachable = true;
    match spool::files::inspect(path) {
        Ok(found) => {
            report.bytes = Some(found.bytes);
            report.segments = Some(found.segments);
            report.spooled_lsn = found.end.map(|l| l.to_string());
            report.unapplied_bytes = match (found.end, applied) {
                (Some(end), Some(applied)) => Some(end.bytes_since(applied)),
                (Some(_), None) => None,
                (None, _) => Some(0),
            };
            report.full = report.max_bytes.map(|max| found.bytes >= max);
        }
        Err(err) => report.note = Some(format!("unreadable: {err}")),
    }
    Some(report)
}

/// The checkpoint, the snapshot's phase and consistent point, the tables.
type TargetState = (
    Option<Applied>,
    Option<String>,
    Option<Lsn>,
    Vec<TableState>,
);

async fn target_state(target: &Client, slot: &str) -> Result<TargetState, StateError> {
    let applied = state::progress::applied(target, slot).await?;
    let snapshot = state::snapshot::read(target, slot).await?;
    let phase = snapshot.as_ref().map(|row| row.phase.as_str().to_string());
    let consistent = snapshot.and_then(|row| row.consistent_lsn);
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
    Ok((applied, phase, consistent, tables))
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
        if let Some(spool) = &self.spool {
            out.push_str(&spool.render());
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

impl SpoolReport {
    fn render(&self) -> String {
        let mut out = format!("spool: {}", self.dir);
        if let Some(host) = &self.recorded_by {
            out.push_str(&format!(" (recorded by host {host})"));
        }
        if let (Some(bytes), Some(segments)) = (self.bytes, self.segments) {
            out.push_str(&format!(", {bytes} bytes in {segments} segments"));
            if let Some(max) = self.max_bytes {
                out.push_str(&format!(" (max {max})"));
            }
            out.push_str(&format!(
                ", spooled up to {}, {} bytes not yet applied",
                self.spooled_lsn.as_deref().unwrap_or("-"),
                self.unapplied_bytes.unwrap_or(0)
            ));
        }
        if self.full == Some(true) {
            out.push_str(": FULL (--spool-max-bytes): the slot is no longer acknowledged, the source holds WAL again until the apply drains the spool");
        }
        if let Some(note) = &self.note {
            out.push_str(&format!(": {note}"));
        }
        out.push('\n');
        out
    }
}
