//! What could still write to the source when cutover is about to say "safe
//! to switch", and what did write after the marker.
//!
//! The fence is a default (`default_transaction_read_only`), not a lock: a
//! session that asks for `BEGIN READ WRITE`, a session connected before it
//! (its setting is read at connection), and `COMMIT PREPARED` of a
//! transaction prepared earlier all still write. So the verdict checks:
//! - prepared transactions of this database (they can commit any time);
//! - with the source fenced, the client sessions still connected that the
//!   fence did not end (`--fence-list-only`, roles outside `--fence-role`,
//!   sessions that did not go), each able to write;
//! - the writes themselves: a temporary slot created after the fence (if
//!   any) and before the marker is read up to the marker, then to the end
//!   of the WAL; a change to a selected table in what follows was committed
//!   after the marker, so the target is behind again and the application
//!   (or something) still writes. Decoding is exact where counters are not:
//!   the per-table statistics (`pg_stat_user_tables`) are flushed by each
//!   backend up to seconds late, and the WAL position moves for reasons
//!   that are not writes (heartbeats, checkpoints, other databases).
//!
//! Sessions named `walrelay*` are walrelay's own (the stream's, this
//! cutover's) or pretend to be: they are not reasons by their name alone,
//! but one holding a transaction id is (it has written and not committed),
//! and whatever one committed after the marker is a write like any other.
//! Reports name tables, transaction names, pids, roles and applications,
//! never rows.

use std::collections::{BTreeSet, HashMap};

use bytes::Bytes;
use tokio_postgres::Client;
use walrelay_proto::{decode, DecodeContext, Lsn, Message};

use crate::config::Config;
use crate::migration::MigrationPlan;
use crate::pg::catalog::quote_ident;
use crate::pg::connect::{self, safe_error_text};

use super::{sql, CutoverError, CutoverOptions, CutoverReport, APPLICATION};

/// Changes read per call (the server finishes the transaction that
/// crosses it).
const PAGE: i32 = 10_000;

/// The session that watches, connected before the fence so the fenced
/// window holds only the slot's creation.
pub(super) struct Watcher {
    client: Client,
    pid: i32,
    /// `schema.name` of the selected tables.
    selected: BTreeSet<String>,
}

/// The temporary slot that sees writes committed after the marker; it goes
/// with its session.
pub(super) struct Watch {
    watcher: Watcher,
    slot: String,
    publication: String,
    /// Table names by relation id, as the change stream announced them.
    relations: HashMap<u32, String>,
}

/// Connects the watching session (before the fence).
pub(super) async fn connect(
    config: &Config,
    plan: &MigrationPlan,
    opts: &CutoverOptions,
) -> Result<Watcher, CutoverError> {
    // Creating a logical slot waits for every transaction open at that
    // moment: bound it, an open transaction is a writer left running.
    let mut info = config.source.clone();
    let bound = format!("-c statement_timeout={}", opts.timeout.as_millis().max(1));
    info.options = Some(match info.options.take() {
        Some(o) if !o.trim().is_empty() => format!("{o} {bound}"),
        _ => bound,
    });
    let client = connect::connect(&info, APPLICATION).await?;
    let pid = client
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .map_err(sql("reading the watching session's pid"))?
        .get(0);
    let selected = plan
        .tables
        .iter()
        .map(|t| format!("{}.{}", t.schema, t.name))
        .collect();
    Ok(Watcher {
        client,
        pid,
        selected,
    })
}

impl Watcher {
    /// Creates the slot; call after the fence, before the marker. An error
    /// is the reason the verdict cannot be "safe" (nothing would prove the
    /// window).
    pub(super) async fn start(self, config: &Config) -> Result<Watch, String> {
        let started = std::time::Instant::now();
        let slot = slot_name(&config.slot, self.pid.unsigned_abs());
        let created = self
            .client
            .query_one(
                "SELECT lsn FROM pg_create_logical_replication_slot($1, 'pgoutput', true)",
                &[&slot],
            )
            .await;
        tracing::debug!(seconds = started.elapsed().as_secs_f64(), slot = %slot, "watching for writes after the marker");
        match created {
            Ok(_) => Ok(Watch {
                watcher: self,
                slot,
                publication: config.publication.clone(),
                relations: HashMap::new(),
            }),
            Err(err) => Err(format!(
                "cannot watch the source for writes after the marker ({}); this needs a free replication slot, and no transaction left open on the source for --timeout",
                safe_error_text(&err)
            )),
        }
    }
}

impl Watch {
    /// The selected tables changed by the transactions committed since the
    /// last drain, up to `upto` or to the end of the WAL.
    async fn drain(&mut self, upto: Option<Lsn>) -> Result<BTreeSet<String>, String> {
        let publications = quote_ident(&self.publication);
        let mut changed = BTreeSet::new();
        loop {
            let rows = self
                .watcher
                .client
                .query(
                    "SELECT data FROM pg_logical_slot_get_binary_changes($1, $2, $3, \
                     'proto_version', '1', 'publication_names', $4)",
                    &[&self.slot, &upto, &PAGE, &publications],
                )
                .await
                .map_err(|e| safe_error_text(&e))?;
            for row in &rows {
                let data = Bytes::from(row.get::<_, Vec<u8>>(0));
                let message = decode(&data, DecodeContext::default()).map_err(|e| e.to_string())?;
                let ids = match &message {
                    Message::Relation(r) => {
                        let name = format!("{}.{}", r.namespace, r.name);
                        self.relations.insert(r.id, name);
                        continue;
                    }
                    Message::Insert(m) => vec![m.relation_id],
                    Message::Update(m) => vec![m.relation_id],
                    Message::Delete(m) => vec![m.relation_id],
                    Message::Truncate(m) => m.relation_ids.clone(),
                    _ => continue,
                };
                // Values are never looked at: only which table changed.
                for id in ids {
                    match self.relations.get(&id) {
                        Some(name) if self.watcher.selected.contains(name) => {
                            changed.insert(name.clone());
                        }
                        Some(_) => {}
                        // pgoutput announces a table before its first
                        // change; without that, it may be a selected one.
                        None => {
                            changed.insert(format!("relation {id}"));
                        }
                    }
                }
            }
            if rows.len() < PAGE as usize {
                return Ok(changed);
            }
        }
    }
}

/// `{slot}_watch_{pid}`, cut to PostgreSQL's 63-byte name limit.
fn slot_name(slot: &str, pid: u32) -> String {
    let suffix = format!("_watch_{pid}");
    let mut keep = slot.len().min(63 - suffix.len());
    while !slot.is_char_boundary(keep) {
        keep -= 1;
    }
    format!("{}{suffix}", &slot[..keep])
}

/// Stops before anything is fenced when a transaction of this database is
/// prepared (it could commit after the fence; and creating the tracking
/// slot would wait for it). `true`: stop, the reason is in the report.
pub(super) async fn stop_on_prepared(
    source: &Client,
    report: &mut CutoverReport,
) -> Result<bool, CutoverError> {
    let prepared = prepared(source).await?;
    if prepared.is_empty() {
        return Ok(false);
    }
    report.reasons.push(format!(
        "{} prepared transaction(s) in this database can commit at any time, after a fence too: {}; COMMIT PREPARED or ROLLBACK PREPARED them, then re-run (nothing was fenced)",
        prepared.len(),
        prepared.join(", ")
    ));
    Ok(true)
}

/// `gid "…" (owner …)` of each prepared transaction of this database.
async fn prepared(source: &Client) -> Result<Vec<String>, CutoverError> {
    Ok(source
        .query(
            "SELECT gid, owner::text FROM pg_prepared_xacts \
             WHERE database = current_database() ORDER BY prepared",
            &[],
        )
        .await
        .map_err(sql("listing the prepared transactions on the source"))?
        .iter()
        .map(|r| {
            format!(
                "gid {:?} (owner {})",
                r.get::<_, String>(0),
                r.get::<_, String>(1)
            )
        })
        .collect())
}

/// The checks of the module doc, just before the verdict; reasons and
/// warnings go into the report. `report.fenced` becomes the source's real
/// state.
pub(super) async fn check(
    source: &Client,
    mut watch: Watch,
    marker: Lsn,
    opts: &CutoverOptions,
    report: &mut CutoverReport,
) -> Result<(), CutoverError> {
    report.fenced = super::fence::is_fenced(source).await?;
    if opts.fence && !report.fenced {
        report.reasons.push(
            "the source is no longer fenced: default_transaction_read_only was reset on the database during the cutover".into(),
        );
    }
    let prepared = prepared(source).await?;
    if !prepared.is_empty() {
        report.reasons.push(format!(
            "{} prepared transaction(s) in this database can still commit: {}; COMMIT PREPARED or ROLLBACK PREPARED them, then re-run",
            prepared.len(),
            prepared.join(", ")
        ));
    }
    if report.fenced {
        sessions(source, watch.watcher.pid, report).await?;
    }
    let written = written_after(&mut watch, marker).await;
    // The slot goes with its session; dropping it now frees it at once.
    if let Err(err) = watch
        .watcher
        .client
        .execute("SELECT pg_drop_replication_slot($1)", &[&watch.slot])
        .await
    {
        tracing::debug!(slot = %watch.slot, error = %safe_error_text(&err), "watching slot not dropped; it goes with the session");
    }
    match written {
        Err(why) => report.reasons.push(why),
        Ok(tables) if tables.is_empty() => {}
        Ok(tables) if report.fenced => report.reasons.push(format!(
            "writes to {} were committed after the fence and the marker {marker}: something still writes (a session connected before the fence, one that asked for READ WRITE, or one the fence left running); stop it, then re-run",
            tables.join(", ")
        )),
        Ok(tables) => report.reasons.push(format!(
            "writes to {} were committed after the marker {marker}: the application is still writing, so the target is behind again; use --fence, or stop the application first, then re-run",
            tables.join(", ")
        )),
    }
    if !report.fenced && report.reasons.is_empty() {
        report.warnings.push(
            "the source is not fenced: nothing wrote to the selected tables between the marker and the verdict, but nothing stops the next write; switch with the application stopped, or use --fence".into(),
        );
    }
    Ok(())
}

/// The selected tables changed by transactions committed after `marker`.
async fn written_after(watch: &mut Watch, marker: Lsn) -> Result<Vec<String>, String> {
    let cannot =
        |err: String| format!("cannot tell whether anything wrote after the marker ({err})");
    // Up to the marker: committed before it, applied and verified.
    watch.drain(Some(marker)).await.map_err(cannot)?;
    let after = watch.drain(None).await.map_err(cannot)?;
    Ok(after.into_iter().collect())
}

/// Client sessions of the database the fence did not end (walrelay's own
/// excepted); see the module doc.
async fn sessions(
    source: &Client,
    watcher: i32,
    report: &mut CutoverReport,
) -> Result<(), CutoverError> {
    let rows = source
        .query(
            "SELECT pid, coalesce(usename::text, ''), coalesce(application_name, ''), \
                    backend_xid IS NOT NULL \
             FROM pg_stat_activity \
             WHERE datname = current_database() AND backend_type = 'client backend' \
               AND pid <> pg_backend_pid() AND pid <> $1 \
             ORDER BY pid",
            &[&watcher],
        )
        .await
        .map_err(sql("listing the sessions still connected to the source"))?;
    let mut writers = Vec::new();
    let mut named = Vec::new();
    for row in &rows {
        let (pid, user, app, xid): (i32, String, String, bool) =
            (row.get(0), row.get(1), row.get(2), row.get(3));
        let who = format!("pid {pid} role {user} application {app:?}");
        if !app.starts_with("walrelay") {
            writers.push(who);
        } else if xid {
            writers.push(format!("{who} (holds an open write transaction)"));
        } else {
            named.push(pid.to_string());
        }
    }
    if !writers.is_empty() {
        report.reasons.push(format!(
            "{} session(s) the fence did not end are still connected and can write (the fence is only a default: a session connected before it, or asking for READ WRITE, writes): {}; end them (a fence without --fence-list-only or --fence-role does), then re-run",
            writers.len(),
            writers.join(", ")
        ));
    }
    if !named.is_empty() {
        report.warnings.push(format!(
            "{} session(s) named walrelay* were left connected by the fence (pids {}): none holds an open write transaction (what they committed after the marker counts as any write)",
            named.len(),
            named.join(", ")
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::slot_name;

    #[test]
    fn watching_slot_names_fit_postgres_names() {
        assert_eq!(slot_name("walrelay", 42), "walrelay_watch_42");
        let name = slot_name(&"s".repeat(80), 4_000_000);
        assert_eq!(name.len(), 63);
        assert!(name.ends_with("_watch_4000000"));
        // A multi-byte slot name is cut on a character boundary.
        let name = slot_name(&"é".repeat(40), 4_000_000);
        assert!(
            name.len() <= 63 && name.ends_with("_watch_4000000"),
            "{name}"
        );
    }
}
