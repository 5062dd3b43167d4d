//! Heartbeats: on an idle source, a non-transactional logical message every
//! interval keeps the slot's position moving and lag measurable in seconds.
//! `pg_logical_emit_message` is allowed to every role (docs/ARCHITECTURE.md,
//! Protocol facts).

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_postgres::Client;

/// The logical message prefix walrelay writes and recognises.
pub(super) const PREFIX: &str = "walrelay";

/// Emits a heartbeat every `every` until the returned guard is dropped.
pub(super) fn spawn(source: Arc<Client>, every: Duration) -> Guard {
    let task = tokio::spawn(async move {
        let mut tick = tokio::time::interval(every.max(Duration::from_millis(100)));
        loop {
            tick.tick().await;
            let sql = "SELECT pg_logical_emit_message(false, 'walrelay', \
                       'heartbeat ' || (extract(epoch FROM clock_timestamp()) * 1000000)::bigint)";
            if let Err(err) = source.batch_execute(sql).await {
                tracing::debug!(error = %crate::pg::connect::error_text(&err), "heartbeat failed");
                if source.is_closed() {
                    return;
                }
            }
        }
    });
    Guard(task)
}

/// Stops the heartbeat task when dropped.
pub(super) struct Guard(JoinHandle<()>);

impl Drop for Guard {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The emission time (µs since the Unix epoch) carried by a heartbeat.
pub(super) fn emitted_at(content: &[u8]) -> Option<i64> {
    std::str::from_utf8(content)
        .ok()?
        .strip_prefix("heartbeat ")?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn heartbeat_content_carries_the_emit_time() {
        assert_eq!(
            super::emitted_at(b"heartbeat 1700000000000000"),
            Some(1_700_000_000_000_000)
        );
        assert_eq!(super::emitted_at(b"marker 5"), None);
    }
}
