//! Pipelined statements on one target session: many statements in flight,
//! no round trip per change, nor per batch step.
//!
//! tokio-postgres sends a request when its future is first polled and
//! answers requests in order on one connection. Each statement's future is
//! polled once as it is queued, which sends it, so statements reach the
//! server in exactly the order they were queued; their results are then
//! awaited front to back. Besides row changes, a batch's own statements
//! (BEGIN, savepoints, set-wise statements, the checkpoint, COMMIT) go
//! through here, so a whole batch costs a round trip or two however many
//! steps it has: over a long link round trips, not the server, set the
//! pace. A statement that fails aborts the transaction, so every later one
//! fails too (or COMMIT answers ROLLBACK); the first error in queue order is
//! the cause, and a batch counts as committed only when every result of it
//! was awaited without error. Memory is bounded by the window.

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
    /// A statement of walrelay's own (BEGIN, a savepoint, the checkpoint,
    /// COMMIT) failed.
    #[error("the target refused walrelay's {what}: {}", with_sqlstate(.source))]
    Session {
        what: &'static str,
        #[source]
        source: tokio_postgres::Error,
    },
    /// A set-wise statement failed (`Some`) or touched another number of
    /// rows than its changes imply (`None`): the caller rolls back to its
    /// savepoint and applies the changes one by one, which names the cause.
    #[error("a set-wise statement did not apply as expected")]
    SetWise(#[source] Option<tokio_postgres::Error>),
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
            StatementError::Failed { source, .. }
            | StatementError::Session { source, .. }
            | StatementError::SetWise(Some(source))
                if crate::pg::error::is_transient(source) =>
            {
                Kind::Transient
            }
            _ => Kind::Definite,
        }
    }
}

pub(super) type Pending = Pin<Box<dyn Future<Output = Result<u64, tokio_postgres::Error>> + Send>>;

/// What a statement in flight is, to judge its result by.
enum Entry {
    Change(ChangeMeta),
    /// A set-wise statement expecting this many rows (`None`: any number).
    Set(Option<u64>),
    Session(&'static str),
}

/// The in-flight statements of one target session.
pub(super) struct Pipeline {
    client: Arc<Client>,
    inflight: VecDeque<(Entry, Pending)>,
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

    /// Sends one row change; waits for the oldest first when the window is full.
    pub(super) async fn push(
        &mut self,
        meta: ChangeMeta,
        stmt: Statement,
        params: Vec<TextParam>,
    ) -> Result<(), StatementError> {
        let client = Arc::clone(&self.client);
        let fut = Box::pin(async move { client.execute_raw(&stmt, params).await });
        self.send(Entry::Change(meta), fut).await
    }

    /// Sends one set-wise statement expecting `expected` rows (`None`: any).
    pub(super) async fn push_set<P>(
        &mut self,
        stmt: Statement,
        params: Vec<P>,
        expected: Option<u64>,
    ) -> Result<(), StatementError>
    where
        P: tokio_postgres::types::ToSql + Sync + Send + 'static,
    {
        let client = Arc::clone(&self.client);
        let fut = Box::pin(async move { client.execute_raw(&stmt, params).await });
        self.send(Entry::Set(expected), fut).await
    }

    /// Sends one of walrelay's own statements without waiting for it.
    pub(super) async fn control(
        &mut self,
        what: &'static str,
        sql: &'static str,
    ) -> Result<(), StatementError> {
        let client = Arc::clone(&self.client);
        let fut = Box::pin(async move { client.batch_execute(sql).await.map(|()| 0) });
        self.send(Entry::Session(what), fut).await
    }

    /// Sends a request of walrelay's own, made by the caller (the
    /// checkpoint), without waiting for it.
    pub(super) async fn push_session(
        &mut self,
        what: &'static str,
        fut: Pending,
    ) -> Result<(), StatementError> {
        self.send(Entry::Session(what), fut).await
    }

    async fn send(&mut self, entry: Entry, mut fut: Pending) -> Result<(), StatementError> {
        if self.inflight.len() >= self.window {
            self.pop().await?;
        }
        // The first poll encodes and sends the request; a real waker is
        // registered when the result is awaited.
        let first = fut.as_mut().poll(&mut Context::from_waker(Waker::noop()));
        match first {
            // A result at the first poll can be a failure caused by a
            // statement still in flight (the transaction it aborted answers
            // 25P02 at once): the first failure in queue order is the cause.
            Poll::Ready(Err(err)) if !self.inflight.is_empty() => {
                self.drain().await?;
                check(entry, Err(err))
            }
            Poll::Ready(result) => check(entry, result),
            Poll::Pending => {
                self.inflight.push_back((entry, fut));
                Ok(())
            }
        }
    }

    async fn pop(&mut self) -> Result<(), StatementError> {
        match self.inflight.pop_front() {
            Some((entry, fut)) => check(entry, fut.await),
            None => Ok(()),
        }
    }

    /// Waits for every statement in flight; the first failure is returned
    /// (the rest of the transaction is aborted on the server anyway).
    pub(super) async fn drain(&mut self) -> Result<(), StatementError> {
        let mut first = None;
        while let Some((entry, fut)) = self.inflight.pop_front() {
            if let Err(err) = check(entry, fut.await) {
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

fn check(entry: Entry, result: Result<u64, tokio_postgres::Error>) -> Result<(), StatementError> {
    match (entry, result) {
        (Entry::Change(meta), Ok(0)) if meta.expect_row => Err(StatementError::MissingRow(meta)),
        (Entry::Change(meta), Err(source)) => Err(StatementError::Failed { meta, source }),
        (Entry::Set(Some(expected)), Ok(n)) if n != expected => Err(StatementError::SetWise(None)),
        (Entry::Set(_), Err(source)) => Err(StatementError::SetWise(Some(source))),
        (Entry::Session(what), Err(source)) => Err(StatementError::Session { what, source }),
        (_, Ok(_)) => Ok(()),
    }
}
