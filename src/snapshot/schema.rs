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

use super::managed;
use crate::map::{Map, MappedTable};
use crate::pg::bin;
use crate::pg::catalog::{self, quote_ident, Table};
use crate::pg::connect::error_text;
use crate::pg::conninfo::ConnInfo;
use crate::pg::widening;

/// Why the schema could not be copied or accepted.
#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    #[error(transparent)]
    Bin(#[from] bin::BinError),
    #[error(transparent)]
    Compat(#[from] super::dump_compat::CompatError),
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
    #[error("the target's tables do not match the source (--schema skip), source type → target type:\n  {}\nnothing was created. Give each listed target column the source's type or a wider one (ALTER TABLE … ALTER COLUMN … TYPE …; widenings that keep every value's text form are accepted: varchar(n) → varchar(m ≥ n) or text, smallint → integer → bigint, integer → numeric, numeric(p,s) → numeric(p' ≥ p,s), timestamp(p) → timestamp(p' ≥ p)), or drop the target's tables and use --schema copy", .0.join("\n  "))]
    Mismatch(Vec<String>),
    #[error("target table {0} already exists; walrelay creates the tables itself: drop them on the target, or use --schema skip if you created this schema on purpose")]
    Exists(String),
    #[error("target table {0} already holds rows; walrelay copies only into empty tables: empty it (TRUNCATE) or point --target at an empty database")]
    NotEmpty(String),
}

fn sql(err: tokio_postgres::Error) -> SchemaError {
    SchemaError::Sql(error_text(&err))
}

/// Dumps the source schema as seen by `snapshot` (`None`: as of now, for
/// `check`'s trial), leaving out unselected tables, the schemas the copy
/// leaves alone (`excluded_schemas`, exact names), walrelay's own schema,
/// publications and subscriptions.
pub(crate) async fn dump(
    source: &ConnInfo,
    tools: &bin::ClientTools,
    snapshot: Option<&str>,
    excluded: &[String],
    excluded_schemas: &[String],
    out: &Path,
) -> Result<Vec<u8>, SchemaError> {
    let mut cmd = Command::new(tools.pg_dump());
    cmd.args([
        "--format=custom",
        "--schema-only",
        "--no-publications",
        "--no-subscriptions",
    ])
    .arg("--exclude-schema=walrelay")
    .args(snapshot.map(|name| format!("--snapshot={name}")))
    .arg("--file")
    .arg(out)
    .arg("--dbname")
    .arg(source.libpq_string());
    for table in excluded {
        cmd.arg(format!("--exclude-table={table}"));
    }
    for schema in excluded_schemas {
        cmd.arg(format!("--exclude-schema={}", quote_ident(schema)));
    }
    run_tool("pg_dump", cmd, source).await?;
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

/// Restores one section of `dump` into the target (of major version
/// `target_major`); returns what had to be translated for an older target.
pub(super) async fn restore(
    target: &ConnInfo,
    target_client: &Client,
    (tools, target_major): (&bin::ClientTools, u32),
    dump: &Path,
    section: Section,
    keep_owners: bool,
) -> Result<Vec<String>, SchemaError> {
    let program = tools.pg_restore();
    let script = super::dump_compat::needs_script(tools.major, target_major);
    let mut cmd = Command::new(&program);
    match section {
        Section::PreData => {
            cmd.arg("--section=pre-data");
            // A script gets its transaction from dump_compat.
            if !script {
                cmd.arg("--single-transaction");
            }
        }
        Section::PostData { jobs, .. } => {
            // A script is run on one connection: no parallel jobs.
            let jobs = if script { 1 } else { jobs.max(1) };
            cmd.arg("--section=post-data").arg(format!("--jobs={jobs}"));
        }
    }
    let list = restore_list(&program, target_client, dump, section).await?;
    cmd.arg(format!("--use-list={}", list.display()));
    cmd.arg("--exit-on-error");
    if !keep_owners {
        cmd.args(["--no-owner", "--no-acl"]);
    }
    if script {
        return super::dump_compat::restore_script(cmd, target, target_major, tools.major, dump)
            .await;
    }
    cmd.arg("--dbname").arg(target.libpq_string()).arg(dump);
    run_tool("pg_restore", cmd, target).await?;
    Ok(Vec::new())
}

/// Writes next to `dump` the section's table of contents without what the
/// target keeps for itself (`managed`) and, for a resumed post-data step,
/// without the entries whose object already exists on the target; returns
/// its path.
async fn restore_list(
    program: &Path,
    target: &Client,
    dump: &Path,
    section: Section,
) -> Result<std::path::PathBuf, SchemaError> {
    let (name, resuming) = match section {
        Section::PreData => ("pre-data", false),
        Section::PostData { resuming, .. } => ("post-data", resuming),
    };
    let output = Command::new(program)
        .arg("--list")
        .arg(format!("--section={name}"))
        .arg(dump)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|source| SchemaError::Spawn {
            program: "pg_restore",
            source,
        })?;
    if !output.status.success() {
        return Err(SchemaError::Tool {
            program: "pg_restore",
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
        });
    }
    let present = managed::present(target).await.map_err(sql)?;
    let (mut list, left) = managed::leave_alone(&String::from_utf8_lossy(&output.stdout), &present);
    if !left.is_empty() {
        tracing::info!(section = name, left_alone = %left.join(", "), "the target has these already (or only a superuser may create them): the schema copy leaves them as they are");
    }
    // A post-data restore cut short left some indexes, constraints and
    // triggers built (each is one transaction): restore only the others,
    // so the re-run never meets its own work.
    if resuming {
        let existing = existing_post_data(target).await.map_err(sql)?;
        let skipped;
        (list, skipped) = leave_out_existing(&list, &existing);
        tracing::info!(
            already_built = skipped,
            "resuming the post-data step: leaving out what already exists"
        );
    }
    let path = dump.with_extension(name);
    std::fs::write(&path, list).map_err(|source| SchemaError::Spawn {
        program: "pg_restore",
        source,
    })?;
    Ok(path)
}

/// The target's post-data objects, keyed as `pg_restore --list` names them:
/// (catalog oid, "schema tag").
async fn existing_post_data(
    target: &Client,
) -> Result<std::collections::HashSet<(u32, String)>, tokio_postgres::Error> {
    let rows = target
        .query(
            "SELECT 'pg_constraint'::regclass::oid, n.nspname || ' ' || r.relname || ' ' || c.conname \
             FROM pg_constraint c JOIN pg_class r ON r.oid = c.conrelid \
             JOIN pg_namespace n ON n.oid = r.relnamespace \
             UNION ALL \
             SELECT 'pg_class'::regclass::oid, n.nspname || ' ' || i.relname \
             FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid \
             JOIN pg_namespace n ON n.oid = i.relnamespace \
             UNION ALL \
             SELECT 'pg_trigger'::regclass::oid, n.nspname || ' ' || r.relname || ' ' || t.tgname \
             FROM pg_trigger t JOIN pg_class r ON r.oid = t.tgrelid \
             JOIN pg_namespace n ON n.oid = r.relnamespace WHERE NOT t.tgisinternal \
             UNION ALL \
             SELECT 'pg_policy'::regclass::oid, n.nspname || ' ' || r.relname || ' ' || p.polname \
             FROM pg_policy p JOIN pg_class r ON r.oid = p.polrelid \
             JOIN pg_namespace n ON n.oid = r.relnamespace \
             UNION ALL \
             SELECT 'pg_rewrite'::regclass::oid, n.nspname || ' ' || r.relname || ' ' || w.rulename \
             FROM pg_rewrite w JOIN pg_class r ON r.oid = w.ev_class \
             JOIN pg_namespace n ON n.oid = r.relnamespace \
             UNION ALL \
             SELECT 'pg_statistic_ext'::regclass::oid, n.nspname || ' ' || s.stxname \
             FROM pg_statistic_ext s JOIN pg_namespace n ON n.oid = s.stxnamespace",
            &[],
        )
        .await?;
    Ok(rows
        .into_iter()
        .map(|r| (r.get::<_, u32>(0), r.get::<_, String>(1)))
        .collect())
}

/// What `pg_restore --list` calls an object of each catalog, by the
/// catalog's oid (fixed in every PostgreSQL): kinds a restore creates with a
/// plain CREATE that fails when the object exists.
const KINDS: &[(u32, &[&str])] = &[
    (2606, &["CONSTRAINT", "FK CONSTRAINT", "CHECK CONSTRAINT"]),
    (1259, &["INDEX"]),
    (2620, &["TRIGGER"]),
    (3256, &["POLICY"]),
    (2618, &["RULE"]),
    (3381, &["STATISTICS"]),
];

/// `list` (`pg_restore --list` output: `id; catalog oid DESC schema tag
/// owner`) with the entries of `existing` objects commented out; and how
/// many. An entry is matched by its catalog (its kind) and names, never by
/// anything a server said.
fn leave_out_existing(
    list: &str,
    existing: &std::collections::HashSet<(u32, String)>,
) -> (String, usize) {
    let mut out = String::with_capacity(list.len());
    let mut skipped = 0;
    for line in list.lines() {
        if entry_exists(line, existing) {
            out.push(';');
            skipped += 1;
        }
        out.push_str(line);
        out.push('\n');
    }
    (out, skipped)
}

fn entry_exists(line: &str, existing: &std::collections::HashSet<(u32, String)>) -> bool {
    let Some((_, rest)) = line.split_once("; ") else {
        return false;
    };
    let mut fields = rest.splitn(3, ' ');
    let (Some(catalog), Some(_oid), Some(rest)) = (fields.next(), fields.next(), fields.next())
    else {
        return false;
    };
    let Ok(catalog) = catalog.parse::<u32>() else {
        return false;
    };
    let Some((_, descs)) = KINDS.iter().find(|(oid, _)| *oid == catalog) else {
        return false;
    };
    // "INDEX ATTACH" is idempotent and not an index; only exact kinds count.
    let Some(names) = descs
        .iter()
        .find_map(|d| rest.strip_prefix(d).and_then(|r| r.strip_prefix(' ')))
    else {
        return false;
    };
    // `names` is "schema tag owner"; the owner may be anything, so the
    // object's "schema tag" must be followed by a space (or end the line).
    existing.iter().any(|(oid, name)| {
        *oid == catalog
            && names
                .strip_prefix(name.as_str())
                .is_some_and(|r| r.is_empty() || r.starts_with(' '))
    })
}

/// Runs a libpq tool with the password in `PGPASSWORD`. The child dies
/// with this future: a walrelay stopped by a signal leaves no tool behind.
pub(super) async fn run_tool(
    program: &'static str,
    mut cmd: Command,
    conn: &ConnInfo,
) -> Result<(), SchemaError> {
    cmd.env_remove("PGPASSWORD");
    if let Some(password) = &conn.password {
        cmd.env("PGPASSWORD", password.expose());
    }
    let output = cmd
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|source| SchemaError::Spawn { program, source })?;
    if output.status.success() {
        Ok(())
    } else {
        let stderr = String::from_utf8_lossy(&output.stderr).trim().to_string();
        Err(SchemaError::Tool { program, stderr })
    }
}

/// Refuses target tables that already exist (schema copy) or hold rows.
pub(super) async fn check_target_free(
    target: &Client,
    tables: &[Table],
    map: &Map,
    expect_existing: bool,
) -> Result<(), SchemaError> {
    for table in tables {
        let mapped = MappedTable::new(table, map);
        // The schema copy creates the source's name and renames it to the
        // map's after post-data: neither may be taken.
        let (schema, name) = mapped.target_name();
        let mut names = vec![(schema, name, mapped.target_qualified())];
        if !expect_existing && mapped.is_mapped() {
            names.push((&table.schema, &table.name, table.qualified()));
        }
        for (schema, name, qualified) in names {
            let exists = catalog::table_columns(target, schema, name)
                .await
                .map_err(sql)?
                .is_some();
            if exists && !expect_existing {
                return Err(SchemaError::Exists(format!("{schema}.{name}")));
            }
            if exists && table.kind == 'r' {
                let has_rows = target
                    .query_one(
                        &format!("SELECT EXISTS (SELECT 1 FROM ONLY {qualified})"),
                        &[],
                    )
                    .await
                    .map_err(sql)?
                    .get::<_, bool>(0);
                if has_rows {
                    return Err(SchemaError::NotEmpty(format!("{schema}.{name}")));
                }
            }
        }
    }
    Ok(())
}

/// With `--schema skip`: every selected table must exist on the target with
/// every copied source column, of the same type or a wider one that keeps
/// each value's text form ([`widening`]). Every mismatch is named at once;
/// the widenings accepted are returned (`schema.table.column: from → to`).
pub(super) async fn check_target_matches(
    target: &Client,
    tables: &[Table],
    map: &Map,
) -> Result<Vec<String>, SchemaError> {
    let mut problems = Vec::new();
    let mut widened = Vec::new();
    for table in tables {
        let mapped = MappedTable::new(table, map);
        let (schema, name) = mapped.target_name();
        let display = mapped.target_display();
        let Some(columns) = catalog::table_columns(target, schema, name)
            .await
            .map_err(sql)?
        else {
            problems.push(format!("{display}: missing on the target"));
            continue;
        };
        for form in mapped.columns() {
            let name = format!("{display}.{}", form.target);
            // A hash mask writes text whatever the source type was.
            let source_type = match form.mask {
                Some(crate::map::Mask::Hash) => "text",
                _ => form.source.type_name.as_str(),
            };
            match columns.iter().find(|c| c.name == form.target) {
                None => problems.push(format!("{name}: missing on the target")),
                Some(t) if t.generated => problems.push(format!(
                    "{name}: generated on the target but not on the source"
                )),
                Some(t) => match widening::compare(source_type, &t.type_name) {
                    widening::TypeChange::Same => {}
                    widening::TypeChange::Wider => {
                        widened.push(format!("{name}: {source_type} → {}", t.type_name));
                    }
                    change => problems.push(format!(
                        "{name}: {source_type} → {} ({})",
                        t.type_name,
                        change.describe()
                    )),
                },
            }
        }
        if let Some(m) = mapped.map {
            for excluded in m
                .exclude
                .iter()
                .filter(|e| columns.iter().any(|c| &c.name == *e))
            {
                problems.push(format!("{display}.{excluded}: excluded by the map but present on the target (drop it there, or it stays empty)"));
            }
        }
    }
    if problems.is_empty() {
        Ok(widened)
    } else {
        Err(SchemaError::Mismatch(problems))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIST: &str = ";\n; Archive created at 2026-12-02\n;\n\
3345; 2606 16390 CONSTRAINT public parent parent_pkey postgres\n\
3347; 2606 16392 CONSTRAINT public parent parent_pkey2 postgres\n\
3350; 1259 16400 INDEX public child_parent postgres\n\
3351; 1259 16401 INDEX ATTACH public child_parent_p1 postgres\n\
3352; 2606 16410 FK CONSTRAINT public child child_parent_id_fkey postgres\n\
3353; 2620 16420 TRIGGER public child child_noop postgres\n";

    fn existing(items: &[(u32, &str)]) -> std::collections::HashSet<(u32, String)> {
        items.iter().map(|(o, n)| (*o, n.to_string())).collect()
    }

    #[test]
    fn existing_constraints_indexes_and_triggers_are_commented_out() {
        let (out, skipped) = leave_out_existing(
            LIST,
            &existing(&[
                (2606, "public parent parent_pkey"),
                (1259, "public child_parent"),
                (2620, "public child child_noop"),
            ]),
        );
        assert_eq!(skipped, 3);
        assert!(out.contains(";3345; 2606"));
        assert!(
            out.contains("\n3347; 2606"),
            "a longer name is another object"
        );
        assert!(out.contains(";3350; 1259 16400 INDEX public"));
        assert!(out.contains("\n3351; 1259 16401 INDEX ATTACH"));
        assert!(out.contains("\n3352; 2606"));
        assert!(out.contains(";3353; 2620"));
    }

    #[test]
    fn a_name_under_another_catalog_does_not_count() {
        let (out, skipped) =
            leave_out_existing(LIST, &existing(&[(1259, "public parent parent_pkey")]));
        assert_eq!(skipped, 0);
        assert_eq!(out.lines().count(), LIST.lines().count());
    }
}
