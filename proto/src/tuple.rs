//! TupleData: the row images carried by Insert, Update and Delete.

use bytes::Bytes;

use crate::error::{DecodeError, DecodeErrorKind};
use crate::reader::Reader;

/// One column value of a row image.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Cell {
    /// `n`: SQL NULL.
    Null,
    /// `u`: a TOASTed value that did not change; its value is not sent.
    UnchangedToast,
    /// `t`: the value in the type's text format (the client encoding, UTF-8 for us).
    Text(Bytes),
    /// `b`: the value in the type's binary send format (`binary` option).
    Binary(Bytes),
}

/// A row image: one cell per published column, in [`crate::Relation::columns`] order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TupleData {
    /// The column values.
    pub cells: Vec<Cell>,
}

/// The old row image of an Update or Delete, named by its marker byte.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OldTuple {
    /// `K`: the replica identity columns; the others are `n`.
    Key(TupleData),
    /// `O`: the whole old row (REPLICA IDENTITY FULL).
    Full(TupleData),
}

impl OldTuple {
    /// The row image, whichever its kind.
    pub fn tuple(&self) -> &TupleData {
        match self {
            OldTuple::Key(t) | OldTuple::Full(t) => t,
        }
    }
}

/// Reads an Int16 column count and that many cells.
pub(crate) fn read_tuple(r: &mut Reader<'_>) -> Result<TupleData, DecodeError> {
    // Every cell takes at least its kind byte, which bounds the allocation below.
    let n = r.count_i16("column count", 1)?;
    let mut cells = Vec::with_capacity(n);
    for _ in 0..n {
        cells.push(read_cell(r)?);
    }
    Ok(TupleData { cells })
}

fn read_cell(r: &mut Reader<'_>) -> Result<Cell, DecodeError> {
    let at = r.offset();
    match r.u8("column kind")? {
        b'n' => Ok(Cell::Null),
        b'u' => Ok(Cell::UnchangedToast),
        b't' => Ok(Cell::Text(r.counted_bytes("column value")?)),
        b'b' => Ok(Cell::Binary(r.counted_bytes("column value")?)),
        other => Err(r.error_at(at, "column kind", DecodeErrorKind::UnexpectedByte(other))),
    }
}
