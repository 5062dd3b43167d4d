//! The two servers' major versions and what they need: pg_dump and
//! pg_restore at least as new as the source, and the translation a newer
//! dump gets for an older target (`snapshot::dump_compat`).

use super::Report;
use crate::config::Config;
use crate::pg::bin;
use crate::pg::connect;

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
