//! Pipelined statements on one target session: many statements in flight,
//! no round trip per change.
//!
//! tokio-postgres sends a request when its future is first polled and
//! answers requests in order on one connection. Each statement's future is
//! polled once as it is queued, which sends it, so statements reach the
//! server in exactly the order of the source changes; their results are
//! then awaited front to back. Memory is bounded by the window.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use tokio_postgres::{Client, Statement};

use super::statements::{Op, TextParam};
use crate::pg::error::{with_sqlstate, Kind};

/// What a failing statement is reported by: names, never values.
#[derive(Debug, Clone)]
pub(crate) struct ChangeMeta {
    pub table: Arc<str>,
    pub op: Op,
    pub key_columns: Arc<[String]>,
    /// The source transaction's commit LSN (Begin.final_lsn).
    pub commit_lsn: walrelay_proto::Lsn,
    pub xid: u32,
    pub expect_row: bool,
}

/// A statement that failed or found no row.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StatementError {
    #[error("{op} on {table} (key columns: {keys}) in source transaction {xid} committed at {lsn} found no row: the target has drifted from the source", op = .0.op.as_str(), table = .0.table, keys = .0.key_columns.join(", "), xid = .0.xid, lsn = .0.commit_lsn)]
    MissingRow(ChangeMeta),
    #[error("{op} on {table} (key columns: {keys}) in source transaction {xid} committed at {lsn} failed: {}", with_sqlstate(.source), op = .meta.op.as_str(), table = .meta.table, keys = .meta.key_columns.join(", "), xid = .meta.xid, lsn = .meta.commit_lsn)]
    Failed {
        meta: ChangeMeta,
        #[source]
        source: tokio_postgres::Error,
    },
}

impl StatementError {
    /// Retry after reconnecting (a lost connection, a deadlock, a
    /// serialization failure), or stop.
    pub(crate) fn kind(&self) -> Kind {
        match self {
            StatementError::MissingRow(_) => Kind::Definite,
            StatementError::Failed { source, .. } if crate::pg::error::is_transient(source) => {
                Kind::Transient
            }
            StatementError::Failed { .. } => Kind::Definite,
        }
    }
}

type Pending = Pin<Box<dyn Future<Output = Result<u64, tokio_postgres::Error>> + Send>>;

/// The in-flight statements of one target session.
pub(super) struct Pipeline {
    client: Arc<Client>,
    inflight: VecDeque<(ChangeMeta, Pending)>,
    window: usize,
}

impl Pipeline {
    /// A pipeline of at most `window` statements in flight.
    pub(super) fn new(client: Arc<Client>, window: usize) -> Self {
        Pipeline {
            client,
            inflight: VecDeque::new(),
            window: window.max(1),
        }
    }

    /// The session statements run on.
    pub(super) fn client(&self) -> &Arc<Client> {
        &self.client
    }

    /// Sends one statement; waits for the oldest first when the window is full.
    pub(super) async fn push(
        &mut self,
        meta: ChangeMeta,
        stmt: Statement,
        params: Vec<TextParam>,
    ) -> Result<(), StatementError> {
        if self.inflight.len() >= self.window {
            self.pop().await?;
        }
        let client = Arc::clone(&self.client);
        let mut fut: Pending = Box::pin(async move { client.execute_raw(&stmt, params).await });
        // The first poll encodes and sends the request; a real waker is
        // registered when the result is awaited.
        let mut cx = Context::from_waker(Waker::noop());
        match fut.as_mut().poll(&mut cx) {
            Poll::Ready(result) => check(meta, result),
            Poll::Pending => {
                self.inflight.push_back((meta, fut));
                Ok(())
            }
        }
    }

    async fn pop(&mut self) -> Result<(), StatementError> {
        match self.inflight.pop_front() {
            Some((meta, fut)) => check(meta, fut.await),
            None => Ok(()),
        }
    }

    /// Waits for every statement in flight; the first failure is returned
    /// (the rest of the transaction is aborted on the server anyway).
    pub(super) async fn drain(&mut self) -> Result<(), StatementError> {
        let mut first = None;
        while let Some((meta, fut)) = self.inflight.pop_front() {
            if let Err(err) = check(meta, fut.await) {
                first.get_or_insert(err);
            }
        }
        first.map_or(Ok(()), Err)
    }

    /// Forgets statements in flight (their transaction is being rolled back).
    pub(super) fn discard(&mut self) {
        self.inflight.clear();
    }
}

fn check(
    meta: ChangeMeta,
    result: Result<u64, tokio_postgres::Error>,
) -> Result<(), StatementError> {
    match result {
        Ok(0) if meta.expect_row => Err(StatementError::MissingRow(meta)),
        Ok(_) => Ok(()),
        Err(source) => Err(StatementError::Failed { meta, source }),
    }
}
