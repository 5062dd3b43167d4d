//! Metric names (DESIGN.md → Metrics), described once.

/// Rows copied by the snapshot, per table (`table` label).
pub const SNAPSHOT_ROWS_COPIED: &str = "walrelay_snapshot_rows_copied_total";
/// Tables per snapshot state (`state` label: pending, copying, copied, failed).
pub const SNAPSHOT_TABLES: &str = "walrelay_snapshot_tables";
/// Errors per stage (`stage` label).
pub const ERRORS: &str = "walrelay_errors_total";
/// 1 while walrelay runs.
pub const UP: &str = "walrelay_up";

/// Registers descriptions with the installed recorder.
pub fn describe() {
    metrics::describe_counter!(SNAPSHOT_ROWS_COPIED, "rows copied by the initial snapshot");
    metrics::describe_gauge!(SNAPSHOT_TABLES, "selected tables per snapshot state");
    metrics::describe_counter!(ERRORS, "errors per stage");
    metrics::describe_gauge!(UP, "1 while walrelay runs");
}
