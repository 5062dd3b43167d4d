//! A bounds-checked cursor over one payload that knows the offset of every field it reads.

use bytes::Bytes;

use crate::error::{DecodeError, DecodeErrorKind};
use crate::lsn::Lsn;

/// Reads big-endian fields (the protocol's network byte order) from one message.
pub(crate) struct Reader<'a> {
    buf: &'a Bytes,
    pos: usize,
    message: &'static str,
}

impl<'a> Reader<'a> {
    /// A reader positioned at `pos`, reporting errors as belonging to `message`.
    pub(crate) fn new(buf: &'a Bytes, pos: usize, message: &'static str) -> Self {
        Reader { buf, pos, message }
    }

    /// Offset of the next byte to read.
    pub(crate) fn offset(&self) -> usize {
        self.pos
    }

    /// Bytes not yet read.
    pub(crate) fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// An error for `field`, located at byte `offset`.
    pub(crate) fn error_at(
        &self,
        offset: usize,
        field: &'static str,
        kind: DecodeErrorKind,
    ) -> DecodeError {
        DecodeError {
            message: self.message,
            field,
            offset,
            kind,
        }
    }

    fn take<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], DecodeError> {
        let Some(bytes) =
            (self.buf.get(self.pos..self.pos + N)).and_then(|s| <[u8; N]>::try_from(s).ok())
        else {
            return Err(self.truncated(field, N));
        };
        self.pos += N;
        Ok(bytes)
    }

    fn truncated(&self, field: &'static str, needed: usize) -> DecodeError {
        let remaining = self.remaining();
        self.error_at(
            self.pos,
            field,
            DecodeErrorKind::Truncated { needed, remaining },
        )
    }

    /// Int8 / Byte1.
    pub(crate) fn u8(&mut self, field: &'static str) -> Result<u8, DecodeError> {
        Ok(self.take::<1>(field)?[0])
    }

    /// Int32 read as unsigned: OIDs and transaction ids are unsigned on the server.
    pub(crate) fn u32(&mut self, field: &'static str) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.take(field)?))
    }

    /// Int32 read as signed (type modifiers).
    pub(crate) fn i32(&mut self, field: &'static str) -> Result<i32, DecodeError> {
        Ok(i32::from_be_bytes(self.take(field)?))
    }

    /// Int64 read as signed (timestamps).
    pub(crate) fn i64(&mut self, field: &'static str) -> Result<i64, DecodeError> {
        Ok(i64::from_be_bytes(self.take(field)?))
    }

    /// Int64 read as a WAL position.
    pub(crate) fn lsn(&mut self, field: &'static str) -> Result<Lsn, DecodeError> {
        Ok(Lsn(u64::from_be_bytes(self.take(field)?)))
    }

    /// A flags byte whose set bits must all be within `defined`.
    pub(crate) fn flags(&mut self, field: &'static str, defined: u8) -> Result<u8, DecodeError> {
        let at = self.pos;
        let flags = self.u8(field)?;
        if flags & !defined != 0 {
            return Err(self.error_at(at, field, DecodeErrorKind::UnknownFlags(flags)));
        }
        Ok(flags)
    }

    /// A NUL-terminated string, decoded as UTF-8.
    pub(crate) fn string(&mut self, field: &'static str) -> Result<String, DecodeError> {
        let at = self.pos;
        let rest = &self.buf[at..];
        let Some(len) = rest.iter().position(|&b| b == 0) else {
            return Err(self.error_at(at, field, DecodeErrorKind::UnterminatedString));
        };
        let s = std::str::from_utf8(&rest[..len])
            .map_err(|_| self.error_at(at, field, DecodeErrorKind::InvalidUtf8))?;
        self.pos += len + 1;
        Ok(s.to_owned())
    }

    /// An Int32 length followed by that many bytes, as a zero-copy slice of the payload.
    pub(crate) fn counted_bytes(&mut self, field: &'static str) -> Result<Bytes, DecodeError> {
        let len = self.count_i32(field, 1)?;
        let start = self.pos;
        self.pos += len;
        Ok(self.buf.slice(start..self.pos))
    }

    /// An Int16 count of items that each take at least `min_item_len` bytes.
    pub(crate) fn count_i16(
        &mut self,
        field: &'static str,
        min_item_len: usize,
    ) -> Result<usize, DecodeError> {
        let at = self.pos;
        let raw = i16::from_be_bytes(self.take(field)?);
        self.check_count(at, field, i64::from(raw), min_item_len)
    }

    /// An Int32 count of items that each take at least `min_item_len` bytes.
    pub(crate) fn count_i32(
        &mut self,
        field: &'static str,
        min_item_len: usize,
    ) -> Result<usize, DecodeError> {
        let at = self.pos;
        let raw = self.i32(field)?;
        self.check_count(at, field, i64::from(raw), min_item_len)
    }

    /// Checks a count read at `at` against the bytes left, so that nothing is ever
    /// allocated or sliced from an unchecked wire count.
    fn check_count(
        &self,
        at: usize,
        field: &'static str,
        count: i64,
        min_item_len: usize,
    ) -> Result<usize, DecodeError> {
        let remaining = self.remaining();
        usize::try_from(count)
            .ok()
            .filter(|&n| {
                n.checked_mul(min_item_len)
                    .is_some_and(|len| len <= remaining)
            })
            .ok_or_else(|| self.error_at(at, field, DecodeErrorKind::BadCount { count, remaining }))
    }

    /// Fails if anything is left after the message.
    pub(crate) fn finish(self) -> Result<(), DecodeError> {
        match self.remaining() {
            0 => Ok(()),
            n => Err(self.error_at(
                self.pos,
                "end of message",
                DecodeErrorKind::TrailingBytes(n),
            )),
        }
    }
}
