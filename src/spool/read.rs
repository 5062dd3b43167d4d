//! Reading a spool in order for the apply, deleting each segment once the
//! target committed past it: [`Reader`] reads a spool no capture writes to
//! (recovered first), [`Tail`] follows one a running capture appends to,
//! never past what it synced.

use std::fs::{self, File};
use std::io::BufReader;
use std::path::{Path, PathBuf};

use tokio::sync::watch;
use walrelay_proto::Lsn;

use super::files::{open_segment, read_frame, recover, segments, Extent, MAGIC};
use super::record::{Frame, Record};
use super::SpoolError;

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SpoolError + '_ {
    move |source| SpoolError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Reads the spool in order, segment by segment; deletes a segment once
/// the target committed past its last record.
pub(crate) struct Reader {
    segs: Vec<(u64, PathBuf)>,
    next: usize,
    current: Option<(PathBuf, BufReader<File>, u64, u64)>,
    /// The last boundary of the segment being read.
    last: Option<Lsn>,
    /// Segments read to their end, with their last boundary.
    done: Vec<(PathBuf, Option<Lsn>)>,
    end: Lsn,
}

impl Reader {
    /// The recovered spool in `dir`; `None` when it holds nothing.
    pub(crate) fn open(
        dir: &Path,
        acknowledged: Option<Lsn>,
    ) -> Result<Option<Reader>, SpoolError> {
        let Some(tail) = recover(dir, acknowledged)? else {
            return Ok(None);
        };
        Ok(Some(Reader {
            segs: segments(dir)?,
            next: 0,
            current: None,
            last: None,
            done: vec![],
            end: tail.end,
        }))
    }

    /// Where the spool ends: the target must reach it before going live.
    pub(crate) fn end(&self) -> Lsn {
        self.end
    }

    /// The next record, `None` after the last. Damage is an error naming
    /// the segment and offset.
    pub(crate) fn next_record(&mut self) -> Result<Option<Record>, SpoolError> {
        loop {
            if self.current.is_none() {
                let Some((_, path)) = self.segs.get(self.next) else {
                    return Ok(None);
                };
                let (reader, len) = open_segment(path)?;
                self.current = Some((path.clone(), reader, MAGIC.len() as u64, len));
                self.next += 1;
            }
            let Some((path, reader, offset, len)) = self.current.as_mut() else {
                continue;
            };
            match read_frame(reader, *offset, *len).map_err(io(path))? {
                None => {
                    let (path, ..) = self.current.take().expect("current segment");
                    self.done.push((path, self.last.take()));
                }
                Some(Frame::Record(rec, used)) => {
                    *offset += used as u64;
                    if let Some(lsn) = rec.boundary() {
                        self.last = Some(lsn);
                    }
                    return Ok(Some(rec));
                }
                Some(Frame::Incomplete) => {
                    return Err(SpoolError::Damaged {
                        segment: path.clone(),
                        offset: *offset,
                        why: "record cut short before the end of the spool",
                    })
                }
                Some(Frame::Damaged(why)) => {
                    return Err(SpoolError::Damaged {
                        segment: path.clone(),
                        offset: *offset,
                        why,
                    })
                }
            }
        }
    }

    /// Deletes every segment: the target holds all the spool holds.
    pub(crate) fn discard(self) -> Result<(), SpoolError> {
        for (_, path) in &self.segs {
            fs::remove_file(path).map_err(io(path))?;
        }
        Ok(())
    }

    /// Deletes every segment read to its end whose records the target has
    /// committed (`applied` at or past its last boundary).
    pub(crate) fn release(&mut self, applied: Lsn) -> Result<(), SpoolError> {
        release(&mut self.done, applied)
    }
}

/// The segment a [`Tail`] reads.
struct Open {
    seq: u64,
    path: PathBuf,
    reader: BufReader<File>,
    offset: u64,
}

/// Follows the spool a running capture appends to (the capture recovered
/// it first), from its oldest segment: reads only what the capture synced
/// (its [`Extent`]), so every record read ends at or before a synced
/// boundary and nothing read is ever cut or rewritten.
pub(crate) struct Tail {
    dir: PathBuf,
    extent: watch::Receiver<Option<Extent>>,
    current: Option<Open>,
    last_seq: Option<u64>,
    /// The last boundary of the segment being read.
    last: Option<Lsn>,
    done: Vec<(PathBuf, Option<Lsn>)>,
    closed: bool,
}

impl Tail {
    /// Follows the spool in `dir`, whose capture publishes `extent`.
    pub(crate) fn new(dir: &Path, extent: watch::Receiver<Option<Extent>>) -> Tail {
        Tail {
            dir: dir.to_path_buf(),
            extent,
            current: None,
            last_seq: None,
            last: None,
            done: vec![],
            closed: false,
        }
    }

    /// The capture ended: nothing more will be synced than what was.
    pub(crate) fn closed(&self) -> bool {
        self.closed
    }

    /// The spool's directory.
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where the synced spool ends now (`None`: nothing synced yet).
    pub(crate) fn end(&self) -> Option<Lsn> {
        self.extent.borrow().and_then(|e| e.end)
    }

    /// The next synced record; `None` once everything synced so far was read.
    pub(crate) fn try_next(&mut self) -> Result<Option<Record>, SpoolError> {
        let Some(extent) = *self.extent.borrow() else {
            return Ok(None);
        };
        loop {
            if self.current.is_none() {
                let next = segments(&self.dir)?.into_iter().find(|(seq, _)| {
                    self.last_seq.is_none_or(|last| *seq > last) && *seq <= extent.seq
                });
                let Some((seq, path)) = next else {
                    return Ok(None);
                };
                let (reader, _) = open_segment(&path)?;
                self.last_seq = Some(seq);
                self.current = Some(Open {
                    seq,
                    path,
                    reader,
                    offset: MAGIC.len() as u64,
                });
            }
            let Some(open) = self.current.as_mut() else {
                continue;
            };
            let sealed = open.seq < extent.seq;
            let limit = if sealed {
                fs::metadata(&open.path).map_err(io(&open.path))?.len()
            } else {
                extent.len
            };
            match read_frame(&mut open.reader, open.offset, limit).map_err(io(&open.path))? {
                None if sealed => {
                    let open = self.current.take().expect("current segment");
                    self.done.push((open.path, self.last.take()));
                }
                None => {
                    // What the buffer holds past the synced end may be
                    // rewritten (a capture session that broke off): drop it.
                    std::io::Seek::seek(&mut open.reader, std::io::SeekFrom::Start(open.offset))
                        .map_err(io(&open.path))?;
                    return Ok(None);
                }
                Some(Frame::Record(rec, used)) => {
                    open.offset += used as u64;
                    if let Some(lsn) = rec.boundary() {
                        self.last = Some(lsn);
                    }
                    return Ok(Some(rec));
                }
                Some(Frame::Incomplete) => {
                    return Err(SpoolError::Damaged {
                        segment: open.path.clone(),
                        offset: open.offset,
                        why: "record cut short before the synced end of the spool",
                    })
                }
                Some(Frame::Damaged(why)) => {
                    return Err(SpoolError::Damaged {
                        segment: open.path.clone(),
                        offset: open.offset,
                        why,
                    })
                }
            }
        }
    }

    /// Resolves when the capture synced more, or ended ([`Tail::closed`]
    /// then; never again after that).
    pub(crate) async fn synced(&mut self) {
        if self.closed {
            std::future::pending::<()>().await;
        }
        if self.extent.changed().await.is_err() {
            self.closed = true;
        }
    }

    /// Deletes every segment read to its end whose records the target has
    /// committed (`applied` at or past its last boundary).
    pub(crate) fn release(&mut self, applied: Lsn) -> Result<(), SpoolError> {
        release(&mut self.done, applied)
    }
}

fn release(done: &mut Vec<(PathBuf, Option<Lsn>)>, applied: Lsn) -> Result<(), SpoolError> {
    let mut kept = vec![];
    for (path, last) in done.drain(..) {
        if last.is_none_or(|l| l <= applied) {
            fs::remove_file(&path).map_err(io(&path))?;
        } else {
            kept.push((path, last));
        }
    }
    *done = kept;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spool::files::tests::txn;
    use crate::spool::files::Writer;

    fn drain(tail: &mut Tail) -> Vec<Record> {
        let mut all = vec![];
        while let Some(rec) = tail.try_next().unwrap() {
            all.push(rec);
        }
        all
    }

    #[test]
    fn a_tail_reads_only_what_was_synced_and_never_what_a_rewind_drops() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = Writer::open(dir.path(), 1000, None).unwrap();
        let (extent, rx) = watch::channel(Some(w.extent()));
        let mut tail = Tail::new(dir.path(), rx);
        for r in txn(100) {
            w.append(&r).unwrap();
        }
        w.sync().unwrap();
        extent.send_replace(Some(w.extent()));
        // Appended and written out, not synced: invisible.
        for r in txn(200).iter().chain(&txn(300)[..2]) {
            w.append(r).unwrap();
        }
        w.sync().unwrap();
        // Synced up to 208 only (300 is open); the extent not yet published.
        assert_eq!(
            drain(&mut tail),
            txn(100),
            "nothing past the published extent"
        );
        extent.send_replace(Some(w.extent()));
        assert_eq!(drain(&mut tail), txn(200));
        // The session breaks off mid-transaction; the slot sends 300 again.
        w.rewind().unwrap();
        for r in txn(300) {
            w.append(&r).unwrap();
        }
        w.sync().unwrap();
        extent.send_replace(Some(w.extent()));
        assert_eq!(drain(&mut tail), txn(300));
    }

    #[test]
    fn a_tail_crosses_sealed_segments_and_releases_them_once_applied() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = Writer::open(dir.path(), 800, None).unwrap();
        let (extent, rx) = watch::channel(None);
        let mut tail = Tail::new(dir.path(), rx);
        for c in (1..=10).map(|i| i * 100) {
            for r in txn(c) {
                w.append(&r).unwrap();
            }
            w.sync().unwrap();
        }
        assert!(
            drain(&mut tail).is_empty(),
            "nothing before the first extent"
        );
        extent.send_replace(Some(w.extent()));
        let expected: Vec<Record> = (1..=10).flat_map(|i| txn(i * 100)).collect();
        assert_eq!(drain(&mut tail), expected);
        let before = segments(dir.path()).unwrap().len();
        assert!(before > 2);
        tail.release(Lsn(0)).unwrap();
        assert_eq!(segments(dir.path()).unwrap().len(), before);
        tail.release(Lsn(1008)).unwrap();
        // Only the segment being written stays.
        assert_eq!(segments(dir.path()).unwrap().len(), 1);
    }

    #[test]
    fn a_sealed_segment_is_released_before_it_reaches_its_size() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = Writer::open(dir.path(), 1 << 20, None).unwrap();
        let (extent, rx) = watch::channel(None);
        let mut tail = Tail::new(dir.path(), rx);
        for c in [100, 200] {
            for r in txn(c) {
                w.append(&r).unwrap();
            }
        }
        w.sync().unwrap();
        // A full spool seals its segment so the apply can delete it.
        w.seal().unwrap();
        extent.send_replace(Some(w.extent()));
        assert_eq!(drain(&mut tail), [txn(100), txn(200)].concat());
        tail.release(Lsn(208)).unwrap();
        let left = segments(dir.path()).unwrap();
        assert_eq!(left.len(), 1, "only the new, empty segment stays");
        assert_eq!(fs::metadata(&left[0].1).unwrap().len(), MAGIC.len() as u64);
    }
}
