//! Splitting tables into ctid-range chunks, and the per-table and
//! per-chunk state rows that make the copy resumable.

use tokio_postgres::Client;

use crate::pg::catalog::{quote_ident, Table};
use crate::pg::connect::error_text;

/// A page range `[first_page, end_page)` of one table; `None` is open-ended,
/// so the last chunk also covers pages added after planning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageRange {
    pub first_page: i64,
    pub end_page: Option<i64>,
}

/// Splits `pages` heap pages into ranges of `chunk_pages`; always at least one.
pub fn split(pages: i64, chunk_pages: u32) -> Vec<PageRange> {
    let step = i64::from(chunk_pages.max(1));
    let count = ((pages.max(0) + step - 1) / step).max(1);
    (0..count)
        .map(|i| PageRange {
            first_page: i * step,
            end_page: (i + 1 < count).then_some((i + 1) * step),
        })
        .collect()
}

/// Heap pages per chunk so that a chunk carries about `chunk_pages` pages
/// of the table's data *including* its TOAST: a table whose values live
/// mostly out of line gets proportionally fewer heap pages per chunk.
fn pages_per_chunk(table: &Table, chunk_pages: u32) -> u32 {
    let heap = table.heap_pages.max(1) as f64 * 8192.0;
    let total = (table.total_bytes as f64).max(heap);
    ((f64::from(chunk_pages) * heap / total).round() as u32).max(1)
}

/// Records one `walrelay.tables` row per copied table and its chunks, in
/// one transaction; bigger tables get higher priority so they start first.
pub async fn record(
    target: &mut Client,
    slot: &str,
    tables: &[Table],
    chunk_pages: u32,
    snapshot_lsn: &str,
) -> Result<(), String> {
    let tx = target.transaction().await.map_err(|e| error_text(&e))?;
    for table in tables.iter().filter(|t| t.kind == 'r') {
        let ranges = split(table.heap_pages, pages_per_chunk(table, chunk_pages));
        tx.execute(
            "INSERT INTO walrelay.tables (slot_name, schema_name, table_name, source_oid, chunks_total, snapshot_lsn) \
             VALUES ($1, $2, $3, $4, $5, $6::text::pg_lsn) ON CONFLICT DO NOTHING",
            &[&slot, &table.schema, &table.name, &table.oid, &(ranges.len() as i32), &snapshot_lsn],
        )
        .await
        .map_err(|e| error_text(&e))?;
        for (no, range) in ranges.iter().enumerate() {
            tx.execute(
                "INSERT INTO walrelay.chunks (slot_name, schema_name, table_name, chunk_no, priority, first_page, end_page) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
                &[&slot, &table.schema, &table.name, &(no as i32), &table.heap_pages, &range.first_page, &range.end_page],
            )
            .await
            .map_err(|e| error_text(&e))?;
        }
    }
    tx.commit().await.map_err(|e| error_text(&e))
}

/// Prepares a resumed copy under a new snapshot taken at `snapshot_lsn`.
///
/// A table whose chunks were all copied keeps its rows and its earlier
/// snapshot LSN. A table copied only in part is emptied and all its chunks
/// are copied again: its copied chunks show the table as of the old
/// snapshot, the rest would show it as of the new one, and a row updated in
/// between may have moved from a pending page range into a copied one (lost)
/// or the other way (copied twice). Every table thus ends with exactly one
/// snapshot LSN, which is what the stream needs to skip what a table's copy
/// already contains.
pub async fn reset_unfinished(
    target: &mut Client,
    slot: &str,
    snapshot_lsn: &str,
) -> Result<Vec<String>, String> {
    let tx = target.transaction().await.map_err(|e| error_text(&e))?;
    let partial = tx
        .query(
            "SELECT schema_name, table_name FROM walrelay.tables \
             WHERE slot_name = $1 AND state <> 'copied' AND chunks_done > 0",
            &[&slot],
        )
        .await
        .map_err(|e| error_text(&e))?;
    let mut emptied = Vec::new();
    for row in &partial {
        let (schema, name): (String, String) = (row.get(0), row.get(1));
        tx.batch_execute(&format!(
            "TRUNCATE ONLY {}.{}",
            quote_ident(&schema),
            quote_ident(&name)
        ))
        .await
        .map_err(|e| error_text(&e))?;
        emptied.push(format!("{schema}.{name}"));
    }
    tx.execute(
        "UPDATE walrelay.chunks c SET state = 'pending', rows = NULL, snapshot_lsn = NULL, claimed_by = NULL, copied_at = NULL \
         FROM walrelay.tables t WHERE t.slot_name = $1 AND c.slot_name = t.slot_name \
           AND c.schema_name = t.schema_name AND c.table_name = t.table_name AND t.state <> 'copied'",
        &[&slot],
    )
    .await
    .map_err(|e| error_text(&e))?;
    tx.execute(
        "UPDATE walrelay.tables SET state = 'pending', rows_copied = 0, chunks_done = 0, \
         snapshot_lsn = $2::text::pg_lsn, last_error = NULL, started_at = NULL, updated_at = now() \
         WHERE slot_name = $1 AND state <> 'copied'",
        &[&slot, &snapshot_lsn],
    )
    .await
    .map_err(|e| error_text(&e))?;
    tx.commit().await.map_err(|e| error_text(&e))?;
    Ok(emptied)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_table_gets_one_open_chunk() {
        assert_eq!(
            split(0, 100),
            vec![PageRange {
                first_page: 0,
                end_page: None
            }]
        );
    }

    #[test]
    fn ranges_are_contiguous_and_the_last_is_open() {
        let r = split(250, 100);
        assert_eq!(r.len(), 3);
        assert_eq!(
            r[0],
            PageRange {
                first_page: 0,
                end_page: Some(100)
            }
        );
        assert_eq!(
            r[1],
            PageRange {
                first_page: 100,
                end_page: Some(200)
            }
        );
        assert_eq!(
            r[2],
            PageRange {
                first_page: 200,
                end_page: None
            }
        );
    }

    #[test]
    fn exact_multiple_has_no_empty_tail() {
        assert_eq!(split(200, 100).len(), 2);
        assert_eq!(split(1, 0).len(), 1);
    }
}
