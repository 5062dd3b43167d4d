//! `walrelay cleanup`: drops what walrelay created — the slot and the
//! publication on the source, the `walrelay` schema on the target — so a
//! migration can start over or end. Refuses while a streamer holds the slot.

use crate::config::Config;
use crate::pg::catalog::{quote_ident, quote_literal};
use crate::pg::connect::{self, error_text};

/// Why cleanup stopped.
#[derive(Debug, thiserror::Error)]
pub enum CleanupError {
    #[error("refusing without --yes: this drops slot {slot} and publication {publication} on the source and the walrelay schema on the target")]
    NotConfirmed { slot: String, publication: String },
    #[error(
        "slot {slot} is in use by a running walrelay (pid {pid} on the source): stop it first"
    )]
    Active { slot: String, pid: i32 },
    #[error(transparent)]
    Connect(#[from] connect::ConnectError),
    #[error("{what}: {message}")]
    Sql { what: &'static str, message: String },
    #[error(transparent)]
    State(#[from] crate::state::StateError),
}

fn sql(what: &'static str) -> impl Fn(tokio_postgres::Error) -> CleanupError {
    move |err| CleanupError::Sql {
        what,
        message: error_text(&err),
    }
}

/// Drops slot, publication and the target's state; returns what was done.
pub async fn run(config: &Config, yes: bool) -> Result<Vec<String>, CleanupError> {
    if !yes {
        return Err(CleanupError::NotConfirmed {
            slot: config.slot.clone(),
            publication: config.publication.clone(),
        });
    }
    let source = connect::connect(&config.source, "walrelay-cleanup").await?;
    let mut done = Vec::new();
    let slot = source
        .query_opt(
            "SELECT active_pid FROM pg_replication_slots WHERE slot_name = $1",
            &[&config.slot],
        )
        .await
        .map_err(sql("reading the slot"))?;
    if let Some(row) = slot {
        if let Some(pid) = row.get::<_, Option<i32>>(0) {
            return Err(CleanupError::Active {
                slot: config.slot.clone(),
                pid,
            });
        }
        source
            .batch_execute(&format!(
                "SELECT pg_drop_replication_slot({})",
                quote_literal(&config.slot)
            ))
            .await
            .map_err(sql("dropping the slot"))?;
        done.push(format!("dropped slot {} on the source", config.slot));
    }
    let publication = quote_ident(&config.publication);
    source
        .batch_execute(&format!("DROP PUBLICATION IF EXISTS {publication}"))
        .await
        .map_err(sql("dropping the publication"))?;
    done.push(format!(
        "dropped publication {} on the source (if it existed)",
        config.publication
    ));
    let target = connect::connect(&config.target, "walrelay-cleanup").await?;
    crate::state::drop_schema(&target).await?;
    done.push(
        "dropped schema walrelay on the target (if it existed); the copied tables stay".into(),
    );
    Ok(done)
}
