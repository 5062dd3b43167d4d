//! `walrelay.progress`: the source LSN the target has applied, written in the
//! same target transaction as the changes it covers.
//!
//! Durability contract: after a crash at any point, the row names exactly
//! the end LSN of the last source transaction whose changes committed on the
//! target (or an idle keepalive position with nothing pending). The stream
//! restarts there and skips every transaction that committed before it, so
//! no change is lost or applied twice.

use std::collections::HashMap;
use std::str::FromStr;

use tokio_postgres::{Client, GenericClient, Statement};
use walrelay_proto::Lsn;

const UPSERT_SQL: &str = "INSERT INTO walrelay.progress (slot_name, system_id, applied_lsn, commit_time, updated_at) \
     VALUES ($1, $2, $3::text::pg_lsn, to_timestamp($4::float8 / 1e6), now()) \
     ON CONFLICT (slot_name) DO UPDATE SET applied_lsn = EXCLUDED.applied_lsn, \
     commit_time = coalesce(EXCLUDED.commit_time, walrelay.progress.commit_time), updated_at = now()";

/// Where the stream resumes.
#[derive(Debug, Clone)]
pub struct Resume {
    pub lsn: Lsn,
    pub system_id: String,
    /// `(schema, table)` → the LSN its snapshot copy reflects.
    pub snapshot_lsns: HashMap<(String, String), Lsn>,
}

/// Why there is nothing to resume from.
#[derive(Debug, thiserror::Error)]
pub enum ResumeError {
    #[error("no completed snapshot for slot {0} on the target: run `walrelay snapshot` (or `walrelay run`) first")]
    NoSnapshot(String),
    #[error("reading walrelay state on the target: {}", crate::pg::error::with_sqlstate(.0))]
    Sql(#[source] tokio_postgres::Error),
    #[error("the completed snapshot of slot {0} records no consistent point (walrelay.snapshot.consistent_lsn is NULL on the target) and nothing was applied yet: the state was edited or damaged; run `walrelay cleanup --yes` and migrate again")]
    NoConsistentPoint(String),
}

fn lsn(text: &str) -> Lsn {
    Lsn::from_str(text).unwrap_or_default()
}

/// Reads the checkpoint (or the snapshot's consistent point on a first start).
pub async fn load(target: &Client, slot: &str) -> Result<Resume, ResumeError> {
    let sql = ResumeError::Sql;
    let has_state: bool = target
        .query_one("SELECT to_regclass('walrelay.snapshot') IS NOT NULL", &[])
        .await
        .map_err(sql)?
        .get(0);
    if !has_state {
        return Err(ResumeError::NoSnapshot(slot.to_string()));
    }
    let snapshot = target
        .query_opt(
            "SELECT system_id, consistent_lsn::text FROM walrelay.snapshot WHERE slot_name = $1 AND phase = 'done'",
            &[&slot],
        )
        .await
        .map_err(sql)?
        .ok_or_else(|| ResumeError::NoSnapshot(slot.to_string()))?;
    let (system_id, consistent): (String, Option<String>) = (snapshot.get(0), snapshot.get(1));
    let applied: Option<String> = target
        .query_opt(
            "SELECT applied_lsn::text FROM walrelay.progress WHERE slot_name = $1",
            &[&slot],
        )
        .await
        .map_err(sql)?
        .map(|row| row.get(0));
    let snapshot_lsns = target
        .query(
            "SELECT schema_name, table_name, snapshot_lsn::text FROM walrelay.tables WHERE slot_name = $1",
            &[&slot],
        )
        .await
        .map_err(sql)?
        .iter()
        .map(|row| {
            let text: Option<String> = row.get(2);
            ((row.get(0), row.get(1)), text.as_deref().map(lsn).unwrap_or_default())
        })
        .collect();
    let start = applied
        .or(consistent)
        .ok_or_else(|| ResumeError::NoConsistentPoint(slot.to_string()))?;
    Ok(Resume {
        lsn: lsn(&start),
        system_id,
        snapshot_lsns,
    })
}

/// Writes checkpoints for one slot.
pub struct Checkpoint {
    slot: String,
    system_id: String,
    upsert: Statement,
}

impl Checkpoint {
    /// Prepares the checkpoint statement on the apply session.
    pub async fn prepare(
        target: &Client,
        slot: &str,
        system_id: &str,
    ) -> Result<Self, tokio_postgres::Error> {
        Ok(Checkpoint {
            slot: slot.to_string(),
            system_id: system_id.to_string(),
            upsert: target.prepare(UPSERT_SQL).await?,
        })
    }

    /// Records `lsn` (and the source commit time, µs since the Unix epoch) in
    /// the caller's transaction, or on its own when none is open.
    pub async fn write(
        &self,
        client: &impl GenericClient,
        lsn: Lsn,
        commit_unix_micros: Option<i64>,
    ) -> Result<(), tokio_postgres::Error> {
        let micros = commit_unix_micros.map(|m| m as f64);
        client
            .execute(
                &self.upsert,
                &[&self.slot, &self.system_id, &lsn.to_string(), &micros],
            )
            .await
            .map(drop)
    }
}
