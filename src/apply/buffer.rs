//! The per-table buffer of keyed changes waiting to be applied set-wise
//! ([`super::net`]). Bounded by the batch byte limit: when full it is
//! applied inside the open target transaction (never committed early).

use std::collections::HashMap;
use std::sync::Arc;

use tokio_postgres::types::ToSql;
use tokio_postgres::Statement;
use walrelay_proto::{Lsn, OldTuple};

use super::net::{self, RowChange, TextArray};
use super::pipeline::{ChangeMeta, Pipeline, StatementError};
use super::relations::RelationInfo;
use super::statements::{self, Op, StatementCache};
use super::ApplyError;
use crate::pg::connect::safe_error_text;

struct Buffered {
    change: RowChange,
    xid: u32,
    commit_lsn: Lsn,
}

struct TableBuffer {
    rel: Arc<RelationInfo>,
    changes: Vec<Buffered>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum SetOp {
    Delete,
    Insert,
    Update,
}

/// Buffered keyed changes, per table, in source order.
#[derive(Default)]
pub(super) struct Buffer {
    tables: Vec<TableBuffer>,
    index: HashMap<u32, usize>,
    bytes: usize,
    statements: HashMap<(u32, u64, SetOp, Vec<bool>), Statement>,
}

impl Buffer {
    /// Bytes of change data held.
    pub(super) fn bytes(&self) -> usize {
        self.bytes
    }

    /// Whether changes of relation `id` are buffered.
    pub(super) fn holds(&self, id: u32) -> bool {
        self.index.contains_key(&id)
    }

    /// Adds one change.
    pub(super) fn push(
        &mut self,
        rel: &Arc<RelationInfo>,
        change: RowChange,
        xid: u32,
        commit_lsn: Lsn,
        size: usize,
    ) {
        let cells = match &change {
            RowChange::Insert(t) | RowChange::Update(t) | RowChange::Delete(t) => t.cells.len(),
        };
        let slot = *self.index.entry(rel.id).or_insert_with(|| {
            self.tables.push(TableBuffer {
                rel: Arc::clone(rel),
                changes: Vec::new(),
            });
            self.tables.len() - 1
        });
        self.tables[slot].changes.push(Buffered {
            change,
            xid,
            commit_lsn,
        });
        // What a buffered change really costs: its payload, plus a cell
        // (and its netting copy) per column and the bookkeeping around it.
        self.bytes += size + cells * 2 * std::mem::size_of::<walrelay_proto::Cell>() + 128;
    }

    /// Forgets everything (rollback, new session).
    pub(super) fn clear(&mut self) {
        self.tables.clear();
        self.index.clear();
        self.bytes = 0;
    }

    /// Applies every buffered change inside the open transaction, without
    /// waiting on the target more than once: one savepoint, every table's
    /// set statements pipelined behind it, their row counts checked when
    /// they all answered, the savepoint released without waiting. If any
    /// set statement fails or miscounts, everything since the savepoint is
    /// rolled back and each table is applied on its own as before (its set
    /// statements, else its changes one by one in source order, which names
    /// the change that fails). Statements queued before are left in flight.
    pub(super) async fn flush(
        &mut self,
        pipeline: &mut Pipeline,
        rows: &mut StatementCache,
    ) -> Result<(), ApplyError> {
        let tables = std::mem::take(&mut self.tables);
        self.index.clear();
        self.bytes = 0;
        let mut netted = Vec::new();
        for table in &tables {
            match net::net(&table.rel, table.changes.iter().map(|b| &b.change)) {
                Ok(effect) => netted.push((table, effect)),
                Err(net::NotNettable) => Self::one_by_one(table, pipeline, rows).await?,
            }
        }
        if netted.is_empty() {
            return Ok(());
        }
        pipeline
            .control("savepoint", "SAVEPOINT walrelay_net")
            .await?;
        let mut sent = Ok(());
        for (table, effect) in &netted {
            sent = self.send_effect(pipeline, &table.rel, effect).await;
            if sent.is_err() {
                break;
            }
        }
        match sent.and(pipeline.drain().await) {
            Ok(()) => {
                pipeline
                    .control("savepoint release", "RELEASE SAVEPOINT walrelay_net")
                    .await?;
                Ok(())
            }
            Err(StatementError::SetWise(Some(err))) if err.is_closed() => {
                Err(super::target_err(err))
            }
            Err(StatementError::SetWise(_)) => {
                pipeline.drain().await.ok();
                pipeline
                    .client()
                    .batch_execute("ROLLBACK TO SAVEPOINT walrelay_net")
                    .await
                    .map_err(super::target_err)?;
                for (table, _) in &netted {
                    self.flush_table(table, pipeline, rows).await?;
                }
                Ok(())
            }
            Err(other) => Err(other.into()),
        }
    }

    /// Queues the set statements of one table's net effect.
    async fn send_effect(
        &mut self,
        pipeline: &mut Pipeline,
        rel: &RelationInfo,
        effect: &net::NetEffect,
    ) -> Result<(), StatementError> {
        let keys: Vec<usize> = key_positions(rel);
        let client = Arc::clone(pipeline.client());
        let prepare_failed = |err| StatementError::SetWise(Some(err));
        if !effect.deletes.is_empty() {
            let arrays = net::columns(&effect.deletes, 0..keys.len());
            let stmt = self
                .statement(&client, rel, SetOp::Delete, &[])
                .await
                .map_err(prepare_failed)?;
            pipeline
                .push_set(stmt, arrays, Some(effect.deletes.len() as u64))
                .await?;
        }
        if !effect.inserts.is_empty() {
            let arrays = net::columns(&effect.inserts, written(rel));
            let stmt = self
                .statement(&client, rel, SetOp::Insert, &[])
                .await
                .map_err(prepare_failed)?;
            pipeline.push_set(stmt, arrays, None).await?;
        }
        for (sets, group) in &effect.updates {
            if !sets.iter().any(|s| *s) {
                continue;
            }
            let picked = keys
                .iter()
                .copied()
                .chain(sets.iter().enumerate().filter(|(_, s)| **s).map(|(i, _)| i));
            let arrays = net::columns(group, picked.collect::<Vec<_>>().into_iter());
            let stmt = self
                .statement(&client, rel, SetOp::Update, sets)
                .await
                .map_err(prepare_failed)?;
            pipeline
                .push_set(stmt, arrays, Some(group.len() as u64))
                .await?;
        }
        Ok(())
    }

    /// Queues a table's changes one by one, in source order.
    async fn one_by_one(
        table: &TableBuffer,
        pipeline: &mut Pipeline,
        rows: &mut StatementCache,
    ) -> Result<(), ApplyError> {
        for b in &table.changes {
            let planned = match &b.change {
                RowChange::Insert(t) => statements::insert(&table.rel, t)?,
                RowChange::Update(t) => statements::update(&table.rel, None, t)?,
                RowChange::Delete(t) => statements::delete(&table.rel, &OldTuple::Key(t.clone()))?,
            };
            let stmt = rows
                .get(pipeline.client(), &table.rel, &planned.key)
                .await
                .map_err(super::target_err)?;
            let meta = ChangeMeta {
                table: Arc::from(table.rel.display.as_str()),
                op: planned.key.op,
                key_columns: Arc::clone(&table.rel.key_names),
                commit_lsn: b.commit_lsn,
                xid: b.xid,
                expect_row: planned.expect_row,
            };
            pipeline
                .push(meta, stmt, planned.params)
                .await
                .map_err(ApplyError::from)?;
        }
        Ok(())
    }

    /// One table alone, waiting at each step: after the pipelined attempt
    /// failed.
    async fn flush_table(
        &mut self,
        table: &TableBuffer,
        pipeline: &mut Pipeline,
        rows: &mut StatementCache,
    ) -> Result<(), ApplyError> {
        if let Ok(effect) = net::net(&table.rel, table.changes.iter().map(|b| &b.change)) {
            let client = Arc::clone(pipeline.client());
            client
                .batch_execute("SAVEPOINT walrelay_net")
                .await
                .map_err(super::target_err)?;
            match self.apply_effect(&client, &table.rel, &effect).await {
                Ok(true) => {
                    client
                        .batch_execute("RELEASE SAVEPOINT walrelay_net")
                        .await
                        .map_err(super::target_err)?;
                    return Ok(());
                }
                Ok(false) => {}
                Err(err) if err.is_closed() => return Err(super::target_err(err)),
                Err(err) => {
                    tracing::debug!(table = %table.rel.display, error = %safe_error_text(&err), "set-wise apply failed; applying in source order")
                }
            }
            client
                .batch_execute("ROLLBACK TO SAVEPOINT walrelay_net")
                .await
                .map_err(super::target_err)?;
        }
        // One by one, in source order: exact semantics and exact error reports.
        Self::one_by_one(table, pipeline, rows).await?;
        pipeline.drain().await.map_err(|e: StatementError| e.into())
    }

    /// Runs the set statements; `Ok(false)` when a count shows the target
    /// differs from what the source order implies.
    async fn apply_effect(
        &mut self,
        client: &tokio_postgres::Client,
        rel: &RelationInfo,
        effect: &net::NetEffect,
    ) -> Result<bool, tokio_postgres::Error> {
        let keys: Vec<usize> = key_positions(rel);
        if !effect.deletes.is_empty() {
            let arrays = net::columns(&effect.deletes, 0..keys.len());
            let n = self.run(client, rel, SetOp::Delete, &[], &arrays).await?;
            if n != effect.deletes.len() as u64 {
                return Ok(false);
            }
        }
        if !effect.inserts.is_empty() {
            let arrays = net::columns(&effect.inserts, written(rel));
            self.run(client, rel, SetOp::Insert, &[], &arrays).await?;
        }
        for (sets, group) in &effect.updates {
            if !sets.iter().any(|s| *s) {
                continue;
            }
            let picked = keys
                .iter()
                .copied()
                .chain(sets.iter().enumerate().filter(|(_, s)| **s).map(|(i, _)| i));
            let arrays = net::columns(group, picked.collect::<Vec<_>>().into_iter());
            let n = self.run(client, rel, SetOp::Update, sets, &arrays).await?;
            if n != group.len() as u64 {
                return Ok(false);
            }
        }
        Ok(true)
    }

    async fn run(
        &mut self,
        client: &tokio_postgres::Client,
        rel: &RelationInfo,
        op: SetOp,
        sets: &[bool],
        arrays: &[TextArray],
    ) -> Result<u64, tokio_postgres::Error> {
        let stmt = self.statement(client, rel, op, sets).await?;
        let params: Vec<&(dyn ToSql + Sync)> =
            arrays.iter().map(|a| a as &(dyn ToSql + Sync)).collect();
        client.execute(&stmt, &params).await
    }

    /// The prepared set statement (prepared once per relation generation,
    /// operation and column set).
    async fn statement(
        &mut self,
        client: &tokio_postgres::Client,
        rel: &RelationInfo,
        op: SetOp,
        sets: &[bool],
    ) -> Result<Statement, tokio_postgres::Error> {
        let key = (rel.id, rel.generation, op, sets.to_vec());
        if let Some(stmt) = self.statements.get(&key) {
            return Ok(stmt.clone());
        }
        let sql = match op {
            SetOp::Delete => net::delete_sql(rel),
            SetOp::Insert => net::insert_sql(rel),
            SetOp::Update => net::update_sql(rel, sets),
        };
        let stmt = client.prepare(&sql).await?;
        self.statements.insert(key, stmt.clone());
        Ok(stmt)
    }
}

/// Wire positions of the key columns, in order.
fn key_positions(rel: &RelationInfo) -> Vec<usize> {
    rel.columns
        .iter()
        .enumerate()
        .filter(|(_, c)| c.as_ref().is_some_and(|c| c.key))
        .map(|(i, _)| i)
        .collect()
}

/// Wire positions of the columns the target writes (generated ones excluded).
fn written(rel: &RelationInfo) -> std::vec::IntoIter<usize> {
    rel.columns
        .iter()
        .enumerate()
        .filter(|(_, c)| c.is_some())
        .map(|(i, _)| i)
        .collect::<Vec<_>>()
        .into_iter()
}

/// Whether an operation can be buffered for set-wise application. Not an
/// UPDATE or DELETE a target trigger may skip (each is checked alone), nor
/// an UPDATE that may change a GENERATED ALWAYS identity value outside the
/// key (the set statement cannot set it).
pub(super) fn nettable(rel: &RelationInfo, op: Op, key_changed: bool) -> bool {
    match op {
        Op::Insert => true,
        _ if rel.full_identity || rel.suppressible => false,
        Op::Update => {
            !key_changed
                && !rel
                    .columns
                    .iter()
                    .flatten()
                    .any(|c| c.identity_always && !c.key)
        }
        Op::Delete => true,
    }
}
