//! Schema changes on the source, followed on the target, and tables the
//! source gains while the stream runs.
//!
//! Two ways of knowing, the first preferred:
//! - an event trigger on the source (`trigger.rs`) records every DDL
//!   command as a transactional logical message (prefix [`PREFIX`]); it
//!   arrives inside its transaction, at its place among the row changes, so
//!   the target takes the change after the rows before it and before those
//!   that depend on it, in the same target transaction (a crash replays both
//!   or neither);
//! - a periodic catalog check finds tables created on the source that match
//!   the selection (without the trigger, the only way to see them; with it, a
//!   safety net).
//!
//! A message describes the object *after* the command (its columns as the
//! source's catalog holds them then); the target is brought to that shape
//! (`follow.rs`), so a replayed message, or one the operator already applied
//! by hand, changes nothing. What cannot be reproduced safely stops the
//! stream naming the statement, before anything of its transaction commits;
//! once the operator made the target match, the stream goes on.
//!
//! A new table (`CREATE TABLE` in the selection, or found by the check) is
//! published (walrelay's own publication only: an operator's is never
//! changed, the table is reported instead), then brought in from a
//! consistent point between two source transactions
//! (`snapshot::added_table`): its snapshot LSN makes the stream skip what
//! the copy holds.

mod event;
mod follow;
mod new_table;
pub(crate) mod trigger;

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use tokio_postgres::Client;
use walrelay_proto::Lsn;

use crate::apply::{Applier, ApplyError};
use crate::config::Config;
use crate::pg::catalog::quote_ident;
use crate::pg::connect::{self, ConnectError};
use crate::pg::error::{self as pgerror, with_sqlstate, Kind};
use crate::snapshot::added_table::AddedTableError;
use event::{Dropped, End, Event};

/// The prefix of the trigger's messages.
pub(crate) const PREFIX: &str = "walrelay.ddl";

/// `--ddl`: what the stream does with a schema change the trigger reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DdlMode {
    /// Stop, naming the statement, unless the target already matches.
    Stop,
    /// Apply it on the target (the default where the trigger is installed).
    Follow,
    /// Install no trigger and ignore its messages: only what Relation
    /// messages show is seen (a source column the target lacks stops the
    /// stream, or is added with `--auto-add-columns`).
    Off,
}

/// Why a schema change stopped the stream.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DdlError {
    #[error("the source ran {statement} (in the transaction committing at {commit_lsn}), which walrelay does not follow: {reason}; nothing from that transaction on was applied. Make the target's table match the source's yourself{hint}, then restart: the stream goes on once they match")]
    Unfollowable {
        statement: String,
        commit_lsn: Lsn,
        reason: String,
        hint: &'static str,
    },
    #[error("the source ran {statement} (in the transaction committing at {commit_lsn}) on table {table}, which the map (--map) renames, filters or masks: schema changes are not applied through the map, so nothing from that transaction on was applied. Change the target's table yourself into the map's shape of the source's new one (and update the map if a mapped column was renamed), then run the stream with `--ddl off`, which leaves schema changes to you")]
    Mapped {
        statement: String,
        commit_lsn: Lsn,
        table: String,
    },
    #[error("applying the source's {statement} on the target: {source}")]
    Failed {
        statement: String,
        #[source]
        source: ApplyError,
    },
    #[error("a schema-change message from the source's event trigger could not be read; the trigger is of another walrelay version: run the stream again with this version (it reinstalls the trigger), after `walrelay cleanup` if it persists")]
    Unreadable(#[source] serde_json::Error),
    #[error(transparent)]
    Apply(#[from] ApplyError),
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error("{what}: {}", with_sqlstate(.source))]
    Sql {
        what: &'static str,
        #[source]
        source: tokio_postgres::Error,
    },
    #[error("bringing in table {table}, which the source gained: {source}")]
    AddTable {
        table: String,
        #[source]
        source: AddedTableError,
    },
}

impl DdlError {
    pub(crate) fn kind(&self) -> Kind {
        match self {
            DdlError::Apply(err) | DdlError::Failed { source: err, .. } => err.kind(),
            DdlError::Connect(err) => err.kind(),
            DdlError::Sql { source, .. } => pgerror::kind(source),
            DdlError::AddTable {
                source: AddedTableError::Connect(err),
                ..
            } => err.kind(),
            _ => Kind::Definite,
        }
    }
}

fn sql(what: &'static str) -> impl Fn(tokio_postgres::Error) -> DdlError {
    move |source| DdlError::Sql { what, source }
}

/// How the stream learns of schema changes.
#[derive(Debug, Clone)]
pub(crate) struct DdlOptions {
    /// `None`: follow where the trigger is installed.
    pub mode: Option<DdlMode>,
    /// How often the source's catalog is checked for new tables.
    pub new_table_interval: Duration,
}

/// One stream session's view of schema changes.
pub(crate) struct Follower {
    config: Config,
    /// With the trigger installed: what to do with what it reports.
    mode: Option<DdlMode>,
    source: Client,
    /// Source oid → the table's name as last followed.
    known: HashMap<u32, (String, String)>,
    /// A table created in the transaction being applied: brought in after it.
    created: bool,
    /// Tables emptied by the message being applied, to be copied again.
    copy_again: Vec<u32>,
    /// Tables reported once as not brought in (and why), not repeated.
    reported: HashSet<u32>,
    next_check: Instant,
    interval: Duration,
}

impl Follower {
    /// Installs the trigger (idempotent) and reads which tables the
    /// migration holds.
    pub(crate) async fn start(
        config: &Config,
        opts: &DdlOptions,
        target: &Client,
    ) -> Result<Follower, DdlError> {
        let source = connect::connect(&config.source, "walrelay-ddl").await?;
        let mode = capture(&source, opts).await;
        let tables = crate::state::copy::source_tables(target, &config.slot)
            .await
            .map_err(|e| DdlError::Apply(ApplyError::State(e)))?;
        let known = tables
            .into_iter()
            .map(|(oid, schema, name, _)| (oid, (schema, name)))
            .collect();
        Ok(Follower {
            config: config.clone(),
            mode,
            source,
            known,
            created: false,
            copy_again: Vec::new(),
            reported: HashSet::new(),
            next_check: Instant::now() + opts.new_table_interval,
            interval: opts.new_table_interval,
        })
    }

    /// A message of [`PREFIX`] inside the transaction being applied.
    pub(crate) async fn message(
        &mut self,
        content: &[u8],
        applier: &mut Applier,
    ) -> Result<(), DdlError> {
        let (Some(commit_lsn), Some(mode)) = (applier.applying(), self.mode) else {
            return Ok(());
        };
        self.copy_again.clear();
        let event = Event::parse(content).map_err(DdlError::Unreadable)?;
        let statement = event.statement();
        if let Some(table) = self.mapped_table(&event) {
            return Err(DdlError::Mapped {
                statement,
                commit_lsn,
                table,
            });
        }
        let planned = match &event {
            Event::Error { tag, sqlstate, .. } => Err(format!(
                "walrelay's event trigger could not describe this {tag} (SQLSTATE {})",
                sqlstate.as_deref().unwrap_or("unknown")
            )),
            Event::Drop(dropped) => Ok(self.drops(dropped, applier, commit_lsn).await?),
            Event::End(end) => self.end(end, applier, commit_lsn).await?,
        };
        let unfollowable = |reason: String, hint| DdlError::Unfollowable {
            statement: statement.clone(),
            commit_lsn,
            reason,
            hint,
        };
        let statements = planned.map_err(|reason| unfollowable(reason, ""))?;
        if statements.is_empty() {
            return Ok(());
        }
        if mode == DdlMode::Stop {
            return Err(unfollowable(
                format!("--ddl stop (the target needs: {})", statements.join("; ")),
                " (or run with --ddl follow)",
            ));
        }
        applier
            .schema_change(&statements.join(";\n"))
            .await
            .map_err(|source| DdlError::Failed {
                statement: statement.clone(),
                source,
            })?;
        for oid in std::mem::take(&mut self.copy_again) {
            self.copy_again(oid, applier).await?;
        }
        tracing::info!(commit_lsn = %commit_lsn, statements = statements.len(), "followed a schema change of the source");
        Ok(())
    }

    /// A mapped table the event changes (by its name now, or the name the
    /// migration knows it by): its target has the map's shape, which the
    /// source's shape after the command cannot be compared with.
    fn mapped_table(&self, event: &Event) -> Option<String> {
        let map = &self.config.map;
        let mapped = |schema: &str, name: &str| map.table(schema, name).is_some();
        let names: Vec<(String, String)> = match event {
            Event::End(end) => {
                let mut names = Vec::new();
                if let Some(t) = &end.table {
                    names.push((t.schema.clone(), t.name.clone()));
                }
                if let Some(i) = &end.index {
                    names.push((i.table_schema.clone(), i.table.clone()));
                }
                if let Some(known) = end.oid.and_then(|oid| self.known.get(&oid)) {
                    names.push(known.clone());
                }
                names
            }
            Event::Drop(dropped) => dropped
                .objects
                .iter()
                .filter(|o| o.object_type.starts_with("table"))
                .filter_map(|o| match o.address_names.as_slice() {
                    [schema, table, ..] => Some((schema.clone(), table.clone())),
                    _ => None,
                })
                .collect(),
            Event::Error { .. } => Vec::new(),
        };
        names
            .into_iter()
            .find(|(schema, name)| mapped(schema, name))
            .map(|(schema, name)| format!("{schema}.{name}"))
    }

    /// The statements a `ddl_command_end` message needs, or why it cannot
    /// be followed.
    async fn end(
        &mut self,
        end: &End,
        applier: &mut Applier,
        commit_lsn: Lsn,
    ) -> Result<Result<Vec<String>, String>, DdlError> {
        let selection = &self.config.selection;
        if let Some(index) = &end.index {
            let wanted =
                end.tag == "CREATE INDEX" && selection.matches(&index.table_schema, &index.table);
            return Ok(Ok(if wanted {
                created_index(index, applier).await?
            } else {
                Vec::new()
            }));
        }
        let (Some(table), Some(oid)) = (&end.table, end.oid) else {
            return Ok(Ok(Vec::new()));
        };
        if table.persistence != "p" {
            return Ok(Ok(Vec::new()));
        }
        let selected = selection.matches(&table.schema, &table.name);
        let before = self.known.get(&oid).cloned();
        if before.is_none() && !selected {
            return Ok(Ok(Vec::new()));
        }
        if commit_lsn < applier.snapshot_lsn_of(&table.schema, &table.name) {
            return Ok(Ok(Vec::new()));
        }
        let now = qualified(&table.schema, &table.name);
        let (mut out, current) = match &before {
            Some((schema, name)) if (schema, name) != (&table.schema, &table.name) => {
                if !selected {
                    return Ok(Err(format!("the table was renamed to {}.{}, which the selection (--table/--exclude-table) leaves out", table.schema, table.name)));
                }
                renamed(applier, (schema, name), table).await?
            }
            _ => (Vec::new(), now.clone()),
        };
        let target = applier.settled_target().await?;
        let Some(columns) = follow::target_columns(target, &current)
            .await
            .map_err(sql("reading the target's catalog"))?
        else {
            if table.kind == "p" {
                return Ok(Err("a partitioned table created on the source is not brought in while streaming yet; create it on the target (with its partitions), then restart".into()));
            }
            // A table the target lacks: brought in after this transaction.
            self.created = true;
            return Ok(Ok(Vec::new()));
        };
        let command = follow::Command {
            recopyable: table.kind == "r" && !table.partition,
            ..follow::Command::of(&end.query)
        };
        match follow::column_statements(&now, &table.columns, &columns, command) {
            Ok(planned) => {
                out.extend(planned.statements);
                if planned.recopy {
                    tracing::warn!(table = %format!("{}.{}", table.schema, table.name), "a column the source added holds values no statement reproduces (a volatile default): the table is emptied on the target and copied again as of a new consistent point, in the same target transaction");
                    self.copy_again.push(oid);
                }
            }
            Err(reason) => return Ok(Err(reason)),
        }
        if before.is_some() {
            // Renames are followed by oid; a table the migration does not
            // hold yet stays unknown, so the catalog check brings it in.
            self.known
                .insert(oid, (table.schema.clone(), table.name.clone()));
        }
        Ok(Ok(out))
    }

    /// The statements a `sql_drop` message needs.
    async fn drops(
        &mut self,
        dropped: &Dropped,
        applier: &mut Applier,
        commit_lsn: Lsn,
    ) -> Result<Vec<String>, DdlError> {
        let selection = self.config.selection.clone();
        let mut out = Vec::new();
        for object in &dropped.objects {
            let names = &object.address_names;
            let (schema, table) = match (object.object_type.as_str(), names.as_slice()) {
                ("table", [schema, table]) => (schema, table),
                ("table column" | "table constraint", [schema, table, _]) => (schema, table),
                ("index", [schema, index]) => {
                    let target = applier.settled_target().await?;
                    let index = qualified(schema, index);
                    if let Some((s, t)) = follow::index_table(target, &index)
                        .await
                        .map_err(sql("reading the target's catalog"))?
                    {
                        if selection.matches(&s, &t) {
                            out.push(format!("DROP INDEX IF EXISTS {index}"));
                        }
                    }
                    continue;
                }
                _ => continue,
            };
            if !selection.matches(schema, table)
                || commit_lsn < applier.snapshot_lsn_of(schema, table)
            {
                continue;
            }
            let q = qualified(schema, table);
            out.push(match (object.object_type.as_str(), names.as_slice()) {
                ("table", _) => {
                    self.known.retain(|_, (s, t)| (&*s, &*t) != (schema, table));
                    format!("DROP TABLE IF EXISTS {q}")
                }
                ("table column", [_, _, column]) => {
                    format!(
                        "ALTER TABLE IF EXISTS {q} DROP COLUMN IF EXISTS {}",
                        quote_ident(column)
                    )
                }
                (_, [_, _, constraint]) => format!(
                    "ALTER TABLE IF EXISTS {q} DROP CONSTRAINT IF EXISTS {}",
                    quote_ident(constraint)
                ),
                _ => continue,
            });
        }
        Ok(out)
    }
}

/// The statements renaming the target table of a table the source renamed
/// (none when the target has it under the new name already), and the name
/// the target has it under until they run.
async fn renamed(
    applier: &mut Applier,
    (schema, name): (&str, &str),
    table: &event::TableShape,
) -> Result<(Vec<String>, String), DdlError> {
    let target = applier.settled_target().await?;
    let (old, now) = (
        qualified(schema, name),
        qualified(&table.schema, &table.name),
    );
    let catalog = sql("reading the target's catalog");
    if follow::relation_exists(target, &old)
        .await
        .map_err(&catalog)?
        && !follow::relation_exists(target, &now)
            .await
            .map_err(&catalog)?
    {
        Ok((rename_table(&old, schema, name, table), old))
    } else {
        Ok((Vec::new(), now))
    }
}

/// The index the source created, when its table is on the target and the
/// index is not.
async fn created_index(
    index: &event::IndexShape,
    applier: &mut Applier,
) -> Result<Vec<String>, DdlError> {
    let target = applier.settled_target().await?;
    let table = qualified(&index.table_schema, &index.table);
    let name = qualified(&index.schema, &index.name);
    let catalog = sql("reading the target's catalog");
    let wanted = follow::relation_exists(target, &table)
        .await
        .map_err(&catalog)?
        && !follow::relation_exists(target, &name)
            .await
            .map_err(&catalog)?;
    // A partitioned table's index is defined ON ONLY the parent; on the
    // target it is created with its partitions' indexes at once.
    let definition = index.definition.replacen(" ON ONLY ", " ON ", 1);
    Ok(if wanted { vec![definition] } else { Vec::new() })
}

/// Installs the trigger; what the stream does with its messages (`None`:
/// nothing captures schema changes).
async fn capture(source: &Client, opts: &DdlOptions) -> Option<DdlMode> {
    let interval = opts.new_table_interval.as_secs();
    if opts.mode == Some(DdlMode::Off) {
        tracing::info!("--ddl off: schema changes on the source are not captured; a source column the target lacks stops the stream (or is added with --auto-add-columns); tables created on the source are found by a catalog check every {interval}s");
        return None;
    }
    let why = match trigger::install(source).await {
        trigger::Installed::Yes => None,
        trigger::Installed::No(why) => Some(why),
    };
    let present = why.is_none() || trigger::present(source).await.unwrap_or(false);
    let mode = opts.mode.unwrap_or(DdlMode::Follow);
    match (why, present) {
        (None, _) => {
            tracing::info!(ddl = ?mode, "schema changes on the source are captured by walrelay's event trigger");
            Some(mode)
        }
        (Some(why), true) => {
            tracing::warn!(ddl = ?mode, reason = %why, "walrelay's event trigger could not be refreshed, but is installed: schema changes on the source are captured");
            Some(mode)
        }
        (Some(why), false) => {
            tracing::warn!(reason = %why, "schema changes on the source cannot be captured (no event trigger): a source column the target lacks stops the stream (or is added with --auto-add-columns); tables created on the source are found by a catalog check every {interval}s");
            None
        }
    }
}

fn qualified(schema: &str, name: &str) -> String {
    format!("{}.{}", quote_ident(schema), quote_ident(name))
}

fn rename_table(old: &str, schema: &str, name: &str, now: &event::TableShape) -> Vec<String> {
    let mut out = Vec::new();
    let mut at = old.to_string();
    if schema != now.schema {
        out.push(format!(
            "ALTER TABLE {at} SET SCHEMA {}",
            quote_ident(&now.schema)
        ));
        at = qualified(&now.schema, name);
    }
    if name != now.name {
        out.push(format!(
            "ALTER TABLE {at} RENAME TO {}",
            quote_ident(&now.name)
        ));
    }
    out
}
