//! `walrelay.spool`: where a slot's change-stream spool lives, so `status`
//! and `cleanup` find it without `--spool-dir` and say when it is on
//! another machine (see the contracts in [`crate::state`]).

use tokio_postgres::Client;

use super::{sql, StateError};

/// The table, created by [`record`] too: a target whose `walrelay` schema
/// predates the spool lacks it.
pub(super) const DDL: &str = "CREATE TABLE IF NOT EXISTS walrelay.spool (
    slot_name   text PRIMARY KEY,
    dir         text NOT NULL,
    host        text NOT NULL,
    max_bytes   bigint NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now()
);";

/// Where a slot's spool was last used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Recorded {
    /// The slot's own spool directory (`<--spool-dir>/<slot>`), absolute.
    pub dir: String,
    /// The host name of the machine that used it.
    pub host: String,
    /// Its `--spool-max-bytes`.
    pub max_bytes: u64,
}

/// Records (or replaces) where `slot` spools; commits on its own.
pub(crate) async fn record(
    target: &Client,
    slot: &str,
    spool: &Recorded,
) -> Result<(), StateError> {
    target
        .batch_execute(DDL)
        .await
        .map_err(sql("creating walrelay.spool"))?;
    let max_bytes = i64::try_from(spool.max_bytes).unwrap_or(i64::MAX);
    target
        .execute(
            "INSERT INTO walrelay.spool (slot_name, dir, host, max_bytes) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (slot_name) DO UPDATE SET dir = EXCLUDED.dir, host = EXCLUDED.host, \
             max_bytes = EXCLUDED.max_bytes, recorded_at = now()",
            &[&slot, &spool.dir, &spool.host, &max_bytes],
        )
        .await
        .map(drop)
        .map_err(sql("recording the spool directory (walrelay.spool)"))
}

/// Where `slot` spools, if it ever did (`None` also without the table).
pub(crate) async fn read(target: &Client, slot: &str) -> Result<Option<Recorded>, StateError> {
    let exists: bool = target
        .query_one("SELECT to_regclass('walrelay.spool') IS NOT NULL", &[])
        .await
        .map_err(sql("looking for walrelay.spool"))?
        .get(0);
    if !exists {
        return Ok(None);
    }
    Ok(target
        .query_opt(
            "SELECT dir, host, max_bytes FROM walrelay.spool WHERE slot_name = $1",
            &[&slot],
        )
        .await
        .map_err(sql("reading walrelay.spool"))?
        .map(|row| Recorded {
            dir: row.get(0),
            host: row.get(1),
            max_bytes: row.get::<_, i64>(2).max(0) as u64,
        }))
}
