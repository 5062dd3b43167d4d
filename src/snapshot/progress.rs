//! Copy progress: a bar on a terminal, a log line every few seconds
//! otherwise, and the snapshot metrics either way.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

use crate::metrics::{SNAPSHOT_ROWS_COPIED, SNAPSHOT_TABLES};

const LOG_EVERY: Duration = Duration::from_secs(5);

/// Shared by the copy workers; cheap to clone.
#[derive(Clone)]
pub(super) struct Progress {
    inner: Arc<Inner>,
}

struct Inner {
    bar: Option<ProgressBar>,
    chunks_total: u64,
    chunks_done: AtomicU64,
    rows: AtomicU64,
    started: Instant,
    last_log: Mutex<Instant>,
}

impl Progress {
    /// Progress over `chunks_total` pending chunks.
    pub(super) fn new(chunks_total: u64) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::new(chunks_total);
            bar.set_style(
                ProgressStyle::with_template(
                    "{spinner} copy [{bar:40}] {pos}/{len} chunks {msg} ({elapsed})",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        });
        let now = Instant::now();
        Progress {
            inner: Arc::new(Inner {
                bar,
                chunks_total,
                chunks_done: AtomicU64::new(0),
                rows: AtomicU64::new(0),
                started: now,
                last_log: Mutex::new(now),
            }),
        }
    }

    /// Records one committed chunk of `table`.
    pub(super) fn chunk_done(&self, table: &str, rows: u64) {
        metrics::counter!(SNAPSHOT_ROWS_COPIED, "table" => table.to_string()).increment(rows);
        let i = &self.inner;
        let done = i.chunks_done.fetch_add(1, Ordering::Relaxed) + 1;
        let total_rows = i.rows.fetch_add(rows, Ordering::Relaxed) + rows;
        let rate = total_rows as f64 / i.started.elapsed().as_secs_f64().max(0.001);
        if let Some(bar) = &i.bar {
            bar.set_position(done);
            bar.set_message(format!("{total_rows} rows, {rate:.0} rows/s"));
            return;
        }
        let mut last = i.last_log.lock().unwrap_or_else(|e| e.into_inner());
        if last.elapsed() >= LOG_EVERY || done == i.chunks_total {
            *last = Instant::now();
            tracing::info!(
                chunks_done = done,
                chunks_total = i.chunks_total,
                rows = total_rows,
                rows_per_sec = rate as u64,
                "copy progress"
            );
        }
    }

    /// Rows copied so far in this run.
    pub(super) fn rows(&self) -> u64 {
        self.inner.rows.load(Ordering::Relaxed)
    }

    /// Removes the bar.
    pub(super) fn finish(&self) {
        if let Some(bar) = &self.inner.bar {
            bar.finish_and_clear();
        }
    }
}

/// Sets `walrelay_snapshot_tables{state}` from the target's state table
/// (left as it was when the table cannot be read: a gauge, not a step).
pub(super) async fn publish_table_states(target: &tokio_postgres::Client, slot: &str) {
    let counts = crate::state::copy::tables_by_state(target, slot).await;
    for (state, count) in counts.into_iter().flatten() {
        metrics::gauge!(SNAPSHOT_TABLES, "state" => state).set(count as f64);
    }
}
