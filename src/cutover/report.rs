//! What cutover did and its verdict, for humans and as JSON.

use serde::Serialize;

/// A session on the source seen by the fence (never its query text).
#[derive(Debug, Clone, Serialize)]
pub struct FencedSession {
    pub pid: i32,
    pub user: String,
    pub application: String,
    pub terminated: bool,
}

/// What cutover did and its verdict.
#[derive(Debug, Clone, Serialize)]
pub struct CutoverReport {
    /// "safe to switch": every step passed.
    pub safe: bool,
    /// Why it is not safe (empty when it is).
    pub reasons: Vec<String>,
    /// What the operator should know but does not make it unsafe (e.g.
    /// sessions the fence left running).
    pub warnings: Vec<String>,
    pub lag_at_start_bytes: Option<u64>,
    pub lag_at_start_seconds: Option<f64>,
    /// Seconds spent in the lag gate.
    pub lag_gate_seconds: f64,
    /// The source database is fenced (`default_transaction_read_only` on),
    /// as read from it: whoever set it, this run or an earlier one.
    pub fenced: bool,
    /// The sessions the fence found (terminated unless `--fence-list-only`).
    pub fence_sessions: Vec<FencedSession>,
    pub sessions_terminated: u64,
    pub marker_lsn: Option<String>,
    /// The target's checkpoint when the wait ended.
    pub applied_lsn: Option<String>,
    /// Seconds waited for the target to apply past the marker.
    pub marker_wait_seconds: f64,
    pub sequences_synced: Vec<String>,
    pub sequences_missing_on_target: Vec<String>,
    /// `touched`: rows changed since a clean pass before the fence; `full`:
    /// every row after the fence.
    pub final_verify: &'static str,
    /// Rows and keys compared before the fence (full pass, narrowing rounds).
    pub pre_fence_rows_verified: u64,
    pub pre_fence_verify_seconds: Option<f64>,
    /// Changed keys compared after the fence (`touched`).
    pub touched_keys: u64,
    /// Tables compared whole after the fence (no key, truncated, too many keys).
    pub touched_whole_tables: u64,
    /// Rows (or keys) compared by the final verification.
    pub rows_verified: u64,
    pub verify_seconds: f64,
    /// Unlogged tables copied again while fenced (not streamed: not in the WAL).
    pub unlogged_copied: Vec<String>,
    pub unlogged_rows: u64,
    pub unlogged_copy_seconds: Option<f64>,
    /// Materialized views refreshed on the target (refreshed, not replicated).
    pub matviews_refreshed: Vec<String>,
    pub matview_refresh_seconds: Option<f64>,
    /// Write unavailability: from the fence to the verdict (fenced runs only).
    pub fence_to_verdict_seconds: Option<f64>,
    pub total_seconds: f64,
}

impl CutoverReport {
    pub(super) fn new() -> Self {
        CutoverReport {
            safe: false,
            reasons: Vec::new(),
            warnings: Vec::new(),
            lag_at_start_bytes: None,
            lag_at_start_seconds: None,
            lag_gate_seconds: 0.0,
            fenced: false,
            fence_sessions: Vec::new(),
            sessions_terminated: 0,
            marker_lsn: None,
            applied_lsn: None,
            marker_wait_seconds: 0.0,
            sequences_synced: Vec::new(),
            sequences_missing_on_target: Vec::new(),
            final_verify: "touched",
            pre_fence_rows_verified: 0,
            pre_fence_verify_seconds: None,
            touched_keys: 0,
            touched_whole_tables: 0,
            rows_verified: 0,
            verify_seconds: 0.0,
            unlogged_copied: Vec::new(),
            unlogged_rows: 0,
            unlogged_copy_seconds: None,
            matviews_refreshed: Vec::new(),
            matview_refresh_seconds: None,
            fence_to_verdict_seconds: None,
            total_seconds: 0.0,
        }
    }

    /// The human report.
    pub fn render(&self) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        let opt = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
        let _ = writeln!(
            out,
            "lag at start:        {} bytes, {} s",
            self.lag_at_start_bytes
                .map_or("unknown".into(), |b| b.to_string()),
            self.lag_at_start_seconds
                .map_or("unknown".into(), |s| format!("{s:.1}"))
        );
        let _ = writeln!(out, "lag gate:            {:.2} s", self.lag_gate_seconds);
        if let Some(s) = self.pre_fence_verify_seconds {
            let _ = writeln!(
                out,
                "before the fence:    {} rows and changed keys verified ({s:.2} s)",
                self.pre_fence_rows_verified
            );
        }
        if self.fenced {
            let _ = writeln!(
                out,
                "fence:               source read-only for new transactions; {} session(s) found, {} terminated",
                self.fence_sessions.len(),
                self.sessions_terminated
            );
            for s in &self.fence_sessions {
                let _ = writeln!(
                    out,
                    "  pid {} user {} application {:?}{}",
                    s.pid,
                    s.user,
                    s.application,
                    if s.terminated {
                        " (terminated)"
                    } else {
                        " (still connected: can write until it reconnects)"
                    }
                );
            }
        } else {
            let _ = writeln!(out, "fence:               not fenced");
        }
        let _ = writeln!(out, "marker LSN:          {}", opt(&self.marker_lsn));
        let _ = writeln!(
            out,
            "applied LSN:         {} (waited {:.2} s)",
            opt(&self.applied_lsn),
            self.marker_wait_seconds
        );
        let _ = writeln!(out, "sequences synced:    {}", self.sequences_synced.len());
        for s in &self.sequences_missing_on_target {
            let _ = writeln!(out, "  missing on the target (not synced): {s}");
        }
        let scope = if self.final_verify == "full" {
            "every row".to_string()
        } else {
            format!(
                "changed since the pass before the fence: {} keys, {} table(s) whole",
                self.touched_keys, self.touched_whole_tables
            )
        };
        let _ = writeln!(
            out,
            "rows verified:       {} ({:.2} s; {scope})",
            self.rows_verified, self.verify_seconds
        );
        if let Some(s) = self.unlogged_copy_seconds {
            let _ = writeln!(
                out,
                "unlogged tables:     {} copied again while fenced, {} rows ({s:.2} s; not streamed: not in the WAL): {}",
                self.unlogged_copied.len(),
                self.unlogged_rows,
                self.unlogged_copied.join(", ")
            );
        }
        if let Some(s) = self.matview_refresh_seconds {
            let _ = writeln!(
                out,
                "materialized views:  {} refreshed on the target ({s:.2} s; refreshed, not replicated): {}",
                self.matviews_refreshed.len(),
                self.matviews_refreshed.join(", ")
            );
        }
        if let Some(w) = self.fence_to_verdict_seconds {
            let _ = writeln!(out, "fence to verdict:    {w:.2} s (writes unavailable)");
        }
        let _ = writeln!(out, "total:               {:.2} s", self.total_seconds);
        for w in &self.warnings {
            let _ = writeln!(out, "warning: {w}");
        }
        if self.safe {
            let _ = writeln!(out, "verdict:             safe to switch");
        } else {
            let _ = writeln!(out, "verdict:             NOT safe to switch");
            for r in &self.reasons {
                let _ = writeln!(out, "  - {r}");
            }
        }
        out
    }
}
