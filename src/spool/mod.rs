//! The change-stream spool: the slot's changes kept on local disk, so the
//! slot can release its WAL while the target cannot take them yet (during
//! the snapshot's copy).
//!
//! # Contract
//! - Records ([`record`]) are appended to segment files ([`files`]) in the
//!   order the slot sends them; a position is acknowledged to the slot only
//!   after the records up to it are fsync'd, and only at a record that ends
//!   a transaction (a Commit, or a keepalive position between
//!   transactions). The slot therefore never confirms what the spool could
//!   lose.
//! - After a crash, what follows the last such record was never
//!   acknowledged and is cut ([`files::recover`]); the capture starts again
//!   there and drops re-sent transactions that committed before it.
//! - A damaged record (checksum) is an error naming the segment and offset,
//!   never skipped: its WAL is gone from the source. A spool that ends
//!   before the slot's confirmed position (the spool of another machine, or
//!   a lost volume) is an error too, found before anything is applied.
//! - The stream applies the spool in order through the usual apply (the
//!   checkpoint and per-table snapshot LSN rules decide what is skipped),
//!   deletes each segment once the target committed past it, and goes live
//!   at the checkpoint once the spool is applied.

pub(crate) mod files;
pub(crate) mod read;
pub(crate) mod record;

use std::path::{Path, PathBuf};

use walrelay_proto::Lsn;

/// Where and how much to spool.
#[derive(Debug, Clone)]
pub struct SpoolOptions {
    /// The spool's root; each slot spools into its own subdirectory.
    pub dir: PathBuf,
    /// At this many bytes on disk the capture stops reading (and so stops
    /// acknowledging): the source holds WAL again, nothing is dropped.
    pub max_bytes: u64,
    /// A new segment starts after a segment reaches this size.
    pub segment_bytes: u64,
}

impl SpoolOptions {
    /// The directory of `slot`'s spool.
    pub(crate) fn slot_dir(&self, slot: &str) -> PathBuf {
        self.dir.join(slot)
    }

    /// The directory of `slot`'s spool, created and made absolute, as it is
    /// recorded for `status` and `cleanup`.
    pub(crate) fn absolute_slot_dir(&self, slot: &str) -> Result<PathBuf, SpoolError> {
        let dir = self.slot_dir(slot);
        std::fs::create_dir_all(&dir).map_err(|source| SpoolError::Io {
            path: dir.clone(),
            source,
        })?;
        std::fs::canonicalize(&dir).map_err(|source| SpoolError::Io { path: dir, source })
    }
}

/// This machine's host name (a pod's name under Kubernetes), recorded with
/// the spool's directory: a directory path alone does not say which
/// machine's disk it is on.
pub(crate) fn host_name() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname writes at
    // most that many bytes.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "unknown".into();
    }
    let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

/// Why the spool cannot be written or read.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("spool file {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("spool segment {} is damaged at offset {offset} ({why}): the slot was acknowledged past this record, so the source no longer has its WAL and it cannot be read again; nothing from it on was applied. Re-copy: `walrelay cleanup --yes`, empty the target's copied tables, and run the snapshot again", segment.display())]
    Damaged {
        segment: PathBuf,
        offset: u64,
        why: &'static str,
    },
    #[error("the spool ends at {} (segment {}, offset {offset}) but the slot already confirmed {acknowledged}: the changes in between were acknowledged from a spool that is not here (another machine or volume, or deleted), and the source no longer has them. Run with the --spool-dir that holds them (keep it on a persistent volume), or `walrelay cleanup --yes`, empty the target's copied tables, and run the snapshot again", end.map_or("nothing".to_string(), |l| l.to_string()), segment.display())]
    Short {
        segment: PathBuf,
        offset: u64,
        end: Option<Lsn>,
        acknowledged: Lsn,
    },
}

/// Publishes the spool's size on `/metrics`.
pub(crate) fn report_usage(dir: &Path) {
    if let Ok((bytes, segments)) = files::usage(dir) {
        metrics::gauge!(crate::metrics::SPOOL_BYTES).set(bytes as f64);
        metrics::gauge!(crate::metrics::SPOOL_SEGMENTS).set(segments as f64);
    }
}
