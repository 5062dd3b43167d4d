//! `walrelay.tables` and `walrelay.chunks`: the copy plan and how far each
//! table's copy has come (see the contracts in [`crate::state`]).

use std::collections::HashMap;

use tokio_postgres::{Client, GenericClient};
use walrelay_proto::Lsn;

use super::{sql, StateError};
use crate::pg::catalog::quote_ident;

/// One table of the copy plan and its page ranges.
#[derive(Debug, Clone)]
pub(crate) struct PlannedTable<'a> {
    pub schema: &'a str,
    pub name: &'a str,
    pub source_oid: u32,
    /// Bigger tables first: the chunks' claim order.
    pub priority: i64,
    /// `[first_page, end_page)`; `None` is open-ended.
    pub ranges: Vec<(i64, Option<i64>)>,
}

/// Records the plan (one `walrelay.tables` row per table, one
/// `walrelay.chunks` row per range) in one transaction; rows recorded
/// before are kept as they are.
pub(crate) async fn record_plan(
    target: &mut Client,
    slot: &str,
    tables: &[PlannedTable<'_>],
    snapshot_lsn: Lsn,
) -> Result<(), StateError> {
    let what = "recording the copy plan";
    let tx = target.transaction().await.map_err(sql(what))?;
    for table in tables {
        tx.execute(
            "INSERT INTO walrelay.tables (slot_name, schema_name, table_name, source_oid, chunks_total, snapshot_lsn) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
            &[&slot, &table.schema, &table.name, &table.source_oid, &(table.ranges.len() as i32), &snapshot_lsn],
        )
        .await
        .map_err(sql(what))?;
        for (no, (first, end)) in table.ranges.iter().enumerate() {
            tx.execute(
                "INSERT INTO walrelay.chunks (slot_name, schema_name, table_name, chunk_no, priority, first_page, end_page) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
                &[&slot, &table.schema, &table.name, &(no as i32), &table.priority, first, end],
            )
            .await
            .map_err(sql(what))?;
        }
    }
    tx.commit().await.map_err(sql(what))
}

/// Prepares a resumed copy under a new snapshot taken at `snapshot_lsn`, in
/// one transaction: every table not completely copied is emptied (`TRUNCATE
/// ONLY` of the target table, when some chunk of it was copied), its chunks
/// return to `pending` and it records `snapshot_lsn`. Returns the emptied
/// tables as `schema.name`. Why a partly copied table is copied again whole
/// is [`crate::snapshot`]'s concern (chunks from two snapshots can lose or
/// duplicate rows that moved).
pub(crate) async fn reset_unfinished(
    target: &mut Client,
    slot: &str,
    snapshot_lsn: Lsn,
) -> Result<Vec<String>, StateError> {
    let what = "preparing the resumed copy";
    let tx = target.transaction().await.map_err(sql(what))?;
    let partial = tx
        .query(
            "SELECT schema_name, table_name FROM walrelay.tables \
             WHERE slot_name = $1 AND state <> 'copied' AND chunks_done > 0",
            &[&slot],
        )
        .await
        .map_err(sql(what))?;
    let mut emptied = Vec::new();
    for row in &partial {
        let (schema, name): (String, String) = (row.get(0), row.get(1));
        tx.batch_execute(&format!(
            "TRUNCATE ONLY {}.{}",
            quote_ident(&schema),
            quote_ident(&name)
        ))
        .await
        .map_err(sql("emptying a table copied only in part"))?;
        emptied.push(format!("{schema}.{name}"));
    }
    tx.execute(
        "UPDATE walrelay.chunks c SET state = 'pending', rows = NULL, snapshot_lsn = NULL, claimed_by = NULL, copied_at = NULL \
         FROM walrelay.tables t WHERE t.slot_name = $1 AND c.slot_name = t.slot_name \
           AND c.schema_name = t.schema_name AND c.table_name = t.table_name AND t.state <> 'copied'",
        &[&slot],
    )
    .await
    .map_err(sql(what))?;
    tx.execute(
        "UPDATE walrelay.tables SET state = 'pending', rows_copied = 0, chunks_done = 0, \
         snapshot_lsn = $2, last_error = NULL, started_at = NULL, updated_at = now() \
         WHERE slot_name = $1 AND state <> 'copied'",
        &[&slot, &snapshot_lsn],
    )
    .await
    .map_err(sql(what))?;
    tx.commit().await.map_err(sql(what))?;
    Ok(emptied)
}

/// Chunks of `slot` still to copy.
pub(crate) async fn pending_chunks(target: &Client, slot: &str) -> Result<u64, StateError> {
    let count: i64 = target
        .query_one(
            "SELECT count(*) FROM walrelay.chunks WHERE slot_name = $1 AND state = 'pending'",
            &[&slot],
        )
        .await
        .map_err(sql("counting pending chunks"))?
        .get(0);
    Ok(count.max(0) as u64)
}

/// A claimed chunk: `[first_page, end_page)` of one table.
#[derive(Debug, Clone)]
pub(crate) struct Chunk {
    pub schema: String,
    pub name: String,
    pub no: i32,
    pub first_page: i64,
    pub end_page: Option<i64>,
}

/// Claims the next pending chunk (biggest tables first) for the caller's
/// open transaction, skipping chunks other workers hold; `None` when none
/// is left. The claim ends with the transaction.
pub(crate) async fn claim_chunk(
    target: &impl GenericClient,
    slot: &str,
) -> Result<Option<Chunk>, StateError> {
    Ok(target
        .query_opt(
            "SELECT schema_name, table_name, chunk_no, first_page, end_page \
             FROM walrelay.chunks WHERE slot_name = $1 AND state = 'pending' \
             ORDER BY priority DESC, schema_name, table_name, chunk_no \
             FOR UPDATE SKIP LOCKED LIMIT 1",
            &[&slot],
        )
        .await
        .map_err(sql("claiming a chunk"))?
        .map(|row| Chunk {
            schema: row.get(0),
            name: row.get(1),
            no: row.get(2),
            first_page: row.get(3),
            end_page: row.get(4),
        }))
}

/// Marks `chunk` copied (`rows` rows as of `snapshot_lsn`, by `claimer`) and
/// counts it into its table, in the caller's open transaction: the one that
/// wrote the chunk's rows.
pub(crate) async fn chunk_copied(
    target: &impl GenericClient,
    slot: &str,
    chunk: &Chunk,
    rows: u64,
    snapshot_lsn: Lsn,
    claimer: &str,
) -> Result<(), StateError> {
    let rows = rows as i64;
    let what = "recording a copied chunk";
    target
        .execute(
            "UPDATE walrelay.chunks SET state = 'copied', rows = $5, snapshot_lsn = $6, \
             claimed_by = $7, copied_at = now() \
             WHERE slot_name = $1 AND schema_name = $2 AND table_name = $3 AND chunk_no = $4",
            &[
                &slot,
                &chunk.schema,
                &chunk.name,
                &chunk.no,
                &rows,
                &snapshot_lsn,
                &claimer,
            ],
        )
        .await
        .map_err(sql(what))?;
    target
        .execute(
            "UPDATE walrelay.tables SET rows_copied = rows_copied + $4, chunks_done = chunks_done + 1, \
             state = CASE WHEN chunks_done + 1 >= chunks_total THEN 'copied' ELSE 'copying' END, \
             started_at = coalesce(started_at, now()), \
             finished_at = CASE WHEN chunks_done + 1 >= chunks_total THEN now() END, updated_at = now() \
             WHERE slot_name = $1 AND schema_name = $2 AND table_name = $3",
            &[&slot, &chunk.schema, &chunk.name, &rows],
        )
        .await
        .map(drop)
        .map_err(sql(what))
}

/// Marks a table `failed` with `message` (an error text without row values),
/// after its chunk's transaction was rolled back.
pub(crate) async fn table_failed(
    target: &Client,
    slot: &str,
    schema: &str,
    name: &str,
    message: &str,
) -> Result<(), StateError> {
    target
        .execute(
            "UPDATE walrelay.tables SET state = 'failed', last_error = $4, updated_at = now() \
             WHERE slot_name = $1 AND schema_name = $2 AND table_name = $3",
            &[&slot, &schema, &name, &message],
        )
        .await
        .map(drop)
        .map_err(sql("recording a failed table"))
}

/// How many tables of `slot` are in each state (every state, zeros included).
pub(crate) async fn tables_by_state(
    target: &Client,
    slot: &str,
) -> Result<Vec<(String, i64)>, StateError> {
    Ok(target
        .query(
            "SELECT s.state, count(t.state) FROM unnest(ARRAY['pending','copying','copied','streaming','failed']) s(state) \
             LEFT JOIN walrelay.tables t ON t.state = s.state AND t.slot_name = $1 GROUP BY s.state",
            &[&slot],
        )
        .await
        .map_err(sql("counting tables by state"))?
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect())
}

/// The LSN each table's copy is exact as of, by `(schema, table)`; `None`
/// where the column is NULL (only an edited state has that).
pub(crate) async fn snapshot_lsns(
    target: &Client,
    slot: &str,
) -> Result<HashMap<(String, String), Option<Lsn>>, StateError> {
    Ok(target
        .query(
            "SELECT schema_name, table_name, snapshot_lsn FROM walrelay.tables WHERE slot_name = $1",
            &[&slot],
        )
        .await
        .map_err(sql("reading walrelay.tables"))?
        .iter()
        .map(|row| ((row.get(0), row.get(1)), row.get(2)))
        .collect())
}

/// One table's copy state, for `walrelay status`.
#[derive(Debug, Clone)]
pub(crate) struct TableRow {
    /// `schema.name`.
    pub table: String,
    pub state: String,
    pub rows_copied: i64,
    pub chunks_done: i32,
    pub chunks_total: i32,
    pub snapshot_lsn: Option<Lsn>,
}

/// Every table of `slot`, by name.
pub(crate) async fn tables(target: &Client, slot: &str) -> Result<Vec<TableRow>, StateError> {
    Ok(target
        .query(
            "SELECT schema_name || '.' || table_name, state, rows_copied, chunks_done, chunks_total, snapshot_lsn \
             FROM walrelay.tables WHERE slot_name = $1 ORDER BY 1",
            &[&slot],
        )
        .await
        .map_err(sql("reading walrelay.tables"))?
        .iter()
        .map(|row| TableRow {
            table: row.get(0),
            state: row.get(1),
            rows_copied: row.get(2),
            chunks_done: row.get(3),
            chunks_total: row.get(4),
            snapshot_lsn: row.get(5),
        })
        .collect())
}

/// Records a table the source gained while streaming, copied whole as of
/// `snapshot_lsn`, in the caller's open transaction (the one that wrote its
/// rows). A record of that name left by a table dropped since (and dropped
/// on the target with it) is replaced: the name now holds the new table's
/// rows, as of the new LSN.
pub(crate) async fn record_added_table(
    target: &impl GenericClient,
    slot: &str,
    table: &crate::pg::catalog::Table,
    rows: u64,
    snapshot_lsn: Lsn,
) -> Result<(), StateError> {
    target
        .execute(
            "INSERT INTO walrelay.tables (slot_name, schema_name, table_name, source_oid, state, rows_copied, \
                 chunks_total, chunks_done, snapshot_lsn, started_at, finished_at) \
             VALUES ($1, $2, $3, $4, 'copied', $5, 0, 0, $6, now(), now()) \
             ON CONFLICT (slot_name, schema_name, table_name) DO UPDATE SET source_oid = EXCLUDED.source_oid, \
                 state = 'copied', rows_copied = EXCLUDED.rows_copied, snapshot_lsn = EXCLUDED.snapshot_lsn, \
                 last_error = NULL, finished_at = now(), updated_at = now()",
            &[&slot, &table.schema, &table.name, &table.oid, &(rows as i64), &snapshot_lsn],
        )
        .await
        .map_err(sql("recording a table added while streaming"))?;
    // A record of the same table under the name it had before a rename.
    target
        .execute(
            "DELETE FROM walrelay.tables WHERE slot_name = $1 AND source_oid = $4 \
             AND (schema_name, table_name) <> ($2, $3)",
            &[&slot, &table.schema, &table.name, &table.oid],
        )
        .await
        .map_err(sql("recording a table added while streaming"))?;
    Ok(())
}

/// The source oid, name and whether it is copied, of every table of `slot`'s copy plan.
pub(crate) async fn source_tables(
    target: &Client,
    slot: &str,
) -> Result<Vec<(u32, String, String, bool)>, StateError> {
    Ok(target
        .query(
            "SELECT source_oid, schema_name, table_name, state = 'copied' \
             FROM walrelay.tables WHERE slot_name = $1",
            &[&slot],
        )
        .await
        .map_err(sql("reading the copied tables"))?
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect())
}
