//! What `walrelay snapshot` reports when it finishes.

use std::fmt;

use walrelay_proto::Lsn;

/// What a finished snapshot reports.
#[derive(Debug)]
pub struct Summary {
    pub slot: String,
    /// `None` only for a state edited by hand (the column is NULL).
    pub consistent_lsn: Option<Lsn>,
    pub tables: usize,
    pub rows_copied: u64,
    pub seconds: f64,
    pub already_done: bool,
    /// What the schema copy changed for an older target (empty when
    /// nothing), as logged.
    pub schema_changes: Vec<String>,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.already_done {
            return write!(f, "snapshot for slot {} was already complete (consistent point {}); run `walrelay stream`", self.slot, Point(self.consistent_lsn));
        }
        write!(
            f,
            "snapshot complete: {} tables, {} rows copied in this run in {:.1} s; slot {} streams from {}",
            self.tables, self.rows_copied, self.seconds, self.slot, Point(self.consistent_lsn)
        )?;
        if !self.schema_changes.is_empty() {
            write!(f, "\nthe schema copy was translated for the older target:")?;
            for change in &self.schema_changes {
                write!(f, "\n  {change}")?;
            }
        }
        Ok(())
    }
}

/// A consistent point as the summary shows it: `X/Y`, or `-` when unknown.
struct Point(Option<Lsn>);

impl fmt::Display for Point {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(lsn) => write!(f, "{lsn}"),
            None => f.write_str("-"),
        }
    }
}
