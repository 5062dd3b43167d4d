//! Applying decoded changes to the target in source commit order.
//!
//! # Contract
//! - Source transactions are applied whole and in commit order. Several
//!   small ones share a target transaction (a *batch*, bounded by changes,
//!   bytes and time); a source transaction is never split across target
//!   commits, and a large one is applied as it arrives (pipelined, never
//!   held in memory) and committed at its source commit.
//! - Each batch's target transaction also writes `walrelay.progress` with
//!   the end LSN of its last source transaction ([`checkpoint`]). Only that
//!   committed LSN is ever returned to the caller for acknowledging to the
//!   slot.
//! - A source transaction whose commit LSN is before the checkpoint was
//!   applied already and is skipped; a change to a table whose snapshot copy
//!   was taken after the transaction committed is skipped too (the copy
//!   holds it; see `snapshot`'s module doc).
//! - An UPDATE or DELETE that finds no row is drift, an error: never skipped.

mod added_column;
mod batch;
mod buffer;
mod cascade;
pub(crate) mod checkpoint;
mod identity;
pub(crate) mod loop_guard;
mod net;
mod pipeline;
mod relations;
mod statements;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_postgres::Client;
use walrelay_proto::{Delete, Insert, Lsn, Message, OldTuple, Relation, Truncate, Update};

use crate::metrics as m;
use crate::pg::connect::{error_text, safe_error_text};
use crate::pg::error::{with_sqlstate, Kind};
use crate::status::StatusBoard;
use batch::Batch;
pub(crate) use checkpoint::{Checkpoint, Resume};
pub(crate) use pipeline::{ChangeMeta, StatementError};
use relations::RelationCache;
pub(crate) use relations::RelationError;
pub(crate) use statements::PlanError;
use statements::{Op, StatementCache};

/// Batch bounds.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub rows: usize,
    pub bytes: usize,
    pub delay: Duration,
}

/// Why applying stopped.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ApplyError {
    #[error(transparent)]
    Statement(#[from] StatementError),
    #[error(transparent)]
    Relation(#[from] RelationError),
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error("target session: {}", safe_error_text(.0))]
    Target(#[source] tokio_postgres::Error),
    #[error("the target refused walrelay's statement: {}", with_sqlstate(.0))]
    TargetRejected(#[source] tokio_postgres::Error),
    #[error("unexpected {0} message outside a transaction")]
    Protocol(&'static str),
    #[error(transparent)]
    State(crate::state::StateError),
}

impl ApplyError {
    /// Transient errors are retried after reconnecting; the rest need the operator.
    pub(crate) fn kind(&self) -> Kind {
        match self {
            ApplyError::Statement(err) => err.kind(),
            ApplyError::Target(_) => Kind::Transient,
            ApplyError::State(err) => err.kind(),
            ApplyError::Relation(err) => err.kind(),
            _ => Kind::Definite,
        }
    }
}

fn target_err(err: tokio_postgres::Error) -> ApplyError {
    if crate::pg::error::is_transient(&err) {
        ApplyError::Target(err)
    } else {
        ApplyError::TargetRejected(err)
    }
}

struct Txn {
    final_lsn: Lsn,
    xid: u32,
    skip: bool,
    /// Written by the other direction's apply (its first payload was that
    /// apply's mark, [`loop_guard`]): its changes are not applied, its end
    /// still moves the checkpoint.
    echo: bool,
    /// Payloads seen: a mark counts only as the first one, which is where
    /// the apply writes it.
    payloads: u32,
    /// Commit the batch with this transaction, whatever its size (a
    /// cutover marker: someone waits for exactly this position).
    urgent: bool,
    cascades: cascade::Cascades,
}

/// Applies one replication session's changes to the target.
pub(crate) struct Applier {
    pipeline: pipeline::Pipeline,
    source: Option<Client>,
    relations: RelationCache,
    statements: StatementCache,
    checkpoint: Checkpoint,
    limits: Limits,
    board: Arc<StatusBoard>,
    committed: Lsn,
    txn: Option<Txn>,
    batch: Option<Batch>,
    /// Keyed changes waiting for set-wise application.
    buffer: buffer::Buffer,
    /// Set-wise application reorders changes across tables, which only
    /// `session_replication_role = replica` makes unobservable.
    set_based: bool,
    /// A batch's first statement: BEGIN and the loop guard's mark.
    begin_sql: Arc<str>,
    guard: loop_guard::LoopGuard,
}

impl Applier {
    /// An applier on `target` (an apply session) resuming at `resume`;
    /// `source` is given for `--auto-add-columns`.
    pub(crate) async fn new(
        target: Client,
        source: Option<Client>,
        slot: &str,
        resume: &Resume,
        limits: Limits,
        board: Arc<StatusBoard>,
        map: crate::map::Map,
    ) -> Result<Self, ApplyError> {
        // As the native apply worker: no user triggers or FK checks (where
        // permitted), and no search_path, so every name in SQL is qualified.
        let set_based = match target
            .batch_execute("SET session_replication_role = replica")
            .await
        {
            Ok(()) => true,
            Err(err) => {
                tracing::warn!(error = %error_text(&err), "session_replication_role = replica not permitted; target triggers will fire and changes are applied one by one");
                false
            }
        };
        target
            .batch_execute("SET search_path = ''; SET synchronous_commit = on")
            .await
            .map_err(target_err)?;
        let checkpoint = Checkpoint::prepare(&target, slot, &resume.system_id)
            .await
            .map_err(checkpoint::apply_error)?;
        board.applied_lsn.store(resume.lsn.0, Ordering::Relaxed);
        // Row by row, a batch's deferrable constraints are checked at its
        // commit, once every source transaction in it is whole (each
        // satisfied them at its own commit), not after each row of a source
        // statement that satisfied them only as a whole.
        let deferred = if set_based {
            ""
        } else {
            " SET CONSTRAINTS ALL DEFERRED;"
        };
        let begin_sql = format!("BEGIN;{deferred} {}", loop_guard::mark_sql(slot));
        Ok(Applier {
            pipeline: pipeline::Pipeline::new(Arc::new(target), 1024),
            source,
            relations: RelationCache::new(resume.snapshot_lsns.clone(), map),
            statements: StatementCache::default(),
            checkpoint,
            limits,
            board,
            committed: resume.lsn,
            txn: None,
            batch: None,
            buffer: buffer::Buffer::default(),
            set_based,
            begin_sql: Arc::from(begin_sql),
            guard: loop_guard::LoopGuard::new(slot),
        })
    }

    /// The last LSN committed on the target.
    pub(crate) fn committed(&self) -> Lsn {
        self.committed
    }

    /// Whether everything received has been committed on the target.
    pub(crate) fn idle(&self) -> bool {
        self.txn.is_none() && self.batch.is_none()
    }

    /// Whether a source transaction is open (its Commit not seen yet).
    pub(crate) fn in_transaction(&self) -> bool {
        self.txn.is_some()
    }

    /// When the open batch must commit at the latest, if one is open between transactions.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        match (&self.batch, &self.txn) {
            (Some(b), None) => Some(b.started + self.limits.delay),
            _ => None,
        }
    }

    /// The end LSN of the open batch's last source transaction, if any.
    pub(crate) fn batch_end(&self) -> Option<Lsn> {
        self.batch.as_ref().and_then(|b| b.end_lsn)
    }

    /// A source transaction begins.
    pub(crate) async fn begin(&mut self, final_lsn: Lsn, xid: u32) -> Result<(), ApplyError> {
        let skip = final_lsn < self.committed;
        self.txn = Some(Txn {
            final_lsn,
            xid,
            skip,
            echo: false,
            payloads: 0,
            urgent: false,
            cascades: cascade::Cascades::default(),
        });
        Ok(())
    }

    /// The open transaction's batch commits as soon as it does.
    pub(crate) fn commit_promptly(&mut self) {
        if let Some(txn) = self.txn.as_mut() {
            txn.urgent = true;
        }
    }

    /// A decoded payload inside the transaction.
    pub(crate) async fn message(&mut self, msg: Message, size: usize) -> Result<(), ApplyError> {
        if let Some(txn) = self.txn.as_mut() {
            txn.payloads += 1;
        }
        if self.txn.as_ref().is_some_and(|t| !t.skip && !t.echo) {
            self.open_batch().await?;
        }
        match msg {
            Message::Relation(rel) => self.relation(&rel).await,
            Message::Insert(ins) => self.insert(ins, size).await,
            Message::Update(upd) => self.update(upd, size).await,
            Message::Delete(del) => self.delete(del, size).await,
            Message::Truncate(t) => self.truncate(&t).await,
            // Type and Origin carry nothing to apply: values go through the
            // target's input functions by name, and walrelay keeps no origins.
            _ => Ok(()),
        }
    }

    async fn relation(&mut self, rel: &Relation) -> Result<(), ApplyError> {
        // Defining may run DDL (--auto-add-columns): pending changes go first.
        self.buffer
            .flush(&mut self.pipeline, &mut self.statements)
            .await?;
        self.relations
            .define(self.pipeline.client(), rel, self.source.as_ref())
            .await?;
        Ok(())
    }

    async fn insert(&mut self, mut ins: Insert, size: usize) -> Result<(), ApplyError> {
        let Some(rel) = self.target_of(ins.relation_id)? else {
            return Ok(());
        };
        crate::map::mask_tuple(&rel.masks, &mut ins.new);
        if self.set_based && buffer::nettable(&rel, Op::Insert, false) {
            return self
                .buffer_change(&rel, Op::Insert, net::RowChange::Insert(ins.new), size)
                .await;
        }
        let planned = statements::insert(&rel, &ins.new)?;
        self.row_change(&rel, planned, size).await
    }

    async fn update(&mut self, mut upd: Update, size: usize) -> Result<(), ApplyError> {
        let Some(rel) = self.target_of(upd.relation_id)? else {
            return Ok(());
        };
        crate::map::mask_tuple(&rel.masks, &mut upd.new);
        if let Some(old) = upd.old.as_mut() {
            crate::map::mask_old(&rel.masks, old);
        }
        let key_changed = matches!(upd.old, Some(OldTuple::Key(_)));
        if self.set_based && buffer::nettable(&rel, Op::Update, key_changed) {
            return self
                .buffer_change(&rel, Op::Update, net::RowChange::Update(upd.new), size)
                .await;
        }
        let planned = statements::update(&rel, upd.old.as_ref(), &upd.new)?;
        self.row_change(&rel, planned, size).await
    }

    async fn delete(&mut self, mut del: Delete, size: usize) -> Result<(), ApplyError> {
        let Some(rel) = self.target_of(del.relation_id)? else {
            return Ok(());
        };
        crate::map::mask_old(&rel.masks, &mut del.old);
        if self.set_based && buffer::nettable(&rel, Op::Delete, false) {
            return self
                .buffer_change(
                    &rel,
                    Op::Delete,
                    net::RowChange::Delete(del.old.tuple().clone()),
                    size,
                )
                .await;
        }
        if let Some(txn) = self.txn.as_mut() {
            txn.cascades.deleted(&rel);
        }
        let planned = statements::delete(&rel, &del.old)?;
        self.row_change(&rel, planned, size).await
    }

    /// The relation a change applies to, or `None` when the change is
    /// already on the target (transaction before the checkpoint, or before
    /// the table's snapshot).
    fn target_of(
        &self,
        relation_id: u32,
    ) -> Result<Option<Arc<relations::RelationInfo>>, ApplyError> {
        let txn = self.txn.as_ref().ok_or(ApplyError::Protocol("change"))?;
        if txn.skip || txn.echo {
            return Ok(None);
        }
        let rel = self.relations.get(relation_id)?;
        Ok((txn.final_lsn >= rel.snapshot_lsn).then_some(rel))
    }

    fn count(
        &mut self,
        rel: &relations::RelationInfo,
        op: Op,
        size: usize,
    ) -> Result<(), ApplyError> {
        let batch = self.batch.as_mut().ok_or(ApplyError::Protocol("change"))?;
        batch.rows += 1;
        batch.bytes += size;
        *batch
            .counts
            .entry((Arc::from(rel.display.as_str()), op))
            .or_default() += 1;
        Ok(())
    }

    async fn buffer_change(
        &mut self,
        rel: &Arc<relations::RelationInfo>,
        op: Op,
        change: net::RowChange,
        size: usize,
    ) -> Result<(), ApplyError> {
        self.count(rel, op, size)?;
        let txn = self.txn.as_ref().ok_or(ApplyError::Protocol("change"))?;
        self.buffer.push(rel, change, txn.xid, txn.final_lsn, size);
        if self.buffer.bytes() >= self.limits.bytes {
            self.buffer
                .flush(&mut self.pipeline, &mut self.statements)
                .await?;
        }
        Ok(())
    }

    async fn row_change(
        &mut self,
        rel: &Arc<relations::RelationInfo>,
        planned: statements::Planned,
        size: usize,
    ) -> Result<(), ApplyError> {
        // A table's buffered changes come before its next one-by-one change.
        if self.buffer.holds(rel.id) {
            self.buffer
                .flush(&mut self.pipeline, &mut self.statements)
                .await?;
        }
        self.count(rel, planned.key.op, size)?;
        let txn = self.txn.as_ref().ok_or(ApplyError::Protocol("change"))?;
        let stmt = self
            .statements
            .get(self.pipeline.client(), rel, &planned.key)
            .await
            .map_err(target_err)?;
        let meta = ChangeMeta {
            table: Arc::from(rel.display.as_str()),
            op: planned.key.op,
            key_columns: Arc::clone(&rel.key_names),
            commit_lsn: txn.final_lsn,
            xid: txn.xid,
            expect_row: planned.expect_row,
        };
        let cascaded = planned.key.op == Op::Delete && !rel.cascade_from.is_empty();
        if (rel.suppressible || cascaded) && planned.expect_row {
            return self.suppressible_change(rel, meta, stmt, planned).await;
        }
        self.pipeline.push(meta, stmt, planned.params).await?;
        Ok(())
    }

    /// An UPDATE or DELETE a target trigger may skip, applied alone (nothing
    /// else in flight) so that finding no row is told apart at its place in
    /// source order: the row exists, so a trigger skipped the change, which
    /// native replication applies on from; or it does not, which is drift.
    async fn suppressible_change(
        &mut self,
        rel: &Arc<relations::RelationInfo>,
        meta: ChangeMeta,
        stmt: tokio_postgres::Statement,
        planned: statements::Planned,
    ) -> Result<(), ApplyError> {
        self.pipeline.drain().await?;
        let matched = statements::matched_params(&planned);
        // The statement's result can be there at its first poll (inside
        // `push`), or only when drained: either way a missing row is checked.
        let outcome = match self.pipeline.push(meta, stmt, planned.params).await {
            Ok(()) => self.pipeline.drain().await,
            Err(err) => Err(err),
        };
        let meta = match outcome {
            Err(StatementError::MissingRow(meta)) => meta,
            other => return Ok(other?),
        };
        let exists = self
            .statements
            .get_exists(self.pipeline.client(), rel, &planned.key)
            .await
            .map_err(target_err)?;
        let params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = matched
            .iter()
            .map(|p| p as &(dyn tokio_postgres::types::ToSql + Sync))
            .collect();
        let found = self
            .pipeline
            .client()
            .query_opt(&exists, &params)
            .await
            .map_err(target_err)?;
        if found.is_none() {
            let txn = self.txn.as_ref().ok_or(ApplyError::Protocol("change"))?;
            if meta.op == Op::Delete && txn.cascades.explains(rel) {
                tracing::debug!(table = %meta.table, xid = meta.xid, "a cascading foreign key on the target removed this row already");
                return Ok(());
            }
            return Err(StatementError::MissingRow(meta).into());
        }
        tracing::info!(table = %meta.table, op = meta.op.as_str(), key_columns = %meta.key_columns.join(", "), xid = meta.xid, commit_lsn = %meta.commit_lsn, "a target trigger skipped this change (its row exists); applying on, as native replication does");
        metrics::counter!(m::CHANGES_SUPPRESSED, "table" => meta.table.to_string(), "op" => meta.op.as_str())
            .increment(1);
        Ok(())
    }

    async fn truncate(&mut self, t: &Truncate) -> Result<(), ApplyError> {
        let txn = self.txn.as_ref().ok_or(ApplyError::Protocol("truncate"))?;
        if txn.skip || txn.echo {
            return Ok(());
        }
        let final_lsn = txn.final_lsn;
        let mut names = Vec::new();
        for id in &t.relation_ids {
            let rel = self.relations.get(*id)?;
            if final_lsn >= rel.snapshot_lsn {
                // The source names every relation it truncated, so an
                // inheritance child it left alone must be left alone here;
                // a partitioned table cannot be truncated ONLY and takes its
                // partitions along, as the native worker does.
                let only = if rel.partitioned { "" } else { "ONLY " };
                names.push(format!("{only}{}", rel.qualified));
            }
        }
        if names.is_empty() {
            return Ok(());
        }
        // One statement for all relations; CASCADE is ignored, as the native worker does.
        let restart = if t.options.restart_identity {
            " RESTART IDENTITY"
        } else {
            ""
        };
        // Changes buffered before the TRUNCATE come before it, whether or
        // not the source sent a Relation message in between.
        self.buffer
            .flush(&mut self.pipeline, &mut self.statements)
            .await?;
        self.pipeline
            .client()
            .batch_execute(&format!("TRUNCATE {}{restart}", names.join(", ")))
            .await
            .map_err(target_err)
    }

    /// The commit LSN of the open source transaction when its changes are
    /// being applied (`None`: none is open, or it is skipped as already applied
    /// or as the other direction's echo).
    pub(crate) fn applying(&self) -> Option<Lsn> {
        self.txn
            .as_ref()
            .filter(|t| !t.skip && !t.echo)
            .map(|t| t.final_lsn)
    }

    /// The LSN as of which a table's copy is exact (changes committed
    /// before it are in the copy).
    pub(crate) fn snapshot_lsn_of(&self, schema: &str, table: &str) -> Lsn {
        self.relations.snapshot_lsn(schema, table)
    }

    /// A table copied while streaming: its changes committed before
    /// `lsn` are in the copy.
    pub(crate) fn table_copied(&mut self, schema: &str, table: &str, lsn: Lsn) {
        self.relations.set_snapshot_lsn(schema, table, lsn);
    }

    /// The target session, with nothing of the open batch still in flight
    /// (its buffered and pipelined changes applied first): for reading the
    /// target's catalog inside the batch and for [`Self::schema_change`].
    pub(crate) async fn settled_target(&mut self) -> Result<&Client, ApplyError> {
        self.buffer
            .flush(&mut self.pipeline, &mut self.statements)
            .await?;
        self.pipeline.drain().await?;
        Ok(self.pipeline.client().as_ref())
    }

    /// Runs a schema change inside the open batch, after the changes before
    /// it and before those after it: it commits with them, or not at all.
    pub(crate) async fn schema_change(&mut self, statements: &str) -> Result<(), ApplyError> {
        // A transaction whose first payload is the schema change has no
        // batch open yet (BEGIN waits for the first applied payload).
        self.open_batch().await?;
        self.settled_target()
            .await?
            .batch_execute(statements)
            .await
            .map_err(target_err)
    }
}
