//! A table the source gained while the stream runs, brought in the way the
//! snapshot brings every table: schema and rows as of one consistent point.
//!
//! The caller has published the table already (changes committed after
//! that reach the slot). A temporary slot with an exported snapshot then
//! gives the consistent point L: the schema (`pg_dump --table`) and the rows
//! are read as of L, the rows copied in one target transaction that also
//! records the table with `snapshot_lsn` = L (`state::copy`), so the
//! stream's per-table snapshot LSN rule skips exactly the changes the copy
//! holds (those committed before L). Indexes and constraints are built
//! after the rows. The temporary slot goes with its session.

use tokio::process::Command;
use tokio_postgres::Client;
use walrelay_proto::Lsn;

use super::schema::{self, SchemaError, Section};
use super::slot::{ExportedSnapshot, SlotError};
use crate::config::Config;
use crate::pg::bin::{self, BinError};
use crate::pg::catalog::Table;
use crate::pg::connect::{self, error_text, ConnectError};
use crate::state::{self, StateError};

/// Why an added table could not be brought in.
#[derive(Debug, thiserror::Error)]
pub(crate) enum AddedTableError {
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error(transparent)]
    Bin(#[from] BinError),
    #[error(transparent)]
    Slot(#[from] SlotError),
    #[error(transparent)]
    Schema(#[from] SchemaError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error("{what}: {message}")]
    Sql { what: &'static str, message: String },
    #[error("copying its rows: {0}")]
    Copy(String),
    #[error("the target already has table {0} holding rows; empty it (TRUNCATE) or drop it, and the stream copies it")]
    NotEmpty(String),
}

fn sql(what: &'static str) -> impl Fn(tokio_postgres::Error) -> AddedTableError {
    move |err| AddedTableError::Sql {
        what,
        message: error_text(&err),
    }
}

/// Copies `table` (published already) as of a new consistent point;
/// returns that point, the table's snapshot LSN.
pub(crate) async fn bring_in(config: &Config, table: &Table) -> Result<Lsn, AddedTableError> {
    let source = connect::connect(&config.source, "walrelay-added-table").await?;
    let target = connect::connect(&config.target, "walrelay-added-table").await?;
    let major = server_major(&source).await?;
    let target_major = server_major(&target).await?;
    // A name of its own per table, short of the 63-byte limit.
    let slot_name = format!("{:.40}_add_{}", config.slot, table.oid);
    let exported =
        ExportedSnapshot::create(&config.source, major, &slot_name, &config.publication, true)
            .await?;
    let result = copy_as_of(
        config,
        (&source, &target),
        (major, target_major),
        table,
        &exported,
    )
    .await;
    exported.release();
    result
}

async fn copy_as_of(
    config: &Config,
    (source, target): (&Client, &Client),
    (major, target_major): (u32, u32),
    table: &Table,
    exported: &ExportedSnapshot,
) -> Result<Lsn, AddedTableError> {
    let lsn = exported.consistent_lsn;
    let dir = tempfile::tempdir().map_err(|e| AddedTableError::Copy(e.to_string()))?;
    let dump = dir.path().join("table.dump");
    let created = !target_has(target, table).await?;
    let tools = bin::client_tools(config.pg_bindir.as_deref(), major)?;
    if created {
        dump_table(config, &tools, &exported.name, table, &dump).await?;
        schema::restore(
            &config.target,
            target,
            (&tools, target_major),
            &dump,
            Section::PreData,
            false,
        )
        .await?;
    }
    let rows = copy_rows(config, source, table, &exported.name, lsn).await?;
    if created {
        let post = Section::PostData {
            jobs: 1,
            resuming: false,
        };
        schema::restore(
            &config.target,
            target,
            (&tools, target_major),
            &dump,
            post,
            false,
        )
        .await?;
    }
    tracing::info!(table = %table.display(), rows, snapshot_lsn = %lsn, created, "copied a table the source gained; streaming it from its snapshot LSN");
    Ok(lsn)
}

async fn server_major(client: &Client) -> Result<u32, AddedTableError> {
    let version: i32 = client
        .query_one("SELECT current_setting('server_version_num')::int", &[])
        .await
        .map_err(sql("reading the server version"))?
        .get(0);
    Ok((version / 10000) as u32)
}

/// Whether the target has the table already (the operator created it):
/// it is then used as it is, if empty.
async fn target_has(target: &Client, table: &Table) -> Result<bool, AddedTableError> {
    let exists: bool = target
        .query_one(
            "SELECT pg_catalog.to_regclass($1) IS NOT NULL",
            &[&table.qualified()],
        )
        .await
        .map_err(sql("looking for the table on the target"))?
        .get(0);
    if !exists {
        return Ok(false);
    }
    let empty: bool = target
        .query_one(
            &format!("SELECT NOT EXISTS (SELECT 1 FROM {})", table.qualified()),
            &[],
        )
        .await
        .map_err(sql("reading the target table"))?
        .get(0);
    if empty {
        Ok(true)
    } else {
        Err(AddedTableError::NotEmpty(table.display()))
    }
}

async fn dump_table(
    config: &Config,
    tools: &bin::ClientTools,
    snapshot: &str,
    table: &Table,
    out: &std::path::Path,
) -> Result<(), AddedTableError> {
    let mut cmd = Command::new(tools.pg_dump());
    cmd.args([
        "--format=custom",
        "--schema-only",
        "--no-publications",
        "--no-subscriptions",
    ])
    .arg(format!("--snapshot={snapshot}"))
    .arg(format!("--table={}", table.qualified()))
    .arg("--file")
    .arg(out)
    .arg("--dbname")
    .arg(config.source.libpq_string());
    schema::run_tool("pg_dump", cmd, &config.source).await?;
    Ok(())
}

/// The rows as of the exported snapshot, and the table's record, in one
/// target transaction.
async fn copy_rows(
    config: &Config,
    source: &Client,
    table: &Table,
    snapshot: &str,
    lsn: Lsn,
) -> Result<u64, AddedTableError> {
    source
        .batch_execute(&format!(
            "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SET TRANSACTION SNAPSHOT '{snapshot}'"
        ))
        .await
        .map_err(sql("importing the exported snapshot"))?;
    let target = connect::connect(&config.target, "walrelay-added-table").await?;
    target
        .batch_execute("SET synchronous_commit = on; BEGIN")
        .await
        .map_err(sql("opening the target transaction"))?;
    // Dropping the session on an error rolls the transaction back.
    let rows = super::copy_whole(table, &config.map, source, &target)
        .await
        .map_err(AddedTableError::Copy)?;
    state::copy::record_added_table(&target, &config.slot, table, rows, lsn).await?;
    target
        .batch_execute("COMMIT")
        .await
        .map_err(sql("committing the copied rows"))?;
    let _ = source.batch_execute("ROLLBACK").await;
    Ok(rows)
}

/// Copies the rows of `table` (emptied by the caller) into `target` inside
/// the caller's open transaction, as of a new consistent point, and records
/// that point as the table's snapshot LSN in the same transaction; returns it.
pub(crate) async fn copy_again_into(
    config: &Config,
    table: &Table,
    target: &Client,
) -> Result<Lsn, AddedTableError> {
    let source = connect::connect(&config.source, "walrelay-copy-again").await?;
    let major = server_major(&source).await?;
    let slot_name = format!("{:.40}_again_{}", config.slot, table.oid);
    let exported =
        ExportedSnapshot::create(&config.source, major, &slot_name, &config.publication, true)
            .await?;
    let lsn = exported.consistent_lsn;
    let copied = async {
        source
            .batch_execute(&format!(
                "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SET TRANSACTION SNAPSHOT '{}'",
                exported.name
            ))
            .await
            .map_err(sql("importing the exported snapshot"))?;
        let rows = super::copy_whole(table, &config.map, &source, target)
            .await
            .map_err(AddedTableError::Copy)?;
        state::copy::record_added_table(target, &config.slot, table, rows, lsn).await?;
        tracing::info!(table = %table.display(), rows, snapshot_lsn = %lsn, "copied a table again; streaming it from its new snapshot LSN");
        Ok(())
    }
    .await;
    exported.release();
    copied.map(|()| lsn)
}
