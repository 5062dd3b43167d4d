//! The schema copy: `pg_dump --schema-only --snapshot` in custom format,
//! restored by `pg_restore` in two sections: pre-data (types, tables,
//! sequences, functions) before the rows, post-data (indexes, constraints,
//! triggers) after them, in parallel. The dump is kept in
//! `walrelay.snapshot.schema_dump`, so a resumed run (even on another
//! machine or pod) builds the post-data from the same dump.

use std::path::Path;
use std::process::Stdio;

use tokio::process::Command;
use tokio_postgres::Client;

use crate::pg::bin;
use crate::pg::catalog::{self, Table};
use crate::pg::connect::error_text;
use crate::pg::conninfo::ConnInfo;

/// Why the schema could not be copied or accepted.
#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    #[error(transparent)]
    Bin(#[from] bin::BinError),
    #[error("{program} failed: {stderr}")]
    Tool {
        program: &'static str,
        stderr: String,
    },
    #[error("cannot run {program}: {source}")]
    Spawn {
        program: &'static str,
        source: std::io::Error,
    },
    #[error("{0}")]
    Sql(String),
    #[error("the target's tables do not match the source:\n  {}\nfix the target's tables (or drop them and use --schema copy)", .0.join("\n  "))]
    Mismatch(Vec<String>),
    #[error("target table {0} already exists; walrelay creates the tables itself: drop them on the target, or use --schema skip if you created this schema on purpose")]
    Exists(String),
    #[error("target table {0} already holds rows; walrelay copies only into empty tables: empty it (TRUNCATE) or point --target at an empty database")]
    NotEmpty(String),
}

fn sql(err: tokio_postgres::Error) -> SchemaError {
    SchemaError::Sql(error_text(&err))
}

/// Dumps the source schema as seen by `snapshot`, leaving out unselected
/// tables, walrelay's own schema, publications and subscriptions.
pub(super) async fn dump(
    source: &ConnInfo,
    server_major: u32,
    snapshot: &str,
    excluded: &[String],
    out: &Path,
) -> Result<Vec<u8>, SchemaError> {
    let program = bin::find("pg_dump", server_major)?;
    let mut cmd = Command::new(program);
    cmd.args([
        "--format=custom",
        "--schema-only",
        "--no-publications",
        "--no-subscriptions",
    ])
    .arg("--exclude-schema=walrelay")
    .arg(format!("--snapshot={snapshot}"))
    .arg("--file")
    .arg(out)
    .arg("--dbname")
    .arg(source.libpq_string());
    for table in excluded {
        cmd.arg(format!("--exclude-table={table}"));
    }
    run_tool("pg_dump", cmd, source, |_| false).await?;
    std::fs::read(out).map_err(|source| SchemaError::Spawn {
        program: "pg_dump",
        source,
    })
}

/// Which part of the dump to restore.
#[derive(Debug, Clone, Copy)]
pub(super) enum Section {
    PreData,
    PostData { jobs: usize, resuming: bool },
}

/// Restores one section of `dump` into the target.
pub(super) async fn restore(
    target: &ConnInfo,
    server_major: u32,
    dump: &Path,
    section: Section,
    keep_owners: bool,
) -> Result<(), SchemaError> {
    let program = bin::find("pg_restore", server_major)?;
    let mut cmd = Command::new(program);
    let mut tolerate_existing = false;
    match section {
        Section::PreData => {
            cmd.args([
                "--section=pre-data",
                "--single-transaction",
                "--exit-on-error",
            ]);
        }
        Section::PostData { jobs, resuming } => {
            cmd.arg("--section=post-data")
                .arg(format!("--jobs={}", jobs.max(1)));
            // A post-data restore cut short left some indexes and
            // constraints built; the rest must still come.
            if resuming {
                tolerate_existing = true;
            } else {
                cmd.arg("--exit-on-error");
            }
        }
    }
    if !keep_owners {
        cmd.args(["--no-owner", "--no-acl"]);
    }
    cmd.arg("--dbname").arg(target.libpq_string()).arg(dump);
    run_tool("pg_restore", cmd, target, |line| {
        tolerate_existing && (line.contains("already exists") || !line.contains("error"))
    })
    .await
}

/// Runs a libpq tool with the password in `PGPASSWORD`; a failure is
/// forgiven when every stderr line passes `tolerated`.
async fn run_tool(
    program: &'static str,
    mut cmd: Command,
    conn: &ConnInfo,
    tolerated: impl Fn(&str) -> bool,
) -> Result<(), SchemaError> {
    cmd.env_remove("PGPASSWORD");
    if let Some(password) = &conn.password {
        cmd.env("PGPASSWORD", password.expose());
    }
    let output = cmd
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|source| SchemaError::Spawn { program, source })?;
    let stderr = String::from_utf8_lossy(&output.stderr).trim().to_string();
    let relevant: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("error") || l.contains("ERROR") || l.contains("FATAL"))
        .collect();
    if output.status.success() || (!relevant.is_empty() && relevant.iter().all(|l| tolerated(l))) {
        Ok(())
    } else {
        Err(SchemaError::Tool { program, stderr })
    }
}

/// Refuses target tables that already exist (schema copy) or hold rows.
pub(super) async fn check_target_free(
    target: &Client,
    tables: &[Table],
    expect_existing: bool,
) -> Result<(), SchemaError> {
    for table in tables {
        let exists = catalog::table_columns(target, &table.schema, &table.name)
            .await
            .map_err(sql)?
            .is_some();
        if exists && !expect_existing {
            return Err(SchemaError::Exists(table.display()));
        }
        if exists && table.kind == 'r' {
            let has_rows = target
                .query_one(
                    &format!("SELECT EXISTS (SELECT 1 FROM ONLY {})", table.qualified()),
                    &[],
                )
                .await
                .map_err(sql)?
                .get::<_, bool>(0);
            if has_rows {
                return Err(SchemaError::NotEmpty(table.display()));
            }
        }
    }
    Ok(())
}

/// With `--schema skip`: every selected table must exist on the target with
/// every copied source column, of the same type.
pub(super) async fn check_target_matches(
    target: &Client,
    tables: &[Table],
) -> Result<(), SchemaError> {
    let mut problems = Vec::new();
    for table in tables {
        let Some(columns) = catalog::table_columns(target, &table.schema, &table.name)
            .await
            .map_err(sql)?
        else {
            problems.push(format!("{}: missing on the target", table.display()));
            continue;
        };
        for col in table.copied_columns() {
            match columns.iter().find(|c| c.name == col.name) {
                None => problems.push(format!(
                    "{}: column {} missing on the target",
                    table.display(),
                    col.name
                )),
                Some(t) if t.generated => problems.push(format!(
                    "{}: column {} is generated on the target but not on the source",
                    table.display(),
                    col.name
                )),
                Some(t) if t.type_name != col.type_name => problems.push(format!(
                    "{}: column {} is {} on the source but {} on the target",
                    table.display(),
                    col.name,
                    col.type_name,
                    t.type_name
                )),
                Some(_) => {}
            }
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(SchemaError::Mismatch(problems))
    }
}
