//! `walrelay cleanup`: drops what walrelay created — the slot and the
//! publication on the source, this slot's spool directory, the `walrelay`
//! schema on the target — so a migration can start over or end. Refuses while a streamer holds the slot,
//! and never touches a slot of another database: slots are server-wide, and
//! a slot of that name elsewhere is another migration's.

use std::path::{Path, PathBuf};

use crate::config::Config;
use crate::pg::catalog::{quote_ident, quote_literal, session_names};
use crate::pg::connect::{self, error_text};
use crate::pg::error::grant_hint;
use crate::snapshot::slot::{slot_owner, SlotOwner};

/// Why cleanup stopped.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CleanupError {
    #[error("refusing without --yes: this drops slot {slot} and publication {publication} on the source, the slot's spool directory (if one was used) and the walrelay schema on the target")]
    NotConfirmed { slot: String, publication: String },
    #[error(
        "slot {slot} is in use by a running walrelay (pid {pid} on the source): stop it first"
    )]
    Active { slot: String, pid: i32 },
    #[error(
        "slot {slot} {}; this cleanup is for database {}, so the slot was left alone and nothing was dropped: if this migration used another slot name, run cleanup with --slot <that name>",
        owner.whose(),
        owner.current
    )]
    OtherDatabase { slot: String, owner: SlotOwner },
    #[error(transparent)]
    Connect(#[from] connect::ConnectError),
    #[error("{what}: {message}")]
    Sql { what: &'static str, message: String },
    #[error(transparent)]
    State(#[from] crate::state::StateError),
    #[error("{0}")]
    Refused(String),
}

fn sql(what: &'static str) -> impl Fn(tokio_postgres::Error) -> CleanupError {
    move |err| CleanupError::Sql {
        what,
        message: error_text(&err),
    }
}

/// Drops slot, publication, the slot's spool and the target's state;
/// returns what was done. `spool_dir` (`--spool-dir`) stands in for the
/// directory the target's state records.
pub(crate) async fn run(
    config: &Config,
    yes: bool,
    spool_dir: Option<&Path>,
) -> Result<Vec<String>, CleanupError> {
    if !yes {
        return Err(CleanupError::NotConfirmed {
            slot: config.slot.clone(),
            publication: config.publication.clone(),
        });
    }
    let source = connect::connect(&config.source, "walrelay-cleanup").await?;
    let target = connect::connect(&config.target, "walrelay-cleanup").await?;
    let recorded = crate::state::spool::read(&target, &config.slot).await?;
    let mut done = Vec::new();
    let owner = slot_owner(&source, &config.slot)
        .await
        .map_err(sql("reading the slot"))?;
    if let Some(owner) = owner {
        drop_own_slot(&source, &config.slot, owner).await?;
        done.push(format!("dropped slot {} on the source", config.slot));
    }
    // The event trigger first: DDL on the source never finds it without its function.
    if let Err(err) = source.batch_execute(crate::ddl::trigger::UNINSTALL).await {
        let hint = grant_hint(&err, || {
            "only a superuser (or the triggers' owner) may drop walrelay's event triggers: have one run DROP EVENT TRIGGER walrelay_ddl_end; DROP EVENT TRIGGER walrelay_ddl_drop;".to_string()
        });
        return Err(CleanupError::Sql {
            what: "dropping walrelay's event trigger",
            message: format!("{}{hint}", error_text(&err)),
        });
    }
    // Its schema only if nothing else is in it.
    let _ = source.batch_execute("DROP SCHEMA IF EXISTS walrelay").await;
    done.push("dropped walrelay's event trigger on the source (if it existed)".into());
    let publication = quote_ident(&config.publication);
    let drop = format!("DROP PUBLICATION IF EXISTS {publication}");
    if let Err(err) = source.batch_execute(&drop).await {
        let (role, _) = session_names(&source).await;
        let hint = grant_hint(&err, || {
            format!("only the publication's owner may drop it: ALTER PUBLICATION {publication} OWNER TO {role}; or have its owner run {drop};")
        });
        return Err(CleanupError::Sql {
            what: "dropping the publication",
            message: format!("{}{hint}", error_text(&err)),
        });
    }
    done.push(format!(
        "dropped publication {} on the source (if it existed)",
        config.publication
    ));
    if let Some(line) = remove_spool(&config.slot, spool_dir, recorded)? {
        done.push(line);
    }
    if let Err(err) = crate::state::drop_schema(&target).await {
        if err.is_missing_privilege() {
            let (role, _) = session_names(&target).await;
            return Err(CleanupError::Refused(format!("{err}; only its owner may drop it: ALTER SCHEMA walrelay OWNER TO {role}; or have its owner run DROP SCHEMA walrelay CASCADE;")));
        }
        return Err(err.into());
    }
    done.push(
        "dropped schema walrelay on the target (if it existed); the copied tables stay".into(),
    );
    Ok(done)
}

/// Drops `slot` only if it belongs to the connected database and nothing
/// streams from it; the guard is repeated in the statement itself.
async fn drop_own_slot(
    source: &tokio_postgres::Client,
    slot: &str,
    owner: SlotOwner,
) -> Result<(), CleanupError> {
    if !owner.is_here() {
        return Err(CleanupError::OtherDatabase {
            slot: slot.to_string(),
            owner,
        });
    }
    if let Some(pid) = owner.active_pid {
        return Err(CleanupError::Active {
            slot: slot.to_string(),
            pid,
        });
    }
    if let Err(err) = source
        .batch_execute(&format!(
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots \
             WHERE slot_name = {} AND database = current_database()",
            quote_literal(slot)
        ))
        .await
    {
        let (role, _) = session_names(source).await;
        let hint = grant_hint(&err, || format!("ALTER ROLE {role} REPLICATION;"));
        return Err(CleanupError::Sql {
            what: "dropping the slot",
            message: format!("{}{hint}", error_text(&err)),
        });
    }
    Ok(())
}

/// Removes this slot's spool directory (`<spool dir>/<slot>`: its segment
/// files, then the directory if nothing else is in it); never another
/// slot's, whose spool is a sibling directory.
fn remove_spool(
    slot: &str,
    flag: Option<&Path>,
    recorded: Option<crate::state::spool::Recorded>,
) -> Result<Option<String>, CleanupError> {
    let (dir, host) = match (flag, recorded) {
        (Some(root), _) => (root.join(slot), None),
        (None, Some(r)) => (PathBuf::from(r.dir), Some(r.host)),
        (None, None) => return Ok(None),
    };
    if dir.file_name().and_then(|n| n.to_str()) != Some(slot) {
        return Ok(Some(format!(
            "left {} alone: it is not the spool directory of slot {slot}",
            dir.display()
        )));
    }
    if !dir.is_dir() {
        let here = crate::spool::host_name();
        return Ok(Some(match host {
            Some(host) => format!("the spool directory {} (recorded by host {host}) is not reachable from this machine ({here}): remove it there", dir.display()),
            None => format!("no spool directory {} on this machine", dir.display()),
        }));
    }
    let segments = crate::spool::files::segments(&dir)
        .map_err(|e| CleanupError::Refused(e.to_string()))?
        .len();
    crate::spool::files::remove_all(&dir).map_err(|e| CleanupError::Refused(e.to_string()))?;
    Ok(Some(match std::fs::remove_dir(&dir) {
        Ok(()) => format!(
            "removed the spool directory {} ({segments} segments)",
            dir.display()
        ),
        Err(err) => format!(
            "removed {segments} spool segments from {}; the directory stays ({err}): it holds files walrelay did not write",
            dir.display()
        ),
    }))
}
