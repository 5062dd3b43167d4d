//! Source-side checks.

use tokio_postgres::error::SqlState;
use tokio_postgres::Client;

use super::Report;
use crate::config::Config;
use crate::migration::MigrationPlan;
use crate::pg::catalog::{self, Table, RDS_REPLICATION};
use crate::pg::connect::{self, error_text};
use crate::pg::publication;
use crate::state::snapshot::Phase;

/// Checks the source; returns the migration plan when it was reachable.
pub(super) async fn check(config: &Config, report: &mut Report) -> Option<MigrationPlan> {
    let who = config.source.display();
    let client = match connect::connect(&config.source, "walrelay-check").await {
        Ok(client) => client,
        Err(err) => {
            report.blocker("source_connect", "source", err.to_string(), err.hint());
            return None;
        }
    };
    match run_checks(config, &client, report).await {
        Ok(plan) => Some(plan),
        Err(err) => {
            report.blocker(
                "source_connect",
                "source",
                format!("query on {who} failed: {}", error_text(&err)),
                "check the role's privileges on the source",
            );
            None
        }
    }
}

struct Role {
    superuser: bool,
    replication: bool,
    bypass_rls: bool,
}

async fn run_checks(
    config: &Config,
    client: &Client,
    report: &mut Report,
) -> Result<MigrationPlan, tokio_postgres::Error> {
    let row = client
        .query_one(
            &format!(
                "SELECT current_setting('server_version'), current_setting('wal_level'), \
             r.rolsuper, r.rolreplication OR {RDS_REPLICATION}, r.rolbypassrls \
             FROM pg_roles r WHERE r.rolname = current_user"
            ),
            &[],
        )
        .await?;
    let version: String = row.get(0);
    let wal_level: String = row.get(1);
    let role = Role {
        superuser: row.get(2),
        replication: row.get(3),
        bypass_rls: row.get(4),
    };
    report.ok(
        "source_connect",
        "source",
        format!("PostgreSQL {version} at {}", config.source.display()),
    );
    if wal_level == "logical" {
        report.ok("wal_level", "source", "wal_level = logical");
    } else {
        report.blocker(
            "wal_level",
            "source",
            format!("wal_level is {wal_level}; logical replication needs logical"),
            "ALTER SYSTEM SET wal_level = logical; then restart the source server (on managed services, set it in the provider's parameter settings)",
        );
    }
    check_role(config, &role, report);
    let free_slots = check_capacity(config, client, report).await?;
    let plan = MigrationPlan::resolve(client, config).await?;
    let tables = plan.copied_tables();
    check_tables(&tables, &role, &config.source.user, report);
    check_sequences(client, &plan, &config.source.user, report).await?;
    not_streamed(&plan, report);
    if let Err(err) = plan.check_map(client).await {
        report.blocker(
            "map",
            "source",
            err.to_string(),
            "fix the --map entry as the message says, then run check again",
        );
    }
    let publication =
        check_publication(config, client, &plan.tables, role.superuser, report).await?;
    check_waiters(client, report).await?;
    check_wal_keep(client, report).await?;
    check_slot(config, client, free_slots, publication, report).await?;
    check_replication_connection(config, report).await;
    super::ddl::check(client, report).await?;
    Ok(plan)
}

fn check_role(config: &Config, role: &Role, report: &mut Report) {
    let user = &config.source.user;
    if role.superuser || role.replication {
        report.ok(
            "replication_role",
            "source",
            format!("role {user} may replicate"),
        );
    } else {
        report.blocker(
            "replication_role",
            "source",
            format!("role {user} has neither REPLICATION nor superuser"),
            format!(
                "ALTER ROLE {0} REPLICATION; (on Amazon RDS: GRANT rds_replication TO {0};)",
                catalog::quote_ident(user)
            ),
        );
    }
}

/// Returns the number of free replication slots.
async fn check_capacity(
    config: &Config,
    client: &Client,
    report: &mut Report,
) -> Result<i32, tokio_postgres::Error> {
    let row = client
        .query_one(
            "SELECT current_setting('max_replication_slots')::int - (SELECT count(*) FROM pg_replication_slots)::int, \
                    current_setting('max_wal_senders')::int - \
                    (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'walsender')::int, \
                    EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = $1)",
            &[&config.slot],
        )
        .await?;
    let (slots, senders, own_exists): (i32, i32, bool) = (row.get(0), row.get(1), row.get(2));
    report_slots(slots, own_exists, report);
    if senders < 1 {
        report.blocker(
            "wal_senders",
            "source",
            "no free WAL sender (max_wal_senders reached)",
            "raise max_wal_senders and restart, or stop another replication client",
        );
    } else {
        report.ok(
            "wal_senders",
            "source",
            format!("{senders} free WAL sender(s)"),
        );
    }
    Ok(slots)
}

/// walrelay's own slot, once it exists, is counted among the used ones: then
/// only cutover's two temporary slots (and a resumed snapshot's one, see
/// `check_slot`) still need free ones.
fn report_slots(slots: i32, own_exists: bool, report: &mut Report) {
    let needed = if own_exists { 2 } else { 3 };
    if slots < 1 && !own_exists {
        report.blocker("replication_slots", "source", "no free replication slot (max_replication_slots reached)",
            "drop an unused slot (SELECT pg_drop_replication_slot(name)) or raise max_replication_slots and restart; walrelay needs one, two while resuming a snapshot, three while cutover runs");
    } else if slots < needed {
        let own = if own_exists {
            "walrelay's own exists already"
        } else {
            "walrelay's own needs one"
        };
        report.warning(
            "replication_slots",
            "source",
            format!("{slots} free replication slot(s): {own}; cutover holds two temporary ones (change tracking before the fence, and the slot that watches for writes after it) and a resumed snapshot one"),
            format!("drop an unused slot or raise max_replication_slots and restart ({needed} free: {}cutover's two)", if own_exists { "" } else { "walrelay's slot plus " }),
        );
    } else {
        report.ok(
            "replication_slots",
            "source",
            format!("{slots} free replication slot(s)"),
        );
    }
}

fn check_tables(tables: &[Table], role: &Role, user: &str, report: &mut Report) {
    let user = catalog::quote_ident(user);
    if tables.is_empty() {
        report.blocker(
            "tables",
            "source",
            "no table matches the selection",
            "check --table / --exclude-table patterns (schema-qualified globs such as public.*)",
        );
    }
    let bypass = role.superuser || role.bypass_rls;
    for table in tables {
        let name = table.display();
        if !table.can_select {
            report.blocker(
                "table_read",
                &name,
                "the role cannot read this table",
                format!(
                    "GRANT SELECT ON {} TO {user}; or exclude it with --exclude-table {name}",
                    table.qualified()
                ),
            );
        }
        if table.filtered_by_rls(bypass) {
            report.blocker("row_security", &name,
                "row-level security is enabled and the role does not bypass it: a copy would silently miss rows",
                format!("ALTER ROLE {user} BYPASSRLS; (or use a role that owns the table or is superuser)"));
        }
        if table.kind == 'r' && !table.unlogged && !table.has_usable_replica_identity() {
            report.blocker("replica_identity", &name, replica_identity_problem(table),
                format!("ALTER TABLE {} REPLICA IDENTITY FULL; (or add a primary key; or exclude it with --exclude-table {name})", table.qualified()));
        }
    }
}

/// What is moved but not streamed: unlogged tables (their changes are not
/// in the WAL) and materialized views (computed, not written).
fn not_streamed(plan: &MigrationPlan, report: &mut Report) {
    for table in &plan.unlogged {
        let name = table.display();
        report.warning(
            "unlogged_table",
            &name,
            "UNLOGGED: its changes are not in the WAL, so they cannot be streamed; it is copied as of the snapshot, verify does not compare it, and only `cutover --fence` copies it again (an unfenced cutover is not safe with it)",
            format!(
                "to stream it: ALTER TABLE {} SET LOGGED; (rewrites it into the WAL under an exclusive lock); or leave it out with --exclude-table {name}; or accept a copy at the snapshot and at a fenced cutover",
                table.qualified()
            ),
        );
    }
    for view in &plan.matviews {
        let what = if view.populated {
            "materialized view: refreshed on the target after the snapshot's copy and at cutover (computed from the target's rows), not replicated; verify does not compare it"
        } else {
            "materialized view, not populated on the source (WITH NO DATA): created empty on the target and left so"
        };
        report.ok("materialized_view", view.display(), what);
    }
}

/// Cutover sets each sequence of the plan on the target from the source's
/// `last_value`, which only a role with SELECT (or USAGE) on it may read.
async fn check_sequences(
    client: &Client,
    plan: &MigrationPlan,
    user: &str,
    report: &mut Report,
) -> Result<(), tokio_postgres::Error> {
    let oids: Vec<u32> = plan.sequences.iter().map(|s| s.oid).collect();
    let unreadable: Vec<u32> = client
        .query(
            "SELECT s.oid FROM unnest($1::oid[]) s(oid) \
             WHERE NOT coalesce(has_sequence_privilege(s.oid, 'SELECT'), true)",
            &[&oids],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    for seq in plan
        .sequences
        .iter()
        .filter(|s| unreadable.contains(&s.oid))
    {
        report.blocker(
            "sequence_read",
            seq.display(),
            "the role cannot read this sequence: cutover sets it on the target from the source's value",
            format!(
                "GRANT SELECT ON SEQUENCE {} TO {};",
                seq.qualified(),
                catalog::quote_ident(user)
            ),
        );
    }
    Ok(())
}

fn replica_identity_problem(table: &Table) -> &'static str {
    match table.replica_identity {
        'n' => "REPLICA IDENTITY NOTHING: UPDATE and DELETE cannot be replicated (and would fail on the source once published)",
        'i' => "REPLICA IDENTITY USING INDEX names an index that is gone or invalid",
        _ => "no primary key and REPLICA IDENTITY DEFAULT: UPDATE and DELETE cannot be replicated (and would fail on the source once published)",
    }
}

async fn check_waiters(client: &Client, report: &mut Report) -> Result<(), tokio_postgres::Error> {
    for row in client
        .query(
            // owner is NULL once the preparing role has been dropped.
            "SELECT gid, coalesce(owner::text, '(a dropped role)'), \
                    coalesce(database::text, '(a dropped database)'), prepared::text \
             FROM pg_prepared_xacts",
            &[],
        )
        .await?
    {
        let (gid, owner, db, at): (String, String, String, String) =
            (row.get(0), row.get(1), row.get(2), row.get(3));
        report.warning("prepared_xacts", "source",
            format!("prepared transaction {gid:?} (owner {owner}, database {db}, since {at}) makes slot creation wait"),
            format!("COMMIT PREPARED '{gid}'; or ROLLBACK PREPARED '{gid}'; before the snapshot"));
    }
    let rows = client
        .query(
            "SELECT pid, coalesce(usename::text, ''), coalesce(application_name, ''), \
                    extract(epoch FROM now() - xact_start)::bigint \
             FROM pg_stat_activity \
             WHERE backend_xid IS NOT NULL AND pid <> pg_backend_pid()",
            &[],
        )
        .await?;
    for row in rows {
        // xact_start is NULL for other roles' sessions without
        // pg_read_all_stats: the transaction is still reported.
        let (pid, user, app, secs): (i32, String, String, Option<i64>) =
            (row.get(0), row.get(1), row.get(2), row.get(3));
        let held = secs.map_or("for a time this role may not see".into(), |s| {
            format!("for {s} s")
        });
        report.warning("long_xacts", "source",
            format!("session pid {pid} (user {user}, application {app:?}) has held a transaction with an xid {held}; slot creation waits for every such transaction to end"),
            format!("let it finish, or SELECT pg_terminate_backend({pid});"));
    }
    Ok(())
}

async fn check_wal_keep(client: &Client, report: &mut Report) -> Result<(), tokio_postgres::Error> {
    let row = client
        .query_one(
            "SELECT pg_size_bytes(current_setting('max_slot_wal_keep_size') || \
                    CASE WHEN current_setting('max_slot_wal_keep_size') ~ '^-?[0-9]+$' THEN 'MB' ELSE '' END), \
                    pg_database_size(current_database())",
            &[],
        )
        .await?;
    let (keep, size): (i64, i64) = (row.get(0), row.get(1));
    if keep < 0 {
        return Ok(());
    }
    let risk = if keep < size.saturating_mul(2) {
        format!(
            " while the database is {} MB: WAL written during a long copy may exceed it",
            size >> 20
        )
    } else {
        ": WAL written during a long copy, or while the target falls behind, may exceed it".into()
    };
    report.warning("wal_keep_size", "source",
        format!("max_slot_wal_keep_size is {} MB{risk}, and a slot holding more WAL is invalidated (a new snapshot is then needed)", keep >> 20),
        "give `snapshot`/`run` and `stream` a change-stream spool (--spool-dir on a persistent volume): the change stream is spooled while the copy runs, so the slot holds no WAL meanwhile; or raise max_slot_wal_keep_size (or -1) for the migration");
    Ok(())
}

/// An existing publication with row filters or column lists: `snapshot`
/// refuses it, and a stream through it would miss rows or columns.
async fn check_existing_publication(
    config: &Config,
    client: &Client,
    tables: &[Table],
    report: &mut Report,
) -> Result<(), tokio_postgres::Error> {
    // Tables the map names get walrelay's own column lists and filters.
    let mapped: std::collections::BTreeSet<u32> = tables
        .iter()
        .filter(|t| config.map.table(&t.schema, &t.name).is_some())
        .map(|t| t.oid)
        .collect();
    let refusal = publication::existing(client, &config.publication)
        .await?
        .and_then(|found| found.refusal(&config.publication, &mapped));
    if let Some(problem) = refusal {
        report.blocker(
            "publication_filtered",
            "source",
            problem,
            publication::Existing::refusal_fix(&config.publication),
        );
    }
    Ok(())
}

/// When walrelay must create the publication (`snapshot` creates it only
/// when no publication of that name exists), the role needs `CREATE` on the
/// database and, up to PostgreSQL 15, ownership of every published table.
/// Returns whether the publication exists.
async fn check_publication(
    config: &Config,
    client: &Client,
    tables: &[Table],
    superuser: bool,
    report: &mut Report,
) -> Result<bool, tokio_postgres::Error> {
    let row = client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_publication WHERE pubname = $1), \
                    has_database_privilege(current_database(), 'CREATE')",
            &[&config.publication],
        )
        .await?;
    let (exists, create_db): (bool, bool) = (row.get(0), row.get(1));
    if exists {
        check_existing_publication(config, client, tables, report).await?;
    }
    if exists || superuser || tables.is_empty() {
        return Ok(exists);
    }
    let not_owned: Vec<String> = tables
        .iter()
        .filter(|t| !t.is_owner)
        .map(Table::display)
        .collect();
    if not_owned.is_empty() && create_db {
        return Ok(false);
    }
    let user = &config.source.user;
    let mut missing = Vec::new();
    if !create_db {
        missing.push(format!("CREATE on database {}", config.source.dbname));
    }
    if !not_owned.is_empty() {
        missing.push(format!(
            "ownership of {} (CREATE PUBLICATION … FOR TABLE needs the table owner): {}",
            if not_owned.len() == 1 {
                "this table"
            } else {
                "these tables"
            },
            not_owned.join(", ")
        ));
    }
    let list = tables
        .iter()
        .map(Table::qualified)
        .collect::<Vec<_>>()
        .join(", ");
    report.blocker(
        "publication_privilege",
        "source",
        format!(
            "publication {} does not exist and role {user} cannot create it: it lacks {}",
            config.publication,
            missing.join("; and ")
        ),
        format!(
            "ask the tables' owner (or a superuser) to run on the source: CREATE PUBLICATION {} FOR TABLE {list}; then pass --publication {}",
            catalog::quote_ident(&config.publication),
            config.publication
        ),
    );
    Ok(false)
}

/// An existing slot: walrelay's own (recorded on the target) resumes, unless
/// its publication is gone or a resumed copy cannot get its temporary slot.
async fn check_slot(
    config: &Config,
    client: &Client,
    free_slots: i32,
    publication_exists: bool,
    report: &mut Report,
) -> Result<(), tokio_postgres::Error> {
    let row = client
        .query_opt(
            "SELECT plugin, active, coalesce(wal_status, '') = 'lost', \
                    coalesce(database, '') <> current_database() \
             FROM pg_replication_slots WHERE slot_name = $1",
            &[&config.slot],
        )
        .await?;
    let Some(row) = row else {
        return Ok(());
    };
    let (plugin, active): (Option<String>, bool) = (row.get(0), row.get(1));
    let (lost, elsewhere): (bool, bool) = (row.get(2), row.get(3));
    if elsewhere {
        // Slots are server-wide: never advise dropping another database's.
        report.blocker("slot_exists", "source",
            format!("replication slot {} already exists and belongs to another database (or is physical)", config.slot),
            "choose another --slot");
        return Ok(());
    }
    if lost {
        report.blocker("slot_lost", "source",
            format!("replication slot {} was invalidated (wal_status = lost; max_slot_wal_keep_size exceeded): the WAL it needed is gone, nothing can resume from it; a new snapshot is needed", config.slot),
            "`walrelay cleanup --yes`, then `walrelay snapshot` (or `walrelay run`) to migrate again from a new snapshot");
        return Ok(());
    }
    let recorded = match plugin.as_deref() {
        Some("pgoutput") => recorded_phase(config).await,
        _ => None,
    };
    let Some(phase) = recorded else {
        report.blocker("slot_exists", "source",
            format!("replication slot {} already exists and is not a walrelay snapshot recorded on this target", config.slot),
            format!("choose another --slot, or drop it if it is unused: SELECT pg_drop_replication_slot('{}');", config.slot));
        return Ok(());
    };
    if !publication_exists && phase != Phase::Slot {
        report.blocker("publication_missing", "source",
            format!("publication {} is gone (it was dropped) while slot {} still exists: the slot cannot continue without it, and recreating it does not bring back the changes made in between (pgoutput reads the publication as of each change's time); a new snapshot is needed", config.publication, config.slot),
            "`walrelay cleanup --yes`, then `walrelay snapshot` (or `walrelay run`) to migrate again from a new snapshot");
        return Ok(());
    }
    if matches!(phase, Phase::Schema | Phase::Copy) && free_slots < 1 {
        report.blocker("resume_slot", "source",
            format!("the snapshot of slot {} is unfinished (phase {}): resuming it creates a temporary slot ({}_resume) beside the existing one, and no replication slot is free", config.slot, phase.as_str(), config.slot),
            "drop an unused slot (SELECT pg_drop_replication_slot(name)) or raise max_replication_slots and restart, then resume with `walrelay snapshot`");
    }
    report.warning("slot_exists", "source",
        format!("slot {} exists and the target records it (phase {}): `walrelay snapshot`/`run` resumes it{}", config.slot, phase.as_str(), if active { " (it is in use right now)" } else { "" }),
        "nothing to do to resume; `walrelay cleanup --yes` starts over");
    Ok(())
}

/// The phase the target records for the slot, when it records one.
async fn recorded_phase(config: &Config) -> Option<Phase> {
    let target = connect::connect(&config.target, "walrelay-check")
        .await
        .ok()?;
    match crate::state::snapshot::read(&target, &config.slot).await {
        Ok(Some(row)) => Some(row.phase),
        _ => None,
    }
}

/// A replication session proves the URL reaches a server that speaks the
/// replication protocol (a pooler does not). Why one failed is decided from
/// what the catalog already showed (role, WAL senders) and the SQLSTATE,
/// never from the server's words (they are in its `lc_messages` language).
async fn check_replication_connection(config: &Config, report: &mut Report) {
    let outcome = async {
        let cfg = connect::replication_config(&config.source, &config.slot, &config.publication)
            .map_err(|e| Refused::Setup(e.to_string()))?;
        let mut session = pgwire_replication::ReplicationClient::connect_gated(cfg)
            .await
            .map_err(Refused::Server)?;
        let result = tokio::time::timeout(
            std::time::Duration::from_secs(15),
            session.identify_system(),
        )
        .await
        .map_err(|_| Refused::Setup("no answer to IDENTIFY_SYSTEM within 15 s".to_string()))?
        .map_err(Refused::Server);
        session.abort();
        result
    }
    .await;
    let reported = |code| {
        report
            .findings
            .iter()
            .any(|f| f.code == code && f.severity == super::Severity::Blocker)
    };
    let already_reported = reported("replication_role") || reported("wal_senders");
    match outcome {
        Ok(ident) => report.ok("pooler", "source",
            format!("replication connection works (system {}, WAL at {})", ident.system_id, ident.xlogpos)),
        // Already reported as replication_role or wal_senders.
        Err(_) if already_reported => {}
        Err(Refused::Server(err))
            if replication_sqlstate(&err).is_some_and(|c| c.code().starts_with("28")) =>
        {
            report.blocker("replication_connect", "source",
                format!("the server refuses replication connections from here: {err}"),
                "add a pg_hba.conf line for this client and user (logical replication connections match ordinary database lines), then reload")
        }
        Err(err) => {
            let pooler = config.source.looks_like_pooler();
            report.blocker("pooler", "source",
                format!("a replication connection to {} failed: {err}{}", config.source.display(),
                    if pooler { " (this looks like a connection pooler port)" } else { "" }),
                "replication needs the direct connection to the server, not a pooler (pgbouncer, Supavisor port 6543/the pooler host): use the database's direct host and port 5432");
        }
    }
}

/// Why a replication connection could not be used.
#[derive(Debug, thiserror::Error)]
enum Refused {
    #[error("{0}")]
    Setup(String),
    #[error(transparent)]
    Server(pgwire_replication::PgWireError),
}

/// The SQLSTATE of a server error on a replication connection.
/// pgwire-replication hands the server's error over as text, to which it
/// appends the error's code field as `(SQLSTATE ccccc)`; that code, not the
/// server's words, is read here.
fn replication_sqlstate(err: &pgwire_replication::PgWireError) -> Option<SqlState> {
    let pgwire_replication::PgWireError::Server(text) = err else {
        return None;
    };
    let code = text.rsplit_once("(SQLSTATE ")?.1.strip_suffix(')')?;
    (code.len() == 5).then(|| SqlState::from_code(code))
}
