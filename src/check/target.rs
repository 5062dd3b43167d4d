//! Target-side checks.

use tokio_postgres::Client;

use super::Report;
use crate::config::Config;
use crate::migration::MigrationPlan;
use crate::pg::catalog::{quote_ident, Table};
use crate::pg::connect::{self, error_text};

/// Checks the target, given the source's migration plan when known.
pub(super) async fn check(config: &Config, plan: Option<&MigrationPlan>, report: &mut Report) {
    let client = match connect::connect(&config.target, "walrelay-check").await {
        Ok(client) => client,
        Err(err) => {
            report.blocker("target_connect", "target", err.to_string(), err.hint());
            return;
        }
    };
    if let Err(err) = run_checks(config, &client, plan, report).await {
        report.blocker(
            "target_connect",
            "target",
            format!(
                "query on {} failed: {}",
                config.target.display(),
                error_text(&err)
            ),
            "check the role's privileges on the target",
        );
    }
}

async fn run_checks(
    config: &Config,
    client: &Client,
    plan: Option<&MigrationPlan>,
    report: &mut Report,
) -> Result<(), tokio_postgres::Error> {
    // The unlogged tables are copied too: the target must take them.
    let tables = plan.map(MigrationPlan::copied_tables).unwrap_or_default();
    let row = client
        .query_one(
            "SELECT current_setting('server_version'), \
                    has_database_privilege(current_database(), 'CREATE'), \
                    EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = 'walrelay' \
                            AND has_schema_privilege(oid, 'CREATE'))",
            &[],
        )
        .await?;
    let (version, create_db, walrelay_schema): (String, bool, bool) =
        (row.get(0), row.get(1), row.get(2));
    report.ok(
        "target_connect",
        "target",
        format!("PostgreSQL {version} at {}", config.target.display()),
    );
    if create_db || walrelay_schema {
        report.ok(
            "target_create_schema",
            "target",
            "the role can create the walrelay schema",
        );
    } else {
        report.blocker(
            "target_create_schema",
            "target",
            format!(
                "role {} cannot create schemas in database {}",
                config.target.user, config.target.dbname
            ),
            format!(
                "GRANT CREATE ON DATABASE {} TO {};",
                quote_ident(&config.target.dbname),
                quote_ident(&config.target.user)
            ),
        );
    }
    check_read_only(config, client, report).await?;
    let role = quote_ident(&config.target.user);
    for table in &tables {
        check_write(client, table, create_db, &role, report).await?;
    }
    let permitted = check_replication_role(client, &role, report).await;
    // One more source session, and only when the source answered (an
    // unreachable one costs a connect_timeout each time).
    let source = match plan {
        Some(_) => connect::connect(&config.source, "walrelay-check")
            .await
            .ok(),
        None => None,
    };
    let Some((source, plan)) = source.as_ref().zip(plan) else {
        return Ok(());
    };
    super::schemas::check(source, client, plan, report).await?;
    if !permitted {
        super::enforced::check(source, plan, report).await;
    }
    check_encoding(client, source, report).await?;
    Ok(())
}

/// walrelay's own sessions turn `default_transaction_read_only` off, but
/// `pg_restore` (the schema) does not, and a hot standby takes no writes at
/// all. `reset_val` is the session's value before walrelay's own `SET`: the
/// database's, role's or connection's default.
async fn check_read_only(
    config: &Config,
    client: &Client,
    report: &mut Report,
) -> Result<(), tokio_postgres::Error> {
    let row = client
        .query_one(
            "SELECT pg_is_in_recovery(), \
                    (SELECT reset_val FROM pg_settings WHERE name = 'default_transaction_read_only')",
            &[],
        )
        .await?;
    let (standby, read_only): (bool, Option<String>) = (row.get(0), row.get(1));
    if standby {
        report.blocker(
            "target_read_only",
            "target",
            format!(
                "{} is a hot standby (pg_is_in_recovery() is true): it takes no writes",
                config.target.display()
            ),
            "point --target at the primary server",
        );
    } else if read_only.as_deref() == Some("on") {
        let db = quote_ident(&config.target.dbname);
        report.blocker(
            "target_read_only",
            "target",
            format!("default_transaction_read_only = on for database {} (role {}): the schema restore and writes outside walrelay's own sessions fail", config.target.dbname, config.target.user),
            format!("ALTER DATABASE {db} SET default_transaction_read_only = off; (or ALTER ROLE {} IN DATABASE {db} RESET default_transaction_read_only, or remove it from the connection options, wherever it was set)", quote_ident(&config.target.user)),
        );
    }
    Ok(())
}

/// Names an encoding difference: text is converted on the way (a character
/// the target's encoding lacks stops the copy) and compared as UTF8 by
/// `verify`. Unreachable source: its own check says so.
async fn check_encoding(
    client: &Client,
    source: &Client,
    report: &mut Report,
) -> Result<(), tokio_postgres::Error> {
    let sql = "SELECT current_setting('server_encoding')";
    let target: String = client.query_one(sql, &[]).await?.get(0);
    let Ok(row) = source.query_one(sql, &[]).await else {
        return Ok(());
    };
    let source: String = row.get(0);
    if source != target {
        report.warning(
            "encoding",
            "target",
            format!("the source database is encoded {source} and the target {target}: text is converted on the way, and a character {target} cannot hold stops the copy or the stream; verify compares text as UTF8 on both sides"),
            format!("nothing to do when {target} holds every character of {source} (UTF8 holds all); otherwise create the target database with ENCODING '{source}'"),
        );
    }
    Ok(())
}

async fn check_write(
    client: &Client,
    table: &Table,
    create_db: bool,
    role: &str,
    report: &mut Report,
) -> Result<(), tokio_postgres::Error> {
    let row = client
        .query_one(
            "SELECT (SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
                     WHERE n.nspname = $1 AND c.relname = $2), \
                    (SELECT has_schema_privilege(n.oid, 'CREATE') FROM pg_namespace n WHERE n.nspname = $1)",
            &[&table.schema, &table.name],
        )
        .await?;
    let (oid, schema_create): (Option<u32>, Option<bool>) = (row.get(0), row.get(1));
    let name = table.display();
    match oid {
        Some(oid) => {
            // NULL when the table was dropped since the lookup above.
            let ok: Option<bool> = client
                .query_one(
                    "SELECT has_table_privilege($1::oid, 'INSERT') AND has_table_privilege($1::oid, 'UPDATE') \
                     AND has_table_privilege($1::oid, 'DELETE') AND has_table_privilege($1::oid, 'TRUNCATE')",
                    &[&oid],
                )
                .await?
                .get(0);
            if ok == Some(false) {
                report.blocker("target_write", &name, "the target role cannot INSERT, UPDATE, DELETE and TRUNCATE this table",
                    format!("GRANT INSERT, UPDATE, DELETE, TRUNCATE ON {} TO {role};", table.qualified()));
            }
        }
        None if schema_create.unwrap_or(create_db) => {}
        None => report.blocker("target_write", &name,
            format!("the table does not exist on the target and the role cannot create it in schema {}", table.schema),
            format!("GRANT CREATE ON SCHEMA {} TO {role}; (or create the schema yourself and use --schema skip)", quote_ident(&table.schema))),
    }
    Ok(())
}

/// A real `SET`: catalogs can say no where the server says yes (Supabase).
/// Returns whether it is permitted.
async fn check_replication_role(client: &Client, role: &str, report: &mut Report) -> bool {
    let outcome = client
        .batch_execute("BEGIN; SET LOCAL session_replication_role = replica; ROLLBACK")
        .await;
    match outcome {
        Ok(()) => {
            report.ok(
                "session_replication_role",
                "target",
                "session_replication_role = replica is permitted",
            );
            true
        }
        Err(err) => {
            let _ = client.batch_execute("ROLLBACK").await;
            let version: i32 = match client
                .query_one("SELECT current_setting('server_version_num')::int", &[])
                .await
            {
                Ok(row) => row.get(0),
                Err(_) => 0,
            };
            let grant = if version >= 150000 {
                format!("GRANT SET ON PARAMETER session_replication_role TO {role}; (as a superuser or the provider's admin role)")
            } else {
                "run walrelay as a superuser on the target (before PostgreSQL 15 no grant gives SET on session_replication_role)".to_string()
            };
            report.warning("session_replication_role", "target",
                format!("SET session_replication_role = replica is not permitted ({}): changes are applied one at a time in source order, with the target's triggers and foreign keys acting (what that costs is listed under apply_enforced)", error_text(&err)),
                format!("{grant}; or accept the costs listed"));
            false
        }
    }
}
