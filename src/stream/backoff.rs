//! Waiting before a reconnect: from 1 s, doubling up to 30 s, and small
//! again after a session that outlived the longest wait (it was healthy,
//! not flapping). Shared by the live stream, the spool's capture and the
//! spool's apply sessions.

use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::watch;

use super::StreamError;
use crate::status::{Stage, StatusBoard};

const FIRST: Duration = Duration::from_secs(1);
const MAX: Duration = Duration::from_secs(30);

/// The wait before the next reconnect.
pub(super) struct Backoff {
    next: Duration,
}

impl Backoff {
    pub(super) fn new() -> Self {
        Backoff { next: FIRST }
    }

    /// A session that lasted `lasted` ended: after a long one, the next
    /// wait starts small again.
    pub(super) fn ended_after(&mut self, lasted: Duration) {
        if lasted > MAX {
            self.next = FIRST;
        }
    }

    /// The coming wait, for the log.
    pub(super) fn millis(&self) -> u64 {
        self.next.as_millis() as u64
    }

    /// Waits, then doubles the next wait; `false` when a stop was
    /// requested meanwhile (or before).
    pub(super) async fn wait(&mut self, stop: &mut watch::Receiver<bool>) -> bool {
        let waited = tokio::select! {
            _ = tokio::time::sleep(self.next) => true,
            _ = stop.wait_for(|s| *s) => false,
        };
        self.next = (self.next * 2).min(MAX);
        waited
    }
}

/// What the status board and the metrics show while reconnecting.
pub(super) fn report_reconnecting(board: &StatusBoard, err: &StreamError) {
    board.connected.store(false, Ordering::Relaxed);
    board.set_stage(Stage::Reconnecting);
    board.set_error(Some(err.to_string()));
    metrics::counter!(crate::metrics::ERRORS, "stage" => "stream").increment(1);
}
