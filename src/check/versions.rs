//! The two servers' major versions and what they need: pg_dump and
//! pg_restore at least as new as the source, and the translation a newer
//! dump gets for an older target (`snapshot::dump_compat`).

use super::Report;
use crate::config::Config;
use crate::migration::MigrationPlan;
use crate::pg::bin;
use crate::pg::catalog::{self, Table};
use crate::pg::connect;
use crate::snapshot::{dump_compat, schema};

/// Reports the version pair and the client programs the schema copy would
/// use; an unreachable end was already reported by its own checks.
pub(super) async fn check(config: &Config, report: &mut Report) {
    let (Some(source), Some(target)) = (
        major_of(&config.source, "source").await,
        major_of(&config.target, "target").await,
    ) else {
        return;
    };
    report.ok(
        "versions",
        "source",
        format!("PostgreSQL {source} → PostgreSQL {target}; the stream uses pgoutput protocol version 1, which both speak"),
    );
    let tools = match bin::client_tools(config.pg_bindir.as_deref(), source) {
        Ok(tools) => tools,
        Err(err) => {
            report.blocker(
                "pg_dump",
                "walrelay host",
                err.to_string(),
                "or, with the tables already created on the target, `snapshot --schema skip` needs no pg_dump",
            );
            return;
        }
    };
    report.ok(
        "pg_dump",
        "walrelay host",
        format!(
            "the schema copy uses pg_dump and pg_restore {} in {}",
            tools.version,
            tools.dir.display()
        ),
    );
    if tools.major > target {
        trial(config, &tools, target, report).await;
        report.warning(
            "schema_translation",
            "target",
            format!("pg_dump {} writes SQL for PostgreSQL {}; the target is {target}: walrelay restores the schema as a script translated for {target} (settings, virtual generated columns and NULLS NOT DISTINCT it lacks are left out or made STORED, each one reported), and an object using another feature {target} lacks stops the snapshot before any row is copied, named", tools.major, tools.major),
            format!("nothing to do if the snapshot's report of what it translated is acceptable; with pg_dump and pg_restore {target} (`--pg-bindir`) no translation is needed when the source is {target} or older"),
        );
    }
}

/// The server's major version, `None` when it cannot be read.
async fn major_of(conn: &crate::pg::conninfo::ConnInfo, side: &str) -> Option<u32> {
    let client = connect::connect(conn, "walrelay-check").await.ok()?;
    let row = client
        .query_one("SELECT current_setting('server_version_num')::int", &[])
        .await
        .map_err(|err| tracing::debug!(side, error = %connect::error_text(&err), "cannot read the server version"))
        .ok()?;
    Some((row.get::<_, i32>(0) / 10000) as u32)
}

/// Dumps the selected tables' schema now and restores it, translated, on
/// the target in a transaction that is rolled back: what the snapshot's
/// schema copy would meet, found before anything is created. Not tried
/// when a selected table already exists there (`--schema skip`, or a
/// snapshot under way), where it would fail for that reason alone.
async fn trial(config: &Config, tools: &bin::ClientTools, target_major: u32, report: &mut Report) {
    match try_restore(config, tools, target_major).await {
        Ok(Trial::Restored(changes)) => report.ok(
            "schema_trial",
            "target",
            format!(
                "the source's schema restores on the target once translated (tried in a transaction, rolled back){}",
                if changes.is_empty() { String::new() } else { format!(": {}", changes.join("; ")) }
            ),
        ),
        Ok(Trial::Skipped(why)) => report.ok("schema_trial", "target", format!("schema restore not tried: {why}")),
        Err(err) => report.blocker(
            "schema_trial",
            "target",
            format!("the schema copy would fail: {err}"),
            "see the problem: fix or leave out that object, then run check again",
        ),
    }
}

enum Trial {
    Restored(Vec<String>),
    Skipped(String),
}

async fn try_restore(
    config: &Config,
    tools: &bin::ClientTools,
    target_major: u32,
) -> Result<Trial, String> {
    let text = |e: &dyn std::fmt::Display| e.to_string();
    let source = connect::connect(&config.source, "walrelay-check")
        .await
        .map_err(|e| text(&e))?;
    let target = connect::connect(&config.target, "walrelay-check")
        .await
        .map_err(|e| text(&e))?;
    let plan = MigrationPlan::resolve(&source, config)
        .await
        .map_err(|e| connect::error_text(&e))?;
    for table in &plan.tables {
        let exists = catalog::table_columns(&target, &table.schema, &table.name)
            .await
            .map_err(|e| connect::error_text(&e))?
            .is_some();
        if exists {
            return Ok(Trial::Skipped(format!(
                "the target already has {}",
                table.display()
            )));
        }
    }
    if plan.tables.is_empty() {
        return Ok(Trial::Skipped("no table selected".into()));
    }
    let dir = tempfile::tempdir().map_err(|e| text(&e))?;
    let dump = dir.path().join("schema.dump");
    let excluded: Vec<String> = plan.schema_exclusions().map(Table::qualified).collect();
    // The same schemas left alone as the snapshot's copy leaves.
    let left_alone: Vec<String> = plan
        .schemas_left_alone(&source, &target)
        .await
        .map_err(|e| connect::error_text(&e))?
        .into_iter()
        .map(|s| s.schema)
        .collect();
    schema::dump(&config.source, tools, None, &excluded, &left_alone, &dump)
        .await
        .map_err(|e| text(&e))?;
    dump_compat::trial(tools, &config.target, target_major, &dump)
        .await
        .map(Trial::Restored)
        .map_err(|e| text(&e))
}
