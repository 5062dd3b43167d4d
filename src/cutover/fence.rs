//! The fence: the source database read-only for new transactions, and the
//! sessions that could still write ended (or listed); and its undoing.
//! Reports name roles, pids and applications, never query texts or rows.

use std::time::{Duration, Instant};

use tokio_postgres::Client;

use crate::config::Config;
use crate::pg::catalog::{quote_ident, session_names};
use crate::pg::connect::{self, safe_error_text};
use crate::pg::error::grant_hint;

use super::interrupt::Fencing;
use super::{
    sql, unfenced_sessions, CutoverError, CutoverOptions, CutoverReport, FencedSession, APPLICATION,
};

/// How long the fence waits for the terminated sessions to be gone.
const TERMINATE_WAIT: Duration = Duration::from_secs(5);

/// How long an interrupted cutover keeps re-checking that its fence is undone.
const UNDO_WAIT: Duration = Duration::from_secs(2);

/// `report.fenced` holds the source's state before this run: only a fence
/// this run sets is undone when it is interrupted.
pub(super) async fn fence(
    source: &Client,
    opts: &CutoverOptions,
    fencing: &Fencing,
    report: &mut CutoverReport,
) -> Result<(), CutoverError> {
    if !report.fenced {
        // Armed before the statement is sent: an interrupt while it runs
        // must undo it too (undoing a fence that did not land is harmless).
        fencing.arm();
    }
    alter_database(
        source,
        "SET default_transaction_read_only = on",
        "fencing the source (ALTER DATABASE … SET default_transaction_read_only = on; needs the database owner)",
    )
    .await?;
    report.fenced = true;
    let rows = source
        .query(
            "SELECT pid, coalesce(usename::text, ''), coalesce(application_name, '') \
             FROM pg_stat_activity \
             WHERE datname = current_database() AND pid <> pg_backend_pid() \
               AND backend_type = 'client backend' \
               AND coalesce(application_name, '') NOT LIKE 'walrelay%' \
               AND (cardinality($1::text[]) = 0 OR usename::text = ANY($1::text[])) \
             ORDER BY pid",
            &[&opts.fence_roles],
        )
        .await
        .map_err(sql("listing the writers' sessions on the source"))?;
    // Without --fence-role every client session of the database ends,
    // whatever its role (an application often shares walrelay's role);
    // walrelay's own sessions are recognised by their application name.
    report.fence_sessions = rows
        .iter()
        .map(|row| FencedSession {
            pid: row.get(0),
            user: row.get(1),
            application: row.get(2),
            terminated: false,
        })
        .collect();
    if !opts.fence_list_only {
        terminate(source, report).await?;
    }
    if opts.fence_list_only && !report.fence_sessions.is_empty() {
        tracing::warn!(
            sessions = report.fence_sessions.len(),
            "fence: writer sessions left running (--fence-list-only); they can still write until they reconnect"
        );
    }
    Ok(())
}

/// Signals every listed session at once, then waits until all are gone, so
/// no commit of theirs can land after the marker. (One
/// `pg_terminate_backend(pid, timeout)` per session would wait ~100 ms
/// each: its first check almost always finds the backend still exiting.)
async fn terminate(source: &Client, report: &mut CutoverReport) -> Result<(), CutoverError> {
    let mut signalled = Vec::new();
    for session in &report.fence_sessions {
        match source
            .query_one("SELECT pg_terminate_backend($1)", &[&session.pid])
            .await
        {
            Ok(_) => signalled.push(session.pid),
            Err(err) => {
                let (role, _) = session_names(source).await;
                let hint = grant_hint(&err, || {
                    format!(
                        "GRANT pg_signal_backend TO {role}; (or GRANT {} TO {role};)",
                        quote_ident(&session.user)
                    )
                });
                report.reasons.push(format!(
                    "could not terminate session pid {} of role {}: {}{hint}",
                    session.pid,
                    session.user,
                    safe_error_text(&err)
                ))
            }
        }
    }
    let deadline = Instant::now() + TERMINATE_WAIT;
    let remaining = loop {
        let remaining: Vec<i32> = source
            .query(
                "SELECT pid FROM pg_stat_activity WHERE pid = ANY($1)",
                &[&signalled],
            )
            .await
            .map_err(sql("waiting for the writers' sessions to end"))?
            .iter()
            .map(|r| r.get(0))
            .collect();
        if remaining.is_empty() || Instant::now() >= deadline {
            break remaining;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    for session in &mut report.fence_sessions {
        if !signalled.contains(&session.pid) {
            continue;
        }
        session.terminated = !remaining.contains(&session.pid);
        if session.terminated {
            report.sessions_terminated += 1;
        } else {
            report.reasons.push(format!(
                "session pid {} of role {} was still running {:?} after it was told to terminate",
                session.pid, session.user, TERMINATE_WAIT
            ));
        }
    }
    Ok(())
}

/// `walrelay cutover --unfence`: the source database writable again for new
/// sessions. Returns the database name.
pub async fn unfence(config: &Config) -> Result<String, CutoverError> {
    let config = unfenced_sessions(config);
    let source = connect::connect(&config.source, APPLICATION).await?;
    alter_database(
        &source,
        "RESET default_transaction_read_only",
        "unfencing the source (ALTER DATABASE … RESET default_transaction_read_only)",
    )
    .await
}

/// [`unfence`] on a session opened beforehand (`unfence_session`): the
/// switch back lifts the old source's fence right after its verdict, without
/// a connection's startup inside the write freeze. Returns the database name.
pub async fn unfence_on(source: &Client) -> Result<String, CutoverError> {
    alter_database(
        source,
        "RESET default_transaction_read_only",
        "unfencing the source (ALTER DATABASE … RESET default_transaction_read_only)",
    )
    .await
}

/// A session to the source for [`unfence_on`], exempt from the fence.
pub async fn unfence_session(config: &Config) -> Result<Client, CutoverError> {
    let config = unfenced_sessions(config);
    Ok(connect::connect(&config.source, APPLICATION).await?)
}

/// Whether the source database itself carries `default_transaction_read_only`
/// on (what `--fence` sets, whoever set it): the real state, not what this
/// run did. Role-specific settings are not the fence and are not read.
pub(super) async fn is_fenced(source: &Client) -> Result<bool, CutoverError> {
    // `::bool` parses the stored text as the server parsed it when it was
    // set (on, true, yes, 1 and their prefixes).
    Ok(source
        .query_one(
            "SELECT coalesce(bool_or(substr(c, length('default_transaction_read_only=') + 1)::bool), false) \
             FROM pg_db_role_setting s JOIN pg_database d ON d.oid = s.setdatabase, \
                  unnest(s.setconfig) AS c \
             WHERE d.datname = current_database() AND s.setrole = 0 \
               AND starts_with(c, 'default_transaction_read_only=')",
            &[],
        )
        .await
        .map_err(sql("reading whether the source database is fenced (pg_db_role_setting)"))?
        .get(0))
}

/// Undoes the fence of an interrupted cutover, and checks it stays undone:
/// the fencing statement may still be running on the session the interrupt
/// dropped, and land after the first reset. Returns the database name.
pub(super) async fn undo(config: &Config) -> Result<String, CutoverError> {
    let config = unfenced_sessions(config);
    let source = connect::connect(&config.source, APPLICATION).await?;
    let deadline = Instant::now() + UNDO_WAIT;
    loop {
        let db = alter_database(
            &source,
            "RESET default_transaction_read_only",
            "unfencing the source (ALTER DATABASE … RESET default_transaction_read_only)",
        )
        .await?;
        tokio::time::sleep(Duration::from_millis(200)).await;
        if !is_fenced(&source).await? && Instant::now() >= deadline {
            return Ok(db);
        }
    }
}

/// `ALTER DATABASE <the session's database> <action>`; returns the name.
async fn alter_database(
    source: &Client,
    action: &str,
    what: &'static str,
) -> Result<String, CutoverError> {
    let db: String = source
        .query_one("SELECT current_database()", &[])
        .await
        .map_err(sql("reading the source database name"))?
        .get(0);
    if let Err(err) = source
        .batch_execute(&format!("ALTER DATABASE {} {action}", quote_ident(&db)))
        .await
    {
        let (role, db) = session_names(source).await;
        let hint = grant_hint(&err, || {
            format!("only the database's owner (or a superuser) may ALTER DATABASE: ALTER DATABASE {db} OWNER TO {role}; (as a superuser or the provider's admin role), or run ALTER DATABASE {db} {action}; yourself as the owner and cut over without --fence")
        });
        return Err(CutoverError::Sql {
            what,
            message: format!("{}{hint}", safe_error_text(&err)),
        });
    }
    Ok(db)
}
