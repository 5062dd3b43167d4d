//! Splitting tables into ctid-range chunks, recorded as the per-table and
//! per-chunk state rows ([`crate::state::copy`]) that make the copy
//! resumable.

use tokio_postgres::Client;
use walrelay_proto::Lsn;

use crate::pg::catalog::Table;
use crate::state::copy::PlannedTable;
use crate::state::{self, StateError};

/// A page range `[first_page, end_page)` of one table; `None` is open-ended,
/// so the last chunk also covers pages added after planning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct PageRange {
    pub first_page: i64,
    pub end_page: Option<i64>,
}

/// Splits `pages` heap pages into ranges of `chunk_pages`; always at least one.
pub(super) fn split(pages: i64, chunk_pages: u32) -> Vec<PageRange> {
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
pub(super) async fn record(
    target: &mut Client,
    slot: &str,
    tables: &[Table],
    chunk_pages: u32,
    snapshot_lsn: Lsn,
) -> Result<(), StateError> {
    let planned: Vec<PlannedTable<'_>> = tables
        .iter()
        .filter(|t| t.kind == 'r')
        .map(|table| PlannedTable {
            schema: &table.schema,
            name: &table.name,
            source_oid: table.oid,
            priority: table.heap_pages,
            ranges: split(table.heap_pages, pages_per_chunk(table, chunk_pages))
                .into_iter()
                .map(|r| (r.first_page, r.end_page))
                .collect(),
        })
        .collect();
    state::copy::record_plan(target, slot, &planned, snapshot_lsn).await
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
/// already contains. Returns the emptied tables.
pub(super) async fn reset_unfinished(
    target: &mut Client,
    slot: &str,
    snapshot_lsn: Lsn,
) -> Result<Vec<String>, StateError> {
    state::copy::reset_unfinished(target, slot, snapshot_lsn).await
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
