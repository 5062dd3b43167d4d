//! A batch: several source transactions in one target transaction, opened
//! at the first applied payload, committed with the checkpoint of the last
//! source transaction it holds (or rolled back whole), and what is
//! reported of it.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use tokio_postgres::error::SqlState;
use walrelay_proto::{Lsn, POSTGRES_EPOCH_UNIX_MICROS};

use super::statements::Op;
use super::{checkpoint, m, Applier, ApplyError};

pub(super) struct Batch {
    pub(super) started: Instant,
    pub(super) rows: usize,
    pub(super) bytes: usize,
    pub(super) txns: u64,
    pub(super) end_lsn: Option<Lsn>,
    pub(super) commit_unix_micros: Option<i64>,
    pub(super) counts: HashMap<(Arc<str>, Op), u64>,
}

impl Applier {
    /// Opens the batch's target transaction if none is open, for a source
    /// transaction that is applied. Not at Begin: the transaction's first
    /// payload may say it is an echo, which must not touch the target (its
    /// marked commit would be an echo for the other direction in turn).
    pub(super) async fn open_batch(&mut self) -> Result<(), ApplyError> {
        if self.batch.is_some() {
            return Ok(());
        }
        // Not awaited: a failure shows at the batch's first awaited result.
        let client = Arc::clone(self.pipeline.client());
        let begin = Arc::clone(&self.begin_sql);
        let sent = Box::pin(async move { client.batch_execute(&begin).await.map(|()| 0) });
        self.pipeline.push_session("BEGIN", sent).await?;
        self.batch = Some(Batch {
            started: Instant::now(),
            rows: 0,
            bytes: 0,
            txns: 0,
            end_lsn: None,
            commit_unix_micros: None,
            counts: HashMap::new(),
        });
        Ok(())
    }

    /// The source transaction committed; the batch commits too when full.
    /// Returns the LSN now durable on the target, if the batch committed.
    pub(crate) async fn commit(
        &mut self,
        end_lsn: Lsn,
        commit_time: i64,
    ) -> Result<Option<Lsn>, ApplyError> {
        let txn = self.txn.take().ok_or(ApplyError::Protocol("commit"))?;
        if txn.skip {
            return Ok(None);
        }
        if txn.echo {
            metrics::counter!(m::ECHOES_SKIPPED).increment(1);
            // Its end moves the checkpoint with the open batch's commit. No
            // batch is opened for it: its commit would be a marked
            // transaction that the other direction skips in turn, a
            // ping-pong of empty commits; the next keepalive or applied
            // transaction moves the checkpoint past it.
            if let Some(batch) = self.batch.as_mut().filter(|b| b.txns > 0) {
                batch.end_lsn = Some(end_lsn);
            }
            return Ok(None);
        }
        if txn.payloads == 0 {
            // Nothing published in it (a PostgreSQL 14 source sends BEGIN
            // and COMMIT even so): like an echo, it opens no target
            // transaction (an open one would count as a write at a
            // cutover) and its end moves the checkpoint with the next
            // batch or keepalive.
            if let Some(batch) = self.batch.as_mut().filter(|b| b.txns > 0) {
                batch.end_lsn = Some(end_lsn);
            }
            return Ok(None);
        }
        // A transaction holding only a logical message has none open yet.
        self.open_batch().await?;
        let limits = self.limits;
        let batch = self.batch.as_mut().ok_or(ApplyError::Protocol("commit"))?;
        batch.txns += 1;
        batch.end_lsn = Some(end_lsn);
        batch.commit_unix_micros = Some(commit_time + POSTGRES_EPOCH_UNIX_MICROS);
        let full = txn.urgent
            || batch.rows >= limits.rows
            || batch.bytes >= limits.bytes
            || batch.started.elapsed() >= limits.delay;
        if full {
            self.flush().await
        } else {
            Ok(None)
        }
    }

    /// Commits the open batch (between source transactions) with its checkpoint.
    pub(crate) async fn flush(&mut self) -> Result<Option<Lsn>, ApplyError> {
        if self.txn.is_some() {
            return Ok(None);
        }
        if self.batch.is_none() {
            return Ok(None);
        }
        if let Err(err) = self
            .buffer
            .flush(&mut self.pipeline, &mut self.statements)
            .await
        {
            let err = self.first_error(err).await;
            self.rollback().await;
            return Err(err);
        }
        let Some(batch) = self.batch.take() else {
            return Ok(None);
        };
        let client = Arc::clone(self.pipeline.client());
        let Some(end_lsn) = batch.end_lsn else {
            self.pipeline.discard();
            let _ = client.batch_execute("ROLLBACK").await;
            return Ok(None);
        };
        // The checkpoint and COMMIT follow the changes without a round trip
        // each; the batch is committed only if every statement of it
        // answered without error (after a failure, COMMIT answers ROLLBACK).
        let request = self
            .checkpoint
            .write_request(client, end_lsn, batch.commit_unix_micros);
        let committed = async {
            self.pipeline
                .push_session("checkpoint (walrelay.progress)", Box::pin(request))
                .await?;
            self.pipeline.control("COMMIT", "COMMIT").await?;
            self.pipeline.drain().await
        };
        if let Err(err) = committed.await {
            self.pipeline.discard();
            return Err(err.into());
        }
        self.committed = end_lsn;
        self.record(&batch, end_lsn);
        Ok(Some(end_lsn))
    }

    fn record(&self, batch: &Batch, end_lsn: Lsn) {
        metrics::histogram!(m::APPLY_BATCH_SECONDS).record(batch.started.elapsed().as_secs_f64());
        metrics::counter!(m::TRANSACTIONS_APPLIED).increment(batch.txns);
        for ((table, op), n) in &batch.counts {
            metrics::counter!(m::ROWS_APPLIED, "table" => table.to_string(), "op" => op.as_str())
                .increment(*n);
        }
        let b = &self.board;
        b.applied_lsn.store(end_lsn.0, Ordering::Relaxed);
        if let Some(t) = batch.commit_unix_micros {
            b.applied_time_unix_micros.store(t, Ordering::Relaxed);
        }
        b.transactions_applied
            .fetch_add(batch.txns, Ordering::Relaxed);
        b.rows_applied
            .fetch_add(batch.rows as u64, Ordering::Relaxed);
    }

    /// With nothing pending, records a keepalive's position so the slot can
    /// release WAL written by unpublished activity. Returns it once durable.
    pub(crate) async fn idle_checkpoint(
        &mut self,
        wal_end: Lsn,
    ) -> Result<Option<Lsn>, ApplyError> {
        if self.txn.is_some() || self.batch.is_some() || wal_end <= self.committed {
            return Ok(None);
        }
        self.checkpoint
            .write(self.pipeline.client().as_ref(), wal_end, None)
            .await
            .map_err(checkpoint::apply_error)?;
        self.committed = wal_end;
        self.board.applied_lsn.store(wal_end.0, Ordering::Relaxed);
        Ok(Some(wal_end))
    }

    /// The error to report: a statement run beside the pipeline (a prepare,
    /// a savepoint) in a transaction that a pipelined statement already
    /// aborted fails with 25P02 "current transaction is aborted", which
    /// hides the cause; the first failed statement in flight is the cause.
    pub(crate) async fn first_error(&mut self, err: ApplyError) -> ApplyError {
        match &err {
            ApplyError::TargetRejected(e)
                if e.code() == Some(&SqlState::IN_FAILED_SQL_TRANSACTION) =>
            {
                match self.pipeline.drain().await {
                    Err(first) => first.into(),
                    Ok(()) => err,
                }
            }
            _ => err,
        }
    }

    /// Abandons the open batch (the source re-sends it after a restart).
    pub(crate) async fn rollback(&mut self) {
        self.pipeline.discard();
        self.buffer.clear();
        self.txn = None;
        if self.batch.take().is_some() {
            let _ = self.pipeline.client().batch_execute("ROLLBACK").await;
        }
    }
}
