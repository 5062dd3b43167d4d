//! The verification report: a human table and JSON.
//!
//! Rows are named by key only. Keys are identifiers (what the operator needs
//! to look a row up), never the other column values; counts and LSNs
//! complete the picture.

use std::fmt::Write;

use serde::Serialize;

use super::fingerprint::{self, Differences};
use super::pinpoint::DriftKind;
use super::plan::{Key, Range};
use super::schema::SchemaDiff;

/// Keys listed per table and kind in the report (the counts are complete).
pub const MAX_KEYS_LISTED: usize = 100;

/// One drifted key.
#[derive(Debug, Clone, Serialize)]
pub struct DriftKey {
    pub key: Key,
    pub kind: DriftKind,
}

/// Why a differing chunk is listed by its key range instead of by keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ChunkState {
    /// It still differs, exactly compared, yet no key differs (e.g. a key
    /// held twice on the target, which per-key hashes cannot show).
    Drift,
    /// It kept changing while the target did not catch up in time.
    Unsettled,
    /// No stream is running and the source has committed changes to the
    /// table that the target has not applied: not drift, not proven.
    Behind,
}

impl ChunkState {
    pub fn as_str(self) -> &'static str {
        match self {
            ChunkState::Drift => "drift (no single key differs)",
            ChunkState::Unsettled => "unsettled",
            ChunkState::Behind => "behind (stream not running)",
        }
    }
}

/// A row fingerprint of a key-less table whose count differs: the
/// fingerprint (16 hex digits of the row's 64-bit hash, as verify computes
/// it on each server) and how many rows hold it on each side; no value.
#[derive(Debug, Clone, Serialize)]
pub struct FingerprintDrift {
    pub fingerprint: String,
    pub source: u64,
    pub target: u64,
}

/// A chunk that differs, named by its key range `(lower, upper]`
/// (`None`: unbounded).
#[derive(Debug, Clone, Serialize)]
pub struct ChunkNote {
    pub lower: Option<Key>,
    pub upper: Option<Key>,
    pub state: ChunkState,
}

/// How a table was compared.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "snake_case", tag = "by")]
pub enum Basis {
    /// Chunks of key ranges.
    Key { columns: Vec<String> },
    /// No primary key or identity index: one aggregate of the whole table;
    /// differing rows are pinpointed by fingerprint (a hash of the whole
    /// row) with their counts on each side, never by values.
    Fingerprint,
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
    /// Key-less tables: fingerprints whose counts differ.
    pub differing_fingerprints: u64,
    /// Up to [`MAX_KEYS_LISTED`] of them, with their counts.
    pub fingerprints: Vec<FingerprintDrift>,
    /// Keys that kept changing and could not be settled (not counted as drift).
    pub unsettled: u64,
    /// Chunks the target has not caught up with (no stream running).
    pub behind: u64,
    /// Up to [`MAX_KEYS_LISTED`] chunks that differ but are not named by
    /// keys (drift without a differing key, unsettled, behind).
    pub unresolved_chunks: Vec<ChunkNote>,
    pub repaired: u64,
    /// Drifted rows `--repair` left as they are (see `notes` for why).
    pub not_repaired: u64,
    /// What the operator should know or do about this table (no values).
    pub notes: Vec<String>,
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
            differing_fingerprints: 0,
            fingerprints: Vec::new(),
            unsettled: 0,
            behind: 0,
            unresolved_chunks: Vec::new(),
            repaired: 0,
            not_repaired: 0,
            notes: Vec::new(),
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

    /// Adds a key-less table's confirmed drift: each row missing on the
    /// target or extra on it is one drifted row (a changed row is one of
    /// each).
    pub(crate) fn add_fingerprints(&mut self, differences: &Differences) {
        let (missing, extra) = fingerprint::missing_extra(differences);
        self.missing_on_target += missing;
        self.extra_on_target += extra;
        self.drift_rows += missing + extra;
        self.differing_fingerprints += differences.len() as u64;
        for (fp, counts) in differences {
            if self.fingerprints.len() >= MAX_KEYS_LISTED {
                break;
            }
            self.fingerprints.push(FingerprintDrift {
                fingerprint: fingerprint::id(*fp),
                source: counts.source.max(0) as u64,
                target: counts.target.max(0) as u64,
            });
        }
    }

    /// Records a chunk that differs but is not named by keys; `rows` is the
    /// drift it stands for (counted only for [`ChunkState::Drift`]).
    pub fn add_chunk(&mut self, range: &Range, state: ChunkState, rows: u64) {
        match state {
            ChunkState::Drift => self.drift_rows += rows.max(1),
            ChunkState::Unsettled => self.unsettled += 1,
            ChunkState::Behind => self.behind += 1,
        }
        if self.unresolved_chunks.len() < MAX_KEYS_LISTED {
            self.unresolved_chunks.push(ChunkNote {
                lower: range.lower.clone(),
                upper: range.upper.clone(),
                state,
            });
        }
    }

    /// Adds a note once.
    pub fn note(&mut self, text: String) {
        if !self.notes.contains(&text) {
            self.notes.push(text);
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
    /// Chunks the target has not caught up with because no stream runs.
    pub behind: u64,
    pub repaired: u64,
    pub not_repaired: u64,
    pub seconds: f64,
    /// Whether a running stream was applying to the target during the pass.
    pub streaming: bool,
    /// Target columns of a wider type than the source's that keeps every
    /// value's text form (`schema.table.column: from → to`): compared by
    /// value, not a schema difference.
    pub widened_columns: Vec<String>,
    /// What the migration moves but a pass never compares (unlogged
    /// tables, materialized views), each with why: never left out silently.
    pub not_compared: Vec<NotCompared>,
}

/// A relation a pass does not compare, and why.
#[derive(Debug, Clone, Serialize)]
pub struct NotCompared {
    pub relation: String,
    /// `unlogged table` or `materialized view`.
    pub kind: &'static str,
    pub why: &'static str,
}

/// Why an unlogged table is not compared.
pub const UNLOGGED_NOT_COMPARED: &str = "its changes are not in the WAL and are not streamed: copied as of the snapshot, and again by `cutover --fence`; ALTER TABLE … SET LOGGED on the source (and a new snapshot of it) to replicate it";
/// Why a materialized view not populated on the source is not compared.
pub const MATVIEW_UNPOPULATED: &str =
    "not populated on the source (WITH NO DATA): left unpopulated on the target";
/// Why a materialized view is not compared.
pub const MATVIEW_NOT_COMPARED: &str = "refreshed on the target after the snapshot and at cutover (computed from the target's rows), not replicated";

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
        let (behind, not_repaired) = (sum(|t| t.behind), sum(|t| t.not_repaired));
        // A table not compared cannot be called clean.
        let skipped = tables
            .iter()
            .filter(|t| matches!(t.basis, Basis::Skipped { .. }))
            .count();
        Report {
            clean: drift_rows == 0
                && schema.is_empty()
                && unsettled == 0
                && behind == 0
                && skipped == 0,
            tables,
            schema,
            chunks,
            rows,
            drift_rows,
            unsettled,
            behind,
            repaired,
            not_repaired,
            seconds,
            streaming,
            widened_columns: Vec::new(),
            not_compared: Vec::new(),
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
                Basis::Fingerprint => format!(
                    "no key: rows pinpointed by fingerprint: {} missing, {} extra",
                    t.missing_on_target, t.extra_on_target
                ),
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
            "\n{} chunks, {} rows in {:.2}s ({:.0} rows/s); drift rows: {}; unsettled: {}; behind: {}; repaired: {}; not repaired: {}{}",
            self.chunks,
            self.rows,
            self.seconds,
            self.rows as f64 / self.seconds.max(1e-9),
            self.drift_rows,
            self.unsettled,
            self.behind,
            self.repaired,
            self.not_repaired,
            if self.streaming { " (stream running)" } else { "" }
        );
        let clean_but;
        let verdict = if self.clean && !self.not_compared.is_empty() {
            clean_but = format!(
                "clean ({} relation(s) not compared, listed above)",
                self.not_compared.len()
            );
            clean_but.as_str()
        } else if self.clean {
            "clean"
        } else if self.drift_rows > 0 || !self.schema.is_empty() {
            "DRIFT"
        } else if self.behind > 0 {
            "BEHIND: the target has not applied source changes because no stream is running (not proven either way); start the stream, let it catch up, then re-run verify"
        } else {
            "NOT PROVEN: tables skipped, or keys kept changing while the target did not catch up in time"
        };
        let _ = writeln!(out, "verdict: {verdict}");
        out
    }

    /// Drifted keys per table, chunks not named by keys, notes, then
    /// schema differences.
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
        for t in self.tables.iter().filter(|t| !t.fingerprints.is_empty()) {
            let _ = writeln!(
                out,
                "\ndrift in {} by row fingerprint (counts only): {} fingerprints differ",
                t.table, t.differing_fingerprints
            );
            for f in &t.fingerprints {
                let _ = writeln!(
                    out,
                    "  {}  source {}, target {}",
                    f.fingerprint, f.source, f.target
                );
            }
            if t.differing_fingerprints as usize > t.fingerprints.len() {
                let _ = writeln!(
                    out,
                    "  … and {} more",
                    t.differing_fingerprints as usize - t.fingerprints.len()
                );
            }
        }
        for t in self
            .tables
            .iter()
            .filter(|t| !t.unresolved_chunks.is_empty())
        {
            let _ = writeln!(
                out,
                "\nchunks of {} not named by keys (key ranges):",
                t.table
            );
            for c in &t.unresolved_chunks {
                let bound = |k: &Option<Key>, open: &str| {
                    k.as_ref().map_or(open.to_string(), |k| k.join(", "))
                };
                let range = format!("({}, {}]", bound(&c.lower, "start"), bound(&c.upper, "end"));
                let _ = writeln!(out, "  {:<30} {range}", c.state.as_str());
            }
        }
        for t in self.tables.iter().filter(|t| !t.notes.is_empty()) {
            for note in &t.notes {
                let _ = writeln!(out, "\nnote on {}: {note}", t.table);
            }
        }
        if !self.widened_columns.is_empty() {
            let _ = writeln!(
                out,
                "\nwider on the target (accepted: values keep their text form and are compared):"
            );
            for c in &self.widened_columns {
                let _ = writeln!(out, "  {c}");
            }
        }
        if !self.not_compared.is_empty() {
            let _ = writeln!(out, "\nnot compared:");
            for n in &self.not_compared {
                let _ = writeln!(out, "  {} ({}): {}", n.relation, n.kind, n.why);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn range(upper: &str) -> Range {
        Range {
            lower: None,
            upper: Some(vec![upper.into()]),
        }
    }

    #[test]
    fn a_behind_chunk_is_neither_clean_nor_drift() {
        let mut t = TableReport::new("public.t".into(), Basis::Fingerprint);
        t.add_chunk(&range("100"), ChunkState::Behind, 0);
        let report = Report::finish(vec![t], Vec::new(), 1.0, false);
        assert!(!report.clean);
        assert_eq!((report.drift_rows, report.behind), (0, 1));
        let text = report.render();
        let verdict = text.lines().find(|l| l.starts_with("verdict:")).unwrap();
        assert!(
            verdict.contains("BEHIND") && !verdict.to_lowercase().contains("drift"),
            "{text}"
        );
        assert!(
            text.contains("behind (stream not running)") && text.contains("(start, 100]"),
            "{text}"
        );
    }

    #[test]
    fn keyless_drift_is_counted_by_fingerprint_without_values() {
        use crate::verify::fingerprint::Counts;
        let mut t = TableReport::new("public.t".into(), Basis::Fingerprint);
        let mut d = Differences::new();
        d.insert(
            -1,
            Counts {
                source: 3,
                target: 2,
            },
        );
        d.insert(
            7,
            Counts {
                source: 0,
                target: 1,
            },
        );
        d.insert(
            9,
            Counts {
                source: 1,
                target: 0,
            },
        );
        t.add_fingerprints(&d);
        assert_eq!(
            (t.missing_on_target, t.extra_on_target, t.drift_rows),
            (2, 1, 3)
        );
        let report = Report::finish(vec![t], Vec::new(), 1.0, false);
        assert!(!report.clean);
        let text = report.render();
        assert!(
            text.contains("no key: rows pinpointed by fingerprint: 2 missing, 1 extra"),
            "{text}"
        );
        assert!(
            text.contains("ffffffffffffffff  source 3, target 2")
                && text.contains("3 fingerprints differ"),
            "{text}"
        );
    }

    #[test]
    fn what_is_not_compared_is_listed_and_counted_in_a_clean_verdict() {
        let t = TableReport::new("public.t".into(), Basis::Fingerprint);
        let mut report = Report::finish(vec![t], Vec::new(), 1.0, false);
        report.not_compared.push(NotCompared {
            relation: "public.cache".into(),
            kind: "unlogged table",
            why: UNLOGGED_NOT_COMPARED,
        });
        report
            .widened_columns
            .push("public.t.n: integer → bigint".into());
        assert!(report.clean);
        let text = report.render();
        assert!(
            text.contains(
                "not compared:\n  public.cache (unlogged table): its changes are not in the WAL"
            ),
            "{text}"
        );
        assert!(text.contains("public.t.n: integer → bigint"), "{text}");
        assert!(
            text.contains("verdict: clean (1 relation(s) not compared, listed above)"),
            "{text}"
        );
    }

    #[test]
    fn a_chunk_differing_without_a_key_counts_as_drift() {
        let mut t = TableReport::new("public.t".into(), Basis::Fingerprint);
        t.add_chunk(&range("100"), ChunkState::Drift, 0);
        let report = Report::finish(vec![t], Vec::new(), 1.0, false);
        assert!(!report.clean);
        assert_eq!(report.drift_rows, 1);
        assert!(report.render().contains("verdict: DRIFT"));
    }
}
