//! The verification report: a human table and JSON.
//!
//! Rows are named by key only. Keys are identifiers (what the operator needs
//! to look a row up), never the other column values; counts and LSNs
//! complete the picture.

use std::fmt::Write;

use serde::Serialize;

use super::pinpoint::DriftKind;
use super::plan::Key;
use super::schema::SchemaDiff;

/// Keys listed per table and kind in the report (the counts are complete).
pub const MAX_KEYS_LISTED: usize = 100;

/// One drifted key.
#[derive(Debug, Clone, Serialize)]
pub struct DriftKey {
    pub key: Key,
    pub kind: DriftKind,
}

/// How a table was compared.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "snake_case", tag = "by")]
pub enum Basis {
    /// Chunks of key ranges.
    Key { columns: Vec<String> },
    /// One aggregate of the whole table (no primary key or identity index):
    /// drift is found, but rows cannot be pinpointed.
    WholeTable,
    /// Not compared.
    Skipped { reason: String },
}

/// The result for one table.
#[derive(Debug, Clone, Serialize)]
pub struct TableReport {
    pub table: String,
    pub basis: Basis,
    pub chunks: u64,
    pub chunks_rechecked: u64,
    pub source_rows: u64,
    /// Rows that differ (confirmed drift; for a whole-table comparison, the
    /// difference in row counts, at least 1).
    pub drift_rows: u64,
    pub missing_on_target: u64,
    pub extra_on_target: u64,
    pub different: u64,
    /// Up to [`MAX_KEYS_LISTED`] drifted keys.
    pub drift: Vec<DriftKey>,
    /// Keys that kept changing and could not be settled (not counted as drift).
    pub unsettled: u64,
    pub repaired: u64,
    pub seconds: f64,
    /// The longest first comparison of one chunk (source and target
    /// concurrently): what bounds the life of any source snapshot.
    pub max_chunk_seconds: f64,
}

impl TableReport {
    pub fn new(table: String, basis: Basis) -> Self {
        TableReport {
            table,
            basis,
            chunks: 0,
            chunks_rechecked: 0,
            source_rows: 0,
            drift_rows: 0,
            missing_on_target: 0,
            extra_on_target: 0,
            different: 0,
            drift: Vec::new(),
            unsettled: 0,
            repaired: 0,
            seconds: 0.0,
            max_chunk_seconds: 0.0,
        }
    }

    /// Adds confirmed drifted keys.
    pub fn add_drift(&mut self, keys: Vec<(Key, DriftKind)>) {
        for (key, kind) in keys {
            self.drift_rows += 1;
            match kind {
                DriftKind::MissingOnTarget => self.missing_on_target += 1,
                DriftKind::ExtraOnTarget => self.extra_on_target += 1,
                DriftKind::Different => self.different += 1,
            }
            if self.drift.len() < MAX_KEYS_LISTED {
                self.drift.push(DriftKey { key, kind });
            }
        }
    }
}

/// One verification pass.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// No data drift, no schema difference, and every difference seen in
    /// flight was settled (unsettled keys make a pass "not proven", exit 1,
    /// without calling them drift).
    pub clean: bool,
    pub tables: Vec<TableReport>,
    pub schema: Vec<SchemaDiff>,
    pub chunks: u64,
    pub rows: u64,
    pub drift_rows: u64,
    pub unsettled: u64,
    pub repaired: u64,
    pub seconds: f64,
    /// Whether a running stream was applying to the target during the pass.
    pub streaming: bool,
}

impl Report {
    /// Totals and the verdict from the tables and the schema differences.
    pub fn finish(
        tables: Vec<TableReport>,
        schema: Vec<SchemaDiff>,
        seconds: f64,
        streaming: bool,
    ) -> Self {
        let sum = |f: fn(&TableReport) -> u64| tables.iter().map(f).sum::<u64>();
        let (chunks, rows, drift_rows) = (
            sum(|t| t.chunks),
            sum(|t| t.source_rows),
            sum(|t| t.drift_rows),
        );
        let (unsettled, repaired) = (sum(|t| t.unsettled), sum(|t| t.repaired));
        // A table not compared cannot be called clean.
        let skipped = tables
            .iter()
            .filter(|t| matches!(t.basis, Basis::Skipped { .. }))
            .count();
        Report {
            clean: drift_rows == 0 && schema.is_empty() && unsettled == 0 && skipped == 0,
            tables,
            schema,
            chunks,
            rows,
            drift_rows,
            unsettled,
            repaired,
            seconds,
            streaming,
        }
    }

    /// The human report.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{:<40} {:>8} {:>12} {:>8} {:>8} {:>8} {:>8} {:>9}  basis",
            "table", "chunks", "rows", "drift", "missing", "extra", "differ", "max chunk"
        );
        for t in &self.tables {
            let basis = match &t.basis {
                Basis::Key { columns } => format!("key ({})", columns.join(", ")),
                Basis::WholeTable => "whole table (no key: rows not pinpointed)".into(),
                Basis::Skipped { reason } => format!("skipped: {reason}"),
            };
            let _ = writeln!(
                out,
                "{:<40} {:>8} {:>12} {:>8} {:>8} {:>8} {:>8} {:>8.3}s  {basis}",
                t.table,
                t.chunks,
                t.source_rows,
                t.drift_rows,
                t.missing_on_target,
                t.extra_on_target,
                t.different,
                t.max_chunk_seconds
            );
        }
        self.render_differences(&mut out);
        let _ = writeln!(
            out,
            "\n{} chunks, {} rows in {:.2}s ({:.0} rows/s); drift rows: {}; unsettled keys: {}; repaired: {}{}",
            self.chunks,
            self.rows,
            self.seconds,
            self.rows as f64 / self.seconds.max(1e-9),
            self.drift_rows,
            self.unsettled,
            self.repaired,
            if self.streaming { " (stream running)" } else { "" }
        );
        let verdict = if self.clean {
            "clean"
        } else if self.drift_rows > 0 || !self.schema.is_empty() {
            "DRIFT"
        } else {
            "NOT PROVEN: tables skipped, or keys kept changing while the target did not catch up in time"
        };
        let _ = writeln!(out, "verdict: {verdict}");
        out
    }

    /// Drifted keys per table, then schema differences.
    fn render_differences(&self, out: &mut String) {
        for t in self.tables.iter().filter(|t| !t.drift.is_empty()) {
            let _ = writeln!(out, "\ndrift in {} (keys only):", t.table);
            for d in &t.drift {
                let _ = writeln!(out, "  {:<18} ({})", d.kind.as_str(), d.key.join(", "));
            }
            if t.drift_rows as usize > t.drift.len() {
                let _ = writeln!(
                    out,
                    "  … and {} more",
                    t.drift_rows as usize - t.drift.len()
                );
            }
        }
        if !self.schema.is_empty() {
            let _ = writeln!(out, "\nschema differences:");
            for d in &self.schema {
                let _ = writeln!(out, "  {} {} {}: {}", d.table, d.object, d.name, d.problem);
            }
        }
    }
}
