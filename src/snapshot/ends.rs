//! The coordinator's two SQL sessions and what is read once when they open:
//! versions, the role's right to replicate, the client programs, and the
//! advisory lock that keeps a second snapshot of the same slot away.

use tokio_postgres::Client;

use super::{access, sql, SchemaMode, SnapshotError, SnapshotOptions};
use crate::config::Config;
use crate::pg::catalog::RDS_REPLICATION;
use crate::pg::connect;
use crate::state;

/// The two SQL sessions of the coordinator and facts read once.
pub(super) struct Ends {
    pub(super) source: Client,
    pub(super) target: Client,
    /// The source's major version.
    pub(super) major: u32,
    pub(super) target_major: u32,
    /// pg_dump and pg_restore; `None` with `--schema skip`.
    pub(super) tools: Option<crate::pg::bin::ClientTools>,
    /// What the schema copy translated in this run (a lock: the stages
    /// share `&Ends`).
    pub(super) schema_changes: std::sync::Mutex<Vec<String>>,
}

impl Ends {
    /// Each once: pre- and post-data both drop the same preamble setting.
    pub(super) fn note_schema_changes(&self, changes: Vec<String>) {
        let mut noted = self
            .schema_changes
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        for change in changes {
            if !noted.contains(&change) {
                noted.push(change);
            }
        }
    }

    pub(super) fn tools(&self) -> Result<&crate::pg::bin::ClientTools, SnapshotError> {
        self.tools.as_ref().ok_or_else(|| {
            SnapshotError::Refused(
                "the schema copy needs pg_dump, not looked for with --schema skip".into(),
            )
        })
    }
}

pub(super) async fn open_ends(
    config: &Config,
    opts: &SnapshotOptions,
) -> Result<Ends, SnapshotError> {
    let source = connect::connect(&config.source, "walrelay-snapshot").await?;
    let target = connect::connect(&config.target, "walrelay-snapshot").await?;
    let target_version: i32 = target
        .query_one("SELECT current_setting('server_version_num')::int", &[])
        .await
        .map_err(sql("reading the target's version"))?
        .get(0);
    let row = source
        .query_one(
            &format!(
                "SELECT current_setting('wal_level'), current_setting('server_version_num')::int, \
                    rolsuper OR rolreplication OR {RDS_REPLICATION} \
             FROM pg_roles WHERE rolname = current_user"
            ),
            &[],
        )
        .await
        .map_err(sql("reading source settings"))?;
    let (wal_level, version, replication): (String, i32, bool) =
        (row.get(0), row.get(1), row.get(2));
    if wal_level != "logical" {
        return Err(SnapshotError::Refused(format!(
            "the source's wal_level is {wal_level}; logical replication needs wal_level = logical (ALTER SYSTEM SET wal_level = logical; then restart the source)"
        )));
    }
    if !replication {
        return Err(access::no_replication(config));
    }
    let major = (version / 10000) as u32;
    // Before anything is created: a missing pg_dump stops the run here.
    let tools = match opts.schema {
        SchemaMode::Copy => {
            let tools = crate::pg::bin::client_tools(config.pg_bindir.as_deref(), major)
                .map_err(|e| SnapshotError::Schema(e.into()))?;
            tracing::info!(dir = %tools.dir.display(), version = %tools.version, "schema copy uses this pg_dump and pg_restore");
            Some(tools)
        }
        SchemaMode::Skip => None,
    };
    // The phase records must survive a target crash even where the server
    // defaults to asynchronous commit.
    target
        .batch_execute("SET synchronous_commit = on")
        .await
        .map_err(sql("configuring the target session"))?;
    state::ensure_schema(&target)
        .await
        .map_err(|err| access::state_schema(config, err))?;
    let locked: bool = target
        .query_one(
            "SELECT pg_try_advisory_lock(hashtext('walrelay snapshot ' || $1))",
            &[&config.slot],
        )
        .await
        .map_err(sql("locking the snapshot"))?
        .get(0);
    if !locked {
        return Err(SnapshotError::Refused(format!(
            "another walrelay snapshot for slot {} is running against this target",
            config.slot
        )));
    }
    Ok(Ends {
        source,
        target,
        major,
        target_major: (target_version / 10000) as u32,
        tools,
        schema_changes: Default::default(),
    })
}
