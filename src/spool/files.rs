//! Segment files: appending with fsync, recovering the tail after a crash,
//! reading in order, deleting what the target applied.
//!
//! A spool is one directory per slot holding `<seq>.seg` files, each opened
//! by [`MAGIC`] and holding whole frames ([`super::record`]). A new segment
//! starts only after a record that ends a transaction, so a segment's last
//! complete boundary record says how far it holds the stream, and a
//! transaction cut short by a crash lies in the last segment only.

use std::fs::{self, File, OpenOptions};
use std::io::{BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use bytes::BytesMut;
use walrelay_proto::Lsn;

use super::record::{self, Frame, Record, HEADER};
use super::SpoolError;

/// The first bytes of every segment (format version 1).
pub(crate) const MAGIC: &[u8; 8] = b"WRSPOOL1";

/// Bytes buffered before they are written to the file (not yet synced).
const WRITE_CHUNK: usize = 1 << 20;

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SpoolError + '_ {
    move |source| SpoolError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The segments of `dir`, oldest first.
pub(crate) fn segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>, SpoolError> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
        Err(e) => return Err(io(dir)(e)),
    };
    let mut found = vec![];
    for entry in entries {
        let path = entry.map_err(io(dir))?.path();
        let seq = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".seg"))
            .and_then(|n| u64::from_str_radix(n, 16).ok());
        if let Some(seq) = seq {
            found.push((seq, path));
        }
    }
    found.sort();
    Ok(found)
}

pub(super) fn segment_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("{seq:016x}.seg"))
}

/// Bytes and segments the spool holds on disk. A segment the apply deleted
/// meanwhile (streaming through the spool) is not counted.
pub(crate) fn usage(dir: &Path) -> Result<(u64, usize), SpoolError> {
    let (mut bytes, mut count) = (0, 0);
    for (_, path) in segments(dir)? {
        match fs::metadata(&path) {
            Ok(meta) => {
                bytes += meta.len();
                count += 1;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(&path)(e)),
        }
    }
    Ok((bytes, count))
}

/// Where the durable spool ends after recovery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Tail {
    pub seq: u64,
    /// The segment's length once what follows the last boundary is cut.
    pub len: u64,
    /// The position the spool holds the stream up to.
    pub end: Lsn,
}

/// One scan of a segment: where its last boundary record ends.
struct Scan {
    boundary_offset: u64,
    boundary: Option<Lsn>,
    file_len: u64,
}

/// Reads the frame at the reader's position: `Ok(None)` at the end of the file.
pub(super) fn read_frame(
    file: &mut BufReader<File>,
    offset: u64,
    file_len: u64,
) -> std::io::Result<Option<Frame>> {
    if offset == file_len {
        return Ok(None);
    }
    if file_len - offset < HEADER as u64 {
        return Ok(Some(Frame::Incomplete));
    }
    let mut header = [0u8; HEADER];
    file.read_exact(&mut header)?;
    let len = record::frame_len(&header);
    if offset + len > file_len {
        // Cut short, or a damaged length: only the caller can tell.
        return Ok(Some(record::decode(&header)));
    }
    let mut frame = vec![0u8; len as usize];
    frame[..HEADER].copy_from_slice(&header);
    file.read_exact(&mut frame[HEADER..])?;
    Ok(Some(record::decode(&frame)))
}

pub(super) fn open_segment(path: &Path) -> Result<(BufReader<File>, u64), SpoolError> {
    let file = File::open(path).map_err(io(path))?;
    let file_len = file.metadata().map_err(io(path))?.len();
    let mut reader = BufReader::with_capacity(256 << 10, file);
    let mut magic = [0u8; 8];
    if file_len < MAGIC.len() as u64 || {
        reader.read_exact(&mut magic).map_err(io(path))?;
        &magic != MAGIC
    } {
        return Err(SpoolError::Damaged {
            segment: path.to_path_buf(),
            offset: 0,
            why: "not a walrelay spool segment",
        });
    }
    Ok((reader, file_len))
}

/// Finds the last boundary of the segment at `path`. A frame cut short or
/// damaged as the file's final frame is a crash's torn write; damage with
/// intact frames after it is an error.
fn scan(path: &Path) -> Result<Scan, SpoolError> {
    let (mut reader, file_len) = open_segment(path)?;
    let mut offset = MAGIC.len() as u64;
    let mut found = Scan {
        boundary_offset: offset,
        boundary: None,
        file_len,
    };
    while let Some(frame) = read_frame(&mut reader, offset, file_len).map_err(io(path))? {
        match frame {
            Frame::Record(rec, used) => {
                offset += used as u64;
                if let Some(lsn) = rec.boundary() {
                    found.boundary_offset = offset;
                    found.boundary = Some(lsn);
                }
            }
            Frame::Incomplete => break,
            Frame::Damaged(why) => {
                let header_end = offset + HEADER as u64;
                let mut header = [0u8; HEADER];
                let mut f = File::open(path).map_err(io(path))?;
                f.seek(SeekFrom::Start(offset)).map_err(io(path))?;
                f.read_exact(&mut header).map_err(io(path))?;
                if header_end > file_len || offset + record::frame_len(&header) >= file_len {
                    break;
                }
                return Err(SpoolError::Damaged {
                    segment: path.to_path_buf(),
                    offset,
                    why,
                });
            }
        }
    }
    Ok(found)
}

/// What a spool holds, read without changing it (`walrelay status`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Inspection {
    pub bytes: u64,
    pub segments: usize,
    /// The last record ending a transaction (`None`: none).
    pub end: Option<Lsn>,
}

/// Reads what the spool in `dir` holds; cuts nothing (a running capture may
/// be appending to it).
pub(crate) fn inspect(dir: &Path) -> Result<Inspection, SpoolError> {
    let (bytes, segments) = usage(dir)?;
    let mut end = None;
    for (_, path) in self::segments(dir)?.iter().rev() {
        match scan(path) {
            Ok(found) if found.boundary.is_some() => {
                end = found.boundary;
                break;
            }
            Ok(_) => {}
            // Deleted by the apply meanwhile: older ones are too.
            Err(SpoolError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                break
            }
            Err(err) => return Err(err),
        }
    }
    Ok(Inspection {
        bytes,
        segments,
        end,
    })
}

/// Recovers the spool in `dir` after a crash: cuts what follows the last
/// record that ends a transaction (never acknowledged to the slot: only a
/// synced boundary is), drops segments left with none. `acknowledged` is
/// the slot's confirmed position: a spool ending before it lost changes the
/// source no longer has, an error (checked before anything is cut).
pub(crate) fn recover(dir: &Path, acknowledged: Option<Lsn>) -> Result<Option<Tail>, SpoolError> {
    let segs = segments(dir)?;
    let mut tail = None;
    let mut cut = vec![];
    for (seq, path) in segs.iter().rev() {
        let found = scan(path)?;
        cut.push((path.clone(), found.boundary_offset, found.file_len));
        if let Some(end) = found.boundary {
            tail = Some(Tail {
                seq: *seq,
                len: found.boundary_offset,
                end,
            });
            break;
        }
    }
    let end = tail.as_ref().map(|t| t.end);
    if let Some(ack) = acknowledged {
        if end.is_none_or(|e| e < ack) && !segs.is_empty() {
            let (segment, offset) = cut
                .last()
                .map(|(p, o, _)| (p.clone(), *o))
                .unwrap_or_else(|| (dir.to_path_buf(), 0));
            return Err(SpoolError::Short {
                segment,
                offset,
                end,
                acknowledged: ack,
            });
        }
    }
    for (path, keep, len) in cut {
        let empty = keep == MAGIC.len() as u64;
        if empty
            && tail
                .as_ref()
                .is_none_or(|t| segment_path(dir, t.seq) != path)
        {
            tracing::warn!(segment = %path.display(), "spool segment held no whole transaction (never acknowledged): removed");
            fs::remove_file(&path).map_err(io(&path))?;
        } else if keep < len {
            tracing::warn!(segment = %path.display(), offset = keep, bytes = len - keep, "spool tail cut short by a crash (never acknowledged): cut");
            let f = OpenOptions::new()
                .write(true)
                .open(&path)
                .map_err(io(&path))?;
            f.set_len(keep).map_err(io(&path))?;
            f.sync_all().map_err(io(&path))?;
        }
    }
    Ok(tail)
}

/// Deletes every segment of `dir`.
pub(crate) fn remove_all(dir: &Path) -> Result<(), SpoolError> {
    for (_, path) in segments(dir)? {
        fs::remove_file(&path).map_err(io(&path))?;
    }
    Ok(())
}

/// Appends records; [`Writer::sync`] makes them durable.
pub(crate) struct Writer {
    dir: PathBuf,
    seq: u64,
    file: File,
    len: u64,
    buf: BytesMut,
    segment_bytes: u64,
    /// The last boundary appended (durable once synced).
    pending: Option<Lsn>,
    /// Where the last boundary appended ends in the segment (written or
    /// buffered).
    boundary_len: u64,
    /// Where the last synced boundary ends: readers read no further.
    synced_len: u64,
    at_boundary: bool,
    durable: Option<Lsn>,
}

/// How far a live spool may be read: every segment before `seq` whole,
/// segment `seq` up to `len` (a synced boundary).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Extent {
    pub seq: u64,
    pub len: u64,
    /// The position the spool holds the stream up to (`None`: empty).
    pub end: Option<Lsn>,
}

impl Writer {
    /// Opens the spool in `dir` for appending after [`recover`]ing it.
    pub(crate) fn open(
        dir: &Path,
        segment_bytes: u64,
        acknowledged: Option<Lsn>,
    ) -> Result<Writer, SpoolError> {
        fs::create_dir_all(dir).map_err(io(dir))?;
        let tail = recover(dir, acknowledged)?;
        let (seq, file, len) = match &tail {
            Some(t) => {
                let path = segment_path(dir, t.seq);
                let file = OpenOptions::new()
                    .append(true)
                    .open(&path)
                    .map_err(io(&path))?;
                (t.seq, file, t.len)
            }
            None => {
                let next = segments(dir)?.last().map_or(1, |(s, _)| s + 1);
                let file = create_segment(dir, next)?;
                (next, file, MAGIC.len() as u64)
            }
        };
        let end = tail.map(|t| t.end);
        Ok(Writer {
            dir: dir.to_path_buf(),
            seq,
            file,
            len,
            buf: BytesMut::new(),
            segment_bytes,
            pending: end,
            boundary_len: len,
            synced_len: len,
            at_boundary: true,
            durable: end,
        })
    }

    /// How far readers may read what is durable.
    pub(crate) fn extent(&self) -> Extent {
        Extent {
            seq: self.seq,
            len: self.synced_len,
            end: self.durable,
        }
    }

    /// Drops what was appended after the last synced boundary (a session
    /// that broke off mid-transaction: the slot sends it again).
    pub(crate) fn rewind(&mut self) -> Result<(), SpoolError> {
        let path = segment_path(&self.dir, self.seq);
        self.buf.clear();
        if self.len > self.synced_len {
            self.file.set_len(self.synced_len).map_err(io(&path))?;
        }
        self.len = self.synced_len;
        self.boundary_len = self.synced_len;
        self.pending = self.durable;
        self.at_boundary = true;
        Ok(())
    }

    /// Where the durable spool ends (`None`: empty).
    pub(crate) fn durable(&self) -> Option<Lsn> {
        self.durable
    }

    /// The last boundary appended (durable after the next sync).
    pub(crate) fn pending(&self) -> Option<Lsn> {
        self.pending
    }

    /// Appends one record (buffered; not durable before [`Writer::sync`]).
    pub(crate) fn append(&mut self, rec: &Record) -> Result<(), SpoolError> {
        record::encode(rec, &mut self.buf);
        self.at_boundary = rec.boundary().is_some();
        if let Some(lsn) = rec.boundary() {
            self.pending = Some(lsn);
            self.boundary_len = self.len + self.buf.len() as u64;
        }
        if self.buf.len() >= WRITE_CHUNK {
            self.write_out()?;
        }
        Ok(())
    }

    fn write_out(&mut self) -> Result<(), SpoolError> {
        let path = segment_path(&self.dir, self.seq);
        self.file.write_all(&self.buf).map_err(io(&path))?;
        self.len += self.buf.len() as u64;
        self.buf.clear();
        Ok(())
    }

    /// Whether the segment reached its size at a boundary: a sync now
    /// starts the next one.
    pub(crate) fn segment_full(&self) -> bool {
        self.at_boundary && self.len + self.buf.len() as u64 >= self.segment_bytes
    }

    /// Starts a new segment now if everything appended is synced and the
    /// current one holds records, so readers can finish it and the apply
    /// delete it (a full spool whose records all sit in one segment).
    pub(crate) fn seal(&mut self) -> Result<(), SpoolError> {
        if self.at_boundary
            && self.buf.is_empty()
            && self.len == self.synced_len
            && self.len > MAGIC.len() as u64
        {
            self.rotate()?;
        }
        Ok(())
    }

    fn rotate(&mut self) -> Result<(), SpoolError> {
        self.seq += 1;
        self.file = create_segment(&self.dir, self.seq)?;
        self.len = MAGIC.len() as u64;
        self.boundary_len = self.len;
        self.synced_len = self.len;
        Ok(())
    }

    /// Writes and fsyncs what was appended; returns the position now
    /// durable (the last boundary), which alone may be acknowledged. Starts
    /// a new segment once this one is full and ends at a boundary.
    pub(crate) fn sync(&mut self) -> Result<Option<Lsn>, SpoolError> {
        let path = segment_path(&self.dir, self.seq);
        self.write_out()?;
        self.file.sync_data().map_err(io(&path))?;
        self.durable = self.pending;
        self.synced_len = self.boundary_len;
        if self.at_boundary && self.len >= self.segment_bytes {
            self.rotate()?;
        }
        Ok(self.durable)
    }
}

/// Creates segment `seq` with its magic, durable with its directory entry.
fn create_segment(dir: &Path, seq: u64) -> Result<File, SpoolError> {
    let path = segment_path(dir, seq);
    let mut file = OpenOptions::new()
        .create_new(true)
        .append(true)
        .open(&path)
        .map_err(io(&path))?;
    file.write_all(MAGIC).map_err(io(&path))?;
    file.sync_all().map_err(io(&path))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(dir))?;
    Ok(file)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::spool::read::Reader;
    use bytes::Bytes;

    /// One small source transaction committing at `commit`, as spooled.
    pub(crate) fn txn(commit: u64) -> Vec<Record> {
        vec![
            Record::Begin {
                final_lsn: Lsn(commit),
                xid: commit as u32,
                commit_time: 0,
            },
            Record::Change(Bytes::from(vec![b'I'; 300])),
            Record::Commit {
                lsn: Lsn(commit),
                end_lsn: Lsn(commit + 8),
                commit_time: 0,
            },
        ]
    }

    fn write(dir: &Path, commits: impl IntoIterator<Item = u64>, segment: u64) -> Writer {
        let mut w = Writer::open(dir, segment, None).unwrap();
        for c in commits {
            for r in txn(c) {
                w.append(&r).unwrap();
            }
            w.sync().unwrap();
        }
        w
    }

    fn read_all(dir: &Path) -> Vec<Record> {
        let mut r = Reader::open(dir, None).unwrap().unwrap();
        let mut all = vec![];
        while let Some(rec) = r.next_record().unwrap() {
            all.push(rec);
        }
        all
    }

    #[test]
    fn records_come_back_in_order_across_segments() {
        let dir = tempfile::tempdir().unwrap();
        let w = write(dir.path(), (1..=20).map(|i| i * 100), 1000);
        assert_eq!(w.durable(), Some(Lsn(2008)));
        assert!(segments(dir.path()).unwrap().len() > 3);
        let expected: Vec<Record> = (1..=20).flat_map(|i| txn(i * 100)).collect();
        assert_eq!(read_all(dir.path()), expected);
    }

    #[test]
    fn a_torn_tail_is_cut_back_to_the_last_commit() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = write(dir.path(), [100, 200], 1 << 20);
        // An unsynced transaction, then half a frame.
        for r in &txn(300)[..2] {
            w.append(r).unwrap();
        }
        w.write_out().unwrap();
        let (_, path) = segments(dir.path()).unwrap().pop().unwrap();
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(&[40, 0, 0, 0, 1, 2]).unwrap();
        drop((w, f));
        let w = Writer::open(dir.path(), 1 << 20, Some(Lsn(208))).unwrap();
        assert_eq!(w.durable(), Some(Lsn(208)));
        let expected: Vec<Record> = [100, 200].into_iter().flat_map(txn).collect();
        assert_eq!(read_all(dir.path()), expected);
    }

    #[test]
    fn a_damaged_acknowledged_record_names_segment_and_offset() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), [100, 200, 300], 1 << 20);
        let (_, path) = segments(dir.path()).unwrap().pop().unwrap();
        let mut bytes = fs::read(&path).unwrap();
        // Inside the second frame's payload (the first transaction's change).
        let second = MAGIC.len() + HEADER + 21;
        bytes[second + HEADER + 10] ^= 1;
        fs::write(&path, &bytes).unwrap();
        let err = Reader::open(dir.path(), Some(Lsn(308))).err().unwrap();
        let text = err.to_string();
        assert!(
            matches!(err, SpoolError::Damaged { offset, .. } if offset == second as u64),
            "{text}"
        );
        assert!(text.contains(&path.display().to_string()), "{text}");
        assert!(text.contains("cleanup"), "{text}");
    }

    #[test]
    fn a_spool_short_of_the_acknowledged_position_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), [100], 1 << 20);
        let err = Writer::open(dir.path(), 1 << 20, Some(Lsn(500)))
            .err()
            .unwrap();
        assert!(matches!(err, SpoolError::Short { .. }), "{err}");
        // Nothing was cut: the evidence stays.
        assert_eq!(read_all(dir.path()), txn(100));
    }

    #[test]
    fn released_segments_are_deleted_only_once_applied() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), (1..=10).map(|i| i * 100), 800);
        let before = segments(dir.path()).unwrap().len();
        let mut r = Reader::open(dir.path(), None).unwrap().unwrap();
        // The first segment holds three transactions; the tenth record is
        // the first of the second segment.
        for _ in 0..10 {
            r.next_record().unwrap();
        }
        r.release(Lsn(0)).unwrap();
        assert_eq!(segments(dir.path()).unwrap().len(), before);
        r.release(Lsn(308)).unwrap();
        assert!(segments(dir.path()).unwrap().len() < before);
    }
}
