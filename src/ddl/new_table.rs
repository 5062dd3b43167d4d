//! Tables the source gains while the stream runs: found (the trigger's
//! `CREATE TABLE`, a catalog check, or a Relation message of a table the
//! target lacks), published (walrelay's own publication only), then brought
//! in from a consistent point between two source transactions
//! (`snapshot::added_table`).

use std::time::Instant;

use tokio_postgres::error::SqlState;

use super::{follow, qualified, sql, DdlError, Follower};
use crate::apply::Applier;
use crate::pg::catalog::{self, quote_ident, Table};
use crate::pg::connect::error_text;
use crate::pg::publication;
use crate::snapshot::added_table;

impl Follower {
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
        let lsn = added_table::bring_in(&self.config, table)
            .await
            .map_err(|source| DdlError::AddTable {
                table: table.display(),
                source,
            })?;
        applier.table_copied(&table.schema, &table.name, lsn);
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

    /// Copies again, inside the batch that emptied it (so its checkpoint
    /// never passes the emptied table), a table whose added column's values
    /// no statement reproduces: as of a new consistent point L after the
    /// transaction being applied, whose later changes to it, and those of
    /// every transaction committed before L, the copy holds and the snapshot
    /// LSN rule skips.
    pub(super) async fn copy_again(
        &mut self,
        oid: u32,
        applier: &mut Applier,
    ) -> Result<(), DdlError> {
        let tables = catalog::tables(&self.source, &self.config.selection)
            .await
            .map_err(sql("reading the source's tables"))?;
        let Some(table) = tables.selected.into_iter().find(|t| t.oid == oid) else {
            // Dropped on the source since: its DROP follows in the stream.
            return Ok(());
        };
        let target = applier.settled_target().await?;
        let lsn = added_table::copy_again_into(&self.config, &table, target)
            .await
            .map_err(|source| DdlError::AddTable {
                table: table.display(),
                source,
            })?;
        applier.table_copied(&table.schema, &table.name, lsn);
        Ok(())
    }
}
