//! The parallel row copy.
//!
//! Each worker holds one source session inside the exported snapshot
//! (`BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SET TRANSACTION
//! SNAPSHOT …`) and one target session. Per chunk, in one target
//! transaction: claim the chunk row (`FOR UPDATE SKIP LOCKED`), pipe
//! `COPY (SELECT … WHERE ctid range) TO STDOUT` into `COPY … FROM STDIN`
//! without decoding rows (binary where portable), mark the chunk copied,
//! commit. Rows and the record that they were copied commit together, so a
//! crash never leaves half a chunk or a chunk copied twice. Memory is a few
//! protocol buffers per worker, whatever the table sizes.

use std::collections::HashMap;
use std::sync::Arc;

use futures_util::{SinkExt, TryStreamExt};
use tokio_postgres::Client;
use walrelay_proto::Lsn;

use super::progress::Progress;
use crate::map::{Map, MappedTable};
use crate::pg::catalog::{self, quote_ident, Table};
use crate::pg::connect::{self, safe_error_text};
use crate::pg::conninfo::ConnInfo;
use crate::state::{self, StateError};

/// How one table is copied.
#[derive(Debug)]
pub(super) struct CopySpec {
    /// The source table, quoted.
    from: String,
    /// The table written on the target, quoted.
    qualified: String,
    display: String,
    /// The source-side select list (masks applied there: a masked value
    /// never reaches walrelay, let alone the target).
    select: String,
    columns: String,
    /// ` AND (where)` of the map, or empty.
    filter: String,
    binary: bool,
}

impl CopySpec {
    /// The copy statement parts for `table`: generated and excluded
    /// columns left out, masks and the row filter applied on the source,
    /// binary format unless a column's binary form is not portable or
    /// `same_types` is false (a target column of a wider type reads the
    /// text form; the binary forms of `integer` and `bigint` differ).
    /// `into_mapped`: the target table has its mapped names already (else
    /// the schema copy renames it after post-data).
    pub(super) fn new(table: MappedTable<'_>, same_types: bool, into_mapped: bool) -> Self {
        let forms = table.columns();
        let select = forms
            .iter()
            .map(|c| c.source_expr())
            .collect::<Vec<_>>()
            .join(", ");
        let columns = forms
            .iter()
            .map(|c| {
                quote_ident(if into_mapped {
                    c.target
                } else {
                    &c.source.name
                })
            })
            .collect::<Vec<_>>()
            .join(", ");
        CopySpec {
            from: table.table.qualified(),
            qualified: if into_mapped {
                table.target_qualified()
            } else {
                table.table.qualified()
            },
            display: table.table.display(),
            select,
            columns,
            filter: table.and_filter(),
            binary: same_types && forms.iter().all(|c| c.source.binary_portable),
        }
    }

    /// ` (a, b)` for `COPY … FROM`; empty for a table the copy writes no
    /// column of (none, or only generated ones), where `()` is a syntax
    /// error and the bare table name copies rows of zero columns.
    fn column_list(&self) -> String {
        if self.columns.is_empty() {
            String::new()
        } else {
            format!(" ({})", self.columns)
        }
    }

    fn format(&self) -> &'static str {
        if self.binary {
            "(FORMAT binary)"
        } else {
            "(FORMAT text)"
        }
    }
}

/// The copy of each table, keyed by (schema, name). With `check_types`
/// (a target schema walrelay did not create) a table whose target columns'
/// types differ from the source's is copied in text format.
pub(super) async fn specs(
    tables: &[Table],
    map: &Map,
    target: &Client,
    check_types: bool,
) -> Result<HashMap<(String, String), Arc<CopySpec>>, CopyError> {
    let mut specs = HashMap::new();
    for t in tables {
        let mapped = MappedTable::new(t, map);
        // A mapped table's names differ: it is copied in text format.
        let same_types =
            !check_types || (!mapped.is_mapped() && same_target_types(t, target).await?);
        let key = (t.schema.clone(), t.name.clone());
        specs.insert(
            key,
            Arc::new(CopySpec::new(mapped, same_types, check_types)),
        );
    }
    Ok(specs)
}

async fn same_target_types(table: &Table, target: &Client) -> Result<bool, CopyError> {
    let columns = catalog::table_columns(target, &table.schema, &table.name)
        .await
        .map_err(|e| CopyError::State(connect::error_text(&e)))?
        .unwrap_or_default();
    Ok(table.copied_columns().all(|c| {
        columns
            .iter()
            .any(|t| t.name == c.name && t.type_name == c.type_name)
    }))
}

/// Copies the whole of `table` from `source` into `target` (text format,
/// inside the caller's transactions): cutover's re-copy of unlogged tables.
pub(crate) async fn copy_whole(
    table: &Table,
    map: &Map,
    source: &Client,
    target: &Client,
) -> Result<u64, String> {
    let spec = CopySpec::new(MappedTable::new(table, map), false, true);
    pipe(&spec, 0, None, source, target).await
}

/// Why the copy stopped.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    #[error("copy worker could not connect: {0}")]
    Connect(#[from] connect::ConnectError),
    #[error("importing snapshot {snapshot} on the source: {message} (the exported snapshot is gone if the slot's session ended)")]
    Import { snapshot: String, message: String },
    #[error("copying {table} chunk {chunk}: {message}")]
    Chunk {
        table: String,
        chunk: i32,
        message: String,
    },
    #[error("state on the target: {0}")]
    State(String),
    #[error(transparent)]
    Recording(#[from] StateError),
    #[error("chunk for unknown table {0}")]
    Unknown(String),
}

/// What the workers share.
pub(super) struct CopyJob {
    pub source: ConnInfo,
    pub target: ConnInfo,
    pub slot: String,
    pub snapshot_name: String,
    pub snapshot_lsn: Lsn,
    pub specs: HashMap<(String, String), Arc<CopySpec>>,
    pub progress: Progress,
}

/// Runs `jobs` workers until no pending chunk is left; the first error stops all.
pub(super) async fn run(job: Arc<CopyJob>, jobs: usize) -> Result<(), CopyError> {
    let mut set = tokio::task::JoinSet::new();
    for worker in 0..jobs.max(1) {
        let job = Arc::clone(&job);
        set.spawn(async move { work(job, worker).await });
    }
    let mut first_err = None;
    while let Some(joined) = set.join_next().await {
        let result =
            joined.unwrap_or_else(|e| Err(CopyError::State(format!("copy worker panicked: {e}"))));
        if let Err(err) = result {
            if first_err.is_none() {
                set.abort_all();
                first_err = Some(err);
            }
        }
    }
    first_err.map_or(Ok(()), Err)
}

async fn work(job: Arc<CopyJob>, worker: usize) -> Result<(), CopyError> {
    let source = connect::connect(&job.source, "walrelay-copy").await?;
    source
        .batch_execute(&format!(
            "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SET TRANSACTION SNAPSHOT '{}'",
            job.snapshot_name
        ))
        .await
        .map_err(|e| CopyError::Import {
            snapshot: job.snapshot_name.clone(),
            message: connect::error_text(&e),
        })?;
    let target = connect::connect(&job.target, "walrelay-copy").await?;
    // The chunk's state row commits with its rows; losing the last commits
    // in a target crash loses both together, so the copy redoes them.
    target
        .batch_execute("SET synchronous_commit = off")
        .await
        .map_err(|e| CopyError::State(connect::error_text(&e)))?;
    let claimer = format!("{}:{worker}", std::process::id());
    while let Some(rows) = copy_next_chunk(&job, &source, &target, &claimer).await? {
        tracing::trace!(worker, rows, "chunk copied");
    }
    let _ = source.batch_execute("COMMIT").await;
    Ok(())
}

/// Claims and copies one chunk; `None` when none is pending.
async fn copy_next_chunk(
    job: &CopyJob,
    source: &Client,
    target: &Client,
    claimer: &str,
) -> Result<Option<u64>, CopyError> {
    let state = |e: tokio_postgres::Error| CopyError::State(connect::error_text(&e));
    target.batch_execute("BEGIN").await.map_err(state)?;
    let Some(chunk) = state::copy::claim_chunk(target, &job.slot).await? else {
        target.batch_execute("COMMIT").await.map_err(state)?;
        return Ok(None);
    };
    let spec = job
        .specs
        .get(&(chunk.schema.clone(), chunk.name.clone()))
        .ok_or_else(|| CopyError::Unknown(format!("{}.{}", chunk.schema, chunk.name)))?;
    let rows = match pipe(spec, chunk.first_page, chunk.end_page, source, target).await {
        Ok(rows) => rows,
        Err(message) => {
            let _ = target.batch_execute("ROLLBACK").await;
            let _ =
                state::copy::table_failed(target, &job.slot, &chunk.schema, &chunk.name, &message)
                    .await;
            return Err(CopyError::Chunk {
                table: spec.display.clone(),
                chunk: chunk.no,
                message,
            });
        }
    };
    state::copy::chunk_copied(target, &job.slot, &chunk, rows, job.snapshot_lsn, claimer).await?;
    target.batch_execute("COMMIT").await.map_err(state)?;
    job.progress.chunk_done(&spec.display, rows);
    Ok(Some(rows))
}

/// Streams one page range from source to target; returns the rows written.
async fn pipe(
    spec: &CopySpec,
    first: i64,
    end: Option<i64>,
    source: &Client,
    target: &Client,
) -> Result<u64, String> {
    let upper = end
        .map(|e| format!(" AND ctid < '({e},0)'::tid"))
        .unwrap_or_default();
    let select = format!(
        "COPY (SELECT {} FROM ONLY {} WHERE ctid >= '({first},0)'::tid{upper}{}) TO STDOUT {}",
        spec.select,
        spec.from,
        spec.filter,
        spec.format()
    );
    let insert = format!(
        "COPY {}{} FROM STDIN {}",
        spec.qualified,
        spec.column_list(),
        spec.format()
    );
    fn text(side: &'static str) -> impl Fn(tokio_postgres::Error) -> String {
        move |e| format!("{side}: {}", safe_error_text(&e))
    }
    let stream = source
        .copy_out(select.as_str())
        .await
        .map_err(text("source"))?;
    let sink = target
        .copy_in::<_, bytes::Bytes>(insert.as_str())
        .await
        .map_err(text("target"))?;
    futures_util::pin_mut!(stream, sink);
    while let Some(buf) = stream.try_next().await.map_err(text("source"))? {
        sink.feed(buf).await.map_err(text("target"))?;
    }
    sink.as_mut().finish().await.map_err(text("target"))
}
