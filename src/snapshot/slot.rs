//! The publication, the replication slot and the exported snapshot.
//!
//! `CREATE_REPLICATION_SLOT … (SNAPSHOT 'export')` (PostgreSQL 15+; 14
//! takes `… EXPORT_SNAPSHOT`, see [`create_slot_command`]) runs on a gated
//! pgwire-replication session, which then stays idle: the exported snapshot
//! lives exactly as long as that session runs no other command and stays
//! open (docs/ARCHITECTURE.md, Protocol facts). [`ExportedSnapshot`]
//! owns that session; dropping it releases the snapshot.

use std::collections::BTreeSet;

use pgwire_replication::ReplicationClient;
use tokio_postgres::Client;
use walrelay_proto::Lsn;

use crate::map::Published;
use crate::pg::catalog::{quote_ident, quote_literal, session_names, Table};
use crate::pg::connect::{self, error_text};
use crate::pg::conninfo::ConnInfo;
use crate::pg::error::grant_hint;
use crate::pg::publication::{self, Existing};

/// Why the slot or publication could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum SlotError {
    #[error("replication session to {who}: {message}")]
    Session { who: String, message: String },
    #[error("{what}: {message}")]
    Sql { what: String, message: String },
    #[error("{problem}; {fix}")]
    PublicationFiltered { problem: String, fix: String },
    #[error("unexpected answer to CREATE_REPLICATION_SLOT: {0}")]
    Answer(String),
    #[error("CREATE_REPLICATION_SLOT answered an unreadable consistent point: {0}")]
    ConsistentPoint(#[source] walrelay_proto::ParseLsnError),
}

fn sql(what: impl Into<String>) -> impl FnOnce(tokio_postgres::Error) -> SlotError {
    let what = what.into();
    move |err| SlotError::Sql {
        what,
        message: error_text(&err),
    }
}

/// A snapshot exported by a slot, held open by its idle replication session.
pub(crate) struct ExportedSnapshot {
    session: ReplicationClient,
    /// The name importers pass to `SET TRANSACTION SNAPSHOT`.
    pub name: String,
    /// The slot's consistent point: the snapshot shows exactly the
    /// transactions that committed before it.
    pub consistent_lsn: Lsn,
    /// The source's system identifier.
    pub system_id: String,
}

impl ExportedSnapshot {
    /// Creates `slot` (permanent, or temporary for a resume) with an exported
    /// snapshot on a fresh replication session of a source of major version
    /// `server_major`.
    pub(crate) async fn create(
        source: &ConnInfo,
        server_major: u32,
        slot: &str,
        publication: &str,
        temporary: bool,
    ) -> Result<Self, SlotError> {
        let who = source.display();
        let session_err = |e: pgwire_replication::PgWireError| SlotError::Session {
            who: who.clone(),
            message: e.to_string(),
        };
        let cfg = connect::replication_config(source, slot, publication).map_err(|e| {
            SlotError::Session {
                who: who.clone(),
                message: e.to_string(),
            }
        })?;
        let mut session = ReplicationClient::connect_gated(cfg)
            .await
            .map_err(session_err)?;
        let ident = session.identify_system().await.map_err(session_err)?;
        let command = create_slot_command(server_major, slot, temporary);
        let create = session.simple_query(&command);
        let rows = tokio::select! {
            rows = create => rows.map_err(session_err)?,
            never = report_waits(source, slot) => match never {},
        };
        let row = rows
            .into_iter()
            .next()
            .ok_or_else(|| SlotError::Answer("no row".into()))?;
        let text = |i: usize| {
            row.get(i)
                .and_then(|v| v.as_ref())
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .ok_or_else(|| SlotError::Answer(format!("column {i} missing")))
        };
        // The replication protocol answers in text: the one place an LSN is
        // parsed, and an unreadable one is an error, never 0/0.
        let consistent_lsn = text(1)?.parse().map_err(SlotError::ConsistentPoint)?;
        Ok(ExportedSnapshot {
            consistent_lsn,
            name: text(2)?,
            system_id: ident.system_id,
            session,
        })
    }

    /// Ends the session, releasing the snapshot (a temporary slot goes with
    /// it): dropping a gated client closes its gate, and the worker then
    /// terminates the session (`shutdown` would wait for a stream that never
    /// started).
    pub(crate) fn release(self) {
        drop(self.session);
    }
}

/// The walsender command creating `slot` with an exported snapshot. The
/// parenthesized option list arrived in PostgreSQL 15; a 14 walsender
/// answers it with a syntax error (42601) and takes the older keyword form,
/// which 15–18 still accept but document as deprecated: each version gets
/// the form it documents.
fn create_slot_command(server_major: u32, slot: &str, temporary: bool) -> String {
    let kind = if temporary { " TEMPORARY" } else { "" };
    if server_major >= 15 {
        format!("CREATE_REPLICATION_SLOT {slot}{kind} LOGICAL pgoutput (SNAPSHOT 'export')")
    } else {
        format!("CREATE_REPLICATION_SLOT {slot}{kind} LOGICAL pgoutput EXPORT_SNAPSHOT")
    }
}

/// Creates the publication for exactly `tables`, or makes an existing one
/// publish exactly them (a re-run after a failure before the slot existed,
/// or the operator's own). An existing one is never changed silently: one
/// with row filters or column lists is refused (`SET TABLE` would drop
/// them), and any change to its table list is logged.
pub(crate) async fn ensure_publication(
    source: &Client,
    publication: &str,
    tables: &[Table],
    published: &Published,
) -> Result<(), SlotError> {
    let list = &published.list;
    let found = publication::existing(source, publication)
        .await
        .map_err(sql("reading pg_publication"))?;
    let stmt = match found {
        None => format!(
            "CREATE PUBLICATION {name} FOR TABLE {list}; COMMENT ON PUBLICATION {name} IS {}",
            quote_literal(publication::WALRELAYS),
            name = quote_ident(publication)
        ),
        Some(found) => {
            if let Some(problem) = found.refusal(publication, &published.mapped) {
                return Err(SlotError::PublicationFiltered {
                    problem,
                    fix: Existing::refusal_fix(publication),
                });
            }
            let wanted: BTreeSet<u32> = tables.iter().map(|t| t.oid).collect();
            let have: BTreeSet<u32> = found.tables.iter().copied().collect();
            let same_filters = found.filtered_oids.is_empty() && published.mapped.is_empty();
            if wanted == have && same_filters && found.schemas.is_empty() && !found.all_tables {
                return Ok(());
            }
            tracing::warn!(
                publication,
                adding = wanted.difference(&have).count(),
                removing = have.difference(&wanted).count(),
                removing_schemas = %found.schemas.join(","),
                mapped_filters = published.mapped.len(),
                "the publication exists: setting its table list to exactly the selected tables (ALTER PUBLICATION … SET TABLE)"
            );
            format!(
                "ALTER PUBLICATION {} SET TABLE {list}",
                quote_ident(publication)
            )
        }
    };
    match source.batch_execute(&stmt).await {
        Ok(()) => Ok(()),
        Err(err) => {
            let (role, db) = session_names(source).await;
            let hint = grant_hint(&err, || {
                format!(
                    "CREATE PUBLICATION needs CREATE on the database and ownership of every published table: GRANT CREATE ON DATABASE {db} TO {role}; ALTER TABLE … OWNER TO {role}; (or have the tables' owner run: {stmt}; and pass --publication {publication})"
                )
            });
            Err(SlotError::Sql {
                what: format!("creating publication {publication}"),
                message: format!("{}{hint}", error_text(&err)),
            })
        }
    }
}

/// What the source knows of `slot`: `Some(plugin)` when it exists.
pub(crate) async fn slot_plugin(source: &Client, slot: &str) -> Result<Option<String>, SlotError> {
    Ok(source
        .query_opt(
            "SELECT coalesce(plugin, '') FROM pg_replication_slots WHERE slot_name = $1",
            &[&slot],
        )
        .await
        .map_err(sql("reading pg_replication_slots"))?
        .map(|row| row.get(0)))
}

/// Drops `slot` if it exists in this database (waiting for nothing: an
/// active slot is an error); another database's slot of that name stays.
pub(crate) async fn drop_slot(source: &Client, slot: &str) -> Result<(), SlotError> {
    source
        .batch_execute(&format!(
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots \
             WHERE slot_name = {} AND database = current_database()",
            quote_literal(slot)
        ))
        .await
        .map_err(sql(format!("dropping slot {slot}")))
}

/// Whose a replication slot is. Slots are server-wide: a name this
/// migration wants may be held by another database's migration (or a
/// standby), which no command run for this database may drop.
#[derive(Debug, Clone)]
pub(crate) struct SlotOwner {
    /// The slot's database; `None` for a physical slot.
    pub database: Option<String>,
    pub plugin: Option<String>,
    pub active_pid: Option<i32>,
    /// The database this session is connected to.
    pub current: String,
}

impl SlotOwner {
    /// Whether the slot belongs to the connected database.
    pub(crate) fn is_here(&self) -> bool {
        self.database.as_deref() == Some(self.current.as_str())
    }

    /// "belongs to database app (plugin pgoutput, not active)", or what a
    /// physical slot is.
    pub(crate) fn whose(&self) -> String {
        let activity = match self.active_pid {
            Some(pid) => format!("active: pid {pid}"),
            None => "not active".into(),
        };
        match &self.database {
            Some(db) => format!(
                "belongs to database {db} (plugin {}, {activity})",
                self.plugin.as_deref().unwrap_or("none")
            ),
            None => format!("is a physical slot (a standby's, {activity})"),
        }
    }
}

/// Who holds `slot` on the source server, if it exists.
pub(crate) async fn slot_owner(
    source: &Client,
    slot: &str,
) -> Result<Option<SlotOwner>, tokio_postgres::Error> {
    let row = source
        .query_opt(
            "SELECT database::text, plugin::text, active_pid, current_database()::text \
             FROM pg_replication_slots WHERE slot_name = $1",
            &[&slot],
        )
        .await?;
    Ok(row.map(|row| SlotOwner {
        database: row.get(0),
        plugin: row.get(1),
        active_pid: row.get(2),
        current: row.get(3),
    }))
}

/// The refusal for a slot name that exists on the source while this
/// target records no snapshot of it. A cleanup is advised only for a slot
/// of this database: another database's slot is never ours to drop.
pub(crate) async fn slot_taken(source: &Client, slot: &str) -> Result<String, SlotError> {
    let owner = slot_owner(source, slot)
        .await
        .map_err(sql("reading pg_replication_slots"))?;
    Ok(match owner {
        Some(owner) if !owner.is_here() => format!(
            "replication slot {slot} already exists on the source server and {}, not to {}: leave it alone (it may be that database's migration); choose another slot name for this migration with --slot <name>, and pass the same --slot to every later command",
            owner.whose(),
            owner.current
        ),
        _ => format!(
            "replication slot {slot} already exists in the source database and this target has no record of it, so it is not a walrelay snapshot into this target: pick another --slot, or if it is a leftover, drop it (`walrelay cleanup --yes`, or SELECT pg_drop_replication_slot('{slot}') on the source)"
        ),
    })
}

/// How often slot creation says what it still waits for.
const WAIT_REPORT_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// Slot creation waits for every transaction on the server that holds an
/// xid (prepared ones included) to end; every few seconds this names them,
/// by pid, application, age and gid, never by query text. Runs until
/// dropped; a failure to look only skips that report.
async fn report_waits(source: &ConnInfo, slot: &str) -> std::convert::Infallible {
    let mut client = None;
    loop {
        tokio::time::sleep(WAIT_REPORT_EVERY).await;
        if client.is_none() {
            client = connect::connect(source, "walrelay-snapshot-wait")
                .await
                .ok();
        }
        let Some(c) = &client else { continue };
        match waiting_on(c).await {
            Ok(holders) if !holders.is_empty() => tracing::warn!(
                slot,
                waiting_for = %holders.join("; "),
                "creating the slot waits for transactions that hold an xid to end (commit, roll back or COMMIT/ROLLBACK PREPARED them)"
            ),
            Ok(_) => {}
            Err(err) => {
                tracing::debug!(error = %error_text(&err), "cannot read what slot creation waits for");
                client = None;
            }
        }
    }
}

/// Transactions holding an xid (other than this session's) and prepared
/// transactions, as "pid 123 (app x, open 42 s)" and
/// "prepared transaction 'gid' (owner o, prepared 42 s ago)".
async fn waiting_on(client: &Client) -> Result<Vec<String>, tokio_postgres::Error> {
    let rows = client
        .query(
            "SELECT format('pid %s (application %L, database %s, open %s s)', pid, \
                    application_name, coalesce(datname, '-'), \
                    coalesce(extract(epoch FROM now() - xact_start)::bigint, 0)) \
             FROM pg_stat_activity \
             WHERE backend_xid IS NOT NULL AND pid <> pg_backend_pid() \
               AND backend_type = 'client backend' \
             UNION ALL \
             SELECT format('prepared transaction %L (owner %s, database %s, prepared %s s ago)', \
                    gid, owner, database, extract(epoch FROM now() - prepared)::bigint) \
             FROM pg_prepared_xacts",
            &[],
        )
        .await?;
    Ok(rows.into_iter().map(|r| r.get(0)).collect())
}

#[cfg(test)]
mod tests {
    use super::create_slot_command;

    #[test]
    fn postgres_14_gets_the_keyword_form_and_15_on_the_option_list() {
        assert_eq!(
            create_slot_command(14, "s", false),
            "CREATE_REPLICATION_SLOT s LOGICAL pgoutput EXPORT_SNAPSHOT"
        );
        assert_eq!(
            create_slot_command(14, "s_resume", true),
            "CREATE_REPLICATION_SLOT s_resume TEMPORARY LOGICAL pgoutput EXPORT_SNAPSHOT"
        );
        for major in [15, 16, 17, 18] {
            assert_eq!(
                create_slot_command(major, "s", false),
                "CREATE_REPLICATION_SLOT s LOGICAL pgoutput (SNAPSHOT 'export')"
            );
        }
    }
}
