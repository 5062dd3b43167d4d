//! Watching the slot while the snapshot runs.
//!
//! The copy is worth something only with the slot at its consistent point:
//! the stream must start there. A slot that the source's
//! `max_slot_wal_keep_size` invalidates (`wal_status = lost`: the server
//! removed WAL it needed), or that someone drops, can never be streamed
//! from, so every further row copied is wasted time on a copy that must be
//! redone. [`until_lost`] polls the slot on its own source session and
//! returns the error the snapshot stops with; the caller drops the copy
//! (its workers and any `pg_dump`/`pg_restore` go with it).

use std::time::Duration;

use tokio_postgres::Client;

use crate::pg::connect::{self, error_text};
use crate::pg::conninfo::ConnInfo;

/// How often the slot is read: a lost slot stops the copy within about this.
const POLL: Duration = Duration::from_secs(1);

/// How the slot was lost.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Loss {
    /// `wal_status = lost`: invalidated for the WAL it held.
    Invalidated,
    /// No slot of that name any more (dropped, or invalidated and removed).
    Gone,
}

/// The slot's loss, with what the operator needs to act on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotLost {
    pub slot: String,
    pub loss: Loss,
    /// The source's `max_slot_wal_keep_size` as it reports it (`-1`: none).
    pub keep_size: String,
}

impl std::fmt::Display for SlotLost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let what = match self.loss {
            Loss::Invalidated => "was invalidated (wal_status = lost)",
            Loss::Gone => "disappeared from the source (dropped, or invalidated and removed)",
        };
        write!(
            f,
            "replication slot {} {what} while the snapshot copied: the source's max_slot_wal_keep_size ({}) let it release WAL the stream must start from, so this copy can never be completed consistently and was stopped at once. To migrate: raise max_slot_wal_keep_size on the source (ALTER SYSTEM SET max_slot_wal_keep_size = '…', or -1; SELECT pg_reload_conf()), or give the copy a change-stream spool (--spool-dir) so the slot does not hold WAL while it copies; then `walrelay cleanup --yes`, empty the copied tables on the target, and run the snapshot again",
            self.slot, self.keep_size
        )
    }
}

/// Reads the slot every [`POLL`] until it is lost, then says how. A failed
/// read is logged and retried on a new session: the watcher never stops a
/// copy that the slot still allows.
pub(crate) async fn until_lost(source: &ConnInfo, slot: &str) -> SlotLost {
    let mut client: Option<Client> = None;
    let mut ticker = tokio::time::interval(POLL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        if client.as_ref().is_none_or(Client::is_closed) {
            match connect::connect(source, "walrelay-slot-watch").await {
                Ok(c) => client = Some(c),
                Err(err) => {
                    tracing::warn!(slot, error = %err, "cannot read the slot's state; retrying");
                    continue;
                }
            }
        }
        let Some(c) = client.as_ref() else { continue };
        match read(c, slot).await {
            Ok(Some(lost)) => return lost,
            Ok(None) => {}
            Err(err) => {
                tracing::warn!(slot, error = %error_text(&err), "cannot read the slot's state; retrying");
                client = None;
            }
        }
    }
}

/// `Some` once the slot is lost or gone.
async fn read(client: &Client, slot: &str) -> Result<Option<SlotLost>, tokio_postgres::Error> {
    let row = client
        .query_one(
            "SELECT s.slot_name IS NOT NULL, coalesce(s.wal_status, '') = 'lost', \
                    current_setting('max_slot_wal_keep_size') \
             FROM (SELECT 1) AS one LEFT JOIN pg_replication_slots AS s ON s.slot_name = $1",
            &[&slot],
        )
        .await?;
    let (exists, lost, keep_size): (bool, bool, String) = (row.get(0), row.get(1), row.get(2));
    let loss = match (exists, lost) {
        (false, _) => Loss::Gone,
        (true, true) => Loss::Invalidated,
        (true, false) => return Ok(None),
    };
    tracing::error!(
        slot,
        keep_size,
        ?loss,
        "the slot was lost while the snapshot copied"
    );
    Ok(Some(SlotLost {
        slot: slot.to_string(),
        loss,
        keep_size,
    }))
}
