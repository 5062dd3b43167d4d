//! `walrelay.progress`: the source LSN the target has applied, the
//! checkpoint the stream resumes from (see the contracts in
//! [`crate::state`]).

use std::future::Future;
use std::sync::Arc;

use tokio_postgres::{Client, GenericClient, Statement};
use walrelay_proto::Lsn;

use super::{sql, StateError};

const UPSERT_SQL: &str = "INSERT INTO walrelay.progress (slot_name, system_id, applied_lsn, commit_time, updated_at) \
     VALUES ($1, $2, $3, to_timestamp($4::float8 / 1e6), now()) \
     ON CONFLICT (slot_name) DO UPDATE SET applied_lsn = EXCLUDED.applied_lsn, \
     commit_time = coalesce(EXCLUDED.commit_time, walrelay.progress.commit_time), updated_at = now()";

/// The checkpoint of one slot.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Applied {
    /// Everything the source committed before this LSN is on the target.
    pub lsn: Lsn,
    /// Seconds since the last applied source commit (`None`: none recorded).
    pub since_commit: Option<f64>,
    /// Seconds since the checkpoint was last written (a commit or an idle
    /// keepalive position).
    pub since_update: f64,
}

impl Applied {
    /// Seconds since the target was last known to be current: the last
    /// applied commit, or the last checkpoint write when that is more
    /// recent (an idle source whose WAL moves for other reasons is not
    /// "behind").
    pub(crate) fn age(&self) -> f64 {
        self.since_commit
            .map_or(self.since_update, |c| c.min(self.since_update))
    }
}

/// The checkpoint of `slot`; `None` before the stream's first write. The
/// one read of the applied LSN. Needs the table (see [`super::exists`]).
pub(crate) async fn applied(target: &Client, slot: &str) -> Result<Option<Applied>, StateError> {
    Ok(target
        .query_opt(
            "SELECT applied_lsn, extract(epoch FROM now() - commit_time)::float8, \
                    extract(epoch FROM now() - updated_at)::float8 \
             FROM walrelay.progress WHERE slot_name = $1",
            &[&slot],
        )
        .await
        .map_err(sql("reading walrelay.progress"))?
        .map(|row| Applied {
            lsn: row.get(0),
            since_commit: row.get(1),
            since_update: row.get(2),
        }))
}

/// Locks the checkpoint row of `slot` in the caller's open transaction, so
/// no checkpoint commits until it ends (a repair writing rows the stream
/// also writes).
pub(crate) async fn lock(target: &impl GenericClient, slot: &str) -> Result<(), StateError> {
    target
        .query(
            "SELECT 1 FROM walrelay.progress WHERE slot_name = $1 FOR UPDATE",
            &[&slot],
        )
        .await
        .map(drop)
        .map_err(sql("locking the checkpoint row"))
}

/// Writes checkpoints for one slot through a statement prepared once on the
/// apply session (it runs with every batch).
pub(crate) struct Checkpoint {
    slot: String,
    system_id: String,
    upsert: Statement,
}

impl Checkpoint {
    /// Prepares the checkpoint statement on the apply session.
    pub(crate) async fn prepare(
        target: &Client,
        slot: &str,
        system_id: &str,
    ) -> Result<Self, StateError> {
        Ok(Checkpoint {
            slot: slot.to_string(),
            system_id: system_id.to_string(),
            upsert: target
                .prepare(UPSERT_SQL)
                .await
                .map_err(sql("preparing the checkpoint statement"))?,
        })
    }

    /// The same write as [`Checkpoint::write`], as a request owning what it
    /// needs, for the apply session's pipeline (sent when first polled, in
    /// the batch's transaction, answered in order with its other statements).
    pub(crate) fn write_request(
        &self,
        client: Arc<Client>,
        lsn: Lsn,
        commit_unix_micros: Option<i64>,
    ) -> impl Future<Output = Result<u64, tokio_postgres::Error>> + Send + 'static {
        let upsert = self.upsert.clone();
        let slot = self.slot.clone();
        let system_id = self.system_id.clone();
        let micros = commit_unix_micros.map(|m| m as f64);
        async move {
            client
                .execute(&upsert, &[&slot, &system_id, &lsn, &micros])
                .await
        }
    }

    /// Records `lsn` (and the source commit time, µs since the Unix epoch) in
    /// the caller's transaction, or on its own when none is open. The
    /// caller writes only positions past the last one it wrote.
    pub(crate) async fn write(
        &self,
        client: &impl GenericClient,
        lsn: Lsn,
        commit_unix_micros: Option<i64>,
    ) -> Result<(), StateError> {
        let micros = commit_unix_micros.map(|m| m as f64);
        client
            .execute(&self.upsert, &[&self.slot, &self.system_id, &lsn, &micros])
            .await
            .map(drop)
            .map_err(sql("writing the checkpoint (walrelay.progress)"))
    }
}
