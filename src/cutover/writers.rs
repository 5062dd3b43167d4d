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

use tokio_postgres::Client;

use crate::config::Config;
use crate::pg::catalog;

use super::track::Tracker;
use super::{sql, CutoverError, CutoverOptions, CutoverReport};

/// The temporary slot that sees writes committed after the marker.
pub(super) struct Watch(Tracker);

/// Starts watching; call before the marker is written. An error is the
/// reason the verdict cannot be "safe" (nothing would prove the window).
pub(super) async fn watch(config: &Config, opts: &CutoverOptions) -> Result<Watch, String> {
    // Creating a logical slot waits for every transaction open at that
    // moment: bound it, an open transaction is a writer left running.
    let mut config = config.clone();
    let bound = format!("-c statement_timeout={}", opts.timeout.as_millis().max(1));
    config.source.options = Some(match config.source.options.take() {
        Some(o) if !o.trim().is_empty() => format!("{o} {bound}"),
        _ => bound,
    });
    // Keys are not needed, only tables: hold none.
    Tracker::start(&config, 0)
        .await
        .map(Watch)
        .map_err(|err| {
            format!(
                "cannot watch the source for writes after the marker ({err}); this needs a free replication slot, and no transaction left open on the source for --timeout"
            )
        })
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
    config: &Config,
    source: &Client,
    watch: Watch,
    marker: &str,
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
        sessions(config, source, report).await?;
    }
    match written_after(config, source, watch.0, marker).await {
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
async fn written_after(
    config: &Config,
    source: &Client,
    mut tracker: Tracker,
    marker: &str,
) -> Result<Vec<String>, String> {
    let cannot = |err: &dyn std::fmt::Display| {
        format!("cannot tell whether anything wrote after the marker ({err})")
    };
    // Up to the marker: committed before it, applied and verified.
    tracker.drain(Some(marker)).await.map_err(|e| cannot(&e))?;
    let after = tracker.drain(None).await.map_err(|e| cannot(&e))?;
    tracker.close().await;
    if after.is_empty() {
        return Ok(Vec::new());
    }
    let tables = catalog::selected_tables(source, &config.selection)
        .await
        .map_err(|e| cannot(&crate::pg::connect::safe_error_text(&e)))?;
    Ok(tables
        .iter()
        .map(|t| format!("{}.{}", t.schema, t.name))
        .filter(|name| after.changes(name).is_some())
        .collect())
}

/// Client sessions of the database the fence did not end (walrelay's own
/// excepted); see the module doc.
async fn sessions(
    config: &Config,
    source: &Client,
    report: &mut CutoverReport,
) -> Result<(), CutoverError> {
    // This session, and the watching slot's (named like the tracker's).
    let rows = source
        .query(
            "SELECT pid, coalesce(usename::text, ''), coalesce(application_name, ''), \
                    backend_xid IS NOT NULL \
             FROM pg_stat_activity \
             WHERE datname = current_database() AND backend_type = 'client backend' \
               AND pid <> pg_backend_pid() \
               AND pid NOT IN (SELECT active_pid FROM pg_replication_slots \
                               WHERE temporary AND active_pid IS NOT NULL \
                                 AND starts_with(slot_name, $1 || '_cutover_')) \
             ORDER BY pid",
            &[&config.slot],
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
