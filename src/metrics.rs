//! Metric names (docs/ARCHITECTURE.md, HTTP and metrics), described once.
//!
//! Every metric walrelay exports has one constant here and one line in
//! [`describe`]; code records through the `metrics` macros with these
//! constants, so a name is spelled in exactly one place. Gauges that mirror
//! the [`StatusBoard`] are set by [`update_from_board`] (from the source
//! monitor's tick and from every `/metrics` scrape); counters and the
//! histogram are recorded where the work happens.

use std::sync::atomic::Ordering;

use metrics_exporter_prometheus::{BuildError, Matcher, PrometheusBuilder, PrometheusHandle};

use crate::status::{Stage, StatusBoard};

/// The source's current WAL position (`pg_current_wal_lsn()`), as a byte offset.
pub(crate) const SOURCE_LSN: &str = "walrelay_source_lsn_bytes";
/// The last LSN committed to `walrelay.progress` on the target, as a byte offset.
pub(crate) const APPLIED_LSN: &str = "walrelay_applied_lsn_bytes";
/// Source WAL not yet applied to the target (source − applied, 0 when caught up).
pub(crate) const LAG_BYTES: &str = "walrelay_lag_bytes";
/// Seconds between now and the source commit the target has caught up to.
pub(crate) const LAG_SECONDS: &str = "walrelay_lag_seconds";
/// WAL the slot holds back on the source (`pg_current_wal_lsn() - restart_lsn`).
pub(crate) const SLOT_RETAINED_WAL: &str = "walrelay_slot_retained_wal_bytes";
/// The slot's `wal_status` (`status` label; 1 for the current one, 0 for the others).
pub(crate) const SLOT_WAL_STATUS: &str = "walrelay_slot_wal_status";
/// WAL that can still be written before the slot is lost (`safe_wal_size`).
pub(crate) const SLOT_SAFE_WAL_SIZE: &str = "walrelay_slot_safe_wal_size_bytes";
/// Source transactions applied to the target.
pub(crate) const TRANSACTIONS_APPLIED: &str = "walrelay_transactions_applied_total";
/// Rows applied to the target (`table`, `op` labels: insert, update, delete).
pub(crate) const ROWS_APPLIED: &str = "walrelay_rows_applied_total";
/// Source UPDATEs and DELETEs a target trigger skipped (the row exists but
/// a BEFORE ROW trigger returned NULL), applied on as native replication
/// does (`table`, `op` labels).
pub(crate) const CHANGES_SUPPRESSED: &str = "walrelay_changes_suppressed_total";
/// Source transactions not applied because the other direction's apply
/// wrote them (the loop guard, `apply/loop_guard.rs`).
pub(crate) const ECHOES_SKIPPED: &str = "walrelay_echoes_skipped_total";
/// Duration of one target apply transaction, from its first change to its commit.
pub(crate) const APPLY_BATCH_SECONDS: &str = "walrelay_apply_batch_seconds";
/// Rows copied by the snapshot, per table (`table` label).
pub(crate) const SNAPSHOT_ROWS_COPIED: &str = "walrelay_snapshot_rows_copied_total";
/// Tables per snapshot state (`state` label: pending, copying, copied, streaming, failed).
pub(crate) const SNAPSHOT_TABLES: &str = "walrelay_snapshot_tables";
/// Verification chunks checked (`result` label: match, mismatch, drift).
pub(crate) const VERIFY_CHUNKS: &str = "walrelay_verify_chunks_total";
/// Rows found to differ by the last verification of a table (`table` label).
pub(crate) const DRIFT_ROWS: &str = "walrelay_drift_rows";
/// Bytes the change-stream spool holds on disk.
pub(crate) const SPOOL_BYTES: &str = "walrelay_spool_bytes";
/// Segment files the change-stream spool holds.
pub(crate) const SPOOL_SEGMENTS: &str = "walrelay_spool_segments";
/// The position the spool holds the stream up to (durable, acknowledged), as a byte offset.
pub(crate) const SPOOLED_LSN: &str = "walrelay_spooled_lsn_bytes";
/// 1 while the spool is full (`--spool-max-bytes`): nothing more is read or
/// acknowledged, and the source holds WAL again.
pub(crate) const SPOOL_FULL: &str = "walrelay_spool_full";
/// Errors per stage (`stage` label).
pub(crate) const ERRORS: &str = "walrelay_errors_total";
/// 1 while walrelay runs and its stage is healthy, 0 once it stopped or failed.
pub(crate) const UP: &str = "walrelay_up";

/// The `wal_status` values of `pg_replication_slots`, plus `missing` for a
/// slot that does not exist, so each gets its own 0/1 series and an alert
/// can match one of them.
pub(crate) const SLOT_WAL_STATUSES: [&str; 5] =
    ["reserved", "extended", "unreserved", "lost", "missing"];

/// Bucket bounds (seconds) of [`APPLY_BATCH_SECONDS`]: a small batch commits
/// in about a millisecond, a batch held by `--batch-delay` in ~100 ms, and a
/// large source transaction can take seconds.
pub(crate) const APPLY_BATCH_BUCKETS: [f64; 13] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Registers descriptions with the installed recorder.
pub(crate) fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_gauge!(
        SOURCE_LSN,
        "source WAL position (pg_current_wal_lsn) in bytes"
    );
    describe_gauge!(APPLIED_LSN, "last LSN committed on the target, in bytes");
    describe_gauge!(LAG_BYTES, "source WAL not yet applied to the target");
    describe_gauge!(
        LAG_SECONDS,
        "age of the source commit the target has caught up to"
    );
    describe_gauge!(
        SLOT_RETAINED_WAL,
        "WAL the replication slot holds back on the source"
    );
    describe_gauge!(
        SLOT_WAL_STATUS,
        "1 for the slot's current wal_status (missing: no slot)"
    );
    describe_gauge!(
        SLOT_SAFE_WAL_SIZE,
        "WAL that can be written before the slot is lost; NaN when unlimited"
    );
    describe_counter!(
        TRANSACTIONS_APPLIED,
        "source transactions applied to the target"
    );
    describe_counter!(
        ROWS_APPLIED,
        "rows applied to the target per table and operation"
    );
    describe_counter!(
        CHANGES_SUPPRESSED,
        "source updates and deletes a target trigger skipped, per table and operation"
    );
    describe_counter!(
        ECHOES_SKIPPED,
        "source transactions the other direction's apply wrote, not sent back"
    );
    describe_histogram!(
        APPLY_BATCH_SECONDS,
        "duration of one target apply transaction"
    );
    describe_counter!(SNAPSHOT_ROWS_COPIED, "rows copied by the initial snapshot");
    describe_gauge!(SNAPSHOT_TABLES, "selected tables per snapshot state");
    describe_counter!(VERIFY_CHUNKS, "verification chunks checked per result");
    describe_gauge!(DRIFT_ROWS, "rows that differ after re-checks, per table");
    describe_gauge!(SPOOL_BYTES, "bytes the change-stream spool holds");
    describe_gauge!(
        SPOOL_SEGMENTS,
        "segment files the change-stream spool holds"
    );
    describe_gauge!(
        SPOOLED_LSN,
        "position the spool holds the stream up to, in bytes"
    );
    describe_gauge!(
        SPOOL_FULL,
        "1 while the spool is full and the slot is no longer acknowledged"
    );
    describe_counter!(ERRORS, "errors per stage");
    describe_gauge!(UP, "1 while walrelay runs and is healthy");
}

/// The builder walrelay's recorder is made from: histogram buckets for
/// [`APPLY_BATCH_SECONDS`] (other histograms render as summaries).
pub(crate) fn builder() -> Result<PrometheusBuilder, BuildError> {
    PrometheusBuilder::new().set_buckets_for_metric(
        Matcher::Full(APPLY_BATCH_SECONDS.to_string()),
        &APPLY_BATCH_BUCKETS,
    )
}

/// Installs the process-wide Prometheus recorder and describes every metric.
/// Under `walrelay --reverse` every series carries `direction="reverse"`, so
/// one dashboard shows both streamers; the forward direction's series keep
/// the labels they always had (dashboards and alerts written for them stay
/// true).
///
/// No exporter task runs: `/metrics` renders through the returned handle,
/// and whoever holds it must call `run_upkeep` periodically
/// ([`crate::http::serve`] does) so histogram samples are drained.
pub(crate) fn install_recorder(reverse: bool) -> Result<PrometheusHandle, BuildError> {
    let mut builder = builder()?;
    if reverse {
        builder = builder.add_global_label("direction", "reverse");
    }
    let handle = builder.install_recorder()?;
    describe();
    Ok(handle)
}

/// Whether a stage counts as healthy: starting, copying, streaming or
/// reconnecting (a transient state walrelay recovers from by itself).
/// `/healthz` and [`UP`] agree on this.
pub(crate) fn is_healthy(stage: Stage) -> bool {
    matches!(
        stage,
        Stage::Starting | Stage::Snapshot | Stage::Streaming | Stage::Reconnecting
    )
}

/// Sets the gauges that mirror the board. LSNs become `f64`, exact up to
/// 2^53 bytes (8 PiB) of WAL.
pub(crate) fn update_from_board(board: &StatusBoard) {
    let source = board.source_lsn.load(Ordering::Relaxed);
    let applied = board.applied_lsn.load(Ordering::Relaxed);
    metrics::gauge!(SOURCE_LSN).set(source as f64);
    metrics::gauge!(APPLIED_LSN).set(applied as f64);
    metrics::gauge!(LAG_BYTES).set(board.lag_bytes() as f64);
    metrics::gauge!(LAG_SECONDS).set(board.lag_seconds());
    let retained = board.slot_retained_bytes.load(Ordering::Relaxed);
    metrics::gauge!(SLOT_RETAINED_WAL).set(retained as f64);
    metrics::gauge!(UP).set(if is_healthy(board.stage()) { 1.0 } else { 0.0 });
}

/// Sets [`SLOT_WAL_STATUS`]: 1 for `current` (`None`: no status known, all 0).
pub(crate) fn set_slot_wal_status(current: Option<&str>) {
    for status in SLOT_WAL_STATUSES {
        let value = if Some(status) == current { 1.0 } else { 0.0 };
        metrics::gauge!(SLOT_WAL_STATUS, "status" => status).set(value);
    }
}

/// Sets [`SLOT_SAFE_WAL_SIZE`]; `None` (no `max_slot_wal_keep_size` limit)
/// becomes NaN so a value from before a configuration change does not linger
/// and `<` comparisons in alerts stay false.
pub(crate) fn set_slot_safe_wal_size(bytes: Option<i64>) {
    metrics::gauge!(SLOT_SAFE_WAL_SIZE).set(bytes.map_or(f64::NAN, |b| b as f64));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(f: impl FnOnce()) -> String {
        let recorder = builder().expect("buckets").build_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, || {
            describe();
            f();
        });
        handle.render()
    }

    #[test]
    fn board_gauges_are_rendered() {
        let board = StatusBoard::default();
        board.source_lsn.store(0x1_0000_0100, Ordering::Relaxed);
        board.applied_lsn.store(0x1_0000_0000, Ordering::Relaxed);
        board.slot_retained_bytes.store(4096, Ordering::Relaxed);
        let text = render(|| update_from_board(&board));
        assert!(text.contains("walrelay_lag_bytes 256"), "{text}");
        assert!(
            text.contains("walrelay_source_lsn_bytes 4294967552"),
            "{text}"
        );
        assert!(
            text.contains("walrelay_slot_retained_wal_bytes 4096"),
            "{text}"
        );
        assert!(text.contains("walrelay_up 1"), "{text}");
        assert!(text.contains("# HELP walrelay_lag_bytes"), "{text}");
    }

    #[test]
    fn up_is_zero_once_failed() {
        let board = StatusBoard::default();
        board.set_stage(Stage::Failed);
        let text = render(|| update_from_board(&board));
        assert!(text.contains("walrelay_up 0"), "{text}");
    }

    #[test]
    fn batch_histogram_has_millisecond_to_ten_second_buckets() {
        let text = render(|| metrics::histogram!(APPLY_BATCH_SECONDS).record(0.003));
        assert!(
            text.contains("walrelay_apply_batch_seconds_bucket{le=\"0.001\"} 0"),
            "{text}"
        );
        assert!(
            text.contains("walrelay_apply_batch_seconds_bucket{le=\"0.005\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("walrelay_apply_batch_seconds_bucket{le=\"10\"} 1"),
            "{text}"
        );
    }

    #[test]
    fn one_slot_status_is_set() {
        let text = render(|| set_slot_wal_status(Some("unreserved")));
        assert!(
            text.contains("walrelay_slot_wal_status{status=\"unreserved\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("walrelay_slot_wal_status{status=\"reserved\"} 0"),
            "{text}"
        );
    }
}
