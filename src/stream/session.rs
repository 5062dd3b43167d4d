//! Opening a replication session at the durable checkpoint.
//!
//! Facts relied on (docs/ARCHITECTURE.md, Protocol facts): `connect` returns
//! before the server accepted START_REPLICATION, so we `wait_started`; until
//! the first `update_applied_lsn` the client reports `start_lsn` as flushed,
//! so we start exactly at the checkpoint; the server silently starts at
//! max(requested, confirmed_flush), so a confirmed_flush beyond our
//! checkpoint means changes were skipped and we must stop.

use std::time::{Duration, Instant};

use pgwire_replication::{ReplicationClient, ReplicationEvent};
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

/// Starts streaming `slot` from `start` and checks the slot did not move
/// past it; the acknowledged position is sent at most every `status_every`.
pub(super) async fn open(
    source: &ConnInfo,
    source_sql: &Client,
    names: Names<'_>,
    start: Lsn,
    status_every: Duration,
) -> Result<ReplicationClient, StreamError> {
    let slot = names.slot;
    check_slot(source_sql, slot, start).await?;
    let cfg = connect::replication_config(source, slot, &format!("\"{}\"", names.publication))?
        .with_start_lsn(pgwire_replication::Lsn(start.0))
        .with_status_interval(status_every)
        .with_options(WALSENDER_OPTIONS)
        // An observer makes `feedback_pending_since` report whether the last
        // acknowledgement reached the server, which a clean stop waits for.
        .with_feedback_observer(pgwire_replication::FeedbackObserver::new(|sent| {
            tracing::trace!(
                pending_ms = sent.pending_for.as_millis() as u64,
                "acknowledged to the slot"
            );
        }));
    let started = async {
        let mut client = ReplicationClient::connect(cfg).await?;
        client.wait_started().await?;
        Ok::<_, pgwire_replication::PgWireError>(client)
    };
    let client = match started.await {
        Ok(client) => client,
        Err(err) => {
            return Err(match diagnose(source_sql, names, err.clone(), true).await {
                StreamError::SlotHeld { pid, .. } if released(source_sql, slot, pid).await => {
                    StreamError::Replication { source: err }
                }
                other => other,
            })
        }
    };
    check_slot(source_sql, slot, start).await?;
    Ok(client)
}

/// The slot and publication a session reads.
#[derive(Debug, Clone, Copy)]
pub(super) struct Names<'a> {
    pub slot: &'a str,
    pub publication: &'a str,
}

async fn check_slot(source_sql: &Client, slot: &str, start: Lsn) -> Result<(), StreamError> {
    let row = source_sql
        .query_opt(
            "SELECT confirmed_flush_lsn, coalesce(wal_status, '') FROM pg_replication_slots WHERE slot_name = $1",
            &[&slot],
        )
        .await
        .map_err(StreamError::source_sql("reading the slot"))?
        .ok_or_else(|| StreamError::SlotMissing { slot: slot.into() })?;
    let confirmed: Option<Lsn> = row.try_get(0).map_err(StreamError::source_sql(
        "reading the slot's confirmed position",
    ))?;
    let wal_status: String = row.get(1);
    if wal_status == "lost" {
        return Err(StreamError::SlotLost { slot: slot.into() });
    }
    // NULL: the slot has confirmed nothing yet, so it cannot be past `start`.
    if let Some(confirmed) = confirmed.filter(|c| *c > start) {
        return Err(StreamError::SlotAhead {
            slot: slot.into(),
            confirmed,
            start,
        });
    }
    Ok(())
}

/// Explains a replication error by asking the catalog over the SQL
/// session: pgwire-replication hands the server's error over as text, which
/// is in the server's `lc_messages` language, so the text is never read.
/// `starting`: the error came while starting, when an active slot means
/// another consumer (while streaming, the active session is ours).
pub(super) async fn diagnose(
    source_sql: &Client,
    names: Names<'_>,
    err: pgwire_replication::PgWireError,
    starting: bool,
) -> StreamError {
    if !err.is_server() {
        return StreamError::Replication { source: err };
    }
    match explain(source_sql, names, starting).await {
        Ok(Some(known)) => {
            tracing::debug!(error = %err, "replication error explained by the catalog");
            known
        }
        Ok(None) => StreamError::Replication { source: err },
        Err(sql) => {
            tracing::debug!(error = %error_text(&sql), "catalog not readable after a replication error");
            StreamError::Replication { source: err }
        }
    }
}

async fn explain(
    source_sql: &Client,
    names: Names<'_>,
    starting: bool,
) -> Result<Option<StreamError>, tokio_postgres::Error> {
    let slot = names.slot.to_string();
    let row = source_sql
        .query_opt(
            &format!("SELECT s.wal_status IS NOT DISTINCT FROM 'lost', s.active_pid, \
                    a.application_name, host(a.client_addr), \
                    EXISTS (SELECT FROM pg_publication WHERE pubname = $2), \
                    (SELECT rolreplication OR rolsuper OR {} FROM pg_roles WHERE rolname = current_user) \
             FROM pg_replication_slots s LEFT JOIN pg_stat_activity a ON a.pid = s.active_pid \
             WHERE s.slot_name = $1", crate::pg::catalog::RDS_REPLICATION),
            &[&slot, &names.publication],
        )
        .await?;
    let Some(row) = row else {
        return Ok(Some(StreamError::SlotMissing { slot }));
    };
    if row.get::<_, Option<bool>>(5) == Some(false) {
        return Ok(Some(StreamError::NoReplicationRole));
    }
    if row.get::<_, bool>(0) {
        return Ok(Some(StreamError::SlotLost { slot }));
    }
    if !row.get::<_, bool>(4) {
        return Ok(Some(StreamError::PublicationMissing {
            publication: names.publication.into(),
        }));
    }
    match row.get::<_, Option<i32>>(1) {
        Some(pid) if starting => Ok(Some(StreamError::SlotHeld {
            slot,
            pid,
            holder: holder(row.get(2), row.get(3)),
        })),
        _ => Ok(None),
    }
}

/// Whether the session holding the slot lets go of it within
/// `wal_sender_timeout` (plus a margin): a walsender whose client vanished
/// (one of ours before a reconnect) is ended by that timeout, a live
/// consumer keeps the slot.
async fn released(source_sql: &Client, slot: &str, pid: i32) -> bool {
    let timeout_ms: i64 = match source_sql
        .query_one(
            "SELECT setting::bigint FROM pg_settings WHERE name = 'wal_sender_timeout'",
            &[],
        )
        .await
    {
        Ok(row) => row.get(0),
        Err(_) => 60_000,
    };
    let give_up = Instant::now() + Duration::from_millis(timeout_ms.max(0) as u64 + 5_000);
    tracing::info!(
        slot,
        pid,
        "replication slot in use; waiting up to wal_sender_timeout for it to be released"
    );
    while Instant::now() < give_up {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let holder = source_sql
            .query_opt(
                "SELECT active_pid FROM pg_replication_slots WHERE slot_name = $1",
                &[&slot],
            )
            .await;
        match holder {
            Ok(Some(row)) if row.get::<_, Option<i32>>(0) == Some(pid) => {}
            // Released, gone or unreadable: the next attempt tells.
            _ => return true,
        }
    }
    false
}

fn holder(application: Option<String>, client: Option<String>) -> String {
    let mut text = String::new();
    if let Some(name) = application.filter(|n| !n.is_empty()) {
        text.push_str(&format!(", application_name {name}"));
    }
    if let Some(addr) = client {
        text.push_str(&format!(", client {addr}"));
    }
    text
}

/// The replication session as the event loop sees it: events in,
/// acknowledgements of positions the target committed out.
pub(super) struct Transport<'a> {
    client: ReplicationClient,
    source_sql: &'a Client,
    names: Names<'a>,
}

impl<'a> Transport<'a> {
    pub(super) fn new(client: ReplicationClient, source_sql: &'a Client, names: Names<'a>) -> Self {
        Transport {
            client,
            source_sql,
            names,
        }
    }

    /// The next event; `None` when the server ended the stream. Cancel-safe.
    pub(super) async fn recv(&mut self) -> Result<Option<ReplicationEvent>, StreamError> {
        match self.client.recv().await {
            Ok(event) => Ok(event),
            Err(err) => Err(diagnose(self.source_sql, self.names, err, false).await),
        }
    }

    /// The next event if one was already received, without waiting: `None`
    /// when nothing more is buffered. Cancel-safe, like [`Transport::recv`].
    pub(super) async fn try_recv(
        &mut self,
    ) -> Option<Result<Option<ReplicationEvent>, StreamError>> {
        let next = futures_util::FutureExt::now_or_never(self.client.recv())?;
        Some(match next {
            Ok(event) => Ok(event),
            Err(err) => Err(diagnose(self.source_sql, self.names, err, false).await),
        })
    }

    /// Tells the slot that the target committed up to `lsn`.
    pub(super) fn acknowledge(&self, lsn: Lsn) {
        self.client
            .update_applied_lsn(pgwire_replication::Lsn(lsn.0));
    }

    /// Gives the transport's worker a moment to tell the slot the last
    /// committed position (it sends at most once per status interval), so a
    /// clean stop leaves the slot where the target is.
    pub(super) async fn wait_acknowledged(&self) {
        let give_up = Instant::now() + Duration::from_secs(3);
        while self.client.feedback_pending_since().is_some() && Instant::now() < give_up {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Ends the session (CopyDone).
    pub(super) fn stop(&self) {
        self.client.stop();
    }
}
