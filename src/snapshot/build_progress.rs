//! Progress of the post-data step (indexes, constraints, triggers), which
//! `pg_restore -j` runs on the target without a word of its own: on a big
//! table one index build can take an hour, and a silent hour at 2 a.m.
//! looks like a hang. Every [`EVERY`] the target's
//! `pg_stat_progress_create_index` is read and each build in progress is
//! logged: table, phase, blocks and tuples done of total (and the index
//! name, which a non-concurrent build as `pg_restore` runs does not show
//! before it commits). Names and counts only. A failed read is logged at debug and tried again; the
//! watcher never fails the snapshot.

use std::time::{Duration, Instant};

use tokio_postgres::Client;

use crate::pg::connect::safe_error_text;

/// How often builds in progress are reported.
pub const EVERY: Duration = Duration::from_secs(10);

const BUILDS_SQL: &str = "
SELECT t.relnamespace::regnamespace::text || '.' || t.relname::text,
       i.relname::text,
       p.phase,
       p.blocks_done, p.blocks_total, p.tuples_done, p.tuples_total
FROM pg_stat_progress_create_index p
JOIN pg_class t ON t.oid = p.relid
LEFT JOIN pg_class i ON i.oid = p.index_relid AND p.index_relid <> 0
WHERE p.datid = (SELECT oid FROM pg_database WHERE datname = current_database())
ORDER BY p.pid";

/// One index build in progress.
#[derive(Debug, Clone, PartialEq)]
pub struct Build {
    pub table: String,
    /// `None` while a non-concurrent build runs (its OID is 0 until commit).
    pub index: Option<String>,
    pub phase: String,
    pub blocks_done: i64,
    pub blocks_total: i64,
    pub tuples_done: i64,
    pub tuples_total: i64,
}

impl Build {
    /// Percent done of the current phase, when the phase counts anything.
    pub fn percent(&self) -> Option<f64> {
        let (done, total) = if self.blocks_total > 0 {
            (self.blocks_done, self.blocks_total)
        } else if self.tuples_total > 0 {
            (self.tuples_done, self.tuples_total)
        } else {
            return None;
        };
        Some(100.0 * done as f64 / total as f64)
    }
}

/// The index builds running on the target's database now.
pub async fn builds(target: &Client) -> Result<Vec<Build>, tokio_postgres::Error> {
    Ok(target
        .query(BUILDS_SQL, &[])
        .await?
        .iter()
        .map(|r| Build {
            table: r.get(0),
            index: r.get(1),
            phase: r.get(2),
            blocks_done: r.get(3),
            blocks_total: r.get(4),
            tuples_done: r.get(5),
            tuples_total: r.get(6),
        })
        .collect())
}

/// Logs the builds in progress every [`EVERY`]; never returns (the caller
/// races it against the restore and drops it).
pub async fn watch(target: &Client) -> std::convert::Infallible {
    let started = Instant::now();
    loop {
        tokio::time::sleep(EVERY).await;
        let elapsed = started.elapsed().as_secs();
        match builds(target).await {
            Ok(builds) if builds.is_empty() => {
                tracing::info!(
                    elapsed_secs = elapsed,
                    "post-data: no index build running (constraints or triggers)"
                );
            }
            Ok(builds) => {
                for b in builds {
                    let percent = b.percent().map(|p| format!("{p:.0}%")).unwrap_or_default();
                    tracing::info!(
                        elapsed_secs = elapsed,
                        table = %b.table,
                        index = %b.index.as_deref().unwrap_or("-"),
                        phase = %b.phase,
                        percent = %percent,
                        blocks = %format!("{}/{}", b.blocks_done, b.blocks_total),
                        tuples = %format!("{}/{}", b.tuples_done, b.tuples_total),
                        "post-data: building an index"
                    );
                }
            }
            Err(err) => {
                tracing::debug!(error = %safe_error_text(&err), "post-data progress not readable");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build(blocks: (i64, i64), tuples: (i64, i64)) -> Build {
        Build {
            table: "public.t".into(),
            index: None,
            phase: "building index: scanning table".into(),
            blocks_done: blocks.0,
            blocks_total: blocks.1,
            tuples_done: tuples.0,
            tuples_total: tuples.1,
        }
    }

    #[test]
    fn percent_follows_blocks_then_tuples_and_is_absent_when_nothing_is_counted() {
        assert_eq!(build((25, 100), (0, 0)).percent(), Some(25.0));
        assert_eq!(build((0, 0), (3, 4)).percent(), Some(75.0));
        assert_eq!(build((0, 0), (0, 0)).percent(), None);
    }
}
