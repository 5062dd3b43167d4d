//! Opening a replication session at the durable checkpoint.
//!
//! Facts relied on (docs/ARCHITECTURE.md, Protocol facts): `connect` returns
//! before the server accepted START_REPLICATION, so we `wait_started`; until
//! the first `update_applied_lsn` the client reports `start_lsn` as flushed,
//! so we start exactly at the checkpoint; the server silently starts at
//! max(requested, confirmed_flush), so a confirmed_flush beyond our
//! checkpoint means changes were skipped and we must stop.

use std::time::Duration;

use pgwire_replication::ReplicationClient;
use tokio_postgres::Client;
use walrelay_proto::Lsn;

use super::StreamError;
use crate::pg::connect::{self, error_text};
use crate::pg::conninfo::ConnInfo;

/// Settings of the walsender session: pgoutput's text values are made by
/// its output functions, so they must match what the target sessions parse.
const WALSENDER_OPTIONS: &str =
    "-c datestyle=ISO -c intervalstyle=postgres -c extra_float_digits=3 \
     -c TimeZone=UTC -c client_encoding=UTF8 -c bytea_output=hex -c lc_monetary=C";

/// Starts streaming `slot` from `start` and checks the slot did not move past it.
pub async fn open(
    source: &ConnInfo,
    source_sql: &Client,
    slot: &str,
    publication: &str,
    start: Lsn,
) -> Result<ReplicationClient, StreamError> {
    check_slot(source_sql, slot, start).await?;
    let cfg = connect::replication_config(source, slot, &format!("\"{publication}\""))
        .map_err(|e| StreamError::Transient(e.to_string()))?
        .with_start_lsn(pgwire_replication::Lsn(start.0))
        .with_status_interval(Duration::from_secs(1))
        .with_options(WALSENDER_OPTIONS)
        // An observer makes `feedback_pending_since` report whether the last
        // acknowledgement reached the server, which a clean stop waits for.
        .with_feedback_observer(pgwire_replication::FeedbackObserver::new(|sent| {
            tracing::trace!(
                pending_ms = sent.pending_for.as_millis() as u64,
                "acknowledged to the slot"
            );
        }));
    let mut client = ReplicationClient::connect(cfg).await.map_err(classify)?;
    client.wait_started().await.map_err(classify)?;
    check_slot(source_sql, slot, start).await?;
    Ok(client)
}

async fn check_slot(source_sql: &Client, slot: &str, start: Lsn) -> Result<(), StreamError> {
    let row = source_sql
        .query_opt(
            "SELECT confirmed_flush_lsn, coalesce(wal_status, '') FROM pg_replication_slots WHERE slot_name = $1",
            &[&slot],
        )
        .await
        .map_err(|e| StreamError::Transient(error_text(&e)))?
        .ok_or_else(|| StreamError::Definite(format!(
            "replication slot {slot} does not exist on the source: the stream cannot continue without loss; run `walrelay cleanup --yes` and migrate again from a new snapshot"
        )))?;
    let confirmed: Option<Lsn> = row.try_get(0).map_err(|e| {
        StreamError::Definite(format!(
            "reading the confirmed position of slot {slot} on the source: {e}"
        ))
    })?;
    let wal_status: String = row.get(1);
    if wal_status == "lost" {
        return Err(StreamError::Definite(format!(
            "replication slot {slot} was invalidated (wal_status = lost; max_slot_wal_keep_size exceeded): the WAL it needed is gone; run `walrelay cleanup --yes` and migrate again from a new snapshot"
        )));
    }
    // NULL: the slot has confirmed nothing yet, so it cannot be past `start`.
    if let Some(confirmed) = confirmed.filter(|c| *c > start) {
        return Err(StreamError::Definite(format!(
            "slot {slot} is confirmed up to {confirmed} but the target has applied only up to {start}: changes in between would be skipped; the target can no longer be completed from this slot (migrate again from a new snapshot)"
        )));
    }
    Ok(())
}

/// Splits replication errors into retryable and not.
pub fn classify(err: pgwire_replication::PgWireError) -> StreamError {
    use pgwire_replication::PgWireError as E;
    let text = err.to_string();
    match &err {
        E::Server(msg)
            if msg.contains("does not exist")
                || msg.contains("can no longer get changes")
                || msg.contains("invalidated") =>
        {
            StreamError::Definite(format!("replication: {text}"))
        }
        E::Server(msg) if msg.contains("is active for PID") => StreamError::Transient(format!(
            "replication: {text} (another consumer holds the slot)"
        )),
        E::Auth(_) | E::Tls(_) => StreamError::Definite(format!("replication connection: {text}")),
        _ => StreamError::Transient(format!("replication: {text}")),
    }
}
