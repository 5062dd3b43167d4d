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
pub(crate) mod trigger;

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use tokio_postgres::error::SqlState;
use tokio_postgres::Client;
use walrelay_proto::Lsn;

use crate::apply::{Applier, ApplyError};
use crate::config::Config;
use crate::pg::catalog::{self, quote_ident, Table};
use crate::pg::connect::{self, error_text, ConnectError};
use crate::pg::error::{self as pgerror, with_sqlstate, Kind};
use crate::pg::publication;
use crate::snapshot::added_table::{self, AddedTableError};
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
    /// Tables emptied in the transaction being applied, to be copied again.
    copy_again: Vec<u32>,
    /// Tables to copy again (emptied, or holding only what the stream wrote since).
    again: HashSet<u32>,
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
        // A table emptied to be copied again (the copy did not commit
        // before the last run ended) is copied before anything else.
        let again: HashSet<u32> = tables.iter().filter(|t| !t.3).map(|t| t.0).collect();
        let known = tables
            .into_iter()
            .filter(|t| t.3)
            .map(|(oid, schema, name, _)| (oid, (schema, name)))
            .collect();
        Ok(Follower {
            config: config.clone(),
            mode,
            source,
            known,
            created: !again.is_empty(),
            copy_again: Vec::new(),
            again,
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
            // With the emptied rows, in the same target transaction: a crash
            // before the new copy commits finds the table still pending.
            let target = applier.settled_target().await?;
            crate::state::copy::mark_for_copy_again(target, &self.config.slot, oid)
                .await
                .map_err(|e| DdlError::Apply(ApplyError::State(e)))?;
            self.known.remove(&oid);
            self.again.insert(oid);
            self.created = true;
        }
        tracing::info!(commit_lsn = %commit_lsn, statements = statements.len(), "followed a schema change of the source");
        Ok(())
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
            if !selection.matches(&index.table_schema, &index.table) || end.tag != "CREATE INDEX" {
                return Ok(Ok(Vec::new()));
            }
            let target = applier.settled_target().await?;
            let table = qualified(&index.table_schema, &index.table);
            let name = qualified(&index.schema, &index.name);
            let wanted = follow::relation_exists(target, &table)
                .await
                .map_err(sql("reading the target's catalog"))?
                && !follow::relation_exists(target, &name)
                    .await
                    .map_err(sql("reading the target's catalog"))?;
            // A partitioned table's index is defined ON ONLY the parent; on
            // the target it is created with its partitions' indexes at once.
            let definition = index.definition.replacen(" ON ONLY ", " ON ", 1);
            return Ok(Ok(if wanted { vec![definition] } else { Vec::new() }));
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
        let mut out = Vec::new();
        let mut current = now.clone();
        if let Some((schema, name)) = &before {
            if (schema, name) != (&table.schema, &table.name) {
                if !selected {
                    return Ok(Err(format!("the table was renamed to {}.{}, which the selection (--table/--exclude-table) leaves out", table.schema, table.name)));
                }
                let target = applier.settled_target().await?;
                let old = qualified(schema, name);
                if follow::relation_exists(target, &old)
                    .await
                    .map_err(sql("reading the target's catalog"))?
                    && !follow::relation_exists(target, &now)
                        .await
                        .map_err(sql("reading the target's catalog"))?
                {
                    out.extend(rename_table(&old, schema, name, table));
                    current = old;
                }
            }
        }
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
                    tracing::warn!(table = %format!("{}.{}", table.schema, table.name), "a column the source added holds values no statement reproduces (a volatile default): the table is emptied on the target and copied again as of a new consistent point");
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

    /// Whether [`Self::between_transactions`] has something to do.
    pub(crate) fn wants_work(&self) -> bool {
        self.created || Instant::now() >= self.next_check
    }

    /// Between two source transactions, with nothing open on the target:
    /// brings in every selected table the source has and the migration
    /// does not.
    pub(crate) async fn between_transactions(
        &mut self,
        applier: &mut Applier,
    ) -> Result<(), DdlError> {
        self.created = false;
        self.next_check = Instant::now() + self.interval;
        let tables = catalog::tables(&self.source, &self.config.selection)
            .await
            .map_err(sql("reading the source's tables"))?;
        for table in tables.selected {
            if table.kind != 'r' || table.unlogged || self.known.contains_key(&table.oid) {
                continue;
            }
            if self.publish(&table).await? {
                self.bring_in(&table, applier).await?;
            }
        }
        Ok(())
    }

    /// A Relation message (before the applier resolves it): a selected
    /// table the target lacks, published by someone else before walrelay
    /// brought it in (an operator's publication), is brought in now. The
    /// changes of the transaction being applied committed before the copy's
    /// consistent point, so the copy holds them and they are skipped.
    pub(crate) async fn relation(
        &mut self,
        rel: &walrelay_proto::Relation,
        applier: &mut Applier,
    ) -> Result<(), DdlError> {
        let schema = if rel.namespace.is_empty() {
            "pg_catalog"
        } else {
            rel.namespace.as_str()
        };
        if self.known.contains_key(&rel.id) || !self.config.selection.matches(schema, &rel.name) {
            return Ok(());
        }
        let target = applier.settled_target().await?;
        if follow::relation_exists(target, &qualified(schema, &rel.name))
            .await
            .map_err(sql("reading the target's catalog"))?
        {
            return Ok(());
        }
        let tables = catalog::tables(&self.source, &self.config.selection)
            .await
            .map_err(sql("reading the source's tables"))?;
        match tables
            .selected
            .into_iter()
            .find(|t| t.oid == rel.id && t.kind == 'r')
        {
            Some(table) => self.bring_in(&table, applier).await,
            None => Ok(()),
        }
    }

    async fn bring_in(&mut self, table: &Table, applier: &mut Applier) -> Result<(), DdlError> {
        let again = self.again.contains(&table.oid);
        let lsn = added_table::bring_in(&self.config, table, again)
            .await
            .map_err(|source| DdlError::AddTable {
                table: table.display(),
                source,
            })?;
        applier.table_copied(&table.schema, &table.name, lsn);
        self.again.remove(&table.oid);
        self.known
            .insert(table.oid, (table.schema.clone(), table.name.clone()));
        Ok(())
    }

    /// Makes the publication carry `table`; `false` (reported once) when
    /// it cannot be: no replica identity, or an operator's publication.
    async fn publish(&mut self, table: &Table) -> Result<bool, DdlError> {
        let name = &self.config.publication;
        let first = self.reported.insert(table.oid);
        if !table.has_usable_replica_identity() {
            if first {
                tracing::warn!(table = %table.display(), "a table the source gained matches the selection but has no primary key or replica identity (published, its UPDATEs and DELETEs would fail on the source): not brought in; give it a primary key (or REPLICA IDENTITY) and walrelay brings it in");
            }
            return Ok(false);
        }
        let existing = publication::existing(&self.source, name)
            .await
            .map_err(sql("reading the publication"))?
            .unwrap_or_default();
        if existing.all_tables
            || existing.tables.contains(&table.oid)
            || existing.schemas.contains(&table.schema)
        {
            return Ok(true);
        }
        let own = publication::is_walrelays(&self.source, name)
            .await
            .map_err(sql("reading the publication"))?;
        let add = format!(
            "ALTER PUBLICATION {} ADD TABLE {}",
            quote_ident(name),
            table.qualified()
        );
        if !own {
            if first {
                tracing::warn!(table = %table.display(), publication = %name, "a table the source gained matches the selection, but the publication is not walrelay's and walrelay does not change it: not brought in; to bring it in, run on the source: {add}");
            }
            return Ok(false);
        }
        match self.source.batch_execute(&add).await {
            Ok(()) => {
                tracing::warn!(table = %table.display(), publication = %name, "added a table the source gained to walrelay's publication");
                Ok(true)
            }
            Err(err) if err.code() == Some(&SqlState::INSUFFICIENT_PRIVILEGE) => {
                if first {
                    tracing::warn!(table = %table.display(), error = %error_text(&err), "a table the source gained could not be published (the publication's owner must own the table): not brought in; have its owner run: {add}");
                }
                Ok(false)
            }
            Err(err) => Err(sql("adding a table to the publication")(err)),
        }
    }
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
